/* shm.h — internal: registered system shared-memory regions (Triton's extension).
 *
 * A region is a POSIX shared-memory object (shm_open: always under /dev/shm) mapped once at
 * registration. Requests take a reference for as long as they read or write it, so unregistering a
 * region that a request is using only unmaps it when that request finishes. Thread-safe. */
#ifndef OSV_HTTP_SHM_H
#define OSV_HTTP_SHM_H

#include <stdint.h>

#include "ortserve/error.h"

typedef struct osv_shm osv_shm_t;
typedef struct osv_shm_region osv_shm_region_t;

int osv_shm_create(osv_shm_t **out);
void osv_shm_destroy(osv_shm_t *s);

/* Maps `key` ("/name" or "name") bytes [offset, offset + size) as region `name`. */
int osv_shm_register(osv_shm_t *s, const char *name, size_t name_len, const char *key, size_t key_len,
                     uint64_t offset, uint64_t size, osv_err_t *err);
/* Removes one region (name_len > 0) or all; a region in use is unmapped when its last user ends. */
int osv_shm_unregister(osv_shm_t *s, const char *name, size_t name_len, osv_err_t *err);

/* Takes a reference to region `name`; NULL when not registered. Release with osv_shm_put. */
osv_shm_region_t *osv_shm_get(osv_shm_t *s, const char *name, size_t len);
void osv_shm_put(osv_shm_region_t *r);
/* Bounds-checked pointer to [offset, offset + size) of the registered range. */
int osv_shm_range(const osv_shm_region_t *r, uint64_t offset, uint64_t size, void **ptr, osv_err_t *err);

typedef struct osv_shm_info {
    char name[128], key[256];
    uint64_t offset, byte_size;
} osv_shm_info_t;
/* Copies up to cap descriptions (one region if name_len > 0); *n gets the count. OSV_ENOTFOUND for
 * an unknown name. */
int osv_shm_list(osv_shm_t *s, const char *name, size_t name_len, osv_shm_info_t *out, size_t cap, size_t *n);

#endif
