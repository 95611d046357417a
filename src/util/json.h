/* util/json.h — bounded, allocation-free JSON reader and writer for the KServe v2 request/response path.
 *
 * Reader: osv_json_parse() validates one JSON text (RFC 8259, plus NaN/Infinity/-Infinity as numbers) into
 * caller-provided tokens. Arrays whose elements are all scalars or, recursively, such arrays ("leaf
 * arrays") become ONE token whatever their size; osv_json_leaves_decode() later converts their numbers
 * straight into tensor memory (exact integers, correctly rounded F64/F32/F16/BF16).
 * Writer: osv_jw_t appends JSON into a fixed caller buffer; overflow sets a sticky error.
 *
 * Memory: nothing here allocates. Every pointer a function hands back points into memory the caller owns.
 * Errors: functions return 0 or a negative OSV_JSON_E* code; calls taking an osv_json_err_t* (may be NULL)
 * also fill it with the code, the byte position and a message such as "expected ',' or ']' at byte 123".
 * Threads: all functions are reentrant. A parsed document is immutable: any number of threads may read
 * one osv_json_doc_t concurrently. One osv_jw_t must not be used by two threads at once.
 * Locale: number conversion uses strtod()/snprintf() on rare slow paths; the program never calls
 * setlocale(), so the "C" locale (decimal point '.') applies. */
#ifndef OSV_UTIL_JSON_H
#define OSV_UTIL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Errors. Distinct from ortserve/error.h's OSV_E* so a caller can map them (e.g. to OSV_EPARSE).      */

#define OSV_JSON_ESYNTAX (-101) /* not valid JSON (message says what was expected where) */
#define OSV_JSON_EDEPTH  (-102) /* nesting deeper than limits.max_depth */
#define OSV_JSON_ETOKENS (-103) /* more tokens than limits.max_tokens / cap */
#define OSV_JSON_ERANGE  (-104) /* number out of range for the requested kind, or too long to convert */
#define OSV_JSON_ETYPE   (-105) /* token/leaf has the wrong type (e.g. string for F32, 1.5 for I32) */
#define OSV_JSON_ECOUNT  (-106) /* leaf count differs from the expected element count */
#define OSV_JSON_ESTRLEN (-107) /* string longer than limits.max_string_bytes */
#define OSV_JSON_EUTF8   (-108) /* invalid UTF-8, or a \u escape that is a lone/invalid surrogate */
#define OSV_JSON_ENOSPC  (-109) /* destination buffer too small (unescape, writer) */
#define OSV_JSON_EINVAL  (-110) /* bad argument (e.g. document of 4 GiB or more, writer misuse) */
#define OSV_JSON_ESHAPE  (-111) /* leaf array is ragged or nested deeper than OSV_JSON_MAX_NDIM */

/* Error detail. Plain data, owned by the caller (usually on the stack). */
typedef struct osv_json_err {
    int code;      /* 0 or an OSV_JSON_E* code */
    size_t pos;    /* byte offset in the source the error refers to */
    char msg[128]; /* NUL-terminated human-readable message, "" when code is 0 */
} osv_json_err_t;

/* ------------------------------------------------------------------------------------------------ */
/* Reader                                                                                             */

typedef enum osv_json_type {
    OSV_JSON_NULL = 1,
    OSV_JSON_FALSE,
    OSV_JSON_TRUE,
    OSV_JSON_NUMBER,
    OSV_JSON_STRING,     /* span excludes the quotes; OSV_JSON_F_ESCAPED set when it contains '\' */
    OSV_JSON_ARRAY,      /* ordinary array: one token per element follows */
    OSV_JSON_OBJECT,     /* members follow as key (STRING) token + value subtree */
    OSV_JSON_LEAF_ARRAY, /* array of scalars / leaf arrays: no element tokens, see count and flags */
} osv_json_type_t;

/* Token flags. STRING: F_ESCAPED. NUMBER: F_NONINT when it has a fraction/exponent or is NaN/Infinity.
 * LEAF_ARRAY: which scalar kinds occur among its leaves, F_NONINT/F_ESCAPED as above for any leaf, and
 * F_RECT when the nesting is rectangular (every array at one level has the same length, all leaves at
 * the deepest level, at most OSV_JSON_MAX_NDIM levels). */
#define OSV_JSON_F_HAS_NULL  0x01
#define OSV_JSON_F_HAS_FALSE 0x02
#define OSV_JSON_F_HAS_TRUE  0x04
#define OSV_JSON_F_HAS_NUM   0x08
#define OSV_JSON_F_HAS_STR   0x10
#define OSV_JSON_F_NONINT    0x20
#define OSV_JSON_F_RECT      0x40
#define OSV_JSON_F_ESCAPED   0x80

#define OSV_JSON_MAX_NDIM    8  /* levels of leaf-array nesting whose sizes are recorded */
#define OSV_JSON_SHAPE_SLOTS 16 /* multi-level leaf arrays per document with sizes kept in the doc */
#define OSV_JSON_NO_SHAPE    0xff

/* One token: 20 bytes. Positions are byte offsets into the source. */
typedef struct osv_json_tok {
    uint8_t type;   /* osv_json_type_t */
    uint8_t flags;  /* OSV_JSON_F_* */
    uint8_t ndim;   /* LEAF_ARRAY: nesting levels (1 for [1,2], 2 for [[1],[2]]), capped at 255 */
    uint8_t shape;  /* LEAF_ARRAY: slot in doc->shapes or OSV_JSON_NO_SHAPE (internal; use leaves_shape) */
    uint32_t start; /* first byte: '[' / '{' / first char of a number or literal / byte after the '"' */
    uint32_t len;   /* bytes: through the closing bracket; strings exclude both quotes */
    uint32_t count; /* ARRAY: elements; OBJECT: members; LEAF_ARRAY: scalar leaves after flattening;
                       scalars: 1 */
    uint32_t next;  /* index of the first token after this token's subtree (skip siblings in O(1)) */
} osv_json_tok_t;

/* Parse limits. A zero field means "use the default": max_depth 64, max_tokens = cap,
 * max_string_bytes unlimited (raw bytes between the quotes). max_tokens above cap is clamped to cap. */
typedef struct osv_json_limits {
    uint32_t max_depth;
    uint32_t max_tokens;
    uint32_t max_string_bytes;
} osv_json_limits_t;

/* A parsed document. Borrows src and toks: both must outlive it and stay unmodified. Plain data, no
 * cleanup. toks[0] is the root value. */
typedef struct osv_json_doc {
    const char *src;
    size_t len;
    const osv_json_tok_t *toks;
    uint32_t ntok;
    uint32_t nshape;
    uint32_t shapes[OSV_JSON_SHAPE_SLOTS][OSV_JSON_MAX_NDIM];
} osv_json_doc_t;

/* Parses exactly one JSON text of len bytes at src (not NUL-terminated; never reads src[len] or beyond)
 * into toks[0..cap). Leading/trailing whitespace is allowed, anything else after the value is an error.
 * lim may be NULL (defaults). On success fills *doc and returns 0; on failure returns an OSV_JSON_E*
 * code, fills *err (may be NULL) and leaves *doc unspecified. Strings must be valid UTF-8 without raw
 * control characters; \u escapes are checked for syntax only (osv_json_unescape rejects bad surrogates).
 * Token storage is the only memory used; documents must be smaller than 4 GiB. */
int osv_json_parse(const char *src, size_t len, osv_json_tok_t *toks, uint32_t cap,
                   const osv_json_limits_t *lim, osv_json_doc_t *doc, osv_json_err_t *err);

/* Index of the value of member `key` (keylen raw UTF-8 bytes) of the object token obj, or -1 if obj is
 * not an object or has no such member. Linear scan; escaped keys compare by their unescaped value. When
 * a key occurs twice the first one wins. */
int32_t osv_json_obj_get(const osv_json_doc_t *doc, uint32_t obj, const char *key, size_t keylen);

/* Index of element idx of the ordinary ARRAY token arr, or -1 (out of range / not an ARRAY). O(idx).
 * To iterate: i = arr + 1, then i = doc->toks[i].next, count times. */
int32_t osv_json_arr_get(const osv_json_doc_t *doc, uint32_t arr, uint32_t idx);

/* True when token tok is a string whose unescaped value equals the n bytes at s / the C string lit. */
bool osv_json_str_eqn(const osv_json_doc_t *doc, uint32_t tok, const char *s, size_t n);
bool osv_json_str_eq(const osv_json_doc_t *doc, uint32_t tok, const char *lit);

/* Unescapes a raw string span (as found between the quotes) into dst[0..cap): all JSON escapes, \uXXXX
 * with surrogate pairs to UTF-8. Writes a terminating NUL (the value may itself contain NULs: use
 * *out_len). The result is never longer than the raw span, so cap = len + 1 always suffices.
 * Returns 0, OSV_JSON_ENOSPC, OSV_JSON_EUTF8 (invalid UTF-8 or lone/invalid surrogate) or
 * OSV_JSON_ESYNTAX (malformed escape). */
int osv_json_unescape(const char *raw, size_t len, char *dst, size_t cap, size_t *out_len);
/* The same without the terminating NUL: writes exactly *out_len bytes, never past dst[cap - 1] (for
 * values packed back to back, such as Triton's serialized BYTES in a slot range). */
int osv_json_unescape_raw(const char *raw, size_t len, char *dst, size_t cap, size_t *out_len);
/* Validates a raw span as osv_json_unescape does and gives the unescaped length; writes nothing. */
int osv_json_unescaped_len(const char *raw, size_t len, size_t *out_len);
/* Same for string token tok (OSV_JSON_ETYPE if it is not a string). */
int osv_json_str_unescape(const osv_json_doc_t *doc, uint32_t tok, char *dst, size_t cap, size_t *out_len);

/* Scalar conversions with range checks; err may be NULL. i64/u64 need an integer literal (no fraction
 * or exponent: OSV_JSON_ETYPE) within range (OSV_JSON_ERANGE). f64/f32 are correctly rounded, accept
 * NaN/Infinity. bool accepts true/false and the numbers 0/1. */
int osv_json_tok_i64(const osv_json_doc_t *doc, uint32_t tok, int64_t *out, osv_json_err_t *err);
int osv_json_tok_u64(const osv_json_doc_t *doc, uint32_t tok, uint64_t *out, osv_json_err_t *err);
int osv_json_tok_f64(const osv_json_doc_t *doc, uint32_t tok, double *out, osv_json_err_t *err);
int osv_json_tok_f32(const osv_json_doc_t *doc, uint32_t tok, float *out, osv_json_err_t *err);
int osv_json_tok_bool(const osv_json_doc_t *doc, uint32_t tok, bool *out, osv_json_err_t *err);

/* Element kinds for leaf decoding (native byte order). */
typedef enum osv_json_kind {
    OSV_JSON_KIND_BOOL = 1, /* 1 byte: true/1 -> 1, false/0 -> 0 */
    OSV_JSON_KIND_U8,
    OSV_JSON_KIND_U16,
    OSV_JSON_KIND_U32,
    OSV_JSON_KIND_U64,
    OSV_JSON_KIND_I8,
    OSV_JSON_KIND_I16,
    OSV_JSON_KIND_I32,
    OSV_JSON_KIND_I64,
    OSV_JSON_KIND_F16,  /* IEEE binary16 bits in a uint16_t, round-to-nearest-even */
    OSV_JSON_KIND_BF16, /* bfloat16 bits in a uint16_t, round-to-nearest-even */
    OSV_JSON_KIND_F32,
    OSV_JSON_KIND_F64,
} osv_json_kind_t;

/* Bytes per element of kind, 0 for an unknown kind. */
size_t osv_json_kind_size(osv_json_kind_t kind);

/* Decodes the leaves of token tok (a LEAF_ARRAY, flattened row-major; or a single scalar as one leaf)
 * into dst, which holds count elements of kind (count * osv_json_kind_size(kind) bytes, caller-owned).
 * The leaf count must equal count (OSV_JSON_ECOUNT, checked before anything is written). Integer kinds
 * need integer literals in range; float kinds accept any number incl. NaN/Infinity and round correctly
 * (a number whose exact conversion needs the strtod slow path and whose text exceeds 350 characters is
 * OSV_JSON_ERANGE, "too long"); other leaf types are OSV_JSON_ETYPE. On error dst is partially written
 * and *err names the leaf index and byte position. */
int osv_json_leaves_decode(const osv_json_doc_t *doc, uint32_t tok, osv_json_kind_t kind, void *dst,
                           size_t count, osv_json_err_t *err);

/* Row-major sizes of a rectangular leaf array: dims[0..*ndim). Returns 0, OSV_JSON_ETYPE (not a leaf
 * array; a scalar gives *ndim = 0 and returns 0) or OSV_JSON_ESHAPE (ragged, or more than
 * OSV_JSON_MAX_NDIM levels). O(1) for the first OSV_JSON_SHAPE_SLOTS multi-level arrays of a document,
 * a rescan of the array's bytes after that. */
int osv_json_leaves_shape(const osv_json_doc_t *doc, uint32_t tok, uint32_t dims[OSV_JSON_MAX_NDIM],
                          uint32_t *ndim);

/* One scalar leaf: raw span in doc->src (strings: without quotes, flags OSV_JSON_F_ESCAPED when
 * osv_json_unescape is needed), type OSV_JSON_NULL..OSV_JSON_STRING. */
typedef struct osv_json_leaf {
    uint8_t type;
    uint8_t flags;
    uint32_t start;
    uint32_t len;
} osv_json_leaf_t;

/* Iterator over the leaves of a LEAF_ARRAY (or a single scalar token) in row-major order, e.g. for
 * BYTES tensors. Plain data borrowing the doc; no cleanup. */
typedef struct osv_json_leaf_iter {
    const osv_json_doc_t *doc;
    uint32_t pos, end; /* remaining byte span */
    uint32_t single;   /* token index + 1 while a lone scalar token is still to be returned, else 0 */
} osv_json_leaf_iter_t;

/* Starts iterating token tok. Returns 0 or OSV_JSON_ETYPE (an ARRAY/OBJECT token). */
int osv_json_leaf_iter_init(osv_json_leaf_iter_t *it, const osv_json_doc_t *doc, uint32_t tok);
/* Stores the next leaf in *out and returns true, or returns false at the end. */
bool osv_json_leaf_next(osv_json_leaf_iter_t *it, osv_json_leaf_t *out);

/* ------------------------------------------------------------------------------------------------ */
/* Writer                                                                                             */

/* Worst-case output sizes of one value, excluding the ',' the writer may put before it (add 1). */
#define OSV_JW_MAX_F32_CHARS 20 /* e.g. "-1234567800000000.0" (19) */
#define OSV_JW_MAX_F64_CHARS 25 /* e.g. "-1.2345678901234567e-308" (24) */
#define OSV_JW_MAX_I64_CHARS 20 /* "-9223372036854775808" */
#define OSV_JW_MAX_U64_CHARS 20 /* "18446744073709551615" */

/* Worst case of an escaped string of n bytes incl. both quotes: 6 * n + 2 (saturates at SIZE_MAX).
 * A key additionally needs its ':' (+1). */
size_t osv_jw_str_max(size_t n);

/* Writer state. buf is borrowed (caller-owned, must outlive the writer); the writer never NUL-
 * terminates. Commas between values and ':' after keys are inserted automatically. Misuse that would
 * produce invalid JSON (a key outside an object or twice in a row, a value in an object without a key,
 * a mismatched or extra end, a second top-level value, nesting deeper than 64) sets OSV_JSON_EINVAL; a
 * full buffer sets OSV_JSON_ENOSPC. After an error nothing more is written, every call returns that
 * error, and len stays at the end of the last call that succeeded (never a partial value). */
typedef struct osv_jw {
    char *buf;
    size_t cap;
    size_t len;
    int err;
    uint32_t depth;   /* open containers, at most 64 */
    uint64_t objbits; /* bit d-1 set: the container at depth d is an object */
    bool first;       /* nothing written yet in the current container (or at top level) */
    bool after_key;   /* a key was written, its value is next */
} osv_jw_t;

void osv_jw_init(osv_jw_t *w, char *buf, size_t cap);
size_t osv_jw_len(const osv_jw_t *w);
int osv_jw_error(const osv_jw_t *w); /* 0 or the sticky OSV_JSON_E* code */

/* Each returns 0 or the writer's (sticky) error code. */
int osv_jw_obj_begin(osv_jw_t *w);
int osv_jw_obj_end(osv_jw_t *w);
int osv_jw_arr_begin(osv_jw_t *w);
int osv_jw_arr_end(osv_jw_t *w);
/* Object key, escaped like osv_jw_str, followed by ':'. */
int osv_jw_key(osv_jw_t *w, const char *s, size_t n);
/* String value. Escapes '"', '\\', and control characters (\b \f \n \r \t, others as \u00XX). The
 * output is always valid UTF-8: every byte that is not part of a well-formed UTF-8 sequence is replaced
 * by U+FFFD (so model output with stray bytes still yields valid JSON). Other text passes unchanged. */
int osv_jw_str(osv_jw_t *w, const char *s, size_t n);
int osv_jw_i64(osv_jw_t *w, int64_t v);
int osv_jw_u64(osv_jw_t *w, uint64_t v);
int osv_jw_bool(osv_jw_t *w, bool v);
int osv_jw_null(osv_jw_t *w);
/* Pre-formatted JSON value, copied verbatim (not validated). */
int osv_jw_raw(osv_jw_t *w, const char *s, size_t n);
/* Floats: see osv_jw_f32_chars / osv_jw_f64_chars for the format. */
int osv_jw_f32(osv_jw_t *w, float v);
int osv_jw_f64(osv_jw_t *w, double v);
/* A whole array of n floats: "[v0,v1,...]". */
int osv_jw_f32_array(osv_jw_t *w, const float *v, size_t n);

/* Formats v into dst (at least OSV_JW_MAX_F32_CHARS bytes, not NUL-terminated) and returns the length.
 * At most 9 significant digits, usually the shortest that round-trips; strtof() of the text always gives
 * back the same bits. Like Python's repr: positional for 1e-4 <= |v| < 1e16 with at least one digit
 * after the point ("1.0", "0.001", "-2.5"), otherwise "1.5e-05" / "3.4028235e+38". Integral values thus
 * read back as floats in Python. NaN -> NaN, +-inf -> Infinity / -Infinity (non-standard, as Python's
 * json emits and osv_json_parse accepts). Locale-independent, no snprintf. */
size_t osv_jw_f32_chars(float v, char *dst);
/* Same for doubles (OSV_JW_MAX_F64_CHARS bytes): the shortest of 15, 16, 17 significant digits that
 * round-trips through strtod(), same layout rules. Uses snprintf/strtod in the "C" locale. */
size_t osv_jw_f64_chars(double v, char *dst);

#ifdef __cplusplus
}
#endif

#endif /* OSV_UTIL_JSON_H */
