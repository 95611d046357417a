/* test_auth.c — bearer tokens (src/http/auth.c): the constant-time comparison, the Authorization
 * header's parsing, the token file's rules (format, limits, permissions) and reloading, which keeps
 * the tokens in use when the new file is bad; the tokens' identities across reloads. (The HTTP
 * behaviour — which endpoints, 401s, SIGHUP — is tested end to end in
 * tests/e2e/test_server_access.py.) */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#include "serve/auth.h"

static char dir[256], path[300];

static void write_file(const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static bool check(osv_auth_t *a, const char *header)
{
    return osv_auth_check(a, header, header ? strlen(header) : 0, NULL);
}

static void equal(void **state)
{
    (void)state;
    assert_true(osv_auth_equal("abc", 3, "abc", 3));
    assert_false(osv_auth_equal("abd", 3, "abc", 3));
    assert_false(osv_auth_equal("ab", 2, "abc", 3));
    assert_false(osv_auth_equal("abcabc", 6, "abc", 3)); /* a repetition of the token is not the token */
    assert_false(osv_auth_equal("", 0, "a", 1));
    assert_false(osv_auth_equal("xbc", 3, "abc", 3));
    char a[4096], b[4096];
    memset(a, 'k', sizeof a);
    memcpy(b, a, sizeof b);
    assert_true(osv_auth_equal(a, sizeof a, b, sizeof b));
    b[4095] = 'j';
    assert_false(osv_auth_equal(a, sizeof a, b, sizeof b));
}

static void header_parsing(void **state)
{
    osv_auth_t *a = NULL;
    osv_err_t err;
    char warn[256];
    (void)state;
    write_file("# comment\n\n  tok-1  \r\ntok/2+~._==\n", 0600);
    OSV_ASSERT_OK(osv_auth_create(path, &a, warn, sizeof warn, &err), &err);
    assert_string_equal(warn, "");
    assert_true(check(a, "Bearer tok-1"));
    assert_true(check(a, "bearer tok/2+~._=="));
    assert_true(check(a, "BEARER   tok-1 \t"));
    assert_false(check(a, NULL));
    assert_false(check(a, ""));
    assert_false(check(a, "Bearer"));
    assert_false(check(a, "Bearer "));
    assert_false(check(a, "Bearertok-1"));
    assert_false(check(a, "Basic tok-1"));
    assert_false(check(a, "tok-1"));
    assert_false(check(a, "Bearer tok-"));
    assert_false(check(a, "Bearer tok-12"));
    assert_false(check(a, "Bearer TOK-1"));
    assert_false(check(a, "Bearer tok-1 tok-1"));
    assert_false(check(a, "Bearer # comment"));
    osv_auth_destroy(a);
}

static void bad_files(void **state)
{
    osv_auth_t *a = NULL;
    osv_err_t err;
    char warn[256], big[OSV_AUTH_MAX_TOKEN + 8];
    (void)state;
    write_file("tok\n", 0602);
    assert_int_equal(osv_auth_create(path, &a, warn, sizeof warn, &err), OSV_EPERM);
    assert_non_null(strstr(err.msg, "writable by others"));
    write_file("# nothing\n\n", 0600);
    assert_int_equal(osv_auth_create(path, &a, warn, sizeof warn, &err), OSV_EINVAL);
    assert_non_null(strstr(err.msg, "holds no token"));
    write_file("good\nsecret with-space\n", 0600);
    assert_int_equal(osv_auth_create(path, &a, warn, sizeof warn, &err), OSV_EINVAL);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_null(strstr(err.msg, "secret")); /* the message never shows a token */
    write_file("a=b\n", 0600);              /* '=' only as trailing padding */
    assert_int_equal(osv_auth_create(path, &a, warn, sizeof warn, &err), OSV_EINVAL);
    memset(big, 'x', sizeof big);
    big[OSV_AUTH_MAX_TOKEN + 1] = '\n';
    big[OSV_AUTH_MAX_TOKEN + 2] = '\0';
    write_file(big, 0600);
    assert_int_equal(osv_auth_create(path, &a, warn, sizeof warn, &err), OSV_EINVAL);
    big[OSV_AUTH_MAX_TOKEN] = '\n'; /* exactly the limit is fine */
    big[OSV_AUTH_MAX_TOKEN + 1] = '\0';
    write_file(big, 0600);
    OSV_ASSERT_OK(osv_auth_create(path, &a, warn, sizeof warn, &err), &err);
    osv_auth_destroy(a);
    write_file("t0\nt1\nt2\nt3\nt4\nt5\nt6\nt7\nt8\nt9\nt10\nt11\nt12\nt13\nt14\nt15\nt16\n", 0600);
    assert_int_equal(osv_auth_create(path, &a, warn, sizeof warn, &err), OSV_EINVAL);
    assert_non_null(strstr(err.msg, "more than 16"));
    assert_int_equal(osv_auth_create(dir, &a, warn, sizeof warn, &err), OSV_EINVAL); /* a directory */
    write_file("tok\n", 0640);
    OSV_ASSERT_OK(osv_auth_create(path, &a, warn, sizeof warn, &err), &err);
    assert_non_null(strstr(warn, "readable by its group"));
    osv_auth_destroy(a);
}

static void reload(void **state)
{
    osv_auth_t *a = NULL;
    osv_err_t err;
    char warn[256];
    (void)state;
    write_file("old\n", 0600);
    OSV_ASSERT_OK(osv_auth_create(path, &a, warn, sizeof warn, &err), &err);
    write_file("old\nnew\n", 0600);
    assert_int_equal(osv_auth_reload(a, warn, sizeof warn, &err), 2);
    assert_true(check(a, "Bearer new"));
    assert_true(check(a, "Bearer old"));
    write_file("new\n", 0600);
    assert_int_equal(osv_auth_reload(a, warn, sizeof warn, &err), 1);
    assert_false(check(a, "Bearer old"));
    write_file("bad token\n", 0600); /* refused: the tokens in use stay */
    assert_int_equal(osv_auth_reload(a, warn, sizeof warn, &err), OSV_EINVAL);
    assert_true(check(a, "Bearer new"));
    remove(path);
    assert_int_equal(osv_auth_reload(a, warn, sizeof warn, &err), OSV_EIO);
    assert_true(check(a, "Bearer new"));
    osv_auth_destroy(a);
}

/* The identity of the token in `header`, 0 when refused. */
static uint64_t id_of(osv_auth_t *a, const char *header)
{
    uint64_t id = 0;
    return osv_auth_check(a, header, strlen(header), &id) ? id : 0;
}

/* Identities (what shared-memory regions belong to): one per token, never 0, the same for a token
 * written twice, kept by reloads while the token stays, never given to another token. */
static void identities_follow_tokens_across_reloads(void **state)
{
    osv_auth_t *a = NULL;
    osv_err_t err;
    char warn[256];
    (void)state;
    write_file("alpha\nbeta\nalpha\n", 0600);
    OSV_ASSERT_OK(osv_auth_create(path, &a, warn, sizeof warn, &err), &err);
    uint64_t alpha = id_of(a, "Bearer alpha"), beta = id_of(a, "Bearer beta");
    assert_true(alpha != 0 && beta != 0 && alpha != beta);
    assert_int_equal(id_of(a, "Bearer gamma"), 0);
    assert_true(osv_auth_has(a, alpha) && osv_auth_has(a, beta));
    assert_false(osv_auth_has(a, 0));
    write_file("gamma\nbeta\n", 0600); /* alpha goes, beta stays (elsewhere in the file), gamma comes */
    assert_int_equal(osv_auth_reload(a, warn, sizeof warn, &err), 2);
    uint64_t gamma = id_of(a, "Bearer gamma");
    assert_int_equal(id_of(a, "Bearer beta"), beta);
    assert_true(gamma != 0 && gamma != alpha && gamma != beta);
    assert_false(osv_auth_has(a, alpha));
    write_file("alpha\n", 0600); /* back again: a new identity, not the old one's */
    assert_int_equal(osv_auth_reload(a, warn, sizeof warn, &err), 1);
    uint64_t alpha2 = id_of(a, "Bearer alpha");
    assert_true(alpha2 != 0 && alpha2 != alpha && alpha2 != beta && alpha2 != gamma);
    assert_false(osv_auth_has(a, beta));
    osv_auth_destroy(a);
}

static int setup(void **state)
{
    (void)state;
    osv_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tokens", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    osv_test_rmtree(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(equal),
        cmocka_unit_test(header_parsing),
        cmocka_unit_test(bad_files),
        cmocka_unit_test(reload),
        cmocka_unit_test(identities_follow_tokens_across_reloads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
