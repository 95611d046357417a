/* grpc.c — the gRPC front's instance: options, creation over the request layer, teardown. */
#include <string.h>

#include "grpc/grpc_internal.h"

void osv_grpc_opts_default(osv_grpc_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->port = 8001;                 /* as Triton */
    o->max_message_bytes = 0;       /* = --max-body-bytes */
    o->max_streams = 100;           /* as grpc-go's and nginx's default */
    o->max_header_list = 16u << 10; /* = --max-header-bytes' default */
    o->stream_window = 1u << 20;
    o->conn_window = 16u << 20;
    o->max_frame = 1u << 20; /* a tensor's payload in few frames: fewer headers, longer direct reads */
    o->max_inflight = 1024;
    o->max_h2_memory = 4u << 20;
    o->idle_timeout_ms = 60000;
    o->keepalive_ms = 0;
    o->stall_timeout_ms = 30000;
    o->frame_rate_limit = 100;
}

uint64_t osv_grpc_conn_bytes(const osv_grpc_opts_t *o)
{
    return o->max_h2_memory + (64u << 10) + 1024 * 24;
}

int osv_grpc_create(const osv_grpc_opts_t *o, osv_serve_t *serve, osv_net_t *net, _Atomic int64_t *inflight,
                    osv_grpc_t **out, osv_err_t *err)
{
    osv_grpc_t *g = osv_calloc(1, sizeof *g);
    int rc;
    if (!g)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    g->o = *o;
    if (!g->o.max_message_bytes)
        g->o.max_message_bytes = 64ull << 20;
    if (g->o.max_message_bytes > UINT32_MAX) /* the gRPC length prefix is 32 bits */
        g->o.max_message_bytes = UINT32_MAX;
    if (g->o.stream_window > NGHTTP2_MAX_WINDOW_SIZE)
        g->o.stream_window = NGHTTP2_MAX_WINDOW_SIZE;
    if (g->o.conn_window > NGHTTP2_MAX_WINDOW_SIZE)
        g->o.conn_window = NGHTTP2_MAX_WINDOW_SIZE;
    if (g->o.max_frame < 16384) /* the range RFC 9113 allows */
        g->o.max_frame = 16384;
    if (g->o.max_frame > 16777215)
        g->o.max_frame = 16777215;
    g->serve = serve;
    g->net = net;
    g->inflight = inflight;
    g->repo = osv_serve_repo(serve);
    g->pool = osv_serve_pool(serve);
    g->shm = osv_serve_shm(serve);
    g->auth = osv_serve_auth(serve);
    g->n_scratch = osv_net_loop_count(net);
    if (!(g->scratch = osv_calloc((size_t)(g->n_scratch > 0 ? g->n_scratch : 1), sizeof *g->scratch))) {
        osv_free(g);
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    if ((rc = osv_grpc_callbacks(g, err)) != 0 || (rc = grpc_health_init(g, err)) != 0) {
        osv_grpc_destroy(g);
        return rc;
    }
    osv_grpc_front_init(g);
    *out = g;
    return 0;
}

const osv_front_t *osv_grpc_front(osv_grpc_t *g)
{
    return &g->front;
}

int osv_grpc_listen(osv_grpc_t *g, const char *host, int port, uint16_t *bound, osv_err_t *err)
{
    return osv_net_listen(g->net, &g->front, host, port, bound, err);
}

void osv_grpc_destroy(osv_grpc_t *g)
{
    if (!g)
        return;
    if (g->cbs)
        nghttp2_session_callbacks_del(g->cbs);
    if (g->opt)
        nghttp2_option_del(g->opt);
    osv_free(g->watch);
    for (int i = 0; g->scratch && i < g->n_scratch; i++)
        osv_free(g->scratch[i]);
    osv_free(g->scratch);
    osv_free(g);
}
