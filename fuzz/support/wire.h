/* wire.h — fuzz support: building request bytes (a growable buffer, chunked framing, deflate and
 * gzip bodies) for the harnesses that talk HTTP to the server. Aborts when out of memory. */
#ifndef OSV_FUZZ_WIRE_H
#define OSV_FUZZ_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer; zero-initialise, free p when done. */
typedef struct fz_buf {
    uint8_t *p;
    size_t len, cap;
} fz_buf_t;

void fz_put(fz_buf_t *b, const void *p, size_t n);
void fz_puts(fz_buf_t *b, const char *s);
/* Appends p[0..len) in chunks of `chunk` bytes (0: one chunk), then the last chunk "0\r\n\r\n". */
void fz_put_chunked(fz_buf_t *b, const uint8_t *p, size_t len, size_t chunk);
/* Replaces out's contents with deflate (zlib wrapper) or gzip of src. */
void fz_compress(fz_buf_t *out, const uint8_t *src, size_t len, int gzip);

#endif
