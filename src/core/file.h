/* file.h — internal to src/core: reading a small file (a config, a labels or warm-up file) whole. */
#ifndef OSV_CORE_FILE_H
#define OSV_CORE_FILE_H

#include <stddef.h>

#include "ortserve/error.h"

/* Reads `path`, a regular file of at most `max` bytes, into a new NUL-terminated buffer (free with
 * osv_free) of *len bytes. OSV_ENOTFOUND when it does not exist, OSV_ELIMIT when it is larger than
 * max or not a regular file (checked before anything is allocated), OSV_EIO on other errors. */
int osv_read_file(const char *path, size_t max, char **out, size_t *len, osv_err_t *err);

#endif
