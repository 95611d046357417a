/* npy.c — NumPy .npy reader (memory-mapped, zero-copy for numeric data) and writer. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "npy.h"

static const struct {
    const char *descr;
    osv_dtype_t dt;
} descrs[] = {
    {"|b1", OSV_DTYPE_BOOL},   {"|u1", OSV_DTYPE_UINT8}, {"<u2", OSV_DTYPE_UINT16}, {"<u4", OSV_DTYPE_UINT32},
    {"<u8", OSV_DTYPE_UINT64}, {"|i1", OSV_DTYPE_INT8},  {"<i2", OSV_DTYPE_INT16},  {"<i4", OSV_DTYPE_INT32},
    {"<i8", OSV_DTYPE_INT64},  {"<f2", OSV_DTYPE_FP16},  {"<f4", OSV_DTYPE_FP32},   {"<f8", OSV_DTYPE_FP64},
};

/* Finds `'key':` in the header dict and returns a pointer just after the colon. */
static const char *dict_value(const char *h, const char *key)
{
    char pat[32];
    const char *p;
    snprintf(pat, sizeof pat, "'%s':", key);
    if (!(p = strstr(h, pat)))
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    return p;
}

static int parse_shape(const char *p, osv_npy_t *n, osv_err_t *err)
{
    if (!p || *p != '(')
        return osv_err_set(err, OSV_EPARSE, "npy header has no shape");
    p++;
    n->rank = 0;
    n->count = 1;
    for (;;) {
        char *end;
        unsigned long long v;
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')')
            return 0;
        errno = 0;
        v = strtoull(p, &end, 10);
        if (end == p || errno || v > INT64_MAX || n->rank == OSV_MAX_DIMS)
            return osv_err_set(err, OSV_EPARSE, "npy shape is malformed or has more than %d dims",
                               OSV_MAX_DIMS);
        if (!osv_mul_u64(n->count, v, &n->count))
            return osv_err_set(err, OSV_EOVERFLOW, "npy shape overflows");
        n->dims[n->rank++] = (int64_t)v;
        p = end;
    }
}

/* Converts fixed-width strings (|Sn bytes or <Un UCS-4) into Triton's serialized BYTES form. */
static int strings_to_bytes(osv_npy_t *n, const uint8_t *src, uint64_t width, int ucs4, osv_err_t *err)
{
    uint64_t cap = n->count * (4 + (ucs4 ? width * 4 : width)), used = 0;
    uint8_t *out = osv_malloc(cap ? cap : 1);
    if (!out)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < n->count; i++) {
        const uint8_t *e = src + i * (ucs4 ? width * 4 : width);
        uint8_t *len_at = out + used;
        uint32_t len = 0;
        used += 4;
        for (uint64_t c = 0; c < width; c++) {
            uint32_t cp;
            if (!ucs4) {
                out[used + len++] = e[c];
                continue;
            }
            memcpy(&cp, e + 4 * c, 4);
            if (cp == 0)
                break;
            if (cp < 0x80) {
                out[used + len++] = (uint8_t)cp;
            } else if (cp < 0x800) {
                out[used + len++] = (uint8_t)(0xc0 | (cp >> 6));
                out[used + len++] = (uint8_t)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                out[used + len++] = (uint8_t)(0xe0 | (cp >> 12));
                out[used + len++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
                out[used + len++] = (uint8_t)(0x80 | (cp & 0x3f));
            } else {
                out[used + len++] = (uint8_t)(0xf0 | (cp >> 18));
                out[used + len++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
                out[used + len++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
                out[used + len++] = (uint8_t)(0x80 | (cp & 0x3f));
            }
        }
        while (!ucs4 && len > 0 && out[used + len - 1] == 0)
            len--; /* numpy pads |Sn elements with NULs */
        memcpy(len_at, &len, 4);
        used += len;
    }
    n->owned = n->data = out;
    n->bytes = used;
    return 0;
}

static int parse_descr(const char *p, const uint8_t *data, uint64_t avail, osv_npy_t *n, osv_err_t *err)
{
    char descr[16] = "";
    unsigned long long width;
    if (!p || *p != '\'')
        return osv_err_set(err, OSV_EPARSE, "npy header has no descr");
    sscanf(p + 1, "%15[^']", descr);
    for (size_t i = 0; i < sizeof descrs / sizeof *descrs; i++) {
        if (strcmp(descr, descrs[i].descr) == 0 ||
            (descr[0] == '=' && strcmp(descr + 1, descrs[i].descr + 1) == 0)) {
            n->dtype = descrs[i].dt;
            if (!osv_mul_u64(n->count, osv_dtype_size(n->dtype), &n->bytes) || n->bytes > avail)
                return osv_err_set(err, OSV_EPARSE, "npy data is shorter than its shape says");
            n->data = (void *)data;
            return 0;
        }
    }
    if ((descr[0] == '|' && descr[1] == 'S') || (descr[0] == '<' && descr[1] == 'U')) {
        int ucs4 = descr[1] == 'U';
        uint64_t need;
        width = strtoull(descr + 2, NULL, 10);
        if (!osv_mul_u64(n->count, width * (ucs4 ? 4 : 1), &need) || need > avail)
            return osv_err_set(err, OSV_EPARSE, "npy string data is shorter than its shape says");
        n->dtype = OSV_DTYPE_BYTES;
        return strings_to_bytes(n, data, width, ucs4, err);
    }
    return osv_err_set(err, OSV_EUNSUPPORTED,
                       "npy dtype '%s' is not supported (little-endian numeric, |Sn, <Un)", descr);
}

int osv_npy_open(const char *path, osv_npy_t *n, osv_err_t *err)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;
    const uint8_t *m;
    uint64_t hlen, data_off;
    char header[4096];

    memset(n, 0, sizeof *n);
    if (fd < 0)
        return osv_err_set(err, OSV_ENOTFOUND, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || st.st_size < 10) {
        close(fd);
        return osv_err_set(err, OSV_EPARSE, "%s: not an .npy file", path);
    }
    n->map_len = (size_t)st.st_size;
    n->map = mmap(NULL, n->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (n->map == MAP_FAILED) {
        n->map = NULL;
        return osv_err_set(err, OSV_EIO, "%s: mmap failed: %s", path, strerror(errno));
    }
    m = n->map;
    if (memcmp(m, "\x93NUMPY", 6) != 0) {
        rc = osv_err_set(err, OSV_EPARSE, "%s: not an .npy file (bad magic)", path);
        goto fail;
    }
    if (m[6] == 1) {
        hlen = (uint64_t)m[8] | (uint64_t)m[9] << 8;
        data_off = 10 + hlen;
    } else {
        hlen = (uint64_t)m[8] | (uint64_t)m[9] << 8 | (uint64_t)m[10] << 16 | (uint64_t)m[11] << 24;
        data_off = 12 + hlen;
    }
    if (data_off > n->map_len || hlen >= sizeof header) {
        rc = osv_err_set(err, OSV_EPARSE, "%s: truncated .npy header", path);
        goto fail;
    }
    memcpy(header, m + data_off - hlen, hlen);
    header[hlen] = '\0';
    if (dict_value(header, "fortran_order") && strncmp(dict_value(header, "fortran_order"), "True", 4) == 0) {
        rc = osv_err_set(err, OSV_EUNSUPPORTED, "%s: Fortran-order arrays are not supported", path);
        goto fail;
    }
    if ((rc = parse_shape(dict_value(header, "shape"), n, err)) != 0 ||
        (rc = parse_descr(dict_value(header, "descr"), m + data_off, n->map_len - data_off, n, err)) != 0) {
        osv_err_prefix(err, "%s", path);
        goto fail;
    }
    return 0;
fail:
    osv_npy_close(n);
    return rc;
}

void osv_npy_close(osv_npy_t *n)
{
    if (n->map)
        munmap(n->map, n->map_len);
    osv_free(n->owned);
    memset(n, 0, sizeof *n);
}

/* Writes the magic, version 1.0 and a header padded to a multiple of 64 bytes. */
static int write_header(FILE *f, const char *descr, const int64_t *dims, uint32_t rank)
{
    char h[512];
    size_t n = (size_t)snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (uint32_t i = 0; i < rank; i++)
        n += (size_t)snprintf(h + n, sizeof h - n, "%" PRId64 "%s", dims[i],
                              rank == 1      ? ","
                              : i + 1 < rank ? ", "
                                             : "");
    n += (size_t)snprintf(h + n, sizeof h - n, "), }");
    size_t total = (10 + n + 1 + 63) / 64 * 64;
    while (10 + n + 1 < total)
        h[n++] = ' ';
    h[n++] = '\n';
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(n & 0xff), (uint8_t)(n >> 8)};
    return fwrite(pre, 1, 10, f) == 10 && fwrite(h, 1, n, f) == n ? 0 : -1;
}

int osv_npy_write(const char *path, osv_dtype_t dt, const int64_t *dims, uint32_t rank, const void *data,
                  uint64_t bytes, osv_err_t *err)
{
    FILE *f = fopen(path, "wbe");
    const char *descr = NULL;
    char sdescr[32];
    int ok = 1;
    if (!f)
        return osv_err_set(err, OSV_EIO, "%s: %s", path, strerror(errno));
    for (size_t i = 0; i < sizeof descrs / sizeof *descrs; i++)
        if (descrs[i].dt == dt)
            descr = descrs[i].descr;
    if (dt == OSV_DTYPE_BYTES) {
        /* Serialized (u32 length + bytes) elements -> fixed width |Sn, n = longest element. */
        const uint8_t *p = data, *end = p + bytes;
        uint32_t width = 1, len;
        while (end - p >= 4) {
            memcpy(&len, p, 4);
            width = len > width ? len : width;
            p += 4 + len;
        }
        snprintf(sdescr, sizeof sdescr, "|S%u", width);
        ok = write_header(f, sdescr, dims, rank) == 0;
        for (p = data; ok && end - p >= 4; p += 4 + len) {
            memcpy(&len, p, 4);
            ok = fwrite(p + 4, 1, len, f) == len;
            for (uint32_t k = len; ok && k < width; k++)
                ok = fputc(0, f) != EOF;
        }
    } else if (!descr) {
        fclose(f);
        return osv_err_set(err, OSV_EUNSUPPORTED, "%s has no .npy representation", osv_dtype_name(dt));
    } else {
        ok = write_header(f, descr, dims, rank) == 0 && fwrite(data, 1, bytes, f) == bytes;
    }
    if (fclose(f) != 0 || !ok)
        return osv_err_set(err, OSV_EIO, "%s: write failed", path);
    return 0;
}
