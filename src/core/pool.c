/* pool.c — the slot pool: size classes of preallocated, 64-byte-aligned slots with lock-free
 * acquire/release.
 *
 * Each class is one anonymous mapping cut into equal slots plus a Treiber stack of free slot
 * indices. The stack head packs (tag << 32 | index + 1) into one 64-bit atomic; the tag changes on
 * every push and pop, which defeats ABA. `next` links and `state` flags are arrays allocated once at
 * creation, so nothing on the acquire/release path allocates or frees. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

#include "ortserve/alloc.h"
#include "ortserve/pool.h"
#include "ortserve/shape.h"
#include "ortserve/sysmem.h"
#include "util/sanitize.h"

#define MAX_SLOTS_PER_CLASS 4096u /* bounds bookkeeping; concurrency never needs more */

typedef struct pool_class {
    _Alignas(64) _Atomic uint64_t head; /* tag << 32 | (free index + 1); low half 0 = empty */
    uint64_t size;
    uint64_t stride; /* size, plus a poisoned guard zone in the ASan build (util/sanitize.h) */
    uint32_t n;
    uint8_t *base;
    size_t map_len;
    _Atomic uint32_t *next; /* next[i] = index + 1 of the slot below i on the free stack, 0 = none */
    _Atomic uint8_t *in_use_flag;
    _Alignas(64) _Atomic uint32_t in_use;
    _Atomic uint32_t high_water;
    _Atomic uint64_t acquires;
    _Atomic uint64_t failed;
} pool_class_t;

struct osv_pool {
    uint32_t n_classes;
    uint64_t total;
    uint64_t budget; /* what the plan was made from: opts.total_bytes or the default budget */
    _Atomic uint64_t bad_releases;
    pool_class_t cls[OSV_POOL_MAX_CLASSES];
};

uint64_t osv_pool_default_budget(void)
{
    return osv_pool_default_budget_reserving(0);
}

uint64_t osv_pool_default_budget_reserving(uint64_t reserve)
{
    osv_sysmem_t mem;
    uint64_t b;
    osv_sysmem_read(&mem);
    b = mem.effective / 4;
    if (b < (16ull << 20))
        b = 16ull << 20;
    if (b > (4ull << 30))
        b = 4ull << 30;
    /* Under a cgroup limit the models are loaded by now: what they hold is not free for tensors,
     * nor is `reserve` (ONNX Runtime's buffers for the runs to come). */
    return osv_sysmem_share(&mem, b, reserve);
}

static int class_push(pool_class_t *c, uint32_t idx)
{
    uint64_t h = atomic_load_explicit(&c->head, memory_order_relaxed), nh;
    do {
        atomic_store_explicit(&c->next[idx], (uint32_t)h, memory_order_relaxed);
        nh = (((h >> 32) + 1) << 32) | (uint64_t)(idx + 1);
    } while (
        !atomic_compare_exchange_weak_explicit(&c->head, &h, nh, memory_order_release, memory_order_relaxed));
    return 0;
}

/* Pops a free index into *idx; false when the class is empty. */
static int class_pop(pool_class_t *c, uint32_t *idx)
{
    uint64_t h = atomic_load_explicit(&c->head, memory_order_acquire), nh;
    for (;;) {
        uint32_t top = (uint32_t)h;
        if (top == 0)
            return 0;
        uint32_t below = atomic_load_explicit(&c->next[top - 1], memory_order_relaxed);
        nh = (((h >> 32) + 1) << 32) | below;
        if (atomic_compare_exchange_weak_explicit(&c->head, &h, nh, memory_order_acquire,
                                                  memory_order_acquire)) {
            *idx = top - 1;
            return 1;
        }
    }
}

static void class_free(pool_class_t *c)
{
    if (c->base) {
        osv_unpoison(c->base, c->map_len); /* the next mapping at this address starts clean */
        munmap(c->base, c->map_len);
    }
    osv_free((void *)c->next);
    osv_free((void *)c->in_use_flag);
    c->base = NULL;
    c->next = NULL;
    c->in_use_flag = NULL;
}

static int class_init(pool_class_t *c, uint64_t size, uint32_t n, const osv_pool_opts_t *o, osv_err_t *err)
{
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    c->size = size;
    c->stride = size + OSV_ASAN_GUARD;
    c->n = n;
    if (n == 0)
        return 0;
    c->map_len = (size_t)(c->stride * n);
    if (o->prefault || o->mlock)
        flags |= MAP_POPULATE;
    c->base = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (c->base == MAP_FAILED) {
        c->base = NULL;
        return osv_err_set(err, OSV_ENOMEM, "cannot map %" PRIu64 " bytes for %u slots of %" PRIu64,
                           (uint64_t)c->map_len, n, size);
    }
    if (o->mlock && mlock(c->base, c->map_len) != 0)
        return osv_err_set(err, OSV_EPERM, "mlock of %zu pool bytes failed (raise RLIMIT_MEMLOCK)",
                           c->map_len);
    c->next = osv_calloc(n, sizeof *c->next);
    c->in_use_flag = osv_calloc(n, sizeof *c->in_use_flag);
    if (!c->next || !c->in_use_flag)
        return osv_err_set(err, OSV_ENOMEM, "out of memory for pool bookkeeping");
    for (uint32_t i = n; i-- > 0;) {
        osv_poison(c->base + (size_t)i * c->stride + size, OSV_ASAN_GUARD);
        class_push(c, i);
    }
    return 0;
}

/* Marks the classes the hints fall in (the smallest class holding each). False when there are none. */
static bool hinted_classes(const osv_pool_opts_t *o, const uint64_t *sizes, uint32_t k, bool *hinted)
{
    bool any = false;
    for (uint32_t h = 0; o->hints && h < o->n_hints; h++) {
        for (uint32_t i = 0; i < k; i++) {
            if (o->hints[h] <= sizes[i]) {
                hinted[i] = any = true;
                break;
            }
        }
    }
    return any;
}

/* Shares `part` equally between the classes in whole slots. A class whose share is more than its
 * slot cap (MAX_SLOTS_PER_CLASS) can hold is filled to the cap and the rest of its share goes to the
 * others (water-filling): with 512 MiB over 8 classes, the 4 KiB class holds 16 MiB of its 64, and
 * the 48 MiB it cannot hold were once lost. Returns the bytes added. */
static uint64_t equal_shares(uint64_t part, const uint64_t *sizes, uint32_t k, uint32_t *counts)
{
    bool full[OSV_POOL_MAX_CLASSES] = {false};
    uint64_t added = 0, share = 0;
    uint32_t open = k;
    for (bool filled = true; filled && open > 0;) { /* each round fills a class or is the last */
        filled = false;
        share = (part - added) / open;
        for (uint32_t i = 0; i < k; i++) {
            uint64_t room = (uint64_t)(MAX_SLOTS_PER_CLASS - counts[i]) * sizes[i];
            if (!full[i] && room <= share) {
                counts[i] = MAX_SLOTS_PER_CLASS;
                added += room;
                full[i] = filled = true;
                open--;
            }
        }
    }
    for (uint32_t i = 0; i < k; i++) {
        if (full[i])
            continue;
        uint64_t n = share / sizes[i]; /* below the cap: the class was not filled */
        counts[i] += (uint32_t)n;
        added += n * sizes[i];
    }
    return added;
}

/* What whole slots of equal shares leave of the budget goes to the largest classes it holds slots
 * of, largest first: a larger slot serves any smaller request too. Returns the bytes used. */
static uint64_t spend_rest(uint64_t used, uint64_t budget, const uint64_t *sizes, uint32_t k,
                           uint32_t *counts)
{
    for (uint32_t i = k; i-- > 0 && used < budget;) {
        uint64_t n = (budget - used) / sizes[i];
        if (n > MAX_SLOTS_PER_CLASS - counts[i])
            n = MAX_SLOTS_PER_CLASS - counts[i];
        counts[i] += (uint32_t)n;
        used += n * sizes[i];
    }
    return used;
}

/* One slot for each still-empty class among the first `upto` that fits in the budget, smallest
 * first. Returns the bytes used. */
static uint64_t one_each(uint64_t used, uint64_t budget, const uint64_t *sizes, uint32_t upto,
                         uint32_t *counts)
{
    for (uint32_t i = 0; i < upto; i++) {
        if (counts[i] == 0 && used + sizes[i] <= budget) {
            counts[i] = 1;
            used += sizes[i];
        }
    }
    return used;
}

/* Hinted classes short of `want` slots get the same number of extra slots each (at most their
 * deficit) from what is left of the budget. Returns the bytes used. */
static uint64_t fill_hinted(uint64_t used, uint64_t budget, const uint64_t *sizes, uint32_t k,
                            const bool *hinted, uint64_t want, uint32_t *counts)
{
    uint64_t short_sum = 0, n;
    for (uint32_t i = 0; i < k; i++)
        short_sum += hinted[i] && counts[i] < want ? sizes[i] : 0;
    if (!short_sum)
        return used;
    n = (budget - used) / short_sum;
    for (uint32_t i = 0; i < k; i++) {
        if (!hinted[i] || counts[i] >= want)
            continue;
        uint64_t add = want - counts[i] < n ? want - counts[i] : n;
        counts[i] += (uint32_t)add;
        used += add * sizes[i];
    }
    return used;
}

/* Slot counts per class (see osv_pool_create). The plain plan: equal byte shares, then one slot of
 * each class that still fits. With hints whose classes the plain plan leaves short of hint_slots:
 * equal shares of half the budget, one slot of each class up to the largest of the plain plan
 * (hints never shrink the largest request the pool holds), extra slots for the short hinted
 * classes, and what is still left as equal shares. Either way, what whole slots leave goes to the
 * largest classes it fits (spend_rest): the plan reserves the budget to within the smallest slot of
 * a class not yet at MAX_SLOTS_PER_CLASS. */
static void plan_counts(const osv_pool_opts_t *o, uint64_t budget, const uint64_t *sizes, uint32_t k,
                        uint32_t *counts)
{
    bool hinted[OSV_POOL_MAX_CLASSES] = {false}, short_of = false;
    uint64_t want = o->hint_slots ? o->hint_slots : MAX_SLOTS_PER_CLASS, used;
    uint32_t top = 0;
    memset(counts, 0, k * sizeof *counts);
    if (o->counts) { /* classes beyond n_counts keep their equal share */
        equal_shares(budget, sizes, k, counts);
        for (uint32_t i = 0; i < k && i < o->n_counts; i++)
            counts[i] = o->counts[i] > MAX_SLOTS_PER_CLASS ? MAX_SLOTS_PER_CLASS : o->counts[i];
        return;
    }
    used = one_each(equal_shares(budget, sizes, k, counts), budget, sizes, k, counts);
    if (hinted_classes(o, sizes, k, hinted)) {
        for (uint32_t i = 0; i < k; i++) {
            top = counts[i] ? i + 1 : top;
            short_of |= hinted[i] && counts[i] < want;
        }
    }
    if (short_of) {
        memset(counts, 0, k * sizeof *counts);
        used = one_each(equal_shares(budget / 2, sizes, k, counts), budget, sizes, top, counts);
        used = fill_hinted(used, budget, sizes, k, hinted, want, counts);
        used += equal_shares(budget - used, sizes, k, counts);
        used = one_each(used, budget, sizes, k, counts);
    }
    spend_rest(used, budget, sizes, k, counts);
}

int osv_pool_create(const osv_pool_opts_t *opts, osv_pool_t **out, osv_err_t *err)
{
    osv_pool_opts_t o = *opts;
    uint64_t sizes[OSV_POOL_MAX_CLASSES];
    uint32_t counts[OSV_POOL_MAX_CLASSES], k = 0;
    osv_pool_t *p;
    int rc;

    if (!o.min_slot)
        o.min_slot = 4096;
    if (!o.max_slot)
        o.max_slot = 64ull << 20;
    if (!o.growth)
        o.growth = 4;
    if (!o.total_bytes)
        o.total_bytes = osv_pool_default_budget_reserving(o.reserve_bytes);
    if (o.growth < 2 || !osv_align_up_u64(o.min_slot, OSV_SLOT_ALIGN, &o.min_slot) || o.max_slot < o.min_slot)
        return osv_err_set(err, OSV_EINVAL,
                           "invalid pool settings (min %" PRIu64 ", max %" PRIu64 ", growth %u)", o.min_slot,
                           o.max_slot, o.growth);
    for (uint64_t s = o.min_slot; k < OSV_POOL_MAX_CLASSES; s *= o.growth) {
        sizes[k++] = s < o.max_slot ? s : o.max_slot;
        if (s >= o.max_slot || s > UINT64_MAX / o.growth)
            break;
    }
    plan_counts(&o, o.total_bytes, sizes, k, counts);
    while (k > 0 && counts[k - 1] == 0)
        k--;
    if (k == 0)
        return osv_err_set(err, OSV_EINVAL,
                           "pool budget of %" PRIu64 " bytes holds no slot of %" PRIu64 " bytes",
                           o.total_bytes, o.min_slot);
    if (!(p = osv_calloc(1, sizeof *p)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    p->n_classes = k;
    p->budget = o.total_bytes;
    for (uint32_t i = 0; i < k; i++) {
        if ((rc = class_init(&p->cls[i], sizes[i], counts[i], &o, err)) != 0) {
            p->n_classes = i + 1;
            osv_pool_destroy(p);
            return rc;
        }
        p->total += sizes[i] * counts[i];
    }
    *out = p;
    return 0;
}

void osv_pool_destroy(osv_pool_t *pool)
{
    if (!pool)
        return;
    for (uint32_t i = 0; i < pool->n_classes; i++)
        class_free(&pool->cls[i]);
    osv_free(pool);
}

static void note_acquire(pool_class_t *c)
{
    uint32_t now = atomic_fetch_add_explicit(&c->in_use, 1, memory_order_relaxed) + 1;
    uint32_t hw = atomic_load_explicit(&c->high_water, memory_order_relaxed);
    while (now > hw && !atomic_compare_exchange_weak_explicit(&c->high_water, &hw, now, memory_order_relaxed,
                                                              memory_order_relaxed))
        ;
    atomic_fetch_add_explicit(&c->acquires, 1, memory_order_relaxed);
}

/* ASan build: the slot's range is exactly the bytes asked for (cap = bytes), and up to
 * ASAN_TAIL_WINDOW bytes after it stay poisoned, so a write one byte past the range aborts; the
 * window bounds the shadow memory a small request in a large slot touches. No-op otherwise. */
#define ASAN_TAIL_WINDOW (1u << 20)

static void slot_open(osv_slot_t *s, uint64_t bytes)
{
#ifdef OSV_ASAN
    uint64_t tail = s->cap - bytes < ASAN_TAIL_WINDOW ? s->cap - bytes : ASAN_TAIL_WINDOW;
    osv_unpoison(s->base, bytes);
    osv_poison(s->base + bytes, tail);
    s->cap = (size_t)bytes;
#else
    (void)s;
    (void)bytes;
#endif
}

int osv_pool_acquire(osv_pool_t *pool, uint64_t bytes, osv_slot_t *out)
{
    uint32_t first = pool->n_classes;
    for (uint32_t i = 0; i < pool->n_classes; i++) {
        if (pool->cls[i].size >= bytes) {
            first = i;
            break;
        }
    }
    if (first == pool->n_classes)
        return OSV_ETOOBIG;
    if (osv_alloc_should_fail()) { /* fault injection (ortserve/alloc.h): as if the pool were full */
        atomic_fetch_add_explicit(&pool->cls[first].failed, 1, memory_order_relaxed);
        return OSV_EBUSY;
    }
    for (uint32_t i = first; i < pool->n_classes; i++) {
        pool_class_t *c = &pool->cls[i];
        uint32_t idx;
        if (c->n && class_pop(c, &idx)) {
            atomic_store_explicit(&c->in_use_flag[idx], 1, memory_order_relaxed);
            note_acquire(c);
            out->base = c->base + (size_t)idx * c->stride;
            out->cap = (size_t)c->size;
            slot_open(out, bytes);
            out->cls = i;
            out->idx = idx;
            return 0;
        }
    }
    atomic_fetch_add_explicit(&pool->cls[first].failed, 1, memory_order_relaxed);
    return OSV_EBUSY;
}

void osv_pool_release(osv_pool_t *pool, osv_slot_t *slot)
{
    pool_class_t *c;
    if (!slot->base)
        return;
    c = slot->cls < pool->n_classes ? &pool->cls[slot->cls] : NULL;
    if (!c || slot->idx >= c->n || slot->base != c->base + (size_t)slot->idx * c->stride ||
        atomic_exchange_explicit(&c->in_use_flag[slot->idx], 0, memory_order_relaxed) != 1) {
        atomic_fetch_add_explicit(&pool->bad_releases, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_sub_explicit(&c->in_use, 1, memory_order_relaxed);
    osv_poison(slot->base, slot->cap); /* a use after release is caught in the ASan build */
    class_push(c, slot->idx);
    slot->base = NULL;
}

int osv_slot_range(const osv_slot_t *slot, uint64_t off, uint64_t len, void **ptr)
{
    uint64_t end;
    if (!slot->base || !osv_add_u64(off, len, &end) || end > slot->cap)
        return OSV_ELIMIT;
    *ptr = slot->base + off;
    return 0;
}

uint64_t osv_pool_budget(const osv_pool_t *pool)
{
    return pool->budget;
}

uint64_t osv_pool_max_slot(const osv_pool_t *pool)
{
    return pool->n_classes ? pool->cls[pool->n_classes - 1].size : 0;
}

void osv_pool_get_stats(const osv_pool_t *pool, osv_pool_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->n_classes = pool->n_classes;
    out->total_bytes = pool->total;
    for (uint32_t i = 0; i < pool->n_classes; i++) {
        const pool_class_t *c = &pool->cls[i];
        osv_pool_class_stats_t *s = &out->cls[i];
        s->slot_size = c->size;
        s->slots = c->n;
        s->in_use = atomic_load_explicit(&c->in_use, memory_order_relaxed);
        s->high_water = atomic_load_explicit(&c->high_water, memory_order_relaxed);
        s->acquires = atomic_load_explicit(&c->acquires, memory_order_relaxed);
        s->failed = atomic_load_explicit(&c->failed, memory_order_relaxed);
        out->in_use_bytes += s->in_use * c->size;
    }
}

uint64_t osv_pool_bad_releases(const osv_pool_t *pool)
{
    return atomic_load_explicit(&pool->bad_releases, memory_order_relaxed);
}
