/* bare_ort.c — the RSS baseline: the smallest program that holds a model in ONNX Runtime and runs it,
 * with ortserve's thread settings (1 intra-op thread, no spinning, sequential execution). Prints its
 * resident memory after loading and after N runs, so the HTTP benchmark can report how much memory the
 * server adds on top of ORT itself.
 *
 *   bare_ort LIBONNXRUNTIME MODEL.onnx RUNS     prints {"rss_loaded_kb":..,"rss_after_runs_kb":..} */
#include <dlfcn.h>
#include <onnxruntime_c_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#define CHECK(x)                                                                                             \
    do {                                                                                                     \
        OrtStatus *st__ = (x);                                                                               \
        if (st__) {                                                                                          \
            fprintf(stderr, "bare_ort: %s\n", api->GetErrorMessage(st__));                                   \
            return 1;                                                                                        \
        }                                                                                                    \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: bare_ort LIBONNXRUNTIME MODEL.onnx RUNS\n");
        return 2;
    }
    void *dl = dlopen(argv[1], RTLD_NOW);
    const OrtApiBase *(*base)(void);
    if (!dl || !(*(void **)&base = dlsym(dl, "OrtGetApiBase"))) {
        fprintf(stderr, "bare_ort: cannot load %s\n", argv[1]);
        return 1;
    }
    const OrtApi *api = base()->GetApi(ORT_API_VERSION);
    OrtEnv *env;
    OrtSessionOptions *so;
    OrtSession *s;
    OrtAllocator *alloc;
    OrtMemoryInfo *mi;
    CHECK(api->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "bare", &env));
    CHECK(api->CreateSessionOptions(&so));
    CHECK(api->SetIntraOpNumThreads(so, 1));
    CHECK(api->SetInterOpNumThreads(so, 1));
    CHECK(api->AddSessionConfigEntry(so, "session.intra_op.allow_spinning", "0"));
    CHECK(api->CreateSession(env, argv[2], so, &s));
    CHECK(api->GetAllocatorWithDefaultOptions(&alloc));
    CHECK(api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mi));
    long loaded = rss_kb();
    char *in_name, *out_name;
    OrtTypeInfo *ti;
    const OrtTensorTypeAndShapeInfo *tsi;
    size_t rank;
    int64_t dims[8];
    CHECK(api->SessionGetInputName(s, 0, alloc, &in_name));
    CHECK(api->SessionGetOutputName(s, 0, alloc, &out_name));
    CHECK(api->SessionGetInputTypeInfo(s, 0, &ti));
    CHECK(api->CastTypeInfoToTensorInfo(ti, &tsi));
    CHECK(api->GetDimensionsCount(tsi, &rank));
    CHECK(api->GetDimensions(tsi, dims, rank));
    size_t count = 1;
    for (size_t i = 0; i < rank; i++) {
        dims[i] = dims[i] < 0 ? 1 : dims[i];
        count *= (size_t)dims[i];
    }
    float *x = calloc(count, sizeof *x);
    OrtValue *in;
    CHECK(api->CreateTensorWithDataAsOrtValue(mi, x, count * sizeof *x, dims, rank,
                                              ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in));
    for (int r = 0; r < atoi(argv[3]); r++) {
        OrtValue *out = NULL;
        CHECK(api->Run(s, NULL, (const char *const *)&in_name, (const OrtValue *const *)&in, 1,
                       (const char *const *)&out_name, 1, &out));
        api->ReleaseValue(out);
    }
    printf("{\"rss_loaded_kb\":%ld,\"rss_after_runs_kb\":%ld}\n", loaded, rss_kb());
    return 0;
}
