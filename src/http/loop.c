/* loop.c — one event-loop thread: accepting, reading request heads, receiving bodies straight into
 * their destinations, writing responses with writev, timers, worker completions, and the drain.
 *
 * Connections are edge-triggered (registered once, never re-armed: no epoll_ctl per request). A
 * connection is driven by conn_drive(), a loop over its state machine, so pipelined requests are
 * handled iteratively rather than by recursion:
 *
 *   HEAD  --head parsed--> handler --> BODY (receive) --> handler --> RUN (worker) --> WRITE
 *                               \------------------------------------\--> WRITE --> HEAD ...
 *
 * Body bytes that arrived in the same read as the head are copied to the body's destination once
 * (counted as "readahead"); everything after that is read by readv directly into the destination,
 * with the connection buffer as the last iovec to catch the next pipelined request. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <netinet/tcp.h>
#include <string.h>
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http.h"
#include "obs/obs.h"
#include "util/sanitize.h"

#define MAX_EVENTS  256
#define ARENA_CHUNK (8u << 10)
#define ARENA_LIMIT (4u << 20)
#define ARENA_KEEP  (2 * ARENA_CHUNK) /* what a connection keeps between requests */

static void conn_drive(osv_conn_t *c);

/* ---- buffers and connection objects (recycled per loop; no allocation after warm-up) ---------
 *
 * Read buffers are mapped one by one (conn_buffer bytes, plus a poisoned guard zone in the ASan
 * build) and recycled through the loop's free list, so a warm loop maps nothing. A flood of
 * connections leaves that list long; once a second the loop unmaps what the list never needed during
 * that second (its low-water mark above FREE_FLOOR), so the memory goes back to the system within
 * about two seconds after a flood ends — the cgroup's working set falls and a memory guard it tripped
 * clears. Connection objects (with their arenas) are trimmed the same way. */
#define FREE_FLOOR 16
#define SWEEP_NS   1000000000ull

static size_t buf_map_len(const osv_loop_t *l)
{
    return (size_t)l->srv->o.conn_buffer + OSV_ASAN_GUARD;
}

static char *buf_get(osv_loop_t *l)
{
    void *p;
    if (l->n_free_bufs) {
        if (--l->n_free_bufs < l->free_bufs_low)
            l->free_bufs_low = l->n_free_bufs;
        atomic_store_explicit(&l->n_free_bufs_seen, l->n_free_bufs, memory_order_relaxed);
        return l->free_bufs[l->n_free_bufs];
    }
    if (osv_alloc_should_fail()) /* fault injection covers read buffers too (ortserve/alloc.h) */
        return NULL;
    p = mmap(NULL, buf_map_len(l), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    osv_poison((char *)p + l->srv->o.conn_buffer, OSV_ASAN_GUARD);
    l->n_bufs++;
    return p;
}

static void buf_unmap(osv_loop_t *l, char *b)
{
    osv_unpoison(b + l->srv->o.conn_buffer, OSV_ASAN_GUARD);
    munmap(b, buf_map_len(l));
    l->n_bufs--;
}

static void buf_put(osv_loop_t *l, char *b)
{
    if (!b)
        return;
    if (l->n_free_bufs == l->cap_free_bufs) {
        uint32_t cap = l->cap_free_bufs ? l->cap_free_bufs * 2 : 64;
        char **p = osv_realloc(l->free_bufs, cap * sizeof *p);
        if (!p) {
            buf_unmap(l, b);
            return;
        }
        l->free_bufs = p;
        l->cap_free_bufs = cap;
    }
    l->free_bufs[l->n_free_bufs++] = b;
    atomic_store_explicit(&l->n_free_bufs_seen, l->n_free_bufs, memory_order_relaxed);
}

static void conn_free(osv_conn_t *c)
{
    osv_arena_free(&c->arena);
    osv_free(c);
}

uint64_t osv_loop_conn_bytes(const osv_server_opts_t *o)
{
    return (uint64_t)o->conn_buffer + sizeof(osv_conn_t) + ARENA_KEEP;
}

/* Once a second: gives back what the free lists did not need since the last sweep. */
static void sweep_free_lists(osv_loop_t *l)
{
    uint32_t excess, freed = 0;
    if (l->now < l->next_sweep)
        return;
    l->next_sweep = l->now + SWEEP_NS;
    excess = l->free_bufs_low > FREE_FLOOR ? l->free_bufs_low - FREE_FLOOR : 0;
    for (; excess > 0 && l->n_free_bufs > 0; excess--)
        buf_unmap(l, l->free_bufs[--l->n_free_bufs]);
    l->free_bufs_low = l->n_free_bufs;
    atomic_store_explicit(&l->n_free_bufs_seen, l->n_free_bufs, memory_order_relaxed);
    excess = l->free_conns_low > FREE_FLOOR ? l->free_conns_low - FREE_FLOOR : 0;
    for (; excess > 0 && l->free_conns; excess--, freed++) {
        osv_conn_t *c = l->free_conns;
        l->free_conns = c->next_free;
        l->n_free_conns--;
        conn_free(c);
    }
    l->free_conns_low = l->n_free_conns;
#ifdef __GLIBC__
    if (freed >= 64)
        malloc_trim(0); /* thousands of small objects: let glibc hand the pages back */
#endif
}

/* True while the free lists hold more than they will keep: the loop must wake up to sweep. */
static bool sweep_pending(const osv_loop_t *l)
{
    return l->n_free_bufs > FREE_FLOOR || l->n_free_conns > FREE_FLOOR;
}

/* Every connection has at most one timer: with room in the heap for one more than the open
 * connections, arming a timer never allocates (and so never fails). */
static bool heap_reserve(osv_loop_t *l, uint32_t n)
{
    if (n <= l->cap_heap)
        return true;
    uint32_t cap = l->cap_heap ? l->cap_heap * 2 : 256;
    while (cap < n)
        cap *= 2;
    osv_conn_t **h = osv_realloc(l->heap, cap * sizeof *h);
    if (!h)
        return false;
    l->heap = h;
    l->cap_heap = cap;
    return true;
}

static osv_conn_t *conn_new(osv_loop_t *l, int fd)
{
    osv_conn_t *c = l->free_conns;
    if (!heap_reserve(l, l->n_conns + 1))
        return NULL;
    if (c) {
        l->free_conns = c->next_free;
        if (--l->n_free_conns < l->free_conns_low)
            l->free_conns_low = l->n_free_conns;
    } else {
        if (!(c = osv_calloc(1, sizeof *c)))
            return NULL;
        osv_arena_init(&c->arena, ARENA_CHUNK, ARENA_LIMIT);
    }
    osv_arena_t arena = c->arena;
    memset(c, 0, sizeof *c);
    c->arena = arena;
    c->fd = fd;
    c->loop = l;
    c->state = CONN_HEAD;
    c->timer_idx = -1;
    c->readable = true;
    c->id = atomic_fetch_add(&l->srv->next_conn_id, 1);
    c->next_all = l->all;
    if (l->all)
        l->all->prev_all = c;
    l->all = c;
    l->n_conns++;
    atomic_fetch_add(&l->srv->conns, 1);
    return c;
}

/* ---- timers: a binary min-heap of connections by timer_at ------------------------------------- */

static void heap_swap(osv_loop_t *l, uint32_t a, uint32_t b)
{
    osv_conn_t *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->timer_idx = (int)a;
    l->heap[b]->timer_idx = (int)b;
}

static void heap_up(osv_loop_t *l, uint32_t i)
{
    while (i > 0 && l->heap[(i - 1) / 2]->timer_at > l->heap[i]->timer_at) {
        heap_swap(l, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(osv_loop_t *l, uint32_t i)
{
    for (;;) {
        uint32_t m = i, a = 2 * i + 1, b = 2 * i + 2;
        if (a < l->n_heap && l->heap[a]->timer_at < l->heap[m]->timer_at)
            m = a;
        if (b < l->n_heap && l->heap[b]->timer_at < l->heap[m]->timer_at)
            m = b;
        if (m == i)
            return;
        heap_swap(l, i, m);
        i = m;
    }
}

static void heap_remove(osv_loop_t *l, osv_conn_t *c)
{
    uint32_t i = (uint32_t)c->timer_idx;
    if (c->timer_idx < 0)
        return;
    l->n_heap--;
    if (i != l->n_heap) {
        l->heap[i] = l->heap[l->n_heap];
        l->heap[i]->timer_idx = (int)i;
        heap_down(l, i);
        heap_up(l, i);
    }
    c->timer_idx = -1;
    c->timer_at = 0;
}

void osv_conn_set_timer(osv_conn_t *c, uint64_t ns)
{
    osv_loop_t *l = c->loop;
    heap_remove(l, c);
    if (ns == 0)
        return;
    /* Cannot fail: conn_new reserved a place for every connection's timer. */
    if (l->n_heap == l->cap_heap && !heap_reserve(l, l->n_heap + 1))
        return;
    c->timer_at = l->now + ns; /* the loop's clock, read once per iteration: timeouts are coarse */
    c->timer_idx = (int)l->n_heap;
    l->heap[l->n_heap++] = c;
    heap_up(l, (uint32_t)c->timer_idx);
}

static uint64_t ms_ns(int ms)
{
    return ms > 0 ? (uint64_t)ms * 1000000ull : 0;
}

/* ---- closing and request teardown ---------------------------------------------------------------- */

static void request_cleanup(osv_conn_t *c)
{
    osv_pool_t *pool = c->loop->srv->pool;
    if (c->req.cleanup)
        c->req.cleanup(c);
    c->req.cleanup = NULL;
    if (c->req.body_slot.base)
        osv_pool_release(pool, &c->req.body_slot);
    if (c->req.inflated.base)
        osv_pool_release(pool, &c->req.inflated);
    if (c->res.body_slot.base)
        osv_pool_release(pool, &c->res.body_slot);
    osv_arena_reset_trim(&c->arena, ARENA_KEEP);
}

static void conn_close(osv_conn_t *c)
{
    osv_loop_t *l = c->loop;
    if (c->state == CONN_CLOSED)
        return;
    heap_remove(l, c);
    if (c->state != CONN_HEAD || c->len > c->pos)
        request_cleanup(c);
    if (c->state == CONN_BODY || c->state == CONN_WRITE)
        atomic_fetch_sub(&l->srv->inflight, 1);
    close(c->fd);
    c->state = CONN_CLOSED;
    buf_put(l, c->buf);
    c->buf = NULL;
    if (c->prev_all)
        c->prev_all->next_all = c->next_all;
    else
        l->all = c->next_all;
    if (c->next_all)
        c->next_all->prev_all = c->prev_all;
    l->n_conns--;
    atomic_fetch_sub(&l->srv->conns, 1);
    c->next_free = l->free_conns;
    l->free_conns = c;
    l->n_free_conns++;
}

/* Lingering close (as nginx does): closing a socket with unread input makes the kernel send RST,
 * which can destroy the error response the client has not read yet — exactly when a large upload
 * was refused. So shut down the write side and discard what the client still sends, bounded in
 * bytes and time, before closing. */
#define LINGER_NS        2000000000ull
#define LINGER_MAX_BYTES (256ull << 20)

static void linger(osv_conn_t *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    c->lingered = 0;
    osv_conn_set_timer(c, LINGER_NS);
}

static bool step_linger(osv_conn_t *c)
{
    char scratch[16384];
    for (;;) {
        if (!c->readable)
            return false; /* wait for more (or the linger timer) */
        ssize_t n = read(c->fd, scratch, sizeof scratch);
        if (n > 0) {
            c->lingered += (uint64_t)n;
            if (c->lingered > LINGER_MAX_BYTES)
                break;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->readable = false;
        } else if (!(n < 0 && errno == EINTR)) {
            break; /* EOF or error: the client is done */
        }
    }
    conn_close(c);
    return true;
}

/* The response is written: account for it, then continue with the next request or close. */
static void conn_next(osv_conn_t *c)
{
    osv_server_t *s = c->loop->srv;
    osv_http_record(c);
    request_cleanup(c);
    atomic_fetch_sub(&s->inflight, 1);
    c->state = CONN_HEAD; /* the request is over: closing below must not count it again */
    c->res.close_after |= osv_conn_body_unread(c);
    if (c->res.close_after && !c->peer_closed && !atomic_load(&s->stopping)) {
        linger(c); /* the client may still be sending a body we did not read */
        return;
    }
    if (c->res.close_after || !c->req.head.keep_alive || atomic_load(&s->stopping)) {
        conn_close(c);
        return;
    }
    c->pos += (uint32_t)c->req.bytes_in_buffer;
    if (c->pos >= c->len) {
        c->pos = c->len = 0;
        buf_put(c->loop, c->buf); /* idle keep-alive connections hold no buffer */
        c->buf = NULL;
    } else if (c->pos > 0) {
        memmove(c->buf, c->buf + c->pos, c->len - c->pos); /* next pipelined request to the front */
        c->len -= c->pos;
        c->pos = 0;
    }
    memset(&c->req, 0, sizeof c->req);
    memset(&c->res, 0, offsetof(osv_response_t, hdr));
    c->res.hdr_len = 0;
    c->state = CONN_HEAD;
    osv_conn_set_timer(c, c->len ? ms_ns(s->o.header_timeout_ms) : ms_ns(s->o.idle_timeout_ms));
}

/* ---- reading the head ----------------------------------------------------------------------------- */

/* Reads what the socket has into the buffer. 1 = got bytes, 0 = nothing now, -1 = closed/error. */
static int read_more(osv_conn_t *c)
{
    ssize_t n;
    if (!c->buf) {
        if (!(c->buf = buf_get(c->loop)))
            return -1;
        c->cap = c->loop->srv->o.conn_buffer;
    }
    if (c->len == c->cap)
        return 0;
    n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n > 0) {
        /* A short read drained the socket and epoll will say when there is more — unless the peer's
         * FIN is already queued: edge-triggered epoll reports it once, so read on until EOF. */
        if ((uint32_t)n < c->cap - c->len && !c->peer_shut)
            c->readable = false;
        c->len += (uint32_t)n;
        return 1;
    }
    if (n == 0) {
        c->peer_closed = true;
        return -1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        c->readable = false;
        return 0;
    }
    return errno == EINTR ? 0 : -1;
}

static void head_error(osv_conn_t *c, const osv_http_error_t *e)
{
    c->req.head.keep_alive = false;
    c->req.t_start = c->req.t_start ? c->req.t_start : osv_now_ns();
    atomic_fetch_add(&c->loop->srv->inflight, 1);
    osv_res_error(c, e->status, "%s", e->msg);
    c->res.close_after = true;
}

/* Parses a head if one is buffered and dispatches it; returns false when waiting for bytes. */
static bool step_head(osv_conn_t *c)
{
    osv_server_t *s = c->loop->srv;
    osv_http_header_t *hdrs;
    osv_http_error_t e;
    for (;;) {
        if (c->len > c->pos) {
            if (!c->req.t_start) {
                c->req.t_start = osv_now_ns();
                osv_conn_set_timer(c, ms_ns(s->o.header_timeout_ms));
            }
            hdrs = osv_arena_alloc(&c->arena, s->o.max_headers * sizeof *hdrs, 8);
            int rc = hdrs ? osv_http_parse_head(c->buf + c->pos, c->len - c->pos, &c->req.head, hdrs,
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
            osv_arena_reset(&c->arena);
            if (rc < 0) {
                head_error(c, &e);
                return true;
            }
        }
        if (!c->readable)
            return false;
        if (!c->buf && !(c->buf = buf_get(c->loop))) {
            e = (osv_http_error_t){503, "out of memory for the request, retry later"};
            head_error(c, &e); /* the head is not read: the response closes (lingering) */
            return true;
        }
        c->cap = s->o.conn_buffer;
        int r = read_more(c);
        if (r < 0) {
            conn_close(c);
            return true;
        }
        if (r == 0 && c->len == c->cap) {
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
    uint64_t start = c->pos + c->req.bytes_in_buffer;
    body_plan_t *b = &c->req.body;
    if (start + n > c->cap)
        return -1;
    b->n_iov = 1;
    b->cur = 0;
    b->iov[0].iov_base = c->buf + start;
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
    osv_pool_t *pool = c->loop->srv->pool;
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
    uint64_t start = c->pos + c->req.bytes_in_buffer, avail = c->len - start, before = b->dst_len;
    osv_http_error_t e;
    bool done = false;
    long n;
    if (!avail)
        return true;
    if (!chunked_room(c, b->dst_len + avail))
        return false;
    n = osv_http_dechunk(&c->req.head, c->buf + start, avail, b->dst, b->dst_cap, &b->dst_len, &done, &e);
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
        c->len = (uint32_t)start; /* every byte was consumed: reuse the space */
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
    uint64_t avail = c->len - (c->pos + c->req.bytes_in_buffer);
    const char *src = c->buf + c->pos + c->req.bytes_in_buffer;
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
        v[n++] = (struct iovec){c->buf + c->len, c->cap - c->len};
    } else {
        for (int i = b->cur; i < b->n_iov; i++)
            if (b->iov[i].iov_len)
                v[n++] = b->iov[i];
        if (c->buf && c->len < c->cap)
            v[n++] = (struct iovec){c->buf + c->len, c->cap - c->len};
    }
    got = readv(c->fd, v, n);
    if (got == 0) {
        c->peer_closed = true;
        return -1;
    }
    if (got < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? (c->readable = false, 0) : errno == EINTR ? 0 : -1;
    if (b->in_buffer) {
        c->len += (uint32_t)got;
        take_buffered(c);
        return 1;
    }
    uint64_t to_plan = (uint64_t)got < b->remaining ? (uint64_t)got : b->remaining;
    plan_advance(b, to_plan);
    c->req.bytes_in += to_plan;                    /* the rest belongs to the next request */
    c->len += (uint32_t)((uint64_t)got - to_plan); /* the rest landed in the buffer tail */
    if (to_plan == (uint64_t)got && (uint64_t)got < b->remaining && !c->peer_shut)
        c->readable = false;
    return 1;
}

static void send_continue(osv_conn_t *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (c->req.head.expect_continue && !c->req.continue_sent) {
        c->req.continue_sent = true;
        if (write(c->fd, msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1))
            c->res.close_after = true;
    }
}

/* While a body arrives two clocks run: --body-timeout-ms between bytes, and, once
 * --body-rate-grace-ms has passed since the body began, its average rate must stay at or above
 * --min-body-rate (a client sending a byte every few seconds would otherwise hold its slot and
 * connection for ever). rate_deadline is when the bytes received so far stop covering that rate. */
static uint64_t rate_deadline(const osv_conn_t *c)
{
    const osv_server_opts_t *o = &c->loop->srv->o;
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
    uint64_t in = ms_ns(c->loop->srv->o.body_timeout_ms), rd = rate_deadline(c);
    if (rd) {
        uint64_t rel = rd > c->loop->now ? rd - c->loop->now : 1;
        in = in && in < rel ? in : rel;
    }
    osv_conn_set_timer(c, in);
}

void osv_conn_receive_body(osv_conn_t *c, body_done_fn done)
{
    c->req.on_body = done;
    c->state = CONN_BODY;
    if (!c->req.t_body)
        c->req.t_body = c->loop->now;
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
    if (!c->peer_closed) {
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
        if (!c->readable)
            return false;
        int r = read_more(c);
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
        if (!c->readable)
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
    if (pthread_equal(pthread_self(), c->loop->thread))
        c->state = CONN_WRITE;
    else
        c->res.ready = true; /* on a worker: the loop switches state when it takes the completion */
}

static bool step_write(osv_conn_t *c)
{
    osv_response_t *r = &c->res;
    while (r->cur_iov < r->n_iov) {
        ssize_t n = writev(c->fd, r->iov + r->cur_iov,
                           r->n_iov - r->cur_iov > IOV_MAX ? IOV_MAX : r->n_iov - r->cur_iov);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                osv_conn_set_timer(c, ms_ns(c->loop->srv->o.body_timeout_ms));
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
        case CONN_LINGER:
            progressed = step_linger(c);
            break;
        default:
            return; /* RUN: a worker or a timer continues it; CLOSED: done */
        }
        if (!progressed)
            return;
    }
}

/* ---- timers, completions, accepting ------------------------------------------------------------------ */

static void on_timeout(osv_conn_t *c)
{
    c->timer_idx = -1;
    c->timer_at = 0;
    if (c->state == CONN_RUN && c->req.on_timer) {
        void (*fn)(osv_conn_t *) = c->req.on_timer;
        c->req.on_timer = NULL;
        fn(c);
        conn_drive(c);
        return;
    }
    if (c->state == CONN_HEAD && c->len > c->pos) {
        osv_http_error_t e = {408, "timed out waiting for the request head"};
        head_error(c, &e);
        osv_obs_note(OSV_OBS_TIMEOUT_HEADER);
        conn_drive(c);
        return;
    }
    if (c->state == CONN_LINGER) {
        conn_close(c); /* the client kept sending after the response: stop listening */
        return;
    }
    if (c->state == CONN_BODY) {
        /* The client stopped sending its body, or sends it too slowly: tell it (408) and close. */
        const osv_server_opts_t *o = &c->loop->srv->o;
        uint64_t rd = rate_deadline(c);
        osv_obs_note(OSV_OBS_TIMEOUT_BODY);
        if (rd && c->loop->now >= rd)
            osv_res_error(c, 408,
                          "the request body arrives slower than %u bytes/s (--min-body-rate; %" PRIu64
                          " bytes in %" PRIu64 " ms)",
                          o->min_body_rate, c->req.bytes_in - c->req.head.head_len,
                          (c->loop->now - c->req.t_body) / 1000000);
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

static void run_timers(osv_loop_t *l)
{
    uint64_t now = l->now;
    while (l->n_heap && l->heap[0]->timer_at <= now) {
        osv_conn_t *c = l->heap[0];
        heap_remove(l, c);
        on_timeout(c);
    }
}

void osv_loop_wake(osv_loop_t *l)
{
    uint64_t one = 1;
    ssize_t r = write(l->wake_fd, &one, sizeof one);
    (void)r; /* a full eventfd counter still wakes the loop */
}

void osv_loop_complete(osv_conn_t *c)
{
    osv_loop_t *l = c->loop;
    osv_conn_t *old = atomic_load_explicit(&l->done, memory_order_relaxed);
    do {
        c->next_done = old;
    } while (!atomic_compare_exchange_weak_explicit(&l->done, &old, c, memory_order_release,
                                                    memory_order_relaxed));
    if (!old)
        osv_loop_wake(l);
}

static void run_completions(osv_loop_t *l)
{
    uint64_t v;
    osv_conn_t *list, *fifo = NULL;
    ssize_t r = read(l->wake_fd, &v, sizeof v);
    (void)r;
    list = atomic_exchange_explicit(&l->done, NULL, memory_order_acquire);
    while (list) { /* the stack is LIFO: reverse to answer in completion order */
        osv_conn_t *n = list->next_done;
        list->next_done = fifo;
        fifo = list;
        list = n;
    }
    while (fifo) {
        osv_conn_t *n = fifo->next_done;
        fifo->next_done = NULL;
        if (fifo->state == CONN_RUN) {
            if (fifo->res.ready) {
                fifo->res.ready = false;
                fifo->state = CONN_WRITE;
            } else if (fifo->req.resume) {
                void (*fn)(osv_conn_t *) = fifo->req.resume;
                fifo->req.resume = NULL;
                fn(fifo);
            } else {
                osv_res_error(fifo, 500, "request finished without a response");
            }
            conn_drive(fifo);
        }
        fifo = n;
    }
}

static void pause_accept(osv_loop_t *l, uint64_t ns)
{
    struct epoll_event ev = {.events = 0, .data.ptr = &l->listen_fd};
    epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->listen_fd, &ev);
    l->accept_paused_until = osv_now_ns() + ns;
}

static void resume_accept(osv_loop_t *l)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->listen_fd};
    if (l->accept_paused_until && osv_now_ns() >= l->accept_paused_until && l->accepting) {
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->listen_fd, &ev);
        l->accept_paused_until = 0;
    }
}

/* A connection the server cannot take (too many connections, out of memory or descriptors): a
 * complete 503 written at once (it fits any socket buffer), then the write side is shut and whatever
 * the client already sent is read and dropped, so that closing does not turn into a reset that could
 * destroy the answer (best effort: the socket is not kept). */
static void reject_connection(int fd, uint32_t retry_after, const char *why)
{
    char msg[384], scratch[4096];
    size_t body = strlen(why) + 12; /* {"error":"<why>"} */
    int n =
        snprintf(msg, sizeof msg,
                 "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: %u\r\n"
                 "Connection: close\r\nContent-Length: %zu\r\n\r\n{\"error\":\"%s\"}",
                 retry_after, body, why);
    ssize_t r = write(fd, msg, n > 0 && (size_t)n < sizeof msg ? (size_t)n : 0);
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 16 && (r = read(fd, scratch, sizeof scratch)) > 0; i++)
        ;
    close(fd);
}

/* Out of descriptors (EMFILE/ENFILE): the listener stays readable while connections wait in its
 * backlog, so epoll would report it again at once — a spin. Give the loop's reserve descriptor
 * back, accept the waiting connections one at a time to answer each with 503 and close it, take
 * the reserve again, and stop watching the listener for a moment (libuv's "EMFILE trick", plus a
 * pause in case the reserve could not be taken back). */
static void shed_connections(osv_loop_t *l)
{
    osv_server_t *s = l->srv;
    if (l->reserve_fd >= 0) {
        close(l->reserve_fd);
        l->reserve_fd = -1;
        for (int i = 0; i < 64; i++) {
            int fd = accept4(l->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                break;
            osv_obs_note(OSV_OBS_REJECTED_CONNECTION);
            reject_connection(fd, s->o.retry_after_s, "out of file descriptors, retry");
        }
        l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    pause_accept(l, 100000000ull);
}

static void on_accept(osv_loop_t *l)
{
    osv_server_t *s = l->srv;
    for (int i = 0; i < 64 && l->accepting; i++) {
        int fd = accept4(l->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                osv_obs_note(OSV_OBS_ACCEPT_ERROR);
                shed_connections(l); /* out of descriptors: answer the waiting ones, never spin */
            } else if (errno == ENOBUFS || errno == ENOMEM) {
                osv_obs_note(OSV_OBS_ACCEPT_ERROR);
                pause_accept(l, 100000000ull); /* out of kernel memory: back off instead of spinning */
            }
            return;
        }
        if (atomic_load(&s->conns) >= s->o.max_connections) {
            osv_obs_note(OSV_OBS_REJECTED_CONNECTION);
            reject_connection(fd, s->o.retry_after_s, "too many connections, retry");
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        osv_conn_t *c = conn_new(l, fd);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (!c) {
            osv_obs_note(OSV_OBS_REJECTED_CONNECTION);
            reject_connection(fd, s->o.retry_after_s, "out of memory, retry");
            continue;
        }
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            conn_close(c);
            continue;
        }
        osv_conn_set_timer(c, ms_ns(s->o.idle_timeout_ms));
    }
}

static void on_conn_event(osv_conn_t *c, uint32_t ev)
{
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        c->peer_shut = true;
    if ((ev & (EPOLLHUP | EPOLLERR)) && c->state != CONN_RUN) {
        conn_close(c);
        return;
    }
    conn_drive(c);
}

/* Drain: stop accepting, close idle connections, let requests in progress finish. */
static void begin_drain(osv_loop_t *l)
{
    if (!l->accepting)
        return;
    l->accepting = false;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->listen_fd, NULL);
    close(l->listen_fd);
    l->listen_fd = -1;
    for (osv_conn_t *c = l->all, *n; c; c = n) {
        n = c->next_all;
        if (c->state == CONN_HEAD && c->len == c->pos)
            conn_close(c);
    }
}

/* The drain timed out: close every connection except those whose (canceled) request is still on a
 * worker or whose answer is being written — they get ABANDON_GRACE_NS to send their 504/503. */
#define ABANDON_GRACE_NS 1000000000ull

static void close_all(osv_loop_t *l)
{
    for (osv_conn_t *c = l->all, *n; c; c = n) {
        n = c->next_all;
        if (c->state != CONN_RUN && c->state != CONN_WRITE)
            conn_close(c);
    }
}

static int next_timeout_ms(const osv_loop_t *l)
{
    uint64_t now = osv_now_ns(), at = l->n_heap ? l->heap[0]->timer_at : 0;
    if (l->accept_paused_until && (!at || l->accept_paused_until < at))
        at = l->accept_paused_until;
    int log_ms = osv_obs_tick(); /* buffered access-log lines must not wait for traffic */
    int ms;
    if (atomic_load(&l->srv->stopping))
        return 50;
    if (sweep_pending(l) && (!at || l->next_sweep < at))
        at = l->next_sweep;
    ms = !at ? -1 : at <= now ? 0 : (int)((at - now + 999999) / 1000000);
    return log_ms >= 0 && (ms < 0 || log_ms < ms) ? log_ms : ms;
}

void *osv_loop_main(void *arg)
{
    osv_loop_t *l = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int stopping = atomic_load(&l->srv->stopping);
        if (stopping)
            begin_drain(l);
        if (stopping == 2) {
            if (!l->abandon_at)
                l->abandon_at = osv_now_ns() + ABANDON_GRACE_NS;
            close_all(l);
        }
        /* After the drain timeout and the grace, connections still waiting for a worker or writing
         * are abandoned (osv_loop_free releases them once the workers have stopped). */
        if (stopping && (l->n_conns == 0 || (stopping == 2 && osv_now_ns() >= l->abandon_at)))
            break;
        int n = epoll_wait(l->epfd, evs, MAX_EVENTS, next_timeout_ms(l));
        l->now = osv_now_ns();
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &l->listen_fd)
                on_accept(l);
            else if (p == &l->wake_fd)
                run_completions(l);
            else
                on_conn_event(p, evs[i].events);
        }
        run_timers(l);
        sweep_free_lists(l);
        resume_accept(l);
        osv_obs_tick();
    }
    osv_obs_flush();
    return NULL;
}

void osv_loop_free(osv_loop_t *l)
{
    osv_conn_t *c = l->free_conns;
    if (!l->srv)
        return; /* never initialised */
    /* Connections a drain that timed out left behind (their requests were on a worker): the workers
     * have stopped (osv_serve_stop runs first), so nothing else can touch them now. */
    for (osv_conn_t *a = l->all, *n; a; a = n) {
        n = a->next_all;
        request_cleanup(a);
        close(a->fd);
        if (a->buf)
            buf_unmap(l, a->buf);
        conn_free(a);
    }
    l->all = NULL;
    while (c) {
        osv_conn_t *n = c->next_free;
        conn_free(c);
        c = n;
    }
    for (uint32_t i = 0; i < l->n_free_bufs; i++)
        buf_unmap(l, l->free_bufs[i]);
    osv_free(l->free_bufs);
    osv_free(l->heap);
    osv_free(l->toks);
    if (l->listen_fd >= 0)
        close(l->listen_fd);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    if (l->reserve_fd >= 0)
        close(l->reserve_fd);
    if (l->epfd >= 0)
        close(l->epfd);
}
