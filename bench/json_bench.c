/* json_bench.c — benchmark of util/json against jansson and cJSON on KServe v2 FP32 requests, and of the
 * float writer against snprintf("%.9g"). Prints a table; not a test.
 *
 * Build: cc -std=c17 -D_GNU_SOURCE -O2 -Isrc bench/json_bench.c src/util/json.c -ljansson -lcjson -lm
 * Run:   ./json_bench [repetitions (default 7, min 5)]
 *
 * malloc calls are counted by interposing malloc/calloc/realloc in this executable (they forward to
 * glibc's __libc_* entry points), which also catches calls made inside libjansson and libcjson. */
#include <cjson/cJSON.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/json.h"

/* ------------------------------------------------------------------------------------------------ */
/* malloc counting                                                                                    */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static unsigned long n_alloc; /* the benchmark is single-threaded */

void *malloc(size_t n)
{
    n_alloc++;
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    n_alloc++;
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    n_alloc++;
    return __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}

/* ------------------------------------------------------------------------------------------------ */
/* Utilities                                                                                          */

static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Uniform in [-1, 1) times 10^[-3, 2]: typical activations/pixels with varied magnitudes. */
static float rnd_float(void)
{
    static const float scale[] = {1e-3f, 1e-2f, 1e-1f, 1.0f, 10.0f, 100.0f};
    return ((float)(rnd() >> 40) / (float)(1 << 23) - 1.0f) * scale[rnd() % 6];
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A KServe v2 request with n random floats printed with %.7g; returns its length. */
static size_t make_request(char *buf, size_t cap, const char *shape, size_t n)
{
    size_t len = (size_t)snprintf(
        buf, cap, "{\"inputs\":[{\"name\":\"x\",\"shape\":%s,\"datatype\":\"FP32\",\"data\":[", shape);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%.7g", i ? "," : "", (double)rnd_float());
    len += (size_t)snprintf(buf + len, cap - len, "]}]}");
    return len;
}

/* ------------------------------------------------------------------------------------------------ */
/* The three request decoders: JSON text -> float tensor. Each returns 0 on success.                  */

static int decode_ours(const char *req, size_t len, float *out, size_t n)
{
    osv_json_tok_t toks[64];
    osv_json_doc_t doc;
    osv_json_err_t err;
    if (osv_json_parse(req, len, toks, 64, NULL, &doc, &err))
        return -1;
    int32_t inputs = osv_json_obj_get(&doc, 0, "inputs", 6);
    int32_t in0 = inputs < 0 ? -1 : osv_json_arr_get(&doc, (uint32_t)inputs, 0);
    if (in0 < 0 ||
        !osv_json_str_eq(&doc, (uint32_t)osv_json_obj_get(&doc, (uint32_t)in0, "datatype", 8), "FP32"))
        return -1;
    int32_t data = osv_json_obj_get(&doc, (uint32_t)in0, "data", 4);
    return data < 0 ? -1 : osv_json_leaves_decode(&doc, (uint32_t)data, OSV_JSON_KIND_F32, out, n, &err);
}

static int decode_jansson(const char *req, size_t len, float *out, size_t n)
{
    json_error_t jerr;
    json_t *root = json_loadb(req, len, 0, &jerr);
    if (!root)
        return -1;
    json_t *in0 = json_array_get(json_object_get(root, "inputs"), 0);
    json_t *data = json_object_get(in0, "data");
    const char *dt = json_string_value(json_object_get(in0, "datatype"));
    int rc = -1;
    if (dt && strcmp(dt, "FP32") == 0 && json_array_size(data) == n) {
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(data, i);
            out[i] = (float)(json_is_real(v) ? json_real_value(v) : (double)json_integer_value(v));
        }
        rc = 0;
    }
    json_decref(root);
    return rc;
}

static int decode_cjson(const char *req, size_t len, float *out, size_t n)
{
    cJSON *root = cJSON_ParseWithLength(req, len);
    if (!root)
        return -1;
    cJSON *in0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "inputs"), 0);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(in0, "data");
    const char *dt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(in0, "datatype"));
    size_t i = 0;
    int rc = -1;
    if (dt && strcmp(dt, "FP32") == 0) {
        const cJSON *v;
        cJSON_ArrayForEach(v, data)
        {
            if (i < n)
                out[i] = (float)v->valuedouble;
            i++;
        }
        rc = i == n ? 0 : -1;
    }
    cJSON_Delete(root);
    return rc;
}

typedef int (*decoder_fn)(const char *, size_t, float *, size_t);

/* ------------------------------------------------------------------------------------------------ */
/* Runs                                                                                               */

/* Median ns per request over reps repetitions of iters requests each; malloc calls of one request;
 * elements differing from strtof (reference) in the decoded tensor. */
static void run_decoder(const char *label, const char *impl, decoder_fn fn, const char *req, size_t len,
                        float *out, const float *ref, size_t n, int reps, int iters)
{
    double t[64];
    if (fn(req, len, out, n) != 0) {
        printf("%-22s %-8s FAILED to decode\n", label, impl);
        return;
    }
    size_t diff = 0;
    for (size_t i = 0; i < n; i++)
        diff += memcmp(&out[i], &ref[i], sizeof(float)) != 0;
    unsigned long a0 = n_alloc;
    fn(req, len, out, n);
    unsigned long allocs = n_alloc - a0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_ns();
        for (int i = 0; i < iters; i++)
            fn(req, len, out, n);
        t[r] = (now_ns() - t0) / iters;
    }
    double med = median(t, reps);
    printf("%-22s %-8s %12.0f %10.1f %14lu %10zu\n", label, impl, med, (double)len / med * 1e3, allocs, diff);
}

static void bench_request(const char *label, const char *shape, size_t n, int reps, int iters)
{
    size_t cap = n * 24 + 256;
    char *req = malloc(cap);
    float *out = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    size_t len = make_request(req, cap, shape, n);
    /* reference: strtof on each printed number */
    const char *p = strstr(req, "\"data\":[") + 8;
    for (size_t i = 0; i < n; i++) {
        char *end;
        ref[i] = strtof(p, &end);
        p = end + 1;
    }
    printf("%-22s (%zu floats, %zu bytes)\n", label, n, len);
    run_decoder(label, "ours", decode_ours, req, len, out, ref, n, reps, iters);
    run_decoder(label, "jansson", decode_jansson, req, len, out, ref, n, reps, iters);
    run_decoder(label, "cJSON", decode_cjson, req, len, out, ref, n, reps, iters);
    free(req);
    free(out);
    free(ref);
}

/* Writer: a JSON array of n floats, ours vs snprintf("%.9g"). */
static size_t write_ours(char *buf, size_t cap, const float *v, size_t n)
{
    osv_jw_t w;
    osv_jw_init(&w, buf, cap);
    osv_jw_f32_array(&w, v, n);
    return osv_jw_len(&w);
}

static size_t write_snprintf(char *buf, size_t cap, const float *v, size_t n)
{
    size_t len = 0;
    buf[len++] = '[';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%.9g", i ? "," : "", (double)v[i]);
    buf[len++] = ']';
    return len;
}

static void bench_writer(size_t n, int reps)
{
    float *v = malloc(n * sizeof(float));
    size_t cap = n * (OSV_JW_MAX_F32_CHARS + 1) + 2;
    char *buf = malloc(cap);
    for (size_t i = 0; i < n; i++)
        v[i] = rnd_float();
    int iters = (int)(2000000 / n);
    struct {
        const char *name;
        size_t (*fn)(char *, size_t, const float *, size_t);
    } impls[] = {{"ours", write_ours}, {"snprintf", write_snprintf}};
    for (int k = 0; k < 2; k++) {
        double t[64];
        size_t len = impls[k].fn(buf, cap, v, n);
        unsigned long a0 = n_alloc;
        impls[k].fn(buf, cap, v, n);
        unsigned long allocs = n_alloc - a0;
        for (int r = 0; r < reps; r++) {
            double t0 = now_ns();
            for (int i = 0; i < iters; i++)
                impls[k].fn(buf, cap, v, n);
            t[r] = (now_ns() - t0) / iters;
        }
        double med = median(t, reps);
        printf("write %4zu floats       %-8s %12.0f %10.1f %14lu %10s  (%.1f ns/float, %zu bytes)\n", n,
               impls[k].name, med, (double)len / med * 1e3, allocs, "-", med / (double)n, len);
    }
    free(v);
    free(buf);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    reps = reps < 5 ? 5 : reps > 64 ? 64 : reps;
    printf("median of %d repetitions; MB/s = request bytes / time; allocs = malloc+calloc+realloc per "
           "request; diff = elements not bit-identical to strtof\n\n",
           reps);
    printf("%-22s %-8s %12s %10s %14s %10s\n", "workload", "impl", "ns/request", "MB/s", "allocs/request",
           "diff");
    bench_request("(a) MLP [1,64]", "[1,64]", 64, reps, 20000);
    bench_request("(b) image [1,3,224,224]", "[1,3,224,224]", 3 * 224 * 224, reps, 5);
    printf("\n");
    bench_writer(10, reps);
    bench_writer(1000, reps);
    return 0;
}
