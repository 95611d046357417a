/* cache.h — internal: the response cache (Triton's response_cache with its `local` cache): a bounded
 * LRU of whole successful responses, server-wide, keyed by model version, requested outputs and the
 * inputs (datatype, shape, bytes). A hit answers without queueing or running. Protocol-neutral: an
 * entry keeps output tensors, which each front encodes as it would a run's.
 *
 * Memory: entries come from the heap within the budget (--cache-size), which the memory plan keeps
 * out of the slot pool's share of the cgroup limit (serve.c). An entry read by a request is pinned
 * until that request's infer is finished, so an eviction never pulls bytes from under a response
 * being written; an evicted pinned entry still counts against the budget until it is freed.
 *
 * Keys: a 128-bit SipHash-2-4 of the key, with a random key per process (nobody can aim collisions),
 * then a full comparison of model, outputs, and every input's datatype, shape and bytes: two inputs
 * that collide are never answered with each other's results. Thread-safe; one mutex, held for the
 * table and LRU only (hashing and comparing run outside it). */
#ifndef OSV_SERVE_CACHE_H
#define OSV_SERVE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "serve/serve_internal.h"

/* A cache of `budget` bytes (> 0). *out owns it; osv_cache_destroy frees it once no request holds an
 * entry. */
int osv_cache_create(uint64_t budget, osv_cache_t **out, osv_err_t *err);
void osv_cache_destroy(osv_cache_t *c);

/* r's model has the cache enabled and r is prepared: 1 = a hit (r's outputs now view the entry,
 * r->rc = 0, cache_hit, counted), 0 = a miss (r's key is remembered for osv_cache_insert). c may be NULL
 * (0). Fronts' threads. */
int osv_cache_lookup(osv_cache_t *c, osv_sreq_t *r);
/* r ran successfully after a miss: its response is kept (evicting the least recently used entries),
 * unless it is larger than the whole budget or already there. The thread that ran it. */
void osv_cache_insert(osv_cache_t *c, osv_sreq_t *r);

typedef struct osv_cache_stats osv_cache_stats_t; /* serve.h */

void osv_cache_get_stats(osv_cache_t *c, osv_cache_stats_t *out);

#endif
