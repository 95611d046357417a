/* test_shm.c — the shared-memory registry (src/http/shm.c) against a client that truncates its object
 * while the server is using a region: the SIGBUS that the lost pages raise is caught, anonymous zero
 * pages take the region's place, the region is marked broken and refuses further use until it is
 * registered again; a SIGBUS anywhere else still goes to the handler that was there before (ASan's,
 * or the default action, which kills). (HTTP behaviour: tests/e2e/test_server_shm.py.) */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#include "serve/shm.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN 1
#endif
#endif
#ifndef ASAN
#define ASAN 0
#endif

#define OBJ_BYTES (64u << 10)

static char key[64];

/* Scenarios run in child processes: the SIGBUS handler is process-wide state, and cmocka has its
 * own SIGBUS handler while a test runs. A child first puts back the disposition the process started
 * with (ASan's handler in the ASan build, else the default), so it sees what ortserve sees; it reports
 * a failed check with the line and exit status 100. */
#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c)) {                                                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                            \
            _exit(100);                                                                                      \
        }                                                                                                    \
    } while (0)

static struct sigaction startup_sigbus;

/* A fresh object /dev/shm/<key> of OBJ_BYTES, written with 0x5a; returns its descriptor. */
static int make_object(void)
{
    int fd;
    snprintf(key, sizeof key, "osv-unit-shm-%d", (int)getpid());
    shm_unlink(key);
    fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, OBJ_BYTES) == 0);
    void *p = mmap(NULL, OBJ_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED);
    memset(p, 0x5a, OBJ_BYTES);
    munmap(p, OBJ_BYTES);
    return fd;
}

static void drop_object(int fd)
{
    close(fd);
    shm_unlink(key);
}

/* Registers region `name` over [offset, offset + size) of the test's object. */
static void reg(osv_shm_t *s, const char *name, uint64_t offset, uint64_t size)
{
    osv_err_t err;
    int rc = osv_shm_register(s, 0, name, strlen(name), key, strlen(key), offset, size, &err);
    if (rc)
        fprintf(stderr, "register %s: %s\n", name, err.msg);
    CHECK(rc == 0);
}

static volatile uint8_t *range(osv_shm_region_t *r, uint64_t off, uint64_t size)
{
    void *p = NULL;
    osv_err_t err;
    int rc = osv_shm_range(r, off, size, &p, &err);
    if (rc)
        fprintf(stderr, "range: %s\n", err.msg);
    CHECK(rc == 0);
    return p;
}

/* Runs fn in a child with the start-up SIGBUS disposition; returns its wait status. */
static int in_child(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    int st = 0;
    assert_true(pid >= 0);
    if (pid == 0) {
        sigaction(SIGBUS, &startup_sigbus, NULL);
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void child_ok(void (*fn)(void))
{
    int st = in_child(fn);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the child %s %d", WIFEXITED(st) ? "exited with" : "was killed by signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* ---- a truncation under a region in use ----------------------------------------------------------- */

static void child_truncated_while_in_use(void)
{
    osv_shm_t *s = NULL;
    osv_err_t err;
    void *q;
    int fd = make_object();
    CHECK(osv_shm_create(1u << 30, &s) == 0);
    reg(s, "r", 4096, 32768);
    reg(s, "other", 0, 4096);
    osv_shm_region_t *r = osv_shm_get(s, 0, "r", 1);
    CHECK(r != NULL);
    volatile uint8_t *p = range(r, 0, 32768);
    CHECK(p[0] == 0x5a);
    /* The client truncates while a request holds the region: the next touch raises SIGBUS. */
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(p[100] == 0); /* a read sees a zero page */
    p[32767] = 7;       /* a write goes to anonymous memory, not to the client's object */
    CHECK(p[32767] == 7);
    /* The region is broken: every further use is refused with its name. */
    CHECK(osv_shm_range(r, 0, 16, &q, &err) == OSV_EINVAL);
    CHECK(strstr(err.msg, "'r'") && strstr(err.msg, "truncated while in use") &&
          strstr(err.msg, "register it again"));
    osv_shm_put(r);
    r = osv_shm_get(s, 0, "r", 1);
    CHECK(r != NULL && osv_shm_range(r, 0, 16, &q, &err) == OSV_EINVAL);
    osv_shm_put(r);
    /* The other region of the same object was not touched: not broken (while the object is too
     * small the size check before use refuses it; grown again, it works). */
    osv_shm_region_t *o = osv_shm_get(s, 0, "other", 5);
    CHECK(osv_shm_range(o, 0, 4096, &q, &err) == OSV_EINVAL && strstr(err.msg, "'other'"));
    CHECK(ftruncate(fd, OBJ_BYTES) == 0);
    CHECK(range(o, 0, 4096)[10] == 0);
    osv_shm_put(o);
    /* Registered again, the name works again. */
    CHECK(osv_shm_unregister(s, 0, "r", 1, &err) == 0);
    reg(s, "r", 4096, 32768);
    r = osv_shm_get(s, 0, "r", 1);
    p = range(r, 0, 32768);
    p[5] = 9;
    CHECK(p[5] == 9);
    osv_shm_put(r);
    osv_shm_destroy(s);
    drop_object(fd);
}

static void truncated_while_in_use(void **state)
{
    (void)state;
    child_ok(child_truncated_while_in_use);
}

/* A region unregistered while a request still holds it stays covered until its last user ends. */
static void child_unregistered_but_held(void)
{
    osv_shm_t *s = NULL;
    osv_err_t err;
    int fd = make_object();
    CHECK(osv_shm_create(1u << 30, &s) == 0);
    reg(s, "held", 0, OBJ_BYTES);
    osv_shm_region_t *r = osv_shm_get(s, 0, "held", 4);
    volatile uint8_t *p = range(r, 0, OBJ_BYTES);
    CHECK(osv_shm_unregister(s, 0, "held", 4, &err) == 0);
    CHECK(ftruncate(fd, 4096) == 0);
    CHECK(p[4095] == 0x5a); /* the first page is still the object's */
    CHECK(p[OBJ_BYTES - 1] == 0);
    osv_shm_put(r);
    osv_shm_destroy(s);
    drop_object(fd);
}

static void unregistered_but_held(void **state)
{
    (void)state;
    child_ok(child_unregistered_but_held);
}

/* Many registrations come and go: the handler's table of mappings does not fill up. */
static void child_table_entries_are_reused(void)
{
    osv_shm_t *s = NULL;
    osv_err_t err;
    void *q;
    int fd = make_object();
    CHECK(osv_shm_create(1u << 30, &s) == 0);
    for (int i = 0; i < 3000; i++) {
        reg(s, "x", 0, 4096);
        CHECK(osv_shm_unregister(s, 0, "x", 1, &err) == 0);
    }
    reg(s, "x", 0, 8192);
    osv_shm_region_t *r = osv_shm_get(s, 0, "x", 1);
    volatile uint8_t *p = range(r, 0, 8192);
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(p[8000] == 0);
    CHECK(osv_shm_range(r, 0, 1, &q, &err) == OSV_EINVAL);
    osv_shm_put(r);
    osv_shm_destroy(s);
    drop_object(fd);
}

static void table_entries_are_reused(void **state)
{
    (void)state;
    child_ok(child_table_entries_are_reused);
}

/* ---- a SIGBUS outside every region ---------------------------------------------------------------- */

/* A regular file mapped and then truncated: a SIGBUS that no region explains. */
static volatile uint8_t *foreign_truncated_mapping(void)
{
    char path[] = "/tmp/osv-unit-shm-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && ftruncate(fd, 8192) == 0);
    unlink(path);
    void *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED && ftruncate(fd, 0) == 0);
    return p;
}

/* A registry with a region, so the handler is installed. */
static osv_shm_t *registry_with_a_region(void)
{
    osv_shm_t *s = NULL;
    CHECK(osv_shm_create(1u << 30, &s) == 0);
    reg(s, "r", 0, 4096);
    return s;
}

static void child_touches_foreign_mapping(void)
{
    int fd = make_object();
    volatile uint8_t *p = foreign_truncated_mapping();
    registry_with_a_region();
    shm_unlink(key);
    (void)fd;
    (void)p[10];
    _exit(99); /* not reached: the default action (or ASan's report) ends the process */
}

static void child_gets_sigbus_from_kill(void)
{
    int fd = make_object();
    registry_with_a_region();
    drop_object(fd);
    raise(SIGBUS);
    _exit(99);
}

static sigjmp_buf jump;
static volatile sig_atomic_t earlier_handler_ran;

static void earlier_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)uc;
    if (earlier_handler_ran)
        _exit(101); /* a second SIGBUS: one of our regions' reached it */
    earlier_handler_ran = si->si_code > 0 ? 1 : 2;
    siglongjmp(jump, 1);
}

/* A handler the program had before ours (as ASan installs one) still gets SIGBUS outside regions. */
static void child_chains_to_earlier_handler(void)
{
    struct sigaction sa = {.sa_sigaction = earlier_handler, .sa_flags = SA_SIGINFO};
    int fd = make_object();
    volatile uint8_t *p = foreign_truncated_mapping();
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    osv_shm_t *s = registry_with_a_region();
    if (sigsetjmp(jump, 1) == 0)
        (void)p[10];
    CHECK(earlier_handler_ran == 1);
    /* ... and our regions are still ours. */
    osv_shm_region_t *r = osv_shm_get(s, 0, "r", 1);
    CHECK(r != NULL);
    volatile uint8_t *q = range(r, 0, 4096);
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(q[1] == 0);
    drop_object(fd);
}

/* Killed by SIGBUS, or (ASan build) ASan's report and a non-zero exit. */
static void died_of_sigbus(int st)
{
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS)
        return;
    if (ASAN && WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) < 99)
        return;
    fail_msg("the child %s %d, not of SIGBUS", WIFEXITED(st) ? "exited with" : "was killed by signal",
             WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static void sigbus_elsewhere_keeps_its_behaviour(void **state)
{
    (void)state;
    child_ok(child_chains_to_earlier_handler);
    died_of_sigbus(in_child(child_touches_foreign_mapping));
    died_of_sigbus(in_child(child_gets_sigbus_from_kill));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sigbus_elsewhere_keeps_its_behaviour),
        cmocka_unit_test(truncated_while_in_use),
        cmocka_unit_test(unregistered_but_held),
        cmocka_unit_test(table_entries_are_reused),
    };
    sigaction(SIGBUS, NULL, &startup_sigbus); /* before cmocka installs its own */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
