/* inflate.c — gzip / deflate request bodies and messages (HTTP's Content-Encoding, gRPC's
 * grpc-encoding: Triton's clients can send both).
 *
 * The compressed body is inflated once, with zlib, into a pool slot: as large as gzip's trailer
 * says (ISIZE, checked against what actually comes out) or four times the compressed size, and
 * replaced by a slot four times larger whenever it fills, never beyond the body limit — a
 * decompression bomb gets 413 after at most the limit's worth of output, not an allocation. The
 * fronts run it on a worker, not on an event loop. Inflating is a copy by nature: it is counted,
 * with the bytes a growing slot moved. */
#include <inttypes.h>
#include <string.h>
#include <zlib.h>

#include "serve/inflate.h"

static int open_stream(z_stream *z, int enc)
{
    memset(z, 0, sizeof *z);
    /* 16 + 15: gzip wrapper; 15: zlib wrapper (what HTTP calls "deflate"). */
    return inflateInit2(z, enc == OSV_ENC_GZIP ? 16 + MAX_WBITS : MAX_WBITS) == Z_OK ? 0 : -1;
}

/* The gzip trailer's ISIZE (uncompressed length mod 2^32): a size hint, verified while inflating. */
static uint64_t gzip_isize(const unsigned char *p, uint64_t len)
{
    if (len < 18)
        return 0;
    p += len - 4;
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
}

/* The first slot: ISIZE when the gzip trailer states one within the limit, else four times the
 * compressed size (at least 64 KiB), never beyond the limit or the largest slot. */
static uint64_t first_size(const void *src, uint64_t len, int enc, uint64_t max, uint64_t max_slot)
{
    uint64_t want = enc == OSV_ENC_GZIP ? gzip_isize(src, len) : 0;
    if (want == 0 || want > max)
        want = len > UINT64_MAX / 4 ? UINT64_MAX : len * 4;
    want = want > (64u << 10) ? want : 64u << 10;
    want = want < max ? want : max;
    return want < max_slot ? want : max_slot;
}

/* Moves what was inflated into a slot four times larger (bounded); false when there is none. */
static int grow(osv_pool_t *pool, osv_slot_t *out, uint64_t used, uint64_t max, uint64_t *cap, uint64_t *moved,
                osv_err_t *err)
{
    uint64_t want = *cap > UINT64_MAX / 4 ? UINT64_MAX : *cap * 4, limit = max;
    osv_slot_t bigger;
    int rc;
    if (limit > osv_pool_max_slot(pool))
        limit = osv_pool_max_slot(pool);
    want = want < limit ? want : limit;
    if (*cap >= max)
        return osv_err_set(err, OSV_ETOOBIG, "decompressed body exceeds the limit of %" PRIu64 " bytes", max);
    if (want <= *cap)
        return osv_err_set(err, OSV_ETOOBIG,
                           "decompressed body exceeds the largest pool slot (%" PRIu64 " bytes)", *cap);
    if ((rc = osv_pool_acquire(pool, want, &bigger)) != 0)
        return osv_err_set(err, rc, "no memory for a %" PRIu64 "-byte decompressed body, retry later", want);
    memcpy(bigger.base, out->base, used);
    *moved += used;
    osv_pool_release(pool, out);
    *out = bigger;
    *cap = want;
    return 0;
}

int osv_inflate_body(osv_pool_t *pool, const void *src, uint64_t len, int enc, uint64_t max, osv_slot_t *out,
                     uint64_t *out_len, uint64_t *moved, osv_err_t *err)
{
    uint64_t cap = first_size(src, len, enc, max, osv_pool_max_slot(pool)), used = 0;
    z_stream z;
    int zr = Z_OK, rc;
    *moved = 0;
    if (len > UINT32_MAX)
        return osv_err_set(err, OSV_ETOOBIG, "compressed body over 4 GiB");
    if ((rc = osv_pool_acquire(pool, cap ? cap : 1, out)) != 0)
        return osv_err_set(err, rc, "no memory for a %" PRIu64 "-byte decompressed body, retry later", cap);
    if (open_stream(&z, enc) != 0) {
        osv_pool_release(pool, out);
        return osv_err_set(err, OSV_ENOMEM, "cannot start the decompressor");
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)len;
    while (zr == Z_OK) {
        if (used == cap && (rc = grow(pool, out, used, max, &cap, moved, err)) != 0)
            break;
        uint64_t room = cap - used;
        z.next_out = out->base + used;
        z.avail_out = room > UINT32_MAX ? UINT32_MAX : (uInt)room;
        uInt before = z.avail_out;
        zr = inflate(&z, Z_NO_FLUSH);
        used += before - z.avail_out;
        if (zr == Z_BUF_ERROR && z.avail_out == 0)
            zr = Z_OK; /* the output is full: grow and go on */
        /* else Z_BUF_ERROR: no progress with room left — the input ended before the stream did */
    }
    inflateEnd(&z);
    if (rc == 0 && (zr != Z_STREAM_END || (enc == OSV_ENC_GZIP && (used & 0xffffffffu) != gzip_isize(src, len))))
        rc = osv_err_set(err, OSV_EPARSE, "the %s body is corrupt or truncated",
                         enc == OSV_ENC_GZIP ? "gzip" : "deflate");
    if (rc) {
        osv_pool_release(pool, out);
        return rc;
    }
    *out_len = used;
    return 0;
}
