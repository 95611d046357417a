/* base64.c — base64 decoding for JSON-carried binary data (see base64.h). */
#include "util/base64.h"

#include <stdbool.h>

/* 0..63: the value; 64: skipped (whitespace); 65: '='; 255: invalid. */
static uint8_t b64_class(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return (uint8_t)(ch - 'A');
    if (ch >= 'a' && ch <= 'z')
        return (uint8_t)(ch - 'a' + 26);
    if (ch >= '0' && ch <= '9')
        return (uint8_t)(ch - '0' + 52);
    switch (ch) {
    case '+':
    case '-':
        return 62;
    case '/':
    case '_':
        return 63;
    case ' ':
    case '\n':
    case '\r':
    case '\t':
        return 64;
    case '=':
        return 65;
    default:
        return 255;
    }
}

/* A JSON escape inside base64 text: "\/" is '/', "\n" "\r" "\t" are whitespace; else invalid. */
static uint8_t b64_escape(unsigned char ch)
{
    return ch == '/' ? 63 : (ch == 'n' || ch == 'r' || ch == 't') ? 64 : 255;
}

int osv_b64_decode(const char *src, size_t len, uint8_t *dst, uint64_t cap, uint64_t *out)
{
    uint32_t acc = 0, nacc = 0, pads = 0;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t v = b64_class((unsigned char)src[i]);
        if (src[i] == '\\')
            v = ++i < len ? b64_escape((unsigned char)src[i]) : 255;
        if (v == 64)
            continue;
        if (v == 255 || (v < 64 && pads))
            return -1; /* bad character, or data after padding */
        if (v == 65) {
            if (nacc < 2 || ++pads + nacc > 4)
                return -1;
            continue;
        }
        acc = acc << 6 | v;
        if (++nacc == 4) {
            if (n + 3 > cap)
                return -1;
            dst[n++] = (uint8_t)(acc >> 16);
            dst[n++] = (uint8_t)(acc >> 8);
            dst[n++] = (uint8_t)acc;
            acc = nacc = 0;
        }
    }
    if (nacc == 1 || (pads && pads + nacc != 4))
        return -1;
    if (nacc && n + nacc - 1 > cap)
        return -1;
    if (nacc == 2) {
        dst[n++] = (uint8_t)(acc >> 4);
    } else if (nacc == 3) {
        dst[n++] = (uint8_t)(acc >> 10);
        dst[n++] = (uint8_t)(acc >> 2);
    }
    *out = n;
    return 0;
}
