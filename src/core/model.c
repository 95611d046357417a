/* model.c — loading one model version: session options from config, ORT session, input/output
 * introspection, model metadata, labels, warm-up, and reference counting. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    if (m->session)
        osv_ort->ReleaseSession(m->session);
    for (size_t i = 0; i < m->n_owned; i++)
        osv_free(m->owned[i]);
    osv_free(m->owned);
    osv_free(m->in);
    osv_free(m->out);
    osv_free((void *)m->in_names);
    osv_free((void *)m->out_names);
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

/* Reads a whole file (≤ max bytes) into a new NUL-terminated buffer. */
static int read_file(const char *path, size_t max, char **out, size_t *len, osv_err_t *err)
{
    FILE *f = fopen(path, "rbe");
    struct stat st;
    char *buf;
    if (!f)
        return osv_err_set(err, errno == ENOENT ? OSV_ENOTFOUND : OSV_EIO, "cannot open %s: %s", path,
                           strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        fclose(f);
        return osv_err_set(err, OSV_ELIMIT, "%s is not a regular file of at most %zu bytes", path, max);
    }
    if (!(buf = osv_malloc((size_t)st.st_size + 1))) {
        fclose(f);
        return osv_err_set(err, OSV_ENOMEM, "out of memory reading %s", path);
    }
    *len = fread(buf, 1, (size_t)st.st_size, f);
    buf[*len] = '\0';
    fclose(f);
    *out = buf;
    return 0;
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
    st = api->SetSessionExecutionMode(so, ORT_SEQUENTIAL);
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

static int describe_io(osv_model_t *m, int output, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    size_t n = 0;
    int rc;
    OrtStatus *st =
        output ? api->SessionGetOutputCount(m->session, &n) : api->SessionGetInputCount(m->session, &n);
    osv_tensor_info_t *infos;
    const char **names;

    if ((rc = osv_ort_status(st, err, "I/O count")) != 0)
        return rc;
    infos = osv_calloc(n ? n : 1, sizeof *infos);
    names = osv_calloc(n ? n : 1, sizeof *names);
    if (output) {
        m->out = infos;
        m->out_names = names;
        m->n_out = (uint32_t)n;
    } else {
        m->in = infos;
        m->in_names = names;
        m->n_in = (uint32_t)n;
    }
    if (!infos || !names)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char *name = NULL;
        OrtTypeInfo *type = NULL;
        st = output ? api->SessionGetOutputName(m->session, i, m->env->allocator, &name)
                    : api->SessionGetInputName(m->session, i, m->env->allocator, &name);
        if ((rc = osv_ort_status(st, err, "I/O name")) != 0)
            return rc;
        if (!(infos[i].name = names[i] = own_ort_string(m, name)))
            return osv_err_set(err, OSV_ENOMEM, "out of memory");
        st = output ? api->SessionGetOutputTypeInfo(m->session, i, &type)
                    : api->SessionGetInputTypeInfo(m->session, i, &type);
        if ((rc = osv_ort_status(st, err, "I/O type")) != 0)
            return rc;
        rc = describe_tensor(m, type, &infos[i], err);
        api->ReleaseTypeInfo(type);
        if (rc)
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
    if ((rc = read_file(path, MAX_LABELS_FILE, &text, &len, err)) != 0)
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

static int attach_labels(osv_model_t *m, const char *dir, osv_err_t *err)
{
    const config_labels_t *lc = &m->labels_cfg;
    const char *const *def = NULL;
    uint32_t n_def = 0;
    int rc;
    if (lc->default_file && (rc = load_labels(m, dir, lc->default_file, &def, &n_def, err)) != 0)
        return rc;
    for (uint32_t i = 0; i < m->n_out; i++) {
        m->out[i].labels = def;
        m->out[i].n_labels = n_def;
    }
    for (uint32_t k = 0; k < lc->n_outputs; k++) {
        int o = osv_model_find_output(m, lc->output_names[k], strlen(lc->output_names[k]));
        if (o < 0)
            return osv_err_set(err, OSV_ENOTFOUND, "output_labels names unknown output '%s'",
                               lc->output_names[k]);
        if ((rc = load_labels(m, dir, lc->output_files[k], &m->out[o].labels, &m->out[o].n_labels, err)) != 0)
            return rc;
    }
    return 0;
}

static int load_config(osv_model_t *m, const char *dir, osv_err_t *err)
{
    char path[4096];
    int rc;
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = read_file(path, MAX_CONFIG_FILE, &m->config_text, &m->config_len, err);
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

/* A fixed output shape the model declares may be one example's shape (data-dependent ops keep
 * what the exporter saw). If the warm-up result disagrees, never pre-size that output. */
static void check_declared_shape(osv_model_t *m, uint32_t i, OrtValue *v)
{
    const osv_tensor_info_t *t = &m->out[i];
    OrtTensorTypeAndShapeInfo *tsi = NULL;
    int64_t dims[OSV_MAX_DIMS];
    size_t rank = 0;
    bool same;
    if (!v || t->kind != OSV_VALUE_TENSOR || osv_ort->GetTensorTypeAndShape(v, &tsi) != NULL)
        return;
    same = osv_ort->GetDimensionsCount(tsi, &rank) == NULL && rank == (size_t)t->rank &&
           rank <= OSV_MAX_DIMS && osv_ort->GetDimensions(tsi, dims, rank) == NULL;
    for (size_t d = 0; same && d < rank; d++)
        same = t->dims[d] < 0 || t->dims[d] == dims[d];
    osv_ort->ReleaseTensorTypeAndShapeInfo(tsi);
    if (!same)
        atomic_store_explicit(&m->derive_broken[i], 1, memory_order_relaxed);
}

/* Runs the model once on zero-filled inputs (dynamic dims = 1) so the first request does not pay
 * for ORT's lazy initialisation. A failure is recorded, not fatal: some models reject zeros. */
static void warmup(osv_model_t *m)
{
    const OrtApi *api = osv_ort;
    OrtValue **in = osv_calloc(m->n_in + 1, sizeof *in), **out = osv_calloc(m->n_out + 1, sizeof *out);
    OrtStatus *st = NULL;
    char msg[OSV_ERR_MSG_MAX] = "";

    if (!in || !out) {
        snprintf(msg, sizeof msg, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < m->n_in && !st; i++) {
        const osv_tensor_info_t *t = &m->in[i];
        int64_t dims[OSV_MAX_DIMS];
        void *data = NULL;
        size_t count = 1;
        if (t->kind != OSV_VALUE_TENSOR || t->dtype == OSV_DTYPE_INVALID) {
            snprintf(msg, sizeof msg, "input '%s' is not a servable tensor", t->name);
            goto done;
        }
        for (int32_t d = 0; d < t->rank; d++) {
            dims[d] = t->dims[d] < 0 ? 1 : t->dims[d];
            count *= (size_t)dims[d];
        }
        st = api->CreateTensorAsOrtValue(m->env->allocator, dims, (size_t)(t->rank < 0 ? 0 : t->rank),
                                         (ONNXTensorElementDataType)t->ort_type, &in[i]);
        if (!st && t->dtype != OSV_DTYPE_BYTES && count > 0 &&
            (st = api->GetTensorMutableData(in[i], &data)) == NULL && data)
            memset(data, 0, count * osv_dtype_size(t->dtype));
    }
    uint64_t t0 = osv_now_ns(), rss0 = osv_sysmem_rss();
    if (!st)
        st = api->Run(m->session, NULL, m->in_names, (const OrtValue *const *)in, m->n_in, m->out_names,
                      m->n_out, out);
    if (!st) {
        uint64_t rss1 = osv_sysmem_rss();
        m->warmup_ns = osv_now_ns() - t0;
        m->warmup_bytes = rss0 && rss1 > rss0 ? rss1 - rss0 : 0;
    }
    for (uint32_t i = 0; !st && i < m->n_out; i++)
        check_declared_shape(m, i, out[i]);
    if (st) {
        snprintf(msg, sizeof msg, "%s", api->GetErrorMessage(st));
        api->ReleaseStatus(st);
    }
done:
    for (uint32_t i = 0; in && i < m->n_in; i++)
        if (in[i])
            api->ReleaseValue(in[i]);
    for (uint32_t i = 0; out && i < m->n_out; i++)
        if (out[i])
            api->ReleaseValue(out[i]);
    osv_free(in);
    osv_free(out);
    if (*msg)
        m->warmup_error = osv_model_own(m, osv_strdup(msg));
}

static int model_build(osv_model_t *m, const char *path, const char *config_dir, osv_err_t *err)
{
    OrtSessionOptions *so = NULL;
    uint64_t t0 = osv_now_ns();
    int rc;

    if (config_dir && (rc = load_config(m, config_dir, err)) != 0)
        return rc;
    if ((rc = session_options(m, &so, err)) != 0)
        return rc;
    rc = osv_ort_status(osv_ort->CreateSession(m->env->env, path, so, &m->session), err, "loading the model");
    osv_ort->ReleaseSessionOptions(so);
    if (rc || (rc = describe_io(m, 0, err)) != 0 || (rc = describe_io(m, 1, err)) != 0 ||
        (rc = read_metadata(m, err)) != 0)
        return rc;
    if (!(m->derive_broken = osv_calloc(m->n_out ? m->n_out : 1, sizeof *m->derive_broken)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if (config_dir && (rc = attach_labels(m, config_dir, err)) != 0) {
        osv_err_prefix(err, "%s/config.json", config_dir);
        return rc;
    }
    m->batch_dim = resolve_batch_dim(m);
    for (uint32_t i = 0; i < m->n_out; i++)
        for (int32_t d = 0; d < m->out[i].rank; d++)
            m->outputs_symbolic |= m->out[i].dims[d] < 0 && m->out[i].sym[d][0];
    if (m->cfg.warmup && osv_model_servable(m, NULL))
        warmup(m);
    m->load_ms = (double)(osv_now_ns() - t0) / 1e6;
    return 0;
}

int osv_model_load(osv_env_t *env, const char *name, int64_t version, const char *path,
                   const char *config_dir, const osv_limits_t *base_limits, osv_model_t **out, osv_err_t *err)
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

const char *osv_model_warmup_error(const osv_model_t *m)
{
    return m->warmup_error;
}
