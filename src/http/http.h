/* http.h — internal: the HTTP/1.1 front's types shared by its files (server, connection, request,
 * response, handlers) and the functions they call on each other.
 *
 * Threads. The transport (net/net.h) gives each connection to one loop thread; nothing else touches
 * it except the one worker running its request — while the connection is in state CONN_RUN the
 * loop leaves it alone, and the worker hands it back with osv_conn_complete (a post to the loop). */
#ifndef OSV_HTTP_H
#define OSV_HTTP_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "http/parser.h"
#include "http/server.h"
#include "net/net.h"
#include "obs/obs.h"
#include "serve/serve.h"
#include "ortserve.h"
#include "ortserve/imaging.h"
#include "util/arena.h"
#include "util/json.h"

typedef struct osv_conn osv_conn_t;


/* ---- connections ---------------------------------------------------------------------------- */

typedef enum conn_state {
    CONN_HEAD,   /* waiting for / reading a request head */
    CONN_BODY,   /* receiving a request body */
    CONN_RUN,    /* handed to a worker (or waiting for a retry) */
    CONN_WRITE,  /* writing the response */
    CONN_LINGER, /* response sent, write side shut: net discards what the client still sends */
    CONN_CLOSED  /* released (net recycles the object) */
} conn_state_t;

#define OSV_MAX_IOV      64
#define OSV_HDR_BUF      1536

/* Thread labels on the request and response fields below (libuv's public/read-only/private, for
 * threads):
 *   [loop]    written on the connection's loop thread only (read by a worker while it holds the
 *             request, never written there);
 *   [holder]  written by whoever holds the request: the loop thread, or — while the connection is in
 *             CONN_RUN — the one worker running it. The hand-offs are ordered (osv_serve_submit's
 *             queue lock one way, osv_conn_complete's release/acquire post the other), so no field is
 *             ever written by two threads at once, and none needs to be atomic.
 * Both structs are reset between requests by conn.c (conn_next); their memory is the connection's. */

/* Where a request body is received. [loop] */
typedef struct body_plan {
    struct iovec iov[OSV_MAX_IOV]; /* destinations, in wire order */
    int n_iov, cur;
    uint64_t remaining; /* body bytes still to receive */
    bool in_buffer;     /* the destination is the connection buffer itself (no copy) */
    bool chunked;       /* chunked transfer coding: decoded into dst (see osv_conn_plan_chunked) */
    char *dst;          /* = the request's body_slot, grown as the body arrives */
    uint64_t dst_cap, dst_len, dst_limit;
} body_plan_t;

/* The response being built and written. [holder], except the write progress (cur_iov, sent: [loop]). */
typedef struct osv_response {
    bool ready; /* [holder: the worker] it prepared this response; the loop moves to CONN_WRITE */
    int status;
    char hdr[OSV_HDR_BUF]; /* status line + headers (+ small bodies: respond.c) */
    uint32_t hdr_len;
    struct iovec iov[OSV_MAX_IOV]; /* iov[0] = hdr; the rest point where the bytes already are */
    int n_iov, cur_iov;
    uint64_t total, sent;
    bool close_after;
    osv_slot_t body_slot; /* slot holding a JSON body, released after the write */
} osv_response_t;

/* Continuation a handler installs to be called once the body has been received. */
typedef void (*body_done_fn)(osv_conn_t *c);

typedef struct osv_request {
    /* [loop]: framing and reception */
    osv_http_head_t head;      /* views into the connection buffer (valid until the next request) */
    uint64_t t_start;          /* first byte of this request (monotonic ns) */
    uint64_t t_body;           /* when receiving its body began (the minimum rate counts from here) */
    uint64_t bytes_in;
    uint64_t bytes_in_buffer; /* bytes of this request consumed from the connection buffer */
    body_plan_t body;
    body_done_fn on_body;
    body_done_fn on_body_next;       /* osv_h_receive_body's caller */
    void (*on_timer)(osv_conn_t *c); /* RUN state: a retry waiting for its timer */
    bool continue_sent;
    bool chunked_done;    /* the final chunk (and trailers) of a chunked body was read */
    bool accept_encoded;  /* the handler takes compressed bodies */
    int retries;
    osv_obs_ids_t ids;    /* request id and trace context (obs.h), read from the head */
    uint64_t auth_id;     /* the bearer token that authorized the request (osv_auth_check), 0 without */
    const char *route;    /* route template for spans ("/v2/models/{model}/infer"), NULL = derived */

    /* [holder]: the handler's work */
    uint64_t deadline;         /* absolute monotonic ns, 0 = none */
    uint64_t deadline_ms;      /* its length and who set it (504 messages) */
    osv_deadline_src_t deadline_src;
    uint64_t expected_wait_ns; /* set when admission refused the request for its deadline (sched.c) */
    uint64_t copied[OSV_COPY_REASON_COUNT]; /* bytes this front copied, by reason (readahead, chunked,
                                               decompress) */
    /* Set by a worker task that prepared no response: the loop calls it when the task completes
     * (work moved off the loop, e.g. inflating a body, then the handler goes on). */
    void (*resume)(osv_conn_t *c);
    osv_stask_t offload;  /* work moved to a worker (inflating the body): the serve layer's while queued */
    osv_slot_t body_slot; /* body held in a slot (large JSON, large JSON headers) */
    osv_slot_t inflated;  /* the decompressed body (Content-Encoding: gzip / deflate) */
    void *body_doc;       /* the parsed JSON of the body (tokens in the loop's scratch) */
    const char *body_ptr; /* received body (conn buffer or body_slot) */
    uint64_t body_len;
    void *ctx;                      /* handler state, in the arena */
    void (*cleanup)(osv_conn_t *c); /* releases handler state after the response is written (loop) */

    /* [holder]: what the access log and metrics record about the request */
    osv_model_t *model; /* the model it ran on (a reference, dropped in cleanup) */
    osv_outcome_t outcome;
    bool counted; /* recorded in a model's statistics */
    uint64_t ns[OSV_PHASE_COUNT];
    uint64_t batch;
    osv_copy_reason_t fallback;
    uint64_t core_copied; /* bytes the core copied (binding fallbacks) */
    uint64_t phase_t0[OSV_PHASE_COUNT], phase_t1[OSV_PHASE_COUNT]; /* monotonic start/end by phase */
} osv_request_t;

/* One HTTP connection: net's part first (net/net.h), then the front's. Owned by its loop thread;
 * while state is CONN_RUN the worker running its request may write req and res ([holder] fields),
 * and nothing else touches it until that worker posts `done` (osv_conn_complete). */
struct osv_conn {
    osv_nconn_t nc;
    osv_server_t *srv;  /* read-only */
    conn_state_t state; /* [loop] */
    osv_request_t req;
    osv_response_t res;
    osv_post_t done; /* [holder: the worker] posted when it is done; net links it while queued */
};

/* ---- the server --------------------------------------------------------------------------------- */

/* The HTTP server. Labels: read-only (set by osv_server_create on the main thread, read by any),
 * per-loop (element i written by loop thread i only), and the atomics with their writers. */
struct osv_server {
    /* read-only after osv_server_create */
    osv_server_opts_t o;
    osv_serve_t *serve; /* the request layer (serve/serve.h) */
    /* the request layer's objects, cached (they live as long as serve) */
    osv_env_t *env;
    osv_repo_t *repo;
    osv_pool_t *pool;
    osv_img_budget_t *img_budget;
    osv_shm_t *shm;
    osv_auth_t *auth; /* NULL: no authentication */
    osv_net_t *net;   /* the transport: loops, listeners, connections */
    osv_front_t front;
    int n_loops;
    uint16_t port;
    uint64_t start_ns;
    /* JSON parse scratch, one array per loop thread (index osv_loop_index): written by that thread */
    osv_json_tok_t **toks;
    /* written by signal handlers (async-signal-safe) and the main thread */
    _Atomic int reload_auth; /* SIGHUP: re-read the token file (osv_server_run does) */
    sem_t wake;              /* posted by osv_server_stop/reload (sem_post is async-signal-safe) */
    _Atomic int stopping;    /* 1: stop accepting and drain; 2: drain timed out, close everything */
    /* written by loop threads, read by anyone */
    _Atomic int64_t inflight;
};

/* ---- functions the files provide to each other ------------------------------------------------ */

/* server.c */
/* Admission: when the memory guard is on, answers 503 (Retry-After) and returns true. Loop thread. */
bool osv_server_memory_refuse(osv_conn_t *c);
/* Answers a request osv_serve_submit refused (rc < 0; nothing otherwise): its status from the table
 * (503 + Retry-After for a full queue or a deadline the queued work ahead would make it miss). */
void osv_http_refuse_queued(osv_conn_t *c, int rc, const osv_err_t *err);

/* conn.c: the HTTP/1.1 front over net (osv_front_t callbacks in osv_http_front_init). */
void osv_http_front_init(osv_server_t *s, osv_front_t *f);
/* Memory one open connection with a request in progress holds (net's osv_net_conn_bytes). */
uint64_t osv_conn_bytes(const osv_server_opts_t *o);
/* A worker finished conn c's request: hand it back to its loop (thread-safe). */
void osv_conn_complete(osv_conn_t *c);
/* The JSON token scratch of the calling loop thread. */
static inline osv_json_tok_t *osv_conn_toks(const osv_conn_t *c)
{
    return c->srv->toks[osv_loop_index(c->nc.loop)];
}
/* Body destinations: the next n body bytes into the connection buffer (fails when they do not
 * fit), or into caller memory (iovecs, in wire order). Then osv_conn_receive_body receives them and
 * calls done on the loop thread. Bytes that already arrived are taken first (copied, counted). */
int osv_conn_plan_buffer(osv_conn_t *c, uint64_t n);
int osv_conn_plan_iov(osv_conn_t *c, const struct iovec *iov, int n);
/* A chunked body, decoded into c->req.body_slot (a counted copy, reason "chunked"), which starts
 * small and is replaced by a larger slot as the body grows (a body that trickles in holds a small
 * slot); the decoded length is in c->req.body.dst_len when done runs. More than `limit` bytes: 413;
 * no slot for what arrived: 503. */
void osv_conn_plan_chunked(osv_conn_t *c, uint64_t limit);
void osv_conn_receive_body(osv_conn_t *c, body_done_fn done);
/* True while bytes of the current request's body have not been read from the connection: an answer
 * given now must close the connection (they would be taken for the next request). The one place
 * that decides whether a connection is reused after a response (respond.c, conn.c). */
bool osv_conn_body_unread(const osv_conn_t *c);
/* Where osv_conn_plan_buffer put the bytes (valid after they were received). */
static inline const char *osv_conn_buffer_at(const osv_conn_t *c, uint64_t n)
{
    return c->nc.buf + c->nc.pos + c->req.bytes_in_buffer - n;
}
/* Arms the connection's timer `ns` from now (0 disarms). */
static inline void osv_conn_set_timer(osv_conn_t *c, uint64_t ns)
{
    osv_nconn_set_timer(&c->nc, ns);
}
/* Sends the response prepared in c->res (on the loop thread); continues with the next request. */
void osv_conn_send(osv_conn_t *c);

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

/* The response was written: the request's record for observability (statistics, access log,
 * spans). Loop thread. */
void osv_http_record(osv_conn_t *c);

/* router.c */
void osv_route(osv_conn_t *c);

/* Request helpers. */
const osv_http_header_t *osv_req_header(const osv_conn_t *c, const char *name);
bool osv_req_method(const osv_conn_t *c, int method);

#endif
