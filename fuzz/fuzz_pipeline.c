/* fuzz_pipeline.c — request framing on one connection: several pipelined requests, each framed by
 * Content-Length, chunked coding (with or without gzip/deflate content coding), an Expect:
 * 100-continue, no body at all, or a Transfer-Encoding the server must refuse ("gzip", "chunked,
 * identity", "gzip, chunked"); each to an endpoint that reads its body or answers before reading it
 * (unknown model or route, a GET with a body, a refused load). Bodies hold a valid inference, filler
 * bytes, and sometimes a complete request of their own — the smuggling attempt.
 *
 * Input layout: byte 0 = number of requests (1..6); then per request 3 bytes — framing, route and
 * body flags, chunk size — and a length byte followed by that many filler bytes.
 *
 * Invariants beyond "no crash" (src/http/conn.c osv_conn_body_unread, src/http/parser.c): every
 * request carries X-Request-ID legit-<i>, every smuggled one smuggled-<i>; the responses must be
 * exactly legit-0, legit-1, ... in order (no request runs from bytes of another request's body, none
 * is answered twice or skipped), the connection must have been closed after the last one when not
 * every request was answered, and a request whose body length cannot be known is refused (400/501,
 * with its head: its own id is not read) and nothing is answered after it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/fuzz.h"
#include "support/server.h"
#include "support/wire.h"

#define MAX_REQUESTS 6

enum framing { F_LENGTH, F_CHUNKED, F_LENGTH_GZIP, F_CHUNKED_DEFLATE, F_TE_GZIP, F_TE_CHUNKED_IDENTITY,
               F_TE_GZIP_CHUNKED, F_EXPECT, F_NONE, F_COUNT };

static const char *const routes[] = {
    "POST /v2/models/scale2x/infer",         "POST /v2/models/nosuch/infer", "POST /v2/nothing/here",
    "POST /v2/repository/models/nosuch/load", "GET /v2/models/scale2x",        "POST /v2/models/mlp/infer",
};
#define N_ROUTES (sizeof routes / sizeof *routes)

static const char valid_body[] = "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP32\",\"data\":[1,2]}]}";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_server();
    return 0;
}

/* True when the request's body length cannot be known: the server must answer it (400/501) and close. */
static bool unknowable(int framing)
{
    return framing == F_TE_GZIP || framing == F_TE_CHUNKED_IDENTITY || framing == F_TE_GZIP_CHUNKED;
}

/* One request's bytes (n >= 4); returns the input consumed. */
static size_t build_one(fz_buf_t *req, int i, const uint8_t *d, size_t n, int *framing_out)
{
    fz_buf_t body = {0}, packed = {0};
    char line[160];
    int framing = d[0] % F_COUNT, route = d[1] % N_ROUTES, flags = d[1] / N_ROUTES;
    size_t chunk = d[2], filler = d[3] < n - 4 ? d[3] : n - 4;
    *framing_out = framing;
    if (flags & 1)
        fz_puts(&body, valid_body);
    if (flags & 2) {
        snprintf(line, sizeof line, "GET /v2/health/live HTTP/1.1\r\nHost: fuzz\r\nX-Request-ID: smuggled-%d\r\n\r\n",
                 i);
        fz_puts(&body, line);
    }
    fz_put(&body, d + 4, filler);
    snprintf(line, sizeof line, "%s HTTP/1.1\r\nHost: fuzz\r\nX-Request-ID: legit-%d\r\n", routes[route], i);
    fz_puts(req, line);
    if (framing == F_LENGTH_GZIP || framing == F_CHUNKED_DEFLATE) {
        fz_compress(&packed, body.p, body.len, framing == F_LENGTH_GZIP);
        fz_puts(req, framing == F_LENGTH_GZIP ? "Content-Encoding: gzip\r\n" : "Content-Encoding: deflate\r\n");
        body.len = 0;
        fz_put(&body, packed.p, packed.len);
    }
    switch (framing) {
    case F_CHUNKED:
    case F_CHUNKED_DEFLATE:
    case F_TE_CHUNKED_IDENTITY:
    case F_TE_GZIP_CHUNKED:
        fz_puts(req, framing == F_TE_CHUNKED_IDENTITY ? "Transfer-Encoding: chunked, identity\r\n\r\n"
                     : framing == F_TE_GZIP_CHUNKED  ? "Transfer-Encoding: gzip, chunked\r\n\r\n"
                                                     : "Transfer-Encoding: chunked\r\n\r\n");
        fz_put_chunked(req, body.p, body.len, chunk);
        break;
    case F_TE_GZIP:
        fz_puts(req, "Transfer-Encoding: gzip\r\n\r\n");
        fz_put(req, body.p, body.len);
        break;
    case F_NONE:
        fz_puts(req, "\r\n");
        break;
    default: /* F_LENGTH, F_LENGTH_GZIP, F_EXPECT */
        snprintf(line, sizeof line, "%sContent-Length: %zu\r\n\r\n",
                 framing == F_EXPECT ? "Expect: 100-continue\r\n" : "", body.len);
        fz_puts(req, line);
        fz_put(req, body.p, body.len);
        break;
    }
    free(body.p);
    free(packed.p);
    return 4 + filler;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_buf_t req = {0};
    fz_result_t res;
    int framing[MAX_REQUESTS], n = 0, poison = MAX_REQUESTS;
    if (size < 1)
        return 0;
    int want = 1 + data[0] % MAX_REQUESTS;
    for (size_t off = 1; n < want && size - off >= 4; n++) {
        off += build_one(&req, n, data + off, size - off, &framing[n]);
        if (unknowable(framing[n]) && poison == MAX_REQUESTS)
            poison = n;
    }
    if (n == 0 || req.len == 0) {
        free(req.p);
        return 0;
    }
    fz_conn_run(req.p, req.len, &res);
    for (int k = 0; k < res.n && k < FZ_MAX_RESPONSES; k++) {
        char expect[24];
        snprintf(expect, sizeof expect, "legit-%d", k);
        FZ_CHECK(strncmp(res.ids[k], "smuggled-", 9) != 0,
                 "response %d (status %d) answers %s: a request ran from bytes of another request's body", k,
                 res.status[k], res.ids[k]);
        FZ_CHECK(k <= poison, "response %d after request %d, whose body length cannot be known", k, poison);
        if (k == poison) /* refused with its head, before the request id was read: any id, 400 or 501 */
            FZ_CHECK(res.status[k] == 400 || res.status[k] == 501, "request %d with an unusable "
                     "Transfer-Encoding got %d", k, res.status[k]);
        else
            FZ_CHECK(strcmp(res.ids[k], expect) == 0,
                     "response %d (status %d) answers '%s', expected %s: requests out of frame", k, res.status[k],
                     res.ids[k], expect);
    }
    FZ_CHECK(res.n >= 1, "no response at all");
    if (res.n < n)
        FZ_CHECK(res.closes[res.n - 1], "%d of %d requests answered, yet the last answer kept the connection",
                 res.n, n);
    free(req.p);
    return 0;
}
