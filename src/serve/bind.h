/* bind.h — internal: binding a request's tensors to registered shared memory, the same for every
 * front (HTTP's and gRPC's shared_memory_region / _byte_size / _offset parameters). Checks the range
 * against the region and the tensor's size; no copy: ORT reads and writes the region in place. Any
 * thread that owns the infer. */
#ifndef OSV_SERVE_BIND_H
#define OSV_SERVE_BIND_H

#include <stdint.h>

#include "ortserve.h"
#include "serve/serve.h"
#include "serve/shm.h"

/* Declared input idx (datatype dt, shape dims[0..rank), `bytes` = its declared size for BYTES, 0
 * otherwise) reads [off, off + size) of region r: size must be the tensor's byte size (OSV_ESHAPE
 * naming the input and both sizes otherwise). */
int osv_bind_shm_input(osv_infer_t *inf, uint32_t idx, const char *name, osv_dtype_t dt, const int64_t *dims,
                       uint32_t rank, uint64_t bytes, const osv_shm_region_t *r, uint64_t off, uint64_t size,
                       osv_err_t *err);
/* Requested output idx of model m goes to [off, off + size) of region r: fixed-size outputs are written
 * there by ORT; for a BYTES output *bytes_dst gets the range, which the front serializes into after
 * the run (osv_infer_output_bytes), else NULL. */
int osv_bind_shm_output(osv_infer_t *inf, const osv_model_t *m, uint32_t idx, const osv_shm_region_t *r,
                        uint64_t off, uint64_t size, void **bytes_dst, osv_err_t *err);

#endif
