/* grpc_internal.h — internal to src/grpc: the front's connection, stream and call objects and what the
 * files call on each other.
 *
 * Objects and threads. A connection (gconn_t, net's osv_nconn_t first) belongs to its loop thread and
 * owns one nghttp2 server session and its streams (gstream_t, one per HTTP/2 stream = one gRPC call).
 * A stream owns its calls (gcall_t): one for a unary method, one per request message for
 * ModelStreamInfer. A call owns the pool slot its message was received into, its own arena, and — for
 * an inference — the core's osv_infer_t and the request layer's osv_sreq_t. While a worker runs a
 * call (`held`), nothing on the loop touches the call's infer state; the worker posts `done` back to
 * the loop (osv_loop_post), which encodes and queues the response. A stream or connection that closes
 * while one of its calls is held only cancels it (osv_infer_cancel) and is freed once the post came
 * back, so no object a worker holds is ever freed under it (busy() tells net).
 *
 * Output. Frame headers and small messages are copied into the connection's output buffer; tensor
 * bytes are queued as references (nghttp2's NO_COPY data path) and written with writev from where
 * ORT put them. A call is freed once the socket took its last byte (`segs` = 0). */
#ifndef OSV_GRPC_INTERNAL_H
#define OSV_GRPC_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>
#include <stdatomic.h>
#include <sys/uio.h>

#include "grpc/server.h"
#include "grpc/wire.h"
#include "obs/obs.h"
#include "ortserve.h"
#include "util/arena.h"

typedef struct gconn gconn_t;
typedef struct gstream gstream_t;
typedef struct gcall gcall_t;

/* Methods, by :path. XX(enum suffix, service, method, unary request, needs auth) */
#define GRPC_METHOD_MAP(XX)                                                                                  \
    XX(LIVE, "inference.GRPCInferenceService", "ServerLive", 1, 0)                                          \
    XX(READY, "inference.GRPCInferenceService", "ServerReady", 1, 0)                                        \
    XX(MODEL_READY, "inference.GRPCInferenceService", "ModelReady", 1, 0)                                   \
    XX(SERVER_META, "inference.GRPCInferenceService", "ServerMetadata", 1, 1)                               \
    XX(MODEL_META, "inference.GRPCInferenceService", "ModelMetadata", 1, 1)                                 \
    XX(INFER, "inference.GRPCInferenceService", "ModelInfer", 1, 1)                                         \
    XX(STREAM_INFER, "inference.GRPCInferenceService", "ModelStreamInfer", 0, 1)                            \
    XX(CONFIG, "inference.GRPCInferenceService", "ModelConfig", 1, 1)                                       \
    XX(STATS, "inference.GRPCInferenceService", "ModelStatistics", 1, 1)                                    \
    XX(REPO_INDEX, "inference.GRPCInferenceService", "RepositoryIndex", 1, 1)                               \
    XX(REPO_LOAD, "inference.GRPCInferenceService", "RepositoryModelLoad", 1, 1)                            \
    XX(REPO_UNLOAD, "inference.GRPCInferenceService", "RepositoryModelUnload", 1, 1)                        \
    XX(SHM_STATUS, "inference.GRPCInferenceService", "SystemSharedMemoryStatus", 1, 1)                      \
    XX(SHM_REGISTER, "inference.GRPCInferenceService", "SystemSharedMemoryRegister", 1, 1)                  \
    XX(SHM_UNREGISTER, "inference.GRPCInferenceService", "SystemSharedMemoryUnregister", 1, 1)              \
    XX(CUDA_STATUS, "inference.GRPCInferenceService", "CudaSharedMemoryStatus", 1, 1)                       \
    XX(CUDA_REGISTER, "inference.GRPCInferenceService", "CudaSharedMemoryRegister", 1, 1)                   \
    XX(CUDA_UNREGISTER, "inference.GRPCInferenceService", "CudaSharedMemoryUnregister", 1, 1)               \
    XX(LOG, "inference.GRPCInferenceService", "LogSettings", 1, 1)                                          \
    XX(HEALTH_CHECK, "grpc.health.v1.Health", "Check", 1, 0)                                                \
    XX(HEALTH_WATCH, "grpc.health.v1.Health", "Watch", 1, 0)

typedef enum gmethod {
    GM_NONE = 0,
#define GM_ENUM(sfx, svc, name, unary, auth) GM_##sfx,
    GRPC_METHOD_MAP(GM_ENUM)
#undef GM_ENUM
        GM_COUNT
} gmethod_t;

/* Health/Watch streams of one loop's connections and the post that makes the loop tell them a change
 * (health.c). */
typedef struct gwatch_loop {
    osv_post_t post;            /* posted by osv_grpc_health_changed (any thread), run on the loop */
    _Atomic(osv_loop_t *) loop; /* the loop: written by it when its first watcher registers, read by any */
    atomic_bool pending;        /* the post is on its way (any thread sets it, the loop clears it) */
    gstream_t *streams;         /* [loop] its Watch streams */
} gwatch_loop_t;

/* The front's instance. Read-only after osv_grpc_create (watch[i] as labelled there). */
struct osv_grpc {
    osv_grpc_opts_t o;
    osv_serve_t *serve;
    osv_repo_t *repo;
    osv_pool_t *pool;
    osv_shm_t *shm;
    osv_auth_t *auth; /* NULL: no tokens */
    osv_net_t *net;
    _Atomic int64_t *inflight;
    osv_front_t front;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    gwatch_loop_t *watch; /* one per loop */
    int n_watch;
    /* one per loop, allocated by its loop thread on first use, freed with the front: where a read goes
     * on once the connection's buffer is full (osv_nconn_read_into), consumed before the next read */
    uint8_t **scratch;
    int n_scratch;
};

#define GRPC_SCRATCH (256u << 10) /* bytes a loop reads past a connection's buffer in one call */

/* One message's worth of work: a unary call, or one request of a stream. Loop thread, except the
 * fields a worker writes while `held` (labelled). */
struct gcall {
    gconn_t *c;      /* owning connection (its free list takes the call back) */
    gstream_t *st;   /* owning stream (NULL once the call left its stream: answered or the stream closed) */
    gcall_t *next;   /* the stream's calls */
    gcall_t *qnext;  /* its send queue */
    osv_arena_t arena;
    /* the message */
    osv_slot_t slot;
    osv_gw_split_t *split; /* ModelInfer messages (in the arena) */
    uint8_t *buf;          /* other messages: contiguous in the slot */
    uint64_t msg_len, got;
    int rc;                /* 0, or an error that answers this call */
    osv_err_t err;
    bool refusal;          /* over --grpc-max-inflight: only answers its error (conn.c, REFUSALS_MAX) */
    osv_gw_idscan_t *scan; /* a message not kept (refused, no memory): reads its id for the answer */
    bool compressed;       /* received compressed (grpc-encoding): inflated before dispatch (compress.c) */
    uint64_t decompressed; /* bytes inflating and splitting it wrote (OSV_COPY_DECOMPRESS) */
    uint64_t unstaged;     /* raw bytes moved back out of a forming batch's rows (OSV_COPY_BATCH) */
    uint8_t *watch_status; /* Health/Watch answers: the status byte of its message (rewritten in place) */
    /* an inference (infer.c) */
    void *ix;            /* infer.c's state, in the arena */
    osv_model_t *model;  /* a reference, dropped when the call is freed */
    bool held;           /* a worker (or the control thread) holds it: written by the loop before
                            submitting, cleared by the loop when `done` arrives */
    osv_post_t done;     /* posted by the worker */
    void (*on_done)(gcall_t *k); /* loop thread, when `done` arrives */
    void (*cleanup)(gcall_t *k); /* releases what the method holds */
    /* the response: iov[0..n_iov) (small parts in the arena, tensors where ORT wrote them) */
    struct iovec *iov;
    int n_iov;
    uint64_t total;
    bool ready; /* queued on the stream */
    uint32_t segs; /* output segments still referencing this call's memory */
    /* the record */
    uint64_t t_start;
    uint64_t ns[OSV_PHASE_COUNT], phase_t0[4], phase_t1[4], batch, core_copied;
    uint64_t copied; /* bytes copied out of the read buffer (OSV_COPY_GRPC_RECEIVE) */
    osv_copy_reason_t fallback;
    bool counted;
};

typedef enum { RX_PREFIX = 0, RX_BODY, RX_DISCARD } rx_state_t;

/* One HTTP/2 stream = one gRPC call. Loop thread. */
struct gstream {
    gconn_t *c;
    int32_t id;
    gstream_t *next;
    gmethod_t method;
    /* request headers */
    uint32_t hdr_bytes;
    bool post, grpc_ct; /* (te: trailers is not required: some clients omit it) */
    int encoding;       /* grpc-encoding: OSV_ENC_* (serve/inflate.h) */
    int bad_header; /* 0, or an HTTP status to answer (415, 405, 404) */
    char path[128];
    uint32_t path_len;
    uint64_t t_start, deadline; /* monotonic ns; 0 = none */
    uint64_t auth_id;
    bool authorized;
    char traceparent[64], request_id[64];
    uint32_t traceparent_len, request_id_len;
    osv_obs_ids_t ids;
    /* receiving */
    rx_state_t rx;
    uint8_t prefix[5];
    uint32_t prefix_n;
    gcall_t *cur;         /* the message being received */
    uint64_t discard;     /* bytes of a refused message still to skip */
    uint32_t n_msgs;
    bool remote_closed;
    /* calls and output */
    gcall_t *calls;       /* in progress or queued (for cancellation) */
    uint32_t n_calls;
    gcall_t *q_head, *q_tail; /* responses ready to send, in order */
    uint64_t q_off;          /* bytes of q_head handed to nghttp2 */
    int q_iov;               /* its iov being sent, and the offset in it */
    uint64_t q_iov_off;
    bool responded;   /* response HEADERS submitted */
    bool finishing;   /* the call is over: trailers follow the queued messages */
    bool trailers;    /* trailers submitted */
    bool deferred;    /* the data provider is waiting for a message */
    bool closed;      /* nghttp2 closed the stream */
    bool watch;       /* Health/Watch: stays open until the client or the drain ends it (health.c) */
    gstream_t *wnext, *wprev; /* its loop's watchers */
    char service[128];        /* the service it watches */
    uint32_t service_len;
    int watch_sent;           /* the last status it was told */
    int status;       /* gRPC status for the trailers */
    bool retry;       /* ...one worth retrying: the trailers say when (grpc-retry-pushback-ms) */
    char message[512];
};

/* One HTTP/2 connection. Loop thread. */
struct gconn {
    osv_nconn_t nc;
    osv_grpc_t *g;
    nghttp2_session *h2;
    gstream_t *streams;
    uint32_t n_streams, n_calls, n_held;
    uint32_t n_refusals; /* calls of n_calls that only answer a refusal */
    uint64_t h2_mem; /* bytes nghttp2 holds (its allocator hooks) */
    bool preface_checked, dying, goaway;
    bool watch_kick; /* health.c: a watcher's status was queued, send */
    /* output: copied bytes in out[], queued segments in seg[] */
    uint8_t *out;
    uint32_t out_cap, out_len;
    struct gseg {
        const uint8_t *p;
        uint32_t len;
        gcall_t *owner;
    } *seg;
    uint32_t n_seg, seg_cap, seg_head;
    /* recycled objects: calls and streams, nghttp2's small blocks by size class (conn.c) */
    gcall_t *free_calls;
    gstream_t *free_streams;
    uint32_t n_free_calls, n_free_streams;
#define H2_CACHE_CLASSES 32
    struct memhdr *h2_cache[H2_CACHE_CLASSES];
    uint32_t h2_cache_n[H2_CACHE_CLASSES];
    /* the DATA frame being received (conn.c's direct reads): its stream and the payload bytes nghttp2 has
     * yet to hand on; 0 when it is not DATA, is padded, or is done */
    int32_t rx_sid;
    uint32_t rx_left;
    /* timers and abuse accounting */
    uint64_t last_recv, last_progress, ping_sent_at;
    double tokens; /* control frames allowed (token bucket) */
    uint64_t tokens_at;
};

/* conn.c */
void osv_grpc_front_init(osv_grpc_t *g);
int osv_grpc_callbacks(osv_grpc_t *g, osv_err_t *err);
/* Queues k's response on its stream (submits the response HEADERS first). Like grpc_finish it only
 * queues (it may run inside nghttp2's callbacks): whoever drives the connection sends afterwards
 * (grpc_conn_settle). Loop thread. */
void grpc_respond(gcall_t *k);
/* Ends stream st with status code (an OSV_E* code, 0 = OK) and message: trailers after what is queued,
 * or Trailers-Only when nothing was sent. Loop thread. */
void grpc_finish(gstream_t *st, int code, const char *msg);
/* A new call on st; NULL with err set when none can be had: --grpc-max-inflight calls in progress on the
 * connection (OSV_EBUSY), or, for a refusal (a call that only answers that error), REFUSALS_MAX
 * refusals not yet sent. */
gcall_t *grpc_call_new(gstream_t *st, bool refusal, osv_err_t *err);
/* Milliseconds a client is told to wait before retrying a refused call. */
#define GRPC_RETRY_MS 1000
void grpc_call_free(gcall_t *k);
/* The record of a finished call (access log, metrics, spans). */
void grpc_record(gcall_t *k, int code);
/* The response of call k: one gRPC message of the bytes p[0..n) (copied into its arena). */
int grpc_reply_bytes(gcall_t *k, const void *p, size_t n);
/* Sends and reads as far as the socket allows. */
void grpc_conn_kick(gconn_t *c);
/* Rearms the connection's one timer for its nearest deadline. */
void grpc_conn_rearm(gconn_t *c);
/* After work finished on the loop: send, then close the connection when it is done, else rearm. The
 * connection may be gone afterwards. */
void grpc_conn_settle(gconn_t *c);
/* The worker that held k posted it back: false when k's stream was gone (k is freed). */
bool grpc_call_back(gcall_t *k);

/* call.c: method dispatch once a message was received (or the client closed without one). */
void grpc_dispatch(gcall_t *k);
/* k's message unpacked with protobuf-c into its arena; NULL with k->err set when malformed. */
void *grpc_unpack(gcall_t *k, const ProtobufCMessageDescriptor *d);
/* Answers k with code (its record, the trailers or the stream's end) and frees it. */
void grpc_fail(gcall_t *k, int code);

/* compress.c: grpc-encoding of a header value (OSV_ENC_*); a compressed message inflated on a worker,
 * then dispatched again. */
int grpc_encoding_of(const uint8_t *v, size_t n);
void grpc_inflate(gcall_t *k);

/* health.c: grpc.health.v1 Check and Watch. */
void grpc_health(gcall_t *k);
int grpc_health_init(osv_grpc_t *g, osv_err_t *err);
/* st stops watching (its stream closes). */
void grpc_watch_drop(gstream_t *st);
/* The drain began: c's watchers hear NOT_SERVING and their streams end. */
void grpc_watch_drain(gconn_t *c);
bool grpc_method_unary(gmethod_t m);
bool grpc_method_needs_auth(gmethod_t m);
gmethod_t grpc_method_of(const char *path, size_t len);
const char *grpc_method_name(gmethod_t m);

/* infer.c */
void grpc_infer(gcall_t *k);
/* The splitter's raw_place for a ModelInfer message received on a loop thread (ud = the call): as the
 * first raw_input_contents payload begins, the request is built from the meta before it and, when its
 * model batches, its rows are reserved in the forming batch (osv_serve_stage); every payload then goes
 * straight into its input's rows. Loop thread. */
void grpc_infer_raw_place(void *ud, uint32_t i, uint64_t len, uint8_t **dst);
/* The stream (or connection) is gone: cancel the call's queued or running inference. */
void grpc_infer_cancel(gcall_t *k);

#endif
