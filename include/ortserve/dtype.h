/* ortserve/dtype.h — the one table mapping KServe v2 datatype names to ONNX Runtime element types.
 *
 * BOOL, UINT8..64, INT8..64, FP16, BF16, FP32, FP64 are fixed-size and can be bound zero-copy.
 * BYTES maps to ORT string tensors: its elements are variable-length byte strings, so it is always
 * converted (never zero-copy). Everything here is immutable static data: thread-safe. */
#ifndef ORTSERVE_DTYPE_H
#define ORTSERVE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* ---- conversions of the 16-bit float formats (the one implementation; inline for per-pixel use) ----
 *
 * To float: exact (every FP16 and BF16 value is a float); NaN payloads are kept. From float: rounded
 * to nearest, ties to even, as IEEE 754 and numpy do; overflow gives ±infinity; a NaN stays a (quiet)
 * NaN — it never rounds into infinity. */
static inline float osv_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
    float f;
    if (e == 0) { /* zero or subnormal: m · 2^-24, exact in a float */
        f = (float)m * 0x1p-24f;
        return sign ? -f : f;
    }
    bits = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e + 112) << 23) | (m << 13);
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t osv_f32_to_f16(float v)
{
    uint32_t x, mant, h, rem, halfway;
    int32_t e;
    memcpy(&x, &v, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    mant = x & 0x7fffffu;
    e = (int32_t)((x >> 23) & 0xffu);
    if (e == 0xff) /* infinity, or NaN made quiet */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
    e = e - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) { /* a subnormal half (or zero): the implicit bit joins the mantissa */
        if (e < -10)
            return sign;
        uint32_t shift = (uint32_t)(14 - e);
        mant |= 0x800000u;
        h = mant >> shift;
        rem = mant & ((1u << shift) - 1);
        halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    h = ((uint32_t)e << 10) | (mant >> 13);
    rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* a carry into the exponent is the correct rounding (up to infinity) */
    return (uint16_t)(sign | h);
}

static inline float osv_bf16_to_f32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t osv_f32_to_bf16(float v)
{
    uint32_t x;
    memcpy(&x, &v, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a NaN, quiet */
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* Element i of a fixed-size numeric tensor (BOOL .. FP64) as a double: exact except 64-bit integers
 * beyond 2^53 (rounded). 0 for BYTES and INVALID. */
OSV_API double osv_dtype_value(osv_dtype_t dt, const void *data, uint64_t i);

/* ---- ranking (classification) ------------------------------------------------------------------------
 *
 * The indices of the min(k, n) highest of n values of a numeric tensor, highest first. Order is total
 * and defined: ties keep the lower index first; NaN ranks below every number (-infinity included),
 * NaNs among themselves by index. Index j is written as a uint32_t at (char *)idx + j · stride (so
 * it can land in a field of the caller's result structs). n above UINT32_MAX: OSV_ELIMIT. Returns the
 * count written, or a negative code. O(n·k) compares, no allocation (k is small: top-5, top-10). */
OSV_API int osv_topk(const void *values, osv_dtype_t dt, uint64_t n, uint32_t k, void *idx, size_t stride);

#ifdef __cplusplus
}
#endif
#endif
