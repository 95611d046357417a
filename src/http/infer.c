/* infer.c — POST /v2/models/{m}[/versions/{v}]/infer: the KServe v2 request with Triton's binary
 * tensor data, shared-memory and classification extensions.
 *
 * One request, as data:
 *   1. the JSON header (the whole body, or Inference-Header-Content-Length bytes of it) is received
 *      into the connection buffer (or a slot when large) and tokenised without allocation;
 *   2. each input and requested output is declared to the core, which checks it against the model
 *      and lays out ONE pool slot for every slot-resident tensor;
 *   3. JSON `data` arrays are parsed number by number straight into their slot ranges; binary
 *      tensors are received by readv straight into theirs; shared-memory inputs are bound in place;
 *   4. the model runs inline on the loop (fast models) or on a worker, under the deadline watchdog;
 *   5. the response's JSON header goes into a small slot and outputs are written from where ORT put
 *      them (the slot, a shared-memory region, or ORT's buffer) with one writev.
 *
 * An input that the model's config.json declares an image may arrive as BYTES: n encoded images
 * (binary in Triton's serialized form, base64 strings in JSON, or in shared memory). The core sees
 * the model's own tensor [n,C,H,W]/[n,H,W,C]; the encoded bytes wait in a slot of their own (or
 * where they already are) and a worker decodes them straight into the tensor before the run. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/handlers.h"
#include "ortserve/imaging.h"
#include "util/base64.h"
#include "http/inflate.h"
#include "serve/shm.h"
#include "serve/bind.h"
#include "serve/errmap.h"
#include "serve/outputs.h"

#define MAX_ID_LEN   1024
#define BUSY_RETRIES 3

typedef struct in_desc {
    uint32_t idx; /* model input */
    osv_dtype_t dt;
    uint32_t rank;
    int64_t dims[OSV_MAX_DIMS];
    int32_t data_tok;     /* JSON "data" token, -1 when none */
    bool binary;          /* data follows the JSON header */
    uint64_t binary_size; /* binary_data_size */
    bool raw_string;      /* a raw request's BYTES input: the body is one element, without its length */
    osv_shm_region_t *shm;
    uint64_t shm_offset, shm_size;
    uint64_t bytes; /* size of the data as sent */
    /* An image input sent as BYTES: n_img encoded images, serialized (u32 length + bytes each) at
     * enc_ptr — in `enc` (binary or base64 data), the decoded body, or a shared-memory region. */
    bool image;
    uint32_t n_img;
    osv_slot_t enc;
    const uint8_t *enc_ptr;
    uint64_t enc_len;
} in_desc_t;

typedef struct out_desc {
    uint32_t idx; /* model output */
    bool binary;
    uint32_t classification; /* top-k, 0 = none */
    osv_shm_region_t *shm;
    uint64_t shm_offset, shm_size;
    void *shm_bytes; /* BYTES output bound for a shared-memory range */
} out_desc_t;

typedef struct infer_ctx {
    osv_model_t *m;
    osv_sreq_t sreq; /* the request as the request layer runs it */
    osv_infer_t *inf;
    in_desc_t *ins;
    uint32_t n_in;
    out_desc_t *outs;
    uint32_t n_out;
    bool binary_default; /* binary_data_output */
    bool raw;            /* Inference-Header-Content-Length: 0 */
    char *id;
    uint32_t id_len;
    uint64_t header_len;       /* JSON header bytes */
    uint64_t binary_len;       /* bytes after the JSON header */
    uint64_t t_decode;         /* start of input decoding */
    const osv_img_model_t *im; /* the model's imaging configuration, or NULL */
    bool has_image;            /* an input carries encoded images: preprocess on a worker */
    bool in_memory;            /* the whole body is in memory (chunked or compressed requests) */
    const uint8_t *mem;        /* that body */
    uint64_t mem_len;
    uint64_t shm_reserved; /* untouched shared-memory bytes reserved with the memory guard */
    uint64_t timeout_at;   /* parameters.timeout as an absolute monotonic time (0 = none) */
    uint64_t timeout_us;   /* ... and as given (504 messages) */
    uint64_t priority;     /* parameters.priority (0 = the model's default level) */
    int rc;
    osv_err_t err;
} infer_ctx_t;

static void infer_cleanup(osv_conn_t *c)
{
    infer_ctx_t *x = c->req.ctx;
    if (x) {
        if (x->inf)
            osv_infer_fini(x->inf);
        osv_serve_unstage(&x->sreq); /* after fini: its rows in a forming batch, if it had some */
        for (uint32_t i = 0; i < x->n_in; i++) {
            osv_shm_put(x->ins[i].shm);
            if (x->ins[i].enc.base)
                osv_pool_release(c->srv->pool, &x->ins[i].enc);
        }
        for (uint32_t k = 0; k < x->n_out; k++)
            osv_shm_put(x->outs[k].shm);
        osv_serve_memory_unreserve(c->srv->serve, x->shm_reserved);
    }
    if (c->req.model)
        osv_model_release(c->req.model);
    c->req.model = NULL;
    c->req.ctx = NULL;
}

/* ---- request decoding ---------------------------------------------------------------------------------- */

typedef struct dec {
    osv_conn_t *c;
    infer_ctx_t *x;
    osv_json_doc_t doc;
} dec_t;

static int bad(dec_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(dec_t *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->x->err.msg, sizeof d->x->err.msg, fmt, ap);
    va_end(ap);
    d->x->err.code = OSV_EINVAL;
    return OSV_EINVAL;
}

static const osv_json_tok_t *tok(const dec_t *d, int32_t i)
{
    return &d->doc.toks[i];
}

/* Member `key` of object token obj, or -1. */
static int32_t member(const dec_t *d, int32_t obj, const char *key)
{
    return obj >= 0 ? osv_json_obj_get(&d->doc, (uint32_t)obj, key, strlen(key)) : -1;
}

/* A string member: in place when it has no escapes, else unescaped into the request arena (names
 * such as "caf\u00e9" that Python's json.dumps escapes). */
static int get_str(dec_t *d, int32_t t, const char **s, uint32_t *n)
{
    const osv_json_tok_t *k = t >= 0 ? tok(d, t) : NULL;
    size_t len;
    char *buf;
    if (!k || k->type != OSV_JSON_STRING)
        return -1;
    if (!(k->flags & OSV_JSON_F_ESCAPED)) {
        *s = d->doc.src + k->start;
        *n = k->len;
        return 0;
    }
    if (!(buf = osv_arena_alloc(&d->c->nc.arena, k->len + 1, 1)) ||
        osv_json_str_unescape(&d->doc, (uint32_t)t, buf, k->len + 1, &len) != 0)
        return -1;
    *s = buf;
    *n = (uint32_t)len;
    return 0;
}

static int get_i64(dec_t *d, int32_t t, int64_t *v)
{
    return t >= 0 && osv_json_tok_i64(&d->doc, (uint32_t)t, v, NULL) == 0 ? 0 : -1;
}

/* shared_memory_region / _byte_size / _offset of a parameters object. 1 = present, 0 = absent. */
static int shm_params(dec_t *d, int32_t params, const char *what, osv_shm_region_t **shm, uint64_t *off,
                      uint64_t *size)
{
    int32_t tr = member(d, params, "shared_memory_region"), ts = member(d, params, "shared_memory_byte_size"),
            to = member(d, params, "shared_memory_offset");
    const char *name;
    uint32_t n;
    int64_t v;
    if (tr < 0 && ts < 0 && to < 0)
        return 0;
    if (get_str(d, tr, &name, &n) != 0 || ts < 0)
        return bad(d, "%s: shared memory needs both 'shared_memory_region' and 'shared_memory_byte_size'",
                   what);
    if (get_i64(d, ts, &v) != 0 || v < 0)
        return bad(d, "%s: 'shared_memory_byte_size' must be a non-negative integer", what);
    *size = (uint64_t)v;
    if (to >= 0 && (get_i64(d, to, &v) != 0 || v < 0))
        return bad(d, "%s: 'shared_memory_offset' must be a non-negative integer", what);
    *off = to >= 0 ? (uint64_t)v : 0;
    if (!(*shm = osv_shm_get(d->c->srv->shm, d->c->req.auth_id, name, n))) {
        d->x->err.code = OSV_ENOTFOUND;
        snprintf(d->x->err.msg, sizeof d->x->err.msg, "%s: shared memory region '%.*s' is not registered",
                 what, (int)(n > 128 ? 128 : n), name);
        return OSV_ENOTFOUND;
    }
    return 1;
}

static int decode_shape(dec_t *d, int32_t t, in_desc_t *in, const char *name)
{
    osv_server_t *s = d->c->srv;
    const osv_json_tok_t *k = t >= 0 ? tok(d, t) : NULL;
    uint64_t count = k ? k->count : 0;
    if (!k || k->type != OSV_JSON_LEAF_ARRAY || (k->count && !(k->flags & OSV_JSON_F_HAS_NUM)) ||
        (k->flags &
         (OSV_JSON_F_HAS_STR | OSV_JSON_F_HAS_NULL | OSV_JSON_F_HAS_TRUE | OSV_JSON_F_HAS_FALSE)) ||
        (k->flags & OSV_JSON_F_NONINT) || k->ndim > 1)
        return bad(d, "input '%s': 'shape' must be a flat array of non-negative integers", name);
    if (count > OSV_MAX_DIMS || count > s->o.max_json_depth + OSV_MAX_DIMS)
        return bad(d, "input '%s': shape has %" PRIu64 " dimensions, the limit is %d", name, count,
                   OSV_MAX_DIMS);
    in->rank = (uint32_t)count;
    osv_json_err_t je;
    if (count && osv_json_leaves_decode(&d->doc, (uint32_t)t, OSV_JSON_KIND_I64, in->dims, count, &je) != 0)
        return bad(d, "input '%s': shape: %s", name, je.msg);
    for (uint32_t i = 0; i < in->rank; i++)
        if (in->dims[i] < 0)
            return bad(d, "input '%s': dimension %u of the shape is negative", name, i);
    return 0;
}

/* A BYTES input where the model takes the image its config declares: shape [n] or [n,1] of encoded
 * images, n within the image limit and the model's fixed batch. Anything else is left to the core. */
static int image_input(dec_t *d, in_desc_t *in, const char *nm)
{
    infer_ctx_t *x = d->x;
    const osv_img_model_t *im = osv_img_model(x->m);
    if (in->dt != OSV_DTYPE_BYTES || !im || in->idx != im->input)
        return 0;
    if (!(in->rank == 1 || (in->rank == 2 && in->dims[1] == 1)))
        return bad(d, "input '%s' is an image input: BYTES shape must be [n] or [n,1] (n encoded images)",
                   nm);
    if (in->dims[0] < 1 || (uint64_t)in->dims[0] > im->spec.limits.max_images)
        return bad(d, "input '%s': %" PRId64 " images, the limit is 1 to %u", nm, in->dims[0],
                   im->spec.limits.max_images);
    if (im->batch > 0 && in->dims[0] != im->batch)
        return bad(d, "input '%s': model '%s' takes exactly %" PRId64 " image(s) per request, not %" PRId64,
                   nm, osv_model_name(x->m), im->batch, in->dims[0]);
    in->image = true;
    in->n_img = (uint32_t)in->dims[0];
    x->im = im;
    x->has_image = true;
    return 0;
}

/* One element of "inputs". */
static int decode_input(dec_t *d, int32_t t, in_desc_t *in)
{
    infer_ctx_t *x = d->x;
    const char *name, *dts;
    uint32_t nlen, dlen;
    char nm[160];
    int rc;
    if (tok(d, t)->type != OSV_JSON_OBJECT)
        return bad(d, "every element of 'inputs' must be an object");
    if (get_str(d, member(d, t, "name"), &name, &nlen) != 0)
        return bad(d, "an input has no string 'name'");
    snprintf(nm, sizeof nm, "%.*s", (int)(nlen > 128 ? 128 : nlen), name);
    int idx = osv_model_find_input(x->m, name, nlen);
    if (idx < 0) {
        char names[512];
        return bad(d, "unknown input '%s' for model '%s' (its inputs: %s)", nm, osv_model_name(x->m),
                   osv_model_names(x->m, false, names, sizeof names));
    }
    in->idx = (uint32_t)idx;
    if (get_str(d, member(d, t, "datatype"), &dts, &dlen) != 0)
        return bad(d, "input '%s' has no string 'datatype'", nm);
    if ((in->dt = osv_dtype_from_name(dts, dlen)) == OSV_DTYPE_INVALID)
        return bad(d, "input '%s': unknown datatype '%.*s'", nm, (int)(dlen > 32 ? 32 : dlen), dts);
    if ((rc = decode_shape(d, member(d, t, "shape"), in, nm)) != 0 || (rc = image_input(d, in, nm)) != 0)
        return rc;
    int32_t params = member(d, t, "parameters"), tb;
    if (params >= 0 && tok(d, params)->type != OSV_JSON_OBJECT)
        return bad(d, "input '%s': 'parameters' must be an object", nm);
    in->data_tok = member(d, t, "data");
    if ((tb = member(d, params, "binary_data_size")) >= 0) {
        int64_t v;
        if (get_i64(d, tb, &v) != 0 || v < 0)
            return bad(d, "input '%s': 'binary_data_size' must be a non-negative integer", nm);
        in->binary = true;
        in->binary_size = (uint64_t)v;
    }
    if ((rc = shm_params(d, params, nm, &in->shm, &in->shm_offset, &in->shm_size)) < 0)
        return rc;
    int sources = (in->data_tok >= 0) + in->binary + (rc == 1);
    if (sources != 1)
        return bad(
            d, "input '%s' must have exactly one of 'data', 'binary_data_size' or shared memory (it has %d)",
            nm, sources);
    if (in->binary && x->header_len == 0 && !x->raw)
        return bad(d,
                   "input '%s' has 'binary_data_size' but the request has no Inference-Header-Content-Length",
                   nm);
    return 0;
}

static int decode_output(dec_t *d, int32_t t, out_desc_t *o)
{
    infer_ctx_t *x = d->x;
    const char *name;
    uint32_t nlen;
    char nm[160];
    int rc;
    if (tok(d, t)->type != OSV_JSON_OBJECT || get_str(d, member(d, t, "name"), &name, &nlen) != 0)
        return bad(d, "every element of 'outputs' must be an object with a string 'name'");
    snprintf(nm, sizeof nm, "%.*s", (int)(nlen > 128 ? 128 : nlen), name);
    int idx = osv_model_find_output(x->m, name, nlen);
    if (idx < 0) {
        char names[512];
        return bad(d, "unknown output '%s' for model '%s' (its outputs: %s)", nm, osv_model_name(x->m),
                   osv_model_names(x->m, true, names, sizeof names));
    }
    o->idx = (uint32_t)idx;
    o->binary = x->binary_default;
    int32_t params = member(d, t, "parameters"), tb, tc;
    if (params >= 0 && tok(d, params)->type != OSV_JSON_OBJECT)
        return bad(d, "output '%s': 'parameters' must be an object", nm);
    if ((tb = member(d, params, "binary_data")) >= 0 &&
        osv_json_tok_bool(&d->doc, (uint32_t)tb, &o->binary, NULL) != 0)
        return bad(d, "output '%s': 'binary_data' must be a boolean", nm);
    if ((tc = member(d, params, "classification")) >= 0) {
        int64_t k;
        if (get_i64(d, tc, &k) != 0 || k < 1)
            return bad(d, "output '%s': 'classification' must be a positive integer", nm);
        if (osv_model_output(x->m, o->idx)->dtype == OSV_DTYPE_BYTES)
            return bad(d, "output '%s' is BYTES: classification ranks numeric scores", nm);
        o->classification = k > UINT32_MAX ? UINT32_MAX : (uint32_t)k; /* clamped to the classes later */
    }
    if ((rc = shm_params(d, params, nm, &o->shm, &o->shm_offset, &o->shm_size)) < 0)
        return rc;
    if (o->shm && (o->classification || (tb >= 0 && o->binary)))
        return bad(d, "output '%s': shared memory cannot be combined with 'classification' or 'binary_data'",
                   nm);
    return 0;
}

static int decode_parameters(dec_t *d, int32_t p)
{
    infer_ctx_t *x = d->x;
    int32_t t;
    int64_t v;
    if (p < 0)
        return 0;
    if (tok(d, p)->type != OSV_JSON_OBJECT)
        return bad(d, "'parameters' must be an object");
    if ((t = member(d, p, "binary_data_output")) >= 0 &&
        osv_json_tok_bool(&d->doc, (uint32_t)t, &x->binary_default, NULL))
        return bad(d, "'binary_data_output' must be a boolean");
    if ((t = member(d, p, "timeout")) >= 0) { /* Triton: microseconds; the request layer applies it */
        uint64_t us;
        if (osv_json_tok_u64(&d->doc, (uint32_t)t, &us, NULL) != 0)
            return bad(d, "'timeout' must be a non-negative integer (microseconds)");
        if (us)
            x->timeout_at = us > (UINT64_MAX - d->c->req.t_start) / 1000 ? UINT64_MAX : d->c->req.t_start + us * 1000;
        x->timeout_us = us;
    }
    if ((t = member(d, p, "priority")) >= 0 && osv_json_tok_u64(&d->doc, (uint32_t)t, &x->priority, NULL) != 0)
        return bad(d, "'priority' must be a non-negative integer (1 is the highest level, 0 the model's default)");
    if ((t = member(d, p, "sequence_id")) >= 0 && !(get_i64(d, t, &v) == 0 && v == 0))
        return bad(d, "sequence batching ('sequence_id') is not supported");
    return 0;
}

static int decode_id(dec_t *d, int32_t t)
{
    infer_ctx_t *x = d->x;
    const osv_json_tok_t *k;
    size_t n;
    if (t < 0)
        return 0;
    k = tok(d, t);
    if (k->type != OSV_JSON_STRING || k->len > MAX_ID_LEN)
        return bad(d, "'id' must be a string of at most %d bytes", MAX_ID_LEN);
    if (!(x->id = osv_arena_alloc(&d->c->nc.arena, k->len + 1, 1)) ||
        osv_json_str_unescape(&d->doc, (uint32_t)t, x->id, k->len + 1, &n) != 0)
        return bad(d, "'id' is not a valid string");
    x->id_len = (uint32_t)n;
    return 0;
}

static int decode_request(dec_t *d)
{
    infer_ctx_t *x = d->x;
    osv_arena_t *a = &d->c->nc.arena;
    int32_t ti, to;
    uint32_t n;
    int rc;
    if (tok(d, 0)->type != OSV_JSON_OBJECT)
        return bad(d, "the request must be a JSON object");
    if ((rc = decode_id(d, member(d, 0, "id"))) || (rc = decode_parameters(d, member(d, 0, "parameters"))))
        return rc;
    ti = member(d, 0, "inputs");
    /* [] is tokenised as an (empty) array of scalars: a model without inputs takes "inputs": []. */
    if (ti < 0 || !(tok(d, ti)->type == OSV_JSON_ARRAY ||
                    (tok(d, ti)->type == OSV_JSON_LEAF_ARRAY && tok(d, ti)->count == 0)))
        return bad(d, "'inputs' must be an array of input objects");
    n = tok(d, ti)->count;
    /* Bounded by the model before anything is allocated: each input may be sent once. */
    if (n > osv_model_input_count(x->m))
        return bad(d, "'inputs' has %u elements but model '%s' has %u input(s): each is sent at most once", n,
                   osv_model_name(x->m), osv_model_input_count(x->m));
    if (!(x->ins = osv_arena_alloc(a, (n ? n : 1) * sizeof *x->ins, 8)))
        return osv_err_set(&x->err, OSV_ENOMEM, "out of request memory");
    memset(x->ins, 0, (n ? n : 1) * sizeof *x->ins);
    x->n_in = n; /* infer_cleanup walks ins[0..n_in) */
    for (uint32_t i = 0, t = (uint32_t)ti + 1; i < x->n_in; i++, t = tok(d, (int32_t)t)->next)
        if ((rc = decode_input(d, (int32_t)t, &x->ins[i])) != 0)
            return rc;
    to = member(d, 0, "outputs");
    if (to >= 0 && tok(d, to)->type != OSV_JSON_ARRAY && tok(d, to)->type != OSV_JSON_LEAF_ARRAY)
        return bad(d, "'outputs' must be an array of output objects");
    n = to >= 0 && tok(d, to)->type == OSV_JSON_ARRAY ? tok(d, to)->count : 0;
    if (to >= 0 && tok(d, to)->type == OSV_JSON_LEAF_ARRAY && tok(d, to)->count)
        return bad(d, "every element of 'outputs' must be an object");
    if (n > osv_model_output_count(x->m))
        return bad(d, "'outputs' has %u elements but model '%s' has %u output(s): each is requested at most once",
                   n, osv_model_name(x->m), osv_model_output_count(x->m));
    if (!(x->outs = osv_arena_alloc(a, (n ? n : osv_model_output_count(x->m) + 1) * sizeof *x->outs, 8)))
        return osv_err_set(&x->err, OSV_ENOMEM, "out of request memory");
    memset(x->outs, 0, (n ? n : osv_model_output_count(x->m) + 1) * sizeof *x->outs);
    x->n_out = n;
    for (uint32_t i = 0, t = (uint32_t)to + 1; i < x->n_out; i++, t = tok(d, (int32_t)t)->next)
        if ((rc = decode_output(d, (int32_t)t, &x->outs[i])) != 0)
            return rc;
    if (x->n_out == 0) { /* none requested: every output, with the request's default binary flag */
        x->n_out = osv_model_output_count(x->m);
        for (uint32_t k = 0; k < x->n_out; k++)
            x->outs[k] = (out_desc_t){.idx = k, .binary = x->binary_default || x->raw};
    }
    return 0;
}

/* ---- declaring to the core, filling the slot -------------------------------------------------------- */

/* Exact serialized size of the BYTES elements of a JSON data array (u32 length + unescaped bytes). */
static int json_bytes_size(dec_t *d, const in_desc_t *in, uint64_t *out)
{
    osv_json_leaf_iter_t it;
    osv_json_leaf_t leaf;
    uint64_t total = 0;
    if (osv_json_leaf_iter_init(&it, &d->doc, (uint32_t)in->data_tok) != 0)
        return -1;
    while (osv_json_leaf_next(&it, &leaf)) {
        if (leaf.type != OSV_JSON_STRING)
            return -1;
        size_t len = leaf.len;
        if ((leaf.flags & OSV_JSON_F_ESCAPED) &&
            osv_json_unescaped_len(d->doc.src + leaf.start, leaf.len, &len) != 0)
            return -1;
        total += 4 + len;
    }
    *out = total;
    return 0;
}

/* Base64 strings of a JSON image input, decoded into a slot in the serialized BYTES form. A
 * "data:<type>;base64," prefix (a data URL) is skipped. */
static int decode_b64_images(dec_t *d, in_desc_t *in, const char *nm)
{
    osv_server_t *s = d->c->srv;
    osv_json_leaf_iter_t it;
    osv_json_leaf_t leaf;
    uint64_t bound = 0, used = 0;
    uint32_t count = 0;
    if (osv_json_leaf_iter_init(&it, &d->doc, (uint32_t)in->data_tok) != 0)
        return bad(d, "input '%s': image data must be an array of base64 strings", nm);
    while (osv_json_leaf_next(&it, &leaf)) {
        if (leaf.type != OSV_JSON_STRING)
            return bad(d, "input '%s': image data must be an array of base64 strings", nm);
        bound += 4 + osv_b64_max(leaf.len);
        count++;
    }
    if (count != in->n_img)
        return bad(d, "input '%s': %u strings for %u images", nm, count, in->n_img);
    if (bound > (uint64_t)in->n_img * (4 + osv_b64_max(s->o.max_body_bytes)))
        return osv_err_set(&d->x->err, OSV_ETOOBIG, "input '%s': images too large", nm);
    if (osv_pool_acquire(s->pool, bound, &in->enc) != 0)
        return osv_err_set(&d->x->err, OSV_EBUSY, "no memory for %" PRIu64 " bytes of images, retry later",
                           bound);
    osv_json_leaf_iter_init(&it, &d->doc, (uint32_t)in->data_tok);
    for (uint32_t i = 0; osv_json_leaf_next(&it, &leaf); i++) {
        const char *p = d->doc.src + leaf.start, *comma;
        size_t len = leaf.len;
        uint64_t n;
        if (len > 5 && memcmp(p, "data:", 5) == 0 && (comma = memchr(p, ',', len)) != NULL) {
            len -= (size_t)(comma + 1 - p);
            p = comma + 1;
        }
        if (osv_b64_decode(p, len, in->enc.base + used + 4, bound - used - 4, &n) != 0)
            return bad(d, "input '%s': image %u is not valid base64", nm, i);
        uint32_t n32 = (uint32_t)n;
        memcpy(in->enc.base + used, &n32, 4);
        used += 4 + n;
    }
    in->enc_ptr = in->enc.base;
    in->enc_len = used;
    return 0;
}

/* An image input: the core gets the model's tensor for n images; the encoded bytes are bound to
 * where they are (decoded body, shared memory) or get a slot of their own (binary, base64). */
static int declare_image(dec_t *d, in_desc_t *in, uint64_t *bin_off)
{
    infer_ctx_t *x = d->x;
    osv_server_t *s = d->c->srv;
    const char *nm = osv_model_input(x->m, in->idx)->name;
    int64_t dims[4];
    void *p;
    int rc;
    osv_img_tensor_dims(&x->im->spec, in->n_img, dims);
    if ((rc = osv_infer_add_input(x->inf, in->idx, x->im->spec.dtype, dims, 4, 0, &x->err)) != 0)
        return rc;
    if (in->data_tok >= 0)
        return decode_b64_images(d, in, nm);
    if (in->shm) {
        if ((rc = osv_shm_range(in->shm, in->shm_offset, in->shm_size, &p, &x->err)) != 0)
            return rc;
        in->enc_ptr = p;
        in->enc_len = in->shm_size;
        return 0;
    }
    if (in->binary_size > (uint64_t)in->n_img * (4 + x->im->spec.limits.max_bytes))
        return osv_err_set(&x->err, OSV_ETOOBIG,
                           "input '%s': %" PRIu64 " bytes for %u images exceed the limit of %" PRIu64
                           " per image",
                           nm, in->binary_size, in->n_img, x->im->spec.limits.max_bytes);
    in->enc_len = in->binary_size;
    if (x->in_memory) {
        if (*bin_off + in->binary_size > x->binary_len)
            return osv_err_set(&x->err, OSV_EINVAL,
                               "binary_data_size values exceed the %" PRIu64 " bytes after the JSON header",
                               x->binary_len);
        in->enc_ptr = x->mem + x->header_len + *bin_off;
        *bin_off += in->binary_size;
        return 0;
    }
    if (osv_pool_acquire(s->pool, in->binary_size ? in->binary_size : 1, &in->enc) != 0)
        return osv_err_set(&x->err, OSV_EBUSY, "no memory for %" PRIu64 " bytes of images, retry later",
                           in->binary_size);
    in->enc_ptr = in->enc.base;
    return 0;
}

/* Shared-memory pages nobody has touched yet are charged to this server when it touches them: the
 * memory guard reserves them before anything does (shm.h). */
static int shm_reserve(infer_ctx_t *x, osv_server_t *s)
{
    uint64_t absent = 0;
    if (!osv_serve_guarding_memory(s->serve)) /* no memory guard */
        return 0;
    for (uint32_t i = 0; i < x->n_in; i++)
        if (x->ins[i].shm)
            absent += osv_shm_absent(x->ins[i].shm, x->ins[i].shm_offset, x->ins[i].shm_size);
    for (uint32_t k = 0; k < x->n_out; k++)
        if (x->outs[k].shm)
            absent += osv_shm_absent(x->outs[k].shm, x->outs[k].shm_offset, x->outs[k].shm_size);
    int rc = osv_serve_memory_reserve(s->serve, absent, &x->err);
    x->shm_reserved = rc ? 0 : absent;
    return rc;
}

/* A region whose object was truncated while this request used it (shm.h): 400, prepared. */
static bool shm_broken(osv_conn_t *c, infer_ctx_t *x)
{
    for (uint32_t i = 0; i < x->n_in + x->n_out; i++) {
        osv_shm_region_t *r = i < x->n_in ? x->ins[i].shm : x->outs[i - x->n_in].shm;
        if (r && osv_shm_check(r, &x->err) != 0) {
            osv_res_error(c, 400, "%s", x->err.msg);
            return true;
        }
    }
    return false;
}

static int declare(dec_t *d)
{
    infer_ctx_t *x = d->x;
    osv_err_t *err = &x->err;
    uint64_t bin_off = 0;
    int rc;
    for (uint32_t i = 0; i < x->n_in; i++) {
        in_desc_t *in = &x->ins[i];
        uint64_t bytes = in->binary ? in->binary_size + (in->raw_string ? 4 : 0) : in->shm ? in->shm_size : 0;
        if (in->image) {
            if ((rc = declare_image(d, in, &bin_off)) != 0)
                return rc;
            continue;
        }
        if (in->dt == OSV_DTYPE_BYTES && in->data_tok >= 0 && json_bytes_size(d, in, &bytes) != 0)
            return bad(d, "input '%s': BYTES data must be an array of valid strings",
                       osv_model_input(x->m, in->idx)->name);
        if ((rc = osv_infer_add_input(x->inf, in->idx, in->dt, in->dims, in->rank, bytes, err)) != 0)
            return rc;
        in->bytes = bytes;
        if (in->raw_string) { /* copied after its length (raw_string_into_slot) */
            bin_off += in->binary_size;
            continue;
        }
        if (in->binary && x->in_memory) { /* bound to its range of the decoded body */
            if (bin_off + in->binary_size > x->binary_len)
                return osv_err_set(err, OSV_EINVAL,
                                   "binary_data_size values exceed the %" PRIu64
                                   " bytes after the JSON header",
                                   x->binary_len);
            if ((rc = osv_infer_input_external(x->inf, in->idx, (void *)(x->mem + x->header_len + bin_off),
                                               in->binary_size, err)) != 0)
                return rc;
            bin_off += in->binary_size;
        }
        if (in->shm &&
            (rc = osv_bind_shm_input(x->inf, in->idx, osv_model_input(x->m, in->idx)->name, in->dt, in->dims,
                                     in->rank, bytes, in->shm, in->shm_offset, in->shm_size, err)) != 0)
            return rc;
    }
    if (x->in_memory && bin_off != x->binary_len)
        return osv_err_set(err, OSV_EINVAL,
                           "binary_data_size values add up to %" PRIu64 " bytes but %" PRIu64
                           " bytes follow the JSON header",
                           bin_off, x->binary_len);
    for (uint32_t k = 0; k < x->n_out; k++) {
        out_desc_t *o = &x->outs[k];
        if ((rc = osv_infer_add_output(x->inf, o->idx, err)) != 0 ||
            (o->shm && (rc = osv_bind_shm_output(x->inf, x->m, o->idx, o->shm, o->shm_offset, o->shm_size,
                                                 &o->shm_bytes, err)) != 0))
            return rc;
    }
    return shm_reserve(x, d->c->srv);
}

static osv_json_kind_t kind_of(osv_dtype_t dt)
{
    static const osv_json_kind_t k[OSV_DTYPE_COUNT] = {
        [OSV_DTYPE_BOOL] = OSV_JSON_KIND_BOOL,  [OSV_DTYPE_UINT8] = OSV_JSON_KIND_U8,
        [OSV_DTYPE_UINT16] = OSV_JSON_KIND_U16, [OSV_DTYPE_UINT32] = OSV_JSON_KIND_U32,
        [OSV_DTYPE_UINT64] = OSV_JSON_KIND_U64, [OSV_DTYPE_INT8] = OSV_JSON_KIND_I8,
        [OSV_DTYPE_INT16] = OSV_JSON_KIND_I16,  [OSV_DTYPE_INT32] = OSV_JSON_KIND_I32,
        [OSV_DTYPE_INT64] = OSV_JSON_KIND_I64,  [OSV_DTYPE_FP16] = OSV_JSON_KIND_F16,
        [OSV_DTYPE_BF16] = OSV_JSON_KIND_BF16,  [OSV_DTYPE_FP32] = OSV_JSON_KIND_F32,
        [OSV_DTYPE_FP64] = OSV_JSON_KIND_F64,
    };
    return dt < OSV_DTYPE_COUNT ? k[dt] : 0;
}

/* Writes the strings of a JSON BYTES input in Triton's serialized form (u32 length, then the bytes)
 * into dst[0..cap), the input's slot range: every write is bounded by that range. */
static int fill_bytes(dec_t *d, const in_desc_t *in, uint8_t *dst, uint64_t cap)
{
    osv_json_leaf_iter_t it;
    osv_json_leaf_t leaf;
    uint64_t used = 0;
    osv_json_leaf_iter_init(&it, &d->doc, (uint32_t)in->data_tok);
    while (osv_json_leaf_next(&it, &leaf)) {
        const char *raw = d->doc.src + leaf.start;
        size_t n = leaf.len;
        uint32_t n32;
        if (cap - used < 4)
            return -1;
        if (leaf.flags & OSV_JSON_F_ESCAPED) {
            if (osv_json_unescape_raw(raw, leaf.len, (char *)dst + used + 4, cap - used - 4, &n) != 0)
                return -1;
        } else {
            if (cap - used - 4 < n)
                return -1;
            memcpy(dst + used + 4, raw, n);
        }
        n32 = (uint32_t)n;
        memcpy(dst + used, &n32, 4);
        used += 4 + n;
    }
    return 0;
}

/* Parses every JSON data array straight into its slot range. */
static int fill_json_inputs(dec_t *d)
{
    infer_ctx_t *x = d->x;
    for (uint32_t i = 0; i < x->n_in; i++) {
        const in_desc_t *in = &x->ins[i];
        const char *name = osv_model_input(x->m, in->idx)->name;
        osv_json_err_t je;
        void *dst;
        uint64_t len, count = 1;
        if (in->data_tok < 0 || in->image)
            continue;
        osv_infer_input_buffer(x->inf, in->idx, &dst, &len);
        for (uint32_t k = 0; k < in->rank; k++)
            count *= (uint64_t)in->dims[k];
        if (in->dt == OSV_DTYPE_BYTES) {
            if (tok(d, in->data_tok)->type == OSV_JSON_LEAF_ARRAY && tok(d, in->data_tok)->count != count)
                return bad(d, "input '%s': %u values for %" PRIu64 " elements", name,
                           tok(d, in->data_tok)->count, count);
            if (fill_bytes(d, in, dst, len) != 0)
                return bad(d, "input '%s': BYTES data must be an array of strings", name);
            continue;
        }
        if (osv_json_leaves_decode(&d->doc, (uint32_t)in->data_tok, kind_of(in->dt), dst, count, &je) != 0) {
            if (je.code == OSV_JSON_ECOUNT)
                return bad(d, "input '%s': 'data' has %u values but shape needs %" PRIu64, name,
                           tok(d, in->data_tok)->type == OSV_JSON_LEAF_ARRAY ? tok(d, in->data_tok)->count
                                                                             : 1,
                           count);
            return bad(d, "input '%s': %s", name, je.msg);
        }
    }
    return 0;
}

/* ---- running ----------------------------------------------------------------------------------------------
 */

static void encode_response(osv_conn_t *c);

/* Decodes every image input's encoded bytes straight into its tensor range: the request layer's
 * prepare step, on the worker that runs the request. */
static int preprocess_images(osv_sreq_t *r)
{
    osv_conn_t *c = r->ud;
    infer_ctx_t *x = c->req.ctx;
    uint64_t t0 = osv_now_ns();
    osv_img_ctx_t *ictx = osv_img_thread_ctx(&r->err);
    if (!ictx)
        return r->err.code ? r->err.code : OSV_ENOMEM;
    osv_img_ctx_set_budget(ictx, c->srv->img_budget); /* decode memory: 503/413 when it does not fit */
    for (uint32_t i = 0; i < x->n_in; i++) {
        const in_desc_t *in = &x->ins[i];
        const char *name = osv_model_input(x->m, in->idx)->name;
        uint32_t failed = UINT32_MAX;
        void *dst;
        uint64_t len;
        if (!in->image)
            continue;
        osv_infer_input_buffer(x->inf, in->idx, &dst, &len);
        int rc = osv_img_preprocess_bytes(ictx, &x->im->spec, in->enc_ptr, in->enc_len, in->n_img, dst, len,
                                          &failed, &r->err);
        if (rc) {
            if (failed < in->n_img)
                osv_err_prefix(&r->err, "input '%s': image %u", name, failed);
            else
                osv_err_prefix(&r->err, "input '%s'", name);
            return osv_err_at(&r->err, (int)i);
        }
    }
    r->ns[OSV_PHASE_COMPUTE_INPUT] += osv_now_ns() - t0;
    return 0;
}

/* The request is finished (any thread that ran it): its times into the connection's request, then
 * the response — encoded here, on the worker when it ran on one. */
static void finish(osv_conn_t *c)
{
    infer_ctx_t *x = c->req.ctx;
    osv_sreq_t *r = &x->sreq;
    c->req.ns[OSV_PHASE_QUEUE] = r->ns[OSV_PHASE_QUEUE];
    c->req.ns[OSV_PHASE_COMPUTE_INPUT] += r->ns[OSV_PHASE_COMPUTE_INPUT];
    c->req.ns[OSV_PHASE_COMPUTE_INFER] = r->ns[OSV_PHASE_COMPUTE_INFER];
    for (int p = OSV_PHASE_QUEUE; p < OSV_PHASE_COUNT; p++) { /* the phases the request layer timed */
        if (r->phase_t1[p]) {
            c->req.phase_t0[p] = r->phase_t0[p];
            c->req.phase_t1[p] = r->phase_t1[p];
        }
    }
    c->req.batch = r->batch;
    c->req.batch_id = r->batch_id;
    c->req.batch_requests = r->batch_requests;
    c->req.cache_hit = r->cache_hit;
    if (shm_broken(c, x))
        return;
    if (r->rc) {
        osv_res_error_code(c, r->rc, r->err.msg);
        return;
    }
    encode_response(c);
}

/* A worker finished the request: the response is encoded here, written by the connection's loop. */
static void completed(osv_sreq_t *r)
{
    finish(r->ud);
    osv_conn_complete(r->ud);
}

static void dispatch(osv_conn_t *c)
{
    infer_ctx_t *x = c->req.ctx;
    osv_sreq_t *r = &x->sreq;
    c->req.phase_t0[OSV_PHASE_COMPUTE_INPUT] = x->t_decode;
    c->req.phase_t1[OSV_PHASE_COMPUTE_INPUT] = osv_now_ns();
    c->req.ns[OSV_PHASE_COMPUTE_INPUT] = c->req.phase_t1[OSV_PHASE_COMPUTE_INPUT] - x->t_decode;
    *r = (osv_sreq_t){.model = x->m,
                      .inf = x->inf,
                      .stage = r->stage, /* osv_serve_stage's, kept */
                      .stage_row = r->stage_row,
                      .deadline = c->req.deadline,
                      .deadline_ms = c->req.deadline_ms,
                      .deadline_src = c->req.deadline_src,
                      .timeout_at = x->timeout_at,
                      .timeout_us = x->timeout_us,
                      .priority = x->priority,
                      .may_inline = !x->has_image, /* decoding takes milliseconds: never on the loop */
                      .prepare = x->has_image ? preprocess_images : NULL,
                      .complete = completed,
                      .ud = c};
    int rc = osv_serve_submit(c->srv->serve, r);
    if (rc == 1)
        finish(c);
    else
        osv_http_refuse_queued(c, rc, &r->err); /* 0: the state stays RUN until the worker completes */
}

/* The guard is asked again: pressure may have come while the tensors arrived, and a refused run
 * still saves ONNX Runtime's growth for it. */
static void tensors_received(osv_conn_t *c)
{
    if (!osv_server_memory_refuse(c))
        dispatch(c);
}

/* Plans the binary section straight into the inputs' slot ranges (wire order = JSON order). */
static void receive_binary(osv_conn_t *c)
{
    infer_ctx_t *x = c->req.ctx;
    struct iovec v[OSV_MAX_IOV];
    int n = 0;
    uint64_t total = 0;
    for (uint32_t i = 0; i < x->n_in; i++) {
        const in_desc_t *in = &x->ins[i];
        void *dst;
        uint64_t len;
        if (!in->binary)
            continue;
        if (n == OSV_MAX_IOV) {
            osv_res_error(c, 400, "more than %d binary inputs", OSV_MAX_IOV);
            return;
        }
        if (in->image) {
            dst = (void *)in->enc_ptr; /* the encoded images; decoded into the tensor on a worker */
        } else {
            osv_infer_input_dest(x->inf, in->idx, &dst, &len); /* its slot range, or its rows in a batch */
            if (in->raw_string) { /* Triton's serialized element: its length, then the body after it */
                uint32_t l32 = (uint32_t)in->binary_size;
                memcpy(dst, &l32, 4);
                dst = (char *)dst + 4;
            }
        }
        v[n++] = (struct iovec){dst, in->binary_size};
        total += in->binary_size;
    }
    if (total != x->binary_len) {
        osv_res_error(c, 400,
                      "binary_data_size values add up to %" PRIu64 " bytes but %" PRIu64
                      " bytes follow the JSON header",
                      total, x->binary_len);
        return;
    }
    osv_conn_plan_iov(c, v, n);
    osv_conn_receive_body(c, tensors_received);
}

static void prepare_and_continue(osv_conn_t *c);

/* A raw BYTES body not received into its slot (it arrived whole, chunked or compressed, or it is
 * empty): its length, then a copy of it. */
static void raw_string_into_slot(infer_ctx_t *x)
{
    void *dst;
    uint64_t len;
    if (x->n_in != 1 || !x->ins[0].raw_string || osv_infer_input_buffer(x->inf, 0, &dst, &len))
        return;
    uint32_t l32 = (uint32_t)x->ins[0].binary_size;
    memcpy(dst, &l32, 4);
    if (x->in_memory && l32)
        memcpy((char *)dst + 4, x->mem, x->ins[0].binary_size);
}

static void retry_prepare(osv_conn_t *c)
{
    prepare_and_continue(c);
}

/* Acquires the slot (retrying a full pool with backoff), fills JSON inputs, receives binary ones. */
static void prepare_and_continue(osv_conn_t *c)
{
    infer_ctx_t *x = c->req.ctx;
    dec_t d = {.c = c, .x = x};
    /* Memory guard before the slot is touched: a refused request costs the group no memory. */
    if (osv_server_memory_refuse(c))
        return;
    int rc = osv_infer_prepare(x->inf, &x->err);
    if (rc == OSV_EBUSY && c->req.retries < BUSY_RETRIES) {
        osv_stats_add_recovery(osv_model_stats(x->m));
        c->req.on_timer = retry_prepare;
        osv_conn_set_timer(c, 2000000ull << c->req.retries++); /* 2, 4, 8 ms */
        c->state = CONN_RUN;
        return;
    }
    if (rc) {
        osv_res_error_code(c, rc, x->err.msg);
        return;
    }
    if (x->header_len || !x->raw) {
        /* The token scratch still holds this request's document: it is only reused by the next
         * request on this loop, and everything below runs before that. */
        d.doc = *(osv_json_doc_t *)c->req.body_doc;
        if (fill_json_inputs(&d) != 0) {
            osv_res_error(c, 400, "%s", x->err.msg);
            return;
        }
    }
    if (x->binary_len && !x->in_memory) {
        receive_binary(c);
    } else {
        raw_string_into_slot(x);
        /* An empty raw body gets here from the request's handler, still in HEAD: a request queued for
         * a worker must leave it (as after a body), or the head would be routed again. */
        c->state = CONN_RUN;
        dispatch(c);
    }
}

/* Zero-copy batching: when every input comes in the binary section, the request's shape is known before
 * its body arrives, so it may reserve its rows in its model's forming batch (osv_serve_stage) and have
 * the body received straight into them. JSON data, shared memory, images and bodies received whole
 * (chunked, compressed) keep their own slot. */
static void stage_binary(osv_conn_t *c, infer_ctx_t *x)
{
    if (x->in_memory || !x->binary_len || !x->n_in)
        return;
    for (uint32_t i = 0; i < x->n_in; i++)
        if (!x->ins[i].binary || x->ins[i].image || x->ins[i].raw_string || x->ins[i].shm)
            return;
    x->sreq.model = x->m;
    x->sreq.inf = x->inf;
    osv_serve_stage(c->srv->serve, &x->sreq);
}

static int init_infer(osv_conn_t *c, infer_ctx_t *x)
{
    osv_server_t *s = c->srv;
    osv_infer_opts_t io = {.pool = s->pool, .force_copy = s->o.force_copy};
    size_t size = osv_infer_size(x->m);
    void *mem = osv_arena_alloc(&c->nc.arena, size, 16);
    if (!mem)
        return osv_err_set(&x->err, OSV_ENOMEM, "out of request memory");
    return osv_infer_init(mem, size, x->m, &io, &x->inf, &x->err);
}

/* The JSON header is in memory: decode, declare, prepare. */
static void header_received(osv_conn_t *c)
{
    infer_ctx_t *x = c->req.ctx;
    osv_json_doc_t *doc = osv_arena_alloc(&c->nc.arena, sizeof *doc, 8);
    dec_t d = {.c = c, .x = x};
    int rc;
    x->t_decode = osv_now_ns();
    c->req.body_len = x->header_len ? x->header_len : c->req.body_len;
    if (!doc || osv_h_parse_json(c, &d.doc) != 0) {
        if (!doc)
            osv_res_error(c, 503, "out of request memory");
        return;
    }
    *doc = d.doc;
    c->req.body_doc = doc;
    if ((rc = decode_request(&d)) != 0 || (rc = init_infer(c, x)) != 0 || (rc = declare(&d)) != 0) {
        osv_res_error_code(c, rc, x->err.msg);
        return;
    }
    stage_binary(c, x);
    prepare_and_continue(c);
}

/* The shape of a raw body's input, as Triton takes it: a batching model's input is batch 1; its other
 * dims may have one variable dim, set from the body's size (a BYTES input: every dim is 1, the body
 * is the one element). 0, or -1 with the message in x->err. */
static int raw_shape(infer_ctx_t *x, const osv_tensor_info_t *t, uint64_t body, in_desc_t *in)
{
    bool strings = t->dtype == OSV_DTYPE_BYTES;
    uint64_t fixed = strings ? 1 : osv_dtype_size(t->dtype);
    int dyn = -1;
    for (int32_t d = 0; d < t->rank; d++) {
        if (d == 0 && osv_model_max_batch_size(x->m) > 0) {
            in->dims[0] = 1; /* batch 1 */
        } else if (t->dims[d] >= 0) {
            in->dims[d] = t->dims[d];
            if (!osv_mul_u64(fixed, (uint64_t)t->dims[d], &fixed))
                fixed = UINT64_MAX;
        } else if (strings) {
            in->dims[d] = 1;
        } else if (dyn < 0) {
            dyn = d;
        } else {
            return osv_err_set(&x->err, OSV_EINVAL,
                               "a raw binary request needs an input with at most one variable dimension "
                               "besides the batch; input '%s' has more",
                               t->name);
        }
    }
    if (strings && body > UINT32_MAX)
        return osv_err_set(&x->err, OSV_ELIMIT, "a raw BYTES element of %" PRIu64 " bytes is over 4 GiB",
                           body);
    if (strings && fixed != 1)
        return osv_err_set(&x->err, OSV_EINVAL,
                           "a raw binary request to a BYTES input needs one element (shape [1]): the body is "
                           "that element; input '%s' holds more",
                           t->name);
    if (!strings && (fixed == 0 || body % fixed || (dyn < 0 && body != fixed)))
        return osv_err_set(&x->err, OSV_EINVAL, "raw body of %" PRIu64 " bytes does not fit input '%s'%s",
                           body, t->name,
                           osv_model_max_batch_size(x->m) > 0 ? " (a raw request is batch 1)" : "");
    if (!strings && dyn >= 0)
        in->dims[dyn] = (int64_t)(body / fixed);
    return 0;
}

/* Inference-Header-Content-Length: 0 — the body is one input's raw bytes (Triton's raw binary
 * request): the model must have one input, of a fixed-size type with at most one variable dim
 * besides the batch, or BYTES of one element. Outputs come back binary. */
static void raw_request(osv_conn_t *c, infer_ctx_t *x)
{
    const osv_tensor_info_t *t = osv_model_input(x->m, 0);
    uint64_t body = x->in_memory ? x->mem_len : c->req.head.content_length;
    in_desc_t *in;
    if (osv_model_input_count(x->m) != 1 || t->rank < 0 ||
        (t->dtype != OSV_DTYPE_BYTES && !osv_dtype_size(t->dtype))) {
        osv_res_error(c, 400,
                      "a raw binary request (Inference-Header-Content-Length: 0) needs a model with one "
                      "input");
        return;
    }
    x->ins = osv_arena_alloc(&c->nc.arena, sizeof *x->ins, 8);
    x->outs = osv_arena_alloc(&c->nc.arena, (osv_model_output_count(x->m) + 1) * sizeof *x->outs, 8);
    if (!x->ins || !x->outs) {
        osv_res_error(c, 503, "out of request memory");
        return;
    }
    in = x->ins;
    *in = (in_desc_t){.idx = 0,
                      .dt = t->dtype,
                      .rank = (uint32_t)t->rank,
                      .data_tok = -1,
                      .binary = true,
                      .binary_size = body,
                      .raw_string = t->dtype == OSV_DTYPE_BYTES};
    if (raw_shape(x, t, body, in) != 0) {
        osv_res_error(c, 400, "%s", x->err.msg);
        return;
    }
    x->n_in = 1;
    x->n_out = osv_model_output_count(x->m);
    for (uint32_t k = 0; k < x->n_out; k++)
        x->outs[k] = (out_desc_t){.idx = k, .binary = true};
    x->binary_len = body;
    x->t_decode = osv_now_ns();
    dec_t d = {.c = c, .x = x};
    int rc = init_infer(c, x);
    if (!rc)
        rc = declare(&d);
    if (rc) {
        osv_res_error_code(c, rc, x->err.msg);
        return;
    }
    stage_binary(c, x);
    prepare_and_continue(c);
}

/* Chunked or compressed requests: the whole (decoded) body is now in memory. */
static void whole_body_received(osv_conn_t *c)
{
    infer_ctx_t *x = c->req.ctx;
    x->mem = (const uint8_t *)c->req.body_ptr;
    x->mem_len = c->req.body_len;
    if (x->raw) {
        raw_request(c, x);
        return;
    }
    if (x->header_len > x->mem_len) {
        osv_res_error(c, 400, "Inference-Header-Content-Length %" PRIu64 " exceeds the %" PRIu64 "-byte body",
                      x->header_len, x->mem_len);
        return;
    }
    if (x->mem_len == 0) {
        osv_res_error(c, 400, "inference request has no body");
        return;
    }
    x->binary_len = x->header_len ? x->mem_len - x->header_len : 0;
    header_received(c);
}

static int64_t header_u64(osv_conn_t *c, const char *name, bool *present)
{
    const osv_http_header_t *h = osv_req_header(c, name);
    char buf[32];
    char *end;
    *present = h != NULL;
    if (!h)
        return 0;
    if (h->value_len == 0 || h->value_len >= sizeof buf)
        return -1;
    memcpy(buf, h->value, h->value_len);
    buf[h->value_len] = '\0';
    long long v = strtoll(buf, &end, 10);
    return *end || v < 0 ? -1 : v;
}

static void start_infer(osv_conn_t *c, osv_model_t *m)
{
    osv_server_t *s = c->srv;
    infer_ctx_t *x = osv_arena_alloc(&c->nc.arena, sizeof *x, 8);
    bool has_hdr;
    int64_t hdr;
    uint64_t cl = c->req.head.content_length;

    c->req.model = m;
    c->req.cleanup = infer_cleanup;
    c->req.route = "/v2/models/{model}/infer";
    if (!x) {
        osv_res_error(c, 503, "out of request memory");
        return;
    }
    memset(x, 0, sizeof *x);
    x->m = m;
    c->req.ctx = x;
    if (osv_h_deadline(c, m) != 0)
        return;
    hdr = header_u64(c, "Inference-Header-Content-Length", &has_hdr);
    if (has_hdr && hdr < 0) {
        osv_res_error(c, 400, "Inference-Header-Content-Length must be a non-negative integer");
        return;
    }
    if (c->req.head.chunked ||
        osv_content_encoding(osv_req_header(c, "Content-Encoding")) != OSV_ENC_IDENTITY) {
        /* Receive and decode the whole body first; Inference-Header-Content-Length counts decoded bytes. */
        x->in_memory = true;
        x->raw = has_hdr && hdr == 0;
        x->header_len = has_hdr ? (uint64_t)hdr : 0;
        c->req.accept_encoded = true;
        osv_h_receive_body(c, s->o.max_body_bytes, whole_body_received);
        return;
    }
    if (cl > s->o.max_body_bytes) {
        osv_res_error(c, 413, "request body of %" PRIu64 " bytes exceeds the limit of %" PRIu64, cl,
                      s->o.max_body_bytes);
        return;
    }
    if (has_hdr && (uint64_t)hdr > cl) {
        osv_res_error(c, 400,
                      "Inference-Header-Content-Length %" PRId64
                      " is invalid or exceeds Content-Length %" PRIu64,
                      hdr, cl);
        return;
    }
    if (has_hdr && hdr == 0) {
        x->raw = true;
        raw_request(c, x);
        return;
    }
    if (cl == 0) {
        osv_res_error(c, 400, "inference request has no body");
        return;
    }
    x->header_len = has_hdr ? (uint64_t)hdr : 0;
    x->binary_len = has_hdr ? cl - (uint64_t)hdr : 0;
    /* Receive only the JSON header now; the binary section goes straight into the slot later. */
    osv_h_receive_body_prefix(c, has_hdr ? (uint64_t)hdr : cl, s->o.max_body_bytes, header_received);
}

void osv_h_infer(osv_conn_t *c, const osv_route_t *r)
{
    osv_model_t *m = osv_h_model(c, r);
    if (m)
        start_infer(c, m);
}

void osv_h_infer_alias(osv_conn_t *c)
{
    osv_repo_entry_t e[2];
    size_t n = 0;
    osv_repo_index(c->srv->repo, true, e, 2, &n);
    if (n != 1) {
        osv_res_error(
            c, 400,
            "POST /infer needs a repository with exactly one loaded model version (%zu are loaded); "
            "use /v2/models/<name>/infer",
            n);
        return;
    }
    osv_route_t r = {.model = e[0].name, .model_len = (uint32_t)strlen(e[0].name), .version = e[0].version};
    osv_model_t *m = osv_h_model(c, &r);
    if (m)
        start_infer(c, m);
}

/* ---- response encoding
 * ------------------------------------------------------------------------------------- */

typedef struct out_plan {
    osv_tensor_view_t v;
    uint8_t *bytes; /* serialized BYTES / classification strings, in the body slot */
    uint64_t bytes_len;
    uint64_t class_count; /* classification: elements */
    uint32_t class_shape_rank;
    int64_t class_dims[2];
} out_plan_t;

static uint64_t max_chars(osv_dtype_t dt)
{
    switch (dt) {
    case OSV_DTYPE_BOOL:
        return 6;
    case OSV_DTYPE_FP64:
        return OSV_JW_MAX_F64_CHARS + 1;
    case OSV_DTYPE_FP32:
    case OSV_DTYPE_FP16:
    case OSV_DTYPE_BF16:
        return OSV_JW_MAX_F32_CHARS + 1;
    default:
        return OSV_JW_MAX_I64_CHARS + 1;
    }
}

static double value_at(const osv_tensor_view_t *v, uint64_t i)
{
    return osv_dtype_value(v->dtype, v->data, i);
}

static void write_numbers(osv_jw_t *w, const osv_tensor_view_t *v)
{
    const void *p = v->data;
    if (v->dtype == OSV_DTYPE_FP32) {
        osv_jw_f32_array(w, p, v->count);
        return;
    }
    osv_jw_arr_begin(w);
    for (uint64_t i = 0; i < v->count; i++) {
        switch (v->dtype) {
        case OSV_DTYPE_BOOL:
            osv_jw_bool(w, ((const uint8_t *)p)[i] != 0);
            break;
        case OSV_DTYPE_FP64:
            osv_jw_f64(w, ((const double *)p)[i]);
            break;
        case OSV_DTYPE_FP16:
        case OSV_DTYPE_BF16:
            osv_jw_f32(w, (float)value_at(v, i));
            break;
        case OSV_DTYPE_UINT64:
            osv_jw_u64(w, ((const uint64_t *)p)[i]);
            break;
        case OSV_DTYPE_INT64:
            osv_jw_i64(w, ((const int64_t *)p)[i]);
            break;
        default:
            osv_jw_i64(w, (int64_t)value_at(v, i));
            break;
        }
    }
    osv_jw_arr_end(w);
}

static void write_strings(osv_jw_t *w, const uint8_t *p, uint64_t len)
{
    const uint8_t *end = p + len;
    osv_jw_arr_begin(w);
    while (end - p >= 4) {
        uint32_t n;
        memcpy(&n, p, 4);
        osv_jw_str(w, (const char *)p + 4, n);
        p += 4 + n;
    }
    osv_jw_arr_end(w);
}

/* Classification (serve/outputs.c): the top k of each row in Triton's BYTES form, into dst.
 * Returns the serialized size, UINT64_MAX when the request's arena has no room for the scratch. */
static uint64_t classify_into(osv_conn_t *c, const osv_tensor_info_t *ti, const osv_tensor_view_t *v,
                              uint32_t k, uint8_t *dst, out_plan_t *plan)
{
    osv_class_shape_t cs;
    uint32_t *top = osv_arena_alloc(&c->nc.arena, (k ? k : 1) * sizeof *top, 8);
    uint64_t used;
    if (!top)
        return UINT64_MAX;
    used = osv_classify(ti, v, osv_model_batched(((const infer_ctx_t *)c->req.ctx)->m), k, top, dst, &cs);
    plan->class_count = cs.count;
    plan->class_shape_rank = cs.rank;
    plan->class_dims[0] = cs.dims[0];
    plan->class_dims[1] = cs.dims[1];
    return used;
}

static void jw_kstr(osv_jw_t *w, const char *key, const char *val, size_t n)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_str(w, val, n);
}

static void write_shape(osv_jw_t *w, const int64_t *dims, uint32_t rank)
{
    osv_jw_key(w, "shape", 5);
    osv_jw_arr_begin(w);
    for (uint32_t d = 0; d < rank; d++)
        osv_jw_i64(w, dims[d]);
    osv_jw_arr_end(w);
}

/* One element of the response's "outputs". */
static void write_output(osv_jw_t *w, const out_desc_t *o, const out_plan_t *p)
{
    const osv_tensor_view_t *v = &p->v;
    bool classify = o->classification > 0;
    osv_jw_obj_begin(w);
    jw_kstr(w, "name", v->name, strlen(v->name));
    jw_kstr(w, "datatype", classify ? "BYTES" : osv_dtype_name(v->dtype),
            strlen(classify ? "BYTES" : osv_dtype_name(v->dtype)));
    if (classify)
        write_shape(w, p->class_dims, p->class_shape_rank);
    else
        write_shape(w, v->dims, v->rank);
    if (o->shm) {
        osv_jw_key(w, "parameters", 10);
        osv_jw_obj_begin(w);
        osv_jw_key(w, "shared_memory_byte_size", 23);
        osv_jw_u64(w, v->bytes);
        osv_jw_obj_end(w);
    } else if (o->binary) {
        osv_jw_key(w, "parameters", 10);
        osv_jw_obj_begin(w);
        osv_jw_key(w, "binary_data_size", 16);
        osv_jw_u64(w, p->bytes ? p->bytes_len : v->bytes);
        osv_jw_obj_end(w);
    } else {
        osv_jw_key(w, "data", 4);
        if (p->bytes)
            write_strings(w, p->bytes, p->bytes_len);
        else
            write_numbers(w, v);
    }
    osv_jw_obj_end(w);
}

/* Bytes the response's JSON header can take for output k (not counting serialized strings). */
static uint64_t output_json_max(const out_desc_t *o, const out_plan_t *p)
{
    const osv_tensor_view_t *v = &p->v;
    uint64_t n = 192 + osv_jw_str_max(strlen(v->name)) + (uint64_t)(v->rank + 2) * (OSV_JW_MAX_I64_CHARS + 1);
    if (o->shm || o->binary)
        return n;
    if (p->bytes)
        return n + 6 * p->bytes_len + 3 * (p->class_count ? p->class_count : v->count) + 2;
    return n + v->count * max_chars(v->dtype) + 2;
}

static void send_response(osv_conn_t *c, char *json, uint64_t json_len, out_plan_t *plans, bool any_binary)
{
    infer_ctx_t *x = c->req.ctx;
    uint64_t body = json_len;
    for (uint32_t k = 0; k < x->n_out; k++)
        if (x->outs[k].binary && !x->outs[k].shm)
            body += plans[k].bytes ? plans[k].bytes_len : plans[k].v.bytes;
    osv_res_begin(c, 200);
    if (any_binary) {
        char n[24];
        int k = snprintf(n, sizeof n, "%" PRIu64, json_len);
        osv_res_header_raw(c, "Content-Type", 12, "application/octet-stream", 24);
        osv_res_header_raw(c, "Inference-Header-Content-Length", 31, n, (size_t)k);
    } else {
        osv_res_header_raw(c, "Content-Type", 12, "application/json", 16);
    }
    osv_res_end_head(c, body);
    osv_res_add_iov(c, json, json_len);
    for (uint32_t k = 0; k < x->n_out; k++) {
        if (!x->outs[k].binary || x->outs[k].shm)
            continue;
        if (plans[k].bytes) /* BYTES / classification strings, serialized into the response slot */
            osv_res_add_iov(c, plans[k].bytes, plans[k].bytes_len);
        else /* tensor bytes straight from where ORT wrote them */
            osv_res_add_iov(c, plans[k].v.data, plans[k].v.bytes);
    }
    if (c->res.n_iov == OSV_MAX_IOV)
        osv_res_error(c, 500, "too many outputs for one response");
    else
        osv_conn_send(c);
}

/* Serialized strings (BYTES outputs, classification) go first, at the front of the slot. */
static int serialize_strings(osv_conn_t *c, out_plan_t *plans, uint8_t *base, uint64_t *used)
{
    infer_ctx_t *x = c->req.ctx;
    for (uint32_t k = 0; k < x->n_out; k++) {
        out_plan_t *p = &plans[k];
        const out_desc_t *o = &x->outs[k];
        if (o->classification) {
            p->bytes = base + *used;
            uint64_t bound = p->bytes_len;
            p->bytes_len =
                classify_into(c, osv_model_output(x->m, o->idx), &p->v, o->classification, p->bytes, p);
            if (p->bytes_len == UINT64_MAX)
                return OSV_ENOMEM;
            *used += (bound + 63) & ~63ull;
            continue;
        } else if (p->v.dtype == OSV_DTYPE_BYTES && o->shm_bytes) {
            /* Triton's serialized BYTES format straight into the client's region. */
            if (p->v.bytes > o->shm_size)
                return osv_err_set(&x->err, OSV_EINVAL,
                                   "output '%s' needs %" PRIu64
                                   " bytes of shared memory, the region range holds %" PRIu64,
                                   p->v.name, p->v.bytes, o->shm_size);
            if (osv_infer_output_bytes(x->inf, k, o->shm_bytes, o->shm_size, &x->err) != 0)
                return x->err.code;
            continue;
        } else if (p->v.dtype == OSV_DTYPE_BYTES) {
            p->bytes = base + *used;
            p->bytes_len = p->v.bytes;
            if (osv_infer_output_bytes(x->inf, k, p->bytes, p->bytes_len, &x->err) != 0)
                return x->err.code;
        } else {
            continue;
        }
        *used += (p->bytes_len + 63) & ~63ull;
    }
    return 0;
}

static void encode_response(osv_conn_t *c)
{
    infer_ctx_t *x = c->req.ctx;
    uint64_t t0 = osv_now_ns(), cap, strings = 0, used = 0;
    out_plan_t *plans = osv_arena_alloc(&c->nc.arena, (x->n_out ? x->n_out : 1) * sizeof *plans, 8);
    bool any_binary = false;
    osv_jw_t w;
    char v[24];
    if (!plans) {
        osv_res_error(c, 503, "out of request memory");
        return;
    }
    memset(plans, 0, (x->n_out ? x->n_out : 1) * sizeof *plans);
    /* Size everything first (string outputs by their upper bound), so one slot holds the strings
     * and the JSON header after them. */
    cap = 256 + osv_jw_str_max(x->id_len) + osv_jw_str_max(strlen(osv_model_name(x->m)));
    for (uint32_t k = 0; k < x->n_out; k++) {
        const out_desc_t *o = &x->outs[k];
        out_plan_t *p = &plans[k];
        if (osv_infer_output_view(x->inf, k, &p->v, &x->err) != 0) {
            osv_res_error_code(c, x->err.code, x->err.msg);
            return;
        }
        if (o->classification) {
            bool batched = osv_model_batched(x->m);
            uint64_t rows = batched && p->v.rank >= 2 ? (uint64_t)p->v.dims[0] : 1;
            x->outs[k].classification = osv_classify_k(&p->v, batched, o->classification);
            p->bytes_len = osv_classify_max(osv_model_output(x->m, o->idx), &p->v, batched, o->classification);
            p->class_count = rows * o->classification;
        } else if (p->v.dtype == OSV_DTYPE_BYTES) {
            p->bytes_len = p->v.bytes;
        }
        if (o->classification || (p->v.dtype == OSV_DTYPE_BYTES && !o->shm)) {
            p->bytes = (uint8_t *)1; /* marks a string output while sizing */
            strings += (p->bytes_len + 63) & ~63ull;
        }
        cap += output_json_max(o, p) + 1;
        any_binary |= o->binary && !o->shm;
    }
    uint8_t *base = (uint8_t *)osv_res_body_buf(c, strings + cap);
    if (!base) {
        osv_res_error(c, 503, "no memory for the response, retry later");
        return;
    }
    if (serialize_strings(c, plans, base, &used) != 0) {
        osv_res_error_code(c, x->err.code ? x->err.code : OSV_ENOMEM, x->err.msg);
        return;
    }
    if (shm_broken(c, x)) /* BYTES outputs were written into regions just now */
        return;
    char *json = (char *)base + strings;
    osv_jw_init(&w, json, cap);
    osv_jw_obj_begin(&w);
    jw_kstr(&w, "model_name", osv_model_name(x->m), strlen(osv_model_name(x->m)));
    snprintf(v, sizeof v, "%" PRId64, osv_model_version(x->m));
    jw_kstr(&w, "model_version", v, strlen(v));
    if (x->id)
        jw_kstr(&w, "id", x->id, x->id_len);
    osv_jw_key(&w, "outputs", 7);
    osv_jw_arr_begin(&w);
    for (uint32_t k = 0; k < x->n_out; k++)
        write_output(&w, &x->outs[k], &plans[k]);
    osv_jw_arr_end(&w);
    osv_jw_obj_end(&w);
    if (osv_jw_error(&w)) {
        osv_res_error(c, 500, "response header did not fit its buffer");
        return;
    }
    c->req.fallback = osv_infer_fallback(x->inf);
    c->req.core_copied = osv_infer_copied(x->inf);
    c->req.phase_t0[OSV_PHASE_COMPUTE_OUTPUT] = t0;
    c->req.phase_t1[OSV_PHASE_COMPUTE_OUTPUT] = osv_now_ns();
    c->req.ns[OSV_PHASE_COMPUTE_OUTPUT] = c->req.phase_t1[OSV_PHASE_COMPUTE_OUTPUT] - t0;
    send_response(c, json, osv_jw_len(&w), plans, any_binary);
}
