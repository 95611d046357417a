/* outputs.c — element access and classification over output views; see outputs.h. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "serve/outputs.h"

double osv_view_value(const osv_tensor_view_t *v, uint64_t i)
{
    const void *p = v->data;
    uint32_t b;
    float f;
    switch (v->dtype) {
    case OSV_DTYPE_FP32:
        return ((const float *)p)[i];
    case OSV_DTYPE_FP64:
        return ((const double *)p)[i];
    case OSV_DTYPE_FP16: {
        uint16_t h = ((const uint16_t *)p)[i];
        uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double r = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m | 0x400, (int)e - 25);
        return (h & 0x8000) ? -r : r;
    }
    case OSV_DTYPE_BF16:
        b = (uint32_t)((const uint16_t *)p)[i] << 16;
        memcpy(&f, &b, 4);
        return f;
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
    default:
        return 0;
    }
}

uint32_t osv_classify_k(const osv_tensor_view_t *v, uint32_t k)
{
    uint64_t rows = v->rank >= 2 ? (uint64_t)v->dims[0] : 1, classes = rows ? v->count / rows : 0;
    if (k > classes) /* top-1000000 of 10 classes is the 10 (an empty output: 1) */
        return classes ? (uint32_t)classes : 1;
    return k;
}

uint64_t osv_classify_max(const osv_tensor_info_t *ti, const osv_tensor_view_t *v, uint32_t k)
{
    uint64_t rows = v->rank >= 2 ? (uint64_t)v->dims[0] : 1, longest = 0;
    for (uint32_t i = 0; i < ti->n_labels; i++) {
        uint64_t l = strlen(ti->labels[i]);
        longest = l > longest ? l : longest;
    }
    return rows * k * (4 + 64 + 1 + longest);
}

uint64_t osv_classify(const osv_tensor_info_t *ti, const osv_tensor_view_t *v, uint32_t k, uint64_t *top,
                      uint8_t *dst, osv_class_shape_t *shape)
{
    uint64_t rows = v->rank >= 2 ? (uint64_t)v->dims[0] : 1, used = 0;
    uint64_t classes = rows ? v->count / rows : 0;
    if (k > classes)
        k = (uint32_t)classes;
    for (uint64_t r = 0; r < rows; r++) {
        const uint64_t base = r * classes;
        uint32_t n = 0;
        for (uint64_t i = 0; i < classes; i++) { /* insertion into a sorted top-k list */
            double val = osv_view_value(v, base + i);
            if (n == k && !(val > osv_view_value(v, base + top[k - 1])))
                continue;
            uint32_t j = n < k ? n++ : k - 1;
            while (j > 0 && val > osv_view_value(v, base + top[j - 1])) {
                top[j] = top[j - 1];
                j--;
            }
            top[j] = i;
        }
        for (uint32_t j = 0; j < n; j++) {
            char *s = (char *)dst + used + 4;
            double score = osv_view_value(v, base + top[j]);
            int len = snprintf(s, 64, "%f:%" PRIu64, score, top[j]); /* std::to_string's format, as Triton */
            if (len < 0 || len >= 64)
                len = snprintf(s, 64, "%g:%" PRIu64, score, top[j]); /* huge scores */
            if (top[j] < ti->n_labels) {
                size_t ll = strlen(ti->labels[top[j]]);
                s[len++] = ':';
                memcpy(s + len, ti->labels[top[j]], ll);
                len += (int)ll;
            }
            uint32_t l32 = (uint32_t)len;
            memcpy(dst + used, &l32, 4);
            used += 4 + (uint64_t)len;
        }
    }
    shape->count = rows * k;
    shape->rank = v->rank >= 2 ? 2 : 1;
    shape->dims[0] = v->rank >= 2 ? (int64_t)rows : (int64_t)k;
    shape->dims[1] = k;
    return used;
}
