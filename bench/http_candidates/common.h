/* Shared bits for the HTTP-layer candidate servers (bench only).
 *
 * - canned KServe v2 response bodies,
 * - a per-thread pool of 64-byte-aligned "pool slots" that request bodies
 *   must end up in (this models ortserve's preallocated input tensors),
 * - listener creation (127.0.0.1 only, optional SO_REUSEPORT),
 * - command-line parsing and SIGTERM/SIGINT handling.
 *
 * Every candidate lands the body in a slot and checks it ('{' ... '}') before
 * replying, so all of them do the same application-level work.
 */
#ifndef HTTP_CANDIDATES_COMMON_H
#define HTTP_CANDIDATES_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define INFER_PATH "/v2/models/mlp/infer"
#define JSON_CT    "application/json"

/* 151 bytes. */
#define RESP_BODY                                                                                            \
    "{\"model_name\":\"mlp\",\"outputs\":[{\"name\":\"probs\",\"datatype\":\"FP32\",\"shape\":[1,10],"       \
    "\"data\":[0.021,0.087,0.144,0.052,0.313,0.093,0.021,0.118,0.070,0.081]}]}"
#define NOTFOUND_BODY "{\"error\":\"not found\"}"
#define BADREQ_BODY   "{\"error\":\"bad request\"}"
#define TOOBIG_BODY   "{\"error\":\"request body too large\"}"
#define BUSY_BODY     "{\"error\":\"no free slot\"}"

#define SLOT_ALIGN       64u
#define SLOT_SIZE        (256u * 1024u) /* max request body */
#define SLOTS_PER_THREAD 256u           /* reserved virtually; only touched pages count */

struct slot {
    char *mem; /* SLOT_ALIGN-aligned, SLOT_SIZE bytes */
    size_t len;
    int route; /* used by candidates that need per-request state */
};

struct slot_pool {
    struct slot slots[SLOTS_PER_THREAD];
    struct slot *free[SLOTS_PER_THREAD];
    unsigned nfree;
    int ready;
};

static _Thread_local struct slot_pool tl_pool;

static inline struct slot *slot_acquire(void)
{
    struct slot_pool *p = &tl_pool;
    if (!p->ready) {
        char *base = aligned_alloc(SLOT_ALIGN, (size_t)SLOT_SIZE * SLOTS_PER_THREAD);
        if (base == NULL)
            return NULL;
        for (unsigned i = 0; i < SLOTS_PER_THREAD; i++) {
            p->slots[i].mem = base + (size_t)i * SLOT_SIZE;
            p->free[i] = &p->slots[SLOTS_PER_THREAD - 1u - i];
        }
        p->nfree = SLOTS_PER_THREAD;
        p->ready = 1;
    }
    if (p->nfree == 0)
        return NULL;
    struct slot *s = p->free[--p->nfree];
    s->len = 0;
    s->route = 0;
    return s;
}

/* Must be called on the thread that acquired the slot. */
static inline void slot_release(struct slot *s)
{
    tl_pool.free[tl_pool.nfree++] = s;
}

/* The "inference": check the body looks like a JSON object. */
static inline int body_ok(const char *b, size_t n)
{
    return n >= 2 && b[0] == '{' && b[n - 1] == '}';
}

/* Body-copy accounting, printed at exit. */
static _Atomic unsigned long long stat_requests, stat_body_direct, stat_body_copied;

static inline void stats_print(const char *name)
{
    fprintf(stderr, "%s: requests=%llu body_bytes_direct=%llu body_bytes_copied_by_handler=%llu\n", name,
            (unsigned long long)atomic_load(&stat_requests),
            (unsigned long long)atomic_load(&stat_body_direct),
            (unsigned long long)atomic_load(&stat_body_copied));
}

static inline void stat_add(_Atomic unsigned long long *c, unsigned long long v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

struct opts {
    int port;
    int threads;
};

static inline struct opts parse_opts(int argc, char **argv)
{
    struct opts o = {18480, 1};
    int c;
    while ((c = getopt(argc, argv, "p:t:")) != -1) {
        switch (c) {
        case 'p':
            o.port = atoi(optarg);
            break;
        case 't':
            o.threads = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: %s [-p port] [-t threads]\n", argv[0]);
            exit(2);
        }
    }
    if (o.port <= 1024 || o.port > 65535 || o.threads < 1 || o.threads > 64) {
        fprintf(stderr, "bad -p/-t\n");
        exit(2);
    }
    return o;
}

static inline struct sockaddr_in loopback_addr(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Non-blocking listener on 127.0.0.1:port; exits on failure. */
static inline int make_listener(int port, int reuseport)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        perror("SO_REUSEPORT");
        exit(1);
    }
    struct sockaddr_in a = loopback_addr(port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4096) != 0) {
        perror("bind/listen");
        exit(1);
    }
    return fd;
}

/* Block SIGTERM/SIGINT (inherited by threads created afterwards), ignore SIGPIPE. */
static inline void block_signals(sigset_t *set)
{
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

static inline void wait_for_signal(const sigset_t *set)
{
    int sig = 0;
    sigwait(set, &sig);
}

#endif
