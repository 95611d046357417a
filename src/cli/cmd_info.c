/* cmd_info.c — `ortserve info`: a model's inputs, outputs and metadata, as a table or JSON; plus the
 * environment/model loading helpers every subcommand shares. */
#include <dirent.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "opts.h"
#include "util/json.h"

int osv_cli_env(const char *ort_library, osv_env_t **env)
{
    osv_env_opts_t o;
    osv_err_t err;
    osv_env_opts_default(&o);
    o.ort_library = ort_library;
    if (osv_env_create(&o, env, &err) != 0) {
        fprintf(stderr, "ortserve: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* Highest <dir>/<number>/model.onnx, or <dir>/model.onnx as version 1. */
static int find_model_file(const char *dir, char *file, size_t cap, int64_t *version)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int64_t best = -1;
    snprintf(file, cap, "%s/model.onnx", dir);
    if (stat(file, &st) == 0 && S_ISREG(st.st_mode)) {
        *version = 1;
        return 0;
    }
    if (!(d = opendir(dir)))
        return -1;
    while ((e = readdir(d)) != NULL) {
        char *end, probe[PATH_MAX];
        long long v = strtoll(e->d_name, &end, 10);
        if (end == e->d_name || *end || v < 0 || v <= best)
            continue;
        snprintf(probe, sizeof probe, "%s/%s/model.onnx", dir, e->d_name);
        if (stat(probe, &st) == 0 && S_ISREG(st.st_mode)) {
            best = v;
            snprintf(file, cap, "%s", probe);
        }
    }
    closedir(d);
    *version = best;
    return best >= 0 ? 0 : -1;
}

int osv_cli_load(osv_env_t *env, const char *path, osv_model_t **out)
{
    char file[PATH_MAX], name[256], tmp[PATH_MAX];
    const char *config_dir = NULL;
    struct stat st;
    int64_t version = 1;
    osv_err_t err;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "ortserve: %s: no such file or directory\n", path);
        return 1;
    }
    snprintf(tmp, sizeof tmp, "%s", path);
    snprintf(name, sizeof name, "%s", basename(tmp));
    if (S_ISDIR(st.st_mode)) {
        if (find_model_file(path, file, sizeof file, &version) != 0) {
            fprintf(stderr, "ortserve: %s has no model.onnx or <version>/model.onnx\n", path);
            return 1;
        }
        config_dir = path;
    } else {
        snprintf(file, sizeof file, "%s", path);
        char *dot = strstr(name, ".onnx");
        if (dot)
            *dot = '\0';
    }
    if (osv_model_load(env, name, version, file, config_dir, NULL, out, &err) != 0) {
        fprintf(stderr, "ortserve: %s\n", err.msg);
        return 1;
    }
    return 0;
}

void osv_cli_print_dims(FILE *f, const osv_tensor_info_t *t)
{
    if (t->rank < 0) {
        fprintf(f, "[?]");
        return;
    }
    fputc('[', f);
    for (int32_t d = 0; d < t->rank; d++) {
        if (t->dims[d] >= 0)
            fprintf(f, "%s%" PRId64, d ? "," : "", t->dims[d]);
        else
            fprintf(f, "%s%s", d ? "," : "", t->sym[d][0] ? t->sym[d] : "-1");
    }
    fputc(']', f);
}

static const char *kind_name(const osv_tensor_info_t *t)
{
    static const char *const names[] = {"tensor", "sequence", "map", "optional", "other"};
    return names[t->kind];
}

static void print_table(const osv_model_t *m)
{
    const osv_model_meta_t *md = osv_model_meta(m);
    printf("model      %s (version %" PRId64 ")\npath       %s\n", osv_model_name(m), osv_model_version(m),
           osv_model_path(m));
    printf("producer   %s\ngraph      %s\nmodel ver  %" PRId64 "\n", md->producer, md->graph_name,
           md->version);
    if (*md->description)
        printf("desc       %s\n", md->description);
    for (uint32_t i = 0; i < md->n_custom; i++)
        printf("meta       %s = %s\n", md->custom_keys[i], md->custom_values[i]);
    printf("load       %.1f ms\n\n%-8s %-32s %-8s %s\n", osv_model_load_ms(m), "", "NAME", "TYPE", "SHAPE");
    for (uint32_t i = 0; i < osv_model_input_count(m) + osv_model_output_count(m); i++) {
        int in = i < osv_model_input_count(m);
        const osv_tensor_info_t *t =
            in ? osv_model_input(m, i) : osv_model_output(m, i - osv_model_input_count(m));
        printf("%-8s %-32s %-8s ", in ? "input" : "output", t->name,
               t->kind == OSV_VALUE_TENSOR ? osv_dtype_name(t->dtype) : kind_name(t));
        osv_cli_print_dims(stdout, t);
        if (t->n_labels)
            printf("  (%u labels)", t->n_labels);
        putchar('\n');
    }
}

static void json_tensor(osv_jw_t *w, const osv_tensor_info_t *t)
{
    osv_jw_obj_begin(w);
    osv_jw_key(w, "name", 4);
    osv_jw_str(w, t->name, strlen(t->name));
    osv_jw_key(w, "kind", 4);
    osv_jw_str(w, kind_name(t), strlen(kind_name(t)));
    osv_jw_key(w, "datatype", 8);
    osv_jw_str(w, osv_dtype_name(t->dtype), strlen(osv_dtype_name(t->dtype)));
    osv_jw_key(w, "shape", 5);
    osv_jw_arr_begin(w);
    for (int32_t d = 0; d < t->rank; d++)
        osv_jw_i64(w, t->dims[d]);
    osv_jw_arr_end(w);
    osv_jw_key(w, "dim_names", 9);
    osv_jw_arr_begin(w);
    for (int32_t d = 0; d < t->rank; d++)
        osv_jw_str(w, t->sym[d], strlen(t->sym[d]));
    osv_jw_arr_end(w);
    osv_jw_obj_end(w);
}

#define JW_STR_FIELD(w, key, val)                                                                            \
    do {                                                                                                     \
        osv_jw_key(w, key, strlen(key));                                                                     \
        osv_jw_str(w, val, strlen(val));                                                                     \
    } while (0)

static int print_json(const osv_model_t *m)
{
    const osv_model_meta_t *md = osv_model_meta(m);
    size_t cap = 1 << 20;
    char *buf = osv_malloc(cap);
    osv_jw_t w;
    if (!buf)
        return 1;
    osv_jw_init(&w, buf, cap);
    osv_jw_obj_begin(&w);
    JW_STR_FIELD(&w, "name", osv_model_name(m));
    osv_jw_key(&w, "version", 7);
    osv_jw_i64(&w, osv_model_version(m));
    JW_STR_FIELD(&w, "path", osv_model_path(m));
    osv_jw_key(&w, "metadata", 8);
    osv_jw_obj_begin(&w);
    JW_STR_FIELD(&w, "producer", md->producer);
    JW_STR_FIELD(&w, "graph_name", md->graph_name);
    JW_STR_FIELD(&w, "domain", md->domain);
    JW_STR_FIELD(&w, "description", md->description);
    JW_STR_FIELD(&w, "graph_description", md->graph_description);
    osv_jw_key(&w, "version", 7);
    osv_jw_i64(&w, md->version);
    osv_jw_key(&w, "custom", 6);
    osv_jw_obj_begin(&w);
    for (uint32_t i = 0; i < md->n_custom; i++)
        JW_STR_FIELD(&w, md->custom_keys[i], md->custom_values[i]);
    osv_jw_obj_end(&w);
    osv_jw_obj_end(&w);
    for (int io = 0; io < 2; io++) {
        uint32_t n = io ? osv_model_output_count(m) : osv_model_input_count(m);
        osv_jw_key(&w, io ? "outputs" : "inputs", io ? 7 : 6);
        osv_jw_arr_begin(&w);
        for (uint32_t i = 0; i < n; i++)
            json_tensor(&w, io ? osv_model_output(m, i) : osv_model_input(m, i));
        osv_jw_arr_end(&w);
    }
    osv_jw_obj_end(&w);
    if (osv_jw_error(&w) == 0)
        printf("%.*s\n", (int)osv_jw_len(&w), buf);
    osv_free(buf);
    return osv_jw_error(&w) ? 1 : 0;
}

static void info_usage(FILE *f)
{
    fprintf(f, "usage: ortserve info <model.onnx|model dir> [--json] [--ort-library PATH]\n"
               "Loads the model and prints every input and output (name, datatype, shape with -1 or the\n"
               "symbolic name for dynamic dims) and the model's metadata.\n");
}

typedef struct info_args {
    const char *ort;
    bool json;
} info_args_t;

#define OSV_OPT_STRUCT info_args_t
static const osv_opt_t info_opts[] = {
    OSV_OPT_SWITCH("json", json, "print one JSON object"),
    OSV_OPT_STRING("ort-library", ort, "PATH", "libonnxruntime.so.1 to load"),
};
#undef OSV_OPT_STRUCT

static const osv_opt_short_t info_shorts[] = {{'j', "json"}};

static const osv_opt_cmd_t info_cmd = {.name = "info",
                                       .opts = info_opts,
                                       .n_opts = sizeof info_opts / sizeof *info_opts,
                                       .shorts = info_shorts,
                                       .n_shorts = sizeof info_shorts / sizeof *info_shorts,
                                       .max_args = 1};

int osv_cli_info(int argc, char **argv)
{
    info_args_t a = {0};
    int n_args, rc;
    osv_env_t *env;
    osv_model_t *m;

    if ((rc = osv_opt_parse(&info_cmd, &a, argc, argv, &n_args)) == OSV_OPT_HELP) {
        info_usage(stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (n_args != 1) {
        fprintf(stderr, "ortserve info: a model (a .onnx file or a model directory) is required\n"
                        "Run 'ortserve info --help' for every option.\n");
        return 2;
    }
    if (osv_cli_env(a.ort, &env) != 0)
        return 1;
    if ((rc = osv_cli_load(env, argv[1], &m)) == 0) {
        if (a.json)
            rc = print_json(m);
        else
            print_table(m);
        osv_model_release(m);
    }
    osv_env_destroy(env);
    return rc;
}
