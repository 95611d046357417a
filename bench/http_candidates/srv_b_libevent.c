/* Candidate B: libevent 2.1 evhttp (Debian libevent-dev).
 *
 * One event_base + evhttp per thread, each accepting on its own SO_REUSEPORT
 * listener. evhttp reads the whole body into the request's input evbuffer
 * before calling us; we then copy it out into the pool slot.
 */
#include "common.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

struct worker {
    int lfd;
    struct event_base *base;
    struct evhttp *http;
    struct evbuffer *out;
};

static void reply(struct worker *w, struct evhttp_request *req, int code, const char *reason,
                  const char *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", JSON_CT);
    evbuffer_add_reference(w->out, body, strlen(body), NULL, NULL); /* no copy of the canned body */
    evhttp_send_reply(req, code, reason, w->out);
}

static void on_infer(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        reply(w, req, 404, "Not Found", NOTFOUND_BODY);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > SLOT_SIZE) {
        reply(w, req, 413, "Payload Too Large", TOOBIG_BODY);
        return;
    }
    struct slot *s = slot_acquire();
    if (s == NULL) {
        reply(w, req, 503, "Service Unavailable", BUSY_BODY);
        return;
    }
    /* copy #2 (at least): evbuffer chains -> slot */
    s->len = (size_t)evbuffer_remove(in, s->mem, len);
    stat_add(&stat_body_copied, s->len);
    stat_add(&stat_requests, 1);
    int ok = body_ok(s->mem, s->len);
    slot_release(s);
    if (ok)
        reply(w, req, 200, "OK", RESP_BODY);
    else
        reply(w, req, 400, "Bad Request", BADREQ_BODY);
}

static void on_other(struct evhttp_request *req, void *arg)
{
    reply(arg, req, 404, "Not Found", NOTFOUND_BODY);
}

static void *run(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

int main(int argc, char **argv)
{
    struct opts o = parse_opts(argc, argv);
    sigset_t set;
    block_signals(&set);

    static struct worker ws[64];
    static pthread_t th[64];
    for (int i = 0; i < o.threads; i++) {
        struct worker *w = &ws[i];
        w->lfd = make_listener(o.port, 1);
        w->base = event_base_new();
        w->http = evhttp_new(w->base);
        w->out = evbuffer_new();
        if (w->base == NULL || w->http == NULL || w->out == NULL) {
            fprintf(stderr, "libevent init failed\n");
            return 1;
        }
        evhttp_set_max_body_size(w->http, SLOT_SIZE);
        evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
        evhttp_set_timeout(w->http, 60);
        evhttp_set_cb(w->http, INFER_PATH, on_infer, w);
        evhttp_set_gencb(w->http, on_other, w);
        if (evhttp_accept_socket(w->http, w->lfd) != 0) {
            fprintf(stderr, "evhttp_accept_socket failed\n");
            return 1;
        }
    }
    for (int i = 0; i < o.threads; i++)
        if (pthread_create(&th[i], NULL, run, &ws[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    fprintf(stderr, "srv_b_libevent %s: 127.0.0.1:%d threads=%d\n", event_get_version(), o.port, o.threads);
    wait_for_signal(&set);
    stats_print("srv_b_libevent");
    return 0;
}
