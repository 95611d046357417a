/* grpc_load.c — a closed-loop load generator for the gRPC benchmark (bench/grpc_bench.py): the same
 * client code drives HTTP/1.1 and gRPC, so their figures differ by protocol, not by load generator.
 *
 *   grpc_load --port P --mode h1|unary|stream --path PATH --body FILE [--header 'Name: value']...
 *             [--conns N] [--depth D] [--threads T] [--seconds S] [--warmup W]
 *
 *   h1      HTTP/1.1 keep-alive: POST PATH with FILE as the body (plus the --header lines); one request
 *           in flight per connection, the next sent when the answer is complete (200 = success).
 *   unary   gRPC over HTTP/2 with prior knowledge: FILE is one gRPC message (5-byte prefix included);
 *           one call at a time per connection, each a new stream (grpc-status 0 = success).
 *   stream  gRPC bidirectional streaming, interactive: one stream per connection that stays open;
 *           D requests (FILE's message) are in flight on it, and each response that arrives releases
 *           the next request at once — requests go out while responses come in, as a client feeding a
 *           stream from a producer does. A response with error_message counts as a failure.
 *
 * Connections are spread over T threads (each its own epoll loop). Completions during the first W
 * seconds are not counted; the next S seconds are measured. Prints one JSON object: requests done
 * and failed in the window, requests/s, latency percentiles in microseconds (from the moment a request
 * was issued to its complete answer). Latency of stream requests pairs answers with requests in
 * order (the server may answer out of order; with D = 1 the pairing is exact). Loopback benchmarking
 * only: no TLS, bounded in time, nothing asserted. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS   1024
#define MAX_THREADS 8
#define MAX_DEPTH   256
#define MAX_HEADERS 8
#define WBUF        (256u << 10) /* bytes queued for one write */
#define RBUF        (256u << 10)
#define MAX_SAMPLES (16u << 20) /* latencies kept per thread (beyond: not recorded, still counted) */
#define NO_COPY_MIN (16u << 10) /* stream messages this large go out in frames of their own, not copied */

enum { M_H1, M_UNARY, M_STREAM };

typedef struct opts {
    int port, mode, conns, depth, threads;
    double seconds, warmup;
    const char *path;
    uint8_t *body;
    size_t body_len;
    const char *hdr[MAX_HEADERS];
    int n_hdr;
    uint8_t *h1_req; /* the whole HTTP/1.1 request */
    size_t h1_len;
} opts_t;

static opts_t O;
static uint64_t t_begin, t_measure, t_end;

typedef struct worker worker_t;

typedef struct conn {
    worker_t *w;
    int fd;
    nghttp2_session *h2;
    uint8_t *wbuf;
    size_t wlen, woff;
    const uint8_t *zc; /* bytes written after wbuf's, from where they are (the body file): never copied */
    size_t zc_len;
    const uint8_t *zc_next; /* the payload of the DATA frame nghttp2 is about to send (NGHTTP2_DATA_FLAG_NO_COPY) */
    uint8_t *rbuf;
    size_t rlen;
    /* one request (h1, unary) */
    uint64_t issued;
    int status; /* h1: HTTP status; unary: grpc-status (-1 = none seen) */
    bool submit;     /* unary: start the next call after this round */
    size_t body_off; /* unary: bytes of the request handed to nghttp2 */
    /* stream */
    int32_t sid;
    uint32_t released; /* requests released, not yet handed to nghttp2 */
    size_t msg_off;    /* bytes of the current request handed over */
    bool deferred;
    uint64_t ring[MAX_DEPTH]; /* issue times of the requests in flight, oldest first */
    uint32_t ring_head, ring_n;
    uint8_t prefix[5];
    uint32_t prefix_n;
    uint64_t msg_left; /* bytes of the response message being read */
    bool first_byte;   /* the next payload byte is the response's first */
    bool failed_msg;
} conn_t;

struct worker {
    pthread_t th;
    int ep;
    conn_t *conns[MAX_CONNS];
    int n;
    uint64_t done, failed;
    uint32_t *lat;
    size_t n_lat;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "grpc_load: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void completed(conn_t *c, uint64_t issued, bool ok)
{
    uint64_t t = now_ns();
    worker_t *w = c->w;
    if (t < t_measure || t > t_end)
        return;
    if (!ok) {
        w->failed++;
        return;
    }
    w->done++;
    if (w->n_lat < MAX_SAMPLES) {
        uint64_t us = (t - issued) / 1000;
        w->lat[w->n_lat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
}

/* ---- output: a per-connection buffer written with write(2) ------------------------------------------ */

static bool flush_out(conn_t *c)
{
    while (c->woff < c->wlen || c->zc_len) {
        struct iovec iov[2];
        int n_iov = 0;
        if (c->woff < c->wlen)
            iov[n_iov++] = (struct iovec){c->wbuf + c->woff, c->wlen - c->woff};
        if (c->zc_len)
            iov[n_iov++] = (struct iovec){(void *)c->zc, c->zc_len};
        ssize_t n = writev(c->fd, iov, n_iov);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return false;
            die("write");
        }
        size_t k = (size_t)n, w = c->wlen - c->woff < k ? c->wlen - c->woff : k;
        c->woff += w;
        k -= w;
        c->zc += k;
        c->zc_len -= k;
    }
    c->woff = c->wlen = 0;
    return true;
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    conn_t *c = ud;
    (void)s, (void)flags;
    if (c->zc_len && !flush_out(c)) /* bytes go out in order: the queued payload first */
        return NGHTTP2_ERR_WOULDBLOCK;
    if (c->wlen == WBUF && !flush_out(c))
        return NGHTTP2_ERR_WOULDBLOCK;
    size_t k = WBUF - c->wlen < len ? WBUF - c->wlen : len;
    memcpy(c->wbuf + c->wlen, data, k);
    c->wlen += k;
    return (ssize_t)k;
}

/* A DATA frame sent without copying its payload, as the server sends its tensors: the 9-byte header into
 * wbuf, the payload written from the body file after it. */
static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *src, void *ud)
{
    conn_t *c = ud;
    (void)s, (void)frame, (void)src;
    if ((c->zc_len || WBUF - c->wlen < 9) && !flush_out(c))
        return NGHTTP2_ERR_WOULDBLOCK; /* called again with the same frame */
    memcpy(c->wbuf + c->wlen, framehd, 9);
    c->wlen += 9;
    c->zc = c->zc_next;
    c->zc_len = length;
    return 0;
}

/* DATA frames as large as the server allows (nghttp2 sends 16 KB ones otherwise), as grpc-core does. */
static ssize_t frame_length(nghttp2_session *s, uint8_t type, int32_t id, int32_t conn_window, int32_t stream_window,
                            uint32_t max_frame, void *ud)
{
    (void)s, (void)type, (void)id, (void)conn_window, (void)stream_window, (void)ud;
    return (ssize_t)max_frame;
}

static void h2_send(conn_t *c)
{
    for (int i = 0; i < 64; i++) {
        if (!flush_out(c))
            return;
        if (!nghttp2_session_want_write(c->h2))
            return;
        if (nghttp2_session_send(c->h2) != 0) {
            fprintf(stderr, "grpc_load: nghttp2_session_send failed\n");
            exit(1);
        }
    }
}

/* ---- HTTP/1.1 --------------------------------------------------------------------------------------------- */

static void h1_issue(conn_t *c)
{
    c->woff = c->wlen = 0;
    c->zc = O.h1_req; /* the whole request from where it is, as the gRPC modes send their payloads */
    c->zc_len = O.h1_len;
    c->issued = now_ns();
    flush_out(c);
}

/* A complete answer in rbuf: its length, or 0 when more is needed. */
static size_t h1_answer(conn_t *c)
{
    const char *b = (const char *)c->rbuf, *end = memmem(b, c->rlen, "\r\n\r\n", 4), *cl;
    size_t head, body = 0;
    if (!end)
        return 0;
    head = (size_t)(end - b) + 4;
    c->status = c->rlen > 12 ? atoi(b + 9) : 0;
    if ((cl = memmem(b, head, "\r\nContent-Length:", 17)) || (cl = memmem(b, head, "\r\ncontent-length:", 17)))
        body = strtoull(cl + 17, NULL, 10);
    return c->rlen >= head + body ? head + body : 0;
}

static void h1_readable(conn_t *c)
{
    for (;;) {
        if (c->rlen == RBUF) {
            fprintf(stderr, "grpc_load: an HTTP answer beyond %u bytes\n", RBUF);
            exit(1);
        }
        ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
        if (n == 0) {
            fprintf(stderr, "grpc_load: the server closed a connection\n");
            exit(1);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            die("read");
        }
        c->rlen += (size_t)n;
        size_t used = h1_answer(c);
        if (used) {
            completed(c, c->issued, c->status == 200);
            memmove(c->rbuf, c->rbuf + used, c->rlen - used);
            c->rlen -= used;
            if (now_ns() < t_end)
                h1_issue(c);
        }
    }
}

/* ---- gRPC --------------------------------------------------------------------------------------------------- */

static ssize_t unary_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                          nghttp2_data_source *src, void *ud)
{
    size_t *off = src->ptr;
    conn_t *c = ud;
    (void)s, (void)id, (void)buf;
    size_t k = O.body_len - *off < len ? O.body_len - *off : len;
    c->zc_next = O.body + *off;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    *off += k;
    if (*off == O.body_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)k;
}

static ssize_t stream_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                           nghttp2_data_source *src, void *ud)
{
    conn_t *c = ud;
    size_t out = 0;
    (void)s, (void)id, (void)src;
    if (c->released && O.body_len >= NO_COPY_MIN) { /* one frame within one message, sent from the body */
        size_t k = O.body_len - c->msg_off < len ? O.body_len - c->msg_off : len;
        c->zc_next = O.body + c->msg_off;
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        if ((c->msg_off += k) == O.body_len) {
            c->msg_off = 0;
            c->released--;
        }
        return (ssize_t)k;
    }
    while (c->released && out < len) { /* small messages: as many as fit, copied into one frame */
        size_t k = O.body_len - c->msg_off < len - out ? O.body_len - c->msg_off : len - out;
        memcpy(buf + out, O.body + c->msg_off, k);
        out += k;
        c->msg_off += k;
        if (c->msg_off == O.body_len) {
            c->msg_off = 0;
            c->released--;
        }
    }
    if (!out) {
        c->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)out;
}

static void grpc_submit(conn_t *c)
{
    char authority[32];
    snprintf(authority, sizeof authority, "127.0.0.1:%d", O.port);
    nghttp2_nv nv[4 + MAX_HEADERS] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)O.path, 5, strlen(O.path), 0},
        {(uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority), 0},
    };
    size_t n = 4;
    char names[MAX_HEADERS][64];
    for (int i = 0; i < O.n_hdr; i++) {
        const char *colon = strchr(O.hdr[i], ':');
        size_t nl = (size_t)(colon - O.hdr[i]);
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        for (size_t j = 0; j < nl && j < 63; j++)
            names[i][j] = (char)(O.hdr[i][j] | 0x20); /* HTTP/2 header names are lower case */
        nv[n++] = (nghttp2_nv){(uint8_t *)names[i], (uint8_t *)v, nl < 63 ? nl : 63, strlen(v), 0};
    }
    nghttp2_data_provider dp = {.source.ptr = &c->body_off, .read_callback = O.mode == M_STREAM ? stream_body : unary_body};
    c->status = -1;
    c->body_off = 0;
    c->issued = now_ns();
    int32_t id = nghttp2_submit_request(c->h2, NULL, nv, n, &dp, c);
    if (id < 0) {
        fprintf(stderr, "grpc_load: nghttp2_submit_request: %s\n", nghttp2_strerror(id));
        exit(1);
    }
    c->sid = id;
}

/* Stream mode: one more request may go out. */
static void release(conn_t *c)
{
    c->released++;
    c->ring[(c->ring_head + c->ring_n) % MAX_DEPTH] = now_ns();
    c->ring_n++;
    if (c->deferred) {
        c->deferred = false;
        nghttp2_session_resume_data(c->h2, c->sid);
    }
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    conn_t *c = ud;
    (void)s, (void)f, (void)flags, (void)vl;
    if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
        c->status = atoi((const char *)value);
    return 0;
}

/* Stream mode: response messages, framed by their 5-byte prefixes. */
static void stream_bytes(conn_t *c, const uint8_t *p, size_t n)
{
    while (n) {
        if (c->prefix_n < 5) {
            size_t k = 5 - c->prefix_n < n ? 5 - c->prefix_n : n;
            memcpy(c->prefix + c->prefix_n, p, k);
            c->prefix_n += (uint32_t)k;
            p += k, n -= k;
            if (c->prefix_n == 5) {
                c->msg_left = (uint64_t)c->prefix[1] << 24 | (uint64_t)c->prefix[2] << 16 |
                              (uint64_t)c->prefix[3] << 8 | c->prefix[4];
                c->first_byte = true;
            } else {
                continue;
            }
        }
        if (c->msg_left && n) {
            size_t k = c->msg_left < n ? (size_t)c->msg_left : n;
            if (c->first_byte)
                c->failed_msg = p[0] == 0x0a; /* field 1: error_message */
            c->first_byte = false;
            p += k, n -= k;
            c->msg_left -= k;
        }
        if (c->msg_left == 0) { /* a whole response */
            uint64_t issued = c->ring_n ? c->ring[c->ring_head] : now_ns();
            if (c->ring_n) {
                c->ring_head = (c->ring_head + 1) % MAX_DEPTH;
                c->ring_n--;
            }
            completed(c, issued, !c->failed_msg);
            c->prefix_n = 0;
            if (now_ns() < t_end)
                release(c);
        }
    }
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    (void)s, (void)flags, (void)id;
    if (O.mode == M_STREAM)
        stream_bytes(ud, data, len);
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    conn_t *c = ud;
    (void)s, (void)id;
    if (O.mode == M_STREAM) {
        if (now_ns() < t_end) {
            fprintf(stderr, "grpc_load: the server ended a stream (code %u, grpc-status %d)\n", code, c->status);
            exit(1);
        }
        return 0;
    }
    completed(c, c->issued, code == 0 && c->status == 0);
    c->submit = now_ns() < t_end;
    return 0;
}

static void h2_readable(conn_t *c)
{
    for (;;) {
        ssize_t n = read(c->fd, c->rbuf, RBUF);
        if (n == 0) {
            if (now_ns() < t_end) {
                fprintf(stderr, "grpc_load: the server closed a connection\n");
                exit(1);
            }
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            die("read");
        }
        ssize_t r = nghttp2_session_mem_recv(c->h2, c->rbuf, (size_t)n);
        if (r < 0) {
            fprintf(stderr, "grpc_load: nghttp2: %s\n", nghttp2_strerror((int)r));
            exit(1);
        }
    }
}

/* ---- connections and threads ------------------------------------------------------------------------- */

static nghttp2_session_callbacks *cbs;

static int dial(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static conn_t *conn_open(worker_t *w)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c || !(c->wbuf = malloc(WBUF)) || !(c->rbuf = malloc(RBUF)))
        die("malloc");
    c->w = w;
    c->fd = dial();
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
    if (O.mode == M_H1) {
        h1_issue(c);
        return c;
    }
    /* As h2load: windows large enough that flow control never waits on loopback. */
    nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1u << 30) - 1},
                                    {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    if (nghttp2_session_client_new(&c->h2, cbs, c) != 0 ||
        nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, set, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, (1 << 30) - 1) != 0) {
        fprintf(stderr, "grpc_load: nghttp2 session\n");
        exit(1);
    }
    grpc_submit(c);
    if (O.mode == M_STREAM)
        for (int i = 0; i < O.depth; i++)
            release(c);
    h2_send(c);
    return c;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    struct epoll_event evs[64];
    while (now_ns() < t_end) {
        int n = epoll_wait(w->ep, evs, 64, 50);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (O.mode == M_H1) {
                if (evs[i].events & EPOLLOUT)
                    flush_out(c);
                if (evs[i].events & EPOLLIN)
                    h1_readable(c);
                continue;
            }
            if (evs[i].events & EPOLLIN)
                h2_readable(c);
            if (c->submit) {
                c->submit = false;
                grpc_submit(c);
            }
            h2_send(c);
        }
    }
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t pct(const uint32_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    uint8_t *b;
    if (!f || fstat(fileno(f), &st) != 0)
        die(path);
    if (!(b = malloc((size_t)st.st_size + 1)) || fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        die(path);
    fclose(f);
    *len = (size_t)st.st_size;
    return b;
}

static void usage(void)
{
    fprintf(stderr, "usage: grpc_load --port P --mode h1|unary|stream --path PATH --body FILE [--header 'N: v']...\n"
                    "                 [--conns N] [--depth D] [--threads T] [--seconds S] [--warmup W]\n");
    exit(2);
}

static void parse(int argc, char **argv)
{
    const char *body = NULL, *mode = NULL;
    O = (opts_t){.conns = 1, .depth = 1, .threads = 1, .seconds = 5, .warmup = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--port"))
            O.port = atoi(v);
        else if (!strcmp(a, "--mode"))
            mode = v;
        else if (!strcmp(a, "--path"))
            O.path = v;
        else if (!strcmp(a, "--body"))
            body = v;
        else if (!strcmp(a, "--header") && O.n_hdr < MAX_HEADERS && strchr(v, ':'))
            O.hdr[O.n_hdr++] = v;
        else if (!strcmp(a, "--conns"))
            O.conns = atoi(v);
        else if (!strcmp(a, "--depth"))
            O.depth = atoi(v);
        else if (!strcmp(a, "--threads"))
            O.threads = atoi(v);
        else if (!strcmp(a, "--seconds"))
            O.seconds = atof(v);
        else if (!strcmp(a, "--warmup"))
            O.warmup = atof(v);
        else
            usage();
        i++;
    }
    if (!mode || !O.path || !body || O.port <= 0 || O.conns < 1 || O.conns > MAX_CONNS || O.depth < 1 ||
        O.depth > MAX_DEPTH || O.threads < 1 || O.threads > MAX_THREADS || O.seconds <= 0 || O.warmup < 0)
        usage();
    O.mode = !strcmp(mode, "h1") ? M_H1 : !strcmp(mode, "unary") ? M_UNARY : !strcmp(mode, "stream") ? M_STREAM : -1;
    if (O.mode < 0)
        usage();
    O.body = slurp(body, &O.body_len);
    if (O.mode == M_H1) {
        char head[2048];
        int n = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n", O.path,
                         O.body_len);
        for (int i = 0; i < O.n_hdr && n > 0 && (size_t)n < sizeof head; i++)
            n += snprintf(head + n, sizeof head - (size_t)n, "%s\r\n", O.hdr[i]);
        if (n <= 0 || (size_t)n + 2 >= sizeof head)
            usage();
        memcpy(head + n, "\r\n", 2);
        n += 2;
        if (!(O.h1_req = malloc((size_t)n + O.body_len)))
            die("malloc");
        memcpy(O.h1_req, head, (size_t)n);
        memcpy(O.h1_req + n, O.body, O.body_len);
        O.h1_len = (size_t)n + O.body_len;
    }
}

int main(int argc, char **argv)
{
    static worker_t ws[MAX_THREADS];
    uint64_t done = 0, failed = 0;
    size_t n_lat = 0;
    parse(argc, argv);
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        die("nghttp2");
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, frame_length);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    t_begin = now_ns();
    t_measure = t_begin + (uint64_t)(O.warmup * 1e9);
    t_end = t_measure + (uint64_t)(O.seconds * 1e9);
    for (int t = 0; t < O.threads; t++) {
        if ((ws[t].ep = epoll_create1(0)) < 0 || !(ws[t].lat = malloc(MAX_SAMPLES * sizeof *ws[t].lat)))
            die("epoll/malloc");
    }
    for (int i = 0; i < O.conns; i++) {
        worker_t *w = &ws[i % O.threads];
        w->conns[w->n] = conn_open(w);
        w->n++;
    }
    for (int t = 0; t < O.threads; t++)
        if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t]) != 0)
            die("pthread_create");
    for (int t = 0; t < O.threads; t++) {
        pthread_join(ws[t].th, NULL);
        done += ws[t].done;
        failed += ws[t].failed;
        n_lat += ws[t].n_lat;
    }
    uint32_t *all = malloc((n_lat ? n_lat : 1) * sizeof *all);
    if (!all)
        die("malloc");
    n_lat = 0;
    for (int t = 0; t < O.threads; t++) {
        memcpy(all + n_lat, ws[t].lat, ws[t].n_lat * sizeof *all);
        n_lat += ws[t].n_lat;
    }
    qsort(all, n_lat, sizeof *all, cmp_u32);
    printf("{\"done\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"seconds\":%.3f,\"rps\":%.1f,\"p50_us\":%u,\"p90_us\":%u,"
           "\"p99_us\":%u,\"p999_us\":%u,\"max_us\":%u}\n",
           done, failed, O.seconds, (double)done / O.seconds, pct(all, n_lat, .5), pct(all, n_lat, .9),
           pct(all, n_lat, .99), pct(all, n_lat, .999), n_lat ? all[n_lat - 1] : 0);
    return 0;
}
