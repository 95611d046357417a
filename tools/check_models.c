/* check_models.c — loads and runs every model tools/gen_models.py writes, through the ONNX
 * Runtime C API, and checks the outputs. A dev tool, not part of ortserve.
 *
 *   gcc -std=c17 -Wall -Wextra -I third_party/onnxruntime/include tools/check_models.c -ldl \
 *       -o /tmp/check_models
 *   /tmp/check_models MODEL_DIR [path/to/libonnxruntime.so.1]
 *
 * ORT's exported symbols are versioned, so the library is dlopen()ed and only OrtGetApiBase is
 * looked up. For each model it prints the I/O signature as ORT reports it (element type, dims,
 * -1 with the symbolic name for free dims), feeds small deterministic inputs, prints a few
 * output values and checks them. Exit status 0 when every check passed. */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "onnxruntime_c_api.h"

#define DEFAULT_ORT_LIB "/work/main/third_party/onnxruntime/lib/libonnxruntime.so.1"
#define MAX_IO          32
#define MAX_DIMS        8
#define SHOW            6 /* output values printed per tensor */

static const OrtApi *ort;
static OrtEnv *env;
static OrtAllocator *alloc;
static const char *model_dir;
static int failures;

/* --- small helpers ------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double absd(double x)
{
    return x < 0 ? -x : x;
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("  FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    failures++;
}

/* Returns true when st is NULL (success); otherwise prints and releases it. */
static bool ort_ok(OrtStatus *st, const char *what)
{
    if (!st)
        return true;
    printf("  FAIL: %s: ORT error %d: %s\n", what, (int)ort->GetErrorCode(st), ort->GetErrorMessage(st));
    ort->ReleaseStatus(st);
    failures++;
    return false;
}

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        if (!ort_ok((expr), #expr))                                                                          \
            exit(1);                                                                                         \
    } while (0)

/* Deterministic pseudo-random floats in [-1, 1) (xorshift32). */
static uint32_t rng_state;
static void rng_seed(uint32_t s)
{
    rng_state = s ? s : 0x9e3779b9u;
}
static float rng_float(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return (float)((double)(x >> 8) / 8388608.0 - 1.0);
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); /* round to nearest even */
}

static float bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

/* IEEE half; enough for the small finite values used here (no NaN/Inf/subnormal inputs). */
static uint16_t f32_to_f16(float f)
{
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t mant = u & 0x7fffffu;
    if (exp <= 0)
        return (uint16_t)sign; /* flush tiny values to ±0 */
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)h;
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {                          /* zero / subnormal */
        float v = (float)mant / 16777216.0f; /* mant * 2^-24 */
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

static const char *elem_name(ONNXTensorElementDataType t)
{
    switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
        return "FP32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
        return "UINT8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
        return "INT8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
        return "UINT16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
        return "INT16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
        return "INT32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
        return "INT64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING:
        return "BYTES";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
        return "BOOL";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
        return "FP16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
        return "FP64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
        return "UINT32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
        return "UINT64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
        return "BF16";
    default:
        return "?";
    }
}

static size_t elem_size(ONNXTensorElementDataType t)
{
    switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
        return 1;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
        return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
        return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
        return 8;
    default:
        return 0; /* strings and exotic types */
    }
}

/* --- models ------------------------------------------------------------------------------- */

typedef struct {
    char name[128];
    ONNXType onnx_type;
    ONNXTensorElementDataType elem;
    size_t ndims;
    int64_t dims[MAX_DIMS];
    char sym[MAX_DIMS][64];
} IoInfo;

typedef struct {
    const char *file;
    OrtSession *sess;
    size_t n_in, n_out;
    IoInfo in[MAX_IO], out[MAX_IO];
    const char *in_names[MAX_IO], *out_names[MAX_IO];
    OrtValue *feeds[MAX_IO];
    OrtValue *outs[MAX_IO];
} Model;

static bool read_io(Model *m, bool input, size_t i, IoInfo *io)
{
    char *name = NULL;
    OrtTypeInfo *ti = NULL;
    OrtStatus *st = input ? ort->SessionGetInputName(m->sess, i, alloc, &name)
                          : ort->SessionGetOutputName(m->sess, i, alloc, &name);
    if (!ort_ok(st, "Session{Input,Output}Name"))
        return false;
    snprintf(io->name, sizeof io->name, "%s", name);
    if (!ort_ok(ort->AllocatorFree(alloc, name), "AllocatorFree"))
        return false;
    st = input ? ort->SessionGetInputTypeInfo(m->sess, i, &ti)
               : ort->SessionGetOutputTypeInfo(m->sess, i, &ti);
    if (!ort_ok(st, "Session{Input,Output}TypeInfo"))
        return false;
    bool ok = ort_ok(ort->GetOnnxTypeFromTypeInfo(ti, &io->onnx_type), "GetOnnxTypeFromTypeInfo");
    const OrtTensorTypeAndShapeInfo *tsi = NULL;
    if (ok && io->onnx_type == ONNX_TYPE_TENSOR)
        ok = ort_ok(ort->CastTypeInfoToTensorInfo(ti, &tsi), "CastTypeInfoToTensorInfo");
    if (ok && tsi) {
        const char *syms[MAX_DIMS] = {0};
        ok = ort_ok(ort->GetTensorElementType(tsi, &io->elem), "GetTensorElementType") &&
             ort_ok(ort->GetDimensionsCount(tsi, &io->ndims), "GetDimensionsCount");
        if (ok && io->ndims > MAX_DIMS) {
            fail("%s: too many dims", io->name);
            ok = false;
        }
        ok = ok && ort_ok(ort->GetDimensions(tsi, io->dims, io->ndims), "GetDimensions") &&
             ort_ok(ort->GetSymbolicDimensions(tsi, syms, io->ndims), "GetSymbolicDimensions");
        for (size_t d = 0; ok && d < io->ndims; d++)
            snprintf(io->sym[d], sizeof io->sym[d], "%s", syms[d] ? syms[d] : "");
    }
    ort->ReleaseTypeInfo(ti);
    return ok;
}

static void print_io(const char *dir, const IoInfo *io)
{
    if (io->onnx_type != ONNX_TYPE_TENSOR) {
        printf("    %s %-10s (non-tensor ONNXType %d)\n", dir, io->name, (int)io->onnx_type);
        return;
    }
    printf("    %s %-10s %-6s [", dir, io->name, elem_name(io->elem));
    for (size_t d = 0; d < io->ndims; d++) {
        printf("%s%" PRId64, d ? ", " : "", io->dims[d]);
        if (io->dims[d] < 0)
            printf(" \"%s\"", io->sym[d]);
    }
    printf("]\n");
}

static bool open_model(Model *m, const char *file)
{
    char path[4096];
    memset(m, 0, sizeof *m);
    m->file = file;
    snprintf(path, sizeof path, "%s/%s", model_dir, file);
    printf("== %s\n", file);
    OrtSessionOptions *so = NULL;
    MUST(ort->CreateSessionOptions(&so));
    double t0 = now_s();
    OrtStatus *st = ort->CreateSession(env, path, so, &m->sess);
    ort->ReleaseSessionOptions(so);
    if (!ort_ok(st, "CreateSession"))
        return false;
    printf("  session created in %.1f ms\n", (now_s() - t0) * 1e3);
    if (!ort_ok(ort->SessionGetInputCount(m->sess, &m->n_in), "SessionGetInputCount") ||
        !ort_ok(ort->SessionGetOutputCount(m->sess, &m->n_out), "SessionGetOutputCount"))
        return false;
    if (m->n_in > MAX_IO || m->n_out > MAX_IO) {
        fail("%s: too many inputs/outputs", file);
        return false;
    }
    for (size_t i = 0; i < m->n_in; i++) {
        if (!read_io(m, true, i, &m->in[i]))
            return false;
        m->in_names[i] = m->in[i].name;
        print_io("in ", &m->in[i]);
    }
    for (size_t i = 0; i < m->n_out; i++) {
        if (!read_io(m, false, i, &m->out[i]))
            return false;
        m->out_names[i] = m->out[i].name;
        print_io("out", &m->out[i]);
    }
    return true;
}

static void release_outputs(Model *m)
{
    for (size_t i = 0; i < m->n_out; i++) {
        if (m->outs[i])
            ort->ReleaseValue(m->outs[i]);
        m->outs[i] = NULL;
    }
}

static void release_feeds(Model *m)
{
    for (size_t i = 0; i < m->n_in; i++) {
        if (m->feeds[i])
            ort->ReleaseValue(m->feeds[i]);
        m->feeds[i] = NULL;
    }
}

static void close_model(Model *m)
{
    release_outputs(m);
    release_feeds(m);
    if (m->sess)
        ort->ReleaseSession(m->sess);
    m->sess = NULL;
}

/* Value of symbolic dim `sym` in a spec like "N=2,B=2,T=3"; "?" names a dim with no name. */
static int64_t dim_value(const char *spec, const char *sym)
{
    const char *want = sym[0] ? sym : "?";
    size_t len = strlen(want);
    for (const char *p = spec; p && *p;) {
        if (strncmp(p, want, len) == 0 && p[len] == '=')
            return strtoll(p + len + 1, NULL, 10);
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return 2;
}

enum { FILL_RANDOM, FILL_ONES };

static const char *const sample_strings[] = {"hello",    "",  "ünïcödé ✓",
                                             "a,b;c\"d", "x", "long string with spaces"};

/* Creates one tensor per model input, shaped by `spec`, filled deterministically. */
static bool make_feeds(Model *m, const char *spec, int fill)
{
    release_feeds(m);
    for (size_t i = 0; i < m->n_in; i++) {
        const IoInfo *io = &m->in[i];
        int64_t shape[MAX_DIMS];
        size_t n = 1;
        for (size_t d = 0; d < io->ndims; d++) {
            shape[d] = io->dims[d] >= 0 ? io->dims[d] : dim_value(spec, io->sym[d]);
            n *= (size_t)shape[d];
        }
        if (!ort_ok(ort->CreateTensorAsOrtValue(alloc, shape, io->ndims, io->elem, &m->feeds[i]),
                    "CreateTensorAsOrtValue"))
            return false;
        rng_seed(0x1234u + (uint32_t)i * 7919u);
        if (io->elem == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
            const char **s = malloc((n ? n : 1) * sizeof *s);
            for (size_t k = 0; k < n; k++)
                s[k] = sample_strings[k % (sizeof sample_strings / sizeof *sample_strings)];
            bool ok = ort_ok(ort->FillStringTensor(m->feeds[i], s, n), "FillStringTensor");
            free(s);
            if (!ok)
                return false;
            continue;
        }
        void *p = NULL;
        if (!ort_ok(ort->GetTensorMutableData(m->feeds[i], &p), "GetTensorMutableData"))
            return false;
        for (size_t k = 0; k < n; k++) {
            float f = fill == FILL_ONES ? 1.0f : rng_float();
            int64_t v = fill == FILL_ONES ? 1 : (int64_t)(k % 7) - 3; /* -3..3 */
            switch (io->elem) {
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
                ((float *)p)[k] = f;
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
                ((double *)p)[k] = (double)f;
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
                ((uint16_t *)p)[k] = f32_to_f16(f);
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
                ((uint16_t *)p)[k] = f32_to_bf16(f);
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
                ((bool *)p)[k] = v > 0;
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
                ((uint8_t *)p)[k] = (uint8_t)(250 + k);
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
                ((int8_t *)p)[k] = (int8_t)(v * 40);
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
                ((uint16_t *)p)[k] = (uint16_t)(65533 + k);
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
                ((int16_t *)p)[k] = (int16_t)(v * 10000);
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
                ((uint32_t *)p)[k] = (uint32_t)(4294967293u + k);
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
                ((int32_t *)p)[k] = (int32_t)(v * 700000000);
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
                ((uint64_t *)p)[k] = UINT64_MAX - 2 + k;
                break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
                ((int64_t *)p)[k] = v * INT64_C(3000000000000000000);
                break;
            default:
                fail("%s: cannot fill this element type", io->name);
                return false;
            }
        }
    }
    return true;
}

static void *feed_data(Model *m, const char *name)
{
    for (size_t i = 0; i < m->n_in; i++) {
        void *p = NULL;
        if (strcmp(m->in_names[i], name) == 0 &&
            ort_ok(ort->GetTensorMutableData(m->feeds[i], &p), "GetTensorMutableData"))
            return p;
    }
    fprintf(stderr, "check_models: %s: no input %s\n", m->file, name);
    exit(1);
}

static size_t find_out(const Model *m, const char *name)
{
    for (size_t i = 0; i < m->n_out; i++)
        if (strcmp(m->out_names[i], name) == 0)
            return i;
    fprintf(stderr, "check_models: %s: no output %s\n", m->file, name);
    exit(1);
}

/* Runs the model on its feeds; returns ORT's status (NULL on success) for the caller to judge. */
static OrtStatus *run(Model *m, const OrtRunOptions *ro, double *secs)
{
    release_outputs(m);
    double t0 = now_s();
    OrtStatus *st = ort->Run(m->sess, ro, m->in_names, (const OrtValue *const *)m->feeds, m->n_in,
                             m->out_names, m->n_out, m->outs);
    if (secs)
        *secs = now_s() - t0;
    return st;
}

static bool run_ok(Model *m, double *secs)
{
    return ort_ok(run(m, NULL, secs), "Run");
}

/* Shape and element count of a tensor value. */
static size_t value_shape(const OrtValue *v, ONNXTensorElementDataType *elem, int64_t *dims, size_t *ndims)
{
    OrtTensorTypeAndShapeInfo *info = NULL;
    size_t n = 0;
    *ndims = 0;
    if (!ort_ok(ort->GetTensorTypeAndShape(v, &info), "GetTensorTypeAndShape"))
        return 0;
    if (ort_ok(ort->GetTensorElementType(info, elem), "GetTensorElementType") &&
        ort_ok(ort->GetDimensionsCount(info, ndims), "GetDimensionsCount") && *ndims <= MAX_DIMS &&
        ort_ok(ort->GetDimensions(info, dims, *ndims), "GetDimensions"))
        ort_ok(ort->GetTensorShapeElementCount(info, &n), "GetTensorShapeElementCount");
    ort->ReleaseTensorTypeAndShapeInfo(info);
    return n;
}

static void print_elem(const OrtValue *v, ONNXTensorElementDataType t, const void *p, size_t k)
{
    switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
        printf("%.6g", (double)((const float *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
        printf("%.9g", ((const double *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
        printf("%.5g", (double)f16_to_f32(((const uint16_t *)p)[k]));
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
        printf("%.4g", (double)bf16_to_f32(((const uint16_t *)p)[k]));
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
        printf("%s", ((const bool *)p)[k] ? "true" : "false");
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
        printf("%u", (unsigned)((const uint8_t *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
        printf("%d", (int)((const int8_t *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
        printf("%u", (unsigned)((const uint16_t *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
        printf("%d", (int)((const int16_t *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
        printf("%" PRIu32, ((const uint32_t *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
        printf("%" PRId32, ((const int32_t *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
        printf("%" PRIu64, ((const uint64_t *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
        printf("%" PRId64, ((const int64_t *)p)[k]);
        break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: {
        size_t len = 0;
        if (!ort_ok(ort->GetStringTensorElementLength(v, k, &len), "GetStringTensorElementLength"))
            return;
        char *s = malloc(len + 1);
        if (ort_ok(ort->GetStringTensorElement(v, len, k, s), "GetStringTensorElement"))
            printf("\"%.*s\"", (int)len, s);
        free(s);
        break;
    }
    default:
        printf("?");
    }
}

static void print_value(const char *name, const OrtValue *v)
{
    ONNXTensorElementDataType t;
    int64_t dims[MAX_DIMS];
    size_t nd, n = value_shape(v, &t, dims, &nd);
    void *p = NULL;
    printf("    %-10s %-6s [", name, elem_name(t));
    for (size_t d = 0; d < nd; d++)
        printf("%s%" PRId64, d ? "," : "", dims[d]);
    printf("] =");
    if (t != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING &&
        !ort_ok(ort->GetTensorMutableData((OrtValue *)v, &p), "GetTensorMutableData"))
        return;
    for (size_t k = 0; k < n && k < SHOW; k++) {
        printf(" ");
        print_elem(v, t, p, k);
    }
    printf("%s\n", n > SHOW ? " ..." : "");
}

static void print_outputs(const Model *m)
{
    for (size_t i = 0; i < m->n_out; i++)
        print_value(m->out_names[i], m->outs[i]);
}

static const float *out_f32(Model *m, const char *name, size_t *n)
{
    size_t i = find_out(m, name);
    ONNXTensorElementDataType t;
    int64_t dims[MAX_DIMS];
    size_t nd;
    void *p = NULL;
    *n = value_shape(m->outs[i], &t, dims, &nd);
    if (t != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
        !ort_ok(ort->GetTensorMutableData(m->outs[i], &p), "GetTensorMutableData")) {
        fail("%s is not a readable FP32 tensor", name);
        *n = 0;
        return NULL;
    }
    return p;
}

/* Checks each row of a softmax output sums to 1; returns the largest probability. */
static float check_softmax(const float *p, size_t rows, size_t cols, const char *what)
{
    float maxp = 0;
    for (size_t r = 0; r < rows; r++) {
        double s = 0;
        for (size_t c = 0; c < cols; c++) {
            s += p[r * cols + c];
            if (p[r * cols + c] > maxp)
                maxp = p[r * cols + c];
        }
        if (absd(s - 1.0) > 1e-4)
            fail("%s: softmax row does not sum to 1", what);
    }
    return maxp;
}

/* --- per-model checks --------------------------------------------------------------------- */

static void check_mlp(void)
{
    Model m;
    if (open_model(&m, "mlp.onnx") && make_feeds(&m, "N=2", FILL_ONES) && run_ok(&m, NULL)) {
        printf("  x = all ones, N=2:\n");
        print_outputs(&m);
        size_t n;
        const float *p = out_f32(&m, "probs", &n);
        if (p && n == 20) {
            check_softmax(p, 2, 10, "mlp probs");
            printf("  probs[0][0..2] = %.6f %.6f %.6f\n", (double)p[0], (double)p[1], (double)p[2]);
            if (memcmp(p, p + 10, 10 * sizeof *p) != 0)
                fail("%s: identical rows gave different outputs", "mlp");
        } else if (p)
            fail("%s: wrong output size", "mlp probs");
    }
    close_model(&m);
}

static bool string_eq(const OrtValue *a, const OrtValue *b, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        size_t la = 0, lb = 0;
        if (!ort_ok(ort->GetStringTensorElementLength(a, k, &la), "GetStringTensorElementLength") ||
            !ort_ok(ort->GetStringTensorElementLength(b, k, &lb), "GetStringTensorElementLength"))
            return false;
        if (la != lb)
            return false;
        char *sa = malloc(la + 1), *sb = malloc(lb + 1);
        bool eq = ort_ok(ort->GetStringTensorElement(a, la, k, sa), "GetStringTensorElement") &&
                  ort_ok(ort->GetStringTensorElement(b, lb, k, sb), "GetStringTensorElement") &&
                  memcmp(sa, sb, la) == 0;
        free(sa);
        free(sb);
        if (!eq)
            return false;
    }
    return true;
}

static void check_identity(void)
{
    Model m;
    if (open_model(&m, "identity.onnx") && make_feeds(&m, "N=5", FILL_RANDOM) && run_ok(&m, NULL)) {
        printf("  N=5:\n");
        print_outputs(&m);
        int ok = 0;
        for (size_t i = 0; i < m.n_in; i++) {
            char want[140];
            snprintf(want, sizeof want, "out_%s", m.in_names[i] + 3);
            size_t o = find_out(&m, want);
            ONNXTensorElementDataType ti, to;
            int64_t di[MAX_DIMS], dout[MAX_DIMS];
            size_t ndi, ndo, ni = value_shape(m.feeds[i], &ti, di, &ndi),
                             no = value_shape(m.outs[o], &to, dout, &ndo);
            bool eq = ti == to && ni == no && ndi == ndo && memcmp(di, dout, ndi * sizeof *di) == 0;
            if (eq && ti == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
                eq = string_eq(m.feeds[i], m.outs[o], ni);
            } else if (eq) {
                void *a = NULL, *b = NULL;
                eq = ort_ok(ort->GetTensorMutableData(m.feeds[i], &a), "GetTensorMutableData") &&
                     ort_ok(ort->GetTensorMutableData(m.outs[o], &b), "GetTensorMutableData") &&
                     memcmp(a, b, ni * elem_size(ti)) == 0;
            }
            if (eq)
                ok++;
            else
                fail("identity: %s differs from its input", want);
        }
        printf("  identity round trip exact for %d/%zu types\n", ok, m.n_in);
    }
    close_model(&m);
}

static void check_dynamic(void)
{
    Model m;
    if (open_model(&m, "dynamic.onnx") && make_feeds(&m, "B=2,T=3", FILL_RANDOM) && run_ok(&m, NULL)) {
        printf("  B=2, T=3:\n");
        print_value("a", m.feeds[0]);
        print_value("b", m.feeds[1]);
        print_outputs(&m);
        const float *a = feed_data(&m, "a"), *b = feed_data(&m, "b");
        size_t n, pos = 0;
        const float *s = out_f32(&m, "sum", &n);
        for (size_t k = 0; s && k < n; k++) {
            if (s[k] != a[k] + b[k])
                fail("%s: sum != a + b", "dynamic");
            pos += a[k] > 0;
        }
        ONNXTensorElementDataType t;
        int64_t dims[MAX_DIMS];
        size_t nd;
        value_shape(m.outs[find_out(&m, "nz")], &t, dims, &nd);
        if (t != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || nd != 2 || dims[0] != 2 || dims[1] != (int64_t)pos)
            fail("%s: nz has the wrong type or shape", "dynamic");
        else
            printf("  nz is [2,%zu] as expected (%zu positive elements in a)\n", pos, pos);
    }
    close_model(&m);
}

static void check_scale2x(void)
{
    Model m;
    if (open_model(&m, "scale2x.onnx") && make_feeds(&m, "N=4", FILL_RANDOM) && run_ok(&m, NULL)) {
        printf("  N=4:\n");
        print_value("x", m.feeds[0]);
        print_outputs(&m);
        const float *x = feed_data(&m, "x");
        size_t n;
        const float *y = out_f32(&m, "y", &n);
        for (size_t k = 0; y && k < n; k++)
            if (y[k] != 2 * x[k])
                fail("%s: y != 2x", "scale2x");
    }
    close_model(&m);
}

static void check_sum(void)
{
    Model m;
    if (open_model(&m, "sum.onnx") && make_feeds(&m, "N=5", FILL_RANDOM) && run_ok(&m, NULL)) {
        printf("  N=5:\n");
        print_value("x", m.feeds[0]);
        print_outputs(&m);
        const float *x = feed_data(&m, "x");
        double want = 0;
        for (size_t k = 0; k < 5; k++)
            want += x[k];
        size_t n;
        const float *s = out_f32(&m, "s", &n);
        if (!s || n != 1 || absd(s[0] - want) > 1e-5)
            fail("%s: s != sum(x)", "sum");
    }
    close_model(&m);
}

static void label_of(size_t idx, char *buf, size_t len)
{
    char path[4096], line[256];
    snprintf(path, sizeof path, "%s/mobilenetv2.labels.txt", model_dir);
    snprintf(buf, len, "(no labels file)");
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    for (size_t i = 0; fgets(line, sizeof line, f); i++) {
        if (i == idx) {
            line[strcspn(line, "\r\n")] = 0;
            snprintf(buf, len, "%s", line);
            break;
        }
    }
    fclose(f);
}

static void check_mobilenetv2(void)
{
    Model m;
    double t;
    if (!open_model(&m, "mobilenetv2.onnx") || !make_feeds(&m, "N=1", FILL_RANDOM) || !run_ok(&m, &t)) {
        close_model(&m);
        return;
    }
    printf("  N=1, input uniform in [-1,1): first run %.1f ms\n", t * 1e3);
    double best = 1e9, sum = 0;
    enum { REPS = 10 };
    for (int r = 0; r < REPS; r++) {
        if (!run_ok(&m, &t))
            break;
        sum += t;
        if (t < best)
            best = t;
    }
    printf("  batch 1: min %.1f ms, mean %.1f ms over %d runs\n", best * 1e3, sum / REPS * 1e3, REPS);
    print_outputs(&m);
    size_t n;
    const float *p = out_f32(&m, "probs", &n);
    if (p && n == 1000) {
        size_t arg = 0;
        float minp = 1;
        for (size_t k = 0; k < n; k++) {
            if (p[k] > p[arg])
                arg = k;
            if (p[k] < minp)
                minp = p[k];
        }
        float maxp = check_softmax(p, 1, 1000, "mobilenetv2 probs");
        char label[256];
        label_of(arg, label, sizeof label);
        printf("  top-1: %zu \"%s\" p=%.4f (min p=%.2e)\n", arg, label, (double)maxp, (double)minp);
        if (maxp < 0.002f || maxp > 0.9f)
            fail("%s: max prob outside [0.002, 0.9]", "mobilenetv2");
    }
    /* Batch 3 of different images: noise, all zeros, a horizontal ramp from -2 to 2. The
     * generator calibrated the classifier so that these get different top-1 classes. */
    if (make_feeds(&m, "N=3", FILL_RANDOM)) {
        enum { IMG = 3 * 224 * 224 };
        float *in = feed_data(&m, "input");
        for (size_t k = 0; k < IMG; k++) {
            in[IMG + k] = 0.0f;
            in[2 * IMG + k] = (float)(k % 224) * (4.0f / 223.0f) - 2.0f;
        }
    }
    if (run_ok(&m, &t) && run_ok(&m, &t)) {
        printf("  batch 3 (noise, zeros, ramp): %.1f ms (second run)\n", t * 1e3);
        p = out_f32(&m, "probs", &n);
        if (p && n == 3000) {
            size_t top[3];
            check_softmax(p, 3, 1000, "mobilenetv2 batch 3");
            for (size_t r = 0; r < 3; r++) {
                top[r] = 0;
                for (size_t k = 0; k < 1000; k++)
                    if (p[r * 1000 + k] > p[r * 1000 + top[r]])
                        top[r] = k;
                printf("  row %zu: top-1 %zu p=%.4f; p[0..2] = %.3g %.3g %.3g\n", r, top[r],
                       (double)p[r * 1000 + top[r]], (double)p[r * 1000], (double)p[r * 1000 + 1],
                       (double)p[r * 1000 + 2]);
            }
            if (top[0] == top[1] && top[1] == top[2])
                fail("%s: same top-1 for very different images", "mobilenetv2");
        }
    }
    close_model(&m);
}

typedef struct {
    Model *m;
    OrtRunOptions *ro;
    OrtStatus *st;
    double secs;
} RunArgs;

static void *run_thread(void *arg)
{
    RunArgs *a = arg;
    a->st = run(a->m, a->ro, &a->secs);
    return NULL;
}

static void check_slow(void)
{
    Model m;
    double t;
    if (!open_model(&m, "slow.onnx") || !make_feeds(&m, "", FILL_RANDOM)) {
        close_model(&m);
        return;
    }
    int64_t *iters = feed_data(&m, "iters");
    *iters = 3;
    if (run_ok(&m, &t)) {
        printf("  iters=3 (%.2f ms):\n", t * 1e3);
        print_outputs(&m);
    }
    *iters = 20000;
    if (run_ok(&m, &t))
        printf("  iters=20000: %.1f ms (%.2f us per iteration)\n", t * 1e3, t * 1e6 / 20000);

    /* Cancellation: an effectively endless run, terminated from this thread after 200 ms. */
    *iters = INT64_C(1) << 40;
    RunArgs a = {&m, NULL, NULL, 0};
    MUST(ort->CreateRunOptions(&a.ro));
    pthread_t th;
    if (pthread_create(&th, NULL, run_thread, &a) != 0) {
        fail("%s: pthread_create failed", "slow");
    } else {
        sleep_ms(200);
        double t_term = now_s();
        MUST(ort->RunOptionsSetTerminate(a.ro));
        pthread_join(th, NULL);
        double lag = now_s() - t_term;
        if (!a.st) {
            fail("%s: terminated run reported success", "slow");
        } else {
            printf("  terminate after 200 ms: Run returned %.2f ms later, total %.1f ms, ORT error %d: %s\n",
                   lag * 1e3, a.secs * 1e3, (int)ort->GetErrorCode(a.st), ort->GetErrorMessage(a.st));
            ort->ReleaseStatus(a.st);
            if (lag > 0.1)
                fail("%s: terminate took more than 100 ms to take effect", "slow");
        }
    }
    ort->ReleaseRunOptions(a.ro);
    close_model(&m);
}

static void check_fail(void)
{
    Model m;
    if (!open_model(&m, "fail.onnx") || !make_feeds(&m, "N=6", FILL_RANDOM)) {
        close_model(&m);
        return;
    }
    int64_t *shape = feed_data(&m, "shape");
    shape[0] = 6;
    if (run_ok(&m, NULL)) {
        printf("  N=6, shape=[6] succeeded:\n");
        print_outputs(&m);
    }
    shape[0] = 4;
    OrtStatus *st = run(&m, NULL, NULL);
    if (!st) {
        fail("%s: shape=[4] for N=6 unexpectedly succeeded", "fail");
    } else {
        printf("  N=6, shape=[4] failed as intended: ORT error %d: %s\n", (int)ort->GetErrorCode(st),
               ort->GetErrorMessage(st));
        ort->ReleaseStatus(st);
    }
    close_model(&m);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL_DIR [libonnxruntime.so.1]\n", argv[0]);
        return 2;
    }
    model_dir = argv[1];
    const char *lib = argc > 2 ? argv[2] : DEFAULT_ORT_LIB;
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "check_models: dlopen: %s\n", dlerror());
        return 1;
    }
    const OrtApiBase *(*get_base)(void) = NULL;
    *(void **)&get_base = dlsym(h, "OrtGetApiBase"); /* POSIX-sanctioned object->function cast */
    if (!get_base) {
        fprintf(stderr, "check_models: dlsym OrtGetApiBase: %s\n", dlerror());
        return 1;
    }
    const OrtApiBase *base = get_base();
    ort = base->GetApi(ORT_API_VERSION);
    if (!ort) {
        fprintf(stderr, "check_models: ORT %s does not provide API version %d\n", base->GetVersionString(),
                ORT_API_VERSION);
        return 1;
    }
    printf("ONNX Runtime %s (C API %d) from %s\n", base->GetVersionString(), ORT_API_VERSION, lib);
    MUST(ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "check_models", &env));
    MUST(ort->GetAllocatorWithDefaultOptions(&alloc));

    check_mlp();
    check_identity();
    check_dynamic();
    check_scale2x();
    check_sum();
    check_mobilenetv2();
    check_slow();
    check_fail();

    ort->ReleaseEnv(env);
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
    return failures ? 1 : 0;
}
