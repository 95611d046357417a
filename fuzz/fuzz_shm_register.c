/* fuzz_shm_register.c — Triton's system shared-memory extension: the register request body
 * (src/http/shm.c: key validation, offset/byte_size bounds, mapping), and what a registered region
 * is then used for.
 *
 * Input: a first line naming the region (the {region} path segment), then the JSON body of
 * `POST /v2/systemsharedmemory/region/<name>/register` — e.g. {"key": "ortserve-fuzz", "offset": 0,
 * "byte_size": 64}. The harness's own object FZ_SHM_KEY (64 KiB) exists in /dev/shm. On one
 * connection the harness then sends, pipelined: the region's status, an inference on `scale2x`
 * whose FP32 input (16 bytes at offset 0) and output (16 bytes at offset 16) live in that region, the
 * status of all regions, and the region's unregister. Afterwards every region is dropped and the
 * harness's own "r0"/"r1" registered again, so inputs do not see each other's regions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/fuzz.h"
#include "support/server.h"

static const char infer_fmt[] =
    "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[4],\"parameters\":{"
    "\"shared_memory_region\":\"%.*s\",\"shared_memory_byte_size\":16}}],"
    "\"outputs\":[{\"name\":\"y\",\"parameters\":{\"shared_memory_region\":\"%.*s\","
    "\"shared_memory_offset\":16,\"shared_memory_byte_size\":16}}]}";

/* Appends a request; body may be NULL (no body, Content-Length: 0 for POST). */
static size_t add(char *dst, size_t cap, const char *method, const char *path, int name_len, const char *name,
                  const char *suffix, const void *body, size_t body_len)
{
    int n =
        snprintf(dst, cap, "%s %s%.*s%s HTTP/1.1\r\nHost: fuzz\r\n", method, path, name_len, name, suffix);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    if (strcmp(method, "POST") == 0) {
        int k = snprintf(dst + n, cap - (size_t)n,
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
        n += k > 0 ? k : 0;
    }
    if ((size_t)n + 2 + body_len > cap)
        return 0;
    memcpy(dst + n, "\r\n", 2);
    if (body_len)
        memcpy(dst + n + 2, body, body_len);
    return (size_t)n + 2 + body_len;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_server();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *body;
    size_t body_len, name_len = fz_split_line(data, size, &body, &body_len);
    const char *name = (const char *)data;
    char infer[1024];
    fz_result_t res;
    if (name_len > 200)
        return 0;
    int nl = (int)name_len, il = snprintf(infer, sizeof infer, infer_fmt, nl, name, nl, name);
    size_t cap = body_len + 4096, n = 0;
    char *req = malloc(cap);
    FZ_CHECK(req && il > 0, "out of memory");
    n += add(req + n, cap - n, "POST", "/v2/systemsharedmemory/region/", nl, name, "/register", body,
             body_len);
    n += add(req + n, cap - n, "GET", "/v2/systemsharedmemory/region/", nl, name, "/status", NULL, 0);
    n += add(req + n, cap - n, "POST", "/v2/models/scale2x/infer", 0, "", "", infer, (size_t)il);
    n += add(req + n, cap - n, "GET", "/v2/systemsharedmemory/status", 0, "", "", NULL, 0);
    n += add(req + n, cap - n, "POST", "/v2/systemsharedmemory/region/", nl, name, "/unregister", NULL, 0);
    fz_conn_run(req, n, &res);
    free(req);
    FZ_CHECK(res.n >= 1, "a register request got no response");
    if (res.status[0] == 200 && !res.closes[0])
        FZ_CHECK(res.n >= 2 && res.status[1] == 200, "a region registered with 200 has status %d",
                 res.n >= 2 ? res.status[1] : 0);
    fz_shm_reset();
    return 0;
}
