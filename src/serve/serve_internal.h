/* serve_internal.h — internal to src/serve: the layer's state, shared by serve.c (lifecycle, memory
 * plan and guard, watchdog, control thread) and sched.c (queues, workers, admission, runs). */
#ifndef OSV_SERVE_INTERNAL_H
#define OSV_SERVE_INTERNAL_H

#include "serve/serve.h"

typedef struct osv_cache osv_cache_t; /* cache.c */

#define OSV_ATTACH_SCHED 2

/* A FIFO of requests (next-linked). */
typedef struct rq {
    osv_sreq_t *head, *tail;
    uint32_t n;
} rq_t;

/* One priority level of a model's queue (a model without dynamic batching has one). Under
 * osv_serve_t.lock. */
typedef struct level {
    rq_t main;     /* in arrival order */
    rq_t delayed;  /* queue timeout passed with timeout_action DELAY: behind main, before the next level */
    uint32_t max;  /* requests it may hold (main + delayed) before 503 */
    osv_queue_policy_t policy;
} level_t;

typedef struct osv_batcher osv_batcher_t; /* batch.c */
typedef struct osv_stager osv_stager_t;   /* stage.c */
typedef struct osv_stage osv_stage_t;

/* Per model version, attached at load (OSV_ATTACH_SCHED) and freed with the model. */
typedef struct mstate {
    /* written under osv_serve_t.lock by fronts' threads (submit), workers (take, run end) and the
     * watchdog (expiry) */
    level_t *levels; /* n_levels of them, stored after this struct */
    uint32_t n;      /* requests queued, all levels */
    bool ready;      /* on the ready list */
    struct mstate *next_ready;
    bool waiting;    /* on the wait list: a batch forms until `due` (a request arriving re-checks) */
    uint64_t due;
    struct mstate *next_wait;
    bool active;     /* on the active list (has queued requests): the watchdog expires them */
    struct mstate *prev_active, *next_active;
    uint32_t running;  /* runs (batches) of this model in progress on workers */
    uint64_t next_seq; /* preserve_ordering: the next request's place */
    uint64_t done_seq; /* preserve_ordering: the next place to complete */
    osv_sreq_t *done_pending; /* completed out of order, sorted by seq (bnext-linked) */
    bool draining;     /* a thread is completing pending requests in order */
    /* written by anyone, relaxed: counts and estimates */
    _Atomic uint32_t queued;  /* = n, readable without the lock */
    _Atomic uint64_t ewma_ns; /* recent ORT run time (model runs only) */
    _Atomic uint64_t ewma_bytes; /* input bytes of those runs, the same average; 0 = none run yet */
    /* read-only after load */
    osv_model_t *model; /* not a reference: the state lives inside the model */
    uint64_t uid;       /* this load of the model, server-wide unique (response cache keys) */
    uint32_t n_levels;
    uint32_t max_queue;
    int64_t deadline_ms; /* the model's config.json deadline_ms; -1 = the server's */
    uint32_t instances;  /* runs at once (instance_group count); 0 = as many as there are workers */
    const osv_batching_config_t *bc; /* the model's batching settings */
    bool batching;       /* dynamic batching */
    bool preserve;       /* preserve_ordering */
    bool cache;          /* response_cache enabled (and the server has a cache) */
    osv_stats_t *stats;
    osv_batcher_t *bat;  /* batch.c: batch objects, the cost curve, arrivals */
    osv_stager_t *stager; /* stage.c: the forming batch's input slot (dynamic batching with a batch dim) */
} mstate_t;

/* One per thread that runs models (fronts' loops, then workers): what it runs now, for the
 * watchdog. Written by its thread (begin/end) and the watchdog (busy, while canceling). */
typedef struct watch_slot {
    _Alignas(64) osv_infer_t *_Atomic inf;
    _Atomic uint64_t deadline;
    _Atomic int busy; /* the watchdog is looking at this slot */
} watch_slot_t;

/* A bounded FIFO of tasks (offloaded front work, control tasks); under its owner's lock. */
typedef struct task_fifo {
    osv_stask_t *head, *tail;
    uint32_t n, cap;
} task_fifo_t;

/* Appends t: 0, or OSV_EBUSY when cap tasks are waiting. */
static inline int task_fifo_push(task_fifo_t *q, osv_stask_t *t)
{
    if (q->n >= q->cap)
        return OSV_EBUSY;
    t->next = NULL;
    if (q->tail)
        q->tail->next = t;
    else
        q->head = t;
    q->tail = t;
    q->n++;
    return 0;
}

/* The oldest task, removed; NULL when empty. */
static inline osv_stask_t *task_fifo_pop(task_fifo_t *q)
{
    osv_stask_t *t = q->head;
    if (t) {
        q->head = t->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
    }
    return t;
}

struct osv_serve {
    /* read-only after osv_serve_create */
    osv_serve_opts_t o;
    osv_env_t *env;
    osv_repo_t *repo;
    osv_pool_t *pool;
    osv_img_budget_t *img_budget;
    osv_shm_t *shm;
    osv_auth_t *auth;
    int n_workers, n_slots; /* slots: loop threads first, then workers */
    watch_slot_t *slots;
    uint64_t mem_limit; /* the cgroup limit at start; 0 = no limit, no guard */
    uint64_t test_jitter_ns; /* ORTSERVE_TEST_ANSWER_JITTER_US (a test hook): each answer is handed on after a
                              * pause of up to this long and its worker pauses again after, as if preempted
                              * either side of the hand-off; 0 = none */

    /* the queues, under lock (cond: workers wait for work) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    mstate_t *ready_head, *ready_tail; /* models with work a worker can take now, FIFO */
    mstate_t *wait_head;               /* models whose batch forms until their `due` time */
    mstate_t *active_head;             /* models with queued requests (expired by the watchdog) */
    task_fifo_t offload;
    uint32_t queued;  /* inference requests queued, all models */
    bool stop;
    pthread_t *workers;
    _Atomic int next_worker;

    /* the control thread, under control_lock */
    pthread_mutex_t control_lock;
    pthread_cond_t control_cond;
    task_fifo_t control;
    bool control_stop, control_started;
    pthread_t control_thread;

    /* the watchdog thread (also the memory guard's) */
    pthread_t watchdog;
    _Atomic int watchdog_stop;
    _Atomic int64_t *busy_hint; /* fronts' requests in flight (fast ticks), may be NULL */
    uint64_t mem_next_check;    /* watchdog thread only */

    /* written by anyone, relaxed */
    _Atomic uint64_t run_ewma_ns; /* recent ORT run time, any model */
    _Atomic int running;          /* workers running a request */
    _Atomic int canceling;        /* the drain timed out */
    _Atomic int mem_pressure;
    _Atomic uint64_t mem_working_set, mem_shed;
    _Atomic uint64_t mem_reserved; /* untouched shared memory reserved by requests in flight */
    _Atomic uint64_t deadline_refusals;
    _Atomic uint64_t batch_ids;  /* the last batch number given */
    osv_cache_t *cache;          /* the response cache (NULL: --cache-size 0); cache.c */
    /* workers take it one run at a time while the memory guard is on */
    pthread_mutex_t mem_gate;
};

/* sched.c */
/* r's 504: "the deadline of N ms (who set it) passed <when>"; returns OSV_ETIMEDOUT. */
int osv_sched_deadline_error(osv_sreq_t *r, const char *when);
/* After a run: a cancellation (OSV_ECANCELED) becomes the 504 of r's deadline, or of the drain. */
void osv_sched_timeout_error(osv_serve_t *s, osv_sreq_t *r);
int osv_sched_start(osv_serve_t *s, osv_err_t *err);
void osv_sched_stop(osv_serve_t *s);
void osv_sched_scan(osv_serve_t *s, uint64_t now);   /* the watchdog's pass over the slots */
void osv_sched_expire(osv_serve_t *s, uint64_t now); /* ... and over the queues (deadlines, timeouts) */
mstate_t *osv_mstate(const osv_model_t *m);
/* Creates a model's scheduling state from its config (serve.c's load hook). */
int osv_mstate_create(const osv_serve_opts_t *o, osv_model_t *m, bool cache, mstate_t **out, osv_err_t *err);
void osv_mstate_free(void *p);
/* Runs one request on this thread (its own infer, under the watchdog): sets rc, err and times. */
void osv_sched_run_one(osv_serve_t *s, osv_sreq_t *r);
/* A request is finished: through the model's ordering gate (preserve_ordering) to complete(). */
void osv_sched_finish(osv_serve_t *s, osv_sreq_t *r);
/* A run of the model took `ns` and read `bytes` of input: its run-time estimate, and the input size the
 * inline choice scales that estimate by (model runs only, lone or batched). */
void osv_sched_note_model_run(mstate_t *ms, uint64_t ns, uint64_t bytes);
/* Runs inf under the watchdog (deadline: absolute ns, 0 = none), retrying ORT allocation failures. */
int osv_sched_run_infer(osv_serve_t *s, osv_infer_t *inf, uint64_t deadline, osv_stats_t *st, osv_err_t *err);
/* Registers the calling thread's run for the watchdog (deadline: absolute ns, 0 = none). */
void osv_sched_watch(osv_serve_t *s, osv_infer_t *inf, uint64_t deadline);

/* batch.c: joining a model's requests into one run */
int osv_batcher_create(osv_model_t *m, const osv_batching_config_t *bc, osv_batcher_t **out, osv_err_t *err);
void osv_batcher_free(osv_batcher_t *b);
/* Rows the batcher takes at most now (max_batch_size, or the adaptive mode's cap). Any thread. */
uint32_t osv_batcher_cap(const osv_batcher_t *b);
/* A request arrives (under lock): the arrival rate the adaptive mode expects. */
void osv_batcher_arrival(osv_batcher_t *b, uint64_t now);
/* A run of `rows` rows took ns (a batch: gathering and running): the cost curve learns from it. */
void osv_batcher_note(osv_batcher_t *b, uint64_t rows, uint64_t ns);
/* Adaptive mode, under lock: how long to let a batch of `rows` rows (oldest enqueued at `oldest`, the
 * earliest member deadline `deadline`, 0 = none) wait for more; 0 = send it now. */
uint64_t osv_batcher_adaptive_wait(const osv_batcher_t *b, uint64_t rows, uint64_t oldest, uint64_t deadline,
                                   uint64_t now);
/* Runs the members (bnext-linked, all compatible, at least two) as one batch on this worker. Members that
 * fail their preparation, and those run alone when no batch can form (but the last), are finished here;
 * the rest are returned (bnext-linked, in order) for the caller to finish with osv_sched_finish_all once
 * the worker's run is over — so that a client answered last never finds this worker still busy. */
osv_sreq_t *osv_batch_run(osv_serve_t *s, mstate_t *ms, osv_sreq_t *members, uint32_t n);
/* osv_sched_finish for each request of a bnext-linked list, in order. */
void osv_sched_finish_all(osv_serve_t *s, osv_sreq_t *list);
/* True when r can run in one batch with `first` (same inputs' datatypes and non-batch dims, no
 * custom execute). */
bool osv_batch_compatible(const osv_sreq_t *first, const osv_sreq_t *r);
/* The cost curve as measured: up to cap points of (rows, ns per row); returns how many. */
uint32_t osv_batcher_curve(const osv_batcher_t *b, uint32_t cap, uint32_t *rows, uint64_t *row_ns);

/* stage.c: the forming batch's input slot, received into (zero-copy batching; serve.h, osv_serve_stage) */
/* cap rows per stage; lanes open stages (0: batches workers form; 1 + i: those loop thread i collects). */
int osv_stager_create(osv_model_t *m, uint64_t cap, uint32_t lanes, osv_stager_t **out, osv_err_t *err);
void osv_stager_free(osv_stager_t *g);
/* Reserves inf's rows in the lane's open stage (opening one from pool when needed) and binds each of its
 * inputs there: true with *out (one use of it) and the first row, or false with nothing changed. */
bool osv_stager_reserve(osv_stager_t *g, osv_pool_t *pool, osv_infer_t *inf, uint32_t lane, osv_stage_t **out,
                        uint64_t *row0);
/* A batch reads the stage: one more use. Any thread. */
void osv_stage_hold(osv_stage_t *x);
/* One use less (NULL: nothing); the last one gives the slot back. Any thread. */
void osv_stage_release(osv_stage_t *x);
/* True when the members' (bnext-linked) rows tile one stage back to back: *members is then sorted by
 * row (the batch's row order), *stage and *row0 say where they start. May reorder *members either way. */
bool osv_stage_tile(osv_sreq_t **members, osv_stage_t **stage, uint64_t *row0);
/* Under osv_serve_t.lock: a staged request entered (or left) its queue — the stage's rows know who holds
 * them while queued. No-op for a request that is not staged. */
void osv_stage_queued(osv_sreq_t *r, bool queued);
/* Under lock: true when the first n candidates (bnext-linked) hold back-to-back rows of one stage. */
bool osv_stage_tiles(const osv_sreq_t *first, uint32_t n);
/* Under lock: queued requests of h's queue whose rows, with h's, are exactly `rows` back-to-back rows of
 * h's stage (starting as early as they can): bnext-linked in row order, *n of them; NULL when there are
 * none such (or h is not staged). Nothing is unlinked. */
osv_sreq_t *osv_stage_window(osv_sreq_t *h, uint64_t rows, uint32_t *n);
/* Input i's rows [row0, row0 + rows) of the stage, *len bytes; NULL when out of its range. */
void *osv_stage_input(const osv_stage_t *x, uint32_t i, uint64_t row0, uint64_t rows, uint64_t *len);

/* serve.c */
void osv_serve_watch_memory(osv_serve_t *s, uint64_t now); /* watchdog thread only */

#endif
