/* respond.c — building responses: status line and headers into the connection's header buffer,
 * bodies as iovecs (static text, a pool slot holding JSON, or tensor memory written by ORT). Error
 * codes become statuses through serve/errmap.h, the table every front shares. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "http/http.h"
#include "obs/obs.h"
#include "serve/errmap.h"
#include "util/sanitize.h"

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

static void hdr_append(osv_conn_t *c, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
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

static void hdr_put(osv_conn_t *c, const char *s, size_t n)
{
    osv_response_t *r = &c->res;
    if (r->hdr_len + n < sizeof r->hdr) {
        memcpy(r->hdr + r->hdr_len, s, n);
        r->hdr_len += (uint32_t)n;
    }
}

#define HDR_LIT(c, lit) hdr_put((c), (lit), sizeof(lit) - 1)

static void hdr_u64(osv_conn_t *c, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    hdr_put(c, tmp + sizeof tmp - n, (size_t)n);
}

/* Status line, X-Request-ID, traceparent (and Retry-After on 503) without printf: this runs for
 * every response. */
void osv_res_begin(osv_conn_t *c, int status)
{
    osv_response_t *r = &c->res;
    const char *text = osv_status_text(status);
    r->status = status;
    r->hdr_len = 0;
    r->n_iov = 1; /* iov[0] is the head, filled in by osv_res_end_head */
    r->total = 0;
    if (c->req.head.minor == 0)
        HDR_LIT(c, "HTTP/1.0 ");
    else
        HDR_LIT(c, "HTTP/1.1 ");
    hdr_u64(c, (uint64_t)status);
    HDR_LIT(c, " ");
    hdr_put(c, text, strlen(text));
    HDR_LIT(c, "\r\n");
    char tp[56];
    osv_obs_ids_ensure(&c->req.ids); /* a malformed head is answered before its ids were read */
    HDR_LIT(c, "X-Request-ID: ");
    hdr_put(c, c->req.ids.request_id, c->req.ids.request_id_len);
    HDR_LIT(c, "\r\ntraceparent: ");
    osv_obs_traceparent(&c->req.ids, tp);
    hdr_put(c, tp, 55);
    HDR_LIT(c, "\r\n");
    if (status == 503) {
        HDR_LIT(c, "Retry-After: ");
        hdr_u64(c, c->srv->o.retry_after_s);
        HDR_LIT(c, "\r\n");
    }
}

/* Appends a header line whose value is already formatted. */
void osv_res_header_raw(osv_conn_t *c, const char *name, size_t name_len, const char *value, size_t value_len)
{
    hdr_put(c, name, name_len);
    HDR_LIT(c, ": ");
    hdr_put(c, value, value_len);
    HDR_LIT(c, "\r\n");
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
    /* Body bytes not read yet would be taken for the next request: close after this response, and
     * say so. */
    if (osv_conn_body_unread(c))
        r->close_after = true;
    bool close = r->close_after || !c->req.head.keep_alive || atomic_load(&c->srv->stopping);
    if (close)
        HDR_LIT(c, "Connection: close\r\n");
    else if (c->req.head.minor == 0)
        HDR_LIT(c, "Connection: keep-alive\r\n");
    HDR_LIT(c, "Content-Length: ");
    hdr_u64(c, body_len);
    HDR_LIT(c, "\r\n\r\n");
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
    HDR_LIT(c, "Content-Type: application/json\r\n");
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

/* Error bodies: {"error": "<escaped msg>"}, written into the header buffer after the head when they
 * fit (nearly always: no allocation), else into the request's arena as a second iovec. Only when the
 * arena has no room either does the body shrink to the status text, so the Content-Length sent is
 * always the body sent. */
static void res_error_body(osv_conn_t *c, int status, const char *body, size_t n)
{
    osv_response_t *r = &c->res;
    char *copy = NULL;
    osv_res_begin(c, status);
    HDR_LIT(c, "Content-Type: application/json\r\n");
    if (!head_only(c) && r->hdr_len + 64 + n > sizeof r->hdr && !(copy = osv_arena_alloc(&c->nc.arena, n, 1))) {
        char generic[96];
        int g = snprintf(generic, sizeof generic, "{\"error\":\"%s\"}", osv_status_text(status));
        res_error_body(c, status, generic, (size_t)g); /* fits the head buffer: no recursion beyond one */
        return;
    }
    osv_res_end_head(c, n);
    if (head_only(c)) {
    } else if (copy) {
        memcpy(copy, body, n);
        osv_res_add_iov(c, copy, n);
    } else if (OSV_ALWAYS(r->hdr_len + n <= sizeof r->hdr)) {
        memcpy(r->hdr + r->hdr_len, body, n);
        r->iov[0].iov_len += n;
        r->total += n;
    } else {
        r->close_after = true; /* the head says n bytes that will not come: end the connection */
    }
    osv_conn_send(c);
}

static void res_error_text(osv_conn_t *c, int status, const char *msg)
{
    char body[OSV_ERR_MSG_MAX * 6 + 16]; /* every byte of msg escaped as \u00XX at worst */
    size_t len = strlen(msg);
    osv_jw_t w;
    osv_jw_init(&w, body, sizeof body);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "error", 5);
    osv_jw_str(&w, msg, len > OSV_ERR_MSG_MAX ? OSV_ERR_MSG_MAX : len);
    osv_jw_obj_end(&w);
    if (OSV_NEVER(osv_jw_error(&w)))
        w.len = (size_t)snprintf(body, sizeof body, "{\"error\":\"%s\"}", osv_status_text(status));
    res_error_body(c, status, body, osv_jw_len(&w));
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
    res_error_text(c, osv_status_http(code), msg && *msg ? msg : osv_strerror(code));
}

char *osv_res_body_buf(osv_conn_t *c, uint64_t cap)
{
    osv_response_t *r = &c->res;
    if (r->body_slot.base)
        osv_pool_release(c->srv->pool, &r->body_slot);
    if (osv_pool_acquire(c->srv->pool, cap ? cap : 1, &r->body_slot) != 0)
        return NULL;
    return (char *)r->body_slot.base;
}

static const char *method_name(int m)
{
    static const char *const names[] = {"?", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "OTHER"};
    return m >= 0 && m <= OSV_HTTP_OTHER ? names[m] : "?";
}

void osv_http_record(osv_conn_t *c)
{
    osv_request_t *q = &c->req;
    osv_obs_record_t r = {.shard = osv_loop_index(c->nc.loop),
                          .proto = OSV_OBS_HTTP,
                          .method = method_name(q->head.method),
                          .path = q->head.path,
                          .path_len = q->head.path_len,
                          .route = q->route,
                          .status = c->res.status,
                          .outcome = osv_obs_http_outcome(c->res.status),
                          .model = q->model,
                          .counted = q->counted,
                          .ids = &q->ids,
                          .t_start = q->t_start,
                          .bytes_in = q->bytes_in,
                          .bytes_out = c->res.sent,
                          .batch = q->batch,
                          .core_copied = q->core_copied,
                          .fallback = q->fallback};
    memcpy(r.ns, q->ns, sizeof r.ns);
    memcpy(r.phase_t0, q->phase_t0, sizeof r.phase_t0);
    memcpy(r.phase_t1, q->phase_t1, sizeof r.phase_t1);
    memcpy(r.front_copied, q->copied, sizeof r.front_copied);
    osv_obs_record(&r);
    q->ns[OSV_PHASE_REQUEST] = r.ns[OSV_PHASE_REQUEST];
    q->outcome = r.outcome;
    q->counted = r.counted;
}
