/* pbtxt.c — the protobuf text-format reader (grammar: protobuf's "Text Format Language
 * Specification"): a recursive-descent parser over the text with line/column tracking, one call per
 * message nesting level (bounded by max_depth), fields appended to one growing array (bounded by
 * max_fields), decoded strings into one buffer sized from the text. See util/pbtxt.h. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ortserve/alloc.h"
#include "util/pbtxt.h"

#define SCALAR_MAX 128 /* longest number a conversion helper copies to convert */

typedef struct parser {
    const char *src;
    size_t len, pos;
    uint32_t line, col; /* of src[pos] */
    uint32_t depth;
    const osv_pbtxt_limits_t *lim;
    osv_pbtxt_doc_t *doc;
    osv_pbtxt_err_t *err;
} parser_t;

void osv_pbtxt_limits_default(osv_pbtxt_limits_t *lim)
{
    lim->max_bytes = 1u << 20;
    lim->max_depth = 32;
    lim->max_string = 64u << 10;
    lim->max_fields = 65536;
}

static int fail_at(parser_t *p, uint32_t line, uint32_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(parser_t *p, uint32_t line, uint32_t col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
    va_end(ap);
    p->err->line = line;
    p->err->col = col;
    return -1;
}

#define fail(p, ...) fail_at((p), (p)->line, (p)->col, __VA_ARGS__)

/* ---- characters -------------------------------------------------------------------------------------- */

static int peek(const parser_t *p)
{
    return p->pos < p->len ? (unsigned char)p->src[p->pos] : -1;
}

static void advance(parser_t *p)
{
    if (p->src[p->pos++] == '\n') {
        p->line++;
        p->col = 1;
    } else {
        p->col++;
    }
}

static bool is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Whitespace and # comments. */
static void skip_ws(parser_t *p)
{
    for (;;) {
        int c = peek(p);
        if (is_space(c)) {
            advance(p);
        } else if (c == '#') {
            while (peek(p) >= 0 && peek(p) != '\n')
                advance(p);
        } else {
            return;
        }
    }
}

/* A printable description of the character at the cursor, for messages. */
static const char *found(const parser_t *p, char *buf, size_t cap)
{
    int c = peek(p);
    if (c < 0)
        snprintf(buf, cap, "the end of the text");
    else if (c >= 0x20 && c < 0x7f)
        snprintf(buf, cap, "'%c'", c);
    else
        snprintf(buf, cap, "byte 0x%02x", (unsigned)c);
    return buf;
}

/* ---- fields ----------------------------------------------------------------------------------------- */

static int new_field(parser_t *p, osv_pbtxt_field_t **out, int32_t *idx)
{
    osv_pbtxt_doc_t *d = p->doc;
    if (d->n >= p->lim->max_fields)
        return fail(p, "more than %u fields (the limit of a configuration text)", p->lim->max_fields);
    if (d->n == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 64;
        if (cap > p->lim->max_fields)
            cap = p->lim->max_fields;
        osv_pbtxt_field_t *f = osv_realloc(d->fields, (size_t)cap * sizeof *f);
        if (!f)
            return fail(p, "out of memory");
        d->fields = f;
        d->cap = cap;
    }
    *idx = (int32_t)d->n;
    *out = &d->fields[d->n++];
    memset(*out, 0, sizeof **out);
    (*out)->first = (*out)->next = -1;
    return 0;
}

/* Appends child to the parent's list; *last tracks the parent's last child. */
static void link_child(parser_t *p, int32_t parent, int32_t child, int32_t *last)
{
    osv_pbtxt_field_t *f = p->doc->fields;
    if (*last < 0)
        f[parent].first = child;
    else
        f[*last].next = child;
    *last = child;
    f[parent].count++;
}

/* ---- strings ---------------------------------------------------------------------------------------- */

static int hexval(int c)
{
    return is_digit(c)              ? c - '0'
           : (c >= 'a' && c <= 'f') ? c - 'a' + 10
           : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                    : -1;
}

/* Appends one decoded byte to the string being built (the buffer is sized from the text). */
static int put_byte(parser_t *p, uint32_t *n, int c)
{
    if (*n >= p->lim->max_string)
        return fail(p, "a string is longer than %u bytes (the limit of a configuration text)",
                    p->lim->max_string);
    if (p->doc->strings_used + *n + 1 >= p->doc->strings_cap) /* cannot happen: decoded <= written */
        return fail(p, "string buffer exhausted");
    p->doc->strings[p->doc->strings_used + (*n)++] = (char)c;
    return 0;
}

static int put_utf8(parser_t *p, uint32_t *n, uint32_t cp)
{
    int rc = 0;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return fail(p, "\\u escape U+%04X is not a Unicode scalar value", cp);
    if (cp < 0x80)
        return put_byte(p, n, (int)cp);
    if (cp < 0x800) {
        rc = put_byte(p, n, 0xc0 | (int)(cp >> 6));
    } else if (cp < 0x10000) {
        rc = put_byte(p, n, 0xe0 | (int)(cp >> 12));
        if (!rc)
            rc = put_byte(p, n, 0x80 | (int)((cp >> 6) & 0x3f));
    } else {
        rc = put_byte(p, n, 0xf0 | (int)(cp >> 18));
        if (!rc)
            rc = put_byte(p, n, 0x80 | (int)((cp >> 12) & 0x3f));
        if (!rc)
            rc = put_byte(p, n, 0x80 | (int)((cp >> 6) & 0x3f));
    }
    return rc ? rc : put_byte(p, n, 0x80 | (int)(cp & 0x3f));
}

/* Decodes the escape after a backslash (the cursor is on the character after it). */
static int escape(parser_t *p, uint32_t *n)
{
    static const char simple_in[] = "ntrabfv\\'\"?", simple_out[] = "\n\t\r\a\b\f\v\\'\"?";
    int c = peek(p), v = 0, digits = 0;
    const char *s = c > 0 ? strchr(simple_in, c) : NULL;
    if (s) {
        advance(p);
        return put_byte(p, n, simple_out[s - simple_in]);
    }
    if (c >= '0' && c <= '7') { /* up to three octal digits */
        while (digits < 3 && peek(p) >= '0' && peek(p) <= '7') {
            v = v * 8 + (peek(p) - '0');
            advance(p);
            digits++;
        }
        return v > 0xff ? fail(p, "octal escape above \\377") : put_byte(p, n, v);
    }
    if (c == 'x' || c == 'X') { /* one or two hex digits */
        advance(p);
        while (digits < 2 && hexval(peek(p)) >= 0) {
            v = v * 16 + hexval(peek(p));
            advance(p);
            digits++;
        }
        return digits ? put_byte(p, n, v) : fail(p, "\\x needs a hex digit");
    }
    if (c == 'u' || c == 'U') { /* \uXXXX or \UXXXXXXXX */
        uint32_t cp = 0;
        int want = c == 'u' ? 4 : 8;
        advance(p);
        for (; digits < want; digits++) {
            if (hexval(peek(p)) < 0)
                return fail(p, "\\%c needs %d hex digits", c, want);
            cp = cp * 16 + (uint32_t)hexval(peek(p));
            advance(p);
        }
        return put_utf8(p, n, cp);
    }
    return fail(p, "unknown escape sequence in a string");
}

/* One quoted string (the cursor is on its quote), appended to the bytes decoded so far. */
static int quoted(parser_t *p, uint32_t *n)
{
    int q = peek(p);
    advance(p);
    for (;;) {
        int c = peek(p);
        if (c < 0 || c == '\n')
            return fail(p, "a string is not closed on its line");
        advance(p);
        if (c == q)
            return 0;
        if (c == '\\') {
            if (escape(p, n) != 0)
                return -1;
        } else if (put_byte(p, n, c) != 0) {
            return -1;
        }
    }
}

/* A string value: one or more adjacent quoted strings, joined. */
static int string_value(parser_t *p, osv_pbtxt_field_t *f)
{
    uint32_t n = 0;
    do {
        if (quoted(p, &n) != 0)
            return -1;
        skip_ws(p);
    } while (peek(p) == '"' || peek(p) == '\'');
    f->kind = OSV_PBTXT_STRING;
    f->text = p->doc->strings + p->doc->strings_used;
    f->len = n;
    p->doc->strings[p->doc->strings_used + n] = '\0';
    p->doc->strings_used += (size_t)n + 1;
    return 0;
}

/* ---- scalars, messages and fields -------------------------------------------------------------------- */

/* A number or identifier token as written (signs and exponents included). */
static int scalar_value(parser_t *p, osv_pbtxt_field_t *f)
{
    size_t start = p->pos;
    char what[32];
    if (peek(p) == '-' || peek(p) == '+')
        advance(p);
    if (!(is_alpha(peek(p)) || is_digit(peek(p)) || peek(p) == '.'))
        return fail(p, "expected a value, found %s", found(p, what, sizeof what));
    bool number = !is_alpha(peek(p));
    while (p->pos < p->len) {
        int c = peek(p), prev = (unsigned char)p->src[p->pos - 1];
        bool sign = number && (c == '-' || c == '+') && (prev == 'e' || prev == 'E');
        if (!(is_alpha(c) || is_digit(c) || c == '.' || sign))
            break;
        advance(p);
    }
    f->kind = OSV_PBTXT_SCALAR;
    f->text = p->src + start;
    f->len = (uint32_t)(p->pos - start);
    return 0;
}

static int message_body(parser_t *p, int32_t self, int close);

/* A message value (the cursor is on '{' or '<'). */
static int message_value(parser_t *p, int32_t self)
{
    int open = peek(p), rc;
    if (p->depth >= p->lim->max_depth)
        return fail(p, "messages nested deeper than %u levels (the limit of a configuration text)",
                    p->lim->max_depth);
    advance(p);
    p->depth++;
    p->doc->fields[self].kind = OSV_PBTXT_MESSAGE;
    rc = message_body(p, self, open == '{' ? '}' : '>');
    p->depth--;
    return rc;
}

/* The value of a field named at (line, col); `colon` says whether a ':' separated them. */
static int one_value(parser_t *p, int32_t self, bool colon)
{
    osv_pbtxt_field_t *f = &p->doc->fields[self];
    int c = peek(p);
    f->vline = p->line;
    f->vcol = p->col;
    if (c == '{' || c == '<')
        return message_value(p, self);
    if (!colon)
        return fail(p, "expected ':' after field name '%.*s'", (int)(f->name_len > 64 ? 64 : f->name_len),
                    f->name);
    if (c == '"' || c == '\'')
        return string_value(p, f);
    return scalar_value(p, f);
}

/* Reads the field name at the cursor into f. */
static int field_name(parser_t *p, osv_pbtxt_field_t *f)
{
    char what[32];
    size_t start = p->pos;
    if (peek(p) == '[')
        return fail(p, "extension and Any fields ('[...]') are not supported");
    if (!is_alpha(peek(p)))
        return fail(p, "expected a field name, found %s", found(p, what, sizeof what));
    while (is_alpha(peek(p)) || is_digit(peek(p)))
        advance(p);
    f->name = p->src + start;
    f->name_len = (uint32_t)(p->pos - start);
    return 0;
}

/* One field of message `parent`: its name, then a value or a [list] of values (one field each). */
static int field(parser_t *p, int32_t parent, int32_t *last)
{
    osv_pbtxt_field_t *f, proto;
    int32_t idx;
    bool colon = false;
    memset(&proto, 0, sizeof proto);
    proto.line = p->line;
    proto.col = p->col;
    if (field_name(p, &proto) != 0)
        return -1;
    skip_ws(p);
    if (peek(p) == ':') {
        colon = true;
        advance(p);
        skip_ws(p);
    }
    if (peek(p) != '[') {
        if (new_field(p, &f, &idx) != 0)
            return -1;
        *f = proto;
        f->first = f->next = -1;
        link_child(p, parent, idx, last);
        return one_value(p, idx, colon);
    }
    advance(p); /* a list: one field per element */
    skip_ws(p);
    while (peek(p) != ']') {
        char what[32];
        if (new_field(p, &f, &idx) != 0)
            return -1;
        *f = proto;
        f->first = f->next = -1;
        link_child(p, parent, idx, last);
        if (one_value(p, idx, colon || peek(p) == '{' || peek(p) == '<') != 0)
            return -1;
        skip_ws(p);
        if (peek(p) == ',') {
            advance(p);
            skip_ws(p);
        } else if (peek(p) != ']') {
            return fail(p, "expected ',' or ']' in the list of '%.*s', found %s",
                        (int)(proto.name_len > 64 ? 64 : proto.name_len), proto.name,
                        found(p, what, sizeof what));
        }
    }
    advance(p);
    return 0;
}

/* Fields until `close` (0: the end of the text, for the root). */
static int message_body(parser_t *p, int32_t self, int close)
{
    int32_t last = -1;
    for (;;) {
        skip_ws(p);
        if (peek(p) < 0) {
            if (close)
                return fail(p, "the text ends inside a message (missing '%c')", close);
            return 0;
        }
        if (peek(p) == close) {
            advance(p);
            return 0;
        }
        if (field(p, self, &last) != 0)
            return -1;
        skip_ws(p);
        if (peek(p) == ',' || peek(p) == ';')
            advance(p);
    }
}

int osv_pbtxt_parse(const char *src, size_t len, const osv_pbtxt_limits_t *lim, osv_pbtxt_doc_t *doc,
                    osv_pbtxt_err_t *err)
{
    osv_pbtxt_limits_t def;
    parser_t p = {.src = src, .len = len, .line = 1, .col = 1, .doc = doc, .err = err};
    osv_pbtxt_field_t *root;
    int32_t idx;
    if (!lim) {
        osv_pbtxt_limits_default(&def);
        lim = &def;
    }
    p.lim = lim;
    memset(doc, 0, sizeof *doc);
    memset(err, 0, sizeof *err);
    if (len > lim->max_bytes) {
        snprintf(err->msg, sizeof err->msg, "the text is %zu bytes, more than the limit of %llu", len,
                 (unsigned long long)lim->max_bytes);
        return -1;
    }
    if (!(doc->strings = osv_malloc(len + 1))) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return -1;
    }
    doc->strings_cap = len + 1;
    if (new_field(&p, &root, &idx) == 0) {
        root->kind = OSV_PBTXT_MESSAGE;
        root->name = "";
        root->line = root->col = root->vline = root->vcol = 1;
        if (message_body(&p, 0, 0) == 0)
            return 0;
    }
    osv_pbtxt_free(doc);
    return -1;
}

void osv_pbtxt_free(osv_pbtxt_doc_t *doc)
{
    osv_free(doc->fields);
    osv_free(doc->strings);
    memset(doc, 0, sizeof *doc);
}

/* ---- conversions ------------------------------------------------------------------------------------- */

bool osv_pbtxt_is(const osv_pbtxt_field_t *f, const char *name)
{
    size_t n = strlen(name);
    return f->name_len == n && memcmp(f->name, name, n) == 0;
}

/* Magnitude of an unsigned integer token (no sign): decimal, 0x hex, 0 octal. -1 on junk or overflow. */
static int magnitude(const char *s, uint32_t n, uint64_t *out)
{
    uint64_t v = 0;
    unsigned base = 10;
    uint32_t i = 0;
    if (n == 0)
        return -1;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    } else if (n > 1 && s[0] == '0') {
        base = 8;
        i = 1;
    }
    for (; i < n; i++) {
        int d = hexval((unsigned char)s[i]);
        if (d < 0 || (unsigned)d >= base || v > (UINT64_MAX - (uint64_t)d) / base)
            return -1;
        v = v * base + (uint64_t)d;
    }
    *out = v;
    return 0;
}

int osv_pbtxt_int(const osv_pbtxt_field_t *f, int64_t lo, int64_t hi, int64_t *out)
{
    bool neg;
    uint64_t m;
    int64_t v;
    if (f->kind != OSV_PBTXT_SCALAR || f->len == 0)
        return -1;
    neg = f->text[0] == '-';
    if (magnitude(f->text + neg, f->len - neg, &m) != 0)
        return -1;
    if (neg ? m > (uint64_t)INT64_MAX + 1 : m > (uint64_t)INT64_MAX)
        return -1;
    v = neg ? (m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m) : (int64_t)m;
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int osv_pbtxt_uint(const osv_pbtxt_field_t *f, uint64_t hi, uint64_t *out)
{
    uint64_t m;
    if (f->kind != OSV_PBTXT_SCALAR || magnitude(f->text, f->len, &m) != 0 || m > hi)
        return -1;
    *out = m;
    return 0;
}

int osv_pbtxt_double(const osv_pbtxt_field_t *f, double *out)
{
    char buf[SCALAR_MAX];
    char *end;
    uint32_t n = f->len;
    if (f->kind != OSV_PBTXT_SCALAR || n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, f->text, n);
    buf[n] = '\0';
    if (n > 1 && (buf[n - 1] == 'f' || buf[n - 1] == 'F') &&
        (is_digit((unsigned char)buf[n - 2]) || buf[n - 2] == '.'))
        buf[--n] = '\0'; /* 1.5f */
    errno = 0;
    double v = strtod(buf, &end);
    if (*end != '\0' || end == buf || (errno == ERANGE && isinf(v) && !strchr(buf, 'i') && !strchr(buf, 'I')))
        return -1;
    *out = v;
    return 0;
}

int osv_pbtxt_bool(const osv_pbtxt_field_t *f, bool *out)
{
    static const char *const yes[] = {"true", "True", "t", "1"}, *const no[] = {"false", "False", "f", "0"};
    if (f->kind != OSV_PBTXT_SCALAR)
        return -1;
    for (size_t i = 0; i < 4; i++) {
        if (f->len == strlen(yes[i]) && memcmp(f->text, yes[i], f->len) == 0) {
            *out = true;
            return 0;
        }
        if (f->len == strlen(no[i]) && memcmp(f->text, no[i], f->len) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}
