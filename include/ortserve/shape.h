/* ortserve/shape.h — tensor shapes, limits, and overflow-checked size arithmetic.
 *
 * Every size that comes from a request is computed here, with overflow checks, and compared with
 * the configured limits before anything is allocated. Pure functions over caller data: thread-safe. */
#ifndef ORTSERVE_SHAPE_H
#define ORTSERVE_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hard upper bound on tensor rank (struct storage); the configurable limit max_dims is ≤ this. */
#define OSV_MAX_DIMS 16

/* Limits enforced on every tensor before allocation. Zero-initialised fields mean "use default"
 * only when passed through osv_limits_default(). */
typedef struct osv_limits {
    uint32_t max_dims;            /* rank limit, ≤ OSV_MAX_DIMS (default 8) */
    uint64_t max_tensor_elements; /* per tensor (default 64 Mi elements) */
    uint64_t max_tensor_bytes;    /* per tensor (default 256 MiB) */
    uint64_t max_string_bytes;    /* one BYTES element (default 16 MiB) */
} osv_limits_t;

/* Fills *lim with the defaults above. */
OSV_API void osv_limits_default(osv_limits_t *lim);

/* Product of dims[0..rank) into *count. Fails with OSV_ESHAPE on a negative dim and OSV_EOVERFLOW
 * when the product does not fit in uint64. rank 0 (a scalar) has 1 element. */
OSV_API int osv_shape_elements(const int64_t *dims, uint32_t rank, uint64_t *count, osv_err_t *err);

/* Element count and byte size of a fixed-size dtype tensor, checked against `lim` (may be NULL).
 * For BYTES, *bytes is 0 (data size is not a function of shape). */
OSV_API int osv_shape_size(const int64_t *dims, uint32_t rank, osv_dtype_t dt, const osv_limits_t *lim,
                           uint64_t *count, uint64_t *bytes, osv_err_t *err);

/* Checks a request shape against a model shape in which -1 marks a dynamic dim. `model_rank` < 0
 * means the model does not declare a rank (anything goes). `what` names the tensor in messages. */
OSV_API int osv_shape_check(const char *what, const int64_t *model_dims, int32_t model_rank,
                            const int64_t *dims, uint32_t rank, const osv_limits_t *lim, osv_err_t *err);

/* Overflow-checked helpers: return false on overflow, leaving *out untouched. */
static inline bool osv_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool osv_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}
/* Rounds `v` up to a multiple of `align` (a power of two); false on overflow. */
static inline bool osv_align_up_u64(uint64_t v, uint64_t align, uint64_t *out)
{
    uint64_t t;
    if (__builtin_add_overflow(v, align - 1, &t))
        return false;
    *out = t & ~(align - 1);
    return true;
}

/* Formats "[1,3,224,224]" into buf (always NUL-terminated, truncated with "..." if needed). */
OSV_API const char *osv_shape_str(const int64_t *dims, int32_t rank, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
