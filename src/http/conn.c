/* conn.c — the HTTP/1.1 front's connections: reading request heads, receiving bodies straight into
 * their destinations, writing responses with writev, timeouts, and taking requests back from
 * workers. The transport under it (accepting, read buffers, timers, posts, lingering close, the
 * drain) is net/net.h; this file is the osv_front_t net drives.
 *
 * A connection is driven by conn_drive(), a loop over its state machine, so pipelined requests are
 * handled iteratively rather than by recursion:
 *
 *   HEAD  --head parsed--> handler --> BODY (receive) --> handler --> RUN (worker) --> WRITE
 *                               \------------------------------------\--> WRITE --> HEAD ...
 *
 * Body bytes that arrived in the same read as the head are copied to the body's destination once
 * (counted as "readahead"); everything after that is read by readv directly into the destination,
 * with the connection buffer as the last iovec to catch the next pipelined request. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "http/http.h"
#include "obs/obs.h"

static void conn_drive(osv_conn_t *c);

static uint64_t ms_ns(int ms)
{
    return ms > 0 ? (uint64_t)ms * 1000000ull : 0;
}

static uint64_t loop_now(const osv_conn_t *c)
{
    return osv_loop_now(c->nc.loop);
}

uint64_t osv_conn_bytes(const osv_server_opts_t *o)
{
    return osv_net_conn_bytes(o->conn_buffer, sizeof(osv_conn_t));
}

/* ---- request teardown and the next request ------------------------------------------------------- */

static void request_cleanup(osv_conn_t *c)
{
    osv_pool_t *pool = c->srv->pool;
    if (c->req.cleanup)
        c->req.cleanup(c);
    c->req.cleanup = NULL;
    if (c->req.body_slot.base)
        osv_pool_release(pool, &c->req.body_slot);
    if (c->req.inflated.base)
        osv_pool_release(pool, &c->req.inflated);
    if (c->res.body_slot.base)
        osv_pool_release(pool, &c->res.body_slot);
    osv_arena_reset_trim(&c->nc.arena, OSV_NCONN_ARENA_KEEP);
}

static void conn_close(osv_conn_t *c)
{
    osv_nconn_close(&c->nc); /* net calls front_release first */
}

/* The response is written: account for it, then continue with the next request or close. */
static void conn_next(osv_conn_t *c)
{
    osv_server_t *s = c->srv;
    osv_nconn_t *n = &c->nc;
    osv_http_record(c);
    request_cleanup(c);
    atomic_fetch_sub(&s->inflight, 1);
    c->state = CONN_HEAD; /* the request is over: closing below must not count it again */
    c->res.close_after |= osv_conn_body_unread(c);
    if (c->res.close_after && !n->peer_closed && !atomic_load(&s->stopping)) {
        c->state = CONN_LINGER; /* the client may still be sending a body we did not read */
        osv_nconn_linger(n);
        return;
    }
    if (c->res.close_after || !c->req.head.keep_alive || atomic_load(&s->stopping)) {
        conn_close(c);
        return;
    }
    n->pos += (uint32_t)c->req.bytes_in_buffer;
    if (n->pos >= n->len) {
        osv_nconn_drop_buf(n); /* idle keep-alive connections hold no buffer */
    } else if (n->pos > 0) {
        memmove(n->buf, n->buf + n->pos, n->len - n->pos); /* next pipelined request to the front */
        n->len -= n->pos;
        n->pos = 0;
    }
    memset(&c->req, 0, sizeof c->req);
    memset(&c->res, 0, offsetof(osv_response_t, hdr));
    c->res.hdr_len = 0;
    osv_conn_set_timer(c, n->len ? ms_ns(s->o.header_timeout_ms) : ms_ns(s->o.idle_timeout_ms));
}

/* ---- reading the head ----------------------------------------------------------------------------- */

static void head_error(osv_conn_t *c, const osv_http_error_t *e)
{
    c->req.head.keep_alive = false;
    c->req.t_start = c->req.t_start ? c->req.t_start : osv_now_ns();
    atomic_fetch_add(&c->srv->inflight, 1);
    osv_res_error(c, e->status, "%s", e->msg);
    c->res.close_after = true;
}

/* Parses a head if one is buffered and dispatches it; returns false when waiting for bytes. */
static bool step_head(osv_conn_t *c)
{
    osv_server_t *s = c->srv;
    osv_http_header_t *hdrs;
    osv_http_error_t e;
    for (;;) {
        if (c->nc.len > c->nc.pos) {
            if (!c->req.t_start) {
                c->req.t_start = osv_now_ns();
                osv_conn_set_timer(c, ms_ns(s->o.header_timeout_ms));
            }
            hdrs = osv_arena_alloc(&c->nc.arena, s->o.max_headers * sizeof *hdrs, 8);
            int rc = hdrs ? osv_http_parse_head(c->nc.buf + c->nc.pos, c->nc.len - c->nc.pos, &c->req.head, hdrs,
                                                s->o.max_headers, s->o.max_header_bytes, &e)
                          : -1;
            if (!hdrs)
                e = (osv_http_error_t){503, "out of memory"};
            if (rc > 0) {
                atomic_fetch_add(&s->inflight, 1);
                c->req.bytes_in_buffer = c->req.head.head_len;
                c->req.bytes_in = c->req.head.head_len;
                osv_conn_set_timer(c, 0);
                osv_route(c);
                return true;
            }
            osv_arena_reset(&c->nc.arena);
            if (rc < 0) {
                head_error(c, &e);
                return true;
            }
        }
        if (!c->nc.readable)
            return false;
        if (!osv_nconn_take_buf(&c->nc)) {
            e = (osv_http_error_t){503, "out of memory for the request, retry later"};
            head_error(c, &e); /* the head is not read: the response closes (lingering) */
            return true;
        }
        int r = osv_nconn_read(&c->nc);
        if (r < 0) {
            conn_close(c);
            return true;
        }
        if (r == 0 && c->nc.len == c->nc.cap) {
            e = (osv_http_error_t){431, "request head exceeds the header size limit"};
            head_error(c, &e);
            return true;
        }
        if (r == 0)
            return false;
    }
}

bool osv_conn_body_unread(const osv_conn_t *c)
{
    const osv_request_t *r = &c->req;
    if (r->head.chunked)
        return !r->chunked_done;
    return r->bytes_in - r->head.head_len < r->head.content_length;
}

/* ---- receiving bodies ------------------------------------------------------------------------------ */

int osv_conn_plan_buffer(osv_conn_t *c, uint64_t n)
{
    uint64_t start = c->nc.pos + c->req.bytes_in_buffer;
    body_plan_t *b = &c->req.body;
    if (start + n > c->nc.cap)
        return -1;
    b->n_iov = 1;
    b->cur = 0;
    b->iov[0].iov_base = c->nc.buf + start;
    b->iov[0].iov_len = n;
    b->remaining = n;
    b->in_buffer = true;
    return 0;
}

int osv_conn_plan_iov(osv_conn_t *c, const struct iovec *iov, int n)
{
    body_plan_t *b = &c->req.body;
    if (n > OSV_MAX_IOV)
        return -1;
    b->n_iov = n;
    b->cur = 0;
    b->remaining = 0;
    b->in_buffer = false;
    for (int i = 0; i < n; i++) {
        b->iov[i] = iov[i];
        b->remaining += iov[i].iov_len;
    }
    return 0;
}

void osv_conn_plan_chunked(osv_conn_t *c, uint64_t limit)
{
    body_plan_t *b = &c->req.body;
    memset(b, 0, sizeof *b);
    b->chunked = true;
    b->dst_limit = limit;
    b->remaining = 1; /* unknown until the last chunk */
}

/* Room for `need` decoded bytes: a slot four times larger than the last (or as large as need), up to
 * the limit; what was decoded moves along (counted: chunked bodies are a copy by nature). Decoding
 * never outruns its input, so need = decoded + buffered input always suffices. */
#define CHUNKED_FIRST_SLOT (16u << 10)

static bool chunked_room(osv_conn_t *c, uint64_t need)
{
    body_plan_t *b = &c->req.body;
    osv_pool_t *pool = c->srv->pool;
    uint64_t want = b->dst_cap ? b->dst_cap * 4 : CHUNKED_FIRST_SLOT;
    osv_slot_t bigger;
    if (need <= b->dst_cap || b->dst_cap >= b->dst_limit)
        return true; /* at the limit, overflow is judged by the decoder (413) */
    want = want > need ? want : need;
    want = want < b->dst_limit ? want : b->dst_limit;
    want = want < osv_pool_max_slot(pool) ? want : osv_pool_max_slot(pool);
    if (want <= b->dst_cap || osv_pool_acquire(pool, want, &bigger) != 0) {
        osv_res_error(c, 503, "no memory for a %" PRIu64 "-byte chunked request body, retry later", need);
        return false;
    }
    if (b->dst_len) {
        memcpy(bigger.base, b->dst, b->dst_len);
        c->req.copied[OSV_COPY_CHUNKED] += b->dst_len;
    }
    osv_pool_release(pool, &c->req.body_slot);
    c->req.body_slot = bigger;
    b->dst = (char *)bigger.base;
    b->dst_cap = bigger.cap < b->dst_limit ? bigger.cap : b->dst_limit;
    return true;
}

/* Decodes the buffered chunked bytes. Consumed bytes are dropped from the buffer (its space is
 * reused), except after the final chunk, where what follows is the next pipelined request.
 * Returns false with a prepared error response when the stream is malformed or too long. */
static bool dechunk_buffered(osv_conn_t *c)
{
    body_plan_t *b = &c->req.body;
    uint64_t start = c->nc.pos + c->req.bytes_in_buffer, avail = c->nc.len - start, before = b->dst_len;
    osv_http_error_t e;
    bool done = false;
    long n;
    if (!avail)
        return true;
    if (!chunked_room(c, b->dst_len + avail))
        return false;
    n = osv_http_dechunk(&c->req.head, c->nc.buf + start, avail, b->dst, b->dst_cap, &b->dst_len, &done, &e);
    if (n < 0) {
        osv_res_error(c, e.status, "%s", e.msg);
        return false;
    }
    c->req.copied[OSV_COPY_CHUNKED] += b->dst_len - before;
    if (done) {
        c->req.chunked_done = true;
        c->req.bytes_in_buffer += (uint64_t)n; /* the rest is the next request */
        c->req.bytes_in += (uint64_t)n;
        b->remaining = 0;
    } else {
        c->req.bytes_in += (uint64_t)n;
        c->nc.len = (uint32_t)start; /* every byte was consumed: reuse the space */
    }
    return true;
}

/* Skips empty iovecs; false when the plan is complete. */
static bool plan_cur(body_plan_t *b)
{
    while (b->cur < b->n_iov && b->iov[b->cur].iov_len == 0)
        b->cur++;
    return b->cur < b->n_iov;
}

static void plan_advance(body_plan_t *b, uint64_t n)
{
    b->remaining -= n;
    while (n > 0 && plan_cur(b)) {
        uint64_t k = n < b->iov[b->cur].iov_len ? n : b->iov[b->cur].iov_len;
        b->iov[b->cur].iov_base = (char *)b->iov[b->cur].iov_base + k;
        b->iov[b->cur].iov_len -= k;
        n -= k;
    }
}

/* Moves body bytes already in the connection buffer into the plan (a counted copy, unless the plan
 * is the buffer itself). */
static void take_buffered(osv_conn_t *c)
{
    body_plan_t *b = &c->req.body;
    uint64_t avail = c->nc.len - (c->nc.pos + c->req.bytes_in_buffer);
    const char *src = c->nc.buf + c->nc.pos + c->req.bytes_in_buffer;
    if (b->in_buffer) {
        uint64_t k = avail < b->remaining ? avail : b->remaining;
        plan_advance(b, k);
        c->req.bytes_in_buffer += k;
        c->req.bytes_in += k;
        return;
    }
    while (avail > 0 && plan_cur(b)) {
        uint64_t k = avail < b->iov[b->cur].iov_len ? avail : b->iov[b->cur].iov_len;
        memcpy(b->iov[b->cur].iov_base, src, k);
        c->req.copied[OSV_COPY_READAHEAD] += k;
        src += k;
        avail -= k;
        c->req.bytes_in_buffer += k;
        c->req.bytes_in += k;
        plan_advance(b, k);
    }
}

/* readv into the remaining destinations plus the buffer's free tail (next pipelined bytes). */
static int read_into_plan(osv_conn_t *c)
{
    body_plan_t *b = &c->req.body;
    struct iovec v[OSV_MAX_IOV + 1];
    int n = 0;
    ssize_t got;
    if (b->in_buffer) {
        v[n++] = (struct iovec){c->nc.buf + c->nc.len, c->nc.cap - c->nc.len};
    } else {
        for (int i = b->cur; i < b->n_iov; i++)
            if (b->iov[i].iov_len)
                v[n++] = b->iov[i];
        if (c->nc.buf && c->nc.len < c->nc.cap)
            v[n++] = (struct iovec){c->nc.buf + c->nc.len, c->nc.cap - c->nc.len};
    }
    got = readv(c->nc.fd, v, n);
    if (got == 0) {
        c->nc.peer_closed = true;
        return -1;
    }
    if (got < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? (c->nc.readable = false, 0) : errno == EINTR ? 0 : -1;
    if (b->in_buffer) {
        c->nc.len += (uint32_t)got;
        take_buffered(c);
        return 1;
    }
    uint64_t to_plan = (uint64_t)got < b->remaining ? (uint64_t)got : b->remaining;
    plan_advance(b, to_plan);
    c->req.bytes_in += to_plan;                    /* the rest belongs to the next request */
    c->nc.len += (uint32_t)((uint64_t)got - to_plan); /* the rest landed in the buffer tail */
    if (to_plan == (uint64_t)got && (uint64_t)got < b->remaining && !c->nc.peer_shut)
        c->nc.readable = false;
    return 1;
}

static void send_continue(osv_conn_t *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (c->req.head.expect_continue && !c->req.continue_sent) {
        c->req.continue_sent = true;
        if (write(c->nc.fd, msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1))
            c->res.close_after = true;
    }
}

/* While a body arrives two clocks run: --body-timeout-ms between bytes, and, once
 * --body-rate-grace-ms has passed since the body began, its average rate must stay at or above
 * --min-body-rate (a client sending a byte every few seconds would otherwise hold its slot and
 * connection for ever). rate_deadline is when the bytes received so far stop covering that rate. */
static uint64_t rate_deadline(const osv_conn_t *c)
{
    const osv_server_opts_t *o = &c->srv->o;
    uint64_t got = c->req.bytes_in - c->req.head.head_len, rate = o->min_body_rate, ns, at;
    if (!rate || !c->req.t_body)
        return 0;
    ns = got / rate > UINT64_MAX / 2000000000ull ? UINT64_MAX / 2
                                                 : got / rate * 1000000000ull + got % rate * 1000000000ull / rate;
    at = c->req.t_body + ms_ns(o->body_rate_grace_ms);
    return ns > UINT64_MAX - at ? UINT64_MAX : at + ns;
}

static void arm_body_timer(osv_conn_t *c)
{
    uint64_t in = ms_ns(c->srv->o.body_timeout_ms), rd = rate_deadline(c);
    if (rd) {
        uint64_t rel = rd > loop_now(c) ? rd - loop_now(c) : 1;
        in = in && in < rel ? in : rel;
    }
    osv_conn_set_timer(c, in);
}

void osv_conn_receive_body(osv_conn_t *c, body_done_fn done)
{
    c->req.on_body = done;
    c->state = CONN_BODY;
    if (!c->req.t_body)
        c->req.t_body = loop_now(c);
    if (c->req.body.chunked) {
        if (!dechunk_buffered(c))
            return;
        if (c->req.body.remaining)
            send_continue(c);
        arm_body_timer(c);
        return;
    }
    take_buffered(c);
    if (c->req.body.remaining)
        send_continue(c);
    arm_body_timer(c);
}

/* The client ended its side before the whole body arrived (or the read failed). A half-closed
 * client can still read: tell it what was missing (400, and the connection closes); a vanished
 * one costs a failed write. Either way the request's slots are released at once. */
static void body_cut_short(osv_conn_t *c)
{
    const osv_request_t *r = &c->req;
    osv_conn_set_timer(c, 0);
    if (!c->nc.peer_closed) {
        conn_close(c);
        return;
    }
    if (r->head.chunked)
        osv_res_error(c, 400, "the chunked request body ended before its last chunk");
    else
        osv_res_error(c, 400,
                      "the request body ended after %" PRIu64 " of its %" PRIu64 " bytes (Content-Length)",
                      r->bytes_in - r->head.head_len, r->head.content_length);
}

static bool step_body_chunked(osv_conn_t *c)
{
    body_plan_t *b = &c->req.body;
    while (b->remaining > 0) {
        if (!c->nc.readable)
            return false;
        int r = osv_nconn_read(&c->nc);
        if (r < 0) {
            body_cut_short(c);
            return true;
        }
        if (r == 0)
            return false;
        if (!dechunk_buffered(c))
            return true; /* error response prepared */
        arm_body_timer(c);
    }
    osv_conn_set_timer(c, 0);
    c->state = CONN_RUN;
    c->req.on_body(c);
    return true;
}

static bool step_body(osv_conn_t *c)
{
    body_plan_t *b = &c->req.body;
    if (b->chunked)
        return c->state == CONN_BODY ? step_body_chunked(c) : true;
    while (b->remaining > 0) {
        if (!c->nc.readable)
            return false;
        int r = read_into_plan(c);
        if (r < 0) {
            body_cut_short(c);
            return true;
        }
        if (r == 0)
            return false;
        if (b->remaining > 0)
            arm_body_timer(c);
    }
    osv_conn_set_timer(c, 0);
    c->state = CONN_RUN; /* the continuation decides what comes next */
    c->req.on_body(c);
    return true;
}

/* ---- writing responses ------------------------------------------------------------------------------ */

void osv_conn_send(osv_conn_t *c)
{
    c->res.cur_iov = 0;
    c->res.sent = 0;
    if (osv_loop_is_current(c->nc.loop))
        c->state = CONN_WRITE;
    else
        c->res.ready = true; /* on a worker: the loop switches state when it takes the request back */
}

static bool step_write(osv_conn_t *c)
{
    osv_response_t *r = &c->res;
    while (r->cur_iov < r->n_iov) {
        ssize_t n = writev(c->nc.fd, r->iov + r->cur_iov,
                           r->n_iov - r->cur_iov > IOV_MAX ? IOV_MAX : r->n_iov - r->cur_iov);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                osv_conn_set_timer(c, ms_ns(c->srv->o.body_timeout_ms));
                return false; /* EPOLLOUT (edge) resumes us */
            }
            if (errno == EINTR)
                continue;
            conn_close(c);
            return true;
        }
        r->sent += (uint64_t)n;
        while (n > 0 && r->cur_iov < r->n_iov) {
            struct iovec *v = &r->iov[r->cur_iov];
            size_t k = (size_t)n < v->iov_len ? (size_t)n : v->iov_len;
            v->iov_base = (char *)v->iov_base + k;
            v->iov_len -= k;
            n -= (ssize_t)k;
            if (v->iov_len == 0)
                r->cur_iov++;
        }
    }
    osv_conn_set_timer(c, 0);
    conn_next(c);
    return true;
}

static void conn_drive(osv_conn_t *c)
{
    for (;;) {
        bool progressed;
        switch (c->state) {
        case CONN_HEAD:
            progressed = step_head(c);
            break;
        case CONN_BODY:
            progressed = step_body(c);
            break;
        case CONN_WRITE:
            progressed = step_write(c);
            break;
        default:
            return; /* RUN: a worker or a timer continues it; LINGER: net's now; CLOSED: done */
        }
        if (!progressed)
            return;
    }
}

/* ---- timers and requests coming back from workers ------------------------------------------------------ */

static void on_timeout(osv_conn_t *c)
{
    if (c->state == CONN_RUN && c->req.on_timer) {
        void (*fn)(osv_conn_t *) = c->req.on_timer;
        c->req.on_timer = NULL;
        fn(c);
        conn_drive(c);
        return;
    }
    if (c->state == CONN_HEAD && c->nc.len > c->nc.pos) {
        osv_http_error_t e = {408, "timed out waiting for the request head"};
        head_error(c, &e);
        osv_obs_note(OSV_OBS_TIMEOUT_HEADER);
        conn_drive(c);
        return;
    }
    if (c->state == CONN_BODY) {
        /* The client stopped sending its body, or sends it too slowly: tell it (408) and close. */
        const osv_server_opts_t *o = &c->srv->o;
        uint64_t rd = rate_deadline(c);
        osv_obs_note(OSV_OBS_TIMEOUT_BODY);
        if (rd && loop_now(c) >= rd)
            osv_res_error(c, 408,
                          "the request body arrives slower than %u bytes/s (--min-body-rate; %" PRIu64
                          " bytes in %" PRIu64 " ms)",
                          o->min_body_rate, c->req.bytes_in - c->req.head.head_len,
                          (loop_now(c) - c->req.t_body) / 1000000);
        else
            osv_res_error(c, 408, "timed out waiting for the request body (--body-timeout-ms)");
        conn_drive(c);
        return;
    }
    if (c->state == CONN_WRITE)
        osv_obs_note(OSV_OBS_TIMEOUT_WRITE);
    else
        osv_obs_note(OSV_OBS_TIMEOUT_IDLE);
    conn_close(c); /* idle keep-alive, slow body or a reader that stopped reading */
}

/* A worker finished the request (or moved work off the loop and is done with it): on the loop
 * thread again. */
static void conn_back(osv_post_t *p)
{
    osv_conn_t *c = (osv_conn_t *)((char *)p - offsetof(osv_conn_t, done));
    if (c->state == CONN_WRITE) { /* answered on this loop (a run it collected, osv_serve_flush) */
        conn_drive(c);
        return;
    }
    if (c->state != CONN_RUN)
        return;
    if (c->res.ready) {
        c->res.ready = false;
        c->state = CONN_WRITE;
    } else if (c->req.resume) {
        void (*fn)(osv_conn_t *) = c->req.resume;
        c->req.resume = NULL;
        fn(c);
    } else {
        osv_res_error(c, 500, "request finished without a response");
    }
    conn_drive(c);
}

void osv_conn_complete(osv_conn_t *c)
{
    osv_loop_post(c->nc.loop, &c->done);
}

/* ---- the front: what net calls -------------------------------------------------------------------------- */

static void front_open(osv_nconn_t *n)
{
    osv_conn_t *c = (osv_conn_t *)n;
    c->srv = n->front->ud;
    c->state = CONN_HEAD;
    c->done.fn = conn_back;
    osv_conn_set_timer(c, ms_ns(c->srv->o.idle_timeout_ms));
}

static void front_drive(osv_nconn_t *n)
{
    conn_drive((osv_conn_t *)n);
}

static void front_timeout(osv_nconn_t *n)
{
    on_timeout((osv_conn_t *)n);
}

/* Closing: what the request in progress holds goes back (slots, the model reference, the in-flight
 * count). */
static void front_release(osv_nconn_t *n)
{
    osv_conn_t *c = (osv_conn_t *)n;
    if (c->state == CONN_CLOSED)
        return;
    if ((c->state != CONN_HEAD && c->state != CONN_LINGER) || n->len > n->pos)
        request_cleanup(c);
    if (c->state == CONN_BODY || c->state == CONN_WRITE)
        atomic_fetch_sub(&c->srv->inflight, 1);
    c->state = CONN_CLOSED;
}

static bool front_idle(const osv_nconn_t *n)
{
    const osv_conn_t *c = (const osv_conn_t *)n;
    return c->state == CONN_HEAD && n->len == n->pos;
}

static bool front_busy(const osv_nconn_t *n)
{
    const osv_conn_t *c = (const osv_conn_t *)n;
    return c->state == CONN_RUN || c->state == CONN_WRITE;
}

void osv_http_front_init(osv_server_t *s, osv_front_t *f)
{
    *f = (osv_front_t){.name = "http",
                       .conn_size = sizeof(osv_conn_t),
                       .ud = s,
                       .retry_after_s = s->o.retry_after_s,
                       .open = front_open,
                       .drive = front_drive,
                       .timeout = front_timeout,
                       .release = front_release,
                       .idle = front_idle,
                       .busy = front_busy};
}
