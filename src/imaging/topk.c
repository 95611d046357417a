/* topk.c — ranking one row of class scores: an optional softmax and a top-k selection.
 *
 * Selection keeps a sorted list of k entries and inserts each score that beats the last one:
 * O(n·k) compares with no allocation, which for the usual k ≤ 10 and n ≤ a few thousand classes is
 * faster than a heap. Softmax is monotonic, so ranking happens on the raw scores and only the k
 * selected ones are transformed (exp(x − max) / Σ exp(x − max), accumulated in double). */
#include <math.h>
#include <string.h>

#include "imaging/imaging_internal.h"

static double value(const void *p, osv_dtype_t dt, uint32_t i)
{
    switch (dt) {
    case OSV_DTYPE_FP64:
        return ((const double *)p)[i];
    case OSV_DTYPE_FP16: {
        uint16_t h = ((const uint16_t *)p)[i];
        uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double r = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m | 0x400, (int)e - 25);
        return (h & 0x8000) ? -r : r;
    }
    default:
        return ((const float *)p)[i];
    }
}

int osv_img_topk(const void *scores, osv_dtype_t dt, uint32_t n, bool softmax, uint32_t k,
                 osv_img_class_t *out, osv_err_t *err)
{
    uint32_t m = 0;
    double mx = -INFINITY, sum = 0;
    if (dt != OSV_DTYPE_FP32 && dt != OSV_DTYPE_FP64 && dt != OSV_DTYPE_FP16)
        return osv_err_set(err, OSV_EDTYPE, "class scores must be FP32, FP64 or FP16, not %s",
                           osv_dtype_name(dt));
    if (!scores && n)
        return osv_err_set(err, OSV_EINVAL, "no scores");
    k = k < n ? k : n;
    for (uint32_t i = 0; i < n; i++) {
        double v = value(scores, dt, i);
        float f = isnan(v) ? -INFINITY : (float)v; /* NaN ranks last */
        if (v > mx)
            mx = v;
        if (m == k && !(f > out[k - 1].score))
            continue;
        uint32_t j = m < k ? m++ : k - 1;
        while (j > 0 && f > out[j - 1].score) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = (osv_img_class_t){.index = i, .score = f, .label = NULL};
    }
    if (softmax && n)
        for (uint32_t i = 0; i < n; i++) {
            double v = value(scores, dt, i);
            sum += isnan(v) ? 0 : exp(v - mx);
        }
    for (uint32_t j = 0; j < m; j++) {
        double v = value(scores, dt, out[j].index);
        out[j].score = (float)(softmax ? (isnan(v) || !(sum > 0) ? NAN : exp(v - mx) / sum) : v);
    }
    return (int)m;
}
