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

/* Scratch a context keeps between images, in all (a rare huge image must not pin its memory in
 * every thread; what is kept stays reserved in the context's budget). */
#define IMG_KEEP_MAX OSV_IMG_KEEP_BYTES

/* The scratch buffers of a context that hold image data (the budget counts them). */
#define IMG_N_SCRATCH 6

struct osv_img_ctx {
    void *tj; /* tjhandle (decompressor) of the current image: created per image, freed after it */
    union {
        struct {
            img_buf_t pixels; /* decoded image */
            img_buf_t line;   /* one oriented source row converted to the tensor's colour (u8) */
            img_buf_t ring;   /* horizontally resampled rows (float), a ring over source rows */
            img_buf_t acc;    /* one vertically resampled row (float) */
            img_buf_t coeffs; /* resampling weights and bounds of both axes */
            img_buf_t exif;   /* "Exif\0\0" + a PNG eXIf chunk for libexif */
        };
        img_buf_t scratch[IMG_N_SCRATCH];
    };
    img_buf_t infer; /* osv_infer storage (osv_img_classify): model-sized, not image-sized */
    int dct_ok;      /* TurboJPEG offers the 1/2, 1/4, 1/8 scaling factors */
    /* Decode budget (budget.c): bytes this context has reserved = its kept scratch between images;
     * during an image also the image's codec and scratch growth. codec_live/codec_reserved: libspng's
     * allocations of the current image, counted by decode_png.c's allocator. */
    osv_img_budget_t *budget;
    uint64_t reserved;
    uint64_t codec_live, codec_reserved, codec_peak;
};

/* Returns b->p grown to at least n bytes (contents not kept), or NULL. */
void *osv_img_buf(img_buf_t *b, size_t n);
/* Releases b when it grew beyond IMG_KEEP_MAX. */
void osv_img_buf_trim(img_buf_t *b);

/* osv_img_budget_reserve without counting a refusal (a first attempt that has a way out). */
int osv_img_budget_try(osv_img_budget_t *b, uint64_t bytes);
/* Adds bytes to the budget's use even beyond its limit (an allocation the plan did not foresee,
 * counted rather than hidden). */
void osv_img_budget_force(osv_img_budget_t *b, uint64_t bytes);

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
    /* JPEG frame (SOFn) as our marker scan read it: sampling factors per component, and whether
     * libjpeg will buffer the whole image's coefficients (progressive, or a first scan that holds
     * fewer components than the frame). frame_ok = 0: not read, the cost assumes the worst. */
    int frame_ok, multiscan;
    uint32_t nf, hs[4], vs[4];
    /* PNG */
    uint32_t bit_depth, interlaced;
} img_header_t;

/* JPEG: header (dims, colour space, EXIF orientation) without decoding pixels. */
int osv_img_jpeg_header(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, img_header_t *h, osv_err_t *err);
/* Decodes at 1/denom scale (denom 1, 2, 4 or 8) into the context's pixel buffer. */
int osv_img_jpeg_decode(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, const img_header_t *h, int denom,
                        img_decoded_t *out, osv_err_t *err);

/* PNG: header only (probe, orientation included); or a decoder opened on the header (*png, libspng's
 * single-use context, allocating through the counting allocator of decode_png.c), then either decoded
 * (the orientation is known after it) or closed. Both free *png. */
int osv_img_png_header(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, img_header_t *h, osv_err_t *err);
int osv_img_png_open(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, img_header_t *h, void **png,
                     osv_err_t *err);
int osv_img_png_decode(osv_img_ctx_t *ctx, void *png, img_header_t *h, img_decoded_t *out, osv_err_t *err);
void osv_img_png_close(osv_img_ctx_t *ctx, void *png);

/* Decoder memory (bytes, upper bound) of an image whose header is h: JPEG decoded at 1/denom, PNG
 * given `len` encoded bytes. Excludes the decoded pixels (our buffer). */
uint64_t osv_img_jpeg_codec_cost(const img_header_t *h, int denom);
uint64_t osv_img_png_codec_cost(const img_header_t *h, size_t len);
/* Bytes of the pixel buffer the decoders ask osv_img_buf for. */
uint64_t osv_img_jpeg_pixels_cost(const img_header_t *h, int denom);
uint64_t osv_img_png_pixels_cost(const img_header_t *h);

/* EXIF orientation (1..8; 1 when absent or invalid) of an APP1 payload starting with "Exif\0\0". */
uint32_t osv_img_exif_orientation(const uint8_t *data, size_t len);

/* Oriented view of a decoded image. */
void osv_img_view(const img_decoded_t *d, uint32_t orientation, img_view_t *v);

/* Sizes the fused pass asks for (line, acc, coeffs, ring: upper bounds) for an oriented image of
 * w × h pixels (after DCT scaling) under spec and geometry g. */
void osv_img_resample_sizes(const osv_img_spec_t *spec, uint32_t w, uint32_t h, const img_geom_t *g,
                            size_t sizes[4]);

/* The fused pass: resamples view v (oriented) to geometry g and writes one image of tensor (spec's
 * layout and dtype, padding included) at dst. */
int osv_img_resample(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const img_view_t *v, const img_geom_t *g,
                     void *dst, osv_err_t *err);

/* Limits check of a header (pixels), with the message the API promises. */
int osv_img_check_pixels(const img_header_t *h, const osv_img_limits_t *lim, osv_err_t *err);

#endif
