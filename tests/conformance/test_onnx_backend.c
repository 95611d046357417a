/* test_onnx_backend.c — the ONNX backend test cases of Debian's libonnx-testdata (node, pytorch-converted,
 * pytorch-operator, simple), each run twice: (A) on bare ONNX Runtime (CreateSession, ORT-allocated
 * inputs and outputs) and (B) through ortserve (osv_model_load + osv_infer with every input bound over
 * the decoded 64-byte-aligned buffers). Both are compared with the reference outputs; every case that
 * passes on bare ORT must pass on ortserve. OSV_ONNX_TESTDATA overrides the data directory;
 * OSV_CONFORMANCE_VERBOSE=1 lists every case that does not pass. */
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/model_internal.h"
#include "tensorproto.h"
#include "testutil.h"

#define DEFAULT_TESTDATA "/usr/share/libonnx-testdata/data"
#define MAX_IO           64
#define MAX_SETS         64
#define MSG_MAX          512
#define RTOL             1e-3
#define ATOL             1e-5
#define RTOL_HALF        1e-2

typedef enum verdict { V_PASS = 0, V_SKIP, V_FAIL, V_COUNT } verdict_t;
static const char *const verdict_name[V_COUNT] = {"pass", "skip", "fail"};

typedef struct result {
    verdict_t v;
    char why[MSG_MAX];
} result_t;

/* One test_data_set_N: decoded inputs and reference outputs. */
typedef struct dataset {
    uint32_t n_in, n_out;
    tp_tensor_t in[MAX_IO], out[MAX_IO];
} dataset_t;

/* One case directory; its data is decoded on first use and shared by both paths. */
typedef struct tcase {
    char name[256];
    char dir[2048];
    char model[2100];
    bool decoded;
    int data_rc; /* TP_OK, or the first decode failure */
    char data_msg[MSG_MAX];
    uint32_t n_sets;
    dataset_t *sets;
} tcase_t;

/* Counts per path (0 = bare ORT, 1 = ortserve) and verdict. */
typedef struct tally {
    uint32_t cases;
    uint32_t n[2][V_COUNT];
    uint32_t gaps;     /* bare ORT pass, ortserve not */
    uint32_t bad_data; /* reference files that are malformed or unreadable */
} tally_t;

/* How ortserve bound the tensors of the cases it ran (by copy reason; NONE = zero-copy). */
typedef struct binds {
    uint64_t in[OSV_COPY_REASON_COUNT], out[OSV_COPY_REASON_COUNT];
} binds_t;

static osv_pool_t *pool;
static binds_t binds;
static tally_t totals;
static double total_seconds;

__attribute__((format(printf, 3, 4))) static bool verdict(result_t *r, verdict_t v, const char *fmt, ...)
{
    va_list ap;
    r->v = v;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
    return false;
}

/* Records a failed ORT call as verdict v; true when st is NULL (success). */
static bool ort_ok(OrtStatus *st, result_t *r, verdict_t v, const char *what)
{
    if (!st)
        return true;
    verdict(r, v, "%s: %s", what, osv_ort->GetErrorMessage(st));
    osv_ort->ReleaseStatus(st);
    return false;
}

/* ---- reference data ---------------------------------------------------------------------------- */

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Decodes prefix_0.pb, prefix_1.pb, ... of one data set directory. */
static int decode_files(tcase_t *c, const char *setdir, const char *prefix, tp_tensor_t *t, uint32_t *n)
{
    char path[2400], msg[MSG_MAX];
    int rc;
    for (*n = 0;; (*n)++) {
        snprintf(path, sizeof path, "%s/%s_%u.pb", setdir, prefix, *n);
        if (!file_exists(path))
            return TP_OK;
        if (*n == MAX_IO) {
            snprintf(c->data_msg, sizeof c->data_msg, "more than %d %s files", MAX_IO, prefix);
            return TP_EUNSUPPORTED;
        }
        if ((rc = tp_load(path, &t[*n], msg, sizeof msg)) != TP_OK) {
            snprintf(c->data_msg, sizeof c->data_msg, "%s_%u.pb: %s", prefix, *n, msg);
            return rc;
        }
    }
}

static int decode_case(tcase_t *c)
{
    char setdir[2300];
    if (c->decoded)
        return c->data_rc;
    c->decoded = true;
    for (c->n_sets = 0; c->n_sets < MAX_SETS; c->n_sets++) {
        snprintf(setdir, sizeof setdir, "%s/test_data_set_%u", c->dir, c->n_sets);
        if (!file_exists(setdir))
            break;
    }
    if (c->n_sets == 0) {
        snprintf(c->data_msg, sizeof c->data_msg, "no test_data_set_0");
        return c->data_rc = TP_EUNSUPPORTED;
    }
    if (!(c->sets = calloc(c->n_sets, sizeof *c->sets))) {
        snprintf(c->data_msg, sizeof c->data_msg, "out of memory");
        return c->data_rc = TP_ENOMEM;
    }
    for (uint32_t s = 0; s < c->n_sets && c->data_rc == TP_OK; s++) {
        dataset_t *ds = &c->sets[s];
        snprintf(setdir, sizeof setdir, "%s/test_data_set_%u", c->dir, s);
        c->data_rc = decode_files(c, setdir, "input", ds->in, &ds->n_in);
        if (c->data_rc == TP_OK)
            c->data_rc = decode_files(c, setdir, "output", ds->out, &ds->n_out);
    }
    return c->data_rc;
}

static void free_case(tcase_t *c)
{
    for (uint32_t s = 0; c->sets && s < c->n_sets; s++) {
        for (uint32_t i = 0; i < MAX_IO; i++) {
            tp_free(&c->sets[s].in[i]);
            tp_free(&c->sets[s].out[i]);
        }
    }
    free(c->sets);
    c->sets = NULL;
}

/* Decodes the case's data for a path: external data is a skip, a malformed file a failure. */
static bool case_data(tcase_t *c, result_t *r)
{
    int rc = decode_case(c);
    if (rc == TP_OK)
        return true;
    return verdict(r, rc == TP_EUNSUPPORTED ? V_SKIP : V_FAIL, "test data: %s", c->data_msg);
}

/* Index of the data set tensor feeding model input `name` (position i when the files carry no names),
 * or -1. */
static int data_index(const tp_tensor_t *t, uint32_t n, const char *name, uint32_t i)
{
    for (uint32_t k = 0; k < n; k++)
        if (strcmp(t[k].name, name) == 0)
            return (int)k;
    return i < n && t[i].name[0] == '\0' ? (int)i : -1;
}

/* Model output index for reference output j: by name, else by position. */
static int model_output_index(const char *const *names, uint32_t n, const tp_tensor_t *ref, uint32_t j)
{
    for (uint32_t k = 0; k < n; k++)
        if (strcmp(names[k], ref->name) == 0)
            return (int)k;
    return j < n ? (int)j : -1;
}

/* The data type of reference tensor t for a model tensor of type model_type. ONNX before 1.14 stored
 * bfloat16 test tensors as UINT16 (numpy has no bfloat16): they are read as BFLOAT16 where the model
 * declares BFLOAT16, as ONNX's own backend test runner does. */
static int effective_type(const tp_tensor_t *t, int model_type)
{
    return t->data_type == TP_UINT16 && model_type == TP_BFLOAT16 ? TP_BFLOAT16 : t->data_type;
}

/* Maps every model input to a data set tensor (map) and its effective data type (types); a missing
 * input, or one KServe cannot express, makes the case a skip. */
static bool map_inputs(const dataset_t *ds, const char *const *names, const int *model_types, uint32_t n,
                       int *map, int *types, result_t *r)
{
    for (uint32_t i = 0; i < n; i++) {
        if ((map[i] = data_index(ds->in, ds->n_in, names[i], i)) < 0)
            return verdict(r, V_SKIP, "the data set lacks input '%s'", names[i]);
        types[i] = effective_type(&ds->in[map[i]], model_types[i]);
        if (osv_dtype_from_ort(types[i]) == OSV_DTYPE_INVALID)
            return verdict(r, V_SKIP, "input '%s' is %s", names[i], tp_type_name(types[i]));
    }
    return true;
}

/* ---- comparison ---------------------------------------------------------------------------------- */

/* An output as produced by either path. STRING data is serialized like the reference. */
typedef struct got {
    int type;
    uint32_t rank;
    const int64_t *dims;
    const void *data;
    uint64_t bytes;
} got_t;

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    float f;
    if (e == 0) {
        f = ldexpf((float)m, -24);
        return sign ? -f : f;
    }
    bits = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e + 112) << 23) | (m << 13);
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static bool is_float_type(int type)
{
    return type == TP_FLOAT || type == TP_DOUBLE || type == TP_FLOAT16 || type == TP_BFLOAT16;
}

static double float_at(int type, const void *p, uint64_t i)
{
    uint16_t h;
    switch (type) {
    case TP_FLOAT:
        return ((const float *)p)[i];
    case TP_DOUBLE:
        return ((const double *)p)[i];
    default:
        memcpy(&h, (const uint8_t *)p + 2 * i, 2);
        return type == TP_FLOAT16 ? half_to_float(h) : bf16_to_float(h);
    }
}

/* Formats element i of a fixed-size tensor for messages. */
static const char *elem_str(int type, const void *p, uint64_t i, char *buf, size_t cap)
{
    const uint8_t *b = (const uint8_t *)p + i * tp_elem_size(type);
    int64_t s = 0;
    uint64_t u = 0;
    if (is_float_type(type)) {
        snprintf(buf, cap, "%.9g", float_at(type, p, i));
        return buf;
    }
    switch (type) {
    case TP_INT8:
        s = *(const int8_t *)b;
        break;
    case TP_INT16:
        s = *(const int16_t *)b;
        break;
    case TP_INT32:
        s = *(const int32_t *)b;
        break;
    case TP_INT64:
        s = *(const int64_t *)b;
        break;
    default:
        memcpy(&u, b, tp_elem_size(type));
        snprintf(buf, cap, "%" PRIu64, u);
        return buf;
    }
    snprintf(buf, cap, "%" PRId64, s);
    return buf;
}

static bool close_enough(double a, double b, double rtol)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (a == b)
        return true; /* also equal infinities */
    return fabs(a - b) <= ATOL + rtol * fabs(b);
}

/* Element-wise comparison; g->type is the type both sides are read as. */
static bool compare_fixed(const got_t *g, const tp_tensor_t *want, const char *name, result_t *r)
{
    size_t es = tp_elem_size(g->type);
    double rtol = g->type == TP_FLOAT16 || g->type == TP_BFLOAT16 ? RTOL_HALF : RTOL;
    const uint8_t *gd = g->data, *wd = want->data;
    char a[64], b[64];
    for (uint64_t i = 0; i < want->count; i++) {
        bool ok = is_float_type(g->type)
                      ? close_enough(float_at(g->type, gd, i), float_at(g->type, wd, i), rtol)
                      : memcmp(gd + i * es, wd + i * es, es) == 0;
        if (!ok)
            return verdict(r, V_FAIL, "output '%s' element %" PRIu64 " of %" PRIu64 ": got %s, want %s", name,
                           i, want->count, elem_str(g->type, gd, i, a, sizeof a),
                           elem_str(g->type, wd, i, b, sizeof b));
    }
    return true;
}

/* Both buffers hold `count` serialized strings (u32 length + bytes); reports the first difference. */
static bool compare_strings(const got_t *g, const tp_tensor_t *want, const char *name, result_t *r)
{
    const uint8_t *p = g->data, *q = want->data, *pend = p + g->bytes;
    for (uint64_t i = 0; i < want->count; i++) {
        uint32_t lp, lq;
        if (pend - p < 4)
            return verdict(r, V_FAIL, "output '%s': serialized strings end at element %" PRIu64, name, i);
        memcpy(&lp, p, 4);
        memcpy(&lq, q, 4);
        if ((uint64_t)(pend - p - 4) < lp)
            return verdict(r, V_FAIL, "output '%s': string element %" PRIu64 " overruns", name, i);
        if (lp != lq || memcmp(p + 4, q + 4, lq) != 0)
            return verdict(r, V_FAIL,
                           "output '%s' string %" PRIu64
                           ": got \"%.*s\" (%u bytes), want \"%.*s\" (%u bytes)",
                           name, i, (int)(lp < 40 ? lp : 40), (const char *)p + 4, lp,
                           (int)(lq < 40 ? lq : 40), (const char *)q + 4, lq);
        p += 4 + lp;
        q += 4 + lq;
    }
    if (p != pend)
        return verdict(r, V_FAIL, "output '%s': %td extra serialized bytes", name, pend - p);
    return true;
}

/* Compares an output with reference want, read as want_type (see effective_type). */
static bool compare(const got_t *g, const tp_tensor_t *want, int want_type, const char *name, result_t *r)
{
    char sg[128], sw[128];
    if (g->type != want_type)
        return verdict(r, V_FAIL, "output '%s' is %s, want %s", name, tp_type_name(g->type),
                       tp_type_name(want_type));
    if (g->rank != want->rank || memcmp(g->dims, want->dims, want->rank * sizeof *want->dims) != 0)
        return verdict(r, V_FAIL, "output '%s' has shape %s, want %s", name,
                       osv_shape_str(g->dims, (int32_t)g->rank, sg, sizeof sg),
                       osv_shape_str(want->dims, (int32_t)want->rank, sw, sizeof sw));
    if (want_type == TP_STRING)
        return compare_strings(g, want, name, r);
    if (g->bytes != want->bytes)
        return verdict(r, V_FAIL, "output '%s' has %" PRIu64 " bytes, want %" PRIu64, name, g->bytes,
                       want->bytes);
    return compare_fixed(g, want, name, r);
}

/* ---- path A: bare ONNX Runtime ---------------------------------------------------------------------- */

typedef struct bare {
    OrtSession *session;
    uint32_t n_in, n_out;
    char *in_names[MAX_IO], *out_names[MAX_IO];
    int in_types[MAX_IO], out_types[MAX_IO];
} bare_t;

/* Skips a value that is not a tensor of a KServe datatype; *type receives its element type. */
static bool bare_check_type(OrtTypeInfo *ti, const char *name, int *type, result_t *r)
{
    const OrtApi *api = osv_ort;
    enum ONNXType ot = ONNX_TYPE_UNKNOWN;
    const OrtTensorTypeAndShapeInfo *tsi = NULL;
    ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    if (!ort_ok(api->GetOnnxTypeFromTypeInfo(ti, &ot), r, V_FAIL, "type info"))
        return false;
    if (ot != ONNX_TYPE_TENSOR)
        return verdict(r, V_SKIP, "'%s' is not a tensor (ONNXType %d)", name, (int)ot);
    if (!ort_ok(api->CastTypeInfoToTensorInfo(ti, &tsi), r, V_FAIL, "tensor info") ||
        !ort_ok(api->GetTensorElementType(tsi, &et), r, V_FAIL, "element type"))
        return false;
    if (osv_dtype_from_ort((int)et) == OSV_DTYPE_INVALID)
        return verdict(r, V_SKIP, "'%s' has element type %d, which KServe cannot express", name, (int)et);
    *type = (int)et;
    return true;
}

static bool bare_describe(bare_t *b, bool output, result_t *r)
{
    const OrtApi *api = osv_ort;
    OrtAllocator *a = osv_test_env()->allocator;
    size_t n = 0;
    uint32_t *count = output ? &b->n_out : &b->n_in;
    char **names = output ? b->out_names : b->in_names;
    int *types = output ? b->out_types : b->in_types;
    if (!ort_ok(output ? api->SessionGetOutputCount(b->session, &n)
                       : api->SessionGetInputCount(b->session, &n),
                r, V_FAIL, "I/O count"))
        return false;
    if (n > MAX_IO)
        return verdict(r, V_SKIP, "more than %d inputs or outputs", MAX_IO);
    for (*count = 0; *count < n; (*count)++) {
        OrtTypeInfo *ti = NULL;
        size_t i = *count;
        bool ok;
        if (!ort_ok(output ? api->SessionGetOutputName(b->session, i, a, &names[i])
                           : api->SessionGetInputName(b->session, i, a, &names[i]),
                    r, V_FAIL, "I/O name"))
            return false;
        if (!ort_ok(output ? api->SessionGetOutputTypeInfo(b->session, i, &ti)
                           : api->SessionGetInputTypeInfo(b->session, i, &ti),
                    r, V_FAIL, "I/O type")) {
            (*count)++; /* the name is owned: free it with the others */
            return false;
        }
        ok = bare_check_type(ti, names[i], &types[i], r);
        api->ReleaseTypeInfo(ti);
        if (!ok) {
            (*count)++;
            return false;
        }
    }
    return true;
}

static bool bare_open(const tcase_t *c, bare_t *b, result_t *r)
{
    const OrtApi *api = osv_ort;
    OrtSessionOptions *so = NULL;
    OrtStatus *st;
    memset(b, 0, sizeof *b);
    if (!ort_ok(api->CreateSessionOptions(&so), r, V_FAIL, "session options"))
        return false;
    st = api->SetIntraOpNumThreads(so, 1);
    if (!st)
        st = api->CreateSession(osv_test_env()->env, c->model, so, &b->session);
    api->ReleaseSessionOptions(so);
    if (!ort_ok(st, r, V_SKIP, "ORT cannot load the model"))
        return false;
    return bare_describe(b, false, r) && bare_describe(b, true, r);
}

static void bare_close(bare_t *b)
{
    OrtAllocator *a = osv_test_env()->allocator;
    for (uint32_t i = 0; i < b->n_in; i++)
        a->Free(a, b->in_names[i]);
    for (uint32_t i = 0; i < b->n_out; i++)
        a->Free(a, b->out_names[i]);
    if (b->session)
        osv_ort->ReleaseSession(b->session);
}

/* Fills an ORT string tensor from serialized strings: FillStringTensor over NUL-terminated copies, or
 * element by element when a string holds a NUL byte. */
static OrtStatus *bare_fill_strings(OrtValue *v, const tp_tensor_t *t)
{
    const OrtApi *api = osv_ort;
    const char **ptrs = calloc(t->count ? t->count : 1, sizeof *ptrs);
    char *copy = malloc(t->bytes + 1), *dst = copy;
    const uint8_t *p = t->data;
    bool nul = false;
    OrtStatus *st = NULL;
    for (uint64_t i = 0; ptrs && copy && i < t->count; i++) {
        uint32_t len;
        memcpy(&len, p, 4);
        nul |= memchr(p + 4, '\0', len) != NULL;
        memcpy(dst, p + 4, len);
        dst[len] = '\0';
        ptrs[i] = dst;
        dst += len + 1;
        p += 4 + len;
    }
    if (!ptrs || !copy)
        st = api->CreateStatus(ORT_FAIL, "out of memory");
    else if (!nul && t->count)
        st = api->FillStringTensor(v, ptrs, t->count);
    p = t->data;
    for (uint64_t i = 0; !st && nul && i < t->count; i++) {
        uint32_t len;
        char *buf;
        memcpy(&len, p, 4);
        if (!(st = api->GetResizedStringTensorElementBuffer(v, i, len, &buf)) && len)
            memcpy(buf, p + 4, len);
        p += 4 + len;
    }
    free(ptrs);
    free(copy);
    return st;
}

static OrtStatus *bare_input(const tp_tensor_t *t, int type, OrtValue **out)
{
    const OrtApi *api = osv_ort;
    void *p = NULL;
    OrtStatus *st = api->CreateTensorAsOrtValue(osv_test_env()->allocator, t->dims, t->rank,
                                                (ONNXTensorElementDataType)type, out);
    if (st || type == TP_STRING)
        return st ? st : bare_fill_strings(*out, t);
    if (t->bytes && !(st = api->GetTensorMutableData(*out, &p)))
        memcpy(p, t->data, t->bytes);
    return st;
}

/* Serializes an ORT string tensor like the reference (u32 length + bytes); NULL on failure. */
static uint8_t *bare_strings(const OrtValue *v, uint64_t count, uint64_t *bytes, result_t *r)
{
    const OrtApi *api = osv_ort;
    size_t chars = 0, *offs = calloc(count + 1, sizeof *offs);
    char *s = NULL;
    uint8_t *out = NULL, *p;
    if (offs && ort_ok(api->GetStringTensorDataLength(v, &chars), r, V_FAIL, "string length") &&
        (s = malloc(chars + 1)) != NULL && (out = malloc(chars + 4 * count + 1)) != NULL &&
        (!count ||
         ort_ok(api->GetStringTensorContent(v, s, chars, offs, count), r, V_FAIL, "string content"))) {
        p = out;
        for (uint64_t i = 0; i < count; i++) {
            uint32_t len = (uint32_t)((i + 1 < count ? offs[i + 1] : chars) - offs[i]);
            memcpy(p, &len, 4);
            memcpy(p + 4, s + offs[i], len);
            p += 4 + len;
        }
        *bytes = (uint64_t)(p - out);
    } else {
        if (r->v != V_FAIL)
            verdict(r, V_FAIL, "out of memory reading strings");
        free(out);
        out = NULL;
    }
    free(offs);
    free(s);
    return out;
}

static bool bare_compare(const OrtValue *v, const tp_tensor_t *want, int want_type, const char *name,
                         result_t *r)
{
    const OrtApi *api = osv_ort;
    OrtTensorTypeAndShapeInfo *tsi = NULL;
    ONNXTensorElementDataType et;
    int64_t dims[TP_MAX_DIMS];
    size_t rank = 0, count = 0;
    uint8_t *strings = NULL;
    void *data = NULL;
    got_t g = {.dims = dims};
    bool ok = ort_ok(api->GetTensorTypeAndShape(v, &tsi), r, V_FAIL, "output type") &&
              ort_ok(api->GetTensorElementType(tsi, &et), r, V_FAIL, "output type") &&
              ort_ok(api->GetDimensionsCount(tsi, &rank), r, V_FAIL, "output rank") &&
              (rank <= TP_MAX_DIMS || verdict(r, V_FAIL, "output '%s' has rank %zu", name, rank)) &&
              ort_ok(api->GetDimensions(tsi, dims, rank), r, V_FAIL, "output dims") &&
              ort_ok(api->GetTensorShapeElementCount(tsi, &count), r, V_FAIL, "output count");
    if (tsi)
        api->ReleaseTensorTypeAndShapeInfo(tsi);
    if (!ok)
        return false;
    g.type = (int)et;
    g.rank = (uint32_t)rank;
    if (et == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
        if (!(strings = bare_strings(v, count, &g.bytes, r)))
            return false;
        g.data = strings;
    } else {
        if (count && !ort_ok(api->GetTensorMutableData((OrtValue *)v, &data), r, V_FAIL, "output data"))
            return false;
        g.data = data;
        g.bytes = count * tp_elem_size(g.type);
    }
    ok = compare(&g, want, want_type, name, r);
    free(strings);
    return ok;
}

static bool bare_set(const bare_t *b, const dataset_t *ds, result_t *r)
{
    const OrtApi *api = osv_ort;
    OrtValue *in[MAX_IO] = {0}, *out[MAX_IO] = {0};
    const char *const *in_names = (const char *const *)b->in_names;
    const char *const *out_names = (const char *const *)b->out_names;
    int map[MAX_IO], types[MAX_IO];
    bool ok = map_inputs(ds, in_names, b->in_types, b->n_in, map, types, r);
    for (uint32_t i = 0; ok && i < b->n_in; i++)
        ok = ort_ok(bare_input(&ds->in[map[i]], types[i], &in[i]), r, V_FAIL, "creating an input");
    ok = ok && ort_ok(api->Run(b->session, NULL, in_names, (const OrtValue *const *)in, b->n_in, out_names,
                               b->n_out, out),
                      r, V_FAIL, "Run");
    for (uint32_t j = 0; ok && j < ds->n_out; j++) {
        const tp_tensor_t *want = &ds->out[j];
        int k = model_output_index(out_names, b->n_out, want, j);
        if (k < 0)
            ok = verdict(r, V_FAIL, "reference output %u ('%s') matches no model output", j, want->name);
        else
            ok = bare_compare(out[k], want, effective_type(want, b->out_types[k]), out_names[k], r);
    }
    for (uint32_t i = 0; i < MAX_IO; i++) {
        if (in[i])
            api->ReleaseValue(in[i]);
        if (out[i])
            api->ReleaseValue(out[i]);
    }
    return ok;
}

static void bare_case(tcase_t *c, result_t *r)
{
    bare_t b;
    r->v = V_PASS;
    r->why[0] = '\0';
    if (bare_open(c, &b, r) && case_data(c, r)) {
        for (uint32_t s = 0; s < c->n_sets && bare_set(&b, &c->sets[s], r); s++)
            ;
    }
    bare_close(&b);
}

/* ---- path B: ortserve ------------------------------------------------------------------------------ */

/* Reads requested output k (model output k: every output is requested, in model order). */
static bool osv_compare(osv_infer_t *inf, const osv_model_t *m, uint32_t k, const tp_tensor_t *want,
                        result_t *r)
{
    const osv_tensor_info_t *ti;
    osv_tensor_view_t v;
    osv_err_t err;
    uint8_t *strings = NULL;
    got_t g;
    bool ok;
    if (osv_infer_output_view(inf, k, &v, &err) != 0)
        return verdict(r, V_FAIL, "osv_infer_output_view: %s", err.msg);
    ti = osv_model_output(m, k);
    g = (got_t){
        .type = osv_dtype_to_ort(v.dtype), .rank = v.rank, .dims = v.dims, .data = v.data, .bytes = v.bytes};
    if (v.dtype == OSV_DTYPE_BYTES) {
        if (!(strings = malloc(v.bytes + 1)))
            return verdict(r, V_FAIL, "out of memory");
        if (osv_infer_output_bytes(inf, k, strings, v.bytes, &err) != 0) {
            free(strings);
            return verdict(r, V_FAIL, "osv_infer_output_bytes: %s", err.msg);
        }
        g.data = strings;
    }
    binds.out[v.binding]++;
    ok = compare(&g, want, effective_type(want, ti->ort_type), v.name, r);
    free(strings);
    return ok;
}

static bool osv_fail(result_t *r, const char *what, const osv_err_t *err)
{
    return verdict(r, V_FAIL, "%s: %s (%s)", what, err->msg, osv_err_name(err->code));
}

/* Declares every input over the decoded buffer (bound in place: it is 64-byte aligned). */
static bool osv_inputs(osv_infer_t *inf, const osv_model_t *m, const dataset_t *ds, int *map, result_t *r)
{
    const char *names[MAX_IO];
    int model_types[MAX_IO], types[MAX_IO];
    osv_err_t err;
    uint32_t n = osv_model_input_count(m);
    if (n > MAX_IO)
        return verdict(r, V_SKIP, "more than %d inputs", MAX_IO);
    for (uint32_t i = 0; i < n; i++) {
        names[i] = osv_model_input(m, i)->name;
        model_types[i] = osv_model_input(m, i)->ort_type;
    }
    if (!map_inputs(ds, names, model_types, n, map, types, r))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        const tp_tensor_t *t = &ds->in[map[i]];
        osv_dtype_t dt = osv_dtype_from_ort(types[i]);
        if (osv_infer_add_input(inf, i, dt, t->dims, t->rank, dt == OSV_DTYPE_BYTES ? t->bytes : 0, &err) !=
            0)
            return osv_fail(r, "osv_infer_add_input", &err);
        if (osv_infer_input_external(inf, i, t->data, t->bytes, &err) != 0)
            return osv_fail(r, "osv_infer_input_external", &err);
    }
    return true;
}

/* After the run: every fixed-size input with elements must have been bound in place (ORT read the
 * decoded buffer itself: it is 64-byte aligned, so nothing justifies a copy). */
static bool osv_zero_copy(const osv_infer_t *inf, const osv_model_t *m, const dataset_t *ds, const int *map,
                          result_t *r)
{
    for (uint32_t i = 0; i < osv_model_input_count(m); i++) {
        const tp_tensor_t *t = &ds->in[map[i]];
        if (osv_model_input(m, i)->dtype == OSV_DTYPE_BYTES) {
            binds.in[OSV_COPY_BYTES]++;
            continue;
        }
        if (t->count && osv_infer_bound_input_ptr(inf, i) != t->data)
            return verdict(r, V_FAIL, "input '%s' was not bound in place (first fallback: %s)",
                           osv_model_input(m, i)->name, osv_copy_reason_name(osv_infer_fallback(inf)));
        binds.in[OSV_COPY_NONE]++;
    }
    return true;
}

static bool osv_outputs(osv_infer_t *inf, const osv_model_t *m, const dataset_t *ds, result_t *r)
{
    const char *names[MAX_IO];
    uint32_t n = osv_model_output_count(m);
    if (n > MAX_IO || osv_infer_output_count(inf) != n)
        return verdict(r, V_FAIL, "%u outputs requested of %u", osv_infer_output_count(inf), n);
    for (uint32_t k = 0; k < n; k++)
        names[k] = osv_model_output(m, k)->name;
    for (uint32_t j = 0; j < ds->n_out; j++) {
        int k = model_output_index(names, n, &ds->out[j], j);
        if (k < 0)
            return verdict(r, V_FAIL, "reference output %u ('%s') matches no model output", j,
                           ds->out[j].name);
        if (!osv_compare(inf, m, (uint32_t)k, &ds->out[j], r))
            return false;
    }
    return true;
}

static bool osv_set(osv_model_t *m, const dataset_t *ds, result_t *r)
{
    osv_infer_opts_t o = {.pool = pool};
    size_t size = osv_infer_size(m);
    void *mem = aligned_alloc(64, (size + 63) & ~(size_t)63);
    osv_infer_t *inf = NULL;
    osv_err_t err;
    int map[MAX_IO];
    bool ok;
    if (!mem)
        return verdict(r, V_FAIL, "out of memory");
    ok = osv_infer_init(mem, size, m, &o, &inf, &err) == 0 || osv_fail(r, "osv_infer_init", &err);
    ok = ok && osv_inputs(inf, m, ds, map, r);
    ok = ok && (osv_infer_prepare(inf, &err) == 0 || osv_fail(r, "osv_infer_prepare", &err));
    ok = ok && (osv_infer_run(inf, &err) == 0 || osv_fail(r, "osv_infer_run", &err));
    ok = ok && osv_zero_copy(inf, m, ds, map, r) && osv_outputs(inf, m, ds, r);
    if (inf)
        osv_infer_fini(inf);
    free(mem);
    return ok;
}

static void osv_case(tcase_t *c, result_t *r)
{
    osv_model_t *m = NULL;
    osv_err_t err;
    const char *why = NULL;
    int rc;
    r->v = V_PASS;
    r->why[0] = '\0';
    if ((rc = osv_model_load(osv_test_env(), c->name, 1, c->model, NULL, NULL, &m, &err)) != 0) {
        /* ORT's session creation failed (its status codes map to these): the model does not load. */
        bool ort = rc == OSV_EORT || rc == OSV_EINVAL || rc == OSV_EUNSUPPORTED || rc == OSV_EPARSE;
        verdict(r, ort ? V_SKIP : V_FAIL, "osv_model_load: %s (%s)", err.msg, osv_err_name(rc));
        return;
    }
    if (!osv_model_servable(m, &why))
        verdict(r, V_SKIP, "'%s' is not a tensor of a KServe datatype", why);
    else if (case_data(c, r))
        for (uint32_t s = 0; s < c->n_sets && osv_set(m, &c->sets[s], r); s++)
            ;
    osv_model_release(m);
}

/* ---- driver ---------------------------------------------------------------------------------------- */

static const char *testdata_dir(void)
{
    const char *d = getenv("OSV_ONNX_TESTDATA");
    return d && *d ? d : DEFAULT_TESTDATA;
}

static bool verbose(void)
{
    const char *v = getenv("OSV_CONFORMANCE_VERBOSE");
    return v && *v && strcmp(v, "0") != 0;
}

static int is_case_dir(const struct dirent *e)
{
    return strncmp(e->d_name, "test_", 5) == 0;
}

/* Runs one case on both paths and counts the verdicts, gaps and unreadable reference data. */
static void run_case(const char *folder, const char *dir, const char *name, tally_t *t)
{
    tcase_t c = {0};
    result_t a, b;
    snprintf(c.name, sizeof c.name, "%s", name);
    snprintf(c.dir, sizeof c.dir, "%s/%s", dir, name);
    snprintf(c.model, sizeof c.model, "%s/model.onnx", c.dir);
    bare_case(&c, &a);
    osv_case(&c, &b);
    if (c.decoded && c.data_rc != TP_OK && c.data_rc != TP_EUNSUPPORTED) {
        printf("  BAD DATA %s/%s: %s\n", folder, name, c.data_msg);
        t->bad_data++;
    }
    free_case(&c);
    t->cases++;
    t->n[0][a.v]++;
    t->n[1][b.v]++;
    t->gaps += a.v == V_PASS && b.v != V_PASS;
    if (a.v != b.v)
        printf("  DISAGREE %s/%s: bare ORT %s (%s) | ortserve %s (%s)\n", folder, name, verdict_name[a.v],
               a.why, verdict_name[b.v], b.why);
    else if (verbose() && a.v != V_PASS)
        printf("  %s/%s: %s: %s%s%s\n", folder, name, verdict_name[a.v], a.why,
               strcmp(a.why, b.why) ? " | " : "", strcmp(a.why, b.why) ? b.why : "");
}

static void print_tally(const char *what, const tally_t *t, double seconds)
{
    printf("onnx-backend %s: %u cases: bare ORT pass %u skip %u fail %u | ortserve pass %u skip %u fail %u "
           "(%.1f s)\n",
           what, t->cases, t->n[0][V_PASS], t->n[0][V_SKIP], t->n[0][V_FAIL], t->n[1][V_PASS],
           t->n[1][V_SKIP], t->n[1][V_FAIL], seconds);
    fflush(stdout);
}

/* Runs every case of one folder and checks ortserve passes exactly what bare ORT passes. */
static void run_folder(const char *folder, uint32_t min_cases, uint32_t min_pass)
{
    char dir[1024];
    struct dirent **ents = NULL;
    tally_t t = {0};
    uint64_t t0 = osv_now_ns();
    double secs;
    int n;
    snprintf(dir, sizeof dir, "%s/%s", testdata_dir(), folder);
    if ((n = scandir(dir, &ents, is_case_dir, alphasort)) < 0)
        fail_msg("cannot list %s (install libonnx-testdata or set OSV_ONNX_TESTDATA)", dir);
    for (int i = 0; i < n; i++) {
        run_case(folder, dir, ents[i]->d_name, &t);
        free(ents[i]);
    }
    free(ents);
    secs = (double)(osv_now_ns() - t0) / 1e9;
    print_tally(folder, &t, secs);
    totals.cases += t.cases;
    for (int p = 0; p < 2; p++)
        for (int v = 0; v < V_COUNT; v++)
            totals.n[p][v] += t.n[p][v];
    total_seconds += secs;
    if (t.cases < min_cases || t.n[0][V_PASS] < min_pass)
        fail_msg("%s: %u cases, %u bare ORT passes: expected at least %u and %u (misread test data?)", folder,
                 t.cases, t.n[0][V_PASS], min_cases, min_pass);
    if (t.bad_data)
        fail_msg("%s: %u cases have malformed or unreadable reference files (listed above)", folder,
                 t.bad_data);
    if (t.gaps)
        fail_msg("%s: %u cases pass on bare ORT but not on ortserve (listed above)", folder, t.gaps);
    assert_int_equal(t.n[1][V_PASS], t.n[0][V_PASS]);
}

static void node_cases(void **state)
{
    (void)state;
    run_folder("node", 800, 500);
}

static void pytorch_converted_cases(void **state)
{
    (void)state;
    run_folder("pytorch-converted", 50, 40);
}

static void pytorch_operator_cases(void **state)
{
    (void)state;
    run_folder("pytorch-operator", 20, 15);
}

static void simple_cases(void **state)
{
    (void)state;
    run_folder("simple", 10, 10);
}

/* ---- the decoder itself ------------------------------------------------------------------------------ */

/* A tiny protobuf writer for hand-made TensorProtos. */
typedef struct pb {
    uint8_t b[512];
    size_t n;
} pb_t;

static void pb_varint(pb_t *p, uint64_t v)
{
    do {
        p->b[p->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

static void pb_key(pb_t *p, uint32_t field, int wt)
{
    pb_varint(p, (uint64_t)field << 3 | (uint64_t)wt);
}

static void pb_bytes(pb_t *p, uint32_t field, const void *data, size_t len)
{
    pb_key(p, field, 2);
    pb_varint(p, len);
    memcpy(p->b + p->n, data, len);
    p->n += len;
}

static void pb_f32(pb_t *p, uint32_t field, float f)
{
    pb_key(p, field, 5);
    memcpy(p->b + p->n, &f, 4);
    p->n += 4;
}

static int decode(const pb_t *p, tp_tensor_t *t, char *msg)
{
    return tp_decode(p->b, p->n, t, msg, MSG_MAX);
}

/* [2,2] FLOAT named "x": packed dims and floats, or unpacked ones. */
static void float_tensor(pb_t *p, bool packed)
{
    static const float v[4] = {1.5f, -2, 0, 1e30f};
    memset(p, 0, sizeof *p);
    if (packed) {
        uint8_t dims[] = {2, 2};
        pb_bytes(p, 1, dims, 2);
        pb_bytes(p, 4, v, sizeof v);
    } else {
        pb_key(p, 1, 0);
        pb_varint(p, 2);
        for (int i = 0; i < 4; i++)
            pb_f32(p, 4, v[i]);
        pb_key(p, 1, 0);
        pb_varint(p, 2);
    }
    pb_key(p, 2, 0);
    pb_varint(p, TP_FLOAT);
    pb_bytes(p, 8, "x", 1);
}

static void decoder_reads_packed_and_unpacked(void **state)
{
    pb_t p;
    tp_tensor_t t;
    char msg[MSG_MAX];
    (void)state;
    for (int packed = 0; packed < 2; packed++) {
        float_tensor(&p, packed);
        assert_int_equal(decode(&p, &t, msg), TP_OK);
        assert_string_equal(t.name, "x");
        assert_int_equal(t.data_type, TP_FLOAT);
        assert_int_equal(t.rank, 2);
        assert_int_equal(t.dims[0] * t.dims[1], 4);
        assert_int_equal(t.bytes, 16);
        assert_int_equal((uintptr_t)t.data % 64, 0);
        assert_true(((float *)t.data)[0] == 1.5f && ((float *)t.data)[3] == 1e30f);
        tp_free(&t);
    }
}

static void decoder_reads_narrow_types_and_strings(void **state)
{
    pb_t p = {0};
    tp_tensor_t t;
    char msg[MSG_MAX];
    int64_t raw[2] = {-7, INT64_MAX};
    (void)state;
    pb_key(&p, 1, 0); /* INT8 [2] = {-128, 5} via int32_data (negative: a 10-byte varint) */
    pb_varint(&p, 2);
    pb_key(&p, 2, 0);
    pb_varint(&p, TP_INT8);
    pb_key(&p, 5, 0);
    pb_varint(&p, (uint64_t)(int64_t)-128);
    pb_key(&p, 5, 0);
    pb_varint(&p, 5);
    assert_int_equal(decode(&p, &t, msg), TP_OK);
    assert_int_equal(((int8_t *)t.data)[0], -128);
    assert_int_equal(((int8_t *)t.data)[1], 5);
    assert_string_equal(t.name, "");
    tp_free(&t);

    memset(&p, 0, sizeof p); /* INT64 [2] from raw_data */
    pb_key(&p, 1, 0);
    pb_varint(&p, 2);
    pb_key(&p, 2, 0);
    pb_varint(&p, TP_INT64);
    pb_bytes(&p, 9, raw, sizeof raw);
    assert_int_equal(decode(&p, &t, msg), TP_OK);
    assert_memory_equal(t.data, raw, 16);
    tp_free(&t);

    memset(&p, 0, sizeof p); /* STRING [2] = {"ab", ""} → Triton BYTES */
    pb_key(&p, 1, 0);
    pb_varint(&p, 2);
    pb_key(&p, 2, 0);
    pb_varint(&p, TP_STRING);
    pb_bytes(&p, 6, "ab", 2);
    pb_bytes(&p, 6, "", 0);
    assert_int_equal(decode(&p, &t, msg), TP_OK);
    assert_int_equal(t.bytes, 10);
    assert_memory_equal(t.data, "\2\0\0\0ab\0\0\0\0", 10);
    tp_free(&t);
}

/* Appends one field to a valid [2,2] FLOAT tensor and expects `want`. */
static void expect_with(void (*extra)(pb_t *), int want)
{
    pb_t p;
    tp_tensor_t t;
    char msg[MSG_MAX] = "";
    float_tensor(&p, true);
    extra(&p);
    assert_int_equal(decode(&p, &t, msg), want);
    assert_true(msg[0] != '\0');
    assert_null(t.data);
}

static void add_group(pb_t *p)
{
    pb_key(p, 12, 3);
}
static void add_extra_float(pb_t *p)
{
    pb_f32(p, 4, 1);
}
static void add_raw(pb_t *p)
{
    pb_bytes(p, 9, "0123456789abcdef", 16);
}
static void add_int64_data(pb_t *p)
{
    pb_key(p, 7, 0);
    pb_varint(p, 1);
}
static void add_type_again(pb_t *p)
{
    pb_key(p, 2, 0);
    pb_varint(p, TP_FLOAT);
}
static void add_negative_dim(pb_t *p)
{
    pb_key(p, 1, 0);
    pb_varint(p, (uint64_t)(int64_t)-1);
}
static void add_overlong_varint(pb_t *p)
{
    pb_key(p, 15, 0);
    for (int i = 0; i < 10; i++)
        p->b[p->n++] = 0xff;
    p->b[p->n++] = 0;
}
static void add_overrun(pb_t *p)
{
    pb_key(p, 12, 2);
    pb_varint(p, 100);
}
static void add_location_external(pb_t *p)
{
    pb_key(p, 14, 0);
    pb_varint(p, 1);
}
static void add_bad_packed_float(pb_t *p)
{
    pb_bytes(p, 4, "abc", 3);
}
static void add_unknown_field(pb_t *p)
{
    pb_bytes(p, 12, "documentation", 13);
}

static void decoder_is_strict(void **state)
{
    pb_t p;
    tp_tensor_t t;
    char msg[MSG_MAX];
    (void)state;
    expect_with(add_group, TP_EMALFORMED);
    expect_with(add_extra_float, TP_EMALFORMED); /* 5 values for 4 elements */
    expect_with(add_raw, TP_EMALFORMED);         /* raw_data and float_data */
    expect_with(add_int64_data, TP_EMALFORMED);  /* wrong typed field */
    expect_with(add_type_again, TP_EMALFORMED);
    expect_with(add_negative_dim, TP_EMALFORMED);
    expect_with(add_overlong_varint, TP_EMALFORMED);
    expect_with(add_overrun, TP_EMALFORMED);
    expect_with(add_bad_packed_float, TP_EMALFORMED);
    expect_with(add_location_external, TP_EUNSUPPORTED);
    float_tensor(&p, false);
    add_unknown_field(&p);
    assert_int_equal(decode(&p, &t, msg), TP_OK); /* unknown fields are skipped */
    tp_free(&t);
    /* Every truncation and every single-byte corruption decodes or fails cleanly (run under ASan). */
    float_tensor(&p, true);
    for (size_t n = 0; n < p.n; n++) {
        if (tp_decode(p.b, n, &t, msg, sizeof msg) == TP_OK)
            tp_free(&t);
    }
    for (size_t i = 0; i < p.n; i++) {
        pb_t q = p;
        for (int v = 0; v < 256; v++) {
            q.b[i] = (uint8_t)v;
            if (decode(&q, &t, msg) == TP_OK)
                tp_free(&t);
        }
    }
}

static int setup(void **state)
{
    /* One slot per size class 4 KiB .. 64 MiB: one infer at a time. */
    static const uint32_t counts[] = {1, 1, 1, 1, 1, 1, 1, 1};
    osv_pool_opts_t o = {
        .min_slot = 4096, .max_slot = 64ull << 20, .growth = 4, .counts = counts, .n_counts = 8};
    osv_err_t err;
    (void)state;
    osv_test_env();
    return osv_pool_create(&o, &pool, &err);
}

static int teardown(void **state)
{
    (void)state;
    if (totals.cases) {
        print_tally("total", &totals, total_seconds);
        printf("ortserve bindings: inputs zero-copy %" PRIu64 " bytes %" PRIu64
               " | outputs into the slot %" PRIu64 " ORT-allocated %" PRIu64 " bytes %" PRIu64 "\n",
               binds.in[OSV_COPY_NONE], binds.in[OSV_COPY_BYTES], binds.out[OSV_COPY_NONE],
               binds.out[OSV_COPY_ORT_ALLOCATED], binds.out[OSV_COPY_BYTES]);
    }
    osv_pool_destroy(pool);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decoder_reads_packed_and_unpacked),
        cmocka_unit_test(decoder_reads_narrow_types_and_strings),
        cmocka_unit_test(decoder_is_strict),
        cmocka_unit_test(node_cases),
        cmocka_unit_test(pytorch_converted_cases),
        cmocka_unit_test(pytorch_operator_cases),
        cmocka_unit_test(simple_cases),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
