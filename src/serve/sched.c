/* sched.c — where an admitted request runs: inline on the submitting thread (a fast model with
 * nothing queued: a hand-off would cost more than the run), or its model's queue, served by the
 * worker threads; the deadline-aware admission; the run itself under the watchdog.
 *
 * Queues. Each model version has its own FIFO (mstate_t); models with queued requests wait on one
 * ready list, so workers serve models in turn and a batcher can take several requests of one model
 * at once. Front work moved off an event loop (osv_serve_offload) has a bounded FIFO of its own that
 * workers take first (it is short, and a request behind it waits for it). One mutex and condition
 * variable guard all queues: a hand-off costs microseconds, which only requests for slow models pay.
 *
 * The watchdog (serve.c's thread) cancels ORT runs whose deadline passed: each thread that runs
 * models owns one watch slot its current run is registered in (two atomic stores). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "serve/serve_internal.h"

static _Thread_local int my_slot = -1;

mstate_t *osv_mstate(const osv_model_t *m)
{
    return osv_model_attachment(m, OSV_ATTACH_SCHED);
}

uint64_t osv_serve_model_ewma(const osv_model_t *m)
{
    mstate_t *ms = osv_mstate(m);
    return ms ? atomic_load_explicit(&ms->ewma_ns, memory_order_relaxed) : 0;
}

uint32_t osv_serve_model_queued(const osv_model_t *m)
{
    mstate_t *ms = osv_mstate(m);
    return ms ? atomic_load_explicit(&ms->queued, memory_order_relaxed) : 0;
}

static void ewma_note(_Atomic uint64_t *e, uint64_t ns)
{
    uint64_t old = atomic_load_explicit(e, memory_order_relaxed);
    atomic_store_explicit(e, old ? old - old / 8 + ns / 8 : ns, memory_order_relaxed); /* weight 1/8 */
}

/* ---- the watchdog's slots --------------------------------------------------------------------------- */

void osv_serve_thread_init(osv_serve_t *s, int index)
{
    my_slot = index >= 0 && index < s->o.loop_threads ? index : -1;
}

static void watch_begin(osv_serve_t *s, osv_infer_t *inf, uint64_t deadline)
{
    if (my_slot < 0 || my_slot >= s->n_slots)
        return;
    /* Runs without a deadline are registered too, so a drain that times out can cancel them. */
    atomic_store(&s->slots[my_slot].deadline, deadline ? deadline : UINT64_MAX);
    atomic_store(&s->slots[my_slot].inf, inf);
}

void osv_serve_watch_begin(osv_serve_t *s, osv_sreq_t *r, osv_infer_t *inf)
{
    watch_begin(s, inf, r->deadline);
    if (atomic_load_explicit(&s->canceling, memory_order_relaxed))
        osv_infer_cancel(inf); /* the drain timed out: the scan that cancels the rest may have passed */
}

void osv_serve_watch_end(osv_serve_t *s)
{
    if (my_slot < 0 || my_slot >= s->n_slots)
        return;
    watch_slot_t *w = &s->slots[my_slot];
    if (!atomic_load_explicit(&w->inf, memory_order_relaxed))
        return;
    atomic_store(&w->inf, NULL);
    while (atomic_load(&w->busy))
        ; /* the watchdog is canceling this run right now: it finishes in nanoseconds */
}

void osv_sched_scan(osv_serve_t *s, uint64_t now)
{
    for (int i = 0; i < s->n_slots; i++) {
        watch_slot_t *w = &s->slots[i];
        int zero = 0;
        osv_infer_t *inf = atomic_load(&w->inf);
        if (!inf || atomic_load(&w->deadline) > now)
            continue;
        if (!atomic_compare_exchange_strong(&w->busy, &zero, 1))
            continue;
        if (atomic_load(&w->inf) == inf && atomic_load(&w->deadline) <= now)
            osv_infer_cancel(inf); /* the run returns OSV_ECANCELED; the request gets 504 */
        atomic_store(&w->busy, 0);
    }
}

void osv_serve_cancel_all(osv_serve_t *s)
{
    atomic_store(&s->canceling, 1);
    for (int i = 0; i < s->n_slots; i++)
        atomic_store(&s->slots[i].deadline, 0); /* due now: the scan cancels them */
    osv_sched_scan(s, osv_now_ns());
}

bool osv_serve_canceling(const osv_serve_t *s)
{
    return atomic_load_explicit(&((osv_serve_t *)s)->canceling, memory_order_relaxed) != 0;
}

/* ---- running one request (any thread that may run models) ---------------------------------------- */

static int standard_run(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = r->ms;
    int rc;
    r->phase_t0[OSV_PHASE_COMPUTE_INFER] = osv_now_ns();
    for (int attempt = 0;; attempt++) {
        watch_begin(s, r->inf, r->deadline);
        rc = osv_infer_run(r->inf, &r->err);
        osv_serve_watch_end(s);
        /* ONNX Runtime could not allocate (OSV_ENOMEM, by its code): worth a short retry. */
        if (rc != OSV_ENOMEM || attempt == 2 || osv_infer_rearm(r->inf) != 0)
            break;
        if (ms && ms->stats)
            osv_stats_add_recovery(ms->stats);
        struct timespec ts = {0, 1000000L << attempt}; /* 1, 2 ms */
        nanosleep(&ts, NULL);
    }
    r->phase_t1[OSV_PHASE_COMPUTE_INFER] = osv_now_ns();
    r->ns[OSV_PHASE_COMPUTE_INFER] = osv_infer_ns(r->inf, OSV_PHASE_COMPUTE_INFER);
    r->ns[OSV_PHASE_COMPUTE_INPUT] += osv_infer_ns(r->inf, OSV_PHASE_COMPUTE_INPUT);
    r->batch = osv_infer_batch(r->inf);
    return rc;
}

/* The run-time estimates admission uses are fed by model runs only (never by front work). */
static void note_run(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = r->ms;
    uint64_t ns = r->ns[OSV_PHASE_COMPUTE_INFER];
    if (!ns)
        return;
    if (ms)
        ewma_note(&ms->ewma_ns, ns);
    ewma_note(&s->run_ewma_ns, ns);
}

static void run(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = r->ms;
    if (atomic_load_explicit(&s->canceling, memory_order_relaxed)) {
        r->rc = osv_err_set(&r->err, OSV_EUNAVAIL, "the server is shutting down");
        return;
    }
    if (r->deadline && osv_now_ns() >= r->deadline) {
        if (ms && ms->stats)
            osv_stats_add_canceled(ms->stats);
        r->rc = osv_err_set(&r->err, OSV_ETIMEDOUT,
                            "the deadline of %" PRIu64 " ms (%s) passed before the model could run: queued too "
                            "long",
                            r->deadline_ms, osv_serve_deadline_text(r->deadline_src));
        return;
    }
    if (r->prepare && (r->rc = r->prepare(r)) != 0)
        return;
    r->rc = r->execute ? r->execute(r) : standard_run(s, r);
    note_run(s, r);
    if (r->rc == OSV_ECANCELED && atomic_load_explicit(&s->canceling, memory_order_relaxed))
        r->rc = osv_err_set(&r->err, OSV_ETIMEDOUT, "the server is shutting down: the run was canceled");
    else if (r->rc == OSV_ECANCELED) /* the core counted the cancellation */
        r->rc = osv_err_set(&r->err, OSV_ETIMEDOUT,
                            "the deadline of %" PRIu64 " ms (%s) passed while the model ran: the run was canceled",
                            r->deadline_ms, osv_serve_deadline_text(r->deadline_src));
}

/* ---- admission ------------------------------------------------------------------------------------ */

/* True when a request that has to wait (every worker busy) behind `ahead` queued requests would, by
 * the recent run times, finish after its deadline: the wait is ahead / workers runs of any model plus
 * half a run for those in progress, then one run of its own. Saturating arithmetic: the estimate only
 * has to be right when it is small. Under lock. */
static bool would_miss_deadline(osv_serve_t *s, const osv_sreq_t *r, const mstate_t *ms, uint32_t ahead,
                                uint64_t now, uint64_t *wait_ns)
{
    uint64_t any = atomic_load_explicit(&s->run_ewma_ns, memory_order_relaxed);
    uint64_t own = atomic_load_explicit(&ms->ewma_ns, memory_order_relaxed);
    uint64_t runs2 = 2ull * ahead / (uint64_t)s->n_workers + 1; /* in half runs */
    if (!r->deadline || !any || !own)
        return false;
    /* A worker is free: nothing to wait for. Whether the run itself fits the deadline is for the
     * watchdog to judge (run times vary with the input); admission refuses only because of a queue. */
    if (ahead + (uint32_t)atomic_load_explicit(&s->running, memory_order_relaxed) < (uint32_t)s->n_workers)
        return false;
    *wait_ns = any > UINT64_MAX / 2 / runs2 ? UINT64_MAX / 2 : runs2 * any / 2;
    return *wait_ns + own > UINT64_MAX / 2 || now + *wait_ns + own > r->deadline;
}

static bool can_inline(osv_serve_t *s, const osv_sreq_t *r, const mstate_t *ms)
{
    return r->may_inline && my_slot >= 0 && my_slot < s->o.loop_threads &&
           atomic_load_explicit(&ms->ewma_ns, memory_order_relaxed) < s->o.inline_threshold_ns &&
           atomic_load_explicit(&ms->queued, memory_order_relaxed) == 0;
}

static void push_ready(osv_serve_t *s, mstate_t *ms)
{
    if (ms->ready)
        return;
    ms->ready = true;
    ms->next_ready = NULL;
    if (s->ready_tail)
        s->ready_tail->next_ready = ms;
    else
        s->ready_head = ms;
    s->ready_tail = ms;
}

int osv_serve_submit(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = osv_mstate(r->model);
    uint64_t wait_ns = 0;
    bool deadline_refused = false;
    int rc = 0;
    r->ms = ms;
    r->rc = 0;
    r->next = NULL;
    if (!ms)
        return osv_err_set(&r->err, OSV_EINVAL, "model '%s' has no scheduling state", osv_model_name(r->model));
    if (can_inline(s, r, ms) || s->n_workers == 0) {
        run(s, r);
        return 1;
    }
    r->phase_t0[OSV_PHASE_QUEUE] = osv_now_ns(); /* the worker measures the wait from here */
    pthread_mutex_lock(&s->lock);
    if (ms->n >= ms->max_queue) {
        rc = osv_err_set(&r->err, OSV_EBUSY, "model '%s' has too many queued requests, retry later",
                         osv_model_name(r->model));
    } else if (would_miss_deadline(s, r, ms, s->queued, r->phase_t0[OSV_PHASE_QUEUE], &wait_ns)) {
        r->expected_wait_ns = wait_ns;
        deadline_refused = true; /* a capacity refusal: 503, retry later — not a 504 */
        rc = osv_err_set(&r->err, OSV_EBUSY,
                         "model '%s' would not finish before the request's deadline (about %" PRIu64
                         " ms of queued work ahead), retry later",
                         osv_model_name(r->model), wait_ns / 1000000);
    } else {
        if (ms->tail)
            ms->tail->next = r;
        else
            ms->head = r;
        ms->tail = r;
        ms->n++;
        s->queued++;
        atomic_store_explicit(&ms->queued, ms->n, memory_order_relaxed);
        push_ready(s, ms);
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    if (deadline_refused)
        atomic_fetch_add_explicit(&s->deadline_refusals, 1, memory_order_relaxed);
    return rc;
}

int osv_serve_offload(osv_serve_t *s, osv_stask_t *t)
{
    pthread_mutex_lock(&s->lock);
    int rc = task_fifo_push(&s->offload, t);
    if (rc == 0)
        pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---- workers -------------------------------------------------------------------------------------- */

/* The next thing to do, under lock: offloaded front work first, then the next model's oldest request. */
static bool take(osv_serve_t *s, osv_stask_t **task, osv_sreq_t **req)
{
    *task = NULL;
    *req = NULL;
    if ((*task = task_fifo_pop(&s->offload)) != NULL)
        return true;
    mstate_t *ms = s->ready_head;
    if (!ms)
        return false;
    s->ready_head = ms->next_ready;
    if (!s->ready_head)
        s->ready_tail = NULL;
    ms->ready = false;
    *req = ms->head;
    ms->head = (*req)->next;
    if (!ms->head)
        ms->tail = NULL;
    ms->n--;
    s->queued--;
    atomic_store_explicit(&ms->queued, ms->n, memory_order_relaxed);
    if (ms->n)
        push_ready(s, ms); /* its next request waits behind the other models' */
    return true;
}

static void run_queued(osv_serve_t *s, osv_sreq_t *r)
{
    r->phase_t1[OSV_PHASE_QUEUE] = osv_now_ns();
    r->ns[OSV_PHASE_QUEUE] = r->phase_t1[OSV_PHASE_QUEUE] - r->phase_t0[OSV_PHASE_QUEUE];
    /* Memory guard: one run at a time while the group is near its limit (mem_gate). */
    bool gate = atomic_load_explicit(&s->mem_pressure, memory_order_relaxed) != 0;
    atomic_fetch_add_explicit(&s->running, 1, memory_order_relaxed);
    if (gate)
        pthread_mutex_lock(&s->mem_gate);
    run(s, r);
    if (gate)
        pthread_mutex_unlock(&s->mem_gate);
    atomic_fetch_sub_explicit(&s->running, 1, memory_order_relaxed);
    r->complete(r);
}

static void *worker_main(void *arg)
{
    osv_serve_t *s = arg;
    my_slot = s->o.loop_threads + atomic_fetch_add(&s->next_worker, 1);
    for (;;) {
        osv_stask_t *t;
        osv_sreq_t *r;
        pthread_mutex_lock(&s->lock);
        while (!take(s, &t, &r) && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        if (t) {
            t->run(t);
            t->complete(t);
        } else if (r) {
            run_queued(s, r);
        } else {
            return NULL; /* stopping, and nothing left */
        }
    }
}

int osv_sched_start(osv_serve_t *s, osv_err_t *err)
{
    if (!(s->workers = osv_calloc((size_t)s->n_workers + 1, sizeof *s->workers)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    for (int i = 0; i < s->n_workers; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            s->n_workers = i;
            return osv_err_set(err, OSV_ENOMEM, "cannot start worker threads");
        }
    }
    return 0;
}

void osv_sched_stop(osv_serve_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; s->workers && i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    osv_free(s->workers);
    s->workers = NULL;
}
