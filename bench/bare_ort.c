/* bare_ort.c — the baseline a server is measured against: the smallest program that holds a model in
 * ONNX Runtime and runs it, with ortserve's thread settings (1 intra-op thread, 1 inter-op thread, no
 * spinning, sequential execution). Two modes:
 *
 *   bare_ort LIBONNXRUNTIME MODEL.onnx RUNS [--hold]
 *       prints {"rss_loaded_kb":..,"rss_after_runs_kb":..}: resident memory after loading and after RUNS
 *       runs (and how long CreateSession and the first Run took), so the benchmarks can report how much
 *       memory and start-up time the server adds on top of ORT itself. With --hold it then waits for
 *       EOF on stdin, so the caller can read its /proc/PID/smaps.
 *   bare_ort LIBONNXRUNTIME MODEL.onnx --rate THREADS SECONDS
 *       THREADS threads call Run on the one session back to back for SECONDS (each with its own input,
 *       the output allocated by ORT, as a user would write it) and print
 *       {"threads":..,"runs":..,"runs_per_s":..,"p50_us":..,"p99_us":..}: the in-process limit that
 *       every server figure is compared with (no HTTP, no ortserve code).
 *
 * The model's first input is fed zeros, dynamic dims set to 1; the first output is fetched. */
#include <dlfcn.h>
#include <onnxruntime_c_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static const OrtApi *api;

#define CHECK(x)                                                                                             \
    do {                                                                                                     \
        OrtStatus *st__ = (x);                                                                               \
        if (st__) {                                                                                          \
            fprintf(stderr, "bare_ort: %s\n", api->GetErrorMessage(st__));                                   \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

typedef struct model {
    OrtSession *s;
    OrtMemoryInfo *mi;
    char *in_name, *out_name;
    int64_t dims[8];
    size_t rank, count;
} model_t;

typedef struct worker {
    const model_t *m;
    uint64_t deadline, runs, cap;
    uint64_t *lat; /* per-run ns, the first `cap` runs */
} worker_t;

static void *rate_worker(void *arg)
{
    worker_t *w = arg;
    const model_t *m = w->m;
    float *x = calloc(m->count, sizeof *x);
    OrtValue *in;
    CHECK(api->CreateTensorWithDataAsOrtValue(m->mi, x, m->count * sizeof *x, m->dims, m->rank,
                                              ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in));
    for (uint64_t t0 = now_ns(); t0 < w->deadline; t0 = now_ns()) {
        OrtValue *out = NULL;
        CHECK(api->Run(m->s, NULL, (const char *const *)&m->in_name, (const OrtValue *const *)&in, 1,
                       (const char *const *)&m->out_name, 1, &out));
        api->ReleaseValue(out);
        if (w->runs < w->cap)
            w->lat[w->runs] = now_ns() - t0;
        w->runs++;
    }
    api->ReleaseValue(in);
    free(x);
    return NULL;
}

static int rate(const model_t *m, int threads, double seconds)
{
    worker_t *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    /* Warm-up (untimed): the first Runs allocate ORT's buffers. */
    worker_t warm = {.m = m, .deadline = now_ns() + 200000000ull};
    rate_worker(&warm);
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(seconds * 1e9), total = 0, n = 0;
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){.m = m, .deadline = deadline, .cap = 1u << 20};
        w[i].lat = malloc(w[i].cap * sizeof *w[i].lat);
        pthread_create(&th[i], NULL, rate_worker, &w[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].runs;
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    for (int i = 0; i < threads; i++)
        for (uint64_t k = 0; k < w[i].runs && k < w[i].cap; k++)
            all[n++] = w[i].lat[k];
    qsort(all, n, sizeof *all, cmp_u64);
    printf(
        "{\"threads\":%d,\"runs\":%llu,\"runs_per_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"rss_kb\":%ld}\n",
        threads, (unsigned long long)total, (double)total / elapsed, n ? (double)all[n / 2] / 1e3 : 0,
        n ? (double)all[n * 99 / 100] / 1e3 : 0, rss_kb());
    for (int i = 0; i < threads; i++)
        free(w[i].lat);
    free(all);
    free(w);
    free(th);
    return 0;
}

int main(int argc, char **argv)
{
    int rate_mode = argc == 6 && strcmp(argv[3], "--rate") == 0;
    int hold = argc == 5 && strcmp(argv[4], "--hold") == 0;
    if (argc != 4 && !hold && !rate_mode) {
        fprintf(stderr, "usage: bare_ort LIBONNXRUNTIME MODEL.onnx RUNS [--hold]\n"
                        "       bare_ort LIBONNXRUNTIME MODEL.onnx --rate THREADS SECONDS\n");
        return 2;
    }
    void *dl = dlopen(argv[1], RTLD_NOW);
    const OrtApiBase *(*base)(void);
    if (!dl || !(*(void **)&base = dlsym(dl, "OrtGetApiBase"))) {
        fprintf(stderr, "bare_ort: cannot load %s\n", argv[1]);
        return 1;
    }
    api = base()->GetApi(ORT_API_VERSION);
    if (!api) {
        fprintf(stderr, "bare_ort: %s does not serve C API %d\n", argv[1], ORT_API_VERSION);
        return 1;
    }
    OrtEnv *env;
    OrtSessionOptions *so;
    OrtAllocator *alloc;
    model_t m = {0};
    CHECK(api->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "bare", &env));
    CHECK(api->CreateSessionOptions(&so));
    CHECK(api->SetIntraOpNumThreads(so, 1));
    CHECK(api->SetInterOpNumThreads(so, 1));
    CHECK(api->SetSessionExecutionMode(so, ORT_SEQUENTIAL));
    CHECK(api->AddSessionConfigEntry(so, "session.intra_op.allow_spinning", "0"));
    uint64_t t_load = now_ns();
    CHECK(api->CreateSession(env, argv[2], so, &m.s));
    t_load = now_ns() - t_load;
    CHECK(api->GetAllocatorWithDefaultOptions(&alloc));
    CHECK(api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &m.mi));
    long loaded = rss_kb();
    OrtTypeInfo *ti;
    const OrtTensorTypeAndShapeInfo *tsi;
    CHECK(api->SessionGetInputName(m.s, 0, alloc, &m.in_name));
    CHECK(api->SessionGetOutputName(m.s, 0, alloc, &m.out_name));
    CHECK(api->SessionGetInputTypeInfo(m.s, 0, &ti));
    CHECK(api->CastTypeInfoToTensorInfo(ti, &tsi));
    CHECK(api->GetDimensionsCount(tsi, &m.rank));
    if (m.rank > 8) {
        fprintf(stderr, "bare_ort: input rank %zu > 8\n", m.rank);
        return 1;
    }
    CHECK(api->GetDimensions(tsi, m.dims, m.rank));
    api->ReleaseTypeInfo(ti);
    m.count = 1;
    for (size_t i = 0; i < m.rank; i++) {
        m.dims[i] = m.dims[i] < 0 ? 1 : m.dims[i];
        m.count *= (size_t)m.dims[i];
    }
    if (rate_mode)
        return rate(&m, atoi(argv[4]) > 0 ? atoi(argv[4]) : 1, atof(argv[5]));
    float *x = calloc(m.count, sizeof *x);
    OrtValue *in;
    CHECK(api->CreateTensorWithDataAsOrtValue(m.mi, x, m.count * sizeof *x, m.dims, m.rank,
                                              ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in));
    uint64_t t_first = 0;
    for (int r = 0; r < atoi(argv[3]); r++) {
        OrtValue *out = NULL;
        uint64_t t0 = r == 0 ? now_ns() : 0;
        CHECK(api->Run(m.s, NULL, (const char *const *)&m.in_name, (const OrtValue *const *)&in, 1,
                       (const char *const *)&m.out_name, 1, &out));
        api->ReleaseValue(out);
        if (r == 0)
            t_first = now_ns() - t0;
    }
    printf("{\"rss_loaded_kb\":%ld,\"rss_after_runs_kb\":%ld,\"create_session_ms\":%.2f,\"first_run_ms\":%."
           "2f}\n",
           loaded, rss_kb(), (double)t_load / 1e6, (double)t_first / 1e6);
    fflush(stdout);
    while (hold && getchar() != EOF) {
    }
    return 0;
}
