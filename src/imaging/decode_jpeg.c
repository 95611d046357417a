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

/* The frame header (SOFn: P, Y, X, Nf, then Nf × (id, H << 4 | V, Tq)): dims and sampling factors.
 * SOF2, SOF6, SOF10 and SOF14 are progressive. */
static void read_sof(uint8_t m, const uint8_t *d, size_t n, img_header_t *h)
{
    uint32_t nf = n >= 6 ? d[5] : 0;
    if (h->frame_ok || nf == 0 || nf > 4 || n < 6 + 3 * (size_t)nf)
        return;
    h->nf = nf;
    for (uint32_t c = 0; c < nf; c++) {
        h->hs[c] = d[6 + 3 * c + 1] >> 4;
        h->vs[c] = d[6 + 3 * c + 1] & 15;
        if (h->hs[c] < 1 || h->hs[c] > 4 || h->vs[c] < 1 || h->vs[c] > 4)
            return;
    }
    h->multiscan = m == 0xc2 || m == 0xc6 || m == 0xca || m == 0xce;
    h->frame_ok = ((uint32_t)d[1] << 8 | d[2]) == h->h && ((uint32_t)d[3] << 8 | d[4]) == h->w;
}

/* Finds the first APP1 "Exif\0\0" segment and the frame header before the first SOS, and whether
 * that scan holds fewer components than the frame (then libjpeg buffers the whole image, as for a
 * progressive file). Bounds-checked: a malformed marker stream simply ends the scan (TurboJPEG
 * reports the real error; the cost then assumes the worst). */
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
        if (m == 0xda && i + 4 < len && p[i + 4] < h->nf) /* SOS: Ns */
            h->multiscan = 1;
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
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc)
            read_sof(m, d, n, h);
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
    if (h->frame_ok && h->nf != h->components)
        h->frame_ok = 0;
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

/* ---- memory bound ---------------------------------------------------------------------------------
 *
 * What libjpeg-turbo 2.1 allocates to decompress one image (jdmaster.c, jdmainct.c, jdsample.c,
 * jdcoefct.c, turbojpeg.c), for Nf components with sampling factors (h_c, v_c), hmax/vmax their
 * maxima, S = 8/denom the IDCT's output size and w_s × h_s the scaled output:
 *   - coefficient buffer, only when the file is progressive or its first scan holds fewer components
 *     than the frame (has_multiple_scans): per component round_up(wib_c, h_c) × round_up(hib_c, v_c)
 *     blocks of 64 two-byte coefficients, wib_c = ⌈w·h_c / (8·hmax)⌉, hib_c = ⌈h·v_c / (8·vmax)⌉,
 *     plus a row pointer per block row — at full resolution whatever the DCT scale;
 *   - main buffer: per component v_c·S_c/S_min row groups × (S_min + 2) groups of rows
 *     wib_c·S_c samples wide, S_c ≤ 8 (chroma may be scaled up to upsample in the IDCT): at most
 *     24·v_c rows of ⌈w/8⌉·8 samples;
 *   - upsampling: vmax rows of round_up(w_s, hmax) samples per component; merged upsampling's
 *     spare row (4 bytes a pixel);
 *   - TurboJPEG's row pointers (8 bytes per output row);
 *   - tables, Huffman derived tables, quantization, the memory manager's pools and TurboJPEG's
 *     instance: under IMG_JPEG_FIXED.
 * Measured against this bound in tests/unit/test_imaging.c (peak RSS of a decode in a child). */
#define IMG_JPEG_FIXED (256u << 10)

static uint64_t round_up(uint64_t v, uint64_t m)
{
    return (v + m - 1) / m * m;
}

static uint64_t coefficient_bytes(const img_header_t *h, uint32_t nf, const uint32_t *hs, const uint32_t *vs,
                                  uint32_t hmax, uint32_t vmax)
{
    uint64_t sum = 0;
    for (uint32_t c = 0; c < nf; c++) {
        uint64_t wib = ((uint64_t)h->w * hs[c] + 8 * hmax - 1) / (8 * hmax),
                 hib = ((uint64_t)h->h * vs[c] + 8 * vmax - 1) / (8 * vmax);
        uint64_t rows = round_up(hib, vs[c]);
        sum += round_up(wib, hs[c]) * rows * 128 + rows * sizeof(void *);
    }
    return sum;
}

uint64_t osv_img_jpeg_codec_cost(const img_header_t *h, int denom)
{
    static const uint32_t worst[4] = {4, 4, 4, 4};
    /* Without a frame header we trust, every component may be sampled 4 × 4 and buffered whole. */
    uint32_t nf = h->frame_ok ? h->nf : 4, hmax = 1, vmax = 1;
    const uint32_t *hs = h->frame_ok ? h->hs : worst, *vs = h->frame_ok ? h->vs : worst;
    for (uint32_t c = 0; c < nf; c++) {
        hmax = hs[c] > hmax ? hs[c] : hmax;
        vmax = vs[c] > vmax ? vs[c] : vmax;
    }
    uint64_t ws = ((uint64_t)h->w + (uint64_t)denom - 1) / (uint64_t)denom,
             hs_out = ((uint64_t)h->h + (uint64_t)denom - 1) / (uint64_t)denom, w8 = round_up(h->w, 8) + 64;
    uint64_t cost = IMG_JPEG_FIXED;
    for (uint32_t c = 0; c < nf; c++)
        cost += 24 * (uint64_t)vs[c] * w8;          /* main buffer */
    cost += (uint64_t)nf * vmax * round_up(ws + 8, hmax); /* upsampling rows */
    cost += 4 * (ws + 8);                               /* merged upsampling's spare row */
    cost += 8 * hs_out;                                 /* TurboJPEG's row pointers */
    if (!h->frame_ok || h->multiscan)
        cost += coefficient_bytes(h, nf, hs, vs, hmax, vmax);
    return cost;
}

uint64_t osv_img_jpeg_pixels_cost(const img_header_t *h, int denom)
{
    int pf = h->colorspace == TJCS_GRAY ? TJPF_GRAY
             : (h->colorspace == TJCS_CMYK || h->colorspace == TJCS_YCCK) ? TJPF_CMYK
                                                                         : TJPF_RGB;
    tjscalingfactor sf = {1, denom};
    return (uint64_t)TJSCALED((int)h->w, sf) * (uint64_t)tjPixelSize[pf] * (uint64_t)TJSCALED((int)h->h, sf) +
           16;
}
