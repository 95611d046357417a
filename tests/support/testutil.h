/* testutil.h — helpers shared by the C tests: locating test models, temporary directories, and the
 * process-wide ORT environment. */
#ifndef OSV_TESTUTIL_H
#define OSV_TESTUTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ortserve.h"

/* Path of a synthetic model (var/models/NAME) or a real one (third_party/models/NAME) in buf. */
const char *osv_test_model(const char *name, char *buf, size_t cap);
const char *osv_test_real_model(const char *name, char *buf, size_t cap);

/* The process's ORT environment, created on first use with default settings; fails the test if
 * ORT cannot be loaded. Destroyed at exit. */
osv_env_t *osv_test_env(void);

/* Creates a fresh empty directory under $TMPDIR and returns its path (static storage per call
 * site is the caller's business: the result is written to buf). Removed with osv_test_rmtree. */
const char *osv_test_tmpdir(char *buf, size_t cap);
void osv_test_rmtree(const char *path);
/* Writes `text` to dir/name (creating parent directories). */
void osv_test_write_file(const char *dir, const char *name, const char *text);
/* Copies file src to dir/name (creating parent directories). */
void osv_test_copy_file(const char *src, const char *dir, const char *name);

/* Loads a synthetic model by file name (version 1, no config) or fails the test. */
osv_model_t *osv_test_load(const char *file);

/* Assert an osv call returned 0, printing the error message otherwise. */
#define OSV_ASSERT_OK(call, errp)                                                                            \
    do {                                                                                                     \
        int rc__ = (call);                                                                                   \
        if (rc__ != 0)                                                                                       \
            fail_msg("%s failed: %s (%s)", #call, (errp)->msg, osv_err_name(rc__));                          \
    } while (0)

#endif
