/* imaging_internal.h — internal: what the imaging files share (context layout, decoded-image view,
 * geometry, the decoders and the fused resampler). Nothing here is exported. */
#ifndef OSV_IMAGING_INTERNAL_H
#define OSV_IMAGING_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ortserve/alloc.h"
#include "ortserve/imaging.h"

/* A growable scratch buffer owned by a context. */
typedef struct img_buf {
    void *p;
    size_t cap;
} img_buf_t;

/* Buffers larger than this are released after each image instead of kept (a rare huge image must
 * not pin its memory in every thread). */
#define IMG_KEEP_MAX (64u << 20)

struct osv_img_ctx {
    void *tj;         /* tjhandle (decompressor) of the current image: recreated per image */
    img_buf_t pixels; /* decoded image */
    img_buf_t line;   /* one oriented source row converted to the tensor's colour (u8) */
    img_buf_t ring;   /* horizontally resampled rows (float), a ring over source rows */
    img_buf_t acc;    /* one vertically resampled row (float) */
    img_buf_t coeffs; /* resampling weights and bounds of both axes */
    img_buf_t infer;  /* osv_infer storage (osv_img_classify) */
    img_buf_t exif;   /* "Exif\0\0" + a PNG eXIf chunk for libexif */
    int dct_ok;       /* TurboJPEG offers the 1/2, 1/4, 1/8 scaling factors */
};

/* Returns b->p grown to at least n bytes (contents not kept), or NULL. */
void *osv_img_buf(img_buf_t *b, size_t n);
/* Releases b when it grew beyond IMG_KEEP_MAX. */
void osv_img_buf_trim(img_buf_t *b);

/* Pixel layout of a decoded buffer. */
typedef enum img_pix {
    PIX_GRAY = 1,   /* 1 byte */
    PIX_RGB,        /* 3 bytes */
    PIX_CMYK_ADOBE, /* 4 bytes, Adobe's inverted CMYK: 255 = no ink */
} img_pix_t;

/* A decoded image: w × h pixels of `pix` at `data`, rows `pitch` bytes apart. */
typedef struct img_decoded {
    const uint8_t *data;
    uint32_t w, h;
    size_t pitch;
    img_pix_t pix;
} img_decoded_t;

/* The image as the tensor sees it: oriented size and strides. Oriented pixel (x, y) is at
 * origin + x·dx + y·dy (bytes; strides may be negative, and for transposing orientations dx steps
 * along the stored columns). */
typedef struct img_view {
    const uint8_t *origin;
    ptrdiff_t dx, dy;
    uint32_t w, h;
    img_pix_t pix;
} img_view_t;

/* Where the resized image lands in the tensor. The full resized image is rw × rh; its columns
 * [u0, u0 + nu) and rows [v0, v0 + nv) are visible and land at tensor column x0, row y0. */
typedef struct img_geom {
    uint32_t rw, rh;
    uint32_t u0, nu, v0, nv;
    uint32_t x0, y0;
} img_geom_t;

/* Geometry for an oriented image of w × h (original, undecoded size) under spec. */
void osv_img_geometry(const osv_img_spec_t *spec, uint32_t w, uint32_t h, img_geom_t *g);

/* What a decoder found in the header. */
typedef struct img_header {
    osv_img_format_t format;
    uint32_t w, h, components;
    uint32_t orientation;
    /* JPEG */
    int subsamp, colorspace;
    const uint8_t *exif;
    size_t exif_len;
} img_header_t;

/* JPEG: header (dims, colour space, EXIF orientation) without decoding pixels. */
int osv_img_jpeg_header(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, img_header_t *h, osv_err_t *err);
/* Decodes at 1/denom scale (denom 1, 2, 4 or 8) into the context's pixel buffer. */
int osv_img_jpeg_decode(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, const img_header_t *h, int denom,
                        img_decoded_t *out, osv_err_t *err);

/* PNG: header only (probe), or header + decode in one go (libspng contexts are single-use). The
 * decode checks limits between reading the header and decoding pixels. */
int osv_img_png_header(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, img_header_t *h, osv_err_t *err);
int osv_img_png_decode(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, const osv_img_limits_t *lim,
                       img_header_t *h, img_decoded_t *out, osv_err_t *err);

/* EXIF orientation (1..8; 1 when absent or invalid) of an APP1 payload starting with "Exif\0\0". */
uint32_t osv_img_exif_orientation(const uint8_t *data, size_t len);

/* Oriented view of a decoded image. */
void osv_img_view(const img_decoded_t *d, uint32_t orientation, img_view_t *v);

/* The fused pass: resamples view v (oriented) to geometry g and writes one image of tensor (spec's
 * layout and dtype, padding included) at dst. */
int osv_img_resample(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const img_view_t *v, const img_geom_t *g,
                     void *dst, osv_err_t *err);

/* Limits check of a header (pixels), with the message the API promises. */
int osv_img_check_pixels(const img_header_t *h, const osv_img_limits_t *lim, osv_err_t *err);

#endif
