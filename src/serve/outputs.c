/* outputs.c — classification over output views; see outputs.h. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "serve/outputs.h"

/* Rows ranked separately: the batch rows, or the whole tensor as one ([N] alone: one list). */
static uint64_t class_rows(const osv_tensor_view_t *v, bool batched)
{
    return batched && v->rank >= 2 ? (uint64_t)v->dims[0] : 1;
}

uint32_t osv_classify_k(const osv_tensor_view_t *v, bool batched, uint32_t k)
{
    uint64_t rows = class_rows(v, batched), classes = rows ? v->count / rows : 0;
    if (k > classes) /* top-1000000 of 10 classes is the 10 (an empty output: 1) */
        return classes ? (uint32_t)classes : 1;
    return k;
}

uint64_t osv_classify_max(const osv_tensor_info_t *ti, const osv_tensor_view_t *v, bool batched, uint32_t k)
{
    uint64_t rows = class_rows(v, batched), longest = 0;
    for (uint32_t i = 0; i < ti->n_labels; i++) {
        uint64_t l = strlen(ti->labels[i]);
        longest = l > longest ? l : longest;
    }
    return rows * k * (4 + 64 + 1 + longest);
}

uint64_t osv_classify(const osv_tensor_info_t *ti, const osv_tensor_view_t *v, bool batched, uint32_t k,
                      uint32_t *top, uint8_t *dst, osv_class_shape_t *shape)
{
    uint64_t rows = class_rows(v, batched), used = 0;
    bool two = batched && v->rank >= 2;
    uint64_t classes = rows ? v->count / rows : 0;
    if (k > classes)
        k = (uint32_t)classes;
    for (uint64_t r = 0; r < rows; r++) {
        const uint64_t base = r * classes;
        int got = k ? osv_topk((const char *)v->data + base * osv_dtype_size(v->dtype), v->dtype, classes, k, top,
                               sizeof *top)
                    : 0;
        if (got < 0)
            return UINT64_MAX;
        for (uint32_t j = 0; j < (uint32_t)got; j++) {
            char *s = (char *)dst + used + 4;
            double score = osv_dtype_value(v->dtype, v->data, base + top[j]);
            int len = snprintf(s, 64, "%f:%u", score, top[j]); /* std::to_string's format, as Triton */
            if (len < 0 || len >= 64)
                len = snprintf(s, 64, "%g:%u", score, top[j]); /* huge scores */
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
    shape->rank = two ? 2 : 1;
    shape->dims[0] = two ? (int64_t)rows : (int64_t)k;
    shape->dims[1] = k;
    return used;
}
