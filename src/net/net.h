/* net.h — internal: the transport every front shares — event-loop threads, listeners, connections,
 * their read buffers and timers, hand-offs from other threads, and the drain.
 *
 * Each loop thread owns an epoll instance, one SO_REUSEPORT listener per front and the connections it
 * accepted; nothing else touches a connection except, while the front says so, the one worker
 * running its request. A front (HTTP/1.1, HTTP/2 + gRPC) describes itself with an osv_front_t: the
 * size of its connection object — which embeds an osv_nconn_t first, the way libuv's handles
 * share uv_handle_t's fields — and callbacks the loop calls on its own thread. Connections are edge-triggered and
 * registered once; a front reads with osv_nconn_read (which reads on to EOF once the peer's FIN is
 * queued), arms one timer per connection, and gets work back from other threads with osv_loop_post.
 *
 * Memory: connection objects and read buffers are recycled per loop, so a warm loop allocates
 * nothing; what a flood leaves on the free lists is given back within about two seconds (a
 * once-a-second low-water sweep). Connections beyond max_connections are refused with 503. */
#ifndef OSV_NET_H
#define OSV_NET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ortserve/error.h"
#include "util/arena.h"

typedef struct osv_net osv_net_t;
typedef struct osv_loop osv_loop_t;
typedef struct osv_nconn osv_nconn_t;
typedef struct osv_front osv_front_t;
typedef struct osv_post osv_post_t;

/* Work handed to a loop from another thread (a worker finished a request): fn runs on the loop. The
 * poster owns the object (usually embedded in its request) until fn has run. */
struct osv_post {
    osv_post_t *next;
    void (*fn)(osv_post_t *p);
};

/* A connection as the transport sees it. A front's connection object embeds this as its first member
 * (so a pointer to either is a pointer to both, C17 6.7.2.1) and net allocates front->conn_size bytes.
 * Labels: read-only for fronts (set by the loop), shared (the front reads and consumes, the loop
 * fills), private (the loop's alone). All written on the connection's loop thread only — or by the one
 * worker its front lets hold it. */
struct osv_nconn {
    /* read-only */
    int fd;
    osv_loop_t *loop;
    const osv_front_t *front;
    uint64_t id;
    /* shared: the read buffer (taken on first read, given back when idle) and what the socket said */
    char *buf;
    uint32_t cap, len, pos; /* bytes buffered; pos = where the front's current unit (request) starts */
    bool readable;          /* the socket may hold unread bytes (edge-triggered epoll) */
    bool peer_shut;         /* EPOLLRDHUP seen: the peer's FIN is queued */
    bool peer_closed;       /* a read returned EOF */
    osv_arena_t arena;      /* request-scoped objects: the front resets it (osv_arena_reset_trim to
                               OSV_NCONN_ARENA_KEEP between requests) */
    /* private */
    bool closed, lingering;
    uint64_t lingered;
    uint64_t timer_at;
    int timer_idx;
    osv_nconn_t *next_free, *prev_all, *next_all;
};

/* What a connection's arena keeps between requests (net.c plans connection memory with it). */
#define OSV_NCONN_ARENA_KEEP (16u << 10)

/* A protocol served on a listener. Callbacks run on the connection's loop thread. */
struct osv_front {
    const char *name;
    size_t conn_size;          /* sizeof the front's connection object (an osv_nconn_t first) */
    void *ud;                  /* the front's instance */
    uint32_t retry_after_s;    /* Retry-After of the 503 net writes to refused connections */
    void (*open)(osv_nconn_t *c);    /* accepted: zero the front's fields, arm the idle timer */
    void (*drive)(osv_nconn_t *c);   /* readable, writable or resumed: make progress */
    void (*timeout)(osv_nconn_t *c); /* its timer fired (already disarmed) */
    void (*drain)(osv_nconn_t *c);   /* optional: the drain began (before idle() is asked): say goodbye */
    void (*release)(osv_nconn_t *c); /* it closes: drop what a request holds (slots, references) */
    bool (*idle)(const osv_nconn_t *c); /* nothing in progress: a drain closes it at once */
    bool (*busy)(const osv_nconn_t *c); /* a worker holds its request: a timed-out drain gives it a grace */
};

typedef struct osv_net_opts {
    int loops;                /* loop threads (0 = one per core) */
    uint32_t max_connections; /* open connections, all fronts and loops */
    uint32_t conn_buffer;     /* bytes of each connection's read buffer */
} osv_net_opts_t;

/* Creates the loops (not yet running). *out owns them; osv_net_destroy frees. */
int osv_net_create(const osv_net_opts_t *o, osv_net_t **out, osv_err_t *err);
/* Listens for front f on host:port on every loop (SO_REUSEPORT; port 0 picks a free one, the same on
 * every loop). A port another process already listens on is refused ("address already in use"),
 * even one that also set SO_REUSEPORT. *bound gets the port. Before osv_net_start. */
int osv_net_listen(osv_net_t *n, const osv_front_t *f, const char *host, int port, uint16_t *bound,
                   osv_err_t *err);
/* Fails with OSV_EEXIST ("address already in use") when another socket listens on host:port — even one
 * with SO_REUSEPORT set; port 0 always passes. osv_net_listen checks this itself; a program can ask
 * before the slow part of its start-up (loading models). */
int osv_net_probe(const char *host, int port, osv_err_t *err);
/* flush(ud) runs on each loop thread once it handled the events (and timers) of one wake-up, before it
 * waits for more — and again, up to a few rounds, while what the loop posted itself since (answers of
 * what flush ran) leaves more to do: the request layer runs a wake-up's requests together there. It
 * returns true when it left work behind (the loop then polls without blocking). Before osv_net_start. */
void osv_net_set_flush(osv_net_t *n, bool (*flush)(void *ud), void *ud);
/* Starts the loop threads; each calls thread_init(index, ud) first (may be NULL). */
int osv_net_start(osv_net_t *n, void (*thread_init)(int index, void *ud), void *ud);
/* Stops accepting and closes idle connections; requests in progress go on (drain). Any thread. */
void osv_net_drain(osv_net_t *n);
/* The drain timed out: every connection is closed except those a worker holds, which get a second
 * to send their answer. Any thread. */
void osv_net_abandon(osv_net_t *n);
/* 0 while serving, 1 draining, 2 abandoning. */
int osv_net_stopping(const osv_net_t *n);
/* Waits for the loop threads (they end once drained, or abandoned). */
void osv_net_join(osv_net_t *n);
/* Closes what is left (connections a timed-out drain abandoned: call after the workers stopped) and
 * frees. */
void osv_net_destroy(osv_net_t *n);

/* Counters, any thread. */
uint32_t osv_net_connections(const osv_net_t *n);
void osv_net_buffers(const osv_net_t *n, uint64_t *in_use, uint64_t *free_bufs);
int osv_net_loop_count(const osv_net_t *n);
/* Memory one connection with a request in progress holds (its read buffer, object and kept arena):
 * the default --max-connections divides a share of the memory limit by this. */
uint64_t osv_net_conn_bytes(uint32_t conn_buffer, size_t conn_size);

/* ---- on the connection's loop thread ----------------------------------------------------------------- */

/* Reads what the socket has into the buffer (taken from the loop's free list when the connection has
 * none). 1 = got bytes, 0 = nothing now (or the buffer is full), -1 = EOF or error (peer_closed tells
 * which), or no buffer. A short read clears `readable` unless the peer's FIN is queued. */
int osv_nconn_read(osv_nconn_t *c);
/* As osv_nconn_read, in one readv over up to three places: `head` first (caller memory, head_cap bytes:
 * where the front knows the next bytes belong, e.g. the rest of a tensor's payload in its pool slot; used
 * only when the buffer holds no unconsumed bytes), then the buffer, then `extra` (caller memory, once the
 * buffer is full). *head_len and *extra_len = the bytes that landed there; the caller consumes head's,
 * then the buffer's, then extra's before the next read. A front whose messages are large (gRPC) reads a
 * socket's backlog in one call instead of one call per buffer. */
int osv_nconn_read_into(osv_nconn_t *c, void *head, size_t head_cap, size_t *head_len, void *extra,
                        size_t extra_cap, size_t *extra_len);
/* Takes a read buffer for the connection if it has none; false when out of memory. */
bool osv_nconn_take_buf(osv_nconn_t *c);
/* Gives the (empty) read buffer back: idle keep-alive connections hold none. */
void osv_nconn_drop_buf(osv_nconn_t *c);
/* Arms the connection's one timer `ns` from the loop's clock (0 disarms). Never allocates. */
void osv_nconn_set_timer(osv_nconn_t *c, uint64_t ns);
/* Closes now (release() first). */
void osv_nconn_close(osv_nconn_t *c);
/* Lingering close (as nginx does): shuts the write side and discards what the client still sends,
 * bounded in bytes and time, then closes — closing a socket with unread input makes the kernel send
 * a reset that can destroy the answer the client has not read yet. */
void osv_nconn_linger(osv_nconn_t *c);

/* The loop's clock: monotonic ns, read once per iteration (timers are coarse). */
uint64_t osv_loop_now(const osv_loop_t *l);
/* The loop's index (0 .. loops-1): its shard for per-thread state. */
int osv_loop_index(const osv_loop_t *l);
/* True when the calling thread is this loop's. */
bool osv_loop_is_current(const osv_loop_t *l);
/* Hands p to loop l: p->fn runs on l's thread. Lock-free; any thread. From l's own thread, p runs once
 * the current wake-up's events are handled (no wake-up is written). */
void osv_loop_post(osv_loop_t *l, osv_post_t *p);

#endif
