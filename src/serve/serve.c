/* serve.c — the request layer's lifecycle: the per-model state attached at load, the memory plan
 * (slot pool, image decode budget, shared-memory budget), the memory guard, the watchdog thread and
 * the control thread that loads and unloads models. Queues, workers and runs are sched.c's. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ortserve/sysmem.h"
#include "obs/log.h"
#include "obs/obs.h"
#include "serve/cache.h"
#include "serve/serve_internal.h"

void osv_serve_opts_default(osv_serve_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->loop_threads = 0;
    o->deadline_ms = OSV_DEADLINE_AUTO;
    o->max_queue = 64;
    o->inline_threshold_ns = 200000; /* 200 µs: see docs/DESIGN.md, "Inline or hand-off" */
    o->memory_high_pct = 90;
    o->offload_capacity = 4096;
    o->image_max_pixels = OSV_IMG_DEFAULT_MAX_PIXELS;
    o->image_max_bytes = OSV_IMG_DEFAULT_MAX_BYTES;
    o->image_max_images = OSV_IMG_DEFAULT_MAX_IMAGES;
}

int osv_serve_model_hook(void *ud, osv_model_t *m, osv_err_t *err)
{
    const osv_serve_opts_t *o = ud;
    const osv_model_config_t *cfg = osv_model_config(m);
    const char *why = NULL;
    mstate_t *ms;
    int rc;
    if (!osv_model_servable(m, &why))
        return osv_err_set(
            err, OSV_EUNSUPPORTED,
            "'%s' is not a tensor of a KServe datatype: only tensor inputs and outputs can be served", why);
    if ((rc = osv_obs_model_hook(m, err)) != 0)
        return rc;
    osv_img_limits_t il = {o->image_max_pixels, o->image_max_bytes, o->image_max_images};
    if ((rc = osv_img_model_attach(m, &il, err)) != 0) /* "image"/"postprocess" sections */
        return rc;
    if (cfg->cache.enable && !o->cache_bytes)
        osv_log(OSV_LOG_WARN, "response_cache_off",
                "\"model\":\"%s\",\"version\":%" PRId64 ",\"reason\":\"response_cache is enabled but the "
                "server has no cache: set --cache-size\"",
                osv_model_name(m), osv_model_version(m));
    if ((rc = osv_mstate_create(o, m, o->cache_bytes > 0, &ms, err)) != 0)
        return rc;
    osv_model_set_attachment(m, OSV_ATTACH_SCHED, ms, osv_mstate_free);
    return 0;
}

int64_t osv_serve_deadline_ms(const osv_serve_t *s, const osv_model_t *m, osv_deadline_src_t *src)
{
    const mstate_t *ms = m ? osv_mstate(m) : NULL;
    int64_t v;
    if (ms && ms->deadline_ms >= 0) {
        *src = ms->deadline_ms ? OSV_DEADLINE_MODEL : OSV_DEADLINE_NONE;
        return ms->deadline_ms;
    }
    if (s->o.deadline_ms >= 0) {
        *src = s->o.deadline_ms ? OSV_DEADLINE_SERVER : OSV_DEADLINE_NONE;
        return s->o.deadline_ms;
    }
    v = m ? (int64_t)(osv_model_warmup_ns(m) / 1000000u) * OSV_DEADLINE_WARMUP_FACTOR : 0;
    *src = v > OSV_DEADLINE_AUTO_MS ? OSV_DEADLINE_WARMUP : OSV_DEADLINE_SERVER;
    return v > OSV_DEADLINE_AUTO_MS ? v : OSV_DEADLINE_AUTO_MS;
}

const char *osv_serve_deadline_text(osv_deadline_src_t src)
{
    switch (src) {
    case OSV_DEADLINE_SERVER:
        return "the server's --deadline-ms";
    case OSV_DEADLINE_WARMUP:
#define XSTR(x) STR(x)
#define STR(x)  #x
        return "the server's default: " XSTR(OSV_DEADLINE_WARMUP_FACTOR) " x the model's warm-up run (--deadline-ms "
               "sets another)";
    case OSV_DEADLINE_MODEL:
        return "the model's deadline_ms";
    case OSV_DEADLINE_HEADER:
        return "the request's timeout header";
    case OSV_DEADLINE_REQUEST:
        return "the request's timeout parameter";
    default:
        return "no deadline";
    }
}

/* ---- the memory plan -------------------------------------------------------------------------------- */

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

/* Under a cgroup limit (docs/DESIGN.md, "Memory"): what the models hold, then ONNX Runtime's runs in
 * flight (po->reserve_bytes), the slot pool and the image decode budget are each kept out of what the
 * next one may take. An explicit decode budget is kept out of the pool's default budget; the default
 * decode budget is half of what the pool and the runs leave. Shared memory may span as much as the
 * pool holds, unless set. */
static int plan_memory(osv_serve_t *s, osv_err_t *err)
{
    hints_t hints = {.n = 0};
    osv_pool_opts_t po = s->o.pool;
    osv_pool_stats_t ps;
    int rc;
    osv_repo_foreach(s->repo, add_model_hints, &hints);
    if (!po.hints) { /* each model can hold max_queue requests waiting plus one per worker */
        uint64_t want = (uint64_t)(hints.n / 3) * s->o.max_queue + (uint64_t)s->n_workers;
        po.hints = hints.v;
        po.n_hints = hints.n;
        po.hint_slots = (uint32_t)(want < 4096 ? want : 4096);
    }
    if (!po.reserve_bytes && hints.run_bytes <= UINT64_MAX / 4096) /* a run per worker at once */
        po.reserve_bytes = hints.run_bytes * (uint64_t)(s->n_workers < 4096 ? s->n_workers : 4096);
    uint64_t decode = s->o.image_decode_budget, runs = po.reserve_bytes, cache = s->o.cache_bytes;
    if (decode)
        po.reserve_bytes = runs + decode >= runs ? runs + decode : UINT64_MAX;
    if (cache) /* the response cache's budget is kept out of the pool's share, like an explicit decode budget */
        po.reserve_bytes = po.reserve_bytes + cache >= cache ? po.reserve_bytes + cache : UINT64_MAX;
    if ((rc = osv_pool_create(&po, &s->pool, err)) != 0)
        return rc;
    osv_pool_get_stats(s->pool, &ps);
    if (!decode) { /* half of what the pool, the runs and the cache leave */
        uint64_t taken = ps.total_bytes + runs >= runs ? ps.total_bytes + runs : UINT64_MAX;
        decode = osv_img_budget_default(taken + cache >= taken ? taken + cache : UINT64_MAX);
    }
    if ((rc = osv_img_budget_create(decode, &s->img_budget, err)) != 0)
        return rc;
    if (cache && (rc = osv_cache_create(cache, &s->cache, err)) != 0)
        return rc;
    if (!s->o.shm_max_bytes)
        s->o.shm_max_bytes = ps.total_bytes;
    s->o.image_decode_budget = decode;
    return osv_shm_create(s->o.shm_max_bytes, &s->shm);
}

/* ---- the memory guard ---------------------------------------------------------------------------------- */

/* Re-reads the cgroup's memory use at most every 10 ms and sets or clears mem_pressure (hysteresis:
 * clears 5 points below the mark). Watchdog thread only. */
void osv_serve_watch_memory(osv_serve_t *s, uint64_t now)
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
    /* The decision first, then the reading it came from: whoever sees this working set (a /metrics
     * scrape reads it before mem_pressure) sees the decision made on it, or a later one. */
    if (now_on != was)
        atomic_store(&s->mem_pressure, now_on);
    atomic_store(&s->mem_working_set, ws);
    if (now_on != was) {
        osv_log(now_on ? OSV_LOG_WARN : OSV_LOG_INFO, now_on ? "memory_high" : "memory_ok",
                "\"working_set_bytes\":%" PRIu64 ",\"limit_bytes\":%" PRIu64 ",\"high_pct\":%u", ws,
                mem.cgroup_limit, s->o.memory_high_pct);
    }
}

int osv_serve_admit_memory(osv_serve_t *s, osv_err_t *err)
{
    if (!atomic_load_explicit(&s->mem_pressure, memory_order_relaxed))
        return 0;
    atomic_fetch_add_explicit(&s->mem_shed, 1, memory_order_relaxed);
    return osv_err_set(err, OSV_EBUSY,
                       "memory in use (%" PRIu64 " MiB) is near the limit (%" PRIu64 " MiB), retry later",
                       atomic_load(&s->mem_working_set) >> 20, s->mem_limit >> 20);
}

int osv_serve_memory_reserve(osv_serve_t *s, uint64_t bytes, osv_err_t *err)
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

void osv_serve_memory_unreserve(osv_serve_t *s, uint64_t bytes)
{
    if (bytes)
        atomic_fetch_sub(&s->mem_reserved, bytes);
}

bool osv_serve_guarding_memory(const osv_serve_t *s)
{
    return s->mem_limit != 0;
}

/* ---- the watchdog ------------------------------------------------------------------------------------- */

void osv_serve_set_busy_hint(osv_serve_t *s, _Atomic int64_t *inflight)
{
    s->busy_hint = inflight;
}

static void *watchdog_main(void *arg)
{
    osv_serve_t *s = arg;
    while (!atomic_load(&s->watchdog_stop)) {
        /* 2 ms ticks while requests are in flight (deadlines are met within that), 50 ms when idle. */
        bool busy = !s->busy_hint || atomic_load_explicit(s->busy_hint, memory_order_relaxed) > 0;
        struct timespec ts = {0, busy ? 2000000L : 50000000L};
        nanosleep(&ts, NULL);
        uint64_t now = osv_now_ns();
        osv_sched_scan(s, now);
        osv_sched_expire(s, now);
        osv_serve_watch_memory(s, now);
    }
    return NULL;
}

/* ---- the control thread ------------------------------------------------------------------------------- */

#define CONTROL_CAPACITY 8

static void *control_main(void *arg)
{
    osv_serve_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->control_lock);
        while (!s->control.head && !s->control_stop)
            pthread_cond_wait(&s->control_cond, &s->control_lock);
        osv_stask_t *t = task_fifo_pop(&s->control);
        pthread_mutex_unlock(&s->control_lock);
        if (!t)
            return NULL;
        t->run(t);
        t->complete(t);
    }
}

int osv_serve_control(osv_serve_t *s, osv_stask_t *t)
{
    pthread_mutex_lock(&s->control_lock);
    int rc = task_fifo_push(&s->control, t);
    if (rc == 0)
        pthread_cond_signal(&s->control_cond);
    pthread_mutex_unlock(&s->control_lock);
    return rc;
}

/* ---- bearer tokens --------------------------------------------------------------------------------------- */

static bool token_still_there(void *ud, uint64_t owner)
{
    return osv_auth_has(ud, owner);
}

void osv_serve_reload_auth(osv_serve_t *s)
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

/* ---- create, destroy, accessors ------------------------------------------------------------------------ */

static int start_threads(osv_serve_t *s, osv_err_t *err)
{
    int rc;
    if ((rc = osv_sched_start(s, err)) != 0)
        return rc;
    if (pthread_create(&s->control_thread, NULL, control_main, s) != 0)
        return osv_err_set(err, OSV_ENOMEM, "cannot start the control thread");
    s->control_started = true;
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        atomic_store(&s->watchdog_stop, 2); /* not started */
        return osv_err_set(err, OSV_ENOMEM, "cannot start the watchdog thread");
    }
    return 0;
}

#define TEST_JITTER_ENV "ORTSERVE_TEST_ANSWER_JITTER_US"

/* The test hook that makes a preempted worker likely (sched.c's osv_sched_finish pauses before each answer
 * and after handing it on): the order answers leave in must not depend on which worker the kernel runs
 * first, nor admission on whether a worker that has answered has also stopped counting itself busy. */
static void test_jitter(osv_serve_t *s)
{
    const char *v = getenv(TEST_JITTER_ENV);
    unsigned long us = v && *v ? strtoul(v, NULL, 10) : 0;
    if (!us || us > 1000000)
        return;
    s->test_jitter_ns = (uint64_t)us * 1000;
    osv_log(OSV_LOG_WARN, "serve_test_jitter",
            "\"variable\":\"" TEST_JITTER_ENV "\",\"detail\":\"each answer waits up to %lu us before it is handed "
            "on and its worker as long after (a test hook)\"", us);
}
int osv_serve_create(const osv_serve_opts_t *o, osv_env_t *env, osv_repo_t *repo, osv_serve_t **out,
                     osv_err_t *err)
{
    osv_serve_t *s = osv_calloc(1, sizeof *s);
    int rc;
    if (!s)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    s->o = *o;
    s->env = env;
    s->repo = repo;
    s->n_workers = o->workers > 0 ? o->workers : osv_sysmem_cpus();
    s->n_slots = (o->loop_threads > 0 ? o->loop_threads : 0) + s->n_workers;
    s->offload.cap = o->offload_capacity ? o->offload_capacity : 1;
    s->control.cap = CONTROL_CAPACITY;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca; /* workers wait for a forming batch's due time on the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->control_lock, NULL);
    pthread_cond_init(&s->control_cond, NULL);
    pthread_mutex_init(&s->mem_gate, NULL);
    atomic_store(&s->watchdog_stop, 2); /* nothing to join until started */
    if (o->memory_high_pct > 0 && o->memory_high_pct < 100) {
        osv_sysmem_t mem;
        osv_sysmem_read(&mem);
        s->mem_limit = mem.cgroup_limit;
    }
    test_jitter(s);
    if (!(s->slots = osv_calloc((size_t)(s->n_slots ? s->n_slots : 1), sizeof *s->slots))) {
        rc = osv_err_set(err, OSV_ENOMEM, "out of memory");
        goto fail;
    }
    if (o->auth_token_file && *o->auth_token_file) {
        char warn[512], esc[1200];
        if ((rc = osv_auth_create(o->auth_token_file, &s->auth, warn, sizeof warn, err)) != 0)
            goto fail;
        if (warn[0])
            osv_log(OSV_LOG_WARN, "auth_token_file", "\"warning\":\"%s\"", osv_log_escape(warn, esc, sizeof esc));
    }
    if ((rc = plan_memory(s, err)) != 0)
        goto fail;
    atomic_store(&s->watchdog_stop, 0);
    if ((rc = start_threads(s, err)) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    osv_serve_destroy(s);
    return rc;
}

void osv_serve_stop(osv_serve_t *s)
{
    osv_sched_stop(s);
    if (s->control_started) {
        pthread_mutex_lock(&s->control_lock);
        s->control_stop = true;
        pthread_cond_broadcast(&s->control_cond);
        pthread_mutex_unlock(&s->control_lock);
        pthread_join(s->control_thread, NULL);
        s->control_started = false;
    }
    if (atomic_exchange(&s->watchdog_stop, 2) == 0)
        pthread_join(s->watchdog, NULL);
}

void osv_serve_destroy(osv_serve_t *s)
{
    if (!s)
        return;
    osv_serve_stop(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->control_lock);
    pthread_cond_destroy(&s->control_cond);
    pthread_mutex_destroy(&s->mem_gate);
    osv_shm_destroy(s->shm);
    osv_auth_destroy(s->auth);
    osv_img_budget_destroy(s->img_budget);
    osv_cache_destroy(s->cache);
    osv_pool_destroy(s->pool);
    osv_free(s->slots);
    osv_free(s);
}

const osv_serve_opts_t *osv_serve_opts(const osv_serve_t *s)
{
    return &s->o;
}

osv_env_t *osv_serve_env(const osv_serve_t *s)
{
    return s->env;
}

osv_repo_t *osv_serve_repo(const osv_serve_t *s)
{
    return s->repo;
}

osv_pool_t *osv_serve_pool(const osv_serve_t *s)
{
    return s->pool;
}

osv_img_budget_t *osv_serve_img_budget(const osv_serve_t *s)
{
    return s->img_budget;
}

osv_shm_t *osv_serve_shm(const osv_serve_t *s)
{
    return s->shm;
}

osv_auth_t *osv_serve_auth(const osv_serve_t *s)
{
    return s->auth;
}

void osv_serve_get_counters(osv_serve_t *s, osv_serve_counters_t *out)
{
    pthread_mutex_lock(&s->lock);
    out->queued = s->queued;
    pthread_mutex_unlock(&s->lock);
    out->working_set = atomic_load(&s->mem_working_set); /* before the decision (see watch_memory) */
    out->memory_pressure = atomic_load(&s->mem_pressure);
    out->memory_shed = atomic_load(&s->mem_shed);
    out->deadline_refusals = atomic_load(&s->deadline_refusals);
    out->batches = atomic_load(&s->batch_ids);
    osv_cache_get_stats(s->cache, &out->cache);
}

