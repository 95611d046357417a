/* test_npy.c — the CLI's .npy reader/writer: round trips for every dtype, strings, bad files. */
#include <stdio.h>
#include <string.h>

#include "npy.h"
#include "testutil.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    osv_test_tmpdir(dir, sizeof dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    osv_test_rmtree(dir);
    return 0;
}

static void numeric_round_trip(void **state)
{
    static const osv_dtype_t types[] = {OSV_DTYPE_BOOL,   OSV_DTYPE_UINT8, OSV_DTYPE_UINT16, OSV_DTYPE_UINT32,
                                        OSV_DTYPE_UINT64, OSV_DTYPE_INT8,  OSV_DTYPE_INT16,  OSV_DTYPE_INT32,
                                        OSV_DTYPE_INT64,  OSV_DTYPE_FP16,  OSV_DTYPE_FP32,   OSV_DTYPE_FP64};
    uint8_t data[2 * 3 * 8];
    int64_t dims[] = {2, 3};
    char path[512];
    osv_err_t err;
    (void)state;
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        size_t bytes = 6 * osv_dtype_size(types[t]);
        osv_npy_t n;
        for (size_t i = 0; i < bytes; i++)
            data[i] = (uint8_t)(types[t] == OSV_DTYPE_BOOL ? i % 2 : i * 13 + t);
        snprintf(path, sizeof path, "%s/%s.npy", dir, osv_dtype_name(types[t]));
        OSV_ASSERT_OK(osv_npy_write(path, types[t], dims, 2, data, bytes, &err), &err);
        OSV_ASSERT_OK(osv_npy_open(path, &n, &err), &err);
        assert_int_equal(n.dtype, types[t]);
        assert_int_equal(n.rank, 2);
        assert_int_equal(n.dims[0], 2);
        assert_int_equal(n.dims[1], 3);
        assert_int_equal(n.bytes, bytes);
        assert_memory_equal(n.data, data, bytes);
        assert_int_equal((uintptr_t)n.data % 64, 0); /* header padding keeps the data bindable in place */
        osv_npy_close(&n);
    }
}

static void scalar_and_vector_shapes(void **state)
{
    float one = 1.5f, v[3] = {1, 2, 3};
    int64_t d1[] = {3};
    char path[512];
    osv_npy_t n;
    osv_err_t err;
    (void)state;
    snprintf(path, sizeof path, "%s/scalar.npy", dir);
    OSV_ASSERT_OK(osv_npy_write(path, OSV_DTYPE_FP32, NULL, 0, &one, 4, &err), &err);
    OSV_ASSERT_OK(osv_npy_open(path, &n, &err), &err);
    assert_int_equal(n.rank, 0);
    assert_int_equal(n.count, 1);
    osv_npy_close(&n);
    snprintf(path, sizeof path, "%s/vec.npy", dir);
    OSV_ASSERT_OK(osv_npy_write(path, OSV_DTYPE_FP32, d1, 1, v, 12, &err), &err);
    OSV_ASSERT_OK(osv_npy_open(path, &n, &err), &err);
    assert_int_equal(n.rank, 1);
    assert_int_equal(n.dims[0], 3);
    osv_npy_close(&n);
}

static void bytes_round_trip(void **state)
{
    /* serialized: "ab", "", "xyz" */
    uint8_t ser[] = {2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0, 3, 0, 0, 0, 'x', 'y', 'z'};
    int64_t dims[] = {3};
    char path[512];
    osv_npy_t n;
    osv_err_t err;
    (void)state;
    snprintf(path, sizeof path, "%s/s.npy", dir);
    OSV_ASSERT_OK(osv_npy_write(path, OSV_DTYPE_BYTES, dims, 1, ser, sizeof ser, &err), &err);
    OSV_ASSERT_OK(osv_npy_open(path, &n, &err), &err);
    assert_int_equal(n.dtype, OSV_DTYPE_BYTES);
    assert_int_equal(n.bytes, sizeof ser);
    assert_memory_equal(n.data, ser, sizeof ser);
    osv_npy_close(&n);
}

/* Writes dir/name as an .npy v1.0 file with the given header dict and `data_len` zero bytes. */
static void write_raw_npy(const char *name, const char *dict, size_t data_len)
{
    char path[512], hdr[256];
    size_t n = (size_t)snprintf(hdr, sizeof hdr, "%s", dict);
    while ((10 + n + 1) % 64)
        hdr[n++] = ' ';
    hdr[n++] = '\n';
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)n, 0};
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, n, f);
    for (size_t i = 0; i < data_len; i++)
        fputc(0, f);
    fclose(f);
}

static void bad_files_are_rejected(void **state)
{
    char path[512];
    osv_npy_t n;
    osv_err_t err;
    (void)state;
    osv_test_write_file(dir, "bad.npy", "not numpy at all");
    snprintf(path, sizeof path, "%s/bad.npy", dir);
    assert_int_equal(osv_npy_open(path, &n, &err), OSV_EPARSE);
    write_raw_npy("fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16);
    snprintf(path, sizeof path, "%s/fortran.npy", dir);
    assert_int_equal(osv_npy_open(path, &n, &err), OSV_EUNSUPPORTED);
    write_raw_npy("short.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 15);
    snprintf(path, sizeof path, "%s/short.npy", dir);
    assert_int_equal(osv_npy_open(path, &n, &err), OSV_EPARSE); /* 16 bytes promised, 15 present */
    assert_non_null(strstr(err.msg, "shorter"));
    write_raw_npy("object.npy", "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16);
    snprintf(path, sizeof path, "%s/object.npy", dir);
    assert_int_equal(osv_npy_open(path, &n, &err), OSV_EUNSUPPORTED);
    write_raw_npy("ok.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16);
    snprintf(path, sizeof path, "%s/ok.npy", dir);
    OSV_ASSERT_OK(osv_npy_open(path, &n, &err), &err);
    osv_npy_close(&n);
    snprintf(path, sizeof path, "%s/missing.npy", dir);
    assert_int_equal(osv_npy_open(path, &n, &err), OSV_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(numeric_round_trip),
        cmocka_unit_test(scalar_and_vector_shapes),
        cmocka_unit_test(bytes_round_trip),
        cmocka_unit_test(bad_files_are_rejected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
