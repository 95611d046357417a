/* respond.c — building responses: status line and headers into the connection's header buffer,
 * bodies as iovecs (static text, a pool slot holding JSON, or tensor memory written by ORT), and the
 * one table mapping ortserve error codes to HTTP statuses. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "http/http.h"
#include "obs/obs.h"

const char *osv_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

int osv_http_status(int code)
{
    switch (code) {
    case 0:
        return 200;
    case OSV_EINVAL:
    case OSV_EDTYPE:
    case OSV_ESHAPE:
    case OSV_ELIMIT:
    case OSV_EOVERFLOW:
    case OSV_EPARSE:
        return 400;
    case OSV_EPERM:
        return 403;
    case OSV_ENOTFOUND:
        return 404;
    case OSV_EEXIST:
        return 409;
    case OSV_ETOOBIG:
        return 413;
    case OSV_EUNSUPPORTED:
        return 400;
    case OSV_EBUSY:
    case OSV_ENOMEM:
    case OSV_EUNAVAIL:
        return 503;
    case OSV_ECANCELED:
    case OSV_ETIMEDOUT:
        return 504;
    default:
        return 500; /* OSV_EORT, OSV_EIO, OSV_EVERSION */
    }
}

static void hdr_append(osv_conn_t *c, const char *fmt, va_list ap)
{
    osv_response_t *r = &c->res;
    int n = vsnprintf(r->hdr + r->hdr_len, sizeof r->hdr - r->hdr_len, fmt, ap);
    if (n > 0)
        r->hdr_len = r->hdr_len + (uint32_t)n < sizeof r->hdr ? r->hdr_len + (uint32_t)n : sizeof r->hdr - 1;
}

static void hdr_printf(osv_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hdr_printf(osv_conn_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    hdr_append(c, fmt, ap);
    va_end(ap);
}

void osv_res_begin(osv_conn_t *c, int status)
{
    osv_response_t *r = &c->res;
    r->status = status;
    r->hdr_len = 0;
    r->n_iov = 1; /* iov[0] is the head, filled in by osv_res_end_head */
    r->total = 0;
    hdr_printf(c, "HTTP/1.%d %d %s\r\n", c->req.head.minor == 0 ? 0 : 1, status, osv_status_text(status));
    if (c->req.request_id_len)
        hdr_printf(c, "X-Request-ID: %.*s\r\n", (int)c->req.request_id_len, c->req.request_id);
    osv_obs_response_headers(c);
    if (status == 503)
        hdr_printf(c, "Retry-After: %u\r\n", c->loop->srv->o.retry_after_s);
}

void osv_res_header(osv_conn_t *c, const char *name, const char *fmt, ...)
{
    va_list ap;
    hdr_printf(c, "%s: ", name);
    va_start(ap, fmt);
    hdr_append(c, fmt, ap);
    va_end(ap);
    hdr_printf(c, "\r\n");
}

void osv_res_end_head(osv_conn_t *c, uint64_t body_len)
{
    osv_response_t *r = &c->res;
    bool close = r->close_after || !c->req.head.keep_alive || atomic_load(&c->loop->srv->stopping);
    if (close)
        hdr_printf(c, "Connection: close\r\n");
    else if (c->req.head.minor == 0)
        hdr_printf(c, "Connection: keep-alive\r\n");
    hdr_printf(c, "Content-Length: %llu\r\n\r\n", (unsigned long long)body_len);
    r->iov[0].iov_base = r->hdr;
    r->iov[0].iov_len = r->hdr_len;
    r->total += r->hdr_len;
}

void osv_res_add_iov(osv_conn_t *c, const void *p, uint64_t len)
{
    osv_response_t *r = &c->res;
    if (len == 0 || r->n_iov == OSV_MAX_IOV)
        return;
    r->iov[r->n_iov].iov_base = (void *)p;
    r->iov[r->n_iov].iov_len = len;
    r->n_iov++;
    r->total += len;
}

/* HEAD requests get the head only. */
static bool head_only(const osv_conn_t *c)
{
    return c->req.head.method == OSV_HTTP_HEAD;
}

void osv_res_json(osv_conn_t *c, int status, const char *body, size_t len)
{
    osv_res_begin(c, status);
    osv_res_header(c, "Content-Type", "application/json");
    osv_res_end_head(c, len);
    if (!head_only(c))
        osv_res_add_iov(c, body, len);
    osv_conn_send(c);
}

void osv_res_empty(osv_conn_t *c, int status)
{
    osv_res_begin(c, status);
    osv_res_end_head(c, 0);
    osv_conn_send(c);
}

/* Error bodies are written into the header buffer after the head: {"error": "<escaped msg>"}. */
static void res_error_text(osv_conn_t *c, int status, const char *msg)
{
    osv_response_t *r = &c->res;
    char body[OSV_ERR_MSG_MAX * 2 + 16];
    osv_jw_t w;
    osv_jw_init(&w, body, sizeof body);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "error", 5);
    osv_jw_str(&w, msg, strlen(msg) > OSV_ERR_MSG_MAX ? OSV_ERR_MSG_MAX : strlen(msg));
    osv_jw_obj_end(&w);
    if (osv_jw_error(&w))
        w.len = (size_t)snprintf(body, sizeof body, "{\"error\":\"%s\"}", osv_status_text(status));
    osv_res_begin(c, status);
    osv_res_header(c, "Content-Type", "application/json");
    osv_res_end_head(c, osv_jw_len(&w));
    if (!head_only(c) && r->hdr_len + osv_jw_len(&w) <= sizeof r->hdr) {
        memcpy(r->hdr + r->hdr_len, body, osv_jw_len(&w));
        r->iov[0].iov_len += osv_jw_len(&w);
        r->total += osv_jw_len(&w);
    } else if (!head_only(c)) { /* cannot happen with the sizes above; keep the framing honest */
        r->close_after = true;
    }
    osv_conn_send(c);
}

void osv_res_error(osv_conn_t *c, int status, const char *fmt, ...)
{
    char msg[OSV_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    res_error_text(c, status, msg);
}

void osv_res_error_code(osv_conn_t *c, int code, const char *msg)
{
    res_error_text(c, osv_http_status(code), msg && *msg ? msg : osv_strerror(code));
}

char *osv_res_body_buf(osv_conn_t *c, uint64_t cap)
{
    osv_response_t *r = &c->res;
    if (r->body_slot.base)
        osv_pool_release(c->loop->srv->pool, &r->body_slot);
    if (osv_pool_acquire(c->loop->srv->pool, cap ? cap : 1, &r->body_slot) != 0)
        return NULL;
    return (char *)r->body_slot.base;
}
