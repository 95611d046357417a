/* sched.c — where an admitted request runs: inline on the submitting thread (a fast model with
 * nothing queued: a hand-off would cost more than the run), or its model's queue, served by the
 * worker threads — one request at a time, or, for a model with dynamic batching, as many as the
 * batcher joins into one run (batch.c); the deadline-aware admission; the run itself under the
 * watchdog.
 *
 * Queues. Each model version has its own queue (mstate_t): one FIFO, or with dynamic batching one per
 * priority level (Triton's priority_levels; level 1 first, FIFO within a level), each with its queue
 * policy (max_queue_size; a timeout whose action is REJECT — answered 503 — or DELAY — moved behind
 * the level's other requests). Models with work a worker can take now wait on one ready list, so
 * workers serve models in turn; a model whose batch is still forming (Triton's
 * max_queue_delay_microseconds, or the adaptive mode's wait) waits on the wait list until its due
 * time or the next arrival; a model running as many batches as its instance_group count is taken
 * again when one ends. Front work moved off an event loop (osv_serve_offload) has a bounded FIFO of its
 * own that workers take first (it is short, and a request behind it waits for it). One mutex and
 * condition variable guard all queues: a hand-off costs microseconds, which only requests for slow
 * or batched models pay.
 *
 * Deadlines. A request whose deadline passes while it waits is answered 504 without running; its
 * queue timeout, as its policy says. The watchdog (serve.c's thread) looks at the queues every tick
 * and cancels ORT runs whose deadline passed: each thread that runs models owns one watch slot its
 * current run is registered in (two atomic stores). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "serve/cache.h"
#include "serve/serve_internal.h"

static _Thread_local int my_slot = -1;

/* Requests one wake-up of this loop thread submitted for a fast model with adaptive batching: they run
 * together, inline, once the wake-up's events are handled (osv_serve_flush). The thread's alone. */
typedef struct collect {
    bool on; /* osv_serve_thread_collects: the loop calls osv_serve_flush */
    osv_sreq_t *head, *tail; /* next-linked, in submission order */
} collect_t;
static _Thread_local collect_t collected;

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

int osv_serve_workers(const osv_serve_t *s)
{
    return s->n_workers;
}

static void ewma_note(_Atomic uint64_t *e, uint64_t ns)
{
    uint64_t old = atomic_load_explicit(e, memory_order_relaxed);
    atomic_store_explicit(e, old ? old - old / 8 + ns / 8 : ns, memory_order_relaxed); /* weight 1/8 */
}

/* ---- per-model state ------------------------------------------------------------------------------- */

int osv_mstate_create(const osv_serve_opts_t *o, osv_model_t *m, bool cache, mstate_t **out, osv_err_t *err)
{
    const osv_model_config_t *cfg = osv_model_config(m);
    const osv_batching_config_t *bc = &cfg->batching;
    uint32_t n_levels = bc->dynamic && bc->priority_levels ? bc->priority_levels : 1;
    mstate_t *ms = osv_calloc(1, sizeof *ms + n_levels * sizeof(level_t));
    int rc;
    if (!ms)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    static _Atomic uint64_t uids;
    ms->levels = (level_t *)(ms + 1);
    ms->uid = atomic_fetch_add(&uids, 1) + 1;
    ms->n_levels = n_levels;
    ms->model = m;
    ms->bc = bc;
    ms->batching = bc->dynamic;
    ms->preserve = bc->dynamic && bc->preserve_ordering;
    ms->instances = bc->instance_count;
    ms->cache = cache && cfg->cache.enable;
    ms->max_queue = cfg->max_queue >= 0 ? (uint32_t)cfg->max_queue : o->max_queue;
    ms->deadline_ms = cfg->deadline_ms;
    ms->stats = osv_model_stats(m);
    for (uint32_t l = 0; l < n_levels; l++) {
        level_t *lv = &ms->levels[l];
        lv->policy = bc->dynamic ? *osv_batching_policy(bc, l + 1) : (osv_queue_policy_t){0};
        lv->max = lv->policy.max_queue_size ? lv->policy.max_queue_size : ms->max_queue;
    }
    /* Start the run-time estimate at the warm-up's (cold: an over-estimate), so a slow model's first
     * request goes to a worker instead of blocking an event loop. */
    atomic_init(&ms->ewma_ns, osv_model_warmup_ns(m));
    atomic_init(&ms->ewma_bytes, 0); /* no request run yet: the first one is not scaled */
    if (ms->batching && ((rc = osv_batcher_create(m, bc, &ms->bat, err)) != 0 ||
                         (bc->max_batch_size > 0 && (rc = osv_stager_create(m, bc->max_batch_size, 1 + (uint32_t)(o->loop_threads > 0 ? o->loop_threads : 0),
                                                 &ms->stager, err)) != 0))) {
        osv_mstate_free(ms);
        return rc;
    }
    *out = ms;
    return 0;
}

void osv_mstate_free(void *p)
{
    mstate_t *ms = p;
    if (ms) {
        osv_batcher_free(ms->bat);
        osv_stager_free(ms->stager);
    }
    osv_free(ms);
}

/* ---- the watchdog's slots --------------------------------------------------------------------------- */

void osv_serve_thread_init(osv_serve_t *s, int index)
{
    my_slot = index >= 0 && index < s->o.loop_threads ? index : -1;
}

void osv_sched_watch(osv_serve_t *s, osv_infer_t *inf, uint64_t deadline)
{
    if (my_slot < 0 || my_slot >= s->n_slots)
        return;
    /* Runs without a deadline are registered too, so a drain that times out can cancel them. */
    atomic_store(&s->slots[my_slot].deadline, deadline ? deadline : UINT64_MAX);
    atomic_store(&s->slots[my_slot].inf, inf);
    if (atomic_load_explicit(&s->canceling, memory_order_relaxed))
        osv_infer_cancel(inf); /* the drain timed out: the scan that cancels the rest may have passed */
}

void osv_serve_watch_begin(osv_serve_t *s, osv_sreq_t *r, osv_infer_t *inf)
{
    osv_sched_watch(s, inf, r->deadline);
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

int osv_sched_run_infer(osv_serve_t *s, osv_infer_t *inf, uint64_t deadline, osv_stats_t *st, osv_err_t *err)
{
    int rc;
    for (int attempt = 0;; attempt++) {
        osv_sched_watch(s, inf, deadline);
        rc = osv_infer_run(inf, err);
        osv_serve_watch_end(s);
        /* ONNX Runtime could not allocate (OSV_ENOMEM, by its code): worth a short retry. */
        if (rc != OSV_ENOMEM || attempt == 2 || osv_infer_rearm(inf) != 0)
            return rc;
        if (st)
            osv_stats_add_recovery(st);
        struct timespec ts = {0, 1000000L << attempt}; /* 1, 2 ms */
        nanosleep(&ts, NULL);
    }
}

static int standard_run(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = r->ms;
    int rc;
    r->phase_t0[OSV_PHASE_COMPUTE_INFER] = osv_now_ns();
    rc = osv_sched_run_infer(s, r->inf, r->deadline, ms ? ms->stats : NULL, &r->err);
    r->phase_t1[OSV_PHASE_COMPUTE_INFER] = osv_now_ns();
    r->ns[OSV_PHASE_COMPUTE_INFER] = osv_infer_ns(r->inf, OSV_PHASE_COMPUTE_INFER);
    r->ns[OSV_PHASE_COMPUTE_INPUT] += osv_infer_ns(r->inf, OSV_PHASE_COMPUTE_INPUT);
    r->batch = osv_infer_batch(r->inf);
    r->batch_requests = 1;
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
        osv_sched_note_model_run(ms, ns, r->in_bytes);
    ewma_note(&s->run_ewma_ns, ns);
}

void osv_sched_note_model_run(mstate_t *ms, uint64_t ns, uint64_t bytes)
{
    ewma_note(&ms->ewma_ns, ns);
    if (bytes)
        ewma_note(&ms->ewma_bytes, bytes);
}

/* The declared inputs' bytes of r (what its run reads); 0 for a request that runs its own way (execute:
 * classify decodes its images on the worker, and has no infer yet). */
static uint64_t input_bytes(const osv_sreq_t *r)
{
    osv_infer_input_info_t a;
    uint64_t sum = 0;
    for (uint32_t i = 0; r->inf && i < osv_model_input_count(r->model); i++)
        if (osv_infer_input_info(r->inf, i, &a) == 0)
            sum += a.bytes;
    return sum;
}

int osv_sched_deadline_error(osv_sreq_t *r, const char *when)
{
    return r->rc = osv_err_set(&r->err, OSV_ETIMEDOUT, "the deadline of %" PRIu64 " ms (%s) passed %s",
                               r->deadline_ms, osv_serve_deadline_text(r->deadline_src), when);
}

void osv_sched_timeout_error(osv_serve_t *s, osv_sreq_t *r)
{
    if (r->rc != OSV_ECANCELED) /* the core counted the cancellation */
        return;
    if (atomic_load_explicit(&s->canceling, memory_order_relaxed))
        r->rc = osv_err_set(&r->err, OSV_ETIMEDOUT, "the server is shutting down: the run was canceled");
    else
        osv_sched_deadline_error(r, "while the model ran: the run was canceled");
}

void osv_sched_run_one(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = r->ms;
    if (atomic_load_explicit(&s->canceling, memory_order_relaxed)) {
        r->rc = osv_err_set(&r->err, OSV_EUNAVAIL, "the server is shutting down");
        return;
    }
    if (r->deadline && osv_now_ns() >= r->deadline) {
        if (ms && ms->stats)
            osv_stats_add_canceled(ms->stats);
        osv_sched_deadline_error(r, "before the model could run: queued too long");
        return;
    }
    if (r->prepare && (r->rc = r->prepare(r)) != 0)
        return;
    r->rc = r->execute ? r->execute(r) : standard_run(s, r);
    note_run(s, r);
    if (r->rc == 0 && ms && ms->bat && !r->execute)
        osv_batcher_note(ms->bat, r->rows, r->ns[OSV_PHASE_COMPUTE_INFER]);
    osv_sched_timeout_error(s, r);
    if (r->rc == 0 && ms && ms->cache)
        osv_cache_insert(s->cache, r);
}

/* ---- queues (under lock) ------------------------------------------------------------------------------ */

/* Queue membership also marks a staged request's rows as queued (stage.c's window), under lock. */
static void rq_push(rq_t *q, osv_sreq_t *r)
{
    r->next = NULL;
    r->qprev = q->tail;
    r->q = q;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->n++;
    osv_stage_queued(r, true);
}

/* Unlinks r from q, wherever it is. */
static void rq_unlink(rq_t *q, osv_sreq_t *r)
{
    if (r->qprev)
        r->qprev->next = r->next;
    else
        q->head = r->next;
    if (r->next)
        r->next->qprev = r->qprev;
    else
        q->tail = r->qprev;
    q->n--;
    r->next = r->qprev = NULL;
    r->q = NULL;
    osv_stage_queued(r, false);
}

static void set_queued(osv_serve_t *s, mstate_t *ms, int delta)
{
    ms->n = (uint32_t)((int64_t)ms->n + delta);
    s->queued = (uint32_t)((int64_t)s->queued + delta);
    atomic_store_explicit(&ms->queued, ms->n, memory_order_relaxed);
    if (ms->n && !ms->active) { /* the watchdog's list of models with queued requests */
        ms->active = true;
        ms->prev_active = NULL;
        ms->next_active = s->active_head;
        if (s->active_head)
            s->active_head->prev_active = ms;
        s->active_head = ms;
    } else if (!ms->n && ms->active) {
        ms->active = false;
        if (ms->prev_active)
            ms->prev_active->next_active = ms->next_active;
        else
            s->active_head = ms->next_active;
        if (ms->next_active)
            ms->next_active->prev_active = ms->prev_active;
    }
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

static void unwait(osv_serve_t *s, mstate_t *ms)
{
    if (!ms->waiting)
        return;
    for (mstate_t **p = &s->wait_head; *p; p = &(*p)->next_wait) {
        if (*p == ms) {
            *p = ms->next_wait;
            break;
        }
    }
    ms->waiting = false;
}

/* The model has something to look at now (an arrival, a run ended, a due time passed). */
static void wake_model(osv_serve_t *s, mstate_t *ms)
{
    unwait(s, ms);
    push_ready(s, ms);
}

static void wait_until(osv_serve_t *s, mstate_t *ms, uint64_t due)
{
    ms->due = due;
    if (ms->waiting)
        return;
    ms->waiting = true;
    ms->next_wait = s->wait_head;
    s->wait_head = ms;
}

/* Models whose forming batch is due go back to the ready list; returns the earliest due time still
 * ahead (0 = none). */
static uint64_t promote_due(osv_serve_t *s, uint64_t now)
{
    uint64_t next = 0;
    for (mstate_t **p = &s->wait_head; *p;) {
        mstate_t *ms = *p;
        if (ms->due <= now || s->stop) {
            *p = ms->next_wait;
            ms->waiting = false;
            push_ready(s, ms);
            continue;
        }
        next = !next || ms->due < next ? ms->due : next;
        p = &ms->next_wait;
    }
    return next;
}

/* ---- expiry: deadlines and queue timeouts of waiting requests (under lock) ---------------------------- */

/* Why r cannot wait any longer (0 = it can); sets its rc and err. A DELAY timeout moves it instead. */
static int expired(osv_serve_t *s, const mstate_t *ms, osv_sreq_t *r, uint64_t now)
{
    if (s->stop && atomic_load_explicit(&s->canceling, memory_order_relaxed))
        return r->rc = osv_err_set(&r->err, OSV_EUNAVAIL, "the server is shutting down");
    if (r->deadline && now >= r->deadline) {
        osv_stats_add_canceled(ms->stats);
        return osv_sched_deadline_error(r, "before the model could run: queued too long");
    }
    if (r->queue_timeout && now >= r->queue_timeout && !r->timed_out &&
        ms->levels[r->level].policy.timeout_action == OSV_TIMEOUT_REJECT)
        return r->rc = osv_err_set(&r->err, OSV_EUNAVAIL,
                                   "request timeout expired: it waited in model '%s''s queue longer than its "
                                   "queue policy allows (timeout_action REJECT), retry later",
                                   osv_model_name(ms->model));
    return 0;
}

/* Walks one queue: expired requests go to *dead (bnext-linked), DELAY timeouts to the level's delayed
 * queue. */
static void sweep_queue(osv_serve_t *s, mstate_t *ms, level_t *lv, rq_t *q, uint64_t now, osv_sreq_t **dead)
{
    for (osv_sreq_t *r = q->head, *nx; r; r = nx) {
        nx = r->next;
        if (expired(s, ms, r, now)) {
            rq_unlink(q, r);
            set_queued(s, ms, -1);
            r->bnext = *dead;
            *dead = r;
        } else if (q == &lv->main && r->queue_timeout && now >= r->queue_timeout) {
            rq_unlink(q, r); /* DELAY: behind every request of its level that has not timed out */
            r->timed_out = true;
            rq_push(&lv->delayed, r);
        }
    }
}

static void sweep_model(osv_serve_t *s, mstate_t *ms, uint64_t now, osv_sreq_t **dead)
{
    for (uint32_t l = 0; l < ms->n_levels; l++) {
        sweep_queue(s, ms, &ms->levels[l], &ms->levels[l].main, now, dead);
        sweep_queue(s, ms, &ms->levels[l], &ms->levels[l].delayed, now, dead);
    }
}

/* Answers requests that could not wait (outside the lock), in the order they were found. */
static void finish_dead(osv_serve_t *s, osv_sreq_t *dead)
{
    osv_sreq_t *fifo = NULL;
    while (dead) {
        osv_sreq_t *n = dead->bnext;
        dead->bnext = fifo;
        fifo = dead;
        dead = n;
    }
    while (fifo) {
        osv_sreq_t *n = fifo->bnext;
        fifo->phase_t1[OSV_PHASE_QUEUE] = osv_now_ns();
        fifo->ns[OSV_PHASE_QUEUE] = fifo->phase_t1[OSV_PHASE_QUEUE] - fifo->phase_t0[OSV_PHASE_QUEUE];
        osv_sched_finish(s, fifo);
        fifo = n;
    }
}

void osv_sched_expire(osv_serve_t *s, uint64_t now)
{
    osv_sreq_t *dead = NULL;
    pthread_mutex_lock(&s->lock);
    for (mstate_t *ms = s->active_head; ms; ms = ms->next_active)
        sweep_model(s, ms, now, &dead);
    pthread_mutex_unlock(&s->lock);
    finish_dead(s, dead);
}

/* ---- completion in order (preserve_ordering) ------------------------------------------------------- */

static void test_jitter_pause(const osv_serve_t *s)
{
    uint64_t ns = (osv_now_ns() >> 4) * 0x9e3779b97f4a7c15ull % s->test_jitter_ns;
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

void osv_sched_finish_all(osv_serve_t *s, osv_sreq_t *list)
{
    for (osv_sreq_t *r = list, *nx; r; r = nx) {
        nx = r->bnext; /* finishing in order may relink r */
        osv_sched_finish(s, r);
    }
}

void osv_sched_finish(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = r->ms;
    if (s->test_jitter_ns)
        test_jitter_pause(s);
    if (!ms || !ms->preserve) {
        r->complete(r);
        if (s->test_jitter_ns)
            test_jitter_pause(s); /* preempted after the hand-off: the client may already have its answer */
        return;
    }
    pthread_mutex_lock(&s->lock);
    osv_sreq_t **p = &ms->done_pending; /* sorted by seq */
    while (*p && (*p)->seq < r->seq)
        p = &(*p)->bnext;
    r->bnext = *p;
    *p = r;
    if (ms->draining) { /* the thread completing in order will reach r */
        pthread_mutex_unlock(&s->lock);
        return;
    }
    ms->draining = true;
    while (ms->done_pending && ms->done_pending->seq == ms->done_seq) {
        osv_sreq_t *d = ms->done_pending;
        ms->done_pending = d->bnext;
        ms->done_seq++;
        pthread_mutex_unlock(&s->lock);
        d->complete(d);
        pthread_mutex_lock(&s->lock);
    }
    ms->draining = false;
    pthread_mutex_unlock(&s->lock);
}

/* ---- forming what a worker runs (under lock) ------------------------------------------------------ */

static bool preferred(const osv_batching_config_t *bc, uint64_t rows)
{
    for (uint32_t i = 0; i < bc->n_preferred; i++)
        if (bc->preferred[i] == rows)
            return true;
    return false;
}

/* What form() decided. */
typedef struct formed {
    osv_sreq_t *members; /* bnext-linked, in order */
    uint32_t n;
    uint64_t due;        /* wait until then (members == NULL) */
} formed_t;

/* Pops the first k candidates (bnext-linked from c) from their queues. */
static osv_sreq_t *pop_candidates(osv_serve_t *s, mstate_t *ms, osv_sreq_t *c, uint32_t k)
{
    osv_sreq_t *first = c;
    for (uint32_t i = 0; i < k; i++, c = c->bnext) {
        rq_unlink(c->q, c);
        set_queued(s, ms, -1);
        if (i + 1 == k)
            c->bnext = NULL;
    }
    return first;
}

/* The batch of the first k candidates (bnext-linked from `first`, the oldest request), popped into f. When
 * their rows do not lie back to back in one stage (staged requests whose bodies completed in another order
 * than their rows were handed out), a batch of as many rows from the oldest request's queue that do — around
 * the oldest request's rows, all of them queued — is taken instead: the same size, the oldest request in it,
 * read in place rather than gathered. The requests it passes over are as ready as those it takes and go in
 * the next batch. */
static void take_batch(osv_serve_t *s, mstate_t *ms, osv_sreq_t *first, uint32_t k, formed_t *f)
{
    uint64_t rows = 0;
    uint32_t n = 0;
    osv_sreq_t *c = first, *w;
    for (uint32_t i = 0; i < k; i++, c = c->bnext)
        rows += c->rows;
    if (k > 1 && !osv_stage_tiles(first, k) && (w = osv_stage_window(first, rows, &n)) != NULL) {
        for (osv_sreq_t *r = w; r; r = r->bnext) {
            rq_unlink(r->q, r);
            set_queued(s, ms, -1);
        }
        f->members = w;
        f->n = n;
        return;
    }
    f->members = pop_candidates(s, ms, first, k);
    f->n = k;
}

/* The adaptive mode's rows for the next batch: the curve's cap, but no more than an even share of what
 * is queued among the instances that may run the model (instance_group count, else the workers). A
 * worker that took the whole queue would leave the others idle until answers bring new requests: with
 * 4 clients on 2 workers, batches of 2 ran the PaddleOCR classifier at 0.93× of batching off. */
static uint64_t adaptive_cap(const osv_serve_t *s, const mstate_t *ms)
{
    uint64_t cap = osv_batcher_cap(ms->bat);
    uint64_t inst = ms->instances ? ms->instances : (uint64_t)(s->n_workers > 0 ? s->n_workers : 1);
    uint64_t share = inst > 1 ? ((uint64_t)ms->n + inst - 1) / inst : cap;
    return share && share < cap ? share : cap;
}

/* Triton's dynamic batcher (dynamic_batch_scheduler.cc, GetDynamicBatch): requests in priority order,
 * FIFO within a level, join while their shapes agree and the rows fit max_batch_size. Without the delay
 * exceeded, a batch stops at the largest preferred size it reached (or before passing the largest
 * preferred size); a batch that reached that size, or cannot grow (the next request does not fit or
 * differs), or whose oldest request waited max_queue_delay_microseconds, is sent; otherwise it waits
 * for the delay to pass or another request. The adaptive mode caps the rows at its measured cap and
 * waits only as long as the expected gain pays (batch.c). */
static void form(osv_serve_t *s, mstate_t *ms, uint64_t now, formed_t *f, osv_sreq_t **dead)
{
    const osv_batching_config_t *bc = ms->bc;
    bool adaptive = osv_batching_effective_mode(bc) == OSV_BATCHING_ADAPTIVE;
    uint64_t cap = adaptive ? adaptive_cap(s, ms) : bc->max_batch_size;
    uint64_t max_pref = bc->n_preferred ? bc->preferred[bc->n_preferred - 1] : cap;
    uint64_t rows = 0, best = 0, oldest = UINT64_MAX, deadline = 0;
    uint32_t n = 0, best_n = 0;
    osv_sreq_t *first = NULL, **tail = &first;
    bool send_now = false;
    memset(f, 0, sizeof *f);
    sweep_model(s, ms, now, dead);
    for (uint32_t l = 0; l < ms->n_levels && !send_now; l++) {
        for (int d = 0; d < 2 && !send_now; d++) {
            rq_t *q = d ? &ms->levels[l].delayed : &ms->levels[l].main;
            for (osv_sreq_t *r = q->head; r; r = r->next) {
                if (first && (!osv_batch_compatible(first, r) || rows + r->rows > cap)) {
                    send_now = true;
                    break;
                }
                if (first && rows + r->rows > max_pref && !best)
                    best = rows, best_n = n;
                *tail = r;
                tail = &r->bnext;
                rows += r->rows;
                n++;
                oldest = r->phase_t0[OSV_PHASE_QUEUE] < oldest ? r->phase_t0[OSV_PHASE_QUEUE] : oldest;
                if (r->deadline && (!deadline || r->deadline < deadline))
                    deadline = r->deadline;
                if (preferred(bc, rows))
                    best = rows, best_n = n;
                if (rows >= cap) {
                    send_now = true;
                    break;
                }
            }
        }
    }
    if (!n)
        return;
    uint64_t delay = bc->max_queue_delay_us * 1000;
    bool delay_exceeded = now - oldest >= delay || s->stop;
    /* The adaptive mode waits only while a run of the model is in progress: an idle model's next
     * request would find a free instance anyway (and a lone client waits for this very answer). */
    if (adaptive && !send_now && !s->stop && !(best && best == rows) && ms->running > 0) {
        uint64_t wait = osv_batcher_adaptive_wait(ms->bat, rows, oldest, deadline, now);
        if (bc->max_queue_delay_set && now + wait > oldest + delay) /* an explicit delay bounds the wait */
            wait = oldest + delay > now ? oldest + delay - now : 0;
        delay_exceeded = wait == 0;
        if (!delay_exceeded) {
            f->due = now + wait;
            return;
        }
    }
    if (best && !delay_exceeded) {
        take_batch(s, ms, first, best_n, f);
        return;
    }
    if (send_now || delay_exceeded || rows >= max_pref) {
        take_batch(s, ms, first, n, f);
        return;
    }
    f->due = oldest + delay;
}

/* The next thing to do, under lock: offloaded front work first, then the next ready model's request
 * (or batch). Requests found expired on the way are put on *dead. */
static bool take(osv_serve_t *s, uint64_t now, osv_stask_t **task, formed_t *f, osv_sreq_t **dead)
{
    *task = NULL;
    memset(f, 0, sizeof *f);
    if (s->offload.head) {
        *task = s->offload.head;
        s->offload.head = (*task)->next;
        if (!s->offload.head)
            s->offload.tail = NULL;
        s->offload.n--;
        return true;
    }
    while (s->ready_head) {
        mstate_t *ms = s->ready_head;
        s->ready_head = ms->next_ready;
        if (!s->ready_head)
            s->ready_tail = NULL;
        ms->ready = false;
        if (ms->instances && ms->running >= ms->instances)
            continue; /* taken again when one of its runs ends */
        if (ms->batching) {
            form(s, ms, now, f, dead);
            if (!f->members) {
                if (f->due)
                    wait_until(s, ms, f->due);
                continue;
            }
        } else { /* one request, the oldest (the watchdog expires the others while they wait) */
            if (!ms->levels[0].main.head)
                continue;
            f->members = pop_candidates(s, ms, ms->levels[0].main.head, 1);
            f->n = 1;
        }
        ms->running++;
        if (ms->n)
            push_ready(s, ms); /* its next requests wait behind the other models' */
        return true;
    }
    return false;
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
    if (!r->deadline || !any || !own || ms->batching) /* a batch runs many at once: no estimate here */
        return false;
    /* A worker is free: nothing to wait for. Whether the run itself fits the deadline is for the
     * watchdog to judge (run times vary with the input); admission refuses only because of a queue. */
    if (ahead + (uint32_t)atomic_load_explicit(&s->running, memory_order_relaxed) < (uint32_t)s->n_workers)
        return false;
    *wait_ns = any > UINT64_MAX / 2 / runs2 ? UINT64_MAX / 2 : runs2 * any / 2;
    return *wait_ns + own > UINT64_MAX / 2 || now + *wait_ns + own > r->deadline;
}

/* A fast model with nothing queued runs on the submitting (loop) thread. A batching model does only in
 * the adaptive mode, which adds no delay to a request that finds nothing to join: a hand-off costs a
 * fast model more than its run, and batches still form from what queues while runs are in progress. */
static bool model_inlines(const osv_serve_t *s, const mstate_t *ms)
{
    return my_slot >= 0 && my_slot < s->o.loop_threads && !ms->instances && !ms->preserve &&
           (!ms->batching || osv_batching_effective_mode(ms->bc) == OSV_BATCHING_ADAPTIVE) &&
           atomic_load_explicit(&ms->ewma_ns, memory_order_relaxed) < s->o.inline_threshold_ns;
}

/* The model's recent runs were fast, but r's may not be: its run is estimated as the recent run time
 * scaled by its inputs' size against theirs (a run is at most linear in its input for the models that
 * vary: a 40× longer text line, a 30× larger image). A request far larger than the ones measured goes
 * to a worker, so one large input does not hold the loop's other connections for its run. */
static bool small_enough(const osv_serve_t *s, const osv_sreq_t *r, const mstate_t *ms)
{
    uint64_t seen = atomic_load_explicit(&ms->ewma_bytes, memory_order_relaxed),
             ns = atomic_load_explicit(&ms->ewma_ns, memory_order_relaxed);
    if (!seen || r->in_bytes <= seen)
        return true;
    return (double)ns * ((double)r->in_bytes / (double)seen) < (double)s->o.inline_threshold_ns;
}

static bool can_inline(osv_serve_t *s, const osv_sreq_t *r, const mstate_t *ms)
{
    return r->may_inline && model_inlines(s, ms) && atomic_load_explicit(&ms->queued, memory_order_relaxed) == 0 &&
           small_enough(s, r, ms);
}

/* The request's rows, priority level and queue timeout, from its model's settings. */
static void classify(mstate_t *ms, osv_sreq_t *r, uint64_t now)
{
    const osv_batching_config_t *bc = ms->bc;
    r->rows = bc->max_batch_size ? osv_infer_batch(r->inf) : 1;
    r->level = 0;
    r->queue_timeout = 0;
    r->timed_out = false;
    if (!ms->batching) {
        if (r->timeout_at && (!r->deadline || r->timeout_at < r->deadline)) {
            r->deadline = r->timeout_at; /* without a queue policy, `timeout` is a shorter deadline */
            r->deadline_ms = r->timeout_us / 1000;
            r->deadline_src = OSV_DEADLINE_REQUEST;
        }
        return;
    }
    if (bc->priority_levels)
        r->level = (r->priority >= 1 && r->priority <= bc->priority_levels ? (uint32_t)r->priority
                                                                            : bc->default_priority_level) - 1;
    const osv_queue_policy_t *p = &ms->levels[r->level].policy;
    if (p->default_timeout_us)
        r->queue_timeout = now + p->default_timeout_us * 1000;
    if (p->allow_timeout_override && r->timeout_at && (!r->queue_timeout || r->timeout_at < r->queue_timeout))
        r->queue_timeout = r->timeout_at;
}

/* ---- zero-copy batching: rows in the forming batch's input slot ------------------------------------------ */

bool osv_serve_stage(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = osv_mstate(r->model);
    osv_stage_t *x = NULL;
    r->stage = NULL;
    r->stage_row = 0;
    /* force_copy: the benchmarks' honest comparison copies every input; a cap of 1 never joins rows */
    /* A request this loop thread will likely collect (osv_serve_flush) takes the thread's own lane: the
     * rows of one wake-up's batch then lie back to back. */
    uint32_t lane = ms && collected.on && model_inlines(s, ms) ? 1 + (uint32_t)my_slot : 0;
    if (!ms || !ms->stager || s->o.force_copy || osv_batcher_cap(ms->bat) <= 1 ||
        !osv_stager_reserve(ms->stager, s->pool, r->inf, lane, &x, &r->stage_row))
        return false;
    r->stage = x;
    return true;
}

void *osv_serve_stage_input(const osv_sreq_t *r, uint32_t idx, uint64_t *len)
{
    osv_infer_input_info_t a;
    *len = 0;
    if (!r->stage || osv_infer_input_info(r->inf, idx, &a) != 0 || a.rank < 1 || a.dims[0] < 1)
        return NULL;
    return osv_stage_input(r->stage, idx, r->stage_row, (uint64_t)a.dims[0], len);
}

void osv_serve_unstage(osv_sreq_t *r)
{
    osv_stage_release(r->stage);
    r->stage = NULL;
}

/* A request that would run inline now waits for the end of the wake-up instead when its model batches
 * adaptively and a row gets cheaper in a batch (cap > 1): the wake-up's other requests may join it, at no
 * added delay beyond the events the loop handles anyway. */
static bool collect(const mstate_t *ms, osv_sreq_t *r)
{
    if (!collected.on || !ms->batching || osv_batcher_cap(ms->bat) <= 1)
        return false;
    r->next = NULL;
    if (collected.tail)
        collected.tail->next = r;
    else
        collected.head = r;
    collected.tail = r;
    return true;
}

int osv_serve_submit(osv_serve_t *s, osv_sreq_t *r)
{
    mstate_t *ms = osv_mstate(r->model);
    uint64_t wait_ns = 0;
    bool deadline_refused = false;
    int rc = 0;
    r->ms = ms;
    r->rc = 0;
    r->next = r->bnext = NULL;
    r->batch_id = 0;
    r->batch_requests = 1;
    r->cache_hit = false;
    r->cache_keyed = false;
    if (!ms)
        return osv_err_set(&r->err, OSV_EINVAL, "model '%s' has no scheduling state", osv_model_name(r->model));
    r->phase_t0[OSV_PHASE_QUEUE] = osv_now_ns(); /* the worker measures the wait from here */
    r->in_bytes = input_bytes(r);
    classify(ms, r, r->phase_t0[OSV_PHASE_QUEUE]);
    if (ms->cache && osv_cache_lookup(s->cache, r) == 1)
        return 1; /* a hit: answered from the cache, nothing queued or run */
    if (can_inline(s, r, ms) || s->n_workers == 0) {
        if (s->n_workers && collect(ms, r))
            return 0; /* run by osv_serve_flush on this thread, complete() called there */
        osv_sched_run_one(s, r);
        return 1;
    }
    level_t *lv = &ms->levels[r->level];
    pthread_mutex_lock(&s->lock);
    if (lv->main.n + lv->delayed.n >= lv->max) {
        rc = ms->n_levels > 1
                 ? osv_err_set(&r->err, OSV_EBUSY,
                               "model '%s' has too many queued requests at priority level %u, retry later",
                               osv_model_name(r->model), r->level + 1)
                 : osv_err_set(&r->err, OSV_EBUSY, "model '%s' has too many queued requests, retry later",
                               osv_model_name(r->model));
    } else if (would_miss_deadline(s, r, ms, s->queued, r->phase_t0[OSV_PHASE_QUEUE], &wait_ns)) {
        r->expected_wait_ns = wait_ns;
        deadline_refused = true; /* a capacity refusal: 503, retry later — not a 504 */
        rc = osv_err_set(&r->err, OSV_EBUSY,
                         "model '%s' would not finish before the request's deadline (about %" PRIu64
                         " ms of queued work ahead), retry later",
                         osv_model_name(r->model), wait_ns / 1000000);
    } else {
        r->seq = ms->next_seq++;
        rq_push(&lv->main, r);
        set_queued(s, ms, +1);
        if (ms->bat)
            osv_batcher_arrival(ms->bat, r->phase_t0[OSV_PHASE_QUEUE]);
        wake_model(s, ms);
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    if (deadline_refused)
        atomic_fetch_add_explicit(&s->deadline_refusals, 1, memory_order_relaxed);
    return rc;
}

void osv_serve_thread_collects(osv_serve_t *s)
{
    (void)s;
    collected.on = my_slot >= 0;
}

/* The requests of `list` (next-linked) that can join `first` (same model, compatible, within cap rows)
 * move to its bnext list, in order; returns how many it holds and leaves the others in *list. */
static uint32_t join_collected(osv_sreq_t *first, osv_sreq_t **list)
{
    mstate_t *ms = first->ms;
    uint64_t cap = osv_batcher_cap(ms->bat), rows = first->rows;
    osv_sreq_t **tail = &first->bnext, *rest = NULL, **rtail = &rest;
    uint32_t n = 1;
    first->bnext = NULL;
    for (osv_sreq_t *r = *list, *nx; r; r = nx) {
        nx = r->next;
        r->next = NULL;
        if (r->ms == ms && rows + r->rows <= cap && osv_batch_compatible(first, r)) {
            *tail = r;
            tail = &r->bnext;
            r->bnext = NULL;
            rows += r->rows;
            n++;
        } else {
            *rtail = r;
            rtail = &r->next;
        }
    }
    *list = rest;
    return n;
}

bool osv_serve_flush(osv_serve_t *s)
{
    osv_sreq_t *list = collected.head;
    collected.head = collected.tail = NULL;
    while (list) {
        osv_sreq_t *first = list;
        list = first->next;
        uint32_t n = join_collected(first, &list);
        mstate_t *ms = first->ms;
        osv_model_t *m = osv_model_ref(ms->model); /* ms lives in the model: kept past the last answer */
        uint64_t now = osv_now_ns();
        for (osv_sreq_t *q = first; q; q = q->bnext) {
            q->phase_t1[OSV_PHASE_QUEUE] = now;
            q->ns[OSV_PHASE_QUEUE] = now - q->phase_t0[OSV_PHASE_QUEUE];
        }
        if (n > 1) {
            osv_sched_finish_all(s, osv_batch_run(s, ms, first, n));
        } else {
            osv_sched_run_one(s, first);
            osv_sched_finish(s, first);
        }
        osv_model_release(m);
    }
    return collected.head != NULL; /* what the answers' callbacks submitted meanwhile */
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

/* The worker's run is over: the memory guard's gate opens and admission stops counting it as busy. */
static void run_ended(osv_serve_t *s, bool gate)
{
    if (gate)
        pthread_mutex_unlock(&s->mem_gate);
    atomic_fetch_sub_explicit(&s->running, 1, memory_order_relaxed);
}

static void run_taken(osv_serve_t *s, formed_t *f)
{
    osv_sreq_t *r = f->members;
    mstate_t *ms = r->ms;
    osv_model_t *m = osv_model_ref(ms->model); /* ms lives in the model: kept past the last answer */
    uint64_t now = osv_now_ns();
    for (osv_sreq_t *q = r; q; q = q->bnext) {
        q->phase_t1[OSV_PHASE_QUEUE] = now;
        q->ns[OSV_PHASE_QUEUE] = now - q->phase_t0[OSV_PHASE_QUEUE];
    }
    /* Memory guard: one run at a time while the group is near its limit (mem_gate). */
    bool gate = atomic_load_explicit(&s->mem_pressure, memory_order_relaxed) != 0;
    atomic_fetch_add_explicit(&s->running, 1, memory_order_relaxed);
    if (gate)
        pthread_mutex_lock(&s->mem_gate);
    /* Answers leave before the instance is free: the answers of one instance leave in the order its runs
     * ended. Freed first, the next run (microseconds on a small model) could be answered before this one:
     * low2 before low1 in a priority test. The worker stops counting as running (what admission's estimate
     * reads) before they leave, though: a client's next request, sent on an answer, must not find the
     * worker still busy and get a 503. */
    osv_sreq_t *left = r; /* the members still to answer */
    if (f->n == 1) {
        r->bnext = NULL;
        osv_sched_run_one(s, r);
    } else {
        left = osv_batch_run(s, ms, r, f->n);
    }
    run_ended(s, gate);
    osv_sched_finish_all(s, left);
    pthread_mutex_lock(&s->lock);
    ms->running--;
    if (ms->n)
        wake_model(s, ms); /* an instance is free: its queue may form a batch now */
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    osv_model_release(m);
}

static void wait_for_work(osv_serve_t *s, uint64_t next_due)
{
    if (!next_due) {
        pthread_cond_wait(&s->cond, &s->lock);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = osv_now_ns(), wait = next_due > now ? next_due - now : 0;
    ts.tv_sec += (time_t)(wait / 1000000000ull);
    ts.tv_nsec += (long)(wait % 1000000000ull);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->cond, &s->lock, &ts);
}

static void *worker_main(void *arg)
{
    osv_serve_t *s = arg;
    my_slot = s->o.loop_threads + atomic_fetch_add(&s->next_worker, 1);
    for (;;) {
        osv_stask_t *t;
        osv_sreq_t *dead = NULL;
        formed_t f;
        bool got;
        pthread_mutex_lock(&s->lock);
        for (;;) {
            uint64_t now = osv_now_ns();
            promote_due(s, now);
            if ((got = take(s, now, &t, &f, &dead)) || dead)
                break;
            if (s->stop && !s->wait_head && !s->queued)
                break;
            wait_for_work(s, promote_due(s, now)); /* take() may have put models on the wait list */
        }
        pthread_mutex_unlock(&s->lock);
        finish_dead(s, dead);
        if (t) {
            t->run(t);
            t->complete(t);
        } else if (got) {
            run_taken(s, &f);
        } else if (!dead) {
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
