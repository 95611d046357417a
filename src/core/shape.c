/* shape.c — shape validation and overflow-checked size arithmetic against configured limits. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ortserve/shape.h"

void osv_limits_default(osv_limits_t *lim)
{
    lim->max_dims = 8;
    lim->max_tensor_elements = 64ull << 20;
    lim->max_tensor_bytes = 256ull << 20;
    lim->max_string_bytes = 16ull << 20;
}

int osv_shape_elements(const int64_t *dims, uint32_t rank, uint64_t *count, osv_err_t *err)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < rank; i++) {
        if (dims[i] < 0)
            return osv_err_set(err, OSV_ESHAPE, "dimension %u is negative (%" PRId64 ")", i, dims[i]);
        if (!osv_mul_u64(n, (uint64_t)dims[i], &n))
            return osv_err_set(err, OSV_EOVERFLOW, "element count overflows at dimension %u", i);
    }
    *count = n;
    return 0;
}

int osv_shape_size(const int64_t *dims, uint32_t rank, osv_dtype_t dt, const osv_limits_t *lim,
                   uint64_t *count, uint64_t *bytes, osv_err_t *err)
{
    uint64_t n, b = 0;
    int rc;
    if (rank > OSV_MAX_DIMS || (lim && rank > lim->max_dims))
        return osv_err_set(err, OSV_ELIMIT, "rank %u exceeds the limit of %u dimensions", rank,
                           lim && lim->max_dims < OSV_MAX_DIMS ? lim->max_dims : OSV_MAX_DIMS);
    if ((rc = osv_shape_elements(dims, rank, &n, err)) != 0)
        return rc;
    if (lim && n > lim->max_tensor_elements)
        return osv_err_set(err, OSV_ELIMIT, "%" PRIu64 " elements exceed the limit of %" PRIu64, n,
                           lim->max_tensor_elements);
    if (dt != OSV_DTYPE_BYTES) {
        if (!osv_mul_u64(n, osv_dtype_size(dt), &b))
            return osv_err_set(err, OSV_EOVERFLOW, "byte size overflows");
        if (lim && b > lim->max_tensor_bytes)
            return osv_err_set(err, OSV_ELIMIT, "%" PRIu64 " bytes exceed the tensor limit of %" PRIu64, b,
                               lim->max_tensor_bytes);
    }
    if (count)
        *count = n;
    if (bytes)
        *bytes = b;
    return 0;
}

int osv_shape_check(const char *what, const int64_t *model_dims, int32_t model_rank, const int64_t *dims,
                    uint32_t rank, const osv_limits_t *lim, osv_err_t *err)
{
    char want[96], got[96];
    if (lim && rank > lim->max_dims)
        return osv_err_set(err, OSV_ELIMIT, "%s: rank %u exceeds the limit of %u dimensions", what, rank,
                           lim->max_dims);
    if (rank > OSV_MAX_DIMS)
        return osv_err_set(err, OSV_ELIMIT, "%s: rank %u exceeds %u", what, rank, OSV_MAX_DIMS);
    for (uint32_t i = 0; i < rank; i++) {
        if (dims[i] < 0)
            return osv_err_set(err, OSV_ESHAPE, "%s: dimension %u is negative (%" PRId64 ")", what, i,
                               dims[i]);
    }
    if (model_rank < 0)
        return 0;
    if ((uint32_t)model_rank != rank)
        return osv_err_set(err, OSV_ESHAPE, "%s: shape %s has rank %u, the model expects %s (rank %d)", what,
                           osv_shape_str(dims, (int32_t)rank, got, sizeof got), rank,
                           osv_shape_str(model_dims, model_rank, want, sizeof want), model_rank);
    for (uint32_t i = 0; i < rank; i++) {
        if (model_dims[i] >= 0 && model_dims[i] != dims[i])
            return osv_err_set(err, OSV_ESHAPE, "%s: shape %s does not match the model's %s at dimension %u",
                               what, osv_shape_str(dims, (int32_t)rank, got, sizeof got),
                               osv_shape_str(model_dims, model_rank, want, sizeof want), i);
    }
    return 0;
}

const char *osv_shape_str(const int64_t *dims, int32_t rank, char *buf, size_t cap)
{
    size_t n = 0;
    if (cap == 0)
        return buf;
    if (rank < 0) {
        snprintf(buf, cap, "[?]");
        return buf;
    }
    n += (size_t)snprintf(buf, cap, "[");
    for (int32_t i = 0; i < rank && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ",%" PRId64 : "%" PRId64, dims[i]);
    if (n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "]");
    if (n >= cap && cap > 4)
        memcpy(buf + cap - 4, "...", 4);
    return buf;
}
