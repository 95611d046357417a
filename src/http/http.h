/* http.h — internal: the HTTP front's types shared by its files (server, loop, connection,
 * request, response) and the functions they call on each other.
 *
 * Threads. Each loop thread owns an epoll instance, a SO_REUSEPORT listener and the connections it
 * accepted; nothing else touches a connection except the one worker running its request (while the
 * connection is in state CONN_RUN, the loop leaves it alone). Workers hand finished requests back
 * through the loop's lock-free completion stack and an eventfd. */
#ifndef OSV_HTTP_H
#define OSV_HTTP_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "http/parser.h"
#include "obs/trace.h"
#include "ortserve.h"
#include "util/arena.h"
#include "util/json.h"

typedef struct osv_server osv_server_t;
typedef struct osv_loop osv_loop_t;
typedef struct osv_conn osv_conn_t;
typedef struct osv_sched osv_sched_t;
typedef struct osv_shm osv_shm_t;
typedef struct osv_auth osv_auth_t;

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
    int64_t deadline_ms;          /* default per-request deadline; 0 = none */
    uint32_t max_queue;           /* queued requests per model before 503 */
    uint64_t inline_threshold_ns; /* models faster than this run on the loop thread */
    int header_timeout_ms, body_timeout_ms, idle_timeout_ms, drain_timeout_ms;
    uint32_t retry_after_s;      /* Retry-After on 503 */
    uint32_t memory_high_pct;    /* memory guard: % of the cgroup limit (0 = off), server.c */
    const char *auth_token_file; /* bearer tokens required on all but health endpoints (auth.h) */
    bool allow_shm;
    bool model_control; /* the repository API may load/unload models (--model-control-mode explicit) */
    bool force_copy;    /* benchmarks: copy every tensor (honest comparison) */
    osv_pool_opts_t pool;
    /* Image limits for models whose config.json does not set them (see ortserve/imaging.h). */
    uint64_t image_max_pixels, image_max_bytes;
    uint32_t image_max_images;
} osv_server_opts_t;

void osv_server_opts_default(osv_server_opts_t *o);

/* ---- connections ---------------------------------------------------------------------------- */

typedef enum conn_state {
    CONN_HEAD,   /* waiting for / reading a request head */
    CONN_BODY,   /* receiving a request body */
    CONN_RUN,    /* handed to a worker (or waiting for a retry) */
    CONN_WRITE,  /* writing the response */
    CONN_LINGER, /* response sent, write side shut: discarding what the client still sends */
    CONN_CLOSED
} conn_state_t;

#define OSV_MAX_IOV      64
#define OSV_STATUS_SLOTS 20
#define OSV_HDR_BUF      1536

/* Where a request body is received. */
typedef struct body_plan {
    struct iovec iov[OSV_MAX_IOV]; /* destinations, in wire order */
    int n_iov, cur;
    uint64_t remaining; /* body bytes still to receive */
    bool in_buffer;     /* the destination is the connection buffer itself (no copy) */
    bool chunked;       /* chunked transfer coding: decoded into dst (see osv_conn_plan_chunked) */
    char *dst;
    uint64_t dst_cap, dst_len;
} body_plan_t;

typedef struct osv_response {
    bool ready; /* a worker prepared this response (the loop moves to CONN_WRITE) */
    int status;
    char hdr[OSV_HDR_BUF]; /* status line + headers (+ small bodies) */
    uint32_t hdr_len;
    struct iovec iov[OSV_MAX_IOV];
    int n_iov, cur_iov;
    uint64_t total, sent;
    bool close_after;
    osv_slot_t body_slot; /* slot holding a JSON body, released after the write */
} osv_response_t;

/* Continuation a handler installs to be called once the body has been received. */
typedef void (*body_done_fn)(osv_conn_t *c);

typedef struct osv_request {
    osv_http_head_t head;
    uint64_t t_start;          /* first byte of this request (monotonic ns) */
    uint64_t deadline;         /* absolute monotonic ns, 0 = none */
    uint64_t expected_wait_ns; /* set when admission refused the request for its deadline (sched.c) */
    uint64_t bytes_in;
    uint64_t bytes_in_buffer; /* bytes of this request consumed from the connection buffer */
    uint64_t copied;          /* body bytes the HTTP layer copied (readahead, chunked) */
    body_plan_t body;
    body_done_fn on_body;
    body_done_fn on_body_next;       /* osv_h_receive_body's caller */
    void (*on_timer)(osv_conn_t *c); /* RUN state: a retry waiting for its timer */
    bool continue_sent;
    bool chunked_done;    /* the final chunk (and trailers) of a chunked body was read */
    osv_slot_t body_slot; /* body held in a slot (large JSON, large JSON headers) */
    osv_slot_t inflated;  /* the decompressed body (Content-Encoding: gzip / deflate) */
    bool accept_encoded;  /* the handler takes compressed bodies */
    void *body_doc;       /* the parsed JSON of the body (tokens in the loop's scratch) */
    const char *body_ptr; /* received body (conn buffer or body_slot) */
    uint64_t body_len;
    void *ctx;                      /* handler state, in the arena */
    void (*cleanup)(osv_conn_t *c); /* releases handler state after the response is written */
    char request_id[64];
    uint8_t request_id_len;
    int retries;
    /* What the access log and metrics record about the request. */
    osv_model_t *model; /* the model it ran on (a reference, dropped in cleanup) */
    osv_outcome_t outcome;
    bool counted; /* recorded in a model's statistics */
    uint64_t ns[OSV_PHASE_COUNT];
    uint64_t batch;
    osv_copy_reason_t fallback;
    uint64_t core_copied; /* bytes the core copied (binding fallbacks) */
    const char *route;    /* route template for spans ("/v2/models/{model}/infer"), NULL = derived */
    osv_trace_ctx_t trace;
    const char *tracestate; /* the caller's tracestate (points into the buffer) */
    uint32_t tracestate_len;
    uint64_t phase_t0[4], phase_t1[4]; /* monotonic start/end of queue, input, infer, output */
} osv_request_t;

struct osv_conn {
    int fd;
    osv_loop_t *loop;
    conn_state_t state;
    uint64_t id;
    char *buf;              /* read buffer (from the loop's buffer list) */
    uint32_t cap, len, pos; /* bytes buffered, start of the current request */
    uint64_t timer_at;      /* monotonic ns, 0 = no timer */
    int timer_idx;          /* position in the loop's heap, -1 = none */
    bool readable;          /* socket may hold unread bytes (edge-triggered epoll) */
    bool peer_shut;         /* EPOLLRDHUP seen: the peer's FIN is queued, read until EOF */
    bool peer_closed;       /* read returned EOF */
    uint64_t lingered; /* bytes discarded in CONN_LINGER */
    osv_request_t req;
    osv_response_t res;
    osv_arena_t arena;
    osv_conn_t *next_done; /* completion stack link */
    osv_conn_t *next_free;
    osv_conn_t *prev_all, *next_all;
};

/* ---- loops ------------------------------------------------------------------------------------ */

struct osv_loop {
    int id;
    int epfd, listen_fd, wake_fd;
    int reserve_fd; /* a spare descriptor, given back to accept-and-refuse when out of them */
    pthread_t thread;
    osv_server_t *srv;
    osv_conn_t *free_conns;
    osv_conn_t *all; /* doubly linked list of open connections */
    uint32_t n_conns;
    uint32_t n_free_conns, free_conns_low; /* free list length and its low-water mark (loop.c) */
    char **free_bufs;
    uint32_t n_free_bufs, cap_free_bufs, free_bufs_low;
    /* Read buffers mapped (in use + free) and the free count, published for /metrics: written by
     * this loop's thread only, read by any. */
    _Atomic uint32_t n_bufs, n_free_bufs_seen;
    uint64_t next_sweep; /* when the free lists are trimmed next (monotonic ns) */
    osv_conn_t **heap; /* timer min-heap */
    uint32_t n_heap, cap_heap;
    _Atomic(osv_conn_t *) done; /* requests finished on workers, waiting to be written */
    osv_json_tok_t *toks;       /* parse scratch for the request being decoded on this thread */
    bool accepting;
    uint64_t accept_paused_until; /* after EMFILE: monotonic ns */
    uint64_t abandon_at;          /* drain timed out: when to give up on the last connections */
    int watch_slot;               /* this thread's deadline watchdog slot */
    uint64_t now;                 /* monotonic ns, read once per loop iteration (timers are coarse) */
    _Atomic uint64_t status[OSV_STATUS_SLOTS]; /* responses by status (obs.c's slot table) */
};

struct osv_server {
    osv_server_opts_t o;
    osv_env_t *env;
    osv_repo_t *repo;
    osv_pool_t *pool;
    osv_sched_t *sched;
    osv_shm_t *shm;
    osv_auth_t *auth;        /* NULL: no authentication */
    _Atomic int reload_auth; /* SIGHUP: re-read the token file (osv_server_run does) */
    sem_t wake;              /* posted by osv_server_stop/reload (sem_post is async-signal-safe) */
    void *control_sched;     /* admission state for control-plane tasks (model loads) */
    osv_loop_t *loops;
    int n_loops;
    uint16_t port;
    _Atomic int stopping; /* 1: stop accepting and drain; 2: drain timed out, close everything */
    _Atomic uint32_t conns;
    _Atomic int64_t inflight;
    uint64_t start_ns;
    _Atomic uint64_t next_conn_id;
    /* Server-wide counters (exported by the metrics layer). */
    _Atomic uint64_t timeouts[4]; /* header, body, write, idle */
    _Atomic uint64_t accept_errors, rejected_connections;
    /* Memory guard (osv_server_watch_memory): while the cgroup's working set is above
     * o.memory_high_pct of its limit, new inferences get 503 and worker runs take mem_gate one at a
     * time, so ONNX Runtime's arena does not grow by a concurrent run's worth. */
    uint64_t mem_limit;      /* the cgroup limit at start; 0 = no limit, no guard */
    uint64_t mem_next_check; /* watchdog thread only */
    _Atomic int mem_pressure;
    _Atomic uint64_t mem_working_set; /* what the guard last read; stored after mem_pressure */
    _Atomic uint64_t mem_shed;
    _Atomic uint64_t deadline_refusals; /* refused at admission: the queue ahead outlasts the deadline */
    pthread_mutex_t mem_gate;
};

/* ---- functions the files provide to each other ------------------------------------------------ */

/* server.c */
/* Re-reads the cgroup's memory use at most every 10 ms and sets or clears mem_pressure (hysteresis:
 * clears 5 points below the mark). Called by the deadline watchdog thread only. */
void osv_server_watch_memory(osv_server_t *s, uint64_t now);
/* Admission: when the memory guard is on, answers 503 (Retry-After) and returns true; with
 * body_unread, the connection closes after the answer (the rest of the body is never read). Loop
 * thread. */
bool osv_server_memory_refuse(osv_conn_t *c, bool body_unread);
/* Answers a request osv_sched_submit refused (rc != 0; nothing when rc is 0): 503 + Retry-After for
 * a full queue, or for a deadline the queued work ahead would make it miss (counted). Loop thread. */
void osv_http_refuse_queued(osv_conn_t *c, int rc, const char *model);
int osv_server_create(const osv_server_opts_t *o, osv_env_t *env, osv_repo_t *repo, osv_server_t **out,
                      osv_err_t *err);
int osv_server_run(osv_server_t *s);     /* blocks until stopped and drained */
void osv_server_stop(osv_server_t *s);   /* async-signal-safe: starts the drain */
void osv_server_reload(osv_server_t *s); /* async-signal-safe: re-read the auth token file */
void osv_server_destroy(osv_server_t *s);
/* The repository load hook: checks a model can be served and attaches its scheduling state. ud is
 * the server options (for defaults). */
int osv_server_model_hook(void *ud, osv_model_t *m, osv_err_t *err);

/* loop.c */
void *osv_loop_main(void *arg);
/* Memory one open connection with a request in progress holds: its read buffer, its object and the
 * arena it keeps (the default --max-connections divides the connection budget by this). */
uint64_t osv_loop_conn_bytes(const osv_server_opts_t *o);
void osv_loop_wake(osv_loop_t *l);
/* A worker finished conn c's request: queue it for writing on its loop (thread-safe). */
void osv_loop_complete(osv_conn_t *c);
/* Body destinations: the next n body bytes into the connection buffer (fails when they do not
 * fit), or into caller memory (iovecs, in wire order). Then osv_conn_receive_body receives them and
 * calls done on the loop thread. Bytes that already arrived are taken first (copied, counted). */
int osv_conn_plan_buffer(osv_conn_t *c, uint64_t n);
int osv_conn_plan_iov(osv_conn_t *c, const struct iovec *iov, int n);
/* A chunked body, decoded into dst[0..cap) (a counted copy, reason "chunked"); the decoded length
 * is in c->req.body.dst_len when done runs. More than cap bytes: 413. */
void osv_conn_plan_chunked(osv_conn_t *c, char *dst, uint64_t cap);
void osv_conn_receive_body(osv_conn_t *c, body_done_fn done);
/* True while bytes of the current request's body have not been read from the connection: an answer
 * given now must close the connection (they would be taken for the next request). The one place
 * that decides whether a connection is reused after a response (respond.c, loop.c). */
bool osv_conn_body_unread(const osv_conn_t *c);
/* Where osv_conn_plan_buffer put the bytes (valid after they were received). */
static inline const char *osv_conn_buffer_at(const osv_conn_t *c, uint64_t n)
{
    return c->buf + c->pos + c->req.bytes_in_buffer - n;
}
/* Arms the connection's timer `ms` from now (0 disarms). */
void osv_conn_set_timer(osv_conn_t *c, uint64_t ns);
/* Sends the response prepared in c->res (on the loop thread); continues with the next request. */
void osv_conn_send(osv_conn_t *c);
void osv_loop_free(osv_loop_t *l);

/* respond.c: building responses into c->res. */
void osv_res_begin(osv_conn_t *c, int status);
void osv_res_header(osv_conn_t *c, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void osv_res_header_raw(osv_conn_t *c, const char *name, size_t name_len, const char *value,
                        size_t value_len);
/* Finishes the head with Content-Length = body_len and queues iov[0] = head. */
void osv_res_end_head(osv_conn_t *c, uint64_t body_len);
void osv_res_add_iov(osv_conn_t *c, const void *p, uint64_t len);
/* Complete responses. */
void osv_res_json(osv_conn_t *c, int status, const char *body, size_t len);
void osv_res_error(osv_conn_t *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void osv_res_error_code(osv_conn_t *c, int code, const char *msg);
void osv_res_empty(osv_conn_t *c, int status);
/* A JSON writer over a pool slot of at least `cap` bytes for the response body; NULL when the
 * pool is exhausted (an error response has then been prepared). */
char *osv_res_body_buf(osv_conn_t *c, uint64_t cap);
const char *osv_status_text(int status);
/* One table: ortserve error code -> HTTP status. */
int osv_http_status(int code);

/* router.c */
void osv_route(osv_conn_t *c);

/* Request helpers. */
const osv_http_header_t *osv_req_header(const osv_conn_t *c, const char *name);
bool osv_req_method(const osv_conn_t *c, int method);

#endif
