/* serve_internal.h — internal to src/serve: the layer's state, shared by serve.c (lifecycle, memory
 * plan and guard, watchdog, control thread) and sched.c (queues, workers, admission, runs). */
#ifndef OSV_SERVE_INTERNAL_H
#define OSV_SERVE_INTERNAL_H

#include "serve/serve.h"

#define OSV_ATTACH_SCHED 2

/* Per model version, attached at load (OSV_ATTACH_SCHED) and freed with the model. */
typedef struct mstate {
    /* written under osv_serve_t.lock by fronts' threads (submit) and workers (take) */
    osv_sreq_t *head, *tail; /* its queue, FIFO */
    uint32_t n;              /* requests in it */
    bool ready;              /* on the ready list */
    struct mstate *next_ready;
    /* written by anyone, relaxed: counts and estimates */
    _Atomic uint32_t queued;  /* = n, readable without the lock */
    _Atomic uint64_t ewma_ns; /* recent ORT run time (model runs only) */
    /* read-only after load */
    uint32_t max_queue;
    int64_t deadline_ms; /* the model's config.json deadline_ms; -1 = the server's */
    osv_stats_t *stats;
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

    /* the queues, under lock (cond: workers wait for work) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    mstate_t *ready_head, *ready_tail; /* models with queued requests, FIFO */
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
    /* workers take it one run at a time while the memory guard is on */
    pthread_mutex_t mem_gate;
};

/* sched.c */
int osv_sched_start(osv_serve_t *s, osv_err_t *err);
void osv_sched_stop(osv_serve_t *s);
void osv_sched_scan(osv_serve_t *s, uint64_t now); /* the watchdog's pass over the slots */
mstate_t *osv_mstate(const osv_model_t *m);

/* serve.c */
void osv_serve_watch_memory(osv_serve_t *s, uint64_t now); /* watchdog thread only */

#endif
