/* test_sanitize.c — the invariant macros (src/util/sanitize.h): in release builds OSV_ALWAYS and
 * OSV_NEVER are the condition itself (the branch they guard still runs); in the ASan build a broken
 * invariant aborts with its text and place. */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "util/sanitize.h"

static int evaluations;

static int counted(int v)
{
    evaluations++;
    return v;
}

static void holding_invariants_pass_through(void **state)
{
    (void)state;
    evaluations = 0;
    assert_int_equal(OSV_ALWAYS(counted(7)), 1);
    assert_int_equal(OSV_NEVER(counted(0)), 0);
    assert_int_equal(evaluations, 2); /* each condition evaluated once */
}

/* Runs fn in a child; returns its wait status and what it wrote on stderr. */
static int in_child(int (*fn)(void), char *err, size_t cap)
{
    int fds[2], status = 0;
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        _exit(fn() == 1 ? 0 : 3);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], err, cap - 1);
    err[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    waitpid(pid, &status, 0);
    return status;
}

static int break_never(void)
{
    return OSV_NEVER(1 + 1 == 2);
}

static int break_always(void)
{
    return !OSV_ALWAYS(2 + 2 == 5);
}

static void broken_invariants(void **state)
{
    char err[512];
    (void)state;
    int s1 = in_child(break_never, err, sizeof err);
#ifdef OSV_ASAN
    assert_true(WIFSIGNALED(s1) && WTERMSIG(s1) == SIGABRT);
    assert_non_null(strstr(err, "invariant broken"));
    assert_non_null(strstr(err, "NEVER(1 + 1 == 2)"));
    assert_non_null(strstr(err, "test_sanitize.c"));
#else
    assert_true(WIFEXITED(s1) && WEXITSTATUS(s1) == 0); /* release: the guarded branch is taken */
#endif
    int s2 = in_child(break_always, err, sizeof err);
#ifdef OSV_ASAN
    assert_true(WIFSIGNALED(s2) && WTERMSIG(s2) == SIGABRT);
    assert_non_null(strstr(err, "ALWAYS(2 + 2 == 5)"));
#else
    assert_true(WIFEXITED(s2) && WEXITSTATUS(s2) == 0);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(holding_invariants_pass_through),
        cmocka_unit_test(broken_invariants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
