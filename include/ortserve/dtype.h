/* ortserve/dtype.h — the one table mapping KServe v2 datatype names to ONNX Runtime element types.
 *
 * BOOL, UINT8..64, INT8..64, FP16, BF16, FP32, FP64 are fixed-size and can be bound zero-copy.
 * BYTES maps to ORT string tensors: its elements are variable-length byte strings, so it is always
 * converted (never zero-copy). Everything here is immutable static data: thread-safe. */
#ifndef ORTSERVE_DTYPE_H
#define ORTSERVE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XX(enum suffix, KServe name, element size in bytes (0 = variable), ONNXTensorElementDataType value) */
#define OSV_DTYPE_MAP(XX)                                                                                    \
    XX(BOOL, "BOOL", 1, 9)                                                                                   \
    XX(UINT8, "UINT8", 1, 2)                                                                                 \
    XX(UINT16, "UINT16", 2, 4)                                                                               \
    XX(UINT32, "UINT32", 4, 12)                                                                              \
    XX(UINT64, "UINT64", 8, 13)                                                                              \
    XX(INT8, "INT8", 1, 3)                                                                                   \
    XX(INT16, "INT16", 2, 5)                                                                                 \
    XX(INT32, "INT32", 4, 6)                                                                                 \
    XX(INT64, "INT64", 8, 7)                                                                                 \
    XX(FP16, "FP16", 2, 10)                                                                                  \
    XX(BF16, "BF16", 2, 16)                                                                                  \
    XX(FP32, "FP32", 4, 1)                                                                                   \
    XX(FP64, "FP64", 8, 11)                                                                                  \
    XX(BYTES, "BYTES", 0, 8)

typedef enum osv_dtype {
    OSV_DTYPE_INVALID = 0,
#define OSV__DTYPE_ENUM(sfx, name, size, ort) OSV_DTYPE_##sfx,
    OSV_DTYPE_MAP(OSV__DTYPE_ENUM)
#undef OSV__DTYPE_ENUM
        OSV_DTYPE_COUNT
} osv_dtype_t;

/* KServe name ("FP32"); "INVALID" for OSV_DTYPE_INVALID or out-of-range values. */
OSV_API const char *osv_dtype_name(osv_dtype_t dt);
/* Parses a KServe name of `len` bytes (not NUL-terminated); OSV_DTYPE_INVALID when unknown. */
OSV_API osv_dtype_t osv_dtype_from_name(const char *name, size_t len);
/* Element size in bytes; 0 for BYTES and INVALID. */
OSV_API size_t osv_dtype_size(osv_dtype_t dt);
/* ONNXTensorElementDataType value; 0 (UNDEFINED) for INVALID. */
OSV_API int osv_dtype_to_ort(osv_dtype_t dt);
/* Inverse of osv_dtype_to_ort; OSV_DTYPE_INVALID for ORT types KServe cannot express
 * (complex, float8, int4, ...). */
OSV_API osv_dtype_t osv_dtype_from_ort(int ort_type);
/* Triton's model-config name ("TYPE_FP32"; BYTES is "TYPE_STRING"); "TYPE_INVALID" for INVALID. */
OSV_API const char *osv_dtype_config_name(osv_dtype_t dt);
/* Parses a model-config name name[0..len), or (name NULL) its DataType enum value; INVALID when
 * unknown (TYPE_INVALID included). */
OSV_API osv_dtype_t osv_dtype_from_config(const char *name, size_t len, int value);

#ifdef __cplusplus
}
#endif
#endif
