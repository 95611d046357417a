/* test_repo.c — the model repository: Triton layout, versions, confinement, readiness,
 * unload/reload, and reloads that never fail requests running on the old session. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static char repo_dir[256], outside_dir[256];
static osv_pool_t *pool;

/* mlp/{1,3}, bare/model.onnx, junk (garbage), empty/, escape/1/model.onnx -> outside the repo,
 * plus names that must be ignored. */
static int setup(void **state)
{
    char mlp[512], scale[512], link_path[1024], target[1024];
    osv_pool_opts_t po = {.total_bytes = 16ull << 20};
    osv_err_t err;
    (void)state;
    osv_test_env();
    osv_test_tmpdir(repo_dir, sizeof repo_dir);
    osv_test_tmpdir(outside_dir, sizeof outside_dir);
    osv_test_model("mlp.onnx", mlp, sizeof mlp);
    osv_test_model("scale2x.onnx", scale, sizeof scale);
    osv_test_copy_file(mlp, repo_dir, "mlp/1/model.onnx");
    osv_test_copy_file(mlp, repo_dir, "mlp/3/model.onnx");
    osv_test_write_file(repo_dir, "mlp/config.json", "{\"labels\": \"labels.txt\"}");
    osv_test_write_file(repo_dir, "mlp/labels.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n");
    osv_test_copy_file(scale, repo_dir, "bare/model.onnx");
    osv_test_write_file(repo_dir, "junk/1/model.onnx", "not a model");
    osv_test_write_file(repo_dir, "empty/README", "no model here");
    osv_test_write_file(repo_dir, ".hidden/1/model.onnx", "ignored");
    osv_test_copy_file(scale, repo_dir, "bad name!/model.onnx");
    osv_test_copy_file(scale, outside_dir, "model.onnx");
    osv_test_write_file(repo_dir, "escape/1/placeholder", "");
    snprintf(link_path, sizeof link_path, "%s/escape/1/model.onnx", repo_dir);
    snprintf(target, sizeof target, "%s/model.onnx", outside_dir);
    if (symlink(target, link_path) != 0)
        return -1;
    return osv_pool_create(&po, &pool, &err);
}

static int teardown(void **state)
{
    (void)state;
    osv_pool_destroy(pool);
    osv_test_rmtree(repo_dir);
    osv_test_rmtree(outside_dir);
    return 0;
}

static osv_repo_t *open_repo(void)
{
    osv_repo_opts_t o = {.env = osv_test_env(), .path = repo_dir, .load_all = true};
    osv_repo_t *r = NULL;
    osv_err_t err;
    OSV_ASSERT_OK(osv_repo_open(&o, &r, &err), &err);
    return r;
}

static const osv_repo_entry_t *row(const osv_repo_entry_t *e, size_t n, const char *name, int64_t version)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(e[i].name, name) == 0 && e[i].version == version)
            return &e[i];
    return NULL;
}

static void layout_versions_and_lookup(void **state)
{
    osv_repo_t *r = open_repo();
    osv_model_t *m;
    osv_err_t err;
    (void)state;
    assert_int_equal(osv_repo_model_count(r), 5); /* mlp bare junk empty escape */
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, -1, &m, &err), &err);
    assert_int_equal(osv_model_version(m), 3); /* highest by default */
    assert_int_equal(osv_model_output(m, 0)->n_labels, 10);
    osv_model_release(m);
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, 1, &m, &err), &err);
    assert_int_equal(osv_model_version(m), 1);
    osv_model_release(m);
    assert_int_equal(osv_repo_acquire(r, "mlp", 3, 2, &m, &err), OSV_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no version 2"));
    OSV_ASSERT_OK(osv_repo_acquire(r, "bare", 4, -1, &m, &err), &err);
    assert_int_equal(osv_model_version(m), 1); /* a bare model.onnx is version 1 */
    osv_model_release(m);
    assert_int_equal(osv_repo_acquire(r, "junk", 4, -1, &m, &err), OSV_EUNAVAIL);
    assert_non_null(strstr(err.msg, "junk"));
    assert_int_equal(osv_repo_acquire(r, "nope", 4, -1, &m, &err), OSV_ENOTFOUND);
    assert_int_equal(osv_repo_acquire(r, ".hidden", 7, -1, &m, &err), OSV_ENOTFOUND);
    assert_false(osv_repo_ready(r)); /* junk, empty and escape failed to load */
    osv_repo_close(r);
}

static void index_reports_state_and_reason(void **state)
{
    osv_repo_t *r = open_repo();
    osv_repo_entry_t e[16];
    size_t n;
    const osv_repo_entry_t *x;
    (void)state;
    assert_int_equal(osv_repo_index(r, false, e, 16, &n), 0);
    assert_int_equal(n, 6); /* mlp×2, bare, junk, empty, escape */
    assert_non_null(x = row(e, n, "mlp", 1));
    assert_int_equal(x->state, OSV_MODEL_READY);
    assert_non_null(row(e, n, "mlp", 3));
    assert_non_null(x = row(e, n, "junk", 1)); /* each version has its row, with its state and reason */
    assert_int_equal(x->state, OSV_MODEL_UNAVAILABLE);
    assert_true(strlen(x->reason) > 0);
    assert_non_null(x = row(e, n, "empty", -1)); /* no version at all: the model's row */
    assert_non_null(strstr(x->reason, "no <version>/model.onnx"));
    assert_non_null(x = row(e, n, "escape", -1)); /* the symlink points outside: not loaded */
    if (!strstr(x->reason, "inside the repository"))
        fail_msg("escape: reason '%s'", x->reason);
    assert_int_equal(osv_repo_index(r, true, e, 16, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(osv_repo_index(r, false, e, 2, &n), 0); /* capacity smaller than the index */
    assert_int_equal(n, 6);
    assert_string_equal(osv_model_state_name(OSV_MODEL_READY), "READY");
    osv_repo_close(r);
}

static void unload_and_load(void **state)
{
    osv_repo_t *r = open_repo();
    osv_model_t *m;
    osv_err_t err;
    (void)state;
    OSV_ASSERT_OK(osv_repo_unload(r, "junk", &err), &err);
    OSV_ASSERT_OK(osv_repo_unload(r, "empty", &err), &err);
    OSV_ASSERT_OK(osv_repo_unload(r, "escape", &err), &err);
    assert_true(osv_repo_ready(r)); /* unloaded models do not count against readiness */
    OSV_ASSERT_OK(osv_repo_unload(r, "mlp", &err), &err);
    assert_int_equal(osv_repo_acquire(r, "mlp", 3, -1, &m, &err), OSV_EUNAVAIL);
    assert_non_null(strstr(err.msg, "unloaded"));
    assert_true(osv_repo_ready(r));
    OSV_ASSERT_OK(osv_repo_load(r, "mlp", &err), &err);
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, -1, &m, &err), &err);
    osv_model_release(m);
    assert_int_equal(osv_repo_unload(r, "nope", &err), OSV_ENOTFOUND);
    assert_int_equal(osv_repo_load(r, "../etc", &err), OSV_EINVAL);
    assert_int_equal(osv_repo_load(r, "junk", &err) == 0, 0);
    assert_false(osv_repo_ready(r)); /* asked to load junk again: wanted, not ready */
    osv_repo_close(r);
}

static int run_mlp(osv_model_t *m)
{
    _Alignas(64) float x[64] = {1};
    int64_t dims[] = {1, 64};
    size_t size = osv_infer_size(m);
    void *mem = aligned_alloc(64, (size + 63) & ~(size_t)63);
    osv_infer_opts_t o = {.pool = pool};
    osv_infer_t *inf;
    osv_err_t err;
    int rc = osv_infer_init(mem, size, m, &o, &inf, &err);
    if (rc) {
        free(mem);
        return rc;
    }
    rc = osv_infer_add_input(inf, 0, OSV_DTYPE_FP32, dims, 2, 0, &err);
    if (!rc)
        rc = osv_infer_input_external(inf, 0, x, sizeof x, &err);
    if (!rc)
        rc = osv_infer_prepare(inf, &err);
    if (!rc)
        rc = osv_infer_run(inf, &err);
    osv_infer_fini(inf);
    free(mem);
    return rc;
}

static void reload_keeps_running_requests(void **state)
{
    osv_repo_t *r = open_repo();
    osv_model_t *old, *fresh;
    osv_err_t err;
    char src[512];
    (void)state;
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, -1, &old, &err), &err);
    osv_test_copy_file(osv_test_model("mlp.onnx", src, sizeof src), repo_dir,
                       "mlp/3/model.onnx");             /* changed */
    OSV_ASSERT_OK(osv_repo_load(r, "mlp", &err), &err); /* new sessions replace the old */
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, -1, &fresh, &err), &err);
    assert_ptr_not_equal(old, fresh);
    assert_int_equal(run_mlp(old), 0); /* the request holding the old session still runs */
    assert_int_equal(run_mlp(fresh), 0);
    osv_model_release(old); /* the old session is freed here */
    osv_model_release(fresh);
    osv_repo_close(r);
}

/* A load keeps a version whose files did not change: the very same instance goes on serving; a
 * version whose file changed is loaded anew; the other versions are untouched. */
static void reload_keeps_unchanged_versions(void **state)
{
    osv_repo_t *r = open_repo();
    osv_model_t *v1, *v3, *again1, *again3;
    osv_err_t err;
    char src[512];
    (void)state;
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, 1, &v1, &err), &err);
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, 3, &v3, &err), &err);
    OSV_ASSERT_OK(osv_repo_load(r, "mlp", &err), &err);
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, 1, &again1, &err), &err);
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, 3, &again3, &err), &err);
    assert_ptr_equal(v1, again1);
    assert_ptr_equal(v3, again3);
    osv_model_release(again1);
    osv_model_release(again3);
    osv_test_copy_file(osv_test_model("mlp.onnx", src, sizeof src), repo_dir, "mlp/3/model.onnx");
    OSV_ASSERT_OK(osv_repo_load(r, "mlp", &err), &err);
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, 1, &again1, &err), &err);
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, 3, &again3, &err), &err);
    assert_ptr_equal(v1, again1);
    assert_ptr_not_equal(v3, again3);
    osv_model_release(again1);
    osv_model_release(again3);
    osv_model_release(v1);
    osv_model_release(v3);
    osv_repo_close(r);
}

typedef struct traffic {
    osv_repo_t *repo;
    _Atomic int failures;
    int rounds;
} traffic_t;

static void *traffic_thread(void *arg)
{
    traffic_t *t = arg;
    for (int i = 0; i < t->rounds; i++) {
        osv_model_t *m;
        if (osv_repo_acquire(t->repo, "mlp", 3, -1, &m, NULL) != 0 || run_mlp(m) != 0) {
            atomic_fetch_add(&t->failures, 1);
            continue;
        }
        osv_model_release(m);
    }
    return NULL;
}

static void reload_during_traffic(void **state)
{
    traffic_t t = {.repo = open_repo(), .rounds = 400};
    pthread_t th[3];
    osv_err_t err;
    (void)state;
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, traffic_thread, &t);
    for (int i = 0; i < 5; i++)
        OSV_ASSERT_OK(osv_repo_load(t.repo, "mlp", &err), &err);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&t.failures), 0);
    osv_repo_close(t.repo);
}

static void failed_reload_keeps_serving(void **state)
{
    char src[512];
    osv_repo_t *r = open_repo();
    osv_model_t *m;
    osv_err_t err;
    (void)state;
    osv_test_write_file(repo_dir, "mlp/3/model.onnx", "corrupted");
    assert_int_not_equal(osv_repo_load(r, "mlp", &err), 0);
    OSV_ASSERT_OK(osv_repo_acquire(r, "mlp", 3, -1, &m, &err), &err); /* old versions still serve */
    assert_int_equal(osv_model_version(m), 3);
    assert_int_equal(run_mlp(m), 0);
    osv_model_release(m);
    osv_test_copy_file(osv_test_model("mlp.onnx", src, sizeof src), repo_dir, "mlp/3/model.onnx");
    osv_repo_close(r);
}

static void new_model_on_disk_is_indexed(void **state)
{
    char src[512];
    osv_repo_t *r = open_repo();
    osv_repo_entry_t e[16];
    size_t n;
    osv_err_t err;
    osv_model_t *m;
    (void)state;
    osv_test_copy_file(osv_test_model("sum.onnx", src, sizeof src), repo_dir, "late/model.onnx");
    assert_int_equal(osv_repo_index(r, false, e, 16, &n), 0);
    assert_non_null(row(e, n, "late", -1));
    assert_int_equal(osv_repo_acquire(r, "late", 4, -1, &m, &err), OSV_EUNAVAIL);
    OSV_ASSERT_OK(osv_repo_load(r, "late", &err), &err);
    OSV_ASSERT_OK(osv_repo_acquire(r, "late", 4, -1, &m, &err), &err);
    osv_model_release(m);
    osv_repo_close(r);
    char path[512];
    snprintf(path, sizeof path, "%s/late", repo_dir);
    osv_test_rmtree(path);
}

static void model_names(void **state)
{
    (void)state;
    assert_true(osv_model_name_valid("resnet-50_v1.5", 14));
    assert_false(osv_model_name_valid("", 0));
    assert_false(osv_model_name_valid(".x", 2));
    assert_false(osv_model_name_valid("..", 2));
    assert_false(osv_model_name_valid("a/b", 3));
    assert_false(osv_model_name_valid("a b", 3));
    assert_false(osv_model_name_valid("a\0b", 3));
    char longname[200];
    memset(longname, 'a', sizeof longname);
    assert_false(osv_model_name_valid(longname, 128));
    assert_true(osv_model_name_valid(longname, 127));
}

/* model_name: the directory is itself one model (KServe mounts a model's storage at /mnt/models). */
static void single_model_directory(void **state)
{
    char dir[512];
    osv_repo_opts_t o = {.env = osv_test_env(), .load_all = true, .model_name = "my-mlp"};
    osv_repo_entry_t e[8];
    osv_repo_t *r = NULL;
    osv_model_t *m;
    osv_err_t err;
    size_t n;
    (void)state;
    snprintf(dir, sizeof dir, "%s/mlp", repo_dir); /* 1/ and 3/ with config.json and labels */
    o.path = dir;
    OSV_ASSERT_OK(osv_repo_open(&o, &r, &err), &err);
    assert_int_equal(osv_repo_model_count(r), 1);
    assert_true(osv_repo_ready(r));
    OSV_ASSERT_OK(osv_repo_acquire(r, "my-mlp", 6, -1, &m, &err), &err);
    assert_int_equal(osv_model_version(m), 3);
    assert_string_equal(osv_model_name(m), "my-mlp");
    assert_int_equal(osv_model_output(m, 0)->n_labels, 10); /* config.json of the directory applies */
    osv_model_release(m);
    assert_int_equal(osv_repo_acquire(r, "mlp", 3, -1, &m, &err), OSV_ENOTFOUND);
    assert_int_equal(osv_repo_load(r, "1", &err), OSV_ENOTFOUND); /* version dirs are not models */
    assert_int_equal(osv_repo_index(r, false, e, 8, &n), 0);
    assert_int_equal(n, 2);
    assert_non_null(row(e, n, "my-mlp", 1));
    assert_non_null(row(e, n, "my-mlp", 3));
    OSV_ASSERT_OK(osv_repo_unload(r, "my-mlp", &err), &err);
    OSV_ASSERT_OK(osv_repo_load(r, "my-mlp", &err), &err);
    osv_repo_close(r);

    /* A bare model.onnx is version 1; an invalid name is refused before anything is read. */
    snprintf(dir, sizeof dir, "%s/bare", repo_dir);
    OSV_ASSERT_OK(osv_repo_open(&o, &r, &err), &err);
    OSV_ASSERT_OK(osv_repo_acquire(r, "my-mlp", 6, 1, &m, &err), &err);
    osv_model_release(m);
    osv_repo_close(r);
    o.model_name = "../escape";
    assert_int_equal(osv_repo_open(&o, &r, &err), OSV_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layout_versions_and_lookup),
        cmocka_unit_test(index_reports_state_and_reason),
        cmocka_unit_test(unload_and_load),
        cmocka_unit_test(reload_keeps_running_requests),
        cmocka_unit_test(reload_keeps_unchanged_versions),
        cmocka_unit_test(reload_during_traffic),
        cmocka_unit_test(failed_reload_keeps_serving),
        cmocka_unit_test(new_model_on_disk_is_indexed),
        cmocka_unit_test(model_names),
        cmocka_unit_test(single_model_directory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
