/* test_json.c — cmocka unit tests for util/json (reader, leaf decoding, number conversion, writer).
 *
 * Build (standalone): cc -std=c17 -D_GNU_SOURCE -Isrc tests/unit/test_json.c src/util/json.c -lcmocka
 * -lpthread Run `test_json --f32-exhaustive` once to check osv_jw_f32_chars() over all 2^32 float bit
 * patterns against strtof (takes minutes; not part of the unit run). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/json.h"

#define NTOK 256

/* ------------------------------------------------------------------------------------------------ */
/* Helpers                                                                                            */

typedef struct pdoc {
    osv_json_tok_t toks[NTOK];
    osv_json_doc_t doc;
    osv_json_err_t err;
    int rc;
} pdoc_t;

static pdoc_t *parse_lim(const char *s, const osv_json_limits_t *lim)
{
    static pdoc_t p;
    p.rc = osv_json_parse(s, strlen(s), p.toks, NTOK, lim, &p.doc, &p.err);
    return &p;
}

static pdoc_t *parse(const char *s)
{
    return parse_lim(s, NULL);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    /* splitmix64: deterministic across runs */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* Input placed so that its last byte is the last byte before a PROT_NONE page. */
typedef struct guarded {
    char *map;
    size_t maplen;
    char *p;
} guarded_t;

static guarded_t guard_put(const char *s, size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), data = (n + pg - 1) / pg * pg + pg;
    guarded_t g;
    g.maplen = data + pg;
    g.map = mmap(NULL, g.maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g.map != MAP_FAILED);
    assert_int_equal(mprotect(g.map + data, pg, PROT_NONE), 0);
    g.p = g.map + data - n;
    memcpy(g.p, s, n);
    return g;
}

static void guard_free(guarded_t *g)
{
    munmap(g->map, g->maplen);
}

/* Decodes the single JSON number text s into kind. */
static int dec1(const char *s, osv_json_kind_t kind, void *out, osv_json_err_t *err)
{
    osv_json_tok_t t[4];
    osv_json_doc_t d;
    int rc = osv_json_parse(s, strlen(s), t, 4, NULL, &d, err);
    return rc ? rc : osv_json_leaves_decode(&d, 0, kind, out, 1, err);
}

/* ------------------------------------------------------------------------------------------------ */
/* Parser structure                                                                                   */

static void test_tokens_kserve(void **state)
{
    (void)state;
    const char *s =
        "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[[1,2],[3,4]]},"
        "{\"name\":\"y\",\"shape\":[0],\"datatype\":\"BYTES\",\"data\":[]}],\"id\":\"r1\"}";
    pdoc_t *p = parse(s);
    assert_int_equal(p->rc, 0);
    const osv_json_doc_t *d = &p->doc;
    assert_int_equal(d->toks[0].type, OSV_JSON_OBJECT);
    assert_int_equal(d->toks[0].count, 2);
    assert_int_equal(d->toks[0].next, d->ntok);
    int32_t in = osv_json_obj_get(d, 0, "inputs", 6);
    assert_int_equal(d->toks[in].type, OSV_JSON_ARRAY);
    assert_int_equal(d->toks[in].count, 2);
    int32_t x = osv_json_arr_get(d, (uint32_t)in, 0), y = osv_json_arr_get(d, (uint32_t)in, 1);
    assert_int_equal(d->toks[x].next, (uint32_t)y);
    assert_int_equal(osv_json_arr_get(d, (uint32_t)in, 2), -1);
    int32_t data = osv_json_obj_get(d, (uint32_t)x, "data", 4);
    assert_int_equal(d->toks[data].type, OSV_JSON_LEAF_ARRAY);
    assert_int_equal(d->toks[data].count, 4);
    assert_int_equal(d->toks[data].next, (uint32_t)data + 1);
    assert_true(osv_json_str_eq(d, (uint32_t)osv_json_obj_get(d, (uint32_t)y, "datatype", 8), "BYTES"));
    assert_true(osv_json_str_eq(d, (uint32_t)osv_json_obj_get(d, 0, "id", 2), "r1"));
    int32_t ydata = osv_json_obj_get(d, (uint32_t)y, "data", 4);
    assert_int_equal(d->toks[ydata].type, OSV_JSON_LEAF_ARRAY);
    assert_int_equal(d->toks[ydata].count, 0);
    /* 1 (root) + 2 ("inputs" + array) + 2*(1 + 4*2) members + 2 ("id" + value) */
    assert_int_equal(d->ntok, 1 + 2 + 2 * 9 + 2);
    assert_int_equal(sizeof(osv_json_tok_t), 20);
}

static void test_scalars_and_whitespace(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint8_t type;
        uint32_t start, len;
    } cases[] = {
        {" \t\r\n42 \n", OSV_JSON_NUMBER, 4, 2}, {"true", OSV_JSON_TRUE, 0, 4},
        {"false", OSV_JSON_FALSE, 0, 5},         {"null", OSV_JSON_NULL, 0, 4},
        {"\"ab\"", OSV_JSON_STRING, 1, 2},       {"NaN", OSV_JSON_NUMBER, 0, 3},
        {"-Infinity", OSV_JSON_NUMBER, 0, 9},    {"Infinity", OSV_JSON_NUMBER, 0, 8},
        {"{}", OSV_JSON_OBJECT, 0, 2},           {"-0.5e-3", OSV_JSON_NUMBER, 0, 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pdoc_t *p = parse(cases[i].s);
        assert_int_equal(p->rc, 0);
        assert_int_equal(p->doc.ntok, 1);
        assert_int_equal(p->toks[0].type, cases[i].type);
        assert_int_equal(p->toks[0].start, cases[i].start);
        assert_int_equal(p->toks[0].len, cases[i].len);
    }
    assert_int_equal(parse("1.5")->toks[0].flags, OSV_JSON_F_NONINT);
    assert_int_equal(parse("15")->toks[0].flags, 0);
    assert_int_equal(parse("\"a\\nb\"")->toks[0].flags, OSV_JSON_F_ESCAPED);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int code;
        size_t pos;
        const char *msg;
    } cases[] = {
        {"", OSV_JSON_ESYNTAX, 0, "unexpected end of input, expected a value at byte 0"},
        {"   ", OSV_JSON_ESYNTAX, 3, "unexpected end of input, expected a value at byte 3"},
        {"[1,2", OSV_JSON_ESYNTAX, 4, "expected ',' or ']'"},
        {"[1 2]", OSV_JSON_ESYNTAX, 3, "expected ',' or ']', got '2' at byte 3"},
        {"[{\"a\":1} 2]", OSV_JSON_ESYNTAX, 9, "expected ',' or ']', got '2' at byte 9"},
        {"{\"a\":1 \"b\":2}", OSV_JSON_ESYNTAX, 7, "expected ',' or '}', got '\"' at byte 7"},
        {"{\"a\":1", OSV_JSON_ESYNTAX, 6, "expected ',' or '}' at byte 6"},
        {"{\"a\" 1}", OSV_JSON_ESYNTAX, 5, "expected ':' after object key, got '1' at byte 5"},
        {"{1:2}", OSV_JSON_ESYNTAX, 1, "expected a string key, got '1' at byte 1"},
        {"{\"a\":1,}", OSV_JSON_ESYNTAX, 7, "expected a string key, got '}' at byte 7"},
        {"[1,]", OSV_JSON_ESYNTAX, 3, "unexpected ']', expected a value at byte 3"},
        {"[,1]", OSV_JSON_ESYNTAX, 1, "unexpected ',', expected a value at byte 1"},
        {"[{},]", OSV_JSON_ESYNTAX, 4, "unexpected ']', expected a value at byte 4"},
        {"[1}", OSV_JSON_ESYNTAX, 2, "expected ',' or ']', got '}'"},
        {"{\"a\":1]", OSV_JSON_ESYNTAX, 6, "expected ',' or '}', got ']'"},
        {"1 2", OSV_JSON_ESYNTAX, 2, "unexpected '2' after the JSON value at byte 2"},
        {"{} x", OSV_JSON_ESYNTAX, 3, "after the JSON value"},
        {"01", OSV_JSON_ESYNTAX, 0, "invalid number at byte 0"},
        {"[1.]", OSV_JSON_ESYNTAX, 1, "invalid number (digit expected after '.') at byte 1"},
        {"[.5]", OSV_JSON_ESYNTAX, 1, "unexpected '.', expected a value"},
        {"[1e]", OSV_JSON_ESYNTAX, 1, "invalid number (digit expected in exponent) at byte 1"},
        {"[1e+]", OSV_JSON_ESYNTAX, 1, "digit expected in exponent"},
        {"[-]", OSV_JSON_ESYNTAX, 1, "invalid number at byte 1"},
        {"[+1]", OSV_JSON_ESYNTAX, 1, "unexpected '+', expected a value"},
        {"[1x]", OSV_JSON_ESYNTAX, 1, "invalid number at byte 1"},
        {"[0x10]", OSV_JSON_ESYNTAX, 1, "invalid number"},
        {"[1,2,01]", OSV_JSON_ESYNTAX, 5, "invalid number at byte 5"}, /* inside a run of numbers */
        {"[1,-]", OSV_JSON_ESYNTAX, 3, "invalid number at byte 3"},
        {"[1,2,]", OSV_JSON_ESYNTAX, 5, "unexpected ']', expected a value at byte 5"},
        {"[1,2 3]", OSV_JSON_ESYNTAX, 5, "expected ',' or ']', got '3' at byte 5"},
        {"[1,2,-Infinity,NaN,3.5e]", OSV_JSON_ESYNTAX, 19, "digit expected in exponent"},
        {"[[1,2],[3,4]", OSV_JSON_ESYNTAX, 12, "unexpected end of input, expected ',' or ']' at byte 12"},
        {"[tru]", OSV_JSON_ESYNTAX, 1, "invalid literal at byte 1"},
        {"[truex]", OSV_JSON_ESYNTAX, 1, "invalid literal"},
        {"nul", OSV_JSON_ESYNTAX, 0, "invalid literal"},
        {"[nan]", OSV_JSON_ESYNTAX, 1, "invalid literal"},
        {"[-NaN]", OSV_JSON_ESYNTAX, 1, "invalid literal"},
        {"[Inf]", OSV_JSON_ESYNTAX, 1, "invalid literal"},
        {"\"abc", OSV_JSON_ESYNTAX, 0, "unterminated string at byte 0"},
        {"[\"a\\", OSV_JSON_ESYNTAX, 4, "unterminated string"},
        {"\"a\\x\"", OSV_JSON_ESYNTAX, 2, "invalid escape: '\\' followed by 'x' at byte 2"},
        {"\"\\u12G4\"", OSV_JSON_ESYNTAX, 1, "invalid \\u escape (4 hex digits expected) at byte 1"},
        {"\"\\u12\"", OSV_JSON_ESYNTAX, 1, "invalid \\u escape"},
        {"\"a\tb\"", OSV_JSON_ESYNTAX, 2, "control character 0x09 in string at byte 2"},
        {"\"a\x01\"", OSV_JSON_ESYNTAX, 2, "control character 0x01"},
        {"[\"\xff\"]", OSV_JSON_EUTF8, 2, "invalid UTF-8 in string at byte 2"},
        {"\"\xc0\xaf\"", OSV_JSON_EUTF8, 1, "invalid UTF-8"},         /* overlong */
        {"\"\xed\xa0\x80\"", OSV_JSON_EUTF8, 1, "invalid UTF-8"},     /* UTF-16 surrogate */
        {"\"\xf4\x90\x80\x80\"", OSV_JSON_EUTF8, 1, "invalid UTF-8"}, /* > U+10FFFF */
        {"\"\xe2\x82\"", OSV_JSON_EUTF8, 1, "invalid UTF-8"},         /* truncated */
        {"[1]]", OSV_JSON_ESYNTAX, 3, "after the JSON value"},
        {"]", OSV_JSON_ESYNTAX, 0, "unexpected ']', expected a value at byte 0"},
        {"{\"a\":}", OSV_JSON_ESYNTAX, 5, "unexpected '}', expected a value"},
        {"[\x01]", OSV_JSON_ESYNTAX, 1, "unexpected byte 0x01, expected a value at byte 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pdoc_t *p = parse(cases[i].s);
        if (p->rc != cases[i].code || p->err.pos != cases[i].pos || !strstr(p->err.msg, cases[i].msg))
            fail_msg("case %zu '%s': rc %d pos %zu msg '%s'", i, cases[i].s, p->rc, p->err.pos, p->err.msg);
        assert_int_equal(p->err.code, p->rc);
    }
}

static void test_depth_limit(void **state)
{
    (void)state;
    char buf[512];
    osv_json_limits_t lim = {0};
    /* 64 nested arrays (a leaf array) pass the default limit, 65 fail */
    for (int n = 64; n <= 65; n++) {
        memset(buf, '[', (size_t)n);
        memset(buf + n, ']', (size_t)n);
        buf[2 * n] = 0;
        pdoc_t *p = parse(buf);
        if (n == 64) {
            assert_int_equal(p->rc, 0);
            assert_int_equal(p->toks[0].ndim, 64);
            assert_false(p->toks[0].flags & OSV_JSON_F_RECT); /* deeper than OSV_JSON_MAX_NDIM */
        } else {
            assert_int_equal(p->rc, OSV_JSON_EDEPTH);
            assert_int_equal(p->err.pos, 64);
            assert_string_equal(p->err.msg, "nesting deeper than 64 at byte 64");
        }
    }
    /* objects count too, and mixed nesting */
    lim.max_depth = 3;
    assert_int_equal(parse_lim("{\"a\":{\"b\":[1]}}", &lim)->rc, 0);
    pdoc_t *p = parse_lim("{\"a\":{\"b\":{\"c\":[1]}}}", &lim);
    assert_int_equal(p->rc, OSV_JSON_EDEPTH);
    assert_int_equal(p->err.pos, 15);
    assert_string_equal(p->err.msg, "nesting deeper than 3 at byte 15");
    assert_int_equal(parse_lim("[{\"a\":[[1]]}]", &lim)->rc, OSV_JSON_EDEPTH);
    assert_int_equal(parse_lim("[[{}]]", &lim)->rc, 0);
    assert_int_equal(parse_lim("[[[{}]]]", &lim)->rc, OSV_JSON_EDEPTH);
    lim.max_depth = 1;
    assert_int_equal(parse_lim("[1,2]", &lim)->rc, 0);
    assert_int_equal(parse_lim("[[1]]", &lim)->rc, OSV_JSON_EDEPTH);
}

static void test_token_limit(void **state)
{
    (void)state;
    osv_json_limits_t lim = {0};
    lim.max_tokens = 3;
    /* leaf arrays cost one token whatever their size */
    assert_int_equal(parse_lim("{\"data\":[[1,2],[3,4],[5,6]]}", &lim)->rc, 0);
    pdoc_t *p = parse_lim("{\"a\":1,\"b\":2}", &lim);
    assert_int_equal(p->rc, OSV_JSON_ETOKENS);
    assert_int_equal(p->err.pos, 8);
    assert_string_equal(p->err.msg, "more than 3 tokens at byte 8");
    assert_int_equal(parse_lim("[{},{},{}]", &lim)->rc, OSV_JSON_ETOKENS);
    assert_int_equal(parse_lim("[{},{}]", &lim)->rc, 0);
    /* cap bounds too, and max_tokens above cap is clamped */
    osv_json_tok_t t[2];
    osv_json_doc_t d;
    osv_json_err_t e;
    lim.max_tokens = 100;
    assert_int_equal(osv_json_parse("[{},{}]", 7, t, 2, &lim, &d, &e), OSV_JSON_ETOKENS);
    assert_string_equal(e.msg, "more than 2 tokens at byte 4");
    assert_int_equal(osv_json_parse("[1,2,3]", 7, t, 1, NULL, &d, &e), 0);
    assert_int_equal(osv_json_parse("[]", 2, t, 0, NULL, &d, &e), OSV_JSON_EINVAL);
}

static void test_string_limit(void **state)
{
    (void)state;
    osv_json_limits_t lim = {0};
    lim.max_string_bytes = 4;
    assert_int_equal(parse_lim("[\"abcd\"]", &lim)->rc, 0);
    pdoc_t *p = parse_lim("{\"k\":\"abcde\"}", &lim);
    assert_int_equal(p->rc, OSV_JSON_ESTRLEN);
    assert_int_equal(p->err.pos, 5);
    assert_string_equal(p->err.msg, "string longer than 4 bytes at byte 5");
    assert_int_equal(parse_lim("[\"abcde\"]", &lim)->rc, OSV_JSON_ESTRLEN);
    assert_int_equal(parse_lim("{\"abcde\":1}", &lim)->rc, OSV_JSON_ESTRLEN);
}

/* ------------------------------------------------------------------------------------------------ */
/* Leaf arrays                                                                                        */

static void test_leaf_arrays(void **state)
{
    (void)state;
    pdoc_t *p = parse("[1, 2.5, -3e2]");
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->doc.ntok, 1);
    assert_int_equal(p->toks[0].type, OSV_JSON_LEAF_ARRAY);
    assert_int_equal(p->toks[0].count, 3);
    assert_int_equal(p->toks[0].flags, OSV_JSON_F_HAS_NUM | OSV_JSON_F_NONINT | OSV_JSON_F_RECT);
    assert_int_equal(p->toks[0].len, 14);

    p = parse("[[1,true],[null,\"a\\\"\"],[false,2]]");
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->doc.ntok, 1);
    assert_int_equal(p->toks[0].count, 6);
    assert_int_equal(p->toks[0].flags, OSV_JSON_F_HAS_NUM | OSV_JSON_F_HAS_TRUE | OSV_JSON_F_HAS_NULL |
                                           OSV_JSON_F_HAS_STR | OSV_JSON_F_HAS_FALSE | OSV_JSON_F_ESCAPED |
                                           OSV_JSON_F_RECT);
    uint32_t dims[OSV_JSON_MAX_NDIM], nd;
    assert_int_equal(osv_json_leaves_shape(&p->doc, 0, dims, &nd), 0);
    assert_int_equal(nd, 2);
    assert_int_equal(dims[0], 3);
    assert_int_equal(dims[1], 2);

    p = parse("{\"e\":[],\"ee\":[[],[]],\"x\":[[[1,2,3]],[[4,5,6]]]}");
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->doc.ntok, 7);
    assert_int_equal(p->toks[2].count, 0);
    assert_int_equal(p->toks[2].ndim, 1);
    assert_int_equal(osv_json_leaves_shape(&p->doc, 2, dims, &nd), 0);
    assert_int_equal(nd, 1);
    assert_int_equal(dims[0], 0);
    assert_int_equal(osv_json_leaves_shape(&p->doc, 4, dims, &nd), 0);
    assert_int_equal(nd, 2);
    assert_int_equal(dims[0], 2);
    assert_int_equal(dims[1], 0);
    assert_int_equal(osv_json_leaves_shape(&p->doc, 6, dims, &nd), 0);
    assert_int_equal(nd, 3);
    assert_int_equal(dims[0], 2);
    assert_int_equal(dims[1], 1);
    assert_int_equal(dims[2], 3);
    assert_int_equal(osv_json_leaves_shape(&p->doc, 1, dims, &nd), 0); /* a scalar (key) */
    assert_int_equal(nd, 0);
    assert_int_equal(osv_json_leaves_shape(&p->doc, 0, dims, &nd), OSV_JSON_ETYPE);

    /* ragged nestings are leaf arrays but not rectangular */
    static const char *ragged[] = {"[[1,2],[3]]", "[1,[2]]",  "[[1],2]",     "[[[1]],[2]]",
                                   "[[],[1]]",    "[[1],[]]", "[[[]],[[1]]]"};
    for (size_t i = 0; i < sizeof ragged / sizeof ragged[0]; i++) {
        p = parse(ragged[i]);
        assert_int_equal(p->rc, 0);
        assert_int_equal(p->toks[0].type, OSV_JSON_LEAF_ARRAY);
        assert_false(p->toks[0].flags & OSV_JSON_F_RECT);
        assert_int_equal(osv_json_leaves_shape(&p->doc, 0, dims, &nd), OSV_JSON_ESHAPE);
    }

    /* any object inside makes it (and its enclosing arrays) ordinary; leaf siblings stay leaf arrays */
    p = parse("[[1,[2,{\"a\":[3,4]}]],[5],{}]");
    assert_int_equal(p->rc, 0);
    static const uint8_t want[] = {OSV_JSON_ARRAY,      OSV_JSON_ARRAY,  OSV_JSON_NUMBER, OSV_JSON_ARRAY,
                                   OSV_JSON_NUMBER,     OSV_JSON_OBJECT, OSV_JSON_STRING, OSV_JSON_LEAF_ARRAY,
                                   OSV_JSON_LEAF_ARRAY, OSV_JSON_OBJECT};
    static const uint32_t next[] = {10, 8, 3, 8, 5, 8, 7, 8, 9, 10};
    static const uint32_t count[] = {3, 2, 1, 2, 1, 1, 1, 2, 1, 0};
    assert_int_equal(p->doc.ntok, 10);
    for (uint32_t i = 0; i < 10; i++) {
        assert_int_equal(p->toks[i].type, want[i]);
        assert_int_equal(p->toks[i].next, next[i]);
        assert_int_equal(p->toks[i].count, count[i]);
    }
    assert_int_equal(p->toks[1].len, 19);
}

/* More multi-level arrays than OSV_JSON_SHAPE_SLOTS: later ones get their shape by rescanning. */
static void test_leaf_shape_slots(void **state)
{
    (void)state;
    char buf[2048];
    size_t n = 0;
    buf[n++] = '[';
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s{\"d\":[[[\"x\",1],[2,3],[4,%d]]]}", i ? "," : "",
                              i);
    buf[n++] = ']';
    buf[n] = 0;
    pdoc_t *p = parse(buf);
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->doc.nshape, OSV_JSON_SHAPE_SLOTS);
    int found = 0;
    for (uint32_t i = 0; i < p->doc.ntok; i++) {
        if (p->toks[i].type != OSV_JSON_LEAF_ARRAY)
            continue;
        uint32_t dims[OSV_JSON_MAX_NDIM], nd;
        assert_int_equal(osv_json_leaves_shape(&p->doc, i, dims, &nd), 0);
        assert_int_equal(nd, 3);
        assert_int_equal(dims[0], 1);
        assert_int_equal(dims[1], 3);
        assert_int_equal(dims[2], 2);
        assert_int_equal(p->toks[i].shape, found < OSV_JSON_SHAPE_SLOTS ? found : OSV_JSON_NO_SHAPE);
        found++;
    }
    assert_int_equal(found, 20);
}

/* Deep arrays around one object: parsing stays correct (and linear: each byte is scanned at most twice). */
static void test_leaf_fallback_deep(void **state)
{
    (void)state;
    char buf[1024];
    size_t n = 0;
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "[[%d],", i);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "{}");
    for (int i = 0; i < 60; i++)
        buf[n++] = ']';
    buf[n] = 0;
    osv_json_limits_t lim = {.max_depth = 100};
    pdoc_t *p = parse_lim(buf, &lim);
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->doc.ntok, 60 * 2 + 1);
    for (uint32_t i = 0; i < 60; i++) {
        assert_int_equal(p->toks[2 * i].type, OSV_JSON_ARRAY);
        assert_int_equal(p->toks[2 * i].count, 2);
        assert_int_equal(p->toks[2 * i].next, 121);
        assert_int_equal(p->toks[2 * i + 1].type, OSV_JSON_LEAF_ARRAY);
    }
    assert_int_equal(p->toks[120].type, OSV_JSON_OBJECT);
}

/* ------------------------------------------------------------------------------------------------ */
/* Strings                                                                                            */

static void test_obj_get_escaped_keys(void **state)
{
    (void)state;
    pdoc_t *p = parse("{\"a\\u0062\":1,\"\\u00e9t\\u00E9\":2,\"q\\\"\\\\\":3,\"plain\":4,\"plain\":5,"
                      "\"\\ud83d\\ude00\":6}");
    assert_int_equal(p->rc, 0);
    const osv_json_doc_t *d = &p->doc;
    int64_t v;
    assert_int_equal(osv_json_tok_i64(d, (uint32_t)osv_json_obj_get(d, 0, "ab", 2), &v, NULL), 0);
    assert_int_equal(v, 1);
    assert_int_equal(osv_json_tok_i64(d, (uint32_t)osv_json_obj_get(d, 0, "\xc3\xa9t\xc3\xa9", 5), &v, NULL),
                     0);
    assert_int_equal(v, 2);
    assert_int_equal(osv_json_tok_i64(d, (uint32_t)osv_json_obj_get(d, 0, "q\"\\", 3), &v, NULL), 0);
    assert_int_equal(v, 3);
    assert_int_equal(osv_json_tok_i64(d, (uint32_t)osv_json_obj_get(d, 0, "plain", 5), &v, NULL), 0);
    assert_int_equal(v, 4); /* first duplicate wins */
    assert_int_equal(osv_json_tok_i64(d, (uint32_t)osv_json_obj_get(d, 0, "\xf0\x9f\x98\x80", 4), &v, NULL),
                     0);
    assert_int_equal(v, 6);
    assert_int_equal(osv_json_obj_get(d, 0, "a\\u0062", 7), -1); /* raw escaped text is not the key */
    assert_int_equal(osv_json_obj_get(d, 0, "a", 1), -1);
    assert_int_equal(osv_json_obj_get(d, 0, "abc", 3), -1);
    assert_int_equal(osv_json_obj_get(d, 0, "pla", 3), -1);
    assert_int_equal(osv_json_obj_get(d, 1, "ab", 2), -1); /* not an object */
    assert_int_equal(osv_json_obj_get(d, 999, "ab", 2), -1);
    assert_false(osv_json_str_eq(d, 2, "1"));
    /* keys with embedded NUL */
    p = parse("{\"a\\u0000b\":7}");
    assert_int_equal(p->rc, 0);
    assert_int_equal(osv_json_obj_get(&p->doc, 0, "a\0b", 3), 2);
    assert_int_equal(osv_json_obj_get(&p->doc, 0, "a", 1), -1);
}

static void test_unescape(void **state)
{
    (void)state;
    static const struct {
        const char *raw, *want;
        size_t wlen;
    } ok[] = {
        {"plain", "plain", 5},
        {"\\\"\\\\\\/\\b\\f\\n\\r\\t", "\"\\/\b\f\n\r\t", 8},
        {"\\u0041\\u00e9\\u20AC", "A\xc3\xa9\xe2\x82\xac", 6},
        {"x\\ud83d\\ude00y", "x\xf0\x9f\x98\x80y", 6},
        {"\\uDBFF\\uDFFF", "\xf4\x8f\xbf\xbf", 4},
        {"\\u0000", "\0", 1},
        {"caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac", 9},
        {"", "", 0},
    };
    char out[64];
    size_t n;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t rl = strlen(ok[i].raw);
        assert_int_equal(osv_json_unescape(ok[i].raw, rl, out, rl + 1, &n), 0); /* len + 1 always suffices */
        assert_int_equal(n, ok[i].wlen);
        assert_memory_equal(out, ok[i].want, n);
        assert_int_equal(out[n], 0);
    }
    static const struct {
        const char *raw;
        int code;
    } bad[] = {
        {"\\ud83d", OSV_JSON_EUTF8},        {"\\ud83dx", OSV_JSON_EUTF8},
        {"\\ud83d\\u0041", OSV_JSON_EUTF8}, {"\\ude00", OSV_JSON_EUTF8},
        {"\\ud83d\\ud83d", OSV_JSON_EUTF8}, {"a\xff", OSV_JSON_EUTF8},
        {"\xc0\x80", OSV_JSON_EUTF8},       {"\xed\xbf\xbf", OSV_JSON_EUTF8},
        {"\xe2\x82", OSV_JSON_EUTF8},       {"\xf8\x88\x80\x80", OSV_JSON_EUTF8},
        {"\x80", OSV_JSON_EUTF8},           {"\\x", OSV_JSON_ESYNTAX},
        {"\\u12", OSV_JSON_ESYNTAX},        {"\\", OSV_JSON_ESYNTAX},
        {"a\nb", OSV_JSON_ESYNTAX},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(osv_json_unescape(bad[i].raw, strlen(bad[i].raw), out, sizeof out, &n), bad[i].code);
    assert_int_equal(osv_json_unescape("abc", 3, out, 3, &n), OSV_JSON_ENOSPC); /* no room for the NUL */
    assert_int_equal(osv_json_unescape("a\\u20ac", 7, out, 4, &n), OSV_JSON_ENOSPC);
    assert_int_equal(osv_json_unescape("a\\u20ac", 7, out, 5, &n), 0);
    /* The unterminated form writes exactly the value: a range of exactly its size suffices, and the
     * byte after it is never touched (Triton's serialized BYTES are packed back to back in a slot). */
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t rl = strlen(ok[i].raw), m = 0;
        memset(out, 0x5a, sizeof out);
        assert_int_equal(osv_json_unescape_raw(ok[i].raw, rl, out, ok[i].wlen, &n), 0);
        assert_int_equal(n, ok[i].wlen);
        assert_memory_equal(out, ok[i].want, n);
        assert_int_equal((unsigned char)out[n], 0x5a);
        assert_int_equal(osv_json_unescaped_len(ok[i].raw, rl, &m), 0);
        assert_int_equal(m, ok[i].wlen);
        if (ok[i].wlen)
            assert_int_equal(osv_json_unescape_raw(ok[i].raw, rl, out, ok[i].wlen - 1, &n), OSV_JSON_ENOSPC);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(osv_json_unescaped_len(bad[i].raw, strlen(bad[i].raw), &n), bad[i].code);

    /* through the document: the parser accepts syntactically valid lone surrogates, unescape rejects */
    pdoc_t *p = parse("[\"\\ud800\",\"ok\\n\"]");
    assert_int_equal(p->rc, 0);
    p = parse("{\"s\":\"\\ud800\",\"t\":\"ok\\n\",\"n\":1}");
    assert_int_equal(p->rc, 0);
    assert_int_equal(osv_json_str_unescape(&p->doc, 2, out, sizeof out, &n), OSV_JSON_EUTF8);
    assert_int_equal(osv_json_str_unescape(&p->doc, 4, out, sizeof out, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "ok\n", 3);
    assert_int_equal(osv_json_str_unescape(&p->doc, 6, out, sizeof out, &n), OSV_JSON_ETYPE);
    assert_false(osv_json_str_eq(&p->doc, 2, "\xed\xa0\x80"));
}

static void test_leaf_iter_strings(void **state)
{
    (void)state;
    const char *s = "{\"data\":[[\"a\",\"b\\nc\"],[\"\",\"\\u00e9\"]],\"one\":\"x\",\"n\":[1,2.5,true,null]}";
    pdoc_t *p = parse(s);
    assert_int_equal(p->rc, 0);
    osv_json_leaf_iter_t it;
    osv_json_leaf_t lf;
    static const char *want[] = {"a", "b\nc", "", "\xc3\xa9"};
    static const uint8_t wflags[] = {0, OSV_JSON_F_ESCAPED, 0, OSV_JSON_F_ESCAPED};
    assert_int_equal(osv_json_leaf_iter_init(&it, &p->doc, (uint32_t)osv_json_obj_get(&p->doc, 0, "data", 4)),
                     0);
    int i = 0;
    while (osv_json_leaf_next(&it, &lf)) {
        char out[16];
        size_t n;
        assert_int_equal(lf.type, OSV_JSON_STRING);
        assert_int_equal(lf.flags, wflags[i]);
        assert_int_equal(osv_json_unescape(s + lf.start, lf.len, out, sizeof out, &n), 0);
        assert_int_equal(n, strlen(want[i]));
        assert_memory_equal(out, want[i], n);
        i++;
    }
    assert_int_equal(i, 4);
    assert_int_equal(osv_json_leaf_iter_init(&it, &p->doc, (uint32_t)osv_json_obj_get(&p->doc, 0, "one", 3)),
                     0);
    assert_true(osv_json_leaf_next(&it, &lf));
    assert_int_equal(lf.type, OSV_JSON_STRING);
    assert_int_equal(lf.len, 1);
    assert_int_equal(s[lf.start], 'x');
    assert_false(osv_json_leaf_next(&it, &lf));
    static const uint8_t types[] = {OSV_JSON_NUMBER, OSV_JSON_NUMBER, OSV_JSON_TRUE, OSV_JSON_NULL};
    assert_int_equal(osv_json_leaf_iter_init(&it, &p->doc, (uint32_t)osv_json_obj_get(&p->doc, 0, "n", 1)),
                     0);
    for (i = 0; osv_json_leaf_next(&it, &lf); i++) {
        assert_int_equal(lf.type, types[i]);
        assert_int_equal(lf.flags, i == 1 ? OSV_JSON_F_NONINT : 0);
    }
    assert_int_equal(i, 4);
    assert_int_equal(osv_json_leaf_iter_init(&it, &p->doc, 0), OSV_JSON_ETYPE);
}

/* ------------------------------------------------------------------------------------------------ */
/* Leaf decoding                                                                                      */

static void test_decode_ints(void **state)
{
    (void)state;
    static const struct {
        osv_json_kind_t kind;
        const char *lo, *hi, *below, *above;
    } k[] = {
        {OSV_JSON_KIND_U8, "0", "255", "-1", "256"},
        {OSV_JSON_KIND_U16, "0", "65535", "-1", "65536"},
        {OSV_JSON_KIND_U32, "0", "4294967295", "-1", "4294967296"},
        {OSV_JSON_KIND_U64, "0", "18446744073709551615", "-1", "18446744073709551616"},
        {OSV_JSON_KIND_I8, "-128", "127", "-129", "128"},
        {OSV_JSON_KIND_I16, "-32768", "32767", "-32769", "32768"},
        {OSV_JSON_KIND_I32, "-2147483648", "2147483647", "-2147483649", "2147483648"},
        {OSV_JSON_KIND_I64, "-9223372036854775808", "9223372036854775807", "-9223372036854775809",
         "9223372036854775808"},
    };
    char buf[256];
    osv_json_err_t err;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        uint64_t out[4] = {0};
        snprintf(buf, sizeof buf, "[[%s, %s], [-0, 7]]", k[i].lo, k[i].hi);
        pdoc_t *p = parse(buf);
        assert_int_equal(p->rc, 0);
        assert_int_equal(osv_json_leaves_decode(&p->doc, 0, k[i].kind, out, 4, &err), 0);
        size_t sz = osv_json_kind_size(k[i].kind);
        int64_t lo = 0, hi = 0;
        uint64_t uhi = 0;
        if (k[i].kind >= OSV_JSON_KIND_I8) {
            /* sign-extend the little values back */
            int64_t v[4];
            for (int j = 0; j < 4; j++) {
                unsigned char *b = (unsigned char *)out + j * sz;
                v[j] = sz == 1   ? (int8_t)b[0]
                       : sz == 2 ? *(int16_t *)b
                       : sz == 4 ? *(int32_t *)b
                                 : *(int64_t *)b;
            }
            lo = v[0];
            hi = v[1];
            assert_int_equal(lo, strtoll(k[i].lo, NULL, 10));
            assert_int_equal(hi, strtoll(k[i].hi, NULL, 10));
            assert_int_equal(v[2], 0);
            assert_int_equal(v[3], 7);
        } else {
            unsigned char *b = (unsigned char *)out + sz;
            uhi = sz == 1 ? b[0] : sz == 2 ? *(uint16_t *)b : sz == 4 ? *(uint32_t *)b : *(uint64_t *)b;
            assert_true(uhi == strtoull(k[i].hi, NULL, 10));
        }
        const char *oor[] = {k[i].below, k[i].above};
        for (int j = 0; j < 2; j++) {
            snprintf(buf, sizeof buf, "[1, %s]", oor[j]);
            p = parse(buf);
            assert_int_equal(p->rc, 0);
            assert_int_equal(osv_json_leaves_decode(&p->doc, 0, k[i].kind, out, 2, &err), OSV_JSON_ERANGE);
            assert_int_equal(err.pos, 4);
            assert_non_null(strstr(err.msg, "element 1 ("));
            assert_non_null(strstr(err.msg, "is out of range for"));
        }
    }
    uint64_t big[2];
    assert_int_equal(dec1("99999999999999999999999", OSV_JSON_KIND_U64, big, &err), OSV_JSON_ERANGE);
    /* fractions, exponents and non-finite values are not integers */
    static const char *nonint[] = {"1.0",      "1e2",       "1E+0",  "-0.5", "NaN",
                                   "Infinity", "-Infinity", "\"1\"", "true", "null"};
    for (size_t i = 0; i < sizeof nonint / sizeof nonint[0]; i++) {
        int32_t v;
        assert_int_equal(dec1(nonint[i], OSV_JSON_KIND_I32, &v, &err), OSV_JSON_ETYPE);
    }
    pdoc_t *p = parse("[[1, 2], [3, 4.5]]");
    int32_t v4[4];
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_I32, v4, 4, &err), OSV_JSON_ETYPE);
    assert_int_equal(err.pos, 13);
    assert_string_equal(err.msg, "element 3 (4.5) is not an integer, expected INT32 at byte 13");
}

static void test_decode_bool(void **state)
{
    (void)state;
    pdoc_t *p = parse("[true, false, 1, 0, -0]");
    uint8_t b[5];
    osv_json_err_t err;
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_BOOL, b, 5, &err), 0);
    assert_memory_equal(b, "\1\0\1\0\0", 5);
    static const char *bad[] = {"2", "-1", "1.0", "0.5", "null", "\"true\"", "NaN"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(dec1(bad[i], OSV_JSON_KIND_BOOL, b, &err), OSV_JSON_ETYPE);
        assert_non_null(strstr(err.msg, "is not a valid BOOL"));
    }
    bool v;
    p = parse("[true,0]");
    assert_int_equal(p->rc, 0);
    p = parse("{\"a\":true,\"b\":0,\"c\":\"x\"}");
    assert_int_equal(osv_json_tok_bool(&p->doc, 2, &v, NULL), 0);
    assert_true(v);
    assert_int_equal(osv_json_tok_bool(&p->doc, 4, &v, NULL), 0);
    assert_false(v);
    assert_int_equal(osv_json_tok_bool(&p->doc, 6, &v, NULL), OSV_JSON_ETYPE);
}

static void test_decode_errors(void **state)
{
    (void)state;
    osv_json_err_t err;
    float f[8];
    pdoc_t *p = parse("{\"a\":[1,2,3],\"b\":[1,\"x\"],\"c\":[{}],\"d\":[1,null]}");
    assert_int_equal(p->rc, 0);
    uint32_t a = (uint32_t)osv_json_obj_get(&p->doc, 0, "a", 1),
             b = (uint32_t)osv_json_obj_get(&p->doc, 0, "b", 1);
    uint32_t c = (uint32_t)osv_json_obj_get(&p->doc, 0, "c", 1),
             d = (uint32_t)osv_json_obj_get(&p->doc, 0, "d", 1);
    f[0] = 42;
    assert_int_equal(osv_json_leaves_decode(&p->doc, a, OSV_JSON_KIND_F32, f, 4, &err), OSV_JSON_ECOUNT);
    assert_string_equal(err.msg, "array has 3 elements, expected 4 at byte 5");
    assert_true(f[0] == 42); /* nothing written */
    assert_int_equal(osv_json_leaves_decode(&p->doc, b, OSV_JSON_KIND_F32, f, 2, &err), OSV_JSON_ETYPE);
    assert_string_equal(err.msg, "element 1 (\"x\") is not a number, expected FP32 at byte 20");
    assert_int_equal(osv_json_leaves_decode(&p->doc, c, OSV_JSON_KIND_F32, f, 1, &err), OSV_JSON_ETYPE);
    assert_non_null(strstr(err.msg, "expected an array of scalars for FP32"));
    assert_int_equal(osv_json_leaves_decode(&p->doc, d, OSV_JSON_KIND_F64, f, 2, &err), OSV_JSON_ETYPE);
    assert_non_null(strstr(err.msg, "element 1 (null) is not a number, expected FP64"));
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, 99, f, 1, &err), OSV_JSON_EINVAL);
    /* a scalar token decodes as one leaf */
    assert_int_equal(osv_json_leaves_decode(&p->doc, a + 1, OSV_JSON_KIND_F32, f, 1, &err), OSV_JSON_ETYPE);
    p = parse("2.5");
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_F32, f, 1, &err), 0);
    assert_true(f[0] == 2.5f);
    /* numbers longer than the slow path accepts */
    char big[512];
    memset(big, '1', 400);
    memcpy(big + 400, ".5", 3);
    assert_int_equal(dec1(big, OSV_JSON_KIND_F32, f, &err), OSV_JSON_ERANGE);
    assert_non_null(strstr(err.msg, "is too long to convert to FP32"));
    memcpy(big, "0.", 2);
    memset(big + 2, '0', 300);
    memcpy(big + 302, "15", 3); /* 304 chars: converted */
    double dv;
    assert_int_equal(dec1(big, OSV_JSON_KIND_F64, &dv, &err), 0);
    assert_true(dv == 1.5e-301);
}

static void test_tok_conversions(void **state)
{
    (void)state;
    pdoc_t *p = parse("[{}, -9223372036854775808, 18446744073709551615, 1.5, \"s\", NaN, -Infinity, 1e400, "
                      "9223372036854775808]");
    assert_int_equal(p->rc, 0);
    const osv_json_doc_t *d = &p->doc;
    int64_t i;
    uint64_t u;
    double f;
    float g;
    osv_json_err_t err;
    assert_int_equal(osv_json_tok_i64(d, 2, &i, &err), 0);
    assert_true(i == INT64_MIN);
    assert_int_equal(osv_json_tok_u64(d, 2, &u, &err), OSV_JSON_ERANGE);
    assert_int_equal(osv_json_tok_u64(d, 3, &u, &err), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(osv_json_tok_i64(d, 3, &i, &err), OSV_JSON_ERANGE);
    assert_int_equal(osv_json_tok_i64(d, 9, &i, &err), OSV_JSON_ERANGE);
    assert_int_equal(osv_json_tok_i64(d, 4, &i, &err), OSV_JSON_ETYPE);
    assert_int_equal(osv_json_tok_f64(d, 4, &f, &err), 0);
    assert_true(f == 1.5);
    assert_int_equal(osv_json_tok_f64(d, 5, &f, &err), OSV_JSON_ETYPE);
    assert_string_equal(err.msg, "element 0 (\"s\") is not a number, expected FP64 at byte 54");
    assert_int_equal(osv_json_tok_f64(d, 6, &f, &err), 0);
    assert_true(isnan(f));
    assert_int_equal(osv_json_tok_f32(d, 7, &g, &err), 0);
    assert_true(isinf(g) && g < 0);
    assert_int_equal(osv_json_tok_f64(d, 8, &f, &err), 0);
    assert_true(isinf(f) && f > 0);
    assert_int_equal(osv_json_tok_f64(d, 1, &f, &err), OSV_JSON_ETYPE);
    assert_int_equal(osv_json_tok_f64(d, 1000, &f, &err), OSV_JSON_EINVAL);
}

/* Independent reference for narrow formats: nearest representable value by binary search over the
 * (monotonic) positive bit patterns, ties to even. */
static double half_val(uint32_t h)
{
    int e = (int)((h >> 10) & 31), m = (int)(h & 1023);
    return e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
}

static double bf16_val(uint32_t h)
{
    return (double)u2f(h << 16);
}

static uint32_t ref_round(double x, double (*val)(uint32_t), uint32_t maxfin, uint32_t inf)
{
    uint32_t lo = 0, hi = maxfin;
    if (x >= val(maxfin)) {
        double next = 2 * val(maxfin) - val(maxfin - 1); /* 2^(emax+1) */
        return x >= (val(maxfin) + next) / 2 ? inf : maxfin;
    }
    while (hi - lo > 1) { /* val(lo) <= x < val(hi) */
        uint32_t mid = (lo + hi) / 2;
        if (val(mid) <= x)
            lo = mid;
        else
            hi = mid;
    }
    double m = (val(lo) + val(hi)) / 2;
    return x < m ? lo : x > m ? hi : (lo & 1 ? hi : lo);
}

static void check_narrow(double x, bool exact_text)
{
    char buf[256];
    osv_json_err_t err;
    uint16_t h, b;
    snprintf(buf, sizeof buf, exact_text ? "%.150e" : "%.17g", x);
    double xv = strtod(buf, NULL);
    assert_int_equal(dec1(buf, OSV_JSON_KIND_F16, &h, &err), 0);
    assert_int_equal(dec1(buf, OSV_JSON_KIND_BF16, &b, &err), 0);
    uint32_t want_h = ref_round(xv, half_val, 0x7bff, 0x7c00),
             want_b = ref_round(xv, bf16_val, 0x7f7f, 0x7f80);
    if (h != want_h || b != want_b)
        fail_msg("%s: f16 %04x want %04x, bf16 %04x want %04x", buf, h, want_h, b, (unsigned)want_b);
}

static void test_decode_f16_bf16(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint16_t f16, bf16;
    } cases[] = {
        {"1", 0x3c00, 0x3f80},
        {"-2", 0xc000, 0xc000},
        {"0.1", 0x2e66, 0x3dcd},
        {"65504", 0x7bff, 0x4780},
        {"65519.99", 0x7bff, 0x4780},
        {"65520", 0x7c00, 0x4780}, /* f16: tie between max and 2^16 -> even -> inf */
        {"1e10", 0x7c00, 0x5015},
        {"5.9604644775390625e-8", 0x0001, 0x3380},           /* 2^-24: smallest f16 subnormal */
        {"2.98023223876953125e-8", 0x0000, 0x3300},          /* 2^-25: tie with 0 -> even -> 0 */
        {"2.98023223876953125000000001e-8", 0x0001, 0x3300}, /* just above the tie: needs exact compare */
        {"2.98023223876953124999999999e-8", 0x0000, 0x3300},
        {"6.103515625e-5", 0x0400, 0x3880}, /* smallest f16 normal */
        {"1.00048828125", 0x3c00, 0x3f80},  /* 1 + 2^-11: f16 tie -> even (down) */
        {"1.00048828125000000000001", 0x3c01, 0x3f80},
        {"1.00146484375", 0x3c02, 0x3f80}, /* 1 + 3*2^-11: f16 tie -> even (up) */
        {"1.00390625", 0x3c04, 0x3f80},    /* 1 + 2^-8: bf16 tie -> even (down) */
        {"1.01171875", 0x3c0c, 0x3f82},    /* 1 + 3*2^-8: bf16 tie -> even (up) */
        {"1.0039062500000000000000001", 0x3c04, 0x3f81},
        {"3.3895313892515355e38", 0x7c00, 0x7f7f}, /* bf16 max */
        {"3.3961e38", 0x7c00, 0x7f7f},
        {"3.3962e38", 0x7c00, 0x7f80},             /* bf16 overflow midpoint is 3.39617752923e38 */
        {"9.183549615799121e-41", 0x0000, 0x0001}, /* 2^-133: smallest bf16 subnormal */
        {"-0", 0x8000, 0x8000},
        {"NaN", 0x7e00, 0x7fc0},
        {"-Infinity", 0xfc00, 0xff80},
        {"1e-400", 0x0000, 0x0000},
        {"-1e400", 0xfc00, 0xff80},
    };
    osv_json_err_t err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = 0, b = 0;
        assert_int_equal(dec1(cases[i].s, OSV_JSON_KIND_F16, &h, &err), 0);
        assert_int_equal(dec1(cases[i].s, OSV_JSON_KIND_BF16, &b, &err), 0);
        if (h != cases[i].f16 || b != cases[i].bf16)
            fail_msg("%s: f16 %04x want %04x, bf16 %04x want %04x", cases[i].s, h, cases[i].f16, b,
                     cases[i].bf16);
    }
    /* random values, and every f16/bf16 midpoint with its neighbours, against the reference */
    for (int i = 0; i < 20000; i++) {
        double x = ldexp((double)(rnd() >> 11), (int)(rnd() % 60) - 90);
        check_narrow(x, true);
        check_narrow(x, false);
    }
    for (uint32_t h = 0; h < 0x7bff; h += 1 + (uint32_t)(rnd() % 3)) {
        double m = (half_val(h) + half_val(h + 1)) / 2;
        check_narrow(m, true);
        check_narrow(nextafter(m, 0), true);
        check_narrow(nextafter(m, 1e9), true);
    }
    for (uint32_t h = 0; h < 0x7f7f; h += 1 + (uint32_t)(rnd() % 64)) {
        double m = (bf16_val(h) + bf16_val(h + 1)) / 2;
        if (m > 1e-60 && m < 1e60) { /* keep the exact text within the converter's length limit */
            check_narrow(m, true);
            check_narrow(nextafter(m, 0), true);
            check_narrow(nextafter(m, 1e300), true);
        }
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* F32 / F64 decoding against strtof / strtod                                                         */

static void check_f32_f64(const char *s)
{
    float f;
    double d;
    osv_json_err_t err;
    int rc = dec1(s, OSV_JSON_KIND_F32, &f, &err);
    if (rc)
        fail_msg("'%s': %s", s, err.msg);
    float wf = strtof(s, NULL);
    if (f2u(f) != f2u(wf))
        fail_msg("F32 '%s': got %a want %a", s, (double)f, (double)wf);
    assert_int_equal(dec1(s, OSV_JSON_KIND_F64, &d, &err), 0);
    double wd = strtod(s, NULL);
    if (d2u(d) != d2u(wd))
        fail_msg("F64 '%s': got %a want %a", s, d, wd);
}

static void test_decode_hard_cases(void **state)
{
    (void)state;
    static const char *cases[] = {
        "7.038531e-26",
        "0.1",
        "1e23",
        "2.2250738585072011e-308",
        "2.2250738585072012e-308",
        "9007199254740993",
        "9007199254740992",
        "9007199254740994",
        "4.9e-324",
        "2.4703282292062327e-324",
        "2.4703282292062328e-324",
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "3.4028235e38",
        "3.4028236e38",
        "3.40282356779733661637539395458142568448e38", /* f32 overflow tie */
        "3.40282356779733661637539395458142568447e38",
        "1.4e-45",
        "7e-46",
        "7.006492321624085354618647916449580656401e-46",
        "7.006492321624085354618647916449580656402e-46",
        "1.17549435e-38",
        "1.1754942e-38",
        "1.00000005960464477539062",
        "1.000000059604644775390625",
        "1.000000059604644775390626",
        "1.000000178813934326171875", /* f32 ties */
        "16777217",
        "16777219",
        "33554435",
        "0.30000001192092896",
        "123456789012345678901234567890",
        "0.000000000000000000000000000000000000000001",
        "1e-45",
        "1e-46",
        "1e38",
        "1e39",
        "1e-38",
        "8.589973e9",
        "0",
        "-0",
        "-0.0e+00",
        "1.5E+10",
        "0.5e-400",
        "1e400",
        "-1e400",
        "3.14159265358979323846264338327950288",
        "4.5035996273704955e15",
        "18446744073709551615",
        "18446744073709551616",
        "1152921504606846977",
        "9999999999999999999",
        "99999999999999999999",
        "0.0000000000000000000000000000000000001",
        "1.2e-7",
        "6.103515625e-5",
        "5.960464477539063e-8",
        "2.802596928649634e-45",
        "1.401298464324817e-45",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_f32_f64(cases[i]);
}

/* Random valid JSON number text of varied shape, length and exponent. */
static void gen_number(char *b, size_t cap)
{
    uint64_t r = rnd();
    int mode = (int)(r % 6);
    if (mode == 0 || mode == 1) { /* random digits, optional fraction and exponent */
        size_t n = 0, nd = 1 + rnd() % (mode ? 25 : 10), intd = 1 + rnd() % nd;
        if (rnd() & 1)
            b[n++] = '-';
        for (size_t i = 0; i < nd; i++) {
            if (i == intd)
                b[n++] = '.';
            bool lead_nonzero = i == 0 && intd > 1; /* no leading zeros in the integer part */
            b[n++] = (char)(lead_nonzero ? '1' + rnd() % 9 : '0' + rnd() % 10);
        }
        if (rnd() & 1)
            n += (size_t)snprintf(b + n, cap - n, "%s%d", rnd() & 1 ? "e" : "E", (int)(rnd() % 100) - 60);
        b[n] = 0;
    } else if (mode == 2) { /* a float printed with few..many digits */
        uint32_t u = (uint32_t)rnd() & 0x7f7fffffu;
        snprintf(b, cap, "%.*e", (int)(rnd() % 12), (double)u2f(u));
    } else if (mode == 3) { /* exact float32 midpoint, possibly nudged or truncated */
        uint32_t u = (uint32_t)rnd() & 0x7f7fffffu;
        double m = ((double)u2f(u) + (double)u2f(u + 1)) / 2;
        int prec = rnd() & 1 ? 120 : 8 + (int)(rnd() % 20);
        snprintf(b, cap, "%.*e", prec, m);
        if (rnd() & 1) { /* bump the last mantissa digit */
            char *e = strchr(b, 'e');
            if (e && e[-1] < '9')
                e[-1]++;
        }
    } else if (mode == 4) { /* a double printed with 15..19 digits (Python-style output) */
        double d = ldexp((double)(rnd() >> 11) / 9007199254740992.0, (int)(rnd() % 200) - 100);
        snprintf(b, cap, "%.*g", 15 + (int)(rnd() % 5), d);
    } else { /* exact double midpoint via long double, moderate exponents */
        double d = ldexp((double)((rnd() >> 11) | 1), (int)(rnd() % 120) - 110);
        long double m = ((long double)d + (long double)nextafter(d, 1e300)) / 2;
        snprintf(b, cap, "%.*Le", rnd() & 1 ? 110 : 17 + (int)(rnd() % 6), m);
    }
}

static void test_decode_random_vs_strtod(void **state)
{
    (void)state;
    char b[400];
    for (int i = 0; i < 1000000; i++) {
        gen_number(b, sizeof b);
        check_f32_f64(b);
    }
}

/* A KServe-style array of many numbers decodes element by element like strtof. */
static void test_decode_bulk(void **state)
{
    (void)state;
    enum { N = 3000 };
    static char buf[N * 32];
    static float want[N], got[N];
    size_t n = 0;
    buf[n++] = '[';
    for (int i = 0; i < N; i++) {
        char num[64];
        gen_number(num, sizeof num);
        want[i] = strtof(num, NULL);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? (i % 3 ? "," : " ,\n ") : "", num);
    }
    buf[n++] = ']';
    buf[n] = 0;
    osv_json_tok_t t[2];
    osv_json_doc_t d;
    osv_json_err_t err;
    assert_int_equal(osv_json_parse(buf, n, t, 2, NULL, &d, &err), 0);
    assert_int_equal(osv_json_leaves_decode(&d, 0, OSV_JSON_KIND_F32, got, N, &err), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(f2u(got[i]), f2u(want[i]));
}

/* ------------------------------------------------------------------------------------------------ */
/* Never reading past len                                                                             */

static void exercise(const char *src, size_t len)
{
    osv_json_tok_t t[64];
    osv_json_doc_t d;
    osv_json_err_t err;
    if (osv_json_parse(src, len, t, 64, NULL, &d, &err) != 0)
        return;
    for (uint32_t i = 0; i < d.ntok; i++) {
        double f[64];
        char s[256];
        size_t n;
        osv_json_leaf_iter_t it;
        osv_json_leaf_t lf;
        uint32_t dims[OSV_JSON_MAX_NDIM], nd;
        (void)osv_json_leaves_decode(&d, i, OSV_JSON_KIND_F64, f, d.toks[i].count, &err);
        (void)osv_json_leaves_decode(&d, i, OSV_JSON_KIND_I64, f, d.toks[i].count, &err);
        (void)osv_json_leaves_decode(&d, i, OSV_JSON_KIND_BOOL, f, d.toks[i].count, &err);
        (void)osv_json_leaves_decode(&d, i, OSV_JSON_KIND_F16, f, d.toks[i].count, &err);
        (void)osv_json_str_unescape(&d, i, s, sizeof s, &n);
        (void)osv_json_str_eq(&d, i, "key");
        (void)osv_json_obj_get(&d, i, "k\xc3\xa9y", 4);
        (void)osv_json_leaves_shape(&d, i, dims, &nd);
        if (osv_json_leaf_iter_init(&it, &d, i) == 0)
            while (osv_json_leaf_next(&it, &lf))
                ;
    }
}

static void test_no_read_past_end(void **state)
{
    (void)state;
    static const char *docs[] = {
        ("{\"inputs\":[{\"name\":\"x\",\"shape\":[2,2],\"datatype\":\"FP32\","
         "\"data\":[[1.5,-2e-3],[NaN,-Infinity]]}]}"),
        "[\"a\\u00e9\\ud83d\\ude00\\n\", \"caf\xc3\xa9\", true, false, null, 123456789012345678901234]",
        "{\"k\\u00e9y\":[[[1],[2]],[[3],[4]]],\"key\":{\"a\":[{}, [1, \"x\"]]}}",
        "[0,-0,1e5,1E-5,0.25,Infinity,NaN,[],[[]],{}]",
        "12345",
        "-1.5e+300",
        "\"str\\\\\"",
        "true",
        "false",
        "null",
        "NaN",
        "-Infinity",
        "Infinity",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        size_t n = strlen(docs[i]);
        for (size_t k = 0; k <= n; k++) { /* every prefix, each ending right before the guard page */
            guarded_t g = guard_put(docs[i], k);
            exercise(g.p, k);
            guard_free(&g);
        }
    }
    /* random mutations of a valid document */
    const char *base = docs[0];
    size_t n = strlen(base);
    char tmp[256];
    for (int r = 0; r < 3000; r++) {
        memcpy(tmp, base, n);
        for (int m = 0; m < 3; m++) {
            static const char alphabet[] = "[]{}\",:\\-.eE0123456789 tfnNI\x80\xff";
            tmp[rnd() % n] = alphabet[rnd() % (sizeof alphabet - 1)];
        }
        size_t k = 1 + rnd() % n;
        guarded_t g = guard_put(tmp, k);
        exercise(g.p, k);
        guard_free(&g);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Writer                                                                                             */

static void test_writer_structure(void **state)
{
    (void)state;
    char buf[512];
    osv_jw_t w;
    osv_jw_init(&w, buf, sizeof buf);
    assert_int_equal(osv_jw_obj_begin(&w), 0);
    osv_jw_key(&w, "model_name", 10);
    osv_jw_str(&w, "mlp", 3);
    osv_jw_key(&w, "outputs", 7);
    osv_jw_arr_begin(&w);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "shape", 5);
    osv_jw_arr_begin(&w);
    osv_jw_i64(&w, 1);
    osv_jw_u64(&w, 3);
    osv_jw_arr_end(&w);
    osv_jw_key(&w, "data", 4);
    float v[] = {0.5f, -1.0f, 1e-7f};
    osv_jw_f32_array(&w, v, 3);
    osv_jw_key(&w, "e", 1);
    osv_jw_arr_begin(&w);
    osv_jw_arr_end(&w);
    osv_jw_key(&w, "flags", 5);
    osv_jw_arr_begin(&w);
    osv_jw_bool(&w, true);
    osv_jw_bool(&w, false);
    osv_jw_null(&w);
    osv_jw_raw(&w, "{\"r\":1}", 7);
    osv_jw_f64(&w, 0.1);
    osv_jw_arr_end(&w);
    osv_jw_obj_end(&w);
    osv_jw_arr_end(&w);
    assert_int_equal(osv_jw_obj_end(&w), 0);
    assert_int_equal(osv_jw_error(&w), 0);
    const char *want =
        "{\"model_name\":\"mlp\",\"outputs\":[{\"shape\":[1,3],\"data\":[0.5,-1.0,1e-07],\"e\":[],"
        "\"flags\":[true,false,null,{\"r\":1},0.1]}]}";
    assert_int_equal(osv_jw_len(&w), strlen(want));
    assert_memory_equal(buf, want, strlen(want));
    /* and the reader accepts it */
    osv_json_tok_t t[32];
    osv_json_doc_t d;
    assert_int_equal(osv_json_parse(buf, osv_jw_len(&w), t, 32, NULL, &d, NULL), 0);
}

static void test_writer_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"a\"b\\c/", 6, "\"a\\\"b\\\\c/\""},
        {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
        {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\""},
        {"\0x", 2, "\"\\u0000x\""},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
        {"a\xff"
         "b",
         3,
         "\"a\xef\xbf\xbd"
         "b\""},                                                         /* invalid byte -> U+FFFD */
        {"\xc3", 1, "\"\xef\xbf\xbd\""},                                 /* truncated sequence */
        {"\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* encoded surrogate */
        {"\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\""},                 /* overlong */
        {"", 0, "\"\""},
    };
    char buf[256];
    osv_jw_t w;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        osv_jw_init(&w, buf, sizeof buf);
        assert_int_equal(osv_jw_str(&w, cases[i].in, cases[i].n), 0);
        assert_int_equal(osv_jw_len(&w), strlen(cases[i].out));
        assert_memory_equal(buf, cases[i].out, osv_jw_len(&w));
        assert_true(osv_jw_len(&w) <= osv_jw_str_max(cases[i].n));
        /* the output parses and unescapes to the input (valid UTF-8 inputs) */
        osv_json_tok_t t[2];
        osv_json_doc_t d;
        assert_int_equal(osv_json_parse(buf, osv_jw_len(&w), t, 2, NULL, &d, NULL), 0);
    }
    /* worst case: every byte a control character */
    char ctl[32];
    for (int i = 0; i < 32; i++)
        ctl[i] = (char)(i == 8 || i == 9 || i == 10 || i == 12 || i == 13 ? 1 : i);
    osv_jw_init(&w, buf, osv_jw_str_max(32));
    assert_int_equal(osv_jw_str(&w, ctl, 32), 0);
    assert_int_equal(osv_jw_len(&w), osv_jw_str_max(32));
    assert_true(osv_jw_str_max(SIZE_MAX / 2) == SIZE_MAX);
    /* keys escape too */
    osv_jw_init(&w, buf, sizeof buf);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "a\nb", 3);
    osv_jw_i64(&w, -1);
    osv_jw_obj_end(&w);
    assert_int_equal(osv_jw_len(&w), 11);
    assert_memory_equal(buf, "{\"a\\nb\":-1}", 11);
}

static void test_writer_overflow_and_misuse(void **state)
{
    (void)state;
    char buf[64];
    osv_jw_t w;
    /* every prefix capacity: the writer fails cleanly and never writes past cap */
    const char *full = "{\"k\":[1,\"two\",3.5,true],\"n\":null}";
    for (size_t cap = 0; cap <= strlen(full); cap++) {
        memset(buf, '#', sizeof buf);
        osv_jw_init(&w, buf, cap);
        osv_jw_obj_begin(&w);
        osv_jw_key(&w, "k", 1);
        osv_jw_arr_begin(&w);
        osv_jw_i64(&w, 1);
        osv_jw_str(&w, "two", 3);
        osv_jw_f32(&w, 3.5f);
        osv_jw_bool(&w, true);
        osv_jw_arr_end(&w);
        osv_jw_key(&w, "n", 1);
        osv_jw_null(&w);
        int rc = osv_jw_obj_end(&w);
        assert_int_equal(buf[cap], '#');
        if (cap < strlen(full)) {
            assert_int_equal(rc, OSV_JSON_ENOSPC);
            assert_int_equal(osv_jw_error(&w), OSV_JSON_ENOSPC);
            assert_true(osv_jw_len(&w) <= cap);
            assert_memory_equal(buf, full, osv_jw_len(&w));       /* a clean prefix */
            assert_int_equal(osv_jw_i64(&w, 1), OSV_JSON_ENOSPC); /* sticky */
        } else {
            assert_int_equal(rc, 0);
            assert_memory_equal(buf, full, cap);
        }
    }
    /* a failed string leaves no partial value behind */
    osv_jw_init(&w, buf, 8);
    osv_jw_arr_begin(&w);
    assert_int_equal(osv_jw_str(&w, "abcdefgh", 8), OSV_JSON_ENOSPC);
    assert_int_equal(osv_jw_len(&w), 1);
    osv_jw_init(&w, buf, 10);
    assert_int_equal(osv_jw_f32_array(&w, (float[]){1.5f, 2.5f, 3.5f}, 3), OSV_JSON_ENOSPC);
    assert_int_equal(osv_jw_len(&w), 0);

    /* misuse -> EINVAL */
    osv_jw_init(&w, buf, sizeof buf);
    assert_int_equal(osv_jw_arr_end(&w), OSV_JSON_EINVAL);
    osv_jw_init(&w, buf, sizeof buf);
    osv_jw_obj_begin(&w);
    assert_int_equal(osv_jw_i64(&w, 1), OSV_JSON_EINVAL); /* value without key */
    osv_jw_init(&w, buf, sizeof buf);
    osv_jw_arr_begin(&w);
    assert_int_equal(osv_jw_key(&w, "k", 1), OSV_JSON_EINVAL); /* key in array */
    osv_jw_init(&w, buf, sizeof buf);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "k", 1);
    assert_int_equal(osv_jw_key(&w, "j", 1), OSV_JSON_EINVAL); /* two keys */
    osv_jw_init(&w, buf, sizeof buf);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "k", 1);
    assert_int_equal(osv_jw_obj_end(&w), OSV_JSON_EINVAL); /* key without value */
    osv_jw_init(&w, buf, sizeof buf);
    osv_jw_arr_begin(&w);
    assert_int_equal(osv_jw_obj_end(&w), OSV_JSON_EINVAL); /* mismatched */
    osv_jw_init(&w, buf, sizeof buf);
    osv_jw_i64(&w, 1);
    assert_int_equal(osv_jw_i64(&w, 2), OSV_JSON_EINVAL); /* second top-level value */
    osv_jw_init(&w, buf, sizeof buf);
    for (int i = 0; i < 64; i++)
        assert_int_equal(osv_jw_arr_begin(&w), 0);
    assert_int_equal(osv_jw_arr_begin(&w), OSV_JSON_EINVAL);
}

static void test_writer_ints(void **state)
{
    (void)state;
    char buf[64], want[64];
    int64_t iv[] = {0, 1, -1, 9, 10, 99, 100, -100, INT64_MAX, INT64_MIN, INT64_MIN + 1, 1000000000000000000};
    for (size_t i = 0; i < sizeof iv / sizeof iv[0]; i++) {
        osv_jw_t w;
        osv_jw_init(&w, buf, sizeof buf);
        osv_jw_i64(&w, iv[i]);
        int n = snprintf(want, sizeof want, "%lld", (long long)iv[i]);
        assert_int_equal(osv_jw_len(&w), (size_t)n);
        assert_memory_equal(buf, want, (size_t)n);
    }
    for (int i = 0; i < 200000; i++) {
        uint64_t u = rnd() >> (rnd() % 64);
        osv_jw_t w;
        osv_jw_init(&w, buf, sizeof buf);
        osv_jw_u64(&w, u);
        int n = snprintf(want, sizeof want, "%llu", (unsigned long long)u);
        assert_int_equal(osv_jw_len(&w), (size_t)n);
        assert_memory_equal(buf, want, (size_t)n);
        osv_jw_init(&w, buf, sizeof buf);
        osv_jw_i64(&w, (int64_t)u);
        n = snprintf(want, sizeof want, "%lld", (long long)(int64_t)u);
        assert_memory_equal(buf, want, (size_t)n);
    }
    osv_jw_t w;
    osv_jw_init(&w, buf, OSV_JW_MAX_U64_CHARS);
    assert_int_equal(osv_jw_u64(&w, UINT64_MAX), 0);
    osv_jw_init(&w, buf, OSV_JW_MAX_I64_CHARS);
    assert_int_equal(osv_jw_i64(&w, INT64_MIN), 0);
}

/* Formats f and checks: parses back to the same bits via strtof, <= 9 significant digits, length bound,
 * and the reader's own F32 conversion agrees. Returns 0 or a description of the failure. */
static const char *f32_check(uint32_t u, char *buf, size_t *lenp)
{
    float f = u2f(u);
    size_t n = osv_jw_f32_chars(f, buf);
    *lenp = n;
    if (n > OSV_JW_MAX_F32_CHARS)
        return "too long";
    buf[n] = 0;
    if (isnan(f))
        return strcmp(buf, "\"NaN\"") == 0 ? NULL : "NaN text";
    if (isinf(f))
        return strcmp(buf, f > 0 ? "\"Infinity\"" : "\"-Infinity\"") == 0 ? NULL : "infinity text";
    float g = strtof(buf, NULL);
    if (f2u(g) != u)
        return "round trip";
    char dg[64];
    size_t nd = 0;
    for (const char *p = buf; *p && *p != 'e'; p++)
        if ((*p >= '1' && *p <= '9') || (*p == '0' && nd))
            dg[nd++] = *p;
    while (nd && dg[nd - 1] == '0') /* padding zeros of the positional form are not significant */
        nd--;
    if (nd > 9)
        return "too many digits";
    return NULL;
}

static void test_writer_f32(void **state)
{
    (void)state;
    static const struct {
        float f;
        const char *s;
    } cases[] = {
        {0.0f, "0.0"},
        {-0.0f, "-0.0"},
        {1.0f, "1.0"},
        {-2.5f, "-2.5"},
        {0.1f, "0.1"},
        {1e-7f, "1e-07"},
        {1e16f, "1e+16"},
        {1e15f, "1000000000000000.0"},
        {0.0001f, "0.0001"},
        {1e-5f, "1e-05"},
        {123456.79f, "123456.79"},
        {3.4028235e38f, "3.4028235e+38"},
        {1.4e-45f, "1e-45"},
        {16777216.0f, "16777216.0"},
        {1.17549435e-38f, "1.1754944e-38"},
        {(float)INFINITY, "\"Infinity\""}, /* strings: JSON has no such numbers */
        {-(float)INFINITY, "\"-Infinity\""},
        {(float)NAN, "\"NaN\""},
    };
    char buf[64];
    size_t n;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        n = osv_jw_f32_chars(cases[i].f, buf);
        buf[n] = 0;
        if (strcmp(buf, cases[i].s) != 0)
            fail_msg("%a: got '%s' want '%s'", (double)cases[i].f, buf, cases[i].s);
    }
    /* special bit patterns: zeros, subnormal and normal boundaries, max, inf, NaNs, powers of 2 and 10 */
    uint32_t specials[] = {0,          1,          2,          3,          0x7fffff,   0x800000,
                           0x800001,   0x7f7fffff, 0x7f7ffffe, 0x7f800000, 0x7f800001, 0x7fc00000,
                           0x7fffffff, 0x3f800000, 0x3f7fffff, 0x3f800001};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        for (uint32_t sign = 0; sign < 2; sign++) {
            const char *why = f32_check(specials[i] | sign << 31, buf, &n);
            if (why)
                fail_msg("%08x: %s ('%s')", specials[i] | sign << 31, why, buf);
        }
    for (int e = -149; e <= 127; e++) {
        float f = ldexpf(1.0f, e);
        assert_null(f32_check(f2u(f), buf, &n));
    }
    for (int e = -45; e <= 38; e++) {
        char t[32];
        snprintf(t, sizeof t, "1e%d", e);
        uint32_t u = f2u(strtof(t, NULL));
        for (uint32_t d = 0; d < 3; d++) {
            assert_null(f32_check(u - 1 + d, buf, &n));
        }
    }
    /* 10 million random patterns */
    for (int i = 0; i < 10000000; i++) {
        uint32_t u = (uint32_t)rnd();
        const char *why = f32_check(u, buf, &n);
        if (why)
            fail_msg("%08x: %s ('%s')", u, why, buf);
    }
}

static void test_writer_f64(void **state)
{
    (void)state;
    static const struct {
        double d;
        const char *s;
    } cases[] = {
        {0.1, "0.1"},
        {1.0 / 3, "0.3333333333333333"},
        {100.0, "100.0"},
        {1e16, "1e+16"},
        {-1.5e-300, "-1.5e-300"},
        {1e300 * 1e300, "\"Infinity\""},
        {0.0, "0.0"},
        {123456789.125, "123456789.125"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {2.2250738585072014e-308, "2.2250738585072014e-308"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = osv_jw_f64_chars(cases[i].d, buf);
        buf[n] = 0;
        assert_string_equal(buf, cases[i].s);
    }
    for (int i = 0; i < 300000; i++) {
        uint64_t u = rnd();
        double d;
        memcpy(&d, &u, sizeof d);
        size_t n = osv_jw_f64_chars(d, buf);
        assert_true(n <= OSV_JW_MAX_F64_CHARS);
        buf[n] = 0;
        if (isnan(d)) {
            assert_string_equal(buf, "\"NaN\"");
            continue;
        }
        if (isinf(d)) {
            assert_string_equal(buf, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
            continue;
        }
        double e;
        osv_json_err_t err;
        assert_int_equal(dec1(buf, OSV_JSON_KIND_F64, &e, &err), 0); /* our reader, which matches strtod */
        if (d2u(e) != u || d2u(strtod(buf, NULL)) != u)
            fail_msg("%016llx -> '%s'", (unsigned long long)u, buf);
    }
}

/* Writer output read back by the reader: F32 arrays survive exactly. */
/* NaN and the infinities travel as the strings the writer produces; the reader takes them back for
 * every float kind (and nothing else as a string). */
static void test_quoted_specials(void **state)
{
    (void)state;
    float f[4];
    double d[3];
    uint16_t h[3];
    osv_json_err_t err;
    pdoc_t *p = parse("[\"NaN\", \"Infinity\", \"-Infinity\", 1.5]");
    assert_int_equal(p->rc, 0);
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_F32, f, 4, &err), 0);
    assert_true(isnan(f[0]));
    assert_true(isinf(f[1]) && f[1] > 0);
    assert_true(isinf(f[2]) && f[2] < 0);
    assert_true(f[3] == 1.5f);
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_F64, d, 3, &err), OSV_JSON_ECOUNT);
    p = parse("[\"NaN\", \"-Infinity\", 2]");
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_F64, d, 3, &err), 0);
    assert_true(isnan(d[0]) && isinf(d[1]) && d[1] < 0 && d[2] == 2.0);
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_F16, h, 3, &err), 0);
    assert_int_equal(h[1], 0xfc00);
    static const char *bad[] = {"[\"nan\"]", "[\"Inf\"]", "[\"1.5\"]", "[\"NaN \"]", "[\"+Infinity\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = parse(bad[i]);
        assert_int_equal(p->rc, 0);
        assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_F32, f, 1, &err), OSV_JSON_ETYPE);
    }
    p = parse("[\"NaN\"]");
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_I32, f, 1, &err), OSV_JSON_ETYPE);
    /* writer -> reader */
    char buf[128];
    osv_jw_t w;
    float in[3] = {NAN, INFINITY, -INFINITY};
    osv_jw_init(&w, buf, sizeof buf);
    osv_jw_f32_array(&w, in, 3);
    buf[osv_jw_len(&w)] = 0;
    assert_string_equal(buf, "[\"NaN\",\"Infinity\",\"-Infinity\"]");
    p = parse(buf);
    assert_int_equal(osv_json_leaves_decode(&p->doc, 0, OSV_JSON_KIND_F32, f, 3, &err), 0);
    assert_true(isnan(f[0]) && f[1] == INFINITY && f[2] == -INFINITY);
}

static void test_writer_reader_roundtrip(void **state)
{
    (void)state;
    enum { N = 5000 };
    static float v[N], back[N];
    static char buf[N * (OSV_JW_MAX_F32_CHARS + 1) + 2];
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)rnd();
        v[i] = isnan(u2f(u)) ? 0.0f : u2f(u);
    }
    osv_jw_t w;
    osv_jw_init(&w, buf, sizeof buf);
    assert_int_equal(osv_jw_f32_array(&w, v, N), 0);
    osv_json_tok_t t[2];
    osv_json_doc_t d;
    osv_json_err_t err;
    assert_int_equal(osv_json_parse(buf, osv_jw_len(&w), t, 2, NULL, &d, &err), 0);
    assert_int_equal(osv_json_leaves_decode(&d, 0, OSV_JSON_KIND_F32, back, N, &err), 0);
    assert_memory_equal(v, back, sizeof v);
}

/* ------------------------------------------------------------------------------------------------ */
/* Exhaustive float32 formatting check (--f32-exhaustive, not part of the unit run)                   */

typedef struct ex_arg {
    uint64_t lo, hi, bad, maxlen;
} ex_arg_t;

static void *ex_worker(void *p)
{
    ex_arg_t *a = p;
    char buf[64];
    size_t n;
    for (uint64_t u = a->lo; u < a->hi; u++) {
        const char *why = f32_check((uint32_t)u, buf, &n);
        if (n > a->maxlen)
            a->maxlen = n;
        if (why && a->bad++ < 10)
            fprintf(stderr, "FAIL %08x: %s ('%s')\n", (unsigned)u, why, buf);
    }
    return NULL;
}

static int f32_exhaustive(void)
{
    long nt = sysconf(_SC_NPROCESSORS_ONLN);
    nt = nt < 1 ? 1 : nt > 16 ? 16 : nt;
    pthread_t th[16];
    ex_arg_t args[16];
    uint64_t total = 1ull << 32, bad = 0, maxlen = 0;
    for (long i = 0; i < nt; i++) {
        args[i] =
            (ex_arg_t){total * (uint64_t)i / (uint64_t)nt, total * (uint64_t)(i + 1) / (uint64_t)nt, 0, 0};
        pthread_create(&th[i], NULL, ex_worker, &args[i]);
    }
    for (long i = 0; i < nt; i++) {
        pthread_join(th[i], NULL);
        bad += args[i].bad;
        maxlen = args[i].maxlen > maxlen ? args[i].maxlen : maxlen;
    }
    printf("f32 exhaustive: %llu patterns, %llu failures, longest output %llu chars (%ld threads)\n",
           (unsigned long long)total, (unsigned long long)bad, (unsigned long long)maxlen, nt);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--f32-exhaustive") == 0)
        return f32_exhaustive();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_kserve),
        cmocka_unit_test(test_scalars_and_whitespace),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_token_limit),
        cmocka_unit_test(test_string_limit),
        cmocka_unit_test(test_leaf_arrays),
        cmocka_unit_test(test_leaf_shape_slots),
        cmocka_unit_test(test_leaf_fallback_deep),
        cmocka_unit_test(test_obj_get_escaped_keys),
        cmocka_unit_test(test_unescape),
        cmocka_unit_test(test_leaf_iter_strings),
        cmocka_unit_test(test_decode_ints),
        cmocka_unit_test(test_decode_bool),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_tok_conversions),
        cmocka_unit_test(test_decode_f16_bf16),
        cmocka_unit_test(test_decode_hard_cases),
        cmocka_unit_test(test_decode_random_vs_strtod),
        cmocka_unit_test(test_decode_bulk),
        cmocka_unit_test(test_no_read_past_end),
        cmocka_unit_test(test_writer_structure),
        cmocka_unit_test(test_writer_escaping),
        cmocka_unit_test(test_writer_overflow_and_misuse),
        cmocka_unit_test(test_writer_ints),
        cmocka_unit_test(test_writer_f32),
        cmocka_unit_test(test_writer_f64),
        cmocka_unit_test(test_writer_reader_roundtrip),
        cmocka_unit_test(test_quoted_specials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
