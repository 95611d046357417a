/* decode_png.c — PNG through libspng (0.7): every colour type and bit depth, interlaced or not.
 *
 * Grayscale of 1, 2, 4 or 8 bits decodes to GRAY (1 byte per pixel); everything else (16-bit gray,
 * gray + alpha, palette, RGB, RGBA, 8 or 16 bits) decodes to RGB8 through libspng's conversion:
 * alpha is dropped (as PIL's convert("RGB") and OpenCV's imread do), palettes are expanded and
 * 16-bit samples keep their high byte (v >> 8, as PIL reads 16-bit RGB). Gamma is not applied.
 *
 * Memory: a libspng context is single-use, so each image gets one (a few KiB plus zlib's window).
 * Chunk limits keep ancillary chunks (text, ICC profiles) from being a memory bomb. */
#include <spng.h>
#include <string.h>

#include "imaging/imaging_internal.h"

#define CHUNK_CACHE_LIMIT (8u << 20)

static int png_error(int rc, osv_err_t *err)
{
    if (rc == SPNG_IO_EOF || rc == SPNG_IO_ERROR)
        return osv_err_set(err, OSV_EPARSE, "truncated PNG: the data ends before the image does");
    return osv_err_set(err, OSV_EPARSE, "corrupt PNG: %s", spng_strerror(rc));
}

static spng_ctx *open_png(const uint8_t *data, size_t len, img_header_t *h, struct spng_ihdr *ihdr, int *rc)
{
    spng_ctx *s = spng_ctx_new(0);
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
    spng_ctx *s = open_png(data, len, h, &ihdr, &rc);
    if (!s)
        return rc == SPNG_EMEM ? osv_err_set(err, OSV_ENOMEM, "no memory for a PNG decoder")
                               : png_error(rc, err);
    png_orientation(ctx, s, h);
    spng_ctx_free(s);
    return 0;
}

int osv_img_png_decode(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, const osv_img_limits_t *lim,
                       img_header_t *h, img_decoded_t *out, osv_err_t *err)
{
    struct spng_ihdr ihdr;
    size_t size;
    uint8_t *buf;
    int rc, fmt;
    spng_ctx *s = open_png(data, len, h, &ihdr, &rc);
    if (!s)
        return rc == SPNG_EMEM ? osv_err_set(err, OSV_ENOMEM, "no memory for a PNG decoder")
                               : png_error(rc, err);
    if ((rc = osv_img_check_pixels(h, lim, err)) != 0)
        goto done;
    fmt = ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE && ihdr.bit_depth <= 8 ? SPNG_FMT_G8 : SPNG_FMT_RGB8;
    if ((rc = spng_decoded_image_size(s, fmt, &size)) != 0) {
        rc = png_error(rc, err);
        goto done;
    }
    if (!(buf = osv_img_buf(&ctx->pixels, size + 16))) { /* slack: see resize.c */
        rc = osv_err_set(err, OSV_ENOMEM, "no memory to decode a %u x %u PNG", h->w, h->h);
        goto done;
    }
    if ((rc = spng_decode_image(s, buf, size, fmt, 0)) != 0) {
        rc = png_error(rc, err);
        goto done;
    }
    png_orientation(ctx, s, h);
    out->data = buf;
    out->w = h->w;
    out->h = h->h;
    out->pix = fmt == SPNG_FMT_G8 ? PIX_GRAY : PIX_RGB;
    out->pitch = (size_t)h->w * (fmt == SPNG_FMT_G8 ? 1 : 3);
done:
    spng_ctx_free(s);
    return rc;
}
