/* resize.c — geometry of each resize mode, the oriented view, and the fused resample + normalize +
 * store pass.
 *
 * Resampling is PIL's (Pillow 9.4, libImaging/Resample.c), computed in float instead of PIL's 8-bit
 * fixed point: separable, horizontal pass then vertical pass; for output index u of an axis
 * resized from `in` to `out` samples, scale = in / out, filterscale = max(scale, 1),
 * support = kernel_support · filterscale, center = (u + 0.5) · scale, inputs
 * [(int)(center − support + 0.5), (int)(center + support + 0.5)) clipped to the image, weights
 * kernel((i − center + 0.5) / filterscale) normalized to sum 1. Kernels: BILINEAR = triangle
 * (support 1), BOX = [−0.5, 0.5) (support 0.5). So downscaling is antialiased (the kernel widens
 * with the scale) exactly as PIL.Image.resize(..., BILINEAR / BOX) does; the reference tests
 * compare against PIL on float ("F") images.
 *
 * Memory: the horizontal pass turns each needed source row (read in place, or through the
 * oriented view into one u8 row in the tensor's colour) into nu pixels of float lanes kept in a ring
 * of as many rows as the vertical kernel spans; the vertical pass combines ring rows into one float row and
 * stores it, normalized and converted, straight into the tensor. Rows and columns cropped away are never
 * computed. */
#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "imaging/imaging_internal.h"

/* ---- geometry ------------------------------------------------------------------------------------- */

/* Python's round() of d / 2 (half to even), d ≥ 0: torchvision's CenterCrop offset. */
static uint32_t half_even(uint32_t d)
{
    uint32_t k = d / 2;
    return (d % 2 == 0 || k % 2 == 0) ? k : k + 1;
}

void osv_img_geometry(const osv_img_spec_t *s, uint32_t w, uint32_t h, img_geom_t *g)
{
    uint32_t W = s->width, H = s->height;
    memset(g, 0, sizeof *g);
    switch (s->resize) {
    case OSV_IMG_RESIZE_PAD:
        if ((uint64_t)W * h <= (uint64_t)H * w) { /* width-bound */
            g->rw = W;
            g->rh = (uint32_t)((2 * (uint64_t)h * W + w) / (2 * (uint64_t)w)); /* round half up */
        } else {
            g->rh = H;
            g->rw = (uint32_t)((2 * (uint64_t)w * H + h) / (2 * (uint64_t)h));
        }
        g->rw = g->rw < 1 ? 1 : g->rw > W ? W : g->rw;
        g->rh = g->rh < 1 ? 1 : g->rh > H ? H : g->rh;
        g->nu = g->rw;
        g->nv = g->rh;
        g->x0 = s->pad_center ? (W - g->rw) / 2 : 0;
        g->y0 = s->pad_center ? (H - g->rh) / 2 : 0;
        return;
    case OSV_IMG_RESIZE_CROP: {
        /* torchvision: short side = S, long side = int(S · long / short); then CenterCrop with
         * offsets int(round((r − target) / 2)). resize_short ≥ H, W, so both sides cover the crop. */
        uint64_t S = s->resize_short;
        if (w <= h) {
            g->rw = (uint32_t)S;
            g->rh = (uint32_t)(S * h / w);
        } else {
            g->rh = (uint32_t)S;
            g->rw = (uint32_t)(S * w / h);
        }
        g->u0 = g->rw > W ? half_even(g->rw - W) : 0;
        g->v0 = g->rh > H ? half_even(g->rh - H) : 0;
        g->nu = g->rw < W ? g->rw : W;
        g->nv = g->rh < H ? g->rh : H;
        return;
    }
    case OSV_IMG_RESIZE_PADDLE: {
        /* PaddleOCR: ratio = w / float(h); resized_w = imgW if ceil(imgH · ratio) > imgW else
         * int(ceil(imgH · ratio)) — in doubles, as Python computes it. */
        double t = ceil((double)H * ((double)w / (double)h));
        g->rh = H;
        g->rw = t > (double)W ? W : t < 1 ? 1 : (uint32_t)t;
        g->nu = g->rw;
        g->nv = H;
        return;
    }
    default:
        g->rw = g->nu = W;
        g->rh = g->nv = H;
        return;
    }
}

/* ---- oriented view -------------------------------------------------------------------------------- */

static size_t pix_bytes(img_pix_t p)
{
    return p == PIX_GRAY ? 1 : p == PIX_RGB ? 3 : 4;
}

void osv_img_view(const img_decoded_t *d, uint32_t o, img_view_t *v)
{
    const ptrdiff_t b = (ptrdiff_t)pix_bytes(d->pix), p = (ptrdiff_t)d->pitch;
    const size_t W1 = d->w - 1, H1 = d->h - 1;
#define AT(x, y) (d->data + (size_t)(y)*d->pitch + (size_t)(x) * (size_t)b)
    v->pix = d->pix;
    v->w = o >= 5 ? d->h : d->w;
    v->h = o >= 5 ? d->w : d->h;
    switch (o) {
    case 2: /* mirrored: out(x, y) = in(W-1-x, y) */
        *v = (img_view_t){AT(W1, 0), -b, p, v->w, v->h, d->pix};
        break;
    case 3: /* rotated 180 */
        *v = (img_view_t){AT(W1, H1), -b, -p, v->w, v->h, d->pix};
        break;
    case 4: /* flipped: in(x, H-1-y) */
        *v = (img_view_t){AT(0, H1), b, -p, v->w, v->h, d->pix};
        break;
    case 5: /* transposed: in(y, x) */
        *v = (img_view_t){AT(0, 0), p, b, v->w, v->h, d->pix};
        break;
    case 6: /* rotate 90 clockwise to display: in(y, H-1-x) */
        *v = (img_view_t){AT(0, H1), -p, b, v->w, v->h, d->pix};
        break;
    case 7: /* transverse: in(W-1-y, H-1-x) */
        *v = (img_view_t){AT(W1, H1), -p, -b, v->w, v->h, d->pix};
        break;
    case 8: /* rotate 90 counter-clockwise to display: in(W-1-y, x) */
        *v = (img_view_t){AT(W1, 0), p, -b, v->w, v->h, d->pix};
        break;
    default:
        *v = (img_view_t){AT(0, 0), b, p, v->w, v->h, d->pix};
        break;
    }
#undef AT
}

/* ---- coefficients ----------------------------------------------------------------------------------- */

typedef struct axis {
    uint32_t n, ksize;
    int32_t *lo, *cnt;
    float *w; /* n × ksize */
} axis_t;

static double k_bilinear(double x)
{
    x = x < 0 ? -x : x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double k_box(double x)
{
    return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
}

static uint32_t axis_ksize(uint32_t in, uint32_t out, osv_img_filter_t f, bool *box)
{
    double scale = (double)in / out, fs = scale < 1.0 ? 1.0 : scale;
    *box = f == OSV_IMG_FILTER_AREA && scale > 1.0;
    return (uint32_t)ceil((*box ? 0.5 : 1.0) * fs) * 2 + 1;
}

static size_t axis_bytes(uint32_t n, uint32_t ksize)
{
    return (size_t)n * (2 * sizeof(int32_t) + ksize * sizeof(float)) + 16;
}

/* PIL's precompute_coeffs for outputs [u0, u0 + n) of a resize from `in` to `out` samples. */
static void axis_init(axis_t *a, void *mem, uint32_t in, uint32_t out, uint32_t u0, uint32_t n,
                      osv_img_filter_t f)
{
    bool box;
    const double scale = (double)in / out, fs = scale < 1.0 ? 1.0 : scale;
    const uint32_t ks = axis_ksize(in, out, f, &box);
    const double support = (box ? 0.5 : 1.0) * fs, ss = 1.0 / fs;
    double (*kernel)(double) = box ? k_box : k_bilinear;
    a->n = n;
    a->ksize = ks;
    a->lo = mem;
    a->cnt = a->lo + n;
    a->w = (float *)(a->cnt + n);
    for (uint32_t i = 0; i < n; i++) {
        double center = ((double)(u0 + i) + 0.5) * scale, wsum = 0;
        int32_t xmin = (int32_t)(center - support + 0.5), xmax = (int32_t)(center + support + 0.5);
        xmin = xmin < 0 ? 0 : xmin;
        xmax = xmax > (int32_t)in ? (int32_t)in : xmax;
        xmax -= xmin;
        for (int32_t x = 0; x < xmax; x++)
            wsum += kernel(((double)(x + xmin) - center + 0.5) * ss);
        float *w = a->w + (size_t)i * ks;
        for (int32_t x = 0; x < (int32_t)ks; x++) {
            double k = x < xmax ? kernel(((double)(x + xmin) - center + 0.5) * ss) : 0.0;
            w[x] = (float)(wsum != 0.0 ? k / wsum : k);
        }
        a->lo[i] = xmin;
        a->cnt[i] = xmax > 0 ? xmax : 0;
    }
}

/* ---- source rows ------------------------------------------------------------------------------------ */

/* PIL's MULDIV255 and L = (R·299 + G·587 + B·114) / 1000 in 16.16 fixed point (Convert.c). */
static inline uint8_t muldiv255(int a, int b)
{
    int t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static inline uint8_t luma(int r, int g, int b)
{
    return (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
}

/* The horizontal pass works on u8 pixels: 4 bytes per pixel (R, G, B, x) for colour, so one tap is
 * one 4-byte load widened to 4 float lanes (SSE2 on x86-64, NEON on arm64) and one 4-wide
 * multiply-add (GCC/Clang vector extensions). A decoded RGB row in natural order is read in place
 * with a pixel stride of 3 (the 4th lane is the next pixel's red: computed, never stored; decoded
 * buffers have slack after their last pixel for that one byte). */
typedef float v4f __attribute__((vector_size(16)));

/* 4 bytes at s widened to 4 float lanes: SSE2 / NEON, or a portable fallback. */
static inline v4f widen4(const uint8_t *s)
{
#if defined(__SSE2__)
    int32_t w;
    memcpy(&w, s, 4);
    __m128i z = _mm_setzero_si128(), x = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(w), z), z);
    return (v4f)_mm_cvtepi32_ps(x);
#elif defined(__ARM_NEON)
    uint8x8_t b =
        vcreate_u8((uint64_t)s[0] | (uint64_t)s[1] << 8 | (uint64_t)s[2] << 16 | (uint64_t)s[3] << 24);
    return (v4f)vcvtq_f32_u32(vmovl_u16(vget_low_u16(vmovl_u8(b))));
#else
    return (v4f){s[0], s[1], s[2], s[3]};
#endif
}

/* Oriented source row y in the tensor's colour: C = 3 as R,G,B,0 (4 bytes a pixel), C = 1 as L.
 * Returns the row and its pixel stride. */
static const uint8_t *source_row(const img_view_t *v, uint32_t y, uint32_t C, uint8_t *line, size_t *stride)
{
    const uint8_t *p = v->origin + (ptrdiff_t)y * v->dy;
    const ptrdiff_t dx = v->dx;
    if ((C == 3 && v->pix == PIX_RGB && dx == 3) || (C == 1 && v->pix == PIX_GRAY && dx == 1)) {
        *stride = C;
        return p; /* in place */
    }
    *stride = C == 3 ? 4 : 1;
    uint8_t *o = line;
    for (uint32_t x = 0; x < v->w; x++, p += dx) {
        int r, g, b;
        switch (v->pix) {
        case PIX_GRAY:
            r = g = b = p[0];
            break;
        case PIX_RGB:
            r = p[0], g = p[1], b = p[2];
            break;
        default: { /* Adobe CMYK: stored inverted ("CMYK;I"), then PIL's cmyk2rgb */
            int nk = p[3];
            r = nk - muldiv255(255 - p[0], nk);
            g = nk - muldiv255(255 - p[1], nk);
            b = nk - muldiv255(255 - p[2], nk);
            break;
        }
        }
        if (C == 3) {
            o[0] = (uint8_t)r, o[1] = (uint8_t)g, o[2] = (uint8_t)b, o[3] = 0;
            o += 4;
        } else {
            *o++ = v->pix == PIX_GRAY ? (uint8_t)r : luma(r, g, b);
        }
    }
    return line;
}

static void hpass3(const axis_t *ax, const uint8_t *src, size_t stride, float *out)
{
    for (uint32_t i = 0; i < ax->n; i++) {
        const float *w = ax->w + (size_t)i * ax->ksize;
        const uint8_t *s = src + (size_t)ax->lo[i] * stride;
        v4f a = {0, 0, 0, 0};
        for (int32_t k = 0; k < ax->cnt[i]; k++, s += stride)
            a += w[k] * widen4(s);
        memcpy(out + 4 * (size_t)i, &a, sizeof a);
    }
}

static void hpass1(const axis_t *ax, const uint8_t *src, float *out)
{
    for (uint32_t i = 0; i < ax->n; i++) {
        const float *w = ax->w + (size_t)i * ax->ksize;
        const uint8_t *s = src + ax->lo[i];
        float a = 0;
        for (int32_t k = 0; k < ax->cnt[i]; k++)
            a += w[k] * s[k];
        out[i] = a;
    }
}

/* acc = Σ_k wy[k] · ring row (lo + k), 4 lanes at a time (rows are padded to a multiple of 4). */
static void vpass(const float *ring, size_t rowf, uint32_t R, uint32_t lo, uint32_t n, const float *wy,
                  float *restrict acc)
{
    memset(acc, 0, rowf * sizeof(float));
    for (uint32_t k = 0; k < n; k++) {
        const float *row = ring + (size_t)((lo + k) % R) * rowf, w = wy[k];
        for (size_t i = 0; i < rowf; i += 4) {
            v4f a, x;
            memcpy(&a, acc + i, sizeof a);
            memcpy(&x, row + i, sizeof x);
            a += w * x;
            memcpy(acc + i, &a, sizeof a);
        }
    }
}

/* ---- storing ---------------------------------------------------------------------------------------- */

static inline uint8_t to_u8(float f)
{
    long v = lrintf(f); /* nearest, ties to even */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

typedef struct store {
    void *dst;
    osv_dtype_t dt;
    bool nhwc;
    uint32_t C, W, H;
    int map[3]; /* tensor channel -> row channel (BGR swaps) */
    float a[3], b[3], pad[3];
} store_t;

/* Element index of (channel c, row y, column x). */
static inline size_t at(const store_t *s, uint32_t c, uint32_t y, uint32_t x)
{
    return s->nhwc ? ((size_t)y * s->W + x) * s->C + c : ((size_t)c * s->H + y) * s->W + x;
}

static inline void put(const store_t *s, size_t i, float v)
{
    switch (s->dt) {
    case OSV_DTYPE_FP16:
        ((uint16_t *)s->dst)[i] = osv_f32_to_f16(v);
        break;
    case OSV_DTYPE_UINT8:
        ((uint8_t *)s->dst)[i] = to_u8(v);
        break;
    default:
        ((float *)s->dst)[i] = v;
        break;
    }
}

/* Pad value into columns [x_from, x_to) of tensor row y, every channel. */
static void pad_row(const store_t *s, uint32_t y, uint32_t x_from, uint32_t x_to)
{
    for (uint32_t c = 0; c < s->C; c++)
        for (uint32_t x = x_from; x < x_to; x++)
            put(s, at(s, c, y, x), s->pad[c]);
}

/* Normalizes and stores one resampled row (nu pixels of `lanes` floats) at tensor row y, columns x0.. */
static void store_row(const store_t *s, const float *acc, uint32_t lanes, uint32_t nu, uint32_t y,
                      uint32_t x0)
{
    const uint32_t C = s->C;
    if (s->dt == OSV_DTYPE_FP32 && !s->nhwc) {
        for (uint32_t c = 0; c < C; c++) {
            float *o = (float *)s->dst + at(s, c, y, x0);
            const float *in = acc + s->map[c], a = s->a[c], b = s->b[c];
            for (uint32_t i = 0; i < nu; i++)
                o[i] = in[(size_t)i * lanes] * a + b;
        }
        return;
    }
    if (s->dt == OSV_DTYPE_FP32) {
        float *o = (float *)s->dst + at(s, 0, y, x0);
        for (uint32_t i = 0; i < nu; i++)
            for (uint32_t c = 0; c < C; c++)
                o[(size_t)i * C + c] = acc[(size_t)i * lanes + s->map[c]] * s->a[c] + s->b[c];
        return;
    }
    for (uint32_t c = 0; c < C; c++)
        for (uint32_t i = 0; i < nu; i++)
            put(s, at(s, c, y, x0 + i), acc[(size_t)i * lanes + s->map[c]] * s->a[c] + s->b[c]);
}

/* ---- the fused pass ----------------------------------------------------------------------------------- */

/* Floats in one resampled row: nu pixels of `lanes` floats, padded to a multiple of 4. */
static size_t row_floats(const osv_img_spec_t *spec, const img_geom_t *g)
{
    return ((size_t)g->nu * (spec->channels == 3 ? 4 : 1) + 3) & ~(size_t)3;
}

void osv_img_resample_sizes(const osv_img_spec_t *spec, uint32_t w, uint32_t h, const img_geom_t *g,
                            size_t sizes[4])
{
    bool box;
    uint32_t ksx = axis_ksize(w, g->rw, spec->filter, &box), ksy = axis_ksize(h, g->rh, spec->filter, &box);
    size_t rowf = row_floats(spec, g);
    sizes[0] = (size_t)w * 4 + 16;                                /* line */
    sizes[1] = rowf * sizeof(float) + 16;                         /* acc */
    sizes[2] = axis_bytes(g->nu, ksx) + axis_bytes(g->nv, ksy);   /* coeffs */
    sizes[3] = (size_t)ksy * rowf * sizeof(float) + 16;           /* ring: a kernel's rows at most */
}

int osv_img_resample(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const img_view_t *v, const img_geom_t *g,
                     void *dst, osv_err_t *err)
{
    const uint32_t C = spec->channels, W = spec->width, H = spec->height;
    store_t st = {
        .dst = dst, .dt = spec->dtype, .nhwc = spec->layout == OSV_IMG_NHWC, .C = C, .W = W, .H = H};
    axis_t ax, ay;
    bool box;
    uint32_t ksx = axis_ksize(v->w, g->rw, spec->filter, &box);
    const uint32_t lanes = C == 3 ? 4 : 1;
    size_t sizes[4], bx = axis_bytes(g->nu, ksx), rowf = row_floats(spec, g);
    osv_img_resample_sizes(spec, v->w, v->h, g, sizes);
    uint8_t *line = osv_img_buf(&ctx->line, sizes[0]);
    float *acc = osv_img_buf(&ctx->acc, sizes[1]), *ring;
    uint8_t *coef = osv_img_buf(&ctx->coeffs, sizes[2]);
    if (!coef || !line || !acc)
        return osv_err_set(err, OSV_ENOMEM, "no memory for resampling rows");
    axis_init(&ax, coef, v->w, g->rw, g->u0, g->nu, spec->filter);
    axis_init(&ay, coef + ((bx + 7) & ~(size_t)7), v->h, g->rh, g->v0, g->nv, spec->filter);
    uint32_t R = 1;
    for (uint32_t j = 0; j < ay.n; j++)
        R = (uint32_t)ay.cnt[j] > R ? (uint32_t)ay.cnt[j] : R;
    if (!(ring = osv_img_buf(&ctx->ring, (size_t)R * rowf * sizeof(float) + 16)))
        return osv_err_set(err, OSV_ENOMEM, "no memory for resampling rows");

    for (uint32_t c = 0; c < C; c++) {
        st.map[c] = spec->color == OSV_IMG_BGR ? (int)(2 - c) : (int)c;
        st.a[c] = spec->scale / spec->std[c];
        st.b[c] = -spec->mean[c] / spec->std[c];
        st.pad[c] = spec->pad[c];
    }
    /* Padding: rows above and below the image, columns left and right of it. */
    for (uint32_t y = 0; y < H; y++) {
        if (y < g->y0 || y >= g->y0 + g->nv)
            pad_row(&st, y, 0, W);
        else {
            pad_row(&st, y, 0, g->x0);
            pad_row(&st, y, g->x0 + g->nu, W);
        }
    }

    uint32_t have = 0; /* source rows [0, have) were considered */
    for (uint32_t j = 0; j < ay.n; j++) {
        const uint32_t lo = (uint32_t)ay.lo[j], n = (uint32_t)ay.cnt[j];
        const float *wy = ay.w + (size_t)j * ay.ksize;
        for (uint32_t r = have > lo ? have : lo; r < lo + n; r++) {
            float *out = ring + (size_t)(r % R) * rowf;
            size_t stride;
            const uint8_t *src = source_row(v, r, C, line, &stride);
            if (C == 3)
                hpass3(&ax, src, stride, out);
            else
                hpass1(&ax, src, out);
            have = r + 1;
        }
        vpass(ring, rowf, R, lo, n, wy, acc);
        store_row(&st, acc, lanes, g->nu, g->y0 + j, g->x0);
    }
    return 0;
}
