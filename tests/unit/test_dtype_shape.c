/* test_dtype_shape.c — the datatype table, the 16-bit float conversions, the one top-k, and
 * overflow-checked shape arithmetic. */
#include <math.h>
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

static uint32_t f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static float bits_f32(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* Every FP16 value survives FP16 → float → FP16; NaNs stay NaNs (quiet) of the same sign. */
static void f16_round_trips_every_value(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = osv_f16_to_f32((uint16_t)h);
        uint16_t back = osv_f32_to_f16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(f));
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
            assert_int_equal(back & 0x8000, h & 0x8000);
        } else {
            assert_int_equal(back, h);
        }
    }
    assert_true(osv_f16_to_f32(0x0001) == 0x1p-24f); /* smallest subnormal */
    assert_true(osv_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(isinf(osv_f16_to_f32(0xfc00)) && osv_f16_to_f32(0xfc00) < 0);
}

/* Rounding to nearest, ties to even, at normal and subnormal precision and at overflow. */
static void f16_rounds_to_nearest_even(void **state)
{
    (void)state;
    assert_int_equal(osv_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);        /* tie: to even (down) */
    assert_int_equal(osv_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);    /* tie: to even (up) */
    assert_int_equal(osv_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); /* above the tie */
    assert_int_equal(osv_f32_to_f16(0x1p-25f), 0x0000);               /* half the smallest: even = 0 */
    assert_int_equal(osv_f32_to_f16(0x1.000002p-25f), 0x0001);        /* just above: up */
    assert_int_equal(osv_f32_to_f16(3 * 0x1p-25f), 0x0002);           /* 1.5 ulp: to even */
    assert_int_equal(osv_f32_to_f16(65519.0f), 0x7bff);               /* below the midpoint to inf */
    assert_int_equal(osv_f32_to_f16(65520.0f), 0x7c00);               /* the midpoint: to even = inf */
    assert_int_equal(osv_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(osv_f32_to_f16(bits_f32(0x7f800001u)) & 0x7e00, 0x7e00); /* signalling NaN: quiet */
}

static void bf16_conversions(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < 65536; b++) {
        float f = osv_bf16_to_f32((uint16_t)b);
        assert_int_equal(f32_bits(f) >> 16, b); /* exact */
        if (!isnan(f))
            assert_int_equal(osv_f32_to_bf16(f), b);
    }
    assert_int_equal(osv_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie: to even (down) */
    assert_int_equal(osv_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie: to even (up) */
    /* A NaN whose payload sits in the low bits used to round into infinity. */
    assert_true(isnan(osv_bf16_to_f32(osv_f32_to_bf16(bits_f32(0x7f800001u)))));
    assert_true(isnan(osv_bf16_to_f32(osv_f32_to_bf16(bits_f32(0xffffffffu)))));
}

static void topk_order_is_defined(void **state)
{
    (void)state;
    uint32_t idx[8];
    const float a[] = {NAN, 1, 2};
    assert_int_equal(osv_topk(a, OSV_DTYPE_FP32, 3, 1, idx, sizeof *idx), 1);
    assert_int_equal(idx[0], 2);
    assert_int_equal(osv_topk(a, OSV_DTYPE_FP32, 3, 8, idx, sizeof *idx), 3);
    assert_int_equal(idx[0], 2);
    assert_int_equal(idx[1], 1);
    assert_int_equal(idx[2], 0);
    const double b[] = {NAN, -INFINITY, NAN, 5, 5, -INFINITY};
    assert_int_equal(osv_topk(b, OSV_DTYPE_FP64, 6, 6, idx, sizeof *idx), 6);
    const uint32_t want[] = {3, 4, 1, 5, 0, 2}; /* ties by index, NaN below -inf */
    for (int i = 0; i < 6; i++)
        assert_int_equal(idx[i], want[i]);
    const uint16_t h[] = {0x3c00 /* 1 */, 0x7e00 /* NaN */, 0x4000 /* 2 */, 0xbc00 /* -1 */};
    assert_int_equal(osv_topk(h, OSV_DTYPE_FP16, 4, 2, idx, sizeof *idx), 2);
    assert_int_equal(idx[0], 2);
    assert_int_equal(idx[1], 0);
    const int64_t q[] = {-5, 7, 7, 0};
    assert_int_equal(osv_topk(q, OSV_DTYPE_INT64, 4, 3, idx, sizeof *idx), 3);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 2);
    assert_int_equal(idx[2], 3);
    /* strided: the index lands in a field of the caller's structs */
    struct {
        uint64_t pad;
        uint32_t index;
        float score;
    } rows[2];
    assert_int_equal(osv_topk(a, OSV_DTYPE_FP32, 3, 2, &rows[0].index, sizeof rows[0]), 2);
    assert_int_equal(rows[0].index, 2);
    assert_int_equal(rows[1].index, 1);
    assert_int_equal(osv_topk(a, OSV_DTYPE_BYTES, 3, 1, idx, sizeof *idx), OSV_EDTYPE);
    assert_int_equal(osv_topk(a, OSV_DTYPE_FP32, (uint64_t)UINT32_MAX + 1, 1, idx, sizeof *idx), OSV_ELIMIT);
    assert_int_equal(osv_topk(a, OSV_DTYPE_FP32, 3, 0, idx, sizeof *idx), 0);
}

static void dtype_value_reads_every_type(void **state)
{
    (void)state;
    const uint16_t h[] = {0xc000};
    const uint16_t bf[] = {0x4040};
    const int8_t i8[] = {-3};
    const uint64_t u64[] = {UINT64_MAX};
    assert_true(osv_dtype_value(OSV_DTYPE_FP16, h, 0) == -2.0);
    assert_true(osv_dtype_value(OSV_DTYPE_BF16, bf, 0) == 3.0);
    assert_true(osv_dtype_value(OSV_DTYPE_INT8, i8, 0) == -3.0);
    assert_true(osv_dtype_value(OSV_DTYPE_UINT64, u64, 0) == 0x1p64);
    assert_true(osv_dtype_value(OSV_DTYPE_BYTES, u64, 0) == 0.0);
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
        cmocka_unit_test(f16_round_trips_every_value),
        cmocka_unit_test(f16_rounds_to_nearest_even),
        cmocka_unit_test(bf16_conversions),
        cmocka_unit_test(topk_order_is_defined),
        cmocka_unit_test(dtype_value_reads_every_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
