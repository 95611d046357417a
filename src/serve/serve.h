/* serve.h — internal: the protocol-neutral request layer every front submits inferences to.
 *
 * An osv_serve_t owns what requests share, whatever protocol they came in by: the slot pool, the
 * image decode budget, the shared-memory registry, the bearer tokens, the inference workers with
 * their per-model queues, the deadline watchdog, the memory guard and the control thread that loads
 * and unloads models. It includes no HTTP, JSON or protobuf header: a front decodes its wire format
 * into an osv_sreq_t (the model, the core's osv_infer_t with its inputs declared and bound, the
 * deadline, the priority) and gets the request back finished, with output views to encode.
 *
 * One request, as data through this layer:
 *   front: decode → osv_serve_admit (memory guard) → [osv_serve_stage: rows in the forming batch] →
 *          lay out, fill or bind inputs → osv_serve_submit
 *   serve: inline on the submitting thread (a fast model with nothing queued; with adaptive batching,
 *          at the end of the loop's wake-up, together with what the wake-up held: osv_serve_flush) or the
 *          model's queue; a worker takes it, runs prepare (e.g. image decoding), then the model under the
 *          watchdog
 *   front: complete() on the thread that ran it (a worker: encode there, then hand the response to
 *          the connection's event loop) — or, inline, right after osv_serve_submit returns.
 *
 * Threads. Fronts submit from their event-loop threads; workers, the watchdog and the control thread
 * belong to this layer. Each struct below labels its fields with the thread that writes them. */
#ifndef OSV_SERVE_H
#define OSV_SERVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ortserve.h"
#include "ortserve/imaging.h"
#include "serve/auth.h"
#include "serve/shm.h"

typedef struct osv_serve osv_serve_t;
typedef struct osv_sreq osv_sreq_t;
typedef struct osv_stask osv_stask_t;

/* What the request layer is configured with (the CLI's options, flags and ORTSERVE_* variables). */
typedef struct osv_serve_opts {
    int workers;                  /* inference worker threads (0 = one per core) */
    int loop_threads;             /* threads that may run models inline (fronts' event loops) */
    uint32_t max_queue;           /* queued requests per model before 503 */
    int64_t deadline_ms;          /* default per-request deadline; 0 = none; OSV_DEADLINE_AUTO: see below */
    uint64_t inline_threshold_ns; /* models faster than this run on the submitting thread */
    uint32_t memory_high_pct;     /* memory guard: % of the cgroup limit (0 = off) */
    uint32_t offload_capacity;    /* queued front work (e.g. inflating bodies) before 503 */
    bool force_copy;              /* benchmarks: copy every tensor (honest comparison) */
    osv_pool_opts_t pool;
    uint64_t image_decode_budget; /* bytes of image decoding at once; 0 = from the memory plan */
    uint64_t image_max_pixels, image_max_bytes;
    uint32_t image_max_images;
    uint64_t shm_max_bytes; /* bytes all registered shared-memory regions may span; 0 = the pool's */
    uint64_t cache_bytes;   /* the response cache's budget (--cache-size); 0 = no cache */
    const char *auth_token_file; /* bearer tokens; NULL or "" = none */
} osv_serve_opts_t;

void osv_serve_opts_default(osv_serve_opts_t *o);

/* The repository load hook (osv_repo_opts_t.hook, ud = the osv_serve_opts_t, which must outlive the
 * repository): checks a model can be served and attaches its scheduling state. */
int osv_serve_model_hook(void *ud, osv_model_t *m, osv_err_t *err);

/* Builds the layer over a repository whose models are loaded (the memory plan sizes the pool and the
 * decode budget from what they left of the cgroup limit), and starts its threads. *out owns them;
 * osv_serve_destroy stops and frees. env and repo must outlive it. */
int osv_serve_create(const osv_serve_opts_t *o, osv_env_t *env, osv_repo_t *repo, osv_serve_t **out,
                     osv_err_t *err);
/* Stops the workers (after the queues are empty), the control thread and the watchdog; idempotent.
 * Requests still held by a front keep their slots until the front releases them. */
void osv_serve_stop(osv_serve_t *s);
/* Stops (if not yet) and frees everything; every slot must have been released. */
void osv_serve_destroy(osv_serve_t *s);

/* Read-only accessors; the objects live as long as s. Any thread. */
const osv_serve_opts_t *osv_serve_opts(const osv_serve_t *s);
osv_env_t *osv_serve_env(const osv_serve_t *s);
osv_repo_t *osv_serve_repo(const osv_serve_t *s);
osv_pool_t *osv_serve_pool(const osv_serve_t *s);
osv_img_budget_t *osv_serve_img_budget(const osv_serve_t *s);
osv_shm_t *osv_serve_shm(const osv_serve_t *s);
osv_auth_t *osv_serve_auth(const osv_serve_t *s); /* NULL without tokens */

/* The calling thread (a front's event loop, index < opts.loop_threads) may run models inline: give
 * it its watchdog slot. Call once, on that thread. */
void osv_serve_thread_init(osv_serve_t *s, int index);

/* The calling thread (after osv_serve_thread_init, a loop thread) calls osv_serve_flush once the events
 * of each wake-up are handled: requests it submits for a fast model with adaptive batching are then
 * collected instead of run at once (osv_serve_submit returns 0; complete() is called from
 * osv_serve_flush on this thread), so the requests one wake-up holds run as one batch. */
void osv_serve_thread_collects(osv_serve_t *s);
/* Runs what this thread collected (batches of compatible requests up to the model's cap, in order;
 * alone when nothing joins). True when complete() callbacks submitted more meanwhile. That thread. */
bool osv_serve_flush(osv_serve_t *s);

/* ---- the memory guard ---------------------------------------------------------------------------- */

/* When the cgroup's working set is above --memory-high-pct of its limit: OSV_EBUSY with a message
 * naming both (counted); else 0. Ask before a request touches any tensor memory. Any thread. */
int osv_serve_admit_memory(osv_serve_t *s, osv_err_t *err);

/* Under a cgroup limit: reserves `bytes` that requests are about to fault into this process (shared
 * memory nobody has touched) against the guard's mark, counting what other requests hold; OSV_EBUSY
 * when they would pass it. Release with osv_serve_memory_unreserve. Any thread. */
int osv_serve_memory_reserve(osv_serve_t *s, uint64_t bytes, osv_err_t *err);
void osv_serve_memory_unreserve(osv_serve_t *s, uint64_t bytes);
/* True when a cgroup limit is known (the guard and reservations are active). */
bool osv_serve_guarding_memory(const osv_serve_t *s);

/* ---- deadlines ------------------------------------------------------------------------------------- */

/* opts.deadline_ms when --deadline-ms was not given: OSV_DEADLINE_AUTO_MS (500 ms), raised for a slow
 * model to OSV_DEADLINE_WARMUP_FACTOR × its warm-up run, so an ordinary 1-second CPU model is not
 * answered 504 by a default nobody chose. */
#define OSV_DEADLINE_AUTO          (-1)
#define OSV_DEADLINE_AUTO_MS       500
#define OSV_DEADLINE_WARMUP_FACTOR 10

/* Who set a request's deadline: every 504 names it (osv_serve_deadline_text). */
typedef enum osv_deadline_src {
    OSV_DEADLINE_NONE = 0,
    OSV_DEADLINE_SERVER,  /* --deadline-ms, or its default */
    OSV_DEADLINE_WARMUP,  /* the default, raised to follow the model's warm-up run */
    OSV_DEADLINE_MODEL,   /* the model's config deadline_ms */
    OSV_DEADLINE_HEADER,  /* a front's header (HTTP Ortserve-Timeout-Ms, gRPC grpc-timeout) */
    OSV_DEADLINE_REQUEST, /* the request's own timeout parameter */
} osv_deadline_src_t;

/* Model m's default deadline in ms (0 = none) and where it comes from: its config deadline_ms, else the
 * server's --deadline-ms, else (not given) OSV_DEADLINE_AUTO_MS or the warm-up multiple, whichever is
 * longer. */
int64_t osv_serve_deadline_ms(const osv_serve_t *s, const osv_model_t *m, osv_deadline_src_t *src);

/* "the server's --deadline-ms", ...: what a 504 message says set the deadline. Static. */
const char *osv_serve_deadline_text(osv_deadline_src_t src);

/* ---- requests --------------------------------------------------------------------------------------- */

/* An inference request. The front owns the object (in its request arena) and keeps it, the model
 * reference and inf alive until complete() has been called (or osv_serve_submit refused it). */
struct osv_sreq {
    /* public: set by the front before osv_serve_submit, then not touched until completion */
    osv_model_t *model;  /* the model version it runs on */
    osv_infer_t *inf;    /* inputs declared and prepared (slot laid out, filled or bound) */
    uint64_t deadline;   /* absolute monotonic ns; 0 = none */
    uint64_t deadline_ms;               /* its length, for messages */
    osv_deadline_src_t deadline_src;    /* who set it, for messages */
    /* The request's own `timeout` parameter (Triton's, in µs) as an absolute monotonic time; 0 = none.
     * A model with dynamic batching takes it as the queue timeout its queue policy may let a request
     * shorten (allow_timeout_override); any other model as a shorter deadline (deadline_src becomes
     * OSV_DEADLINE_REQUEST). */
    uint64_t timeout_at;
    uint64_t timeout_us; /* ... and as given, for messages */
    uint64_t priority;   /* Triton's `priority`: 1 is the highest level; 0 or beyond the model's
                            priority_levels = its default_priority_level */
    bool may_inline;     /* the front lets a fast model run on the submitting thread */
    /* Runs on the executing thread before the model (e.g. decoding images into the input tensor);
     * returns 0 or an error code with err set. NULL = nothing to do. */
    int (*prepare)(osv_sreq_t *r);
    /* Runs instead of the standard run (e.g. classify's batched runs); it must bracket each ORT run
     * with osv_serve_watch_begin/end. NULL = run inf. A request with execute never joins a batch. */
    int (*execute)(osv_sreq_t *r);
    /* Called once the request is finished, with rc and err set: on the worker that ran it (with its
     * batch), or — for a request answered without running (its deadline or queue timeout passed while
     * it waited, the server is stopping) — on the thread that found it so (a worker or the watchdog).
     * Not called for a request answered inline (osv_serve_submit returns 1) or refused. */
    void (*complete)(osv_sreq_t *r);
    void *ud; /* the front's own pointer */

    /* read-only for the front once complete() was called (or submit returned 1): */
    int rc;                                /* 0 or an OSV_E* code; statuses via serve/errmap.h */
    osv_err_t err;                         /* the message when rc != 0 */
    uint64_t ns[OSV_PHASE_COUNT];          /* queue, compute input/infer phases (the front adds its
                                              own input decoding and output encoding) */
    uint64_t phase_t0[OSV_PHASE_COUNT];    /* monotonic start of each phase it ran (queue, compute) */
    uint64_t phase_t1[OSV_PHASE_COUNT];    /* ... and end; 0 = absent */
    uint64_t batch;                        /* the batch size (rows) it ran with */
    uint64_t batch_id;                     /* the server-wide number of the batch it ran in; 0 = it ran
                                              alone (its own run, or a cache hit) */
    uint32_t batch_requests;               /* requests in that batch (1 when alone) */
    bool cache_hit;                        /* answered from the response cache (nothing ran) */
    uint64_t expected_wait_ns;             /* refused for its deadline: the work queued ahead */

    /* private (sched.c, batch.c) */
    osv_sreq_t *next;      /* in its queue */
    osv_sreq_t *qprev;     /* ... and the one before it */
    osv_sreq_t *bnext;     /* in a batch being formed or run */
    void *ms;              /* the model's scheduling state */
    void *q;               /* the queue it waits in */
    uint64_t queue_timeout; /* absolute ns its queue policy's timeout passes; 0 = none */
    uint64_t rows;          /* its rows along the batch dimension (1 without one) */
    uint64_t in_bytes;      /* its declared inputs' bytes: what the inline choice scales the estimate by */
    uint64_t seq;           /* preserve_ordering: its place among the model's requests */
    uint32_t level;         /* its priority level, 0-based */
    bool timed_out;         /* moved behind its level after its queue timeout (DELAY) */
    uint64_t cache_hash[2]; /* response cache: its key's hash, computed by the lookup that missed */
    bool cache_keyed;       /* ... and valid */
    void *stage;            /* osv_serve_stage: the forming batch's input slot its rows are in (a use of
                               it, released by osv_serve_unstage); NULL = its own slot */
    uint64_t stage_row;     /* ... its first row there */
};

/* Admits and schedules r: 1 = it was answered inline, on this thread (a fast model with nothing
 * queued ran it, or the response cache held its answer; rc and err are set, complete() is not
 * called); 0 = queued for a worker, alone or in a batch (complete() will be called); or a negative
 * code with r->err set, nothing scheduled: OSV_EBUSY — the model's queue (or its priority level's)
 * is full, or by recent run times the work queued ahead would make it miss its deadline
 * (expected_wait_ns set, counted): both are answered "retry later". Fronts' threads. */
int osv_serve_submit(osv_serve_t *s, osv_sreq_t *r);

/* Zero-copy batching. Before its body arrives, a request of a model with dynamic batching whose inputs
 * are declared (r->model, r->inf set; fixed-size datatypes, a batch dimension) but not yet prepared may
 * reserve its rows in the model's forming batch's input slot (a "stage": room for max_batch_size rows
 * of every input, one shape): each input is bound there (osv_infer_input_external), osv_infer_prepare
 * then takes a slot for the outputs only, and the front receives the body straight into the rows
 * (osv_infer_input_dest). A batch whose members' rows lie back to back in one stage runs on them in
 * place: nothing is gathered. Returns true when staged; false (nothing changed: the request takes its
 * own slot as before) when the model does not batch, batching cannot pay (the adaptive cap is 1), the
 * inputs do not qualify, the open stage holds another shape, or the pool has no slot for a stage.
 * The front calls osv_serve_unstage once the request's infer is finished (after osv_infer_fini), on
 * any path — answered, refused, timed out, or its client gone mid-body: the rows are never handed out
 * again, the batch they were meant for runs without them (its members gather instead), and the stage
 * goes back to the pool with its last use. Fronts' threads; the stage's lock is the model's. */
bool osv_serve_stage(osv_serve_t *s, osv_sreq_t *r);
void osv_serve_unstage(osv_sreq_t *r);
/* A staged request's rows of model input idx, before or after prepare: where the front receives that
 * input's bytes (*len of them). NULL when r is not staged or idx not declared. Fronts' threads. */
void *osv_serve_stage_input(const osv_sreq_t *r, uint32_t idx, uint64_t *len);

/* For execute(): brackets one ORT run of r on the calling thread, so the watchdog can cancel it at
 * r's deadline (or when a drain times out). */
void osv_serve_watch_begin(osv_serve_t *s, osv_sreq_t *r, osv_infer_t *inf);
void osv_serve_watch_end(osv_serve_t *s);


/* The run time of recent inferences of m, for a front's own decisions (ns; 0 = none yet). */
uint64_t osv_serve_model_ewma(const osv_model_t *m);
/* Requests of model m waiting for a worker. */
uint32_t osv_serve_model_queued(const osv_model_t *m);
/* Worker threads (fixed at create). */
int osv_serve_workers(const osv_serve_t *s);

/* ---- front work moved off an event loop (inflating a body) --------------------------------------- */

/* A task the front wants run on a worker: run() there, then complete() on the same worker. */
struct osv_stask {
    /* public */
    void (*run)(osv_stask_t *t);
    void (*complete)(osv_stask_t *t);
    void *ud;
    /* private */
    osv_stask_t *next;
};

/* Queues t for a worker: 0, or OSV_EBUSY when opts.offload_capacity tasks are waiting. */
int osv_serve_offload(osv_serve_t *s, osv_stask_t *t);

/* ---- the control thread ---------------------------------------------------------------------------- */

/* Queues t for the control thread, which loads and unloads models (never an inference worker):
 * run() there, then complete() there. 0, or OSV_EBUSY when 8 control tasks are already waiting. */
int osv_serve_control(osv_serve_t *s, osv_stask_t *t);

/* SIGHUP: re-reads the token file (a bad file keeps the tokens in use); regions of a token that is
 * gone go with it. Logs the outcome. Any thread. */
void osv_serve_reload_auth(osv_serve_t *s);

/* ---- counters and the drain ------------------------------------------------------------------------- */

/* The response cache's figures (serve/cache.h). */
struct osv_cache_stats {
    uint64_t budget, bytes, entries;
    uint64_t hits, misses, inserts, evictions, too_large;
};

typedef struct osv_serve_counters {
    uint32_t queued;            /* inference requests waiting for a worker, all models */
    uint64_t batches;           /* batches of more than one request run */
    struct osv_cache_stats cache; /* the response cache (zeros without one) */
    int memory_pressure;        /* the memory guard is refusing */
    uint64_t working_set;       /* the working set the guard last read (bytes) */
    uint64_t memory_shed;       /* requests the guard refused */
    uint64_t deadline_refusals; /* refused at admission for their deadline */
} osv_serve_counters_t;

void osv_serve_get_counters(osv_serve_t *s, osv_serve_counters_t *out);

/* The drain timed out: runs still going are canceled (they answer 504) and no new run starts (they
 * answer 503). Any thread. */
void osv_serve_cancel_all(osv_serve_t *s);
/* True once osv_serve_cancel_all was called. */
bool osv_serve_canceling(const osv_serve_t *s);

/* The layer's count of requests in flight is kept by the fronts; the watchdog ticks fast while it is
 * non-zero (2 ms) and slowly otherwise (50 ms). */
void osv_serve_set_busy_hint(osv_serve_t *s, _Atomic int64_t *inflight);

#endif
