/* call.c — method dispatch and every method but inference and grpc.health.v1 (health.c): liveness,
 * metadata, readiness, model configuration, statistics, the repository, system shared memory and log
 * settings. These messages are small and rare: protobuf-c (code generated at build time from
 * the .proto files in proto/) unpacks and packs them, with the call's arena as its allocator. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/grpc_internal.h"
#include "grpc_service.pb-c.h"
#include "model_config.pb-c.h"
#include "obs/log.h"
#include "serve/errmap.h"
#include "serve/shm.h"

static const struct {
    const char *path;
    const char *name;
    bool unary, auth;
} methods[GM_COUNT] = {
#define GM_ROW(sfx, svc, nm, unary, auth) [GM_##sfx] = {"/" svc "/" nm, nm, unary, auth},
    GRPC_METHOD_MAP(GM_ROW)
#undef GM_ROW
};

gmethod_t grpc_method_of(const char *path, size_t len)
{
    for (int m = 1; m < GM_COUNT; m++)
        if (strlen(methods[m].path) == len && memcmp(methods[m].path, path, len) == 0)
            return (gmethod_t)m;
    return GM_NONE;
}

const char *grpc_method_name(gmethod_t m)
{
    return m > GM_NONE && m < GM_COUNT ? methods[m].name : "unknown";
}

bool grpc_method_unary(gmethod_t m)
{
    return m > GM_NONE && m < GM_COUNT && methods[m].unary;
}

bool grpc_method_needs_auth(gmethod_t m)
{
    return m > GM_NONE && m < GM_COUNT && methods[m].auth;
}

/* ---- protobuf-c over the call's arena --------------------------------------------------------------- */

static void *arena_alloc(void *ud, size_t size)
{
    return osv_arena_alloc(ud, size ? size : 1, 16);
}

static void arena_free(void *ud, void *p)
{
    (void)ud, (void)p; /* the arena goes with the call */
}

static ProtobufCAllocator allocator_of(gcall_t *k)
{
    return (ProtobufCAllocator){.alloc = arena_alloc, .free = arena_free, .allocator_data = &k->arena};
}

void *grpc_unpack(gcall_t *k, const ProtobufCMessageDescriptor *d)
{
    ProtobufCAllocator a = allocator_of(k);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, &a, k->msg_len, k->buf ? k->buf : (const uint8_t *)"");
    if (!m)
        osv_err_set(&k->err, OSV_EPARSE, "malformed %s (truncated protobuf or a bad wire type)", d->short_name);
    return m;
}

/* Packs m as the call's response and sends it; the unary call ends OK. */
static void reply(gcall_t *k, const ProtobufCMessage *m)
{
    gstream_t *st = k->st;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = osv_arena_alloc(&k->arena, n + 5, 8);
    if (!buf || !(k->iov = osv_arena_alloc(&k->arena, sizeof *k->iov, 8))) {
        grpc_finish(st, OSV_ENOMEM, "out of request memory");
        grpc_call_free(k);
        return;
    }
    protobuf_c_message_pack(m, buf + 5);
    buf[0] = 0;
    buf[1] = (uint8_t)(n >> 24);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 8);
    buf[4] = (uint8_t)n;
    k->iov[0] = (struct iovec){buf, n + 5};
    k->n_iov = 1;
    k->total = n + 5;
    grpc_record(k, 0);
    grpc_respond(k);
    if (!st->watch)
        grpc_finish(st, 0, "");
}

void grpc_fail(gcall_t *k, int code)
{
    gstream_t *st = k->st;
    if (!k->err.msg[0])
        snprintf(k->err.msg, sizeof k->err.msg, "%s", osv_err_name(code));
    grpc_record(k, code);
    grpc_finish(st, code, k->err.msg); /* only queues: k is still alive */
    grpc_call_free(k);
}

static bool server_ready(const osv_grpc_t *g)
{
    return osv_repo_ready(g->repo) && !osv_net_stopping(g->net);
}

/* name + version strings → a model reference; code and message on failure. */
static int model_ref(gcall_t *k, const char *name, const char *version, osv_model_t **m)
{
    int64_t v = -1;
    size_t n = strlen(name);
    if (!n || !osv_model_name_valid(name, n))
        return osv_err_set(&k->err, OSV_ENOTFOUND, "unknown model '%.128s'", name);
    if (*version) {
        char *end;
        long long x = strtoll(version, &end, 10);
        if (*end || x < 0 || *version < '0' || *version > '9')
            return osv_err_set(&k->err, OSV_EINVAL, "version '%.32s' is not a version number", version);
        v = x;
    }
    return osv_repo_acquire(k->st->c->g->repo, name, n, v, m, &k->err);
}

/* ---- health and metadata ---------------------------------------------------------------------------------- */

static void m_live(gcall_t *k)
{
    Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    r.live = true;
    reply(k, &r.base);
}

static void m_ready(gcall_t *k)
{
    Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
    r.ready = server_ready(k->st->c->g);
    reply(k, &r.base);
}

static void m_model_ready(gcall_t *k)
{
    Inference__ModelReadyRequest *q = grpc_unpack(k, &inference__model_ready_request__descriptor);
    Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
    osv_model_t *m = NULL;
    int rc;
    if (!q)
        return grpc_fail(k, OSV_EPARSE);
    rc = model_ref(k, q->name, q->version, &m);
    if (rc == OSV_EINVAL)
        return grpc_fail(k, rc);
    r.ready = rc == 0; /* unknown or not loaded: not ready (Triton answers OK with false) */
    if (m)
        osv_model_release(m);
    reply(k, &r.base);
}

static void m_server_meta(gcall_t *k)
{
    static char *ext[] = {"binary_tensor_data", "classification", "model_configuration", "model_repository",
                          "parameters",         "schedule_policy", "statistics",         "system_shared_memory",
                          "logging"};
    Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    r.name = "ortserve";
    r.version = OSV_VERSION_STRING;
    r.n_extensions = sizeof ext / sizeof *ext;
    r.extensions = ext;
    reply(k, &r.base);
}

static Inference__ModelMetadataResponse__TensorMetadata *tensor_meta(gcall_t *k, const osv_tensor_info_t *t)
{
    Inference__ModelMetadataResponse__TensorMetadata *tm = osv_arena_alloc(&k->arena, sizeof *tm, 8);
    int64_t *dims = osv_arena_alloc(&k->arena, (t->rank > 0 ? (size_t)t->rank : 1) * sizeof *dims, 8);
    if (!tm || !dims)
        return NULL;
    inference__model_metadata_response__tensor_metadata__init(tm);
    tm->name = (char *)t->name;
    tm->datatype = (char *)osv_dtype_name(t->dtype);
    for (int32_t d = 0; d < t->rank; d++)
        dims[d] = t->dims[d];
    tm->n_shape = t->rank > 0 ? (size_t)t->rank : 0;
    tm->shape = dims;
    return tm;
}

static void m_model_meta(gcall_t *k)
{
    Inference__ModelMetadataRequest *q = grpc_unpack(k, &inference__model_metadata_request__descriptor);
    Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    osv_model_t *m;
    int64_t versions[64];
    size_t nv = 0;
    int rc;
    if (!q)
        return grpc_fail(k, OSV_EPARSE);
    if ((rc = model_ref(k, q->name, q->version, &m)) != 0)
        return grpc_fail(k, rc);
    k->model = m;
    osv_repo_versions(k->st->c->g->repo, q->name, strlen(q->name), versions, 64, &nv);
    nv = nv > 64 ? 64 : nv;
    r.name = (char *)osv_model_name(m);
    r.platform = "onnxruntime_onnx";
    r.versions = osv_arena_alloc(&k->arena, (nv ? nv : 1) * sizeof *r.versions, 8);
    uint32_t ni = osv_model_input_count(m), no = osv_model_output_count(m);
    r.inputs = osv_arena_alloc(&k->arena, (ni ? ni : 1) * sizeof *r.inputs, 8);
    r.outputs = osv_arena_alloc(&k->arena, (no ? no : 1) * sizeof *r.outputs, 8);
    if (!r.versions || !r.inputs || !r.outputs)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    for (size_t i = 0; i < nv; i++) {
        char *s = osv_arena_alloc(&k->arena, 24, 1);
        if (!s)
            return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
        snprintf(s, 24, "%" PRId64, versions[i]);
        r.versions[r.n_versions++] = s;
    }
    for (uint32_t i = 0; i < ni; i++)
        if (!(r.inputs[r.n_inputs++] = tensor_meta(k, osv_model_input(m, i))))
            return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    for (uint32_t i = 0; i < no; i++)
        if (!(r.outputs[r.n_outputs++] = tensor_meta(k, osv_model_output(m, i))))
            return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    reply(k, &r.base);
}

/* A Triton type name ("TYPE_FP32", from the config view) as the protobuf enum. */
static Inference__DataType triton_type(osv_dtype_t dt)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(&inference__data_type__descriptor,
                                                                               osv_dtype_config_name(dt));
    return v ? (Inference__DataType)v->value : INFERENCE__DATA_TYPE__TYPE_INVALID;
}

/* Triton's ModelConfig from the model's completed Triton config (ortserve/tconfig.h) and the scheduling
 * settings in effect — the same sources GET /v2/models/{m}/config renders (src/http/model_config.c). */
static int64_t *arena_dims(gcall_t *k, const int64_t *src, uint32_t n)
{
    int64_t *d = osv_arena_alloc(&k->arena, (n ? n : 1) * sizeof *d, 8);
    if (d && n)
        memcpy(d, src, n * sizeof *d);
    return d;
}

static Inference__ModelTensorReshape *config_reshape(gcall_t *k, const osv_tc_tensor_t *t)
{
    Inference__ModelTensorReshape *r;
    if (!t->has_reshape || !(r = osv_arena_alloc(&k->arena, sizeof *r, 8)))
        return NULL;
    inference__model_tensor_reshape__init(r);
    if (!(r->shape = arena_dims(k, t->reshape, t->reshape_rank)))
        return NULL;
    r->n_shape = t->reshape_rank;
    return r;
}

/* What ModelInput and ModelOutput share: data type, dims and reshape, in k's arena. */
static bool tensor_fields(gcall_t *k, const osv_tc_tensor_t *t, Inference__DataType *type, int64_t **dims,
                          size_t *n_dims, Inference__ModelTensorReshape **reshape)
{
    *type = triton_type(t->dtype);
    *n_dims = t->rank;
    *reshape = config_reshape(k, t);
    return (*dims = arena_dims(k, t->dims, t->rank)) != NULL && (!t->has_reshape || *reshape);
}

static Inference__ModelInput *config_input(gcall_t *k, const osv_tc_tensor_t *t)
{
    Inference__ModelInput *in = osv_arena_alloc(&k->arena, sizeof *in, 8);
    if (!in)
        return NULL;
    inference__model_input__init(in);
    in->name = (char *)t->name;
    in->format = (Inference__ModelInput__Format)t->format;
    in->optional = t->optional;
    in->allow_ragged_batch = t->allow_ragged_batch;
    return tensor_fields(k, t, &in->data_type, &in->dims, &in->n_dims, &in->reshape) ? in : NULL;
}

static Inference__ModelOutput *config_output(gcall_t *k, const osv_tc_tensor_t *t)
{
    Inference__ModelOutput *o = osv_arena_alloc(&k->arena, sizeof *o, 8);
    if (!o)
        return NULL;
    inference__model_output__init(o);
    o->name = (char *)t->name;
    o->label_filename = (char *)t->label_filename;
    return tensor_fields(k, t, &o->data_type, &o->dims, &o->n_dims, &o->reshape) ? o : NULL;
}

/* The tensors, instance groups, dynamic batching and parameters of cfg, in k's arena. */
static bool config_fill(gcall_t *k, const osv_model_t *m, Inference__ModelConfig *cfg)
{
    const osv_triton_config_t *c = osv_model_triton_config(m);
    const osv_batching_config_t *b = &osv_model_config(m)->batching;
    size_t grp = c->n_instance_group, np = c->n_parameters;
    cfg->input = osv_arena_alloc(&k->arena, (c->n_input ? c->n_input : 1) * sizeof *cfg->input, 8);
    cfg->output = osv_arena_alloc(&k->arena, (c->n_output ? c->n_output : 1) * sizeof *cfg->output, 8);
    cfg->instance_group = osv_arena_alloc(&k->arena, (grp ? grp : 1) * sizeof *cfg->instance_group, 8);
    cfg->parameters = osv_arena_alloc(&k->arena, (np ? np : 1) * sizeof *cfg->parameters, 8);
    if (!cfg->input || !cfg->output || !cfg->instance_group || !cfg->parameters)
        return false;
    for (uint32_t i = 0; i < c->n_input; i++)
        if (!(cfg->input[cfg->n_input++] = config_input(k, &c->input[i])))
            return false;
    for (uint32_t i = 0; i < c->n_output; i++)
        if (!(cfg->output[cfg->n_output++] = config_output(k, &c->output[i])))
            return false;
    for (size_t i = 0; i < grp; i++) {
        Inference__ModelInstanceGroup *g = osv_arena_alloc(&k->arena, sizeof *g, 8);
        if (!g)
            return false;
        inference__model_instance_group__init(g);
        g->name = (char *)c->instance_group[i].name;
        g->kind = (Inference__ModelInstanceGroup__Kind)c->instance_group[i].kind;
        g->count = c->instance_group[i].count;
        cfg->instance_group[cfg->n_instance_group++] = g;
    }
    for (size_t i = 0; i < np; i++) {
        Inference__ModelConfig__ParametersEntry *e = osv_arena_alloc(&k->arena, sizeof *e, 8);
        Inference__ModelParameter *v = osv_arena_alloc(&k->arena, sizeof *v, 8);
        if (!e || !v)
            return false;
        inference__model_config__parameters_entry__init(e);
        inference__model_parameter__init(v);
        v->string_value = (char *)c->parameters[i].value;
        e->key = (char *)c->parameters[i].key;
        e->value = v;
        cfg->parameters[cfg->n_parameters++] = e;
    }
    if (b->dynamic) {
        Inference__ModelDynamicBatching *db = osv_arena_alloc(&k->arena, sizeof *db, 8);
        int32_t *pref = osv_arena_alloc(&k->arena, (b->n_preferred ? b->n_preferred : 1) * sizeof *pref, 8);
        if (!db || !pref)
            return false;
        inference__model_dynamic_batching__init(db);
        for (uint32_t i = 0; i < b->n_preferred; i++)
            pref[i] = (int32_t)b->preferred[i];
        db->preferred_batch_size = pref;
        db->n_preferred_batch_size = b->n_preferred;
        db->max_queue_delay_microseconds = b->max_queue_delay_us;
        db->preserve_ordering = b->preserve_ordering;
        cfg->scheduling_choice_case = INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING;
        cfg->dynamic_batching = db;
    }
    return true;
}

static void m_config(gcall_t *k)
{
    Inference__ModelConfigRequest *q = grpc_unpack(k, &inference__model_config_request__descriptor);
    Inference__ModelConfigResponse r = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
    Inference__ModelConfig cfg = INFERENCE__MODEL_CONFIG__INIT;
    osv_model_t *m;
    int rc;
    if (!q)
        return grpc_fail(k, OSV_EPARSE);
    if ((rc = model_ref(k, q->name, q->version, &m)) != 0)
        return grpc_fail(k, rc);
    k->model = m;
    const osv_triton_config_t *c = osv_model_triton_config(m);
    cfg.name = (char *)c->name;
    cfg.platform = (char *)c->platform;
    cfg.backend = (char *)c->backend;
    cfg.max_batch_size = c->max_batch_size;
    cfg.default_model_filename = (char *)c->default_model_filename;
    if (!config_fill(k, m, &cfg))
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    r.config = &cfg;
    reply(k, &r.base);
}

/* ---- statistics ---------------------------------------------------------------------------------------------- */

typedef struct stats_ctx {
    gcall_t *k;
    const char *name, *version;
    Inference__ModelStatistics **rows;
    size_t n, cap;
    bool oom;
} stats_ctx_t;

static Inference__StatisticDuration *dur(gcall_t *k, uint64_t count, uint64_t ns)
{
    Inference__StatisticDuration *d = osv_arena_alloc(&k->arena, sizeof *d, 8);
    if (d) {
        inference__statistic_duration__init(d);
        d->count = count;
        d->ns = ns;
    }
    return d;
}

static int stats_row(void *ud, osv_model_t *m)
{
    stats_ctx_t *x = ud;
    gcall_t *k = x->k;
    osv_stats_snapshot_t s;
    char *v;
    if (*x->name && strcmp(x->name, osv_model_name(m)) != 0)
        return 0;
    if (*x->version && strtoll(x->version, NULL, 10) != osv_model_version(m))
        return 0;
    if (x->n == x->cap)
        return 0;
    Inference__ModelStatistics *row = osv_arena_alloc(&k->arena, sizeof *row, 8);
    Inference__InferStatistics *is = osv_arena_alloc(&k->arena, sizeof *is, 8);
    if (!row || !is || !(v = osv_arena_alloc(&k->arena, 24, 1))) {
        x->oom = true;
        return 1;
    }
    osv_stats_snapshot(osv_model_stats(m), &s);
    inference__model_statistics__init(row);
    inference__infer_statistics__init(is);
    snprintf(v, 24, "%" PRId64, osv_model_version(m));
    row->name = (char *)osv_model_name(m);
    row->version = v;
    row->last_inference = s.last_inference_ms;
    row->inference_count = s.inference_count;
    row->execution_count = s.execution_count;
    is->success = dur(k, s.success.count, s.success.ns);
    is->fail = dur(k, s.fail.count, s.fail.ns);
    is->queue = dur(k, s.phase[OSV_PHASE_QUEUE].count, s.phase[OSV_PHASE_QUEUE].ns);
    is->compute_input = dur(k, s.phase[OSV_PHASE_COMPUTE_INPUT].count, s.phase[OSV_PHASE_COMPUTE_INPUT].ns);
    is->compute_infer = dur(k, s.phase[OSV_PHASE_COMPUTE_INFER].count, s.phase[OSV_PHASE_COMPUTE_INFER].ns);
    is->compute_output = dur(k, s.phase[OSV_PHASE_COMPUTE_OUTPUT].count, s.phase[OSV_PHASE_COMPUTE_OUTPUT].ns);
    is->cache_hit = dur(k, 0, 0);
    is->cache_miss = dur(k, 0, 0);
    if (!is->success || !is->fail || !is->queue || !is->compute_input || !is->compute_infer ||
        !is->compute_output || !is->cache_hit || !is->cache_miss) {
        x->oom = true;
        return 1;
    }
    row->inference_stats = is;
    x->rows[x->n++] = row;
    return 0;
}

static void m_stats(gcall_t *k)
{
    Inference__ModelStatisticsRequest *q = grpc_unpack(k, &inference__model_statistics_request__descriptor);
    Inference__ModelStatisticsResponse r = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
    osv_grpc_t *g = k->st->c->g;
    stats_ctx_t x = {.k = k};
    if (!q)
        return grpc_fail(k, OSV_EPARSE);
    if (*q->name) { /* a named model must exist (and be loaded), as Triton answers */
        osv_model_t *m;
        int rc = model_ref(k, q->name, q->version, &m);
        if (rc)
            return grpc_fail(k, rc);
        osv_model_release(m);
    }
    x.name = q->name;
    x.version = q->version;
    x.cap = osv_repo_model_count(g->repo) + 64;
    if (!(x.rows = osv_arena_alloc(&k->arena, x.cap * sizeof *x.rows, 8)))
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    osv_repo_foreach(g->repo, stats_row, &x);
    if (x.oom)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    r.n_model_stats = x.n;
    r.model_stats = x.rows;
    reply(k, &r.base);
}

/* ---- the repository ---------------------------------------------------------------------------------------- */

#define INDEX_MAX_ROWS 4096

static void m_repo_index(gcall_t *k)
{
    Inference__RepositoryIndexRequest *q = grpc_unpack(k, &inference__repository_index_request__descriptor);
    Inference__RepositoryIndexResponse r = INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
    osv_grpc_t *g = k->st->c->g;
    size_t n = 0;
    if (!q)
        return grpc_fail(k, OSV_EPARSE);
    osv_repo_index(g->repo, q->ready, NULL, 0, &n);
    n = n > INDEX_MAX_ROWS ? INDEX_MAX_ROWS : n;
    osv_repo_entry_t *rows = osv_arena_alloc(&k->arena, (n ? n : 1) * sizeof *rows, 8);
    r.models = osv_arena_alloc(&k->arena, (n ? n : 1) * sizeof *r.models, 8);
    Inference__RepositoryIndexResponse__ModelIndex *mi = osv_arena_alloc(&k->arena, (n ? n : 1) * sizeof *mi, 8);
    char *vers = osv_arena_alloc(&k->arena, (n ? n : 1) * 24, 1);
    if (!rows || !r.models || !mi || !vers)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    osv_repo_index(g->repo, q->ready, rows, n, &n);
    n = n > INDEX_MAX_ROWS ? INDEX_MAX_ROWS : n;
    for (size_t i = 0; i < n; i++) {
        inference__repository_index_response__model_index__init(&mi[i]);
        mi[i].name = rows[i].name;
        if (rows[i].version >= 0)
            snprintf(vers + 24 * i, 24, "%" PRId64, rows[i].version);
        else
            vers[24 * i] = '\0';
        mi[i].version = vers + 24 * i;
        mi[i].state = (char *)osv_model_state_name(rows[i].state);
        mi[i].reason = rows[i].reason;
        r.models[r.n_models++] = &mi[i];
    }
    reply(k, &r.base);
}

typedef struct load_ctx {
    gcall_t *k;
    char name[128];
    bool load;
    osv_stask_t task;
    int rc;
    osv_err_t err;
} load_ctx_t;

static void load_run(osv_stask_t *t)
{
    load_ctx_t *x = t->ud;
    osv_repo_t *repo = x->k->st->c->g->repo;
    x->rc = x->load ? osv_repo_load(repo, x->name, &x->err) : osv_repo_unload(repo, x->name, &x->err);
}

static void load_answer(load_ctx_t *x)
{
    gcall_t *k = x->k;
    if (x->rc) {
        k->err = x->err;
        return grpc_fail(k, x->rc);
    }
    if (x->load) {
        Inference__RepositoryModelLoadResponse r = INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
        reply(k, &r.base);
    } else {
        Inference__RepositoryModelUnloadResponse r = INFERENCE__REPOSITORY_MODEL_UNLOAD_RESPONSE__INIT;
        reply(k, &r.base);
    }
}

static void load_posted(osv_post_t *p)
{
    gcall_t *k = (gcall_t *)((char *)p - offsetof(gcall_t, done));
    gconn_t *c = k->st->c;
    if (!grpc_call_back(k))
        return;
    load_answer(k->ix);
    grpc_conn_settle(c);
}

/* Control thread: the answer is written on the connection's loop. */
static void load_complete(osv_stask_t *t)
{
    load_ctx_t *x = t->ud;
    x->k->done.fn = load_posted;
    osv_loop_post(x->k->st->c->nc.loop, &x->k->done);
}

static int check_repo_params(gcall_t *k, size_t n, char **keys)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i], "config") == 0 || strncmp(keys[i], "file:", 5) == 0)
            return osv_err_set(&k->err, OSV_EINVAL,
                               "loading a model from request parameters ('%.64s') is not supported: place it in "
                               "the model repository",
                               keys[i]);
    return 0;
}

static void m_repo_load(gcall_t *k, bool load)
{
    osv_grpc_t *g = k->st->c->g;
    load_ctx_t *x = osv_arena_alloc(&k->arena, sizeof *x, 8);
    char *keys[64];
    const char *name;
    size_t nk = 0;
    int rc;
    if (!x)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    memset(x, 0, sizeof *x);
    if (load) {
        Inference__RepositoryModelLoadRequest *q = grpc_unpack(k, &inference__repository_model_load_request__descriptor);
        if (!q)
            return grpc_fail(k, OSV_EPARSE);
        name = q->model_name;
        for (size_t i = 0; i < q->n_parameters && nk < 64; i++)
            keys[nk++] = q->parameters[i]->key;
    } else {
        Inference__RepositoryModelUnloadRequest *q =
            grpc_unpack(k, &inference__repository_model_unload_request__descriptor);
        if (!q)
            return grpc_fail(k, OSV_EPARSE);
        name = q->model_name;
    }
    if (!g->o.model_control)
        return grpc_fail(k, osv_err_set(&k->err, OSV_EPERM, "model control is disabled (--model-control-mode none)"));
    if ((rc = check_repo_params(k, nk, keys)) != 0)
        return grpc_fail(k, rc);
    if (!*name || !osv_model_name_valid(name, strlen(name)) || strlen(name) >= sizeof x->name)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOTFOUND, "unknown model '%.128s'", name));
    snprintf(x->name, sizeof x->name, "%s", name);
    x->k = k;
    x->load = load;
    k->ix = x;
    x->task = (osv_stask_t){.run = load_run, .complete = load_complete, .ud = x};
    if (!load) { /* unloading only drops references: quick enough for the loop */
        load_run(&x->task);
        return load_answer(x);
    }
    k->held = true;
    k->st->c->n_held++;
    if (osv_serve_control(g->serve, &x->task) != 0) {
        k->held = false;
        k->st->c->n_held--;
        return grpc_fail(k, osv_err_set(&k->err, OSV_EBUSY, "too many model loads in progress, retry later"));
    }
}

/* ---- system shared memory --------------------------------------------------------------------------------- */

/* The request message of a shared-memory method, or NULL once the call was answered (a malformed
 * message, or shared memory not allowed). */
static void *shm_request(gcall_t *k, const ProtobufCMessageDescriptor *d)
{
    void *q = grpc_unpack(k, d);
    if (!q) {
        grpc_fail(k, OSV_EPARSE);
        return NULL;
    }
    if (!k->st->c->g->o.allow_shm) {
        grpc_fail(k, osv_err_set(&k->err, OSV_EPERM, "shared memory is disabled: start ortserve with --allow-shm"));
        return NULL;
    }
    return q;
}

static void m_shm_status(gcall_t *k)
{
    Inference__SystemSharedMemoryStatusRequest *q =
        shm_request(k, &inference__system_shared_memory_status_request__descriptor);
    Inference__SystemSharedMemoryStatusResponse r = INFERENCE__SYSTEM_SHARED_MEMORY_STATUS_RESPONSE__INIT;
    size_t n = 0;
    int rc;
    if (!q)
        return; /* answered: k is gone */
    osv_grpc_t *g = k->st->c->g;
    osv_shm_info_t *info = osv_arena_alloc(&k->arena, OSV_SHM_MAX_REGIONS * sizeof *info, 8);
    if (!info)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    if ((rc = osv_shm_list(g->shm, k->st->auth_id, q->name, strlen(q->name), info, OSV_SHM_MAX_REGIONS, &n)) != 0)
        return grpc_fail(k, osv_err_set(&k->err, rc, "shared memory region '%.128s' is not registered", q->name));
    n = n > OSV_SHM_MAX_REGIONS ? OSV_SHM_MAX_REGIONS : n;
    r.regions = osv_arena_alloc(&k->arena, (n ? n : 1) * sizeof *r.regions, 8);
    Inference__SystemSharedMemoryStatusResponse__RegionsEntry *e = osv_arena_alloc(&k->arena, (n ? n : 1) * sizeof *e, 8);
    Inference__SystemSharedMemoryStatusResponse__RegionStatus *s = osv_arena_alloc(&k->arena, (n ? n : 1) * sizeof *s, 8);
    if (!r.regions || !e || !s)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    for (size_t i = 0; i < n; i++) {
        inference__system_shared_memory_status_response__regions_entry__init(&e[i]);
        inference__system_shared_memory_status_response__region_status__init(&s[i]);
        s[i].name = info[i].name;
        s[i].key = info[i].key;
        s[i].offset = info[i].offset;
        s[i].byte_size = info[i].byte_size;
        e[i].key = info[i].name;
        e[i].value = &s[i];
        r.regions[r.n_regions++] = &e[i];
    }
    reply(k, &r.base);
}

static void m_shm_register(gcall_t *k)
{
    Inference__SystemSharedMemoryRegisterRequest *q =
        shm_request(k, &inference__system_shared_memory_register_request__descriptor);
    Inference__SystemSharedMemoryRegisterResponse r = INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_RESPONSE__INIT;
    int rc;
    if (!q)
        return;
    if (!*q->name || !*q->key)
        return grpc_fail(k, osv_err_set(&k->err, OSV_EINVAL, "a region needs a 'name' and a 'key'"));
    if ((rc = osv_shm_register(k->st->c->g->shm, k->st->auth_id, q->name, strlen(q->name), q->key, strlen(q->key),
                               q->offset, q->byte_size, &k->err)) != 0)
        return grpc_fail(k, rc);
    reply(k, &r.base);
}

static void m_shm_unregister(gcall_t *k)
{
    Inference__SystemSharedMemoryUnregisterRequest *q =
        shm_request(k, &inference__system_shared_memory_unregister_request__descriptor);
    Inference__SystemSharedMemoryUnregisterResponse r = INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_RESPONSE__INIT;
    int rc;
    if (!q)
        return;
    rc = osv_shm_unregister(k->st->c->g->shm, k->st->auth_id, q->name, strlen(q->name), &k->err);
    if (rc && !(rc == OSV_ENOTFOUND && !*q->name))
        return grpc_fail(k, rc);
    reply(k, &r.base);
}

/* ---- log settings ------------------------------------------------------------------------------------------- */

static Inference__LogSettingsResponse__SettingsEntry *log_entry(gcall_t *k, const char *key, int kind, bool b,
                                                                uint32_t u, const char *s)
{
    Inference__LogSettingsResponse__SettingsEntry *e = osv_arena_alloc(&k->arena, sizeof *e, 8);
    Inference__LogSettingsResponse__SettingValue *v = osv_arena_alloc(&k->arena, sizeof *v, 8);
    if (!e || !v)
        return NULL;
    inference__log_settings_response__settings_entry__init(e);
    inference__log_settings_response__setting_value__init(v);
    e->key = (char *)key;
    e->value = v;
    v->parameter_choice_case = kind;
    if (kind == INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_BOOL_PARAM)
        v->bool_param = b;
    else if (kind == INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_UINT32_PARAM)
        v->uint32_param = u;
    else
        v->string_param = (char *)s;
    return e;
}

/* Triton's settings over ortserve's one level: log_info / log_warning / log_error turn levels on or
 * off, log_verbose_level > 0 is debug; log_format is json or text; log_file must stay "". */
static int log_apply(gcall_t *k, const Inference__LogSettingsRequest *q)
{
    int level = osv_log_get_level();
    for (size_t i = 0; i < q->n_settings; i++) {
        const char *key = q->settings[i]->key;
        const Inference__LogSettingsRequest__SettingValue *v = q->settings[i]->value;
        int c = v ? (int)v->parameter_choice_case : 0;
        bool is_bool = c == INFERENCE__LOG_SETTINGS_REQUEST__SETTING_VALUE__PARAMETER_CHOICE_BOOL_PARAM;
        bool is_u32 = c == INFERENCE__LOG_SETTINGS_REQUEST__SETTING_VALUE__PARAMETER_CHOICE_UINT32_PARAM;
        bool is_str = c == INFERENCE__LOG_SETTINGS_REQUEST__SETTING_VALUE__PARAMETER_CHOICE_STRING_PARAM;
        if (strcmp(key, "log_verbose_level") == 0) {
            if (!is_u32)
                return osv_err_set(&k->err, OSV_EINVAL, "log setting 'log_verbose_level' takes a uint32");
            level = v->uint32_param > 0 ? OSV_LOG_DEBUG : level == OSV_LOG_DEBUG ? OSV_LOG_INFO : level;
        } else if (strcmp(key, "log_info") == 0 || strcmp(key, "log_warning") == 0 ||
                   strcmp(key, "log_error") == 0) {
            int l = key[4] == 'i' ? OSV_LOG_INFO : key[4] == 'w' ? OSV_LOG_WARN : OSV_LOG_ERROR;
            if (!is_bool)
                return osv_err_set(&k->err, OSV_EINVAL, "log setting '%s' takes a bool", key);
            if (v->bool_param && level > l)
                level = l;
            else if (!v->bool_param && level <= l)
                level = l + 1;
        } else if (strcmp(key, "log_format") == 0) {
            if (!is_str || (strcmp(v->string_param, "json") != 0 && strcmp(v->string_param, "text") != 0 &&
                            strcmp(v->string_param, "default") != 0))
                return osv_err_set(&k->err, OSV_EINVAL, "log setting 'log_format' is 'json', 'text' or 'default'");
            osv_log_set_json(strcmp(v->string_param, "text") != 0);
        } else if (strcmp(key, "log_file") == 0) {
            if (!is_str || *v->string_param)
                return osv_err_set(&k->err, OSV_EINVAL, "log setting 'log_file' must be \"\": ortserve logs to stderr");
        } else {
            return osv_err_set(&k->err, OSV_EINVAL, "unknown log setting '%.64s'", key);
        }
    }
    osv_log_set_level(level);
    return 0;
}

static void m_log(gcall_t *k)
{
    Inference__LogSettingsRequest *q = grpc_unpack(k, &inference__log_settings_request__descriptor);
    Inference__LogSettingsResponse r = INFERENCE__LOG_SETTINGS_RESPONSE__INIT;
    Inference__LogSettingsResponse__SettingsEntry *e[6];
    const int B = INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_BOOL_PARAM,
              U = INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_UINT32_PARAM,
              S = INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_STRING_PARAM;
    int rc;
    if (!q)
        return grpc_fail(k, OSV_EPARSE);
    if ((rc = log_apply(k, q)) != 0)
        return grpc_fail(k, rc);
    int level = osv_log_get_level();
    e[0] = log_entry(k, "log_file", S, false, 0, "");
    e[1] = log_entry(k, "log_info", B, level <= OSV_LOG_INFO, 0, NULL);
    e[2] = log_entry(k, "log_warning", B, level <= OSV_LOG_WARN, 0, NULL);
    e[3] = log_entry(k, "log_error", B, level <= OSV_LOG_ERROR, 0, NULL);
    e[4] = log_entry(k, "log_verbose_level", U, false, level == OSV_LOG_DEBUG, NULL);
    e[5] = log_entry(k, "log_format", S, false, 0, osv_log_json() ? "json" : "text");
    for (int i = 0; i < 6; i++)
        if (!e[i])
            return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    r.n_settings = 6;
    r.settings = e;
    osv_log(OSV_LOG_INFO, "log_settings", "\"level\":%d,\"json\":%s", level, osv_log_json() ? "true" : "false");
    reply(k, &r.base);
}

/* ---- dispatch ---------------------------------------------------------------------------------------------- */

void grpc_dispatch(gcall_t *k)
{
    gmethod_t m = k->st->method;
    if (k->compressed && !k->rc)
        return grpc_inflate(k);
    if (k->rc && m != GM_INFER && m != GM_STREAM_INFER)
        return grpc_fail(k, k->rc);
    switch (m) {
    case GM_INFER:
    case GM_STREAM_INFER:
        return grpc_infer(k);
    case GM_LIVE:
        return m_live(k);
    case GM_READY:
        return m_ready(k);
    case GM_MODEL_READY:
        return m_model_ready(k);
    case GM_SERVER_META:
        return m_server_meta(k);
    case GM_MODEL_META:
        return m_model_meta(k);
    case GM_CONFIG:
        return m_config(k);
    case GM_STATS:
        return m_stats(k);
    case GM_REPO_INDEX:
        return m_repo_index(k);
    case GM_REPO_LOAD:
        return m_repo_load(k, true);
    case GM_REPO_UNLOAD:
        return m_repo_load(k, false);
    case GM_SHM_STATUS:
        return m_shm_status(k);
    case GM_SHM_REGISTER:
        return m_shm_register(k);
    case GM_SHM_UNREGISTER:
        return m_shm_unregister(k);
    case GM_CUDA_STATUS:
    case GM_CUDA_REGISTER:
    case GM_CUDA_UNREGISTER:
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOTIMPL,
                                   "CUDA shared memory is not supported: ortserve runs on the CPU (use system "
                                   "shared memory)"));
    case GM_LOG:
        return m_log(k);
    case GM_HEALTH_CHECK:
    case GM_HEALTH_WATCH:
        return grpc_health(k);
    default:
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOTIMPL, "unknown method"));
    }
}
