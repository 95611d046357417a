/* util/pbtxt.h — a bounded reader for the protobuf text format (what Triton's config.pbtxt is written in).
 *
 * It knows the format, not any schema: osv_pbtxt_parse() turns a text into a tree of fields, each a
 * message ({...} or <...>), a string ("..." or '...', C escapes decoded, adjacent strings joined), or
 * a scalar token (number, identifier such as an enum name or true/false). `name: [a, b]` and
 * `name [{...}, {...}]` become one field per element, as repeated fields are written one by one; a
 * colon before a message is optional; `#` starts a comment; `,` or `;` may follow any field. The
 * caller (src/core/tconfig.c for Triton's ModelConfig) walks the tree and converts scalars with the
 * osv_pbtxt_*() helpers, which check ranges.
 *
 * Bounds (osv_pbtxt_limits_t): the text's size, the nesting depth of messages, the length of one
 * decoded string and the number of fields are all checked before anything is allocated for them;
 * the reader recurses once per nesting level, so max_depth also bounds its stack.
 *
 * Memory: a parsed document owns two heap blocks (the field array, grown by doubling up to
 * max_fields, and one buffer for decoded strings no larger than the text); free with
 * osv_pbtxt_free(). Field names and scalar tokens point into the source text, which must outlive
 * the document. Errors name the line and column (both from 1, columns in bytes) of what was wrong.
 * Threads: reentrant; a parsed document is immutable and may be read by any number of threads. */
#ifndef OSV_UTIL_PBTXT_H
#define OSV_UTIL_PBTXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum osv_pbtxt_kind {
    OSV_PBTXT_MESSAGE = 1, /* children follow (first / count), in text order */
    OSV_PBTXT_STRING,      /* text/len: the decoded bytes (NUL-terminated; may contain NULs) */
    OSV_PBTXT_SCALAR       /* text/len: the token as written: 12, -0x1f, 1.5e3, inf, TYPE_FP32, true */
} osv_pbtxt_kind_t;

/* One field. Indices refer to osv_pbtxt_doc_t.fields; -1 = none. */
typedef struct osv_pbtxt_field {
    const char *name; /* points into the source; not NUL-terminated (the root's is "") */
    uint32_t name_len;
    osv_pbtxt_kind_t kind;
    uint32_t line, col;   /* where the field's name starts */
    uint32_t vline, vcol; /* where its value starts */
    const char *text;     /* STRING / SCALAR: see osv_pbtxt_kind_t */
    uint32_t len;
    int32_t first;  /* MESSAGE: first child */
    uint32_t count; /* MESSAGE: number of children */
    int32_t next;   /* next sibling in the parent message */
} osv_pbtxt_field_t;

typedef struct osv_pbtxt_limits {
    uint64_t max_bytes;  /* size of the whole text */
    uint32_t max_depth;  /* messages nested in messages (the root is depth 0) */
    uint32_t max_string; /* bytes of one decoded string */
    uint32_t max_fields; /* fields in the document, the root included */
} osv_pbtxt_limits_t;

/* The defaults: 1 MiB, depth 32, 64 KiB strings, 65536 fields. */
void osv_pbtxt_limits_default(osv_pbtxt_limits_t *lim);

/* A parsed text: fields[0] is the root message. Owned by the caller, freed by osv_pbtxt_free. */
typedef struct osv_pbtxt_doc {
    osv_pbtxt_field_t *fields;
    uint32_t n, cap;
    char *strings; /* decoded string bytes, each NUL-terminated */
    size_t strings_used, strings_cap;
} osv_pbtxt_doc_t;

typedef struct osv_pbtxt_err {
    uint32_t line, col; /* where the error is (from 1); 0 when it is about the whole text */
    char msg[192];      /* what was wrong, without the position */
} osv_pbtxt_err_t;

/* Parses src[0..len). 0 on success (free *doc later, also after an error: it is then empty), or
 * -1 with *err filled: a syntax error, a limit passed (the message names the limit), or no memory. */
int osv_pbtxt_parse(const char *src, size_t len, const osv_pbtxt_limits_t *lim, osv_pbtxt_doc_t *doc,
                    osv_pbtxt_err_t *err);
void osv_pbtxt_free(osv_pbtxt_doc_t *doc);

/* True when field f is named `name`. */
bool osv_pbtxt_is(const osv_pbtxt_field_t *f, const char *name);

/* Scalar conversions; each returns 0, or -1 when the field is not a scalar of that kind or is out of
 * [lo, hi]. Integers accept decimal, 0x hex and 0-prefixed octal, with an optional '-'. */
int osv_pbtxt_int(const osv_pbtxt_field_t *f, int64_t lo, int64_t hi, int64_t *out);
int osv_pbtxt_uint(const osv_pbtxt_field_t *f, uint64_t hi, uint64_t *out);
/* Decimal or integer text, inf, nan, with an optional f/F suffix. */
int osv_pbtxt_double(const osv_pbtxt_field_t *f, double *out);
/* true/True/t/1 and false/False/f/0, as protobuf accepts them. */
int osv_pbtxt_bool(const osv_pbtxt_field_t *f, bool *out);

#endif
