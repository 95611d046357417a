/* server.h — fuzz support: a real ortserve server (repository of synthetic models, slot pool, shared
 * memory registry, scheduler — built by osv_server_create) whose event loop is driven on the calling
 * thread, one connection at a time, by the transport's and the HTTP front's own code (net/loop.c,
 * http/conn.c) over a socketpair.
 *
 * A harness hands fz_conn_run() the bytes a client sends; they are written to the peer end of the
 * socketpair (then shut down for writing, so the server sees EOF), and the loop code reads, parses,
 * routes, receives bodies, runs models inline and writes responses exactly as it does in
 * `ortserve serve`. Every response is checked as it completes (status line, CRLF discipline,
 * Content-Length against the bytes written, no body for HEAD), and after the connection closes the
 * server must be back at rest: no pool slot in use, nothing in flight, no connection open, every
 * model reference returned. A violation aborts (a crash for libFuzzer).
 *
 * Models served (from fz_models_dir(), copied into a temporary repository that is removed once
 * loaded): mlp (with a labels file), identity (14 datatypes incl. BYTES), dynamic, scale2x.
 * Shared-memory regions "r0" (64 KiB) and "r1" (4 KiB, offset 4096) are registered on an object of
 * the harness's own (FZ_SHM_KEY). Limits are small so that fuzzing stays fast (see server.c). */
#ifndef OSV_FUZZ_SERVER_H
#define OSV_FUZZ_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http.h"

#define FZ_MAX_RESPONSES 64
#define FZ_SHM_KEY       "ortserve-fuzz"
#define FZ_SHM_BYTES     (64u << 10)

/* What came back on one connection, in order (the first FZ_MAX_RESPONSES responses). */
typedef struct fz_result {
    int n;                         /* responses completed */
    int status[FZ_MAX_RESPONSES];  /* their HTTP statuses */
    bool closes[FZ_MAX_RESPONSES]; /* the connection was closed (or lingered) after it */
    char ids[FZ_MAX_RESPONSES][24]; /* their X-Request-ID (the request's own, else a generated one) */
} fz_result_t;

/* Builds the server once; aborts with a message when it cannot (models missing, ...). */
osv_server_t *fz_server(void);

/* Runs one client connection that sends data[0..len) and then closes its write side; returns when
 * the server has closed the connection. res may be NULL. */
void fz_conn_run(const void *data, size_t len, fz_result_t *res);

/* The same for a connection of front f (registered on the server's transport, e.g. fz_grpc_front()):
 * the server must be at rest once it closed. */
void fz_front_run(const osv_front_t *f, const void *data, size_t len);

/* The gRPC front on the fuzz server's transport and request layer (grpc_front.c). */
const osv_front_t *fz_grpc_front(void);

/* Unregisters every shared-memory region and registers the harness's own "r0" and "r1" again. */
void fz_shm_reset(void);

#endif
