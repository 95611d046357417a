/* loop.c — the transport: one event-loop thread per core, each with its epoll instance, a
 * SO_REUSEPORT listener per front, the connections it accepted, their read buffers and timers,
 * hand-offs from other threads, and the drain. What a connection's bytes mean is its front's business
 * (osv_front_t); see net.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net/net.h"
#include "obs/obs.h"
#include "ortserve/alloc.h"
#include "ortserve/stats.h"
#include "ortserve/sysmem.h"
#include "util/sanitize.h"

#define MAX_EVENTS  256
#define MAX_FRONTS  4
#define ARENA_CHUNK (8u << 10)
#define ARENA_LIMIT (4u << 20)
#define ARENA_KEEP  OSV_NCONN_ARENA_KEEP
#define FREE_FLOOR  16
#define SWEEP_NS    1000000000ull

typedef struct listener {
    int fd;
    const osv_front_t *front;
} listener_t;

/* One loop thread's state: written by that thread only, except `done` (any thread pushes) and the
 * counters published for /metrics (n_bufs, n_free_bufs_seen: read by any). */
struct osv_loop {
    int id;
    osv_net_t *net;
    int epfd, wake_fd;
    int reserve_fd; /* a spare descriptor, given back to accept-and-refuse when out of them */
    listener_t listeners[MAX_FRONTS];
    int n_listeners;
    pthread_t thread;
    osv_nconn_t *free_conns[MAX_FRONTS]; /* recycled connection objects, per front (sizes differ) */
    uint32_t n_free_conns, free_conns_low;
    osv_nconn_t *all; /* doubly linked list of open connections */
    uint32_t n_conns;
    char **free_bufs;
    uint32_t n_free_bufs, cap_free_bufs, free_bufs_low;
    _Atomic uint32_t n_bufs, n_free_bufs_seen;
    uint64_t next_sweep;
    osv_nconn_t **heap; /* timer min-heap */
    uint32_t n_heap, cap_heap;
    _Atomic(osv_post_t *) done; /* posted by other threads, run on this one */
    osv_post_t *local_head, *local_tail; /* posted by this thread itself: run once the wake-up's events are */
    bool settle_more;                  /* settle() left work: the next wait does not block */
    bool accepting;
    uint64_t accept_paused_until; /* after EMFILE: monotonic ns */
    uint64_t abandon_at;          /* drain timed out: when to give up on the last connections */
    uint64_t now;                 /* monotonic ns, read once per iteration (timers are coarse) */
};

struct osv_net {
    /* read-only after osv_net_create / osv_net_listen */
    osv_net_opts_t o;
    osv_loop_t *loops;
    int n_loops;
    const osv_front_t *fronts[MAX_FRONTS];
    int n_fronts;
    void (*thread_init)(int index, void *ud);
    void *thread_ud;
    bool (*flush)(void *ud); /* osv_net_set_flush */
    void *flush_ud;
    /* written by anyone */
    _Atomic int stopping; /* 1: stop accepting and drain; 2: drain timed out, close everything */
    _Atomic uint32_t conns;
    _Atomic uint64_t next_conn_id;
};

static int front_index(const osv_net_t *n, const osv_front_t *f)
{
    for (int i = 0; i < n->n_fronts; i++)
        if (n->fronts[i] == f)
            return i;
    return 0;
}

/* ---- read buffers (mapped one by one, recycled per loop, swept back after floods) ------------------- */

static size_t buf_map_len(const osv_loop_t *l)
{
    return (size_t)l->net->o.conn_buffer + OSV_ASAN_GUARD;
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
    osv_poison((char *)p + l->net->o.conn_buffer, OSV_ASAN_GUARD);
    atomic_fetch_add_explicit(&l->n_bufs, 1, memory_order_relaxed);
    return p;
}

static void buf_unmap(osv_loop_t *l, char *b)
{
    osv_unpoison(b + l->net->o.conn_buffer, OSV_ASAN_GUARD);
    munmap(b, buf_map_len(l));
    atomic_fetch_sub_explicit(&l->n_bufs, 1, memory_order_relaxed);
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

bool osv_nconn_take_buf(osv_nconn_t *c)
{
    if (!c->buf) {
        if (!(c->buf = buf_get(c->loop)))
            return false;
        c->cap = c->loop->net->o.conn_buffer;
        c->len = c->pos = 0;
    }
    return true;
}

void osv_nconn_drop_buf(osv_nconn_t *c)
{
    buf_put(c->loop, c->buf);
    c->buf = NULL;
    c->len = c->pos = 0;
}

uint64_t osv_net_conn_bytes(uint32_t conn_buffer, size_t conn_size)
{
    return (uint64_t)conn_buffer + conn_size + ARENA_KEEP;
}

static void conn_free(osv_nconn_t *c)
{
    osv_arena_free(&c->arena);
    osv_free(c);
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
    for (int f = 0; f < MAX_FRONTS && excess > 0; f++) {
        for (; excess > 0 && l->free_conns[f]; excess--, freed++) {
            osv_nconn_t *c = l->free_conns[f];
            l->free_conns[f] = c->next_free;
            l->n_free_conns--;
            conn_free(c);
        }
    }
    l->free_conns_low = l->n_free_conns;
#ifdef __GLIBC__
    if (freed >= 64)
        malloc_trim(0); /* thousands of small objects: let glibc hand the pages back */
#endif
}

static bool sweep_pending(const osv_loop_t *l)
{
    return l->n_free_bufs > FREE_FLOOR || l->n_free_conns > FREE_FLOOR;
}

/* ---- timers: a binary min-heap of connections by timer_at ------------------------------------------- */

/* Every connection has at most one timer: with room in the heap for one more than the open
 * connections, arming a timer never allocates (and so never fails). */
static bool heap_reserve(osv_loop_t *l, uint32_t n)
{
    if (n <= l->cap_heap)
        return true;
    uint32_t cap = l->cap_heap ? l->cap_heap * 2 : 256;
    while (cap < n)
        cap *= 2;
    osv_nconn_t **h = osv_realloc(l->heap, cap * sizeof *h);
    if (!h)
        return false;
    l->heap = h;
    l->cap_heap = cap;
    return true;
}

static void heap_swap(osv_loop_t *l, uint32_t a, uint32_t b)
{
    osv_nconn_t *t = l->heap[a];
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

static void heap_remove(osv_loop_t *l, osv_nconn_t *c)
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

void osv_nconn_set_timer(osv_nconn_t *c, uint64_t ns)
{
    osv_loop_t *l = c->loop;
    heap_remove(l, c);
    if (ns == 0)
        return;
    /* conn_new reserved a place for every connection's timer, so the heap has room */
    if (OSV_NEVER(l->n_heap >= l->cap_heap) && !heap_reserve(l, l->n_heap + 1))
        return;
    c->timer_at = l->now + ns;
    c->timer_idx = (int)l->n_heap;
    l->heap[l->n_heap++] = c;
    heap_up(l, (uint32_t)c->timer_idx);
}

/* ---- connections ---------------------------------------------------------------------------------------- */

static osv_nconn_t *conn_new(osv_loop_t *l, const osv_front_t *f, int fd)
{
    int fi = front_index(l->net, f);
    osv_nconn_t *c = l->free_conns[fi];
    if (!heap_reserve(l, l->n_conns + 1))
        return NULL;
    if (c) {
        l->free_conns[fi] = c->next_free;
        if (--l->n_free_conns < l->free_conns_low)
            l->free_conns_low = l->n_free_conns;
    } else {
        if (!(c = osv_calloc(1, f->conn_size)))
            return NULL;
        osv_arena_init(&c->arena, ARENA_CHUNK, ARENA_LIMIT);
    }
    osv_arena_t arena = c->arena;
    memset(c, 0, f->conn_size);
    c->arena = arena;
    c->fd = fd;
    c->loop = l;
    c->front = f;
    c->timer_idx = -1;
    c->readable = true;
    c->id = atomic_fetch_add(&l->net->next_conn_id, 1);
    c->next_all = l->all;
    if (l->all)
        l->all->prev_all = c;
    l->all = c;
    l->n_conns++;
    atomic_fetch_add(&l->net->conns, 1);
    return c;
}

void osv_nconn_close(osv_nconn_t *c)
{
    osv_loop_t *l = c->loop;
    int fi = front_index(l->net, c->front);
    if (c->closed)
        return;
    heap_remove(l, c);
    c->front->release(c);
    close(c->fd);
    c->closed = true;
    buf_put(l, c->buf);
    c->buf = NULL;
    osv_arena_reset_trim(&c->arena, ARENA_KEEP);
    if (c->prev_all)
        c->prev_all->next_all = c->next_all;
    else
        l->all = c->next_all;
    if (c->next_all)
        c->next_all->prev_all = c->prev_all;
    l->n_conns--;
    atomic_fetch_sub(&l->net->conns, 1);
    c->next_free = l->free_conns[fi];
    l->free_conns[fi] = c;
    l->n_free_conns++;
}

#define LINGER_NS        2000000000ull
#define LINGER_MAX_BYTES (256ull << 20)

void osv_nconn_linger(osv_nconn_t *c)
{
    shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->lingered = 0;
    osv_nconn_set_timer(c, LINGER_NS);
}

/* Discards what a lingering connection's client still sends; closes at EOF, an error or the bound. */
static void drive_linger(osv_nconn_t *c)
{
    char scratch[16384];
    for (;;) {
        if (!c->readable)
            return; /* wait for more (or the linger timer) */
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
    osv_nconn_close(c);
}

int osv_nconn_read_into(osv_nconn_t *c, void *head, size_t head_cap, size_t *head_len, void *extra,
                        size_t extra_cap, size_t *extra_len)
{
    struct iovec iov[3];
    int n_iov = 0;
    size_t room;
    ssize_t n;
    *head_len = *extra_len = 0;
    if (!osv_nconn_take_buf(c))
        return -1;
    if (c->len) /* unconsumed bytes come first in the stream: nothing may be read ahead of them */
        head_cap = 0;
    room = c->cap - c->len;
    if (head_cap)
        iov[n_iov++] = (struct iovec){head, head_cap};
    if (room)
        iov[n_iov++] = (struct iovec){c->buf + c->len, room};
    if (extra_cap)
        iov[n_iov++] = (struct iovec){extra, extra_cap};
    if (!n_iov)
        return 0;
    n = readv(c->fd, iov, n_iov);
    if (n > 0) {
        size_t got = (size_t)n;
        /* A short read drained the socket and epoll will say when there is more — unless the peer's
         * FIN is already queued: edge-triggered epoll reports it once, so read on until EOF. */
        if (got < head_cap + room + extra_cap && !c->peer_shut)
            c->readable = false;
        *head_len = got < head_cap ? got : head_cap;
        got -= *head_len;
        size_t in_buf = got < room ? got : room;
        c->len += (uint32_t)in_buf;
        *extra_len = got - in_buf;
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

int osv_nconn_read(osv_nconn_t *c)
{
    size_t none, none2;
    return osv_nconn_read_into(c, NULL, 0, &none, NULL, 0, &none2);
}

uint64_t osv_loop_now(const osv_loop_t *l)
{
    return l->now;
}

int osv_loop_index(const osv_loop_t *l)
{
    return l->id;
}

bool osv_loop_is_current(const osv_loop_t *l)
{
    return pthread_equal(pthread_self(), l->thread) != 0;
}

/* ---- hand-offs from other threads --------------------------------------------------------------------- */

static void loop_wake(osv_loop_t *l)
{
    uint64_t one = 1;
    ssize_t r = write(l->wake_fd, &one, sizeof one);
    (void)r; /* a full eventfd counter still wakes the loop */
}

void osv_loop_post(osv_loop_t *l, osv_post_t *p)
{
    if (osv_loop_is_current(l)) { /* from the loop itself: no wake-up needed, settle() runs it */
        p->next = NULL;
        if (l->local_tail)
            l->local_tail->next = p;
        else
            l->local_head = p;
        l->local_tail = p;
        return;
    }
    osv_post_t *old = atomic_load_explicit(&l->done, memory_order_relaxed);
    do {
        p->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&l->done, &old, p, memory_order_release,
                                                    memory_order_relaxed));
    if (!old)
        loop_wake(l);
}

static void run_posts(osv_loop_t *l)
{
    uint64_t v;
    osv_post_t *list, *fifo = NULL;
    ssize_t r = read(l->wake_fd, &v, sizeof v);
    (void)r;
    list = atomic_exchange_explicit(&l->done, NULL, memory_order_acquire);
    while (list) { /* the stack is LIFO: reverse to run them in the order they were posted */
        osv_post_t *n = list->next;
        list->next = fifo;
        fifo = list;
        list = n;
    }
    while (fifo) {
        osv_post_t *n = fifo->next;
        fifo->next = NULL;
        fifo->fn(fifo);
        fifo = n;
    }
}

/* Rounds of flush + own posts per wake-up: each round's posts may submit requests (pipelined ones) the
 * next round's flush runs; what is left after this many waits for the next iteration (not blocking). */
#define SETTLE_ROUNDS 8

/* The wake-up's events are handled: the front's flush (the request layer runs what they submitted
 * together), then what the loop posted itself (answers of those runs), until neither leaves work. */
static void settle(osv_loop_t *l)
{
    for (int round = 0; round < SETTLE_ROUNDS; round++) {
        bool more = l->net->flush && l->net->flush(l->net->flush_ud);
        if (!l->local_head && !more) {
            l->settle_more = false;
            return;
        }
        osv_post_t *p = l->local_head;
        l->local_head = l->local_tail = NULL;
        while (p) {
            osv_post_t *n = p->next;
            p->next = NULL;
            p->fn(p);
            p = n;
        }
    }
    l->settle_more = true; /* rounds spent with work left: the next wait only polls */
}

/* ---- accepting ------------------------------------------------------------------------------------------ */

static void pause_accept(osv_loop_t *l, uint64_t ns)
{
    for (int i = 0; i < l->n_listeners; i++) {
        struct epoll_event ev = {.events = 0, .data.ptr = &l->listeners[i]};
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->listeners[i].fd, &ev);
    }
    l->accept_paused_until = osv_now_ns() + ns;
}

static void resume_accept(osv_loop_t *l)
{
    if (!l->accept_paused_until || osv_now_ns() < l->accept_paused_until || !l->accepting)
        return;
    for (int i = 0; i < l->n_listeners; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->listeners[i]};
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->listeners[i].fd, &ev);
    }
    l->accept_paused_until = 0;
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
 * the reserve again, and stop watching the listeners for a moment (libuv's "EMFILE trick", plus a
 * pause in case the reserve could not be taken back). */
static void shed_connections(osv_loop_t *l, const listener_t *ls)
{
    if (l->reserve_fd >= 0) {
        close(l->reserve_fd);
        l->reserve_fd = -1;
        for (int i = 0; i < 64; i++) {
            int fd = accept4(ls->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                break;
            osv_obs_note(OSV_OBS_REJECTED_CONNECTION);
            reject_connection(fd, ls->front->retry_after_s, "out of file descriptors, retry");
        }
        l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    pause_accept(l, 100000000ull);
}

static void on_accept(osv_loop_t *l, const listener_t *ls)
{
    const osv_front_t *f = ls->front;
    for (int i = 0; i < 64 && l->accepting; i++) {
        int fd = accept4(ls->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                osv_obs_note(OSV_OBS_ACCEPT_ERROR);
                shed_connections(l, ls); /* out of descriptors: answer the waiting ones, never spin */
            } else if (errno == ENOBUFS || errno == ENOMEM) {
                osv_obs_note(OSV_OBS_ACCEPT_ERROR);
                pause_accept(l, 100000000ull); /* out of kernel memory: back off instead of spinning */
            }
            return;
        }
        if (atomic_load(&l->net->conns) >= l->net->o.max_connections) {
            osv_obs_note(OSV_OBS_REJECTED_CONNECTION);
            reject_connection(fd, f->retry_after_s, "too many connections, retry");
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        osv_nconn_t *c = conn_new(l, f, fd);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (!c) {
            osv_obs_note(OSV_OBS_REJECTED_CONNECTION);
            reject_connection(fd, f->retry_after_s, "out of memory, retry");
            continue;
        }
        f->open(c);
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
            osv_nconn_close(c);
    }
}

static void on_conn_event(osv_nconn_t *c, uint32_t ev)
{
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        c->peer_shut = true;
    if (c->lingering) {
        drive_linger(c);
        return;
    }
    if ((ev & (EPOLLHUP | EPOLLERR)) && !c->front->busy(c)) {
        osv_nconn_close(c);
        return;
    }
    c->front->drive(c);
}

static void run_timers(osv_loop_t *l)
{
    while (l->n_heap && l->heap[0]->timer_at <= l->now) {
        osv_nconn_t *c = l->heap[0];
        heap_remove(l, c);
        if (c->lingering)
            osv_nconn_close(c); /* the client kept sending after the answer: stop listening */
        else
            c->front->timeout(c);
    }
}

/* ---- the drain ------------------------------------------------------------------------------------------ */

/* Stop accepting, close idle connections, let requests in progress finish. */
static void begin_drain(osv_loop_t *l)
{
    if (!l->accepting)
        return;
    l->accepting = false;
    for (int i = 0; i < l->n_listeners; i++) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->listeners[i].fd, NULL);
        close(l->listeners[i].fd);
        l->listeners[i].fd = -1;
    }
    for (osv_nconn_t *c = l->all, *n; c; c = n) {
        n = c->next_all;
        if (c->front->drain && !c->lingering && !c->closed)
            c->front->drain(c);
        if (c->front->idle(c))
            osv_nconn_close(c);
    }
}

/* The drain timed out: close every connection except those a worker holds (their canceled request
 * answers 504/503) — they get ABANDON_GRACE_NS to send it. */
#define ABANDON_GRACE_NS 1000000000ull

static void close_all(osv_loop_t *l)
{
    for (osv_nconn_t *c = l->all, *n; c; c = n) {
        n = c->next_all;
        if (!c->front->busy(c))
            osv_nconn_close(c);
    }
}

static int next_timeout_ms(const osv_loop_t *l)
{
    uint64_t now = osv_now_ns(), at = l->n_heap ? l->heap[0]->timer_at : 0;
    if (l->accept_paused_until && (!at || l->accept_paused_until < at))
        at = l->accept_paused_until;
    int log_ms = osv_obs_tick(); /* buffered access-log lines must not wait for traffic */
    int ms;
    if (l->settle_more)
        return 0;
    if (atomic_load(&l->net->stopping))
        return 50;
    if (sweep_pending(l) && (!at || l->next_sweep < at))
        at = l->next_sweep;
    ms = !at ? -1 : at <= now ? 0 : (int)((at - now + 999999) / 1000000);
    return log_ms >= 0 && (ms < 0 || log_ms < ms) ? log_ms : ms;
}

static void dispatch(osv_loop_t *l, void *p, uint32_t events)
{
    if (p == &l->wake_fd) {
        run_posts(l);
        return;
    }
    for (int i = 0; i < l->n_listeners; i++) {
        if (p == &l->listeners[i]) {
            on_accept(l, &l->listeners[i]);
            return;
        }
    }
    on_conn_event(p, events);
}

static void *loop_main(void *arg)
{
    osv_loop_t *l = arg;
    struct epoll_event evs[MAX_EVENTS];
    if (l->net->thread_init)
        l->net->thread_init(l->id, l->net->thread_ud);
    for (;;) {
        int stopping = atomic_load(&l->net->stopping);
        if (stopping)
            begin_drain(l);
        if (stopping == 2) {
            if (!l->abandon_at)
                l->abandon_at = osv_now_ns() + ABANDON_GRACE_NS;
            close_all(l);
        }
        /* After the drain timeout and the grace, connections still held by a worker are abandoned
         * (osv_net_destroy releases them once the workers have stopped). */
        if (stopping && (l->n_conns == 0 || (stopping == 2 && osv_now_ns() >= l->abandon_at)))
            break;
        int n = epoll_wait(l->epfd, evs, MAX_EVENTS, next_timeout_ms(l));
        l->now = osv_now_ns();
        for (int i = 0; i < n; i++)
            dispatch(l, evs[i].data.ptr, evs[i].events);
        run_timers(l);
        settle(l);
        sweep_free_lists(l);
        resume_accept(l);
        osv_obs_tick();
    }
    osv_obs_flush();
    return NULL;
}

/* ---- create, listen, run, destroy -------------------------------------------------------------------------- */

static int loop_init(osv_net_t *n, osv_loop_t *l, int id, osv_err_t *err)
{
    struct epoll_event ev = {.events = EPOLLIN};
    memset(l, 0, sizeof *l);
    l->id = id;
    l->net = n;
    l->wake_fd = l->reserve_fd = -1;
    l->accepting = true;
    l->now = osv_now_ns();
    if ((l->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
        (l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
        return osv_err_set(err, OSV_EIO, "epoll/eventfd/spare descriptor: %s", strerror(errno));
    ev.data.ptr = &l->wake_fd;
    epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &ev);
    return 0;
}

int osv_net_create(const osv_net_opts_t *o, osv_net_t **out, osv_err_t *err)
{
    osv_net_t *n = osv_calloc(1, sizeof *n);
    int rc;
    if (!n)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    n->o = *o;
    n->n_loops = o->loops > 0 ? o->loops : osv_sysmem_cpus();
    if (!(n->loops = osv_calloc((size_t)n->n_loops, sizeof *n->loops))) {
        osv_free(n);
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n->n_loops; i++) {
        if ((rc = loop_init(n, &n->loops[i], i, err)) != 0) {
            n->n_loops = i + 1;
            osv_net_destroy(n);
            return rc;
        }
    }
    *out = n;
    return 0;
}

static int resolve(const char *host, uint16_t port, struct addrinfo **ai, osv_err_t *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    char ps[8];
    int rc;
    snprintf(ps, sizeof ps, "%u", port);
    if ((rc = getaddrinfo(host, ps, &hints, ai)) != 0)
        return osv_err_set(err, OSV_EINVAL, "cannot resolve host '%s': %s", host, gai_strerror(rc));
    return 0;
}

/* A listening socket on host:port; with `share`, SO_REUSEPORT so every loop has its own accept queue. */
static int listen_on(const char *host, uint16_t port, bool share, uint16_t *bound, osv_err_t *err)
{
    struct addrinfo *ai = NULL;
    int fd, one = 1, rc;
    if ((rc = resolve(host, port, &ai, err)) != 0)
        return rc;
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (share && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        rc = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        if (rc == EADDRINUSE)
            return osv_err_set(err, OSV_EEXIST,
                               "cannot listen on %s:%u: address already in use (another process listens "
                               "there: stop it or choose another --port)",
                               host, port);
        return osv_err_set(err, OSV_EIO, "cannot listen on %s:%u: %s", host, port, strerror(rc));
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *bound = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                           : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

/* SO_REUSEPORT lets any process of the same user bind a port already in use, and the kernel then
 * spreads connections over both servers. So the port is first bound without it, alone, and let go.
 * (The probe holds the port for an instant only; a process binding it in that instant is not
 * caught.) */
int osv_net_probe(const char *host, int port, osv_err_t *err)
{
    uint16_t bound;
    int fd;
    if (port < 0 || port > 65535)
        return osv_err_set(err, OSV_EINVAL, "port %d is not in 0..65535", port);
    if (port == 0)
        return 0;
    if ((fd = listen_on(host, (uint16_t)port, false, &bound, err)) < 0)
        return fd;
    close(fd);
    return 0;
}

int osv_net_listen(osv_net_t *n, const osv_front_t *f, const char *host, int port, uint16_t *bound,
                   osv_err_t *err)
{
    uint16_t p = (uint16_t)port;
    int rc;
    if (n->n_fronts == MAX_FRONTS)
        return osv_err_set(err, OSV_ELIMIT, "more than %d fronts", MAX_FRONTS);
    if ((rc = osv_net_probe(host, port, err)) != 0)
        return rc;
    n->fronts[n->n_fronts++] = f;
    for (int i = 0; i < n->n_loops; i++) {
        osv_loop_t *l = &n->loops[i];
        listener_t *ls = &l->listeners[l->n_listeners];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = ls};
        int fd = listen_on(host, p, true, &p, err); /* port 0: the first loop's pick, then the same */
        if (fd < 0)
            return fd;
        *ls = (listener_t){.fd = fd, .front = f};
        l->n_listeners++;
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
    }
    *bound = p;
    return 0;
}

void osv_net_set_flush(osv_net_t *n, bool (*flush)(void *ud), void *ud)
{
    n->flush = flush;
    n->flush_ud = ud;
}

int osv_net_start(osv_net_t *n, void (*thread_init)(int index, void *ud), void *ud)
{
    n->thread_init = thread_init;
    n->thread_ud = ud;
    for (int i = 0; i < n->n_loops; i++)
        if (pthread_create(&n->loops[i].thread, NULL, loop_main, &n->loops[i]) != 0)
            return OSV_ENOMEM;
    return 0;
}

void osv_net_drain(osv_net_t *n)
{
    int zero = 0;
    if (atomic_compare_exchange_strong(&n->stopping, &zero, 1))
        for (int i = 0; i < n->n_loops; i++)
            loop_wake(&n->loops[i]);
}

void osv_net_abandon(osv_net_t *n)
{
    atomic_store(&n->stopping, 2);
    for (int i = 0; i < n->n_loops; i++)
        loop_wake(&n->loops[i]);
}

int osv_net_stopping(const osv_net_t *n)
{
    return atomic_load(&((osv_net_t *)n)->stopping);
}

void osv_net_join(osv_net_t *n)
{
    for (int i = 0; i < n->n_loops; i++)
        if (n->loops[i].thread)
            pthread_join(n->loops[i].thread, NULL);
}

static void loop_free(osv_loop_t *l)
{
    if (!l->net)
        return; /* never initialised */
    /* Connections a drain that timed out left behind (their requests were on a worker): the workers
     * have stopped, so nothing else can touch them now. */
    while (l->all)
        osv_nconn_close(l->all);
    for (int f = 0; f < MAX_FRONTS; f++) {
        for (osv_nconn_t *c = l->free_conns[f], *n; c; c = n) {
            n = c->next_free;
            conn_free(c);
        }
    }
    for (uint32_t i = 0; i < l->n_free_bufs; i++)
        buf_unmap(l, l->free_bufs[i]);
    osv_free(l->free_bufs);
    osv_free(l->heap);
    for (int i = 0; i < l->n_listeners; i++)
        if (l->listeners[i].fd >= 0)
            close(l->listeners[i].fd);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    if (l->reserve_fd >= 0)
        close(l->reserve_fd);
    if (l->epfd >= 0)
        close(l->epfd);
}

void osv_net_destroy(osv_net_t *n)
{
    if (!n)
        return;
    for (int i = 0; n->loops && i < n->n_loops; i++)
        loop_free(&n->loops[i]);
    osv_free(n->loops);
    osv_free(n);
}

uint32_t osv_net_connections(const osv_net_t *n)
{
    return atomic_load(&((osv_net_t *)n)->conns);
}

void osv_net_buffers(const osv_net_t *n, uint64_t *in_use, uint64_t *free_bufs)
{
    *in_use = *free_bufs = 0;
    for (int i = 0; i < n->n_loops; i++) {
        uint64_t bufs = atomic_load_explicit(&n->loops[i].n_bufs, memory_order_relaxed),
                 fb = atomic_load_explicit(&n->loops[i].n_free_bufs_seen, memory_order_relaxed);
        *in_use += bufs - fb;
        *free_bufs += fb;
    }
}

int osv_net_loop_count(const osv_net_t *n)
{
    return n->n_loops;
}
