/* stage.c — zero-copy batching: the forming batch's input slot ("stage") that binary bodies are
 * received straight into.
 *
 * A stage holds room for `cap` rows (the model's max_batch_size) of every input of one shape: each
 * input's rows back to back, at a 64-byte-aligned offset of one pool slot (a red zone after each range
 * in the ASan build, which also poisons every row until it is handed out, so a body written past its
 * rows is reported). A request whose shape is known before its body arrives reserves its rows there
 * (osv_serve_stage): its infer binds each input to them, the front receives the body into them, and
 * the request runs on them in place — alone (its own infer), or in a batch whose members' rows lie back
 * to back (osv_stage_tile: the batch binds them as one tensor; nothing is gathered).
 *
 * Rows are handed out once, in order, by the model's one open stage; a full stage (or one whose shape a
 * new request does not have) stops taking reservations, and the next request opens another. A stage is
 * used by the requests holding rows and the batches reading them; with its last use gone it goes back
 * to the pool. A request that leaves without running (its client gone mid-body, a timeout, an error)
 * only drops its use: its rows stay unused — a batch of the others does not tile across them and
 * gathers instead, as an unstaged batch does — so nothing a batch reads is ever changed under it.
 *
 * Threads: reservations come from fronts' loop threads, releases from any thread (a front's cleanup, a
 * worker finishing a batch); the counts and the open stage are under the stager's mutex, which is
 * never held across anything slower than a pool acquire. Stage objects are recycled (a warm model
 * allocates none). */
#include <string.h>

#include "serve/serve_internal.h"
#include "util/sanitize.h"

/* Models with more inputs than this are not staged (their requests take their own slots, as before):
 * a reservation compares every input's shape on the stack. */
#define STAGE_MAX_INPUTS 16
/* Nor models whose max_batch_size is above this (a stage keeps a pointer per row). */
#define STAGE_MAX_ROWS 4096

typedef struct stage_in {
    osv_dtype_t dtype;          /* as sent (a converted input is converted by the run, as ever) */
    bool convert;
    uint32_t rank;
    int64_t dims[OSV_MAX_DIMS]; /* dims[0] is the rows: not part of the shape */
    uint64_t row_bytes, off;    /* bytes per row; where the input's rows start in the slot */
} stage_in_t;

struct osv_stage {
    osv_stager_t *owner;
    osv_stage_t *next_free;
    uint32_t lane;
    osv_pool_t *pool;
    osv_slot_t slot;
    /* under owner->lock */
    uint32_t users; /* requests holding rows + batches reading them */
    uint64_t rows;  /* rows handed out */
    /* under osv_serve_t.lock: the request holding each row while it is queued (NULL otherwise) */
    osv_sreq_t **at;
    /* fixed while in use */
    uint64_t cap;
    uint32_t n_in;
    stage_in_t in[];
};

struct osv_stager {
    osv_model_t *m; /* not a reference: the stager lives inside the model */
    uint64_t cap;   /* rows per stage */
    uint32_t lanes; /* open stages: lane 0 for batches a worker forms, one per loop thread for the batches
                       a loop collects in one wake-up (their rows then lie back to back) */
    pthread_mutex_t lock;
    osv_stage_t *free;   /* recycled objects, under lock */
    osv_stage_t *open[]; /* per lane, taking reservations (NULL: the next one opens a stage), under lock */
};

int osv_stager_create(osv_model_t *m, uint64_t cap, uint32_t lanes, osv_stager_t **out, osv_err_t *err)
{
    osv_stager_t *g;
    if (cap > STAGE_MAX_ROWS) { /* not staged: its requests keep their own slots */
        *out = NULL;
        return 0;
    }
    if (!(g = osv_calloc(1, sizeof *g + (lanes ? lanes : 1) * sizeof g->open[0])))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    g->m = m;
    g->cap = cap;
    g->lanes = lanes ? lanes : 1;
    pthread_mutex_init(&g->lock, NULL);
    *out = g;
    return 0;
}

void osv_stager_free(osv_stager_t *g)
{
    if (!g)
        return;
    /* Every use is gone (the model's last reference): no stage holds a slot. */
    for (uint32_t l = 0; l < g->lanes; l++)
        if (OSV_NEVER(g->open[l] != NULL))
            g->open[l] = NULL; /* leaked rather than released into a pool that may be gone */
    for (osv_stage_t *x = g->free, *n; x; x = n) {
        n = x->next_free;
        osv_free(x);
    }
    pthread_mutex_destroy(&g->lock);
    osv_free(g);
}

/* ---- shapes -------------------------------------------------------------------------------------------- */

/* The request's inputs as a stage would hold them: every model input declared, fixed-size, with a batch
 * dimension of the same rows. 0 rows = they do not qualify. */
static uint64_t request_rows(const osv_model_t *m, const osv_infer_t *inf, stage_in_t *shape)
{
    uint32_t n_in = osv_model_input_count(m);
    uint64_t rows = 0;
    for (uint32_t i = 0; i < n_in; i++) {
        osv_infer_input_info_t a;
        if (osv_infer_input_info(inf, i, &a) != 0 || a.rank < 1 || a.dims[0] < 1 || a.dtype == OSV_DTYPE_BYTES ||
            !osv_dtype_size(a.dtype) || (rows && (uint64_t)a.dims[0] != rows))
            return 0;
        rows = (uint64_t)a.dims[0];
        if (a.bytes % rows)
            return 0;
        shape[i] = (stage_in_t){.dtype = a.dtype, .convert = a.convert, .rank = a.rank, .row_bytes = a.bytes / rows};
        memcpy(shape[i].dims, a.dims, a.rank * sizeof *a.dims);
    }
    return rows;
}

static bool same_shape(const osv_stage_t *x, const stage_in_t *shape)
{
    for (uint32_t i = 0; i < x->n_in; i++) {
        const stage_in_t *a = &x->in[i], *b = &shape[i];
        if (a->dtype != b->dtype || a->convert != b->convert || a->rank != b->rank ||
            memcmp(a->dims + 1, b->dims + 1, (a->rank - 1) * sizeof *a->dims) != 0)
            return false;
    }
    return true;
}

/* ---- stages ------------------------------------------------------------------------------------------- */

/* A new stage for `shape`, its slot taken from the pool: NULL when the pool has none (or the sizes
 * overflow). Under lock. */
static osv_stage_t *stage_open(osv_stager_t *g, osv_pool_t *pool, const stage_in_t *shape, uint32_t lane)
{
    uint32_t n_in = osv_model_input_count(g->m);
    uint64_t total = 0;
    osv_stage_t *x = g->free;
    if (x)
        g->free = x->next_free;
    else if (!(x = osv_calloc(1, sizeof *x + n_in * sizeof x->in[0] + g->cap * sizeof *x->at)))
        return NULL;
    x->at = (osv_sreq_t **)(x->in + n_in);
    memset(x->at, 0, g->cap * sizeof *x->at); /* no queued request holds a recycled stage's rows */
    x->owner = g;
    x->lane = lane;
    x->pool = pool;
    x->n_in = n_in;
    x->cap = g->cap;
    x->users = 0;
    x->rows = 0;
    memcpy(x->in, shape, n_in * sizeof *shape);
    for (uint32_t i = 0; i < n_in; i++) {
        uint64_t len, start, end;
        if (!osv_mul_u64(x->in[i].row_bytes, x->cap, &len) || !osv_align_up_u64(total, OSV_SLOT_ALIGN, &start) ||
            !osv_add_u64(start, len, &end) || !osv_add_u64(end, OSV_ASAN_REDZONE, &total))
            goto fail;
        x->in[i].off = start;
    }
    if (osv_pool_acquire(pool, total ? total : 1, &x->slot) != 0)
        goto fail;
    osv_poison(x->slot.base, total); /* rows are unpoisoned as they are handed out */
    return x;
fail:
    x->next_free = g->free;
    g->free = x;
    return NULL;
}

/* The last use is gone: the slot back to the pool, the object to the free list. Under lock. */
static void stage_close(osv_stager_t *g, osv_stage_t *x)
{
    if (g->open[x->lane] == x)
        g->open[x->lane] = NULL;
    osv_pool_release(x->pool, &x->slot);
    x->next_free = g->free;
    g->free = x;
}

static void *stage_rows(const osv_stage_t *x, uint32_t i, uint64_t row0, uint64_t rows, uint64_t *len)
{
    void *p = NULL;
    *len = rows * x->in[i].row_bytes; /* row0 + rows ≤ cap: within the range stage_open sized */
    if (osv_slot_range(&x->slot, x->in[i].off + row0 * x->in[i].row_bytes, *len, &p) != 0)
        return NULL;
    return p;
}

bool osv_stager_reserve(osv_stager_t *g, osv_pool_t *pool, osv_infer_t *inf, uint32_t lane, osv_stage_t **out,
                        uint64_t *row0)
{
    uint32_t n_in = osv_model_input_count(g->m);
    stage_in_t shape[STAGE_MAX_INPUTS];
    uint64_t rows = n_in && n_in <= STAGE_MAX_INPUTS ? request_rows(g->m, inf, shape) : 0;
    osv_stage_t *x;
    if (!rows || rows > g->cap)
        return false;
    lane = lane < g->lanes ? lane : 0;
    pthread_mutex_lock(&g->lock);
    x = g->open[lane];
    if (x && !same_shape(x, shape)) { /* another shape holds the open stage: this one takes its own slot */
        pthread_mutex_unlock(&g->lock);
        return false;
    }
    if (x && x->rows + rows > x->cap)
        g->open[lane] = x = NULL; /* full: it lives on for its users; the next rows go to a new one */
    if (!x && !(x = g->open[lane] = stage_open(g, pool, shape, lane))) {
        pthread_mutex_unlock(&g->lock);
        return false;
    }
    *row0 = x->rows;
    x->rows += rows;
    x->users++;
    for (uint32_t i = 0; i < n_in; i++) { /* its rows become writable: everything else stays poisoned */
        uint64_t len;
        void *p = stage_rows(x, i, *row0, rows, &len);
        if (p)
            osv_unpoison(p, len);
    }
    pthread_mutex_unlock(&g->lock);
    for (uint32_t i = 0; i < n_in; i++) {
        uint64_t len;
        void *p = stage_rows(x, i, *row0, rows, &len);
        osv_err_t err;
        if (OSV_NEVER(!p) || OSV_NEVER(osv_infer_input_external(inf, i, p, len, &err) != 0)) {
            osv_stage_release(x); /* cannot happen: the sizes came from the infer itself */
            return false;
        }
    }
    *out = x;
    return true;
}

void osv_stage_hold(osv_stage_t *x)
{
    pthread_mutex_lock(&x->owner->lock);
    x->users++;
    pthread_mutex_unlock(&x->owner->lock);
}

void osv_stage_release(osv_stage_t *x)
{
    osv_stager_t *g;
    if (!x)
        return;
    g = x->owner;
    pthread_mutex_lock(&g->lock);
    if (OSV_ALWAYS(x->users > 0) && --x->users == 0)
        stage_close(g, x);
    pthread_mutex_unlock(&g->lock);
}

/* ---- batches over a stage ------------------------------------------------------------------------------- */

/* Sorts the members (bnext-linked) by their first row, stably; n is small (at most max_batch_size). */
static osv_sreq_t *sort_by_row(osv_sreq_t *members)
{
    osv_sreq_t *sorted = NULL;
    for (osv_sreq_t *r = members, *nx; r; r = nx) {
        osv_sreq_t **p = &sorted;
        nx = r->bnext;
        while (*p && (*p)->stage_row <= r->stage_row)
            p = &(*p)->bnext;
        r->bnext = *p;
        *p = r;
    }
    return sorted;
}

bool osv_stage_tile(osv_sreq_t **members, osv_stage_t **stage, uint64_t *row0)
{
    osv_stage_t *x = (*members)->stage;
    uint64_t next;
    if (!x)
        return false;
    for (osv_sreq_t *r = *members; r; r = r->bnext)
        if (r->stage != x)
            return false;
    *members = sort_by_row(*members);
    next = *row0 = (*members)->stage_row;
    for (osv_sreq_t *r = *members; r; r = r->bnext) {
        if (r->stage_row != next)
            return false; /* a gap: rows of a request that is not in this batch */
        next += r->rows;
    }
    *stage = x;
    return true;
}

void osv_stage_queued(osv_sreq_t *r, bool queued)
{
    osv_stage_t *x = r->stage;
    if (!x || OSV_NEVER(r->stage_row + r->rows > x->cap))
        return;
    for (uint64_t i = 0; i < r->rows; i++)
        x->at[r->stage_row + i] = queued ? r : NULL;
}

bool osv_stage_tiles(const osv_sreq_t *first, uint32_t n)
{
    const osv_stage_t *x = first->stage;
    uint64_t lo = UINT64_MAX, hi = 0, rows = 0;
    const osv_sreq_t *r = first;
    for (uint32_t i = 0; i < n && r; i++, r = r->bnext) {
        if (!x || r->stage != x)
            return false;
        lo = r->stage_row < lo ? r->stage_row : lo;
        hi = r->stage_row + r->rows > hi ? r->stage_row + r->rows : hi;
        rows += r->rows;
    }
    return hi - lo == rows; /* rows are never shared: no gap means back to back */
}

/* The queued request of h's queue that holds row `row` of x, if any. */
static osv_sreq_t *queued_at(const osv_stage_t *x, const osv_sreq_t *h, uint64_t row)
{
    osv_sreq_t *r = row < x->cap ? x->at[row] : NULL;
    return r && r->q == h->q && osv_batch_compatible(h, r) ? r : NULL;
}

osv_sreq_t *osv_stage_window(osv_sreq_t *h, uint64_t rows, uint32_t *n)
{
    osv_stage_t *x = h->stage;
    uint64_t lo, hi;
    osv_sreq_t *p, *first, **tail;
    if (!x || rows < h->rows || rows > x->cap)
        return NULL;
    lo = h->stage_row;
    hi = h->stage_row + h->rows;
    while (lo > 0 && (p = queued_at(x, h, lo - 1)) != NULL && hi - p->stage_row <= rows)
        lo = p->stage_row; /* earlier rows first: they were handed out first */
    while (hi - lo < rows && (p = queued_at(x, h, hi)) != NULL)
        hi += p->rows;
    if (hi - lo != rows)
        return NULL;
    first = NULL;
    tail = &first;
    *n = 0;
    for (uint64_t row = lo; row < hi; row += p->rows) {
        p = x->at[row];
        *tail = p;
        tail = &p->bnext;
        (*n)++;
    }
    *tail = NULL;
    return first;
}

void *osv_stage_input(const osv_stage_t *x, uint32_t i, uint64_t row0, uint64_t rows, uint64_t *len)
{
    return i < x->n_in && row0 <= x->cap && rows <= x->cap - row0 ? stage_rows(x, i, row0, rows, len) : NULL;
}
