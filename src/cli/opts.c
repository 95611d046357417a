/* opts.c — the options of the `ortserve` commands (opts.h): the command line and ORTSERVE_*
 * variables read against a command's table, the value parsers, and suggestions for unknown names.
 *
 * Every error is one line on stderr that names the option or variable and what it accepts, followed,
 * for an unknown or misplaced argument, by where the help is: never the whole help, which would
 * scroll the error away. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "opts.h"

#define MAX_NAMES  160 /* options in one command's table */
#define MAX_NAME   64  /* characters of a name osv_opt_distance compares */
#define MAX_LISTED 6   /* options an ambiguity message lists */

/* ---- values ---------------------------------------------------------------------------------------- */

/* Decimal digits at s into *v. Returns the first byte after them, or NULL when there are none or their
 * value does not fit in 64 bits. */
static const char *read_digits(const char *s, uint64_t *v)
{
    const char *p = s;
    uint64_t n = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return NULL;
        n = n * 10 + d;
    }
    if (p == s)
        return NULL;
    *v = n;
    return p;
}

int osv_opt_parse_size(const char *s, uint64_t *out)
{
    uint64_t v, mul = 1;
    const char *p = read_digits(s, &v);
    if (!p)
        return -1;
    switch (*p) {
    case 'k':
    case 'K':
        mul = 1ull << 10;
        break;
    case 'm':
    case 'M':
        mul = 1ull << 20;
        break;
    case 'g':
    case 'G':
        mul = 1ull << 30;
        break;
    default:
        break;
    }
    if (mul > 1) {
        p++;
        p += *p == 'i';
        p += *p == 'B' || *p == 'b';
    }
    if (*p || v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static bool bool_word(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes"}, *const no[] = {"0", "false", "no"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *out = strcasecmp(v, yes[i]) == 0;
            return true;
        }
    }
    return false;
}

/* "64M" for a whole number of K, M or G; else the digits. */
static const char *size_text(uint64_t v, char *buf, size_t cap)
{
    static const char units[] = "GMK";
    for (int i = 0; i < 3; i++) {
        uint64_t u = 1ull << (10 * (3 - i));
        if (v >= u && v % u == 0) {
            snprintf(buf, cap, "%llu%c", (unsigned long long)(v / u), units[i]);
            return buf;
        }
    }
    snprintf(buf, cap, "%llu", (unsigned long long)v);
    return buf;
}

static const char *unit_name(uint64_t unit)
{
    return unit == OSV_OPT_S    ? "seconds"
           : unit == OSV_OPT_MS ? "milliseconds"
           : unit == OSV_OPT_US ? "microseconds"
                                : "nanoseconds";
}

/* What an option accepts, for its error message. */
static void describe(const osv_opt_t *o, char *buf, size_t cap)
{
    char lo[32], hi[32];
    int n = 0;
    switch (o->kind) {
    case OSV_OPT_FLAG:
    case OSV_OPT_SWITCH:
        n = snprintf(buf, cap, "want 0|1, true|false or yes|no");
        break;
    case OSV_OPT_COUNT:
        n = snprintf(buf, cap, "want an integer from %llu to %llu", (unsigned long long)o->min,
                     (unsigned long long)o->max);
        break;
    case OSV_OPT_BYTES:
        n = snprintf(buf, cap, "want a size from %s to %s (digits with K, M or G, powers of 1024)",
                     size_text(o->min, lo, sizeof lo), size_text(o->max, hi, sizeof hi));
        break;
    case OSV_OPT_DURATION:
        n = snprintf(buf, cap, "want a whole number of %s from %llu to %llu", unit_name(o->unit),
                     (unsigned long long)o->min, (unsigned long long)o->max);
        break;
    case OSV_OPT_RATIO:
        n = snprintf(buf, cap, "want a number from 0 to 1");
        break;
    case OSV_OPT_LIST:
        n = snprintf(buf, cap, "want NAME[,NAME...], at most %zu bytes in all", sizeof(osv_opt_list_t) - 2);
        break;
    case OSV_OPT_MULTI:
        n = snprintf(buf, cap, "at most %d of them", OSV_OPT_MULTI_MAX);
        break;
    default:
        buf[0] = '\0';
        break;
    }
    if (o->zero && n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " (%s)", o->zero);
}

static void store_int(void *p, uint8_t store, uint64_t v)
{
    switch (store) { /* the table's compile-time checks made v fit the field */
    case OSV_OPT_ST_INT:
        *(int *)p = (int)v;
        break;
    case OSV_OPT_ST_U32:
        *(uint32_t *)p = (uint32_t)v;
        break;
    case OSV_OPT_ST_I64:
        *(int64_t *)p = (int64_t)v;
        break;
    case OSV_OPT_ST_U64:
        *(uint64_t *)p = v;
        break;
    default:
        break;
    }
}

/* Parses `v` into the option's field. Returns 0 or -1. */
static int set_value(const osv_opt_t *o, void *cfg, const char *v)
{
    void *p = (char *)cfg + o->off;
    uint64_t n;
    switch (o->kind) {
    case OSV_OPT_FLAG:
    case OSV_OPT_SWITCH:
        return bool_word(v, (bool *)p) ? 0 : -1;
    case OSV_OPT_COUNT:
    case OSV_OPT_BYTES:
        if (osv_opt_parse_size(v, &n) != 0 || n < o->min || n > o->max)
            return -1;
        store_int(p, o->store, n);
        return 0;
    case OSV_OPT_DURATION: {
        const char *end = read_digits(v, &n);
        if (!end || *end || n < o->min || n > o->max)
            return -1;
        store_int(p, o->store, n * o->scale);
        return 0;
    }
    case OSV_OPT_RATIO: {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (!((*v >= '0' && *v <= '9') || *v == '.') || end == v || *end || errno || !(d >= 0 && d <= 1))
            return -1;
        *(double *)p = d;
        return 0;
    }
    case OSV_OPT_STRING:
        *(const char **)p = v;
        return 0;
    case OSV_OPT_LIST: {
        osv_opt_list_t *l = p;
        size_t have = strlen(l->v), add = strlen(v);
        if (!add || have + 1 + add >= sizeof l->v)
            return -1;
        if (have)
            l->v[have++] = ',';
        memcpy(l->v + have, v, add + 1);
        return 0;
    }
    case OSV_OPT_MULTI: {
        osv_opt_multi_t *m = p;
        if (m->n == OSV_OPT_MULTI_MAX)
            return -1;
        m->v[m->n++] = v;
        return 0;
    }
    default:
        return -1;
    }
}

int osv_opt_set(const osv_opt_cmd_t *cmd, const osv_opt_t *o, void *cfg, const char *value, const char *where)
{
    char want[160];
    if (set_value(o, cfg, value) == 0)
        return 0;
    describe(o, want, sizeof want);
    fprintf(stderr, "ortserve %s: invalid value '%.200s' for %s: %s\n", cmd->name, value, where, want);
    return 2;
}

/* ---- names ------------------------------------------------------------------------------------------ */

static char fold(char c)
{
    return c == '_' ? '-' : (char)tolower((unsigned char)c);
}

size_t osv_opt_distance(const char *a, size_t na, const char *b, size_t nb)
{
    uint8_t d[MAX_NAME][MAX_NAME];
    na = na < MAX_NAME - 1 ? na : MAX_NAME - 1;
    nb = nb < MAX_NAME - 1 ? nb : MAX_NAME - 1;
    for (size_t i = 0; i <= na; i++)
        d[i][0] = (uint8_t)i;
    for (size_t j = 0; j <= nb; j++)
        d[0][j] = (uint8_t)j;
    for (size_t i = 1; i <= na; i++) {
        for (size_t j = 1; j <= nb; j++) {
            unsigned cost = fold(a[i - 1]) != fold(b[j - 1]), v = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1u < v)
                v = d[i - 1][j] + 1u;
            if (d[i][j - 1] + 1u < v)
                v = d[i][j - 1] + 1u;
            if (i > 1 && j > 1 && fold(a[i - 1]) == fold(b[j - 2]) && fold(a[i - 2]) == fold(b[j - 1]) &&
                d[i - 2][j - 2] + 1u < v)
                v = d[i - 2][j - 2] + 1u; /* two neighbours swapped */
            d[i][j] = (uint8_t)v;
        }
    }
    return d[na][nb];
}

/* Whether hay[0..nh) contains needle[0..nn), folded as fold() does. */
static bool contains(const char *hay, size_t nh, const char *needle, size_t nn)
{
    for (size_t i = 0; nn && i + nn <= nh; i++) {
        size_t k = 0;
        while (k < nn && fold(hay[i + k]) == fold(needle[k]))
            k++;
        if (k == nn)
            return true;
    }
    return false;
}

int osv_opt_suggest(const char *typed, size_t len, const char *const *names, size_t n)
{
    size_t limit = len <= 4 ? 1 : len <= 8 ? 2 : 3, best = SIZE_MAX;
    int at = -1;
    for (size_t i = 0; i < n; i++) {
        size_t d = osv_opt_distance(typed, len, names[i], strlen(names[i]));
        if (d <= limit && d < best) {
            best = d;
            at = (int)i;
        }
    }
    if (at >= 0 || len < 4)
        return at;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        if (contains(names[i], nl, typed, len) || (nl >= 4 && contains(typed, len, names[i], nl))) {
            if (at >= 0)
                return -1; /* several: none is the one meant */
            at = (int)i;
        }
    }
    return at;
}

static size_t option_names(const osv_opt_cmd_t *cmd, const char **names)
{
    size_t n = cmd->n_opts < MAX_NAMES ? cmd->n_opts : MAX_NAMES;
    for (size_t i = 0; i < n; i++)
        names[i] = cmd->opts[i].name;
    return n;
}

void osv_opt_var_name(const char *prefix, const char *name, char *out, size_t cap)
{
    size_t skip = strlen(prefix);
    snprintf(out, cap, "%s%s", prefix, name);
    for (char *p = out + (skip < strlen(out) ? skip : strlen(out)); *p; p++)
        *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
}

/* The option named name[0..len): an exact match, else the only one whose name begins with it (as
 * getopt_long allows). *n_match: how many begin with it. */
static const osv_opt_t *find(const osv_opt_cmd_t *cmd, const char *name, size_t len, size_t *n_match)
{
    const osv_opt_t *found = NULL;
    *n_match = 0;
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const osv_opt_t *o = &cmd->opts[i];
        if (strncmp(o->name, name, len) != 0)
            continue;
        if (o->name[len] == '\0') {
            *n_match = 1;
            return o;
        }
        found = o;
        ++*n_match;
    }
    return *n_match == 1 ? found : NULL;
}

static void see_help(const osv_opt_cmd_t *cmd)
{
    fprintf(stderr, "Run 'ortserve %s --help' for every option.\n", cmd->name);
}

/* An unknown option `shown` (as typed, without its value); name[0..len) is it without dashes. */
static int unknown_option(const osv_opt_cmd_t *cmd, const char *shown, const char *name, size_t len)
{
    const char *names[MAX_NAMES];
    const char *use = NULL, *note = NULL;
    for (size_t i = 0; i < cmd->n_hints && !use; i++) {
        if (osv_opt_distance(name, len, cmd->hints[i].flag, strlen(cmd->hints[i].flag)) == 0) {
            use = cmd->hints[i].use;
            note = cmd->hints[i].note;
        }
    }
    if (!use) {
        int at = osv_opt_suggest(name, len, names, option_names(cmd, names));
        use = at >= 0 ? names[at] : NULL;
    }
    fprintf(stderr, "ortserve %s: unknown option '%.*s'", cmd->name, (int)(len + (size_t)(name - shown)),
            shown);
    if (use)
        fprintf(stderr, "; did you mean --%s?%s%s%s", use, note ? " (" : "", note ? note : "",
                note ? ")" : "");
    fputc('\n', stderr);
    see_help(cmd);
    return 2;
}

static int ambiguous(const osv_opt_cmd_t *cmd, const char *name, size_t len)
{
    size_t listed = 0;
    fprintf(stderr, "ortserve %s: option '--%.*s' is ambiguous:", cmd->name, (int)len, name);
    for (size_t i = 0; i < cmd->n_opts; i++) {
        if (strncmp(cmd->opts[i].name, name, len) != 0)
            continue;
        if (listed++ == MAX_LISTED) {
            fputs(" ...", stderr);
            break;
        }
        fprintf(stderr, "%s --%s", listed > 1 ? "," : "", cmd->opts[i].name);
    }
    fputc('\n', stderr);
    see_help(cmd);
    return 2;
}

/* ---- parsing ---------------------------------------------------------------------------------------- */

static int from_env(const osv_opt_cmd_t *cmd, void *cfg)
{
    for (size_t i = 0; cmd->env_prefix && i < cmd->n_opts; i++) {
        char var[128];
        const char *v;
        osv_opt_var_name(cmd->env_prefix, cmd->opts[i].name, var, sizeof var);
        if ((v = getenv(var)) && *v && osv_opt_set(cmd, &cmd->opts[i], cfg, v, var) != 0)
            return 2;
    }
    return 0;
}

/* Sets option o from the value the command line gave it (NULL: none). */
static int from_flag(const osv_opt_cmd_t *cmd, const osv_opt_t *o, void *cfg, const char *value)
{
    char where[80];
    if (o->kind == OSV_OPT_LIST) {
        osv_opt_list_t *l = (osv_opt_list_t *)((char *)cfg + o->off);
        if (!l->from_flags) { /* the command line replaces the environment's list */
            l->v[0] = '\0';
            l->from_flags = true;
        }
    }
    snprintf(where, sizeof where, "--%s", o->name);
    if (!value && o->kind != OSV_OPT_FLAG && o->kind != OSV_OPT_SWITCH) {
        fprintf(stderr, "ortserve %s: option --%s needs a value (%s)\n", cmd->name, o->name, o->arg);
        return 2;
    }
    return osv_opt_set(cmd, o, cfg, value ? value : "1", where);
}

static const osv_opt_t *find_short(const osv_opt_cmd_t *cmd, char c)
{
    size_t n;
    for (size_t i = 0; i < cmd->n_shorts; i++)
        if (cmd->shorts[i].c == c)
            return find(cmd, cmd->shorts[i].name, strlen(cmd->shorts[i].name), &n);
    return NULL;
}

static bool takes_value(const osv_opt_t *o)
{
    return o->kind != OSV_OPT_FLAG && o->kind != OSV_OPT_SWITCH;
}

int osv_opt_parse(const osv_opt_cmd_t *cmd, void *cfg, int argc, char **argv, int *n_args)
{
    int nargs = 0, i, rc;
    bool only_args = false;
    if ((rc = from_env(cmd, cfg)) != 0)
        return rc;
    for (i = 1; i < argc; i++) {
        char *a = argv[i];
        const osv_opt_t *o;
        const char *value = NULL;
        size_t n;
        if (only_args || a[0] != '-' || a[1] == '\0') {
            argv[1 + nargs++] = a; /* not an option (a lone "-" included) */
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return OSV_OPT_HELP;
        if (a[1] == '-') { /* --name, --name=VALUE, --name VALUE */
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            if (!len || !(o = find(cmd, name, len, &n)))
                return len && n > 1 ? ambiguous(cmd, name, len) : unknown_option(cmd, a, name, len);
            if (eq)
                value = eq + 1;
            else if (o->kind == OSV_OPT_FLAG && i + 1 < argc &&
                     (bool_word(argv[i + 1], &(bool){false}) ||
                      (cmd->max_args == 0 && argv[i + 1][0] != '-')))
                value = argv[++i]; /* "--allow-shm 0" as well as "--allow-shm" and "--allow-shm=0"; a
                                      command without arguments takes "--allow-shm maybe" as a value */
            else if (takes_value(o) && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                value = argv[++i];
        } else { /* -c VALUE, -cVALUE; "-name" is a long option missing a dash */
            if (!(o = find_short(cmd, a[1])) || (a[2] && !takes_value(o)))
                return unknown_option(cmd, a, a + 1, strlen(a + 1));
            if (a[2])
                value = a + 2;
            else if (takes_value(o) && i + 1 < argc)
                value = argv[++i];
        }
        if ((rc = from_flag(cmd, o, cfg, value)) != 0)
            return rc;
    }
    if (cmd->max_args >= 0 && nargs > cmd->max_args) {
        fprintf(stderr, "ortserve %s: unexpected argument '%.200s'\n", cmd->name, argv[1 + cmd->max_args]);
        see_help(cmd);
        return 2;
    }
    *n_args = nargs;
    return 0;
}

void osv_opt_print_help(FILE *f, const osv_opt_cmd_t *cmd)
{
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const osv_opt_t *o = &cmd->opts[i];
        char flag[80], var[128];
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, o->arg[0] ? " " : "", o->arg);
        fprintf(f, "  %-34s %s\n", flag, o->help);
        if (cmd->env_prefix) {
            osv_opt_var_name(cmd->env_prefix, o->name, var, sizeof var);
            fprintf(f, "  %-34s   env %s\n", "", var);
        }
    }
}

size_t osv_opt_unknown_vars(const osv_opt_cmd_t *cmd, const char *const *known,
                            void (*fn)(void *ud, const char *var, size_t len, const char *suggestion),
                            void *ud)
{
    const char *names[MAX_NAMES];
    size_t plen, count = 0, n_names;
    if (!cmd->env_prefix)
        return 0;
    plen = strlen(cmd->env_prefix);
    n_names = option_names(cmd, names);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        char var[128], suggestion[128];
        bool known_var = false;
        if (len <= plen || strncmp(*e, cmd->env_prefix, plen) != 0)
            continue;
        for (size_t i = 0; i < cmd->n_opts && !known_var; i++) {
            osv_opt_var_name(cmd->env_prefix, cmd->opts[i].name, var, sizeof var);
            known_var = strlen(var) == len && strncmp(var, *e, len) == 0;
        }
        for (size_t i = 0; known && known[i] && !known_var; i++)
            known_var = strlen(known[i]) == len && strncmp(known[i], *e, len) == 0;
        if (known_var)
            continue;
        int at = osv_opt_suggest(*e + plen, len - plen, names, n_names);
        if (at >= 0)
            osv_opt_var_name(cmd->env_prefix, names[at], suggestion, sizeof suggestion);
        fn(ud, *e, len, at >= 0 ? suggestion : NULL);
        count++;
    }
    return count;
}

bool osv_opt_host_is_loopback(const char *host)
{
    unsigned char a[16];
    if (!host)
        return false;
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, host, a) != 1)
        return false;
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char one[16] = {[15] = 1};
    return memcmp(a, one, 16) == 0 || (memcmp(a, v4mapped, 12) == 0 && a[12] == 127);
}
