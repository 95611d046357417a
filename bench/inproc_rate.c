/* inproc_rate.c — the in-process limit: T threads run one model back to back through ortserve's core
 * for S seconds (no HTTP), printing runs/s and latency percentiles. The HTTP benchmark divides the
 * server's throughput by this figure at equal concurrency.
 *
 *   inproc_rate MODEL.onnx THREADS SECONDS [DIM0 DIM1 ...]   (shape of the single input; default:
 *                                                              the model's, dynamic dims = 1)
 * Prints one line of JSON. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ortserve.h"

typedef struct worker {
    osv_model_t *m;
    osv_pool_t *pool;
    const int64_t *dims;
    uint32_t rank;
    uint64_t deadline;
    uint64_t runs;
    uint64_t *lat; /* per-run ns, up to cap */
    size_t cap;
    int failed;
} worker_t;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void *work(void *arg)
{
    worker_t *w = arg;
    const osv_tensor_info_t *t = osv_model_input(w->m, 0);
    uint64_t count = 1;
    for (uint32_t i = 0; i < w->rank; i++)
        count *= (uint64_t)w->dims[i];
    size_t bytes = count * osv_dtype_size(t->dtype), size = osv_infer_size(w->m);
    void *data = aligned_alloc(64, (bytes + 63) & ~(size_t)63),
         *mem = aligned_alloc(64, (size + 63) & ~(size_t)63);
    memset(data, 0, bytes);
    while (osv_now_ns() < w->deadline) {
        osv_infer_opts_t o = {.pool = w->pool};
        osv_infer_t *inf;
        osv_err_t err;
        uint64_t t0 = osv_now_ns();
        if (osv_infer_init(mem, size, w->m, &o, &inf, &err) ||
            osv_infer_add_input(inf, 0, t->dtype, w->dims, w->rank, 0, &err) ||
            osv_infer_input_external(inf, 0, data, bytes, &err) || osv_infer_prepare(inf, &err) ||
            osv_infer_run(inf, &err)) {
            fprintf(stderr, "inproc_rate: %s\n", err.msg);
            w->failed = 1;
            break;
        }
        osv_infer_fini(inf);
        if (w->runs < w->cap)
            w->lat[w->runs] = osv_now_ns() - t0;
        w->runs++;
    }
    free(data);
    free(mem);
    return NULL;
}

int main(int argc, char **argv)
{
    osv_env_t *env;
    osv_model_t *m;
    osv_pool_t *pool;
    osv_pool_opts_t po = {.total_bytes = 256ull << 20};
    osv_err_t err;
    int64_t dims[OSV_MAX_DIMS];
    uint32_t rank = 0;
    if (argc < 4) {
        fprintf(stderr, "usage: inproc_rate MODEL.onnx THREADS SECONDS [DIMS...]\n");
        return 2;
    }
    int threads = atoi(argv[2]);
    double seconds = atof(argv[3]);
    if (osv_env_create(NULL, &env, &err) || osv_model_load(env, "m", 1, argv[1], NULL, NULL, &m, &err) ||
        osv_pool_create(&po, &pool, &err)) {
        fprintf(stderr, "inproc_rate: %s\n", err.msg);
        return 1;
    }
    const osv_tensor_info_t *t = osv_model_input(m, 0);
    if (argc > 4) {
        for (int i = 4; i < argc && rank < OSV_MAX_DIMS; i++)
            dims[rank++] = atoll(argv[i]);
    } else {
        for (int32_t d = 0; d < t->rank; d++)
            dims[rank++] = t->dims[d] < 0 ? 1 : t->dims[d];
    }
    worker_t *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    uint64_t t0 = osv_now_ns(), deadline = t0 + (uint64_t)(seconds * 1e9), total = 0, n_lat = 0;
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){
            .m = m, .pool = pool, .dims = dims, .rank = rank, .deadline = deadline, .cap = 1u << 20};
        w[i].lat = malloc(w[i].cap * sizeof *w[i].lat);
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].runs;
    }
    double elapsed = (double)(osv_now_ns() - t0) / 1e9;
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    for (int i = 0; i < threads; i++)
        for (uint64_t k = 0; k < w[i].runs && k < w[i].cap; k++)
            all[n_lat++] = w[i].lat[k];
    qsort(all, n_lat, sizeof *all, cmp_u64);
    printf("{\"model\":\"%s\",\"threads\":%d,\"runs\":%llu,\"runs_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%."
           "1f}\n",
           argv[1], threads, (unsigned long long)total, (double)total / elapsed,
           n_lat ? (double)all[n_lat / 2] / 1e3 : 0, n_lat ? (double)all[n_lat * 99 / 100] / 1e3 : 0);
    for (int i = 0; i < threads; i++)
        free(w[i].lat);
    free(all);
    free(w);
    free(th);
    osv_pool_destroy(pool);
    osv_model_release(m);
    osv_env_destroy(env);
    return 0;
}
