/* npy.h — internal: NumPy .npy files in and out, so numpy users can drive `ortserve run`.
 *
 * Reading maps the file and points straight at its data: NumPy pads the header so the data starts
 * at a multiple of 64 bytes, which makes the mapped data bindable to ORT without a copy. */
#ifndef OSV_CLI_NPY_H
#define OSV_CLI_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "ortserve.h"

typedef struct osv_npy {
    osv_dtype_t dtype;
    uint32_t rank;
    int64_t dims[OSV_MAX_DIMS];
    uint64_t count;
    void *data; /* fixed-size dtypes: into the mapping; BYTES: serialized (u32 length + bytes) */
    uint64_t bytes;
    void *map; /* the mapping (munmap'ed by osv_npy_close) */
    size_t map_len;
    void *owned; /* heap buffer for converted BYTES data, or NULL */
} osv_npy_t;

/* Opens `path`. Supports little-endian b1/u1-8/i1-8/f2/f4/f8, C order, and fixed-width byte (|Sn)
 * or unicode (<Un) strings as BYTES. Close with osv_npy_close. */
int osv_npy_open(const char *path, osv_npy_t *out, osv_err_t *err);
void osv_npy_close(osv_npy_t *n);

/* Writes a fixed-size tensor, or (dtype BYTES) serialized BYTES data as |Sn, to `path`. */
int osv_npy_write(const char *path, osv_dtype_t dt, const int64_t *dims, uint32_t rank, const void *data,
                  uint64_t bytes, osv_err_t *err);

#endif
