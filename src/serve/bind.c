/* bind.c — shared-memory binding of inputs and outputs, for every front; see bind.h. */
#include <inttypes.h>

#include "serve/bind.h"

int osv_bind_shm_input(osv_infer_t *inf, uint32_t idx, const char *name, osv_dtype_t dt, const int64_t *dims,
                       uint32_t rank, uint64_t bytes, const osv_shm_region_t *r, uint64_t off, uint64_t size,
                       osv_err_t *err)
{
    void *p;
    uint64_t need = bytes;
    int rc;
    if (!need && osv_shape_size(dims, rank, dt, NULL, NULL, &need, err) != 0)
        return err->code;
    if (size != need)
        return osv_err_set(err, OSV_ESHAPE,
                           "input '%s': shared_memory_byte_size %" PRIu64 " but the tensor is %" PRIu64 " bytes",
                           name, size, need);
    if ((rc = osv_shm_range(r, off, size, &p, err)) != 0)
        return rc;
    return osv_infer_input_external(inf, idx, p, size, err);
}

int osv_bind_shm_output(osv_infer_t *inf, const osv_model_t *m, uint32_t idx, const osv_shm_region_t *r,
                        uint64_t off, uint64_t size, void **bytes_dst, osv_err_t *err)
{
    void *p;
    int rc;
    *bytes_dst = NULL;
    if ((rc = osv_shm_range(r, off, size, &p, err)) != 0)
        return rc;
    if (osv_model_output(m, idx)->dtype == OSV_DTYPE_BYTES) {
        *bytes_dst = p; /* serialized into the region after the run */
        return 0;
    }
    return osv_infer_output_external(inf, idx, p, size, err);
}
