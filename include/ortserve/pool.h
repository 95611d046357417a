/* ortserve/pool.h — the slot pool: preallocated, 64-byte-aligned tensor memory in size classes.
 *
 * All request tensor bytes live in slots. The pool reserves its memory once at creation (one
 * anonymous mapping per size class; pages are committed by the kernel on first touch, or up front
 * with `prefault`/`mlock`) and never allocates afterwards. Acquire and release are lock-free
 * (a tagged Treiber stack per class). A request that finds every suitable slot in use gets
 * OSV_EBUSY, which the server maps to 503 + Retry-After: exhaustion is never a crash or a malloc. */
#ifndef ORTSERVE_POOL_H
#define ORTSERVE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OSV_SLOT_ALIGN       64
#define OSV_POOL_MAX_CLASSES 16

typedef struct osv_pool osv_pool_t;

/* A slot handed out by osv_pool_acquire. Plain value; valid until passed to osv_pool_release.
 * `base` is OSV_SLOT_ALIGN-aligned and `cap` bytes long: at least the bytes asked for (the class
 * size), and exactly those in an AddressSanitizer build, which poisons the rest of the slot, a guard
 * zone after it and every released slot — write only the bytes you asked for. */
typedef struct osv_slot {
    uint8_t *base;
    size_t cap;
    uint32_t cls; /* size-class index */
    uint32_t idx; /* slot index in its class */
} osv_slot_t;

typedef struct osv_pool_opts {
    uint64_t total_bytes;   /* budget for all classes; 0 = osv_pool_default_budget() */
    uint64_t min_slot;      /* smallest class (default 4 KiB; rounded to a multiple of 64) */
    uint64_t max_slot;      /* largest class wanted (default 64 MiB) */
    uint32_t growth;        /* size ratio between classes, ≥ 2 (default 4) */
    bool mlock;             /* lock the pool in RAM (needs RLIMIT_MEMLOCK); implies prefault */
    bool prefault;          /* touch every page at creation (no page faults on the hot path) */
    const uint32_t *counts; /* optional explicit slot count per class (n_counts entries) */
    uint32_t n_counts;
    /* Optional: sizes of the slots requests are known to need (e.g. a model's binary request body
     * and its outputs, batch 1). Read during osv_pool_create only; the caller keeps ownership. */
    const uint64_t *hints;
    uint32_t n_hints;
    uint32_t hint_slots; /* slots wanted in each hinted class (0: as many as the budget allows) */
    /* Default budget only: memory the caller expects to need beyond the current working set
     * (e.g. ONNX Runtime's buffers for the runs in flight at once), kept out of the cgroup's
     * headroom before the pool takes its half. */
    uint64_t reserve_bytes;
} osv_pool_opts_t;

/* Per-class statistics; counters are monotonic, in_use/high_water are gauges. */
typedef struct osv_pool_class_stats {
    uint64_t slot_size;
    uint32_t slots;
    uint32_t in_use;
    uint32_t high_water;
    uint64_t acquires;
    uint64_t failed; /* acquires that found this class (and every larger one) empty */
} osv_pool_class_stats_t;

typedef struct osv_pool_stats {
    uint32_t n_classes;
    uint64_t total_bytes;  /* reserved */
    uint64_t in_use_bytes; /* sum of slot sizes in use */
    osv_pool_class_stats_t cls[OSV_POOL_MAX_CLASSES];
} osv_pool_stats_t;

/* Budget used when total_bytes is 0: a quarter of the memory this process may use (the smaller of
 * the cgroup limit, v2 memory.max or v1 memory.limit_in_bytes, and physical memory), clamped to
 * [16 MiB, 4 GiB]; under a cgroup limit, also at most half of what the group has left (limit minus
 * its working set), so call it after loading models. Thread-safe. */
OSV_API uint64_t osv_pool_default_budget(void);
/* The same with `reserve` bytes of the headroom kept for other growth (see reserve_bytes). */
OSV_API uint64_t osv_pool_default_budget_reserving(uint64_t reserve);

/* Creates a pool. Classes are min_slot·growth^i up to max_slot. The plain plan shares the budget
 * equally between classes, each getting floor(share / size) slots (a class that cannot hold its
 * share in its 4096 slots leaves the rest of it to the others), then gives every class that still
 * has none one slot while the budget allows (smallest first). When hints fall in classes
 * (the smallest class that holds each) that the plain plan leaves with fewer than hint_slots
 * slots, half the budget is shared equally instead, every class up to the plain plan's largest
 * gets a slot, those hinted classes get the same number of extra slots each (up to hint_slots)
 * from the rest, and what remains is shared equally: a request that needs one slot of each hinted
 * class finds them together. What whole slots leave of the budget goes to the largest classes it
 * holds a slot of, largest first, so the pool reserves its budget to within the smallest slot of a
 * class that does not have its 4096 slots yet. Explicit `counts` override all of this. On success *out
 * owns the mappings; free with osv_pool_destroy(). */
OSV_API int osv_pool_create(const osv_pool_opts_t *opts, osv_pool_t **out, osv_err_t *err);

/* Unmaps everything. Every slot must have been released. Not thread-safe against acquire/release. */
OSV_API void osv_pool_destroy(osv_pool_t *pool);

/* Takes a free slot of at least `bytes` from the smallest class that has one (falling back to
 * larger classes). Lock-free, thread-safe, never allocates. Returns 0, OSV_EBUSY when every
 * suitable slot is in use, or OSV_ETOOBIG when `bytes` exceeds the largest class. */
OSV_API int osv_pool_acquire(osv_pool_t *pool, uint64_t bytes, osv_slot_t *out);

/* Returns a slot. Lock-free, thread-safe. Releasing a slot twice or a slot of another pool is
 * detected (slot state flag) and ignored with a counted error instead of corrupting the pool. */
OSV_API void osv_pool_release(osv_pool_t *pool, osv_slot_t *slot);

/* Bounds-checked view: *ptr = base + off when off + len ≤ cap (overflow-checked); else OSV_ELIMIT. */
OSV_API int osv_slot_range(const osv_slot_t *slot, uint64_t off, uint64_t len, void **ptr);

/* The budget the pool was planned from: opts->total_bytes, or the default budget it computed. The
 * stats' total_bytes is what the plan reserves of it. */
OSV_API uint64_t osv_pool_budget(const osv_pool_t *pool);

/* Largest slot size the pool can hand out. */
OSV_API uint64_t osv_pool_max_slot(const osv_pool_t *pool);

/* Snapshot of the statistics (relaxed reads; individually consistent counters). Thread-safe. */
OSV_API void osv_pool_get_stats(const osv_pool_t *pool, osv_pool_stats_t *out);

/* Number of invalid releases detected (double release, foreign slot). */
OSV_API uint64_t osv_pool_bad_releases(const osv_pool_t *pool);

#ifdef __cplusplus
}
#endif
#endif
