/* decode_jpeg.c — JPEG through libjpeg-turbo's TurboJPEG API (2.1): header, marker scan for EXIF
 * (APP1), and decoding at 1/1, 1/2, 1/4 or 1/8 scale (DCT-domain downscaling:
 * the IDCT produces the smaller image directly, so large photos cost a fraction of a full decode).
 *
 * Pixel formats: colour JPEGs decode to RGB, grayscale to GRAY (expanded later, when a row is
 * read), CMYK and YCCK to CMYK (TurboJPEG cannot convert CMYK to RGB; the resampler does, with
 * PIL's formula). CMYK is taken as stored inverted — Adobe's convention, which Photoshop and
 * libjpeg itself (it writes the Adobe APP14 marker for every CMYK file) follow, and which PIL
 * assumes for every CMYK JPEG.
 *
 * Warnings: libjpeg completes a damaged image with grey and reports a warning; "Premature end of
 * JPEG file" (truncation) is an error here, other warnings (extraneous bytes, ...) are accepted as
 * PIL and browsers accept them. TJFLAG_LIMITSCANS rejects progressive files with absurd scan
 * counts (a CPU-exhaustion attack). */
#include <string.h>
#include <turbojpeg.h>

#include "imaging/imaging_internal.h"

/* Finds the first APP1 "Exif\0\0" segment before the first SOS. Bounds-checked:
 * a malformed marker stream simply ends the scan (TurboJPEG reports the real error). */
static void scan_markers(const uint8_t *p, size_t len, img_header_t *h)
{
    size_t i = 2; /* after SOI */
    while (i + 4 <= len) {
        if (p[i] != 0xff)
            return;
        uint8_t m = p[i + 1];
        if (m == 0xff) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0xda || m == 0xd9) /* SOS, EOI */
            return;
        if ((m >= 0xd0 && m <= 0xd7) || m == 0x01) { /* RSTn, TEM: no length */
            i += 2;
            continue;
        }
        size_t seg = (size_t)p[i + 2] << 8 | p[i + 3];
        if (seg < 2 || i + 2 + seg > len)
            return;
        const uint8_t *d = p + i + 4;
        size_t n = seg - 2;
        if (m == 0xe1 && !h->exif && n >= 6 && memcmp(d, "Exif\0\0", 6) == 0) {
            h->exif = d;
            h->exif_len = n;
        }
        i += 2 + seg;
    }
}

int osv_img_jpeg_header(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, img_header_t *h, osv_err_t *err)
{
    int w = 0, hh = 0, ss = -1, cs = -1;
    memset(h, 0, sizeof *h);
    h->format = OSV_IMG_JPEG;
    h->orientation = 1;
    if (len > 0x7fffffffu)
        return osv_err_set(err, OSV_ETOOBIG, "JPEG of %zu bytes is too large", len);
    /* A fresh decompressor per image: libjpeg keeps quantization tables across images in one
     * object (for "abbreviated" streams), so a file lacking a table would silently borrow the
     * previous request's. Creating one costs a few microseconds. */
    if (ctx->tj)
        tjDestroy(ctx->tj);
    if (!(ctx->tj = tjInitDecompress()))
        return osv_err_set(err, OSV_ENOMEM, "cannot create a TurboJPEG decompressor");
    if (tjDecompressHeader3(ctx->tj, data, (unsigned long)len, &w, &hh, &ss, &cs) != 0) {
        const char *msg = tjGetErrorStr2(ctx->tj);
        return osv_err_set(err, OSV_EPARSE, "%s JPEG: %s",
                           strstr(msg, "Premature end") ? "truncated" : "corrupt", msg);
    }
    /* A stream that ends before its frame header reads as "tables only": success, no dims. */
    if (w <= 0 || hh <= 0)
        return osv_err_set(err, OSV_EPARSE,
                           "truncated or corrupt JPEG: no frame header before the data ends");
    h->w = (uint32_t)w;
    h->h = (uint32_t)hh;
    h->subsamp = ss;
    h->colorspace = cs;
    h->components = cs == TJCS_GRAY ? 1 : (cs == TJCS_CMYK || cs == TJCS_YCCK) ? 4 : 3;
    scan_markers(data, len, h);
    if (h->exif)
        h->orientation = osv_img_exif_orientation(h->exif, h->exif_len);
    return 0;
}

int osv_img_jpeg_decode(osv_img_ctx_t *ctx, const uint8_t *data, size_t len, const img_header_t *h, int denom,
                        img_decoded_t *out, osv_err_t *err)
{
    tjscalingfactor sf = {1, denom};
    int pf = h->colorspace == TJCS_GRAY                                   ? TJPF_GRAY
             : (h->colorspace == TJCS_CMYK || h->colorspace == TJCS_YCCK) ? TJPF_CMYK
                                                                          : TJPF_RGB;
    int sw = TJSCALED((int)h->w, sf), sh = TJSCALED((int)h->h, sf);
    size_t pitch = (size_t)sw * (size_t)tjPixelSize[pf];
    uint8_t *buf = osv_img_buf(&ctx->pixels, pitch * (size_t)sh + 16); /* slack: see resize.c */
    if (!buf)
        return osv_err_set(err, OSV_ENOMEM, "no memory to decode a %d x %d JPEG", sw, sh);
    if (tjDecompress2(ctx->tj, data, (unsigned long)len, buf, sw, (int)pitch, sh, pf, TJFLAG_LIMITSCANS) !=
        0) {
        const char *msg = tjGetErrorStr2(ctx->tj);
        if (tjGetErrorCode(ctx->tj) == TJERR_FATAL)
            return osv_err_set(err, OSV_EPARSE, "corrupt JPEG: %s", msg);
        if (strstr(msg, "Premature end"))
            return osv_err_set(err, OSV_EPARSE, "truncated JPEG: %s", msg);
        /* other warnings: the image decoded completely */
    }
    out->data = buf;
    out->w = (uint32_t)sw;
    out->h = (uint32_t)sh;
    out->pitch = pitch;
    out->pix = pf == TJPF_GRAY ? PIX_GRAY : pf == TJPF_CMYK ? PIX_CMYK_ADOBE : PIX_RGB;
    return 0;
}
