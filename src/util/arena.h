/* arena.h — internal: a bump allocator for request-scoped objects, reset (not freed) per request.
 *
 * Chunks are kept across resets, so after warm-up a connection's requests allocate nothing from
 * the heap. `limit` caps the total bytes one arena may hold; an allocation beyond it fails (NULL)
 * instead of growing without bound. Not thread-safe: an arena belongs to one request at a time. */
#ifndef OSV_UTIL_ARENA_H
#define OSV_UTIL_ARENA_H

#include <stddef.h>

typedef struct osv_arena_chunk osv_arena_chunk_t;

typedef struct osv_arena {
    osv_arena_chunk_t *first, *cur;
    size_t chunk_size; /* default chunk payload */
    size_t limit;      /* max total chunk bytes */
    size_t total;      /* bytes held in chunks */
} osv_arena_t;

void osv_arena_init(osv_arena_t *a, size_t chunk_size, size_t limit);
/* size bytes aligned to `align` (a power of two ≤ 64); NULL when the limit or memory runs out.
 * The memory lives until the next osv_arena_reset/osv_arena_free. */
void *osv_arena_alloc(osv_arena_t *a, size_t size, size_t align);
/* Forgets every allocation, keeps the chunks for reuse. */
void osv_arena_reset(osv_arena_t *a);
/* The same, then returns to the heap every chunk beyond the first `keep` bytes of chunks: a request
 * that needed a large arena does not leave it held by an idle connection. */
void osv_arena_reset_trim(osv_arena_t *a, size_t keep);
/* Returns every chunk to the heap. */
void osv_arena_free(osv_arena_t *a);

#endif
