/* opts.h — internal: the options of the `ortserve` commands, declared once per command in a table.
 *
 * A table entry is built by a macro from the settings field it fills. The macro takes the field's
 * type with _Generic and checks at compile time that it is what the option's kind writes (a FLAG a
 * bool, a COUNT an integer type that holds its whole range, a DURATION a field that holds its range
 * once scaled to the field's unit...), so an entry can never write 4 bytes over a 1-byte field nor
 * truncate a value it accepted. Define OSV_OPT_STRUCT as the settings struct before a table.
 *
 * Values are read from text by one set of parsers, range-checked, and refused with a message that
 * names the option (or its environment variable) and what it accepts. Unknown options, commands and
 * variables get the closest known name (osv_opt_suggest). */
#ifndef OSV_CLI_OPTS_H
#define OSV_CLI_OPTS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* How an option's text is read. */
typedef enum osv_opt_kind {
    OSV_OPT_FLAG,     /* bool: alone means true, or 0|1|true|false|yes|no (also as the next argument) */
    OSV_OPT_SWITCH,   /* bool: alone means true; a value only as --name=VALUE */
    OSV_OPT_COUNT,    /* an integer in [min, max]; a K, M or G suffix multiplies by 1024, 1024², 1024³ */
    OSV_OPT_BYTES,    /* a size in [min, max]: osv_opt_parse_size */
    OSV_OPT_DURATION, /* whole units (unit ns each) in [min, max], stored × scale in the field's unit */
    OSV_OPT_RATIO,    /* a real number in [0, 1] */
    OSV_OPT_STRING,   /* kept as a pointer into argv or the environment */
    OSV_OPT_LIST,     /* comma-separated names into an osv_opt_list_t; repeatable */
    OSV_OPT_MULTI,    /* repeatable; each value kept in an osv_opt_multi_t */
} osv_opt_kind_t;

/* The type of the field an option fills (from _Generic; OSV_OPT_ST_NONE: no option kind writes it). */
typedef enum osv_opt_store {
    OSV_OPT_ST_NONE,
    OSV_OPT_ST_BOOL,
    OSV_OPT_ST_INT,
    OSV_OPT_ST_U32,
    OSV_OPT_ST_I64,
    OSV_OPT_ST_U64,
    OSV_OPT_ST_DOUBLE,
    OSV_OPT_ST_STR,
    OSV_OPT_ST_LIST,
    OSV_OPT_ST_MULTI,
} osv_opt_store_t;

/* LIST: names joined with commas. The first value from the command line replaces what the
 * environment gave; later ones are added. */
typedef struct osv_opt_list {
    char v[4096];
    bool from_flags;
} osv_opt_list_t;

/* MULTI: every value given, in order. */
#define OSV_OPT_MULTI_MAX 64
typedef struct osv_opt_multi {
    const char *v[OSV_OPT_MULTI_MAX];
    uint32_t n;
} osv_opt_multi_t;

/* Units of DURATION options, in nanoseconds. */
#define OSV_OPT_S  1000000000ull
#define OSV_OPT_MS 1000000ull
#define OSV_OPT_US 1000ull
#define OSV_OPT_NS 1ull

/* Largest value SIZE options are given (so that sums and products of sizes cannot overflow). */
#define OSV_OPT_TiB (1ull << 40)

typedef struct osv_opt {
    const char *name; /* long name without "--"; the variable is <prefix><NAME with '-' as '_'> */
    const char *arg;  /* the value's placeholder in help texts: N, SIZE, MS, 0|1, ... ("" for a SWITCH) */
    const char *help;
    const char *zero;  /* what 0 means, said in range errors ("0 = any free port"); NULL: nothing */
    uint8_t kind;      /* osv_opt_kind_t */
    uint8_t store;     /* osv_opt_store_t */
    size_t off;        /* the field's offset in the settings struct */
    size_t size;       /* sizeof the field */
    uint64_t min, max; /* COUNT, BYTES, DURATION: values accepted, in the option's unit */
    uint64_t unit;     /* DURATION: the option's unit in ns (OSV_OPT_MS ...) */
    uint64_t scale;    /* DURATION: field units per option unit (1000 for µs kept as ns); else 1 */
} osv_opt_t;

/* ---- building entries (OSV_OPT_STRUCT must name the settings struct) ------------------------------ */

#define OSV_OPT_FIELD(f) (((OSV_OPT_STRUCT *)0)->f)
#define OSV_OPT_STORE_OF(f)                                                                                  \
    _Generic(&OSV_OPT_FIELD(f),                                                                              \
        bool *: OSV_OPT_ST_BOOL,                                                                             \
        int *: OSV_OPT_ST_INT,                                                                               \
        uint32_t *: OSV_OPT_ST_U32,                                                                          \
        int64_t *: OSV_OPT_ST_I64,                                                                           \
        uint64_t *: OSV_OPT_ST_U64,                                                                          \
        double *: OSV_OPT_ST_DOUBLE,                                                                         \
        const char **: OSV_OPT_ST_STR,                                                                       \
        osv_opt_list_t *: OSV_OPT_ST_LIST,                                                                   \
        osv_opt_multi_t *: OSV_OPT_ST_MULTI,                                                                 \
        default: OSV_OPT_ST_NONE)
/* The largest value an integer field holds (0 for a field that is not an integer). */
#define OSV_OPT_MAX_OF(f)                                                                                    \
    _Generic(&OSV_OPT_FIELD(f),                                                                              \
        int *: (uint64_t)INT_MAX,                                                                            \
        uint32_t *: (uint64_t)UINT32_MAX,                                                                    \
        int64_t *: (uint64_t)INT64_MAX,                                                                      \
        uint64_t *: UINT64_MAX,                                                                              \
        default: (uint64_t)0)
/* 0, or a compile error with `msg` when `cond` is false. */
#define OSV_OPT_CHECK(cond, msg)                                                                             \
    (0 * sizeof(struct {                                                                                     \
         _Static_assert(cond, msg);                                                                          \
         int ok_;                                                                                            \
     }))

#define OSV_OPT_ENTRY(nm, f, k, lo, hi, u, sc, z, a, h, check)                                               \
    {                                                                                                        \
        .name = nm, .arg = a, .help = h, .zero = z, .kind = k, .store = OSV_OPT_STORE_OF(f),                 \
        .off = offsetof(OSV_OPT_STRUCT, f), .size = sizeof OSV_OPT_FIELD(f) + (check), .min = lo, .max = hi, \
        .unit = u, .scale = sc                                                                               \
    }

#define OSV_OPT_IS(f, st) (OSV_OPT_STORE_OF(f) == (st))

/* --nm [0|1]: a bool field. */
#define OSV_OPT_FLAG(nm, f, h)                                                                               \
    OSV_OPT_ENTRY(nm, f, OSV_OPT_FLAG, 0, 1, 0, 1, NULL, "0|1", h,                                           \
                  OSV_OPT_CHECK(OSV_OPT_IS(f, OSV_OPT_ST_BOOL), "--" nm ": a FLAG fills a bool field"))
/* --nm alone: a bool field. */
#define OSV_OPT_SWITCH(nm, f, h)                                                                             \
    OSV_OPT_ENTRY(nm, f, OSV_OPT_SWITCH, 0, 1, 0, 1, NULL, "", h,                                            \
                  OSV_OPT_CHECK(OSV_OPT_IS(f, OSV_OPT_ST_BOOL), "--" nm ": a SWITCH fills a bool field"))
/* --nm N, lo ≤ N ≤ hi: an integer field that holds hi. */
#define OSV_OPT_COUNT(nm, f, lo, hi, z, a, h)                                                                \
    OSV_OPT_ENTRY(nm, f, OSV_OPT_COUNT, lo, hi, 0, 1, z, a, h,                                               \
                  OSV_OPT_CHECK(OSV_OPT_MAX_OF(f) > 0 && (lo) <= (hi) && (hi) <= OSV_OPT_MAX_OF(f),          \
                                "--" nm ": a COUNT fills an integer field that holds its whole range"))
/* --nm SIZE, lo ≤ SIZE ≤ hi bytes: an integer field that holds hi. */
#define OSV_OPT_BYTES(nm, f, lo, hi, z, h)                                                                   \
    OSV_OPT_ENTRY(nm, f, OSV_OPT_BYTES, lo, hi, 0, 1, z, "SIZE", h,                                          \
                  OSV_OPT_CHECK(OSV_OPT_MAX_OF(f) > 0 && (lo) <= (hi) && (hi) <= OSV_OPT_MAX_OF(f),          \
                                "--" nm                                                                      \
                                ": a BYTES option fills an integer field that holds its whole range"))
/* --nm T, lo ≤ T ≤ hi in `unit`, stored in `field_unit` (both OSV_OPT_S, _MS, _US or _NS): the field's
 * unit divides the option's, and the field holds hi once converted. */
#define OSV_OPT_DURATION(nm, f, unit, field_unit, lo, hi, z, a, h)                                           \
    OSV_OPT_ENTRY(nm, f, OSV_OPT_DURATION, lo, hi, unit, (unit) / (field_unit), z, a, h,                     \
                  OSV_OPT_CHECK(OSV_OPT_MAX_OF(f) > 0 && (unit) >= (field_unit) &&                           \
                                    (unit) % (field_unit) == 0 && (lo) <= (hi) &&                            \
                                    (hi) <= OSV_OPT_MAX_OF(f) / ((unit) / (field_unit)),                     \
                                "--" nm ": a DURATION fills an integer field that holds its range in the "   \
                                "field's unit"))
/* --nm R, 0 ≤ R ≤ 1: a double field. */
#define OSV_OPT_RATIO(nm, f, a, h)                                                                           \
    OSV_OPT_ENTRY(nm, f, OSV_OPT_RATIO, 0, 1, 0, 1, NULL, a, h,                                              \
                  OSV_OPT_CHECK(OSV_OPT_IS(f, OSV_OPT_ST_DOUBLE), "--" nm ": a RATIO fills a double field"))
/* --nm TEXT: a const char * field. */
#define OSV_OPT_STRING(nm, f, a, h)                                                                          \
    OSV_OPT_ENTRY(                                                                                           \
        nm, f, OSV_OPT_STRING, 0, 0, 0, 1, NULL, a, h,                                                       \
        OSV_OPT_CHECK(OSV_OPT_IS(f, OSV_OPT_ST_STR), "--" nm ": a STRING fills a const char * field"))
/* --nm NAME[,NAME...], repeatable: an osv_opt_list_t field. */
#define OSV_OPT_LIST(nm, f, a, h)                                                                            \
    OSV_OPT_ENTRY(nm, f, OSV_OPT_LIST, 0, 0, 0, 1, NULL, a, h,                                               \
                  OSV_OPT_CHECK(OSV_OPT_IS(f, OSV_OPT_ST_LIST), "--" nm ": a LIST fills an osv_opt_list_t"))
/* --nm TEXT, repeatable: an osv_opt_multi_t field. */
#define OSV_OPT_MULTI(nm, f, a, h)                                                                           \
    OSV_OPT_ENTRY(                                                                                           \
        nm, f, OSV_OPT_MULTI, 0, 0, 0, 1, NULL, a, h,                                                        \
        OSV_OPT_CHECK(OSV_OPT_IS(f, OSV_OPT_ST_MULTI), "--" nm ": a MULTI fills an osv_opt_multi_t"))

/* ---- commands ------------------------------------------------------------------------------------ */

/* A one-letter option: -c VALUE (or -cVALUE) is --name VALUE. */
typedef struct osv_opt_short {
    char c;
    const char *name;
} osv_opt_short_t;

/* An option users bring from another server (Triton's --http-port): an unknown option named `flag`
 * is answered with `use` (one of ours) and an optional note. */
typedef struct osv_opt_hint {
    const char *flag, *use, *note;
} osv_opt_hint_t;

typedef struct osv_opt_cmd {
    const char *name; /* "serve": messages begin "ortserve serve: " */
    const osv_opt_t *opts;
    size_t n_opts;
    const osv_opt_short_t *shorts;
    size_t n_shorts;
    const osv_opt_hint_t *hints;
    size_t n_hints;
    const char *env_prefix; /* "ORTSERVE_": every option is also a variable; NULL: none */
    int max_args;           /* arguments that are not options the command takes (-1: any number) */
} osv_opt_cmd_t;

#define OSV_OPT_HELP 1 /* osv_opt_parse: -h or --help was given */

/* Fills `cfg` from the environment (when the command has variables), then from argv[1..argc): the
 * command line wins. --name VALUE, --name=VALUE, an unambiguous prefix of a name, -c VALUE, -cVALUE;
 * "--" ends the options. A FLAG takes the next argument as its value when it is a bool word, or, in
 * a command that takes no arguments (max_args 0), when it is not an option. Arguments that are not
 * options are moved, in order, to argv[1..*n_args].
 * Strings are kept as pointers into argv and the environment. Returns 0, OSV_OPT_HELP, or 2 after
 * printing one error (and where to find help) to stderr. */
int osv_opt_parse(const osv_opt_cmd_t *cmd, void *cfg, int argc, char **argv, int *n_args);

/* Sets one option from text; `where` names it in the error ("--port", "ORTSERVE_PORT"). Returns 0,
 * or 2 after printing the error. */
int osv_opt_set(const osv_opt_cmd_t *cmd, const osv_opt_t *o, void *cfg, const char *value,
                const char *where);

/* Prints every option as "  --name ARG   help" and, with variables, "    env VAR" lines. */
void osv_opt_print_help(FILE *f, const osv_opt_cmd_t *cmd);

/* How numbers and sizes are written (one sentence for help texts; the man page says the same). */
#define OSV_OPT_NUMBER_HELP                                                                                  \
    "N and SIZE take K, M or G (powers of 1024), optionally followed by i or B:\n"                           \
    "64M = 64Mi = 64MB = 64MiB = 67108864."

/* Digits with an optional K, M or G (×1024, ×1024², ×1024³; either case) optionally followed by "i",
 * "B" or "iB". Nothing else: no sign, space, fraction or other suffix. Returns 0, or -1 (malformed or
 * beyond 2^64 - 1). */
int osv_opt_parse_size(const char *s, uint64_t *out);

/* The variable of an option: prefix + name in upper case with '-' as '_' (truncated to fit). */
void osv_opt_var_name(const char *prefix, const char *name, char *out, size_t cap);

/* Optimal string alignment (restricted Damerau–Levenshtein) distance between a[0..na) and b[0..nb),
 * case-insensitive, with '_' equal to '-'; names longer than 63 characters are compared on their first
 * 63. */
size_t osv_opt_distance(const char *a, size_t na, const char *b, size_t nb);

/* The candidate closest to typed[0..len): the nearest by osv_opt_distance when it is at most 1 for a
 * name of up to 4 characters, 2 up to 8 and 3 beyond (ties: the first); else the only candidate that
 * contains it or that it contains (4 characters or more). Returns its index, or -1. */
int osv_opt_suggest(const char *typed, size_t len, const char *const *names, size_t n);

/* True when a --host value listens on loopback only: "localhost", 127.0.0.0/8, ::1 (or ::ffff:127.x).
 * Everything else — 0.0.0.0, ::, an interface address, another name — is reachable from outside. */
bool osv_opt_host_is_loopback(const char *host);

/* Calls fn for every variable of the environment that starts with the command's prefix and is neither
 * an option's nor in `known` (NULL-terminated), with the closest option's variable or NULL. Returns
 * how many there were. */
size_t osv_opt_unknown_vars(const osv_opt_cmd_t *cmd, const char *const *known,
                            void (*fn)(void *ud, const char *var, size_t len, const char *suggestion),
                            void *ud);

#endif
