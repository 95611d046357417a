/* inflate.c — Content-Encoding: gzip / deflate request bodies (Triton's clients can send them).
 *
 * The compressed body is inflated with zlib into one pool slot. The output size bounds the slot:
 * gzip's trailer states it (ISIZE, checked against what actually comes out); for a zlib stream
 * without a size, a first pass counts the output without storing it. Either way the result is
 * capped at the body limit before any memory is taken, so a decompression bomb gets 413, not an
 * allocation. Inflating is a copy by nature: it is counted (reason "decompress"). */
#include <inttypes.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "http/inflate.h"

int osv_content_encoding(const osv_http_header_t *h)
{
    if (!h || (h->value_len == 8 && strncasecmp(h->value, "identity", 8) == 0))
        return OSV_ENC_IDENTITY;
    if (h->value_len == 4 && strncasecmp(h->value, "gzip", 4) == 0)
        return OSV_ENC_GZIP;
    if (h->value_len == 7 && strncasecmp(h->value, "deflate", 7) == 0)
        return OSV_ENC_DEFLATE;
    return OSV_ENC_UNSUPPORTED;
}

static int open_stream(z_stream *z, int enc)
{
    memset(z, 0, sizeof *z);
    /* 16 + 15: gzip wrapper; 15: zlib wrapper (what HTTP calls "deflate"). */
    return inflateInit2(z, enc == OSV_ENC_GZIP ? 16 + MAX_WBITS : MAX_WBITS) == Z_OK ? 0 : -1;
}

/* First pass for streams that do not state their size: inflate into a scratch buffer, count. */
static int measure(const void *src, uint64_t len, int enc, uint64_t max, uint64_t *size, osv_err_t *err)
{
    unsigned char scratch[16384];
    z_stream z;
    int zr = Z_OK;
    uint64_t total = 0;
    if (open_stream(&z, enc) != 0)
        return osv_err_set(err, OSV_ENOMEM, "cannot start the decompressor");
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)len;
    while (zr == Z_OK) {
        z.next_out = scratch;
        z.avail_out = sizeof scratch;
        zr = inflate(&z, Z_NO_FLUSH);
        total += sizeof scratch - z.avail_out;
        if (total > max) {
            inflateEnd(&z);
            return osv_err_set(err, OSV_ETOOBIG, "decompressed body exceeds the limit of %" PRIu64 " bytes",
                               max);
        }
        if (zr == Z_BUF_ERROR && z.avail_in == 0)
            break;
    }
    inflateEnd(&z);
    if (zr != Z_STREAM_END)
        return osv_err_set(err, OSV_EPARSE, "the %s body is corrupt or truncated",
                           enc == OSV_ENC_GZIP ? "gzip" : "deflate");
    *size = total;
    return 0;
}

/* The gzip trailer's ISIZE (uncompressed length mod 2^32): a size hint, verified while inflating. */
static uint64_t gzip_isize(const unsigned char *p, uint64_t len)
{
    if (len < 18)
        return 0;
    p += len - 4;
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
}

int osv_inflate_body(osv_pool_t *pool, const void *src, uint64_t len, int enc, uint64_t max, osv_slot_t *out,
                     uint64_t *out_len, osv_err_t *err)
{
    uint64_t size = 0;
    z_stream z;
    int zr, rc;
    if (len > UINT32_MAX)
        return osv_err_set(err, OSV_ETOOBIG, "compressed body over 4 GiB");
    if (enc == OSV_ENC_GZIP && (size = gzip_isize(src, len)) > 0 && size <= max) {
        /* trust but verify: inflating more than ISIZE fails below */
    } else if ((rc = measure(src, len, enc, max, &size, err)) != 0) {
        return rc;
    }
    if (size > max)
        return osv_err_set(err, OSV_ETOOBIG,
                           "decompressed body of %" PRIu64 " bytes exceeds the limit of %" PRIu64, size, max);
    if ((rc = osv_pool_acquire(pool, size ? size : 1, out)) != 0)
        return osv_err_set(err, rc, "no memory for a %" PRIu64 "-byte decompressed body, retry later", size);
    if (open_stream(&z, enc) != 0) {
        osv_pool_release(pool, out);
        return osv_err_set(err, OSV_ENOMEM, "cannot start the decompressor");
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)len;
    z.next_out = out->base;
    z.avail_out = (uInt)size;
    zr = inflate(&z, Z_FINISH);
    *out_len = size - z.avail_out;
    inflateEnd(&z);
    if (zr != Z_STREAM_END || *out_len != size) {
        osv_pool_release(pool, out);
        return osv_err_set(err, OSV_EPARSE, "the %s body is corrupt, truncated, or larger than it says",
                           enc == OSV_ENC_GZIP ? "gzip" : "deflate");
    }
    return 0;
}
