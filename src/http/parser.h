/* parser.h — internal: HTTP/1.x request heads and chunked bodies, behind ortserve's own interface.
 *
 * The implementation uses Debian's http-parser (nodejs/http-parser 2.9); keeping it behind this
 * header lets it be swapped for llhttp without touching the server. Nothing here allocates: every
 * span points into the caller's buffer. */
#ifndef OSV_HTTP_PARSER_H
#define OSV_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    OSV_HTTP_GET = 1,
    OSV_HTTP_HEAD,
    OSV_HTTP_POST,
    OSV_HTTP_PUT,
    OSV_HTTP_DELETE,
    OSV_HTTP_OPTIONS,
    OSV_HTTP_OTHER
};

typedef struct osv_http_header {
    const char *name;
    const char *value;
    uint32_t name_len, value_len;
} osv_http_header_t;

typedef struct osv_http_head {
    int method;
    const char *path, *query; /* path without the query; query without '?' (len 0 if none) */
    uint32_t path_len, query_len;
    int minor; /* HTTP/1.<minor> */
    osv_http_header_t *headers;
    uint32_t n_headers;
    uint64_t content_length;
    bool has_length, chunked, keep_alive, expect_continue;
    uint32_t head_len;        /* bytes of request line + headers + blank line */
    uint64_t parser_state[8]; /* the chunked-body decoder's state (opaque) */
} osv_http_head_t;

/* Result of osv_http_parse_head beyond "need more bytes" (0) and success (> 0). */
typedef struct osv_http_error {
    int status; /* 400, 413, 431, 501, 505 */
    const char *msg;
} osv_http_error_t;

/* Parses the request head at buf[0..len). Returns the head length (> 0) when complete, 0 when more
 * bytes are needed (and len < max_bytes), or -1 with *e set. `hdrs` has room for max_headers. */
int osv_http_parse_head(const char *buf, size_t len, osv_http_head_t *h, osv_http_header_t *hdrs,
                        uint32_t max_headers, uint32_t max_bytes, osv_http_error_t *e);

/* Decodes chunked body bytes in place: consumes in[0..len), appending decoded data at *out (which
 * may alias `in` since output never outruns input) up to out_cap. Returns consumed bytes; *done is
 * set when the final chunk and trailers were read; -1 on a malformed stream or overflow (e set).
 * len 0 consumes nothing and is not an error (the end of the stream is the caller's to judge). */
long osv_http_dechunk(osv_http_head_t *h, const char *in, size_t len, char *out, size_t out_cap,
                      size_t *out_len, bool *done, osv_http_error_t *e);

/* Case-insensitive header name comparison. */
bool osv_http_name_is(const osv_http_header_t *hd, const char *name);

#endif
