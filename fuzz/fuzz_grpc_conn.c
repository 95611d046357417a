/* fuzz_grpc_conn.c — a whole HTTP/2 connection to the gRPC front: the input is what the client sends
 * (the connection preface, then frames), delivered over a socketpair to the server's own transport
 * and gRPC front code (net/loop.c, src/grpc/conn.c and everything behind it: nghttp2's session, the
 * message framing into pool slots, the hand-written ModelInferRequest decoder, every method, the
 * request layer running the fuzz server's models inline). Beyond "no crash": once the connection has
 * closed the server must be at rest — no pool slot in use, nothing in flight, no connection open,
 * every model reference returned (server.c's check_at_rest). */
#include "support/fuzz.h"
#include "support/server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_grpc_front();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    fz_front_run(fz_grpc_front(), data, size);
    return 0;
}
