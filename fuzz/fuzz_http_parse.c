/* fuzz_http_parse.c — HTTP/1.x request parsing.
 *
 * The input is what a client sends on one connection. It is used three ways:
 *   1. osv_http_parse_head (src/http/parser.c over Debian's http-parser) directly, with the server's
 *      limits and with tiny ones: every span it returns must lie inside the head it reports;
 *   2. when the head announces a chunked body, osv_http_dechunk on the rest, once in one call, once
 *      fed in small pieces (the parser state is saved between calls) and once in place: all three
 *      must agree on the decoded bytes, on completion and on failure;
 *   3. the whole input as a client connection through the server's event-loop code (support/server.h):
 *      head reading, routing, body reception, pipelining, error responses. */
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"
#include "support/fuzz.h"
#include "support/server.h"

#define MAX_HEADERS 32

static bool inside(const void *p, size_t n, const uint8_t *buf, size_t len)
{
    const uint8_t *q = p;
    return q >= buf && q <= buf + len && n <= (size_t)(buf + len - q);
}

static void check_head(const uint8_t *buf, int rc, const osv_http_head_t *h, uint32_t max_headers)
{
    size_t len = (size_t)rc;
    FZ_CHECK(h->head_len == (uint32_t)rc, "head_len %u but parse returned %d", h->head_len, rc);
    FZ_CHECK(h->method >= OSV_HTTP_GET && h->method <= OSV_HTTP_OTHER, "method %d", h->method);
    FZ_CHECK(h->path_len > 0 && inside(h->path, h->path_len, buf, len), "path outside the head");
    FZ_CHECK(!memchr(h->path, '?', h->path_len), "path contains the query");
    FZ_CHECK(inside(h->query, h->query_len, buf, len), "query outside the head");
    FZ_CHECK(h->n_headers <= max_headers, "%u headers, room for %u", h->n_headers, max_headers);
    FZ_CHECK(!(h->has_length && h->chunked), "both Content-Length and chunked accepted");
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const osv_http_header_t *hd = &h->headers[i];
        FZ_CHECK(inside(hd->name, hd->name_len, buf, len), "header %u name outside the head", i);
        FZ_CHECK(inside(hd->value, hd->value_len, buf, len), "header %u value outside the head", i);
    }
}

/* Parses with the given limits; returns the head length (> 0), 0 or -1, after checking it. */
static int parse(const uint8_t *data, size_t size, osv_http_head_t *h, osv_http_header_t *hdrs,
                 uint32_t max_headers, uint32_t max_bytes)
{
    osv_http_error_t e = {0, NULL};
    int rc = osv_http_parse_head((const char *)data, size, h, hdrs, max_headers, max_bytes, &e);
    if (rc > 0) {
        FZ_CHECK((size_t)rc <= size && (uint32_t)rc <= max_bytes, "head of %d bytes from %zu", rc, size);
        check_head(data, rc, h, max_headers);
    } else if (rc < 0) {
        FZ_CHECK(e.status >= 400 && e.status <= 505 && e.msg, "error status %d", e.status);
    } else {
        FZ_CHECK(size < max_bytes, "more bytes wanted beyond the header limit");
    }
    return rc;
}

typedef struct dechunked {
    long rc; /* -1 on error, else bytes consumed */
    bool done;
    size_t out_len;
} dechunked_t;

/* One call over the whole body. out may alias in. */
static dechunked_t dechunk_once(const osv_http_head_t *h0, const uint8_t *in, size_t len, uint8_t *out)
{
    osv_http_head_t h = *h0;
    osv_http_error_t e;
    dechunked_t r = {0, false, 0};
    r.rc = osv_http_dechunk(&h, (const char *)in, len, (char *)out, len, &r.out_len, &r.done, &e);
    if (r.rc >= 0)
        FZ_CHECK((size_t)r.rc <= len && r.out_len <= (size_t)r.rc, "dechunk consumed %ld of %zu, out %zu",
                 r.rc, len, r.out_len);
    return r;
}

/* The same body in pieces of 1, 2, 3, ... bytes, as reads would deliver it. */
static dechunked_t dechunk_pieces(const osv_http_head_t *h0, const uint8_t *in, size_t len, uint8_t *out)
{
    osv_http_head_t h = *h0;
    osv_http_error_t e;
    dechunked_t r = {0, false, 0};
    size_t off = 0;
    for (size_t piece = 1; off < len && !r.done; piece++) {
        size_t n = piece < len - off ? piece : len - off;
        long k = osv_http_dechunk(&h, (const char *)in + off, n, (char *)out, len, &r.out_len, &r.done, &e);
        if (k < 0) {
            r.rc = -1;
            return r;
        }
        off += (size_t)k;
        if ((size_t)k < n && !r.done)
            break;
    }
    r.rc = (long)off;
    return r;
}

static void check_chunked(const osv_http_head_t *h, const uint8_t *body, size_t len)
{
    uint8_t *a = malloc(len + 1), *b = malloc(len + 1), *c = malloc(len + 1);
    FZ_CHECK(a && b && c, "out of memory");
    memcpy(c, body, len);
    dechunked_t ra = dechunk_once(h, body, len, a);
    dechunked_t rb = dechunk_pieces(h, body, len, b);
    dechunked_t rc = dechunk_once(h, c, len, c); /* in place */
    FZ_CHECK((ra.rc < 0) == (rb.rc < 0) && (ra.rc < 0) == (rc.rc < 0),
             "chunked decoding fails in one call (%ld), in pieces (%ld) and in place (%ld)", ra.rc, rb.rc,
             rc.rc);
    if (ra.rc >= 0) {
        FZ_CHECK(ra.done == rb.done && ra.done == rc.done,
                 "chunked completion differs between call patterns");
        FZ_CHECK(ra.out_len == rb.out_len && ra.out_len == rc.out_len,
                 "decoded %zu bytes in one call, %zu in pieces, %zu in place", ra.out_len, rb.out_len,
                 rc.out_len);
        FZ_CHECK(memcmp(a, b, ra.out_len) == 0 && memcmp(a, c, ra.out_len) == 0, "decoded bytes differ");
        if (ra.done)
            FZ_CHECK(ra.rc == rb.rc && ra.rc == rc.rc, "final chunk ends at %ld, %ld or %ld", ra.rc, rb.rc,
                     rc.rc);
    }
    free(a);
    free(b);
    free(c);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_server();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    osv_http_header_t hdrs[MAX_HEADERS];
    osv_http_head_t h;
    int rc = parse(data, size, &h, hdrs, MAX_HEADERS, fz_server()->o.max_header_bytes);
    if (rc > 0 && h.chunked)
        check_chunked(&h, data + rc, size - (size_t)rc);
    parse(data, size, &h, hdrs, 2, 64); /* tiny limits: 431s */
    fz_conn_run(data, size, NULL);
    return 0;
}
