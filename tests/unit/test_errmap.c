/* test_errmap.c — the one error-code → status table every front answers with (src/serve/errmap.c):
 * every code has a row, each category maps to its HTTP status and gRPC code, and only capacity
 * errors ask the client to retry. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ortserve/error.h"
#include "serve/errmap.h"

static const struct {
    int code, http, grpc;
    bool retry;
} want[] = {
    {0, 200, 0, false},
    {OSV_EINVAL, 400, 3, false},
    {OSV_EDTYPE, 400, 3, false},
    {OSV_ESHAPE, 400, 3, false},
    {OSV_ELIMIT, 400, 3, false},
    {OSV_EOVERFLOW, 400, 3, false},
    {OSV_EPARSE, 400, 3, false},
    {OSV_EUNSUPPORTED, 400, 3, false},
    {OSV_EMEDIA, 415, 3, false},
    {OSV_ELOAD, 400, 3, false}, /* a failed model load, as Triton answers it */
    {OSV_EPERM, 403, 7, false},
    {OSV_ENOTFOUND, 404, 5, false},
    {OSV_EEXIST, 409, 6, false},
    {OSV_ETOOBIG, 413, 8, false},
    {OSV_EBUSY, 503, 14, true},
    {OSV_ENOMEM, 503, 14, true},
    {OSV_EUNAVAIL, 503, 14, true},
    {OSV_ECANCELED, 504, 4, false},
    {OSV_ETIMEDOUT, 504, 4, false},
    {OSV_EORT, 500, 13, false},
    {OSV_EIO, 500, 13, false},
    {OSV_EVERSION, 500, 13, false},
    {OSV_ENOTIMPL, 501, 12, false},
    {OSV_EPROTO, 400, 13, false},
    {OSV_EAUTH, 401, 16, false},
};

static void every_code_has_its_row(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        assert_int_equal(osv_status_http(want[i].code), want[i].http);
        assert_int_equal(osv_status_grpc(want[i].code), want[i].grpc);
        assert_int_equal(osv_status_retry(want[i].code), want[i].retry);
    }
    /* every code the library defines is listed above: a new code must choose its category */
    size_t n = 0;
#define COUNT(name, value, desc) n++;
    OSV_ERRNO_MAP(COUNT)
#undef COUNT
    assert_int_equal(n + 1, sizeof want / sizeof *want);
    assert_int_equal(osv_status_http(-9999), 500); /* unknown: internal */
}

static void err_index_defaults_and_sets(void **state)
{
    (void)state;
    osv_err_t e;
    assert_int_equal(osv_err_set(&e, OSV_EPARSE, "bad"), OSV_EPARSE);
    assert_int_equal(e.index, -1);
    assert_int_equal(osv_err_at(&e, 3), OSV_EPARSE);
    assert_int_equal(e.index, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_code_has_its_row),
        cmocka_unit_test(err_index_defaults_and_sets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
