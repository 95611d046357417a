/* server.c — the HTTP server's lifecycle: the request layer (serve/), the transport (net/) with the
 * HTTP front listening, the per-model scheduling state attached at load, and the graceful drain. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http/http.h"
#include "obs/log.h"
#include "obs/obs.h"
#include "serve/errmap.h"
#include "ortserve/sysmem.h"

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
    o->deadline_ms = -1; /* OSV_DEADLINE_AUTO (serve/serve.h) */
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

/* The request layer's options out of the server's (the CLI fills one flat set). */
static void serve_opts(const osv_server_opts_t *o, int loops, osv_serve_opts_t *so)
{
    osv_serve_opts_default(so);
    so->workers = o->workers;
    so->loop_threads = loops;
    so->max_queue = o->max_queue;
    so->deadline_ms = o->deadline_ms;
    so->inline_threshold_ns = o->inline_threshold_ns;
    so->memory_high_pct = o->memory_high_pct;
    so->offload_capacity = o->max_connections ? o->max_connections : 4096;
    so->force_copy = o->force_copy;
    so->pool = o->pool;
    so->image_decode_budget = o->image_decode_budget;
    so->image_max_pixels = o->image_max_pixels;
    so->image_max_bytes = o->image_max_bytes;
    so->image_max_images = o->image_max_images;
    so->shm_max_bytes = o->shm_max_bytes;
    so->cache_bytes = o->cache_bytes;
    so->auth_token_file = o->auth_token_file;
}

int osv_server_model_hook(void *ud, osv_model_t *m, osv_err_t *err)
{
    osv_serve_opts_t so;
    serve_opts(ud, 0, &so); /* read during the call only */
    return osv_serve_model_hook(&so, m, err);
}

/* Connections: each one with a request in progress holds a read buffer, its object and its arena
 * (osv_conn_bytes). By default they may take a sixteenth of the memory this process may use —
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
    n = mem.effective / CONN_SHARE / osv_conn_bytes(o);
    return n < CONN_MIN ? CONN_MIN : n > CONN_MAX ? CONN_MAX : (uint32_t)n;
}

/* The transport with the HTTP front listening on host:port, and each loop's JSON scratch. */
static int server_net(osv_server_t *s, osv_err_t *err)
{
    osv_net_opts_t no = {.loops = s->n_loops, .max_connections = s->o.max_connections,
                         .conn_buffer = s->o.conn_buffer};
    int rc;
    if ((rc = osv_net_create(&no, &s->net, err)) != 0)
        return rc;
    osv_http_front_init(s, &s->front);
    if ((rc = osv_net_listen(s->net, &s->front, s->o.host, s->o.port, &s->port, err)) != 0)
        return rc;
    if (!(s->toks = osv_calloc((size_t)s->n_loops, sizeof *s->toks)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    for (int i = 0; i < s->n_loops; i++)
        if (!(s->toks[i] = osv_malloc(s->o.max_json_tokens * sizeof **s->toks)))
            return osv_err_set(err, OSV_ENOMEM, "out of memory");
    return 0;
}

int osv_server_create(const osv_server_opts_t *o, osv_env_t *env, osv_repo_t *repo, osv_server_t **out,
                      osv_err_t *err)
{
    osv_server_t *s;
    osv_serve_opts_t so;
    int rc;
    if (o->port < 0 || o->port > 65535) /* `ortserve serve` refuses these already; s->port is 16 bits */
        return osv_err_set(err, OSV_EINVAL, "port %d is not in 0..65535", o->port);
    if (!(s = osv_calloc(1, sizeof *s)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    s->o = *o;
    if (s->o.conn_buffer < s->o.max_header_bytes + 1024)
        s->o.conn_buffer = s->o.max_header_bytes + 1024;
    s->o.max_connections = plan_connections(&s->o);
    s->start_ns = osv_now_ns();
    sem_init(&s->wake, 0, 0);
    s->n_loops = o->loops > 0 ? o->loops : osv_sysmem_cpus();
    serve_opts(&s->o, s->n_loops, &so);
    if ((rc = osv_serve_create(&so, env, repo, &s->serve, err)) != 0)
        goto fail;
    osv_serve_set_busy_hint(s->serve, &s->inflight);
    s->env = env;
    s->repo = repo;
    s->pool = osv_serve_pool(s->serve);
    s->img_budget = osv_serve_img_budget(s->serve);
    s->shm = osv_serve_shm(s->serve);
    s->auth = osv_serve_auth(s->serve);
    s->o.shm_max_bytes = osv_serve_opts(s->serve)->shm_max_bytes;
    s->o.image_decode_budget = osv_serve_opts(s->serve)->image_decode_budget;
    if ((rc = server_net(s, err)) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    osv_server_destroy(s);
    return rc;
}

int64_t osv_server_model_deadline(const osv_server_t *s, const osv_model_t *m, const char **source)
{
    osv_deadline_src_t src;
    int64_t ms = osv_serve_deadline_ms(s->serve, m, &src);
    *source = osv_serve_deadline_text(src);
    return ms;
}

int osv_server_check_port(const char *host, int port, osv_err_t *err)
{
    return osv_net_probe(host, port, err);
}

void osv_server_get_plan(const osv_server_t *s, osv_server_plan_t *out)
{
    *out = (osv_server_plan_t){.port = s->port,
                               .loops = s->n_loops,
                               .workers = osv_serve_workers(s->serve),
                               .max_connections = s->o.max_connections,
                               .shm_max_bytes = s->o.shm_max_bytes,
                               .image_decode_budget = s->o.image_decode_budget,
                               .pool = s->pool,
                               .img_budget = s->img_budget};
}

void osv_server_get_shared(osv_server_t *s, osv_server_shared_t *out)
{
    *out = (osv_server_shared_t){.serve = s->serve, .net = s->net, .inflight = &s->inflight};
}

bool osv_server_memory_refuse(osv_conn_t *c)
{
    osv_err_t err;
    int rc = osv_serve_admit_memory(c->srv->serve, &err);
    if (rc)
        osv_res_error_code(c, rc, err.msg);
    return rc != 0;
}

void osv_http_refuse_queued(osv_conn_t *c, int rc, const osv_err_t *err)
{
    if (rc < 0)
        osv_res_error_code(c, rc, err->msg);
}

/* Each loop thread registers with the request layer (its watchdog slot is its index). */
static void loop_thread_init(int index, void *ud)
{
    osv_server_t *s = ud;
    osv_serve_thread_init(s->serve, index);
    osv_serve_thread_collects(s->serve);
}

/* The end of a loop's wake-up: the request layer runs what its events submitted together. */
static bool loop_flush(void *ud)
{
    return osv_serve_flush(((osv_server_t *)ud)->serve);
}

int osv_server_run(osv_server_t *s)
{
    osv_net_set_flush(s->net, loop_flush, s);
    int rc = osv_net_start(s->net, loop_thread_init, s);
    if (rc != 0)
        return rc;
    /* Wait for a stop request (osv_server_stop), then give requests in flight drain_timeout. */
    while (!atomic_load(&s->stopping)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        sem_timedwait(&s->wake, &ts); /* posted by a stop or reload request (or a signal interrupts) */
        if (atomic_exchange(&s->reload_auth, 0))
            osv_serve_reload_auth(s->serve);
    }
    osv_net_drain(s->net);
    uint64_t deadline = osv_now_ns() + (uint64_t)s->o.drain_timeout_ms * 1000000ull;
    while (osv_net_connections(s->net) > 0 && osv_now_ns() < deadline) {
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
    if (osv_net_connections(s->net) > 0) {
        atomic_store(&s->stopping, 2);
        osv_serve_cancel_all(s->serve); /* runs still going get 504; their workers come free */
        osv_net_abandon(s->net);
    }
    osv_net_join(s->net);
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
    if (atomic_compare_exchange_strong(&s->stopping, &zero, 1))
        sem_post(&s->wake); /* osv_server_run starts the drain */
}

void osv_server_destroy(osv_server_t *s)
{
    if (!s)
        return;
    /* Workers first: a drain that timed out can leave connections whose request a worker holds;
     * then the connections (their slots go back to the pool), then the request layer. */
    if (s->serve)
        osv_serve_stop(s->serve);
    osv_net_destroy(s->net);
    for (int i = 0; s->toks && i < s->n_loops; i++)
        osv_free(s->toks[i]);
    osv_free(s->toks);
    osv_serve_destroy(s->serve);
    sem_destroy(&s->wake);
    osv_free(s);
}
