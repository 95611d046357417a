/* Candidate A: own epoll loop + nodejs http-parser 2.9 (Debian libhttp-parser-dev).
 *
 * One thread per core, each with its own SO_REUSEPORT listener and a
 * level-triggered epoll set. Keep-alive and pipelining: every complete request
 * in the read buffer is parsed, responses are queued in order and written with
 * writev. If the queue fills up the parser is paused until it drains.
 *
 * Body receive: once the headers are parsed and the request has a
 * Content-Length, body bytes that already arrived with the headers are copied
 * into the pool slot (one small memcpy), and every further read() goes
 * straight into the slot at the right offset, never past the end of the body
 * (so a pipelined next request is not read into the slot). Those bytes are
 * then fed to http_parser in place: on_body sees a pointer into the slot and
 * does not copy.
 */
#include "common.h"

#include <http_parser.h>
#include <limits.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/uio.h>

enum { INBUF_SIZE = 8192, MAXQ = 64, MAX_EVENTS = 256, URL_MAX = 64 };

enum route { R_NONE, R_INFER, R_OTHER };

struct canned {
    char *data;
    size_t len;
};

static struct canned resp_ok, resp_404, resp_400, resp_413, resp_431, resp_503;

struct conn {
    int fd;
    uint32_t ev; /* current epoll interest */
    http_parser parser;
    /* current request */
    enum route route;
    int direct_ok; /* Content-Length body: may read() straight into the slot */
    struct slot *slot;
    size_t url_len;
    char url[URL_MAX];
    /* state */
    int paused;  /* parser paused: output queue full or connection closing */
    int closing; /* close once the output queue is flushed */
    int dead;
    /* output queue of canned responses, in request order */
    const struct canned *q[MAXQ];
    unsigned q_head, q_cnt;
    size_t q_off;
    /* input */
    size_t in_off, in_len;
    char inbuf[INBUF_SIZE];
};

static http_parser_settings settings;

static void canned_init(struct canned *c, const char *status, const char *body)
{
    char tmp[1024];
    int n =
        snprintf(tmp, sizeof tmp, "HTTP/1.1 %s\r\nContent-Type: " JSON_CT "\r\nContent-Length: %zu\r\n\r\n%s",
                 status, strlen(body), body);
    c->data = strdup(tmp);
    c->len = (size_t)n;
}

static void queue_resp(struct conn *c, const struct canned *r, int close_after)
{
    c->q[(c->q_head + c->q_cnt) % MAXQ] = r;
    c->q_cnt++;
    if (close_after)
        c->closing = 1;
    if (c->closing || c->q_cnt == MAXQ) {
        c->paused = 1;
        http_parser_pause(&c->parser, 1);
    }
}

static void drop_slot(struct conn *c)
{
    if (c->slot != NULL) {
        slot_release(c->slot);
        c->slot = NULL;
    }
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->route = R_NONE;
    c->url_len = 0;
    c->direct_ok = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->url_len + len <= URL_MAX)
        memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    size_t plen = sizeof INFER_PATH - 1;
    int is_infer = p->method == HTTP_POST && c->url_len == plen && memcmp(c->url, INFER_PATH, plen) == 0;
    c->route = is_infer ? R_INFER : R_OTHER;
    if (!is_infer)
        return 0; /* body (if any) is parsed and discarded */
    int chunked = (p->flags & F_CHUNKED) != 0;
    if (!chunked && p->content_length != ULLONG_MAX && p->content_length > SLOT_SIZE) {
        queue_resp(c, &resp_413, 1);
        return 0;
    }
    c->slot = slot_acquire();
    if (c->slot == NULL) {
        queue_resp(c, &resp_503, 1);
        return 0;
    }
    c->direct_ok = !chunked && p->content_length != ULLONG_MAX && p->content_length > 0;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct slot *s = c->slot;
    if (c->route != R_INFER || s == NULL)
        return 0;
    if (at == s->mem + s->len) { /* read() put it there already */
        stat_add(&stat_body_direct, len);
    } else {
        if (len > SLOT_SIZE - s->len) { /* chunked body larger than a slot */
            drop_slot(c);
            queue_resp(c, &resp_413, 1);
            return 0;
        }
        memcpy(s->mem + s->len, at, len);
        stat_add(&stat_body_copied, len);
    }
    s->len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    int keep = http_should_keep_alive(p) && p->http_major == 1 && p->http_minor >= 1;
    const struct canned *r = &resp_404;
    if (c->route == R_INFER) {
        if (c->slot == NULL)
            return 0; /* error response already queued */
        stat_add(&stat_requests, 1);
        r = body_ok(c->slot->mem, c->slot->len) ? &resp_ok : &resp_400;
        drop_slot(c);
    }
    c->direct_ok = 0;
    queue_resp(c, r, !keep);
    return 0;
}

/* Feed bytes to the parser; returns bytes consumed. */
static size_t parse(struct conn *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (((e != HPE_OK && e != HPE_PAUSED) || c->parser.upgrade) && !c->closing) {
        drop_slot(c);
        queue_resp(c, &resp_400, 1);
    }
    return n;
}

static void do_read(struct conn *c)
{
    while (!c->paused && !c->dead) {
        char *dst;
        size_t cap;
        int direct = c->direct_ok && c->slot != NULL && c->in_off == c->in_len;
        if (direct) {
            /* In the body of a Content-Length request: http_parser keeps the
             * remaining length in content_length. Read exactly that much. */
            dst = c->slot->mem + c->slot->len;
            cap = (size_t)c->parser.content_length;
        } else {
            if (c->in_off == c->in_len) {
                c->in_off = c->in_len = 0;
            } else if (c->in_len == INBUF_SIZE && c->in_off > 0) {
                memmove(c->inbuf, c->inbuf + c->in_off, c->in_len - c->in_off);
                c->in_len -= c->in_off;
                c->in_off = 0;
            }
            if (c->in_len == INBUF_SIZE) { /* request head does not fit */
                queue_resp(c, &resp_431, 1);
                return;
            }
            dst = c->inbuf + c->in_len;
            cap = INBUF_SIZE - c->in_len;
        }
        ssize_t n = read(c->fd, dst, cap);
        if (n == 0) { /* peer finished sending: answer what we have, then close */
            c->closing = 1;
            c->paused = 1;
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                c->dead = 1;
            return;
        }
        if (direct) {
            parse(c, dst, (size_t)n);
        } else {
            c->in_len += (size_t)n;
            c->in_off += parse(c, c->inbuf + c->in_off, c->in_len - c->in_off);
        }
        if ((size_t)n < cap)
            return; /* socket drained; level-triggered epoll will report more */
    }
}

static void do_write(struct conn *c)
{
    while (c->q_cnt > 0) {
        struct iovec iov[MAXQ];
        for (unsigned i = 0; i < c->q_cnt; i++) {
            const struct canned *r = c->q[(c->q_head + i) % MAXQ];
            size_t off = i == 0 ? c->q_off : 0;
            iov[i].iov_base = r->data + off;
            iov[i].iov_len = r->len - off;
        }
        ssize_t n = writev(c->fd, iov, (int)c->q_cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                c->dead = 1;
            return;
        }
        size_t left = (size_t)n;
        while (left > 0) {
            size_t rem = c->q[c->q_head]->len - c->q_off;
            if (left < rem) {
                c->q_off += left;
                break;
            }
            left -= rem;
            c->q_off = 0;
            c->q_head = (c->q_head + 1) % MAXQ;
            c->q_cnt--;
        }
    }
}

static void conn_close(struct conn *c)
{
    drop_slot(c);
    close(c->fd);
    free(c);
}

static void conn_event(int ep, struct conn *c, uint32_t events)
{
    int may_read = (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0;
    for (;;) {
        if (may_read)
            do_read(c);
        if (!c->dead)
            do_write(c);
        if (c->dead || c->closing || !c->paused || c->q_cnt > 0)
            break;
        /* queue drained while paused: resume parsing what is buffered */
        c->paused = 0;
        http_parser_pause(&c->parser, 0);
        c->in_off += parse(c, c->inbuf + c->in_off, c->in_len - c->in_off);
        may_read = 1;
    }
    if (c->dead || (c->closing && c->q_cnt == 0)) {
        conn_close(c);
        return;
    }
    uint32_t want = (c->paused ? 0 : EPOLLIN) | (c->q_cnt > 0 ? EPOLLOUT : 0);
    if (want != c->ev) {
        struct epoll_event ee = {.events = want, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ee);
        c->ev = want;
    }
}

static void accept_all(int ep, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or transient error: retry on next event */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        memset(c, 0, offsetof(struct conn, inbuf)); /* leave the buffer untouched */
        c->fd = fd;
        c->ev = EPOLLIN;
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        struct epoll_event ee = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee) != 0)
            conn_close(c);
    }
}

static void *worker(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ee = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL = listener */
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ee) != 0) {
        perror("epoll");
        exit(1);
    }
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                accept_all(ep, lfd);
            else
                conn_event(ep, evs[i].data.ptr, evs[i].events);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct opts o = parse_opts(argc, argv);
    sigset_t set;
    block_signals(&set);

    canned_init(&resp_ok, "200 OK", RESP_BODY);
    canned_init(&resp_404, "404 Not Found", NOTFOUND_BODY);
    canned_init(&resp_400, "400 Bad Request", BADREQ_BODY);
    canned_init(&resp_413, "413 Payload Too Large", TOOBIG_BODY);
    canned_init(&resp_431, "431 Request Header Fields Too Large", BADREQ_BODY);
    canned_init(&resp_503, "503 Service Unavailable", BUSY_BODY);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;

    static pthread_t th[64];
    static int lfd[64];
    for (int i = 0; i < o.threads; i++) /* bind all before serving */
        lfd[i] = make_listener(o.port, 1);
    for (int i = 0; i < o.threads; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)lfd[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    fprintf(stderr, "srv_a_epoll: 127.0.0.1:%d threads=%d\n", o.port, o.threads);
    wait_for_signal(&set);
    stats_print("srv_a_epoll");
    return 0;
}
