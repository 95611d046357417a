/* Candidate C: h2o 2.2.5, evloop flavour (Debian libh2o-evloop-dev).
 *
 * One h2o_context_t + evloop per thread sharing a read-only h2o_globalconf_t,
 * each accepting on its own SO_REUSEPORT listener (this is how the h2o server
 * itself runs). In 2.2.x the HTTP/1 layer waits until the whole body is in the
 * socket's input h2o_buffer_t and hands it to the handler as req->entity;
 * we then copy it into the pool slot.
 */
#include "common.h"

#include <h2o.h>

static h2o_globalconf_t config;

struct worker {
    int lfd;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
};

static void send_canned(h2o_req_t *req, int status, const char *reason, const char *body)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_iovec_t buf = h2o_iovec_init(body, strlen(body));
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = buf.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT(JSON_CT));
    h2o_start_response(req, &generator);
    h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

static int on_infer(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) ||
        !h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT(INFER_PATH)))
        return -1; /* not ours: h2o answers 404 */
    size_t len = req->entity.base != NULL ? req->entity.len : 0;
    if (len > SLOT_SIZE) {
        send_canned(req, 413, "Payload Too Large", TOOBIG_BODY);
        return 0;
    }
    struct slot *s = slot_acquire();
    if (s == NULL) {
        send_canned(req, 503, "Service Unavailable", BUSY_BODY);
        return 0;
    }
    /* copy #2: socket input h2o_buffer_t -> slot */
    memcpy(s->mem, req->entity.base, len);
    s->len = len;
    stat_add(&stat_body_copied, len);
    stat_add(&stat_requests, 1);
    int ok = body_ok(s->mem, s->len);
    slot_release(s);
    if (ok)
        send_canned(req, 200, "OK", RESP_BODY);
    else
        send_canned(req, 400, "Bad Request", BADREQ_BODY);
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct worker *w = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        h2o_accept(&w->accept_ctx, sock);
    }
}

static void *run(void *arg)
{
    struct worker *w = arg;
    h2o_context_init(&w->ctx, h2o_evloop_create(), &config);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = config.hosts;
    h2o_socket_t *ls = h2o_evloop_socket_create(w->ctx.loop, w->lfd, H2O_SOCKET_FLAG_DONT_READ);
    ls->data = w;
    h2o_socket_read_start(ls, on_accept);
    while (h2o_evloop_run(w->ctx.loop, INT32_MAX) == 0)
        ;
    return NULL;
}

int main(int argc, char **argv)
{
    struct opts o = parse_opts(argc, argv);
    sigset_t set;
    block_signals(&set);

    h2o_config_init(&config);
    config.max_request_entity_size = SLOT_SIZE;
    h2o_hostconf_t *host = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, INFER_PATH, 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler);
    handler->on_req = on_infer;

    static struct worker ws[64];
    static pthread_t th[64];
    for (int i = 0; i < o.threads; i++)
        ws[i].lfd = make_listener(o.port, 1);
    for (int i = 0; i < o.threads; i++)
        if (pthread_create(&th[i], NULL, run, &ws[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    fprintf(stderr, "srv_c_h2o %s: 127.0.0.1:%d threads=%d\n", H2O_VERSION, o.port, o.threads);
    wait_for_signal(&set);
    stats_print("srv_c_h2o");
    return 0;
}
