/* kserve.c — KServe v2 health, server and model metadata, readiness, Triton's model configuration
 * extension, and the helpers handlers share (model lookup, receiving and parsing JSON bodies). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "http/handlers.h"
#include "serve/config_view.h"
#include "http/inflate.h"

#define CONTROL_BODY_LIMIT (1u << 20) /* bodies of control-plane requests (repository, shm) */

static const char *const extensions[] = {
    "binary_tensor_data", "classification",  "model_configuration", "model_repository",
    "parameters",         "schedule_policy", "statistics",          "system_shared_memory",
};

const osv_http_header_t *osv_req_header(const osv_conn_t *c, const char *name)
{
    for (uint32_t i = 0; i < c->req.head.n_headers; i++)
        if (osv_http_name_is(&c->req.head.headers[i], name))
            return &c->req.head.headers[i];
    return NULL;
}

/* ---- sending JSON built with the writer --------------------------------------------------------- */

typedef void (*fill_fn)(osv_jw_t *w, void *ud);

/* Builds a JSON body of at most `cap` bytes in a pool slot and sends it with `status`. */
static void send_built(osv_conn_t *c, int status, uint64_t cap, fill_fn fill, void *ud)
{
    char *buf = osv_res_body_buf(c, cap);
    osv_jw_t w;
    if (!buf) {
        osv_res_error(c, 503, "no memory for the response, retry later");
        return;
    }
    osv_jw_init(&w, buf, cap);
    fill(&w, ud);
    if (osv_jw_error(&w)) {
        osv_res_error(c, 500, "response did not fit its buffer");
        return;
    }
    osv_res_json(c, status, buf, osv_jw_len(&w));
}

static void jw_kstr(osv_jw_t *w, const char *key, const char *val)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_str(w, val, strlen(val));
}

/* ---- health and server metadata -------------------------------------------------------------------- */

void osv_h_live(osv_conn_t *c)
{
    static const char body[] = "{\"live\":true}";
    osv_res_json(c, 200, body, sizeof body - 1);
}

/* Not ready: the body says why — shutting down, no model, or which wanted models are not READY and
 * why (at most READY_ROWS of them; rows from the repository index, 1.2 KB each, in the arena). */
#define READY_ROWS 16

typedef struct not_ready {
    const char *why;
    osv_repo_entry_t *rows;
    size_t n;
} not_ready_t;

static void fill_not_ready(osv_jw_t *w, void *ud)
{
    const not_ready_t *x = ud;
    osv_jw_obj_begin(w);
    osv_jw_key(w, "ready", 5);
    osv_jw_bool(w, false);
    jw_kstr(w, "reason", x->why);
    osv_jw_key(w, "models", 6);
    osv_jw_arr_begin(w);
    for (size_t i = 0; i < x->n; i++)
        osv_h_index_row(w, &x->rows[i]);
    osv_jw_arr_end(w);
    osv_jw_obj_end(w);
}

void osv_h_ready(osv_conn_t *c)
{
    static const char yes[] = "{\"ready\":true}";
    osv_server_t *s = c->srv;
    not_ready_t x = {.why = "the server is shutting down"};
    size_t total = 0;
    if (!atomic_load(&s->stopping) && osv_repo_ready(s->repo)) {
        osv_res_json(c, 200, yes, sizeof yes - 1);
        return;
    }
    if (!atomic_load(&s->stopping)) {
        osv_repo_entry_t *all = osv_arena_alloc(&c->nc.arena, 4 * READY_ROWS * sizeof *all, 8);
        size_t got = 0;
        if (all)
            osv_repo_index(s->repo, false, all, 4 * READY_ROWS, &total);
        got = all ? (total < 4 * READY_ROWS ? total : 4 * READY_ROWS) : 0;
        x.rows = all;
        for (size_t i = 0; i < got && x.n < READY_ROWS; i++)
            if (all[i].wanted && all[i].state != OSV_MODEL_READY)
                x.rows[x.n++] = all[i]; /* compacted in place: i >= n */
        x.why = total == 0 ? "the repository holds no model" : x.n ? "models that should be served are not ready"
                                                                   : "not every model is ready";
    }
    send_built(c, 503, 1024 + x.n * (OSV_ERR_MSG_MAX * 6 + 512), fill_not_ready, &x);
}

static void fill_server_meta(osv_jw_t *w, void *ud)
{
    (void)ud;
    osv_jw_obj_begin(w);
    jw_kstr(w, "name", "ortserve");
    jw_kstr(w, "version", osv_version());
    osv_jw_key(w, "extensions", 10);
    osv_jw_arr_begin(w);
    for (size_t i = 0; i < sizeof extensions / sizeof *extensions; i++)
        osv_jw_str(w, extensions[i], strlen(extensions[i]));
    osv_jw_arr_end(w);
    osv_jw_obj_end(w);
}

void osv_h_server_meta(osv_conn_t *c)
{
    send_built(c, 200, 1024, fill_server_meta, NULL);
}

/* ---- model lookup ------------------------------------------------------------------------------------- */

osv_model_t *osv_h_model(osv_conn_t *c, const osv_route_t *r)
{
    osv_model_t *m = NULL;
    osv_err_t err;
    int rc;
    if (!osv_model_name_valid(r->model, r->model_len)) {
        osv_res_error(c, 404, "unknown model '%.*s'", (int)(r->model_len > 128 ? 128 : r->model_len),
                      r->model);
        return NULL;
    }
    rc = osv_repo_acquire(c->srv->repo, r->model, r->model_len, r->version, &m, &err);
    if (rc) {
        osv_res_error_code(c, rc, err.msg);
        return NULL;
    }
    return m;
}

/* Upper bound of a tensor description's JSON size. */
static uint64_t tensor_json_max(const osv_tensor_info_t *t)
{
    return osv_jw_str_max(strlen(t->name)) + 96 + (uint64_t)(t->rank > 0 ? t->rank : 0) * 22;
}

static void json_tensor(osv_jw_t *w, const osv_tensor_info_t *t)
{
    osv_jw_obj_begin(w);
    jw_kstr(w, "name", t->name);
    jw_kstr(w, "datatype", osv_dtype_name(t->dtype));
    osv_jw_key(w, "shape", 5);
    osv_jw_arr_begin(w);
    for (int32_t d = 0; d < t->rank; d++)
        osv_jw_i64(w, t->dims[d]);
    osv_jw_arr_end(w);
    osv_jw_obj_end(w);
}

typedef struct meta_ctx {
    osv_model_t *m;
    int64_t versions[64];
    size_t n_versions;
} meta_ctx_t;

static void fill_model_meta(osv_jw_t *w, void *ud)
{
    meta_ctx_t *x = ud;
    osv_model_t *m = x->m;
    char v[24];
    osv_jw_obj_begin(w);
    jw_kstr(w, "name", osv_model_name(m));
    osv_jw_key(w, "versions", 8);
    osv_jw_arr_begin(w);
    for (size_t i = 0; i < x->n_versions && i < 64; i++) {
        snprintf(v, sizeof v, "%" PRId64, x->versions[i]);
        osv_jw_str(w, v, strlen(v));
    }
    osv_jw_arr_end(w);
    jw_kstr(w, "platform", "onnxruntime_onnx");
    for (int io = 0; io < 2; io++) {
        uint32_t n = io ? osv_model_output_count(m) : osv_model_input_count(m);
        osv_jw_key(w, io ? "outputs" : "inputs", io ? 7 : 6);
        osv_jw_arr_begin(w);
        for (uint32_t i = 0; i < n; i++)
            json_tensor(w, io ? osv_model_output(m, i) : osv_model_input(m, i));
        osv_jw_arr_end(w);
    }
    osv_jw_obj_end(w);
}

static uint64_t model_json_max(const osv_model_t *m)
{
    uint64_t cap = 4096 + osv_jw_str_max(strlen(osv_model_name(m)));
    for (uint32_t i = 0; i < osv_model_input_count(m); i++)
        cap += tensor_json_max(osv_model_input(m, i)) + 64;
    for (uint32_t i = 0; i < osv_model_output_count(m); i++)
        cap += tensor_json_max(osv_model_output(m, i)) + 64 + 64;
    return cap;
}

void osv_h_model_meta(osv_conn_t *c, const osv_route_t *r)
{
    meta_ctx_t x = {.m = osv_h_model(c, r)};
    if (!x.m)
        return;
    osv_repo_versions(c->srv->repo, r->model, r->model_len, x.versions, 64, &x.n_versions);
    send_built(c, 200, model_json_max(x.m), fill_model_meta, &x);
    osv_model_release(x.m);
}

typedef struct ready_ctx {
    const char *name;
    int64_t version;
} ready_ctx_t;

static void fill_model_ready(osv_jw_t *w, void *ud)
{
    ready_ctx_t *x = ud;
    char v[24];
    snprintf(v, sizeof v, "%" PRId64, x->version);
    osv_jw_obj_begin(w);
    jw_kstr(w, "name", x->name);
    jw_kstr(w, "version", v);
    osv_jw_key(w, "ready", 5);
    osv_jw_bool(w, true);
    osv_jw_obj_end(w);
}

void osv_h_model_ready(osv_conn_t *c, const osv_route_t *r)
{
    osv_model_t *m = osv_h_model(c, r); /* unknown: 404; known but not loaded: 503 */
    ready_ctx_t x;
    if (!m)
        return;
    x.name = osv_model_name(m);
    x.version = osv_model_version(m);
    send_built(c, 200, 512 + osv_jw_str_max(strlen(x.name)), fill_model_ready, &x);
    osv_model_release(m);
}

/* Triton's ModelConfig as JSON (model_configuration extension): what tritonclient and
 * perf_analyzer read, rendered from the protocol-neutral view (serve/config_view.h) the gRPC front's
 * ModelConfig renders too. */
static void config_tensor(osv_jw_t *w, const osv_tensor_info_t *t, bool output)
{
    osv_jw_obj_begin(w);
    jw_kstr(w, "name", t->name);
    jw_kstr(w, "data_type", osv_cfg_type_name(t->dtype));
    osv_jw_key(w, "dims", 4);
    osv_jw_arr_begin(w);
    for (int32_t d = 0; d < t->rank; d++)
        osv_jw_i64(w, t->dims[d]);
    osv_jw_arr_end(w);
    if (output)
        jw_kstr(w, "label_filename", osv_cfg_label_file(t));
    osv_jw_obj_end(w);
}

static void fill_model_config(osv_jw_t *w, void *ud)
{
    osv_model_t *m = ud;
    osv_cfg_view_t v;
    osv_cfg_view(m, &v);
    osv_jw_obj_begin(w);
    jw_kstr(w, "name", v.name);
    jw_kstr(w, "platform", v.platform);
    jw_kstr(w, "backend", v.backend);
    osv_jw_key(w, "max_batch_size", 14);
    osv_jw_i64(w, v.max_batch_size);
    for (int io = 0; io < 2; io++) {
        uint32_t n = io ? osv_model_output_count(m) : osv_model_input_count(m);
        osv_jw_key(w, io ? "output" : "input", io ? 6 : 5);
        osv_jw_arr_begin(w);
        for (uint32_t i = 0; i < n; i++)
            config_tensor(w, io ? osv_model_output(m, i) : osv_model_input(m, i), io);
        osv_jw_arr_end(w);
    }
    osv_jw_key(w, "instance_group", 14);
    osv_jw_arr_begin(w);
    osv_jw_obj_begin(w);
    jw_kstr(w, "kind", v.instance_kind);
    osv_jw_key(w, "count", 5);
    osv_jw_i64(w, v.instance_count);
    osv_jw_obj_end(w);
    osv_jw_arr_end(w);
    osv_jw_key(w, "parameters", 10);
    osv_jw_obj_begin(w);
    for (uint32_t i = 0; i < v.n_params; i++) {
        osv_jw_key(w, v.params[i].key, strlen(v.params[i].key));
        osv_jw_obj_begin(w);
        jw_kstr(w, "string_value", v.params[i].value);
        osv_jw_obj_end(w);
    }
    osv_jw_obj_end(w);
    osv_jw_obj_end(w);
}

void osv_h_model_config(osv_conn_t *c, const osv_route_t *r)
{
    osv_model_t *m = osv_h_model(c, r);
    if (!m)
        return;
    send_built(c, 200, model_json_max(m) + 1024, fill_model_config, m);
    osv_model_release(m);
}

/* ---- deadlines ------------------------------------------------------------------------------------- */

/* start + n units, saturating: a client's huge timeout is "far away", never a wrapped "already due". */
static uint64_t deadline_after(uint64_t start, uint64_t n, uint64_t unit_ns)
{
    uint64_t ns = n > UINT64_MAX / unit_ns ? UINT64_MAX : n * unit_ns;
    return ns > UINT64_MAX - start ? UINT64_MAX : start + ns;
}

void osv_h_deadline_shorten(osv_conn_t *c, uint64_t n, uint64_t unit_ns, osv_deadline_src_t src)
{
    uint64_t d;
    if (n == 0)
        return; /* not set: the model's or the server's deadline applies */
    d = deadline_after(c->req.t_start, n, unit_ns);
    if (!c->req.deadline || d < c->req.deadline) {
        c->req.deadline = d;
        c->req.deadline_ms = n > UINT64_MAX / unit_ns ? UINT64_MAX / 1000000u : n * unit_ns / 1000000u;
        c->req.deadline_src = src;
    }
}

/* Ortserve-Timeout-Ms: digits only; a value beyond 64 bits saturates. 1 = absent, -1 = malformed. */
static int timeout_header(const osv_conn_t *c, uint64_t *ms)
{
    const osv_http_header_t *h = osv_req_header(c, "Ortserve-Timeout-Ms");
    uint64_t v = 0;
    if (!h)
        return 1;
    if (h->value_len == 0)
        return -1;
    for (uint32_t i = 0; i < h->value_len; i++) {
        unsigned d = (unsigned)(h->value[i] - '0');
        if (d > 9)
            return -1;
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *ms = v;
    return 0;
}

int osv_h_deadline(osv_conn_t *c, const osv_model_t *m)
{
    osv_deadline_src_t src;
    int64_t def = osv_serve_deadline_ms(c->srv->serve, m, &src);
    uint64_t asked = 0;
    if (timeout_header(c, &asked) < 0) {
        osv_res_error(c, 400, "Ortserve-Timeout-Ms must be a non-negative integer (milliseconds)");
        return -1;
    }
    c->req.deadline = def > 0 ? deadline_after(c->req.t_start, (uint64_t)def, 1000000ull) : 0;
    c->req.deadline_ms = def > 0 ? (uint64_t)def : 0;
    c->req.deadline_src = src;
    osv_h_deadline_shorten(c, asked, 1000000ull, OSV_DEADLINE_HEADER);
    return 0;
}

/* ---- receiving and parsing JSON bodies ------------------------------------------------------------- */

/* A compressed body is inflated on a worker (milliseconds for large bodies: never on a loop), then
 * the handler continues on the loop (c->req.resume). */
static void inflated(osv_conn_t *c)
{
    c->req.on_body_next(c);
}

static void inflate_task(osv_conn_t *c)
{
    osv_server_t *s = c->srv;
    osv_err_t err;
    uint64_t out_len, moved;
    int enc = osv_content_encoding(osv_req_header(c, "Content-Encoding"));
    int rc = osv_inflate_body(s->pool, c->req.body_ptr, c->req.body_len, enc, s->o.max_body_bytes,
                              &c->req.inflated, &out_len, &moved, &err);
    if (rc) {
        osv_res_error_code(c, rc, err.msg);
        return;
    }
    c->req.copied[OSV_COPY_DECOMPRESS] += out_len + moved; /* inflating is a copy by nature */
    c->req.body_ptr = (const char *)c->req.inflated.base;
    c->req.body_len = out_len;
    c->req.resume = inflated;
}

static void inflate_run(osv_stask_t *t)
{
    inflate_task(t->ud);
}

static void inflate_done(osv_stask_t *t)
{
    osv_conn_complete(t->ud); /* the loop writes the error, or resumes the handler */
}

/* The body is in memory: decompress it when it is encoded (and the endpoint accepts that), then
 * hand it to the handler. */
static void body_ready(osv_conn_t *c, const char *p, uint64_t len)
{
    osv_server_t *s = c->srv;
    c->req.body_ptr = p;
    c->req.body_len = len;
    if (osv_content_encoding(osv_req_header(c, "Content-Encoding")) == OSV_ENC_IDENTITY) {
        c->req.on_body_next(c);
        return;
    }
    c->req.offload = (osv_stask_t){.run = inflate_run, .complete = inflate_done, .ud = c};
    if (osv_serve_offload(s->serve, &c->req.offload) != 0)
        osv_res_error(c, 503, "too many bodies waiting to be decompressed, retry later");
}

static void body_in_slot_done(osv_conn_t *c)
{
    body_ready(c, (const char *)c->req.body_slot.base, c->req.body_len);
}

static void body_in_buffer_done(osv_conn_t *c)
{
    body_ready(c, osv_conn_buffer_at(c, c->req.body_len), c->req.body_len);
}

static void body_chunked_done(osv_conn_t *c)
{
    body_ready(c, (const char *)c->req.body_slot.base, c->req.body.dst_len);
}

void osv_h_receive_body_prefix(osv_conn_t *c, uint64_t n, uint64_t limit, body_done_fn done)
{
    const osv_http_head_t *h = &c->req.head;
    osv_server_t *s = c->srv;
    int enc = osv_content_encoding(osv_req_header(c, "Content-Encoding"));
    if (enc == OSV_ENC_UNSUPPORTED || (enc != OSV_ENC_IDENTITY && !c->req.accept_encoded)) {
        const osv_http_header_t *e = osv_req_header(c, "Content-Encoding");
        osv_res_error(c, 415, "Content-Encoding '%.*s' is not supported here: send the body %s",
                      (int)(e->value_len > 32 ? 32 : e->value_len), e->value,
                      enc == OSV_ENC_UNSUPPORTED ? "uncompressed, gzip or deflate" : "uncompressed");
        return;
    }
    c->req.on_body_next = done;
    if (h->chunked) { /* decoded into a slot that grows with the body */
        osv_conn_plan_chunked(c, limit < osv_pool_max_slot(s->pool) ? limit : osv_pool_max_slot(s->pool));
        osv_conn_receive_body(c, body_chunked_done);
        return;
    }
    if (n > limit) {
        osv_res_error(c, 413, "request body of %" PRIu64 " bytes exceeds the limit of %" PRIu64, n, limit);
        return;
    }
    c->req.body_len = n;
    if (osv_conn_plan_buffer(c, n) == 0) {
        osv_conn_receive_body(c, body_in_buffer_done);
        return;
    }
    if (osv_pool_acquire(s->pool, n, &c->req.body_slot) != 0) {
        osv_res_error(c, 503, "no memory for a %" PRIu64 "-byte request body, retry later", n);
        return;
    }
    struct iovec v = {c->req.body_slot.base, n};
    osv_conn_plan_iov(c, &v, 1);
    osv_conn_receive_body(c, body_in_slot_done);
}

void osv_h_receive_body(osv_conn_t *c, uint64_t limit, body_done_fn done)
{
    osv_h_receive_body_prefix(c, c->req.head.content_length, limit, done);
}

void osv_h_receive_json(osv_conn_t *c, body_done_fn done)
{
    osv_h_receive_body(c, CONTROL_BODY_LIMIT, done);
}

int osv_h_parse_json(osv_conn_t *c, osv_json_doc_t *doc)
{
    osv_server_t *s = c->srv;
    osv_json_limits_t lim = {.max_depth = s->o.max_json_depth, .max_tokens = s->o.max_json_tokens};
    osv_json_err_t jerr;
    if (osv_json_parse(c->req.body_ptr, c->req.body_len, osv_conn_toks(c), s->o.max_json_tokens, &lim, doc,
                       &jerr) != 0) {
        osv_res_error(c, 400, "invalid JSON body: %s", jerr.msg);
        return -1;
    }
    return 0;
}
