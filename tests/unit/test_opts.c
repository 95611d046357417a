/* test_opts.c — the CLI's option tables (src/cli/opts.c): one size syntax, typed fields written
 * whole and no wider, ranges, durations scaled to the field's unit, lists and repeated options, the
 * environment under the command line, usage errors with suggestions, unknown variables. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opts.h"
#include "testutil.h"

/* Settings with a canary after every narrow field: a write wider than its field changes a canary. */
typedef struct cfg {
    bool flag;
    uint8_t canary1;
    bool sw;
    uint8_t canary2;
    int port;
    uint32_t count;
    int64_t ms;
    uint64_t ns; /* --wait-us, kept in ns */
    uint64_t bytes;
    double ratio;
    const char *name;
    osv_opt_list_t list;
    osv_opt_multi_t multi;
    uint32_t canary3;
} cfg_t;

#define OSV_OPT_STRUCT cfg_t
static const osv_opt_t table[] = {
    OSV_OPT_FLAG("flag", flag, "a flag"),
    OSV_OPT_SWITCH("switch", sw, "a switch"),
    OSV_OPT_COUNT("port", port, 0, 65535, "0 = any free port", "N", "a port"),
    OSV_OPT_COUNT("count", count, 1, 100, NULL, "N", "a count"),
    OSV_OPT_DURATION("wait-ms", ms, OSV_OPT_MS, OSV_OPT_MS, 0, 86400000, "0 disables", "MS", "milliseconds"),
    OSV_OPT_DURATION("wait-us", ns, OSV_OPT_US, OSV_OPT_NS, 0, 3600000000ull, NULL, "US",
                     "microseconds as ns"),
    OSV_OPT_BYTES("bytes", bytes, 1, OSV_OPT_TiB, NULL, "a size"),
    OSV_OPT_RATIO("ratio", ratio, "R", "a ratio"),
    OSV_OPT_STRING("name", name, "NAME", "a name"),
    OSV_OPT_STRING("name-prefix", name, "NAME", "shares a prefix with --name"),
    OSV_OPT_LIST("list", list, "NAME", "a list"),
    OSV_OPT_MULTI("multi", multi, "X", "repeatable"),
};
#undef OSV_OPT_STRUCT

static const osv_opt_short_t shorts[] = {{'n', "name"}, {'m', "multi"}, {'s', "switch"}};
static const osv_opt_hint_t hints[] = {{"http-port", "port", "Triton's"}};

static const osv_opt_cmd_t cmd = {.name = "test",
                                  .opts = table,
                                  .n_opts = sizeof table / sizeof *table,
                                  .shorts = shorts,
                                  .n_shorts = sizeof shorts / sizeof *shorts,
                                  .hints = hints,
                                  .n_hints = 1,
                                  .env_prefix = "OSVTEST_",
                                  .max_args = 2};

static char err_text[4096];

/* Parses a NULL-terminated argument list (argv[0] = "test") into *c, with stderr captured in
 * err_text. Returns osv_opt_parse's result. */
static int parse_into(cfg_t *c, int *n_args, const char *const *args)
{
    char *argv[32] = {"test"};
    int argc = 1, fd, saved, rc;
    char path[] = "/tmp/osv-opts-XXXXXX";
    for (; args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    memset(c, 0, sizeof *c);
    c->canary1 = c->canary2 = 0xa5;
    c->canary3 = 0xa5a5a5a5u;
    fflush(stderr);
    assert_true((fd = mkstemp(path)) >= 0);
    saved = dup(2);
    dup2(fd, 2);
    rc = osv_opt_parse(&cmd, c, argc, argv, n_args);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, err_text, sizeof err_text - 1, 0);
    err_text[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    assert_int_equal(c->canary1, 0xa5);
    assert_int_equal(c->canary2, 0xa5);
    assert_int_equal(c->canary3, 0xa5a5a5a5u);
    return rc;
}

#define PARSE(c, n, ...) parse_into(c, n, (const char *const[]){__VA_ARGS__, NULL})

static void sizes_have_one_syntax(void **state)
{
    static const struct {
        const char *in;
        uint64_t v;
    } ok[] = {{"0", 0},
              {"1048576", 1 << 20},
              {"1M", 1 << 20},
              {"1m", 1 << 20},
              {"1Mi", 1 << 20},
              {"1MB", 1 << 20},
              {"1MiB", 1 << 20},
              {"1Mb", 1 << 20},
              {"64K", 64 << 10},
              {"3G", 3ull << 30},
              {"18446744073709551615", UINT64_MAX},
              {"17179869183G", 17179869183ull << 30}};
    static const char *const bad[] = {"",
                                      "M",
                                      "-1",
                                      "+1",
                                      " 1",
                                      "1 ",
                                      "1.5M",
                                      "1X",
                                      "1MiBs",
                                      "1iB",
                                      "1B",
                                      "0x10",
                                      "1e3",
                                      "18446744073709551616",
                                      "17179869184G",
                                      "1KM"};
    uint64_t v;
    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        v = 7;
        assert_int_equal(osv_opt_parse_size(ok[i].in, &v), 0);
        assert_int_equal(v, ok[i].v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = 7;
        if (osv_opt_parse_size(bad[i], &v) != -1)
            fail_msg("'%s' was accepted", bad[i]);
        assert_int_equal(v, 7);
    }
}

static void values_are_typed_and_ranged(void **state)
{
    cfg_t c;
    int n;
    (void)state;
    assert_int_equal(PARSE(&c, &n, "--flag", "--switch", "--port", "65535", "--count=100", "--wait-ms",
                           "86400000", "--wait-us", "3600000000", "--bytes", "1024GiB", "--ratio", "0.25",
                           "--name", "x"),
                     0);
    assert_true(c.flag);
    assert_true(c.sw);
    assert_int_equal(c.port, 65535);
    assert_int_equal(c.count, 100);
    assert_int_equal(c.ms, 86400000);
    assert_int_equal(c.ns, 3600000000ull * 1000); /* µs kept as ns */
    assert_int_equal(c.bytes, 1ull << 40);
    assert_true(c.ratio == 0.25);
    assert_string_equal(c.name, "x");
    assert_int_equal(n, 0);
    assert_int_equal(PARSE(&c, &n, "--port=0", "--count", "1K", "--bytes", "64K", "--flag", "no"), 2);
    assert_non_null(strstr(err_text, "invalid value '1K' for --count: want an integer from 1 to 100\n"));
    static const char *const refused[][3] = {
        {"--port", "65536", "want an integer from 0 to 65535 (0 = any free port)"},
        {"--port", "-1", "from 0 to 65535"},
        {"--port", "4294967296", "from 0 to 65535"}, /* not 0 once truncated to 32 bits */
        {"--count", "0", "from 1 to 100"},
        {"--wait-ms", "86400001", "whole number of milliseconds from 0 to 86400000 (0 disables)"},
        {"--wait-ms", "1s", "milliseconds"},
        {"--wait-us", "3600000001", "microseconds"},
        {"--bytes", "0", "want a size from 1 to 1024G"},
        {"--bytes", "1025G", "size"},
        {"--ratio", "1.01", "from 0 to 1"},
        {"--ratio", "nan", "from 0 to 1"},
        {"--ratio", "-0", "from 0 to 1"},
        {"--flag=maybe", NULL, "0|1, true|false or yes|no"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        int rc = refused[i][1] ? PARSE(&c, &n, refused[i][0], refused[i][1]) : PARSE(&c, &n, refused[i][0]);
        assert_int_equal(rc, 2);
        if (!strstr(err_text, refused[i][2]) || !strstr(err_text, "ortserve test: invalid value"))
            fail_msg("%s %s: %s", refused[i][0], refused[i][1] ? refused[i][1] : "", err_text);
    }
    /* A flag takes the next word only when it is a bool word; a switch never does. */
    assert_int_equal(PARSE(&c, &n, "--flag", "0", "--switch", "1"), 0);
    assert_false(c.flag);
    assert_true(c.sw);
    assert_int_equal(n, 1);
    assert_int_equal(PARSE(&c, &n, "--flag", "arg", "--switch=no"), 0);
    assert_true(c.flag);
    assert_false(c.sw);
    assert_int_equal(n, 1);
}

static void lists_multi_shorts_and_arguments(void **state)
{
    cfg_t c;
    int n;
    char *argv[8];
    (void)state;
    assert_int_equal(PARSE(&c, &n, "a", "--list", "x", "-m", "1", "--list=y,z", "-m2", "-nN", "--", "--b"),
                     0);
    assert_string_equal(c.list.v, "x,y,z");
    assert_int_equal(c.multi.n, 2);
    assert_string_equal(c.multi.v[0], "1");
    assert_string_equal(c.multi.v[1], "2");
    assert_string_equal(c.name, "N");
    assert_int_equal(n, 2);
    /* Arguments are moved, in order, to argv[1..n]. */
    argv[0] = "test";
    argv[1] = "--switch";
    argv[2] = "first";
    argv[3] = "-n";
    argv[4] = "v";
    argv[5] = "second";
    memset(&c, 0, sizeof c);
    assert_int_equal(osv_opt_parse(&cmd, &c, 6, argv, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(argv[1], "first");
    assert_string_equal(argv[2], "second");
    assert_int_equal(PARSE(&c, &n, "a", "b", "c"), 2);
    assert_non_null(strstr(err_text, "unexpected argument 'c'"));
    assert_int_equal(PARSE(&c, &n, "--multi", "1", "--multi"), 2);
    assert_non_null(strstr(err_text, "option --multi needs a value (X)"));
    assert_int_equal(PARSE(&c, &n, "--port", "--count", "2"), 2); /* an option is not a value */
    assert_non_null(strstr(err_text, "option --port needs a value"));
    assert_int_equal(PARSE(&c, &n, "x", "--help"), OSV_OPT_HELP);
    assert_int_equal(PARSE(&c, &n, "-h"), OSV_OPT_HELP);
    /* An unambiguous prefix is the option (as getopt_long); an exact name wins over longer ones. */
    assert_int_equal(PARSE(&c, &n, "--rat", "1", "--name", "a"), 0);
    assert_true(c.ratio == 1);
    assert_string_equal(c.name, "a");
    assert_int_equal(PARSE(&c, &n, "--wait", "1"), 2);
    assert_non_null(strstr(err_text, "option '--wait' is ambiguous: --wait-ms, --wait-us\n"));
}

static void environment_then_command_line(void **state)
{
    cfg_t c;
    int n;
    (void)state;
    setenv("OSVTEST_PORT", "8001", 1);
    setenv("OSVTEST_LIST", "e1,e2", 1);
    setenv("OSVTEST_WAIT_US", "5", 1);
    assert_int_equal(PARSE(&c, &n, "--count", "3"), 0);
    assert_int_equal(c.port, 8001);
    assert_string_equal(c.list.v, "e1,e2");
    assert_int_equal(c.ns, 5000);
    assert_int_equal(PARSE(&c, &n, "--port", "9", "--list", "f1", "--list", "f2"), 0);
    assert_int_equal(c.port, 9);
    assert_string_equal(c.list.v, "f1,f2"); /* flags replace the variable's list */
    setenv("OSVTEST_PORT", "73537", 1);
    assert_int_equal(PARSE(&c, &n, "--port", "9"), 2);
    assert_non_null(
        strstr(err_text, "invalid value '73537' for OSVTEST_PORT: want an integer from 0 to 65535"));
    unsetenv("OSVTEST_PORT");
    unsetenv("OSVTEST_LIST");
    unsetenv("OSVTEST_WAIT_US");
}

static void distance_and_suggestions(void **state)
{
    static const char *const names[] = {"port",
                                        "port-file",
                                        "host",
                                        "workers",
                                        "model-repository",
                                        "intra-op-threads",
                                        "inter-op-threads",
                                        "max-body-bytes"};
    const size_t n = sizeof names / sizeof *names;
    (void)state;
    assert_int_equal(osv_opt_distance("prot", 4, "port", 4), 1); /* a swap is one edit */
    assert_int_equal(osv_opt_distance("kitten", 6, "sitting", 7), 3);
    assert_int_equal(osv_opt_distance("MAX_BODY_BYTES", 14, "max-body-bytes", 14), 0);
    assert_int_equal(osv_opt_distance("", 0, "abc", 3), 3);
    assert_int_equal(osv_opt_suggest("prot", 4, names, n), 0);
    assert_int_equal(osv_opt_suggest("workrs", 6, names, n), 3);
    assert_int_equal(osv_opt_suggest("Max_Body_Bytes", 14, names, n), 7);
    assert_int_equal(osv_opt_suggest("repository", 10, names, n), 4);           /* contained in one name */
    assert_int_equal(osv_opt_suggest("model-repository-dir", 20, names, n), 4); /* contains one */
    assert_int_equal(osv_opt_suggest("op-threads", 10, names, n), -1); /* contained in two: neither */
    assert_int_equal(osv_opt_suggest("zzzz", 4, names, n), -1);
    assert_int_equal(osv_opt_suggest("pt", 2, names, n), -1); /* two edits is too far for a short name */
    char long_name[200];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(osv_opt_suggest(long_name, strlen(long_name), names, n), -1);
}

static void unknown_options_are_named_with_a_suggestion(void **state)
{
    cfg_t c;
    int n;
    (void)state;
    assert_int_equal(PARSE(&c, &n, "--prot", "1"), 2);
    assert_string_equal(err_text, "ortserve test: unknown option '--prot'; did you mean --port?\n"
                                  "Run 'ortserve test --help' for every option.\n");
    assert_int_equal(PARSE(&c, &n, "--http-port=8000"), 2);
    assert_string_equal(err_text,
                        "ortserve test: unknown option '--http-port'; did you mean --port? (Triton's)\n"
                        "Run 'ortserve test --help' for every option.\n");
    assert_int_equal(PARSE(&c, &n, "-port", "1"), 2);
    assert_non_null(strstr(err_text, "unknown option '-port'; did you mean --port?\n"));
    assert_int_equal(PARSE(&c, &n, "-switchy"), 2); /* -s takes no value */
    assert_non_null(strstr(err_text, "unknown option '-switchy'; did you mean --switch?\n"));
    assert_int_equal(PARSE(&c, &n, "-x"), 2);
    assert_string_equal(err_text,
                        "ortserve test: unknown option '-x'\nRun 'ortserve test --help' for every option.\n");
}

static int n_unknown;
static char unknown_seen[4][64], suggested[4][64];

static void note_unknown(void *ud, const char *var, size_t len, const char *suggestion)
{
    (void)ud;
    if (n_unknown < 4) {
        snprintf(unknown_seen[n_unknown], 64, "%.*s", (int)len, var);
        snprintf(suggested[n_unknown], 64, "%s", suggestion ? suggestion : "-");
    }
    n_unknown++;
}

static void unknown_variables_are_reported(void **state)
{
    static const char *const known[] = {"OSVTEST_HOOK", NULL};
    (void)state;
    setenv("OSVTEST_PORT", "1", 1);     /* an option's */
    setenv("OSVTEST_HOOK", "1", 1);     /* known */
    setenv("OSVTEST_WAIT_MS_", "1", 1); /* a typo */
    setenv("OSVTEST_QQQQQQ", "1", 1);   /* nothing like an option */
    assert_int_equal(osv_opt_unknown_vars(&cmd, known, note_unknown, NULL), 2);
    assert_int_equal(n_unknown, 2);
    for (int i = 0; i < 2; i++) {
        if (strcmp(unknown_seen[i], "OSVTEST_WAIT_MS_") == 0)
            assert_string_equal(suggested[i], "OSVTEST_WAIT_MS");
        else
            assert_true(strcmp(unknown_seen[i], "OSVTEST_QQQQQQ") == 0 && strcmp(suggested[i], "-") == 0);
    }
    unsetenv("OSVTEST_PORT");
    unsetenv("OSVTEST_HOOK");
    unsetenv("OSVTEST_WAIT_MS_");
    unsetenv("OSVTEST_QQQQQQ");
}

static void help_lists_every_option_and_variable(void **state)
{
    char buf[8192] = "", want[256];
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    (void)state;
    osv_opt_print_help(f, &cmd);
    fclose(f);
    /* The layout tests/e2e/deploy_support.py's serve_options() reads. */
    snprintf(want, sizeof want, "\n  %-34s %s\n  %-34s   env %s\n", "--port N", "a port", "", "OSVTEST_PORT");
    assert_non_null(strstr(buf, want));
    snprintf(want, sizeof want, "\n  %-34s %s\n", "--switch", "a switch");
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "env OSVTEST_NAME_PREFIX\n"));
    assert_int_equal(strncmp(buf, "  --flag 0|1 ", 13), 0);
}

/* Model control's default follows this: loopback-only servers keep the repository API's load and
 * unload, servers reachable from outside do not (unless tokens are required). */
static void loopback_hosts(void **state)
{
    (void)state;
    const char *local[] = {"127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1", "::ffff:127.0.0.1",
                           "0:0:0:0:0:0:0:1"};
    const char *outside[] = {"0.0.0.0", "::", "10.0.0.1", "192.168.1.20", "fe80::1", "::ffff:10.0.0.1",
                             "example.com", "", "128.0.0.1", "1.127.0.0"};
    for (size_t i = 0; i < sizeof local / sizeof *local; i++)
        assert_true(osv_opt_host_is_loopback(local[i]));
    for (size_t i = 0; i < sizeof outside / sizeof *outside; i++)
        assert_false(osv_opt_host_is_loopback(outside[i]));
    assert_false(osv_opt_host_is_loopback(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sizes_have_one_syntax),
        cmocka_unit_test(values_are_typed_and_ranged),
        cmocka_unit_test(lists_multi_shorts_and_arguments),
        cmocka_unit_test(environment_then_command_line),
        cmocka_unit_test(distance_and_suggestions),
        cmocka_unit_test(unknown_options_are_named_with_a_suggestion),
        cmocka_unit_test(unknown_variables_are_reported),
        cmocka_unit_test(help_lists_every_option_and_variable),
        cmocka_unit_test(loopback_hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
