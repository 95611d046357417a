/* server.h — internal: the HTTP server as its owner (`ortserve serve`) sees it: every option, the
 * lifecycle, and what the server planned at start-up. The rest of the front is http.h's; the CLI
 * includes only this.
 *
 * Threads: create, run and destroy on one thread (the main one); stop and reload are
 * async-signal-safe; osv_server_get_plan reads fields fixed at create (any thread). */
#ifndef OSV_HTTP_SERVER_H
#define OSV_HTTP_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ortserve.h"
#include "ortserve/imaging.h"

typedef struct osv_server osv_server_t;

/* Every option of `ortserve serve` (flags and ORTSERVE_* variables map 1:1 onto these). */
typedef struct osv_server_opts {
    const char *host;
    int port;
    int loops;   /* event-loop threads (0 = number of cores) */
    int workers; /* inference worker threads (0 = number of cores) */
    uint32_t max_connections; /* 0 = from the memory plan (osv_server_create) */
    uint64_t max_body_bytes;   /* request body limit (413 beyond) */
    uint32_t max_header_bytes; /* request line + headers (431 beyond) */
    uint32_t max_headers;      /* header count (431 beyond) */
    uint32_t max_json_depth;
    uint32_t max_json_tokens;
    uint32_t conn_buffer;         /* per-connection read buffer, ≥ max_header_bytes */
    int64_t deadline_ms; /* default per-request deadline; 0 = none; -1 (OSV_DEADLINE_AUTO, the default):
                            500 ms, or 10 x a slower model's warm-up run */
    uint32_t max_queue;           /* queued requests per model before 503 */
    uint64_t inline_threshold_ns; /* models faster than this run on the loop thread */
    int header_timeout_ms, body_timeout_ms, idle_timeout_ms, drain_timeout_ms;
    uint32_t min_body_rate;  /* bytes/s a body must average after body_rate_grace_ms (0 = off) */
    int body_rate_grace_ms;
    uint32_t retry_after_s;      /* Retry-After on 503 */
    uint32_t memory_high_pct;    /* memory guard: % of the cgroup limit (0 = off), server.c */
    const char *auth_token_file; /* bearer tokens required on all but health endpoints (auth.h) */
    bool allow_shm;
    /* Registered shared memory, all regions together (0 = the pool's budget). */
    uint64_t shm_max_bytes;
    uint64_t cache_bytes; /* the response cache's budget (--cache-size); 0 = no cache */
    bool model_control; /* the repository API may load/unload models (--model-control-mode explicit) */
    bool force_copy;    /* benchmarks: copy every tensor (honest comparison) */
    osv_pool_opts_t pool;
    /* Image limits for models whose config.json does not set them (see ortserve/imaging.h). */
    uint64_t image_max_pixels, image_max_bytes;
    uint32_t image_max_images;
    /* Bytes image decoding may hold at once, server-wide (0 = osv_img_budget_default of what the pool
     * and ONNX Runtime's runs leave; when set, the pool's default budget keeps out of it). */
    uint64_t image_decode_budget;
} osv_server_opts_t;

void osv_server_opts_default(osv_server_opts_t *o);

/* Builds the server over a repository whose models are loaded: the request layer (pool, workers,
 * watchdog...), the transport with the HTTP front listening on opts.host:opts.port (a port another
 * process listens on: OSV_EEXIST, "address already in use"). env and repo must outlive it; *out owns
 * the rest until osv_server_destroy. */
int osv_server_create(const osv_server_opts_t *o, osv_env_t *env, osv_repo_t *repo, osv_server_t **out,
                      osv_err_t *err);
/* OSV_EEXIST ("address already in use") when another process listens on host:port: ask before the
 * slow part of start-up (loading models); osv_server_create checks again. */
int osv_server_check_port(const char *host, int port, osv_err_t *err);
int osv_server_run(osv_server_t *s);     /* blocks until stopped and drained (OSV_ETIMEDOUT: cut short) */
void osv_server_stop(osv_server_t *s);   /* async-signal-safe: starts the drain */
void osv_server_reload(osv_server_t *s); /* async-signal-safe: re-read the auth token file */
void osv_server_destroy(osv_server_t *s);
/* The repository load hook: checks a model can be served and attaches its scheduling state. ud is
 * the server options (for defaults), which must outlive the repository. */
int osv_server_model_hook(void *ud, osv_model_t *m, osv_err_t *err);

/* What the server decided at create, from its options and the memory plan. */
typedef struct osv_server_plan {
    uint16_t port;                /* the bound port (opts.port 0: the one the kernel picked) */
    int loops;                    /* event-loop threads */
    int workers;                  /* inference worker threads */
    uint32_t max_connections;     /* opts, or from the memory plan */
    uint64_t shm_max_bytes;       /* registered shared memory, all regions */
    uint64_t image_decode_budget; /* bytes of image decoding at once */
    osv_pool_t *pool;             /* the slot pool (lives as long as the server) */
    osv_img_budget_t *img_budget; /* the decode budget (idem) */
} osv_server_plan_t;

void osv_server_get_plan(const osv_server_t *s, osv_server_plan_t *out);

/* What a second front (gRPC, src/grpc) shares with this server: its request layer, its transport
 * (listen on it before osv_server_run) and its count of requests in flight (the watchdog's busy
 * hint). They live until osv_server_destroy; destroy the other front after it. */
typedef struct osv_serve osv_serve_t;
typedef struct osv_net osv_net_t;
typedef struct osv_server_shared {
    osv_serve_t *serve;
    osv_net_t *net;
    _Atomic int64_t *inflight;
} osv_server_shared_t;

void osv_server_get_shared(osv_server_t *s, osv_server_shared_t *out);

/* Model m's default deadline (ms, 0 = none) and, in words, where it comes from. */
int64_t osv_server_model_deadline(const osv_server_t *s, const osv_model_t *m, const char **source);

#endif
