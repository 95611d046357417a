/* obs.h — internal: the narrow recording API the HTTP front calls into (request ids, trace context,
 * per-request statistics and access log, SLOs, server-wide events) and the /metrics endpoint.
 * Recording is lock-free and allocation-free. */
#ifndef OSV_OBS_H
#define OSV_OBS_H

#include "http/http.h"

typedef struct osv_obs_opts {
    bool access_log;           /* one line per request (default on) */
    const char *otlp_endpoint; /* OTLP/HTTP traces URL, NULL = no export */
    const char *service_name;
    double trace_ratio; /* sampling ratio for requests without a sampled parent */
    int loops;          /* event-loop threads (one span ring each) */
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

/* A request head was parsed: request id (X-Request-ID or generated), trace context. Loop thread. */
void osv_obs_request_begin(osv_conn_t *c);
/* Response headers that carry the request's identity (traceparent). */
void osv_obs_response_headers(osv_conn_t *c);
/* The response was written: statistics, SLO, access log line, spans. Loop thread. */
void osv_obs_request_done(osv_conn_t *c);
/* Loop threads call this every iteration: flushes the access log when due. Returns the ms until the
 * next flush is due (-1: nothing pending). */
int osv_obs_tick(void);
void osv_obs_flush(void);

/* Server-wide events. Any thread. */
void osv_obs_note_timeout(osv_server_t *s, const char *kind);
void osv_obs_note_accept_error(osv_server_t *s, int err);
void osv_obs_note_rejected_connection(osv_server_t *s);

/* Outcome of a response status. */
osv_outcome_t osv_obs_outcome(int status);

/* Responses by status code, summed over loops. */
#define OSV_OBS_STATUS_SLOTS OSV_STATUS_SLOTS
int osv_obs_status_slot(int status);
int osv_obs_status_code(int slot);
void osv_obs_status_totals(osv_server_t *s, uint64_t out[OSV_OBS_STATUS_SLOTS]);

/* GET /metrics. */
void osv_obs_metrics(osv_conn_t *c);

#endif
