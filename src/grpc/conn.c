/* conn.c — the gRPC front's connections: one nghttp2 server session per connection over net's read
 * buffer (nghttp2_session_mem_recv), gRPC message framing into pool slots, responses through
 * nghttp2's NO_COPY data path and writev, trailers, deadlines, limits and HTTP/2 abuse handling.
 *
 * Receiving: DATA chunks point into the connection's read buffer; each byte of a message is copied
 * once into the slot its 5-byte length prefix sized (counted as OSV_COPY_GRPC_RECEIVE). Sending:
 * frame headers and small messages are copied into an output buffer, tensors are queued by
 * reference, and both go out in one writev in wire order. Every per-connection resource is bounded:
 * streams (SETTINGS_MAX_CONCURRENT_STREAMS, refused beyond), calls in progress, the output buffer
 * and its segments, nghttp2's own memory (its allocator hooks count it), control frames (a token
 * bucket: GOAWAY beyond), idle and stalled connections (timers). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "grpc/grpc_internal.h"
#include "obs/log.h"
#include "serve/auth.h"
#include "serve/errmap.h"
#include "serve/inflate.h"

#define OUT_CAP        (64u << 10) /* copied output bytes (frame headers, small messages) */
#define SEG_CAP        1024        /* queued output segments */
#define WRITEV_MAX     256
#define CALL_ARENA      (8u << 10)           /* a call's arena grows by chunks of this... */
#define CALL_ARENA_KEEP OSV_NCONN_ARENA_KEEP /* ...and a recycled call keeps this much (as HTTP's) */
#define CALL_ARENA_MAX  (4u << 20)
#define CALL_KEEP      16 /* finished calls a connection keeps for reuse */
#define STREAM_KEEP    16
#define REFUSALS_MAX   64 /* refusal answers a connection may have queued beyond --grpc-max-inflight */
#define MS             1000000ull

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static uint64_t now_of(const gconn_t *c)
{
    return osv_loop_now(c->nc.loop);
}

/* ---- nghttp2's memory, counted against --grpc-max-h2-memory ----------------------------------------- */

/* Every block carries its capacity. Blocks up to H2_CACHE_MAX bytes are rounded up to a multiple of
 * H2_CACHE_STEP and, when freed, kept on the connection's free list of their class (at most
 * H2_CACHE_KEEP each) for the next stream's allocations: a warm connection's calls allocate nothing
 * from the heap. Cached blocks stay counted against --grpc-max-h2-memory (dropped when it is near). */
#define H2_CACHE_STEP 64
#define H2_CACHE_MAX  (H2_CACHE_STEP * H2_CACHE_CLASSES)
#define H2_CACHE_KEEP 32

typedef struct memhdr {
    size_t cap;
    struct memhdr *next; /* on a free list */
} memhdr_t;

static size_t h2_class(size_t size)
{
    return size ? (size - 1) / H2_CACHE_STEP : 0;
}

static void h2_cache_drop(gconn_t *c)
{
    for (size_t i = 0; i < H2_CACHE_CLASSES; i++)
        while (c->h2_cache[i]) {
            memhdr_t *h = c->h2_cache[i];
            c->h2_cache[i] = h->next;
            c->h2_mem -= h->cap;
            osv_free(h);
        }
    memset(c->h2_cache_n, 0, sizeof c->h2_cache_n);
}

static void *h2_malloc(size_t size, void *ud)
{
    gconn_t *c = ud;
    memhdr_t *h;
    size_t cap = size <= H2_CACHE_MAX ? (h2_class(size) + 1) * H2_CACHE_STEP : size;
    if (size <= H2_CACHE_MAX && (h = c->h2_cache[h2_class(size)])) {
        c->h2_cache[h2_class(size)] = h->next;
        c->h2_cache_n[h2_class(size)]--;
        return h + 1;
    }
    if (cap > c->g->o.max_h2_memory - c->h2_mem)
        h2_cache_drop(c);
    if (cap > c->g->o.max_h2_memory - c->h2_mem || !(h = osv_malloc(sizeof *h + cap)))
        return NULL;
    h->cap = cap;
    c->h2_mem += cap;
    return h + 1;
}

static void h2_free(void *p, void *ud)
{
    gconn_t *c = ud;
    if (!p)
        return;
    memhdr_t *h = (memhdr_t *)p - 1;
    if (h->cap <= H2_CACHE_MAX && c->h2_cache_n[h2_class(h->cap)] < H2_CACHE_KEEP && !c->nc.closed) {
        h->next = c->h2_cache[h2_class(h->cap)];
        c->h2_cache[h2_class(h->cap)] = h;
        c->h2_cache_n[h2_class(h->cap)]++;
        return;
    }
    c->h2_mem -= h->cap;
    osv_free(h);
}

static void *h2_calloc(size_t n, size_t size, void *ud)
{
    void *p;
    if (size && n > SIZE_MAX / size)
        return NULL;
    if ((p = h2_malloc(n * size, ud)))
        memset(p, 0, n * size);
    return p;
}

static void *h2_realloc(void *p, size_t size, void *ud)
{
    memhdr_t *h = p ? (memhdr_t *)p - 1 : NULL;
    void *n;
    if (h && size <= h->cap)
        return p;
    if (!(n = h2_malloc(size, ud)))
        return NULL;
    if (h)
        memcpy(n, p, h->cap);
    h2_free(p, ud);
    return n;
}

/* ---- calls and streams ------------------------------------------------------------------------------------ */

gcall_t *grpc_call_new(gstream_t *st, bool refusal, osv_err_t *err)
{
    gconn_t *c = st->c;
    gcall_t *k;
    if (!refusal && c->n_calls - c->n_refusals >= c->g->o.max_inflight) {
        osv_err_set(err, OSV_EBUSY,
                    "%u requests are in progress on this connection (--grpc-max-inflight): retry in %d ms",
                    c->n_calls - c->n_refusals, GRPC_RETRY_MS);
        return NULL;
    }
    if (refusal && c->n_refusals >= REFUSALS_MAX) {
        osv_err_set(err, OSV_EBUSY,
                    "%u refused requests on this connection still wait for the client to read their answers: "
                    "retry in %d ms", c->n_refusals, GRPC_RETRY_MS);
        return NULL;
    }
    if ((k = c->free_calls)) { /* a recycled call keeps its arena's first chunk */
        osv_arena_t arena = k->arena;
        c->free_calls = k->next;
        c->n_free_calls--;
        memset(k, 0, sizeof *k);
        k->arena = arena;
    } else if (!(k = osv_calloc(1, sizeof *k))) {
        osv_err_set(err, OSV_ENOMEM, "out of memory");
        return NULL;
    } else {
        osv_arena_init(&k->arena, CALL_ARENA, CALL_ARENA_MAX);
    }
    k->c = c;
    k->st = st;
    k->refusal = refusal;
    c->n_refusals += refusal;
    k->t_start = osv_now_ns();
    k->next = st->calls;
    st->calls = k;
    st->n_calls++;
    c->n_calls++;
    atomic_fetch_add(c->g->inflight, 1);
    return k;
}

/* Takes k off its stream's list of calls (it stays alive while output references it). */
static void call_detach(gcall_t *k)
{
    gstream_t *st = k->st;
    if (!st)
        return;
    for (gcall_t **pp = &st->calls; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    st->n_calls--;
    st->c->n_calls--;
    st->c->n_refusals -= k->refusal;
    atomic_fetch_sub(st->c->g->inflight, 1);
    k->st = NULL;
}

static void release_call(gcall_t *k, osv_grpc_t *g)
{
    gconn_t *c = k->c;
    if (k->cleanup)
        k->cleanup(k);
    if (k->model)
        osv_model_release(k->model);
    if (k->slot.base)
        osv_pool_release(g->pool, &k->slot);
    if (c && !c->nc.closed && c->n_free_calls < CALL_KEEP) { /* kept for the connection's next call */
        osv_arena_reset_trim(&k->arena, CALL_ARENA_KEEP);
        k->next = c->free_calls;
        c->free_calls = k;
        c->n_free_calls++;
        return;
    }
    osv_arena_free(&k->arena);
    osv_free(k);
}

/* Frees k once nothing references it: no worker holds it, the socket took its bytes. */
static void call_free_maybe(gcall_t *k, osv_grpc_t *g)
{
    if (k->held || k->segs || k->ready || k->st)
        return;
    release_call(k, g);
}

void grpc_call_free(gcall_t *k)
{
    osv_grpc_t *g = k->st ? k->st->c->g : NULL;
    if (!g)
        return;
    call_detach(k);
    call_free_maybe(k, g);
}

static void stream_free(gstream_t *st)
{
    gconn_t *c = st->c;
    for (gstream_t **pp = &c->streams; *pp; pp = &(*pp)->next)
        if (*pp == st) {
            *pp = st->next;
            break;
        }
    c->n_streams--;
    if (!c->nc.closed && c->n_free_streams < STREAM_KEEP) { /* kept for the connection's next stream */
        st->next = c->free_streams;
        c->free_streams = st;
        c->n_free_streams++;
        return;
    }
    osv_free(st);
}

/* The stream is over for nghttp2: calls a worker holds are canceled and outlive it. */
static void stream_gone(gstream_t *st)
{
    osv_grpc_t *g = st->c->g;
    grpc_watch_drop(st);
    st->closed = true;
    for (gcall_t *k = st->calls, *n; k; k = n) {
        n = k->next;
        if (k->held)
            grpc_infer_cancel(k);
    }
    for (gcall_t *k = st->q_head; k; k = k->qnext)
        k->ready = false;
    st->q_head = st->q_tail = NULL;
    for (gcall_t *k = st->calls, *n; k; k = n) {
        n = k->next;
        if (!k->held) {
            call_detach(k);
            call_free_maybe(k, g);
        }
    }
    if (!st->calls)
        stream_free(st);
}

/* ---- output -------------------------------------------------------------------------------------------------- */

static bool out_room(const gconn_t *c, uint32_t bytes, uint32_t segs)
{
    return c->out_cap - c->out_len >= bytes && c->seg_cap - (c->seg_head + c->n_seg) >= segs;
}

static void seg_push(gconn_t *c, const uint8_t *p, uint32_t len, gcall_t *owner)
{
    struct gseg *last = c->n_seg ? &c->seg[c->seg_head + c->n_seg - 1] : NULL;
    if (!len)
        return;
    if (!owner && last && !last->owner && last->p + last->len == p) {
        last->len += len; /* contiguous copied bytes: one segment */
        return;
    }
    c->seg[c->seg_head + c->n_seg++] = (struct gseg){p, len, owner};
    if (owner)
        owner->segs++;
}

static uint32_t out_copy(gconn_t *c, const uint8_t *p, size_t n)
{
    uint32_t k = c->out_cap - c->out_len;
    if (k > n)
        k = (uint32_t)n;
    if (!k || c->seg_head + c->n_seg + 1 > c->seg_cap)
        return 0;
    memcpy(c->out + c->out_len, p, k);
    seg_push(c, c->out + c->out_len, k, NULL);
    c->out_len += k;
    return k;
}

/* Writes queued segments; false when the socket would block (or failed: the connection dies). */
static bool flush(gconn_t *c)
{
    osv_grpc_t *g = c->g;
    while (c->n_seg) {
        struct iovec iov[WRITEV_MAX];
        int n = 0;
        for (uint32_t i = 0; i < c->n_seg && n < WRITEV_MAX; i++)
            iov[n++] = (struct iovec){(void *)c->seg[c->seg_head + i].p, c->seg[c->seg_head + i].len};
        ssize_t w = writev(c->nc.fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->dying = true;
            return false;
        }
        c->last_progress = now_of(c);
        size_t left = (size_t)w;
        while (left && c->n_seg) {
            struct gseg *s = &c->seg[c->seg_head];
            if (left < s->len) {
                s->p += left;
                s->len -= (uint32_t)left;
                break;
            }
            left -= s->len;
            c->seg_head++;
            c->n_seg--;
            if (s->owner && --s->owner->segs == 0)
                call_free_maybe(s->owner, g);
        }
    }
    c->seg_head = 0;
    c->out_len = 0;
    return true;
}

static ssize_t on_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags, void *ud)
{
    gconn_t *c = ud;
    uint32_t k;
    (void)h2, (void)flags;
    k = out_copy(c, data, len);
    if (!k && !flush(c))
        return NGHTTP2_ERR_WOULDBLOCK;
    if (!k)
        k = out_copy(c, data, len);
    return k ? (ssize_t)k : NGHTTP2_ERR_WOULDBLOCK;
}

/* A DATA frame of `length` bytes of stream st: its header copied, its payload referenced. */
static int on_send_data(nghttp2_session *h2, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *src, void *ud)
{
    gconn_t *c = ud;
    gstream_t *st = src->ptr;
    gcall_t *k = st->q_head;
    uint32_t pieces = 0;
    (void)h2, (void)frame;
    /* Count the pieces this frame covers, to check there is room for all of them. */
    {
        uint64_t need = length, off = st->q_iov_off;
        for (int i = st->q_iov; need && k && i < k->n_iov; i++, off = 0) {
            uint64_t avail = k->iov[i].iov_len - off;
            need -= need < avail ? need : avail;
            pieces++;
        }
    }
    if (!out_room(c, 9, pieces + 1)) {
        if (!flush(c) || !out_room(c, 9, pieces + 1))
            return NGHTTP2_ERR_WOULDBLOCK;
    }
    out_copy(c, framehd, 9);
    while (length && k) {
        struct iovec *v = &k->iov[st->q_iov];
        uint64_t take = v->iov_len - st->q_iov_off;
        if (take > length)
            take = length;
        seg_push(c, (const uint8_t *)v->iov_base + st->q_iov_off, (uint32_t)take, k);
        st->q_iov_off += take;
        length -= take;
        if (st->q_iov_off == v->iov_len) {
            st->q_iov++;
            st->q_iov_off = 0;
        }
        if (st->q_iov == k->n_iov) { /* the message is out of nghttp2's hands */
            st->q_head = k->qnext;
            if (!st->q_head)
                st->q_tail = NULL;
            st->q_iov = 0;
            st->q_iov_off = 0;
            st->q_off -= k->total;
            k->ready = false;
            k->qnext = NULL;
            call_detach(k);
            call_free_maybe(k, c->g);
            k = st->q_head;
        }
    }
    return 0;
}

/* Percent-encodes msg for grpc-message (RFC 3986 unreserved and most printable ASCII kept). */
static uint32_t pct_encode(const char *msg, char *out, uint32_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    uint32_t n = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && n + 4 < cap; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return n;
}

#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}
#define ACCEPT_ENCODING "identity,deflate,gzip" /* request messages (compress.c) */

static int submit_trailers(gstream_t *st, bool headers_too)
{
    char code[8], msg[3 * sizeof st->message], pushback[16];
    int cl = snprintf(code, sizeof code, "%d", st->status);
    int pl = snprintf(pushback, sizeof pushback, "%d", GRPC_RETRY_MS);
    uint32_t ml = pct_encode(st->message, msg, sizeof msg);
    nghttp2_nv all[6] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16),
                         NV("grpc-status", code, (size_t)cl)};
    size_t n = 3;
    if (ml)
        all[n++] = (nghttp2_nv)NV("grpc-message", msg, ml);
    if (st->retry) /* gRPC's Retry-After (the retry design's server pushback) */
        all[n++] = (nghttp2_nv)NV("grpc-retry-pushback-ms", pushback, (size_t)pl);
    if (headers_too) /* what an UNIMPLEMENTED for an unknown grpc-encoding must say */
        all[n++] = (nghttp2_nv)NV("grpc-accept-encoding", ACCEPT_ENCODING, sizeof ACCEPT_ENCODING - 1);
    st->trailers = true;
    if (headers_too) /* Trailers-Only: one HEADERS frame ends the stream */
        return nghttp2_submit_response(st->c->h2, st->id, all, n, NULL);
    return nghttp2_submit_trailer(st->c->h2, st->id, all + 2, n - 2);
}

static ssize_t on_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    gstream_t *st = src->ptr;
    (void)h2, (void)id, (void)buf, (void)ud;
    /* The read cursor: messages queued after q_head, q_off bytes into the first not yet read. */
    uint64_t before = 0;
    for (gcall_t *k = st->q_head; k; k = k->qnext) {
        if (st->q_off < before + k->total) {
            uint64_t in = st->q_off - before, n = k->total - in;
            if (n > length)
                n = length;
            st->q_off += n;
            *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
            if (in + n == k->total && !k->qnext && st->finishing) {
                *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
                submit_trailers(st, false);
            }
            return (ssize_t)n;
        }
        before += k->total;
    }
    if (st->finishing && !st->trailers) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        submit_trailers(st, false);
        return 0;
    }
    st->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
}

/* ModelStreamInfer: once the client closed its side and every request has its answer queued, the
 * trailers (OK) follow the last answer. */
static void stream_maybe_done(gstream_t *st)
{
    if (st->method != GM_STREAM_INFER || !st->remote_closed || st->finishing || st->trailers || st->closed)
        return;
    for (gcall_t *o = st->calls; o; o = o->next)
        if (!o->ready)
            return;
    if (!st->responded) {
        grpc_finish(st, 0, "");
        return;
    }
    st->finishing = true;
    st->status = 0;
    st->message[0] = '\0';
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(st->c->h2, st->id);
    }
}

void grpc_respond(gcall_t *k)
{
    gstream_t *st = k->st;
    gconn_t *c;
    if (!st || st->closed || st->trailers) {
        grpc_call_free(k);
        return;
    }
    c = st->c;
    k->ready = true;
    k->qnext = NULL;
    if (st->q_tail)
        st->q_tail->qnext = k;
    else
        st->q_head = k;
    st->q_tail = k;
    stream_maybe_done(st);
    if (!st->responded) {
        nghttp2_nv nv[] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16),
                           NV("grpc-accept-encoding", ACCEPT_ENCODING, sizeof ACCEPT_ENCODING - 1)};
        nghttp2_data_provider dp = {.source.ptr = st, .read_callback = on_read};
        st->responded = true;
        nghttp2_submit_response(c->h2, st->id, nv, 3, &dp);
    } else if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(c->h2, st->id);
    }
}

void grpc_finish(gstream_t *st, int code, const char *msg)
{
    if (st->trailers || st->finishing || st->closed)
        return;
    st->status = osv_status_grpc(code);
    st->retry = code && osv_status_retry(code);
    snprintf(st->message, sizeof st->message, "%s", code ? msg : "");
    if (!st->responded) {
        submit_trailers(st, true);
    } else {
        st->finishing = true;
        if (st->deferred) {
            st->deferred = false;
            nghttp2_session_resume_data(st->c->h2, st->id);
        }
    }
}

int grpc_reply_bytes(gcall_t *k, const void *p, size_t n)
{
    uint8_t *m = osv_arena_alloc(&k->arena, n + 5, 8);
    if (!m || n > UINT32_MAX || !(k->iov = osv_arena_alloc(&k->arena, sizeof *k->iov, 8)))
        return osv_err_set(&k->err, OSV_ENOMEM, "out of request memory");
    m[0] = 0;
    m[1] = (uint8_t)(n >> 24);
    m[2] = (uint8_t)(n >> 16);
    m[3] = (uint8_t)(n >> 8);
    m[4] = (uint8_t)n;
    memcpy(m + 5, p, n);
    k->iov[0] = (struct iovec){m, n + 5};
    k->n_iov = 1;
    k->total = n + 5;
    return 0;
}

/* ---- the record -------------------------------------------------------------------------------------------------- */

void grpc_record(gcall_t *k, int code)
{
    gstream_t *st = k->st;
    gconn_t *c = st->c;
    int status = osv_status_grpc(code);
    osv_obs_record_t r = {.shard = osv_loop_index(c->nc.loop),
                          .proto = OSV_OBS_GRPC,
                          .method = grpc_method_name(st->method),
                          .path = st->path,
                          .path_len = st->path_len,
                          .route = st->path,
                          .status = status,
                          .outcome = code ? osv_obs_http_outcome(osv_status_http(code)) : OSV_OUTCOME_SUCCESS,
                          .model = k->model,
                          .counted = k->counted,
                          .ids = &st->ids,
                          .t_start = k->t_start,
                          .bytes_in = k->msg_len + 5,
                          .bytes_out = k->total,
                          .batch = k->batch,
                          .core_copied = k->core_copied,
                          .fallback = k->fallback};
    memcpy(r.ns, k->ns, sizeof r.ns);
    memcpy(r.phase_t0, k->phase_t0, sizeof r.phase_t0);
    memcpy(r.phase_t1, k->phase_t1, sizeof r.phase_t1);
    r.front_copied[OSV_COPY_GRPC_RECEIVE] = k->copied;
    r.front_copied[OSV_COPY_DECOMPRESS] = k->decompressed;
    r.front_copied[OSV_COPY_BATCH] = k->unstaged;
    osv_obs_record(&r);
    k->counted = r.counted;
}

/* ---- headers --------------------------------------------------------------------------------------------------- */

static bool hdr_is(const uint8_t *name, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(name, want, len) == 0;
}

/* grpc-timeout: 1-8 digits and a unit (H, M, S, m, u, n). */
static uint64_t parse_timeout(const uint8_t *v, size_t n)
{
    static const struct {
        char unit;
        uint64_t ns;
    } units[] = {{'H', 3600000000000ull}, {'M', 60000000000ull}, {'S', 1000000000ull},
                 {'m', 1000000ull},       {'u', 1000ull},        {'n', 1}};
    uint64_t x = 0;
    if (n < 2 || n > 9)
        return 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    for (unsigned i = 0; i < sizeof units / sizeof *units; i++)
        if (v[n - 1] == units[i].unit)
            return x > UINT64_MAX / units[i].ns ? UINT64_MAX : (x ? x * units[i].ns : 1);
    return 0;
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    gconn_t *c = ud;
    gstream_t *st;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (c->n_streams >= c->g->o.max_streams || c->goaway) {
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    if ((st = c->free_streams)) {
        c->free_streams = st->next;
        c->n_free_streams--;
        memset(st, 0, sizeof *st);
    } else if (!(st = osv_calloc(1, sizeof *st))) {
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    st->c = c;
    st->id = frame->hd.stream_id;
    st->t_start = osv_now_ns();
    st->next = c->streams;
    c->streams = st;
    c->n_streams++;
    nghttp2_session_set_stream_user_data(h2, st->id, st);
    return 0;
}

static void copy_hdr(char *dst, uint32_t cap, uint32_t *len, const uint8_t *v, size_t n)
{
    *len = (uint32_t)(n < cap - 1 ? n : cap - 1);
    memcpy(dst, v, *len);
    dst[*len] = '\0';
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    gconn_t *c = ud;
    gstream_t *st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    (void)flags;
    if (!st || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* client trailers: nothing in them matters */
    st->hdr_bytes += (uint32_t)(nl + vl + 32);
    if (st->hdr_bytes > c->g->o.max_header_list) {
        st->bad_header = 431;
        return 0;
    }
    if (hdr_is(name, nl, ":method")) {
        st->post = vl == 4 && memcmp(value, "POST", 4) == 0;
    } else if (hdr_is(name, nl, ":path")) {
        copy_hdr(st->path, sizeof st->path, &st->path_len, value, vl);
        st->method = vl < sizeof st->path ? grpc_method_of((const char *)value, vl) : GM_NONE;
    } else if (hdr_is(name, nl, "content-type")) {
        st->grpc_ct = vl >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                      (vl == 16 || value[16] == '+' || value[16] == ';');
    } else if (hdr_is(name, nl, "grpc-encoding")) {
        st->encoding = grpc_encoding_of(value, vl);
    } else if (hdr_is(name, nl, "grpc-timeout")) {
        uint64_t ns = parse_timeout(value, vl);
        if (ns)
            st->deadline = ns > UINT64_MAX - st->t_start ? UINT64_MAX : st->t_start + ns;
    } else if (hdr_is(name, nl, "authorization")) {
        if (c->g->auth)
            st->authorized = osv_auth_check(c->g->auth, (const char *)value, vl, &st->auth_id);
    } else if (hdr_is(name, nl, "traceparent")) {
        copy_hdr(st->traceparent, sizeof st->traceparent, &st->traceparent_len, value, vl);
    } else if (hdr_is(name, nl, "x-request-id")) {
        copy_hdr(st->request_id, sizeof st->request_id, &st->request_id_len, value, vl);
    }
    return 0;
}

/* An HTTP-level refusal (not a gRPC status): wrong method, content-type or an oversized header list. */
static void http_refuse(gstream_t *st, int status)
{
    char s[8];
    int n = snprintf(s, sizeof s, "%d", status);
    nghttp2_nv nv[] = {NV(":status", s, (size_t)n), NV("content-type", "text/plain", 10)};
    st->trailers = true;
    nghttp2_submit_response(st->c->h2, st->id, nv, 2, NULL);
}

/* The request headers are complete: is this a call we serve? */
static void headers_done(gstream_t *st)
{
    osv_grpc_t *g = st->c->g;
    char m[300];
    osv_obs_ids_begin(&st->ids, st->request_id_len ? st->request_id : NULL, st->request_id_len,
                      st->traceparent_len ? st->traceparent : NULL, st->traceparent_len, NULL, 0);
    if (st->bad_header || !st->post || !st->grpc_ct) {
        http_refuse(st, st->bad_header ? st->bad_header : !st->post ? 405 : 415);
        return;
    }
    if (st->method == GM_NONE) {
        snprintf(m, sizeof m, "unknown method '%.*s'", (int)(st->path_len > 200 ? 200 : st->path_len), st->path);
        grpc_finish(st, OSV_ENOTIMPL, m);
        return;
    }
    if (st->encoding == OSV_ENC_UNSUPPORTED) {
        grpc_finish(st, OSV_ENOTIMPL, "this grpc-encoding is not supported: identity, gzip or deflate "
                    "(grpc-accept-encoding)");
        return;
    }
    if (g->auth && grpc_method_needs_auth(st->method) && !st->authorized) {
        grpc_finish(st, OSV_EAUTH, "this method needs 'authorization: Bearer <token>' metadata with a valid token");
        return;
    }
    st->watch = st->method == GM_HEALTH_WATCH;
}

/* ---- messages ----------------------------------------------------------------------------------------------- */

/* The call for a message that starts on st. Over --grpc-max-inflight, a ModelStreamInfer request gets a
 * refusal — a call that only answers UNAVAILABLE for that request, the stream going on — while a unary
 * call (or a stream beyond REFUSALS_MAX refusals) gets NULL and err: the stream ends with it. */
static gcall_t *new_call(gstream_t *st, osv_err_t *err)
{
    gcall_t *k = grpc_call_new(st, false, err);
    osv_err_t why;
    if (k || st->method != GM_STREAM_INFER || err->code != OSV_EBUSY)
        return k;
    why = *err;
    if (!(k = grpc_call_new(st, true, err)))
        return NULL;
    k->rc = why.code;
    k->err = why;
    return k;
}

/* A message of len bytes starts on st. */
static void message_begin(gstream_t *st, uint8_t flag, uint64_t len)
{
    osv_grpc_t *g = st->c->g;
    osv_err_t err;
    gcall_t *k;
    bool infer = st->method == GM_INFER || st->method == GM_STREAM_INFER;
    bool split = infer && flag == 0; /* a compressed message is received as it is, then inflated */
    st->n_msgs++;
    if (flag > 1) {
        grpc_finish(st, OSV_EPROTO, "the message's compressed flag must be 0 or 1");
        st->rx = RX_DISCARD;
        return;
    }
    if (flag == 1 && st->encoding == OSV_ENC_IDENTITY) {
        grpc_finish(st, OSV_EPROTO, "a compressed message without grpc-encoding (gzip or deflate)");
        st->rx = RX_DISCARD;
        return;
    }
    if (len > g->o.max_message_bytes) {
        snprintf(err.msg, sizeof err.msg,
                 "message of %" PRIu64 " bytes exceeds the limit of %" PRIu64 " (--grpc-max-message-bytes)", len,
                 g->o.max_message_bytes);
        grpc_finish(st, OSV_ETOOBIG, err.msg);
        st->rx = RX_DISCARD;
        return;
    }
    if (grpc_method_unary(st->method) && st->n_msgs > 1) {
        grpc_finish(st, OSV_EPROTO, "a unary method got more than one request message");
        st->rx = RX_DISCARD;
        return;
    }
    if (!(k = new_call(st, &err))) {
        grpc_finish(st, err.code, err.msg);
        st->rx = RX_DISCARD;
        return;
    }
    k->msg_len = len;
    k->compressed = flag == 1;
    uint64_t cap = split ? len + OSV_GW_RAW_SLACK : len;
    if (k->rc) {
        /* refused: the message is read past, not kept */
    } else if (cap && osv_pool_acquire(g->pool, (cap + 63) & ~63ull, &k->slot) != 0) {
        osv_err_set(&k->err, OSV_EBUSY, "no memory for a %" PRIu64 "-byte message, retry in %d ms", len,
                    GRPC_RETRY_MS);
        k->rc = OSV_EBUSY;
    } else if (split) {
        if (!(k->split = osv_arena_alloc(&k->arena, sizeof *k->split, 64))) {
            k->rc = osv_err_set(&k->err, OSV_ENOMEM, "out of request memory");
        } else {
            osv_gw_split_init(k->split, k->slot.base, (cap + 63) & ~63ull, len);
            k->split->raw_place = grpc_infer_raw_place; /* raw payloads into a forming batch's rows */
            k->split->raw_ud = k;
        }
    } else {
        k->buf = (uint8_t *)k->slot.base;
    }
    if (k->rc && split && (k->scan = osv_arena_alloc(&k->arena, sizeof *k->scan, 8)))
        osv_gw_idscan_init(k->scan); /* its answer names the request */
    st->cur = k;
    st->rx = RX_BODY;
    if (len == 0) {
        st->cur = NULL;
        st->rx = RX_PREFIX;
        grpc_dispatch(k);
    }
}

static void message_bytes(gstream_t *st, const uint8_t *p, size_t n)
{
    gcall_t *k = st->cur;
    if (!k->rc) {
        uint64_t in_place = 0;
        if (k->split) {
            if (osv_gw_split_raw_next(k->split, &in_place) != p) /* read there by front_drive: no copy */
                in_place = 0;
            k->rc = osv_gw_split_feed(k->split, p, n, &k->err);
        } else {
            memcpy(k->buf + k->got, p, n);
        }
        k->copied += in_place ? 0 : n;
    } else if (k->scan) {
        osv_gw_idscan_feed(k->scan, p, n);
    }
    k->got += n;
    if (k->got == k->msg_len) {
        if (!k->rc && k->split)
            k->rc = osv_gw_split_end(k->split, &k->err);
        st->cur = NULL;
        st->rx = RX_PREFIX;
        grpc_dispatch(k);
    }
}

/* The frame nghttp2 begins to read: an unpadded DATA frame's payload may be read straight into its place
 * (direct_place). */
static int on_begin_frame(nghttp2_session *h2, const nghttp2_frame_hd *hd, void *ud)
{
    gconn_t *c = ud;
    (void)h2;
    bool data = hd->type == NGHTTP2_DATA && !(hd->flags & NGHTTP2_FLAG_PADDED);
    c->rx_sid = data ? hd->stream_id : 0;
    c->rx_left = data ? (uint32_t)hd->length : 0;
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    gstream_t *st = nghttp2_session_get_stream_user_data(h2, id);
    gconn_t *c = ud;
    (void)flags;
    if (id == c->rx_sid)
        c->rx_left -= len < c->rx_left ? (uint32_t)len : c->rx_left;
    if (!st || st->trailers || st->finishing) /* answered already: the rest is ignored */
        return 0;
    while (len) {
        switch (st->rx) {
        case RX_PREFIX: {
            size_t k = 5 - st->prefix_n < len ? 5 - st->prefix_n : len;
            memcpy(st->prefix + st->prefix_n, data, k);
            st->prefix_n += (uint32_t)k;
            data += k, len -= k;
            if (st->prefix_n == 5) {
                uint64_t l = (uint64_t)st->prefix[1] << 24 | (uint64_t)st->prefix[2] << 16 |
                             (uint64_t)st->prefix[3] << 8 | st->prefix[4];
                st->prefix_n = 0;
                message_begin(st, st->prefix[0], l);
                if (st->trailers || st->finishing)
                    return 0;
            }
            break;
        }
        case RX_BODY: {
            uint64_t left = st->cur->msg_len - st->cur->got;
            size_t k = left < len ? (size_t)left : len;
            message_bytes(st, data, k);
            data += k, len -= k;
            break;
        }
        case RX_DISCARD: {
            size_t k = st->discard < len ? (size_t)st->discard : len;
            st->discard -= k;
            data += k, len -= k;
            if (!st->discard)
                st->rx = RX_PREFIX;
            if (!k)
                return 0;
            break;
        }
        }
    }
    return 0;
}

/* The client half-closed st. */
static void remote_closed(gstream_t *st)
{
    st->remote_closed = true;
    if (st->trailers || st->finishing)
        return;
    if (st->rx != RX_PREFIX || st->prefix_n) {
        grpc_finish(st, OSV_EPROTO, "the request ended inside a message (truncated message)");
        return;
    }
    if (grpc_method_unary(st->method) && st->n_msgs == 0) {
        grpc_finish(st, OSV_EPROTO, "the request has no message");
        return;
    }
    stream_maybe_done(st);
}

/* A control frame spends a token; none left: GOAWAY (ENHANCE_YOUR_CALM). */
static bool spend_token(gconn_t *c)
{
    uint64_t now = now_of(c);
    double rate = c->g->o.frame_rate_limit, burst = 2.0 * rate;
    if (!rate)
        return true;
    c->tokens += (double)(now - c->tokens_at) / 1e9 * rate;
    if (c->tokens > burst)
        c->tokens = burst;
    c->tokens_at = now;
    if (c->tokens < 1.0) {
        if (!c->goaway) {
            osv_log(OSV_LOG_WARN, "grpc_flood", "\"connection\":%" PRIu64 ",\"message\":\"more than %u control "
                    "frames a second: GOAWAY\"", c->nc.id, c->g->o.frame_rate_limit);
            nghttp2_session_terminate_session(c->h2, NGHTTP2_ENHANCE_YOUR_CALM);
            c->goaway = true;
        }
        return false;
    }
    c->tokens -= 1.0;
    return true;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    gconn_t *c = ud;
    gstream_t *st = frame->hd.stream_id ? nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id) : NULL;
    c->last_recv = now_of(c);
    c->ping_sent_at = 0;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (st && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
            headers_done(st);
        break;
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            spend_token(c);
        break;
    case NGHTTP2_PING:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            spend_token(c);
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            spend_token(c);
        break;
    case NGHTTP2_PRIORITY:
    case NGHTTP2_RST_STREAM: /* rapid reset; nghttp2's own rate limit applies too */
        spend_token(c);
        break;
    default:
        break;
    }
    if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS))
        remote_closed(st);
    return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    gstream_t *st;
    (void)ud;
    /* Our answer ended the stream while the client still sends: reset it (as gRPC servers do) so
     * what it sends is not read for nothing. */
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id)) && !st->remote_closed)
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t code, void *ud)
{
    gstream_t *st = nghttp2_session_get_stream_user_data(h2, id);
    (void)code, (void)ud;
    if (st) {
        nghttp2_session_set_stream_user_data(h2, id, NULL);
        stream_gone(st);
    }
    return 0;
}

int osv_grpc_callbacks(osv_grpc_t *g, osv_err_t *err)
{
    if (nghttp2_session_callbacks_new(&g->cbs) != 0 || nghttp2_option_new(&g->opt) != 0)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    nghttp2_session_callbacks_set_send_callback(g->cbs, on_send);
    nghttp2_session_callbacks_set_send_data_callback(g->cbs, on_send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(g->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(g->cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(g->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(g->cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g->cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_begin_frame_callback(g->cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(g->cbs, on_stream_close);
    /* Flood mitigations of nghttp2 itself, on top of the token bucket above. */
    nghttp2_option_set_max_outbound_ack(g->opt, 100);
    nghttp2_option_set_max_settings(g->opt, 32);
    nghttp2_option_set_stream_reset_rate_limit(g->opt, 2ull * g->o.frame_rate_limit, g->o.frame_rate_limit);
    nghttp2_option_set_max_continuations(g->opt, 8);
    nghttp2_option_set_no_closed_streams(g->opt, 1);
    nghttp2_option_set_max_send_header_block_length(g->opt, 64u << 10);
    return 0;
}

/* ---- driving a connection ------------------------------------------------------------------------------------ */

static void conn_close(gconn_t *c)
{
    osv_nconn_close(&c->nc);
}

/* HTTP/1.x on the gRPC port: one answer that says where HTTP/1.1 is, then a lingering close. */
static void refuse_http1(gconn_t *c)
{
    static const char body[] = "this port serves gRPC (HTTP/2 with prior knowledge); HTTP/1.1 is served on --port\n";
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     sizeof body - 1);
    struct iovec v[2] = {{head, (size_t)n}, {(void *)body, sizeof body - 1}};
    ssize_t w = writev(c->nc.fd, v, 2);
    (void)w;
    c->dying = true;
    c->nc.len = c->nc.pos = 0;
    osv_nconn_linger(&c->nc);
}

/* Checks the first bytes are HTTP/2's client preface; false when the connection was answered. */
static bool check_preface(gconn_t *c)
{
    size_t have = c->nc.len - c->nc.pos, n = have < sizeof preface - 1 ? have : sizeof preface - 1;
    if (c->preface_checked)
        return true;
    if (memcmp(c->nc.buf + c->nc.pos, preface, n) != 0) {
        const char *b = c->nc.buf + c->nc.pos;
        bool http1 = have >= 4 && (memcmp(b, "GET ", 4) == 0 || memcmp(b, "POST", 4) == 0 ||
                                   memcmp(b, "PUT ", 4) == 0 || memcmp(b, "HEAD", 4) == 0 ||
                                   memcmp(b, "DELE", 4) == 0 || memcmp(b, "OPTI", 4) == 0 ||
                                   memcmp(b, "PATC", 4) == 0);
        if (http1) {
            refuse_http1(c);
            return false;
        }
        return true; /* not HTTP at all: nghttp2 refuses the preface below (GOAWAY) */
    }
    c->preface_checked = n == sizeof preface - 1;
    return true;
}

void grpc_conn_kick(gconn_t *c)
{
    if (!c->preface_checked) /* nothing is sent before the client's preface (HTTP/1.1 gets its answer) */
        return;
    for (int i = 0; i < 64 && !c->dying; i++) {
        if (!flush(c))
            break;
        if (!nghttp2_session_want_write(c->h2))
            break;
        if (nghttp2_session_send(c->h2) != 0) {
            c->dying = true;
            break;
        }
    }
}

/* The nearest of: a stream's deadline (calls not held by a worker), idle, keepalive, stall. */
void grpc_conn_rearm(gconn_t *c)
{
    const osv_grpc_opts_t *o = &c->g->o;
    uint64_t now = now_of(c), at = UINT64_MAX;
    if (c->nc.closed || c->nc.lingering)
        return;
    for (gstream_t *st = c->streams; st; st = st->next)
        if (st->deadline && !st->trailers && !st->finishing && !st->closed && st->deadline < at)
            at = st->deadline;
    if (c->n_streams == 0 && o->idle_timeout_ms > 0) {
        uint64_t t = c->last_recv + (uint64_t)o->idle_timeout_ms * MS;
        at = t < at ? t : at;
    }
    if (o->keepalive_ms > 0) {
        uint64_t t = c->ping_sent_at ? c->ping_sent_at + (uint64_t)o->keepalive_ms * MS
                                     : c->last_recv + (uint64_t)o->keepalive_ms * MS;
        at = t < at ? t : at;
    }
    if (c->n_seg && o->stall_timeout_ms > 0) {
        uint64_t t = c->last_progress + (uint64_t)o->stall_timeout_ms * MS;
        at = t < at ? t : at;
    }
    osv_nconn_set_timer(&c->nc, at == UINT64_MAX ? 0 : at > now ? at - now : 1);
}

/* Closes the connection when it is finished: dead, or GOAWAY sent and nothing left to do. */
static bool maybe_close(gconn_t *c)
{
    if (c->nc.closed || c->nc.lingering)
        return true;
    if (osv_net_stopping(c->g->net) && c->n_streams == 0 && !c->n_seg && !c->n_held) {
        conn_close(c);
        return true;
    }
    if (c->dying || (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) && !c->n_seg)) {
        if (c->n_held) /* a worker holds a call: close once it is back (stream_gone canceled it) */
            return false;
        conn_close(c);
        return true;
    }
    return false;
}

bool grpc_call_back(gcall_t *k)
{
    gstream_t *st = k->st;
    gconn_t *c = st->c;
    k->held = false;
    c->n_held--;
    if (!st->closed)
        return true;
    call_detach(k);
    call_free_maybe(k, c->g);
    if (!st->calls)
        stream_free(st);
    grpc_conn_settle(c);
    return false;
}

void grpc_conn_settle(gconn_t *c)
{
    grpc_conn_kick(c);
    if (!maybe_close(c))
        grpc_conn_rearm(c);
}

/* Draining: no new streams (GOAWAY), and Watch streams hear NOT_SERVING and end. */
static void drain_begin(gconn_t *c)
{
    if (!osv_net_stopping(c->g->net) || c->goaway)
        return;
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    c->goaway = true;
    grpc_watch_drain(c);
}

/* Hands `len` bytes to nghttp2; false when the connection is done for (a protocol error: GOAWAY). */
static bool feed(gconn_t *c, const uint8_t *p, size_t len)
{
    ssize_t used = nghttp2_session_mem_recv(c->h2, p, len);
    if (used < 0) {
        osv_log(OSV_LOG_DEBUG, "grpc_protocol_error", "\"connection\":%" PRIu64 ",\"error\":\"%s\"",
                c->nc.id, nghttp2_strerror((int)used));
        nghttp2_session_terminate_session(c->h2, used == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM
                                                                             : NGHTTP2_PROTOCOL_ERROR);
        grpc_conn_kick(c);
        c->dying = true;
        return false;
    }
    grpc_conn_kick(c);
    return true;
}

/* This loop thread's scratch (GRPC_SCRATCH bytes), or NULL when it cannot have one. */
static uint8_t *loop_scratch(gconn_t *c)
{
    osv_grpc_t *g = c->g;
    int i = osv_loop_index(c->nc.loop);
    if (i < 0 || i >= g->n_scratch)
        return NULL;
    if (!g->scratch[i])
        g->scratch[i] = osv_malloc(GRPC_SCRATCH); /* NULL: reads stay within the buffer */
    return g->scratch[i];
}

/* Where the next bytes from the socket belong when nghttp2 is inside an unpadded DATA frame whose payload,
 * from here, is the rest of a raw_input_contents payload of a request being received: that payload's
 * place (its slot, or its rows of a forming batch), *len = as many bytes as are the frame's and the
 * payload's both. They are read there, then fed to nghttp2 from there, and the splitter finds them in
 * place: the tensor is received with no copy. NULL when the next bytes are anything else. */
static uint8_t *direct_place(gconn_t *c, size_t *len)
{
    gstream_t *st;
    uint64_t n;
    uint8_t *p;
    *len = 0;
    if (!c->rx_left || !(st = nghttp2_session_get_stream_user_data(c->h2, c->rx_sid)) || st->rx != RX_BODY ||
        st->trailers || st->finishing || !st->cur || st->cur->rc || !st->cur->split ||
        !(p = osv_gw_split_raw_next(st->cur->split, &n)))
        return NULL;
    *len = n < c->rx_left ? (size_t)n : c->rx_left;
    return p;
}

static void front_drive(osv_nconn_t *n)
{
    gconn_t *c = (gconn_t *)n;
    if (c->nc.lingering || c->nc.closed)
        return;
    drain_begin(c);
    bool wide = false;
    for (int rounds = 0; rounds < 64 && !c->dying && n->readable; rounds++) { /* (a write event reads nothing) */
        /* Inside a tensor's payload a read starts where the payload goes. Once a read has filled the
         * buffer, the next go on into the loop's scratch (a backlog of small messages in few reads); the
         * first read of a drive does not: it takes a large message's head, and the next one the rest of
         * its payload in place rather than 256 KB of it into the scratch, to be copied. */
        uint8_t *scratch = wide && c->preface_checked ? loop_scratch(c) : NULL, *place = NULL;
        size_t extra = 0, want = 0, direct = 0;
        if (c->preface_checked)
            place = direct_place(c, &want);
        int r = osv_nconn_read_into(n, place, want, &direct, scratch, scratch ? GRPC_SCRATCH : 0, &extra);
        wide = n->len == n->cap;
        if (direct && !feed(c, place, direct))
            break;
        if (n->len > n->pos) {
            if (!check_preface(c))
                return;
            bool ok = feed(c, (const uint8_t *)n->buf + n->pos, n->len - n->pos);
            n->pos = n->len = 0;
            if (!ok)
                break;
        }
        if (extra && !feed(c, scratch, extra))
            break;
        if (r <= 0)
            break;
    }
    if (n->peer_closed)
        c->dying = true;
    grpc_conn_kick(c);
    if (maybe_close(c))
        return;
    if (!c->n_streams && !c->n_seg && n->buf && n->len == 0)
        osv_nconn_drop_buf(n); /* idle connections hold no read buffer */
    grpc_conn_rearm(c);
}

static void front_timeout(osv_nconn_t *n)
{
    gconn_t *c = (gconn_t *)n;
    const osv_grpc_opts_t *o = &c->g->o;
    uint64_t now = now_of(c);
    for (gstream_t *st = c->streams, *nx; st; st = nx) {
        nx = st->next;
        if (st->deadline && st->deadline <= now && !st->trailers && !st->finishing && !st->closed) {
            bool held = false;
            for (gcall_t *k = st->calls; k; k = k->next)
                held |= k->held;
            if (!held) /* a held call ends by the watchdog at its own deadline */
                grpc_finish(st, OSV_ETIMEDOUT, "deadline exceeded (grpc-timeout) before the call finished");
        }
    }
    if (c->n_streams == 0 && o->idle_timeout_ms > 0 && now >= c->last_recv + (uint64_t)o->idle_timeout_ms * MS) {
        osv_obs_note(OSV_OBS_TIMEOUT_IDLE);
        nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
        grpc_conn_kick(c);
        c->dying = true;
    } else if (o->keepalive_ms > 0) {
        if (c->ping_sent_at && now >= c->ping_sent_at + (uint64_t)o->keepalive_ms * MS) {
            c->dying = true; /* no answer to our PING */
        } else if (!c->ping_sent_at && now >= c->last_recv + (uint64_t)o->keepalive_ms * MS) {
            nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
            c->ping_sent_at = now;
        }
    }
    if (c->n_seg && o->stall_timeout_ms > 0 && now >= c->last_progress + (uint64_t)o->stall_timeout_ms * MS) {
        osv_obs_note(OSV_OBS_TIMEOUT_WRITE);
        c->dying = true; /* the client stopped reading (a zero window) */
    }
    grpc_conn_kick(c);
    if (!maybe_close(c))
        grpc_conn_rearm(c);
}

static void front_open(osv_nconn_t *n)
{
    gconn_t *c = (gconn_t *)n;
    osv_grpc_t *g = n->front->ud;
    nghttp2_mem mem = {.mem_user_data = c, .malloc = h2_malloc, .free = h2_free, .calloc = h2_calloc,
                       .realloc = h2_realloc};
    nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, g->o.max_streams},
                                    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, g->o.stream_window},
                                    {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, g->o.max_frame},
                                    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, g->o.max_header_list}};
    c->g = g;
    c->last_recv = c->last_progress = c->tokens_at = osv_loop_now(n->loop);
    c->tokens = 2.0 * g->o.frame_rate_limit;
    c->out_cap = OUT_CAP;
    c->seg_cap = SEG_CAP;
    if (!(c->out = osv_malloc(OUT_CAP)) || !(c->seg = osv_malloc(SEG_CAP * sizeof *c->seg)) ||
        nghttp2_session_server_new3(&c->h2, g->cbs, c, g->opt, &mem) != 0 ||
        nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, set, sizeof set / sizeof *set) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)g->o.conn_window) != 0) {
        c->dying = true;
        return;
    }
    grpc_conn_rearm(c);
}

static void front_release(osv_nconn_t *n)
{
    gconn_t *c = (gconn_t *)n;
    osv_grpc_t *g = c->g;
    if (!g)
        return;
    /* Output first: it may reference calls. */
    for (uint32_t i = 0; i < c->n_seg; i++) {
        struct gseg *s = &c->seg[c->seg_head + i];
        if (s->owner && --s->owner->segs == 0)
            call_free_maybe(s->owner, g);
    }
    c->n_seg = 0;
    while (c->streams) {
        gstream_t *st = c->streams;
        for (gcall_t *k = st->calls; k; k = k->next)
            k->held = false; /* only at shutdown, after the workers stopped (busy() kept it open before) */
        stream_gone(st);
    }
    if (c->h2)
        nghttp2_session_del(c->h2);
    h2_cache_drop(c);
    while (c->free_calls) {
        gcall_t *k = c->free_calls;
        c->free_calls = k->next;
        osv_arena_free(&k->arena);
        osv_free(k);
    }
    while (c->free_streams) {
        gstream_t *st = c->free_streams;
        c->free_streams = st->next;
        osv_free(st);
    }
    osv_free(c->out);
    osv_free(c->seg);
    memset((char *)c + sizeof c->nc, 0, sizeof *c - sizeof c->nc);
}

/* The drain began (net asks idle() next): say so before the connection may be closed. */
static void front_drain(osv_nconn_t *n)
{
    gconn_t *c = (gconn_t *)n;
    if (!c->g || !c->h2 || c->nc.closed || c->nc.lingering)
        return;
    drain_begin(c);
    grpc_conn_kick(c);
}

static bool front_idle(const osv_nconn_t *n)
{
    const gconn_t *c = (const gconn_t *)n;
    uint32_t watch = 0;
    for (const gstream_t *st = c->streams; st; st = st->next)
        watch += st->watch;
    return c->n_streams == watch && c->n_held == 0;
}

static bool front_busy(const osv_nconn_t *n)
{
    return ((const gconn_t *)n)->n_held > 0;
}

void osv_grpc_front_init(osv_grpc_t *g)
{
    g->front = (osv_front_t){.name = "grpc",
                             .conn_size = sizeof(gconn_t),
                             .ud = g,
                             .retry_after_s = 1,
                             .open = front_open,
                             .drive = front_drive,
                             .timeout = front_timeout,
                             .drain = front_drain,
                             .release = front_release,
                             .idle = front_idle,
                             .busy = front_busy};
}
