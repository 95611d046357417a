/* infer.c — ModelInfer and ModelStreamInfer: a received ModelInferRequest (split into its slot by
 * wire.c) becomes a core inference whose raw inputs are bound where they landed, runs through the
 * request layer, and its ModelInferResponse goes out as small encoded parts interleaved with the
 * output tensors where ORT wrote them.
 *
 * One request, as data:
 *   1. the message's meta is decoded into descriptors pointing into the slot (wire.c);
 *   2. each input is declared to the core: raw_input_contents[i] bound in place (64-byte aligned by
 *      the splitter), typed `contents` decoded into the inference's slot, or shared memory bound;
 *   3. requested outputs (classification, shared memory) are declared, the slot prepared;
 *   4. the request layer runs it inline or on a worker (deadline: grpc-timeout, the `timeout`
 *      parameter, the model's or server's default); a worker posts the call back to the loop;
 *   5. the response: prefix, header fields and each raw_output_contents tag in the call's arena, the
 *      tensors by reference. ModelStreamInfer wraps it in a ModelStreamInferResponse; its errors are
 *      error_message answers and the stream stays open.
 * Early build (zero-copy batching): as the first raw_input_contents payload begins to arrive, steps 1
 * and 2 run on the meta received so far (canonical encoders write field 7 last), and a model that
 * batches reserves the request's rows in its forming batch (osv_serve_stage): the splitter then
 * receives each payload straight into its input's rows, and a batch of such requests runs on them in
 * place. Anything the early build cannot take (typed contents, shared memory, BYTES, a payload size
 * the shape does not give, meta after the payloads) undoes it: payloads already in rows move into
 * the message's slot (counted as `batch`), and the message is built at its end as before. */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/grpc_internal.h"
#include "serve/bind.h"
#include "serve/errmap.h"
#include "serve/outputs.h"
#include "serve/shm.h"

typedef struct gin {
    uint32_t idx;
    osv_dtype_t dt;
    const osv_gw_input_t *w;
    const osv_gw_raw_t *raw;
    osv_shm_region_t *shm;
    uint64_t shm_off, shm_size;
} gin_t;

typedef struct gout {
    uint32_t idx;
    uint32_t classification;
    osv_shm_region_t *shm;
    uint64_t shm_off, shm_size;
    void *shm_bytes;
    /* at encoding */
    osv_tensor_view_t v;
    const uint8_t *data;
    uint64_t len;
    osv_class_shape_t cls;
} gout_t;

typedef struct ix {
    osv_gw_request_t req;
    gin_t *ins;
    uint32_t n_in;
    gout_t *outs;
    uint32_t n_out;
    osv_infer_t *inf;
    osv_sreq_t sreq;
    osv_slot_t strings; /* serialized BYTES / classification outputs */
    osv_pool_t *pool;
    osv_serve_t *serve;
    uint64_t shm_reserved; /* untouched shared-memory bytes reserved with the memory guard */
    uint64_t t_decode;
    bool early;            /* inputs decoded and declared as the first raw payload began */
    bool staged;           /* ... and their rows reserved in the model's forming batch */
    uint64_t early_meta;   /* the meta bytes the early build read */
} ix_t;

static osv_grpc_t *grpc_of(const gcall_t *k)
{
    return k->st->c->g;
}

static void ix_cleanup(gcall_t *k)
{
    ix_t *x = k->ix;
    if (!x)
        return;
    if (x->inf)
        osv_infer_fini(x->inf);
    osv_serve_unstage(&x->sreq); /* after fini: its rows in a forming batch, if it had some */
    for (uint32_t i = 0; i < x->n_in; i++)
        osv_shm_put(x->ins[i].shm);
    for (uint32_t i = 0; i < x->n_out; i++)
        osv_shm_put(x->outs[i].shm);
    if (x->strings.base)
        osv_pool_release(x->pool, &x->strings);
    osv_serve_memory_unreserve(x->serve, x->shm_reserved);
    k->ix = NULL;
}

static int bad(gcall_t *k, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(gcall_t *k, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->err.msg, sizeof k->err.msg, fmt, ap);
    va_end(ap);
    k->err.code = code;
    return code;
}

#define STR(s) (int)((s).n > 128 ? 128 : (s).n), (s).p

/* ---- answers ----------------------------------------------------------------------------------------- */

/* The id of k's request, as far as it is known (decoded, or read past a refused message), at most
 * OSV_GW_ID_MAX bytes. */
static osv_gw_str_t request_id(const gcall_t *k)
{
    const ix_t *x = k->ix;
    osv_gw_str_t id = {NULL, 0};
    if (x && x->req.id.n)
        id = x->req.id;
    else if (k->scan)
        id = (osv_gw_str_t){k->scan->id, k->scan->id_len};
    if (id.n > OSV_GW_ID_MAX)
        id.n = OSV_GW_ID_MAX;
    return id;
}

/* The call failed with code: unary — trailers with the status; stream — an error_message answer. */
static void fail(gcall_t *k, int code)
{
    gstream_t *st = k->st;
    if (!k->err.msg[0])
        snprintf(k->err.msg, sizeof k->err.msg, "%s", osv_err_name(code));
    grpc_record(k, code);
    if (st->method == GM_STREAM_INFER) {
        uint8_t buf[OSV_ERR_MSG_MAX + OSV_GW_ID_MAX + 64];
        osv_gw_w_t w = {buf, sizeof buf, 0};
        osv_gw_str_t id = request_id(k);
        /* As Triton: the answer names the request it is about (its id), so a client with many in flight
         * knows which one failed; a refusal worth retrying says when. */
        osv_gw_enc_stream_error(&w, k->err.msg, strlen(k->err.msg), id.p, id.n,
                                osv_status_retry(code) ? GRPC_RETRY_MS : 0);
        if (k->slot.base) /* the message's memory (the id's too) is not needed once encoded */
            osv_pool_release(k->st->c->g->pool, &k->slot);
        ix_cleanup(k);
        if (grpc_reply_bytes(k, buf, w.len) == 0) {
            grpc_respond(k);
            return;
        }
    }
    grpc_finish(st, code, k->err.msg); /* only queues: k is still alive */
    grpc_call_free(k);
}

/* ---- decoding and declaring ------------------------------------------------------------------------ */

static int shm_params(gcall_t *k, const osv_gw_params_t *ps, const char *what, osv_gw_str_t name,
                      osv_shm_region_t **shm, uint64_t *off, uint64_t *size)
{
    osv_grpc_t *g = grpc_of(k);
    const osv_gw_param_t *r = osv_gw_param(ps, "shared_memory_region"),
                         *s = osv_gw_param(ps, "shared_memory_byte_size"),
                         *o = osv_gw_param(ps, "shared_memory_offset");
    if (!r && !s && !o)
        return 0;
    if (!r || r->type != OSV_GW_P_STRING || !s)
        return bad(k, OSV_EINVAL, "%s '%.*s': shared memory needs both 'shared_memory_region' (string) and "
                   "'shared_memory_byte_size'", what, STR(name));
    if (!((s->type == OSV_GW_P_INT64 && s->i >= 0) || s->type == OSV_GW_P_UINT64))
        return bad(k, OSV_EINVAL, "%s '%.*s': 'shared_memory_byte_size' must be a non-negative integer", what,
                   STR(name));
    *size = s->type == OSV_GW_P_INT64 ? (uint64_t)s->i : s->u;
    *off = 0;
    if (o) {
        if (!((o->type == OSV_GW_P_INT64 && o->i >= 0) || o->type == OSV_GW_P_UINT64))
            return bad(k, OSV_EINVAL, "%s '%.*s': 'shared_memory_offset' must be a non-negative integer", what,
                       STR(name));
        *off = o->type == OSV_GW_P_INT64 ? (uint64_t)o->i : o->u;
    }
    if (!(*shm = osv_shm_get(g->shm, k->st->auth_id, r->s.p, r->s.n)))
        return bad(k, OSV_ENOTFOUND, "%s '%.*s': shared memory region '%.*s' is not registered", what,
                   STR(name), STR(r->s));
    return 1;
}

/* The request's deadline becomes `at` (absolute ns; `ms` long, set by `src`) when that is earlier: the
 * model's or server's default, grpc-timeout, the timeout parameter. 504s name the one that won. */
static void shorten(ix_t *x, uint64_t at, uint64_t ms, osv_deadline_src_t src)
{
    if (x->sreq.deadline && at >= x->sreq.deadline)
        return;
    x->sreq.deadline = at;
    x->sreq.deadline_ms = ms;
    x->sreq.deadline_src = src;
}

static int request_params(gcall_t *k, ix_t *x)
{
    osv_gw_params_t ps;
    int rc;
    if (!x->req.params)
        return 0;
    if ((rc = osv_gw_params_of(x->req.params, x->req.params_len, 4, &ps, &k->err)) != 0)
        return rc;
    for (uint32_t i = 0; i < ps.n; i++) {
        const osv_gw_param_t *p = &ps.v[i];
        bool is_int = p->type == OSV_GW_P_INT64 || p->type == OSV_GW_P_UINT64;
        uint64_t u = p->type == OSV_GW_P_INT64 ? (uint64_t)p->i : p->u;
        if (p->key.n == 7 && memcmp(p->key.p, "timeout", 7) == 0) { /* microseconds, as Triton */
            if (!is_int || (p->type == OSV_GW_P_INT64 && p->i < 0))
                return bad(k, OSV_EINVAL, "parameter 'timeout' must be a non-negative integer (microseconds)");
            if (u) { /* the request layer applies it: a queue timeout with dynamic batching, else a deadline */
                x->sreq.timeout_at = u > (UINT64_MAX - k->t_start) / 1000 ? UINT64_MAX : k->t_start + u * 1000;
                x->sreq.timeout_us = u;
            }
        } else if (p->key.n == 8 && memcmp(p->key.p, "priority", 8) == 0) {
            if (!is_int || u > 1000000)
                return bad(k, OSV_EINVAL, "parameter 'priority' must be an integer from 0 to 1000000");
            x->sreq.priority = u;
        } else if ((p->key.n == 11 && memcmp(p->key.p, "sequence_id", 11) == 0) ||
                   (p->key.n == 14 && memcmp(p->key.p, "sequence_start", 14) == 0) ||
                   (p->key.n == 12 && memcmp(p->key.p, "sequence_end", 12) == 0)) {
            bool set = (p->type == OSV_GW_P_BOOL && p->b) || (is_int && u) ||
                       (p->type == OSV_GW_P_STRING && p->s.n);
            if (set)
                return bad(k, OSV_EINVAL, "sequence batching ('%.*s') is not supported: send independent requests",
                           STR(p->key));
        }
    }
    return 0;
}

static int decode_input(gcall_t *k, ix_t *x, uint32_t i, bool early)
{
    const osv_gw_input_t *w = &x->req.inputs[i];
    gin_t *in = &x->ins[i];
    osv_gw_params_t ps;
    int rc, idx, sources;
    in->w = w;
    if ((idx = osv_model_find_input(k->model, w->name.p, w->name.n)) < 0)
        return bad(k, OSV_EINVAL, "unknown input '%.*s' for model '%s'", STR(w->name), osv_model_name(k->model));
    in->idx = (uint32_t)idx;
    if ((in->dt = osv_dtype_from_name(w->datatype.p, w->datatype.n)) == OSV_DTYPE_INVALID)
        return bad(k, OSV_EINVAL, "input '%.*s': unknown datatype '%.*s'", STR(w->name), STR(w->datatype));
    rc = 0;
    if (w->params) {
        if ((rc = osv_gw_params_of(w->params, w->params_len, 4, &ps, &k->err)) != 0)
            return rc;
        if ((rc = shm_params(k, &ps, "input", w->name, &in->shm, &in->shm_off, &in->shm_size)) < 0)
            return rc;
    }
    in->raw = x->req.n_raw ? &x->req.raw[i] : NULL;
    sources = (early || in->raw != NULL) + (w->contents != NULL) + (rc == 1); /* early: raw to come */
    if (sources != 1)
        return bad(k, OSV_EINVAL, "input '%.*s' must have exactly one of raw_input_contents, contents or shared "
                   "memory (it has %d)", STR(w->name), sources);
    return 0;
}

static int declare_input(gcall_t *k, ix_t *x, gin_t *in)
{
    const osv_gw_input_t *w = in->w;
    uint64_t bytes = 0, count;
    int rc;
    if (in->raw)
        bytes = in->raw->len;
    else if (in->shm)
        bytes = in->dt == OSV_DTYPE_BYTES ? in->shm_size : 0;
    else if (in->dt == OSV_DTYPE_BYTES &&
             (rc = osv_gw_contents_bytes_size(w->contents, w->contents_len, &count, &bytes, &k->err)) != 0)
        return rc;
    if ((rc = osv_infer_add_input(x->inf, in->idx, in->dt, w->dims, w->rank, bytes, &k->err)) != 0)
        return rc;
    if (in->raw)
        return osv_infer_input_external(x->inf, in->idx, in->raw->p, in->raw->len, &k->err);
    if (in->shm)
        return osv_bind_shm_input(x->inf, in->idx, osv_model_input(k->model, in->idx)->name, in->dt, w->dims,
                                  w->rank, bytes, in->shm, in->shm_off, in->shm_size, &k->err);
    return 0;
}

static int decode_output(gcall_t *k, ix_t *x, uint32_t i)
{
    const osv_gw_output_t *w = &x->req.outputs[i];
    gout_t *o = &x->outs[i];
    osv_gw_params_t ps;
    int idx, rc = 0;
    if ((idx = osv_model_find_output(k->model, w->name.p, w->name.n)) < 0)
        return bad(k, OSV_EINVAL, "unknown output '%.*s' for model '%s'", STR(w->name), osv_model_name(k->model));
    for (uint32_t j = 0; j < i; j++)
        if (x->outs[j].idx == (uint32_t)idx)
            return bad(k, OSV_EINVAL, "output '%.*s' is requested twice", STR(w->name));
    o->idx = (uint32_t)idx;
    if (!w->params)
        return 0;
    if ((rc = osv_gw_params_of(w->params, w->params_len, 2, &ps, &k->err)) != 0)
        return rc;
    const osv_gw_param_t *c = osv_gw_param(&ps, "classification");
    if (c) {
        if (!((c->type == OSV_GW_P_INT64 && c->i >= 1) || (c->type == OSV_GW_P_UINT64 && c->u >= 1)))
            return bad(k, OSV_EINVAL, "output '%.*s': 'classification' must be a positive integer", STR(w->name));
        if (osv_model_output(k->model, o->idx)->dtype == OSV_DTYPE_BYTES)
            return bad(k, OSV_EINVAL, "output '%.*s' is BYTES: classification ranks numeric scores", STR(w->name));
        uint64_t v = c->type == OSV_GW_P_INT64 ? (uint64_t)c->i : c->u;
        o->classification = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    }
    if ((rc = shm_params(k, &ps, "output", w->name, &o->shm, &o->shm_off, &o->shm_size)) < 0)
        return rc;
    if (o->shm && o->classification)
        return bad(k, OSV_EINVAL, "output '%.*s': shared memory cannot be combined with 'classification'",
                   STR(w->name));
    return 0;
}

/* Shared-memory pages nobody has touched yet are charged to this server when it touches them: the
 * memory guard reserves them first (as over HTTP; serve/shm.h). */
static int shm_reserve(gcall_t *k, ix_t *x)
{
    uint64_t absent = 0;
    int rc;
    if (!osv_serve_guarding_memory(x->serve))
        return 0;
    for (uint32_t i = 0; i < x->n_in; i++)
        if (x->ins[i].shm)
            absent += osv_shm_absent(x->ins[i].shm, x->ins[i].shm_off, x->ins[i].shm_size);
    for (uint32_t i = 0; i < x->n_out; i++)
        if (x->outs[i].shm)
            absent += osv_shm_absent(x->outs[i].shm, x->outs[i].shm_off, x->outs[i].shm_size);
    rc = osv_serve_memory_reserve(x->serve, absent, &k->err);
    x->shm_reserved = rc ? 0 : absent;
    return rc;
}

static int declare_outputs(gcall_t *k, ix_t *x)
{
    int rc;
    for (uint32_t i = 0; i < x->n_out; i++) {
        gout_t *o = &x->outs[i];
        if ((rc = osv_infer_add_output(x->inf, o->idx, &k->err)) != 0 ||
            (o->shm && (rc = osv_bind_shm_output(x->inf, k->model, o->idx, o->shm, o->shm_off, o->shm_size,
                                                 &o->shm_bytes, &k->err)) != 0))
            return rc;
    }
    return shm_reserve(k, x);
}

static int fill_contents(gcall_t *k, ix_t *x)
{
    for (uint32_t i = 0; i < x->n_in; i++) {
        gin_t *in = &x->ins[i];
        void *dst;
        uint64_t len, count = 1;
        int rc;
        if (!in->w->contents)
            continue;
        osv_infer_input_buffer(x->inf, in->idx, &dst, &len);
        for (uint32_t d = 0; d < in->w->rank; d++)
            count *= (uint64_t)in->w->dims[d]; /* the core checked the shape's size */
        if ((rc = osv_gw_contents(in->w->contents, in->w->contents_len, in->dt, count, dst, len, &k->err)) != 0) {
            osv_err_prefix(&k->err, "input '%.*s'", STR(in->w->name));
            return rc;
        }
    }
    return 0;
}

static int model_of(gcall_t *k, ix_t *x)
{
    osv_grpc_t *g = grpc_of(k);
    osv_gw_str_t v = x->req.model_version;
    int64_t version = -1;
    if (!x->req.model_name.n || !osv_model_name_valid(x->req.model_name.p, x->req.model_name.n))
        return bad(k, OSV_ENOTFOUND, "unknown model '%.*s'", STR(x->req.model_name));
    if (v.n) {
        char buf[24], *end;
        if (v.n >= sizeof buf)
            return bad(k, OSV_EINVAL, "model_version '%.*s' is not a version number", STR(v));
        memcpy(buf, v.p, v.n);
        buf[v.n] = '\0';
        long long n = strtoll(buf, &end, 10);
        if (*end || n < 0 || buf[0] == '-' || buf[0] == '+' || buf[0] == ' ')
            return bad(k, OSV_EINVAL, "model_version '%.*s' is not a version number", STR(v));
        version = n;
    }
    return osv_repo_acquire(g->repo, x->req.model_name.p, x->req.model_name.n, version, &k->model, &k->err);
}

/* An input the early build can take: raw, of a fixed-size datatype. */
static bool early_input_ok(const gin_t *in)
{
    return !in->w->contents && !in->shm && in->dt != OSV_DTYPE_BYTES && osv_dtype_size(in->dt) > 0;
}

static int raw_count_mismatch(gcall_t *k, uint32_t n_raw, uint32_t n_in)
{
    return bad(k, OSV_EINVAL, "raw_input_contents has %u entries but the request has %u input(s): one each, in "
               "the order of 'inputs'", n_raw, n_in);
}

/* Steps 1 and 2 on meta_len bytes of meta: the request decoded, its model found, every input decoded
 * and declared (raw ones bound where the splitter put them, unless `early`: their payloads are still
 * to come). 0 or an error code with k->err set. */
static int build_inputs(gcall_t *k, ix_t *x, uint64_t meta_len, bool early)
{
    osv_grpc_t *g = grpc_of(k);
    uint32_t ni, no;
    int rc;
    if ((rc = osv_gw_count(k->slot.base, meta_len, &ni, &no, &k->err)) != 0)
        return rc;
    x->req.inputs = osv_arena_alloc(&k->arena, (ni ? ni : 1) * sizeof *x->req.inputs, 8);
    x->req.outputs = osv_arena_alloc(&k->arena, (no ? no : 1) * sizeof *x->req.outputs, 8);
    if (!x->req.inputs || !x->req.outputs)
        return bad(k, OSV_ENOMEM, "out of request memory");
    x->req.n_inputs = ni;
    x->req.n_outputs = no;
    if ((rc = osv_gw_decode(k->slot.base, meta_len, k->split, &x->req, &k->err)) != 0 || (rc = model_of(k, x)) != 0)
        return rc;
    if (ni > osv_model_input_count(k->model))
        return bad(k, OSV_EINVAL, "'inputs' has %u elements but model '%s' has %u input(s)", ni,
                   osv_model_name(k->model), osv_model_input_count(k->model));
    if (!early && x->req.n_raw && x->req.n_raw != ni)
        return raw_count_mismatch(k, x->req.n_raw, ni);
    if (!(x->ins = osv_arena_alloc(&k->arena, (ni ? ni : 1) * sizeof *x->ins, 8)))
        return bad(k, OSV_ENOMEM, "out of request memory");
    memset(x->ins, 0, (ni ? ni : 1) * sizeof *x->ins);
    x->n_in = ni;
    for (uint32_t i = 0; i < ni; i++) {
        if ((rc = decode_input(k, x, i, early)) != 0)
            return rc;
        if (early && !early_input_ok(&x->ins[i])) /* found before an infer is built only to be undone */
            return bad(k, OSV_EINVAL, "input %u cannot be received into a batch", i);
    }
    osv_infer_opts_t io = {.pool = g->pool, .force_copy = osv_serve_opts(g->serve)->force_copy};
    size_t size = osv_infer_size(k->model);
    void *mem = osv_arena_alloc(&k->arena, size, 16);
    if (!mem)
        return bad(k, OSV_ENOMEM, "out of request memory");
    if ((rc = osv_infer_init(mem, size, k->model, &io, &x->inf, &k->err)) != 0)
        return rc;
    for (uint32_t i = 0; i < ni; i++) {
        gin_t *in = &x->ins[i];
        if (early ? (rc = osv_infer_add_input(x->inf, in->idx, in->dt, in->w->dims, in->w->rank, 0, &k->err)) != 0
                  : (rc = declare_input(k, x, in)) != 0)
            return rc;
    }
    return 0;
}

/* The message of an early build is complete: its raw payloads, one per input, bound where they are
 * (a staged request's are in its rows already, their sizes checked as they began). */
static int bind_raw(gcall_t *k, ix_t *x)
{
    int rc;
    x->req.raw = k->split->raw;
    x->req.n_raw = k->split->n_raw;
    if (x->req.n_raw != x->n_in)
        return raw_count_mismatch(k, x->req.n_raw, x->n_in);
    for (uint32_t i = 0; i < x->n_in; i++) {
        gin_t *in = &x->ins[i];
        in->raw = &x->req.raw[i];
        if (!x->staged && (rc = osv_infer_input_external(x->inf, in->idx, in->raw->p, in->raw->len, &k->err)) != 0)
            return rc;
    }
    return 0;
}

/* Decodes, declares and prepares the inference (after an early build: what it left); 0 or an error
 * code with k->err set. */
static int build(gcall_t *k, ix_t *x)
{
    osv_grpc_t *g = grpc_of(k);
    int rc;
    if ((rc = x->early ? bind_raw(k, x) : build_inputs(k, x, k->split->meta_len, false)) != 0)
        return rc;
    uint32_t no = x->req.n_outputs;
    osv_deadline_src_t src;
    int64_t dms = osv_serve_deadline_ms(g->serve, k->model, &src);
    if (dms > 0)
        shorten(x, k->t_start + (uint64_t)dms * 1000000ull, (uint64_t)dms, src);
    if (k->st->deadline)
        shorten(x, k->st->deadline, (k->st->deadline - k->st->t_start) / 1000000ull, OSV_DEADLINE_HEADER);
    if ((rc = request_params(k, x)) != 0)
        return rc;
    if (no > osv_model_output_count(k->model))
        return bad(k, OSV_EINVAL, "'outputs' has %u elements but model '%s' has %u output(s)", no,
                   osv_model_name(k->model), osv_model_output_count(k->model));
    uint32_t n_out = no ? no : osv_model_output_count(k->model);
    if (!(x->outs = osv_arena_alloc(&k->arena, (n_out ? n_out : 1) * sizeof *x->outs, 8)))
        return bad(k, OSV_ENOMEM, "out of request memory");
    memset(x->outs, 0, (n_out ? n_out : 1) * sizeof *x->outs);
    x->n_out = n_out;
    for (uint32_t i = 0; i < n_out; i++)
        if (no ? (rc = decode_output(k, x, i)) != 0 : (x->outs[i].idx = i, 0))
            return rc;
    if ((rc = declare_outputs(k, x)) != 0 || (rc = osv_serve_admit_memory(g->serve, &k->err)) != 0 ||
        (rc = osv_infer_prepare(x->inf, &k->err)) != 0)
        return rc;
    return fill_contents(k, x);
}

/* ---- the early build ------------------------------------------------------------------------------------ */

static ix_t *ix_new(gcall_t *k)
{
    osv_grpc_t *g = grpc_of(k);
    ix_t *x = osv_arena_alloc(&k->arena, sizeof *x, 16);
    if (!x)
        return NULL;
    memset(x, 0, sizeof *x);
    x->pool = g->pool;
    x->serve = g->serve;
    k->ix = x;
    k->cleanup = ix_cleanup;
    return x;
}

/* Undoes an early build, so the message is built at its end as if there had been none: payloads
 * already received into rows move into the message's slot (one copy each, counted), the infer and
 * the rows are let go, the model reference dropped, and no payload goes to rows any more. */
static void early_undo(gcall_t *k)
{
    ix_t *x = k->ix;
    osv_err_t err;
    k->split->raw_place = NULL;
    if (!x)
        return;
    for (uint32_t i = 0; x->staged && i < k->split->n_raw; i++) {
        if (osv_gw_split_relocate(k->split, i, &err) != 0) { /* cannot happen: the slot holds every payload */
            k->rc = bad(k, err.code ? err.code : OSV_ELIMIT, "%s", err.msg);
            break;
        }
        k->unstaged += k->split->raw[i].len;
    }
    ix_cleanup(k);
    if (k->model) {
        osv_model_release(k->model);
        k->model = NULL;
    }
    if (!k->rc)
        memset(&k->err, 0, sizeof k->err); /* the build at the end says what is wrong, if anything */
}

void grpc_infer_raw_place(void *ud, uint32_t i, uint64_t len, uint8_t **dst)
{
    gcall_t *k = ud;
    ix_t *x = k->ix;
    void *rows;
    uint64_t want;
    *dst = NULL;
    if (k->rc)
        return;
    if (i == 0 && !x) {
        if (!(x = ix_new(k)))
            return;
        if (build_inputs(k, x, k->split->meta_len, true) != 0 || !x->n_in) {
            early_undo(k);
            return;
        }
        x->early = true;
        x->early_meta = k->split->meta_len;
        x->sreq.model = k->model;
        x->sreq.inf = x->inf;
        x->staged = osv_serve_stage(x->serve, &x->sreq);
    }
    if (!x || !x->early || !x->staged)
        return;
    if (i >= x->n_in || !(rows = osv_serve_stage_input(&x->sreq, x->ins[i].idx, &want)) || want != len) {
        early_undo(k); /* the build at the end names what does not fit */
        return;
    }
    *dst = rows;
}

/* ---- the response --------------------------------------------------------------------------------------- */

static const char *out_datatype(const gout_t *o)
{
    return o->classification ? "BYTES" : osv_dtype_name(o->v.dtype);
}

/* ModelInferResponse's fields before raw_output_contents. */
static void enc_header(osv_gw_w_t *w, gcall_t *k, ix_t *x, const char *version)
{
    osv_gw_w_bytes(w, 1, osv_model_name(k->model), strlen(osv_model_name(k->model)));
    osv_gw_w_bytes(w, 2, version, strlen(version));
    if (x->req.id.n)
        osv_gw_w_bytes(w, 3, x->req.id.p, x->req.id.n);
    for (uint32_t i = 0; i < x->n_out; i++) {
        const gout_t *o = &x->outs[i];
        osv_gw_out_t d = {.name = o->v.name,
                          .datatype = out_datatype(o),
                          .dims = o->classification ? o->cls.dims : o->v.dims,
                          .rank = o->classification ? o->cls.rank : o->v.rank,
                          .shm = o->shm != NULL,
                          .shm_bytes = o->v.bytes};
        osv_gw_enc_output(w, &d);
    }
}

/* Output views, and the strings (BYTES, classification) serialized into one slot. */
static int gather_outputs(gcall_t *k, ix_t *x)
{
    uint64_t strings = 0, used = 0;
    uint32_t top_n = 1;
    int rc;
    for (uint32_t i = 0; i < x->n_out; i++) {
        gout_t *o = &x->outs[i];
        if ((rc = osv_infer_output_view(x->inf, i, &o->v, &k->err)) != 0)
            return rc;
        if (o->classification) {
            o->classification = osv_classify_k(&o->v, osv_model_batched(k->model), o->classification);
            strings += (osv_classify_max(osv_model_output(k->model, o->idx), &o->v, osv_model_batched(k->model), o->classification) + 63) & ~63ull;
            top_n = o->classification > top_n ? o->classification : top_n;
        } else if (o->v.dtype == OSV_DTYPE_BYTES && !o->shm) {
            strings += (o->v.bytes + 63) & ~63ull;
        }
    }
    if (strings && osv_pool_acquire(x->pool, strings, &x->strings) != 0)
        return bad(k, OSV_EBUSY, "no memory for the response, retry later");
    uint32_t *top = osv_arena_alloc(&k->arena, top_n * sizeof *top, 8);
    if (!top)
        return bad(k, OSV_ENOMEM, "out of request memory");
    for (uint32_t i = 0; i < x->n_out; i++) {
        gout_t *o = &x->outs[i];
        uint8_t *dst = x->strings.base ? (uint8_t *)x->strings.base + used : NULL; /* no strings: no slot */
        if (o->classification) {
            const osv_tensor_info_t *ti = osv_model_output(k->model, o->idx);
            uint64_t bound = osv_classify_max(ti, &o->v, osv_model_batched(k->model), o->classification);
            o->len = osv_classify(ti, &o->v, osv_model_batched(k->model), o->classification, top, dst, &o->cls);
            if (o->len == UINT64_MAX)
                return bad(k, OSV_ELIMIT, "output '%s': too many classes to rank", o->v.name);
            o->data = dst;
            used += (bound + 63) & ~63ull;
        } else if (o->v.dtype == OSV_DTYPE_BYTES && o->shm_bytes) {
            if (o->v.bytes > o->shm_size)
                return bad(k, OSV_EINVAL, "output '%s' needs %" PRIu64 " bytes of shared memory, the region range "
                           "holds %" PRIu64, o->v.name, o->v.bytes, o->shm_size);
            if ((rc = osv_infer_output_bytes(x->inf, i, o->shm_bytes, o->shm_size, &k->err)) != 0)
                return rc;
        } else if (o->v.dtype == OSV_DTYPE_BYTES && !o->shm) {
            if ((rc = osv_infer_output_bytes(x->inf, i, dst, o->v.bytes, &k->err)) != 0)
                return rc;
            o->data = dst;
            o->len = o->v.bytes;
            used += (o->v.bytes + 63) & ~63ull;
        } else if (!o->shm) {
            o->data = o->v.data;
            o->len = o->v.bytes;
        }
    }
    for (uint32_t i = 0; i < x->n_in + x->n_out; i++) { /* a region truncated while we used it */
        osv_shm_region_t *r = i < x->n_in ? x->ins[i].shm : x->outs[i - x->n_in].shm;
        if (r && (rc = osv_shm_check(r, &k->err)) != 0)
            return rc;
    }
    return 0;
}

static void put_prefix(uint8_t *p, uint64_t n)
{
    p[0] = 0;
    p[1] = (uint8_t)(n >> 24);
    p[2] = (uint8_t)(n >> 16);
    p[3] = (uint8_t)(n >> 8);
    p[4] = (uint8_t)n;
}

/* Lays out the response: small parts in the arena, tensors by reference. */
static int encode(gcall_t *k, ix_t *x)
{
    osv_grpc_t *g = grpc_of(k);
    bool stream = k->st->method == GM_STREAM_INFER;
    char version[24];
    osv_gw_w_t size = {0}, w;
    uint64_t inner, msg, raw = 0;
    int rc;
    if ((rc = gather_outputs(k, x)) != 0)
        return rc;
    snprintf(version, sizeof version, "%" PRId64, osv_model_version(k->model));
    enc_header(&size, k, x, version);
    for (uint32_t i = 0; i < x->n_out; i++)
        raw += 1 + osv_gw_varint_len(x->outs[i].len) + x->outs[i].len;
    inner = size.len + raw;
    msg = stream ? 1 + osv_gw_varint_len(inner) + inner : inner;
    if (msg > g->o.max_message_bytes || msg > UINT32_MAX)
        return bad(k, OSV_ETOOBIG, "the response of %" PRIu64 " bytes exceeds the message limit of %" PRIu64
                   " (--grpc-max-message-bytes)", msg, g->o.max_message_bytes);
    uint64_t small = 5 + 11 + size.len + (uint64_t)x->n_out * 11;
    uint8_t *buf = osv_arena_alloc(&k->arena, small, 8);
    k->iov = osv_arena_alloc(&k->arena, (2 * (uint64_t)x->n_out + 1) * sizeof *k->iov, 8);
    if (!buf || !k->iov)
        return bad(k, OSV_ENOMEM, "out of request memory");
    w = (osv_gw_w_t){buf, small, 0};
    put_prefix(buf, msg);
    w.len = 5;
    if (stream) {
        osv_gw_w_tag(&w, 2, 2);
        osv_gw_w_varint(&w, inner);
    }
    enc_header(&w, k, x, version);
    uint64_t start = 0;
    k->n_iov = 0;
    for (uint32_t i = 0; i < x->n_out; i++) {
        osv_gw_w_tag(&w, 6, 2);
        osv_gw_w_varint(&w, x->outs[i].len);
        if (x->outs[i].len) {
            k->iov[k->n_iov++] = (struct iovec){buf + start, w.len - start};
            k->iov[k->n_iov++] = (struct iovec){(void *)x->outs[i].data, x->outs[i].len};
            start = w.len;
        }
    }
    if (w.len > start)
        k->iov[k->n_iov++] = (struct iovec){buf + start, w.len - start};
    k->total = 5 + msg;
    k->fallback = osv_infer_fallback(x->inf);
    k->core_copied = osv_infer_copied(x->inf);
    return 0;
}

/* The run finished (inline, or posted back by the worker): answer. Loop thread. */
static void finish(gcall_t *k)
{
    ix_t *x = k->ix;
    osv_sreq_t *r = &x->sreq;
    uint64_t t0 = osv_now_ns();
    int rc = r->rc;
    k->ns[OSV_PHASE_QUEUE] = r->ns[OSV_PHASE_QUEUE];
    k->ns[OSV_PHASE_COMPUTE_INPUT] += r->ns[OSV_PHASE_COMPUTE_INPUT];
    k->ns[OSV_PHASE_COMPUTE_INFER] = r->ns[OSV_PHASE_COMPUTE_INFER];
    for (int p = 0; p < 3; p += 2) {
        k->phase_t0[p] = r->phase_t0[p];
        k->phase_t1[p] = r->phase_t1[p];
    }
    k->batch = r->batch;
    if (rc) {
        k->err = r->err;
        fail(k, rc);
        return;
    }
    if ((rc = encode(k, x)) != 0) {
        fail(k, rc);
        return;
    }
    k->phase_t0[3] = t0;
    k->phase_t1[3] = osv_now_ns();
    k->ns[OSV_PHASE_COMPUTE_OUTPUT] = k->phase_t1[3] - t0;
    grpc_record(k, 0);
    gstream_t *st = k->st;
    grpc_respond(k);
    if (st->method == GM_INFER)
        grpc_finish(st, 0, "");
}

static void posted(osv_post_t *p)
{
    gcall_t *k = (gcall_t *)((char *)p - offsetof(gcall_t, done));
    gconn_t *c = k->st->c;
    if (!grpc_call_back(k))
        return;
    finish(k);
    grpc_conn_settle(c);
}

/* A worker finished the run: back to the connection's loop. */
static void completed(osv_sreq_t *r)
{
    gcall_t *k = r->ud;
    k->done.fn = posted;
    osv_loop_post(k->st->c->nc.loop, &k->done);
}

void grpc_infer(gcall_t *k)
{
    osv_grpc_t *g = grpc_of(k);
    ix_t *x = k->ix;
    int rc;
    if (x && !k->rc && k->split && k->split->meta_len != x->early_meta)
        early_undo(k); /* meta after the raw payloads: the early build read only part of it */
    if (!(x = k->ix) && !(x = ix_new(k))) {
        bad(k, OSV_ENOMEM, "out of request memory");
        fail(k, OSV_ENOMEM);
        return;
    }
    if (k->rc) {
        fail(k, k->rc);
        return;
    }
    x->t_decode = osv_now_ns();
    if ((rc = build(k, x)) != 0) {
        fail(k, rc);
        return;
    }
    k->phase_t0[1] = x->t_decode;
    k->phase_t1[1] = osv_now_ns();
    k->ns[OSV_PHASE_COMPUTE_INPUT] = k->phase_t1[1] - x->t_decode;
    x->sreq.model = k->model;
    x->sreq.inf = x->inf;
    x->sreq.may_inline = true;
    x->sreq.complete = completed;
    x->sreq.ud = k;
    k->held = true;
    k->st->c->n_held++;
    rc = osv_serve_submit(g->serve, &x->sreq);
    if (rc == 0)
        return; /* a worker has it */
    k->held = false;
    k->st->c->n_held--;
    if (rc == 1) {
        finish(k);
    } else {
        k->err = x->sreq.err; /* refused: a full queue, or a deadline the work ahead would miss */
        fail(k, rc);
    }
}

void grpc_infer_cancel(gcall_t *k)
{
    ix_t *x = k->ix;
    if (x && x->inf)
        osv_infer_cancel(x->inf);
}
