/* stats.c — per-model statistics in per-thread shards: lock-free recording, summed on read.
 *
 * A thread gets a shard index the first time it records (round-robin over OSV_STAT_SHARDS); with no
 * more threads than shards, no two threads share a shard and the relaxed atomic adds below never
 * contend. More threads simply share shards, still correctly. */
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "ortserve/alloc.h"
#include "ortserve/stats.h"

#define OSV_STAT_SHARDS 16

typedef _Atomic uint64_t counter_t;

typedef struct shard {
    _Alignas(64) counter_t outcomes[OSV_OUTCOME_COUNT];
    counter_t success_count, success_ns, fail_count, fail_ns;
    counter_t phase_count[OSV_PHASE_COUNT], phase_ns[OSV_PHASE_COUNT];
    counter_t hist[OSV_PHASE_COUNT][OSV_HIST_BUCKETS + 1];
    counter_t inference_count, execution_count, last_inference_ms;
    counter_t bind[2][OSV_COPY_REASON_COUNT];
    counter_t copied[OSV_COPY_REASON_COUNT];
    counter_t canceled, recovery, slo_violations[2];
    counter_t cache_count[2], cache_ns[2]; /* [0] miss, [1] hit */
    counter_t batch_hist[OSV_BATCH_HIST_BUCKETS + 1];
} shard_t;

/* One batch size's row of Triton's batch_stats: size 0 = free; claimed once with a CAS. */
typedef struct batch_row {
    _Atomic uint64_t size;
    counter_t count, input_ns, infer_ns, output_ns;
} batch_row_t;

struct osv_stats {
    shard_t shard[OSV_STAT_SHARDS];
    batch_row_t batch[OSV_BATCH_STATS_SIZES];
    _Atomic uint64_t batch_cap; /* a gauge, not a counter: one value, not sharded */
};

static const uint64_t batch_bounds[OSV_BATCH_HIST_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
                                                              2048, 4096};

static const double bounds[OSV_HIST_BUCKETS] = {
    10e-6, 25e-6, 50e-6,  100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
    25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,    2.5,  5.0,    10.0, 30.0,
};
/* The same bounds in nanoseconds, for integer comparisons on the hot path. */
static const uint64_t bounds_ns[OSV_HIST_BUCKETS] = {
    10000,     25000,      50000,         100000,        250000,         500000,         1000000,
    2500000,   5000000,    10000000,      25000000,      50000000,       100000000,      250000000,
    500000000, 1000000000, 2500000000ull, 5000000000ull, 10000000000ull, 30000000000ull,
};

static const char *const reason_names[OSV_COPY_REASON_COUNT] = {
#define OSV__COPY_NAME(sfx, label) label,
    OSV_COPY_REASON_MAP(OSV__COPY_NAME)
#undef OSV__COPY_NAME
};

static const char *const outcome_names[OSV_OUTCOME_COUNT] = {
#define OSV__OUTCOME_NAME(sfx, label) label,
    OSV_OUTCOME_MAP(OSV__OUTCOME_NAME)
#undef OSV__OUTCOME_NAME
};

static _Atomic unsigned next_shard;
static _Thread_local int my_shard = -1;

const char *osv_phase_name(osv_phase_t p)
{
    static const char *const names[OSV_PHASE_COUNT] = {
        [OSV_PHASE_REQUEST] = "request",
        [OSV_PHASE_QUEUE] = "queue",
        [OSV_PHASE_COMPUTE_INPUT] = "compute_input",
        [OSV_PHASE_COMPUTE_INFER] = "compute_infer",
        [OSV_PHASE_COMPUTE_OUTPUT] = "compute_output",
    };
    return (unsigned)p < OSV_PHASE_COUNT ? names[p] : "?";
}

const char *osv_copy_reason_name(osv_copy_reason_t r)
{
    return (unsigned)r < OSV_COPY_REASON_COUNT ? reason_names[r] : "unknown";
}

const char *osv_outcome_name(osv_outcome_t o)
{
    return (unsigned)o < OSV_OUTCOME_COUNT ? outcome_names[o] : "unknown";
}

const double *osv_hist_bounds(void)
{
    return bounds;
}

const uint64_t *osv_batch_hist_bounds(void)
{
    return batch_bounds;
}

uint64_t osv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static shard_t *my(osv_stats_t *s)
{
    if (my_shard < 0)
        my_shard = (int)(atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) % OSV_STAT_SHARDS);
    return &s->shard[my_shard];
}

static void add(counter_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static unsigned bucket_of(uint64_t ns)
{
    unsigned lo = 0, hi = OSV_HIST_BUCKETS; /* first bound ≥ ns, or OSV_HIST_BUCKETS (+Inf) */
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (bounds_ns[mid] >= ns)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

osv_stats_t *osv_stats_new(void)
{
    return osv_calloc(1, sizeof(osv_stats_t));
}

void osv_stats_free(osv_stats_t *s)
{
    osv_free(s);
}

void osv_stats_record_phase(osv_stats_t *s, osv_phase_t p, uint64_t ns)
{
    shard_t *sh = my(s);
    if ((unsigned)p >= OSV_PHASE_COUNT)
        return;
    add(&sh->phase_count[p], 1);
    add(&sh->phase_ns[p], ns);
    add(&sh->hist[p][bucket_of(ns)], 1);
}

void osv_stats_record_outcome(osv_stats_t *s, osv_outcome_t o, uint64_t request_ns)
{
    shard_t *sh = my(s);
    if ((unsigned)o >= OSV_OUTCOME_COUNT)
        return;
    add(&sh->outcomes[o], 1);
    if (o == OSV_OUTCOME_SUCCESS) {
        add(&sh->success_count, 1);
        add(&sh->success_ns, request_ns);
    } else {
        add(&sh->fail_count, 1);
        add(&sh->fail_ns, request_ns);
    }
}

void osv_stats_record_exec(osv_stats_t *s, uint64_t batch)
{
    shard_t *sh = my(s);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    unsigned b = 0;
    while (b < OSV_BATCH_HIST_BUCKETS && batch_bounds[b] < batch)
        b++;
    add(&sh->execution_count, 1);
    add(&sh->inference_count, batch);
    add(&sh->batch_hist[b], 1);
    atomic_store_explicit(&sh->last_inference_ms, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
                          memory_order_relaxed);
}

void osv_stats_record_bind(osv_stats_t *s, int dir, osv_copy_reason_t r, uint64_t bytes_copied)
{
    shard_t *sh = my(s);
    if ((unsigned)r >= OSV_COPY_REASON_COUNT || (dir != OSV_DIR_INPUT && dir != OSV_DIR_OUTPUT))
        return;
    add(&sh->bind[dir][r], 1);
    if (bytes_copied)
        add(&sh->copied[r], bytes_copied);
}

void osv_stats_record_copy(osv_stats_t *s, osv_copy_reason_t r, uint64_t bytes)
{
    if ((unsigned)r < OSV_COPY_REASON_COUNT && bytes)
        add(&my(s)->copied[r], bytes);
}

void osv_stats_add_canceled(osv_stats_t *s)
{
    add(&my(s)->canceled, 1);
}

void osv_stats_set_batch_cap(osv_stats_t *s, uint64_t rows)
{
    if (s)
        atomic_store_explicit(&s->batch_cap, rows, memory_order_relaxed);
}

void osv_stats_add_recovery(osv_stats_t *s)
{
    add(&my(s)->recovery, 1);
}

void osv_stats_add_slo_violation(osv_stats_t *s, int kind)
{
    if (kind == OSV_SLO_LATENCY || kind == OSV_SLO_ERROR)
        add(&my(s)->slo_violations[kind], 1);
}

void osv_stats_record_cache(osv_stats_t *s, bool hit, uint64_t ns)
{
    shard_t *sh = my(s);
    add(&sh->cache_count[hit], 1);
    add(&sh->cache_ns[hit], ns);
}

void osv_stats_record_batch(osv_stats_t *s, uint64_t batch, uint64_t input_ns, uint64_t infer_ns,
                            uint64_t output_ns)
{
    uint64_t size = batch ? batch : 1; /* a model without a batch dimension runs "batches" of 1 */
    for (unsigned i = 0; i < OSV_BATCH_STATS_SIZES; i++) {
        batch_row_t *r = &s->batch[i];
        uint64_t cur = atomic_load_explicit(&r->size, memory_order_acquire), zero = 0;
        if (cur == 0 && atomic_compare_exchange_strong(&r->size, &zero, size))
            cur = size;
        else if (cur == 0)
            cur = zero; /* another thread claimed it meanwhile: its size */
        if (cur != size)
            continue;
        add(&r->count, 1);
        add(&r->input_ns, input_ns);
        add(&r->infer_ns, infer_ns);
        add(&r->output_ns, output_ns);
        return;
    }
}

uint32_t osv_stats_batch_stats(const osv_stats_t *s, osv_batch_stat_t *out, uint32_t cap)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < OSV_BATCH_STATS_SIZES && n < cap; i++) {
        const batch_row_t *r = &s->batch[i];
        osv_batch_stat_t row = {.batch_size = atomic_load_explicit(&r->size, memory_order_acquire)};
        if (!row.batch_size)
            continue;
        row.count = atomic_load_explicit(&r->count, memory_order_relaxed);
        row.input_ns = atomic_load_explicit(&r->input_ns, memory_order_relaxed);
        row.infer_ns = atomic_load_explicit(&r->infer_ns, memory_order_relaxed);
        row.output_ns = atomic_load_explicit(&r->output_ns, memory_order_relaxed);
        if (!row.count)
            continue;
        uint32_t j = n++; /* insertion: ascending batch size */
        while (j > 0 && out[j - 1].batch_size > row.batch_size) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = row;
    }
    return n;
}

static uint64_t rd(const counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void sum_shard(const shard_t *sh, osv_stats_snapshot_t *o)
{
    for (int i = 0; i < OSV_OUTCOME_COUNT; i++)
        o->outcomes[i] += rd(&sh->outcomes[i]);
    o->success.count += rd(&sh->success_count);
    o->success.ns += rd(&sh->success_ns);
    o->fail.count += rd(&sh->fail_count);
    o->fail.ns += rd(&sh->fail_ns);
    for (int p = 0; p < OSV_PHASE_COUNT; p++) {
        o->phase[p].count += rd(&sh->phase_count[p]);
        o->phase[p].ns += rd(&sh->phase_ns[p]);
        for (int b = 0; b <= OSV_HIST_BUCKETS; b++)
            o->hist[p][b] += rd(&sh->hist[p][b]);
    }
    o->inference_count += rd(&sh->inference_count);
    o->execution_count += rd(&sh->execution_count);
    if (rd(&sh->last_inference_ms) > o->last_inference_ms)
        o->last_inference_ms = rd(&sh->last_inference_ms);
    for (int d = 0; d < 2; d++)
        for (int r = 0; r < OSV_COPY_REASON_COUNT; r++)
            o->bind[d][r] += rd(&sh->bind[d][r]);
    for (int r = 0; r < OSV_COPY_REASON_COUNT; r++)
        o->copied_bytes[r] += rd(&sh->copied[r]);
    o->cache_miss.count += rd(&sh->cache_count[0]);
    o->cache_miss.ns += rd(&sh->cache_ns[0]);
    o->cache_hit.count += rd(&sh->cache_count[1]);
    o->cache_hit.ns += rd(&sh->cache_ns[1]);
    for (int b = 0; b <= OSV_BATCH_HIST_BUCKETS; b++)
        o->batch_hist[b] += rd(&sh->batch_hist[b]);
    o->canceled += rd(&sh->canceled);
    o->recovery_attempts += rd(&sh->recovery);
    o->slo_violations[0] += rd(&sh->slo_violations[0]);
    o->slo_violations[1] += rd(&sh->slo_violations[1]);
}

void osv_stats_snapshot(const osv_stats_t *s, osv_stats_snapshot_t *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < OSV_STAT_SHARDS; i++)
        sum_shard(&s->shard[i], out);
    out->batch_cap = atomic_load_explicit(&s->batch_cap, memory_order_relaxed);
}
