/* grpc_front.c — fuzz support: the gRPC front (src/grpc) created once over the fuzz server's request
 * layer and transport (server.c), with small limits so that fuzzing stays fast. */
#include "grpc/server.h"
#include "fuzz.h"
#include "server.h"

const osv_front_t *fz_grpc_front(void)
{
    static osv_grpc_t *g;
    if (!g) {
        osv_server_t *s = fz_server();
        osv_grpc_opts_t o;
        osv_err_t err;
        uint16_t port;
        osv_grpc_opts_default(&o);
        o.max_message_bytes = 1u << 20;
        o.max_streams = 16;
        o.max_inflight = 32;
        o.max_h2_memory = 1u << 20;
        o.allow_shm = true;
        o.model_control = true;
        FZ_CHECK(osv_grpc_create(&o, s->serve, s->net, &s->inflight, &g, &err) == 0, "grpc: %s", err.msg);
        FZ_CHECK(osv_net_listen(s->net, osv_grpc_front(g), "127.0.0.1", 0, &port, &err) == 0, "listen: %s",
                 err.msg);
    }
    return osv_grpc_front(g);
}
