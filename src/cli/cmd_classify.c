/* cmd_classify.c — `ortserve classify`: classify image files offline with a model of a repository,
 * through the same code the server's classify endpoint runs (osv_img_classify): the model's
 * "image"/"postprocess" config, one batch when its batch dim is dynamic, a top-k table or JSON.
 *
 * Image files are memory-mapped and decoded straight from the mapping. A file that fails (corrupt,
 * unsupported, too large) is reported and the others are still classified; the exit status is 1
 * when any failed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "opts.h"
#include "ortserve/imaging.h"
#include "util/json.h"

typedef struct cls_args {
    const char *repo, *model, *ort;
    int64_t version;
    uint32_t top_k;
    bool json;
    osv_img_limits_t limits;
    uint64_t decode_budget; /* 0: unlimited (one image at a time, bounded by max_pixels) */
    char **images;
    int n_images;
} cls_args_t;

#define OSV_OPT_STRUCT cls_args_t
static const osv_opt_t cls_opts[] = {
    OSV_OPT_STRING("model-repository", repo, "DIR", "the model repository"),
    OSV_OPT_STRING("model", model, "MODEL", "the model to classify with"),
    OSV_OPT_COUNT("version", version, 0, INT64_MAX, NULL, "V", "model version (default: the highest)"),
    OSV_OPT_COUNT("top-k", top_k, 1, 100000, NULL, "K", "classes per image"),
    OSV_OPT_SWITCH("json", json, "print JSON"),
    OSV_OPT_COUNT("max-pixels", limits.max_pixels, 1, 1ull << 40, NULL, "N", "largest image"),
    OSV_OPT_BYTES("max-bytes", limits.max_bytes, 1, OSV_OPT_TiB, NULL, "largest encoded image"),
    OSV_OPT_COUNT("max-images", limits.max_images, 1, 1u << 20, NULL, "N", "images per batch"),
    OSV_OPT_BYTES("decode-budget", decode_budget, 1, OSV_OPT_TiB, NULL, "memory decoding one image may take"),
    OSV_OPT_STRING("ort-library", ort, "PATH", "libonnxruntime.so.1 to load"),
};
#undef OSV_OPT_STRUCT

static const osv_opt_short_t cls_shorts[] = {{'r', "model-repository"}, {'m', "model"}, {'k', "top-k"}};

static const osv_opt_cmd_t cls_cmd = {.name = "classify",
                                      .opts = cls_opts,
                                      .n_opts = sizeof cls_opts / sizeof *cls_opts,
                                      .shorts = cls_shorts,
                                      .n_shorts = sizeof cls_shorts / sizeof *cls_shorts,
                                      .max_args = -1};

static void classify_usage(FILE *f)
{
    fprintf(f,
            "usage: ortserve classify --model-repository DIR -m MODEL IMAGE... [--version V] [--top-k K]\n"
            "                         [--json] [--max-pixels N] [--max-bytes SIZE] [--max-images N]\n"
            "                         [--decode-budget SIZE] [--ort-library PATH]\n"
            "Classifies JPEG/PNG files with MODEL of the repository DIR, which needs an \"image\" section\n"
            "in its config.json (and optionally \"postprocess\"): the same decoding, resizing and\n"
            "normalization as POST /v2/models/MODEL/classify. Prints a top-k table per image, or with\n"
            "--json a JSON array of {\"image\": FILE, \"classes\": [{\"label\", \"index\", \"score\"}...]}.\n"
            "--top-k defaults to the model's postprocess.top_k (5). The limits (defaults 40000000 pixels,\n"
            "20M bytes, 64 images per batch) apply unless the model's config.json sets its own.\n"
            "--decode-budget caps the memory decoding one image may take (as the server's\n"
            "--image-decode-budget); an image that needs more is reported and skipped. Default: no cap\n"
            "(images are decoded one at a time, each bounded by the pixel limit).\n");
    fprintf(f, "%s\n", OSV_OPT_NUMBER_HELP);
}

static int parse_args(int argc, char **argv, cls_args_t *a)
{
    int n_args, rc;
    memset(a, 0, sizeof *a);
    a->version = -1;
    osv_img_limits_default(&a->limits);
    if ((rc = osv_opt_parse(&cls_cmd, a, argc, argv, &n_args)) == OSV_OPT_HELP) {
        classify_usage(stdout);
        return 1;
    }
    if (rc)
        return rc;
    if (!a->repo || !a->model || n_args == 0) {
        fprintf(stderr,
                "ortserve classify: --model-repository, -m MODEL and at least one IMAGE are required\n"
                "Run 'ortserve classify --help' for every option.\n");
        return 2;
    }
    a->images = argv + 1;
    a->n_images = n_args;
    return 0;
}

/* ---- files ------------------------------------------------------------------------------------------- */

typedef struct img_file {
    void *map;
    size_t len;
    char error[OSV_ERR_MSG_MAX]; /* "" = fine so far */
    osv_img_class_t *res;
    uint32_t k;
} img_file_t;

static void map_file(const char *path, img_file_t *f)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(f->error, sizeof f->error, "cannot open: %s", strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(f->error, sizeof f->error, "not a regular file");
    } else if (st.st_size > 0) {
        f->len = (size_t)st.st_size;
        if ((f->map = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
            f->map = NULL;
            snprintf(f->error, sizeof f->error, "cannot map: %s", strerror(errno));
        }
    }
    if (fd >= 0)
        close(fd);
}

/* ---- classifying ------------------------------------------------------------------------------------- */

typedef struct run {
    osv_img_ctx_t *ctx;
    osv_model_t *m;
    osv_img_classify_opts_t o;
    uint32_t k;
} run_t;

/* Classifies files[idx[0..n)] in one call; on an image's failure records its error and retries the
 * rest, so every good image gets results. */
static void classify_group(run_t *r, img_file_t *files, uint32_t *idx, uint32_t n, osv_img_blob_t *blobs,
                           osv_img_class_t *out)
{
    while (n > 0) {
        uint32_t k_out = 0, failed = UINT32_MAX;
        osv_err_t err;
        for (uint32_t i = 0; i < n; i++)
            blobs[i] = (osv_img_blob_t){files[idx[i]].map, files[idx[i]].len};
        if (osv_img_classify(r->ctx, r->m, blobs, n, &r->o, out, &k_out, &failed, &err) == 0) {
            for (uint32_t i = 0; i < n; i++) {
                memcpy(files[idx[i]].res, out + (size_t)i * r->k, k_out * sizeof *out);
                files[idx[i]].k = k_out;
            }
            return;
        }
        if (failed >= n) { /* not one image's fault: every image of the group gets the error */
            for (uint32_t i = 0; i < n; i++)
                snprintf(files[idx[i]].error, sizeof files[idx[i]].error, "%s", err.msg);
            return;
        }
        snprintf(files[idx[failed]].error, sizeof files[idx[failed]].error, "%s", err.msg);
        memmove(idx + failed, idx + failed + 1, (n - failed - 1) * sizeof *idx);
        n--;
    }
}

static void print_table(const cls_args_t *a, const img_file_t *files)
{
    for (int i = 0; i < a->n_images; i++) {
        const img_file_t *f = &files[i];
        printf("%s%s\n", i ? "\n" : "", a->images[i]);
        if (f->error[0]) {
            printf("  error: %s\n", f->error);
            continue;
        }
        printf("  %4s  %8s  %-12s %s\n", "rank", "index", "score", "label");
        for (uint32_t j = 0; j < f->k; j++)
            printf("  %4u  %8u  %-12.6g %s\n", j + 1, f->res[j].index, (double)f->res[j].score,
                   f->res[j].label ? f->res[j].label : "-");
    }
}

static int print_json(const cls_args_t *a, const img_file_t *files)
{
    size_t cap = 64;
    for (int i = 0; i < a->n_images; i++) {
        cap += osv_jw_str_max(strlen(a->images[i])) + osv_jw_str_max(strlen(files[i].error)) + 64;
        for (uint32_t j = 0; j < files[i].k; j++)
            cap += 96 + (files[i].res[j].label ? osv_jw_str_max(strlen(files[i].res[j].label)) : 4);
    }
    char *buf = malloc(cap);
    osv_jw_t w;
    if (!buf)
        return 1;
    osv_jw_init(&w, buf, cap);
    osv_jw_arr_begin(&w);
    for (int i = 0; i < a->n_images; i++) {
        const img_file_t *f = &files[i];
        osv_jw_obj_begin(&w);
        osv_jw_key(&w, "image", 5);
        osv_jw_str(&w, a->images[i], strlen(a->images[i]));
        if (f->error[0]) {
            osv_jw_key(&w, "error", 5);
            osv_jw_str(&w, f->error, strlen(f->error));
        } else {
            osv_jw_key(&w, "classes", 7);
            osv_jw_arr_begin(&w);
            for (uint32_t j = 0; j < f->k; j++) {
                osv_jw_obj_begin(&w);
                osv_jw_key(&w, "label", 5);
                if (f->res[j].label)
                    osv_jw_str(&w, f->res[j].label, strlen(f->res[j].label));
                else
                    osv_jw_null(&w);
                osv_jw_key(&w, "index", 5);
                osv_jw_u64(&w, f->res[j].index);
                osv_jw_key(&w, "score", 5);
                osv_jw_f32(&w, f->res[j].score);
                osv_jw_obj_end(&w);
            }
            osv_jw_arr_end(&w);
        }
        osv_jw_obj_end(&w);
    }
    osv_jw_arr_end(&w);
    if (osv_jw_error(&w) == 0)
        printf("%.*s\n", (int)osv_jw_len(&w), buf);
    free(buf);
    return osv_jw_error(&w) ? 1 : 0;
}

static int classify_all(const cls_args_t *a, osv_model_t *m)
{
    const osv_img_model_t *im = osv_img_model(m);
    osv_pool_opts_t po = {0};
    osv_pool_t *pool = NULL;
    osv_img_budget_t *budget = NULL;
    osv_err_t err;
    run_t r = {.m = m};
    int rc = 1;
    uint32_t n = (uint32_t)a->n_images, group, failures = 0;
    img_file_t *files = calloc(n, sizeof *files);
    uint32_t *idx = calloc(n, sizeof *idx);
    osv_img_blob_t *blobs = calloc(n, sizeof *blobs);
    osv_img_class_t *res, *out;

    if (!im) {
        fprintf(
            stderr,
            "ortserve classify: model '%s' has no \"image\" section in its config.json (see docs/DESIGN.md, "
            "\"Imaging\")\n",
            osv_model_name(m));
        goto done;
    }
    r.k = a->top_k ? a->top_k : im->post.top_k;
    group = n < im->spec.limits.max_images ? n : im->spec.limits.max_images;
    res = calloc((size_t)n * r.k, sizeof *res);
    out = calloc((size_t)group * r.k, sizeof *out);
    if (!files || !idx || !blobs || !res || !out || osv_pool_create(&po, &pool, &err) != 0 ||
        osv_img_ctx_create(&r.ctx, &err) != 0 ||
        (a->decode_budget && osv_img_budget_create(a->decode_budget, &budget, &err) != 0)) {
        fprintf(stderr, "ortserve classify: %s\n",
                files && idx && blobs && res && out ? err.msg : "out of memory");
        goto done2;
    }
    osv_img_ctx_set_budget(r.ctx, budget);
    r.o = (osv_img_classify_opts_t){.pool = pool, .top_k = r.k};
    for (uint32_t i = 0; i < n; i++) {
        files[i].res = res + (size_t)i * r.k;
        map_file(a->images[i], &files[i]);
    }
    /* Readable files, in groups of at most max_images. */
    for (uint32_t i = 0; i < n;) {
        uint32_t cnt = 0;
        for (; i < n && cnt < group; i++)
            if (!files[i].error[0])
                idx[cnt++] = i;
        if (cnt)
            classify_group(&r, files, idx, cnt, blobs, out);
    }
    for (uint32_t i = 0; i < n; i++)
        failures += files[i].error[0] != 0;
    rc = a->json ? print_json(a, files) : (print_table(a, files), 0);
    rc = rc ? rc : failures ? 1 : 0;
done2:
    for (uint32_t i = 0; files && i < n; i++)
        if (files[i].map)
            munmap(files[i].map, files[i].len);
    osv_img_ctx_destroy(r.ctx);
    osv_img_budget_destroy(budget);
    osv_pool_destroy(pool);
    free(res);
    free(out);
done:
    free(files);
    free(idx);
    free(blobs);
    return rc;
}

/* The repository's load hook: the imaging config, with the command line's limits as defaults. */
static int load_hook(void *ud, osv_model_t *m, osv_err_t *err)
{
    return osv_img_model_attach(m, ud, err);
}

int osv_cli_classify(int argc, char **argv)
{
    cls_args_t a;
    osv_env_t *env;
    osv_repo_t *repo = NULL;
    osv_model_t *m = NULL;
    osv_err_t err;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (osv_cli_env(a.ort, &env) != 0)
        return 1;
    osv_repo_opts_t ro = {
        .env = env, .path = a.repo, .load_all = false, .hook = load_hook, .hook_ud = &a.limits};
    osv_limits_default(&ro.limits);
    if ((rc = osv_repo_open(&ro, &repo, &err)) == 0 && (rc = osv_repo_load(repo, a.model, &err)) == 0)
        rc = osv_repo_acquire(repo, a.model, strlen(a.model), a.version, &m, &err);
    if (rc) {
        fprintf(stderr, "ortserve classify: %s\n", err.msg);
        rc = 1;
    } else {
        rc = classify_all(&a, m);
        osv_model_release(m);
    }
    osv_repo_close(repo);
    osv_env_destroy(env);
    return rc;
}
