/* ortserve/alloc.h — the one allocator every ortserve module uses for its own heap memory.
 *
 * Long-lived objects (models, regions, configuration) are allocated through these functions, so the
 * allocations ortserve makes are counted (none happen per steady-state call: the benchmark measures
 * it in process, an end-to-end test over HTTP with /metrics' ortserve_heap_allocations_total)
 * and can be failed on purpose (fault injection, SQLite-style). Request tensor memory never comes
 * from here: it comes from the slot pool. */
#ifndef ORTSERVE_ALLOC_H
#define ORTSERVE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(*osv_malloc_fn)(size_t size);
typedef void *(*osv_realloc_fn)(void *ptr, size_t size);
typedef void *(*osv_calloc_fn)(size_t count, size_t size);
typedef void (*osv_free_fn)(void *ptr);

/* Replaces the functions behind osv_malloc & co. Call before creating any ortserve object.
 * Not thread-safe. Returns OSV_EINVAL if any function is NULL. */
OSV_API int osv_replace_allocator(osv_malloc_fn m, osv_realloc_fn r, osv_calloc_fn c, osv_free_fn f);

/* Counted allocation. Return NULL on failure (or on an injected failure). Thread-safe. */
OSV_API void *osv_malloc(size_t size);
OSV_API void *osv_calloc(size_t count, size_t size);
OSV_API void *osv_realloc(void *ptr, size_t size);
OSV_API void osv_free(void *ptr);
/* NUL-terminated copy of s[0..len); NULL on failure. Free with osv_free. */
OSV_API char *osv_strndup(const char *s, size_t len);
OSV_API char *osv_strdup(const char *s);

/* Number of successful osv_malloc/calloc/realloc/strdup calls since start. Thread-safe. */
OSV_API uint64_t osv_alloc_count(void);

/* Allocations made through osv_malloc/calloc/realloc/strdup and not yet passed to osv_free (a
 * realloc of a live block counts once). A leak check for tests: equal before and after a cycle that
 * must free what it allocated. Thread-safe. */
OSV_API uint64_t osv_alloc_live(void);
/* Bytes of those blocks (as the C library sized them); 0 once osv_replace_allocator installed other
 * functions, which cannot say. Thread-safe. */
OSV_API uint64_t osv_alloc_live_bytes(void);

/* Fault injection: fail the n-th allocation from now (n ≥ 1); with `persistent` every later one
 * fails too. n = 0 disables. Thread-safe. Returns the number of failures injected so far.
 * Slot-pool acquisitions (osv_pool_acquire, which then answers OSV_EBUSY) count as allocations
 * here too, so the countdown covers all the memory a request asks for (SQLite's method: fail the
 * 1st, 2nd, 3rd … allocation, once and persistently, until the operation succeeds untouched). */
OSV_API void osv_alloc_fail_after(uint64_t n, int persistent);
OSV_API uint64_t osv_alloc_failures_injected(void);
/* True when the allocation being attempted must fail (consumes one step of the countdown). For
 * allocators that do not go through osv_malloc (the slot pool). */
OSV_API int osv_alloc_should_fail(void);

#ifdef __cplusplus
}
#endif
#endif
