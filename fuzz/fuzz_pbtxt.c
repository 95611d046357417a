/* fuzz_pbtxt.c — a model's config.pbtxt: the protobuf text-format reader (src/util/pbtxt.c) under small
 * limits and under the defaults.
 *
 * Invariants beyond "does not crash": a successful parse is a well-formed tree (every child index in
 * range and after its parent, counts equal to the linked children, positions inside the text, string
 * values NUL-terminated within the limit); an error names a position inside the text (or none); the
 * same text under limits at least as large parses the same way; nothing leaks. */
#include <string.h>

#include "ortserve/alloc.h"
#include "support/fuzz.h"
#include "util/pbtxt.h"

static void check_tree(const osv_pbtxt_doc_t *d, const osv_pbtxt_limits_t *lim, size_t size)
{
    FZ_CHECK(d->n >= 1 && d->n <= lim->max_fields, "%u fields", d->n);
    for (uint32_t i = 0; i < d->n; i++) {
        const osv_pbtxt_field_t *f = &d->fields[i];
        uint32_t seen = 0;
        FZ_CHECK(i == 0 || (f->line >= 1 && f->col >= 1 && f->line <= size + 1), "field %u at %u:%u", i, f->line,
                 f->col);
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
    return 0;
}
