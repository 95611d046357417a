/* fuzz_infer_json.c — decoding of KServe v2 JSON inference requests (src/http/infer.c on the
 * allocation-free reader, src/util/json.c), validated against real models.
 *
 * Input: a first line naming the model (the {model} path segment: "mlp", "identity", "dynamic",
 * "scale2x" are loaded; anything else exercises the lookup), then the JSON body. The harness sends
 * `POST /v2/models/<line>/infer` with that body through the server's own connection code
 * (support/server.h), so the request is decoded, declared to the core, its data parsed straight into
 * the pool slot, run inline, and the response encoded — every step the real server takes. The
 * shared-memory regions "r0" and "r1" exist, so shared_memory_* parameters can bind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/fuzz.h"
#include "support/server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_server();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *body;
    size_t body_len, model_len = fz_split_line(data, size, &body, &body_len);
    char head[512];
    fz_result_t res;
    if (model_len > 200)
        return 0;
    int n = snprintf(head, sizeof head,
                     "POST /v2/models/%.*s/infer HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     (int)model_len, (const char *)data, body_len);
    uint8_t *req = malloc((size_t)n + body_len);
    FZ_CHECK(req, "out of memory");
    memcpy(req, head, (size_t)n);
    memcpy(req + n, body, body_len);
    fz_conn_run(req, (size_t)n + body_len, &res);
    free(req);
    FZ_CHECK(res.n >= 1, "an inference request got no response");
    return 0;
}
