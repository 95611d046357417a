/* auth.h — internal: bearer-token authentication (`--auth-token-file`).
 *
 * The file holds one token per line (blank lines and lines starting with '#' are ignored; at most
 * OSV_AUTH_MAX_TOKENS tokens of RFC 6750's b64token characters, each at most OSV_AUTH_MAX_TOKEN
 * bytes), so a token can be rotated by adding the new one, reloading (SIGHUP), moving clients, and
 * removing the old one. A request is authorized when its `Authorization: Bearer <token>` matches
 * any token; every comparison takes time independent of the tokens' contents.
 *
 * Each token has an identity: a number given when the token first appears, kept by reloads for as
 * long as the token stays in the file, never given to another token. What a client creates (shared-
 * memory regions) belongs to that identity. */
#ifndef OSV_SERVE_AUTH_H
#define OSV_SERVE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ortserve/error.h"

#define OSV_AUTH_MAX_TOKENS 16
#define OSV_AUTH_MAX_TOKEN  4096

typedef struct osv_auth osv_auth_t;

/* Reads the token file. Refuses a file that is not a regular file, is writable by others, is larger
 * than 64 KiB, holds no token, or holds a malformed one (the error names the line, never the
 * token). `warn` (may be NULL) receives a warning for a file readable by group or others, else "".
 * Free with osv_auth_destroy. */
int osv_auth_create(const char *path, osv_auth_t **out, char *warn, size_t warn_cap, osv_err_t *err);
/* Re-reads the file; on any error the tokens in use stay as they were. Thread-safe against
 * osv_auth_check. Returns the number of tokens now in use (≥ 1) or a negative OSV_E* code. */
int osv_auth_reload(osv_auth_t *a, char *warn, size_t warn_cap, osv_err_t *err);
/* True when `value` (an Authorization header's value, NULL when absent) is "Bearer <token>" for
 * one of the tokens; then *id (may be NULL) gets the token's identity (never 0). Thread-safe. */
bool osv_auth_check(osv_auth_t *a, const char *value, size_t len, uint64_t *id);
/* True when identity `id` belongs to one of the tokens in use. Thread-safe. */
bool osv_auth_has(osv_auth_t *a, uint64_t id);
void osv_auth_destroy(osv_auth_t *a);

/* Constant-time equality of a[0..an) and b[0..bn) (bn ≥ 1): the time depends on an only. */
bool osv_auth_equal(const char *a, size_t an, const char *b, size_t bn);

#endif
