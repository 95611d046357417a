/* sched.c — worker threads over one bounded FIFO (mutex + condvar: a hand-off costs microseconds,
 * which only requests for slow models pay), per-model admission counts, and the deadline watchdog
 * thread that cancels overdue ORT runs. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "http/sched.h"

typedef struct task {
    osv_conn_t *c;
    osv_task_fn fn;
    osv_model_sched_t *ms;
} task_t;

typedef struct watch_slot {
    _Alignas(64) osv_infer_t *_Atomic inf;
    _Atomic uint64_t deadline;
    _Atomic int busy; /* the watchdog is looking at this slot */
} watch_slot_t;

struct osv_sched {
    osv_server_t *srv;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    task_t *ring;
    uint32_t cap, head, n;
    bool stop;
    pthread_t *threads;
    int n_workers;
    int first_slot;
    _Atomic int next_worker;
    watch_slot_t *slots;
    int n_slots;
    pthread_t watchdog;
    _Atomic int watchdog_stop;
    _Atomic uint64_t run_ewma_ns; /* recent time a worker spends on a task, any model */
    _Atomic int running;          /* workers running a task */
};

static _Thread_local int my_slot = -1;

int osv_watch_slot(void)
{
    return my_slot;
}

void osv_watch_set_slot(int slot)
{
    my_slot = slot;
}

osv_model_sched_t *osv_model_sched(const osv_model_t *m)
{
    return osv_model_attachment(m, OSV_ATTACH_SCHED);
}

void osv_model_sched_note_run(osv_model_sched_t *ms, uint64_t ns)
{
    uint64_t old = atomic_load_explicit(&ms->ewma_ns, memory_order_relaxed);
    uint64_t nv = old ? old - old / 8 + ns / 8 : ns; /* EWMA with weight 1/8 */
    atomic_store_explicit(&ms->ewma_ns, nv, memory_order_relaxed);
}

static void *worker_main(void *arg)
{
    osv_sched_t *q = arg;
    my_slot = q->first_slot + atomic_fetch_add(&q->next_worker, 1);
    for (;;) {
        task_t t;
        pthread_mutex_lock(&q->lock);
        while (q->n == 0 && !q->stop)
            pthread_cond_wait(&q->cond, &q->lock);
        if (q->n == 0 && q->stop) {
            pthread_mutex_unlock(&q->lock);
            return NULL;
        }
        t = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->n--;
        pthread_mutex_unlock(&q->lock);
        atomic_fetch_sub_explicit(&t.ms->queued, 1, memory_order_relaxed);
        t.c->req.phase_t1[0] = osv_now_ns();
        t.c->req.ns[OSV_PHASE_QUEUE] = t.c->req.phase_t1[0] - t.c->req.phase_t0[0];
        /* Memory guard: one run at a time while the group is near its limit (http.h, mem_gate). */
        bool gate = atomic_load_explicit(&q->srv->mem_pressure, memory_order_relaxed) != 0;
        atomic_fetch_add_explicit(&q->running, 1, memory_order_relaxed);
        if (gate)
            pthread_mutex_lock(&q->srv->mem_gate);
        t.fn(t.c);
        if (gate)
            pthread_mutex_unlock(&q->srv->mem_gate);
        atomic_fetch_sub_explicit(&q->running, 1, memory_order_relaxed);
        uint64_t took = osv_now_ns() - t.c->req.phase_t1[0], old = atomic_load(&q->run_ewma_ns);
        atomic_store(&q->run_ewma_ns, old ? old - old / 8 + took / 8 : took); /* one writer at a time is not
                                                                                  needed: an estimate */
        osv_loop_complete(t.c);
    }
}

/* True when a request that has to wait (every worker busy) behind `ahead` queued tasks would, by the
 * recent run times, finish after its deadline: the wait is ahead / workers runs of any model plus
 * half a run for those in progress, then one run of its own. Saturating arithmetic: the estimate
 * only has to be right when it is small. */
static bool would_miss_deadline(osv_sched_t *q, const osv_conn_t *c, const osv_model_sched_t *ms,
                                uint32_t ahead, uint64_t now, uint64_t *wait_ns)
{
    uint64_t any = atomic_load_explicit(&q->run_ewma_ns, memory_order_relaxed);
    uint64_t own = atomic_load_explicit(&ms->ewma_ns, memory_order_relaxed);
    uint64_t runs2 = 2ull * ahead / (uint64_t)q->n_workers + 1; /* in half runs */
    if (!c->req.deadline || !any || !own)
        return false;
    /* A worker is free: nothing to wait for. Whether the run itself fits the deadline is for the
     * watchdog to judge (run times vary with the input); admission refuses only because of a queue. */
    if (ahead + (uint32_t)atomic_load_explicit(&q->running, memory_order_relaxed) < (uint32_t)q->n_workers)
        return false;
    *wait_ns = any > UINT64_MAX / 2 / runs2 ? UINT64_MAX / 2 : runs2 * any / 2;
    return *wait_ns + own > UINT64_MAX / 2 || now + *wait_ns + own > c->req.deadline;
}

int osv_sched_submit(osv_sched_t *q, osv_conn_t *c, osv_task_fn fn, osv_model_sched_t *ms)
{
    int rc = 0;
    uint64_t wait_ns = 0;
    if (atomic_fetch_add_explicit(&ms->queued, 1, memory_order_relaxed) >= ms->max_queue) {
        atomic_fetch_sub_explicit(&ms->queued, 1, memory_order_relaxed);
        return OSV_EBUSY;
    }
    c->req.phase_t0[0] = osv_now_ns(); /* the worker measures the wait from here */
    pthread_mutex_lock(&q->lock);
    if (q->n == q->cap) {
        rc = OSV_EBUSY;
    } else if (would_miss_deadline(q, c, ms, q->n, c->req.phase_t0[0], &wait_ns)) {
        rc = OSV_ETIMEDOUT;
        c->req.expected_wait_ns = wait_ns;
    } else {
        q->ring[(q->head + q->n) % q->cap] = (task_t){c, fn, ms};
        q->n++;
        pthread_cond_signal(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
    if (rc)
        atomic_fetch_sub_explicit(&ms->queued, 1, memory_order_relaxed);
    return rc;
}

uint32_t osv_sched_depth(osv_sched_t *q)
{
    uint32_t n;
    pthread_mutex_lock(&q->lock);
    n = q->n;
    pthread_mutex_unlock(&q->lock);
    return n;
}

/* ---- watchdog -------------------------------------------------------------------------------------- */

void osv_watch_begin(osv_sched_t *q, int slot, osv_infer_t *inf, uint64_t deadline)
{
    if (slot < 0 || slot >= q->n_slots)
        return;
    /* Runs without a deadline are registered too, so a drain that times out can cancel them. */
    atomic_store(&q->slots[slot].deadline, deadline ? deadline : UINT64_MAX);
    atomic_store(&q->slots[slot].inf, inf);
}

void osv_watch_end(osv_sched_t *q, int slot)
{
    if (slot < 0 || slot >= q->n_slots)
        return;
    if (!atomic_load_explicit(&q->slots[slot].inf, memory_order_relaxed))
        return;
    atomic_store(&q->slots[slot].inf, NULL);
    while (atomic_load(&q->slots[slot].busy))
        ; /* the watchdog is canceling this run right now: it finishes in nanoseconds */
}

static void scan(osv_sched_t *q, uint64_t now)
{
    for (int i = 0; i < q->n_slots; i++) {
        watch_slot_t *w = &q->slots[i];
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

void osv_sched_cancel_all(osv_sched_t *q)
{
    for (int i = 0; i < q->n_slots; i++)
        atomic_store(&q->slots[i].deadline, 0); /* due now: the next scan cancels them */
    scan(q, osv_now_ns());
}

static void *watchdog_main(void *arg)
{
    osv_sched_t *q = arg;
    while (!atomic_load(&q->watchdog_stop)) {
        /* 2 ms ticks while requests are in flight (deadlines are met within that), 50 ms when idle. */
        long ns = atomic_load(&q->srv->inflight) > 0 ? 2000000L : 50000000L;
        struct timespec ts = {0, ns};
        nanosleep(&ts, NULL);
        uint64_t now = osv_now_ns();
        scan(q, now);
        osv_server_watch_memory(q->srv, now);
    }
    return NULL;
}

int osv_sched_create(osv_server_t *s, int workers, uint32_t capacity, int n_slots, osv_sched_t **out,
                     osv_err_t *err)
{
    osv_sched_t *q = osv_calloc(1, sizeof *q);
    if (!q)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    q->srv = s;
    q->cap = capacity ? capacity : 1;
    q->ring = osv_calloc(q->cap, sizeof *q->ring);
    q->threads = osv_calloc((size_t)workers + 1, sizeof *q->threads);
    q->n_slots = n_slots;
    q->first_slot = n_slots - workers;
    q->slots = osv_calloc((size_t)n_slots, sizeof *q->slots);
    if (!q->ring || !q->threads || !q->slots) {
        osv_free(q->ring);
        osv_free(q->threads);
        osv_free(q->slots);
        osv_free(q);
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&q->threads[i], NULL, worker_main, q) != 0) {
            atomic_store(&q->watchdog_stop, 2); /* not started */
            osv_sched_destroy(q);
            return osv_err_set(err, OSV_ENOMEM, "cannot start worker threads");
        }
        q->n_workers++;
    }
    if (pthread_create(&q->watchdog, NULL, watchdog_main, q) != 0) {
        atomic_store(&q->watchdog_stop, 2);
        osv_sched_destroy(q);
        return osv_err_set(err, OSV_ENOMEM, "cannot start the watchdog thread");
    }
    *out = q;
    return 0;
}

void osv_sched_destroy(osv_sched_t *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < q->n_workers; i++)
        pthread_join(q->threads[i], NULL);
    if (atomic_exchange(&q->watchdog_stop, 1) != 2)
        pthread_join(q->watchdog, NULL);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    osv_free(q->ring);
    osv_free(q->threads);
    osv_free(q->slots);
    osv_free(q);
}
