/* wire.c — fuzz support: request bytes; see wire.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz.h"
#include "wire.h"

void fz_put(fz_buf_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        FZ_CHECK(b->p, "out of memory");
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

void fz_puts(fz_buf_t *b, const char *s)
{
    fz_put(b, s, strlen(s));
}

void fz_put_chunked(fz_buf_t *b, const uint8_t *p, size_t len, size_t chunk)
{
    char line[32];
    for (size_t off = 0; off < len;) {
        size_t n = chunk && chunk < len - off ? chunk : len - off;
        snprintf(line, sizeof line, "%zx\r\n", n);
        fz_puts(b, line);
        fz_put(b, p + off, n);
        fz_puts(b, "\r\n");
        off += n;
    }
    fz_puts(b, "0\r\n\r\n");
}

void fz_compress(fz_buf_t *out, const uint8_t *src, size_t len, int gzip)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    FZ_CHECK(deflateInit2(&z, 1, Z_DEFLATED, gzip ? 31 : 15, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2");
    uLong bound = deflateBound(&z, (uLong)len);
    out->len = 0;
    if (out->cap < bound) {
        free(out->p);
        out->cap = bound;
        out->p = malloc(bound);
        FZ_CHECK(out->p, "out of memory");
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)len;
    z.next_out = out->p;
    z.avail_out = (uInt)bound;
    FZ_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END, "deflate");
    out->len = bound - z.avail_out;
    deflateEnd(&z);
}
