/* health.c — grpc.health.v1.Health: Check answers a status, Watch answers it and then pushes every change
 * until the client or the drain ends the stream.
 *
 * Services: "" and "inference.GRPCInferenceService" are the server (SERVING when ServerReady would say
 * ready), any other name is a model of the repository (SERVING while a version of it serves, NOT_SERVING
 * when it is known but not loaded). A name neither is unknown: Check answers NOT_FOUND, Watch
 * SERVICE_UNKNOWN (and goes on watching: the model may appear), as the protocol says. While the server
 * drains, everything is NOT_SERVING.
 *
 * Pushing. What changes a status happens on other threads (a load on the control thread, an unload on
 * a loop, the drain), so the front keeps, per loop, the Watch streams of that loop's connections and a
 * post: osv_grpc_health_changed, from any thread, posts it to every loop that has watchers, and the loop
 * evaluates its watchers and sends each stream whose status differs from the last one it was told. A
 * stream has at most one status message not yet handed to the HTTP/2 library: a newer status rewrites
 * that message in place, so a client that does not read holds a bounded amount of memory however often
 * the status flaps. The drain (front_drain, net's callback) tells every watcher NOT_SERVING and then ends
 * its stream with UNAVAILABLE, before the connection goes. */
#include <stdio.h>
#include <string.h>

#include "grpc/grpc_internal.h"
#include "health.pb-c.h"

enum {
    H_SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
    H_NOT_SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
    H_UNKNOWN = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
};

#define HEALTH_MSG 7 /* prefix (5) + HealthCheckResponse {status: varint < 128} (2) */

/* The status of service[0..n) now. Any thread. */
static int status_of(osv_grpc_t *g, const char *service, size_t n)
{
    static const char server[] = "inference.GRPCInferenceService";
    osv_model_t *m = NULL;
    osv_err_t err;
    if (osv_net_stopping(g->net))
        return H_NOT_SERVING;
    if (n == 0 || (n == sizeof server - 1 && memcmp(service, server, n) == 0))
        return osv_repo_ready(g->repo) ? H_SERVING : H_NOT_SERVING;
    if (!osv_model_name_valid(service, n))
        return H_UNKNOWN;
    int rc = osv_repo_acquire(g->repo, service, n, -1, &m, &err);
    if (m)
        osv_model_release(m);
    return rc == 0 ? H_SERVING : rc == OSV_ENOTFOUND ? H_UNKNOWN : H_NOT_SERVING;
}

/* A HealthCheckResponse of status as k's response (in its arena). */
static int health_message(gcall_t *k, int status)
{
    uint8_t m[HEALTH_MSG] = {0, 0, 0, 0, 2, 0x08, (uint8_t)status}; /* field 1, varint */
    if (grpc_reply_bytes(k, m + 5, 2) != 0)
        return -1;
    k->watch_status = (uint8_t *)k->iov[0].iov_base + HEALTH_MSG - 1;
    return 0;
}

/* ---- the watchers of a loop ------------------------------------------------------------------------------ */

static gwatch_loop_t *watch_loop(const gconn_t *c)
{
    return &c->g->watch[osv_loop_index(c->nc.loop)];
}

static void watch_add(gstream_t *st)
{
    gwatch_loop_t *wl = watch_loop(st->c);
    atomic_store_explicit(&wl->loop, st->c->nc.loop, memory_order_release);
    st->wprev = NULL;
    st->wnext = wl->streams;
    if (wl->streams)
        wl->streams->wprev = st;
    wl->streams = st;
    st->watch = true;
}

void grpc_watch_drop(gstream_t *st)
{
    gwatch_loop_t *wl;
    if (!st->watch)
        return;
    wl = watch_loop(st->c);
    if (st->wprev)
        st->wprev->wnext = st->wnext;
    else
        wl->streams = st->wnext;
    if (st->wnext)
        st->wnext->wprev = st->wprev;
    st->wnext = st->wprev = NULL;
    st->watch = false;
}

/* Tells st its status when it changed: rewrites the message still waiting in its queue, or queues a new
 * one. Loop thread. */
static void watch_push(gstream_t *st, int status)
{
    gcall_t *t = st->q_tail, *k;
    osv_err_t err;
    if (status == st->watch_sent || st->closed || st->trailers || st->finishing)
        return;
    /* The tail's bytes are untouched by nghttp2 unless it is also the head and some were handed out. */
    if (t && t->watch_status && (t != st->q_head || st->q_off == 0)) {
        *t->watch_status = (uint8_t)status;
        st->watch_sent = status;
        return;
    }
    if (!(k = grpc_call_new(st, false, &err)) && !(k = grpc_call_new(st, true, &err)))
        return; /* no room for it now: the next change (or the drain) tells it */
    if (health_message(k, status) != 0) {
        grpc_call_free(k);
        return;
    }
    st->watch_sent = status;
    grpc_respond(k);
}

/* The post: every watcher of this loop gets its status, then each connection concerned sends. Sending
 * may close a connection (and drop its watchers from the list), so the list is walked again from its head
 * for each connection still to send; each round clears one connection's flag. Loop thread. */
static void watch_posted(osv_post_t *p)
{
    gwatch_loop_t *wl = (gwatch_loop_t *)((char *)p - offsetof(gwatch_loop_t, post));
    uint32_t n = 0;
    atomic_store_explicit(&wl->pending, false, memory_order_release);
    for (gstream_t *st = wl->streams; st; st = st->wnext, n++) {
        watch_push(st, status_of(st->c->g, st->service, st->service_len));
        st->c->watch_kick = true;
    }
    for (uint32_t round = 0; round <= n; round++) {
        gstream_t *st = wl->streams;
        while (st && !st->c->watch_kick)
            st = st->wnext;
        if (!st)
            break;
        st->c->watch_kick = false;
        grpc_conn_settle(st->c);
    }
}

void osv_grpc_health_changed(osv_grpc_t *g)
{
    for (int i = 0; g && i < g->n_watch; i++) {
        gwatch_loop_t *wl = &g->watch[i];
        osv_loop_t *l = atomic_load_explicit(&wl->loop, memory_order_acquire);
        if (l && !atomic_exchange_explicit(&wl->pending, true, memory_order_acq_rel))
            osv_loop_post(l, &wl->post);
    }
}

int grpc_health_init(osv_grpc_t *g, osv_err_t *err)
{
    g->n_watch = osv_net_loop_count(g->net);
    if (!(g->watch = osv_calloc((size_t)(g->n_watch > 0 ? g->n_watch : 1), sizeof *g->watch)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    for (int i = 0; i < g->n_watch; i++)
        g->watch[i].post.fn = watch_posted;
    return 0;
}

/* The drain began: every watcher hears NOT_SERVING, then its stream ends. Loop thread. */
void grpc_watch_drain(gconn_t *c)
{
    for (gstream_t *st = c->streams; st; st = st->next) {
        if (!st->watch)
            continue;
        watch_push(st, H_NOT_SERVING);
        grpc_watch_drop(st);
        grpc_finish(st, OSV_EUNAVAIL, "the server is shutting down");
    }
}

/* ---- the methods ------------------------------------------------------------------------------------------ */

void grpc_health(gcall_t *k)
{
    gstream_t *st = k->st;
    Grpc__Health__V1__HealthCheckRequest *q = grpc_unpack(k, &grpc__health__v1__health_check_request__descriptor);
    size_t n;
    int status;
    if (!q)
        return grpc_fail(k, OSV_EPARSE);
    n = strlen(q->service);
    status = status_of(st->c->g, q->service, n);
    if (st->method == GM_HEALTH_CHECK && status == H_UNKNOWN)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOTFOUND, "unknown service '%.128s': \"\", "
                                        "\"inference.GRPCInferenceService\" or a model's name", q->service));
    if (health_message(k, status) != 0)
        return grpc_fail(k, osv_err_set(&k->err, OSV_ENOMEM, "out of request memory"));
    grpc_record(k, 0);
    if (st->method == GM_HEALTH_CHECK) {
        grpc_respond(k);
        grpc_finish(st, 0, "");
        return;
    }
    if (osv_net_stopping(st->c->g->net)) { /* draining already: tell, and end */
        grpc_respond(k);
        grpc_finish(st, OSV_EUNAVAIL, "the server is shutting down");
        return;
    }
    /* No model has a name this long: such a service stays unknown (a name with '/' in it never matches). */
    st->service_len = n < sizeof st->service ? (uint32_t)n : 1;
    memcpy(st->service, n < sizeof st->service ? q->service : "/", st->service_len);
    st->watch_sent = status;
    watch_add(st);
    grpc_respond(k);
}
