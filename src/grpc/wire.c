/* wire.c — the hand-written ModelInferRequest splitter/decoder and ModelInferResponse encoder; see
 * wire.h. Why not protobuf-c's unpack here: it copies every bytes field (each tensor) into memory of
 * its own, a second copy after the one out of the socket; docs/DESIGN.md has the measurement. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "grpc/wire.h"

enum { W_VARINT = 0, W_I64 = 1, W_LEN = 2, W_SGROUP = 3, W_EGROUP = 4, W_I32 = 5 };
enum { S_TAG = 0, S_LEN, S_VARINT, S_FIXED, S_META, S_RAW };

#define F_RAW_INPUT 7

/* ---- the splitter -------------------------------------------------------------------------------------- */

void osv_gw_split_init(osv_gw_split_t *s, void *base, uint64_t cap, uint64_t msg_len)
{
    memset(s, 0, sizeof *s);
    s->msg_len = msg_len;
    s->base = base;
    s->cap = cap;
    s->raw_floor = cap;
    s->state = S_TAG;
}

static int split_meta(osv_gw_split_t *s, const uint8_t *p, size_t n, osv_err_t *err)
{
    if (n > s->raw_floor - s->meta_len) /* cannot happen with cap ≥ len + slack: checked anyway */
        return osv_err_set(err, OSV_ELIMIT, "ModelInferRequest does not fit its buffer");
    memcpy(s->base + s->meta_len, p, n);
    s->meta_len += n;
    return 0;
}

/* An aligned place for len bytes below the last raw payload: 0 with *at set, or OSV_ELIMIT. */
static int raw_place_in_slot(osv_gw_split_t *s, uint64_t len, uint8_t **out, osv_err_t *err)
{
    uintptr_t top = (uintptr_t)s->base + s->raw_floor, at;
    if (len > s->raw_floor - s->meta_len)
        return osv_err_set(err, OSV_ELIMIT, "ModelInferRequest does not fit its buffer");
    at = (top - (uintptr_t)len) & ~(uintptr_t)(OSV_GW_ALIGN - 1);
    if (at < (uintptr_t)s->base + s->meta_len)
        return osv_err_set(err, OSV_ELIMIT, "ModelInferRequest does not fit its buffer");
    s->raw_floor = at - (uintptr_t)s->base;
    *out = (uint8_t *)at;
    return 0;
}

int osv_gw_split_relocate(osv_gw_split_t *s, uint32_t i, osv_err_t *err)
{
    uint8_t *at = NULL;
    int rc;
    if (i >= s->n_raw)
        return osv_err_set(err, OSV_EINVAL, "no raw payload %u", i);
    if (s->state == S_RAW && i + 1 == s->n_raw)
        return osv_err_set(err, OSV_EINVAL, "raw payload %u is still being received", i);
    if ((rc = raw_place_in_slot(s, s->raw[i].len, &at, err)) != 0)
        return rc;
    if (s->raw[i].len)
        memcpy(at, s->raw[i].p, s->raw[i].len);
    s->raw[i].p = at;
    return 0;
}

/* A raw_input_contents entry of len bytes starts: the receiver's place for it (raw_place), else its
 * place in the slot, 64-byte aligned, below the last one. */
static int split_raw_begin(osv_gw_split_t *s, uint64_t len, osv_err_t *err)
{
    uint8_t *dst = NULL;
    int rc;
    if (s->n_raw == OSV_GW_MAX_RAW)
        return osv_err_set(err, OSV_ELIMIT, "more than %d raw_input_contents entries", OSV_GW_MAX_RAW);
    if (s->raw_place) /* (it may move earlier payloads into the slot: the place below is taken after) */
        s->raw_place(s->raw_ud, s->n_raw, len, &dst);
    if (!dst && (rc = raw_place_in_slot(s, len, &dst, err)) != 0)
        return rc;
    s->raw_dst = dst;
    s->raw[s->n_raw++] = (osv_gw_raw_t){dst, len};
    return 0;
}

/* The tag (in s->acc) is complete: decide where the field goes. */
static int split_tag_done(osv_gw_split_t *s, const uint8_t *hdr, size_t hdr_n, osv_err_t *err)
{
    uint64_t field = s->acc >> 3;
    s->wire = (uint32_t)(s->acc & 7);
    if (field == 0 || field > 0x1fffffff)
        return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: invalid field number %" PRIu64, field);
    if (field == F_RAW_INPUT && s->wire != W_LEN)
        return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: raw_input_contents (field 7) has wire type %u, "
                           "expected 2 (length-delimited)", s->wire);
    if (s->wire == W_SGROUP || s->wire == W_EGROUP || s->wire > W_I32)
        return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: field %" PRIu64 " has unsupported wire type %u",
                           field, s->wire);
    if (field != F_RAW_INPUT) {
        int rc = split_meta(s, hdr, hdr_n, err);
        if (rc)
            return rc;
    }
    s->acc = 0;
    s->shift = 0;
    switch (s->wire) {
    case W_VARINT:
        s->state = S_VARINT;
        break;
    case W_I64:
    case W_I32:
        s->state = S_FIXED;
        s->left = s->wire == W_I64 ? 8 : 4;
        break;
    default:
        s->state = S_LEN;
        s->raw_dst = field == F_RAW_INPUT ? (uint8_t *)1 : NULL; /* marks a raw field until its length is read */
        break;
    }
    return 0;
}

/* One varint byte; 1 when the varint ended, 0 when more follow, <0 when too long. */
static int varint_byte(osv_gw_split_t *s, uint8_t b)
{
    if (s->shift >= 64 || (s->shift == 63 && (b & 0x7e)))
        return -1;
    s->acc |= (uint64_t)(b & 0x7f) << s->shift;
    s->shift += 7;
    return (b & 0x80) ? 0 : 1;
}

uint8_t *osv_gw_split_raw_next(const osv_gw_split_t *s, uint64_t *n)
{
    *n = s->state == S_RAW ? s->left : 0;
    return *n ? s->raw_dst : NULL;
}

int osv_gw_split_feed(osv_gw_split_t *s, const uint8_t *p, size_t n, osv_err_t *err)
{
    uint8_t hdr[12];
    size_t hdr_n = 0;
    const uint8_t *start = p;
    int rc;
    if (n > s->msg_len - s->fed)
        return osv_err_set(err, OSV_EPARSE, "more bytes than the message's length prefix says");
    while (n > 0) {
        switch (s->state) {
        case S_TAG: {
            /* A tag may straddle chunks: the bytes seen in this call are kept in hdr, the earlier ones
             * were already accounted for in acc (and are rewritten from acc below when needed). */
            int v = varint_byte(s, *p);
            if (v < 0 || s->shift > 35)
                return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: malformed field tag");
            p++, n--;
            if (v == 0)
                continue;
            hdr_n = 0;
            for (uint64_t t = s->acc; ; t >>= 7) { /* the tag's canonical bytes (non-canonical tags are re-encoded) */
                hdr[hdr_n++] = (uint8_t)((t & 0x7f) | (t > 0x7f ? 0x80 : 0));
                if (t <= 0x7f)
                    break;
            }
            if ((rc = split_tag_done(s, hdr, hdr_n, err)) != 0)
                return rc;
            break;
        }
        case S_VARINT: {
            int v = varint_byte(s, *p);
            if (v < 0)
                return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: malformed varint");
            if ((rc = split_meta(s, p, 1, err)) != 0)
                return rc;
            p++, n--;
            if (v == 1) {
                s->state = S_TAG;
                s->acc = 0;
                s->shift = 0;
            }
            break;
        }
        case S_LEN: {
            bool raw = s->raw_dst != NULL;
            int v = varint_byte(s, *p);
            if (v < 0)
                return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: malformed length");
            if (!raw && (rc = split_meta(s, p, 1, err)) != 0)
                return rc;
            p++, n--;
            if (v == 0)
                continue;
            s->left = s->acc;
            if (s->left > s->msg_len - s->fed - (uint64_t)(p - start))
                return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: a field's length (%" PRIu64
                                   ") runs past the end of the message", s->left);
            if (raw && (rc = split_raw_begin(s, s->left, err)) != 0)
                return rc;
            s->state = raw ? S_RAW : S_META;
            if (s->left == 0) {
                s->state = S_TAG;
                s->acc = 0;
                s->shift = 0;
            }
            break;
        }
        case S_FIXED:
        case S_META:
        case S_RAW: {
            size_t k = n < s->left ? n : (size_t)s->left;
            if (s->state == S_RAW) {
                if (p != s->raw_dst) /* else read in place by the receiver (osv_gw_split_raw_next) */
                    memcpy(s->raw_dst, p, k);
                s->raw_dst += k;
            } else if ((rc = split_meta(s, p, k, err)) != 0) {
                return rc;
            }
            p += k, n -= k;
            s->left -= k;
            if (s->left == 0) {
                s->state = S_TAG;
                s->acc = 0;
                s->shift = 0;
            }
            break;
        }
        }
    }
    s->fed += (uint64_t)(p - start);
    return 0;
}

int osv_gw_split_end(const osv_gw_split_t *s, osv_err_t *err)
{
    if (s->state != S_TAG || s->shift != 0 || s->fed != s->msg_len)
        return osv_err_set(err, OSV_EPARSE, "ModelInferRequest is truncated: it ends inside a field");
    return 0;
}

/* ---- reading ---------------------------------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p, *end;
} rd_t;

static int rd_varint(rd_t *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p == r->end)
            return -1;
        uint8_t b = *r->p++;
        if (shift == 63 && (b & 0x7e))
            return -1;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* One field: its number, wire type and value (varint or fixed in v, bytes in data and len). */
typedef struct fld {
    uint32_t num, wire;
    uint64_t v;
    const uint8_t *data;
    uint64_t len;
} fld_t;

static int rd_field(rd_t *r, fld_t *f)
{
    uint64_t tag;
    if (rd_varint(r, &tag) != 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return -1;
    f->num = (uint32_t)(tag >> 3);
    f->wire = (uint32_t)(tag & 7);
    f->data = NULL;
    f->len = 0;
    switch (f->wire) {
    case W_VARINT:
        return rd_varint(r, &f->v);
    case W_I64:
    case W_I32: {
        unsigned k = f->wire == W_I64 ? 8 : 4;
        if ((size_t)(r->end - r->p) < k)
            return -1;
        f->v = 0;
        for (unsigned i = 0; i < k; i++)
            f->v |= (uint64_t)r->p[i] << (8 * i);
        f->data = r->p;
        r->p += k;
        return 0;
    }
    case W_LEN:
        if (rd_varint(r, &f->len) != 0 || f->len > (uint64_t)(r->end - r->p))
            return -1;
        f->data = r->p;
        r->p += f->len;
        return 0;
    default:
        return -1;
    }
}

static int malformed(osv_err_t *err, const char *what)
{
    return osv_err_set(err, OSV_EPARSE, "%s is malformed (truncated protobuf or a bad wire type)", what);
}

static int want_len(const fld_t *f, const char *what, osv_err_t *err)
{
    if (f->wire != W_LEN)
        return osv_err_set(err, OSV_EPARSE, "%s has wire type %u, expected 2 (length-delimited)", what, f->wire);
    if (f->len > UINT32_MAX)
        return osv_err_set(err, OSV_ELIMIT, "%s is larger than 4 GiB", what);
    return 0;
}

static osv_gw_str_t str_of(const fld_t *f)
{
    return (osv_gw_str_t){(const char *)f->data, (uint32_t)f->len};
}

int osv_gw_count(const uint8_t *meta, uint64_t len, uint32_t *n_inputs, uint32_t *n_outputs, osv_err_t *err)
{
    rd_t r = {meta, meta + len};
    fld_t f;
    *n_inputs = *n_outputs = 0;
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return malformed(err, "ModelInferRequest");
        if (f.num == 5 || f.num == 6) {
            if (f.wire != W_LEN)
                return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: %s (field %u) has wire type %u, expected 2",
                                   f.num == 5 ? "inputs" : "outputs", f.num, f.wire);
            ++*(f.num == 5 ? n_inputs : n_outputs);
        }
    }
    return 0;
}

static int decode_shape(const fld_t *f, osv_gw_input_t *in, osv_err_t *err)
{
    rd_t r = {NULL, NULL}; /* a varint field has no data: NULL + 0 would be undefined */
    uint64_t v;
    if (f->wire == W_VARINT) { /* unpacked: one element per field */
        v = f->v;
        goto one;
    }
    r.p = f->data;
    r.end = f->data + f->len;
    if (f->wire != W_LEN)
        return osv_err_set(err, OSV_EPARSE, "input shape (field 3) has wire type %u", f->wire);
    while (r.p < r.end) {
        if (rd_varint(&r, &v) != 0)
            return malformed(err, "input shape");
    one:
        if (in->rank == OSV_MAX_DIMS)
            return osv_err_set(err, OSV_ELIMIT, "input '%.*s': shape has more than %d dimensions",
                               (int)(in->name.n > 128 ? 128 : in->name.n), in->name.p, OSV_MAX_DIMS);
        if ((int64_t)v < 0)
            return osv_err_set(err, OSV_EINVAL, "input '%.*s': dimension %u of the shape is negative",
                               (int)(in->name.n > 128 ? 128 : in->name.n), in->name.p, in->rank);
        in->dims[in->rank++] = (int64_t)v;
    }
    return 0;
}

static int decode_input(const fld_t *outer, osv_gw_input_t *in, osv_err_t *err)
{
    rd_t r = {outer->data, outer->data + outer->len};
    fld_t f;
    int rc;
    memset(in, 0, sizeof *in);
    /* The name first, so messages below can say which input. */
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return malformed(err, "an InferInputTensor");
        if (f.num == 1) {
            if ((rc = want_len(&f, "input name", err)) != 0)
                return rc;
            in->name = str_of(&f);
        }
    }
    r.p = outer->data;
    while (r.p < r.end) {
        rd_field(&r, &f);
        switch (f.num) {
        case 2:
            if ((rc = want_len(&f, "input datatype", err)) != 0)
                return rc;
            in->datatype = str_of(&f);
            break;
        case 3:
            if ((rc = decode_shape(&f, in, err)) != 0)
                return rc;
            break;
        case 4:
            if ((rc = want_len(&f, "input parameters", err)) != 0)
                return rc;
            in->params = outer->data;
            in->params_len = (uint32_t)outer->len;
            break;
        case 5:
            if ((rc = want_len(&f, "input contents", err)) != 0)
                return rc;
            in->contents = f.data;
            in->contents_len = (uint32_t)f.len;
            break;
        default:
            break;
        }
    }
    return 0;
}

static int decode_output(const fld_t *outer, osv_gw_output_t *o, osv_err_t *err)
{
    rd_t r = {outer->data, outer->data + outer->len};
    fld_t f;
    int rc;
    memset(o, 0, sizeof *o);
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return malformed(err, "an InferRequestedOutputTensor");
        if (f.num == 1) {
            if ((rc = want_len(&f, "output name", err)) != 0)
                return rc;
            o->name = str_of(&f);
        } else if (f.num == 2) {
            if ((rc = want_len(&f, "output parameters", err)) != 0)
                return rc;
            o->params = outer->data;
            o->params_len = (uint32_t)outer->len;
        }
    }
    return 0;
}

int osv_gw_decode(const uint8_t *meta, uint64_t len, const osv_gw_split_t *s, osv_gw_request_t *req,
                  osv_err_t *err)
{
    rd_t r = {meta, meta + len};
    fld_t f;
    uint32_t ni = 0, no = 0;
    int rc;
    static const char *const names[] = {NULL, "model_name", "model_version", "id", "parameters"};
    req->raw = s ? s->raw : NULL;
    req->n_raw = s ? s->n_raw : 0;
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return malformed(err, "ModelInferRequest");
        switch (f.num) {
        case 1:
        case 2:
        case 3:
        case 4:
            if (f.wire != W_LEN)
                return osv_err_set(err, OSV_EPARSE, "ModelInferRequest: %s (field %u) has wire type %u, expected 2",
                                   names[f.num], f.num, f.wire);
            if (f.num == 1)
                req->model_name = str_of(&f);
            else if (f.num == 2)
                req->model_version = str_of(&f);
            else if (f.num == 3)
                req->id = str_of(&f);
            else {
                req->params = meta;
                req->params_len = (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
            }
            break;
        case 5:
            if (ni == req->n_inputs || (rc = decode_input(&f, &req->inputs[ni++], err)) != 0)
                return ni > req->n_inputs ? malformed(err, "ModelInferRequest") : rc;
            break;
        case 6:
            if (no == req->n_outputs || (rc = decode_output(&f, &req->outputs[no++], err)) != 0)
                return no > req->n_outputs ? malformed(err, "ModelInferRequest") : rc;
            break;
        default:
            break; /* unknown fields are skipped, as proto3 does */
        }
    }
    req->n_inputs = ni;
    req->n_outputs = no;
    return 0;
}

/* One InferParameter. */
static int decode_param(const uint8_t *p, uint64_t len, osv_gw_param_t *out, osv_err_t *err)
{
    rd_t r = {p, p + len};
    fld_t f;
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return malformed(err, "an InferParameter");
        switch (f.num) {
        case 1:
            out->type = OSV_GW_P_BOOL;
            out->b = f.v != 0;
            break;
        case 2:
            out->type = OSV_GW_P_INT64;
            out->i = (int64_t)f.v;
            break;
        case 3:
            if (f.wire != W_LEN)
                return malformed(err, "an InferParameter");
            out->type = OSV_GW_P_STRING;
            out->s = str_of(&f);
            break;
        case 4: {
            double d;
            if (f.wire != W_I64)
                return malformed(err, "an InferParameter");
            memcpy(&d, &f.v, 8);
            out->type = OSV_GW_P_DOUBLE;
            out->d = d;
            break;
        }
        case 5:
            out->type = OSV_GW_P_UINT64;
            out->u = f.v;
            break;
        default:
            break;
        }
        if ((f.num == 1 || f.num == 2 || f.num == 5) && f.wire != W_VARINT)
            return malformed(err, "an InferParameter");
    }
    return 0;
}

int osv_gw_params_of(const uint8_t *msg, uint32_t len, uint32_t field, osv_gw_params_t *out, osv_err_t *err)
{
    rd_t r = {msg, msg + len};
    fld_t f, g;
    int rc;
    out->n = 0;
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return malformed(err, "parameters");
        if (f.num != field)
            continue;
        if (f.wire != W_LEN)
            return malformed(err, "a parameters entry");
        if (out->n == OSV_GW_MAX_PARAMS)
            return osv_err_set(err, OSV_ELIMIT, "more than %d parameters", OSV_GW_MAX_PARAMS);
        osv_gw_param_t *pm = &out->v[out->n];
        memset(pm, 0, sizeof *pm);
        rd_t e = {f.data, f.data + f.len};
        while (e.p < e.end) {
            if (rd_field(&e, &g) != 0 || g.wire != W_LEN)
                return malformed(err, "a parameters entry");
            if (g.num == 1)
                pm->key = str_of(&g);
            else if (g.num == 2 && (rc = decode_param(g.data, g.len, pm, err)) != 0)
                return rc;
        }
        /* A later entry with the same key replaces an earlier one (protobuf map semantics). */
        uint32_t k = 0;
        while (k < out->n && !(out->v[k].key.n == pm->key.n &&
                               (!pm->key.n || memcmp(out->v[k].key.p, pm->key.p, pm->key.n) == 0)))
            k++; /* (an entry without a key has key.p NULL: memcmp must not see it, even for 0 bytes) */
        if (k < out->n)
            out->v[k] = *pm;
        else
            out->n++;
    }
    return 0;
}

const osv_gw_param_t *osv_gw_param(const osv_gw_params_t *ps, const char *key)
{
    size_t n = strlen(key);
    for (uint32_t i = 0; i < ps->n; i++)
        if (ps->v[i].key.n == n && memcmp(ps->v[i].key.p, key, n) == 0)
            return &ps->v[i];
    return NULL;
}

/* ---- typed contents ---------------------------------------------------------------------------------------- */

/* The InferTensorContents field a datatype travels in (0: raw only). */
static uint32_t contents_field(osv_dtype_t dt)
{
    switch (dt) {
    case OSV_DTYPE_BOOL:
        return 1;
    case OSV_DTYPE_INT8:
    case OSV_DTYPE_INT16:
    case OSV_DTYPE_INT32:
        return 2;
    case OSV_DTYPE_INT64:
        return 3;
    case OSV_DTYPE_UINT8:
    case OSV_DTYPE_UINT16:
    case OSV_DTYPE_UINT32:
        return 4;
    case OSV_DTYPE_UINT64:
        return 5;
    case OSV_DTYPE_FP32:
        return 6;
    case OSV_DTYPE_FP64:
        return 7;
    case OSV_DTYPE_BYTES:
        return 8;
    default:
        return 0;
    }
}

static const char *const contents_names[] = {NULL, "bool_contents", "int_contents", "int64_contents",
                                             "uint_contents", "uint64_contents", "fp32_contents",
                                             "fp64_contents", "bytes_contents"};

/* Stores element i (value v as read from the wire) into dst; -1 when out of the type's range. */
static int store(osv_dtype_t dt, void *dst, uint64_t i, uint64_t v)
{
    int64_t s = (int64_t)(int32_t)(uint32_t)v; /* int32 on the wire: sign-extended to 10 bytes, or not */
    switch (dt) {
    case OSV_DTYPE_BOOL:
        ((uint8_t *)dst)[i] = v != 0;
        return 0;
    case OSV_DTYPE_INT8:
        if (s < INT8_MIN || s > INT8_MAX)
            return -1;
        ((int8_t *)dst)[i] = (int8_t)s;
        return 0;
    case OSV_DTYPE_INT16:
        if (s < INT16_MIN || s > INT16_MAX)
            return -1;
        ((int16_t *)dst)[i] = (int16_t)s;
        return 0;
    case OSV_DTYPE_INT32:
        ((int32_t *)dst)[i] = (int32_t)s;
        return 0;
    case OSV_DTYPE_UINT8:
        if (v > UINT8_MAX)
            return -1;
        ((uint8_t *)dst)[i] = (uint8_t)v;
        return 0;
    case OSV_DTYPE_UINT16:
        if (v > UINT16_MAX)
            return -1;
        ((uint16_t *)dst)[i] = (uint16_t)v;
        return 0;
    case OSV_DTYPE_UINT32:
        if (v > UINT32_MAX)
            return -1;
        ((uint32_t *)dst)[i] = (uint32_t)v;
        return 0;
    case OSV_DTYPE_INT64:
    case OSV_DTYPE_UINT64:
    case OSV_DTYPE_FP64:
        memcpy((uint8_t *)dst + 8 * i, &v, 8);
        return 0;
    case OSV_DTYPE_FP32: {
        uint32_t w = (uint32_t)v;
        memcpy((uint8_t *)dst + 4 * i, &w, 4);
        return 0;
    }
    default:
        return -1;
    }
}

static bool fixed_wire(osv_dtype_t dt, uint32_t *wire)
{
    *wire = dt == OSV_DTYPE_FP32 ? W_I32 : dt == OSV_DTYPE_FP64 ? W_I64 : W_VARINT;
    return dt == OSV_DTYPE_FP32 || dt == OSV_DTYPE_FP64;
}

int osv_gw_contents_bytes_size(const uint8_t *msg, uint32_t len, uint64_t *count, uint64_t *size, osv_err_t *err)
{
    rd_t r = {msg, msg + len};
    fld_t f;
    *count = *size = 0;
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return malformed(err, "InferTensorContents");
        if (f.num != 8)
            continue;
        if (f.wire != W_LEN || f.len > UINT32_MAX)
            return malformed(err, "bytes_contents");
        ++*count;
        *size += 4 + f.len;
    }
    return 0;
}

int osv_gw_contents(const uint8_t *msg, uint32_t len, osv_dtype_t dt, uint64_t count, void *dst, uint64_t cap,
                    osv_err_t *err)
{
    uint32_t want = contents_field(dt), wire;
    bool fixed = fixed_wire(dt, &wire);
    rd_t r = {msg, msg + len};
    fld_t f;
    uint64_t n = 0, used = 0;
    if (!want)
        return osv_err_set(err, OSV_EINVAL, "%s tensors travel in raw_input_contents only (no typed contents field)",
                           osv_dtype_name(dt));
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return malformed(err, "InferTensorContents");
        if (f.num < 1 || f.num > 8)
            continue;
        if (f.num != want)
            return osv_err_set(err, OSV_EINVAL, "contents has %s but the input is %s (it takes %s)",
                               contents_names[f.num], osv_dtype_name(dt), contents_names[want]);
        if (dt == OSV_DTYPE_BYTES) {
            uint32_t l32;
            if (f.wire != W_LEN || n == count || cap - used < 4 + f.len)
                return osv_err_set(err, OSV_EINVAL, "bytes_contents has more than %" PRIu64 " elements", count);
            l32 = (uint32_t)f.len;
            memcpy((uint8_t *)dst + used, &l32, 4);
            memcpy((uint8_t *)dst + used + 4, f.data, f.len);
            used += 4 + f.len;
            n++;
            continue;
        }
        if (f.wire == W_LEN) { /* packed */
            rd_t e = {f.data, f.data + f.len};
            while (e.p < e.end) {
                uint64_t v = 0;
                if (fixed) {
                    unsigned k = wire == W_I64 ? 8 : 4;
                    if ((size_t)(e.end - e.p) < k)
                        return malformed(err, contents_names[want]);
                    for (unsigned i = 0; i < k; i++)
                        v |= (uint64_t)e.p[i] << (8 * i);
                    e.p += k;
                } else if (rd_varint(&e, &v) != 0) {
                    return malformed(err, contents_names[want]);
                }
                if (n == count)
                    return osv_err_set(err, OSV_EINVAL, "%s has more than the %" PRIu64 " elements the shape needs",
                                       contents_names[want], count);
                if (store(dt, dst, n++, v) != 0)
                    return osv_err_set(err, OSV_EINVAL, "%s: element %" PRIu64 " is out of range for %s",
                                       contents_names[want], n - 1, osv_dtype_name(dt));
            }
        } else if (f.wire == wire) {
            if (n == count)
                return osv_err_set(err, OSV_EINVAL, "%s has more than the %" PRIu64 " elements the shape needs",
                                   contents_names[want], count);
            if (store(dt, dst, n++, f.v) != 0)
                return osv_err_set(err, OSV_EINVAL, "%s: element %" PRIu64 " is out of range for %s",
                                   contents_names[want], n - 1, osv_dtype_name(dt));
        } else {
            return osv_err_set(err, OSV_EPARSE, "%s has wire type %u", contents_names[want], f.wire);
        }
    }
    if (n != count)
        return osv_err_set(err, OSV_EINVAL, "%s has %" PRIu64 " elements but the shape needs %" PRIu64,
                           contents_names[want], n, count);
    return 0;
}

/* ---- the encoder ---------------------------------------------------------------------------------------------- */

uint32_t osv_gw_varint_len(uint64_t v)
{
    uint32_t n = 1;
    while (v > 0x7f) {
        v >>= 7;
        n++;
    }
    return n;
}

void osv_gw_w_raw(osv_gw_w_t *w, const void *p, uint64_t n)
{
    if (w->p && n && w->len + n <= w->cap)
        memcpy(w->p + w->len, p, n);
    w->len += n;
}

void osv_gw_w_varint(osv_gw_w_t *w, uint64_t v)
{
    uint8_t b[10];
    unsigned n = 0;
    do {
        b[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    osv_gw_w_raw(w, b, n);
}

void osv_gw_w_tag(osv_gw_w_t *w, uint32_t field, uint32_t wire)
{
    osv_gw_w_varint(w, ((uint64_t)field << 3) | wire);
}

void osv_gw_w_bytes(osv_gw_w_t *w, uint32_t field, const void *p, uint64_t n)
{
    osv_gw_w_tag(w, field, W_LEN);
    osv_gw_w_varint(w, n);
    osv_gw_w_raw(w, p, n);
}

/* One entry of a map<string, InferParameter> (field `field` of its message) whose value is the integer v in
 * InferParameter's field `kind` (2: int64_param, 5: uint64_param). Keys are short literals (< 128 bytes). */
static void enc_param(osv_gw_w_t *w, uint32_t field, const char *key, uint32_t kind, uint64_t v)
{
    uint64_t klen = strlen(key), param = 1 + osv_gw_varint_len(v);
    uint64_t entry = 2 + klen + 1 + osv_gw_varint_len(param) + param; /* key=1, value=2 */
    osv_gw_w_tag(w, field, W_LEN);
    osv_gw_w_varint(w, entry);
    osv_gw_w_bytes(w, 1, key, klen);
    osv_gw_w_tag(w, 2, W_LEN);
    osv_gw_w_varint(w, param);
    osv_gw_w_tag(w, kind, W_VARINT);
    osv_gw_w_varint(w, v);
}

/* InferOutputTensor body. */
static void enc_output_body(osv_gw_w_t *w, const osv_gw_out_t *o)
{
    uint64_t shape = 0;
    osv_gw_w_bytes(w, 1, o->name, strlen(o->name));
    osv_gw_w_bytes(w, 2, o->datatype, strlen(o->datatype));
    for (uint32_t d = 0; d < o->rank; d++)
        shape += osv_gw_varint_len((uint64_t)o->dims[d]);
    if (o->rank) {
        osv_gw_w_tag(w, 3, W_LEN);
        osv_gw_w_varint(w, shape);
        for (uint32_t d = 0; d < o->rank; d++)
            osv_gw_w_varint(w, (uint64_t)o->dims[d]);
    }
    if (o->shm) /* parameters { "shared_memory_byte_size": uint64 } as Triton reports it */
        enc_param(w, 4, "shared_memory_byte_size", 5, o->shm_bytes);
}

void osv_gw_enc_output(osv_gw_w_t *w, const osv_gw_out_t *o)
{
    osv_gw_w_t size = {0};
    enc_output_body(&size, o);
    osv_gw_w_tag(w, 5, W_LEN);
    osv_gw_w_varint(w, size.len);
    enc_output_body(w, o);
}

/* The ModelInferResponse of an error answer: the request's id and the retry hint. */
static void enc_error_response(osv_gw_w_t *w, const char *id, uint32_t id_len, uint64_t retry_ms)
{
    if (id_len)
        osv_gw_w_bytes(w, 3, id, id_len);
    if (retry_ms)
        enc_param(w, 4, "retry_after_ms", 2, retry_ms);
}

void osv_gw_enc_stream_error(osv_gw_w_t *w, const char *msg, uint64_t msg_len, const char *id, uint32_t id_len,
                             uint64_t retry_ms)
{
    osv_gw_w_t size = {0};
    osv_gw_w_bytes(w, 1, msg, msg_len);
    enc_error_response(&size, id, id_len, retry_ms);
    if (!size.len)
        return;
    osv_gw_w_tag(w, 2, W_LEN);
    osv_gw_w_varint(w, size.len);
    enc_error_response(w, id, id_len, retry_ms);
}

/* ---- the id of a message that is not kept ------------------------------------------------------------------------ */

enum { I_TAG = 0, I_VARINT, I_LEN, I_SKIP, I_TAKE, I_DONE };

void osv_gw_idscan_init(osv_gw_idscan_t *s)
{
    memset(s, 0, sizeof *s);
}

/* One varint byte into the scanner's accumulator: 1 when it ended, 0 when more follow, -1 when malformed. */
static int idscan_varint(osv_gw_idscan_t *s, uint8_t b)
{
    if (s->shift >= 64)
        return -1;
    s->acc |= (uint64_t)(b & 0x7f) << s->shift;
    s->shift += 7;
    return (b & 0x80) ? 0 : 1;
}

void osv_gw_idscan_feed(osv_gw_idscan_t *s, const uint8_t *p, size_t n)
{
    while (n && s->state != I_DONE) {
        int v;
        switch (s->state) {
        case I_TAG:
        case I_VARINT:
        case I_LEN:
            if ((v = idscan_varint(s, *p++)) < 0) {
                s->state = I_DONE; /* malformed: whatever id was read stays */
                break;
            }
            n--;
            if (v == 0)
                break;
            if (s->state == I_TAG) {
                s->field = s->acc >> 3;
                s->wire = (uint32_t)(s->acc & 7);
                s->state = s->wire == W_VARINT ? I_VARINT : s->wire == W_LEN ? I_LEN : I_SKIP;
                s->left = s->wire == W_I64 ? 8 : s->wire == W_I32 ? 4 : 0;
                if (s->state == I_SKIP && !s->left)
                    s->state = I_DONE; /* groups: not in this message */
            } else if (s->state == I_VARINT) {
                s->state = I_TAG;
            } else {
                s->left = s->acc;
                s->state = s->field == 3 && s->id_len == 0 ? I_TAKE : I_SKIP;
            }
            s->acc = 0;
            s->shift = 0;
            break;
        case I_SKIP:
        case I_TAKE: {
            size_t k = n < s->left ? n : (size_t)s->left;
            if (s->state == I_TAKE) {
                size_t room = sizeof s->id - s->id_len, c = k < room ? k : room;
                memcpy(s->id + s->id_len, p, c);
                s->id_len += (uint32_t)c;
            }
            p += k, n -= k;
            s->left -= k;
            if (!s->left)
                s->state = I_TAG;
            break;
        }
        }
    }
}
