/* dtype.c — the KServe datatype ↔ ONNX Runtime element type table, reading elements as numbers, and
 * the one top-k ranking every classification path uses. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "ortserve/dtype.h"

typedef struct dtype_row {
    const char *name;
    size_t size;
    int ort;
} dtype_row_t;

static const dtype_row_t rows[OSV_DTYPE_COUNT] = {[OSV_DTYPE_INVALID] = {"INVALID", 0, 0},
#define OSV__DTYPE_ROW(sfx, name, size, ort) [OSV_DTYPE_##sfx] = {name, size, ort},
                                                  OSV_DTYPE_MAP(OSV__DTYPE_ROW)
#undef OSV__DTYPE_ROW
};

static int valid(osv_dtype_t dt)
{
    return dt > OSV_DTYPE_INVALID && dt < OSV_DTYPE_COUNT;
}

const char *osv_dtype_name(osv_dtype_t dt)
{
    return valid(dt) ? rows[dt].name : "INVALID";
}

osv_dtype_t osv_dtype_from_name(const char *name, size_t len)
{
    for (int i = 1; i < OSV_DTYPE_COUNT; i++) {
        if (strlen(rows[i].name) == len && memcmp(rows[i].name, name, len) == 0)
            return (osv_dtype_t)i;
    }
    return OSV_DTYPE_INVALID;
}

size_t osv_dtype_size(osv_dtype_t dt)
{
    return valid(dt) ? rows[dt].size : 0;
}

int osv_dtype_to_ort(osv_dtype_t dt)
{
    return valid(dt) ? rows[dt].ort : 0;
}

osv_dtype_t osv_dtype_from_ort(int ort_type)
{
    for (int i = 1; i < OSV_DTYPE_COUNT; i++) {
        if (rows[i].ort == ort_type)
            return (osv_dtype_t)i;
    }
    return OSV_DTYPE_INVALID;
}

double osv_dtype_value(osv_dtype_t dt, const void *p, uint64_t i)
{
    switch (dt) {
    case OSV_DTYPE_BOOL:
    case OSV_DTYPE_UINT8:
        return ((const uint8_t *)p)[i];
    case OSV_DTYPE_INT8:
        return ((const int8_t *)p)[i];
    case OSV_DTYPE_UINT16:
        return ((const uint16_t *)p)[i];
    case OSV_DTYPE_INT16:
        return ((const int16_t *)p)[i];
    case OSV_DTYPE_UINT32:
        return ((const uint32_t *)p)[i];
    case OSV_DTYPE_INT32:
        return ((const int32_t *)p)[i];
    case OSV_DTYPE_UINT64:
        return (double)((const uint64_t *)p)[i];
    case OSV_DTYPE_INT64:
        return (double)((const int64_t *)p)[i];
    case OSV_DTYPE_FP16:
        return osv_f16_to_f32(((const uint16_t *)p)[i]);
    case OSV_DTYPE_BF16:
        return osv_bf16_to_f32(((const uint16_t *)p)[i]);
    case OSV_DTYPE_FP32:
        return ((const float *)p)[i];
    case OSV_DTYPE_FP64:
        return ((const double *)p)[i];
    default:
        return 0;
    }
}

/* a (at a later index than b) ranks above b: strictly greater, and NaN above nothing. */
static bool ranks_above(double a, double b)
{
    return !isnan(a) && (isnan(b) || a > b);
}

static uint32_t idx_get(const void *idx, size_t stride, uint32_t j)
{
    uint32_t v;
    memcpy(&v, (const char *)idx + (size_t)j * stride, sizeof v);
    return v;
}

static void idx_put(void *idx, size_t stride, uint32_t j, uint32_t v)
{
    memcpy((char *)idx + (size_t)j * stride, &v, sizeof v);
}

int osv_topk(const void *values, osv_dtype_t dt, uint64_t n, uint32_t k, void *idx, size_t stride)
{
    uint32_t m = 0;
    if (n > UINT32_MAX)
        return OSV_ELIMIT;
    if (!valid(dt) || dt == OSV_DTYPE_BYTES)
        return OSV_EDTYPE;
    k = (uint64_t)k < n ? k : (uint32_t)n;
    if (k == 0)
        return 0;
    double last = 0; /* the value of the k-th entry, once there are k */
    for (uint32_t i = 0; i < (uint32_t)n; i++) {
        double v = osv_dtype_value(dt, values, i);
        if (m == k && !ranks_above(v, last))
            continue;
        uint32_t j = m < k ? m++ : k - 1;
        while (j > 0 && ranks_above(v, osv_dtype_value(dt, values, idx_get(idx, stride, j - 1)))) {
            idx_put(idx, stride, j, idx_get(idx, stride, j - 1));
            j--;
        }
        idx_put(idx, stride, j, i);
        last = osv_dtype_value(dt, values, idx_get(idx, stride, m - 1));
    }
    return (int)m;
}
