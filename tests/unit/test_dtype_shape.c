/* test_dtype_shape.c — the datatype table and overflow-checked shape arithmetic. */
#include <string.h>

#include "testutil.h"

static void dtype_table_round_trips(void **state)
{
    static const struct {
        const char *name;
        size_t size;
        int ort;
    } want[] = {{"BOOL", 1, 9},  {"UINT8", 1, 2}, {"UINT16", 2, 4}, {"UINT32", 4, 12}, {"UINT64", 8, 13},
                {"INT8", 1, 3},  {"INT16", 2, 5}, {"INT32", 4, 6},  {"INT64", 8, 7},   {"FP16", 2, 10},
                {"BF16", 2, 16}, {"FP32", 4, 1},  {"FP64", 8, 11},  {"BYTES", 0, 8}};
    (void)state;
    assert_int_equal(OSV_DTYPE_COUNT - 1, sizeof want / sizeof *want);
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        osv_dtype_t dt = osv_dtype_from_name(want[i].name, strlen(want[i].name));
        assert_int_not_equal(dt, OSV_DTYPE_INVALID);
        assert_string_equal(osv_dtype_name(dt), want[i].name);
        assert_int_equal(osv_dtype_size(dt), want[i].size);
        assert_int_equal(osv_dtype_to_ort(dt), want[i].ort);
        assert_int_equal(osv_dtype_from_ort(want[i].ort), dt);
    }
}

static void dtype_rejects_unknown(void **state)
{
    (void)state;
    assert_int_equal(osv_dtype_from_name("FP3", 3), OSV_DTYPE_INVALID);
    assert_int_equal(osv_dtype_from_name("FP322", 5), OSV_DTYPE_INVALID);
    assert_int_equal(osv_dtype_from_name("fp32", 4), OSV_DTYPE_INVALID);
    assert_int_equal(osv_dtype_from_name("", 0), OSV_DTYPE_INVALID);
    assert_int_equal(osv_dtype_from_ort(14), OSV_DTYPE_INVALID); /* complex64 */
    assert_int_equal(osv_dtype_from_ort(0), OSV_DTYPE_INVALID);
    assert_string_equal(osv_dtype_name((osv_dtype_t)99), "INVALID");
    assert_int_equal(osv_dtype_size((osv_dtype_t)99), 0);
}

static void elements_and_bytes(void **state)
{
    int64_t d[] = {2, 3, 224, 224};
    uint64_t n, b;
    osv_limits_t lim;
    (void)state;
    osv_limits_default(&lim);
    assert_int_equal(osv_shape_size(d, 4, OSV_DTYPE_FP32, &lim, &n, &b, NULL), 0);
    assert_int_equal(n, 2ull * 3 * 224 * 224);
    assert_int_equal(b, n * 4);
    assert_int_equal(osv_shape_elements(d, 0, &n, NULL), 0); /* scalar */
    assert_int_equal(n, 1);
    int64_t zero[] = {4, 0, 7};
    assert_int_equal(osv_shape_size(zero, 3, OSV_DTYPE_FP64, &lim, &n, &b, NULL), 0);
    assert_int_equal(n, 0);
    assert_int_equal(b, 0);
}

static void overflow_attempts_fail(void **state)
{
    int64_t huge[] = {INT64_MAX, INT64_MAX};
    int64_t big[] = {1ll << 31, 1ll << 31, 1ll << 3}; /* 2^65 elements */
    int64_t bytes_ovf[] = {1ll << 62, 8};             /* 2^65 elements */
    int64_t elems_ok_bytes_ovf[] = {1ll << 61, 2};    /* 2^62 elements, ×8 bytes overflows */
    uint64_t n, b;
    osv_err_t err;
    (void)state;
    assert_int_equal(osv_shape_elements(huge, 2, &n, &err), OSV_EOVERFLOW);
    assert_int_equal(osv_shape_elements(big, 3, &n, &err), OSV_EOVERFLOW);
    assert_int_equal(osv_shape_elements(bytes_ovf, 2, &n, &err), OSV_EOVERFLOW);
    assert_int_equal(osv_shape_size(elems_ok_bytes_ovf, 2, OSV_DTYPE_FP64, NULL, &n, &b, &err),
                     OSV_EOVERFLOW);
    assert_non_null(strstr(err.msg, "overflow"));
    int64_t neg[] = {1, -3};
    assert_int_equal(osv_shape_elements(neg, 2, &n, &err), OSV_ESHAPE);
    assert_non_null(strstr(err.msg, "negative"));
}

static void limits_enforced(void **state)
{
    osv_limits_t lim;
    uint64_t n, b;
    osv_err_t err;
    (void)state;
    osv_limits_default(&lim);
    lim.max_tensor_elements = 100;
    int64_t d1[] = {10, 11};
    assert_int_equal(osv_shape_size(d1, 2, OSV_DTYPE_UINT8, &lim, &n, &b, &err), OSV_ELIMIT);
    assert_non_null(strstr(err.msg, "110 elements"));
    lim.max_tensor_elements = 1000;
    lim.max_tensor_bytes = 100;
    assert_int_equal(osv_shape_size(d1, 2, OSV_DTYPE_FP32, &lim, &n, &b, &err), OSV_ELIMIT);
    assert_non_null(strstr(err.msg, "440 bytes"));
    lim.max_dims = 2;
    int64_t d3[] = {1, 1, 1};
    assert_int_equal(osv_shape_size(d3, 3, OSV_DTYPE_FP32, &lim, &n, &b, &err), OSV_ELIMIT);
    assert_int_equal(osv_shape_size(d3, OSV_MAX_DIMS + 1, OSV_DTYPE_FP32, NULL, &n, &b, &err), OSV_ELIMIT);
}

static void check_against_model(void **state)
{
    int64_t model[] = {-1, 3, 224, 224};
    int64_t ok[] = {8, 3, 224, 224}, bad_dim[] = {1, 4, 224, 224}, bad_rank[] = {3, 224, 224};
    osv_err_t err;
    (void)state;
    assert_int_equal(osv_shape_check("input", model, 4, ok, 4, NULL, NULL), 0);
    assert_int_equal(osv_shape_check("input", model, 4, bad_dim, 4, NULL, &err), OSV_ESHAPE);
    assert_non_null(strstr(err.msg, "[1,4,224,224]"));
    assert_non_null(strstr(err.msg, "[-1,3,224,224]"));
    assert_non_null(strstr(err.msg, "dimension 1"));
    assert_int_equal(osv_shape_check("input", model, 4, bad_rank, 3, NULL, &err), OSV_ESHAPE);
    assert_non_null(strstr(err.msg, "rank 3"));
    assert_int_equal(osv_shape_check("x", NULL, -1, bad_rank, 3, NULL, NULL), 0); /* rank unknown */
    int64_t neg[] = {-1, 3, 224, 224};
    assert_int_equal(osv_shape_check("input", model, 4, neg, 4, NULL, &err), OSV_ESHAPE);
}

static void helpers_detect_overflow(void **state)
{
    uint64_t r;
    (void)state;
    assert_false(osv_mul_u64(UINT64_MAX / 2 + 1, 2, &r));
    assert_true(osv_mul_u64(1ull << 31, 1ull << 31, &r));
    assert_int_equal(r, 1ull << 62);
    assert_false(osv_add_u64(UINT64_MAX, 1, &r));
    assert_false(osv_align_up_u64(UINT64_MAX - 3, 64, &r));
    assert_true(osv_align_up_u64(65, 64, &r));
    assert_int_equal(r, 128);
}

static void shape_str_truncates(void **state)
{
    int64_t d[] = {1000000, 2000000, 3000000, 4000000};
    char small[12], big[64];
    (void)state;
    assert_string_equal(osv_shape_str(d, 4, big, sizeof big), "[1000000,2000000,3000000,4000000]");
    osv_shape_str(d, 4, small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_string_equal(small + sizeof small - 4, "...");
    assert_string_equal(osv_shape_str(d, -1, big, sizeof big), "[?]");
}

static void error_names(void **state)
{
    osv_err_t err;
    (void)state;
    assert_string_equal(osv_err_name(OSV_EBUSY), "OSV_EBUSY");
    assert_string_equal(osv_strerror(OSV_ESHAPE), "shape mismatch");
    assert_string_equal(osv_strerror(-999), "unknown error");
    assert_int_equal(osv_err_set(&err, OSV_EINVAL, "x=%d", 5), OSV_EINVAL);
    osv_err_prefix(&err, "ctx");
    assert_string_equal(err.msg, "ctx: x=5");
    assert_int_equal(osv_err_set(NULL, OSV_EIO, "ignored"), OSV_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dtype_table_round_trips),
        cmocka_unit_test(dtype_rejects_unknown),
        cmocka_unit_test(elements_and_bytes),
        cmocka_unit_test(overflow_attempts_fail),
        cmocka_unit_test(limits_enforced),
        cmocka_unit_test(check_against_model),
        cmocka_unit_test(helpers_detect_overflow),
        cmocka_unit_test(shape_str_truncates),
        cmocka_unit_test(error_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
