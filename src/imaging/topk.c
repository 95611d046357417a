/* topk.c — ranking one row of class scores: the core's one top-k (osv_topk: its order, NaN last, is
 * the one every classification path shares) and an optional softmax. Softmax is monotonic, so
 * ranking happens on the raw scores and only the k selected ones are transformed
 * (exp(x − max) / Σ exp(x − max), accumulated in double). */
#include <math.h>
#include <string.h>

#include "imaging/imaging_internal.h"

int osv_img_topk(const void *scores, osv_dtype_t dt, uint32_t n, bool softmax, uint32_t k,
                 osv_img_class_t *out, osv_err_t *err)
{
    double mx = -INFINITY, sum = 0;
    int m;
    if (dt != OSV_DTYPE_FP32 && dt != OSV_DTYPE_FP64 && dt != OSV_DTYPE_FP16)
        return osv_err_set(err, OSV_EDTYPE, "class scores must be FP32, FP64 or FP16, not %s",
                           osv_dtype_name(dt));
    if (!scores && n)
        return osv_err_set(err, OSV_EINVAL, "no scores");
    if ((m = osv_topk(scores, dt, n, k, &out[0].index, sizeof *out)) < 0)
        return osv_err_set(err, m, "cannot rank %u scores", n);
    if (softmax && n) {
        for (uint32_t i = 0; i < n; i++) {
            double v = osv_dtype_value(dt, scores, i);
            mx = v > mx ? v : mx;
        }
        for (uint32_t i = 0; i < n; i++) {
            double v = osv_dtype_value(dt, scores, i);
            sum += isnan(v) ? 0 : exp(v - mx);
        }
    }
    for (int j = 0; j < m; j++) {
        double v = osv_dtype_value(dt, scores, out[j].index);
        out[j].score = (float)(softmax ? (isnan(v) || !(sum > 0) ? NAN : exp(v - mx) / sum) : v);
        out[j].label = NULL;
    }
    return m;
}
