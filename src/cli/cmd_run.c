/* cmd_run.c — `ortserve run`: one inference on .npy inputs, outputs summarised (and written as .npy
 * with --output-dir; without it nothing is written, and stderr says how to).
 *
 * The .npy files are memory-mapped and their data bound to ORT in place (zero-copy), exactly as the
 * server binds a request body; the report says how each tensor was bound. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "opts.h"
#include "npy.h"

#define MAX_INPUTS 64

typedef struct run_args {
    const char *model, *out_dir, *ort;
    osv_opt_multi_t inputs; /* NAME=FILE.npy, split into names and files */
    const char *names[MAX_INPUTS], *files[MAX_INPUTS];
    int n_inputs;
    bool force_copy;
} run_args_t;

#define OSV_OPT_STRUCT run_args_t
static const osv_opt_t run_opts[] = {
    OSV_OPT_MULTI("input", inputs, "NAME=FILE.npy", "an input's value (one per model input)"),
    OSV_OPT_STRING("output-dir", out_dir, "DIR", "write every output as DIR/<name>.npy"),
    OSV_OPT_SWITCH("force-copy", force_copy, "copy inputs and outputs instead of binding them in place"),
    OSV_OPT_STRING("ort-library", ort, "PATH", "libonnxruntime.so.1 to load"),
};
#undef OSV_OPT_STRUCT

static const osv_opt_short_t run_shorts[] = {{'i', "input"}, {'o', "output-dir"}};

static const osv_opt_cmd_t run_cmd = {.name = "run",
                                      .opts = run_opts,
                                      .n_opts = sizeof run_opts / sizeof *run_opts,
                                      .shorts = run_shorts,
                                      .n_shorts = sizeof run_shorts / sizeof *run_shorts,
                                      .max_args = 1};

_Static_assert(MAX_INPUTS == OSV_OPT_MULTI_MAX, "one name and file per --input");

static void run_usage(FILE *f)
{
    fprintf(f, "usage: ortserve run <model.onnx|model dir> --input NAME=FILE.npy [--input ...]\n"
               "                    [--output-dir DIR] [--force-copy] [--ort-library PATH]\n"
               "Runs the model once. Every model input needs an --input. Outputs are summarised on stdout\n"
               "and, with --output-dir, written as DIR/<output name>.npy. --force-copy copies inputs and\n"
               "outputs instead of binding them in place (to compare).\n");
}

static int parse_args(int argc, char **argv, run_args_t *a)
{
    int n_args, rc;
    memset(a, 0, sizeof *a);
    if ((rc = osv_opt_parse(&run_cmd, a, argc, argv, &n_args)) == OSV_OPT_HELP) {
        run_usage(stdout);
        return 1;
    }
    if (rc)
        return rc;
    for (uint32_t i = 0; i < a->inputs.n; i++) {
        char *eq = strchr(a->inputs.v[i], '=');
        if (!eq) {
            fprintf(stderr, "ortserve run: invalid value '%.200s' for --input: want NAME=FILE.npy\n",
                    a->inputs.v[i]);
            return 2;
        }
        *eq = '\0'; /* the value points into argv */
        a->names[a->n_inputs] = a->inputs.v[i];
        a->files[a->n_inputs++] = eq + 1;
    }
    if (n_args != 1) {
        fprintf(stderr, "ortserve run: a model (a .onnx file or a model directory) is required\n"
                        "Run 'ortserve run --help' for every option.\n");
        return 2;
    }
    a->model = argv[1];
    return 0;
}

static void print_values(const osv_tensor_view_t *v)
{
    uint64_t n = v->count < 8 ? v->count : 8;
    for (uint64_t i = 0; i < n && v->data; i++) {
        switch (v->dtype) {
        case OSV_DTYPE_FP32:
            printf(" %g", (double)((const float *)v->data)[i]);
            break;
        case OSV_DTYPE_FP64:
            printf(" %g", ((const double *)v->data)[i]);
            break;
        case OSV_DTYPE_INT64:
            printf(" %" PRId64, ((const int64_t *)v->data)[i]);
            break;
        case OSV_DTYPE_INT32:
            printf(" %" PRId32, ((const int32_t *)v->data)[i]);
            break;
        case OSV_DTYPE_UINT8:
        case OSV_DTYPE_BOOL:
            printf(" %u", ((const uint8_t *)v->data)[i]);
            break;
        default:
            return;
        }
    }
    if (v->count > n)
        printf(" ...");
}

static int write_output(osv_infer_t *inf, uint32_t k, const osv_tensor_view_t *v, const char *dir)
{
    char path[4096];
    osv_err_t err;
    void *data = v->data;
    int rc;
    snprintf(path, sizeof path, "%s/%s.npy", dir, v->name);
    if (v->dtype == OSV_DTYPE_BYTES) {
        if (!(data = osv_malloc(v->bytes ? v->bytes : 1)))
            return 1;
        if (osv_infer_output_bytes(inf, k, data, v->bytes, &err) != 0) {
            fprintf(stderr, "ortserve run: %s\n", err.msg);
            osv_free(data);
            return 1;
        }
    }
    rc = osv_npy_write(path, v->dtype, v->dims, v->rank, data, v->bytes, &err);
    if (data != v->data)
        osv_free(data);
    if (rc)
        fprintf(stderr, "ortserve run: %s\n", err.msg);
    else
        printf("wrote %s\n", path);
    return rc ? 1 : 0;
}

static int report(osv_infer_t *inf, const run_args_t *a)
{
    osv_err_t err;
    printf("run: %.3f ms (inputs %.3f ms), %" PRIu64 " bytes copied\n",
           (double)osv_infer_ns(inf, OSV_PHASE_COMPUTE_INFER) / 1e6,
           (double)osv_infer_ns(inf, OSV_PHASE_COMPUTE_INPUT) / 1e6, osv_infer_copied(inf));
    for (uint32_t k = 0; k < osv_infer_output_count(inf); k++) {
        osv_tensor_view_t v;
        char shape[128];
        if (osv_infer_output_view(inf, k, &v, &err) != 0) {
            fprintf(stderr, "ortserve run: %s\n", err.msg);
            return 1;
        }
        printf("output %-24s %-6s %-16s %-14s", v.name, osv_dtype_name(v.dtype),
               osv_shape_str(v.dims, (int32_t)v.rank, shape, sizeof shape), osv_copy_reason_name(v.binding));
        print_values(&v);
        putchar('\n');
        if (a->out_dir && write_output(inf, k, &v, a->out_dir) != 0)
            return 1;
    }
    if (!a->out_dir)
        fprintf(stderr, "ortserve run: outputs not written (--output-dir DIR writes each as DIR/<output>.npy)\n");
    return 0;
}

static int bind_inputs(osv_infer_t *inf, osv_model_t *m, const run_args_t *a, osv_npy_t *npy, osv_err_t *err)
{
    for (int i = 0; i < a->n_inputs; i++) {
        int idx = osv_model_find_input(m, a->names[i], strlen(a->names[i]));
        int rc;
        if (idx < 0)
            return osv_err_set(err, OSV_ENOTFOUND, "the model has no input '%s'", a->names[i]);
        if ((rc = osv_npy_open(a->files[i], &npy[i], err)) != 0 ||
            (rc = osv_infer_add_input(inf, (uint32_t)idx, npy[i].dtype, npy[i].dims, npy[i].rank,
                                      npy[i].bytes, err)) != 0 ||
            (rc = osv_infer_input_external(inf, (uint32_t)idx, npy[i].data, npy[i].bytes, err)) != 0)
            return rc;
    }
    return 0;
}

static int run_model(osv_model_t *m, const run_args_t *a)
{
    osv_npy_t npy[MAX_INPUTS] = {0};
    osv_pool_opts_t po = {0};
    osv_pool_t *pool = NULL;
    osv_infer_opts_t io = {.force_copy = a->force_copy};
    osv_infer_t *inf = NULL;
    osv_err_t err;
    size_t size = osv_infer_size(m);
    void *mem = aligned_alloc(16, (size + 15) & ~(size_t)15);
    int rc = 1;

    if (!mem || osv_pool_create(&po, &pool, &err) != 0) {
        fprintf(stderr, "ortserve run: %s\n", mem ? err.msg : "out of memory");
        free(mem);
        return 1;
    }
    io.pool = pool;
    if (osv_infer_init(mem, size, m, &io, &inf, &err) == 0 && bind_inputs(inf, m, a, npy, &err) == 0 &&
        osv_infer_prepare(inf, &err) == 0 && osv_infer_run(inf, &err) == 0)
        rc = report(inf, a);
    else
        fprintf(stderr, "ortserve run: %s\n", err.msg);
    if (inf)
        osv_infer_fini(inf);
    for (int i = 0; i < a->n_inputs; i++)
        osv_npy_close(&npy[i]);
    osv_pool_destroy(pool);
    free(mem);
    return rc;
}

int osv_cli_run(int argc, char **argv)
{
    run_args_t a;
    osv_env_t *env;
    osv_model_t *m;
    int rc = parse_args(argc, argv, &a);

    if (rc)
        return rc == 1 ? 0 : rc;
    if (a.out_dir && mkdir(a.out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "ortserve run: cannot create %s: %s\n", a.out_dir, strerror(errno));
        return 1;
    }
    if (osv_cli_env(a.ort, &env) != 0)
        return 1;
    if ((rc = osv_cli_load(env, a.model, &m)) == 0) {
        rc = run_model(m, &a);
        osv_model_release(m);
    }
    osv_env_destroy(env);
    return rc;
}
