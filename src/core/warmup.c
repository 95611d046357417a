/* warmup.c — what a model version runs before it is READY, so that no client pays for ONNX Runtime's
 * lazy initialisation:
 *   - config.pbtxt's model_warmup samples (Triton's ModelWarmup): each sample's inputs built from zeros,
 *     random values or a file under <model>/warmup/ (one batch item, repeated batch_size times), run
 *     `count` times (at least once) on every session; a failing sample fails the load, naming it;
 *   - otherwise one run on zeros (dynamic dims = 1), unless config.json says "warmup": false; a model
 *     that rejects zeros still serves (the failure is recorded, and logged by the server).
 * The first run also tells which declared output shapes are one example's shape (never pre-sized
 * then) and how long a run takes and how much memory it adds (first estimates for the scheduler and
 * the memory plan). Load time only, on the loading thread. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "file.h"
#include "model_internal.h"
#include "ortserve/alloc.h"
#include "ortserve/sysmem.h"

/* The inputs of one warm-up run, as ORT values. */
typedef struct warm_in {
    OrtValue **v;
    const char **names;
    uint32_t n;
} warm_in_t;

static void warm_free(warm_in_t *w)
{
    for (uint32_t i = 0; w->v && i < w->n; i++)
        if (w->v[i])
            osv_ort->ReleaseValue(w->v[i]);
    osv_free(w->v);
    osv_free((void *)w->names);
    memset(w, 0, sizeof *w);
}

static int warm_alloc(warm_in_t *w, uint32_t n, osv_err_t *err)
{
    w->n = n;
    w->v = osv_calloc(n ? n : 1, sizeof *w->v);
    w->names = osv_calloc(n ? n : 1, sizeof *w->names);
    return w->v && w->names ? 0 : osv_err_set(err, OSV_ENOMEM, "out of memory for the warm-up");
}

/* A fixed-size tensor of ORT type `ort_type` and shape dims, left for the caller to fill. */
static int new_tensor(const osv_model_t *m, const int64_t *dims, uint32_t rank, int ort_type, OrtValue **out,
                      void **data, osv_err_t *err)
{
    int rc = osv_ort_status(osv_ort->CreateTensorAsOrtValue(m->env->allocator, dims, rank,
                                                            (ONNXTensorElementDataType)ort_type, out),
                            err, "warm-up input");
    if (!rc && ort_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING)
        rc = osv_ort_status(osv_ort->GetTensorMutableData(*out, data), err, "warm-up input");
    return rc;
}

/* ---- zeros ------------------------------------------------------------------------------------------- */

static void fill_random(osv_dtype_t dt, void *data, uint64_t count, uint64_t *seed);

/* Every input ORT needs, zero-filled, dynamic dims = 1 — the first one = rows when rows > 0 (strings:
 * empty); with `seed`, floating-point inputs hold random values in [0, 1) instead (integers stay zero:
 * they may be indices). */
static int fill_inputs(const osv_model_t *m, uint64_t rows, uint64_t *seed, warm_in_t *w, osv_err_t *err)
{
    int rc = warm_alloc(w, m->n_ort_in, err);
    for (uint32_t i = 0; !rc && i < m->n_ort_in; i++) {
        const osv_tensor_info_t *t = &m->ort_in[i];
        int64_t dims[OSV_MAX_DIMS];
        uint64_t count = 1;
        void *data = NULL;
        w->names[i] = t->name;
        if (t->kind != OSV_VALUE_TENSOR || t->dtype == OSV_DTYPE_INVALID)
            return osv_err_set(err, OSV_EUNSUPPORTED, "input '%s' is not a servable tensor", t->name);
        for (int32_t d = 0; d < t->rank; d++) {
            dims[d] = t->dims[d] < 0 ? (d == 0 && rows ? (int64_t)rows : 1) : t->dims[d];
            count *= (uint64_t)dims[d];
        }
        rc = new_tensor(m, dims, (uint32_t)(t->rank < 0 ? 0 : t->rank), t->ort_type, &w->v[i], &data, err);
        if (!rc && data && count)
            memset(data, 0, count * osv_dtype_size(t->dtype));
        if (!rc && data && count && seed &&
            (t->dtype == OSV_DTYPE_FP32 || t->dtype == OSV_DTYPE_FP64 || t->dtype == OSV_DTYPE_FP16 ||
             t->dtype == OSV_DTYPE_BF16))
            fill_random(t->dtype, data, count, seed);
    }
    return rc;
}

static int zero_inputs(const osv_model_t *m, uint64_t rows, warm_in_t *w, osv_err_t *err)
{
    return fill_inputs(m, rows, NULL, w, err);
}

/* ---- samples ------------------------------------------------------------------------------------------- */

static uint64_t next_random(uint64_t *s) /* splitmix64: the same warm-up data on every load */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Random values: floats in [0, 1) (never NaN or infinite), booleans 0/1, integers any bits. */
static void fill_random(osv_dtype_t dt, void *data, uint64_t count, uint64_t *seed)
{
    for (uint64_t i = 0; i < count; i++) {
        uint64_t r = next_random(seed);
        switch (dt) {
        case OSV_DTYPE_FP32: {
            float f = (float)(r >> 40) / 16777216.0f;
            memcpy((char *)data + i * 4, &f, 4);
            break;
        }
        case OSV_DTYPE_FP64: {
            double d = (double)(r >> 11) / 9007199254740992.0;
            memcpy((char *)data + i * 8, &d, 8);
            break;
        }
        case OSV_DTYPE_FP16: /* exponent 1..14 (bias 15): [2^-14, 1) */
            ((uint16_t *)data)[i] = (uint16_t)(((r % 14 + 1) << 10) | ((r >> 8) & 0x3ff));
            break;
        case OSV_DTYPE_BF16: /* exponent 100..126 (bias 127): [2^-27, 1) */
            ((uint16_t *)data)[i] = (uint16_t)(((r % 27 + 100) << 7) | ((r >> 8) & 0x7f));
            break;
        case OSV_DTYPE_BOOL:
            ((uint8_t *)data)[i] = r & 1;
            break;
        default:
            memcpy((char *)data + i * osv_dtype_size(dt), &r, osv_dtype_size(dt));
            break;
        }
    }
}

/* <config_dir>/warmup/<file>, exactly `want` bytes (or at most `max` when want is 0). */
static int read_sample_file(const char *dir, const char *file, uint64_t want, uint64_t max, char **out,
                            size_t *len, osv_err_t *err)
{
    char path[4096];
    int rc;
    snprintf(path, sizeof path, "%s/warmup/%s", dir ? dir : ".", file);
    if ((rc = osv_read_file(path, want ? want : max, out, len, err)) != 0)
        return rc;
    if (want && *len != want) {
        osv_free(*out);
        return osv_err_set(err, OSV_ESHAPE, "%s holds %zu bytes, one batch item of the input is %" PRIu64,
                           path, *len, want);
    }
    return 0;
}

/* A string input: each batch item's `item` elements from the file (Triton's serialized BYTES: a
 * 4-byte little-endian length, then the bytes), or empty strings for zero and random data. */
static int fill_strings(const osv_model_t *m, const char *dir, const osv_tc_warmup_input_t *in, OrtValue *v,
                        uint64_t item, uint64_t batch, osv_err_t *err)
{
    char *text = NULL;
    size_t len = 0, pos = 0;
    int rc = 0;
    if (in->source == OSV_WARMUP_FILE &&
        (rc = read_sample_file(dir, in->file, 0, m->cfg.limits.max_tensor_bytes, &text, &len, err)) != 0)
        return rc;
    for (uint64_t e = 0; !rc && e < item; e++) {
        uint32_t n = 0;
        const char *p = "";
        if (text) {
            if (len - pos < 4 || (memcpy(&n, text + pos, 4), len - pos - 4 < n)) {
                rc =
                    osv_err_set(err, OSV_EPARSE, "warmup/%s: element %" PRIu64 " of %" PRIu64 " is cut short",
                                in->file, e, item);
                break;
            }
            p = text + pos + 4;
            pos += 4 + (size_t)n;
        }
        for (uint64_t b = 0; !rc && b < batch; b++) {
            char *dst = NULL;
            rc = osv_ort_status(osv_ort->GetResizedStringTensorElementBuffer(v, b * item + e, n, &dst), err,
                                "warm-up string");
            if (!rc && n)
                memcpy(dst, p, n);
        }
    }
    if (!rc && text && pos != len)
        rc = osv_err_set(err, OSV_EPARSE, "warmup/%s: %zu bytes left after %" PRIu64 " elements", in->file,
                         len - pos, item);
    osv_free(text);
    return rc;
}

/* One sample input: item data once, then repeated for each batch item. */
static int sample_input(const osv_model_t *m, const char *dir, const osv_tc_warmup_t *w, uint32_t i,
                        uint32_t k, OrtValue **out, osv_err_t *err)
{
    const osv_tc_warmup_input_t *in = &w->inputs[i];
    const osv_tensor_info_t *ort = &m->ort_in[m->in_ort[k]];
    int64_t dims[OSV_MAX_DIMS], ort_dims[OSV_MAX_DIMS];
    uint32_t rank = 0, ort_rank = 0;
    uint64_t item, bytes, seed = 0x5eed0000u + i;
    void *data = NULL;
    int rc;
    if (m->max_batch_size > 0)
        dims[rank++] = w->batch_size;
    for (uint32_t d = 0; d < in->rank; d++)
        dims[rank++] = in->dims[d];
    if ((rc = osv_shape_size(in->dims, in->rank, in->dtype, &m->cfg.limits, &item, NULL, err)) != 0 ||
        (rc = osv_shape_size(dims, rank, in->dtype, &m->cfg.limits, NULL, &bytes, err)) != 0 ||
        (rc = osv_model_ort_input_shape(m, k, dims, rank, ort_dims, &ort_rank)) != 0) {
        return rc == OSV_ESHAPE ? osv_err_set(err, rc, "input '%s' does not fit its reshape", in->name)
                                : (osv_err_prefix(err, "input '%s'", in->name), rc);
    }
    if ((rc = new_tensor(m, ort_dims, ort_rank, ort->ort_type, out, &data, err)) != 0)
        return rc;
    if (in->dtype == OSV_DTYPE_BYTES)
        return fill_strings(m, dir, in, *out, item, w->batch_size, err);
    uint64_t item_bytes = item * osv_dtype_size(in->dtype), batch = m->max_batch_size > 0 ? w->batch_size : 1;
    if (in->source == OSV_WARMUP_FILE) {
        char *text;
        size_t len;
        if ((rc = read_sample_file(dir, in->file, item_bytes, item_bytes, &text, &len, err)) != 0)
            return rc;
        memcpy(data, text, item_bytes);
        osv_free(text);
    } else if (in->source == OSV_WARMUP_RANDOM) {
        fill_random(in->dtype, data, item, &seed);
    } else {
        memset(data, 0, item_bytes);
    }
    for (uint64_t b = 1; b < batch; b++)
        memcpy((char *)data + b * item_bytes, data, item_bytes);
    (void)bytes;
    return 0;
}

static int sample_inputs(const osv_model_t *m, const char *dir, const osv_tc_warmup_t *w, warm_in_t *wi,
                         osv_err_t *err)
{
    int rc = warm_alloc(wi, w->n_inputs, err);
    for (uint32_t i = 0; !rc && i < w->n_inputs; i++) {
        int k = osv_model_find_input(m, w->inputs[i].name, strlen(w->inputs[i].name));
        wi->names[i] = m->in_names[k < 0 ? 0 : k]; /* tcomplete.c checked the names */
        rc = sample_input(m, dir, w, i, (uint32_t)(k < 0 ? 0 : k), &wi->v[i], err);
    }
    return rc;
}

/* ---- runs -------------------------------------------------------------------------------------------- */

/* A fixed output shape the model declares may be one example's shape (data-dependent ops keep
 * what the exporter saw). If a warm-up result disagrees, never pre-size that output. */
static void check_declared_shape(osv_model_t *m, uint32_t k, OrtValue *v)
{
    const osv_tensor_info_t *t = &m->ort_out[m->out_ort[k]];
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
        atomic_store_explicit(&m->derive_broken[k], 1, memory_order_relaxed);
}

/* One run on session s; the first run of the load is measured and checks declared shapes. */
static int run_once(osv_model_t *m, OrtSession *s, const warm_in_t *w, bool first, osv_err_t *err)
{
    OrtValue **out = osv_calloc(m->n_out ? m->n_out : 1, sizeof *out);
    uint64_t t0 = osv_now_ns(), rss0 = first ? osv_sysmem_rss() : 0;
    int rc;
    if (!out)
        return osv_err_set(err, OSV_ENOMEM, "out of memory for the warm-up");
    rc = osv_ort_status(
        osv_ort->Run(s, NULL, w->names, (const OrtValue *const *)w->v, w->n, m->out_names, m->n_out, out),
        err, "warm-up run");
    m->warmup_runs += rc == 0;
    if (!rc && first) {
        uint64_t rss1 = osv_sysmem_rss();
        m->warmup_ns = osv_now_ns() - t0;
        m->warmup_bytes = rss0 && rss1 > rss0 ? rss1 - rss0 : 0;
        for (uint32_t k = 0; k < m->n_out; k++)
            check_declared_shape(m, k, out[k]);
    }
    for (uint32_t k = 0; k < m->n_out; k++)
        if (out[k])
            osv_ort->ReleaseValue(out[k]);
    osv_free(out);
    return rc;
}

/* Runs w `times` times on every distinct session. */
static int run_everywhere(osv_model_t *m, const warm_in_t *w, uint32_t times, bool *first, osv_err_t *err)
{
    for (uint32_t i = 0; i < m->n_instances; i++) {
        if (i > 0 && m->sessions[i] == m->sessions[0])
            continue;
        for (uint32_t c = 0; c < times; c++) {
            int rc = run_once(m, m->sessions[i], w, *first, err);
            *first = false;
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int run_samples(osv_model_t *m, const char *dir, osv_err_t *err)
{
    const osv_triton_config_t *c = &m->tc->c;
    bool first = true;
    for (uint32_t s = 0; s < c->n_model_warmup; s++) {
        const osv_tc_warmup_t *w = &c->model_warmup[s];
        warm_in_t wi = {0};
        int rc = sample_inputs(m, dir, w, &wi, err);
        if (!rc)
            rc = run_everywhere(m, &wi, w->count ? w->count : 1, &first, err);
        warm_free(&wi);
        if (rc) {
            char where[4200];
            osv_err_prefix(err, "%smodel_warmup[%u] '%s'",
                           osv_tconfig_where(m->tc, (tc_pos_t){0, 0}, where, sizeof where), s, w->name);
            return rc;
        }
    }
    return 0;
}

int osv_model_warmup_run(osv_model_t *m, const char *config_dir, osv_err_t *err)
{
    warm_in_t wi = {0};
    osv_err_t local;
    bool first = true;
    if (!osv_model_servable(m, NULL))
        return 0; /* refused when the server attaches it */
    if (m->tc->c.n_model_warmup)
        return run_samples(m, config_dir, err);
    if (!m->cfg.warmup)
        return 0;
    if (zero_inputs(m, 0, &wi, &local) != 0 || run_everywhere(m, &wi, 1, &first, &local) != 0)
        m->warmup_error = osv_model_own(m, osv_strdup(local.msg));
    warm_free(&wi);
    return 0;
}

int osv_model_time_batch(osv_model_t *m, uint64_t rows, int reps, uint64_t *best_ns, osv_err_t *err)
{
    OrtValue **out = osv_calloc(m->n_out ? m->n_out : 1, sizeof *out);
    warm_in_t wi = {0};
    uint64_t seed = 0x5eed; /* the same data on every load */
    /* Random values, not zeros: zeros run several times faster than data on some models (the PaddleOCR
     * classifier: 100 against 720 µs a row), which would misplace the curve. */
    int rc = out ? fill_inputs(m, rows, &seed, &wi, err) : osv_err_set(err, OSV_ENOMEM, "out of memory");
    *best_ns = 0;
    for (int k = 0; !rc && k < reps; k++) {
        uint64_t t0 = osv_now_ns();
        rc = osv_ort_status(osv_ort->Run(m->session, NULL, wi.names, (const OrtValue *const *)wi.v, wi.n,
                                         m->out_names, m->n_out, out),
                            err, "timing a batch");
        uint64_t ns = osv_now_ns() - t0;
        if (!rc && (!*best_ns || ns < *best_ns))
            *best_ns = ns;
        for (uint32_t i = 0; i < m->n_out; i++) {
            if (out[i])
                osv_ort->ReleaseValue(out[i]);
            out[i] = NULL;
        }
    }
    warm_free(&wi);
    osv_free(out);
    return rc;
}
