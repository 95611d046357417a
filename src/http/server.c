/* server.c — the server's lifecycle: listeners (one SO_REUSEPORT socket per loop), loop and worker
 * threads, the per-model scheduling state attached at load, and the graceful drain. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/auth.h"
#include "http/http.h"
#include "http/sched.h"
#include "http/shm.h"
#include "obs/log.h"
#include "obs/obs.h"
#include "ortserve/imaging.h"
#include "ortserve/sysmem.h"

static osv_model_sched_t control_sched = {.max_queue = 8, .deadline_ms = -1};

void osv_server_opts_default(osv_server_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8000;
    o->max_connections = 0; /* from the memory plan: plan_connections */
    o->max_body_bytes = 64ull << 20;
    o->max_header_bytes = 16u << 10;
    o->max_headers = 100;
    o->max_json_depth = 64;
    o->max_json_tokens = 1u << 16;
    o->conn_buffer = 32u << 10;
    o->deadline_ms = 500;
    o->max_queue = 64;
    o->inline_threshold_ns = 200000; /* 200 µs: see docs/DESIGN.md, "Inline or hand-off" */
    o->header_timeout_ms = 10000;
    o->body_timeout_ms = 30000;
    o->min_body_rate = 240; /* bytes/s after 5 s, as ASP.NET Core's Kestrel (MinRequestBodyDataRate) */
    o->body_rate_grace_ms = 5000;
    o->idle_timeout_ms = 60000;
    o->drain_timeout_ms = 10000;
    o->retry_after_s = 1;
    o->memory_high_pct = 90;
    o->model_control = true;
    o->image_max_pixels = OSV_IMG_DEFAULT_MAX_PIXELS;
    o->image_max_bytes = OSV_IMG_DEFAULT_MAX_BYTES;
    o->image_max_images = OSV_IMG_DEFAULT_MAX_IMAGES;
}

int osv_server_model_hook(void *ud, osv_model_t *m, osv_err_t *err)
{
    const osv_server_opts_t *o = ud;
    const osv_model_config_t *cfg = osv_model_config(m);
    const char *why = NULL;
    osv_model_sched_t *ms;
    if (!osv_model_servable(m, &why))
        return osv_err_set(
            err, OSV_EUNSUPPORTED,
            "'%s' is not a tensor of a KServe datatype: only tensor inputs and outputs can be served", why);
    int rc = osv_obs_model_hook(m, err);
    if (rc)
        return rc;
    osv_img_limits_t il = {o->image_max_pixels, o->image_max_bytes, o->image_max_images};
    if ((rc = osv_img_model_attach(m, &il, err)) != 0) /* "image"/"postprocess" sections */
        return rc;
    if (!(ms = osv_calloc(1, sizeof *ms)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    ms->max_queue = cfg->max_queue >= 0 ? (uint32_t)cfg->max_queue : o->max_queue;
    /* Start the run-time estimate at the warm-up's (cold: an over-estimate), so a slow model's first
     * request goes to a worker instead of blocking an event loop. */
    atomic_init(&ms->ewma_ns, osv_model_warmup_ns(m));
    ms->deadline_ms = cfg->deadline_ms;
    osv_model_set_attachment(m, OSV_ATTACH_SCHED, ms, osv_free);
    return 0;
}

/* A listening socket on host:port with SO_REUSEPORT so every loop has its own accept queue. */
static int listen_on(const char *host, uint16_t port, uint16_t *bound, osv_err_t *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
                    *ai = NULL;
    char ps[8];
    int fd = -1, one = 1, rc;
    snprintf(ps, sizeof ps, "%u", port);
    if ((rc = getaddrinfo(host, ps, &hints, &ai)) != 0)
        return osv_err_set(err, OSV_EINVAL, "cannot resolve host '%s': %s", host, gai_strerror(rc));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        rc = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
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

static int loop_init(osv_server_t *s, osv_loop_t *l, int id, osv_err_t *err)
{
    struct epoll_event ev = {.events = EPOLLIN};
    uint16_t port = s->port;
    memset(l, 0, sizeof *l);
    l->id = id;
    l->srv = s;
    l->watch_slot = id;
    l->listen_fd = l->wake_fd = l->reserve_fd = -1;
    l->accepting = true;
    if ((l->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
        (l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
        return osv_err_set(err, OSV_EIO, "epoll/eventfd/spare descriptor: %s", strerror(errno));
    if ((l->listen_fd = listen_on(s->o.host, port, &s->port, err)) < 0)
        return err->code;
    if (!(l->toks = osv_malloc(s->o.max_json_tokens * sizeof *l->toks)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    ev.data.ptr = &l->listen_fd;
    epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->listen_fd, &ev);
    ev.data.ptr = &l->wake_fd;
    epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &ev);
    return 0;
}

/* Pool hints (ortserve/pool.h) from the models loaded at start-up, three per model whose request
 * size is fixed at batch 1: a binary request body (inputs + room for the JSON header), the infer
 * slot when inputs are bound from that body (outputs), and the infer slot when inputs are in it
 * (JSON requests, images: inputs + outputs). */
#define HINTS_MAX        96
#define HINT_JSON_HEADER 1024

typedef struct hints {
    uint64_t v[HINTS_MAX];
    uint32_t n;
    uint64_t run_bytes; /* the largest warm-up growth: what one run in flight may add */
} hints_t;

static int add_model_hints(void *ud, osv_model_t *m)
{
    hints_t *h = ud;
    uint64_t in, out;
    if (osv_model_warmup_bytes(m) > h->run_bytes)
        h->run_bytes = osv_model_warmup_bytes(m);
    if (h->n + 3 > HINTS_MAX)
        return 0; /* full: later models still count for run_bytes */
    if (osv_model_request_bytes(m, &in, &out) != 0 || in > UINT64_MAX / 4 || out > UINT64_MAX / 4)
        return 0;
    h->v[h->n++] = in + HINT_JSON_HEADER;
    h->v[h->n++] = out ? out : 1;
    h->v[h->n++] = in + out ? in + out : 1;
    return 0;
}

/* Connections: each one with a request in progress holds a read buffer, its object and its arena
 * (osv_loop_conn_bytes). By default they may take a sixteenth of the memory this process may use —
 * what a flood of unfinished request heads can pin — between 64 and 4096 connections: a 64 MB cgroup
 * gets 64, 256 MB 300, 1 GiB 1200, 4 GiB or more 4096. */
#define CONN_SHARE 16
#define CONN_MIN   64
#define CONN_MAX   4096

static uint32_t plan_connections(const osv_server_opts_t *o)
{
    osv_sysmem_t mem;
    uint64_t n;
    if (o->max_connections)
        return o->max_connections;
    osv_sysmem_read(&mem);
    n = mem.effective / CONN_SHARE / osv_loop_conn_bytes(o);
    return n < CONN_MIN ? CONN_MIN : n > CONN_MAX ? CONN_MAX : (uint32_t)n;
}

/* The memory plan under a cgroup limit (docs/DESIGN.md, "Memory"): what the models hold, then ONNX
 * Runtime's runs in flight (po->reserve_bytes), the slot pool and the image decode budget are each
 * kept out of what the next one may take. An explicit decode budget is kept out of the pool's default
 * budget; the default decode budget is half of what the pool and the runs leave. */
static int plan_memory(osv_server_t *s, osv_pool_opts_t *po, osv_err_t *err)
{
    uint64_t decode = s->o.image_decode_budget, runs = po->reserve_bytes;
    osv_pool_stats_t ps;
    int rc;
    if (decode)
        po->reserve_bytes = runs + decode >= runs ? runs + decode : UINT64_MAX;
    if ((rc = osv_pool_create(po, &s->pool, err)) != 0)
        return rc;
    osv_pool_get_stats(s->pool, &ps);
    if (!decode)
        decode = osv_img_budget_default(ps.total_bytes + runs >= runs ? ps.total_bytes + runs : UINT64_MAX);
    return osv_img_budget_create(decode, &s->img_budget, err);
}

static int ncores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int osv_server_create(const osv_server_opts_t *o, osv_env_t *env, osv_repo_t *repo, osv_server_t **out,
                      osv_err_t *err)
{
    osv_server_t *s;
    int rc, workers;
    if (o->port < 0 || o->port > 65535) /* `ortserve serve` refuses these already; s->port is 16 bits */
        return osv_err_set(err, OSV_EINVAL, "port %d is not in 0..65535", o->port);
    if (!(s = osv_calloc(1, sizeof *s)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    s->o = *o;
    if (s->o.conn_buffer < s->o.max_header_bytes + 1024)
        s->o.conn_buffer = s->o.max_header_bytes + 1024;
    s->o.max_connections = plan_connections(&s->o);
    s->env = env;
    s->repo = repo;
    s->port = (uint16_t)o->port;
    s->start_ns = osv_now_ns();
    s->control_sched = &control_sched;
    sem_init(&s->wake, 0, 0);
    pthread_mutex_init(&s->mem_gate, NULL);
    if (o->memory_high_pct > 0 && o->memory_high_pct < 100) {
        osv_sysmem_t mem;
        osv_sysmem_read(&mem);
        s->mem_limit = mem.cgroup_limit;
    }
    s->n_loops = o->loops > 0 ? o->loops : ncores();
    workers = o->workers > 0 ? o->workers : ncores();
    if (o->auth_token_file && *o->auth_token_file) {
        char warn[512], esc[1200];
        if ((rc = osv_auth_create(o->auth_token_file, &s->auth, warn, sizeof warn, err)) != 0)
            goto fail;
        if (warn[0])
            osv_log(OSV_LOG_WARN, "auth_token_file", "\"warning\":\"%s\"",
                    osv_log_escape(warn, esc, sizeof esc));
    }
    hints_t hints = {.n = 0};
    osv_pool_opts_t po = o->pool;
    osv_repo_foreach(repo, add_model_hints, &hints);
    if (!po.hints) { /* each model can hold max_queue requests waiting plus one per worker */
        uint64_t want = (uint64_t)(hints.n / 3) * o->max_queue + (uint64_t)workers;
        po.hints = hints.v;
        po.n_hints = hints.n;
        po.hint_slots = (uint32_t)(want < 4096 ? want : 4096);
    }
    if (!po.reserve_bytes && hints.run_bytes <= UINT64_MAX / 4096) /* a run per worker at once */
        po.reserve_bytes = hints.run_bytes * (uint64_t)(workers < 4096 ? workers : 4096);
    if ((rc = plan_memory(s, &po, err)) != 0)
        goto fail;
    if (!s->o.shm_max_bytes) { /* shared memory gets as much of the memory plan as the pool */
        osv_pool_stats_t ps;
        osv_pool_get_stats(s->pool, &ps);
        s->o.shm_max_bytes = ps.total_bytes;
    }
    if ((rc = osv_shm_create(s->o.shm_max_bytes, &s->shm)) != 0)
        goto fail;
    if (!(s->loops = osv_calloc((size_t)s->n_loops, sizeof *s->loops))) {
        rc = osv_err_set(err, OSV_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < s->n_loops; i++)
        if ((rc = loop_init(s, &s->loops[i], i, err)) != 0)
            goto fail;
    if ((rc = osv_sched_create(s, workers, s->o.max_connections, s->n_loops + workers, &s->sched, err)) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    osv_server_destroy(s);
    return rc;
}

void osv_server_watch_memory(osv_server_t *s, uint64_t now)
{
    osv_sysmem_t mem;
    if (!s->mem_limit || now < s->mem_next_check)
        return;
    s->mem_next_check = now + 10000000ull;
    osv_sysmem_read(&mem);
    uint64_t ws = mem.cgroup_working_set ? mem.cgroup_working_set : mem.cgroup_usage;
    uint64_t pct = mem.cgroup_limit ? ws * 100 / mem.cgroup_limit : 0;
    int was = atomic_load(&s->mem_pressure),
        now_on = was ? pct + 5 >= s->o.memory_high_pct : pct >= s->o.memory_high_pct;
    atomic_store(&s->mem_working_set, ws);
    if (now_on != was) {
        atomic_store(&s->mem_pressure, now_on);
        osv_log(now_on ? OSV_LOG_WARN : OSV_LOG_INFO, now_on ? "memory_high" : "memory_ok",
                "\"working_set_bytes\":%" PRIu64 ",\"limit_bytes\":%" PRIu64 ",\"high_pct\":%u", ws,
                mem.cgroup_limit, s->o.memory_high_pct);
    }
}

bool osv_server_memory_refuse(osv_conn_t *c, bool body_unread)
{
    osv_server_t *s = c->loop->srv;
    if (!atomic_load_explicit(&s->mem_pressure, memory_order_relaxed))
        return false;
    c->res.close_after |= body_unread;
    atomic_fetch_add_explicit(&s->mem_shed, 1, memory_order_relaxed);
    osv_res_error(c, 503, "memory in use (%" PRIu64 " MiB) is near the limit (%" PRIu64 " MiB), retry later",
                  atomic_load(&s->mem_working_set) >> 20, s->mem_limit >> 20);
    return true;
}

int osv_server_memory_reserve(osv_server_t *s, uint64_t bytes, osv_err_t *err)
{
    osv_sysmem_t mem;
    if (!s->mem_limit || bytes == 0)
        return 0;
    osv_sysmem_read(&mem); /* now: pages faulted in since the guard's last look count */
    uint64_t ws = mem.cgroup_working_set ? mem.cgroup_working_set : mem.cgroup_usage,
             mark = s->mem_limit / 100 * s->o.memory_high_pct, held = atomic_load(&s->mem_reserved);
    do {
        if (ws > mark || held > mark - ws || bytes > mark - ws - held) {
            atomic_fetch_add_explicit(&s->mem_shed, 1, memory_order_relaxed);
            return osv_err_set(err, OSV_EBUSY,
                               "shared memory that no process has touched yet (%" PRIu64
                               " MiB) would be charged to this server: with %" PRIu64
                               " MiB in use and %" PRIu64
                               " MiB held by other requests that passes %u%% of its memory limit (%" PRIu64
                               " MiB), retry later",
                               bytes >> 20, ws >> 20, held >> 20, s->o.memory_high_pct, s->mem_limit >> 20);
        }
    } while (!atomic_compare_exchange_weak(&s->mem_reserved, &held, held + bytes));
    return 0;
}

void osv_server_memory_unreserve(osv_server_t *s, uint64_t bytes)
{
    if (bytes)
        atomic_fetch_sub(&s->mem_reserved, bytes);
}

void osv_http_refuse_queued(osv_conn_t *c, int rc, const char *model)
{
    if (rc == 0)
        return;
    if (rc != OSV_ETIMEDOUT) {
        osv_res_error(c, 503, "model '%s' has too many queued requests, retry later", model);
        return;
    }
    atomic_fetch_add_explicit(&c->loop->srv->deadline_refusals, 1, memory_order_relaxed);
    osv_res_error(c, 503,
                  "model '%s' would not finish before the request's deadline (about %" PRIu64
                  " ms of queued work ahead), retry later",
                  model, c->req.expected_wait_ns / 1000000);
}

static void *loop_thread(void *arg)
{
    osv_loop_t *l = arg;
    osv_watch_set_slot(l->watch_slot);
    return osv_loop_main(l);
}

static bool token_still_there(void *ud, uint64_t owner)
{
    return osv_auth_has(ud, owner);
}

/* SIGHUP: new tokens take effect for the next request; a bad file keeps the tokens in use. Regions of
 * a token that is gone go with it: nobody can reach them any more. */
static void reload_auth(osv_server_t *s)
{
    char warn[512], esc[1200];
    osv_err_t err;
    int n;
    if (!s->auth)
        return;
    if ((n = osv_auth_reload(s->auth, warn, sizeof warn, &err)) < 0) {
        osv_log(OSV_LOG_ERROR, "auth_reload_failed", "\"error\":\"%s\",\"kept\":\"the tokens in use\"",
                osv_log_escape(err.msg, esc, sizeof esc));
        return;
    }
    if (warn[0])
        osv_log(OSV_LOG_WARN, "auth_token_file", "\"warning\":\"%s\"", osv_log_escape(warn, esc, sizeof esc));
    osv_log(OSV_LOG_INFO, "auth_reloaded", "\"tokens\":%d,\"shm_regions_dropped\":%u", n,
            osv_shm_unregister_unless(s->shm, token_still_there, s->auth));
}

static bool all_loops_idle(osv_server_t *s)
{
    return atomic_load(&s->conns) == 0;
}

int osv_server_run(osv_server_t *s)
{
    for (int i = 0; i < s->n_loops; i++)
        if (pthread_create(&s->loops[i].thread, NULL, loop_thread, &s->loops[i]) != 0)
            return OSV_ENOMEM;
    /* Wait for a stop request (osv_server_stop), then give requests in flight drain_timeout. */
    while (!atomic_load(&s->stopping)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        sem_timedwait(&s->wake, &ts); /* posted by a stop or reload request (or a signal interrupts) */
        if (atomic_exchange(&s->reload_auth, 0))
            reload_auth(s);
    }
    uint64_t deadline = osv_now_ns() + (uint64_t)s->o.drain_timeout_ms * 1000000ull;
    while (!all_loops_idle(s) && osv_now_ns() < deadline) {
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
    if (!all_loops_idle(s)) {
        atomic_store(&s->stopping, 2);
        osv_sched_cancel_all(s->sched); /* runs still going get 504; their workers come free */
        for (int i = 0; i < s->n_loops; i++)
            osv_loop_wake(&s->loops[i]);
    }
    for (int i = 0; i < s->n_loops; i++)
        pthread_join(s->loops[i].thread, NULL);
    return atomic_load(&s->stopping) == 2 ? OSV_ETIMEDOUT : 0;
}

void osv_server_reload(osv_server_t *s)
{
    atomic_store(&s->reload_auth, 1);
    sem_post(&s->wake);
}

void osv_server_stop(osv_server_t *s)
{
    int zero = 0;
    if (atomic_compare_exchange_strong(&s->stopping, &zero, 1)) {
        for (int i = 0; i < s->n_loops; i++)
            osv_loop_wake(&s->loops[i]);
        sem_post(&s->wake);
    }
}

void osv_server_destroy(osv_server_t *s)
{
    if (!s)
        return;
    osv_sched_destroy(s->sched);
    for (int i = 0; s->loops && i < s->n_loops; i++)
        osv_loop_free(&s->loops[i]);
    osv_free(s->loops);
    osv_shm_destroy(s->shm);
    osv_auth_destroy(s->auth);
    osv_pool_destroy(s->pool);
    osv_img_budget_destroy(s->img_budget); /* after the workers: their contexts were detached */
    sem_destroy(&s->wake);
    pthread_mutex_destroy(&s->mem_gate);
    osv_free(s);
}
