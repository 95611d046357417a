/* model.c — loading one model version: session options from config, ORT session, input/output
 * introspection, model metadata, labels, warm-up, and reference counting. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#include "batching_config.h"
#include "file.h"
#include "model_internal.h"
#include "ortserve/alloc.h"
#include "ortserve/dtype.h"
#include "ortserve/pool.h"
#include "ortserve/shape.h"
#include "ortserve/sysmem.h"

#define MAX_LABELS      (1u << 20)
#define MAX_LABELS_FILE (64u << 20)
#define MAX_CONFIG_FILE (1u << 20)

void osv_model_config_default(osv_model_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->threads.intra_op = c->threads.inter_op = c->threads.spinning = -1;
    c->optimization = 99;
    c->arena = true;
    c->mem_pattern = true;
    osv_limits_default(&c->limits);
    c->warmup = true;
    c->deadline_ms = -1;
    c->max_queue = -1;
    c->batch_dim = -1;
    osv_batching_config_default(&c->batching, &c->cache);
}

char *osv_model_own(osv_model_t *m, char *s)
{
    if (!s)
        return NULL;
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? m->cap_owned * 2 : 32;
        char **p = osv_realloc(m->owned, cap * sizeof *p);
        if (!p) {
            osv_free(s);
            return NULL;
        }
        m->owned = p;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = s;
    return s;
}

/* Copies an ORT-allocated string into model-owned memory and frees ORT's copy. */
static const char *own_ort_string(osv_model_t *m, char *s)
{
    char *copy = s ? osv_model_own(m, osv_strdup(s)) : osv_model_own(m, osv_strdup(""));
    if (s)
        m->env->allocator->Free(m->env->allocator, s);
    return copy;
}

static void model_free(osv_model_t *m)
{
    for (int i = 0; i < OSV_ATTACH_MAX; i++) {
        if (m->attach[i].ptr && m->attach[i].dtor)
            m->attach[i].dtor(m->attach[i].ptr);
    }
    for (uint32_t i = 1; m->sessions && i < m->n_instances; i++)
        if (m->sessions[i] && m->sessions[i] != m->session)
            osv_ort->ReleaseSession(m->sessions[i]);
    if (m->session)
        osv_ort->ReleaseSession(m->session);
    osv_free(m->sessions);
    for (size_t i = 0; i < m->n_owned; i++)
        osv_free(m->owned[i]);
    osv_free(m->owned);
    osv_free(m->in);
    osv_free(m->out);
    osv_free(m->ort_in);
    osv_free(m->ort_out);
    osv_free(m->in_ort);
    osv_free(m->out_ort);
    osv_free((void *)m->in_names);
    osv_free((void *)m->out_names);
    osv_tconfig_free(m->tc);
    osv_free((void *)m->derive_broken);
    osv_free((void *)m->meta.custom_keys);
    osv_free((void *)m->meta.custom_values);
    osv_free(m->labels_cfg.output_names);
    osv_free(m->labels_cfg.output_files);
    osv_stats_free(m->stats);
    osv_free(m);
}

osv_model_t *osv_model_ref(osv_model_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void osv_model_release(osv_model_t *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        model_free(m);
}

static int session_options(osv_model_t *m, OrtSessionOptions **out, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    const osv_env_opts_t *eo = osv_env_opts(m->env);
    const osv_model_config_t *c = &m->cfg;
    int intra = c->threads.intra_op >= 0 ? c->threads.intra_op : eo->threads.intra_op;
    int inter = c->threads.inter_op >= 0 ? c->threads.inter_op : eo->threads.inter_op;
    int spin = c->threads.spinning >= 0 ? c->threads.spinning : eo->threads.spinning;
    OrtSessionOptions *so = NULL;
    OrtStatus *st;

    if ((st = api->CreateSessionOptions(&so)) != NULL)
        return osv_ort_status(st, err, "session options");
    st = api->SetSessionExecutionMode(so, m->tc->session.execution_mode ? ORT_PARALLEL : ORT_SEQUENTIAL);
    if (!st && m->tc->session.device_allocator_for_initializers)
        st = api->AddSessionConfigEntry(so, "session.use_device_allocator_for_initializers", "1");
    if (!st)
        st = api->SetSessionGraphOptimizationLevel(so, (GraphOptimizationLevel)c->optimization);
    if (!st)
        st = c->arena ? api->EnableCpuMemArena(so) : api->DisableCpuMemArena(so);
    if (!st)
        st = c->mem_pattern ? api->EnableMemPattern(so) : api->DisableMemPattern(so);
    if (!st && eo->global_thread_pools)
        st = api->DisablePerSessionThreads(so);
    if (!st && !eo->global_thread_pools) {
        st = api->SetIntraOpNumThreads(so, intra < 0 ? 0 : intra);
        if (!st)
            st = api->SetInterOpNumThreads(so, inter < 0 ? 0 : inter);
        if (!st)
            st = api->AddSessionConfigEntry(so, "session.intra_op.allow_spinning", spin > 0 ? "1" : "0");
        if (!st)
            st = api->AddSessionConfigEntry(so, "session.inter_op.allow_spinning", spin > 0 ? "1" : "0");
    }
    if (st) {
        api->ReleaseSessionOptions(so);
        return osv_ort_status(st, err, "session options");
    }
    *out = so;
    return 0;
}

static osv_value_kind_t kind_of(enum ONNXType t)
{
    switch (t) {
    case ONNX_TYPE_TENSOR:
        return OSV_VALUE_TENSOR;
    case ONNX_TYPE_SEQUENCE:
        return OSV_VALUE_SEQUENCE;
    case ONNX_TYPE_MAP:
        return OSV_VALUE_MAP;
    case ONNX_TYPE_OPTIONAL:
        return OSV_VALUE_OPTIONAL;
    default:
        return OSV_VALUE_OTHER;
    }
}

/* Fills ti from ORT's type info (tensor element type, rank, dims, symbolic names). */
static int describe_tensor(osv_model_t *m, OrtTypeInfo *type, osv_tensor_info_t *ti, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    const OrtTensorTypeAndShapeInfo *tsi = NULL;
    enum ONNXType ot = ONNX_TYPE_UNKNOWN;
    ONNXTensorElementDataType et;
    const char *sym[OSV_MAX_DIMS];
    size_t rank;
    int rc;

    if ((rc = osv_ort_status(api->GetOnnxTypeFromTypeInfo(type, &ot), err, "type info")) != 0)
        return rc;
    ti->kind = kind_of(ot);
    ti->rank = -1;
    if (ti->kind != OSV_VALUE_TENSOR)
        return 0;
    if ((rc = osv_ort_status(api->CastTypeInfoToTensorInfo(type, &tsi), err, "tensor info")) != 0 ||
        (rc = osv_ort_status(api->GetTensorElementType(tsi, &et), err, "element type")) != 0 ||
        (rc = osv_ort_status(api->GetDimensionsCount(tsi, &rank), err, "rank")) != 0)
        return rc;
    ti->ort_type = (int)et;
    ti->dtype = osv_dtype_from_ort((int)et);
    if (rank > OSV_MAX_DIMS) {
        ti->kind = OSV_VALUE_OTHER;
        return 0;
    }
    ti->rank = (int32_t)rank;
    if ((rc = osv_ort_status(api->GetDimensions(tsi, ti->dims, rank), err, "dims")) != 0 ||
        (rc = osv_ort_status(api->GetSymbolicDimensions(tsi, sym, rank), err, "symbolic dims")) != 0)
        return rc;
    for (size_t d = 0; d < rank; d++) {
        if (ti->dims[d] < 0)
            ti->dims[d] = -1;
        if (!(ti->sym[d] = osv_model_own(m, osv_strdup(sym[d] ? sym[d] : ""))))
            return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    return 0;
}

/* The lists of a session ORT describes: its inputs, its outputs, and the initializers a request may
 * override (graph inputs that have a default: ONNX IR >= 4 keeps them out of the inputs). */
typedef enum { IO_INPUTS, IO_OUTPUTS, IO_INITIALIZERS } io_list_t;

static OrtStatus *io_count(const OrtSession *s, io_list_t l, size_t *n)
{
    const OrtApi *api = osv_ort;
    return l == IO_INPUTS    ? api->SessionGetInputCount(s, n)
           : l == IO_OUTPUTS ? api->SessionGetOutputCount(s, n)
                             : api->SessionGetOverridableInitializerCount(s, n);
}

static OrtStatus *io_name(const OrtSession *s, io_list_t l, size_t i, OrtAllocator *a, char **name)
{
    const OrtApi *api = osv_ort;
    return l == IO_INPUTS    ? api->SessionGetInputName(s, i, a, name)
           : l == IO_OUTPUTS ? api->SessionGetOutputName(s, i, a, name)
                             : api->SessionGetOverridableInitializerName(s, i, a, name);
}

static OrtStatus *io_type(const OrtSession *s, io_list_t l, size_t i, OrtTypeInfo **type)
{
    const OrtApi *api = osv_ort;
    return l == IO_INPUTS    ? api->SessionGetInputTypeInfo(s, i, type)
           : l == IO_OUTPUTS ? api->SessionGetOutputTypeInfo(s, i, type)
                             : api->SessionGetOverridableInitializerTypeInfo(s, i, type);
}

/* One entry of a list into *ti (its name owned by the model). */
static int describe_one(osv_model_t *m, io_list_t l, size_t i, osv_tensor_info_t *ti, osv_err_t *err)
{
    char *name = NULL;
    OrtTypeInfo *type = NULL;
    int rc = osv_ort_status(io_name(m->session, l, i, m->env->allocator, &name), err, "I/O name");
    if (rc)
        return rc;
    if (!(ti->name = own_ort_string(m, name)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if ((rc = osv_ort_status(io_type(m->session, l, i, &type), err, "I/O type")) != 0)
        return rc;
    rc = describe_tensor(m, type, ti, err);
    osv_ort->ReleaseTypeInfo(type);
    return rc;
}

/* Fills m->ort_out with the session's outputs, or m->ort_in with its inputs (n_ort_in) followed by the
 * initializers a request may override (n_ort_init). */
static int describe_io(osv_model_t *m, int output, osv_err_t *err)
{
    size_t n = 0, n_init = 0;
    osv_tensor_info_t *infos;
    int rc = osv_ort_status(io_count(m->session, output ? IO_OUTPUTS : IO_INPUTS, &n), err, "I/O count");
    if (!rc && !output)
        rc = osv_ort_status(io_count(m->session, IO_INITIALIZERS, &n_init), err, "initializer count");
    if (rc)
        return rc;
    if (n + n_init > UINT32_MAX / 2 || !(infos = osv_calloc(n + n_init ? n + n_init : 1, sizeof *infos)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    *(output ? &m->ort_out : &m->ort_in) = infos;
    *(output ? &m->n_ort_out : &m->n_ort_in) = (uint32_t)n;
    if (!output)
        m->n_ort_init = (uint32_t)n_init;
    for (size_t i = 0; i < n + n_init; i++) {
        io_list_t l = i >= n ? IO_INITIALIZERS : output ? IO_OUTPUTS : IO_INPUTS;
        if ((rc = describe_one(m, l, i < n ? i : i - n, &infos[i], err)) != 0)
            return rc;
    }
    return 0;
}

static int read_metadata(osv_model_t *m, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    OrtAllocator *a = m->env->allocator;
    OrtModelMetadata *md = NULL;
    char *s = NULL, **keys = NULL;
    int64_t nkeys = 0;
    int rc = osv_ort_status(api->SessionGetModelMetadata(m->session, &md), err, "model metadata");

#define META_STR(fn, field)                                                                                  \
    if (!rc && !(rc = osv_ort_status(api->fn(md, a, &s), err, #fn)))                                         \
        rc = (m->meta.field = own_ort_string(m, s)) ? 0 : OSV_ENOMEM;
    META_STR(ModelMetadataGetProducerName, producer)
    META_STR(ModelMetadataGetGraphName, graph_name)
    META_STR(ModelMetadataGetDomain, domain)
    META_STR(ModelMetadataGetDescription, description)
    META_STR(ModelMetadataGetGraphDescription, graph_description)
#undef META_STR
    if (!rc)
        rc = osv_ort_status(api->ModelMetadataGetVersion(md, &m->meta.version), err, "model version");
    if (!rc && m->meta.version == INT64_MAX)
        m->meta.version = -1; /* ORT reports "not set" as INT64_MAX */
    if (!rc)
        rc = osv_ort_status(api->ModelMetadataGetCustomMetadataMapKeys(md, a, &keys, &nkeys), err,
                            "custom map");
    if (!rc && nkeys > 0) {
        const char **k = osv_calloc((size_t)nkeys, sizeof *k), **v = osv_calloc((size_t)nkeys, sizeof *v);
        m->meta.custom_keys = k;
        m->meta.custom_values = v;
        if (!k || !v)
            rc = OSV_ENOMEM;
        for (int64_t i = 0; !rc && i < nkeys; i++) {
            char *val = NULL;
            rc = osv_ort_status(api->ModelMetadataLookupCustomMetadataMap(md, a, keys[i], &val), err,
                                "custom map");
            if (!rc) {
                v[i] = own_ort_string(m, val);
                k[i] = own_ort_string(m, keys[i]);
                keys[i] = NULL;
                rc = k[i] && v[i] ? 0 : OSV_ENOMEM;
                m->meta.n_custom = (uint32_t)(i + 1);
            }
        }
    }
    for (int64_t i = 0; keys && i < nkeys; i++)
        if (keys[i])
            a->Free(a, keys[i]);
    if (keys)
        a->Free(a, keys);
    if (md)
        api->ReleaseModelMetadata(md);
    return rc == OSV_ENOMEM ? osv_err_set(err, rc, "out of memory reading metadata") : rc;
}

/* Loads a labels file (one label per line) relative to dir into model-owned storage. */
static int load_labels(osv_model_t *m, const char *dir, const char *file, const char *const **out,
                       uint32_t *n_out, osv_err_t *err)
{
    char path[4096];
    char *text, *p;
    size_t len;
    uint32_t n = 0;
    const char **labels;
    int rc;

    if (strstr(file, "..") || file[0] == '/')
        return osv_err_set(err, OSV_EPERM, "labels file '%s' must be a plain path inside the model directory",
                           file);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if ((rc = osv_read_file(path, MAX_LABELS_FILE, &text, &len, err)) != 0)
        return rc;
    if (!osv_model_own(m, text))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    for (size_t i = 0; i < len; i++)
        n += text[i] == '\n';
    n += len && text[len - 1] != '\n';
    if (n > MAX_LABELS)
        return osv_err_set(err, OSV_ELIMIT, "%s has more than %u labels", path, MAX_LABELS);
    if (!(labels = (const char **)osv_model_own(m, osv_calloc(n ? n : 1, sizeof *labels))))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    p = text;
    for (uint32_t i = 0; i < n; i++) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (nl > p && nl[-1] == '\r')
            nl[-1] = '\0';
        labels[i] = p;
        p = nl ? nl + 1 : p + strlen(p);
    }
    *out = labels;
    *n_out = n;
    return 0;
}

/* Labels for each output from its labels file in the completed config (config.pbtxt's
 * label_filename or config.json's labels); a file several outputs name is read once. */
static int attach_labels(osv_model_t *m, const char *dir, osv_err_t *err)
{
    const config_labels_t *lc = &m->labels_cfg;
    int rc;
    for (uint32_t k = 0; k < lc->n_outputs; k++)
        if (osv_model_find_output(m, lc->output_names[k], strlen(lc->output_names[k])) < 0)
            return osv_err_set(err, OSV_ENOTFOUND, "%s/config.json: output_labels names unknown output '%s'",
                               dir, lc->output_names[k]);
    for (uint32_t k = 0; k < m->n_out; k++) {
        bool json;
        const char *file = osv_tconfig_labels_file(m, k, &json), *other;
        uint32_t same = 0;
        if (!file)
            continue;
        while (same < k && !((other = osv_tconfig_labels_file(m, same, NULL)) && strcmp(other, file) == 0))
            same++;
        if (same < k) {
            m->out[k].labels = m->out[same].labels;
            m->out[k].n_labels = m->out[same].n_labels;
        } else if ((rc = load_labels(m, dir, file, &m->out[k].labels, &m->out[k].n_labels, err)) != 0) {
            char where[4200];
            if (json)
                osv_err_prefix(err, "%s/config.json", dir);
            else
                osv_err_prefix(
                    err, "%soutput '%s' label_filename",
                    osv_tconfig_where(m->tc, m->tc->out_pos[k].label_filename, where, sizeof where),
                    m->out[k].name);
            return rc;
        }
    }
    return 0;
}

static int load_config(osv_model_t *m, const char *dir, osv_err_t *err)
{
    char path[4096];
    int rc;
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = osv_read_file(path, MAX_CONFIG_FILE, &m->config_text, &m->config_len, err);
    if (rc == OSV_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (!osv_model_own(m, m->config_text))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if ((rc = osv_model_config_parse(m, err)) != 0)
        osv_err_prefix(err, "%s", path);
    return rc;
}

/* Batch dimension: explicit in config, else "every input and output has a dynamic first dim". */
static int resolve_batch_dim(const osv_model_t *m)
{
    if (m->cfg.batch_dim >= 0)
        return m->cfg.batch_dim;
    if (m->n_in == 0)
        return 0;
    for (uint32_t i = 0; i < m->n_in + m->n_out; i++) {
        const osv_tensor_info_t *t = i < m->n_in ? &m->in[i] : &m->out[i - m->n_in];
        if (t->kind != OSV_VALUE_TENSOR || t->rank < 1 || t->dims[0] != -1)
            return 0;
    }
    return 1;
}

/* A config.json scheduling value and config.pbtxt's must agree where both are given. */
static int agree(osv_model_t *m, const char *key, uint64_t json, uint64_t pbtxt, osv_err_t *err)
{
    if (json == pbtxt)
        return 0;
    return osv_err_set(err, OSV_EINVAL, "model '%s': config.json's %s (%" PRIu64 ") contradicts config.pbtxt's (%" PRIu64 ")",
                       m->name, key, json, pbtxt);
}

/* config.pbtxt's max_batch_size, dynamic_batching, instance_group and response_cache, completed, into
 * the settings the batcher reads (cfg.batching, cfg.cache) — where config.json set none of them; a
 * value both set must agree. A max_queue_delay_microseconds of 0 counts as not set (the adaptive mode:
 * docs/DESIGN.md, "Dynamic batching"). */
static int batching_from_triton(osv_model_t *m, osv_err_t *err)
{
    const osv_triton_config_t *t = &m->tc->c;
    const osv_dynamic_batching_t *db = &t->dynamic_batching;
    osv_batching_config_t *b = &m->cfg.batching;
    int rc;
    if (!m->tc->present)
        return 0;
    if (b->max_batch_size && (rc = agree(m, "max_batch_size", b->max_batch_size, (uint64_t)t->max_batch_size, err)))
        return rc;
    b->max_batch_size = t->max_batch_size > 0 ? (uint32_t)t->max_batch_size : 0;
    if (!b->instance_count && m->tc->pos[TC_POS_INSTANCE_GROUP].line) /* written: runs at once = its count */
        b->instance_count = m->n_instances ? m->n_instances : 1;
    m->cfg.cache.enable |= t->response_cache.enable;
    if (!db->enabled || b->dynamic)
        return 0; /* none asked for, or config.json's (checked against the model below) */
    if (db->n_preferred > OSV_BATCH_MAX_PREFERRED || db->priority_levels > OSV_BATCH_MAX_PRIORITIES)
        return osv_err_set(err, OSV_ELIMIT,
                           "model '%s': dynamic_batching asks for %u preferred sizes and %" PRIu64
                           " priority levels (at most %d and %d)",
                           m->name, db->n_preferred, db->priority_levels, OSV_BATCH_MAX_PREFERRED,
                           OSV_BATCH_MAX_PRIORITIES);
    b->dynamic = true;
    b->max_queue_delay_us = db->max_queue_delay_us;
    b->max_queue_delay_set = db->max_queue_delay_us > 0;
    b->n_preferred = db->n_preferred;
    for (uint32_t i = 0; i < db->n_preferred; i++)
        b->preferred[i] = db->preferred_batch_size[i] > 0 ? (uint32_t)db->preferred_batch_size[i] : 1;
    b->preserve_ordering = db->preserve_ordering;
    b->priority_levels = (uint32_t)db->priority_levels;
    b->default_priority_level = (uint32_t)db->default_priority_level;
    b->default_queue_policy = db->default_queue_policy;
    for (uint32_t i = 0; i < db->n_priority_policies; i++) {
        uint64_t level = db->priority_queue_policy[i].level; /* 1..priority_levels (tconfig checked) */
        b->level_policy[level - 1] = db->priority_queue_policy[i].policy;
        b->level_policy_set[level - 1] = true;
    }
    return 0;
}

/* One session per instance (Triton's model instances), or one shared by all. */
static int create_sessions(osv_model_t *m, const char *path, OrtSessionOptions *so, osv_err_t *err)
{
    if (!(m->sessions = osv_calloc(m->n_instances ? m->n_instances : 1, sizeof *m->sessions)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    m->sessions[0] = m->session;
    for (uint32_t i = 1; i < m->n_instances; i++) {
        int rc = m->shared_session
                     ? 0
                     : osv_ort_status(osv_ort->CreateSession(m->env->env, path, so, &m->sessions[i]), err,
                                      "creating a model instance");
        if (rc)
            return rc;
        if (m->shared_session)
            m->sessions[i] = m->session;
    }
    return 0;
}

/* config.json and config.pbtxt, merged; then the first session and what it reports. */
static int open_session(osv_model_t *m, const char *path, const char *config_dir, OrtSessionOptions **so,
                        osv_err_t *err)
{
    osv_tconfig_limits_t tl = {m->lo.config_max_bytes, m->lo.config_max_depth, m->lo.max_instances,
                               m->lo.max_warmup_runs};
    int rc;
    if ((config_dir && (rc = load_config(m, config_dir, err)) != 0) ||
        (rc = osv_tconfig_read(config_dir, m->name, &tl, &m->tc, err)) != 0 ||
        (rc = osv_tconfig_merge_json(m, err)) != 0 || (rc = session_options(m, so, err)) != 0)
        return rc;
    rc =
        osv_ort_status(osv_ort->CreateSession(m->env->env, path, *so, &m->session), err, "loading the model");
    if (rc || (rc = describe_io(m, 0, err)) != 0 || (rc = describe_io(m, 1, err)) != 0)
        return rc;
    return read_metadata(m, err);
}

static int model_build(osv_model_t *m, const char *path, const char *config_dir, osv_err_t *err)
{
    OrtSessionOptions *so = NULL;
    uint64_t t0 = osv_now_ns();
    int rc = open_session(m, path, config_dir, &so, err);
    if (!rc)
        rc = osv_tconfig_complete(m, err);
    if (!rc && !(m->derive_broken = osv_calloc(m->n_out ? m->n_out : 1, sizeof *m->derive_broken)))
        rc = osv_err_set(err, OSV_ENOMEM, "out of memory");
    if (!rc && config_dir)
        rc = attach_labels(m, config_dir, err);
    if (!rc)
        rc = create_sessions(m, path, so, err);
    if (so)
        osv_ort->ReleaseSessionOptions(so);
    if (rc)
        return rc;
    if (m->batch_dim < 0)
        m->batch_dim = resolve_batch_dim(m);
    for (uint32_t k = 0; k < m->n_out; k++) {
        const osv_tensor_info_t *o = &m->ort_out[m->out_ort[k]];
        for (int32_t d = 0; d < o->rank; d++)
            m->outputs_symbolic |= o->dims[d] < 0 && o->sym[d][0];
    }
    if ((rc = batching_from_triton(m, err)) != 0)
        return rc;
    if ((rc = osv_batching_config_check(&m->cfg.batching, m->in, m->n_in, m->out, m->n_out, err)) != 0) {
        osv_err_prefix(err, "%s/config.json", config_dir ? config_dir : ".");
        return rc;
    }
    if (m->cfg.batching.max_batch_size)
        m->batch_dim = 1;
    if ((rc = osv_model_warmup_run(m, config_dir, err)) != 0)
        return rc;
    m->fingerprint = osv_model_files_fingerprint(path, config_dir);
    m->load_ms = (double)(osv_now_ns() - t0) / 1e6;
    return 0;
}

void osv_load_opts_default(osv_load_opts_t *o)
{
    o->default_max_batch_size = 4;
    o->native_instances = 1;
    o->max_instances = 16;
    o->max_warmup_runs = 1000;
    o->config_max_bytes = 1u << 20;
    o->config_max_depth = 32;
}

int osv_model_load_ex(osv_env_t *env, const char *name, int64_t version, const char *path,
                      const char *config_dir, const osv_limits_t *base_limits, const osv_load_opts_t *lo,
                      osv_model_t **out, osv_err_t *err)
{
    osv_model_t *m;
    int rc;

    if (!env || !name || !path)
        return osv_err_set(err, OSV_EINVAL, "model load needs an environment, a name and a path");
    if (!(m = osv_calloc(1, sizeof *m)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    atomic_init(&m->refs, 1);
    m->env = env;
    m->version = version;
    osv_model_config_default(&m->cfg);
    if (lo)
        m->lo = *lo;
    else
        osv_load_opts_default(&m->lo);
    if (base_limits)
        m->cfg.limits = *base_limits;
    if (!(m->name = osv_model_own(m, osv_strdup(name))) || !(m->path = osv_model_own(m, osv_strdup(path))) ||
        !(m->stats = osv_stats_new())) {
        model_free(m);
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    if ((rc = model_build(m, path, config_dir, err)) != 0) {
        osv_err_prefix(err, "model '%s' version %" PRId64, name, version);
        model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int osv_model_load(osv_env_t *env, const char *name, int64_t version, const char *path,
                   const char *config_dir, const osv_limits_t *base_limits, osv_model_t **out, osv_err_t *err)
{
    return osv_model_load_ex(env, name, version, path, config_dir, base_limits, NULL, out, err);
}

const char *osv_model_name(const osv_model_t *m)
{
    return m->name;
}

int64_t osv_model_version(const osv_model_t *m)
{
    return m->version;
}

const char *osv_model_path(const osv_model_t *m)
{
    return m->path;
}

uint32_t osv_model_input_count(const osv_model_t *m)
{
    return m->n_in;
}

uint32_t osv_model_output_count(const osv_model_t *m)
{
    return m->n_out;
}

const osv_tensor_info_t *osv_model_input(const osv_model_t *m, uint32_t i)
{
    return i < m->n_in ? &m->in[i] : NULL;
}

const osv_tensor_info_t *osv_model_output(const osv_model_t *m, uint32_t i)
{
    return i < m->n_out ? &m->out[i] : NULL;
}

static int find(const osv_tensor_info_t *t, uint32_t n, const char *name, size_t len)
{
    for (uint32_t i = 0; i < n; i++) {
        if (strlen(t[i].name) == len && memcmp(t[i].name, name, len) == 0)
            return (int)i;
    }
    return -1;
}

int osv_model_find_input(const osv_model_t *m, const char *name, size_t len)
{
    return find(m->in, m->n_in, name, len);
}

int osv_model_find_output(const osv_model_t *m, const char *name, size_t len)
{
    return find(m->out, m->n_out, name, len);
}

const char *osv_model_names(const osv_model_t *m, bool outputs, char *buf, size_t cap)
{
    const osv_tensor_info_t *t = outputs ? m->out : m->in;
    uint32_t n = outputs ? m->n_out : m->n_in;
    size_t len = 0, safe = 0; /* safe: the end of the last name that leaves room for ", ..." */
    if (!cap)
        return buf;
    buf[0] = '\0';
    for (uint32_t i = 0; i < n; i++) {
        int k = snprintf(buf + len, cap - len, "%s'%s'", i ? ", " : "", t[i].name);
        if (k < 0 || (size_t)k >= cap - len) { /* does not fit: end with ", ..." after a whole name */
            snprintf(buf + safe, cap - safe, "%s", safe ? ", ..." : "...");
            return buf;
        }
        len += (size_t)k;
        if (len + 6 <= cap)
            safe = len;
    }
    return buf;
}

const osv_model_meta_t *osv_model_meta(const osv_model_t *m)
{
    return &m->meta;
}

const osv_model_config_t *osv_model_config(const osv_model_t *m)
{
    return &m->cfg;
}

const char *osv_model_config_section(const osv_model_t *m, const char *key, size_t *len)
{
    for (int i = 0; i < OSV_CONFIG_SECTIONS; i++) {
        if (m->sections[i].key && m->sections[i].text && strcmp(m->sections[i].key, key) == 0) {
            if (len)
                *len = m->sections[i].len;
            return m->sections[i].text;
        }
    }
    return NULL;
}

osv_stats_t *osv_model_stats(const osv_model_t *m)
{
    return m->stats;
}

double osv_model_load_ms(const osv_model_t *m)
{
    return m->load_ms;
}

bool osv_model_servable(const osv_model_t *m, const char **why)
{
    for (uint32_t i = 0; i < m->n_in + m->n_out; i++) {
        const osv_tensor_info_t *t = i < m->n_in ? &m->in[i] : &m->out[i - m->n_in];
        if (t->kind != OSV_VALUE_TENSOR || t->dtype == OSV_DTYPE_INVALID) {
            if (why)
                *why = t->name;
            return false;
        }
    }
    return true;
}

void osv_model_set_attachment(osv_model_t *m, int key, void *ptr, void (*dtor)(void *))
{
    if (key < 0 || key >= OSV_ATTACH_MAX)
        return;
    m->attach[key].ptr = ptr;
    m->attach[key].dtor = dtor;
}

void *osv_model_attachment(const osv_model_t *m, int key)
{
    return key >= 0 && key < OSV_ATTACH_MAX ? m->attach[key].ptr : NULL;
}

/* Adds tensor t's batch-1 byte size, rounded up to a slot's alignment, to *acc; false when the
 * size is not fixed. */
static bool add_fixed_bytes(const osv_model_t *m, const osv_tensor_info_t *t, uint64_t *acc)
{
    int64_t dims[OSV_MAX_DIMS];
    uint64_t bytes;
    if (t->kind != OSV_VALUE_TENSOR || osv_dtype_size(t->dtype) == 0 || t->rank < 0 || t->rank > OSV_MAX_DIMS)
        return false;
    memcpy(dims, t->dims, (size_t)t->rank * sizeof *dims);
    if (t->rank > 0 && dims[0] < 0 && m->batch_dim == 1)
        dims[0] = 1;
    return osv_shape_size(dims, (uint32_t)t->rank, t->dtype, NULL, NULL, &bytes, NULL) == 0 &&
           osv_align_up_u64(bytes, OSV_SLOT_ALIGN, &bytes) && osv_add_u64(*acc, bytes, acc);
}

int osv_model_request_bytes(const osv_model_t *m, uint64_t *in_bytes, uint64_t *out_bytes)
{
    uint64_t in = 0, out = 0;
    for (uint32_t i = 0; i < m->n_in; i++)
        if (!add_fixed_bytes(m, &m->in[i], &in))
            return OSV_EINVAL;
    for (uint32_t i = 0; i < m->n_out; i++)
        if (!add_fixed_bytes(m, &m->out[i], &out))
            return OSV_EINVAL;
    *in_bytes = in;
    *out_bytes = out;
    return 0;
}

uint64_t osv_model_warmup_ns(const osv_model_t *m)
{
    return m->warmup_ns;
}

uint64_t osv_model_warmup_bytes(const osv_model_t *m)
{
    return m->warmup_bytes;
}

uint32_t osv_model_warmup_runs(const osv_model_t *m)
{
    return m->warmup_runs;
}

const char *osv_model_warmup_error(const osv_model_t *m)
{
    return m->warmup_error;
}

const osv_triton_config_t *osv_model_triton_config(const osv_model_t *m)
{
    return &m->tc->c;
}

bool osv_model_has_pbtxt(const osv_model_t *m)
{
    return m->tc->present;
}

int32_t osv_model_max_batch_size(const osv_model_t *m)
{
    return m->max_batch_size;
}

bool osv_model_batched(const osv_model_t *m)
{
    return m->batch_dim == 1;
}

uint32_t osv_model_instance_count(const osv_model_t *m)
{
    return m->n_instances;
}

uint64_t osv_model_fingerprint(const osv_model_t *m)
{
    return m->fingerprint;
}

/* FNV-1a over bytes, continuing from h. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The identity of a file as the file system tells it (no read): name, device, inode, size, mtime. */
static uint64_t file_identity(const char *path, const char *name)
{
    struct stat st;
    uint64_t h = fnv(0xcbf29ce484222325ull, name, strlen(name));
    if (stat(path, &st) != 0)
        return fnv(h, "missing", 7);
    int64_t v[5] = {(int64_t)st.st_dev, (int64_t)st.st_ino, (int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec,
                    (int64_t)st.st_mtim.tv_nsec};
    return fnv(h, v, sizeof v);
}

/* The regular files of dir, summed (order-independent: readdir's order is the file system's). */
static uint64_t dir_identity(const char *dir)
{
    char path[4096];
    uint64_t sum = 0;
    struct dirent *e;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode))
            sum += file_identity(path, e->d_name);
    }
    closedir(d);
    return sum;
}

uint64_t osv_model_files_fingerprint(const char *path, const char *config_dir)
{
    char warm[4096];
    uint64_t h = file_identity(path, "model");
    if (config_dir) {
        snprintf(warm, sizeof warm, "%s/warmup", config_dir);
        h += dir_identity(config_dir) * 3 + dir_identity(warm) * 5;
    }
    return h;
}

/* ---- shapes between clients and ONNX Runtime --------------------------------------------------------- */

/* Fills the one variable (-1) dim of dims[0..rank) so that they hold `elements`; false when they cannot. */
static bool fill_variable(int64_t *dims, uint32_t rank, uint64_t elements)
{
    uint64_t fixed = 1;
    int var = -1;
    for (uint32_t d = 0; d < rank; d++) {
        if (dims[d] < 0)
            var = (int)d;
        else if (!osv_mul_u64(fixed, (uint64_t)dims[d], &fixed))
            return false;
    }
    if (var < 0)
        return fixed == elements;
    if (fixed == 0)
        return elements == 0 && (dims[var] = 0, true);
    if (elements % fixed || elements / fixed > INT64_MAX)
        return false;
    dims[var] = (int64_t)(elements / fixed);
    return true;
}

int osv_model_ort_input_shape(const osv_model_t *m, uint32_t i, const int64_t *dims, uint32_t rank,
                              int64_t *out, uint32_t *out_rank)
{
    const osv_tc_tensor_t *t = &m->tc->c.input[i];
    uint32_t b = m->max_batch_size > 0 && rank > 0 ? 1 : 0;
    uint64_t elements = 1;
    if (!m->tc->present || !t->has_reshape) {
        if (rank) /* a scalar may come with no dims at all */
            memcpy(out, dims, rank * sizeof *dims);
        *out_rank = rank;
        return 0;
    }
    for (uint32_t d = b; d < rank; d++)
        if (!osv_mul_u64(elements, (uint64_t)dims[d], &elements))
            return OSV_EOVERFLOW;
    if (b)
        out[0] = dims[0];
    if (t->reshape_rank)
        memcpy(out + b, t->reshape, t->reshape_rank * sizeof *out);
    *out_rank = b + t->reshape_rank;
    return fill_variable(out + b, t->reshape_rank, elements) ? 0 : OSV_ESHAPE;
}

void osv_model_client_output_shape(const osv_model_t *m, uint32_t k, const int64_t *ort, uint32_t ort_rank,
                                   int64_t *out, uint32_t *out_rank)
{
    const osv_tc_tensor_t *t = &m->tc->c.output[k];
    uint32_t b = m->max_batch_size > 0 && ort_rank > 0 ? 1 : 0;
    uint64_t elements = 1;
    bool ok = true;
    if (!m->tc->present || !t->has_reshape) {
        if (ort_rank)
            memcpy(out, ort, ort_rank * sizeof *ort);
        *out_rank = ort_rank;
        return;
    }
    for (uint32_t d = b; d < ort_rank && ok; d++)
        ok = osv_mul_u64(elements, (uint64_t)ort[d], &elements);
    if (b)
        out[0] = ort[0];
    memcpy(out + b, t->dims, t->rank * sizeof *out);
    *out_rank = b + t->rank;
    if (!ok || !fill_variable(out + b, t->rank, elements)) { /* the model broke its reshape: show ORT's */
        if (ort_rank)
            memcpy(out, ort, ort_rank * sizeof *ort);
        *out_rank = ort_rank;
    }
}
