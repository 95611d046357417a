/* inflate.h — internal: decoding gzip / deflate request bodies and messages into a pool slot, for every
 * front (HTTP's Content-Encoding, gRPC's grpc-encoding). */
#ifndef OSV_SERVE_INFLATE_H
#define OSV_SERVE_INFLATE_H

#include <stdint.h>

#include "ortserve.h"

enum { OSV_ENC_IDENTITY = 0, OSV_ENC_GZIP, OSV_ENC_DEFLATE, OSV_ENC_UNSUPPORTED };

/* Inflates src[0..len) (enc GZIP or DEFLATE), in one pass, into a new slot *out holding *out_len
 * bytes, at most `max`; *moved gets the bytes copied when the slot had to grow. OSV_ETOOBIG beyond
 * max (or the largest slot), OSV_EPARSE for a corrupt stream, OSV_EBUSY when the pool is full. The
 * caller releases *out. Thread-safe (no shared state); milliseconds for large bodies: not for an
 * event loop. */
int osv_inflate_body(osv_pool_t *pool, const void *src, uint64_t len, int enc, uint64_t max, osv_slot_t *out,
                     uint64_t *out_len, uint64_t *moved, osv_err_t *err);

#endif
