/* errmap.h — internal: the one table from an ortserve error code to what a front answers with.
 *
 * A code's category decides the answer, never its message: bad input and failed model loads
 * (400 / INVALID_ARGUMENT, as Triton answers a load that fails), not
 * found (404 / NOT_FOUND), unavailable or out of capacity (503 with Retry-After / UNAVAILABLE), too
 * large (413 / RESOURCE_EXHAUSTED), unsupported media (415 / INVALID_ARGUMENT), deadline (504 /
 * DEADLINE_EXCEEDED), not implemented (501 / UNIMPLEMENTED), a framing violation (400 /
 * INTERNAL, as gRPC answers one), forbidden (403 / PERMISSION_DENIED), conflict (409 / ALREADY_EXISTS),
 * internal (500 / INTERNAL). Pure functions; any thread. */
#ifndef OSV_SERVE_ERRMAP_H
#define OSV_SERVE_ERRMAP_H

#include <stdbool.h>

/* HTTP status for code (0 -> 200). */
int osv_status_http(int code);
/* gRPC status code for code (0 -> OK). */
int osv_status_grpc(int code);
/* True when the answer tells the client to retry later (HTTP adds Retry-After). */
bool osv_status_retry(int code);

#endif
