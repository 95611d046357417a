/* dtype.c — the KServe datatype ↔ ONNX Runtime element type table. */
#include <string.h>

#include "ortserve/dtype.h"

typedef struct dtype_row {
    const char *name;
    size_t size;
    int ort;
} dtype_row_t;

static const dtype_row_t rows[OSV_DTYPE_COUNT] = {[OSV_DTYPE_INVALID] = {"INVALID", 0, 0},
#define OSV__DTYPE_ROW(sfx, name, size, ort) [OSV_DTYPE_##sfx] = {name, size, ort},
                                                  OSV_DTYPE_MAP(OSV__DTYPE_ROW)
#undef OSV__DTYPE_ROW
};

static int valid(osv_dtype_t dt)
{
    return dt > OSV_DTYPE_INVALID && dt < OSV_DTYPE_COUNT;
}

const char *osv_dtype_name(osv_dtype_t dt)
{
    return valid(dt) ? rows[dt].name : "INVALID";
}

osv_dtype_t osv_dtype_from_name(const char *name, size_t len)
{
    for (int i = 1; i < OSV_DTYPE_COUNT; i++) {
        if (strlen(rows[i].name) == len && memcmp(rows[i].name, name, len) == 0)
            return (osv_dtype_t)i;
    }
    return OSV_DTYPE_INVALID;
}

size_t osv_dtype_size(osv_dtype_t dt)
{
    return valid(dt) ? rows[dt].size : 0;
}

int osv_dtype_to_ort(osv_dtype_t dt)
{
    return valid(dt) ? rows[dt].ort : 0;
}

osv_dtype_t osv_dtype_from_ort(int ort_type)
{
    for (int i = 1; i < OSV_DTYPE_COUNT; i++) {
        if (rows[i].ort == ort_type)
            return (osv_dtype_t)i;
    }
    return OSV_DTYPE_INVALID;
}
