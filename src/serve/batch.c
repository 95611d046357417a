/* batch.c — the dynamic batcher's run: requests of one model that sched.c's form() joined become ONE
 * ONNX Runtime run, and each request gets its rows of the result back as views; and the adaptive
 * mode's measure of whether joining pays.
 *
 * One batch, as data:
 *   1. each member's own prepare step (image decoding) runs; a member that fails it is answered alone;
 *   2. a batch infer over the model declares every input with the members' shape and the summed rows
 *      along the first dimension, and the union of the outputs they asked for; ONE pool slot holds it;
 *   3. when the members' rows lie back to back in one stage (binary bodies received into the forming
 *      batch, stage.c) the batch's inputs are bound there, read in place; otherwise each member's input
 *      rows are copied into the batch's input ranges, in member order (counted per member as copy reason
 *      "batch": the one copy batching costs);
 *   4. the run, under the watchdog with the latest member deadline (a member whose own deadline passes
 *      meanwhile is answered 504; the run is canceled only when all of them have passed);
 *   5. each member's outputs become views of its rows of the batch's output slot
 *      (osv_infer_adopt_rows): the fronts send from there, nothing is copied; the batch and its slot
 *      live until the last member's response is written (a reference count the members release).
 * A failed run answers every member (500, naming the batch); the model keeps serving.
 *
 * The adaptive mode (ortserve's, not Triton's) keeps the model's cost curve: nanoseconds per row at
 * 1, 2, 4 ... rows, measured at load (runs on zeros) and kept current from live runs (EWMA). It takes
 * at most `cap` rows: the size up to which every doubling made a row at least 5 % cheaper — 1 on a
 * model where batching does not pay, which then behaves as if batching were off (runs alone, inline
 * when fast). It waits for more rows only when the compute the wait is expected to save (from the
 * arrival rate and the live curve: sizes that ran) exceeds the wait, and the batch would still meet its earliest deadline
 * and the model's latency SLO. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "obs/log.h"
#include "obs/obs.h"
#include "serve/cache.h"
#include "serve/serve_internal.h"
#include "util/sanitize.h"

#define CURVE_MAX       13  /* 1, 2, 4 ... 4096 rows */
#define CURVE_GAIN_PCT  95  /* a doubling pays when a row costs at most 95 % of what it did */
#define CURVE_REPS      5   /* runs per point at load (the fastest counts) */
#define CURVE_SHAPE_FACTOR 2 /* live one-row runs this many times off the load-time one: other shapes */
#define CURVE_MAX_RUN   200000000ull /* stop measuring once a run takes 200 ms */
#define CURVE_MAX_BYTES (64ull << 20) /* ... or its inputs would exceed 64 MiB */

/* One batch in flight: its infer (and slot) stays until the last member's views are released. */
typedef struct batch {
    _Atomic uint32_t refs;
    osv_batcher_t *owner;
    struct batch *next_free;
    osv_infer_t *inf;
    osv_stage_t *stage; /* the stage its inputs are bound to (a use of it), or NULL: gathered */
    size_t mem_size;
    _Alignas(16) unsigned char mem[];
} batch_t;

struct osv_batcher {
    osv_model_t *m; /* not a reference: the batcher lives inside the model */
    const osv_batching_config_t *bc;
    /* batch objects for reuse (a warm model allocates none), under free_lock */
    pthread_mutex_t free_lock;
    batch_t *free;
    /* the cost curve: rows[i] = 2^i (the last one max_batch_size), ns per row (0 = not measured): as
     * measured at load, and from live runs (EWMA). Two points are compared live only when both have live
     * runs — a lone size measured under load is not compared with one measured on an idle machine. */
    uint32_t n_points;
    uint32_t rows[CURVE_MAX + 1];
    _Atomic uint64_t row_ns[CURVE_MAX + 1];
    _Atomic uint64_t live_ns[CURVE_MAX + 1];
    _Atomic uint32_t cap;
    bool adaptive;
    bool guessed;  /* read-only after create: an input has a dynamic dimension besides the batch one, which
                      the load-time curve measured as 1 (see curve_misplaced) */
    /* arrivals, under osv_serve_t.lock */
    uint64_t last_arrival, gap_ns; /* EWMA of the time between requests */
};

/* ---- compatibility ----------------------------------------------------------------------------------- */

bool osv_batch_compatible(const osv_sreq_t *first, const osv_sreq_t *r)
{
    uint32_t n_in = osv_model_input_count(first->model);
    if (first->execute || r->execute || first->model != r->model)
        return false;
    for (uint32_t i = 0; i < n_in; i++) {
        osv_infer_input_info_t a, b;
        if (osv_infer_input_info(first->inf, i, &a) != 0 || osv_infer_input_info(r->inf, i, &b) != 0 ||
            a.dtype != b.dtype || a.rank != b.rank || a.rank < 1)
            return false;
        for (uint32_t d = 1; d < a.rank; d++)
            if (a.dims[d] != b.dims[d])
                return false;
    }
    return true;
}

/* ---- batch objects -------------------------------------------------------------------------------------- */

static batch_t *batch_get(osv_batcher_t *b)
{
    batch_t *x;
    pthread_mutex_lock(&b->free_lock);
    if ((x = b->free))
        b->free = x->next_free;
    pthread_mutex_unlock(&b->free_lock);
    if (!x) {
        size_t size = osv_infer_size(b->m);
        if (!(x = osv_calloc(1, sizeof *x + size)))
            return NULL;
        x->owner = b;
        x->mem_size = size;
    }
    atomic_store(&x->refs, 1);
    return x;
}

/* The last view of the batch is gone (a member's osv_infer_fini, or the batcher's own reference). */
static void batch_release(void *ud)
{
    batch_t *x = ud;
    if (atomic_fetch_sub(&x->refs, 1) != 1)
        return;
    osv_infer_fini(x->inf);
    x->inf = NULL;
    osv_stage_release(x->stage); /* after fini: ORT's input values over the stage are gone */
    x->stage = NULL;
    pthread_mutex_lock(&x->owner->free_lock);
    x->next_free = x->owner->free;
    x->owner->free = x;
    pthread_mutex_unlock(&x->owner->free_lock);
}

/* ---- the run -------------------------------------------------------------------------------------------- */

/* Declares the batch's inputs (the members' shape, summed rows) — bound in place to the stage's rows
 * [row0, row0 + rows) when x->stage is set — and the outputs any member asked for. */
static int declare(batch_t *x, osv_sreq_t *members, uint64_t rows, uint64_t row0, osv_err_t *err)
{
    osv_model_t *m = members->model;
    uint32_t n_in = osv_model_input_count(m), n_out = osv_model_output_count(m);
    int rc;
    for (uint32_t i = 0; i < n_in; i++) {
        osv_infer_input_info_t a;
        int64_t dims[OSV_MAX_DIMS];
        uint64_t bytes = 0;
        osv_infer_input_info(members->inf, i, &a);
        memcpy(dims, a.dims, a.rank * sizeof *dims);
        dims[0] = (int64_t)rows;
        if (a.dtype == OSV_DTYPE_BYTES) { /* serialized elements: the members' forms back to back */
            for (osv_sreq_t *r = members; r; r = r->bnext) {
                osv_infer_input_info_t b;
                osv_infer_input_info(r->inf, i, &b);
                bytes += b.bytes;
            }
        }
        if ((rc = osv_infer_add_input(x->inf, i, a.dtype, dims, a.rank, bytes, err)) != 0)
            return rc;
        if (x->stage) {
            uint64_t len = 0;
            void *p = osv_stage_input(x->stage, i, row0, rows, &len);
            if (OSV_NEVER(!p))
                return osv_err_set(err, OSV_EINVAL, "batch rows outside their stage");
            if ((rc = osv_infer_input_external(x->inf, i, p, len, err)) != 0)
                return rc;
        }
    }
    for (uint32_t o = 0; o < n_out; o++) {
        bool wanted = false;
        for (osv_sreq_t *r = members; r && !wanted; r = r->bnext)
            for (uint32_t k = 0; k < osv_infer_output_count(r->inf) && !wanted; k++)
                wanted = osv_infer_output_index(r->inf, k) == o;
        if (wanted && (rc = osv_infer_add_output(x->inf, o, err)) != 0)
            return rc;
    }
    return osv_infer_prepare(x->inf, err);
}

/* Copies each member's rows into the batch's input ranges, in member order. */
static void gather(batch_t *x, osv_sreq_t *members)
{
    uint32_t n_in = osv_model_input_count(members->model);
    for (uint32_t i = 0; i < n_in; i++) {
        void *dst;
        uint64_t len, off = 0;
        if (osv_infer_input_buffer(x->inf, i, &dst, &len) != 0)
            continue;
        for (osv_sreq_t *r = members; r; r = r->bnext) {
            osv_infer_input_info_t a;
            osv_infer_input_info(r->inf, i, &a);
            if (a.bytes > len - off) /* declare() summed exactly these sizes */
                break;
            if (a.bytes)
                memcpy((char *)dst + off, a.data, a.bytes);
            off += a.bytes;
            osv_infer_note_copy(r->inf, OSV_COPY_BATCH, a.bytes);
        }
    }
}

/* Runs each member alone, one after the other (the batch could not get a slot). */
static osv_sreq_t *run_alone(osv_serve_t *s, osv_sreq_t *members)
{
    for (osv_sreq_t *r = members, *n; r; r = n) {
        n = r->bnext;
        r->bnext = NULL;
        osv_sched_run_one(s, r);
        if (!n)
            return r; /* the last: answered once the worker's run is over */
        osv_sched_finish(s, r);
    }
    return NULL;
}

/* The deadline the batch's run is watched with: the latest of its members' (0 when one has none). */
/* The members' input bytes: the batch run reads them all. */
static uint64_t batch_bytes(const osv_sreq_t *members)
{
    uint64_t sum = 0;
    for (const osv_sreq_t *r = members; r; r = r->bnext)
        sum += r->in_bytes;
    return sum;
}

static uint64_t latest_deadline(const osv_sreq_t *members)
{
    uint64_t d = 0;
    for (const osv_sreq_t *r = members; r; r = r->bnext) {
        if (!r->deadline)
            return 0;
        d = r->deadline > d ? r->deadline : d;
    }
    return d;
}

/* Each member's answer: its rows of the batch's outputs, or the run's error. */
static void scatter(osv_serve_t *s, mstate_t *ms, batch_t *x, osv_sreq_t *members, uint32_t n, int rc,
                    const osv_err_t *err)
{
    uint64_t row0 = 0, now = osv_now_ns();
    for (osv_sreq_t *r = members; r; r = r->bnext) {
        uint64_t rows = r->rows;
        if (rc == OSV_ECANCELED || (r->deadline && now >= r->deadline)) {
            osv_stats_add_canceled(ms->stats);
            char when[96];
            snprintf(when, sizeof when, "while its batch of %u requests ran: the run was canceled", n);
            osv_sched_deadline_error(r, when);
        } else if (rc) {
            r->rc = osv_err_set(&r->err, rc == OSV_EUNAVAIL ? OSV_EUNAVAIL : OSV_EORT,
                                "its batch of %u requests failed: %s", n, err->msg);
        } else {
            atomic_fetch_add(&x->refs, 1);
            r->rc = osv_infer_adopt_rows(r->inf, x->inf, row0, rows, batch_release, x, &r->err);
            if (r->rc == 0 && ms->cache)
                osv_cache_insert(s->cache, r);
        }
        row0 += rows;
    }
}

osv_sreq_t *osv_batch_run(osv_serve_t *s, mstate_t *ms, osv_sreq_t *members, uint32_t n)
{
    osv_batcher_t *b = ms->bat;
    osv_sreq_t *keep = NULL, **tail = &keep, *failed = NULL;
    uint64_t rows = 0, t0 = osv_now_ns();
    osv_err_t err = {0};
    batch_t *x;
    int rc;
    /* 1. members' own preparation (decoding images into their tensors); who fails it leaves */
    n = 0;
    for (osv_sreq_t *r = members, *nx; r; r = nx) {
        nx = r->bnext;
        r->bnext = NULL;
        if (r->prepare && (r->rc = r->prepare(r)) != 0) {
            r->bnext = failed;
            failed = r;
            continue;
        }
        r->prepare = NULL; /* done: a run alone below must not decode again */
        *tail = r;
        tail = &r->bnext;
        rows += r->rows;
        n++;
    }
    for (osv_sreq_t *r = failed, *nx; r; r = nx) {
        nx = r->bnext;
        osv_sched_finish(s, r);
    }
    if (n <= 1 || atomic_load_explicit(&s->canceling, memory_order_relaxed) || !(x = batch_get(b)))
        return run_alone(s, keep);
    /* 2, 3. the batch's slot, the members' rows gathered into it — unless they lie back to back in one
     * stage, where the batch reads them in place */
    osv_infer_opts_t io = {.pool = s->pool, .force_copy = s->o.force_copy};
    osv_stage_t *stage = NULL;
    uint64_t row0 = 0;
    if (osv_stage_tile(&keep, &stage, &row0)) {
        osv_stage_hold(stage);
        x->stage = stage;
    }
    if (osv_infer_init(x->mem, x->mem_size, b->m, &io, &x->inf, &err) != 0 ||
        declare(x, keep, rows, row0, &err) != 0) {
        batch_release(x); /* e.g. the pool is full: the members still hold their own slots */
        return run_alone(s, keep);
    }
    if (!x->stage)
        gather(x, keep);
    uint64_t t1 = osv_now_ns(), id = atomic_fetch_add(&s->batch_ids, 1) + 1;
    /* 4. the run */
    rc = osv_sched_run_infer(s, x->inf, latest_deadline(keep), ms->stats, &err);
    uint64_t t2 = osv_now_ns();
    if (rc == 0)
        osv_batcher_note(b, rows, t2 - t0);
    osv_sched_note_model_run(ms, t2 - t1, batch_bytes(keep));
    /* 5. the members' views (or errors); the batcher's own reference goes before they are answered */
    scatter(s, ms, x, keep, n, rc, &err);
    batch_release(x);
    for (osv_sreq_t *r = keep; r; r = r->bnext) {
        r->ns[OSV_PHASE_COMPUTE_INPUT] += t1 - t0;
        r->ns[OSV_PHASE_COMPUTE_INFER] = t2 - t1;
        r->phase_t0[OSV_PHASE_COMPUTE_INFER] = t1;
        r->phase_t1[OSV_PHASE_COMPUTE_INFER] = t2;
        r->batch = rows;
        r->batch_id = id;
        r->batch_requests = n;
    }
    return keep;
}

/* ---- the adaptive mode's cost curve ----------------------------------------------------------------- */

/* True when the load-time curve ran on guessed shapes (a dynamic dimension besides the batch one measured
 * as 1) and live runs disagree with it by more than CURVE_SHAPE_FACTOR at one row: the requests have
 * other shapes, and the load-time curve says nothing about their batches (the PaddleOCR classifier
 * [N,3,H,W] measured 107 µs a row at 1 x 1 against 600 µs at 48 x 192, with a 7x gain from batching
 * that requests never see). Models with fixed shapes keep their curve: live runs are noisier. */
static bool curve_misplaced(const osv_batcher_t *b)
{
    uint64_t live = atomic_load_explicit(&b->live_ns[0], memory_order_relaxed),
             load = atomic_load_explicit(&b->row_ns[0], memory_order_relaxed);
    return b->guessed && live && load && (live > load * CURVE_SHAPE_FACTOR || load > live * CURVE_SHAPE_FACTOR);
}

static bool dims_guessed(const osv_model_t *m)
{
    for (uint32_t i = 0; i < osv_model_input_count(m); i++) {
        const osv_tensor_info_t *t = osv_model_input(m, i);
        if (t->rank < 0)
            return true;
        for (int32_t d = 1; d < t->rank; d++)
            if (t->dims[d] < 0)
                return true;
    }
    return false;
}

static void recompute_cap(osv_batcher_t *b)
{
    uint32_t cap = 1;
    bool live_only = curve_misplaced(b);
    for (uint32_t i = 1; i < b->n_points; i++) {
        uint64_t prev = atomic_load_explicit(&b->live_ns[i - 1], memory_order_relaxed),
                 cur = atomic_load_explicit(&b->live_ns[i], memory_order_relaxed);
        if (!live_only && (!prev || !cur)) {
            prev = atomic_load_explicit(&b->row_ns[i - 1], memory_order_relaxed);
            cur = atomic_load_explicit(&b->row_ns[i], memory_order_relaxed);
        }
        if (live_only && prev && !cur) { /* not run at this size yet: let batches reach it to measure it */
            cap = b->rows[i];
            break;
        }
        if (!prev || !cur || cur * 100 > prev * CURVE_GAIN_PCT)
            break;
        cap = b->rows[i];
    }
    atomic_store_explicit(&b->cap, cap, memory_order_relaxed);
    osv_stats_set_batch_cap(osv_model_stats(b->m), cap);
}

/* The curve point a run of `rows` rows belongs to: the largest size ≤ rows. */
static uint32_t point_of(const osv_batcher_t *b, uint64_t rows)
{
    uint32_t i = 0;
    while (i + 1 < b->n_points && b->rows[i + 1] <= rows)
        i++;
    return i;
}

void osv_batcher_note(osv_batcher_t *b, uint64_t rows, uint64_t ns)
{
    if (!b || !b->adaptive || !rows || !ns)
        return;
    uint32_t i = point_of(b, rows);
    uint64_t per = ns / rows, old = atomic_load_explicit(&b->live_ns[i], memory_order_relaxed);
    atomic_store_explicit(&b->live_ns[i], old ? old - old / 8 + per / 8 : per, memory_order_relaxed);
    recompute_cap(b);
}

uint32_t osv_batcher_cap(const osv_batcher_t *b)
{
    if (!b)
        return 1;
    return b->adaptive ? atomic_load_explicit(&b->cap, memory_order_relaxed) : b->bc->max_batch_size;
}

void osv_batcher_arrival(osv_batcher_t *b, uint64_t now)
{
    uint64_t gap = b->last_arrival && now > b->last_arrival ? now - b->last_arrival : 0;
    b->last_arrival = now;
    if (gap)
        b->gap_ns = b->gap_ns ? b->gap_ns - b->gap_ns / 8 + gap / 8 : gap;
}

/* Run time of a batch of `rows` rows as live runs measured it (ns; 0 when no run of that size has been
 * seen). The wait is priced on live runs only: the load-time curve ran on stand-in inputs (zeros or
 * random values, other dynamic dimensions 1), and mixing its points with live ones once promised a
 * PaddleOCR classifier a 7× saving for a second row — waits that left a core idle (0.93× of batching
 * off at 4 clients). Bigger live sizes come from what queues while every instance is busy. */
static uint64_t live_cost(const osv_batcher_t *b, uint64_t rows)
{
    uint32_t i = point_of(b, rows);
    return rows * atomic_load_explicit(&b->live_ns[i], memory_order_relaxed);
}

uint64_t osv_batcher_adaptive_wait(const osv_batcher_t *b, uint64_t rows, uint64_t oldest, uint64_t deadline,
                                   uint64_t now)
{
    uint64_t cap = osv_batcher_cap(b), best_w = 0, gap = b->gap_ns;
    int64_t best_net = 0;
    double slo_s = 0, target, budget;
    if (rows >= cap || !gap)
        return 0;
    osv_obs_model_slo(b->m, &slo_s, &target, &budget);
    for (uint32_t i = 0; i < b->n_points && b->rows[i] <= cap; i++) {
        uint64_t size = b->rows[i], more, w, whole;
        if (size <= rows)
            continue;
        more = size - rows;
        w = more * gap; /* a request per gap, a row each (a conservative guess) */
        whole = live_cost(b, size);
        uint64_t c_rows = live_cost(b, rows), c_more = live_cost(b, more);
        if (!whole || !c_rows || !c_more || w > 1000000000ull)
            break;
        if ((deadline && now + w + whole > deadline) ||
            (slo_s > 0 && (double)(now + w + whole - oldest) > slo_s * 1e9))
            break;
        int64_t net = (int64_t)(c_rows + c_more) - (int64_t)whole - (int64_t)w;
        if (net > best_net) {
            best_net = net;
            best_w = w;
        }
    }
    /* Counted from the oldest request, so a batch re-examined at every arrival is not put off forever. */
    return oldest + best_w > now ? oldest + best_w - now : 0;
}

uint32_t osv_batcher_curve(const osv_batcher_t *b, uint32_t cap, uint32_t *rows, uint64_t *row_ns)
{
    uint32_t n = 0;
    for (uint32_t i = 0; b && i < b->n_points && n < cap; i++) {
        uint64_t v = atomic_load_explicit(&b->row_ns[i], memory_order_relaxed);
        if (!v)
            continue;
        rows[n] = b->rows[i];
        row_ns[n++] = v;
    }
    return n;
}

/* One timed run of `rows` rows of zeros: keeps the fastest per-row time of point i. */
static bool time_point(osv_batcher_t *b, uint32_t i, uint64_t *best)
{
    uint64_t ns = 0;
    osv_err_t err;
    if (osv_model_time_batch(b->m, b->rows[i], 1, &ns, &err) != 0 || !ns)
        return false;
    if (!*best || ns < *best)
        *best = ns;
    atomic_store(&b->row_ns[i], *best / b->rows[i] ? *best / b->rows[i] : 1);
    return true;
}

/* Measures the curve on zeros: 1, 2, 4 ... rows, each size against the one before it in alternating
 * runs (the fastest of CURVE_REPS each: a busy moment weighs on both sides alike), until a doubling
 * stops paying (the cap cannot pass it), a run takes CURVE_MAX_RUN or the inputs would exceed
 * CURVE_MAX_BYTES. */
static void measure(osv_batcher_t *b)
{
    uint64_t in_bytes = 0, out_bytes = 0, best[CURVE_MAX + 1] = {0};
    bool sized = osv_model_request_bytes(b->m, &in_bytes, &out_bytes) == 0, ok = true;
    char pts[512];
    size_t len = 0;
    pts[0] = '\0';
    for (uint32_t i = 0; ok && i < b->n_points; i++) {
        if (sized && in_bytes && b->rows[i] > CURVE_MAX_BYTES / in_bytes)
            break;
        for (int k = 0; ok && k < CURVE_REPS; k++)
            ok = (i == 0 || time_point(b, i - 1, &best[i - 1])) && time_point(b, i, &best[i]);
        if (!ok)
            break;
        recompute_cap(b);
        if (best[i] > CURVE_MAX_RUN || (i > 0 && osv_batcher_cap(b) < b->rows[i]))
            break;
    }
    for (uint32_t i = 0; i < b->n_points && best[i] && len < sizeof pts - 64; i++)
        len += (size_t)snprintf(pts + len, sizeof pts - len, "%s[%u,%" PRIu64 "]", i ? "," : "", b->rows[i],
                                best[i] / b->rows[i]);
    osv_log(OSV_LOG_INFO, "batch_curve", "\"model\":\"%s\",\"version\":%" PRId64 ",\"row_ns\":[%s],\"cap\":%u",
            osv_model_name(b->m), osv_model_version(b->m), pts, osv_batcher_cap(b));
}

int osv_batcher_create(osv_model_t *m, const osv_batching_config_t *bc, osv_batcher_t **out, osv_err_t *err)
{
    osv_batcher_t *b = osv_calloc(1, sizeof *b);
    if (!b)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    b->m = m;
    b->bc = bc;
    b->adaptive = osv_batching_effective_mode(bc) == OSV_BATCHING_ADAPTIVE;
    b->guessed = dims_guessed(m);
    pthread_mutex_init(&b->free_lock, NULL);
    for (uint32_t r = 1; r < bc->max_batch_size && b->n_points < CURVE_MAX; r *= 2)
        b->rows[b->n_points++] = r;
    b->rows[b->n_points++] = bc->max_batch_size;
    atomic_init(&b->cap, 1);
    if (b->adaptive)
        measure(b);
    *out = b;
    return 0;
}

void osv_batcher_free(osv_batcher_t *b)
{
    if (!b)
        return;
    for (batch_t *x = b->free, *n; x; x = n) {
        n = x->next_free;
        osv_free(x);
    }
    pthread_mutex_destroy(&b->free_lock);
    osv_free(b);
}
