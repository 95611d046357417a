/* base64.h — internal: decoding base64 text as JSON clients send binary data in strings.
 *
 * Accepts the standard and the URL-safe alphabet, with or without '=' padding, and skips the
 * whitespace MIME encoders insert — raw or still JSON-escaped ("\n", "\r", "\t"); "\/" (an
 * escaped slash, which some JSON encoders emit) counts as '/'. Allocation-free and thread-safe. */
#ifndef OSV_UTIL_BASE64_H
#define OSV_UTIL_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Upper bound of the bytes `len` characters of base64 decode to. */
static inline uint64_t osv_b64_max(uint64_t len)
{
    return len / 4 * 3 + 3;
}

/* Decodes src[0..len) into dst (cap bytes; osv_b64_max(len) always suffices) and stores the byte
 * count in *out. Returns 0, or -1 on a character outside the alphabet, misplaced padding, a
 * dangling single character, or a full dst; dst may be partly written then. */
int osv_b64_decode(const char *src, size_t len, uint8_t *dst, uint64_t cap, uint64_t *out);

#endif
