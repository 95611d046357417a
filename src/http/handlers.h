/* handlers.h — internal: the endpoint handlers the router dispatches to. Each runs on the loop
 * thread, reads c->req, and ends by preparing a response (osv_res_*) or by continuing
 * asynchronously (body receive, worker). */
#ifndef OSV_HTTP_HANDLERS_H
#define OSV_HTTP_HANDLERS_H

#include "http/http.h"

/* Path parameters extracted by the router. */
typedef struct osv_route {
    const char *model;
    uint32_t model_len;
    int64_t version; /* -1 when the path names none */
    const char *region;
    uint32_t region_len;
} osv_route_t;

/* kserve.c: health, server/model metadata, readiness, Triton model config. */
void osv_h_live(osv_conn_t *c);
void osv_h_ready(osv_conn_t *c);
void osv_h_server_meta(osv_conn_t *c);
void osv_h_model_meta(osv_conn_t *c, const osv_route_t *r);
void osv_h_model_ready(osv_conn_t *c, const osv_route_t *r);
void osv_h_model_config(osv_conn_t *c, const osv_route_t *r);

/* stats.c: statistics extension, and GET /metrics. */
void osv_h_stats(osv_conn_t *c, const osv_route_t *r);
void osv_h_metrics(osv_conn_t *c);

/* repository.c: model repository extension. */
void osv_h_repo_index(osv_conn_t *c);
void osv_h_repo_load(osv_conn_t *c, const osv_route_t *r, bool load);

/* infer.c: inference (JSON, binary extension, shared memory, classification). */
void osv_h_infer(osv_conn_t *c, const osv_route_t *r);
/* POST /infer on a repository with exactly one model. */
void osv_h_infer_alias(osv_conn_t *c);

/* classify.c: POST /v2/models/{m}[/versions/{v}]/classify — encoded images in, top-k labels out. */
void osv_h_classify(osv_conn_t *c, const osv_route_t *r);

/* shm.c: system shared memory extension. */
void osv_h_shm_status(osv_conn_t *c, const osv_route_t *r);
void osv_h_shm_register(osv_conn_t *c, const osv_route_t *r);
void osv_h_shm_unregister(osv_conn_t *c, const osv_route_t *r);

/* Helpers shared by handlers (kserve.c). */
/* Sets c->req.deadline from the model's deadline_ms (else --deadline-ms) and the Ortserve-Timeout-Ms
 * header, which may shorten it but not lift it (0 = not set); answers 400 and returns -1 for a
 * malformed header. Saturating: no timeout wraps into an immediate 504. */
int osv_h_deadline(osv_conn_t *c, const osv_model_t *m);
/* Shortens the deadline to n units (unit_ns each) after the request's start; 0 leaves it as is. */
void osv_h_deadline_shorten(osv_conn_t *c, uint64_t n, uint64_t unit_ns, osv_deadline_src_t src);
/* One row of the repository index as Triton writes it: {"name", "version" (a string), "state",
 * "reason"} (repository.c; also the not-ready answer of /v2/health/ready). */
void osv_h_index_row(osv_jw_t *w, const osv_repo_entry_t *e);
/* Looks up the route's model (taking a reference) or answers 404/503 and returns NULL. */
osv_model_t *osv_h_model(osv_conn_t *c, const osv_route_t *r);
/* Receives a small JSON body (≤ limit) into the connection buffer or a slot, then calls done. An
 * empty body is allowed (done sees body_len 0). */
void osv_h_receive_json(osv_conn_t *c, body_done_fn done);
/* The same for any body up to `limit` bytes (413 beyond). */
void osv_h_receive_body(osv_conn_t *c, uint64_t limit, body_done_fn done);
/* Only the first n bytes of a Content-Length body (infer's JSON header; the rest is received into
 * slots later). A chunked or compressed body is received whole, as by osv_h_receive_body. */
void osv_h_receive_body_prefix(osv_conn_t *c, uint64_t n, uint64_t limit, body_done_fn done);
/* Parses c->req.body_ptr as JSON into the loop's token scratch; answers 400 and returns -1 on error. */
int osv_h_parse_json(osv_conn_t *c, osv_json_doc_t *doc);

#endif
