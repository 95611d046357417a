/* decode_png.c — PNG through libspng (0.7): every colour type and bit depth, interlaced or not.
 *
 * Grayscale of 1, 2, 4 or 8 bits decodes to GRAY (1 byte per pixel); everything else (16-bit gray,
 * gray + alpha, palette, RGB, RGBA, 8 or 16 bits) decodes to RGB8 through libspng's conversion:
 * alpha is dropped (as PIL's convert("RGB") and OpenCV's imread do), palettes are expanded and
 * 16-bit samples keep their high byte (v >> 8, as PIL reads 16-bit RGB). Gamma is not applied.
 *
 * Memory: a libspng context is single-use, so each image gets one (a few KiB plus zlib's window).
 * Chunk limits keep ancillary chunks (text, ICC profiles) from being a memory bomb. A decoding context
 * allocates through png_alloc below, which counts libspng's and zlib's memory against what the image
 * reserved in the decode budget and reserves more on demand (ancillary chunks, whose size the header
 * does not tell), failing the allocation when the budget is spent. */
#include <spng.h>
#include <stdlib.h>
#include <string.h>

#include "imaging/imaging_internal.h"

#define CHUNK_CACHE_LIMIT (8u << 20)

/* ---- counting allocator ----------------------------------------------------------------------------
 * libspng's allocator functions take no user pointer; the context decoding on this thread is kept in
 * a thread-local variable for the duration of one decode (decoding never leaves its thread). The
 * memory is the codec's own, as with libspng's default allocator: plain malloc, so it stays out of
 * ortserve's allocation count (osv_alloc_count: 0 per steady-state image) but not out of the budget. */

static _Thread_local osv_img_ctx_t *png_owner;

typedef union png_hdr {
    size_t size;
    max_align_t align;
} png_hdr_t;

/* Counts n more bytes for the owner; reserves what goes beyond its reservation. False when the
 * budget refuses. */
static bool png_charge(size_t n)
{
    osv_img_ctx_t *c = png_owner;
    if (!c)
        return true;
    if (c->codec_live + n > c->codec_reserved) {
        uint64_t more = c->codec_live + n - c->codec_reserved;
        if (osv_img_budget_reserve(c->budget, more) != 0)
            return false;
        c->codec_reserved += more;
        c->reserved += more;
    }
    c->codec_live += n;
    c->codec_peak = c->codec_live > c->codec_peak ? c->codec_live : c->codec_peak;
    return true;
}

static void *png_malloc(size_t n)
{
    png_hdr_t *p;
    if (n > SIZE_MAX - sizeof *p || !png_charge(n + sizeof *p))
        return NULL;
    if (!(p = malloc(n + sizeof *p))) {
        if (png_owner)
            png_owner->codec_live -= n + sizeof *p;
        return NULL;
    }
    p->size = n + sizeof *p;
    return p + 1;
}

static void png_free(void *q)
{
    png_hdr_t *p = q ? (png_hdr_t *)q - 1 : NULL;
    if (!p)
        return;
    if (png_owner)
        png_owner->codec_live -= p->size;
    free(p);
}

static void *png_calloc(size_t n, size_t size)
{
    void *p;
    if (size && n > SIZE_MAX / size)
        return NULL;
    if ((p = png_malloc(n * size)))
        memset(p, 0, n * size);
    return p;
}

static void *png_realloc(void *q, size_t n)
{
    png_hdr_t *old = q ? (png_hdr_t *)q - 1 : NULL;
    void *p = png_malloc(n);
    if (p && old)
        memcpy(p, q, old->size - sizeof *old < n ? old->size - sizeof *old : n);
    if (p || n == 0)
        png_free(q);
    return p;
}

static struct spng_alloc png_alloc = {png_malloc, png_realloc, png_calloc, png_free};

/* ---- memory bound -----------------------------------------------------------------------------------
 * What libspng 0.7 allocates to decode (spng_decode_image): two scanline buffers of the widest pass
 * (⌈w · channels · depth / 8⌉ + 1 bytes each), a row of the output format for deinterlacing, zlib's
 * inflate state and 32 KiB window, and the context itself: under IMG_PNG_FIXED with the eXIf copy
 * libexif reads. Ancillary chunks are counted as they are allocated (png_charge). */
#define IMG_PNG_FIXED (256u << 10)

uint64_t osv_img_png_codec_cost(const img_header_t *h, size_t len)
{
    uint64_t scanline = ((uint64_t)h->w * 4 * (h->bit_depth ? h->bit_depth : 16) + 15) / 8 + 64;
    uint64_t exif = len < (1u << 20) ? len : 1u << 20; /* libexif's copy of an eXIf chunk */
    return IMG_PNG_FIXED + 2 * scanline + (h->interlaced ? (uint64_t)h->w * 3 + 64 : 0) + 2 * exif;
}

uint64_t osv_img_png_pixels_cost(const img_header_t *h)
{
    return (uint64_t)h->w * h->h * (h->components == 1 && h->bit_depth <= 8 ? 1 : 3) + 16;
}

static int png_error(int rc, osv_err_t *err)
{
    if (rc == SPNG_IO_EOF || rc == SPNG_IO_ERROR)
        return osv_err_set(err, OSV_EPARSE, "truncated PNG: the data ends before the image does");
    return osv_err_set(err, OSV_EPARSE, "corrupt PNG: %s", spng_strerror(rc));
}

static spng_ctx *open_png(const uint8_t *data, size_t len, img_header_t *h, struct spng_ihdr *ihdr, bool counted,
                          int *rc)
{
    spng_ctx *s = counted ? spng_ctx_new2(&png_alloc, 0) : spng_ctx_new(0);
    memset(h, 0, sizeof *h);
    h->format = OSV_IMG_PNG;
    h->orientation = 1;
    if (!s) {
        *rc = SPNG_EMEM;
        return NULL;
    }
    spng_set_chunk_limits(s, len, CHUNK_CACHE_LIMIT);
    if ((*rc = spng_set_png_buffer(s, data, len)) != 0 || (*rc = spng_get_ihdr(s, ihdr)) != 0) {
        spng_ctx_free(s);
        return NULL;
    }
    h->w = ihdr->width;
    h->h = ihdr->height;
    h->bit_depth = ihdr->bit_depth;
    h->interlaced = ihdr->interlace_method != 0;
    switch (ihdr->color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
        h->components = 1;
        break;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA:
        h->components = 2;
        break;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA:
        h->components = 4;
        break;
    default:
        h->components = 3;
        break;
    }
    return s;
}

/* EXIF orientation from an eXIf chunk (TIFF data, given to libexif behind the "Exif\0\0" header its
 * loader expects). */
static void png_orientation(osv_img_ctx_t *ctx, spng_ctx *s, img_header_t *h)
{
    struct spng_exif ex;
    uint8_t *buf;
    if (spng_get_exif(s, &ex) != 0 || !ex.data || ex.length < 8 || ex.length > (1u << 20))
        return;
    if (!(buf = osv_img_buf(&ctx->exif, ex.length + 6)))
        return;
    memcpy(buf, "Exif\0\0", 6);
    memcpy(buf + 6, ex.data, ex.length);
    h->orientation = osv_img_exif_orientation(buf, ex.length + 6);
}

int osv_img_png_header(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, img_header_t *h, osv_err_t *err)
{
    struct spng_ihdr ihdr;
    int rc;
    spng_ctx *s = open_png(data, len, h, &ihdr, false, &rc);
    if (!s)
        return rc == SPNG_EMEM ? osv_err_set(err, OSV_ENOMEM, "no memory for a PNG decoder")
                               : png_error(rc, err);
    png_orientation(ctx, s, h);
    spng_ctx_free(s);
    return 0;
}

/* The budget refused libspng an allocation (or the heap did). */
static int png_nomem(osv_img_ctx_t *ctx, const img_header_t *h, osv_err_t *err)
{
    if (ctx->budget)
        return osv_err_set(err, OSV_EBUSY,
                           "the image decode budget is spent: no room for the PNG decoder's state "
                           "(%u x %u), retry later",
                           h->w, h->h);
    return osv_err_set(err, OSV_ENOMEM, "no memory for a PNG decoder");
}

int osv_img_png_open(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, img_header_t *h, void **png,
                     osv_err_t *err)
{
    struct spng_ihdr ihdr;
    int rc;
    png_owner = ctx;
    spng_ctx *s = open_png(data, len, h, &ihdr, true, &rc);
    if (!s) {
        png_owner = NULL;
        return rc == SPNG_EMEM ? png_nomem(ctx, h, err) : png_error(rc, err);
    }
    png_owner = NULL;
    *png = s;
    return 0;
}

void osv_img_png_close(osv_img_ctx_t *ctx, void *png)
{
    if (!png)
        return;
    png_owner = ctx;
    spng_ctx_free(png);
    png_owner = NULL;
}

int osv_img_png_decode(osv_img_ctx_t *ctx, void *png, img_header_t *h, img_decoded_t *out, osv_err_t *err)
{
    spng_ctx *s = png;
    size_t size;
    uint8_t *buf;
    int rc, fmt = h->components == 1 && h->bit_depth <= 8 ? SPNG_FMT_G8 : SPNG_FMT_RGB8;
    png_owner = ctx;
    if ((rc = spng_decoded_image_size(s, fmt, &size)) != 0) {
        rc = png_error(rc, err);
        goto done;
    }
    if (!(buf = osv_img_buf(&ctx->pixels, size + 16))) { /* slack: see resize.c */
        rc = osv_err_set(err, OSV_ENOMEM, "no memory to decode a %u x %u PNG", h->w, h->h);
        goto done;
    }
    if ((rc = spng_decode_image(s, buf, size, fmt, 0)) != 0) {
        rc = rc == SPNG_EMEM ? png_nomem(ctx, h, err) : png_error(rc, err);
        goto done;
    }
    png_orientation(ctx, s, h);
    out->data = buf;
    out->w = h->w;
    out->h = h->h;
    out->pix = fmt == SPNG_FMT_G8 ? PIX_GRAY : PIX_RGB;
    out->pitch = (size_t)h->w * (fmt == SPNG_FMT_G8 ? 1 : 3);
done:
    png_owner = NULL;
    osv_img_png_close(ctx, s);
    return rc;
}
