/* pbtxt_bench.c — what reading a config.pbtxt costs: the protobuf text-format reader (src/util/pbtxt.c)
 * alone, and with Triton's ModelConfig mapping (src/core/tconfig.c), on a typical config (Triton's
 * documentation style, ~1 KB) and on a large one (~1 MiB: hundreds of inputs and outputs, parameters
 * and warm-up samples, comments and escaped strings). Prints the median time per parse over many
 * runs, the throughput, and the memory a parsed document and a mapped config hold. Figures only
 * (docs/BENCHMARKS.md, docs/DESIGN.md); nothing is asserted.
 *
 *   build/release/bench/pbtxt_bench [--runs N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tconfig.h"
#include "ortserve/alloc.h"
#include "util/pbtxt.h"

static const char TYPICAL[] =
    "# the MLP as Triton's documentation writes a batching model\n"
    "name: \"mlp\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 8\n"
    "input [\n  {\n    name: \"x\"\n    data_type: TYPE_FP32\n    dims: [ 64 ]\n  }\n]\n"
    "output [\n  {\n    name: \"probs\"\n    data_type: TYPE_FP32\n    dims: [ 10 ]\n"
    "    label_filename: \"labels.txt\"\n  }\n]\n"
    "version_policy: { latest: { num_versions: 2 } }\n"
    "instance_group [ { count: 2, kind: KIND_CPU } ]\n"
    "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }\n"
    "parameters { key: \"intra_op_thread_count\" value: { string_value: \"1\" } }\n"
    "optimization { graph { level: 1 } }\n"
    "model_warmup [ { name: \"zeros\" batch_size: 1 inputs { key: \"x\" value: { data_type: TYPE_FP32 "
    "dims: [ 64 ] zero_data: true } } } ]\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A config of about `target` bytes: n inputs and outputs, parameters, warm-up samples. */
static char *large_config(size_t target, size_t *len)
{
    size_t cap = target + 4096, n = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    n += (size_t)snprintf(s + n, cap - n, "name: \"large\"\nbackend: \"onnxruntime\"\nmax_batch_size: 16\n");
    for (int i = 0; n + 512 < target; i++) {
        n += (size_t)snprintf(
            s + n, cap - n,
            "# tensor pair %d\ninput { name: \"in_%d\" data_type: TYPE_FP32 dims: [ 3, -1, 224 ] "
            "reshape: { shape: [ 3, -1, 224 ] } optional: false }\n"
            "output < name: 'out_%d', data_type: TYPE_FP16, dims: [ 1000 ], label_filename: "
            "\"labels_%d.txt\" >;\n"
            "parameters { key: \"user_key_%d\" value: { string_value: \"a\\tb\\x41\\101\\u00e9 %d\" } }\n",
            i, i, i, i, i, i);
    }
    *len = n;
    return s;
}

static void bench(const char *label, const char *model, const char *text, size_t len, int runs)
{
    double *t_parse = malloc((size_t)runs * sizeof *t_parse), *t_map = malloc((size_t)runs * sizeof *t_map);
    osv_tconfig_limits_t lim = {1u << 20, 32, 16, 1000};
    osv_pbtxt_limits_t pl;
    osv_pbtxt_doc_t doc;
    osv_pbtxt_err_t perr;
    osv_err_t err;
    size_t doc_bytes = 0, cfg_bytes = 0;
    uint32_t fields = 0;
    osv_pbtxt_limits_default(&pl);
    pl.max_bytes = lim.max_bytes;
    if (!t_parse || !t_map)
        exit(1);
    for (int r = 0; r < runs; r++) {
        double t0 = now_s();
        if (osv_pbtxt_parse(text, len, &pl, &doc, &perr) != 0) {
            fprintf(stderr, "%s: %u:%u %s\n", label, perr.line, perr.col, perr.msg);
            exit(1);
        }
        t_parse[r] = now_s() - t0;
        fields = doc.n;
        doc_bytes = (size_t)doc.cap * sizeof *doc.fields + doc.strings_cap;
        osv_pbtxt_free(&doc);
        osv_tconfig_t *t;
        t0 = now_s();
        if (osv_tconfig_from_text(text, len, "bench/config.pbtxt", model, &lim, &t, &err) != 0) {
            fprintf(stderr, "%s: %s\n", label, err.msg);
            exit(1);
        }
        t_map[r] = now_s() - t0;
        cfg_bytes = t->arena.total;
        osv_tconfig_free(t);
    }
    qsort(t_parse, (size_t)runs, sizeof *t_parse, cmp_double);
    qsort(t_map, (size_t)runs, sizeof *t_map, cmp_double);
    double p = t_parse[runs / 2], m = t_map[runs / 2];
    printf(
        "%-8s %8zu bytes %6u fields  parse p50 %9.1f us (%6.0f MB/s, doc %7zu bytes)  parse+map p50 %9.1f us "
        "(config %7zu bytes)\n",
        label, len, fields, p * 1e6, (double)len / p / 1e6, doc_bytes, m * 1e6, cfg_bytes);
    free(t_parse);
    free(t_map);
}

int main(int argc, char **argv)
{
    int runs = 200;
    size_t len;
    for (int i = 1; i + 1 < argc; i += 2)
        if (strcmp(argv[i], "--runs") == 0)
            runs = atoi(argv[i + 1]) > 0 ? atoi(argv[i + 1]) : runs;
    bench("typical", "mlp", TYPICAL, sizeof TYPICAL - 1, runs * 50);
    char *large = large_config((1u << 20) - 64, &len);
    if (!large)
        return 1;
    bench("large", "large", large, len, runs);
    free(large);
    return 0;
}
