/* budget.c — the image decode budget: one server-wide count of the bytes that image decoding may hold
 * at once (codec state, decoded pixels, resampling scratch), so that decoding memory is planned
 * inside the cgroup's limit instead of taken from the heap without bound.
 *
 * A reservation is a compare-and-swap on one atomic counter: lock-free, no allocation, never blocks.
 * It fails with OSV_EBUSY when the budget is spent for now (the caller answers 503 + Retry-After) and
 * with OSV_ETOOBIG when it exceeds the whole budget (it can never succeed: 413). */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "imaging/imaging_internal.h"
#include "ortserve/sysmem.h"

struct osv_img_budget {
    uint64_t limit; /* 0 = unlimited (counted, never refused) */
    _Atomic uint64_t in_use;
    _Atomic uint64_t high_water;
    _Atomic uint64_t refused_busy, refused_too_big;
};

int osv_img_budget_create(uint64_t limit, osv_img_budget_t **out, osv_err_t *err)
{
    osv_img_budget_t *b = osv_calloc(1, sizeof *b);
    if (!b)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    b->limit = limit;
    *out = b;
    return 0;
}

void osv_img_budget_destroy(osv_img_budget_t *b)
{
    osv_free(b);
}

uint64_t osv_img_budget_limit(const osv_img_budget_t *b)
{
    return b ? b->limit : 0;
}

static void note_high_water(osv_img_budget_t *b, uint64_t v)
{
    uint64_t hw = atomic_load_explicit(&b->high_water, memory_order_relaxed);
    while (v > hw &&
           !atomic_compare_exchange_weak_explicit(&b->high_water, &hw, v, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

/* The compare-and-swap loop; refusals are counted when `count`. */
static int reserve(osv_img_budget_t *b, uint64_t bytes, bool count)
{
    if (!b || bytes == 0)
        return 0;
    if (b->limit && bytes > b->limit) {
        if (count)
            atomic_fetch_add_explicit(&b->refused_too_big, 1, memory_order_relaxed);
        return OSV_ETOOBIG;
    }
    uint64_t cur = atomic_load_explicit(&b->in_use, memory_order_relaxed), next;
    do {
        if (b->limit && bytes > b->limit - (cur < b->limit ? cur : b->limit)) {
            if (count)
                atomic_fetch_add_explicit(&b->refused_busy, 1, memory_order_relaxed);
            return OSV_EBUSY;
        }
        next = cur + bytes;
    } while (!atomic_compare_exchange_weak_explicit(&b->in_use, &cur, next, memory_order_acquire,
                                                    memory_order_relaxed));
    note_high_water(b, next);
    return 0;
}

int osv_img_budget_reserve(osv_img_budget_t *b, uint64_t bytes)
{
    return reserve(b, bytes, true);
}

int osv_img_budget_try(osv_img_budget_t *b, uint64_t bytes)
{
    return reserve(b, bytes, false);
}

void osv_img_budget_force(osv_img_budget_t *b, uint64_t bytes)
{
    if (!b || bytes == 0)
        return;
    note_high_water(b, atomic_fetch_add_explicit(&b->in_use, bytes, memory_order_relaxed) + bytes);
}

void osv_img_budget_release(osv_img_budget_t *b, uint64_t bytes)
{
    if (b && bytes)
        atomic_fetch_sub_explicit(&b->in_use, bytes, memory_order_release);
}

void osv_img_budget_get_stats(const osv_img_budget_t *b, osv_img_budget_stats_t *out)
{
    osv_img_budget_t *m = (osv_img_budget_t *)b; /* atomics are read, never written */
    *out = (osv_img_budget_stats_t){0};
    if (!b)
        return;
    out->limit = b->limit;
    out->in_use = atomic_load_explicit(&m->in_use, memory_order_relaxed);
    out->high_water = atomic_load_explicit(&m->high_water, memory_order_relaxed);
    out->refused_busy = atomic_load_explicit(&m->refused_busy, memory_order_relaxed);
    out->refused_too_big = atomic_load_explicit(&m->refused_too_big, memory_order_relaxed);
}

uint64_t osv_img_budget_default(uint64_t committed)
{
    osv_sysmem_t mem;
    uint64_t b;
    osv_sysmem_read(&mem);
    b = mem.effective / 8;
    b = b < OSV_IMG_BUDGET_MIN_DEFAULT ? OSV_IMG_BUDGET_MIN_DEFAULT : b;
    b = b > OSV_IMG_BUDGET_MAX_DEFAULT ? OSV_IMG_BUDGET_MAX_DEFAULT : b;
    /* Under a cgroup limit: what is already promised (the tensor pool, ONNX Runtime's runs in flight)
     * is kept out of what the group has left, and the budget takes at most half of the rest. */
    return osv_sysmem_share(&mem, b, committed);
}
