/* test_model.c — the ORT environment (library loading and version check) and one model version:
 * introspection, metadata, config.json, labels, warm-up. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static void env_rejects_missing_library(void **state)
{
    osv_env_opts_t o;
    osv_env_t *env;
    osv_err_t err;
    (void)state;
    osv_env_opts_default(&o);
    o.ort_library = "/nonexistent/libonnxruntime.so.1";
    assert_int_equal(osv_env_create(&o, &env, &err), OSV_ENOTFOUND);
    assert_non_null(strstr(err.msg, "/nonexistent/libonnxruntime.so.1"));
    assert_non_null(strstr(err.msg, "ORTSERVE_ORT_LIBRARY"));
}

static void env_rejects_non_ort_library(void **state)
{
    osv_env_opts_t o;
    osv_env_t *env;
    osv_err_t err;
    (void)state;
    osv_env_opts_default(&o);
    o.ort_library = "libm.so.6";
    assert_int_equal(osv_env_create(&o, &env, &err), OSV_EVERSION);
    assert_non_null(strstr(err.msg, "OrtGetApiBase"));
}

static void env_rejects_old_api_version(void **state)
{
    osv_env_opts_t o;
    osv_env_t *env;
    osv_err_t err;
    char want[64];
    (void)state;
    osv_env_opts_default(&o);
    o.ort_library = OSV_FAKE_ORT;
    assert_int_equal(osv_env_create(&o, &env, &err), OSV_EVERSION);
    snprintf(want, sizeof want, "C API version %d", osv_env_api_version());
    assert_non_null(strstr(err.msg, "1.10.0"));
    assert_non_null(strstr(err.msg, want));
}

static void env_is_one_per_process(void **state)
{
    osv_env_t *env = osv_test_env(), *second;
    osv_err_t err;
    (void)state;
    assert_non_null(osv_env_ort_version(env));
    assert_true(strncmp(osv_env_ort_version(env), "1.", 2) == 0);
    assert_int_equal(osv_env_create(NULL, &second, &err), OSV_EEXIST);
    /* ORT's telemetry is off unless asked for: the variable its official builds honour is set. */
    assert_non_null(getenv("ORT_DISABLE_TELEMETRY"));
    assert_string_equal(getenv("ORT_DISABLE_TELEMETRY"), "1");
}

static void mlp_introspection_and_metadata(void **state)
{
    osv_model_t *m = osv_test_load("mlp.onnx");
    const osv_tensor_info_t *x, *p;
    const osv_model_meta_t *md;
    (void)state;
    assert_string_equal(osv_model_name(m), "mlp");
    assert_int_equal(osv_model_version(m), 1);
    assert_int_equal(osv_model_input_count(m), 1);
    assert_int_equal(osv_model_output_count(m), 1);
    x = osv_model_input(m, 0);
    assert_string_equal(x->name, "x");
    assert_int_equal(x->kind, OSV_VALUE_TENSOR);
    assert_int_equal(x->dtype, OSV_DTYPE_FP32);
    assert_int_equal(x->rank, 2);
    assert_int_equal(x->dims[0], -1);
    assert_int_equal(x->dims[1], 64);
    assert_string_equal(x->sym[0], "N");
    assert_string_equal(x->sym[1], "");
    p = osv_model_output(m, 0);
    assert_string_equal(p->name, "probs");
    assert_int_equal(p->dims[1], 10);
    assert_null(osv_model_input(m, 1));
    assert_int_equal(osv_model_find_input(m, "x", 1), 0);
    assert_int_equal(osv_model_find_output(m, "probs", 5), 0);
    assert_int_equal(osv_model_find_output(m, "prob", 4), -1);
    md = osv_model_meta(m);
    assert_string_equal(md->producer, "ortserve/tools/gen_models.py");
    assert_string_equal(md->graph_name, "mlp");
    assert_int_equal(md->version, 3);
    assert_int_equal(md->n_custom, 2);
    int found = 0;
    for (uint32_t i = 0; i < md->n_custom; i++)
        if (strcmp(md->custom_keys[i], "ortserve.test") == 0 && strcmp(md->custom_values[i], "mlp") == 0)
            found = 1;
    assert_true(found);
    assert_true(osv_model_servable(m, NULL));
    assert_null(osv_model_warmup_error(m));
    assert_true(osv_model_warmup_ns(m) > 0); /* the warm-up ran and was timed */
    assert_true(osv_model_load_ms(m) > 0);
    osv_model_ref(m);
    osv_model_release(m); /* one reference left */
    osv_model_release(m);
}

static void every_dtype_is_introspected(void **state)
{
    static const osv_dtype_t want[] = {OSV_DTYPE_BOOL,   OSV_DTYPE_UINT8, OSV_DTYPE_UINT16, OSV_DTYPE_UINT32,
                                       OSV_DTYPE_UINT64, OSV_DTYPE_INT8,  OSV_DTYPE_INT16,  OSV_DTYPE_INT32,
                                       OSV_DTYPE_INT64,  OSV_DTYPE_FP16,  OSV_DTYPE_BF16,   OSV_DTYPE_FP32,
                                       OSV_DTYPE_FP64,   OSV_DTYPE_BYTES};
    osv_model_t *m = osv_test_load("identity.onnx");
    char name[32];
    (void)state;
    for (uint32_t i = 0; i < 14; i++) {
        const osv_tensor_info_t *t = osv_model_input(m, i);
        snprintf(name, sizeof name, "in_%s", osv_dtype_name(want[i]));
        assert_string_equal(t->name, name);
        assert_int_equal(t->dtype, want[i]);
        assert_int_equal(osv_model_output(m, i)->dtype, want[i]);
    }
    /* names for messages: all of them when they fit, else as many as fit and ", ..." */
    char all[512], small[40];
    osv_model_names(m, false, all, sizeof all);
    assert_non_null(strstr(all, "'in_BOOL', 'in_UINT8', "));
    assert_non_null(strstr(all, ", 'in_BYTES'"));
    osv_model_names(m, true, small, sizeof small);
    assert_string_equal(small, "'out_BOOL', 'out_UINT8', ...");
    assert_int_equal(strlen(osv_model_names(m, true, small, 4)), 3); /* "..." */
    osv_model_release(m);
}

static void unnamed_dynamic_dim(void **state)
{
    osv_model_t *m = osv_test_load("fail.onnx");
    const osv_tensor_info_t *y = osv_model_output(m, 0);
    (void)state;
    assert_int_equal(y->rank, 1);
    assert_int_equal(y->dims[0], -1);
    assert_string_equal(y->sym[0], "");
    osv_model_release(m);
}

static int load_with_config(const char *config, const char *model, osv_model_t **m, osv_err_t *err, char *dir,
                            size_t cap)
{
    char path[512];
    osv_test_tmpdir(dir, cap);
    osv_test_write_file(dir, "config.json", config);
    osv_test_write_file(dir, "labels.txt", "cat\ndog\r\nbird\n");
    osv_test_write_file(dir, "other.txt", "zero\none");
    return osv_model_load(osv_test_env(), "m", 1, osv_test_model(model, path, sizeof path), dir, NULL, m,
                          err);
}

static void config_is_applied(void **state)
{
    const char *cfg =
        "{\"threads\": {\"intra_op\": 2, \"inter_op\": 1, \"spinning\": false},\n"
        " \"optimization\": \"basic\", \"memory\": {\"arena\": false, \"mem_pattern\": false},\n"
        " \"limits\": {\"max_dims\": 4, \"max_tensor_elements\": 1000},\n"
        " \"labels\": \"labels.txt\", \"output_labels\": {\"nz\": \"other.txt\"},\n"
        " \"warmup\": false, \"deadline_ms\": 250, \"max_queue\": 7, \"batch_dim\": true,\n"
        " \"image\": {\"height\": 224}, \"slo\": {\"p99_ms\": 5}}";
    char dir[256];
    osv_model_t *m;
    osv_err_t err;
    size_t len;
    (void)state;
    OSV_ASSERT_OK(load_with_config(cfg, "dynamic.onnx", &m, &err, dir, sizeof dir), &err);
    const osv_model_config_t *c = osv_model_config(m);
    assert_int_equal(c->threads.intra_op, 2);
    assert_int_equal(c->threads.spinning, 0);
    assert_int_equal(c->optimization, 1);
    assert_false(c->arena);
    assert_false(c->mem_pattern);
    assert_int_equal(c->limits.max_dims, 4);
    assert_int_equal(c->limits.max_tensor_elements, 1000);
    assert_false(c->warmup);
    assert_int_equal(c->deadline_ms, 250);
    assert_int_equal(c->max_queue, 7);
    assert_int_equal(c->batch_dim, 1);
    const osv_tensor_info_t *sum = osv_model_output(m, 0), *nz = osv_model_output(m, 1);
    assert_int_equal(sum->n_labels, 3);
    assert_string_equal(sum->labels[1], "dog"); /* CRLF stripped */
    assert_string_equal(sum->labels[2], "bird");
    assert_int_equal(nz->n_labels, 2);
    assert_string_equal(nz->labels[1], "one"); /* no trailing newline */
    const char *img = osv_model_config_section(m, "image", &len);
    assert_non_null(img);
    assert_int_equal(len, strlen("{\"height\": 224}"));
    assert_memory_equal(img, "{\"height\": 224}", len);
    assert_non_null(osv_model_config_section(m, "slo", &len));
    assert_null(osv_model_config_section(m, "postprocess", &len));
    osv_model_release(m);
    osv_test_rmtree(dir);
}

static void config_errors_are_named(void **state)
{
    static const struct {
        const char *config, *needle;
        int code;
    } cases[] = {
        {"{\"theads\": {}}", "unknown key 'theads'", OSV_EINVAL},
        {"{\"threads\": {\"intra\": 1}}", "unknown key 'intra' in threads", OSV_EINVAL},
        {"{\"threads\": {\"intra_op\": -1}}", "threads.intra_op", OSV_EINVAL},
        {"{\"warmup\": \"yes\"}", "'warmup' must be true or false", OSV_EINVAL},
        {"{\"optimization\": \"max\"}", "'optimization' must be", OSV_EINVAL},
        {"{\"image\": [1]}", "'image' must be an object", OSV_EINVAL},
        {"{\"labels\": 3}", "'labels' must be a string", OSV_EINVAL},
        {"{\"labels\": \"../../etc/passwd\"}", "inside the model directory", OSV_EPERM},
        {"{\"labels\": \"missing.txt\"}", "missing.txt", OSV_ENOTFOUND},
        {"{\"output_labels\": {\"nope\": \"labels.txt\"}}", "unknown output 'nope'", OSV_ENOTFOUND},
        {"{\"limits\": {\"max_dims\": 99}}", "limits.max_dims", OSV_EINVAL},
        {"{\"deadline_ms\": 1.5}", "deadline_ms", OSV_EINVAL},
        {"{\"threads\": ", "invalid JSON", OSV_EPARSE},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char dir[256];
        osv_model_t *m = NULL;
        osv_err_t err;
        int rc = load_with_config(cases[i].config, "dynamic.onnx", &m, &err, dir, sizeof dir);
        if (rc != cases[i].code || !strstr(err.msg, cases[i].needle))
            fail_msg("config %s: got %s '%s', want %s containing '%s'", cases[i].config, osv_err_name(rc),
                     err.msg, osv_err_name(cases[i].code), cases[i].needle);
        assert_null(m);
        assert_non_null(strstr(err.msg, "config.json")); /* the message names the file */
        osv_test_rmtree(dir);
    }
}

static void garbage_model_fails_cleanly(void **state)
{
    char dir[256], path[512];
    osv_model_t *m = NULL;
    osv_err_t err;
    (void)state;
    osv_test_tmpdir(dir, sizeof dir);
    osv_test_write_file(dir, "model.onnx", "this is not a protobuf");
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    assert_int_not_equal(osv_model_load(osv_test_env(), "junk", 1, path, NULL, NULL, &m, &err), 0);
    assert_null(m);
    assert_non_null(strstr(err.msg, "model 'junk' version 1"));
    assert_int_not_equal(osv_model_load(osv_test_env(), "none", 1, "/nonexistent.onnx", NULL, NULL, &m, &err),
                         0);
    assert_non_null(strstr(err.msg, "/nonexistent.onnx"));
    assert_null(m);
    osv_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* The env tests that need no environment must run before one exists. */
        cmocka_unit_test(env_rejects_missing_library),
        cmocka_unit_test(env_rejects_non_ort_library),
        cmocka_unit_test(env_rejects_old_api_version),
        cmocka_unit_test(env_is_one_per_process),
        cmocka_unit_test(mlp_introspection_and_metadata),
        cmocka_unit_test(every_dtype_is_introspected),
        cmocka_unit_test(unnamed_dynamic_dim),
        cmocka_unit_test(config_is_applied),
        cmocka_unit_test(config_errors_are_named),
        cmocka_unit_test(garbage_model_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
