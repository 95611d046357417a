/* tensorproto.c — see tensorproto.h. One pass over the wire collects every field into growable arrays
 * (repeated fields may arrive packed or unpacked, in any number of chunks, in any order); a second
 * step checks that exactly one data field matches data_type and the shape, and lays the elements out
 * in native layout. Unknown fields are skipped (their wire format is still validated); groups,
 * invalid wire types, truncated or overlong varints, overrunning lengths, duplicated singular fields
 * and out-of-range values are rejected. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tensorproto.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensorproto.c assumes a little-endian host"
#endif

/* Field numbers of onnx.TensorProto. */
enum {
    F_DIMS = 1,
    F_DATA_TYPE = 2,
    F_SEGMENT = 3,
    F_FLOAT = 4,
    F_INT32 = 5,
    F_STRING = 6,
    F_INT64 = 7,
    F_NAME = 8,
    F_RAW = 9,
    F_DOUBLE = 10,
    F_UINT64 = 11,
    F_EXTERNAL = 13,
    F_LOCATION = 14
};

/* Protobuf wire types. */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* Growable array of 64-bit values: field values, or (offset, length) pairs for strings. */
typedef struct vec {
    uint64_t *v;
    size_t n, cap;
} vec_t;

/* Everything collected from the wire; spans are offsets into buf. */
typedef struct fields {
    const uint8_t *buf;
    char *msg;
    size_t cap;
    vec_t dims, f32, i32, str, i64, f64, u64;
    uint64_t data_type;
    bool has_type, has_name, has_raw, external, segment;
    size_t name_off, name_len, raw_off, raw_len;
} fields_t;

typedef struct reader {
    const uint8_t *p, *end;
} reader_t;

/* One wire field: its number, wire type, scalar value or payload span, and where it started. */
typedef struct wire {
    uint64_t num;
    int wt;
    uint64_t value;
    const uint8_t *span;
    size_t len;
    size_t at;
} wire_t;

__attribute__((format(printf, 3, 4))) static int fail(fields_t *f, int code, const char *fmt, ...)
{
    va_list ap;
    if (f->msg && f->cap) {
        va_start(ap, fmt);
        vsnprintf(f->msg, f->cap, fmt, ap);
        va_end(ap);
    }
    return code;
}

size_t tp_elem_size(int dt)
{
    switch (dt) {
    case TP_BOOL:
    case TP_UINT8:
    case TP_INT8:
        return 1;
    case TP_UINT16:
    case TP_INT16:
    case TP_FLOAT16:
    case TP_BFLOAT16:
        return 2;
    case TP_FLOAT:
    case TP_INT32:
    case TP_UINT32:
        return 4;
    case TP_INT64:
    case TP_UINT64:
    case TP_DOUBLE:
        return 8;
    default:
        return 0;
    }
}

const char *tp_type_name(int dt)
{
    static const char *const names[] = {"UNDEFINED", "FLOAT",  "UINT8",     "INT8",       "UINT16",  "INT16",
                                        "INT32",     "INT64",  "STRING",    "BOOL",       "FLOAT16", "DOUBLE",
                                        "UINT32",    "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16"};
    return dt >= 0 && (size_t)dt < sizeof names / sizeof *names ? names[dt] : "?";
}

static int vec_push(vec_t *a, uint64_t x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        uint64_t *p = cap <= SIZE_MAX / sizeof *p ? realloc(a->v, cap * sizeof *p) : NULL;
        if (!p)
            return TP_ENOMEM;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return TP_OK;
}

static void fields_free(fields_t *f)
{
    free(f->dims.v);
    free(f->f32.v);
    free(f->i32.v);
    free(f->str.v);
    free(f->i64.v);
    free(f->f64.v);
    free(f->u64.v);
}

/* Reads a base-128 varint of at most 10 bytes (the 10th may only carry bit 63). */
static int get_varint(fields_t *f, reader_t *r, uint64_t *out, const char *what)
{
    uint64_t v = 0;
    size_t at = (size_t)(r->p - f->buf);
    for (int i = 0; i < 10; i++) {
        uint8_t b;
        if (r->p >= r->end)
            return fail(f, TP_EMALFORMED, "%s: varint at byte %zu is truncated", what, at);
        b = *r->p++;
        if (i == 9 && b > 1)
            return fail(f, TP_EMALFORMED, "%s: varint at byte %zu overflows 64 bits", what, at);
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return TP_OK;
        }
    }
    return fail(f, TP_EMALFORMED, "%s: varint at byte %zu is longer than 10 bytes", what, at);
}

static uint64_t load_le(const uint8_t *p, size_t size)
{
    uint32_t u32;
    uint64_t u64;
    if (size == 4) {
        memcpy(&u32, p, 4);
        return u32;
    }
    memcpy(&u64, p, 8);
    return u64;
}

/* A repeated varint field (dims, int32_data, int64_data, uint64_data): one value or a packed run. */
static int repeated_varint(fields_t *f, vec_t *a, const wire_t *w, const char *what)
{
    reader_t r;
    uint64_t v;
    int rc;
    if (w->wt == WT_VARINT)
        return vec_push(a, w->value);
    if (w->wt != WT_LEN)
        return fail(f, TP_EMALFORMED, "%s at byte %zu: wire type %d, want varint or packed", what, w->at,
                    w->wt);
    r.p = w->span;
    r.end = w->span + w->len;
    while (r.p < r.end) {
        if ((rc = get_varint(f, &r, &v, what)) != TP_OK || (rc = vec_push(a, v)) != TP_OK)
            return rc;
    }
    return TP_OK;
}

/* A repeated fixed-width field (float_data: 4 bytes, double_data: 8 bytes). */
static int repeated_fixed(fields_t *f, vec_t *a, const wire_t *w, int want_wt, size_t size, const char *what)
{
    int rc;
    if (w->wt == want_wt)
        return vec_push(a, w->value);
    if (w->wt != WT_LEN)
        return fail(f, TP_EMALFORMED, "%s at byte %zu: wire type %d, want %d or packed", what, w->at, w->wt,
                    want_wt);
    if (w->len % size)
        return fail(f, TP_EMALFORMED, "%s at byte %zu: packed length %zu is not a multiple of %zu", what,
                    w->at, w->len, size);
    for (size_t i = 0; i < w->len; i += size)
        if ((rc = vec_push(a, load_le(w->span + i, size))) != TP_OK)
            return rc;
    return TP_OK;
}

/* A singular length-delimited field (name, raw_data): recorded once; a second occurrence is an error. */
static int singular_span(fields_t *f, const wire_t *w, bool *seen, size_t *off, size_t *len, const char *what)
{
    if (w->wt != WT_LEN)
        return fail(f, TP_EMALFORMED, "%s at byte %zu: wire type %d, want length-delimited", what, w->at,
                    w->wt);
    if (*seen)
        return fail(f, TP_EMALFORMED, "%s given twice (again at byte %zu)", what, w->at);
    *seen = true;
    *off = (size_t)(w->span - f->buf);
    *len = w->len;
    return TP_OK;
}

static int want_wt(fields_t *f, const wire_t *w, int wt, const char *what)
{
    if (w->wt != wt)
        return fail(f, TP_EMALFORMED, "%s at byte %zu: wire type %d, want %d", what, w->at, w->wt, wt);
    return TP_OK;
}

static int on_field(fields_t *f, const wire_t *w)
{
    int rc;
    switch (w->num) {
    case F_DIMS:
        return repeated_varint(f, &f->dims, w, "dims");
    case F_DATA_TYPE:
        if ((rc = want_wt(f, w, WT_VARINT, "data_type")) != TP_OK)
            return rc;
        if (f->has_type)
            return fail(f, TP_EMALFORMED, "data_type given twice (again at byte %zu)", w->at);
        f->has_type = true;
        f->data_type = w->value;
        return TP_OK;
    case F_FLOAT:
        return repeated_fixed(f, &f->f32, w, WT_I32, 4, "float_data");
    case F_INT32:
        return repeated_varint(f, &f->i32, w, "int32_data");
    case F_STRING:
        if ((rc = want_wt(f, w, WT_LEN, "string_data")) != TP_OK ||
            (rc = vec_push(&f->str, (uint64_t)(w->span - f->buf))) != TP_OK)
            return rc;
        return vec_push(&f->str, w->len);
    case F_INT64:
        return repeated_varint(f, &f->i64, w, "int64_data");
    case F_NAME:
        return singular_span(f, w, &f->has_name, &f->name_off, &f->name_len, "name");
    case F_RAW:
        return singular_span(f, w, &f->has_raw, &f->raw_off, &f->raw_len, "raw_data");
    case F_DOUBLE:
        return repeated_fixed(f, &f->f64, w, WT_I64, 8, "double_data");
    case F_UINT64:
        return repeated_varint(f, &f->u64, w, "uint64_data");
    case F_EXTERNAL:
        f->external = true;
        return want_wt(f, w, WT_LEN, "external_data");
    case F_LOCATION:
        if ((rc = want_wt(f, w, WT_VARINT, "data_location")) != TP_OK)
            return rc;
        if (w->value > 1)
            return fail(f, TP_EMALFORMED, "data_location %" PRIu64 " is neither DEFAULT nor EXTERNAL",
                        w->value);
        f->external |= w->value == 1;
        return TP_OK;
    case F_SEGMENT:
        f->segment = true;
        return want_wt(f, w, WT_LEN, "segment");
    default:
        return TP_OK; /* doc_string, metadata_props, future fields */
    }
}

/* Reads one field's key and payload. */
static int next_field(fields_t *f, reader_t *r, wire_t *w)
{
    uint64_t key;
    int rc;
    memset(w, 0, sizeof *w);
    w->at = (size_t)(r->p - f->buf);
    if ((rc = get_varint(f, r, &key, "field key")) != TP_OK)
        return rc;
    w->num = key >> 3;
    w->wt = (int)(key & 7);
    if (w->num == 0 || w->num > 536870911u)
        return fail(f, TP_EMALFORMED, "invalid field number %" PRIu64 " at byte %zu", w->num, w->at);
    switch (w->wt) {
    case WT_VARINT:
        return get_varint(f, r, &w->value, "field value");
    case WT_I64:
    case WT_I32:
        w->len = w->wt == WT_I64 ? 8 : 4;
        if ((size_t)(r->end - r->p) < w->len)
            return fail(f, TP_EMALFORMED, "field %" PRIu64 " at byte %zu: fixed value is truncated", w->num,
                        w->at);
        w->value = load_le(r->p, w->len);
        r->p += w->len;
        return TP_OK;
    case WT_LEN:
        if ((rc = get_varint(f, r, &w->value, "field length")) != TP_OK)
            return rc;
        if (w->value > (uint64_t)(r->end - r->p))
            return fail(f, TP_EMALFORMED,
                        "field %" PRIu64 " at byte %zu: length %" PRIu64 " overruns the %td bytes left",
                        w->num, w->at, w->value, r->end - r->p);
        w->span = r->p;
        w->len = (size_t)w->value;
        r->p += w->len;
        return TP_OK;
    case WT_SGROUP:
    case WT_EGROUP:
        return fail(f, TP_EMALFORMED, "field %" PRIu64 " at byte %zu: groups are not valid in a TensorProto",
                    w->num, w->at);
    default:
        return fail(f, TP_EMALFORMED, "field %" PRIu64 " at byte %zu: invalid wire type %d", w->num, w->at,
                    w->wt);
    }
}

static int parse(fields_t *f, const uint8_t *buf, size_t len)
{
    reader_t r = {buf, buf + len};
    wire_t w;
    int rc;
    while (r.p < r.end) {
        if ((rc = next_field(f, &r, &w)) != TP_OK || (rc = on_field(f, &w)) != TP_OK)
            return rc;
    }
    return TP_OK;
}

/* The typed field that carries values of data type dt (int32_data carries every narrow type). */
static vec_t *typed_field(fields_t *f, int dt, const char **name)
{
    switch (dt) {
    case TP_FLOAT:
        *name = "float_data";
        return &f->f32;
    case TP_DOUBLE:
        *name = "double_data";
        return &f->f64;
    case TP_INT64:
        *name = "int64_data";
        return &f->i64;
    case TP_UINT32:
    case TP_UINT64:
        *name = "uint64_data";
        return &f->u64;
    case TP_STRING:
        *name = "string_data";
        return &f->str;
    default:
        *name = "int32_data";
        return &f->i32;
    }
}

/* Checks the shape: rank, non-negative dims, element count and byte size within bounds. */
static int check_shape(fields_t *f, int dt, tp_tensor_t *t)
{
    size_t esize = tp_elem_size(dt);
    uint64_t count = 1;
    if (f->dims.n > TP_MAX_DIMS)
        return fail(f, TP_EUNSUPPORTED, "rank %zu exceeds %d", f->dims.n, TP_MAX_DIMS);
    t->rank = (uint32_t)f->dims.n;
    for (size_t i = 0; i < f->dims.n; i++) {
        int64_t d = (int64_t)f->dims.v[i];
        if (d < 0)
            return fail(f, TP_EMALFORMED, "dims[%zu] is negative (%" PRId64 ")", i, d);
        if (__builtin_mul_overflow(count, (uint64_t)d, &count) || count > TP_MAX_BYTES)
            return fail(f, TP_EMALFORMED, "shape has more than %llu elements", TP_MAX_BYTES);
        t->dims[i] = d;
    }
    if (esize && count * esize > TP_MAX_BYTES)
        return fail(f, TP_EMALFORMED, "tensor exceeds %llu bytes", TP_MAX_BYTES);
    t->count = count;
    return TP_OK;
}

/* Checks that exactly one data field, the right one, carries exactly count elements. */
static int check_source(fields_t *f, int dt, const tp_tensor_t *t)
{
    const char *want_name;
    vec_t *want = typed_field(f, dt, &want_name);
    vec_t *all[] = {&f->f32, &f->i32, &f->str, &f->i64, &f->f64, &f->u64};
    static const char *const names[] = {"float_data", "int32_data",  "string_data",
                                        "int64_data", "double_data", "uint64_data"};
    uint64_t n = dt == TP_STRING ? want->n / 2 : want->n;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        if (all[i] != want && all[i]->n)
            return fail(f, TP_EMALFORMED, "%s given for a %s tensor", names[i], tp_type_name(dt));
    }
    if (f->has_raw) {
        if (dt == TP_STRING)
            return fail(f, TP_EMALFORMED, "raw_data given for a STRING tensor");
        if (want->n)
            return fail(f, TP_EMALFORMED, "both raw_data and %s given", want_name);
        if (f->raw_len != t->count * tp_elem_size(dt))
            return fail(f, TP_EMALFORMED, "raw_data has %zu bytes, %" PRIu64 " %s elements need %" PRIu64,
                        f->raw_len, t->count, tp_type_name(dt), t->count * tp_elem_size(dt));
        return TP_OK;
    }
    if (n != t->count)
        return fail(f, TP_EMALFORMED, "%s has %" PRIu64 " values, the shape has %" PRIu64 " elements",
                    want_name, n, t->count);
    return TP_OK;
}

/* Range of an int32_data value for each narrow type carried there. */
static bool int32_range(int dt, int64_t *lo, int64_t *hi)
{
    switch (dt) {
    case TP_BOOL:
        *lo = 0, *hi = 1;
        return true;
    case TP_UINT8:
        *lo = 0, *hi = UINT8_MAX;
        return true;
    case TP_INT8:
        *lo = INT8_MIN, *hi = INT8_MAX;
        return true;
    case TP_UINT16:
    case TP_FLOAT16:
    case TP_BFLOAT16:
        *lo = 0, *hi = UINT16_MAX;
        return true;
    case TP_INT16:
        *lo = INT16_MIN, *hi = INT16_MAX;
        return true;
    case TP_INT32:
        *lo = INT32_MIN, *hi = INT32_MAX;
        return true;
    default:
        return false;
    }
}

/* Writes the typed values into t->data (sizes already checked). */
static int fill_typed(fields_t *f, int dt, tp_tensor_t *t)
{
    const char *what;
    vec_t *src = typed_field(f, dt, &what);
    size_t esize = tp_elem_size(dt);
    uint8_t *out = t->data;
    int64_t lo, hi;
    for (uint64_t i = 0; i < t->count; i++) {
        uint64_t v = src->v[i];
        if (dt == TP_UINT32 && v > UINT32_MAX)
            return fail(f, TP_EMALFORMED, "%s[%" PRIu64 "] = %" PRIu64 " does not fit UINT32", what, i, v);
        if (int32_range(dt, &lo, &hi) && ((int64_t)v < lo || (int64_t)v > hi))
            return fail(f, TP_EMALFORMED, "%s[%" PRIu64 "] = %" PRId64 " is out of range for %s", what, i,
                        (int64_t)v, tp_type_name(dt));
        memcpy(out + i * esize, &v, esize); /* little-endian: the low bytes hold the value */
    }
    return TP_OK;
}

static void fill_strings(const fields_t *f, tp_tensor_t *t)
{
    uint8_t *out = t->data;
    for (uint64_t i = 0; i < t->count; i++) {
        uint32_t len = (uint32_t)f->str.v[2 * i + 1];
        memcpy(out, &len, 4);
        if (len)
            memcpy(out + 4, f->buf + f->str.v[2 * i], len);
        out += 4 + len;
    }
}

/* Serialized size of the strings; fails when beyond TP_MAX_BYTES. */
static int strings_size(fields_t *f, uint64_t count, uint64_t *bytes)
{
    uint64_t total = 0;
    for (uint64_t i = 0; i < count; i++) {
        total += 4 + f->str.v[2 * i + 1];
        if (total > TP_MAX_BYTES)
            return fail(f, TP_EMALFORMED, "string_data exceeds %llu bytes", TP_MAX_BYTES);
    }
    *bytes = total;
    return TP_OK;
}

static int copy_name(fields_t *f, tp_tensor_t *t)
{
    const char *s = f->has_name ? (const char *)f->buf + f->name_off : "";
    size_t len = f->has_name ? f->name_len : 0;
    if (memchr(s, '\0', len))
        return fail(f, TP_EMALFORMED, "name contains a NUL byte");
    if (!(t->name = malloc(len + 1)))
        return fail(f, TP_ENOMEM, "out of memory");
    memcpy(t->name, s, len);
    t->name[len] = '\0';
    return TP_OK;
}

static int check_type(fields_t *f, int *dt)
{
    if (f->external)
        return fail(f, TP_EUNSUPPORTED, "external data");
    if (f->segment)
        return fail(f, TP_EUNSUPPORTED, "segmented tensor");
    if (!f->has_type || f->data_type == TP_UNDEFINED)
        return fail(f, TP_EMALFORMED, "no data_type");
    if (f->data_type > 64)
        return fail(f, TP_EMALFORMED, "unknown data_type %" PRIu64, f->data_type);
    *dt = (int)f->data_type;
    if (*dt != TP_STRING && tp_elem_size(*dt) == 0)
        return fail(f, TP_EUNSUPPORTED, "data_type %d (%s) is not handled", *dt, tp_type_name(*dt));
    return TP_OK;
}

static int build(fields_t *f, tp_tensor_t *t)
{
    int dt = 0, rc;
    if ((rc = check_type(f, &dt)) != TP_OK || (rc = check_shape(f, dt, t)) != TP_OK ||
        (rc = check_source(f, dt, t)) != TP_OK)
        return rc;
    t->data_type = dt;
    if (dt == TP_STRING && (rc = strings_size(f, t->count, &t->bytes)) != TP_OK)
        return rc;
    if (dt != TP_STRING)
        t->bytes = t->count * tp_elem_size(dt);
    if ((rc = copy_name(f, t)) != TP_OK)
        return rc;
    if (!(t->data = aligned_alloc(64, (t->bytes + 64) & ~(uint64_t)63)))
        return fail(f, TP_ENOMEM, "out of memory for %" PRIu64 " bytes", t->bytes);
    if (dt == TP_STRING)
        fill_strings(f, t);
    else if (f->has_raw)
        memcpy(t->data, f->buf + f->raw_off, t->bytes);
    else
        return fill_typed(f, dt, t);
    return TP_OK;
}

int tp_decode(const uint8_t *buf, size_t len, tp_tensor_t *t, char *msg, size_t cap)
{
    static const uint8_t empty[1];
    fields_t f = {.buf = buf ? buf : empty, .msg = msg, .cap = cap};
    int rc;
    memset(t, 0, sizeof *t);
    if (msg && cap)
        msg[0] = '\0';
    rc = parse(&f, f.buf, buf ? len : 0);
    if (rc == TP_OK)
        rc = build(&f, t);
    fields_free(&f);
    if (rc != TP_OK)
        tp_free(t);
    return rc;
}

void tp_free(tp_tensor_t *t)
{
    free(t->name);
    free(t->data);
    memset(t, 0, sizeof *t);
}

int tp_load(const char *path, tp_tensor_t *t, char *msg, size_t cap)
{
    FILE *fp = fopen(path, "rb");
    struct stat st;
    uint8_t *buf;
    size_t got;
    int rc;
    memset(t, 0, sizeof *t);
    if (!fp) {
        snprintf(msg, cap, "%s: %s", path, strerror(errno));
        return TP_EIO;
    }
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > TP_MAX_BYTES) {
        fclose(fp);
        snprintf(msg, cap, "%s: not a regular file of at most %llu bytes", path, TP_MAX_BYTES);
        return TP_EIO;
    }
    if (!(buf = malloc((size_t)st.st_size + 1))) {
        fclose(fp);
        snprintf(msg, cap, "%s: out of memory", path);
        return TP_ENOMEM;
    }
    got = fread(buf, 1, (size_t)st.st_size, fp);
    fclose(fp);
    if (got != (size_t)st.st_size) {
        free(buf);
        snprintf(msg, cap, "%s: short read", path);
        return TP_EIO;
    }
    rc = tp_decode(buf, got, t, msg, cap);
    free(buf);
    return rc;
}
