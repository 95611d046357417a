/* sched.h — internal: inference workers, the bounded request queue, and the deadline watchdog.
 *
 * Requests for models slower than the inline threshold are queued here and run by worker threads;
 * admission is bounded per model (max_queue) and overall, so overload becomes 503 instead of
 * unbounded memory. The watchdog cancels ORT runs whose deadline passed (RunOptionsSetTerminate):
 * each thread that runs models owns one watch slot it registers its current run in. */
#ifndef OSV_HTTP_SCHED_H
#define OSV_HTTP_SCHED_H

#include <stdatomic.h>
#include <stdint.h>

#include "http/http.h"

typedef void (*osv_task_fn)(osv_conn_t *c);

/* Per-model scheduling state, attached to each model version (OSV_ATTACH_SCHED). */
typedef struct osv_model_sched {
    _Atomic uint32_t queued;  /* requests of this model waiting in the queue */
    _Atomic uint64_t ewma_ns; /* recent Run time, for the inline decision */
    uint32_t max_queue;
    int64_t deadline_ms; /* -1 = server default */
} osv_model_sched_t;

#define OSV_ATTACH_SCHED 2

/* Creates `workers` threads (their watch slots are first_slot..) and a queue of `capacity`. */
int osv_sched_create(osv_server_t *s, int workers, uint32_t capacity, int n_slots, osv_sched_t **out,
                     osv_err_t *err);
/* Queues fn(c) for a worker. OSV_EBUSY when the model's or the whole queue is full; OSV_ETIMEDOUT
 * when, by recent run times, the request would finish after its deadline (c->req.expected_wait_ns
 * set): refused at once instead of spending a queue place and a run on an answer nobody waits for.
 * Thread: loop. */
int osv_sched_submit(osv_sched_t *q, osv_conn_t *c, osv_task_fn fn, osv_model_sched_t *ms);
/* Requests waiting in the queue now. */
uint32_t osv_sched_depth(osv_sched_t *q);
/* Cancels every run in progress (the drain timed out). Any thread. */
void osv_sched_cancel_all(osv_sched_t *q);
/* Stops after the queue is empty; joins workers and the watchdog. */
void osv_sched_destroy(osv_sched_t *q);

/* Deadline watchdog. Each thread that runs models has a slot (loops 0..L-1, then workers);
 * registration is two atomic stores. */
int osv_watch_slot(void);
void osv_watch_set_slot(int slot);
void osv_watch_begin(osv_sched_t *q, int slot, osv_infer_t *inf, uint64_t deadline);
void osv_watch_end(osv_sched_t *q, int slot);

/* Per-model state helpers. */
osv_model_sched_t *osv_model_sched(const osv_model_t *m);
void osv_model_sched_note_run(osv_model_sched_t *ms, uint64_t ns);

#endif
