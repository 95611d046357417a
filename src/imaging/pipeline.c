/* pipeline.c — osv_img_classify: images → one pool slot → ORT Run → top-k, shared by the HTTP
 * classify endpoint, `ortserve classify` and the benchmark.
 *
 * Each run declares the image input as [b, C, H, W] (or NHWC), lets the core lay out one slot for
 * it and the scores, decodes every image of the run straight into its part of that slot, runs, and
 * ranks each row of the scores where ORT wrote them. A model with a dynamic batch dim gets all
 * images in one run; a fixed batch size b gets runs of b (the last one padded with zeros). */
#include <inttypes.h>
#include <string.h>

#include "imaging/imaging_internal.h"

static int classify_run(osv_img_ctx_t *ctx, osv_model_t *m, const osv_img_model_t *im,
                        const osv_img_blob_t *imgs, uint32_t start, uint32_t cnt, uint32_t b, uint32_t k,
                        const osv_img_classify_opts_t *o, osv_img_class_t *out, uint32_t *k_out,
                        uint32_t *failed, osv_err_t *err)
{
    const osv_img_spec_t *s = &im->spec;
    const osv_tensor_info_t *ot = osv_model_output(m, im->post.output);
    osv_infer_opts_t io = {.pool = o->pool};
    size_t size = osv_infer_size(m);
    void *mem = osv_img_buf(&ctx->infer, size);
    osv_infer_t *inf = NULL;
    osv_tensor_view_t v;
    int64_t dims[4];
    void *dst;
    uint64_t len, one = osv_img_tensor_bytes(s), t0;
    int rc;
    if (!mem)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    osv_img_tensor_dims(s, b, dims);
    if ((rc = osv_infer_init(mem, size, m, &io, &inf, err)) != 0)
        return rc;
    if ((rc = osv_infer_add_input(inf, im->input, s->dtype, dims, 4, 0, err)) != 0 ||
        (rc = osv_infer_add_output(inf, im->post.output, err)) != 0 ||
        (rc = osv_infer_prepare(inf, err)) != 0 ||
        (rc = osv_infer_input_buffer(inf, im->input, &dst, &len)) != 0)
        goto done;
    t0 = osv_now_ns();
    for (uint32_t i = 0; i < cnt; i++) {
        if ((rc = osv_img_preprocess(ctx, s, imgs[start + i].data, imgs[start + i].len,
                                     (uint8_t *)dst + i * one, one, NULL, err)) != 0) {
            if (failed)
                *failed = start + i;
            osv_err_at(err, (int)(start + i));
            goto done;
        }
    }
    if (b > cnt) /* a fixed batch size: the rest of the batch is zeros, its scores ignored */
        memset((uint8_t *)dst + (uint64_t)cnt * one, 0, (uint64_t)(b - cnt) * one);
    if (o->times)
        o->times->preprocess_ns += osv_now_ns() - t0;
    if (o->on_run)
        o->on_run(o->ud, inf, true);
    rc = osv_infer_run(inf, err);
    if (o->on_run)
        o->on_run(o->ud, inf, false);
    if (o->times) {
        o->times->run_ns += osv_infer_ns(inf, OSV_PHASE_COMPUTE_INFER);
        o->times->runs++;
    }
    if (rc || (rc = osv_infer_output_view(inf, 0, &v, err)) != 0)
        goto done;
    t0 = osv_now_ns();
    uint64_t rows = v.rank >= 2 ? (uint64_t)v.dims[0] : 1, classes = rows ? v.count / rows : 0;
    if (rows < cnt || classes == 0 || classes > UINT32_MAX) {
        rc = osv_err_set(err, OSV_EINVAL,
                         "output '%s' has %" PRIu64 " rows of %" PRIu64 " scores for %u images", ot->name,
                         rows, classes, cnt);
        goto done;
    }
    size_t esz = osv_dtype_size(v.dtype);
    for (uint32_t r = 0; r < cnt; r++) {
        osv_img_class_t *row = out + (size_t)(start + r) * k;
        int got = osv_img_topk((const uint8_t *)v.data + r * classes * esz, v.dtype, (uint32_t)classes,
                               im->post.softmax, k, row, err);
        if (got < 0) {
            rc = got;
            goto done;
        }
        for (int j = 0; j < got; j++)
            row[j].label = row[j].index < ot->n_labels ? ot->labels[row[j].index] : NULL;
        *k_out = (uint32_t)got;
    }
    if (o->times)
        o->times->post_ns += osv_now_ns() - t0;
done:
    osv_infer_fini(inf);
    return rc;
}

int osv_img_classify(osv_img_ctx_t *ctx, osv_model_t *m, const osv_img_blob_t *imgs, uint32_t n,
                     const osv_img_classify_opts_t *o, osv_img_class_t *out, uint32_t *k_out,
                     uint32_t *failed, osv_err_t *err)
{
    const osv_img_model_t *im = osv_img_model(m);
    uint32_t k, chunk;
    int rc;
    *k_out = 0;
    if (!im)
        return osv_err_set(err, OSV_EINVAL, "model '%s' has no \"image\" section in its config.json",
                           osv_model_name(m));
    if (osv_model_input_count(m) != 1)
        return osv_err_set(err, OSV_EUNSUPPORTED,
                           "classify needs a model whose only input is the image; '%s' has %u inputs",
                           osv_model_name(m), osv_model_input_count(m));
    if (n == 0)
        return osv_err_set(err, OSV_EINVAL, "no images to classify");
    if (n > im->spec.limits.max_images)
        return osv_err_set(err, OSV_ETOOBIG, "%u images exceed the limit of %u per request (max_images)", n,
                           im->spec.limits.max_images);
    k = o->top_k ? o->top_k : im->post.top_k;
    chunk = im->batch < 0 ? n : (uint32_t)im->batch;
    for (uint32_t start = 0; start < n; start += chunk) {
        uint32_t cnt = n - start < chunk ? n - start : chunk;
        if ((rc = classify_run(ctx, m, im, imgs, start, cnt, im->batch < 0 ? cnt : chunk, k, o, out, k_out,
                               failed, err)) != 0)
            return rc;
    }
    osv_img_buf_trim(&ctx->infer);
    return 0;
}
