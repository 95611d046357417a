/* image.c — the per-image entry points: format sniffing, decoding contexts (and the per-thread one),
 * probing, and osv_img_preprocess (header → limits → decode → orientation → fused resample) for
 * one image, a list of images, or a serialized BYTES tensor. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <turbojpeg.h>

#include "imaging/imaging_internal.h"

/* ---- scratch buffers -------------------------------------------------------------------------------- */

void *osv_img_buf(img_buf_t *b, size_t n)
{
    if (n <= b->cap)
        return b->p;
    osv_free(b->p);
    b->cap = 0;
    /* Grow by 1.5x so a few slightly larger images settle the size quickly. */
    size_t want = n + n / 2 > n ? n + n / 2 : n;
    if (!(b->p = osv_malloc(want)))
        return NULL;
    b->cap = want;
    return b->p;
}

void osv_img_buf_trim(img_buf_t *b)
{
    if (b->cap > IMG_KEEP_MAX) {
        osv_free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

/* ---- formats ------------------------------------------------------------------------------------------ */

osv_img_format_t osv_img_sniff(const void *data, size_t len)
{
    const uint8_t *p = data;
    if (!p || len < 2)
        return OSV_IMG_UNKNOWN;
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return OSV_IMG_JPEG;
    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return OSV_IMG_PNG;
    if (len >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return OSV_IMG_GIF;
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return OSV_IMG_WEBP;
    if (len >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0))
        return OSV_IMG_TIFF;
    if (len >= 12 &&
        (memcmp(p, "\0\0\0\x0cjP  \r\n\x87\n", 12) == 0 || memcmp(p, "\xff\x4f\xff\x51", 4) == 0))
        return OSV_IMG_JPEG2000;
    if (len >= 12 && memcmp(p + 4, "ftyp", 4) == 0) {
        if (memcmp(p + 8, "avif", 4) == 0 || memcmp(p + 8, "avis", 4) == 0)
            return OSV_IMG_AVIF;
        if (memcmp(p + 8, "hei", 3) == 0 || memcmp(p + 8, "mif1", 4) == 0 || memcmp(p + 8, "msf1", 4) == 0 ||
            memcmp(p + 8, "hev", 3) == 0)
            return OSV_IMG_HEIF;
    }
    if (len >= 4 && memcmp(p, "\0\0\1\0", 4) == 0)
        return OSV_IMG_ICO;
    if (len >= 14 && p[0] == 'B' && p[1] == 'M')
        return OSV_IMG_BMP;
    return OSV_IMG_UNKNOWN;
}

const char *osv_img_format_name(osv_img_format_t f)
{
    static const char *const names[] = {"unknown", "JPEG", "PNG",       "GIF",  "BMP", "WebP",
                                        "TIFF",    "ICO",  "JPEG 2000", "HEIF", "AVIF"};
    return (unsigned)f < sizeof names / sizeof *names ? names[f] : "unknown";
}

/* ---- limits and sizes --------------------------------------------------------------------------------- */

void osv_img_limits_default(osv_img_limits_t *l)
{
    l->max_pixels = OSV_IMG_DEFAULT_MAX_PIXELS;
    l->max_bytes = OSV_IMG_DEFAULT_MAX_BYTES;
    l->max_images = OSV_IMG_DEFAULT_MAX_IMAGES;
}

uint64_t osv_img_tensor_bytes(const osv_img_spec_t *s)
{
    return (uint64_t)s->channels * s->height * s->width * osv_dtype_size(s->dtype);
}

void osv_img_tensor_dims(const osv_img_spec_t *s, int64_t n, int64_t dims[4])
{
    dims[0] = n;
    if (s->layout == OSV_IMG_NHWC) {
        dims[1] = s->height;
        dims[2] = s->width;
        dims[3] = s->channels;
    } else {
        dims[1] = s->channels;
        dims[2] = s->height;
        dims[3] = s->width;
    }
}

int osv_img_check_pixels(const img_header_t *h, const osv_img_limits_t *lim, osv_err_t *err)
{
    uint64_t px = (uint64_t)h->w * h->h;
    if (h->w == 0 || h->h == 0)
        return osv_err_set(err, OSV_EPARSE, "%s header declares an empty image (%u x %u)",
                           osv_img_format_name(h->format), h->w, h->h);
    if (px > lim->max_pixels)
        return osv_err_set(err, OSV_ETOOBIG,
                           "%s of %u x %u = %" PRIu64 " pixels exceeds the limit of %" PRIu64
                           " pixels (max_pixels); nothing was decoded",
                           osv_img_format_name(h->format), h->w, h->h, px, lim->max_pixels);
    return 0;
}

/* ---- contexts -------------------------------------------------------------------------------------------
 */

int osv_img_ctx_create(osv_img_ctx_t **out, osv_err_t *err)
{
    osv_img_ctx_t *c = osv_calloc(1, sizeof *c);
    int n = 0;
    if (!c)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if (!(c->tj = tjInitDecompress())) {
        osv_free(c);
        return osv_err_set(err, OSV_ENOMEM, "cannot create a TurboJPEG decompressor: %s",
                           tjGetErrorStr2(NULL));
    }
    /* DCT-domain scaling needs 1/2, 1/4 and 1/8 among the library's factors (always, in 2.x). */
    tjscalingfactor *f = tjGetScalingFactors(&n);
    int found = 0;
    for (int i = 0; f && i < n; i++)
        found += f[i].num == 1 && (f[i].denom == 2 || f[i].denom == 4 || f[i].denom == 8);
    c->dct_ok = found == 3;
    *out = c;
    return 0;
}

void osv_img_ctx_destroy(osv_img_ctx_t *c)
{
    if (!c)
        return;
    if (c->tj)
        tjDestroy(c->tj);
    img_buf_t *bufs[] = {&c->pixels, &c->line, &c->ring, &c->acc, &c->coeffs, &c->infer, &c->exif};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        osv_free(bufs[i]->p);
    osv_free(c);
}

static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static int ctx_key_rc;

static void ctx_key_dtor(void *p)
{
    osv_img_ctx_destroy(p);
}

static void ctx_key_init(void)
{
    ctx_key_rc = pthread_key_create(&ctx_key, ctx_key_dtor);
}

osv_img_ctx_t *osv_img_thread_ctx(osv_err_t *err)
{
    osv_img_ctx_t *c;
    pthread_once(&ctx_once, ctx_key_init);
    if (ctx_key_rc != 0) {
        osv_err_set(err, OSV_ENOMEM, "cannot create a thread key for imaging contexts");
        return NULL;
    }
    if ((c = pthread_getspecific(ctx_key)))
        return c;
    if (osv_img_ctx_create(&c, err) != 0)
        return NULL;
    if (pthread_setspecific(ctx_key, c) != 0) {
        osv_img_ctx_destroy(c);
        osv_err_set(err, OSV_ENOMEM, "cannot register the thread's imaging context");
        return NULL;
    }
    return c;
}

/* ---- one image ------------------------------------------------------------------------------------------
 */

static int unsupported(const uint8_t *p, size_t len, osv_img_format_t f, osv_err_t *err)
{
    if (f != OSV_IMG_UNKNOWN)
        return osv_err_set(err, OSV_EUNSUPPORTED, "%s images are not supported: send JPEG or PNG",
                           osv_img_format_name(f));
    char hex[3 * 8 + 1] = "";
    size_t n = 0;
    for (size_t i = 0; i < len && i < 8; i++)
        n += (size_t)snprintf(hex + n, sizeof hex - n, "%s%02x", i ? " " : "", p[i]);
    return osv_err_set(err, OSV_EUNSUPPORTED,
                       "unrecognised image data (starts with %s): not a JPEG or PNG image", hex);
}

static int check_input(const void *data, size_t len, const osv_img_limits_t *lim, osv_err_t *err)
{
    if (!data || len == 0)
        return osv_err_set(err, OSV_EINVAL, "empty image (0 bytes)");
    if (len > lim->max_bytes)
        return osv_err_set(err, OSV_ETOOBIG,
                           "image of %zu bytes exceeds the limit of %" PRIu64 " bytes (max_bytes)", len,
                           lim->max_bytes);
    return 0;
}

int osv_img_probe(osv_img_ctx_t *ctx, const void *data, size_t len, const osv_img_limits_t *limits,
                  osv_img_info_t *info, osv_err_t *err)
{
    osv_img_limits_t def;
    img_header_t h;
    int rc;
    if (!limits) {
        osv_img_limits_default(&def);
        limits = &def;
    }
    if ((rc = check_input(data, len, limits, err)) != 0)
        return rc;
    osv_img_format_t f = osv_img_sniff(data, len);
    if (f == OSV_IMG_JPEG)
        rc = osv_img_jpeg_header(ctx, data, len, &h, err);
    else if (f == OSV_IMG_PNG)
        rc = osv_img_png_header(ctx, data, len, &h, err);
    else
        return unsupported(data, len, f, err);
    if (rc || (rc = osv_img_check_pixels(&h, limits, err)) != 0)
        return rc;
    memset(info, 0, sizeof *info);
    info->format = f;
    info->width = info->decoded_width = h.w;
    info->height = info->decoded_height = h.h;
    info->components = h.components;
    info->orientation = h.orientation;
    return 0;
}

/* Largest DCT scale denominator s ∈ {8, 4, 2} whose decoded image still covers the resized image
 * (PIL's Image.draft rule: width ≥ s · needed width and height ≥ s · needed height), else 1. */
static int dct_denom(const osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const img_header_t *h,
                     const img_geom_t *g)
{
    uint64_t nw = h->orientation >= 5 ? g->rh : g->rw, nh = h->orientation >= 5 ? g->rw : g->rh;
    if (!spec->jpeg_dct_scale || !ctx->dct_ok)
        return 1;
    for (int s = 8; s > 1; s /= 2)
        if (h->w >= s * nw && h->h >= s * nh)
            return s;
    return 1;
}

static int preprocess(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const uint8_t *data, size_t len,
                      void *dst, uint64_t dst_len, osv_img_info_t *info, osv_err_t *err)
{
    img_header_t h;
    img_decoded_t d;
    img_geom_t g;
    img_view_t v;
    int rc, denom = 1;
    uint64_t need = osv_img_tensor_bytes(spec);
    if (!dst || dst_len < need)
        return osv_err_set(err, OSV_EINVAL,
                           "destination of %" PRIu64 " bytes is smaller than one image (%" PRIu64 ")",
                           dst_len, need);
    if ((rc = check_input(data, len, &spec->limits, err)) != 0)
        return rc;
    osv_img_format_t f = osv_img_sniff(data, len);
    if (f == OSV_IMG_JPEG) {
        if ((rc = osv_img_jpeg_header(ctx, data, len, &h, err)) != 0 ||
            (rc = osv_img_check_pixels(&h, &spec->limits, err)) != 0)
            return rc;
        osv_img_geometry(spec, h.orientation >= 5 ? h.h : h.w, h.orientation >= 5 ? h.w : h.h, &g);
        denom = dct_denom(ctx, spec, &h, &g);
        if ((rc = osv_img_jpeg_decode(ctx, data, len, &h, denom, &d, err)) != 0)
            return rc;
    } else if (f == OSV_IMG_PNG) {
        if ((rc = osv_img_png_decode(ctx, data, len, &spec->limits, &h, &d, err)) != 0)
            return rc;
        osv_img_geometry(spec, h.orientation >= 5 ? h.h : h.w, h.orientation >= 5 ? h.w : h.h, &g);
    } else {
        return unsupported(data, len, f, err);
    }
    osv_img_view(&d, h.orientation, &v);
    rc = osv_img_resample(ctx, spec, &v, &g, dst, err);
    if (info) {
        *info = (osv_img_info_t){.format = f,
                                 .width = h.w,
                                 .height = h.h,
                                 .components = h.components,
                                 .orientation = h.orientation,
                                 .decoded_width = d.w,
                                 .decoded_height = d.h,
                                 .resized_width = g.rw,
                                 .resized_height = g.rh};
    }
    return rc;
}

int osv_img_preprocess(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const void *data, size_t len,
                       void *dst, uint64_t dst_len, osv_img_info_t *info, osv_err_t *err)
{
    int rc = preprocess(ctx, spec, data, len, dst, dst_len, info, err);
    osv_img_buf_trim(&ctx->pixels);
    osv_img_buf_trim(&ctx->ring);
    osv_img_buf_trim(&ctx->coeffs);
    return rc;
}

int osv_img_preprocess_batch(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const osv_img_blob_t *imgs,
                             uint32_t n, void *dst, uint64_t dst_len, uint32_t *failed, osv_err_t *err)
{
    uint64_t one = osv_img_tensor_bytes(spec);
    if (n && (dst_len / n < one || !dst))
        return osv_err_set(err, OSV_EINVAL,
                           "destination of %" PRIu64 " bytes cannot hold %u images of %" PRIu64, dst_len, n,
                           one);
    for (uint32_t i = 0; i < n; i++) {
        int rc = osv_img_preprocess(ctx, spec, imgs[i].data, imgs[i].len, (uint8_t *)dst + i * one, one, NULL,
                                    err);
        if (rc) {
            if (failed)
                *failed = i;
            osv_err_prefix(err, "image %u", i);
            return rc;
        }
    }
    return 0;
}

int osv_img_preprocess_bytes(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const void *serialized,
                             uint64_t len, uint32_t n, void *dst, uint64_t dst_len, uint32_t *failed,
                             osv_err_t *err)
{
    const uint8_t *p = serialized, *end = p + len;
    uint64_t one = osv_img_tensor_bytes(spec);
    if (n && (dst_len / n < one || !dst))
        return osv_err_set(err, OSV_EINVAL,
                           "destination of %" PRIu64 " bytes cannot hold %u images of %" PRIu64, dst_len, n,
                           one);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = end - p < 4
                         ? 0
                         : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (end - p < 4 || (uint64_t)(end - p - 4) < l) {
            if (failed)
                *failed = i;
            return osv_err_set(err, OSV_EPARSE,
                               "image %u: the BYTES element's length runs past the tensor data", i);
        }
        int rc = osv_img_preprocess(ctx, spec, p + 4, l, (uint8_t *)dst + i * one, one, NULL, err);
        if (rc) {
            if (failed)
                *failed = i;
            osv_err_prefix(err, "image %u", i);
            return rc;
        }
        p += 4 + (size_t)l;
    }
    if (p != end) {
        if (failed)
            *failed = n;
        return osv_err_set(err, OSV_EPARSE, "%zu bytes follow the last of the %u BYTES elements",
                           (size_t)(end - p), n);
    }
    return 0;
}
