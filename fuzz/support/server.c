/* server.c — fuzz support: see server.h.
 *
 * The transport (net/loop.c) and the HTTP front's connection code (http/conn.c) are compiled into
 * this file (#include, the way a unit test reaches static functions) so the harness can open a
 * connection (conn_new, then the front's open), deliver what epoll would report (on_conn_event), fire
 * timers (run_timers) and take worker hand-backs (run_posts) with the server's own code; the static
 * libraries' copies are then not linked. The front's one call when a response has been written,
 * osv_http_record, is renamed to a hook here that checks the response first. */
#include "net/loop.c"
#define osv_http_record fz_on_response
#include "http/conn.c"
#undef osv_http_record

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "core/model_internal.h"
#include "fuzz.h"
#include "serve/shm.h"
#include "server.h"

/* The real recorder (declared in http/http.h under the name above). */
void osv_http_record(osv_conn_t *c);

static const char *const model_names[] = {"mlp", "identity", "dynamic", "scale2x"};
#define N_MODELS (sizeof model_names / sizeof *model_names)

static struct {
    osv_server_t *srv;
    osv_server_opts_t opts; /* the repository's load hook keeps a pointer to these */
    char repo_dir[256];
    bool shm_created;
    fz_result_t *res;   /* where the response hook records */
    uint64_t responses; /* responses completed, ever */
    bool verbose;
} S;

/* ---- the temporary repository ------------------------------------------------------------------ */

static void copy_file(const char *from, const char *to)
{
    char buf[65536];
    int in = open(from, O_RDONLY | O_CLOEXEC), out;
    ssize_t n;
    if (in < 0)
        fz_fail(__FILE__, __LINE__, "cannot open %s (run `make models` or set OSV_TEST_MODELS)", from);
    out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FZ_CHECK(out >= 0, "cannot create %s", to);
    while ((n = read(in, buf, sizeof buf)) > 0)
        FZ_CHECK(write(out, buf, (size_t)n) == n, "cannot write %s", to);
    close(in);
    close(out);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    FZ_CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

/* <tmp>/ortserve-fuzz-XXXXXX/<model>/1/model.onnx, and mlp's labels. */
static void build_repo(void)
{
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(S.repo_dir, sizeof S.repo_dir, "%s/ortserve-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    FZ_CHECK(mkdtemp(S.repo_dir), "mkdtemp %s: %s", S.repo_dir, strerror(errno));
    for (size_t i = 0; i < N_MODELS; i++) {
        char from[512];
        snprintf(path, sizeof path, "%s/%s", S.repo_dir, model_names[i]);
        FZ_CHECK(mkdir(path, 0755) == 0, "mkdir %s", path);
        snprintf(path, sizeof path, "%s/%s/1", S.repo_dir, model_names[i]);
        FZ_CHECK(mkdir(path, 0755) == 0, "mkdir %s", path);
        snprintf(from, sizeof from, "%s/%s.onnx", fz_models_dir(), model_names[i]);
        snprintf(path, sizeof path, "%s/%s/1/model.onnx", S.repo_dir, model_names[i]);
        copy_file(from, path);
    }
    snprintf(path, sizeof path, "%s/mlp/labels.txt", S.repo_dir);
    write_text(path, "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n");
    snprintf(path, sizeof path, "%s/mlp/config.json", S.repo_dir);
    write_text(path, "{\"labels\": \"labels.txt\"}\n");
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    if (S.repo_dir[0])
        nftw(S.repo_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    if (S.shm_created)
        shm_unlink("/" FZ_SHM_KEY);
}

/* ---- shared memory ------------------------------------------------------------------------------ */

static void create_shm_object(void)
{
    int fd = shm_open("/" FZ_SHM_KEY, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        S.shm_created = true;
    else
        fd = shm_open("/" FZ_SHM_KEY, O_RDWR | O_CLOEXEC, 0600);
    FZ_CHECK(fd >= 0, "shm_open(%s): %s", FZ_SHM_KEY, strerror(errno));
    FZ_CHECK(ftruncate(fd, FZ_SHM_BYTES) == 0, "ftruncate: %s", strerror(errno));
    close(fd);
}

void fz_shm_reset(void)
{
    osv_err_t err;
    osv_shm_unregister(S.srv->shm, 0, NULL, 0, NULL);
    FZ_CHECK(
        osv_shm_register(S.srv->shm, 0, "r0", 2, FZ_SHM_KEY, strlen(FZ_SHM_KEY), 0, FZ_SHM_BYTES, &err) == 0,
        "register r0: %s", err.msg);
    FZ_CHECK(osv_shm_register(S.srv->shm, 0, "r1", 2, FZ_SHM_KEY, strlen(FZ_SHM_KEY), 4096, 4096, &err) == 0,
             "register r1: %s", err.msg);
}

/* ---- building the server ------------------------------------------------------------------------ */

static void set_opts(osv_server_opts_t *o)
{
    osv_server_opts_default(o);
    o->loops = 1;
    o->workers = 1; /* model loads (repository endpoint) go to the worker */
    o->port = 0;    /* a listener on 127.0.0.1 that never accepts */
    o->max_body_bytes = 1u << 20;
    o->max_header_bytes = 4096;
    o->max_headers = 32;
    o->max_json_tokens = 4096;
    o->conn_buffer = 8192;               /* larger bodies go to a pool slot, as they would in production */
    o->deadline_ms = 0;                  /* no wall-clock deadlines: the same input gives the same answer */
    o->inline_threshold_ns = UINT64_MAX; /* every model runs on the loop thread */
    o->allow_shm = true;
    o->pool.total_bytes = 64u << 20;
    o->pool.max_slot = 4u << 20;
    o->image_max_pixels = 1u << 18;
    o->image_max_bytes = 1u << 20;
    o->image_max_images = 4;
}

static osv_repo_t *open_repo(osv_env_t *env)
{
    osv_repo_opts_t ro = {
        .env = env, .path = S.repo_dir, .load_all = true, .hook = osv_server_model_hook, .hook_ud = &S.opts};
    osv_repo_t *repo;
    osv_err_t err;
    osv_limits_default(&ro.limits);
    ro.limits.max_tensor_elements = 1u << 20;
    ro.limits.max_tensor_bytes = 4u << 20;
    ro.limits.max_string_bytes = 64u << 10;
    FZ_CHECK(osv_repo_open(&ro, &repo, &err) == 0, "repository: %s", err.msg);
    for (size_t i = 0; i < N_MODELS; i++) {
        osv_model_t *m;
        FZ_CHECK(osv_repo_acquire(repo, model_names[i], strlen(model_names[i]), -1, &m, &err) == 0,
                 "model %s did not load: %s", model_names[i], err.msg);
        osv_model_release(m);
    }
    return repo;
}

osv_server_t *fz_server(void)
{
    osv_env_opts_t eo;
    osv_env_t *env;
    osv_err_t err;
    if (S.srv)
        return S.srv;
    S.verbose = getenv("OSV_FUZZ_VERBOSE") != NULL;
    signal(SIGPIPE, SIG_IGN); /* the harness may write after the server closed its end */
    build_repo();
    create_shm_object();
    atexit(cleanup);
    osv_env_opts_default(&eo);
    eo.log_severity = 3; /* ORT errors only */
    FZ_CHECK(osv_env_create(&eo, &env, &err) == 0, "ORT environment: %s", err.msg);
    set_opts(&S.opts);
    osv_repo_t *repo = open_repo(env);
    FZ_CHECK(osv_server_create(&S.opts, env, repo, &S.srv, &err) == 0, "server: %s", err.msg);
    /* This thread is the loop thread: responses are written here, runs use the loop's watch slot. */
    S.srv->net->loops[0].thread = pthread_self();
    osv_serve_thread_init(S.srv->serve, 0);
    fz_shm_reset();
    return S.srv;
}

/* ---- checks ------------------------------------------------------------------------------------- */

/* Content-Length of a response head, or -1 when it has none or more than one. */
static int64_t content_length(const char *h, size_t n)
{
    static const char key[] = "\r\nContent-Length: ";
    int64_t v = -1;
    for (size_t i = 0; i + sizeof key - 1 <= n; i++) {
        if (memcmp(h + i, key, sizeof key - 1) != 0)
            continue;
        if (v >= 0)
            return -1;
        v = 0;
        for (size_t k = i + sizeof key - 1; k < n && h[k] >= '0' && h[k] <= '9'; k++)
            v = v * 10 + (h[k] - '0');
    }
    return v;
}

/* A complete response as written: a well-formed head whose Content-Length is the body sent. */
static void check_response(const osv_conn_t *c)
{
    const osv_response_t *r = &c->res;
    const char *h = r->hdr;
    size_t n = r->hdr_len;
    FZ_CHECK(r->status >= 100 && r->status <= 599, "response status %d", r->status);
    FZ_CHECK(r->sent == r->total, "response written %" PRIu64 " of %" PRIu64 " bytes", r->sent, r->total);
    FZ_CHECK(n >= 16 && memcmp(h, "HTTP/1.", 7) == 0, "response head does not start with a status line");
    FZ_CHECK(memcmp(h + n - 4, "\r\n\r\n", 4) == 0, "response head (%zu bytes) is not terminated: truncated?",
             n);
    for (size_t i = 0; i < n; i++) {
        FZ_CHECK(h[i] != '\r' || (i + 1 < n && h[i + 1] == '\n'), "bare CR in response head at %zu", i);
        FZ_CHECK(h[i] != '\n' || (i > 0 && h[i - 1] == '\r'), "bare LF in response head at %zu", i);
        FZ_CHECK(h[i] != '\0', "NUL in response head at %zu", i);
    }
    int64_t cl = content_length(h, n);
    uint64_t body = r->total - n;
    FZ_CHECK(cl >= 0, "response without exactly one Content-Length");
    if (c->req.head.method == OSV_HTTP_HEAD && c->req.head.head_len)
        FZ_CHECK(body == 0, "a HEAD response carries %" PRIu64 " body bytes", body);
    else
        FZ_CHECK(body == (uint64_t)cl,
                 "Content-Length %" PRId64 " but %" PRIu64 " body bytes written (status %d)", cl, body,
                 r->status);
}

void fz_on_response(osv_conn_t *c)
{
    fz_result_t *res = S.res;
    check_response(c);
    S.responses++;
    if (S.verbose) /* OSV_FUZZ_VERBOSE=1: what each response was (error bodies are in the head buffer) */
        fprintf(stderr, "fuzz: %d %.*s\n", c->res.status,
                c->res.status >= 400 ? (int)(c->res.total - c->res.hdr_len) : 0, c->res.hdr + c->res.hdr_len);
    if (res && res->n < FZ_MAX_RESPONSES) {
        res->status[res->n] = c->res.status;
        res->closes[res->n] = c->res.close_after || !c->req.head.keep_alive;
        snprintf(res->ids[res->n], sizeof res->ids[res->n], "%.*s", (int)c->req.ids.request_id_len,
                 c->req.ids.request_id);
        res->n++;
    }
    osv_http_record(c);
}

/* After a connection: nothing held. Models a request unloaded are loaded again (inputs must not
 * change the server for the next one). */
static void check_at_rest(void)
{
    osv_server_t *s = S.srv;
    osv_pool_stats_t ps;
    osv_pool_get_stats(s->pool, &ps);
    FZ_CHECK(ps.in_use_bytes == 0, "%" PRIu64 " pool bytes still in use after the connection closed",
             ps.in_use_bytes);
    FZ_CHECK(osv_pool_bad_releases(s->pool) == 0, "a pool slot was released twice");
    FZ_CHECK(atomic_load(&s->inflight) == 0, "%" PRId64 " requests still counted in flight",
             (int64_t)atomic_load(&s->inflight));
    FZ_CHECK(osv_net_connections(s->net) == 0, "%u connections still counted open", osv_net_connections(s->net));
    for (size_t i = 0; i < N_MODELS; i++) {
        osv_model_t *m;
        osv_err_t err;
        if (osv_repo_acquire(s->repo, model_names[i], strlen(model_names[i]), -1, &m, &err) != 0) {
            FZ_CHECK(osv_repo_load(s->repo, model_names[i], &err) == 0, "reloading %s: %s", model_names[i],
                     err.msg);
            continue;
        }
        /* The repository's reference and ours: a request that kept one would show here. */
        int refs = atomic_load(&m->refs);
        osv_model_release(m);
        FZ_CHECK(refs == 2, "model %s holds %d references at rest (expected 2)", model_names[i], refs);
    }
}

/* ---- one connection ----------------------------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Sends what the socket takes; returns the bytes written. */
static size_t push(int fd, const uint8_t *p, size_t n)
{
    ssize_t k = n ? send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT) : 0;
    return k > 0 ? (size_t)k : 0;
}

/* Reads and discards what the server wrote; true when something was read. */
static bool drain(int fd)
{
    char buf[65536];
    bool got = false;
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        got = true;
    return got;
}

/* Everything that changes when the connection makes progress. */
static uint64_t progress(const osv_conn_t *c, size_t off)
{
    const osv_nconn_t *n = &c->nc;
    return (uint64_t)c->state +
           7 * (n->len + 7 * (n->pos + 7 * (c->req.bytes_in + 7 * (c->res.sent + 7 * (n->lingered + 7 * off))))) +
           ((uint64_t)S.responses << 48);
}

void fz_conn_run(const void *data, size_t len, fz_result_t *res)
{
    osv_server_t *s = fz_server();
    osv_loop_t *l = &s->net->loops[0];
    const uint8_t *p = data;
    size_t off = 0;
    bool shut = false;
    int sv[2];
    if (res)
        memset(res, 0, sizeof *res);
    S.res = res;
    FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
             strerror(errno));
    l->now = osv_now_ns();
    osv_nconn_t *nc = conn_new(l, &s->front, sv[0]);
    FZ_CHECK(nc, "conn_new failed");
    s->front.open(nc);
    osv_conn_t *c = (osv_conn_t *)nc;
    for (int idle = 0; !nc->closed;) {
        uint64_t before = progress(c, off);
        bool got = false;
        off += push(sv[1], p + off, len - off);
        if (off == len && !shut) {
            shutdown(sv[1], SHUT_WR); /* the client is done sending: the server sees EOF */
            shut = true;
        }
        got |= drain(sv[1]);
        if (atomic_load(&l->done)) /* a worker finished (a model load) */
            run_posts(l);
        if (!nc->closed)
            on_conn_event(nc, EPOLLIN | EPOLLOUT); /* what epoll would say */
        if (got || progress(c, off) != before || nc->closed) {
            idle = 0;
            continue;
        }
        FZ_CHECK(++idle < 20000, "connection stuck in state %d", (int)c->state);
        if (c->state == CONN_RUN && !c->req.on_timer) { /* on a worker: wait for it */
            sleep_ms(1);
            continue;
        }
        /* Nothing moves: let time pass (retry backoff, or the timeouts that end a stuck connection). */
        l->now += 60ull * 1000000000ull;
        run_timers(l);
    }
    drain(sv[1]);
    close(sv[1]);
    S.res = NULL;
    check_at_rest();
}

/* ---- a connection of another front (the gRPC front: fuzz_grpc_conn.c) ---------------------------- */

void fz_front_run(const osv_front_t *f, const void *data, size_t len)
{
    osv_server_t *s = fz_server();
    osv_loop_t *l = &s->net->loops[0];
    const uint8_t *p = data;
    size_t off = 0;
    bool shut = false;
    int sv[2];
    FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
             strerror(errno));
    l->now = osv_now_ns();
    osv_nconn_t *nc = conn_new(l, f, sv[0]);
    FZ_CHECK(nc, "conn_new failed");
    f->open(nc);
    for (int idle = 0; !nc->closed;) {
        uint64_t before = nc->len + 7 * (nc->pos + 7 * (nc->lingered + 7 * off));
        bool got = false;
        off += push(sv[1], p + off, len - off);
        if (off == len && !shut) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        got |= drain(sv[1]);
        if (atomic_load(&l->done)) /* a worker or the control thread finished */
            run_posts(l);
        if (!nc->closed)
            on_conn_event(nc, EPOLLIN | EPOLLOUT);
        if (got || nc->closed || nc->len + 7 * (nc->pos + 7 * (nc->lingered + 7 * off)) != before) {
            idle = 0;
            continue;
        }
        FZ_CHECK(++idle < 20000, "%s connection stuck", f->name);
        if (f->busy(nc)) { /* a worker or the control thread holds a call: wait for it */
            sleep_ms(1);
            continue;
        }
        l->now += 60ull * 1000000000ull; /* let time pass: the timeouts that end a stuck connection */
        run_timers(l);
    }
    drain(sv[1]);
    close(sv[1]);
    check_at_rest();
}
