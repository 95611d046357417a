/* ortserve/stats.h — lock-free per-model counters and latency histograms.
 *
 * Recording happens on the request path, so every counter lives in per-thread shards (each thread
 * is assigned one shard; relaxed atomic adds on a cache line no other thread normally touches) and
 * readers sum the shards. Snapshots are therefore monotonic per counter but not a consistent cut
 * across counters, which is what Prometheus and Triton's statistics expect. */
#ifndef ORTSERVE_STATS_H
#define ORTSERVE_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Why tensor bytes were copied (or, for NONE, that they were not). XX(enum suffix, metric label) */
#define OSV_COPY_REASON_MAP(XX)                                                                              \
    XX(NONE, "zero_copy")              /* bound in place */                                                  \
    XX(MISALIGNED, "misaligned")       /* caller memory not aligned for the element type */                  \
    XX(BYTES, "bytes")                 /* BYTES <-> ORT string tensors are always converted */               \
    XX(CONVERSION, "conversion")       /* datatype conversion on input */                                    \
    XX(FORCED, "forced")               /* forced-copy mode (benchmarks) */                                   \
    XX(ORT_ALLOCATED, "ort_allocated") /* output shape unknown before Run: ORT allocates, read in place */   \
    XX(READAHEAD, "readahead")         /* body bytes that arrived in the same read as the headers */         \
    XX(CHUNKED, "chunked")             /* chunked transfer encoding had to be reassembled */                 \
    XX(DECOMPRESS, "decompress")       /* a gzip/deflate body was inflated */                                \
    XX(GRPC_RECEIVE, "grpc_receive")   /* HTTP/2 DATA bytes from the read buffer into the message's slot */  \
    XX(SERIALIZE, "serialize")         /* output written as JSON text or length-prefixed BYTES */            \
    XX(BATCH, "batch")                 /* a request's rows gathered into its batch's input slot */           \
    XX(CACHE, "cache")                 /* a response kept in the response cache (inputs and outputs) */

typedef enum osv_copy_reason {
#define OSV__COPY_ENUM(sfx, label) OSV_COPY_##sfx,
    OSV_COPY_REASON_MAP(OSV__COPY_ENUM)
#undef OSV__COPY_ENUM
        OSV_COPY_REASON_COUNT
} osv_copy_reason_t;

/* Metric label of a reason ("misaligned"). */
OSV_API const char *osv_copy_reason_name(osv_copy_reason_t r);

enum { OSV_DIR_INPUT = 0, OSV_DIR_OUTPUT = 1 };

/* Phases of a request, timed in nanoseconds. */
typedef enum osv_phase {
    OSV_PHASE_REQUEST = 0,    /* end to end, first header byte to last response byte queued */
    OSV_PHASE_QUEUE,          /* waiting for a worker */
    OSV_PHASE_COMPUTE_INPUT,  /* decoding/binding inputs */
    OSV_PHASE_COMPUTE_INFER,  /* ORT Run */
    OSV_PHASE_COMPUTE_OUTPUT, /* encoding outputs */
    OSV_PHASE_COUNT
} osv_phase_t;

/* The phase's name in statistics, metrics and span names: "request", "queue", "compute_input",
 * "compute_infer", "compute_output" (Triton's statistics fields). Static; "?" out of range. */
OSV_API const char *osv_phase_name(osv_phase_t p);

/* Request outcomes. XX(enum suffix, metric label) */
#define OSV_OUTCOME_MAP(XX)                                                                                  \
    XX(SUCCESS, "success")                                                                                   \
    XX(INVALID, "invalid")   /* client error (4xx) */                                                        \
    XX(REJECTED, "rejected") /* overload: pool or queue full (503) */                                        \
    XX(TIMEOUT, "timeout")   /* deadline exceeded (504) */                                                   \
    XX(ERROR, "error")       /* ORT or internal failure (5xx) */

typedef enum osv_outcome {
#define OSV__OUTCOME_ENUM(sfx, label) OSV_OUTCOME_##sfx,
    OSV_OUTCOME_MAP(OSV__OUTCOME_ENUM)
#undef OSV__OUTCOME_ENUM
        OSV_OUTCOME_COUNT
} osv_outcome_t;

OSV_API const char *osv_outcome_name(osv_outcome_t o);

/* Histogram upper bounds in seconds (tens of µs to seconds), shared by every phase. */
#define OSV_HIST_BUCKETS 20
OSV_API const double *osv_hist_bounds(void); /* OSV_HIST_BUCKETS finite bounds; +Inf is implicit */

/* Batch-size histogram upper bounds: 1, 2, 4 ... 4096 rows. */
#define OSV_BATCH_HIST_BUCKETS 13
OSV_API const uint64_t *osv_batch_hist_bounds(void);

typedef struct osv_duration_stat {
    uint64_t count;
    uint64_t ns;
} osv_duration_stat_t;

/* Summed snapshot of one model version's statistics. Plain data. */
typedef struct osv_stats_snapshot {
    uint64_t outcomes[OSV_OUTCOME_COUNT];
    osv_duration_stat_t success; /* Triton's inference_stats.success: end-to-end of successes */
    osv_duration_stat_t fail;    /* end-to-end of failures */
    osv_duration_stat_t phase[OSV_PHASE_COUNT];
    uint64_t hist[OSV_PHASE_COUNT][OSV_HIST_BUCKETS + 1]; /* non-cumulative bucket counts, last = +Inf */
    uint64_t inference_count;                             /* batch items */
    uint64_t execution_count;                             /* ORT Run calls */
    uint64_t last_inference_ms;                           /* wall clock, ms since the epoch */
    uint64_t bind[2][OSV_COPY_REASON_COUNT];              /* tensor bindings by direction and reason */
    uint64_t copied_bytes[OSV_COPY_REASON_COUNT];
    osv_duration_stat_t cache_hit;  /* Triton's cache_hit: lookups that answered, and their time */
    osv_duration_stat_t cache_miss; /* cache_miss: lookups that did not, plus the insertion after the run */
    uint64_t batch_hist[OSV_BATCH_HIST_BUCKETS + 1]; /* executions by batch size (non-cumulative; bounds
                                                        osv_batch_hist_bounds, last = +Inf) */
    uint64_t canceled;          /* runs terminated by a deadline */
    uint64_t recovery_attempts; /* retries of transient failures */
    uint64_t slo_violations[2]; /* OSV_SLO_LATENCY, OSV_SLO_ERROR */
    uint64_t batch_cap; /* the adaptive batcher's current cap in rows (0: not adaptive) */
} osv_stats_snapshot_t;

enum { OSV_SLO_LATENCY = 0, OSV_SLO_ERROR = 1 };

typedef struct osv_stats osv_stats_t;

/* Creates an empty statistics block (≈ 30 KiB: 16 cache-aligned shards). Free with osv_stats_free. */
OSV_API osv_stats_t *osv_stats_new(void);
OSV_API void osv_stats_free(osv_stats_t *s);

/* Recording: lock-free, allocation-free, callable from any thread. */
OSV_API void osv_stats_record_phase(osv_stats_t *s, osv_phase_t p, uint64_t ns);
OSV_API void osv_stats_record_outcome(osv_stats_t *s, osv_outcome_t o, uint64_t request_ns);
OSV_API void osv_stats_record_exec(osv_stats_t *s, uint64_t batch);
OSV_API void osv_stats_record_bind(osv_stats_t *s, int dir, osv_copy_reason_t r, uint64_t bytes_copied);
OSV_API void osv_stats_record_copy(osv_stats_t *s, osv_copy_reason_t r, uint64_t bytes);
OSV_API void osv_stats_add_canceled(osv_stats_t *s);
OSV_API void osv_stats_add_recovery(osv_stats_t *s);
OSV_API void osv_stats_add_slo_violation(osv_stats_t *s, int kind); /* OSV_SLO_* */
/* A response-cache lookup of this model: hit or miss, and the time it took (a miss adds its insertion). */
/* The adaptive batcher's current cap (rows); any thread, relaxed: the last value set wins. */
OSV_API void osv_stats_set_batch_cap(osv_stats_t *s, uint64_t rows);
OSV_API void osv_stats_record_cache(osv_stats_t *s, bool hit, uint64_t ns);
/* Triton's batch_stats: one execution of `batch` rows and its compute times (not sharded: a small
 * table of the sizes seen, at most OSV_BATCH_STATS_SIZES distinct ones; later sizes are not listed). */
#define OSV_BATCH_STATS_SIZES 128
typedef struct osv_batch_stat {
    uint64_t batch_size;
    uint64_t count;
    uint64_t input_ns, infer_ns, output_ns;
} osv_batch_stat_t;
OSV_API void osv_stats_record_batch(osv_stats_t *s, uint64_t batch, uint64_t input_ns, uint64_t infer_ns,
                                    uint64_t output_ns);
/* Copies up to cap rows (ascending batch size) into out; returns how many. Any thread. */
OSV_API uint32_t osv_stats_batch_stats(const osv_stats_t *s, osv_batch_stat_t *out, uint32_t cap);

/* Sums the shards into *out. Thread-safe with concurrent recording. */
OSV_API void osv_stats_snapshot(const osv_stats_t *s, osv_stats_snapshot_t *out);

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
OSV_API uint64_t osv_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif
