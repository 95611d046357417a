/* infer.c — one inference over a model: validation, slot layout, zero-copy binding, Run with
 * cancellation, output views.
 *
 * Zero-copy rules. An input whose bytes are in caller memory with natural alignment for its element
 * type becomes an ORT tensor over that memory (CreateTensorWithDataAsOrtValue): ORT reads it in
 * place. Otherwise the bytes are copied into the request's slot, and the copy is counted with its
 * reason (misaligned, conversion, forced); BYTES are always converted into an ORT string tensor. An
 * output whose shape is known before Run — static, or every dynamic dim named by a symbol that an
 * input dim binds — is pre-created over slot (or caller) memory, so ORT's kernel writes the result
 * where the response is sent from. Other outputs are allocated by ORT and read in place. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>

#include "util/sanitize.h"
#include "model_internal.h"
#include "ortserve/infer.h"

enum { ST_IDLE, ST_RUNNING, ST_CANCELING, ST_CANCELED, ST_DONE };

typedef struct infer_in {
    uint8_t declared, external, convert;
    osv_dtype_t dtype; /* as sent */
    uint32_t rank;
    int64_t dims[OSV_MAX_DIMS]; /* as sent (the clients' view) */
    uint32_t ort_rank;
    int64_t ort_dims[OSV_MAX_DIMS]; /* as ORT takes it (reshaped by config.pbtxt) */
    uint64_t count;
    uint64_t bytes;       /* size of the data as sent */
    uint64_t model_bytes; /* size in the model's dtype (conversion target) */
    void *ext;            /* caller memory, when external */
    uint64_t off;         /* slot offset of the data as sent (slot-resident or copy target) */
    uint64_t conv_off;    /* slot offset of the converted data */
    uint8_t in_slot, conv_in_slot;
    void *data; /* what ORT reads */
    osv_copy_reason_t reason;
    OrtValue *value;
} infer_in_t;

typedef struct infer_out {
    uint32_t idx; /* model output index */
    uint8_t computable, prebound, in_slot, retried;
    uint32_t rank;
    int64_t dims[OSV_MAX_DIMS]; /* as ORT writes it (clients may see it reshaped) */
    uint64_t count, bytes;
    void *ext;
    uint64_t ext_cap;
    uint64_t off;
    void *data;
    osv_copy_reason_t reason;
    OrtValue *value;
    /* Rows adopted from a batch (osv_infer_adopt_rows): a BYTES output's elements are read from the
     * batch's string tensor, starting at element src_elem0. Borrowed, never released here. */
    OrtValue *src_value;
    uint64_t src_elem0;
    /* A BYTES output adopted in serialized form (osv_infer_adopt_views): data holds it. */
    uint8_t serialized;
} infer_out_t;

struct osv_infer {
    osv_model_t *m;
    osv_infer_opts_t opts;
    _Atomic int state;
    OrtRunOptions *_Atomic ro;
    osv_slot_t slot;
    int prepared, ran;
    uint32_t n_out;
    uint64_t copied, batch;
    osv_copy_reason_t fallback;
    uint64_t ns[OSV_PHASE_COUNT];
    infer_in_t *in;
    infer_out_t *out;
    const char **out_names;
    const char **in_names; /* the inputs given, for Run (optional ones may be left out) */
    uint32_t n_run_in;
    OrtValue **in_vals, **out_vals;
    /* Outputs adopted from a batch: called once by osv_infer_fini (the batch's owner releases it). */
    void (*borrow_release)(void *ud);
    void *borrow_ud;
};

#define ALIGN16(x) (((x) + 15u) & ~(size_t)15u)

size_t osv_infer_size(const osv_model_t *m)
{
    return ALIGN16(sizeof(struct osv_infer)) + ALIGN16(m->n_in * sizeof(infer_in_t)) +
           ALIGN16(m->n_out * sizeof(infer_out_t)) + ALIGN16(m->n_out * sizeof(char *)) +
           ALIGN16(m->n_in * sizeof(char *)) + ALIGN16((m->n_in + m->n_out) * sizeof(OrtValue *));
}

int osv_infer_init(void *mem, size_t size, osv_model_t *m, const osv_infer_opts_t *opts, osv_infer_t **out,
                   osv_err_t *err)
{
    uint8_t *p = mem;
    osv_infer_t *inf = mem;
    if (!mem || ((uintptr_t)mem & 15) || size < osv_infer_size(m))
        return osv_err_set(err, OSV_EINVAL, "infer storage too small or misaligned");
    memset(mem, 0, osv_infer_size(m));
    p += ALIGN16(sizeof *inf);
    inf->in = (infer_in_t *)p;
    p += ALIGN16(m->n_in * sizeof(infer_in_t));
    inf->out = (infer_out_t *)p;
    p += ALIGN16(m->n_out * sizeof(infer_out_t));
    inf->out_names = (const char **)p;
    p += ALIGN16(m->n_out * sizeof(char *));
    inf->in_names = (const char **)p;
    p += ALIGN16(m->n_in * sizeof(char *));
    inf->in_vals = (OrtValue **)p;
    inf->out_vals = inf->in_vals + m->n_in;
    inf->m = m;
    if (opts)
        inf->opts = *opts;
    atomic_init(&inf->state, ST_IDLE);
    inf->batch = 1;
    *out = inf;
    return 0;
}

static void note_fallback(osv_infer_t *inf, osv_copy_reason_t r)
{
    if (inf->fallback == OSV_COPY_NONE && r != OSV_COPY_NONE)
        inf->fallback = r;
}

void osv_infer_note_copy(osv_infer_t *inf, osv_copy_reason_t r, uint64_t bytes)
{
    if (!bytes)
        return;
    inf->copied += bytes;
    note_fallback(inf, r);
    osv_stats_record_copy(inf->m->stats, r, bytes);
}

static bool numeric(osv_dtype_t dt)
{
    return dt != OSV_DTYPE_BYTES && dt != OSV_DTYPE_INVALID;
}

int osv_infer_add_input(osv_infer_t *inf, uint32_t idx, osv_dtype_t dt, const int64_t *dims, uint32_t rank,
                        uint64_t byte_size, osv_err_t *err)
{
    const osv_model_t *m = inf->m;
    const osv_tensor_info_t *ti;
    infer_in_t *in;
    int rc;

    if (inf->prepared || idx >= m->n_in)
        return osv_err_set(err, OSV_EINVAL, "input index %u out of range", idx);
    ti = &m->in[idx];
    in = &inf->in[idx];
    if (in->declared)
        return osv_err_set(err, OSV_EINVAL, "input '%s' is given more than once", ti->name);
    if (dt != ti->dtype) {
        if (!(m->cfg.allow_dtype_conversion && numeric(dt) && numeric(ti->dtype)))
            return osv_err_set(err, OSV_EDTYPE, "input '%s': datatype %s does not match the model's %s",
                               ti->name, osv_dtype_name(dt), osv_dtype_name(ti->dtype));
        in->convert = 1;
    }
    char what[160];
    snprintf(what, sizeof what, "input '%s'", ti->name);
    if ((rc = osv_shape_check(what, ti->dims, ti->rank, dims, rank, &m->cfg.limits, err)) != 0)
        return rc;
    /* max_batch_size (config.pbtxt's, or config.json's: one value, m->max_batch_size) bounds the rows */
    if (m->max_batch_size > 0 && (rank < 1 || dims[0] < 1 || dims[0] > m->max_batch_size))
        return osv_err_set(err, OSV_ESHAPE, "input '%s': batch size %" PRId64 " is outside [1, %d]: max_batch_size %d of model '%s'",
                           ti->name, rank ? dims[0] : 0, m->max_batch_size, m->max_batch_size, m->name);
    if ((rc = osv_shape_size(dims, rank, dt, &m->cfg.limits, &in->count, &in->bytes, err)) != 0) {
        osv_err_prefix(err, "input '%s'", ti->name);
        return rc;
    }
    if (dt == OSV_DTYPE_BYTES) {
        uint64_t min_bytes;
        if (!osv_mul_u64(in->count, 4, &min_bytes) || byte_size < min_bytes)
            return osv_err_set(err, OSV_ESHAPE,
                               "input '%s': %" PRIu64 " bytes cannot hold %" PRIu64 " BYTES elements (4-byte "
                               "length prefix each)",
                               ti->name, byte_size, in->count);
        in->bytes = byte_size;
    } else if (byte_size && byte_size != in->bytes) {
        char s[96];
        return osv_err_set(err, OSV_ESHAPE,
                           "input '%s': %" PRIu64 " bytes of data, but shape %s of %s needs %" PRIu64,
                           ti->name, byte_size, osv_shape_str(dims, (int32_t)rank, s, sizeof s),
                           osv_dtype_name(dt), in->bytes);
    }
    if ((rc = osv_model_ort_input_shape(m, idx, dims, rank, in->ort_dims, &in->ort_rank)) != 0) {
        char s[96];
        return osv_err_set(err, OSV_ESHAPE, "input '%s': shape %s does not fit the model's reshape", ti->name,
                           osv_shape_str(dims, (int32_t)rank, s, sizeof s));
    }
    in->model_bytes = in->convert ? in->count * osv_dtype_size(ti->dtype) : in->bytes;
    in->declared = 1;
    in->dtype = dt;
    in->rank = rank;
    if (rank)
        memcpy(in->dims, dims, rank * sizeof *dims);
    return 0;
}

int osv_infer_input_external(osv_infer_t *inf, uint32_t idx, void *data, uint64_t len, osv_err_t *err)
{
    infer_in_t *in = idx < inf->m->n_in ? &inf->in[idx] : NULL;
    if (!in || !in->declared || inf->prepared)
        return osv_err_set(err, OSV_EINVAL, "input %u is not declared", idx);
    if (len != in->bytes)
        return osv_err_set(err, OSV_ESHAPE, "input '%s': %" PRIu64 " bytes given, %" PRIu64 " expected",
                           inf->m->in[idx].name, len, in->bytes);
    in->external = 1;
    in->ext = data;
    return 0;
}

int osv_infer_add_output(osv_infer_t *inf, uint32_t idx, osv_err_t *err)
{
    if (inf->prepared || idx >= inf->m->n_out)
        return osv_err_set(err, OSV_EINVAL, "output index %u out of range", idx);
    for (uint32_t k = 0; k < inf->n_out; k++) {
        if (inf->out[k].idx == idx)
            return osv_err_set(err, OSV_EINVAL, "output '%s' is requested more than once",
                               inf->m->out[idx].name);
    }
    inf->out[inf->n_out].idx = idx;
    inf->out_names[inf->n_out] = inf->m->out_names[idx];
    inf->n_out++;
    return 0;
}

int osv_infer_output_external(osv_infer_t *inf, uint32_t idx, void *dst, uint64_t cap, osv_err_t *err)
{
    for (uint32_t k = 0; k < inf->n_out; k++) {
        if (inf->out[k].idx == idx) {
            if (inf->m->out[idx].dtype == OSV_DTYPE_BYTES)
                return osv_err_set(err, OSV_EUNSUPPORTED,
                                   "output '%s': BYTES outputs cannot go to external memory",
                                   inf->m->out[idx].name);
            inf->out[k].ext = dst;
            inf->out[k].ext_cap = cap;
            return 0;
        }
    }
    return osv_err_set(err, OSV_EINVAL, "output %u is not requested", idx);
}

/* Symbol bindings from the declared inputs: symbol name → value, or -2 on conflicting values. */
typedef struct symtab {
    uint32_t n;
    const char *name[64];
    int64_t value[64];
} symtab_t;

static void sym_bind(symtab_t *t, const char *name, int64_t v)
{
    for (uint32_t i = 0; i < t->n; i++) {
        if (strcmp(t->name[i], name) == 0) {
            if (t->value[i] != v)
                t->value[i] = -2;
            return;
        }
    }
    if (t->n < 64) {
        t->name[t->n] = name;
        t->value[t->n++] = v;
    }
}

static int64_t sym_lookup(const symtab_t *t, const char *name)
{
    for (uint32_t i = 0; i < t->n; i++)
        if (strcmp(t->name[i], name) == 0)
            return t->value[i];
    return -1;
}

/* Works out the shape of requested output k before Run, when possible. */
static void derive_output(osv_infer_t *inf, const symtab_t *syms, infer_out_t *o)
{
    const osv_tensor_info_t *ti = &inf->m->ort_out[inf->m->out_ort[o->idx]];
    o->computable = 0;
    if (ti->rank < 0 || ti->dtype == OSV_DTYPE_BYTES ||
        atomic_load_explicit(&inf->m->derive_broken[o->idx], memory_order_relaxed))
        return;
    for (int32_t d = 0; d < ti->rank; d++) {
        int64_t v = ti->dims[d];
        if (v < 0) {
            v = ti->sym[d][0] ? sym_lookup(syms, ti->sym[d]) : -1;
            if (v < 0)
                return;
        }
        o->dims[d] = v;
    }
    o->rank = (uint32_t)ti->rank;
    if (osv_shape_size(o->dims, o->rank, ti->dtype, NULL, &o->count, &o->bytes, NULL) != 0)
        return;
    o->computable = 1;
}

/* Reserves `len` bytes at a 64-byte-aligned offset of the slot being planned (followed by a red zone
 * in the ASan build, poisoned by poison_redzones: a write past one tensor never reaches the next). */
static int reserve(uint64_t *total, uint64_t len, uint64_t *off)
{
    uint64_t start, end;
    if (!osv_align_up_u64(*total, OSV_SLOT_ALIGN, &start) || !osv_add_u64(start, len, &end) ||
        !osv_add_u64(end, OSV_ASAN_REDZONE, total))
        return OSV_EOVERFLOW;
    *off = start;
    return 0;
}

static void poison_redzones(osv_infer_t *inf)
{
#ifdef OSV_ASAN
    for (uint32_t i = 0; i < inf->m->n_in; i++) {
        const infer_in_t *in = &inf->in[i];
        if (in->in_slot)
            osv_poison(inf->slot.base + in->off + in->bytes, OSV_ASAN_REDZONE);
        if (in->conv_in_slot)
            osv_poison(inf->slot.base + in->conv_off + in->model_bytes, OSV_ASAN_REDZONE);
    }
    for (uint32_t k = 0; k < inf->n_out; k++)
        if (inf->out[k].in_slot)
            osv_poison(inf->slot.base + inf->out[k].off + inf->out[k].bytes, OSV_ASAN_REDZONE);
#else
    (void)inf;
#endif
}

static bool aligned_for(const void *p, osv_dtype_t dt)
{
    size_t a = osv_dtype_size(dt);
    return a <= 1 || ((uintptr_t)p % a) == 0;
}

/* The names of the inputs a request must give, for messages. */
static const char *required_inputs(const osv_model_t *m, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < m->n_in && k < cap; i++)
        if (!m->in[i].optional)
            k += (size_t)snprintf(buf + k, cap - k, "%s'%s'", k ? ", " : "", m->in[i].name);
    return buf;
}

/* With max_batch_size > 0, every input's first dim is the batch: the same in each. */
static int check_batch(osv_infer_t *inf, osv_err_t *err)
{
    const osv_model_t *m = inf->m;
    int first = -1;
    for (uint32_t i = 0; m->max_batch_size > 0 && i < m->n_in; i++) {
        const infer_in_t *in = &inf->in[i];
        if (!in->declared || in->rank == 0)
            continue;
        if (first < 0)
            first = (int)i;
        else if (in->dims[0] != inf->in[first].dims[0])
            return osv_err_set(err, OSV_ESHAPE,
                               "input '%s' has batch size %" PRId64 " but input '%s' has %" PRId64
                               ": every input of a batch must have the same",
                               m->in[i].name, in->dims[0], m->in[first].name, inf->in[first].dims[0]);
    }
    return 0;
}

/* Decides where each input lives and how it is bound; returns the slot bytes needed. */
static int plan_inputs(osv_infer_t *inf, uint64_t *total, osv_err_t *err)
{
    const osv_model_t *m = inf->m;
    for (uint32_t i = 0; i < m->n_in; i++) {
        infer_in_t *in = &inf->in[i];
        bool bytes = in->dtype == OSV_DTYPE_BYTES;
        if (!in->declared && m->in[i].optional) {
            if (osv_model_input_has_default(m, i))
                continue; /* left out: ORT runs with the model's default (an overridable initializer) */
            return osv_err_set(err, OSV_EINVAL,
                               "missing input '%s': the config marks it optional, but the model has no default "
                               "for it and cannot run without it",
                               m->in[i].name);
        }
        if (!in->declared)
            return osv_err_set(err, OSV_EINVAL, "missing input '%s' (the model needs %s)", m->in[i].name,
                               required_inputs(m, (char[512]){0}, 512));
        if (bytes)
            in->reason = OSV_COPY_BYTES;
        else if (in->convert)
            in->reason = OSV_COPY_CONVERSION;
        else if (in->external && inf->opts.force_copy)
            in->reason = OSV_COPY_FORCED;
        else if (in->external && !aligned_for(in->ext, in->dtype))
            in->reason = OSV_COPY_MISALIGNED;
        else
            in->reason = OSV_COPY_NONE;
        /* The data as sent lives in the slot unless it is external. */
        in->in_slot = !in->external;
        if (!in->external || in->reason == OSV_COPY_MISALIGNED || in->reason == OSV_COPY_FORCED)
            in->in_slot = 1;
        if (in->in_slot && reserve(total, in->bytes, &in->off))
            return osv_err_set(err, OSV_EOVERFLOW, "request size overflows");
        in->conv_in_slot = in->convert;
        if (in->convert && reserve(total, in->model_bytes, &in->conv_off))
            return osv_err_set(err, OSV_EOVERFLOW, "request size overflows");
    }
    return 0;
}

static int plan_outputs(osv_infer_t *inf, uint64_t *total, osv_err_t *err)
{
    const osv_model_t *m = inf->m;
    symtab_t syms; /* only the used prefix is read: no need to clear 1 KiB per request */
    syms.n = 0;
    if (inf->n_out == 0) {
        for (uint32_t o = 0; o < m->n_out; o++)
            if (osv_infer_add_output(inf, o, err) != 0)
                return OSV_EINVAL;
    }
    for (uint32_t i = 0; i < m->n_in && m->outputs_symbolic; i++) {
        const osv_tensor_info_t *ti = &m->ort_in[m->in_ort[i]];
        for (int32_t d = 0; inf->in[i].declared && d < ti->rank && d < (int32_t)inf->in[i].ort_rank; d++)
            if (ti->dims[d] < 0 && ti->sym[d][0])
                sym_bind(&syms, ti->sym[d], inf->in[i].ort_dims[d]);
    }
    for (uint32_t k = 0; k < inf->n_out; k++) {
        infer_out_t *o = &inf->out[k];
        derive_output(inf, &syms, o);
        if (o->computable && o->ext && o->bytes > o->ext_cap) /* the caller's range: a bad parameter */
            return osv_err_set(err, OSV_EINVAL,
                               "output '%s' needs %" PRIu64 " bytes, the region has %" PRIu64,
                               m->out[o->idx].name, o->bytes, o->ext_cap);
        o->prebound = o->computable && !inf->opts.force_copy;
        o->in_slot = o->computable && !o->ext;
        if (o->in_slot && reserve(total, o->bytes, &o->off))
            return osv_err_set(err, OSV_EOVERFLOW, "response size overflows");
    }
    return 0;
}

/* Zero-byte tensors still need a valid, aligned data pointer. */
static _Alignas(64) uint8_t empty_tensor[64];

static void *slot_ptr(osv_infer_t *inf, uint64_t off, uint64_t len)
{
    void *p = NULL;
    if (len == 0)
        return empty_tensor;
    return osv_slot_range(&inf->slot, off, len, &p) == 0 ? p : NULL;
}

int osv_infer_prepare(osv_infer_t *inf, osv_err_t *err)
{
    uint64_t t0 = osv_now_ns(), total = 0;
    int rc;

    if (inf->prepared)
        return osv_err_set(err, OSV_EINVAL, "infer already prepared");
    if ((rc = check_batch(inf, err)) != 0 || (rc = plan_inputs(inf, &total, err)) != 0 ||
        (rc = plan_outputs(inf, &total, err)) != 0)
        return rc;
    if (total > 0) {
        if (!inf->opts.pool)
            return osv_err_set(err, OSV_EINVAL, "no pool to hold %" PRIu64 " request bytes", total);
        rc = osv_pool_acquire(inf->opts.pool, total, &inf->slot);
        if (rc == OSV_EBUSY)
            return osv_err_set(err, rc, "all request memory slots of %" PRIu64 "+ bytes are in use", total);
        if (rc == OSV_ETOOBIG)
            return osv_err_set(
                err, rc, "request needs %" PRIu64 " bytes of tensor memory, the largest slot is %" PRIu64,
                total, osv_pool_max_slot(inf->opts.pool));
        poison_redzones(inf);
    }
    for (uint32_t i = 0; i < inf->m->n_in; i++) {
        infer_in_t *in = &inf->in[i];
        if (!in->declared)
            continue;
        void *sent = in->in_slot ? slot_ptr(inf, in->off, in->bytes) : in->ext;
        if (in->external && in->in_slot && in->bytes) {
            memcpy(sent, in->ext, in->bytes); /* misaligned or forced: the counted fallback */
            osv_infer_note_copy(inf, in->reason, in->bytes);
        }
        in->data = in->convert ? slot_ptr(inf, in->conv_off, in->model_bytes) : sent;
    }
    for (uint32_t k = 0; k < inf->n_out; k++) {
        infer_out_t *o = &inf->out[k];
        if (o->computable)
            o->data = o->in_slot ? slot_ptr(inf, o->off, o->bytes) : o->ext;
    }
    for (uint32_t i = 0; inf->m->batch_dim && i < inf->m->n_in; i++) {
        if (inf->in[i].declared && inf->in[i].rank > 0) {
            inf->batch = (uint64_t)inf->in[i].dims[0];
            break;
        }
    }
    inf->prepared = 1;
    inf->ns[OSV_PHASE_COMPUTE_INPUT] += osv_now_ns() - t0;
    return 0;
}

int osv_infer_input_buffer(osv_infer_t *inf, uint32_t idx, void **ptr, uint64_t *len)
{
    infer_in_t *in = idx < inf->m->n_in ? &inf->in[idx] : NULL;
    if (!inf->prepared || !in || in->external)
        return OSV_EINVAL;
    *ptr = in->bytes ? slot_ptr(inf, in->off, in->bytes) : inf->slot.base;
    *len = in->bytes;
    return 0;
}

int osv_infer_input_dest(osv_infer_t *inf, uint32_t idx, void **ptr, uint64_t *len)
{
    infer_in_t *in = idx < inf->m->n_in ? &inf->in[idx] : NULL;
    if (!inf->prepared || !in || !in->declared)
        return OSV_EINVAL;
    if (!in->external)
        return osv_infer_input_buffer(inf, idx, ptr, len);
    if (in->in_slot) /* copied into the slot at prepare: bytes written to ext now would not be seen */
        return OSV_EINVAL;
    *ptr = in->bytes ? in->ext : empty_tensor;
    *len = in->bytes;
    return 0;
}

/* Reads element i of a numeric array as double / int64 / uint64 for conversion. */
typedef union num {
    double f;
    int64_t i;
    uint64_t u;
} num_t;

static num_t get_num(osv_dtype_t dt, const void *p, uint64_t i, int *kind)
{
    num_t n = {0};
    *kind = 1; /* 0 float, 1 signed, 2 unsigned */
    switch (dt) {
    case OSV_DTYPE_BOOL:
        n.i = ((const uint8_t *)p)[i] != 0;
        break;
    case OSV_DTYPE_UINT8:
        n.u = ((const uint8_t *)p)[i];
        *kind = 2;
        break;
    case OSV_DTYPE_UINT16:
        n.u = ((const uint16_t *)p)[i];
        *kind = 2;
        break;
    case OSV_DTYPE_UINT32:
        n.u = ((const uint32_t *)p)[i];
        *kind = 2;
        break;
    case OSV_DTYPE_UINT64:
        n.u = ((const uint64_t *)p)[i];
        *kind = 2;
        break;
    case OSV_DTYPE_INT8:
        n.i = ((const int8_t *)p)[i];
        break;
    case OSV_DTYPE_INT16:
        n.i = ((const int16_t *)p)[i];
        break;
    case OSV_DTYPE_INT32:
        n.i = ((const int32_t *)p)[i];
        break;
    case OSV_DTYPE_INT64:
        n.i = ((const int64_t *)p)[i];
        break;
    case OSV_DTYPE_FP16:
        n.f = osv_f16_to_f32(((const uint16_t *)p)[i]);
        *kind = 0;
        break;
    case OSV_DTYPE_BF16:
        n.f = osv_bf16_to_f32(((const uint16_t *)p)[i]);
        *kind = 0;
        break;
    case OSV_DTYPE_FP32:
        n.f = ((const float *)p)[i];
        *kind = 0;
        break;
    case OSV_DTYPE_FP64:
        n.f = ((const double *)p)[i];
        *kind = 0;
        break;
    default:
        break;
    }
    return n;
}

/* A float as an integer, saturating (NaN → 0): a cast out of range is undefined behaviour. */
static int64_t sat_i64(double f)
{
    if (isnan(f))
        return 0;
    if (f >= 0x1p63)
        return INT64_MAX;
    if (f < -0x1p63)
        return INT64_MIN;
    return (int64_t)f;
}

static void put_num(osv_dtype_t dt, void *p, uint64_t i, num_t n, int kind)
{
    double f = kind == 0 ? n.f : kind == 1 ? (double)n.i : (double)n.u;
    int64_t s = kind == 0 ? sat_i64(f) : kind == 1 ? n.i : (int64_t)n.u;
    switch (dt) {
    case OSV_DTYPE_BOOL:
        ((uint8_t *)p)[i] = f != 0;
        break;
    case OSV_DTYPE_UINT8:
        ((uint8_t *)p)[i] = (uint8_t)s;
        break;
    case OSV_DTYPE_UINT16:
        ((uint16_t *)p)[i] = (uint16_t)s;
        break;
    case OSV_DTYPE_UINT32:
        ((uint32_t *)p)[i] = (uint32_t)s;
        break;
    case OSV_DTYPE_UINT64:
        ((uint64_t *)p)[i] = kind == 2 ? n.u : (uint64_t)s;
        break;
    case OSV_DTYPE_INT8:
        ((int8_t *)p)[i] = (int8_t)s;
        break;
    case OSV_DTYPE_INT16:
        ((int16_t *)p)[i] = (int16_t)s;
        break;
    case OSV_DTYPE_INT32:
        ((int32_t *)p)[i] = (int32_t)s;
        break;
    case OSV_DTYPE_INT64:
        ((int64_t *)p)[i] = s;
        break;
    case OSV_DTYPE_FP16:
        ((uint16_t *)p)[i] = osv_f32_to_f16((float)f);
        break;
    case OSV_DTYPE_BF16:
        ((uint16_t *)p)[i] = osv_f32_to_bf16((float)f);
        break;
    case OSV_DTYPE_FP32:
        ((float *)p)[i] = (float)f;
        break;
    case OSV_DTYPE_FP64:
        ((double *)p)[i] = f;
        break;
    default:
        break;
    }
}

/* Converts a numeric input into the model's datatype (opt-in per model; saturating casts are the
 * caller's business, as in numpy's astype). */
static void convert_input(osv_infer_t *inf, uint32_t idx)
{
    infer_in_t *in = &inf->in[idx];
    const void *src = in->in_slot ? slot_ptr(inf, in->off, in->bytes) : in->ext;
    osv_dtype_t to = inf->m->in[idx].dtype;
    for (uint64_t i = 0; i < in->count; i++) {
        int kind;
        num_t n = get_num(in->dtype, src, i, &kind);
        put_num(to, in->data, i, n, kind);
    }
    osv_infer_note_copy(inf, OSV_COPY_CONVERSION, in->model_bytes);
}

/* Builds an ORT string tensor from Triton's serialized BYTES (u32 LE length + bytes, repeated). */
static int bytes_input(osv_infer_t *inf, uint32_t idx, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    infer_in_t *in = &inf->in[idx];
    const char *name = inf->m->in[idx].name;
    const uint8_t *p = in->data, *end = p + in->bytes;
    int rc = osv_ort_status(api->CreateTensorAsOrtValue(inf->m->env->allocator, in->ort_dims, in->ort_rank,
                                                        ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, &in->value),
                            err, "creating a string tensor");
    for (uint64_t i = 0; !rc && i < in->count; i++) {
        uint32_t len;
        char *dst;
        if (end - p < 4)
            return osv_err_set(err, OSV_EPARSE, "input '%s': BYTES element %" PRIu64 " has no length prefix",
                               name, i);
        memcpy(&len, p, 4); /* little-endian wire format; ortserve targets little-endian hosts */
        p += 4;
        if ((uint64_t)(end - p) < len)
            return osv_err_set(err, OSV_EPARSE,
                               "input '%s': BYTES element %" PRIu64 " is %u bytes long but only %td remain",
                               name, i, len, end - p);
        if (len > inf->m->cfg.limits.max_string_bytes)
            return osv_err_set(err, OSV_ELIMIT,
                               "input '%s': BYTES element %" PRIu64 " exceeds %" PRIu64 " bytes", name, i,
                               inf->m->cfg.limits.max_string_bytes);
        rc = osv_ort_status(api->GetResizedStringTensorElementBuffer(in->value, i, len, &dst), err,
                            "string element");
        if (!rc && len)
            memcpy(dst, p, len);
        p += len;
    }
    if (!rc && p != end)
        return osv_err_set(err, OSV_EPARSE,
                           "input '%s': %td bytes left over after %" PRIu64 " BYTES elements", name, end - p,
                           in->count);
    if (!rc)
        osv_infer_note_copy(inf, OSV_COPY_BYTES, in->bytes);
    return rc;
}

static int make_values(osv_infer_t *inf, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    OrtMemoryInfo *ci = inf->m->env->cpu_info;
    int rc;
    inf->n_run_in = 0;
    for (uint32_t i = 0; i < inf->m->n_in; i++) {
        infer_in_t *in = &inf->in[i];
        if (!in->declared)
            continue;
        if (in->dtype == OSV_DTYPE_BYTES) {
            if ((rc = bytes_input(inf, i, err)) != 0)
                return rc;
        } else {
            if (in->convert)
                convert_input(inf, i);
            rc = osv_ort_status(api->CreateTensorWithDataAsOrtValue(
                                    ci, in->data, in->model_bytes, in->ort_dims, in->ort_rank,
                                    (ONNXTensorElementDataType)inf->m->in[i].ort_type, &in->value),
                                err, "binding an input");
            if (rc)
                return rc;
        }
        inf->in_names[inf->n_run_in] = inf->m->in_names[i];
        inf->in_vals[inf->n_run_in++] = in->value;
        osv_stats_record_bind(inf->m->stats, OSV_DIR_INPUT, in->reason, 0);
        note_fallback(inf, in->reason);
    }
    for (uint32_t k = 0; k < inf->n_out; k++) {
        infer_out_t *o = &inf->out[k];
        inf->out_vals[k] = NULL;
        if (!o->prebound)
            continue;
        rc = osv_ort_status(api->CreateTensorWithDataAsOrtValue(
                                ci, o->data, o->bytes, o->dims, o->rank,
                                (ONNXTensorElementDataType)inf->m->out[o->idx].ort_type, &o->value),
                            err, "binding an output");
        if (rc)
            return rc;
        inf->out_vals[k] = o->value;
    }
    return 0;
}

/* For ORT calls that cannot fail in practice (flag setters): release a status if one comes back. */
static void drop_status(OrtStatus *st)
{
    if (st)
        osv_ort->ReleaseStatus(st);
}

static bool claim_run(osv_infer_t *inf)
{
    int s = ST_IDLE;
    return atomic_compare_exchange_strong(&inf->state, &s, ST_RUNNING);
}

/* Ends the RUNNING state; returns true when a cancel arrived during the run. */
static bool finish_run(osv_infer_t *inf, OrtRunOptions *ro)
{
    int s = ST_RUNNING;
    if (atomic_compare_exchange_strong(&inf->state, &s, ST_DONE))
        return false;
    while (atomic_load(&inf->state) == ST_CANCELING)
        ; /* the canceller is between its CAS and RunOptionsSetTerminate: nanoseconds */
    drop_status(osv_ort->RunOptionsUnsetTerminate(ro));
    return true;
}

/* An instance for this run: a free one when there is (the scheduler runs no more of a model at once
 * than it has instances); otherwise the next in turn (ORT sessions take concurrent runs). Returns its
 * index, with *bit set when it was marked busy. */
static uint32_t instance_acquire(osv_model_t *m, bool *bit)
{
    uint32_t n = m->n_instances ? m->n_instances : 1;
    uint64_t mask = n >= OSV_MAX_INSTANCE_BITS ? ~0ull : (1ull << n) - 1;
    uint64_t busy = atomic_load_explicit(&m->busy, memory_order_relaxed);
    *bit = false;
    while (n > 1) {
        uint64_t free_bits = ~busy & mask;
        if (!free_bits)
            return atomic_fetch_add_explicit(&m->next_instance, 1, memory_order_relaxed) % n;
        uint32_t i = (uint32_t)__builtin_ctzll(free_bits);
        if (atomic_compare_exchange_weak_explicit(&m->busy, &busy, busy | (1ull << i), memory_order_acquire,
                                                  memory_order_relaxed)) {
            *bit = true;
            return i;
        }
    }
    return 0;
}

static void instance_release(osv_model_t *m, uint32_t i, bool bit)
{
    if (bit)
        atomic_fetch_and_explicit(&m->busy, ~(1ull << i), memory_order_release);
}

static int run_once(osv_infer_t *inf, OrtRunOptions *ro, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    osv_model_t *m = inf->m;
    bool bit;
    uint32_t i = instance_acquire(m, &bit);
    OrtStatus *st = api->Run(m->sessions ? m->sessions[i] : m->session, ro, inf->in_names,
                             (const OrtValue *const *)inf->in_vals, inf->n_run_in, inf->out_names, inf->n_out,
                             inf->out_vals);
    instance_release(m, i, bit);
    return osv_ort_status(st, err, "ONNX Runtime");
}

/* ORT rejected a Run with pre-created outputs. A declared shape can be wrong — symbolic names that
 * mislead, or fixed shapes recorded from one example of a data-dependent op — so retry once with
 * ORT allocating those outputs; read_output() then learns which pre-sizing was really wrong. */
static bool drop_prebound(osv_infer_t *inf)
{
    bool any = false;
    for (uint32_t k = 0; k < inf->n_out; k++) {
        infer_out_t *o = &inf->out[k];
        if (o->prebound) {
            osv_ort->ReleaseValue(o->value);
            o->value = inf->out_vals[k] = NULL;
            o->prebound = 0;
            o->retried = 1;
            any = true;
        }
    }
    return any;
}

/* After a successful retry: an output whose real shape differs from the pre-sized one must not be
 * pre-sized again (for this model, from now on). A request that failed for its own reasons never
 * gets here, so bad input cannot switch zero-copy off. */
static void learn_shape(osv_infer_t *inf, const infer_out_t *o, const int64_t *dims, uint32_t rank)
{
    if (!o->retried)
        return;
    if (rank != o->rank || memcmp(dims, o->dims, rank * sizeof *dims) != 0)
        atomic_store_explicit(&inf->m->derive_broken[o->idx], 1, memory_order_relaxed);
}

static int read_output(osv_infer_t *inf, infer_out_t *o, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    const osv_tensor_info_t *ti = &inf->m->out[o->idx];
    OrtTensorTypeAndShapeInfo *tsi = NULL;
    int64_t real[OSV_MAX_DIMS];
    size_t rank = 0;
    void *data = NULL;
    int rc;

    if (o->prebound) {
        o->reason = OSV_COPY_NONE;
        goto done;
    }
    rc = osv_ort_status(api->GetTensorTypeAndShape(o->value, &tsi), err, "output shape");
    if (!rc)
        rc = osv_ort_status(api->GetDimensionsCount(tsi, &rank), err, "output rank");
    if (!rc && rank > OSV_MAX_DIMS)
        rc = osv_err_set(err, OSV_EUNSUPPORTED, "output '%s' has rank %zu", ti->name, rank);
    if (!rc)
        rc = osv_ort_status(api->GetDimensions(tsi, real, rank), err, "output dims");
    if (tsi)
        api->ReleaseTensorTypeAndShapeInfo(tsi);
    if (rc)
        return rc;
    learn_shape(inf, o, real, (uint32_t)rank);
    o->rank = (uint32_t)rank;
    memcpy(o->dims, real, rank * sizeof *real);
    if ((rc = osv_shape_size(o->dims, o->rank, ti->dtype, NULL, &o->count, &o->bytes, err)) != 0)
        return rc;
    if (ti->dtype == OSV_DTYPE_BYTES) {
        size_t chars = 0;
        if ((rc = osv_ort_status(api->GetStringTensorDataLength(o->value, &chars), err, "string output")) !=
            0)
            return rc;
        o->bytes = chars + 4 * o->count;
        o->reason = OSV_COPY_BYTES;
        o->data = NULL;
        goto done;
    }
    if ((rc = osv_ort_status(api->GetTensorMutableData(o->value, &data), err, "output data")) != 0)
        return rc;
    o->reason = inf->opts.force_copy ? OSV_COPY_FORCED : OSV_COPY_ORT_ALLOCATED;
    if (o->ext || (o->in_slot && inf->opts.force_copy)) {
        void *dst = o->ext ? o->ext : o->data;
        uint64_t cap = o->ext ? o->ext_cap : o->bytes;
        if (o->bytes > cap)
            return osv_err_set(err, OSV_EINVAL,
                               "output '%s' is %" PRIu64 " bytes, the destination holds %" PRIu64, ti->name,
                               o->bytes, cap);
        if (o->bytes)
            memcpy(dst, data, o->bytes);
        osv_infer_note_copy(inf, o->reason, o->bytes);
        o->data = dst;
    } else {
        o->data = data;
    }
done:
    osv_stats_record_bind(inf->m->stats, OSV_DIR_OUTPUT, o->reason, 0);
    note_fallback(inf, o->reason);
    return 0;
}

int osv_infer_run(osv_infer_t *inf, osv_err_t *err)
{
    osv_model_t *m = inf->m;
    OrtRunOptions *ro;
    uint64_t t0 = osv_now_ns(), t1;
    bool canceled;
    int rc;

    if (!inf->prepared || inf->ran)
        return osv_err_set(err, OSV_EINVAL, "infer not prepared, or already run");
    inf->ran = 1;
    if ((rc = make_values(inf, err)) != 0)
        return rc;
    if (!(ro = osv_env_run_options(m->env)))
        return osv_err_set(err, OSV_ENOMEM, "cannot create ORT run options");
    atomic_store(&inf->ro, ro);
    if (!claim_run(inf))
        return osv_err_set(err, OSV_ECANCELED, "canceled before the model ran");
    t1 = osv_now_ns();
    inf->ns[OSV_PHASE_COMPUTE_INPUT] += t1 - t0;
    rc = run_once(inf, ro, err);
    if (rc && rc != OSV_ECANCELED && atomic_load(&inf->state) == ST_RUNNING && drop_prebound(inf))
        rc = run_once(inf, ro, err);
    canceled = finish_run(inf, ro);
    inf->ns[OSV_PHASE_COMPUTE_INFER] = osv_now_ns() - t1;
    if (canceled) {
        osv_stats_add_canceled(m->stats);
        if (rc)
            return osv_err_set(err, OSV_ECANCELED, "the run was canceled (deadline)");
    }
    if (rc)
        return rc;
    for (uint32_t k = 0; k < inf->n_out; k++) {
        infer_out_t *o = &inf->out[k];
        o->value = inf->out_vals[k];
        if ((rc = read_output(inf, o, err)) != 0)
            return rc;
    }
    /* Triton's inference_count / execution_count: successful inferences and executions only. */
    osv_stats_record_exec(m->stats, inf->batch);
    osv_stats_record_batch(m->stats, inf->batch, inf->ns[OSV_PHASE_COMPUTE_INPUT], inf->ns[OSV_PHASE_COMPUTE_INFER],
                           0);
    return 0;
}

static void release_values(osv_infer_t *inf)
{
    const OrtApi *api = osv_ort;
    for (uint32_t i = 0; i < inf->m->n_in; i++) {
        if (inf->in[i].value)
            api->ReleaseValue(inf->in[i].value);
        inf->in[i].value = inf->in_vals[i] = NULL;
    }
    inf->n_run_in = 0;
    for (uint32_t k = 0; k < inf->n_out; k++) {
        if (inf->out[k].value)
            api->ReleaseValue(inf->out[k].value);
        inf->out[k].value = inf->out_vals[k] = NULL;
    }
}

int osv_infer_rearm(osv_infer_t *inf)
{
    int s = ST_DONE;
    if (!inf->ran)
        return 0;
    if (!atomic_compare_exchange_strong(&inf->state, &s, ST_IDLE) && s != ST_IDLE)
        return OSV_ECANCELED; /* canceled stays canceled */
    release_values(inf);
    for (uint32_t k = 0; k < inf->n_out; k++) {
        infer_out_t *o = &inf->out[k];
        o->prebound = o->computable && !inf->opts.force_copy;
        if (o->computable)
            o->data = o->in_slot ? slot_ptr(inf, o->off, o->bytes) : o->ext;
    }
    inf->ran = 0;
    return 0;
}

void osv_infer_cancel(osv_infer_t *inf)
{
    int s = atomic_load(&inf->state);
    for (;;) {
        if (s == ST_IDLE) {
            if (atomic_compare_exchange_weak(&inf->state, &s, ST_CANCELED))
                return;
        } else if (s == ST_RUNNING) {
            if (atomic_compare_exchange_weak(&inf->state, &s, ST_CANCELING)) {
                drop_status(osv_ort->RunOptionsSetTerminate(atomic_load(&inf->ro)));
                atomic_store(&inf->state, ST_CANCELED);
                return;
            }
        } else {
            return;
        }
    }
}

bool osv_infer_canceled(const osv_infer_t *inf)
{
    int s = atomic_load(&((osv_infer_t *)inf)->state);
    return s == ST_CANCELED || s == ST_CANCELING;
}

bool osv_infer_running(const osv_infer_t *inf)
{
    return atomic_load(&((osv_infer_t *)inf)->state) == ST_RUNNING;
}

uint32_t osv_infer_output_count(const osv_infer_t *inf)
{
    return inf->n_out;
}

int osv_infer_output_view(osv_infer_t *inf, uint32_t k, osv_tensor_view_t *v, osv_err_t *err)
{
    const infer_out_t *o;
    if (k >= inf->n_out || !inf->ran)
        return osv_err_set(err, OSV_EINVAL, "no output %u", k);
    o = &inf->out[k];
    memset(v, 0, sizeof *v);
    v->name = inf->m->out[o->idx].name;
    v->dtype = inf->m->out[o->idx].dtype;
    osv_model_client_output_shape(inf->m, o->idx, o->dims, o->rank, v->dims, &v->rank);
    v->count = o->count;
    v->data = o->data;
    v->bytes = o->bytes;
    v->binding = o->reason;
    return 0;
}

int osv_infer_output_bytes(osv_infer_t *inf, uint32_t k, void *dst, uint64_t cap, osv_err_t *err)
{
    const OrtApi *api = osv_ort;
    infer_out_t *o = k < inf->n_out ? &inf->out[k] : NULL;
    OrtValue *val = o ? (o->src_value ? o->src_value : o->value) : NULL;
    uint64_t e0 = o ? o->src_elem0 : 0;
    uint8_t *p = dst;
    if (o && inf->ran && o->serialized) { /* kept in Triton's serialized form already */
        if (cap < o->bytes)
            return osv_err_set(err, OSV_ETOOBIG, "BYTES output needs %" PRIu64 " bytes", o->bytes);
        if (o->bytes)
            memcpy(dst, o->data, o->bytes);
        osv_infer_note_copy(inf, OSV_COPY_BYTES, o->bytes);
        return 0;
    }
    if (!o || !inf->ran || inf->m->out[o->idx].dtype != OSV_DTYPE_BYTES || !val)
        return osv_err_set(err, OSV_EINVAL, "output %u is not a BYTES output of a finished run", k);
    if (cap < o->bytes)
        return osv_err_set(err, OSV_ETOOBIG, "BYTES output needs %" PRIu64 " bytes", o->bytes);
    for (uint64_t i = 0; i < o->count; i++) {
        size_t len = 0;
        uint32_t l32;
        int rc = osv_ort_status(api->GetStringTensorElementLength(val, e0 + i, &len), err, "string output");
        if (!rc && (uint64_t)(p - (uint8_t *)dst) + 4 + len > cap)
            rc = osv_err_set(err, OSV_ETOOBIG, "BYTES output grew while reading");
        if (!rc && len > UINT32_MAX)
            rc = osv_err_set(err, OSV_ETOOBIG, "BYTES element over 4 GiB");
        if (rc)
            return rc;
        l32 = (uint32_t)len;
        memcpy(p, &l32, 4);
        if (len &&
            (rc = osv_ort_status(api->GetStringTensorElement(val, len, e0 + i, p + 4), err, "string output")))
            return rc;
        p += 4 + len;
    }
    osv_infer_note_copy(inf, OSV_COPY_BYTES, o->bytes);
    return 0;
}

uint64_t osv_infer_copied(const osv_infer_t *inf)
{
    return inf->copied;
}

osv_copy_reason_t osv_infer_fallback(const osv_infer_t *inf)
{
    return inf->fallback;
}

uint64_t osv_infer_batch(const osv_infer_t *inf)
{
    return inf->batch;
}

uint64_t osv_infer_ns(const osv_infer_t *inf, osv_phase_t p)
{
    return (unsigned)p < OSV_PHASE_COUNT ? inf->ns[p] : 0;
}

const void *osv_infer_bound_input_ptr(const osv_infer_t *inf, uint32_t idx)
{
    void *p = NULL;
    if (idx >= inf->m->n_in || !inf->in[idx].value || inf->in[idx].dtype == OSV_DTYPE_BYTES)
        return NULL;
    if (osv_ort->GetTensorMutableData(inf->in[idx].value, &p) != NULL)
        return NULL;
    return p;
}

void osv_infer_fini(osv_infer_t *inf)
{
    if (!inf)
        return;
    if (inf->borrow_release) {
        void (*fn)(void *) = inf->borrow_release;
        inf->borrow_release = NULL;
        fn(inf->borrow_ud);
    }
    release_values(inf);
    if (inf->slot.base && inf->opts.pool)
        osv_pool_release(inf->opts.pool, &inf->slot);
}

/* ---- batches: a request's inputs read in place, its outputs adopted from a batch's rows ------------- */

int osv_infer_input_info(const osv_infer_t *inf, uint32_t idx, osv_infer_input_info_t *info)
{
    const infer_in_t *in = idx < inf->m->n_in ? &inf->in[idx] : NULL;
    if (!in || !in->declared)
        return OSV_EINVAL;
    info->dtype = in->dtype;
    info->rank = in->rank;
    info->dims = in->dims;
    info->bytes = in->bytes;
    info->convert = in->convert != 0;
    if (!inf->prepared) {
        info->data = NULL;
        return 0;
    }
    info->data = in->in_slot ? slot_ptr((osv_infer_t *)inf, in->off, in->bytes) : in->ext;
    return info->data || !in->bytes ? 0 : OSV_EINVAL;
}

uint32_t osv_infer_output_index(const osv_infer_t *inf, uint32_t k)
{
    return k < inf->n_out ? inf->out[k].idx : UINT32_MAX;
}

/* The k-th requested output of `batch` that is model output idx, or NULL. */
static const infer_out_t *batch_output(const osv_infer_t *batch, uint32_t idx)
{
    for (uint32_t k = 0; k < batch->n_out; k++)
        if (batch->out[k].idx == idx)
            return &batch->out[k];
    return NULL;
}

/* Serialized size of BYTES elements [e0, e0 + n) of a string tensor: a 4-byte length each plus the bytes. */
static int string_rows_size(OrtValue *v, uint64_t e0, uint64_t n, uint64_t *bytes, osv_err_t *err)
{
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = 0;
        int rc = osv_ort_status(osv_ort->GetStringTensorElementLength(v, e0 + i, &len), err, "string output");
        if (rc)
            return rc;
        total += 4 + (uint64_t)len;
    }
    *bytes = total;
    return 0;
}

/* Output o of a member takes rows [row0, row0 + rows) of the batch's output b. */
static int adopt_output(osv_infer_t *inf, infer_out_t *o, const infer_out_t *b, uint64_t row0, uint64_t rows,
                        osv_err_t *err)
{
    const osv_tensor_info_t *ti = &inf->m->out[o->idx];
    uint64_t per_row, size = osv_dtype_size(ti->dtype);
    if (b->rank < 1 || b->dims[0] < 0 || (uint64_t)b->dims[0] < row0 + rows)
        return osv_err_set(err, OSV_EORT,
                           "output '%s' has %" PRId64 " rows, not one per row of the batch (%" PRIu64 ")",
                           ti->name, b->rank ? b->dims[0] : 0, row0 + rows);
    per_row = b->dims[0] ? b->count / (uint64_t)b->dims[0] : 0;
    o->rank = b->rank;
    memcpy(o->dims, b->dims, b->rank * sizeof *b->dims);
    o->dims[0] = (int64_t)rows;
    o->count = per_row * rows;
    o->reason = b->reason;
    if (ti->dtype == OSV_DTYPE_BYTES) {
        o->src_value = b->value;
        o->src_elem0 = per_row * row0;
        o->data = NULL;
        return string_rows_size(b->value, o->src_elem0, o->count, &o->bytes, err);
    }
    o->bytes = o->count * size;
    o->data = (uint8_t *)b->data + per_row * row0 * size;
    if (o->ext) { /* a shared-memory destination: the rows are copied there (counted) */
        if (o->bytes > o->ext_cap)
            return osv_err_set(err, OSV_EINVAL, "output '%s' is %" PRIu64 " bytes, the destination holds %" PRIu64,
                               ti->name, o->bytes, o->ext_cap);
        if (o->bytes)
            memcpy(o->ext, o->data, o->bytes);
        osv_infer_note_copy(inf, OSV_COPY_BATCH, o->bytes);
        o->data = o->ext;
    }
    return 0;
}

int osv_infer_adopt_rows(osv_infer_t *inf, const osv_infer_t *batch, uint64_t row0, uint64_t rows,
                         void (*release)(void *ud), void *ud, osv_err_t *err)
{
    int rc = 0;
    if (!inf->prepared || inf->ran || !batch->ran || inf->m != batch->m)
        return osv_err_set(err, OSV_EINVAL, "rows can only be adopted by a prepared request from its model's batch");
    inf->ran = 1;
    inf->borrow_release = release;
    inf->borrow_ud = ud;
    atomic_store(&inf->state, ST_DONE);
    for (uint32_t k = 0; k < inf->n_out && !rc; k++) {
        infer_out_t *o = &inf->out[k];
        const infer_out_t *b = batch_output(batch, o->idx);
        rc = b ? adopt_output(inf, o, b, row0, rows, err)
               : osv_err_set(err, OSV_EINVAL, "output '%s' is not in the batch", inf->m->out[o->idx].name);
        if (!rc) {
            osv_stats_record_bind(inf->m->stats, OSV_DIR_OUTPUT, o->reason, 0);
            note_fallback(inf, o->reason);
        }
    }
    inf->ns[OSV_PHASE_COMPUTE_INFER] = batch->ns[OSV_PHASE_COMPUTE_INFER];
    return rc;
}

int osv_infer_adopt_views(osv_infer_t *inf, const osv_tensor_view_t *views, uint32_t n, void (*release)(void *ud),
                          void *ud, osv_err_t *err)
{
    if (!inf->prepared || inf->ran || n != inf->n_out)
        return osv_err_set(err, OSV_EINVAL, "views can only be adopted by a prepared request, one per output");
    inf->ran = 1;
    inf->borrow_release = release;
    inf->borrow_ud = ud;
    atomic_store(&inf->state, ST_DONE);
    for (uint32_t k = 0; k < n; k++) {
        infer_out_t *o = &inf->out[k];
        const osv_tensor_view_t *v = &views[k];
        o->rank = v->rank;
        memcpy(o->dims, v->dims, v->rank * sizeof *v->dims);
        o->count = v->count;
        o->bytes = v->bytes;
        o->data = v->data;
        o->reason = OSV_COPY_NONE;
        o->serialized = v->dtype == OSV_DTYPE_BYTES;
        if (o->ext && !o->serialized) { /* a shared-memory destination: copied there (counted) */
            if (o->bytes > o->ext_cap)
                return osv_err_set(err, OSV_EINVAL,
                                   "output '%s' is %" PRIu64 " bytes, the destination holds %" PRIu64,
                                   inf->m->out[o->idx].name, o->bytes, o->ext_cap);
            if (o->bytes)
                memcpy(o->ext, o->data, o->bytes);
            osv_infer_note_copy(inf, OSV_COPY_CACHE, o->bytes);
            o->data = o->ext;
        }
    }
    return 0;
}
