/* fuzz_pbtxt.c — a model's config.pbtxt: the protobuf text-format reader (src/util/pbtxt.c) under small
 * limits and under the defaults, then Triton's ModelConfig mapping (src/core/tconfig.c) and its
 * completion against a model (src/core/tcomplete.c), applied to three models built in memory as ORT
 * would describe them (support/fake_model.c): a batchable MLP, an image classifier with a fixed batch
 * of 1, a model with a scalar input and a BYTES output, and one with an initializer a request may
 * override (listed in a config only as an `optional` input, with max_batch_size 0).
 *
 * Invariants beyond "does not crash": a successful parse is a well-formed tree (every child index in
 * range and after its parent, counts equal to the linked children, positions inside the text, string
 * values NUL-terminated within the limit); an error names a position inside the text (or none); the
 * same text under limits at least as large parses the same way; nothing leaks; a completed config is
 * coherent (max_batch_size within its range, a datatype and at most 16 dims per tensor, a client
 * view with the batch dim when batching, instances between 1 and the limit, preferred batch sizes
 * within max_batch_size). */
#include <string.h>

#include "ortserve/alloc.h"
#include "support/fuzz.h"
#include "util/pbtxt.h"
#include "support/fake_model.h"

static void check_tree(const osv_pbtxt_doc_t *d, const osv_pbtxt_limits_t *lim, size_t size)
{
    FZ_CHECK(d->n >= 1 && d->n <= lim->max_fields, "%u fields", d->n);
    for (uint32_t i = 0; i < d->n; i++) {
        const osv_pbtxt_field_t *f = &d->fields[i];
        uint32_t seen = 0;
        FZ_CHECK(i == 0 || (f->line >= 1 && f->col >= 1 && f->line <= size + 1), "field %u at %u:%u", i,
                 f->line, f->col);
        if (f->kind == OSV_PBTXT_STRING) {
            FZ_CHECK(f->len <= lim->max_string && f->text[f->len] == '\0', "string of %u bytes", f->len);
            continue;
        }
        if (f->kind == OSV_PBTXT_SCALAR) {
            FZ_CHECK(f->len >= 1 && f->len <= size, "scalar of %u bytes", f->len);
            continue;
        }
        FZ_CHECK(f->kind == OSV_PBTXT_MESSAGE, "field %u of kind %d", i, f->kind);
        for (int32_t c = f->first; c >= 0; c = d->fields[c].next, seen++)
            FZ_CHECK((uint32_t)c > i && (uint32_t)c < d->n && seen < d->n, "child %d of %u", c, i);
        FZ_CHECK(seen == f->count, "field %u: %u children linked, count %u", i, seen, f->count);
    }
}

static int parse_checked(const uint8_t *data, size_t size, const osv_pbtxt_limits_t *lim, osv_pbtxt_doc_t *d)
{
    osv_pbtxt_err_t err;
    int rc = osv_pbtxt_parse((const char *)data, size, lim, d, &err);
    if (rc == 0) {
        check_tree(d, lim, size);
    } else {
        FZ_CHECK(d->n == 0 && !d->fields && err.msg[0], "error without a message or with fields kept");
        FZ_CHECK(err.line <= size + 1, "error at line %u of a %zu-byte text", err.line, size);
    }
    return rc;
}

static const fz_fake_t fakes[] = {
    {"mlp", 1, 1, {{"x", OSV_DTYPE_FP32, 2, {-1, 64}}, {"probs", OSV_DTYPE_FP32, 2, {-1, 10}}}},
    {"densenet",
     1,
     1,
     {{"data_0", OSV_DTYPE_FP32, 4, {1, 3, 224, 224}}, {"fc6_1", OSV_DTYPE_FP32, 2, {1, 1000}}}},
    {"text",
     2,
     1,
     {{"ids", OSV_DTYPE_INT64, 2, {-1, -1}},
      {"scale", OSV_DTYPE_FP32, 0, {0}},
      {"label", OSV_DTYPE_BYTES, 1, {-1}}}},
    {"defaults", /* w: an initializer a request may override (an `optional` input) */
     1,
     1,
     {{"x", OSV_DTYPE_FP32, 2, {-1, 4}}, {"y", OSV_DTYPE_FP32, 2, {-1, 4}}, {"w", OSV_DTYPE_FP32, 1, {4}}},
     1},
};

static void check_completed(const osv_model_t *m)
{
    const osv_triton_config_t *c = osv_model_triton_config(m);
    FZ_CHECK(c->max_batch_size >= 0 && c->max_batch_size == osv_model_max_batch_size(m), "max_batch_size %d",
             c->max_batch_size);
    FZ_CHECK(c->n_input == m->n_in && c->n_output == m->n_out, "%u/%u tensors, view %u/%u", c->n_input,
             c->n_output, m->n_in, m->n_out);
    for (uint32_t i = 0; i < m->n_in + m->n_out; i++) {
        const osv_tensor_info_t *t = i < m->n_in ? &m->in[i] : &m->out[i - m->n_in];
        const osv_tc_tensor_t *ct = i < m->n_in ? &c->input[i] : &c->output[i - m->n_in];
        FZ_CHECK(ct->dtype > OSV_DTYPE_INVALID && ct->dtype < OSV_DTYPE_COUNT && ct->rank <= OSV_MAX_DIMS,
                 "tensor %u: dtype %d rank %u", i, ct->dtype, ct->rank);
        FZ_CHECK(t->rank <= OSV_MAX_DIMS && (c->max_batch_size == 0 || (t->rank >= 1 && t->dims[0] == -1)),
                 "tensor %u: view rank %d", i, t->rank);
    }
    for (uint32_t i = 0; i < m->n_in; i++) /* an initializer is served only as optional, without batching */
        FZ_CHECK(!osv_model_input_has_default(m, i) || (m->in[i].optional && c->max_batch_size == 0),
                 "input %u: initializer %u served as required or batched", i, m->in_ort[i]);
    FZ_CHECK(m->n_instances >= 1 && m->n_instances <= m->lo.max_instances * 64, "%u instances",
             m->n_instances);
    for (uint32_t i = 0; i < c->dynamic_batching.n_preferred; i++)
        FZ_CHECK(c->max_batch_size == 0 || c->dynamic_batching.preferred_batch_size[i] <= c->max_batch_size,
                 "preferred %d", c->dynamic_batching.preferred_batch_size[i]);
}

/* The mapping and its completion, as a load applies them. */
static void map_onto(const fz_fake_t *f, const uint8_t *data, size_t size)
{
    osv_model_t *m = fz_fake_model(f, (const uint8_t *)"", 0);
    osv_err_t err;
    if (fz_fake_configure(m, data, size, &err) == 0)
        check_completed(m);
    else
        FZ_CHECK(err.code < 0 && err.msg[0], "an error without a code or a message");
    osv_model_release(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    osv_pbtxt_limits_t small = {.max_bytes = 4096, .max_depth = 4, .max_string = 16, .max_fields = 64}, def;
    osv_pbtxt_doc_t a, b;
    uint64_t live = osv_alloc_live();
    osv_pbtxt_limits_default(&def);
    if (size > def.max_bytes)
        return 0;
    int rs = parse_checked(data, size, &small, &a);
    int rd = parse_checked(data, size, &def, &b);
    /* Whatever parses under the small limits parses under the larger ones into the same tree. */
    if (rs == 0) {
        FZ_CHECK(rd == 0 && a.n == b.n, "small limits: %u fields; defaults: rc %d, %u fields", a.n, rd, b.n);
        for (uint32_t i = 0; i < a.n; i++)
            FZ_CHECK(a.fields[i].kind == b.fields[i].kind && a.fields[i].count == b.fields[i].count &&
                         a.fields[i].len == b.fields[i].len,
                     "field %u differs", i);
    }
    osv_pbtxt_free(&a);
    osv_pbtxt_free(&b);
    FZ_CHECK(osv_alloc_live() == live, "the reader leaked %llu blocks",
             (unsigned long long)(osv_alloc_live() - live));
    if (rd == 0)
        for (size_t i = 0; i < sizeof fakes / sizeof *fakes; i++)
            map_onto(&fakes[i], data, size);
    FZ_CHECK(osv_alloc_live() == live, "the mapping leaked %llu blocks",
             (unsigned long long)(osv_alloc_live() - live));
    return 0;
}
