/* test_pbtxt.c — cmocka unit tests for util/pbtxt, the protobuf text-format reader: the forms
 * Triton's documentation writes config.pbtxt in, string escapes, scalar conversions and their ranges,
 * errors with their line and column, and every limit (size, depth, string length, field count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ortserve/alloc.h"
#include "util/pbtxt.h"

typedef struct parsed {
    osv_pbtxt_doc_t doc;
    osv_pbtxt_err_t err;
    int rc;
} parsed_t;

static parsed_t P;

static parsed_t *parse_lim(const char *s, const osv_pbtxt_limits_t *lim)
{
    osv_pbtxt_free(&P.doc);
    P.rc = osv_pbtxt_parse(s, strlen(s), lim, &P.doc, &P.err);
    return &P;
}

static parsed_t *parse(const char *s)
{
    return parse_lim(s, NULL);
}

static const osv_pbtxt_field_t *F(int32_t i)
{
    assert_true(i >= 0 && (uint32_t)i < P.doc.n);
    return &P.doc.fields[i];
}

/* The k-th child of field `parent`. */
static const osv_pbtxt_field_t *child(const osv_pbtxt_field_t *parent, uint32_t k)
{
    int32_t i = parent->first;
    assert_true(k < parent->count);
    while (k--)
        i = F(i)->next;
    return F(i);
}

static void assert_name(const osv_pbtxt_field_t *f, const char *name)
{
    if (!osv_pbtxt_is(f, name))
        fail_msg("field is '%.*s', expected '%s'", (int)f->name_len, f->name, name);
}

static int64_t as_int(const osv_pbtxt_field_t *f)
{
    int64_t v = 0;
    assert_int_equal(osv_pbtxt_int(f, INT64_MIN, INT64_MAX, &v), 0);
    return v;
}

static void test_triton_example(void **state)
{
    (void)state;
    const char *text = "# a Triton model configuration\n"
                       "name: \"densenet\"\n"
                       "platform: \"onnxruntime_onnx\"\n"
                       "max_batch_size : 8\n"
                       "input [\n"
                       "  {\n"
                       "    name: \"data_0\"\n"
                       "    data_type: TYPE_FP32\n"
                       "    format: FORMAT_NCHW\n"
                       "    dims: [ 3, 224, 224 ]\n"
                       "    reshape: { shape: [ ] }\n"
                       "  }\n"
                       "]\n"
                       "version_policy: { specific { versions: 1 versions: [3, 4] } }\n"
                       "parameters { key: \"intra_op_thread_count\" value: { string_value: \"2\" } }\n"
                       "instance_group < count: 2; kind: KIND_CPU >\n";
    parsed_t *p = parse(text);
    assert_int_equal(p->rc, 0);
    const osv_pbtxt_field_t *root = F(0);
    assert_int_equal(root->kind, OSV_PBTXT_MESSAGE);
    assert_int_equal(root->count, 7);
    assert_name(child(root, 0), "name");
    assert_int_equal(child(root, 0)->kind, OSV_PBTXT_STRING);
    assert_string_equal(child(root, 0)->text, "densenet");
    assert_int_equal(child(root, 0)->line, 2);
    assert_int_equal(child(root, 0)->col, 1);
    assert_int_equal(as_int(child(root, 2)), 8);
    const osv_pbtxt_field_t *in = child(root, 3);
    assert_name(in, "input");
    assert_int_equal(in->kind, OSV_PBTXT_MESSAGE);
    assert_int_equal(in->count, 7); /* name, data_type, format, dims ×3, reshape */
    assert_name(child(in, 1), "data_type");
    assert_int_equal(child(in, 1)->len, 9);
    assert_memory_equal(child(in, 1)->text, "TYPE_FP32", 9);
    for (uint32_t k = 0; k < 3; k++) {
        assert_name(child(in, 3 + k), "dims");
        assert_int_equal(as_int(child(in, 3 + k)), k == 0 ? 3 : 224);
    }
    /* An empty scalar list: the message is there, without children. */
    const osv_pbtxt_field_t *reshape = child(in, 6);
    assert_name(reshape, "reshape");
    assert_int_equal(reshape->kind, OSV_PBTXT_MESSAGE);
    assert_int_equal(reshape->count, 0);
    const osv_pbtxt_field_t *vp = child(child(root, 4), 0);
    assert_name(vp, "specific");
    assert_int_equal(vp->count, 3);
    assert_int_equal(as_int(child(vp, 0)), 1);
    assert_int_equal(as_int(child(vp, 2)), 4);
    const osv_pbtxt_field_t *param = child(root, 5);
    assert_string_equal(child(param, 0)->text, "intra_op_thread_count");
    assert_string_equal(child(child(param, 1), 0)->text, "2");
    const osv_pbtxt_field_t *ig = child(root, 6);
    assert_int_equal(ig->count, 2);
    assert_int_equal(as_int(child(ig, 0)), 2);
    assert_int_equal(ig->line, 16);
}

static void test_message_lists_and_separators(void **state)
{
    (void)state;
    parsed_t *p = parse("output: [ { name: 'a' }, { name: \"b\" }, <name: \"c\">],"
                        "model_warmup [{ name: \"w\" count: 2 }];"
                        "dims: [];");
    assert_int_equal(p->rc, 0);
    assert_int_equal(F(0)->count, 4); /* three outputs, one warm-up, no dims */
    assert_string_equal(child(child(F(0), 2), 0)->text, "c");
    assert_name(child(F(0), 3), "model_warmup");
}

static void test_strings(void **state)
{
    (void)state;
    parsed_t *p = parse("s: \"a\\n\\t\\\\\\\"\\'\\x41\\101\\u00e9\\U0001F600\" 'b' \"c\"\n"
                        "z: \"nul\\0mid\"");
    assert_int_equal(p->rc, 0);
    const osv_pbtxt_field_t *s = child(F(0), 0);
    const char want[] = "a\n\t\\\"'AA\xc3\xa9\xf0\x9f\x98\x80"
                        "bc";
    assert_int_equal(s->len, sizeof want - 1);
    assert_memory_equal(s->text, want, sizeof want - 1);
    const osv_pbtxt_field_t *z = child(F(0), 1);
    assert_int_equal(z->len, 7);
    assert_memory_equal(z->text, "nul\0mid", 7);
}

static void test_scalars(void **state)
{
    (void)state;
    int64_t i;
    uint64_t u;
    double d;
    bool b;
    parsed_t *p = parse("a: -12 b: 0x1F c: 017 d: 9223372036854775807 e: -9223372036854775808 "
                        "f: 9223372036854775808 g: 1.5e-3 h: -inf i: 2.5f j: true k: False l: t "
                        "m: 0 n: TYPE_FP32 o: 1e+2 p: nan q: 18446744073709551615 r: 18446744073709551616");
    assert_int_equal(p->rc, 0);
    const osv_pbtxt_field_t *r = F(0);
    assert_int_equal(osv_pbtxt_int(child(r, 0), INT64_MIN, INT64_MAX, &i), 0);
    assert_int_equal(i, -12);
    assert_int_equal(osv_pbtxt_int(child(r, 0), 0, 100, &i), -1); /* below the range */
    assert_int_equal(osv_pbtxt_int(child(r, 1), 0, 100, &i), 0);
    assert_int_equal(i, 31);
    assert_int_equal(osv_pbtxt_int(child(r, 2), 0, 100, &i), 0);
    assert_int_equal(i, 15);
    assert_int_equal(osv_pbtxt_int(child(r, 3), INT64_MIN, INT64_MAX, &i), 0);
    assert_true(i == INT64_MAX);
    assert_int_equal(osv_pbtxt_int(child(r, 4), INT64_MIN, INT64_MAX, &i), 0);
    assert_true(i == INT64_MIN);
    assert_int_equal(osv_pbtxt_int(child(r, 5), INT64_MIN, INT64_MAX, &i), -1); /* 2^63 overflows */
    assert_int_equal(osv_pbtxt_uint(child(r, 5), UINT64_MAX, &u), 0);
    assert_true(u == 9223372036854775808ull);
    assert_int_equal(osv_pbtxt_int(child(r, 6), INT64_MIN, INT64_MAX, &i), -1); /* not an integer */
    assert_int_equal(osv_pbtxt_double(child(r, 6), &d), 0);
    assert_true(fabs(d - 1.5e-3) < 1e-12);
    assert_int_equal(osv_pbtxt_double(child(r, 7), &d), 0);
    assert_true(isinf(d) && d < 0);
    assert_int_equal(osv_pbtxt_double(child(r, 8), &d), 0);
    assert_true(d == 2.5);
    assert_int_equal(osv_pbtxt_bool(child(r, 9), &b), 0);
    assert_true(b);
    assert_int_equal(osv_pbtxt_bool(child(r, 10), &b), 0);
    assert_false(b);
    assert_int_equal(osv_pbtxt_bool(child(r, 11), &b), 0);
    assert_true(b);
    assert_int_equal(osv_pbtxt_bool(child(r, 12), &b), 0);
    assert_false(b);
    assert_int_equal(osv_pbtxt_bool(child(r, 13), &b), -1); /* an enum name is not a bool */
    assert_int_equal(osv_pbtxt_int(child(r, 13), INT64_MIN, INT64_MAX, &i), -1);
    assert_int_equal(osv_pbtxt_double(child(r, 14), &d), 0);
    assert_true(d == 100.0);
    assert_int_equal(osv_pbtxt_double(child(r, 15), &d), 0);
    assert_true(isnan(d));
    assert_int_equal(osv_pbtxt_uint(child(r, 16), UINT64_MAX, &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(osv_pbtxt_uint(child(r, 17), UINT64_MAX, &u), -1);
    assert_int_equal(osv_pbtxt_uint(child(r, 0), UINT64_MAX, &u), -1); /* negative */
    /* Strings and messages are not scalars. */
    p = parse("s: \"12\" m {}");
    assert_int_equal(osv_pbtxt_int(child(F(0), 0), INT64_MIN, INT64_MAX, &i), -1);
    assert_int_equal(osv_pbtxt_bool(child(F(0), 1), &b), -1);
}

/* Each malformed text fails with its position and a message saying what was wrong. */
static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint32_t line, col;
        const char *msg;
    } cases[] = {
        {"name \"x\"", 1, 6, "expected ':' after field name 'name'"},
        {"a: 1\n  b {\n c: 2\n", 4, 1, "missing '}'"},
        {"a: 1 }", 1, 6, "expected a field name, found '}'"},
        {"a: \"open\n", 1, 9, "not closed"},
        {"a: \"\\q\"", 1, 6, "unknown escape"},
        {"a: \"\\xZ\"", 1, 7, "\\x needs a hex digit"},
        {"a: \"\\ud800\"", 1, 11, "not a Unicode scalar value"},
        {"a: [1, 2", 1, 9, "expected ',' or ']'"},
        {"a: [1 2]", 1, 7, "expected ',' or ']'"},
        {"[ext.field]: 1", 1, 1, "extension"},
        {"a: ", 1, 4, "expected a value, found the end of the text"},
        {"a: }", 1, 4, "expected a value"},
        {"a: \"\\777\"", 1, 9, "octal escape"},
        {"dims [1, 2]", 1, 7, "expected ':'"},
        {"\x01", 1, 1, "byte 0x01"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        parsed_t *p = parse(cases[k].text);
        if (p->rc != -1 || p->err.line != cases[k].line || p->err.col != cases[k].col ||
            !strstr(p->err.msg, cases[k].msg))
            fail_msg("case %zu (%s): rc %d at %u:%u '%s'", k, cases[k].text, p->rc, p->err.line, p->err.col,
                     p->err.msg);
        assert_int_equal(p->doc.n, 0); /* nothing kept after an error */
    }
}

static char *repeat(const char *unit, size_t times, const char *tail)
{
    size_t u = strlen(unit), t = strlen(tail);
    char *s = malloc(u * times + t + 1);
    assert_non_null(s);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * u, unit, u);
    memcpy(s + u * times, tail, t + 1);
    return s;
}

static void test_limits(void **state)
{
    (void)state;
    osv_pbtxt_limits_t lim;
    osv_pbtxt_limits_default(&lim);
    assert_true(lim.max_bytes == (1u << 20) && lim.max_depth == 32);

    /* Size: refused before anything is read. */
    lim.max_bytes = 8;
    parsed_t *p = parse_lim("name: \"longer than eight\"", &lim);
    assert_int_equal(p->rc, -1);
    assert_non_null(strstr(p->err.msg, "more than the limit of 8"));
    osv_pbtxt_limits_default(&lim);

    /* Depth: 32 nested messages are fine, 33 are not (and the parser's stack is bounded by it). */
    char *open = repeat("m { ", 32, ""), *close = repeat("} ", 32, ""),
         *ok = malloc(strlen(open) + strlen(close) + 1);
    assert_non_null(ok);
    strcpy(ok, open);
    strcat(ok, close);
    assert_int_equal(parse_lim(ok, &lim)->rc, 0);
    lim.max_depth = 31;
    p = parse_lim(ok, &lim);
    assert_int_equal(p->rc, -1);
    assert_non_null(strstr(p->err.msg, "deeper than 31 levels"));
    assert_int_equal(p->err.col, 3 + 4 * 31); /* the 32nd message's "{" */
    free(ok);
    free(open);
    free(close);
    char *deep = repeat("a{", 100000, ""); /* never closed: refused at its depth limit, not the end */
    osv_pbtxt_limits_default(&lim);
    lim.max_bytes = 1u << 20;
    p = parse_lim(deep, &lim);
    assert_int_equal(p->rc, -1);
    assert_non_null(strstr(p->err.msg, "deeper than 32"));
    free(deep);

    /* String length, counted decoded. */
    lim.max_string = 4;
    assert_int_equal(parse_lim("s: \"\\x41\\x42\\x43\\x44\"", &lim)->rc, 0);
    p = parse_lim("s: \"abcde\"", &lim);
    assert_int_equal(p->rc, -1);
    assert_non_null(strstr(p->err.msg, "longer than 4 bytes"));
    osv_pbtxt_limits_default(&lim);

    /* Field count: the root and 9 fields fit in 10. */
    lim.max_fields = 10;
    assert_int_equal(parse_lim("d: [1,2,3,4,5,6,7,8,9]", &lim)->rc, 0);
    p = parse_lim("d: [1,2,3,4,5,6,7,8,9,10]", &lim);
    assert_int_equal(p->rc, -1);
    assert_non_null(strstr(p->err.msg, "more than 10 fields"));
}

/* A failed allocation is an error with a message, and nothing leaks. */
static void test_out_of_memory(void **state)
{
    (void)state;
    uint64_t live = osv_alloc_live();
    for (uint64_t n = 1; n <= 3; n++) {
        osv_alloc_fail_after(n, 0);
        parsed_t *p = parse("a: 1 b { c: \"x\" }");
        osv_alloc_fail_after(0, 0);
        if (p->rc == 0)
            break;
        assert_non_null(strstr(p->err.msg, "out of memory"));
        assert_int_equal(osv_alloc_live(), live);
    }
    osv_pbtxt_free(&P.doc);
    assert_int_equal(osv_alloc_live(), live);
}

static int teardown(void **state)
{
    (void)state;
    osv_pbtxt_free(&P.doc);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_triton_example), cmocka_unit_test(test_message_lists_and_separators),
        cmocka_unit_test(test_strings),        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_limits),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
