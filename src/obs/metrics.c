/* metrics.c — GET /metrics: Prometheus text exposition 0.0.4, or OpenMetrics 1.0 when the scraper
 * asks for it (Accept: application/openmetrics-text).
 *
 * Per model version: requests by outcome, latency histograms (end to end, queue, compute input /
 * infer / output), batch-aware inference count and execution count, tensor bindings by direction
 * and result, bytes copied by reason, recovery attempts, deadline cancellations, SLO violations and
 * the SLO objectives themselves.
 * Server-wide: pool slots and bytes, queue depth, in-flight requests, connections, responses by
 * status, cgroup memory, build info and the standard process_* metrics. Everything is read from
 * lock-free per-thread shards and atomics, or from the plain gauges the caller gathered
 * (osv_obs_gauges_t); a scrape takes no lock a request could wait on (except the repository's read
 * lock for a moment per model). */
#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "obs/obs.h"
#include "obs/trace.h"

/* The page is built in a heap buffer that grows as needed (not a pool slot: a scrape must work when
 * the tensor pool is exhausted, which is exactly when it matters, and must not show up in the pool's
 * own figures). It is freed by the request's cleanup once the response is written. */
typedef struct buf {
    char *p;
    size_t len, cap;
    bool full; /* out of memory: the scrape fails with 503 */
} buf_t;

static bool grow(buf_t *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 65536;
    char *np;
    while (cap - b->len < need)
        cap *= 2;
    if (cap == b->cap)
        return true;
    if (!(np = osv_realloc(b->p, cap)))
        return false;
    b->p = np;
    b->cap = cap;
    return true;
}

static void put(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->full)
        return;
    for (int pass = 0; pass < 2; pass++) {
        va_start(ap, fmt);
        n = b->p ? vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap) : 512;
        va_end(ap);
        if (n < 0) {
            b->full = true;
            return;
        }
        if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        if (!grow(b, (size_t)n + 1)) {
            b->full = true;
            return;
        }
    }
    b->full = true; /* unreachable: the second pass has room */
}

typedef struct model_row {
    char name[128];
    int64_t version;
    osv_stats_snapshot_t s;
    uint32_t queued;
    bool has_slo;
    double slo_latency_s, slo_target, slo_error_budget;
} model_row_t;

typedef struct scrape {
    buf_t b;
    bool om;         /* OpenMetrics */
    uint64_t allocs; /* osv_alloc_count() before the scrape allocated anything */
    const osv_obs_gauges_t *g;
    model_row_t *rows;
    size_t n_rows, cap_rows;
} scrape_t;

/* HELP and TYPE; OpenMetrics names counter families without the _total suffix. */
static void family(scrape_t *x, const char *name, const char *type, const char *help)
{
    size_t n = strlen(name);
    if (x->om && strcmp(type, "counter") == 0 && n > 6 && strcmp(name + n - 6, "_total") == 0)
        n -= 6;
    put(&x->b, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)n, name, help, (int)n, name, type);
}

static int collect(void *ud, osv_model_t *m)
{
    scrape_t *x = ud;
    model_row_t *r;
    if (x->n_rows == x->cap_rows)
        return 1;
    r = &x->rows[x->n_rows++];
    snprintf(r->name, sizeof r->name, "%s", osv_model_name(m));
    r->version = osv_model_version(m);
    r->queued = x->g->model_queued ? x->g->model_queued(m) : 0;
    osv_stats_snapshot(osv_model_stats(m), &r->s);
    r->has_slo = osv_obs_model_slo(m, &r->slo_latency_s, &r->slo_target, &r->slo_error_budget);
    return 0;
}

#define MV "model=\"%s\",version=\"%" PRId64 "\""

static void per_model_counter(scrape_t *x, const char *name, const char *help, size_t off)
{
    family(x, name, "counter", help);
    for (size_t i = 0; i < x->n_rows; i++) {
        const model_row_t *r = &x->rows[i];
        put(&x->b, "%s{" MV "} %" PRIu64 "\n", name, r->name, r->version,
            *(const uint64_t *)((const char *)&r->s + off));
    }
}

static void histogram(scrape_t *x, const char *name, const char *help, osv_phase_t p)
{
    const double *bounds = osv_hist_bounds();
    family(x, name, "histogram", help);
    for (size_t i = 0; i < x->n_rows; i++) {
        const model_row_t *r = &x->rows[i];
        uint64_t cum = 0;
        for (int k = 0; k <= OSV_HIST_BUCKETS; k++) {
            cum += r->s.hist[p][k];
            if (k < OSV_HIST_BUCKETS)
                put(&x->b, "%s_bucket{" MV ",le=\"%g\"} %" PRIu64 "\n", name, r->name, r->version, bounds[k],
                    cum);
            else
                put(&x->b, "%s_bucket{" MV ",le=\"+Inf\"} %" PRIu64 "\n", name, r->name, r->version, cum);
        }
        /* _count is the +Inf bucket: the shards' count and buckets are separate counters, and a scrape
         * racing a request could otherwise see them disagree. */
        put(&x->b, "%s_sum{" MV "} %.9f\n%s_count{" MV "} %" PRIu64 "\n", name, r->name, r->version,
            (double)r->s.phase[p].ns / 1e9, name, r->name, r->version, cum);
    }
}

/* Executions by batch size (rows), per model: a histogram with bounds 1, 2, 4 ... 4096. */
static void batch_size_family(scrape_t *x)
{
    const uint64_t *bounds = osv_batch_hist_bounds();
    family(x, "ortserve_batch_size", "histogram",
           "Rows per model execution (a dynamic batch joins requests; 1 when a request runs alone).");
    for (size_t i = 0; i < x->n_rows; i++) {
        const model_row_t *r = &x->rows[i];
        uint64_t cum = 0, sum = 0;
        for (int k = 0; k <= OSV_BATCH_HIST_BUCKETS; k++) {
            cum += r->s.batch_hist[k];
            if (k < OSV_BATCH_HIST_BUCKETS)
                put(&x->b, "ortserve_batch_size_bucket{" MV ",le=\"%" PRIu64 "\"} %" PRIu64 "\n", r->name,
                    r->version, bounds[k], cum);
            else
                put(&x->b, "ortserve_batch_size_bucket{" MV ",le=\"+Inf\"} %" PRIu64 "\n", r->name, r->version,
                    cum);
        }
        sum = r->s.inference_count; /* rows of all executions */
        put(&x->b, "ortserve_batch_size_sum{" MV "} %" PRIu64 "\nortserve_batch_size_count{" MV "} %" PRIu64 "\n",
            r->name, r->version, sum, r->name, r->version, cum);
    }
}

/* Response cache lookups per model, by result, and the time they took. */
static void cache_model_families(scrape_t *x)
{
    family(x, "ortserve_cache_lookups_total", "counter",
           "Response cache lookups by result (hit: answered without running; miss).");
    for (size_t i = 0; i < x->n_rows; i++) {
        put(&x->b, "ortserve_cache_lookups_total{" MV ",result=\"hit\"} %" PRIu64 "\n", x->rows[i].name,
            x->rows[i].version, x->rows[i].s.cache_hit.count);
        put(&x->b, "ortserve_cache_lookups_total{" MV ",result=\"miss\"} %" PRIu64 "\n", x->rows[i].name,
            x->rows[i].version, x->rows[i].s.cache_miss.count);
    }
    family(x, "ortserve_cache_lookup_seconds_total", "counter",
           "Time spent looking responses up in the cache (hashing and comparing the inputs), by result.");
    for (size_t i = 0; i < x->n_rows; i++) {
        put(&x->b, "ortserve_cache_lookup_seconds_total{" MV ",result=\"hit\"} %.9f\n", x->rows[i].name,
            x->rows[i].version, (double)x->rows[i].s.cache_hit.ns / 1e9);
        put(&x->b, "ortserve_cache_lookup_seconds_total{" MV ",result=\"miss\"} %.9f\n", x->rows[i].name,
            x->rows[i].version, (double)x->rows[i].s.cache_miss.ns / 1e9);
    }
}

/* The response cache, server-wide (--cache-size). */
static void cache_families(scrape_t *x)
{
    const osv_obs_gauges_t *g = x->g;
    family(x, "ortserve_cache_bytes", "gauge", "Response cache bytes by state (budget: --cache-size; used).");
    put(&x->b, "ortserve_cache_bytes{state=\"budget\"} %" PRIu64 "\nortserve_cache_bytes{state=\"used\"} %" PRIu64 "\n",
        g->cache_budget, g->cache_bytes);
    family(x, "ortserve_cache_entries", "gauge", "Responses held in the response cache.");
    put(&x->b, "ortserve_cache_entries %" PRIu64 "\n", g->cache_entries);
    family(x, "ortserve_cache_inserts_total", "counter", "Responses kept in the response cache.");
    put(&x->b, "ortserve_cache_inserts_total %" PRIu64 "\n", g->cache_inserts);
    family(x, "ortserve_cache_evictions_total", "counter",
           "Responses evicted from the response cache (least recently used first) to make room.");
    put(&x->b, "ortserve_cache_evictions_total %" PRIu64 "\n", g->cache_evictions);
    family(x, "ortserve_cache_refusals_total", "counter",
           "Responses not kept: larger than the budget, or the rest of it held by responses being sent.");
    put(&x->b, "ortserve_cache_refusals_total %" PRIu64 "\n", g->cache_too_large);
}

static void model_families(scrape_t *x)
{
    family(x, "ortserve_requests_total", "counter", "Inference requests by outcome.");
    for (size_t i = 0; i < x->n_rows; i++)
        for (int o = 0; o < OSV_OUTCOME_COUNT; o++)
            put(&x->b, "ortserve_requests_total{" MV ",outcome=\"%s\"} %" PRIu64 "\n", x->rows[i].name,
                x->rows[i].version, osv_outcome_name((osv_outcome_t)o), x->rows[i].s.outcomes[o]);
    histogram(x, "ortserve_inference_duration_seconds",
              "End-to-end inference request latency, first byte in to last byte queued out.",
              OSV_PHASE_REQUEST);
    histogram(x, "ortserve_queue_duration_seconds", "Time requests waited for a worker.", OSV_PHASE_QUEUE);
    histogram(x, "ortserve_compute_input_duration_seconds", "Time decoding and binding inputs.",
              OSV_PHASE_COMPUTE_INPUT);
    histogram(x, "ortserve_compute_infer_duration_seconds", "Time in ONNX Runtime's Run.",
              OSV_PHASE_COMPUTE_INFER);
    histogram(x, "ortserve_compute_output_duration_seconds", "Time encoding outputs.",
              OSV_PHASE_COMPUTE_OUTPUT);
    per_model_counter(x, "ortserve_inference_count_total", "Inferences performed (batch items).",
                      offsetof(osv_stats_snapshot_t, inference_count));
    per_model_counter(x, "ortserve_execution_count_total", "Model executions (ONNX Runtime Run calls).",
                      offsetof(osv_stats_snapshot_t, execution_count));
    batch_size_family(x);
    cache_model_families(x);
    family(x, "ortserve_zero_copy_success_total", "counter",
           "Tensors bound in place, with no copy, by direction.");
    for (size_t i = 0; i < x->n_rows; i++)
        for (int d = 0; d < 2; d++)
            put(&x->b, "ortserve_zero_copy_success_total{" MV ",direction=\"%s\"} %" PRIu64 "\n",
                x->rows[i].name, x->rows[i].version, d ? "output" : "input",
                x->rows[i].s.bind[d][OSV_COPY_NONE]);
    family(x, "ortserve_tensor_bindings_total", "counter",
           "Tensor bindings by direction and result (zero_copy or the fallback reason).");
    for (size_t i = 0; i < x->n_rows; i++)
        for (int d = 0; d < 2; d++)
            for (int k = 0; k < OSV_COPY_REASON_COUNT; k++)
                if (x->rows[i].s.bind[d][k] || k == OSV_COPY_NONE)
                    put(&x->b,
                        "ortserve_tensor_bindings_total{" MV ",direction=\"%s\",result=\"%s\"} %" PRIu64 "\n",
                        x->rows[i].name, x->rows[i].version, d ? "output" : "input",
                        osv_copy_reason_name((osv_copy_reason_t)k), x->rows[i].s.bind[d][k]);
    family(x, "ortserve_copied_bytes_total", "counter", "Tensor bytes ortserve copied, by reason.");
    for (size_t i = 0; i < x->n_rows; i++)
        for (int k = 1; k < OSV_COPY_REASON_COUNT; k++)
            if (k != OSV_COPY_ORT_ALLOCATED)
                put(&x->b, "ortserve_copied_bytes_total{" MV ",reason=\"%s\"} %" PRIu64 "\n", x->rows[i].name,
                    x->rows[i].version, osv_copy_reason_name((osv_copy_reason_t)k),
                    x->rows[i].s.copied_bytes[k]);
    per_model_counter(x, "ortserve_recovery_attempts_total",
                      "Retries of transient failures (full pool, ORT allocation).",
                      offsetof(osv_stats_snapshot_t, recovery_attempts));
    per_model_counter(x, "ortserve_deadline_cancellations_total",
                      "Requests that missed their deadline (canceled runs and expired waits).",
                      offsetof(osv_stats_snapshot_t, canceled));
    family(x, "ortserve_slo_violations_total", "counter",
           "Requests that broke the model's SLO, by kind (latency, error).");
    for (size_t i = 0; i < x->n_rows; i++)
        for (int k = 0; k < 2; k++)
            put(&x->b, "ortserve_slo_violations_total{" MV ",kind=\"%s\"} %" PRIu64 "\n", x->rows[i].name,
                x->rows[i].version, k ? "error" : "latency", x->rows[i].s.slo_violations[k]);
    /* The objectives themselves, so alert rules and dashboards can compare with them (models with an
     * "slo" section in config.json only). */
    family(x, "ortserve_slo_latency_seconds", "gauge", "The model's SLO latency objective (latency_ms).");
    for (size_t i = 0; i < x->n_rows; i++)
        if (x->rows[i].has_slo && x->rows[i].slo_latency_s > 0)
            put(&x->b, "ortserve_slo_latency_seconds{" MV "} %.9g\n", x->rows[i].name, x->rows[i].version,
                x->rows[i].slo_latency_s);
    family(x, "ortserve_slo_latency_target_ratio", "gauge",
           "Share of successful requests that must meet the latency objective (percentile / 100).");
    for (size_t i = 0; i < x->n_rows; i++)
        if (x->rows[i].has_slo && x->rows[i].slo_latency_s > 0)
            put(&x->b, "ortserve_slo_latency_target_ratio{" MV "} %.9g\n", x->rows[i].name,
                x->rows[i].version, x->rows[i].slo_target);
    family(x, "ortserve_slo_error_budget_ratio", "gauge",
           "Share of requests allowed to fail (5xx, 503, 504) under the model's SLO (error_rate).");
    for (size_t i = 0; i < x->n_rows; i++)
        if (x->rows[i].has_slo)
            put(&x->b, "ortserve_slo_error_budget_ratio{" MV "} %.9g\n", x->rows[i].name, x->rows[i].version,
                x->rows[i].slo_error_budget);
    family(x, "ortserve_batch_adaptive_cap", "gauge",
           "Rows the adaptive batcher lets a batch reach now (its cost curve: load-time runs, then live ones).");
    for (size_t i = 0; i < x->n_rows; i++)
        if (x->rows[i].s.batch_cap)
            put(&x->b, "ortserve_batch_adaptive_cap{" MV "} %" PRIu64 "\n", x->rows[i].name, x->rows[i].version,
                x->rows[i].s.batch_cap);
    family(x, "ortserve_queued_requests", "gauge", "Requests of this model waiting for a worker.");
    for (size_t i = 0; i < x->n_rows; i++)
        put(&x->b, "ortserve_queued_requests{" MV "} %u\n", x->rows[i].name, x->rows[i].version,
            x->rows[i].queued);
    family(x, "ortserve_last_inference_timestamp_seconds", "gauge",
           "Wall-clock time of the model's last inference.");
    for (size_t i = 0; i < x->n_rows; i++)
        put(&x->b, "ortserve_last_inference_timestamp_seconds{" MV "} %.3f\n", x->rows[i].name,
            x->rows[i].version, (double)x->rows[i].s.last_inference_ms / 1e3);
}

/* The image decode budget (--image-decode-budget): its limit, what decoding holds, and refusals. */
static void image_budget_families(scrape_t *x)
{
    const osv_img_budget_stats_t b = x->g->image_budget;
    family(x, "ortserve_image_decode_budget_bytes", "gauge",
           "Image decode memory budget by state (limit: --image-decode-budget; in_use: reserved now).");
    put(&x->b,
        "ortserve_image_decode_budget_bytes{state=\"limit\"} %" PRIu64
        "\nortserve_image_decode_budget_bytes{state=\"in_use\"} %" PRIu64 "\n",
        b.limit, b.in_use);
    family(x, "ortserve_image_decode_budget_high_water_bytes", "gauge",
           "Most image decode memory reserved at once.");
    put(&x->b, "ortserve_image_decode_budget_high_water_bytes %" PRIu64 "\n", b.high_water);
    family(x, "ortserve_image_decode_refusals_total", "counter",
           "Images refused for decode memory: busy (budget spent for now, 503) or too_large (over the whole "
           "budget, 413).");
    put(&x->b,
        "ortserve_image_decode_refusals_total{reason=\"busy\"} %" PRIu64
        "\nortserve_image_decode_refusals_total{reason=\"too_large\"} %" PRIu64 "\n",
        b.refused_busy, b.refused_too_big);
}

static void pool_families(scrape_t *x)
{
    osv_pool_stats_t ps = {0};
    if (x->g->pool)
        osv_pool_get_stats(x->g->pool, &ps);
    family(x, "ortserve_pool_slots", "gauge", "Tensor memory pool slots by slot size and state.");
    for (uint32_t i = 0; i < ps.n_classes; i++) {
        put(&x->b, "ortserve_pool_slots{slot_bytes=\"%" PRIu64 "\",state=\"in_use\"} %u\n",
            ps.cls[i].slot_size, ps.cls[i].in_use);
        put(&x->b, "ortserve_pool_slots{slot_bytes=\"%" PRIu64 "\",state=\"free\"} %u\n", ps.cls[i].slot_size,
            ps.cls[i].slots - ps.cls[i].in_use);
    }
    family(x, "ortserve_pool_slots_high_water", "gauge", "Most pool slots of a size in use at once.");
    for (uint32_t i = 0; i < ps.n_classes; i++)
        put(&x->b, "ortserve_pool_slots_high_water{slot_bytes=\"%" PRIu64 "\"} %u\n", ps.cls[i].slot_size,
            ps.cls[i].high_water);
    family(x, "ortserve_pool_bytes", "gauge", "Tensor memory pool bytes by state.");
    put(&x->b,
        "ortserve_pool_bytes{state=\"in_use\"} %" PRIu64 "\nortserve_pool_bytes{state=\"free\"} %" PRIu64
        "\n",
        ps.in_use_bytes, ps.total_bytes - ps.in_use_bytes);
    family(x, "ortserve_pool_acquire_failures_total", "counter",
           "Slot requests that found the pool full (answered 503).");
    for (uint32_t i = 0; i < ps.n_classes; i++)
        put(&x->b, "ortserve_pool_acquire_failures_total{slot_bytes=\"%" PRIu64 "\"} %" PRIu64 "\n",
            ps.cls[i].slot_size, ps.cls[i].failed);
}

static void responses_family(scrape_t *x)
{
    int codes[32];
    uint64_t counts[32];
    int n = osv_obs_status_counts(OSV_OBS_HTTP, codes, counts, 32);
    family(x, "ortserve_http_responses_total", "counter", "HTTP responses by status code.");
    for (int i = 0; i < n; i++)
        put(&x->b, "ortserve_http_responses_total{code=\"%d\"} %" PRIu64 "\n", codes[i], counts[i]);
    n = osv_obs_status_counts(OSV_OBS_GRPC, codes, counts, 32);
    family(x, "ortserve_grpc_responses_total", "counter", "gRPC calls by status code (-1: any other).");
    for (int i = 0; i < n; i++)
        put(&x->b, "ortserve_grpc_responses_total{code=\"%d\"} %" PRIu64 "\n", codes[i], counts[i]);
}

static void server_families(scrape_t *x)
{
    static const char *const tkinds[] = {"header", "body", "write", "idle"};
    const osv_obs_gauges_t *g = x->g;
    osv_sysmem_t mem;
    family(x, "ortserve_build_info", "gauge", "ortserve and ONNX Runtime versions.");
    put(&x->b, "ortserve_build_info{version=\"%s\",onnxruntime=\"%s\",ort_api=\"%d\"} 1\n", osv_version(),
        g->ort_version ? g->ort_version : "", g->ort_api);
    family(x, "ortserve_ready", "gauge",
           "1 when every model that should be loaded is ready and the server is not draining.");
    put(&x->b, "ortserve_ready %d\n", g->ready);
    pool_families(x);
    family(x, "ortserve_queue_depth", "gauge", "Requests waiting for an inference worker.");
    put(&x->b, "ortserve_queue_depth %u\n", g->queue_depth);
    family(x, "ortserve_inflight_requests", "gauge", "Requests being received, run or answered.");
    put(&x->b, "ortserve_inflight_requests %" PRId64 "\n", g->inflight);
    family(x, "ortserve_open_connections", "gauge", "Open client connections.");
    put(&x->b, "ortserve_open_connections %u\n", g->open_connections);
    responses_family(x);
    family(x, "ortserve_connection_timeouts_total", "counter", "Connections closed by a timeout, by kind.");
    for (int i = 0; i < 4; i++)
        put(&x->b, "ortserve_connection_timeouts_total{kind=\"%s\"} %" PRIu64 "\n", tkinds[i],
            osv_obs_event_count((osv_obs_event_t)(OSV_OBS_TIMEOUT_HEADER + i)));
    family(x, "ortserve_connection_buffers", "gauge",
           "Connection read buffers mapped, by state (free ones beyond a floor are unmapped within seconds).");
    put(&x->b, "ortserve_connection_buffers{state=\"in_use\"} %" PRIu64 "\n", g->conn_buffers_in_use);
    put(&x->b, "ortserve_connection_buffers{state=\"free\"} %" PRIu64 "\n", g->conn_buffers_free);
    family(x, "ortserve_heap_bytes", "gauge",
           "Heap memory ortserve's own code holds (connections, arenas, models' metadata; not ONNX Runtime's, "
           "not the tensor pool).");
    put(&x->b, "ortserve_heap_bytes %" PRIu64 "\n", osv_alloc_live_bytes());
    family(x, "ortserve_heap_allocations_total", "counter",
           "Heap allocations ortserve's own code has made (not ONNX Runtime's), counted as the scrape began "
           "(the scrape's own come after).");
    put(&x->b, "ortserve_heap_allocations_total %" PRIu64 "\n", x->allocs);
    family(x, "ortserve_accept_errors_total", "counter", "accept() failures (e.g. out of file descriptors).");
    put(&x->b, "ortserve_accept_errors_total %" PRIu64 "\n", osv_obs_event_count(OSV_OBS_ACCEPT_ERROR));
    family(x, "ortserve_rejected_connections_total", "counter",
           "Connections refused over --max-connections.");
    put(&x->b, "ortserve_rejected_connections_total %" PRIu64 "\n",
        osv_obs_event_count(OSV_OBS_REJECTED_CONNECTION));
    osv_sysmem_read(&mem);
    family(x, "ortserve_memory_limit_bytes", "gauge",
           "Memory limit of the process's cgroup (physical memory when none).");
    put(&x->b, "ortserve_memory_limit_bytes %" PRIu64 "\n", mem.effective);
    family(x, "ortserve_memory_usage_bytes", "gauge",
           "Memory charged to the process's cgroup (0 when unknown).");
    put(&x->b, "ortserve_memory_usage_bytes %" PRIu64 "\n", mem.cgroup_usage);
    family(x, "ortserve_memory_working_set_bytes", "gauge",
           "Cgroup memory usage minus inactive file cache (0 when unknown).");
    put(&x->b, "ortserve_memory_working_set_bytes %" PRIu64 "\n", mem.cgroup_working_set);
    family(x, "ortserve_memory_guard_working_set_bytes", "gauge",
           "The cgroup working set the memory guard last read (at most every 10 ms), which "
           "ortserve_memory_pressure was decided on (0 without a limit).");
    put(&x->b, "ortserve_memory_guard_working_set_bytes %" PRIu64 "\n", g->guard_working_set);
    family(x, "ortserve_memory_pressure", "gauge",
           "1 while the memory guard refuses inferences (working set above --memory-high-pct of the limit).");
    put(&x->b, "ortserve_memory_pressure %d\n", g->memory_pressure);
    family(x, "ortserve_deadline_refusals_total", "counter",
           "Inferences refused with 503 at admission: the queued work ahead would outlast their deadline.");
    put(&x->b, "ortserve_deadline_refusals_total %" PRIu64 "\n", g->deadline_refusals);
    family(x, "ortserve_memory_shed_total", "counter", "Inferences refused with 503 by the memory guard.");
    put(&x->b, "ortserve_memory_shed_total %" PRIu64 "\n", g->memory_shed);
    image_budget_families(x);
    cache_families(x);
    uint64_t exported, dropped, failed;
    osv_trace_counters(&exported, &dropped, &failed);
    family(x, "ortserve_trace_spans_exported_total", "counter", "Spans delivered to the OTLP endpoint.");
    put(&x->b, "ortserve_trace_spans_exported_total %" PRIu64 "\n", exported);
    family(x, "ortserve_trace_spans_dropped_total", "counter",
           "Spans dropped (export queue full or export failed).");
    put(&x->b, "ortserve_trace_spans_dropped_total %" PRIu64 "\n", dropped);
    family(x, "ortserve_trace_export_failures_total", "counter", "OTLP export requests that failed.");
    put(&x->b, "ortserve_trace_export_failures_total %" PRIu64 "\n", failed);
}

/* The standard process collector's metrics, from /proc/self. */
static void process_families(scrape_t *x, uint64_t start_wall_s)
{
    char stat[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    unsigned long utime = 0, stime = 0, vsize = 0;
    long rss = 0, tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE), fds = 0;
    struct rlimit rl;
    if (f && fgets(stat, sizeof stat, f)) {
        const char *p = strrchr(stat, ')'); /* comm may contain spaces */
        if (p)
            sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %lu %ld",
                   &utime, &stime, &vsize, &rss);
    }
    if (f)
        fclose(f);
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            fds += e->d_name[0] != '.';
        closedir(d);
        fds--; /* the directory stream itself */
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    family(x, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    put(&x->b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tick);
    family(x, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(&x->b, "process_resident_memory_bytes %ld\n", rss * page);
    family(x, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    put(&x->b, "process_virtual_memory_bytes %lu\n", vsize);
    family(x, "process_open_fds", "gauge", "Number of open file descriptors.");
    put(&x->b, "process_open_fds %ld\n", fds);
    family(x, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    put(&x->b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    family(x, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    put(&x->b, "process_start_time_seconds %" PRIu64 "\n", start_wall_s);
}

int osv_obs_render_metrics(const osv_obs_gauges_t *g, bool openmetrics, char **page, size_t *len)
{
    scrape_t x = {.om = openmetrics, .g = g, .allocs = osv_alloc_count()};
    size_t n_models = 0;
    if (g->repo)
        osv_repo_index(g->repo, true, NULL, 0, &n_models);
    x.cap_rows = n_models + 8; /* models loaded between the count and the walk are picked up next time */
    x.rows = osv_malloc(x.cap_rows * sizeof *x.rows);
    if (!x.rows || !grow(&x.b, 32768 + x.cap_rows * 16384)) {
        osv_free(x.rows);
        osv_free(x.b.p);
        return OSV_ENOMEM;
    }
    if (g->repo)
        osv_repo_foreach(g->repo, collect, &x);
    model_families(&x);
    server_families(&x);
    process_families(&x, osv_obs_start_time());
    if (x.om)
        put(&x.b, "# EOF\n");
    osv_free(x.rows);
    if (x.b.full) {
        osv_free(x.b.p);
        return OSV_ENOMEM;
    }
    *page = x.b.p;
    *len = x.b.len;
    return 0;
}

const char *osv_obs_metrics_content_type(bool openmetrics)
{
    return openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                       : "text/plain; version=0.0.4; charset=utf-8";
}
