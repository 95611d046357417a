/* obs.h — internal: the narrow recording API every layer calls (request ids and trace context,
 * one record per finished request, server-wide events) and the /metrics page, rendered from plain
 * data the caller gathers. obs includes no front and no request layer: fronts fill the plain structs
 * below. Recording is lock-free and allocation-free; counters live in per-thread shards. */
#ifndef OSV_OBS_H
#define OSV_OBS_H

#include <stdbool.h>
#include <stdint.h>

#include "obs/trace.h"
#include "ortserve.h"
#include "ortserve/imaging.h"

typedef struct osv_obs_opts {
    bool access_log;           /* one line per request (default on) */
    const char *otlp_endpoint; /* OTLP/HTTP traces URL, NULL = no export */
    const char *service_name;
    double trace_ratio; /* sampling ratio for requests without a sampled parent */
    int loops;          /* threads that record requests (event loops: one shard and span ring each) */
} osv_obs_opts_t;

/* Starts observability (and the span exporter when an endpoint is set). Call once, before the
 * server runs; osv_obs_shutdown flushes and stops. */
int osv_obs_init(const osv_obs_opts_t *o, osv_err_t *err);
void osv_obs_shutdown(void);
uint64_t osv_obs_start_time(void); /* wall clock, seconds */

/* Repository load hook part: validates the model's "slo" section and attaches it. */
int osv_obs_model_hook(osv_model_t *m, osv_err_t *err);
/* The model's SLO, false when it has none: the latency objective in seconds (0 when it sets none),
 * the share of requests that must meet it (0..1) and the error budget (0..1). */
bool osv_obs_model_slo(const osv_model_t *m, double *latency_s, double *target, double *error_budget);

/* ---- a request's identity ---------------------------------------------------------------------- */

/* Request id and trace context of one request. Plain data owned by the front's request object;
 * written by the thread that owns the request. */
typedef struct osv_obs_ids {
    char request_id[64];
    uint8_t request_id_len; /* 0 until begun */
    osv_trace_ctx_t trace;
    const char *tracestate; /* the caller's tracestate (points into the caller's buffer) */
    uint32_t tracestate_len;
} osv_obs_ids_t;

/* From the request's own metadata (each may be NULL / 0): its X-Request-ID when printable (else a
 * generated one), its traceparent and tracestate. */
void osv_obs_ids_begin(osv_obs_ids_t *ids, const char *request_id, uint32_t request_id_len,
                       const char *traceparent, uint32_t traceparent_len, const char *tracestate,
                       uint32_t tracestate_len);
/* A request answered before its metadata was read (a malformed head): generated ids. Returns true
 * when it had to (ids were not begun). */
bool osv_obs_ids_ensure(osv_obs_ids_t *ids);
/* "00-<trace>-<span>-<flags>" for the response (55 bytes + NUL). */
void osv_obs_traceparent(const osv_obs_ids_t *ids, char out[56]);

/* ---- one record per finished request ------------------------------------------------------------- */

typedef enum osv_obs_proto { OSV_OBS_HTTP = 0, OSV_OBS_GRPC, OSV_OBS_PROTO_COUNT } osv_obs_proto_t;

/* A finished request, as the front saw it. Read during osv_obs_record only; the caller keeps it. */
typedef struct osv_obs_record {
    int shard;             /* the recording thread's shard (its event loop), < opts.loops */
    osv_obs_proto_t proto; /* which front */
    const char *method;    /* "GET", "POST", or a gRPC method name */
    const char *path;      /* as requested (escaped when logged) */
    uint32_t path_len;
    const char *route; /* route template for spans, e.g. "/v2/models/{model}/infer" */
    int status;        /* the front's status: an HTTP status code, or a gRPC code for OSV_OBS_GRPC */
    osv_outcome_t outcome;
    osv_model_t *model; /* the model it ran on, or NULL */
    bool counted;       /* already in the model's statistics (a retried record counts once) */
    osv_obs_ids_t *ids; /* ensured by osv_obs_record */
    uint64_t t_start;   /* monotonic ns of its first byte */
    uint64_t bytes_in, bytes_out;
    uint64_t ns[OSV_PHASE_COUNT];        /* phase durations; [OSV_PHASE_REQUEST] is set by osv_obs_record */
    uint64_t phase_t0[OSV_PHASE_COUNT], phase_t1[OSV_PHASE_COUNT]; /* monotonic start/end by phase (0 = absent) */
    uint64_t batch;                                   /* the batch size it ran with */
    uint64_t front_copied[OSV_COPY_REASON_COUNT];     /* bytes the front copied, by reason (readahead,
                                                         chunked, decompress) */
    uint64_t core_copied;                             /* bytes the core copied (binding fallbacks) */
    osv_copy_reason_t fallback;                       /* the core's binding: none or its fallback reason */
} osv_obs_record_t;

/* The outcome of an HTTP status (client error, capacity, timeout, server error). */
osv_outcome_t osv_obs_http_outcome(int status);

/* Records a finished request: statistics and SLO of its model, responses by status, access log line,
 * spans. Sets r->ns[OSV_PHASE_REQUEST] and r->counted. Call on the request's shard thread. */
void osv_obs_record(osv_obs_record_t *r);
/* Loop threads call this every iteration: flushes the access log when due. Returns the ms until the
 * next flush is due (-1: nothing pending). */
int osv_obs_tick(void);
void osv_obs_flush(void);

/* ---- server-wide events (any thread) -------------------------------------------------------------- */

typedef enum osv_obs_event {
    OSV_OBS_TIMEOUT_HEADER = 0, /* a connection timed out waiting for a request head */
    OSV_OBS_TIMEOUT_BODY,       /* ... for a request body, or the body was too slow */
    OSV_OBS_TIMEOUT_WRITE,      /* ... writing a response */
    OSV_OBS_TIMEOUT_IDLE,       /* an idle keep-alive connection was closed */
    OSV_OBS_ACCEPT_ERROR,       /* accept() failed (out of descriptors or memory) */
    OSV_OBS_REJECTED_CONNECTION, /* a connection refused: over --max-connections, or no memory */
    OSV_OBS_EVENT_COUNT
} osv_obs_event_t;

void osv_obs_note(osv_obs_event_t e);
uint64_t osv_obs_event_count(osv_obs_event_t e);
/* Responses of a front by status, summed over shards: up to cap (code, count) pairs with a non-zero
 * count; code 0 (HTTP) or -1 (gRPC) is "any other". Returns the number of pairs. */
int osv_obs_status_counts(osv_obs_proto_t proto, int codes[], uint64_t counts[], int cap);

/* ---- the metrics page ------------------------------------------------------------------------------- */

/* What the page shows beyond obs's own counters and the models' statistics: gathered by the caller
 * (the request layer, the transport) as plain values at scrape time. */
typedef struct osv_obs_gauges {
    const char *ort_version;
    int ort_api;
    bool ready;
    uint32_t queue_depth;
    int64_t inflight;
    uint32_t open_connections;
    uint64_t conn_buffers_in_use, conn_buffers_free;
    int memory_pressure;        /* the guard's decision ... */
    uint64_t guard_working_set; /* ... and the working set it last read: read before the decision, which
                                   the guard stores first, so the decision shown is the one made on this
                                   reading or a later one */
    uint64_t deadline_refusals, memory_shed;
    const osv_pool_t *pool;
    osv_img_budget_stats_t image_budget;
    osv_repo_t *repo;
    /* requests of model m waiting for a worker (NULL: 0) */
    uint32_t (*model_queued)(const osv_model_t *m);
} osv_obs_gauges_t;

/* Renders the page (Prometheus text 0.0.4, or OpenMetrics 1.0 with `openmetrics`) into a heap buffer
 * (*page, *len; the caller frees it with osv_free; not a pool slot: a scrape must work when the pool
 * is exhausted). OSV_ENOMEM when it cannot. Any thread. */
int osv_obs_render_metrics(const osv_obs_gauges_t *g, bool openmetrics, char **page, size_t *len);
/* The content type of a rendered page. */
const char *osv_obs_metrics_content_type(bool openmetrics);

#endif
