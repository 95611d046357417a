/* util/json.c — allocation-free JSON reader (leaf arrays, exact number decoding) and bounded writer.
 *
 * Layout: character classes and errors; the validating parser (ordinary containers are tokenized, arrays
 * of scalars are validated by leaf_scan() as one token); token accessors and unescaping; exact number
 * conversion; leaf decoding; the writer with its float formatting. See json.h for the contracts. */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOT       inline __attribute__((always_inline)) /* per-number paths of the big-array loops */
#define NONE      UINT32_MAX
#define FAILSTACK 64  /* open-array positions remembered when a leaf scan meets an object */
#define SLOW_MAX  350 /* longest number text converted by the strtod() slow path */

/* ------------------------------------------------------------------------------------------------ */
/* Character classes                                                                                  */

enum {
    C_WS = 1,   /* JSON whitespace */
    C_SEP = 2,  /* whitespace , [ ] (separators inside a validated leaf array) */
    C_STR = 4,  /* needs attention inside a string: '"', '\\', control, non-ASCII */
    C_IDENT = 8 /* may continue a number/literal token: [A-Za-z0-9_.+-] */
};

/* Generated from the enum above (bytes 0x00-0xff). */
static const unsigned char cls[256] = {
    4, 4, 4, 4, 4, 4, 4, 4, 4, 7, 7, 4, 4, 7, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 8, 8, 0, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0,
    0, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 2, 4, 2, 0, 8,
    0, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

static unsigned char cls_of(unsigned char c)
{
    return cls[c];
}

static inline float u2f_(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t f2u_(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static bool is_digit(char c)
{
    return (unsigned)(c - '0') < 10;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR 1 /* 8-byte digit tricks below assume little-endian loads */
#else
#define SWAR 0
#endif

/* Number of leading ASCII digits in the 8 bytes v (loaded little-endian from memory). A byte is a digit
 * when its high nibble is 3 both before and after adding 6; a carry out of a non-digit byte can only
 * disturb later bytes, which do not matter once an earlier non-digit is found. */
static HOT unsigned digits8(uint64_t v)
{
    uint64_t a = v & 0xf0f0f0f0f0f0f0f0ull, b = (v + 0x0606060606060606ull) & 0xf0f0f0f0f0f0f0f0ull;
    uint64_t x = (a ^ 0x3030303030303030ull) | (b ^ 0x3030303030303030ull);
    return x ? (unsigned)__builtin_ctzll(x) / 8 : 8;
}

/* Value of the first L (1..8) ASCII digits of v: left-pad with '0's, then the 8-digit multiply trick. */
static HOT uint64_t digits_value(uint64_t v, unsigned L)
{
    if (L < 8)
        v = (v << (64 - 8 * L)) | (0x3030303030303030ull >> (8 * L));
    v -= 0x3030303030303030ull;
    v = v * 10 + (v >> 8);
    v = (((v & 0x000000ff000000ffull) * (100 + (1000000ull << 32))) +
         (((v >> 16) & 0x000000ff000000ffull) * (1 + (10000ull << 32)))) >>
        32;
    return v;
}

/* Position after the run of digits starting at p (bounded by n). */
static HOT uint32_t skip_digits(const char *s, uint32_t p, uint32_t n)
{
#if SWAR
    while (n - p >= 8) {
        uint64_t v;
        memcpy(&v, s + p, sizeof v);
        unsigned L = digits8(v);
        p += L;
        if (L < 8)
            return p;
    }
#endif
    while (p < n && is_digit(s[p]))
        p++;
    return p;
}

/* ------------------------------------------------------------------------------------------------ */
/* Errors                                                                                             */

__attribute__((format(printf, 4, 5))) static int set_err(osv_json_err_t *err, int code, size_t pos,
                                                         const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    err->pos = pos;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, " at byte %zu", pos);
    return code;
}

static void clear_err(osv_json_err_t *err)
{
    if (err) {
        err->code = 0;
        err->pos = 0;
        err->msg[0] = '\0';
    }
}

/* Printable description of the byte at p for messages ("'x'", "byte 0x07", "end of input"). */
static const char *describe(const char *s, uint32_t n, uint32_t p, char buf[16])
{
    if (p >= n)
        return "end of input";
    unsigned char c = (unsigned char)s[p];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

/* ------------------------------------------------------------------------------------------------ */
/* UTF-8                                                                                              */

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or > U+10FFFF) starting
 * at s with avail bytes available, or 0 if there is none. */
static uint32_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xc2 || c > 0xf4)
        return 0;
    if (c < 0xe0)
        return avail >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c < 0xf0) {
        if (avail < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
            return 0;
        return 3;
    }
    if (avail < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
        return 0;
    if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
        return 0;
    return 4;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Value of the 4 hex digits at s, or -1. */
static int32_t hex4(const char *s)
{
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* ------------------------------------------------------------------------------------------------ */
/* Parser state and scalar scanners                                                                   */

typedef struct parser {
    const char *src;
    uint32_t len;
    uint32_t pos;
    osv_json_tok_t *toks;
    uint32_t ntok, maxtok;
    uint32_t max_depth, max_str;
    uint32_t depth; /* open ordinary containers */
    osv_json_doc_t *doc;
    osv_json_err_t *err;
    uint32_t nfail, ifail;    /* arrays known to contain an object (see take_failpos) */
    uint32_t fail[FAILSTACK]; /* their '[' positions, ascending */
} parser_t;

static HOT uint32_t skip_ws(const char *s, uint32_t p, uint32_t n)
{
    while (p < n && (cls_of((unsigned char)s[p]) & C_WS))
        p++;
    return p;
}

static bool match(const char *s, uint32_t p, uint32_t n, const char *lit, uint32_t litlen)
{
    return n - p >= litlen && memcmp(s + p, lit, litlen) == 0;
}

static bool ident_follows(const parser_t *ps, uint32_t p)
{
    return p < ps->len && (cls_of((unsigned char)ps->src[p]) & C_IDENT);
}

/* Number at p ('-', digit, 'N' or 'I'): RFC 8259 grammar plus NaN, Infinity, -Infinity. */
static HOT int scan_number(parser_t *ps, uint32_t p, uint32_t *endp, bool *nonint)
{
    const char *s = ps->src;
    uint32_t n = ps->len, st = p;
    *nonint = false;
    p += s[p] == '-';
    if (p < n && (s[p] == 'I' || s[p] == 'N')) {
        bool inf = s[p] == 'I';
        if (inf ? !match(s, p, n, "Infinity", 8) : (p != st || !match(s, p, n, "NaN", 3)))
            return set_err(ps->err, OSV_JSON_ESYNTAX, st, "invalid literal");
        p += inf ? 8 : 3;
        *nonint = true;
    } else {
        if (p >= n || !is_digit(s[p]))
            return set_err(ps->err, OSV_JSON_ESYNTAX, st, "invalid number");
        p = s[p] == '0' ? p + 1 : skip_digits(s, p, n);
        if (p < n && s[p] == '.') {
            if (++p >= n || !is_digit(s[p]))
                return set_err(ps->err, OSV_JSON_ESYNTAX, st, "invalid number (digit expected after '.')");
            p = skip_digits(s, p, n);
            *nonint = true;
        }
        if (p < n && (s[p] | 0x20) == 'e') {
            p++;
            if (p < n && (s[p] == '+' || s[p] == '-'))
                p++;
            if (p >= n || !is_digit(s[p]))
                return set_err(ps->err, OSV_JSON_ESYNTAX, st, "invalid number (digit expected in exponent)");
            p = skip_digits(s, p, n);
            *nonint = true;
        }
    }
    if (ident_follows(ps, p))
        return set_err(ps->err, OSV_JSON_ESYNTAX, st, "invalid number");
    *endp = p;
    return 0;
}

/* true / false / null at p; *type receives the token type. */
static int scan_literal(parser_t *ps, uint32_t p, uint32_t *endp, uint8_t *type)
{
    const char *s = ps->src;
    uint32_t n = ps->len, l;
    if (match(s, p, n, "true", 4)) {
        *type = OSV_JSON_TRUE;
        l = 4;
    } else if (match(s, p, n, "false", 5)) {
        *type = OSV_JSON_FALSE;
        l = 5;
    } else if (match(s, p, n, "null", 4)) {
        *type = OSV_JSON_NULL;
        l = 4;
    } else {
        return set_err(ps->err, OSV_JSON_ESYNTAX, p, "invalid literal");
    }
    if (ident_follows(ps, p + l))
        return set_err(ps->err, OSV_JSON_ESYNTAX, p, "invalid literal");
    *endp = p + l;
    return 0;
}

/* Escape sequence at p (the byte after '\'); returns the position after it. */
static int scan_escape(parser_t *ps, uint32_t p, uint32_t *endp)
{
    const char *s = ps->src;
    uint32_t n = ps->len;
    if (p >= n)
        return set_err(ps->err, OSV_JSON_ESYNTAX, n, "unterminated string");
    switch (s[p]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        *endp = p + 1;
        return 0;
    case 'u':
        if (n - p < 5 || hex4(s + p + 1) < 0)
            return set_err(ps->err, OSV_JSON_ESYNTAX, p - 1, "invalid \\u escape (4 hex digits expected)");
        *endp = p + 5;
        return 0;
    default: {
        char b[16];
        return set_err(ps->err, OSV_JSON_ESYNTAX, p - 1, "invalid escape: '\\' followed by %s",
                       describe(s, n, p, b));
    }
    }
}

/* String whose opening quote is at q. *endp: the byte after the closing quote. */
static int scan_string(parser_t *ps, uint32_t q, uint32_t *endp, bool *escaped)
{
    const unsigned char *s = (const unsigned char *)ps->src;
    uint32_t n = ps->len, p = q + 1;
    int rc;
    *escaped = false;
    for (;;) {
        while (p < n && !(cls_of(s[p]) & C_STR))
            p++;
        if (p >= n)
            return set_err(ps->err, OSV_JSON_ESYNTAX, q, "unterminated string");
        unsigned c = s[p];
        if (c == '"')
            break;
        if (c == '\\') {
            *escaped = true;
            if ((rc = scan_escape(ps, p + 1, &p)) < 0)
                return rc;
        } else if (c < 0x20) {
            return set_err(ps->err, OSV_JSON_ESYNTAX, p, "control character 0x%02x in string", c);
        } else {
            uint32_t k = utf8_len(s + p, n - p);
            if (!k)
                return set_err(ps->err, OSV_JSON_EUTF8, p, "invalid UTF-8 in string");
            p += k;
        }
    }
    if (p - q - 1 > ps->max_str)
        return set_err(ps->err, OSV_JSON_ESTRLEN, q, "string longer than %u bytes", ps->max_str);
    *endp = p + 1;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Leaf arrays                                                                                        */

/* Rectangularity of nested arrays, fed open/scalar/close events with 1-based nesting levels. Levels
 * beyond OSV_JSON_MAX_NDIM share one counter slot and make the array non-rectangular. */
typedef struct shape_acc {
    uint32_t cnt[OSV_JSON_MAX_NDIM + 2];  /* elements so far in the open array of each level */
    uint32_t dims[OSV_JSON_MAX_NDIM + 2]; /* length of the first closed array of each level */
    uint32_t dimset;                      /* bit l: dims[l] recorded */
    uint32_t leafdepth, maxd;
    bool rect;
} shape_acc_t;

static uint32_t acc_lvl(uint32_t d)
{
    return d <= OSV_JSON_MAX_NDIM ? d : OSV_JSON_MAX_NDIM + 1;
}

static void acc_init(shape_acc_t *a)
{
    a->dimset = 0;
    a->leafdepth = 0;
    a->maxd = 0;
    a->rect = true;
}

static void acc_open(shape_acc_t *a, uint32_t d)
{
    if (d > a->maxd) {
        a->maxd = d;
        if (d > OSV_JSON_MAX_NDIM)
            a->rect = false;
    }
    a->cnt[acc_lvl(d)] = 0;
}

static void acc_scalars(shape_acc_t *a, uint32_t d, uint32_t k)
{
    a->cnt[acc_lvl(d)] += k;
    if (d != a->leafdepth) {
        if (a->leafdepth)
            a->rect = false;
        a->leafdepth = d;
    }
}

static void acc_close(shape_acc_t *a, uint32_t d)
{
    if (d <= OSV_JSON_MAX_NDIM) {
        if (!(a->dimset & (1u << d))) {
            a->dims[d] = a->cnt[d];
            a->dimset |= 1u << d;
        } else if (a->dims[d] != a->cnt[d]) {
            a->rect = false;
        }
    }
    if (d > 1)
        a->cnt[acc_lvl(d - 1)]++;
}

static bool acc_done(shape_acc_t *a)
{
    if (a->leafdepth && a->leafdepth != a->maxd)
        a->rect = false;
    return a->rect;
}

typedef struct leaf_res {
    uint32_t end; /* byte after the closing ']' */
    uint32_t count;
    uint8_t flags;
    shape_acc_t acc;
} leaf_res_t;

/* A run of numbers separated by bare commas ("1,2.5,-3"), the bulk of tensor data: *k receives how
 * many, *endp the byte after the last one. */
static HOT int leaf_numbers(parser_t *ps, uint32_t p, uint32_t *endp, uint32_t *k, bool *nonint)
{
    const char *s = ps->src;
    uint32_t n = ps->len, cnt = 0;
    bool any = false, x = false;
    int rc;
    for (;;) {
        if ((rc = scan_number(ps, p, &p, &x)) < 0)
            return rc;
        cnt++;
        any |= x;
        if (n - p < 2 || s[p] != ',' || !(is_digit(s[p + 1]) || s[p + 1] == '-'))
            break;
        p++;
    }
    *endp = p;
    *k = cnt;
    *nonint = any;
    return 0;
}

/* One scalar (or a run of numbers) inside a leaf scan at p; updates counters and flags. */
static int leaf_scalar(parser_t *ps, uint32_t p, uint32_t *endp, uint32_t d, leaf_res_t *r)
{
    char c = ps->src[p];
    bool x = false;
    uint8_t t = 0, fl;
    uint32_t k = 1;
    int rc;
    if (c == '"') {
        rc = scan_string(ps, p, endp, &x);
        fl = (uint8_t)(OSV_JSON_F_HAS_STR | (x ? OSV_JSON_F_ESCAPED : 0));
    } else if (is_digit(c) || c == '-' || c == 'N' || c == 'I') {
        rc = leaf_numbers(ps, p, endp, &k, &x);
        fl = (uint8_t)(OSV_JSON_F_HAS_NUM | (x ? OSV_JSON_F_NONINT : 0));
    } else if (c == 't' || c == 'f' || c == 'n') {
        rc = scan_literal(ps, p, endp, &t);
        fl = t == OSV_JSON_TRUE    ? OSV_JSON_F_HAS_TRUE
             : t == OSV_JSON_FALSE ? OSV_JSON_F_HAS_FALSE
                                   : OSV_JSON_F_HAS_NULL;
    } else {
        char b[16];
        return set_err(ps->err, OSV_JSON_ESYNTAX, p, "unexpected %s, expected a value",
                       describe(ps->src, ps->len, p, b));
    }
    if (rc < 0)
        return rc;
    r->flags |= fl;
    r->count += k;
    acc_scalars(&r->acc, d, k);
    return 0;
}

static int err_depth(parser_t *ps, uint32_t p)
{
    return set_err(ps->err, OSV_JSON_EDEPTH, p, "nesting deeper than %u", ps->max_depth);
}

static int err_eof(parser_t *ps, const char *what)
{
    return set_err(ps->err, OSV_JSON_ESYNTAX, ps->len, "unexpected end of input, expected %s", what);
}

/* Validates the array whose '[' is at start as a leaf array without emitting tokens. Returns 0 (leaf
 * array, *r filled), 1 (it contains an object: the positions of the arrays open at that point are left
 * in ps->fail so the caller tokenizes them, each byte being scanned at most twice overall) or an error. */
static int leaf_scan(parser_t *ps, uint32_t start, leaf_res_t *r)
{
    enum { W_FIRST, W_VALUE, W_SEP } want = W_FIRST; /* after '[', after ',', after a value */
    const char *s = ps->src;
    uint32_t n = ps->len, p = start + 1, d = 1;
    uint32_t open[FAILSTACK];
    int rc;
    if (ps->depth + 1 > ps->max_depth)
        return err_depth(ps, start);
    open[0] = start;
    r->end = start;
    r->count = 0;
    r->flags = 0;
    acc_init(&r->acc);
    acc_open(&r->acc, 1);
    for (;;) {
        p = skip_ws(s, p, n);
        if (p >= n)
            return err_eof(ps, want == W_SEP ? "',' or ']'" : "a value");
        char c = s[p];
        if (c == ']' && want != W_VALUE) {
            acc_close(&r->acc, d);
            p++;
            if (--d == 0)
                break;
            want = W_SEP;
        } else if (want == W_SEP) {
            char b[16];
            if (c != ',')
                return set_err(ps->err, OSV_JSON_ESYNTAX, p, "expected ',' or ']', got %s",
                               describe(s, n, p, b));
            p++;
            want = W_VALUE;
        } else if (c == '[') {
            if (ps->depth + ++d > ps->max_depth)
                return err_depth(ps, p);
            if (d <= FAILSTACK)
                open[d - 1] = p;
            acc_open(&r->acc, d);
            p++;
            want = W_FIRST;
        } else if (c == '{') {
            ps->nfail = d < FAILSTACK ? d : FAILSTACK;
            memcpy(ps->fail, open, ps->nfail * sizeof open[0]);
            ps->ifail = 0;
            return 1;
        } else {
            if ((rc = leaf_scalar(ps, p, &p, d, r)) < 0)
                return rc;
            want = W_SEP;
        }
    }
    r->end = p;
    return 0;
}

/* True when the array at pos is known (from an earlier failed leaf scan) to contain an object. */
static bool take_failpos(parser_t *ps, uint32_t pos)
{
    while (ps->ifail < ps->nfail && ps->fail[ps->ifail] < pos)
        ps->ifail++;
    if (ps->ifail < ps->nfail && ps->fail[ps->ifail] == pos) {
        ps->ifail++;
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------------------------------------ */
/* Tokenizing parser                                                                                  */

enum { ST_VALUE, ST_KEY, ST_AFTER, ST_DONE };

static int new_tok(parser_t *ps, uint8_t type, uint32_t start, uint32_t len, uint32_t *idx)
{
    if (ps->ntok >= ps->maxtok)
        return set_err(ps->err, OSV_JSON_ETOKENS, start, "more than %u tokens", ps->maxtok);
    osv_json_tok_t *t = &ps->toks[ps->ntok];
    t->type = type;
    t->flags = 0;
    t->ndim = 0;
    t->shape = OSV_JSON_NO_SHAPE;
    t->start = start;
    t->len = len;
    t->count = 1;
    t->next = ps->ntok + 1;
    *idx = ps->ntok++;
    return 0;
}

/* Opens an ordinary container at ps->pos; while open, its `next` links to the enclosing container. */
static int open_container(parser_t *ps, uint8_t type, uint32_t *parent)
{
    uint32_t idx = 0;
    int rc;
    if (ps->depth + 1 > ps->max_depth)
        return err_depth(ps, ps->pos);
    if ((rc = new_tok(ps, type, ps->pos, 0, &idx)) < 0)
        return rc;
    ps->toks[idx].count = 0;
    ps->toks[idx].next = *parent;
    *parent = idx;
    ps->depth++;
    ps->pos++;
    return 0;
}

static void close_container(parser_t *ps, uint32_t *parent)
{
    osv_json_tok_t *t = &ps->toks[*parent];
    t->len = ps->pos + 1 - t->start;
    *parent = t->next;
    t->next = ps->ntok;
    ps->depth--;
    ps->pos++;
}

static void leaf_token_shape(parser_t *ps, osv_json_tok_t *t, leaf_res_t *r)
{
    bool rect = acc_done(&r->acc);
    t->ndim = (uint8_t)(r->acc.maxd < 255 ? r->acc.maxd : 255);
    if (rect)
        t->flags |= OSV_JSON_F_RECT;
    if (rect && r->acc.maxd >= 2 && ps->doc->nshape < OSV_JSON_SHAPE_SLOTS) {
        t->shape = (uint8_t)ps->doc->nshape++;
        memcpy(ps->doc->shapes[t->shape], &r->acc.dims[1], r->acc.maxd * sizeof(uint32_t));
    }
}

static int parse_array(parser_t *ps, uint32_t *parent, int *st)
{
    leaf_res_t r;
    uint32_t idx = 0;
    int rc;
    if (!take_failpos(ps, ps->pos)) {
        if ((rc = leaf_scan(ps, ps->pos, &r)) < 0)
            return rc;
        if (rc == 0) {
            if ((rc = new_tok(ps, OSV_JSON_LEAF_ARRAY, ps->pos, r.end - ps->pos, &idx)) < 0)
                return rc;
            osv_json_tok_t *t = &ps->toks[idx];
            t->count = r.count;
            t->flags = r.flags;
            leaf_token_shape(ps, t, &r);
            ps->pos = r.end;
            *st = ST_AFTER;
            return 0;
        }
        ps->ifail = 1; /* fail[0] is this array */
    }
    *st = ST_VALUE;
    return open_container(ps, OSV_JSON_ARRAY, parent);
}

static int parse_scalar(parser_t *ps)
{
    uint32_t p = ps->pos, end = 0, idx = 0;
    char c = ps->src[p];
    uint8_t type = 0;
    bool x = false;
    int rc;
    if (c == '"') {
        type = OSV_JSON_STRING;
        rc = scan_string(ps, p, &end, &x);
    } else if (is_digit(c) || c == '-' || c == 'N' || c == 'I') {
        type = OSV_JSON_NUMBER;
        rc = scan_number(ps, p, &end, &x);
    } else if (c == 't' || c == 'f' || c == 'n') {
        rc = scan_literal(ps, p, &end, &type);
    } else {
        char b[16];
        return set_err(ps->err, OSV_JSON_ESYNTAX, p, "unexpected %s, expected a value",
                       describe(ps->src, ps->len, p, b));
    }
    if (rc < 0)
        return rc;
    if (type == OSV_JSON_STRING)
        rc = new_tok(ps, type, p + 1, end - p - 2, &idx);
    else
        rc = new_tok(ps, type, p, end - p, &idx);
    if (rc < 0)
        return rc;
    if (x)
        ps->toks[idx].flags = type == OSV_JSON_STRING ? OSV_JSON_F_ESCAPED : OSV_JSON_F_NONINT;
    ps->pos = end;
    return 0;
}

static int parse_value(parser_t *ps, uint32_t *parent, int *st)
{
    int rc;
    ps->pos = skip_ws(ps->src, ps->pos, ps->len);
    if (ps->pos >= ps->len)
        return err_eof(ps, "a value");
    char c = ps->src[ps->pos];
    if (c == '[')
        return parse_array(ps, parent, st);
    if (c == '{') {
        if ((rc = open_container(ps, OSV_JSON_OBJECT, parent)) < 0)
            return rc;
        ps->pos = skip_ws(ps->src, ps->pos, ps->len);
        if (ps->pos < ps->len && ps->src[ps->pos] == '}') {
            close_container(ps, parent);
            *st = ST_AFTER;
        } else {
            *st = ST_KEY;
        }
        return 0;
    }
    *st = ST_AFTER;
    return parse_scalar(ps);
}

static int parse_key(parser_t *ps, int *st)
{
    int rc;
    char b[16];
    ps->pos = skip_ws(ps->src, ps->pos, ps->len);
    if (ps->pos >= ps->len)
        return err_eof(ps, "a string key");
    if (ps->src[ps->pos] != '"')
        return set_err(ps->err, OSV_JSON_ESYNTAX, ps->pos, "expected a string key, got %s",
                       describe(ps->src, ps->len, ps->pos, b));
    if ((rc = parse_scalar(ps)) < 0)
        return rc;
    ps->pos = skip_ws(ps->src, ps->pos, ps->len);
    if (ps->pos >= ps->len)
        return err_eof(ps, "':'");
    if (ps->src[ps->pos] != ':')
        return set_err(ps->err, OSV_JSON_ESYNTAX, ps->pos, "expected ':' after object key, got %s",
                       describe(ps->src, ps->len, ps->pos, b));
    ps->pos++;
    *st = ST_VALUE;
    return 0;
}

static int parse_after(parser_t *ps, uint32_t *parent, int *st)
{
    char b[16];
    if (*parent == NONE) {
        *st = ST_DONE;
        return 0;
    }
    osv_json_tok_t *t = &ps->toks[*parent];
    bool obj = t->type == OSV_JSON_OBJECT;
    char close = obj ? '}' : ']';
    t->count++;
    ps->pos = skip_ws(ps->src, ps->pos, ps->len);
    if (ps->pos >= ps->len)
        return err_eof(ps, obj ? "',' or '}'" : "',' or ']'");
    char c = ps->src[ps->pos];
    if (c == ',') {
        ps->pos++;
        *st = obj ? ST_KEY : ST_VALUE;
        return 0;
    }
    if (c == close) {
        close_container(ps, parent);
        *st = ST_AFTER;
        return 0;
    }
    return set_err(ps->err, OSV_JSON_ESYNTAX, ps->pos, "expected ',' or '%c', got %s", close,
                   describe(ps->src, ps->len, ps->pos, b));
}

static int parse_tree(parser_t *ps)
{
    uint32_t parent = NONE;
    int st = ST_VALUE, rc = 0;
    while (st != ST_DONE && rc == 0) {
        if (st == ST_VALUE)
            rc = parse_value(ps, &parent, &st);
        else if (st == ST_KEY)
            rc = parse_key(ps, &st);
        else
            rc = parse_after(ps, &parent, &st);
    }
    return rc;
}

int osv_json_parse(const char *src, size_t len, osv_json_tok_t *toks, uint32_t cap,
                   const osv_json_limits_t *lim, osv_json_doc_t *doc, osv_json_err_t *err)
{
    parser_t ps;
    int rc;
    clear_err(err);
    if (len >= UINT32_MAX)
        return set_err(err, OSV_JSON_EINVAL, 0, "document of %zu bytes is too large", len);
    if (!doc || !toks || cap == 0 || (!src && len))
        return set_err(err, OSV_JSON_EINVAL, 0, "invalid argument");
    ps.src = src ? src : "";
    ps.len = (uint32_t)len;
    ps.pos = 0;
    ps.toks = toks;
    ps.ntok = 0;
    ps.maxtok = lim && lim->max_tokens && lim->max_tokens < cap ? lim->max_tokens : cap;
    ps.max_depth = lim && lim->max_depth ? lim->max_depth : 64;
    ps.max_str = lim && lim->max_string_bytes ? lim->max_string_bytes : UINT32_MAX;
    ps.depth = 0;
    ps.doc = doc;
    ps.err = err;
    ps.nfail = ps.ifail = 0;
    doc->nshape = 0;
    if ((rc = parse_tree(&ps)) < 0)
        return rc;
    ps.pos = skip_ws(ps.src, ps.pos, ps.len);
    if (ps.pos != ps.len) {
        char b[16];
        return set_err(err, OSV_JSON_ESYNTAX, ps.pos, "unexpected %s after the JSON value",
                       describe(ps.src, ps.len, ps.pos, b));
    }
    doc->src = ps.src;
    doc->len = len;
    doc->toks = toks;
    doc->ntok = ps.ntok;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Accessors and unescaping                                                                           */

static bool tok_ok(const osv_json_doc_t *doc, uint32_t tok)
{
    return doc && tok < doc->ntok;
}

/* Decodes the character at raw[*i] (an escape or one UTF-8 sequence) into out (up to 4 bytes).
 * Returns the byte count or a negative code. */
static int unesc_next(const char *raw, size_t len, size_t *i, char out[4])
{
    const unsigned char *s = (const unsigned char *)raw;
    size_t p = *i;
    if (s[p] != '\\') {
        uint32_t k = s[p] < 0x20 ? 0 : utf8_len(s + p, len - p);
        if (!k)
            return s[p] < 0x20 ? OSV_JSON_ESYNTAX : OSV_JSON_EUTF8;
        memcpy(out, s + p, k);
        *i = p + k;
        return (int)k;
    }
    if (len - p < 2)
        return OSV_JSON_ESYNTAX;
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *e = memchr(from, s[p + 1], 8);
    if (e) {
        out[0] = to[e - from];
        *i = p + 2;
        return 1;
    }
    if (s[p + 1] != 'u' || len - p < 6)
        return OSV_JSON_ESYNTAX;
    int32_t cp = hex4(raw + p + 2);
    if (cp < 0)
        return OSV_JSON_ESYNTAX;
    p += 6;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return OSV_JSON_EUTF8; /* lone low surrogate */
    if (cp >= 0xd800 && cp <= 0xdbff) {
        int32_t lo = len - p >= 6 && s[p] == '\\' && s[p + 1] == 'u' ? hex4(raw + p + 2) : -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return OSV_JSON_EUTF8; /* high surrogate without a low one */
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
    }
    *i = p;
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The one unescaping loop: writes the value into dst[0..cap) when dst is set (no terminator), or only
 * measures it (dst NULL); never writes past dst + cap. */
static int unescape_into(const char *raw, size_t len, char *dst, size_t cap, size_t *out_len)
{
    size_t i = 0, o = 0;
    char buf[4];
    while (i < len) {
        const char *bs = memchr(raw + i, '\\', len - i);
        size_t run = bs ? (size_t)(bs - raw) - i : len - i;
        /* copy the escape-free run, validating it */
        for (size_t j = i; j < i + run;) {
            unsigned char c = (unsigned char)raw[j];
            uint32_t k = c < 0x20 ? 0 : utf8_len((const unsigned char *)raw + j, i + run - j);
            if (!k)
                return c < 0x20 ? OSV_JSON_ESYNTAX : OSV_JSON_EUTF8;
            j += k;
        }
        if (dst && cap - o < run)
            return OSV_JSON_ENOSPC;
        if (dst)
            memcpy(dst + o, raw + i, run);
        o += run;
        i += run;
        if (i >= len)
            break;
        int k = unesc_next(raw, len, &i, buf);
        if (k < 0)
            return k;
        if (dst && cap - o < (size_t)k)
            return OSV_JSON_ENOSPC;
        if (dst)
            memcpy(dst + o, buf, (size_t)k);
        o += (size_t)k;
    }
    if (out_len)
        *out_len = o;
    return 0;
}

int osv_json_unescape(const char *raw, size_t len, char *dst, size_t cap, size_t *out_len)
{
    size_t n;
    int rc;
    if (cap == 0)
        return OSV_JSON_ENOSPC;
    if ((rc = unescape_into(raw, len, dst, cap - 1, &n)) != 0)
        return rc;
    dst[n] = '\0';
    if (out_len)
        *out_len = n;
    return 0;
}

int osv_json_unescape_raw(const char *raw, size_t len, char *dst, size_t cap, size_t *out_len)
{
    return unescape_into(raw, len, dst, cap, out_len);
}

int osv_json_unescaped_len(const char *raw, size_t len, size_t *out_len)
{
    return unescape_into(raw, len, NULL, 0, out_len);
}

int osv_json_str_unescape(const osv_json_doc_t *doc, uint32_t tok, char *dst, size_t cap, size_t *out_len)
{
    if (!tok_ok(doc, tok) || doc->toks[tok].type != OSV_JSON_STRING)
        return OSV_JSON_ETYPE;
    const osv_json_tok_t *t = &doc->toks[tok];
    return osv_json_unescape(doc->src + t->start, t->len, dst, cap, out_len);
}

bool osv_json_str_eqn(const osv_json_doc_t *doc, uint32_t tok, const char *s, size_t n)
{
    if (!tok_ok(doc, tok) || doc->toks[tok].type != OSV_JSON_STRING)
        return false;
    const osv_json_tok_t *t = &doc->toks[tok];
    const char *raw = doc->src + t->start;
    if (!(t->flags & OSV_JSON_F_ESCAPED))
        return t->len == n && memcmp(raw, s, n) == 0;
    size_t i = 0, o = 0;
    char buf[4];
    while (i < t->len) {
        int k = unesc_next(raw, t->len, &i, buf);
        if (k < 0 || n - o < (size_t)k || memcmp(s + o, buf, (size_t)k) != 0)
            return false;
        o += (size_t)k;
    }
    return o == n;
}

bool osv_json_str_eq(const osv_json_doc_t *doc, uint32_t tok, const char *lit)
{
    return osv_json_str_eqn(doc, tok, lit, strlen(lit));
}

int32_t osv_json_obj_get(const osv_json_doc_t *doc, uint32_t obj, const char *key, size_t keylen)
{
    if (!tok_ok(doc, obj) || doc->toks[obj].type != OSV_JSON_OBJECT)
        return -1;
    uint32_t k = obj + 1;
    for (uint32_t m = 0; m < doc->toks[obj].count; m++) {
        if (osv_json_str_eqn(doc, k, key, keylen))
            return (int32_t)(k + 1);
        k = doc->toks[k + 1].next;
    }
    return -1;
}

int32_t osv_json_arr_get(const osv_json_doc_t *doc, uint32_t arr, uint32_t idx)
{
    if (!tok_ok(doc, arr) || doc->toks[arr].type != OSV_JSON_ARRAY || idx >= doc->toks[arr].count)
        return -1;
    uint32_t i = arr + 1;
    while (idx--)
        i = doc->toks[i].next;
    return (int32_t)i;
}

/* ------------------------------------------------------------------------------------------------ */
/* Number conversion                                                                                  */

/* 10^e for e in [-83, 83], correctly rounded by the compiler; exact for 0 <= e <= 22. */
static const double POW10[167] = {
    1e-83, 1e-82, 1e-81, 1e-80, 1e-79, 1e-78, 1e-77, 1e-76, 1e-75, 1e-74, 1e-73, 1e-72, 1e-71, 1e-70,
    1e-69, 1e-68, 1e-67, 1e-66, 1e-65, 1e-64, 1e-63, 1e-62, 1e-61, 1e-60, 1e-59, 1e-58, 1e-57, 1e-56,
    1e-55, 1e-54, 1e-53, 1e-52, 1e-51, 1e-50, 1e-49, 1e-48, 1e-47, 1e-46, 1e-45, 1e-44, 1e-43, 1e-42,
    1e-41, 1e-40, 1e-39, 1e-38, 1e-37, 1e-36, 1e-35, 1e-34, 1e-33, 1e-32, 1e-31, 1e-30, 1e-29, 1e-28,
    1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14,
    1e-13, 1e-12, 1e-11, 1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,  1e-4,  1e-3,  1e-2,  1e-1,  1e0,
    1e1,   1e2,   1e3,   1e4,   1e5,   1e6,   1e7,   1e8,   1e9,   1e10,  1e11,  1e12,  1e13,  1e14,
    1e15,  1e16,  1e17,  1e18,  1e19,  1e20,  1e21,  1e22,  1e23,  1e24,  1e25,  1e26,  1e27,  1e28,
    1e29,  1e30,  1e31,  1e32,  1e33,  1e34,  1e35,  1e36,  1e37,  1e38,  1e39,  1e40,  1e41,  1e42,
    1e43,  1e44,  1e45,  1e46,  1e47,  1e48,  1e49,  1e50,  1e51,  1e52,  1e53,  1e54,  1e55,  1e56,
    1e57,  1e58,  1e59,  1e60,  1e61,  1e62,  1e63,  1e64,  1e65,  1e66,  1e67,  1e68,  1e69,  1e70,
    1e71,  1e72,  1e73,  1e74,  1e75,  1e76,  1e77,  1e78,  1e79,  1e80,  1e81,  1e82,  1e83,
};

static inline double pow10d(int e)
{
    return POW10[e + 83];
}

static const uint64_t U10[20] = {1ull,
                                 10ull,
                                 100ull,
                                 1000ull,
                                 10000ull,
                                 100000ull,
                                 1000000ull,
                                 10000000ull,
                                 100000000ull,
                                 1000000000ull,
                                 10000000000ull,
                                 100000000000ull,
                                 1000000000000ull,
                                 10000000000000ull,
                                 100000000000000ull,
                                 1000000000000000ull,
                                 10000000000000000ull,
                                 100000000000000000ull,
                                 1000000000000000000ull,
                                 10000000000000000000ull};

/* A decimal number as parsed from validated JSON text: |value| = m * 10^e unless trunc. */
typedef struct dec {
    uint64_t m;      /* first (up to) 19 significant digits */
    int32_t e;       /* decimal exponent */
    bool neg;        /* leading '-' */
    bool trunc;      /* nonzero digits beyond the 19th were dropped: |value| is slightly above m * 10^e */
    bool nonint;     /* has a fraction, exponent, or is NaN/Infinity */
    uint8_t special; /* 0 finite, 1 NaN, 2 Infinity */
} dec_t;

/* Accumulates the digit run at p into *m (|value| = m * 10^e): digits go into m while it has fewer than
 * 19 (leading zeros of m are not counted by the byte loop; the 8-byte path counts them, which only makes
 * it stop early), further integer digits raise e, further fraction digits are dropped (setting *trunc
 * when nonzero). Returns the byte after the run. */
static HOT const char *dec_run(const char *p, const char *end, dec_t *n, unsigned *nd, bool frac)
{
    uint64_t m = n->m;
    int32_t e = n->e;
    unsigned dg, k = *nd;
#if SWAR
    while (k <= 11 && end - p >= 8) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        unsigned L = digits8(v);
        if (L == 0)
            break;
        m = m * U10[L] + digits_value(v, L);
        k += L;
        p += L;
        e -= frac ? (int32_t)L : 0;
        if (L < 8)
            goto done;
    }
#endif
    for (; p < end && (dg = (unsigned)(*p - '0')) < 10; p++) {
        if (k < 19) {
            m = m * 10 + dg;
            k += m != 0;
            e -= frac;
        } else {
            e += !frac;
            n->trunc |= dg != 0;
        }
    }
#if SWAR
done:
#endif
    n->m = m;
    n->e = e;
    *nd = k;
    return p;
}

/* Parses the number at p (validated syntax, bounded by end); returns the byte after it. */
static HOT const char *dec_parse(const char *p, const char *end, dec_t *n)
{
    unsigned nd = 0, dg;
    n->neg = *p == '-';
    n->special = 0;
    n->nonint = false;
    n->trunc = false;
    n->m = 0;
    n->e = 0;
    p += n->neg;
    if (p < end && (*p == 'N' || *p == 'I')) {
        n->special = *p == 'N' ? 1 : 2;
        n->nonint = true;
        return p + (*p == 'N' ? 3 : 8);
    }
    p = dec_run(p, end, n, &nd, false);
    if (p < end && *p == '.') {
        n->nonint = true;
        p = dec_run(p + 1, end, n, &nd, true);
    }
    if (p < end && (*p | 0x20) == 'e') {
        bool eneg = false;
        int32_t x = 0;
        n->nonint = true;
        p++;
        if (p < end && (*p == '-' || *p == '+'))
            eneg = *p++ == '-';
        for (; p < end && (dg = (unsigned)(*p - '0')) < 10; p++)
            if (x < 1000000)
                x = x * 10 + (int32_t)dg;
        n->e += eneg ? -x : x;
    }
    return p;
}

/* |value| as a double. Returns 0 when *out is the correctly rounded value (Clinger's fast path: an
 * exact integer times an exact power of ten, one rounding), 1 when it is within 3 ulps (m, 10^|e| and
 * the product/quotient each rounded once), -1 when no cheap approximation exists. */
static HOT int dec_fast(const dec_t *n, double *out)
{
    uint64_t m = n->m, big;
    int e = n->e;
    if (m == 0) {
        *out = 0.0;
        return 0;
    }
    if (n->trunc)
        return -1;
    if (m <= (1ull << 53)) {
        if (e >= 0 && e <= 22) {
            *out = (double)m * pow10d(e);
            return 0;
        }
        if (e < 0 && e >= -22) {
            *out = (double)m / pow10d(-e);
            return 0;
        }
        if (e > 22 && e <= 22 + 15 && !__builtin_mul_overflow(m, U10[e - 22], &big) && big <= (1ull << 53)) {
            *out = (double)big * 1e22;
            return 0;
        }
    }
    if (e >= -83 && e <= 83) {
        *out = (double)m * pow10d(e);
        return 1;
    }
    return -1;
}

/* Copies the number text (at most SLOW_MAX chars) to a NUL-terminated buffer. */
static bool slow_copy(const char *txt, size_t len, char buf[SLOW_MAX + 1])
{
    if (len > SLOW_MAX)
        return false;
    memcpy(buf, txt, len);
    buf[len] = '\0';
    return true;
}

/* Normalized decimal digits of a number text: value = 0.D[0]D[1]... * 10^exp, D[0] != '0' (nd = 0 for
 * zero). Digits beyond cap are dropped (callers pass texts that fit). */
static size_t dec_digits(const char *s, char *d, size_t cap, int *exp)
{
    size_t nd = 0;
    long point = 0, ex = 0;
    bool seen_point = false;
    for (; *s && *s != 'e' && *s != 'E'; s++) {
        if (*s == '.') {
            seen_point = true;
        } else if (is_digit(*s)) {
            if (nd == 0 && *s == '0') {
                point -= seen_point;
            } else {
                point += !seen_point;
                if (nd < cap)
                    d[nd++] = *s;
            }
        }
    }
    if (*s)
        ex = strtol(s + 1, NULL, 10);
    if (ex > 100000)
        ex = 100000;
    if (ex < -100000)
        ex = -100000;
    while (nd > 0 && d[nd - 1] == '0')
        nd--;
    *exp = (int)(point + ex);
    return nd;
}

/* Sign of |x| - d for the decimal text x and a positive finite double d, exactly. d is a rounding
 * boundary of a narrow format (<= 26 significant bits, >= 2^-150), so "%.120e" prints it exactly. */
static int cmp_exact(const char *txt, double d)
{
    char a[SLOW_MAX + 1], b[SLOW_MAX + 1], ds[160];
    int ea, eb;
    snprintf(ds, sizeof ds, "%.120e", d);
    size_t na = dec_digits(txt, a, sizeof a, &ea), nb = dec_digits(ds, b, sizeof b, &eb);
    if (na == 0 || nb == 0)
        return na == nb ? 0 : na ? 1 : -1;
    if (ea != eb)
        return ea > eb ? 1 : -1;
    for (size_t i = 0; i < na || i < nb; i++) {
        char ca = i < na ? a[i] : '0', cb = i < nb ? b[i] : '0';
        if (ca != cb)
            return ca > cb ? 1 : -1;
    }
    return 0;
}

/* A binary floating-point format narrower than double. */
typedef struct nfmt {
    int p;         /* stored mantissa bits */
    int emin;      /* exponent of the smallest normal */
    int emax;      /* exponent of the largest finite */
    int bias;      /* exponent bias */
    uint32_t inf;  /* bits of +infinity */
    uint32_t nan;  /* bits of the canonical quiet NaN */
    uint32_t sign; /* sign bit */
} nfmt_t;

static const nfmt_t F32 = {23, -126, 127, 127, 0x7f800000u, 0x7fc00000u, 0x80000000u};
static const nfmt_t F16 = {10, -14, 15, 15, 0x7c00u, 0x7e00u, 0x8000u};
static const nfmt_t BF16 = {7, -126, 127, 127, 0x7f80u, 0x7fc0u, 0x8000u};

/* Splits positive normal double d for rounding to f: returns the shift that leaves the target's
 * precision (bits of d's 53-bit significand below the target lsb), or -1 when d is a double subnormal,
 * zero, inf/NaN, or so small (shift > 63) that it rounds to zero with no boundary nearby. */
static int nsplit(double d, const nfmt_t *f, uint64_t *sig, int *E)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    int be = (int)((b >> 52) & 0x7ff);
    if (be == 0 || be == 0x7ff)
        return -1;
    *sig = (b & ((1ull << 52) - 1)) | (1ull << 52);
    *E = be - 1023;
    int lsb = (*E >= f->emin ? *E : f->emin) - f->p;
    int shift = lsb - (*E - 52);
    return shift > 63 ? -1 : shift;
}

/* True when positive d lies within w ulps (of d) of a rounding boundary (midpoint) of format f. */
static bool near_tie(double d, const nfmt_t *f, uint64_t w)
{
    uint64_t sig;
    int E, sh = nsplit(d, f, &sig, &E);
    if (sh < 0 || E > f->emax)
        return false;
    uint64_t rem = sig & ((1ull << sh) - 1), half = 1ull << (sh - 1);
    return (rem > half ? rem - half : half - rem) <= w;
}

/* Rounds positive d to format f, nearest-even. dir is the sign of |x| - d for the true value x: it
 * breaks the tie when d is exactly a midpoint (d is then either x itself or x's double rounding). */
static uint32_t narrow_round(double d, int dir, const nfmt_t *f)
{
    uint64_t sig;
    int E;
    if (d != d)
        return f->nan;
    if (d == 0.0)
        return 0;
    int sh = nsplit(d, f, &sig, &E);
    if (sh < 0)
        return d > 1.0 ? f->inf : 0;
    if (E > f->emax)
        return f->inf;
    uint64_t q = sig >> sh, rem = sig & ((1ull << sh) - 1), half = 1ull << (sh - 1);
    q += rem > half || (rem == half && (dir > 0 || (dir == 0 && (q & 1))));
    uint32_t bits;
    if (E >= f->emin)
        bits = ((uint32_t)(E + f->bias) << f->p) + (uint32_t)q - (1u << f->p); /* carry bumps exponent */
    else
        bits = (uint32_t)q; /* subnormal; a carry lands on the smallest normal */
    return bits >= f->inf ? f->inf : bits;
}

/* Correctly rounded double of the number text at txt (slow path). */
static int slow_f64(const char *txt, size_t len, double *out)
{
    char buf[SLOW_MAX + 1];
    if (!slow_copy(txt, len, buf))
        return OSV_JSON_ERANGE;
    *out = strtod(buf, NULL);
    return 0;
}

static int dec_to_f64(const dec_t *n, const char *txt, size_t len, double *out)
{
    double d;
    if (n->special) {
        *out = n->special == 1 ? __builtin_nan("") : n->neg ? -__builtin_inf() : __builtin_inf();
        return 0;
    }
    if (dec_fast(n, &d) == 0) {
        *out = n->neg ? -d : d;
        return 0;
    }
    return slow_f64(txt, len, out);
}

/* Bits of the number rounded to narrow format f (slow path: strtod + exact tie resolution). */
static int slow_narrow(const char *txt, size_t len, const nfmt_t *f, uint32_t *bits)
{
    char buf[SLOW_MAX + 1];
    if (!slow_copy(txt, len, buf))
        return OSV_JSON_ERANGE;
    double d = strtod(buf, NULL);
    bool neg = d < 0 || (d == 0 && buf[0] == '-');
    d = neg ? -d : d;
    int dir = near_tie(d, f, 0) ? cmp_exact(buf, d) : 0;
    *bits = narrow_round(d, dir, f) | (neg ? f->sign : 0);
    return 0;
}

static int dec_to_narrow(const dec_t *n, const char *txt, size_t len, const nfmt_t *f, uint32_t *bits)
{
    double d;
    uint32_t sign = n->neg ? f->sign : 0;
    if (n->special) {
        *bits = n->special == 1 ? f->nan : f->inf | sign;
        return 0;
    }
    int k = dec_fast(n, &d);
    if (k >= 0 && !near_tie(d, f, k ? 8 : 0)) {
        *bits = narrow_round(d, 0, f) | sign;
        return 0;
    }
    return slow_narrow(txt, len, f, bits);
}

/* float32, the hot path of FP32 tensors. Correct because rounding is monotonic and every float32
 * midpoint is a double: when d is more than its error bound (3 ulps; 8 are allowed for) away from every
 * midpoint, x and d lie strictly on the same side of each, so (float)d == round32(x). Otherwise (odds
 * about 2^-25 for random input) the exact slow path decides. No division, unlike Clinger's path. */
static HOT int dec_to_f32(const dec_t *n, const char *txt, size_t len, float *out)
{
    uint32_t bits, sign = (uint32_t)n->neg << 31;
    if (n->special) {
        *out = n->special == 1 ? __builtin_nanf("") : u2f_(sign | 0x7f800000u);
        return 0;
    }
    if (n->trunc || n->e < -83 || n->e > 83)
        goto slow;
    /* m (rounded if above 2^53), 10^e and the product each round once: within 3 ulps */
    double d = (double)n->m * pow10d(n->e);
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    uint32_t be = (uint32_t)(b >> 52);
    if (be >= 1023 - 126 && be <= 1023 + 127) {
        /* float32 normal range: the 29 low significand bits are below float precision; a midpoint has
         * exactly the top one of them set */
        uint64_t low = b & 0x1fffffffu, dist = low > 0x10000000u ? low - 0x10000000u : 0x10000000u - low;
        if (dist <= 8)
            goto slow;
    } else if (near_tie(d, &F32, 8)) {
        goto slow;
    }
    *out = u2f_(f2u_((float)d) | sign);
    return 0;
slow:;
    int rc = slow_narrow(txt, len, &F32, &bits);
    *out = u2f_(bits);
    return rc;
}

/* Integer literal at p: sign and magnitude. Returns the end, *rc 0, OSV_JSON_ETYPE (fraction, exponent
 * or NaN/Infinity) or OSV_JSON_ERANGE (magnitude above UINT64_MAX). */
static const char *int_parse(const char *p, const char *end, bool *neg, uint64_t *mag, int *rc)
{
    uint64_t v = 0;
    unsigned dg;
    bool ovf = false;
    *neg = *p == '-';
    p += *neg;
    *rc = 0;
    for (; p < end && (dg = (unsigned)(*p - '0')) < 10; p++) {
        if (v > (UINT64_MAX - dg) / 10)
            ovf = true;
        else
            v = v * 10 + dg;
    }
    *mag = v;
    if (p < end && (cls_of((unsigned char)*p) & C_IDENT)) {
        *rc = OSV_JSON_ETYPE;
        while (p < end && (cls_of((unsigned char)*p) & C_IDENT))
            p++;
    } else if (ovf) {
        *rc = OSV_JSON_ERANGE;
    }
    return p;
}

/* ------------------------------------------------------------------------------------------------ */
/* Leaf decoding                                                                                      */

static const char *const kind_names[] = {"?",     "BOOL",  "UINT8", "UINT16", "UINT32", "UINT64", "INT8",
                                         "INT16", "INT32", "INT64", "FP16",   "BF16",   "FP32",   "FP64"};

size_t osv_json_kind_size(osv_json_kind_t kind)
{
    static const unsigned char sz[] = {0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8};
    return (unsigned)kind < sizeof sz ? sz[kind] : 0;
}

/* Byte range a decoder walks for token t: the whole leaf array, or a lone scalar. */
typedef struct span {
    const char *base, *p, *end;
} span_t;

static bool is_sep(char c)
{
    return cls_of((unsigned char)c) & C_SEP;
}

/* Skips separators; returns false at the end of the span. */
static bool span_next(span_t *s)
{
    while (s->p < s->end && is_sep(*s->p))
        s->p++;
    return s->p < s->end;
}

static bool is_num_start(char c)
{
    return is_digit(c) || c == '-' || c == 'N' || c == 'I';
}

/* Length of the scalar text at p (for messages and skipping). */
static size_t scalar_len(const char *p, const char *end)
{
    const char *q = p;
    if (*q == '"') {
        for (q++; q < end && *q != '"'; q++)
            q += *q == '\\' && q + 1 < end;
        return (size_t)(q - p) + (q < end);
    }
    while (q < end && !is_sep(*q))
        q++;
    return (size_t)(q - p);
}

static int leaf_err(osv_json_err_t *err, int code, const span_t *s, size_t i, osv_json_kind_t kind)
{
    size_t n = scalar_len(s->p, s->end);
    int show = n > 40 ? 40 : (int)n;
    const char *why;
    if (code == OSV_JSON_ERANGE)
        why = n > SLOW_MAX ? "is too long to convert to" : "is out of range for";
    else if (kind == OSV_JSON_KIND_BOOL)
        why = "is not a valid";
    else if (is_num_start(*s->p))
        why = "is not an integer, expected";
    else
        why = "is not a number, expected";
    return set_err(err, code, (size_t)(s->p - s->base), "element %zu (%.*s%s) %s %s", i, show, s->p,
                   n > 40 ? "..." : "", why, kind_names[kind]);
}

/* A float element: a number, or one of the strings "NaN", "Infinity", "-Infinity" (what the writer
 * produces for them). NULL when it is neither. */
static const char *float_parse(const char *p, const char *end, dec_t *n)
{
    static const char *const names[] = {"\"NaN\"", "\"Infinity\"", "\"-Infinity\""};
    if (is_num_start(*p))
        return dec_parse(p, end, n);
    for (int k = 0; *p == '"' && k < 3; k++) {
        size_t len = strlen(names[k]);
        if ((size_t)(end - p) >= len && memcmp(p, names[k], len) == 0) {
            *n = (dec_t){.neg = k == 2, .nonint = true, .special = (uint8_t)(k == 0 ? 1 : 2)};
            return p + len;
        }
    }
    return NULL;
}

static int decode_f32(span_t *s, float *dst, size_t count, osv_json_err_t *err)
{
    dec_t n;
    for (size_t i = 0; i < count && span_next(s); i++) {
        const char *q = float_parse(s->p, s->end, &n);
        if (!q)
            return leaf_err(err, OSV_JSON_ETYPE, s, i, OSV_JSON_KIND_F32);
        if (dec_to_f32(&n, s->p, (size_t)(q - s->p), &dst[i]) < 0)
            return leaf_err(err, OSV_JSON_ERANGE, s, i, OSV_JSON_KIND_F32);
        s->p = q;
    }
    return 0;
}

static int decode_f64(span_t *s, double *dst, size_t count, osv_json_err_t *err)
{
    dec_t n;
    for (size_t i = 0; i < count && span_next(s); i++) {
        const char *q = float_parse(s->p, s->end, &n);
        if (!q)
            return leaf_err(err, OSV_JSON_ETYPE, s, i, OSV_JSON_KIND_F64);
        if (dec_to_f64(&n, s->p, (size_t)(q - s->p), &dst[i]) < 0)
            return leaf_err(err, OSV_JSON_ERANGE, s, i, OSV_JSON_KIND_F64);
        s->p = q;
    }
    return 0;
}

static int decode_half(span_t *s, uint16_t *dst, size_t count, osv_json_kind_t kind, osv_json_err_t *err)
{
    const nfmt_t *f = kind == OSV_JSON_KIND_F16 ? &F16 : &BF16;
    dec_t n;
    uint32_t bits;
    for (size_t i = 0; i < count && span_next(s); i++) {
        const char *q = float_parse(s->p, s->end, &n);
        if (!q)
            return leaf_err(err, OSV_JSON_ETYPE, s, i, kind);
        if (dec_to_narrow(&n, s->p, (size_t)(q - s->p), f, &bits) < 0)
            return leaf_err(err, OSV_JSON_ERANGE, s, i, kind);
        dst[i] = (uint16_t)bits;
        s->p = q;
    }
    return 0;
}

static int decode_bool(span_t *s, uint8_t *dst, size_t count, osv_json_err_t *err)
{
    for (size_t i = 0; i < count && span_next(s); i++) {
        const char *p = s->p;
        if (*p == 't' || *p == 'f') {
            dst[i] = *p == 't';
            s->p += *p == 't' ? 4 : 5;
            continue;
        }
        bool neg;
        uint64_t mag;
        int rc;
        if (!is_num_start(*p))
            return leaf_err(err, OSV_JSON_ETYPE, s, i, OSV_JSON_KIND_BOOL);
        const char *q = int_parse(p, s->end, &neg, &mag, &rc);
        if (rc < 0 || mag > 1 || (neg && mag))
            return leaf_err(err, OSV_JSON_ETYPE, s, i, OSV_JSON_KIND_BOOL);
        dst[i] = (uint8_t)mag;
        s->p = q;
    }
    return 0;
}

/* Range of each integer kind: magnitude limits for positive and negative values. */
static bool int_fits(osv_json_kind_t kind, bool neg, uint64_t mag)
{
    static const uint64_t pmax[] = {0,          0,    0xff,   0xffff,     0xffffffffu,
                                    UINT64_MAX, 0x7f, 0x7fff, 0x7fffffff, 0x7fffffffffffffffull};
    static const uint64_t nmax[] = {0, 0, 0, 0, 0, 0, 0x80, 0x8000, 0x80000000u, 0x8000000000000000ull};
    return mag <= (neg ? nmax[kind] : pmax[kind]);
}

static void int_store(void *dst, size_t i, osv_json_kind_t kind, bool neg, uint64_t mag)
{
    uint64_t u = neg ? (uint64_t)0 - mag : mag; /* two's complement; the range check already passed */
    switch (kind) {
    case OSV_JSON_KIND_U8:
    case OSV_JSON_KIND_I8:
        ((uint8_t *)dst)[i] = (uint8_t)u;
        break;
    case OSV_JSON_KIND_U16:
    case OSV_JSON_KIND_I16:
        ((uint16_t *)dst)[i] = (uint16_t)u;
        break;
    case OSV_JSON_KIND_U32:
    case OSV_JSON_KIND_I32:
        ((uint32_t *)dst)[i] = (uint32_t)u;
        break;
    default:
        ((uint64_t *)dst)[i] = u;
        break;
    }
}

static int decode_int(span_t *s, void *dst, size_t count, osv_json_kind_t kind, osv_json_err_t *err)
{
    bool neg;
    uint64_t mag;
    int rc;
    for (size_t i = 0; i < count && span_next(s); i++) {
        if (!is_num_start(*s->p))
            return leaf_err(err, OSV_JSON_ETYPE, s, i, kind);
        const char *q = int_parse(s->p, s->end, &neg, &mag, &rc);
        if (rc == 0 && !int_fits(kind, neg, mag))
            rc = OSV_JSON_ERANGE;
        if (rc < 0)
            return leaf_err(err, rc, s, i, kind);
        int_store(dst, i, kind, neg, mag);
        s->p = q;
    }
    return 0;
}

static bool is_scalar_type(uint8_t t)
{
    return t >= OSV_JSON_NULL && t <= OSV_JSON_STRING;
}

int osv_json_leaves_decode(const osv_json_doc_t *doc, uint32_t tok, osv_json_kind_t kind, void *dst,
                           size_t count, osv_json_err_t *err)
{
    clear_err(err);
    if (!tok_ok(doc, tok) || !osv_json_kind_size(kind) || (!dst && count))
        return set_err(err, OSV_JSON_EINVAL, 0, "invalid argument");
    const osv_json_tok_t *t = &doc->toks[tok];
    if (t->type != OSV_JSON_LEAF_ARRAY && !is_scalar_type(t->type))
        return set_err(err, OSV_JSON_ETYPE, t->start, "expected an array of scalars for %s",
                       kind_names[kind]);
    if (t->count != count)
        return set_err(err, OSV_JSON_ECOUNT, t->start, "array has %u elements, expected %zu", t->count,
                       count);
    span_t s = {doc->src, doc->src + t->start, doc->src + t->start + t->len};
    if (t->type == OSV_JSON_STRING) {
        s.p--; /* include both quotes for the message */
        s.end++;
        return leaf_err(err, OSV_JSON_ETYPE, &s, 0, kind);
    }
    switch (kind) {
    case OSV_JSON_KIND_F32:
        return decode_f32(&s, dst, count, err);
    case OSV_JSON_KIND_F64:
        return decode_f64(&s, dst, count, err);
    case OSV_JSON_KIND_F16:
    case OSV_JSON_KIND_BF16:
        return decode_half(&s, dst, count, kind, err);
    case OSV_JSON_KIND_BOOL:
        return decode_bool(&s, dst, count, err);
    default:
        return decode_int(&s, dst, count, kind, err);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Scalar token conversions                                                                           */

static int scalar_span(const osv_json_doc_t *doc, uint32_t tok, span_t *s, osv_json_err_t *err)
{
    clear_err(err);
    if (!tok_ok(doc, tok))
        return set_err(err, OSV_JSON_EINVAL, 0, "invalid token index %u", tok);
    const osv_json_tok_t *t = &doc->toks[tok];
    s->base = doc->src;
    s->p = doc->src + t->start;
    s->end = s->p + t->len;
    if (t->type == OSV_JSON_STRING) { /* include both quotes for messages */
        s->p--;
        s->end++;
    }
    if (!is_scalar_type(t->type))
        return set_err(err, OSV_JSON_ETYPE, t->start, "expected a scalar");
    return 0;
}

int osv_json_tok_i64(const osv_json_doc_t *doc, uint32_t tok, int64_t *out, osv_json_err_t *err)
{
    span_t s;
    int rc = scalar_span(doc, tok, &s, err);
    if (rc == 0 && doc->toks[tok].type != OSV_JSON_NUMBER)
        rc = leaf_err(err, OSV_JSON_ETYPE, &s, 0, OSV_JSON_KIND_I64);
    return rc ? rc : decode_int(&s, out, 1, OSV_JSON_KIND_I64, err);
}

int osv_json_tok_u64(const osv_json_doc_t *doc, uint32_t tok, uint64_t *out, osv_json_err_t *err)
{
    span_t s;
    int rc = scalar_span(doc, tok, &s, err);
    if (rc == 0 && doc->toks[tok].type != OSV_JSON_NUMBER)
        rc = leaf_err(err, OSV_JSON_ETYPE, &s, 0, OSV_JSON_KIND_U64);
    return rc ? rc : decode_int(&s, out, 1, OSV_JSON_KIND_U64, err);
}

int osv_json_tok_f64(const osv_json_doc_t *doc, uint32_t tok, double *out, osv_json_err_t *err)
{
    span_t s;
    int rc = scalar_span(doc, tok, &s, err);
    if (rc == 0 && doc->toks[tok].type != OSV_JSON_NUMBER)
        rc = leaf_err(err, OSV_JSON_ETYPE, &s, 0, OSV_JSON_KIND_F64);
    return rc ? rc : decode_f64(&s, out, 1, err);
}

int osv_json_tok_f32(const osv_json_doc_t *doc, uint32_t tok, float *out, osv_json_err_t *err)
{
    span_t s;
    int rc = scalar_span(doc, tok, &s, err);
    if (rc == 0 && doc->toks[tok].type != OSV_JSON_NUMBER)
        rc = leaf_err(err, OSV_JSON_ETYPE, &s, 0, OSV_JSON_KIND_F32);
    return rc ? rc : decode_f32(&s, out, 1, err);
}

int osv_json_tok_bool(const osv_json_doc_t *doc, uint32_t tok, bool *out, osv_json_err_t *err)
{
    span_t s;
    uint8_t b = 0;
    int rc = scalar_span(doc, tok, &s, err);
    if (rc == 0 && doc->toks[tok].type == OSV_JSON_STRING)
        rc = leaf_err(err, OSV_JSON_ETYPE, &s, 0, OSV_JSON_KIND_BOOL);
    if (rc == 0 && (rc = decode_bool(&s, &b, 1, err)) == 0)
        *out = b != 0;
    return rc;
}

/* ------------------------------------------------------------------------------------------------ */
/* Leaf iteration and shapes                                                                          */

int osv_json_leaf_iter_init(osv_json_leaf_iter_t *it, const osv_json_doc_t *doc, uint32_t tok)
{
    if (!tok_ok(doc, tok))
        return OSV_JSON_EINVAL;
    const osv_json_tok_t *t = &doc->toks[tok];
    it->doc = doc;
    it->pos = t->start;
    it->end = t->start + t->len;
    it->single = 0;
    if (is_scalar_type(t->type)) {
        it->single = tok + 1;
        return 0;
    }
    return t->type == OSV_JSON_LEAF_ARRAY ? 0 : OSV_JSON_ETYPE;
}

bool osv_json_leaf_next(osv_json_leaf_iter_t *it, osv_json_leaf_t *out)
{
    if (it->single) {
        const osv_json_tok_t *t = &it->doc->toks[it->single - 1];
        out->type = t->type;
        out->flags = t->flags;
        out->start = t->start;
        out->len = t->len;
        it->single = 0;
        it->pos = it->end;
        return true;
    }
    span_t s = {it->doc->src, it->doc->src + it->pos, it->doc->src + it->end};
    if (!span_next(&s))
        return false;
    size_t n = scalar_len(s.p, s.end);
    char c = *s.p;
    out->flags = 0;
    out->start = (uint32_t)(s.p - s.base);
    out->len = (uint32_t)n;
    if (c == '"') {
        out->type = OSV_JSON_STRING;
        out->start++;
        out->len -= 2;
        if (memchr(s.p + 1, '\\', n - 2))
            out->flags = OSV_JSON_F_ESCAPED;
    } else if (c == 't' || c == 'f' || c == 'n') {
        out->type = c == 't' ? OSV_JSON_TRUE : c == 'f' ? OSV_JSON_FALSE : OSV_JSON_NULL;
    } else {
        out->type = OSV_JSON_NUMBER;
        for (size_t i = 0; i < n; i++)
            if (s.p[i] == '.' || (s.p[i] | 0x20) == 'e' || s.p[i] == 'N' || s.p[i] == 'I')
                out->flags = OSV_JSON_F_NONINT;
    }
    it->pos = (uint32_t)(s.p - s.base + n);
    return true;
}

/* Recomputes the shape of a leaf array from its bytes (documents with many multi-level arrays). */
static bool shape_rescan(const osv_json_doc_t *doc, const osv_json_tok_t *t, shape_acc_t *a)
{
    span_t s = {doc->src, doc->src + t->start, doc->src + t->start + t->len};
    uint32_t d = 0;
    acc_init(a);
    while (s.p < s.end) {
        char c = *s.p;
        if (c == '[') {
            acc_open(a, ++d);
            s.p++;
        } else if (c == ']') {
            acc_close(a, d--);
            s.p++;
        } else if (is_sep(c)) {
            s.p++;
        } else {
            acc_scalars(a, d, 1);
            s.p += scalar_len(s.p, s.end);
        }
    }
    return acc_done(a);
}

int osv_json_leaves_shape(const osv_json_doc_t *doc, uint32_t tok, uint32_t dims[OSV_JSON_MAX_NDIM],
                          uint32_t *ndim)
{
    if (!tok_ok(doc, tok))
        return OSV_JSON_EINVAL;
    const osv_json_tok_t *t = &doc->toks[tok];
    *ndim = 0;
    if (is_scalar_type(t->type))
        return 0;
    if (t->type != OSV_JSON_LEAF_ARRAY)
        return OSV_JSON_ETYPE;
    if (!(t->flags & OSV_JSON_F_RECT))
        return OSV_JSON_ESHAPE;
    if (t->ndim == 1) {
        dims[0] = t->count;
    } else if (t->shape != OSV_JSON_NO_SHAPE) {
        memcpy(dims, doc->shapes[t->shape], t->ndim * sizeof dims[0]);
    } else {
        shape_acc_t a;
        if (!shape_rescan(doc, t, &a))
            return OSV_JSON_ESHAPE;
        memcpy(dims, &a.dims[1], t->ndim * sizeof dims[0]);
    }
    *ndim = t->ndim;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Writer: number formatting                                                                          */

static const char DIG2[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                           "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                           "8081828384858687888990919293949596979899";

/* Decimal digits of v into out (at most 20), returns the count. */
static size_t u64_chars(uint64_t v, char *out)
{
    char tmp[20], *t = tmp + sizeof tmp;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        t -= 2;
        memcpy(t, DIG2 + 2 * r, 2);
    }
    if (v >= 10) {
        t -= 2;
        memcpy(t, DIG2 + 2 * v, 2);
    } else {
        *--t = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - t);
    memcpy(out, t, n);
    return n;
}

static size_t i64_chars(int64_t v, char *out)
{
    if (v >= 0)
        return u64_chars((uint64_t)v, out);
    out[0] = '-';
    return 1 + u64_chars((uint64_t)0 - (uint64_t)v, out + 1);
}

/* Python-repr layout of digits dg[0..nd) (dg[0] != '0', no trailing zeros) with decimal exponent k
 * (value d.ddd * 10^k): positional for -4 <= k < 16 with at least one fractional digit, else
 * d.ddde+XX. */
static size_t layout(char *out, bool neg, const char *dg, int nd, int k)
{
    char *o = out;
    if (neg)
        *o++ = '-';
    if (k >= 16 || k < -4) {
        *o++ = dg[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, dg + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        *o++ = 'e';
        *o++ = k < 0 ? '-' : '+';
        unsigned a = (unsigned)(k < 0 ? -k : k);
        if (a >= 100) {
            *o++ = (char)('0' + a / 100);
            a %= 100;
        }
        memcpy(o, DIG2 + 2 * a, 2);
        return (size_t)(o + 2 - out);
    }
    if (k < 0) {
        memcpy(o, "0.0000", (size_t)(1 - k));
        o += 1 - k;
        memcpy(o, dg, (size_t)nd);
        return (size_t)(o + nd - out);
    }
    int ip = k + 1; /* integer digits */
    if (nd <= ip) {
        memcpy(o, dg, (size_t)nd);
        memset(o + nd, '0', (size_t)(ip - nd));
        memcpy(o + ip, ".0", 2);
        return (size_t)(o + ip + 2 - out);
    }
    memcpy(o, dg, (size_t)ip);
    o[ip] = '.';
    memcpy(o + ip + 1, dg + ip, (size_t)(nd - ip));
    return (size_t)(o + nd + 1 - out);
}

/* Zeros, and NaN and the infinities as the strings "NaN", "Infinity", "-Infinity" (JSON has no such
 * numbers: strings keep a response readable by every strict parser; protobuf's JSON mapping does the
 * same, and the reader takes them back). */
static size_t special_chars(bool nan, bool inf, bool neg, char *dst)
{
    const char *s = nan ? "\"NaN\"" : inf ? (neg ? "\"-Infinity\"" : "\"Infinity\"") : (neg ? "-0.0" : "0.0");
    size_t n = strlen(s);
    memcpy(dst, s, n);
    return n;
}

/* d * 10^t for t in [-83, 83]: two roundings (the table entry and the product). */
static double scale10(double d, int t)
{
    return d * pow10d(t);
}

/* True when c * 10^t lies strictly inside (lo, hi) with a margin covering scale10's error: the
 * computed x is within 2^-52 |x| of the exact value, the margin is 2^-49 |x|, and x - lo, hi - x are
 * exact (Sterbenz: the operands are within a factor 2). */
static bool in_interval(uint64_t c, int t, double lo, double hi)
{
    double x = scale10((double)c, t), m = x * 0x1p-49;
    return x - lo > m && hi - x > m;
}

static int strip_zeros(uint64_t *n, int nd)
{
    while (nd > 1 && *n % 10 == 0) {
        *n /= 10;
        nd--;
    }
    return nd;
}

/* Digits of positive finite nonzero float f (bits a): returns nd, fills dg and the exponent *kp.
 *
 * Why 9 digits from double arithmetic always round-trip: let 10^k <= f < 10^(k+1) and 2^e <= f <
 * 2^(e+1), so ulp(f) >= 2^(e-23) (2^-149 for subnormals). The exactly rounded 9-digit decimal is within
 * 0.5 * 10^(k-8) of f, and 10^(k-8) < 2^(e+1) * 10^-8 = 0.168 * 2^(e-23) <= 0.168 ulp(f). The computed
 * s = f * 10^(8-k) carries two roundings (relative 2^-52, i.e. < 3e-7 absolute at s < 1e9) and s + 0.5
 * one more, so n = (uint64)(s + 0.5) is within 1 of exact: |n * 10^(k-8) - f| < 0.34 ulp(f) < ulp(f)/2,
 * hence n * 10^(k-8) reads back as f. Shorter candidates (round(s / 10^j)) are kept only when
 * in_interval() proves they lie inside f's rounding interval; otherwise the longer form stays. */
static int f32_digits(uint32_t a, char dg[9], int *kp)
{
    float f, fp, fn;
    uint32_t ap = a - 1, an = a + 1;
    memcpy(&f, &a, sizeof f);
    memcpy(&fp, &ap, sizeof fp);
    memcpy(&fn, &an, sizeof fn);
    double d = f;
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    int e2 = (int)(b >> 52) - 1023;
    int k0 = (int)(e2 * 0.30102999566398120 + 1000.0) - 1000; /* floor(e2 * log10(2)) */
    double s = scale10(d, 8 - k0);
    if (s >= 999999999.5)
        s = scale10(d, 8 - ++k0);
    else if (s < 99999999.5)
        s = scale10(d, 8 - --k0);
    uint64_t n = (uint64_t)(s + 0.5);
    int k = k0, nd = 9;
    if (n >= 1000000000) {
        n = 100000000;
        k++;
    }
    nd = strip_zeros(&n, nd);
    double lo = (d + (double)fp) * 0.5;
    double hi = an == 0x7f800000u ? d + (d - (double)fp) * 0.5 : (d + (double)fn) * 0.5;
    while (nd > 1) {
        int p = nd - 1;
        uint64_t c = (uint64_t)(s * pow10d(p - 9) + 0.5);
        if (!in_interval(c, k0 + 1 - p, lo, hi))
            break;
        k = k0;
        if (c >= U10[p]) {
            c /= 10;
            k++;
        }
        n = c;
        nd = strip_zeros(&n, p);
    }
    *kp = k;
    return (int)u64_chars(n, dg);
}

size_t osv_jw_f32_chars(float v, char *dst)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    bool neg = b >> 31;
    uint32_t a = b & 0x7fffffffu;
    if (a >= 0x7f800000u || a == 0)
        return special_chars(a > 0x7f800000u, a == 0x7f800000u, neg, dst);
    char dg[9];
    int k, nd = f32_digits(a, dg, &k);
    return layout(dst, neg, dg, nd, k);
}

size_t osv_jw_f64_chars(double v, char *dst)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    bool neg = b >> 63;
    uint64_t a = b & ~(1ull << 63);
    if (a >= 0x7ff0000000000000ull || a == 0)
        return special_chars(a > 0x7ff0000000000000ull, a == 0x7ff0000000000000ull, neg, dst);
    double x = neg ? -v : v;
    char buf[40], dg[17];
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, x);
        if (p == 17 || strtod(buf, NULL) == x)
            break;
    }
    int nd = 0;
    const char *q = buf;
    for (; *q != 'e'; q++)
        if (is_digit(*q))
            dg[nd++] = *q;
    int k = atoi(q + 1);
    while (nd > 1 && dg[nd - 1] == '0')
        nd--;
    return layout(dst, neg, dg, nd, k);
}

/* ------------------------------------------------------------------------------------------------ */
/* Writer                                                                                             */

#define JW_MAX_DEPTH 64

size_t osv_jw_str_max(size_t n)
{
    return n > (SIZE_MAX - 2) / 6 ? SIZE_MAX : 6 * n + 2;
}

void osv_jw_init(osv_jw_t *w, char *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf ? cap : 0;
    w->len = 0;
    w->err = 0;
    w->depth = 0;
    w->objbits = 0;
    w->first = true;
    w->after_key = false;
}

size_t osv_jw_len(const osv_jw_t *w)
{
    return w->len;
}

int osv_jw_error(const osv_jw_t *w)
{
    return w->err;
}

static int jw_fail(osv_jw_t *w, int code)
{
    w->err = code;
    return code;
}

static bool jw_in_obj(const osv_jw_t *w)
{
    return w->depth && ((w->objbits >> (w->depth - 1)) & 1);
}

/* Checks that a value may come next and that n bytes plus its separator fit; writes the separator.
 * Returns where the value goes, or NULL with w->err set. */
static char *jw_value_start(osv_jw_t *w, size_t n)
{
    if (w->err)
        return NULL;
    if (jw_in_obj(w) ? !w->after_key : (w->depth == 0 && !w->first)) {
        jw_fail(w, OSV_JSON_EINVAL);
        return NULL;
    }
    size_t comma = !w->first && !w->after_key;
    if (w->cap - w->len < n + comma) {
        jw_fail(w, OSV_JSON_ENOSPC);
        return NULL;
    }
    if (comma)
        w->buf[w->len++] = ',';
    w->first = false;
    w->after_key = false;
    return w->buf + w->len;
}

static int jw_put(osv_jw_t *w, const char *s, size_t n)
{
    char *o = jw_value_start(w, n);
    if (!o)
        return w->err;
    memcpy(o, s, n);
    w->len += n;
    return 0;
}

static int jw_open(osv_jw_t *w, char c, bool obj)
{
    if (!w->err && w->depth >= JW_MAX_DEPTH)
        return jw_fail(w, OSV_JSON_EINVAL);
    if (jw_put(w, &c, 1))
        return w->err;
    w->objbits = (w->objbits & ~(1ull << w->depth)) | ((uint64_t)obj << w->depth);
    w->depth++;
    w->first = true;
    return 0;
}

static int jw_close(osv_jw_t *w, char c, bool obj)
{
    if (w->err)
        return w->err;
    if (!w->depth || jw_in_obj(w) != obj || w->after_key)
        return jw_fail(w, OSV_JSON_EINVAL);
    if (w->cap == w->len)
        return jw_fail(w, OSV_JSON_ENOSPC);
    w->buf[w->len++] = c;
    w->depth--;
    w->first = false;
    return 0;
}

int osv_jw_obj_begin(osv_jw_t *w)
{
    return jw_open(w, '{', true);
}

int osv_jw_obj_end(osv_jw_t *w)
{
    return jw_close(w, '}', true);
}

int osv_jw_arr_begin(osv_jw_t *w)
{
    return jw_open(w, '[', false);
}

int osv_jw_arr_end(osv_jw_t *w)
{
    return jw_close(w, ']', false);
}

/* Escape for byte c that cannot be copied as is (quote, backslash, control, or not valid UTF-8). */
static size_t escape_byte(unsigned char c, char out[6])
{
    static const char hex[] = "0123456789abcdef", from[] = "\"\\\b\f\n\r\t", to[] = "\"\\bfnrt";
    const char *e = c ? memchr(from, c, sizeof from - 1) : NULL;
    if (e) {
        out[0] = '\\';
        out[1] = to[e - from];
        return 2;
    }
    if (c < 0x20) {
        memcpy(out, "\\u00", 4);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 15];
        return 6;
    }
    memcpy(out, "\xef\xbf\xbd", 3); /* U+FFFD REPLACEMENT CHARACTER */
    return 3;
}

/* End of the run starting at i that can be copied verbatim (printable ASCII, valid UTF-8). */
static size_t copy_run_end(const unsigned char *s, size_t i, size_t n)
{
    for (;;) {
        while (i < n && !(cls_of(s[i]) & C_STR))
            i++;
        uint32_t k = i < n && s[i] >= 0x80 ? utf8_len(s + i, n - i) : 0;
        if (!k)
            return i;
        i += k;
    }
}

/* Writes the quoted, escaped string s at o (room until oe), plus ':' for a key; returns the end or NULL
 * when it does not fit. */
static char *jw_escape(char *o, char *oe, const unsigned char *s, size_t n, bool key)
{
    char esc[6];
    if (oe - o < 1)
        return NULL;
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        size_t j = copy_run_end(s, i, n);
        if ((size_t)(oe - o) < j - i)
            return NULL;
        memcpy(o, s + i, j - i);
        o += j - i;
        if (j == n)
            break;
        size_t el = escape_byte(s[j], esc);
        if ((size_t)(oe - o) < el)
            return NULL;
        memcpy(o, esc, el);
        o += el;
        i = j + 1;
    }
    if (oe - o < 1 + key)
        return NULL;
    *o++ = '"';
    if (key)
        *o++ = ':';
    return o;
}

static int jw_string(osv_jw_t *w, const char *s, size_t n, bool key)
{
    if (w->err)
        return w->err;
    size_t save = w->len;
    bool first = w->first, after_key = w->after_key;
    char *o;
    if (key) {
        if (!jw_in_obj(w) || w->after_key)
            return jw_fail(w, OSV_JSON_EINVAL);
        if (!w->first) {
            if (w->cap == w->len)
                return jw_fail(w, OSV_JSON_ENOSPC);
            w->buf[w->len++] = ',';
        }
        w->first = false;
        o = w->buf + w->len;
    } else if (!(o = jw_value_start(w, 0))) {
        return w->err;
    }
    char *end = jw_escape(o, w->buf + w->cap, (const unsigned char *)s, n, key);
    if (!end) {
        w->len = save;
        w->first = first;
        w->after_key = after_key;
        return jw_fail(w, OSV_JSON_ENOSPC);
    }
    w->len = (size_t)(end - w->buf);
    w->after_key = key;
    return 0;
}

int osv_jw_key(osv_jw_t *w, const char *s, size_t n)
{
    return jw_string(w, s, n, true);
}

int osv_jw_str(osv_jw_t *w, const char *s, size_t n)
{
    return jw_string(w, s, n, false);
}

int osv_jw_i64(osv_jw_t *w, int64_t v)
{
    char t[OSV_JW_MAX_I64_CHARS];
    return jw_put(w, t, i64_chars(v, t));
}

int osv_jw_u64(osv_jw_t *w, uint64_t v)
{
    char t[OSV_JW_MAX_U64_CHARS];
    return jw_put(w, t, u64_chars(v, t));
}

int osv_jw_bool(osv_jw_t *w, bool v)
{
    return v ? jw_put(w, "true", 4) : jw_put(w, "false", 5);
}

int osv_jw_null(osv_jw_t *w)
{
    return jw_put(w, "null", 4);
}

int osv_jw_raw(osv_jw_t *w, const char *s, size_t n)
{
    return jw_put(w, s, n);
}

int osv_jw_f32(osv_jw_t *w, float v)
{
    char t[OSV_JW_MAX_F32_CHARS];
    return jw_put(w, t, osv_jw_f32_chars(v, t));
}

int osv_jw_f64(osv_jw_t *w, double v)
{
    char t[OSV_JW_MAX_F64_CHARS];
    return jw_put(w, t, osv_jw_f64_chars(v, t));
}

int osv_jw_f32_array(osv_jw_t *w, const float *v, size_t n)
{
    size_t save = w->len;
    bool first = w->first, after_key = w->after_key;
    if (osv_jw_arr_begin(w))
        return w->err;
    for (size_t i = 0; i < n; i++) {
        if (w->cap - w->len > OSV_JW_MAX_F32_CHARS) { /* fast path: room for ',' and any float */
            if (i)
                w->buf[w->len++] = ',';
            w->len += osv_jw_f32_chars(v[i], w->buf + w->len);
            w->first = false;
        } else if (osv_jw_f32(w, v[i])) {
            break;
        }
    }
    if (!w->err && osv_jw_arr_end(w) == 0)
        return 0;
    w->len = save; /* roll back the partial array */
    w->depth--;
    w->first = first;
    w->after_key = after_key;
    return w->err;
}
