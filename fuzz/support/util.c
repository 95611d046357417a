/* util.c — small helpers every fuzz target links: invariant failures, the models directory, and
 * splitting a "first line + payload" input. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#ifndef OSV_FUZZ_MODELS
#define OSV_FUZZ_MODELS "var/models"
#endif

void fz_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: invariant violated: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

const char *fz_models_dir(void)
{
    const char *env = getenv("OSV_TEST_MODELS");
    return env && *env ? env : OSV_FUZZ_MODELS;
}

size_t fz_split_line(const uint8_t *data, size_t size, const uint8_t **rest, size_t *rest_len)
{
    const uint8_t *nl = size ? memchr(data, '\n', size) : NULL;
    size_t n = nl ? (size_t)(nl - data) : size;
    *rest = nl ? nl + 1 : data + size;
    *rest_len = nl ? size - n - 1 : 0;
    return n;
}
