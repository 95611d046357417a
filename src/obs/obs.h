/* obs.h — internal: the narrow recording API the HTTP front calls into (request ids, per-request
 * statistics, server-wide events). Everything here is lock-free and allocation-free. */
#ifndef OSV_OBS_H
#define OSV_OBS_H

#include "http/http.h"

/* A request head was parsed: takes X-Request-ID (or generates one). Loop thread. */
void osv_obs_request_begin(osv_conn_t *c);
/* The response was written: records the request in its model's statistics. Loop thread. */
void osv_obs_request_done(osv_conn_t *c);

/* Server-wide events. Any thread. */
void osv_obs_note_timeout(osv_server_t *s, const char *kind);
void osv_obs_note_accept_error(osv_server_t *s, int err);
void osv_obs_note_rejected_connection(osv_server_t *s);

/* Outcome of a response status. */
osv_outcome_t osv_obs_outcome(int status);

#endif
