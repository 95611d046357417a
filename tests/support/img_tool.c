/* img_tool.c — test helper: runs ortserve's image preprocessing on one file so the Python tests can
 * compare the tensor with a PIL + numpy reference.
 *
 *   img_tool SPEC_JSON IMAGE OUT    writes the tensor (raw, native byte order) to OUT
 *   img_tool --probe IMAGE          header only
 *   img_tool --cost SPEC_JSON IMAGE the decode memory bound (osv_img_decode_cost) and, measured, the
 *                                   growth of peak RSS while the image is preprocessed (VmHWM after
 *                                   /proc/self/clear_refs reset it, minus VmRSS before)
 *
 * Prints one JSON object: the osv_img_info_t fields, or {"error": ..., "code": ...} (exit 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ortserve/imaging.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static int fail(int rc, const osv_err_t *err)
{
    printf("{\"error\": \"");
    for (const char *p = err->msg; *p; p++)
        printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
    printf("\", \"code\": \"%s\"}\n", osv_err_name(rc));
    return 1;
}

static void print_info(const osv_img_info_t *i, uint64_t bytes)
{
    printf("{\"format\": \"%s\", \"width\": %u, \"height\": %u, \"components\": %u, \"orientation\": %u, "
           "\"decoded_width\": %u, \"decoded_height\": %u, \"resized_width\": %u, \"resized_height\": %u, "
           "\"bytes\": %llu}\n",
           osv_img_format_name(i->format), i->width, i->height, i->components, i->orientation,
           i->decoded_width, i->decoded_height, i->resized_width, i->resized_height,
           (unsigned long long)bytes);
}

/* A field of /proc/self/status in bytes (kB there), 0 when unreadable. */
static unsigned long long status_bytes(const char *key)
{
    char line[256];
    unsigned long long v = 0;
    size_t kl = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':')
            v = strtoull(line + kl + 1, NULL, 10) * 1024;
    if (f)
        fclose(f);
    return v;
}

static int cost(const char *spec_json, const char *path)
{
    osv_img_ctx_t *ctx = NULL;
    osv_img_spec_t spec;
    osv_img_cost_t c;
    osv_err_t err;
    size_t len = 0;
    char *img;
    int rc;
    if ((rc = osv_img_spec_parse(spec_json, strlen(spec_json), NULL, &spec, &err)) != 0)
        return fail(rc, &err);
    if (!(img = slurp(path, &len)))
        return 2;
    uint64_t bytes = osv_img_tensor_bytes(&spec);
    void *dst = malloc(bytes);
    if (!dst || osv_img_ctx_create(&ctx, &err) != 0 || (rc = osv_img_decode_cost(ctx, &spec, img, len, &c, &err)))
        return rc ? fail(rc, &err) : 2;
    memset(dst, 0, bytes); /* the tensor is the caller's memory (a pool slot): resident before */
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f); /* resets VmHWM to VmRSS */
        fclose(f);
    }
    unsigned long long before = status_bytes("VmRSS");
    rc = osv_img_preprocess(ctx, &spec, img, len, dst, bytes, NULL, &err);
    unsigned long long peak = status_bytes("VmHWM");
    osv_img_ctx_destroy(ctx);
    free(dst);
    free(img);
    if (rc)
        return fail(rc, &err);
    printf("{\"codec\": %llu, \"pixels\": %llu, \"resample\": %llu, \"total\": %llu, \"peak_rss_growth\": %llu}\n",
           (unsigned long long)c.codec, (unsigned long long)c.pixels, (unsigned long long)c.resample,
           (unsigned long long)c.total, peak > before ? peak - before : 0);
    return 0;
}

int main(int argc, char **argv)
{
    osv_img_ctx_t *ctx;
    osv_img_info_t info;
    osv_img_spec_t spec;
    osv_err_t err;
    size_t len = 0;
    char *img;
    int rc;
    if (argc == 3 && strcmp(argv[1], "--probe") == 0) {
        if (!(img = slurp(argv[2], &len)))
            return 2;
        if ((rc = osv_img_ctx_create(&ctx, &err)) == 0 &&
            (rc = osv_img_probe(ctx, img, len, NULL, &info, &err)) == 0)
            print_info(&info, 0);
        osv_img_ctx_destroy(ctx);
        free(img);
        return rc ? fail(rc, &err) : 0;
    }
    if (argc == 4 && strcmp(argv[1], "--cost") == 0)
        return cost(argv[2], argv[3]);
    if (argc != 4) {
        fprintf(stderr, "usage: img_tool SPEC_JSON IMAGE OUT | img_tool --probe IMAGE | img_tool --cost SPEC_JSON "
                        "IMAGE\n");
        return 2;
    }
    if ((rc = osv_img_spec_parse(argv[1], strlen(argv[1]), NULL, &spec, &err)) != 0)
        return fail(rc, &err);
    if (!(img = slurp(argv[2], &len)))
        return 2;
    uint64_t bytes = osv_img_tensor_bytes(&spec);
    void *dst = malloc(bytes);
    if (!dst || osv_img_ctx_create(&ctx, &err) != 0)
        return 2;
    rc = osv_img_preprocess(ctx, &spec, img, len, dst, bytes, &info, &err);
    if (rc == 0) {
        FILE *f = fopen(argv[3], "wb");
        if (!f || fwrite(dst, 1, bytes, f) != bytes || fclose(f) != 0)
            return 2;
        print_info(&info, bytes);
    }
    osv_img_ctx_destroy(ctx);
    free(dst);
    free(img);
    return rc ? fail(rc, &err) : 0;
}
