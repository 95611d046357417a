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
    if (!(b->p = osv_malloc(n))) /* exactly n: what the budget reserved for it */
        return NULL;
    b->cap = n;
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
    osv_img_ctx_set_budget(c, NULL);
    if (c->tj)
        tjDestroy(c->tj);
    for (int i = 0; i < IMG_N_SCRATCH; i++)
        osv_free(c->scratch[i].p);
    osv_free(c->infer.p);
    osv_free(c);
}

/* ---- the decode budget -----------------------------------------------------------------------------
 * A context's reservation is always at least what it allocated: between images, the scratch it keeps
 * (at most IMG_KEEP_MAX); during an image, also the image's codec bound and the growth of its scratch
 * to the sizes the image asks for. */

static uint64_t scratch_caps(const osv_img_ctx_t *c)
{
    uint64_t sum = 0;
    for (int i = 0; i < IMG_N_SCRATCH; i++)
        sum += c->scratch[i].cap;
    return sum;
}

/* Bytes the scratch buffers grow by when asked for need[i] bytes each (a buffer that grows frees its
 * old memory first: its new capacity is counted whole). */
static uint64_t scratch_growth(const osv_img_ctx_t *c, const size_t need[IMG_N_SCRATCH])
{
    uint64_t sum = 0;
    for (int i = 0; i < IMG_N_SCRATCH; i++)
        sum += need[i] > c->scratch[i].cap ? need[i] : 0;
    return sum;
}

static void scratch_free(img_buf_t *b)
{
    osv_free(b->p);
    b->p = NULL;
    b->cap = 0;
}

/* Frees the largest scratch buffers until what is left can be kept. */
static void scratch_trim(osv_img_ctx_t *c)
{
    while (scratch_caps(c) > IMG_KEEP_MAX) {
        int big = 0;
        for (int i = 1; i < IMG_N_SCRATCH; i++)
            big = c->scratch[i].cap > c->scratch[big].cap ? i : big;
        scratch_free(&c->scratch[big]);
    }
}

/* Brings the context's reservation down (or, should the plan have missed an allocation, up: counted,
 * never hidden) to the scratch it keeps. */
static void settle(osv_img_ctx_t *c)
{
    uint64_t keep = scratch_caps(c);
    if (keep > c->reserved)
        osv_img_budget_force(c->budget, keep - c->reserved);
    else
        osv_img_budget_release(c->budget, c->reserved - keep);
    c->reserved = c->budget ? keep : 0;
    c->codec_live = c->codec_reserved = 0;
}

void osv_img_ctx_set_budget(osv_img_ctx_t *c, osv_img_budget_t *b)
{
    if (c->budget == b)
        return;
    for (int i = 0; i < IMG_N_SCRATCH; i++)
        scratch_free(&c->scratch[i]);
    settle(c);
    c->budget = b;
}

static int budget_refused(const osv_img_ctx_t *c, int rc, const img_header_t *h, const osv_img_cost_t *cost,
                          osv_err_t *err)
{
    osv_img_budget_stats_t st;
    osv_img_budget_get_stats(c->budget, &st);
    if (rc == OSV_ETOOBIG)
        return osv_err_set(err, OSV_ETOOBIG,
                           "decoding this %s of %u x %u needs %.1f MiB, more than the whole image decode "
                           "budget of %.1f MiB; nothing was decoded",
                           osv_img_format_name(h->format), h->w, h->h, (double)cost->total / 1048576.0,
                           (double)st.limit / 1048576.0);
    return osv_err_set(err, OSV_EBUSY,
                       "decoding this %s of %u x %u needs %.1f MiB of the image decode budget (%.1f MiB, "
                       "%.1f MiB in use), retry later",
                       osv_img_format_name(h->format), h->w, h->h, (double)cost->total / 1048576.0,
                       (double)st.limit / 1048576.0, (double)st.in_use / 1048576.0);
}

/* Reserves what the image needs beyond what the context already holds. When the budget is spent, the
 * scratch this context keeps is given back and the reservation tried once more, so that what a
 * context keeps never blocks it. */
static int budget_begin(osv_img_ctx_t *c, const img_header_t *h, const osv_img_cost_t *cost,
                        const size_t need[IMG_N_SCRATCH], osv_err_t *err)
{
    uint64_t codec = cost->codec > c->codec_reserved ? cost->codec - c->codec_reserved : 0;
    uint64_t more = codec + scratch_growth(c, need);
    int rc;
    if (!c->budget)
        return 0;
    if (scratch_caps(c)) {
        if (osv_img_budget_try(c->budget, more) == 0)
            goto reserved;
        for (int i = 0; i < IMG_N_SCRATCH; i++) {
            c->reserved -= c->scratch[i].cap;
            osv_img_budget_release(c->budget, c->scratch[i].cap);
            scratch_free(&c->scratch[i]);
        }
        more = codec + scratch_growth(c, need);
    }
    if ((rc = osv_img_budget_reserve(c->budget, more)) != 0)
        return budget_refused(c, rc, h, cost, err);
reserved:
    c->reserved += more;
    c->codec_reserved += codec;
    return 0;
}

/* After an image: the decompressor goes (created per image anyway), scratch beyond what is kept is
 * freed, and the reservation comes down to what is kept. */
static void budget_end(osv_img_ctx_t *c)
{
    if (c->tj) {
        tjDestroy(c->tj);
        c->tj = NULL;
    }
    scratch_trim(c);
    settle(c);
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
        return osv_err_set(err, OSV_EMEDIA, "%s images are not supported: send JPEG or PNG",
                           osv_img_format_name(f));
    char hex[3 * 8 + 1] = "";
    size_t n = 0;
    for (size_t i = 0; i < len && i < 8; i++)
        n += (size_t)snprintf(hex + n, sizeof hex - n, "%s%02x", i ? " " : "", p[i]);
    return osv_err_set(err, OSV_EMEDIA,
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

/* Everything decided about one image before a pixel is decoded: its header (limits checked), where it
 * lands in the tensor, the DCT scale, and what decoding it costs. */
typedef struct img_plan {
    osv_img_format_t f;
    img_header_t h;
    img_geom_t g; /* JPEG; a PNG's orientation is known only once decoded */
    int denom;
    void *png; /* PNG: the open decoder */
    osv_img_cost_t cost;
    size_t need[IMG_N_SCRATCH]; /* sizes the image asks of each scratch buffer (upper bounds) */
} img_plan_t;

enum { S_PIXELS, S_LINE, S_RING, S_ACC, S_COEFFS, S_EXIF }; /* = the scratch[] order of the context */

/* The resampler's sizes into need[], the larger of two geometries (a PNG's orientation may swap its
 * sides) when `both`. */
static void resample_need(const osv_img_spec_t *spec, uint32_t w, uint32_t h, bool both, size_t need[])
{
    size_t a[4], b[4] = {0, 0, 0, 0};
    img_geom_t g;
    osv_img_geometry(spec, w, h, &g);
    osv_img_resample_sizes(spec, w, h, &g, a);
    if (both) {
        osv_img_geometry(spec, h, w, &g);
        osv_img_resample_sizes(spec, h, w, &g, b);
    }
    need[S_LINE] = a[0] > b[0] ? a[0] : b[0];
    need[S_ACC] = a[1] > b[1] ? a[1] : b[1];
    need[S_COEFFS] = a[2] > b[2] ? a[2] : b[2];
    need[S_RING] = a[3] > b[3] ? a[3] : b[3];
}

static void plan_cost(img_plan_t *p)
{
    osv_img_cost_t *c = &p->cost;
    c->pixels = p->need[S_PIXELS];
    c->resample = p->need[S_LINE] + p->need[S_ACC] + p->need[S_COEFFS] + p->need[S_RING];
    c->codec += p->need[S_EXIF];
    c->total = c->codec + c->pixels + c->resample;
}

static int plan_jpeg(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const uint8_t *data, size_t len,
                     img_plan_t *p, osv_err_t *err)
{
    img_header_t *h = &p->h;
    int rc;
    if ((rc = osv_img_jpeg_header(ctx, data, len, h, err)) != 0 ||
        (rc = osv_img_check_pixels(h, &spec->limits, err)) != 0)
        return rc;
    bool swap = h->orientation >= 5;
    osv_img_geometry(spec, swap ? h->h : h->w, swap ? h->w : h->h, &p->g);
    p->denom = dct_denom(ctx, spec, h, &p->g);
    uint32_t dw = (h->w + (uint32_t)p->denom - 1) / (uint32_t)p->denom,
             dh = (h->h + (uint32_t)p->denom - 1) / (uint32_t)p->denom;
    size_t r[4];
    osv_img_resample_sizes(spec, swap ? dh : dw, swap ? dw : dh, &p->g, r);
    p->need[S_LINE] = r[0];
    p->need[S_ACC] = r[1];
    p->need[S_COEFFS] = r[2];
    p->need[S_RING] = r[3];
    p->need[S_PIXELS] = osv_img_jpeg_pixels_cost(h, p->denom);
    p->cost.codec = osv_img_jpeg_codec_cost(h, p->denom);
    return 0;
}

static int plan_png(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const uint8_t *data, size_t len,
                    bool open, img_plan_t *p, osv_err_t *err)
{
    img_header_t *h = &p->h;
    int rc = open ? osv_img_png_open(ctx, data, len, h, &p->png, err) : osv_img_png_header(ctx, data, len, h, err);
    if (rc || (rc = osv_img_check_pixels(h, &spec->limits, err)) != 0)
        return rc;
    resample_need(spec, h->w, h->h, true, p->need);
    p->need[S_PIXELS] = osv_img_png_pixels_cost(h);
    p->need[S_EXIF] = (len < (1u << 20) ? len : 1u << 20) + 6; /* an eXIf chunk is part of the file */
    p->cost.codec = osv_img_png_codec_cost(h, len);
    return 0;
}

/* Header, limits, geometry and cost. `open`: keep a PNG decoder open for the decode (p->png). */
static int plan_image(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const uint8_t *data, size_t len, bool open,
                      img_plan_t *p, osv_err_t *err)
{
    int rc;
    memset(p, 0, sizeof *p);
    p->denom = 1;
    if ((rc = check_input(data, len, &spec->limits, err)) != 0)
        return rc;
    p->f = osv_img_sniff(data, len);
    if (p->f == OSV_IMG_JPEG)
        rc = plan_jpeg(ctx, spec, data, len, p, err);
    else if (p->f == OSV_IMG_PNG)
        rc = plan_png(ctx, spec, data, len, open, p, err);
    else
        return unsupported(data, len, p->f, err);
    plan_cost(p);
    return rc;
}

int osv_img_decode_cost(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const void *data, size_t len,
                        osv_img_cost_t *cost, osv_err_t *err)
{
    img_plan_t p;
    int rc = plan_image(ctx, spec, data, len, false, &p, err);
    *cost = p.cost;
    return rc;
}

static int preprocess(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const uint8_t *data, size_t len,
                      void *dst, uint64_t dst_len, osv_img_info_t *info, osv_err_t *err)
{
    img_plan_t p;
    img_decoded_t d;
    img_view_t v;
    int rc;
    uint64_t need = osv_img_tensor_bytes(spec);
    if (!dst || dst_len < need)
        return osv_err_set(err, OSV_EINVAL,
                           "destination of %" PRIu64 " bytes is smaller than one image (%" PRIu64 ")",
                           dst_len, need);
    if ((rc = plan_image(ctx, spec, data, len, true, &p, err)) != 0 ||
        (rc = budget_begin(ctx, &p.h, &p.cost, p.need, err)) != 0) {
        osv_img_png_close(ctx, p.png);
        return rc;
    }
    if (p.f == OSV_IMG_JPEG) {
        rc = osv_img_jpeg_decode(ctx, data, len, &p.h, p.denom, &d, err);
    } else {
        rc = osv_img_png_decode(ctx, p.png, &p.h, &d, err);
        bool swap = p.h.orientation >= 5;
        osv_img_geometry(spec, swap ? p.h.h : p.h.w, swap ? p.h.w : p.h.h, &p.g);
    }
    if (rc)
        return rc;
    osv_img_view(&d, p.h.orientation, &v);
    rc = osv_img_resample(ctx, spec, &v, &p.g, dst, err);
    if (info) {
        *info = (osv_img_info_t){.format = p.f,
                                 .width = p.h.w,
                                 .height = p.h.h,
                                 .components = p.h.components,
                                 .orientation = p.h.orientation,
                                 .decoded_width = d.w,
                                 .decoded_height = d.h,
                                 .resized_width = p.g.rw,
                                 .resized_height = p.g.rh};
    }
    return rc;
}

int osv_img_preprocess(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const void *data, size_t len,
                       void *dst, uint64_t dst_len, osv_img_info_t *info, osv_err_t *err)
{
    int rc = preprocess(ctx, spec, data, len, dst, dst_len, info, err);
    budget_end(ctx);
    return rc;
}

/* The destination holds n images of `one` bytes each. */
static int check_dst(uint32_t n, uint64_t one, const void *dst, uint64_t dst_len, osv_err_t *err)
{
    if (n && (dst_len / n < one || !dst))
        return osv_err_set(err, OSV_EINVAL,
                           "destination of %" PRIu64 " bytes cannot hold %u images of %" PRIu64, dst_len, n,
                           one);
    return 0;
}

int osv_img_preprocess_batch(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const osv_img_blob_t *imgs,
                             uint32_t n, void *dst, uint64_t dst_len, uint32_t *failed, osv_err_t *err)
{
    uint64_t one = osv_img_tensor_bytes(spec);
    if (check_dst(n, one, dst, dst_len, err))
        return err->code;
    for (uint32_t i = 0; i < n; i++) {
        int rc = osv_img_preprocess(ctx, spec, imgs[i].data, imgs[i].len, (uint8_t *)dst + i * one, one, NULL,
                                    err);
        if (rc) {
            if (failed)
                *failed = i;
            return osv_err_at(err, (int)i);
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
    if (check_dst(n, one, dst, dst_len, err))
        return err->code;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = end - p < 4
                         ? 0
                         : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (end - p < 4 || (uint64_t)(end - p - 4) < l) {
            if (failed)
                *failed = i;
            osv_err_set(err, OSV_EPARSE, "the BYTES element's length runs past the tensor data");
            return osv_err_at(err, (int)i);
        }
        int rc = osv_img_preprocess(ctx, spec, p + 4, l, (uint8_t *)dst + i * one, one, NULL, err);
        if (rc) {
            if (failed)
                *failed = i;
            return osv_err_at(err, (int)i);
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
