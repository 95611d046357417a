/* trace.h — internal: W3C trace context and OTLP/HTTP span export.
 *
 * Every request carries a trace context: the caller's `traceparent` (when valid) or a new trace id,
 * plus a fresh span id for ortserve's server span, returned in the response's `traceparent`.
 * Sampling is parent-based: a sampled parent is always sampled; requests without a parent are
 * sampled with the configured ratio. With an OTLP endpoint, sampled requests produce spans (the
 * request, and its queue / compute input / infer / output phases) that loop threads push into
 * their own lock-free single-producer rings; one background thread batches them into OTLP JSON and
 * POSTs them with libcurl. A full ring drops spans (counted) — a request never waits for export.
 * Without an endpoint there is no exporter thread and nothing is recorded. */
#ifndef OSV_OBS_TRACE_H
#define OSV_OBS_TRACE_H

#include <stdbool.h>
#include <stdint.h>

#include "ortserve/stats.h"

typedef struct osv_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];   /* ortserve's server span */
    uint8_t parent_id[8]; /* the caller's span, when has_parent */
    bool has_parent;
    bool sampled;
} osv_trace_ctx_t;

typedef struct osv_trace_opts {
    const char *endpoint;     /* OTLP/HTTP traces URL; NULL or "" = no export */
    const char *service_name; /* resource service.name */
    double ratio;             /* sampling ratio for requests without a parent, 0..1 */
    uint32_t ring;            /* spans buffered per loop before drops (default 4096) */
    uint32_t batch;           /* spans per export request (default 512) */
    uint32_t interval_ms;     /* export period (default 1000) */
    int loops;                /* producer threads (one ring each) */
} osv_trace_opts_t;

int osv_trace_init(const osv_trace_opts_t *o, char *err, unsigned errcap);
/* Flushes what is queued and stops the exporter. */
void osv_trace_shutdown(void);
bool osv_trace_exporting(void);

/* Builds the request's context from a traceparent header value (may be NULL). */
void osv_trace_begin(osv_trace_ctx_t *t, const char *traceparent, uint32_t len);
/* "00-<trace>-<span>-<flags>" (55 bytes + NUL) for the response. */
void osv_trace_format(const osv_trace_ctx_t *t, char out[56]);
/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void osv_trace_hex(const uint8_t *b, int n, char *out);

/* A finished request, as the exporter needs it (copied into the ring; no pointers kept). */
typedef struct osv_span_req {
    const osv_trace_ctx_t *ctx;
    const char *tracestate;
    uint32_t tracestate_len;
    const char *method, *route;
    const char *model;
    int64_t version;
    int status;
    const char *request_id;
    const char *binding;
    uint64_t batch, copied, bytes_in, bytes_out;
    uint64_t start_mono, end_mono;         /* the request */
    uint64_t phase_start[OSV_PHASE_COUNT], phase_end[OSV_PHASE_COUNT]; /* by osv_phase_t (0 = absent) */
} osv_span_req_t;

/* Queues the request's spans on loop `loop` (its ring). Lock-free; drops when full. */
void osv_trace_record(int loop, const osv_span_req_t *r);

/* Counters for the metrics page. */
void osv_trace_counters(uint64_t *exported, uint64_t *dropped, uint64_t *failed_exports);

#endif
