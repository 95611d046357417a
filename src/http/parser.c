/* parser.c — request heads and chunked bodies via Debian's http-parser; see parser.h.
 *
 * A head is parsed only once its terminating blank line is in the buffer, in one call, so every
 * callback span is whole and points into the caller's buffer. The parser pauses itself when the
 * head ends; bodies are then received by the server directly (Content-Length) or fed back here
 * (chunked). */
#include <http_parser.h>
#include <string.h>
#include <strings.h>

#include "http/parser.h"

_Static_assert(sizeof(http_parser) <= sizeof(((osv_http_head_t *)0)->parser_state),
               "http_parser state does not fit");

typedef struct head_ctx {
    osv_http_head_t *h;
    osv_http_header_t *hdrs;
    uint32_t max;
    bool overflow, in_value;
    const char *url;
    size_t url_len;
} head_ctx_t;

typedef struct chunk_ctx {
    char *out;
    size_t cap, len;
    bool overflow, done;
} chunk_ctx_t;

static int on_url(http_parser *p, const char *at, size_t len)
{
    head_ctx_t *c = p->data;
    if (!c->url)
        c->url = at;
    c->url_len = (size_t)(at + len - c->url);
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    head_ctx_t *c = p->data;
    osv_http_head_t *h = c->h;
    if (!c->in_value && h->n_headers > 0 &&
        c->hdrs[h->n_headers - 1].name + c->hdrs[h->n_headers - 1].name_len == at) {
        c->hdrs[h->n_headers - 1].name_len += (uint32_t)len;
        return 0;
    }
    if (h->n_headers == c->max) {
        c->overflow = true;
        return 1;
    }
    c->hdrs[h->n_headers++] =
        (osv_http_header_t){.name = at, .name_len = (uint32_t)len, .value = at, .value_len = 0};
    c->in_value = false;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    head_ctx_t *c = p->data;
    osv_http_header_t *hd = &c->hdrs[c->h->n_headers - 1];
    if (!c->in_value) {
        hd->value = at;
        hd->value_len = 0;
        c->in_value = true;
    }
    hd->value_len = (uint32_t)(at + len - hd->value);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings head_settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
};

bool osv_http_name_is(const osv_http_header_t *hd, const char *name)
{
    return strlen(name) == hd->name_len && strncasecmp(hd->name, name, hd->name_len) == 0;
}

static int method_of(unsigned m)
{
    switch (m) {
    case HTTP_GET:
        return OSV_HTTP_GET;
    case HTTP_HEAD:
        return OSV_HTTP_HEAD;
    case HTTP_POST:
        return OSV_HTTP_POST;
    case HTTP_PUT:
        return OSV_HTTP_PUT;
    case HTTP_DELETE:
        return OSV_HTTP_DELETE;
    case HTTP_OPTIONS:
        return OSV_HTTP_OPTIONS;
    default:
        return OSV_HTTP_OTHER;
    }
}

/* Length of the head (through its blank line) if buf holds one, else 0. */
static size_t find_head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static int fail(osv_http_error_t *e, int status, const char *msg)
{
    e->status = status;
    e->msg = msg;
    return -1;
}

static void finish_head(osv_http_head_t *h, const http_parser *p, const head_ctx_t *c)
{
    const char *q = memchr(c->url, '?', c->url_len);
    h->method = method_of(p->method);
    h->path = c->url;
    h->path_len = (uint32_t)(q ? (size_t)(q - c->url) : c->url_len);
    h->query = q ? q + 1 : c->url + c->url_len;
    h->query_len = q ? (uint32_t)(c->url + c->url_len - q - 1) : 0;
    h->minor = p->http_minor;
    h->has_length = (p->flags & F_CONTENTLENGTH) != 0;
    h->content_length = h->has_length ? p->content_length : 0;
    h->chunked = (p->flags & F_CHUNKED) != 0;
    h->keep_alive = http_should_keep_alive(p) != 0;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const osv_http_header_t *hd = &c->hdrs[i];
        if (osv_http_name_is(hd, "Expect") && hd->value_len == 12 &&
            strncasecmp(hd->value, "100-continue", 12) == 0)
            h->expect_continue = true;
    }
}

/* http-parser accepts any codings before a final chunked ("gzip, chunked"); ortserve decodes none of
 * them, so the only Transfer-Encoding it takes is exactly one "chunked" (RFC 9112 §6.1: 501 for a
 * coding the server does not understand). */
static bool transfer_encoding_ok(const osv_http_head_t *h)
{
    uint32_t seen = 0;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const osv_http_header_t *hd = &h->headers[i];
        const char *v = hd->value;
        uint32_t n = hd->value_len;
        if (!osv_http_name_is(hd, "Transfer-Encoding"))
            continue;
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        while (n && (*v == ' ' || *v == '\t'))
            v++, n--;
        if (++seen > 1 || n != 7 || strncasecmp(v, "chunked", 7) != 0)
            return false;
    }
    return true;
}

int osv_http_parse_head(const char *buf, size_t len, osv_http_head_t *h, osv_http_header_t *hdrs,
                        uint32_t max_headers, uint32_t max_bytes, osv_http_error_t *e)
{
    size_t end = find_head_end(buf, len < max_bytes ? len : max_bytes);
    head_ctx_t c = {.h = h, .hdrs = hdrs, .max = max_headers};
    http_parser p;
    size_t n;

    if (end == 0)
        return len >= max_bytes ? fail(e, 431, "request head exceeds the header size limit") : 0;
    memset(h, 0, sizeof *h);
    h->headers = hdrs;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &c;
    n = http_parser_execute(&p, &head_settings, buf, end);
    if (c.overflow)
        return fail(e, 431, "too many request headers");
    if (HTTP_PARSER_ERRNO(&p) != HPE_PAUSED)
        return fail(e, 400,
                    HTTP_PARSER_ERRNO(&p) == HPE_OK ? "incomplete request head"
                                                    : http_errno_description(HTTP_PARSER_ERRNO(&p)));
    /* The parser ends the head on the byte after its final CR (any byte: Debian builds it non-strict);
     * it must be the last byte of the blank line found above, or the two disagree on where the body
     * starts ("...\r\n\r<junk>...\r\n\r\n" would leave bytes both in the head and in the body). */
    if (n + 1 != end)
        return fail(e, 400, "malformed end of the request head");
    if (p.http_major != 1)
        return fail(e, 505, "only HTTP/1.x is supported");
    if (!c.url || c.url_len == 0)
        return fail(e, 400, "missing request target");
    finish_head(h, &p, &c);
    h->head_len = (uint32_t)end;
    http_parser_pause(&p, 0);
    p.data = NULL;
    /* Paused inside on_headers_complete, the parser has not consumed the head's last byte(s): feed
     * them now (no callbacks), so a chunked body can later be decoded from its first byte. */
    if (n < end) {
        static const http_parser_settings none;
        http_parser_execute(&p, &none, buf + n, end - n);
    }
    /* That step is where http-parser judges the framing (RFC 9112 §6.3): a Transfer-Encoding whose
     * final coding is not chunked leaves the body length unknown, and the request must be refused
     * (400 and close) rather than taken as bodiless — its body would run as the next request. */
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK)
        return fail(e, 400,
                    HTTP_PARSER_ERRNO(&p) == HPE_INVALID_TRANSFER_ENCODING
                        ? "Transfer-Encoding must end with chunked (no other transfer coding is supported)"
                        : http_errno_description(HTTP_PARSER_ERRNO(&p)));
    if (!transfer_encoding_ok(h))
        return fail(e, 501, "Transfer-Encoding other than chunked is not implemented");
    memcpy(h->parser_state, &p, sizeof p);
    return (int)end;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    chunk_ctx_t *c = p->data;
    if (len > c->cap - c->len) {
        c->overflow = true;
        return 1;
    }
    memmove(c->out + c->len, at, len);
    c->len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    chunk_ctx_t *c = p->data;
    c->done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings body_settings = {
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

long osv_http_dechunk(osv_http_head_t *h, const char *in, size_t len, char *out, size_t out_cap,
                      size_t *out_len, bool *done, osv_http_error_t *e)
{
    http_parser p;
    chunk_ctx_t c = {.out = out, .cap = out_cap, .len = *out_len};
    size_t n;
    if (len == 0) /* http-parser would take an empty buffer as the end of the stream: not ours to say */
        return 0;
    memcpy(&p, h->parser_state, sizeof p);
    p.data = &c;
    n = http_parser_execute(&p, &body_settings, in, len);
    if (c.overflow)
        return fail(e, 413, "chunked request body exceeds the body size limit");
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK && HTTP_PARSER_ERRNO(&p) != HPE_PAUSED)
        return fail(e, 400, http_errno_description(HTTP_PARSER_ERRNO(&p)));
    p.data = NULL;
    memcpy(h->parser_state, &p, sizeof p);
    *out_len = c.len;
    *done = c.done;
    return (long)n;
}
