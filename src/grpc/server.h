/* server.h — internal: the KServe v2 / Triton gRPC front (HTTP/2 cleartext with prior knowledge), as
 * the program that starts a server sees it: options, create, the osv_front_t to listen with, destroy.
 *
 * The front serves inference.GRPCInferenceService and grpc.health.v1.Health on the transport's loops
 * (net/net.h) and submits inferences to the same request layer as the HTTP front (serve/serve.h),
 * sharing its count of requests in flight. */
#ifndef OSV_GRPC_SERVER_H
#define OSV_GRPC_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/net.h"
#include "serve/serve.h"

typedef struct osv_grpc osv_grpc_t;

/* Every option of the gRPC front (`ortserve serve --grpc-*`, ORTSERVE_GRPC_* variables). */
typedef struct osv_grpc_opts {
    int port;                   /* -1 = off, 0 = any free port (default 8001) */
    uint64_t max_message_bytes; /* one message either way (RESOURCE_EXHAUSTED beyond); 0 = --max-body-bytes */
    uint32_t max_streams;       /* SETTINGS_MAX_CONCURRENT_STREAMS per connection */
    uint32_t max_header_list;   /* bytes of one request's header list (SETTINGS_MAX_HEADER_LIST_SIZE) */
    uint32_t stream_window;     /* initial stream flow-control window (bytes) */
    uint32_t max_frame;         /* SETTINGS_MAX_FRAME_SIZE: largest frame a client may send (bytes) */
    uint32_t conn_window;       /* connection flow-control window (bytes) */
    uint32_t max_inflight;      /* inference requests in progress on one connection, streams included */
    uint64_t max_h2_memory;     /* bytes the HTTP/2 library may hold for one connection (GOAWAY beyond) */
    int idle_timeout_ms;        /* a connection without open streams is closed after (GOAWAY) */
    int keepalive_ms;           /* a connection silent this long is PINGed; no answer in as long: closed */
    int stall_timeout_ms;       /* output that makes no progress this long (zero window) closes it */
    uint32_t frame_rate_limit;  /* control frames (PING, SETTINGS, empty DATA, RST_STREAM) a client may
                                   send per second, with twice as many as a burst: GOAWAY beyond */
    /* from the server's options (deadlines come from the request layer: osv_serve_deadline_ms) */
    bool allow_shm, model_control;
} osv_grpc_opts_t;

void osv_grpc_opts_default(osv_grpc_opts_t *o);

/* The front over request layer `serve` (which must outlive it); `inflight` is the count the fronts
 * share (the watchdog's busy hint); `net` answers whether the server is draining. */
int osv_grpc_create(const osv_grpc_opts_t *o, osv_serve_t *serve, osv_net_t *net, _Atomic int64_t *inflight,
                    osv_grpc_t **out, osv_err_t *err);
/* What to pass to osv_net_listen. Lives as long as g. */
const osv_front_t *osv_grpc_front(osv_grpc_t *g);
/* Listens on host:port (0: a free port, *bound gets it) on the transport g was created over; before
 * the transport starts. A port another process listens on: OSV_EEXIST ("address already in use"). */
int osv_grpc_listen(osv_grpc_t *g, const char *host, int port, uint16_t *bound, osv_err_t *err);
/* A health status may have changed (a model loaded or unloaded): Health/Watch streams are told. Any
 * thread, while the transport exists. */
void osv_grpc_health_changed(osv_grpc_t *g);
/* After the transport that served it was destroyed. */
void osv_grpc_destroy(osv_grpc_t *g);

/* Memory one connection with requests in progress holds beyond net's (its HTTP/2 session at most). */
uint64_t osv_grpc_conn_bytes(const osv_grpc_opts_t *o);

#endif
