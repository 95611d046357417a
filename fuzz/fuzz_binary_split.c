/* fuzz_binary_split.c — Triton's binary tensor extension: splitting a body into its JSON header
 * (Inference-Header-Content-Length bytes) and the binary section, binary_data_size bookkeeping
 * (src/http/infer.c: start_infer, header_received, declare, receive_binary, raw_request), and the
 * body reception underneath (src/http/conn.c: buffer vs. pool slot, readahead, readv into the slots).
 *
 * Input layout:
 *   byte 0   flags: bit 0 chunked transfer coding; bits 1-2 Content-Encoding (1 deflate, 2 gzip, the
 *            body is compressed by the harness); bit 3 no Inference-Header-Content-Length header;
 *            bit 4 a `GET /v2/health/ready` follows on the same connection; bits 5-6 the model
 *            (mlp, identity, dynamic, scale2x); bit 7 Expect: 100-continue
 *   byte 1   chunk size for bit 0 (0: the whole body in one chunk)
 *   then     the Inference-Header-Content-Length value, verbatim, up to a '\n'
 *   then     the body: JSON header followed by the binary tensors
 * The harness adds Content-Length (or the chunk framing) for the body as sent.
 *
 * Invariant beyond "no crash": when the inference response leaves the connection open, the server
 * must have consumed exactly that request's bytes — the pipelined health check must then be parsed
 * as such and answered 200. A miscounted split would read tensor bytes as the next request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/fuzz.h"
#include "support/server.h"
#include "support/wire.h"

#define F_CHUNKED   0x01
#define F_ENC_SHIFT 1
#define F_NO_IHCL   0x08
#define F_PIPELINE  0x10
#define F_MODEL     5
#define F_EXPECT    0x80

static const char *const models[] = {"mlp", "identity", "dynamic", "scale2x"};
static const char health[] = "GET /v2/health/ready HTTP/1.1\r\nHost: fuzz\r\n\r\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_server();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *body;
    size_t body_len, ihcl_len;
    fz_buf_t req = {0}, packed = {0};
    char line[128];
    fz_result_t res;
    if (size < 2)
        return 0;
    uint8_t flags = data[0], chunk = data[1];
    int enc = (flags >> F_ENC_SHIFT) & 3;
    ihcl_len = fz_split_line(data + 2, size - 2, &body, &body_len);
    if (ihcl_len > 64 || memchr(data + 2, '\r', ihcl_len))
        return 0;
    if (enc == 1 || enc == 2) {
        fz_compress(&packed, body, body_len, enc == 2);
        body = packed.p;
        body_len = packed.len;
    }
    snprintf(line, sizeof line, "POST /v2/models/%s/infer HTTP/1.1\r\nHost: fuzz\r\n",
             models[(flags >> F_MODEL) & 3]);
    fz_puts(&req, line);
    fz_puts(&req, "Content-Type: application/octet-stream\r\n");
    if (!(flags & F_NO_IHCL)) {
        fz_puts(&req, "Inference-Header-Content-Length: ");
        fz_put(&req, data + 2, ihcl_len);
        fz_puts(&req, "\r\n");
    }
    if (enc == 1 || enc == 2)
        fz_puts(&req, enc == 1 ? "Content-Encoding: deflate\r\n" : "Content-Encoding: gzip\r\n");
    if (flags & F_EXPECT)
        fz_puts(&req, "Expect: 100-continue\r\n");
    if (flags & F_CHUNKED) {
        fz_puts(&req, "Transfer-Encoding: chunked\r\n\r\n");
        fz_put_chunked(&req, body, body_len, chunk);
    } else {
        snprintf(line, sizeof line, "Content-Length: %zu\r\n\r\n", body_len);
        fz_puts(&req, line);
        fz_put(&req, body, body_len);
    }
    if (flags & F_PIPELINE)
        fz_puts(&req, health);
    fz_conn_run(req.p, req.len, &res);
    FZ_CHECK(res.n >= 1, "an inference request got no response");
    if ((flags & F_PIPELINE) && !res.closes[0])
        FZ_CHECK(
            res.n == 2 && res.status[1] == 200,
            "after a %d that kept the connection, the pipelined health check got %d responses (second: %d)",
            res.status[0], res.n, res.n > 1 ? res.status[1] : 0);
    free(req.p);
    free(packed.p);
    return 0;
}
