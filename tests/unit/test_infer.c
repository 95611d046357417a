/* test_infer.c — binding and running: zero-copy proofs (ORT holds the caller's pointer), every
 * counted fallback with its reason, derived output shapes, BYTES, validation errors, pool
 * exhaustion, cancellation and ORT failures. Results are compared with a bare ORT Run. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/model_internal.h"
#include "testutil.h"

static osv_pool_t *pool;

static int setup(void **state)
{
    osv_pool_opts_t o = {.total_bytes = 64ull << 20};
    osv_err_t err;
    (void)state;
    osv_test_env();
    return osv_pool_create(&o, &pool, &err);
}

static int teardown(void **state)
{
    (void)state;
    osv_pool_destroy(pool);
    return 0;
}

typedef struct fixture {
    osv_model_t *m;
    osv_infer_t *inf;
    void *mem;
    osv_err_t err;
} fixture_t;

static void fx_begin(fixture_t *f, osv_model_t *m, osv_pool_t *p, bool force)
{
    osv_infer_opts_t o = {.pool = p, .force_copy = force};
    size_t size = osv_infer_size(m);
    f->m = m;
    f->mem = aligned_alloc(64, (size + 63) & ~(size_t)63);
    OSV_ASSERT_OK(osv_infer_init(f->mem, size, m, &o, &f->inf, &f->err), &f->err);
}

static void fx_end(fixture_t *f)
{
    osv_infer_fini(f->inf);
    free(f->mem);
}

static void fill_x(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((int)(i * 37 % 101) - 50) / 25.0f;
}

/* Bare ORT: copies the input into an ORT-allocated tensor and runs (the reference path). */
static void bare_run_f32(osv_model_t *m, const float *x, const int64_t *dims, size_t rank, float *out,
                         size_t n_out)
{
    const OrtApi *api = osv_ort;
    osv_env_t *env = osv_test_env();
    OrtValue *in = NULL, *res = NULL;
    void *p;
    size_t count = 1;
    const char *in_name = osv_model_input(m, 0)->name, *out_name = osv_model_output(m, 0)->name;
    for (size_t i = 0; i < rank; i++)
        count *= (size_t)dims[i];
    assert_null(
        api->CreateTensorAsOrtValue(env->allocator, dims, rank, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in));
    assert_null(api->GetTensorMutableData(in, &p));
    memcpy(p, x, count * sizeof *x);
    assert_null(api->Run(m->session, NULL, &in_name, (const OrtValue *const *)&in, 1, &out_name, 1, &res));
    assert_null(api->GetTensorMutableData(res, &p));
    memcpy(out, p, n_out * sizeof *out);
    api->ReleaseValue(in);
    api->ReleaseValue(res);
}

static void mlp_zero_copy_binds_caller_memory(void **state)
{
    _Alignas(64) float x[2 * 64];
    float want[20];
    int64_t dims[] = {2, 64};
    osv_tensor_view_t v;
    osv_stats_snapshot_t snap;
    fixture_t f;
    (void)state;
    fill_x(x, 128);
    fx_begin(&f, osv_test_load("mlp.onnx"), pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, x, sizeof x, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    assert_ptr_equal(osv_infer_bound_input_ptr(f.inf, 0), x); /* ORT read the caller's memory */
    assert_int_equal(osv_infer_copied(f.inf), 0);
    assert_int_equal(osv_infer_fallback(f.inf), OSV_COPY_NONE);
    assert_int_equal(osv_infer_batch(f.inf), 2);
    assert_int_equal(osv_infer_output_count(f.inf), 1);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &v, &f.err), &f.err);
    assert_string_equal(v.name, "probs");
    assert_int_equal(v.rank, 2);
    assert_int_equal(v.dims[0], 2);
    assert_int_equal(v.dims[1], 10);
    assert_int_equal(v.binding, OSV_COPY_NONE); /* ORT wrote into our slot */
    assert_int_equal((uintptr_t)v.data % OSV_SLOT_ALIGN, 0);
    bare_run_f32(f.m, x, dims, 2, want, 20);
    for (int i = 0; i < 20; i++)
        assert_float_equal(((float *)v.data)[i], want[i], 1e-6);
    osv_stats_snapshot(osv_model_stats(f.m), &snap);
    assert_int_equal(snap.bind[OSV_DIR_INPUT][OSV_COPY_NONE], 1);
    assert_int_equal(snap.bind[OSV_DIR_OUTPUT][OSV_COPY_NONE], 1);
    assert_int_equal(snap.execution_count, 1);
    assert_int_equal(snap.inference_count, 2);
    fx_end(&f);
    osv_model_release(f.m);
}

static void run_mlp_from(const float *x, bool force, osv_copy_reason_t want_in, osv_copy_reason_t want_out,
                         uint64_t want_copied, float *out)
{
    int64_t dims[] = {1, 64};
    osv_tensor_view_t v;
    osv_stats_snapshot_t snap;
    fixture_t f;
    fx_begin(&f, osv_test_load("mlp.onnx"), pool, force);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, (void *)x, 256, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    assert_ptr_not_equal(osv_infer_bound_input_ptr(f.inf, 0), x);
    assert_int_equal(osv_infer_fallback(f.inf), want_in);
    assert_int_equal(osv_infer_copied(f.inf), want_copied);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &v, &f.err), &f.err);
    assert_int_equal(v.binding, want_out);
    memcpy(out, v.data, 40);
    osv_stats_snapshot(osv_model_stats(f.m), &snap);
    assert_int_equal(snap.bind[OSV_DIR_INPUT][want_in], 1);
    assert_int_equal(snap.copied_bytes[want_in], want_in == want_out ? want_copied : 256);
    fx_end(&f);
    osv_model_release(f.m);
}

static void misaligned_input_is_copied_and_counted(void **state)
{
    _Alignas(64) float aligned[64];
    _Alignas(64) unsigned char buf[256 + 64];
    float *mis = (float *)(void *)(buf + 2); /* not 4-byte aligned */
    float a[10], b[10];
    (void)state;
    fill_x(aligned, 64);
    memcpy(buf + 2, aligned, 256);
    run_mlp_from(mis, false, OSV_COPY_MISALIGNED, OSV_COPY_NONE, 256, a);
    run_mlp_from(aligned, true, OSV_COPY_FORCED, OSV_COPY_FORCED, 256 + 40, b);
    for (int i = 0; i < 10; i++)
        assert_float_equal(a[i], b[i], 0);
}

static void slot_resident_input_is_bound_in_place(void **state)
{
    int64_t dims[] = {1, 64};
    void *p;
    uint64_t len;
    fixture_t f;
    (void)state;
    fx_begin(&f, osv_test_load("mlp.onnx"), pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 2, 256, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    assert_int_equal(osv_infer_input_buffer(f.inf, 0, &p, &len), 0);
    assert_int_equal(len, 256);
    assert_int_equal((uintptr_t)p % OSV_SLOT_ALIGN, 0);
    fill_x(p, 64);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    assert_ptr_equal(osv_infer_bound_input_ptr(f.inf, 0), p);
    assert_int_equal(osv_infer_copied(f.inf), 0);
    fx_end(&f);
    osv_model_release(f.m);
}

static void derived_and_ort_allocated_outputs(void **state)
{
    _Alignas(64) float a[6] = {1, -2, 3, 0, 5, -6}, b[6] = {10, 20, 30, 40, 50, 60};
    int64_t dims[] = {2, 3};
    osv_tensor_view_t sum, nz;
    fixture_t f;
    (void)state;
    fx_begin(&f, osv_test_load("dynamic.onnx"), pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 1, OSV_DTYPE_FP32, dims, 2, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, a, sizeof a, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 1, b, sizeof b, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &sum, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 1, &nz, &f.err), &f.err);
    assert_int_equal(sum.binding, OSV_COPY_NONE); /* [B,T] derived from the inputs' B and T */
    for (int i = 0; i < 6; i++)
        assert_float_equal(((float *)sum.data)[i], a[i] + b[i], 0);
    assert_int_equal(nz.binding, OSV_COPY_ORT_ALLOCATED); /* data-dependent: ORT allocates */
    assert_int_equal(nz.rank, 2);
    assert_int_equal(nz.dims[0], 2);
    assert_int_equal(nz.dims[1], 3); /* a > 0 at (0,0) (0,2) (1,1) */
    const int64_t *z = nz.data;
    int64_t want[] = {0, 0, 1, 0, 2, 1};
    for (int i = 0; i < 6; i++)
        assert_int_equal(z[i], want[i]);
    assert_int_equal(osv_infer_copied(f.inf), 0); /* read in place: still no copy */
    fx_end(&f);
    osv_model_release(f.m);
}

static void requested_output_subset(void **state)
{
    _Alignas(64) float a[2] = {1, 2}, b[2] = {3, 4};
    int64_t dims[] = {1, 2};
    osv_tensor_view_t v;
    fixture_t f;
    (void)state;
    fx_begin(&f, osv_test_load("dynamic.onnx"), pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 1, OSV_DTYPE_FP32, dims, 2, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, a, sizeof a, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 1, b, sizeof b, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_add_output(f.inf, 1, &f.err), &f.err);
    assert_int_equal(osv_infer_add_output(f.inf, 1, &f.err), OSV_EINVAL); /* twice */
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    assert_int_equal(osv_infer_output_count(f.inf), 1);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &v, &f.err), &f.err);
    assert_string_equal(v.name, "nz");
    fx_end(&f);
    osv_model_release(f.m);
}

/* Serializes strings as u32 length + bytes (Triton's BYTES wire format). */
static size_t ser(const char *const *s, const size_t *len, int n, uint8_t *out)
{
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        uint32_t l = (uint32_t)len[i];
        memcpy(out + off, &l, 4);
        memcpy(out + off + 4, s[i], len[i]);
        off += 4 + len[i];
    }
    return off;
}

static void identity_every_dtype(void **state)
{
    osv_model_t *m = osv_test_load("identity.onnx");
    _Alignas(64) uint8_t data[14][64];
    const char *strs[] = {"", "h\xc3\xa9llo", "a\0b"};
    size_t lens[] = {0, 6, 3};
    uint8_t bytes[64];
    size_t nbytes = ser(strs, lens, 3, bytes);
    int64_t dims[] = {3};
    fixture_t f;
    (void)state;
    assert_int_equal(osv_model_input_count(m), 14);
    fx_begin(&f, m, pool, false);
    for (uint32_t i = 0; i < 14; i++) {
        const osv_tensor_info_t *t = osv_model_input(m, i);
        if (t->dtype == OSV_DTYPE_BYTES) {
            OSV_ASSERT_OK(osv_infer_add_input(f.inf, i, t->dtype, dims, 1, nbytes, &f.err), &f.err);
            OSV_ASSERT_OK(osv_infer_input_external(f.inf, i, bytes, nbytes, &f.err), &f.err);
            continue;
        }
        for (size_t k = 0; k < 3 * osv_dtype_size(t->dtype); k++)
            data[i][k] = (uint8_t)(t->dtype == OSV_DTYPE_BOOL ? k % 2 : 7 * k + i);
        OSV_ASSERT_OK(osv_infer_add_input(f.inf, i, t->dtype, dims, 1, 0, &f.err), &f.err);
        OSV_ASSERT_OK(osv_infer_input_external(f.inf, i, data[i], 3 * osv_dtype_size(t->dtype), &f.err),
                      &f.err);
    }
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    for (uint32_t k = 0; k < 14; k++) {
        osv_tensor_view_t v;
        OSV_ASSERT_OK(osv_infer_output_view(f.inf, k, &v, &f.err), &f.err);
        assert_int_equal(v.dims[0], 3);
        if (v.dtype == OSV_DTYPE_BYTES) {
            uint8_t out[64];
            assert_int_equal(v.bytes, nbytes);
            assert_int_equal(v.binding, OSV_COPY_BYTES);
            OSV_ASSERT_OK(osv_infer_output_bytes(f.inf, k, out, sizeof out, &f.err), &f.err);
            assert_memory_equal(out, bytes, nbytes);
            assert_int_equal(osv_infer_output_bytes(f.inf, k, out, nbytes - 1, &f.err), OSV_ETOOBIG);
        } else {
            assert_int_equal(v.binding, OSV_COPY_NONE);
            assert_memory_equal(v.data, data[k], v.bytes);
        }
    }
    assert_int_equal(osv_infer_fallback(f.inf), OSV_COPY_BYTES);
    fx_end(&f);
    osv_model_release(m);
}

static void validation_errors_name_the_problem(void **state)
{
    osv_model_t *m = osv_test_load("mlp.onnx");
    fixture_t f;
    int64_t ok[] = {1, 64}, bad_dim[] = {1, 63}, rank3[] = {1, 1, 64}, many[] = {1ll << 27, 64},
            huge[] = {1ll << 62, 64};
    (void)state;
    fx_begin(&f, m, pool, false);
    assert_int_equal(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP64, ok, 2, 0, &f.err), OSV_EDTYPE);
    assert_non_null(strstr(f.err.msg, "FP64"));
    assert_non_null(strstr(f.err.msg, "FP32"));
    assert_int_equal(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, bad_dim, 2, 0, &f.err), OSV_ESHAPE);
    assert_non_null(strstr(f.err.msg, "[1,63]"));
    assert_int_equal(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, rank3, 3, 0, &f.err), OSV_ESHAPE);
    assert_int_equal(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, many, 2, 0, &f.err), OSV_ELIMIT);
    assert_int_equal(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, huge, 2, 0, &f.err), OSV_EOVERFLOW);
    assert_int_equal(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, ok, 2, 100, &f.err), OSV_ESHAPE);
    assert_non_null(strstr(f.err.msg, "100 bytes"));
    assert_int_equal(osv_infer_add_input(f.inf, 1, OSV_DTYPE_FP32, ok, 2, 0, &f.err), OSV_EINVAL);
    assert_int_equal(osv_infer_prepare(f.inf, &f.err), OSV_EINVAL);
    assert_non_null(strstr(f.err.msg, "missing input 'x'"));
    fx_end(&f);
    fx_begin(&f, m, pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, ok, 2, 0, &f.err), &f.err);
    assert_int_equal(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, ok, 2, 0, &f.err), OSV_EINVAL);
    assert_non_null(strstr(f.err.msg, "more than once"));
    float x[64] = {0};
    assert_int_equal(osv_infer_input_external(f.inf, 0, x, 255, &f.err), OSV_ESHAPE);
    fx_end(&f);
    osv_model_release(m);
}

static void malformed_bytes_are_rejected(void **state)
{
    osv_model_t *m = osv_test_load("identity.onnx");
    uint8_t bad[12] = {5, 0, 0, 0, 'a', 'b'}; /* claims 5 bytes, then a second element is missing */
    int64_t dims[] = {2};
    fixture_t f;
    (void)state;
    int idx = osv_model_find_input(m, "in_BYTES", 8);
    assert_true(idx >= 0);
    fx_begin(&f, m, pool, false);
    assert_int_equal(osv_infer_add_input(f.inf, (uint32_t)idx, OSV_DTYPE_BYTES, dims, 1, 4, &f.err),
                     OSV_ESHAPE);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, (uint32_t)idx, OSV_DTYPE_BYTES, dims, 1, 9, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, (uint32_t)idx, bad, 9, &f.err), &f.err);
    /* Declare the other inputs as empty so only BYTES can fail. */
    int64_t zero[] = {0};
    for (uint32_t i = 0; i < osv_model_input_count(m); i++)
        if ((int)i != idx)
            OSV_ASSERT_OK(osv_infer_add_input(f.inf, i, osv_model_input(m, i)->dtype, zero, 1, 0, &f.err),
                          &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    assert_int_equal(osv_infer_run(f.inf, &f.err), OSV_EPARSE);
    assert_non_null(strstr(f.err.msg, "in_BYTES"));
    fx_end(&f);
    osv_model_release(m);
}

static void pool_exhaustion_is_busy(void **state)
{
    uint32_t counts[] = {1};
    osv_pool_opts_t o = {
        .min_slot = 4096, .max_slot = 4096, .counts = counts, .n_counts = 1, .total_bytes = 4096};
    osv_pool_t *small;
    osv_model_t *m = osv_test_load("mlp.onnx");
    int64_t dims[] = {1, 64};
    fixture_t a, b;
    osv_err_t err;
    (void)state;
    OSV_ASSERT_OK(osv_pool_create(&o, &small, &err), &err);
    fx_begin(&a, m, small, false);
    fx_begin(&b, m, small, false);
    OSV_ASSERT_OK(osv_infer_add_input(a.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &a.err), &a.err);
    OSV_ASSERT_OK(osv_infer_add_input(b.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &b.err), &b.err);
    OSV_ASSERT_OK(osv_infer_prepare(a.inf, &a.err), &a.err);
    assert_int_equal(osv_infer_prepare(b.inf, &b.err), OSV_EBUSY);
    fx_end(&a); /* releases the slot */
    fx_end(&b);
    fx_begin(&b, m, small, false);
    OSV_ASSERT_OK(osv_infer_add_input(b.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &b.err), &b.err);
    OSV_ASSERT_OK(osv_infer_prepare(b.inf, &b.err), &b.err);
    fx_end(&b);
    int64_t big[] = {20, 64}; /* 5 KiB of input: larger than any slot */
    fx_begin(&b, m, small, false);
    OSV_ASSERT_OK(osv_infer_add_input(b.inf, 0, OSV_DTYPE_FP32, big, 2, 0, &b.err), &b.err);
    assert_int_equal(osv_infer_prepare(b.inf, &b.err), OSV_ETOOBIG);
    fx_end(&b);
    osv_pool_destroy(small);
    osv_model_release(m);
}

static void prepare_slow(fixture_t *f, osv_model_t *m, int64_t iters, float *x, int64_t *it)
{
    int64_t dx[] = {1, 256};
    *it = iters;
    fx_begin(f, m, pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f->inf, 0, OSV_DTYPE_FP32, dx, 2, 0, &f->err), &f->err);
    OSV_ASSERT_OK(osv_infer_add_input(f->inf, 1, OSV_DTYPE_INT64, NULL, 0, 0, &f->err), &f->err);
    OSV_ASSERT_OK(osv_infer_input_external(f->inf, 0, x, 1024, &f->err), &f->err);
    OSV_ASSERT_OK(osv_infer_input_external(f->inf, 1, it, 8, &f->err), &f->err);
    OSV_ASSERT_OK(osv_infer_prepare(f->inf, &f->err), &f->err);
}

static void *run_thread(void *arg)
{
    fixture_t *f = arg;
    f->err.code = osv_infer_run(f->inf, &f->err);
    return NULL;
}

static void cancel_before_and_during_run(void **state)
{
    osv_model_t *m = osv_test_load("slow.onnx");
    _Alignas(64) float x[256];
    int64_t it;
    fixture_t f;
    pthread_t th;
    osv_stats_snapshot_t snap;
    (void)state;
    fill_x(x, 256);
    prepare_slow(&f, m, 5, x, &it);
    osv_infer_cancel(f.inf);
    assert_true(osv_infer_canceled(f.inf));
    assert_int_equal(osv_infer_run(f.inf, &f.err), OSV_ECANCELED);
    fx_end(&f);

    prepare_slow(&f, m, 1ll << 40, x, &it); /* would run for days */
    pthread_create(&th, NULL, run_thread, &f);
    while (!osv_infer_running(f.inf) && !osv_infer_canceled(f.inf))
        ; /* the run has started once RUNNING is visible */
    osv_infer_cancel(f.inf);
    pthread_join(th, NULL);
    assert_int_equal(f.err.code, OSV_ECANCELED);
    osv_stats_snapshot(osv_model_stats(m), &snap);
    assert_int_equal(snap.canceled, 1);
    osv_infer_cancel(f.inf); /* after the fact: harmless */
    fx_end(&f);

    prepare_slow(&f, m, 3, x, &it); /* the thread's run options were reset: a new run completes */
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    fx_end(&f);
    osv_model_release(m);
}

static void ort_failure_keeps_message(void **state)
{
    osv_model_t *m = osv_test_load("fail.onnx");
    _Alignas(64) float x[6] = {1, 2, 3, 4, 5, 6};
    _Alignas(64) int64_t shape[1] = {4};
    int64_t dx[] = {6}, ds[] = {1};
    fixture_t f;
    (void)state;
    fx_begin(&f, m, pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dx, 1, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 1, OSV_DTYPE_INT64, ds, 1, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, x, sizeof x, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 1, shape, sizeof shape, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    int rc = osv_infer_run(f.inf, &f.err);
    assert_true(rc == OSV_EORT || rc == OSV_EINVAL);
    assert_non_null(strstr(f.err.msg, "Reshape"));
    fx_end(&f);
    osv_model_release(m);
}

static void external_output_is_written_in_place(void **state)
{
    osv_model_t *m = osv_test_load("mlp.onnx");
    _Alignas(64) float x[64], out[10], tiny[4];
    int64_t dims[] = {1, 64};
    osv_tensor_view_t v;
    fixture_t f;
    (void)state;
    fill_x(x, 64);
    fx_begin(&f, m, pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, x, sizeof x, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_add_output(f.inf, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_output_external(f.inf, 0, out, sizeof out, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &v, &f.err), &f.err);
    assert_ptr_equal(v.data, out);
    assert_int_equal(v.binding, OSV_COPY_NONE);
    float s = 0;
    for (int i = 0; i < 10; i++)
        s += out[i];
    assert_float_equal(s, 1.0f, 1e-5);
    assert_int_equal(osv_infer_copied(f.inf), 0);
    fx_end(&f);
    fx_begin(&f, m, pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_add_output(f.inf, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_output_external(f.inf, 0, tiny, sizeof tiny, &f.err), &f.err);
    assert_int_equal(osv_infer_prepare(f.inf, &f.err), OSV_EINVAL); /* the caller's range: bad input */
    fx_end(&f);
    osv_model_release(m);
}

static void misleading_symbolic_shape_falls_back(void **state)
{
    osv_model_t *m = osv_test_load("mislead.onnx");
    _Alignas(64) float x[3] = {1, 2, 3};
    int64_t dims[] = {3};
    osv_tensor_view_t v;
    fixture_t f;
    (void)state;
    for (int round = 0; round < 2; round++) {
        fx_begin(&f, m, pool, false);
        OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 1, 0, &f.err), &f.err);
        OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, x, sizeof x, &f.err), &f.err);
        OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
        OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
        OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &v, &f.err), &f.err);
        assert_int_equal(v.dims[0], 6);
        assert_int_equal(v.binding, OSV_COPY_ORT_ALLOCATED);
        assert_float_equal(((float *)v.data)[4], 2.0f, 0);
        fx_end(&f);
    }
    osv_model_release(m);
}

/* Runs compress.onnx selecting `n_true` elements; returns the output binding. */
static osv_copy_reason_t run_compress(osv_model_t *m, int n_true)
{
    _Alignas(64) float x[4] = {1, 2, 3, 4};
    _Alignas(64) uint8_t cond[4] = {0};
    int64_t dims[] = {4};
    osv_tensor_view_t v;
    fixture_t f;
    for (int i = 0; i < n_true; i++)
        cond[i] = 1;
    fx_begin(&f, m, pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 1, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 1, OSV_DTYPE_BOOL, dims, 1, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, x, sizeof x, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 1, cond, sizeof cond, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &v, &f.err), &f.err);
    assert_int_equal(v.dims[0], n_true);
    assert_float_equal(((float *)v.data)[n_true - 1], (float)n_true, 0);
    fx_end(&f);
    return v.binding;
}

static void wrong_fixed_output_shape_is_learned(void **state)
{
    char dir[256], path[512];
    osv_model_t *m;
    osv_err_t err;
    (void)state;
    /* Without warm-up the first request meets the wrong [2]: ORT rejects the pre-sized output, the
     * run is retried with ORT allocating it, and the model remembers. */
    osv_test_tmpdir(dir, sizeof dir);
    osv_test_write_file(dir, "config.json", "{\"warmup\": false}");
    OSV_ASSERT_OK(osv_model_load(osv_test_env(), "compress", 1,
                                 osv_test_model("compress.onnx", path, sizeof path), dir, NULL, &m, &err),
                  &err);
    assert_int_equal(run_compress(m, 2), OSV_COPY_NONE); /* the declared shape happens to be right */
    assert_int_equal(run_compress(m, 3), OSV_COPY_ORT_ALLOCATED);
    assert_int_equal(run_compress(m, 2), OSV_COPY_ORT_ALLOCATED); /* learned: no pre-sizing any more */
    osv_model_release(m);
    osv_test_rmtree(dir);
    /* With warm-up (the default) the mismatch is found at load time. */
    m = osv_test_load("compress.onnx");
    assert_int_equal(run_compress(m, 1), OSV_COPY_ORT_ALLOCATED);
    osv_model_release(m);
}

static void dtype_conversion_when_allowed(void **state)
{
    char dir[256], path[512];
    osv_model_t *m;
    _Alignas(64) int32_t x[3] = {1, -2, 3};
    int64_t dims[] = {3};
    osv_tensor_view_t v;
    fixture_t f;
    osv_err_t err;
    (void)state;
    osv_test_tmpdir(dir, sizeof dir);
    osv_test_write_file(dir, "config.json", "{\"allow_dtype_conversion\": true}");
    OSV_ASSERT_OK(osv_model_load(osv_test_env(), "scale2x", 1,
                                 osv_test_model("scale2x.onnx", path, sizeof path), dir, NULL, &m, &err),
                  &err);
    fx_begin(&f, m, pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_INT32, dims, 1, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_input_external(f.inf, 0, x, sizeof x, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &v, &f.err), &f.err);
    assert_float_equal(((float *)v.data)[1], -4.0f, 0);
    assert_int_equal(osv_infer_fallback(f.inf), OSV_COPY_CONVERSION);
    assert_int_equal(osv_infer_copied(f.inf), 12);
    fx_end(&f);
    osv_model_release(m);
    osv_test_rmtree(dir);
}

static void empty_tensor_runs(void **state)
{
    osv_model_t *m = osv_test_load("scale2x.onnx");
    int64_t dims[] = {0};
    osv_tensor_view_t v;
    fixture_t f;
    (void)state;
    fx_begin(&f, m, pool, false);
    OSV_ASSERT_OK(osv_infer_add_input(f.inf, 0, OSV_DTYPE_FP32, dims, 1, 0, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_prepare(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_run(f.inf, &f.err), &f.err);
    OSV_ASSERT_OK(osv_infer_output_view(f.inf, 0, &v, &f.err), &f.err);
    assert_int_equal(v.rank, 1);
    assert_int_equal(v.dims[0], 0);
    assert_int_equal(v.bytes, 0);
    fx_end(&f);
    osv_model_release(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mlp_zero_copy_binds_caller_memory),
        cmocka_unit_test(misaligned_input_is_copied_and_counted),
        cmocka_unit_test(slot_resident_input_is_bound_in_place),
        cmocka_unit_test(derived_and_ort_allocated_outputs),
        cmocka_unit_test(requested_output_subset),
        cmocka_unit_test(identity_every_dtype),
        cmocka_unit_test(validation_errors_name_the_problem),
        cmocka_unit_test(malformed_bytes_are_rejected),
        cmocka_unit_test(pool_exhaustion_is_busy),
        cmocka_unit_test(cancel_before_and_during_run),
        cmocka_unit_test(ort_failure_keeps_message),
        cmocka_unit_test(external_output_is_written_in_place),
        cmocka_unit_test(misleading_symbolic_shape_falls_back),
        cmocka_unit_test(wrong_fixed_output_shape_is_learned),
        cmocka_unit_test(dtype_conversion_when_allowed),
        cmocka_unit_test(empty_tensor_runs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
