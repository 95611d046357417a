/* shm.h — internal: registered system shared-memory regions (Triton's extension).
 *
 * A region is a POSIX shared-memory object (shm_open: always under /dev/shm) mapped once at
 * registration. Requests take a reference for as long as they read or write it, so unregistering a
 * region that a request is using only unmaps it when that request finishes. Thread-safe.
 *
 * The objects belong to clients, which can act against the server:
 * - Memory. tmpfs charges a page to the memory cgroup of the process that touches it first, so the
 *   pages of a sparse object that the server reads or writes are charged to the server. The bytes of
 *   all regions together are bounded (the registry's budget, checked before an object is opened),
 *   and osv_shm_absent tells the memory guard how much a request would add.
 * - Truncation. Touching a page of a mapping beyond the end of its object raises SIGBUS. The object's
 *   size is checked before every use (the descriptor stays open), and a process-wide SIGBUS handler,
 *   installed at the first registration, recovers from a truncation that races a use: it maps
 *   anonymous zero pages over the region's mapping and marks the region broken, so the request's
 *   later checks fail with 400 and the region refuses every use until it is registered again. A
 *   SIGBUS outside every region goes to the handler installed before ours (ASan's), else to the
 *   default action.
 * - Ownership. Each region records who registered it (`owner`: the identity of the bearer token,
 *   osv_auth_check; 0 without authentication). Every lookup is by (owner, name): another owner sees
 *   no such region, and names are per owner. */
#ifndef OSV_SERVE_SHM_H
#define OSV_SERVE_SHM_H

#include <stdbool.h>
#include <stdint.h>

#include "ortserve/error.h"

/* Regions at once, all owners together (each holds a mapping and an open descriptor). */
#define OSV_SHM_MAX_REGIONS 1024

typedef struct osv_shm osv_shm_t;
typedef struct osv_shm_region osv_shm_region_t;

/* A registry whose regions may span `max_bytes` bytes together (byte_size summed over the regions
 * registered). Destroy after every reference taken with osv_shm_get has been put. */
int osv_shm_create(uint64_t max_bytes, osv_shm_t **out);
void osv_shm_destroy(osv_shm_t *s);

/* Maps `key` ("/name" or "name") bytes [offset, offset + size) as region `name` of `owner`. Fails
 * with OSV_ELIMIT, before opening the object, when the budget has no room for `size` bytes. */
int osv_shm_register(osv_shm_t *s, uint64_t owner, const char *name, size_t name_len, const char *key,
                     size_t key_len, uint64_t offset, uint64_t size, osv_err_t *err);
/* Removes one region of `owner` (name_len > 0) or all of its regions; a region in use is unmapped
 * when its last user ends. OSV_ENOTFOUND when the name is not registered for `owner`. */
int osv_shm_unregister(osv_shm_t *s, uint64_t owner, const char *name, size_t name_len, osv_err_t *err);
/* Removes every region whose owner `keep` returns false for (token reloads); returns the count. */
uint32_t osv_shm_unregister_unless(osv_shm_t *s, bool (*keep)(void *ud, uint64_t owner), void *ud);

/* Takes a reference to region `name` of `owner`; NULL when not registered. Release with osv_shm_put.
 * A broken region is still returned (its uses fail with a message that says why). */
osv_shm_region_t *osv_shm_get(osv_shm_t *s, uint64_t owner, const char *name, size_t len);
void osv_shm_put(osv_shm_region_t *r);
/* Bounds-checked pointer to [offset, offset + size) of the registered range, after checking that the
 * region is not broken and that its object still covers it (fstat). OSV_EINVAL otherwise. */
int osv_shm_range(const osv_shm_region_t *r, uint64_t offset, uint64_t size, void **ptr, osv_err_t *err);
/* OSV_EINVAL (with the region's name) when a truncation broke the region since it was mapped (the
 * SIGBUS handler's mark); call after a request's last access, which may have hit the truncation. */
int osv_shm_check(const osv_shm_region_t *r, osv_err_t *err);
/* Bytes of the pages of [offset, offset + size) that no process has touched yet (mincore): what
 * touching the range would charge to this process's memory cgroup at most. */
uint64_t osv_shm_absent(const osv_shm_region_t *r, uint64_t offset, uint64_t size);

typedef struct osv_shm_info {
    char name[128], key[256];
    uint64_t offset, byte_size;
} osv_shm_info_t;
/* Copies up to cap descriptions of `owner`'s regions (one region if name_len > 0); *n gets the
 * count. OSV_ENOTFOUND for an unknown name. */
int osv_shm_list(osv_shm_t *s, uint64_t owner, const char *name, size_t name_len, osv_shm_info_t *out,
                 size_t cap, size_t *n);

#endif
