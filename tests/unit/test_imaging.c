/* test_imaging.c — src/imaging: format sniffing, the "image"/"postprocess" config (parsing, defaults,
 * validation against models), top-k and softmax, preprocessing properties on images encoded in the
 * test (every resize mode, layout, colour order and element type on constant images, where the exact
 * answer is known), limits and error codes, the BYTES entry point, contexts (per thread, allocation-
 * free steady state), osv_img_classify's batching, and the decode memory budget (the bound computed
 * from headers, checked against the peak RSS of real decodes; reservation and refusal). Pixel-exact comparisons against PIL live in
 * tests/e2e/test_imaging_preprocess.py. */
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <spng.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "ortserve/imaging.h"
#include "testutil.h"
#include "util/sanitize.h"

/* ---- encoders for test images ------------------------------------------------------------------------ */

typedef struct blob {
    uint8_t *p;
    size_t n;
} blob_t;

static blob_t jpeg_const(int w, int h, uint8_t r, uint8_t g, uint8_t b, int samp)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    unsigned char *out = NULL;
    unsigned long len = 0;
    for (int i = 0; i < w * h; i++)
        px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = b;
    tjhandle t = tjInitCompress();
    assert_int_equal(tjCompress2(t, px, w, 0, h, TJPF_RGB, &out, &len, samp, 100, 0), 0);
    tjDestroy(t);
    free(px);
    blob_t bl = {malloc(len), len};
    memcpy(bl.p, out, len);
    tjFree(out);
    return bl;
}

/* 8-bit PNG of colour type ct (0 gray, 2 RGB, 6 RGBA) from pixels px (w·h·channels bytes). */
static blob_t png_of(int w, int h, int ct, const uint8_t *px)
{
    int ch = ct == 0 ? 1 : ct == 2 ? 3 : 4, e = 0;
    spng_ctx *s = spng_ctx_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ihdr = {
        .width = (uint32_t)w, .height = (uint32_t)h, .bit_depth = 8, .color_type = (uint8_t)ct};
    size_t len = 0;
    spng_set_option(s, SPNG_ENCODE_TO_BUFFER, 1);
    spng_set_ihdr(s, &ihdr);
    assert_int_equal(spng_encode_image(s, px, (size_t)w * h * ch, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    uint8_t *buf = spng_get_png_buffer(s, &len, &e);
    assert_non_null(buf);
    spng_ctx_free(s);
    return (blob_t){buf, len};
}

static blob_t png_const(int w, int h, uint8_t r, uint8_t g, uint8_t b)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++)
        px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = b;
    blob_t bl = png_of(w, h, 2, px);
    free(px);
    return bl;
}

static osv_img_spec_t spec_of(const char *json)
{
    osv_img_spec_t s;
    osv_err_t err;
    OSV_ASSERT_OK(osv_img_spec_parse(json, strlen(json), NULL, &s, &err), &err);
    return s;
}

static float elem(const osv_img_spec_t *s, const void *t, uint32_t c, uint32_t y, uint32_t x)
{
    size_t i = s->layout == OSV_IMG_NHWC ? ((size_t)y * s->width + x) * s->channels + c
                                         : ((size_t)c * s->height + y) * s->width + x;
    switch (s->dtype) {
    case OSV_DTYPE_UINT8:
        return ((const uint8_t *)t)[i];
    case OSV_DTYPE_FP16: {
        uint16_t h = ((const uint16_t *)t)[i];
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 0x400), e - 25);
        return (h & 0x8000) ? -v : v;
    }
    default:
        return ((const float *)t)[i];
    }
}

/* ---- sniffing --------------------------------------------------------------------------------------------
 */

static void test_sniff(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t n;
        osv_img_format_t f;
    } cases[] = {
        {"\xff\xd8\xff\xe0", 4, OSV_IMG_JPEG},
        {"\x89PNG\r\n\x1a\n", 8, OSV_IMG_PNG},
        {"GIF89a", 6, OSV_IMG_GIF},
        {"GIF87a", 6, OSV_IMG_GIF},
        {"BM\x36\0\0\0\0\0\0\0\x36\0\0\0", 14, OSV_IMG_BMP},
        {"RIFF\0\0\0\0WEBPVP8 ", 16, OSV_IMG_WEBP},
        {"II*\0", 4, OSV_IMG_TIFF},
        {"MM\0*", 4, OSV_IMG_TIFF},
        {"\0\0\0\x18"
         "ftypavif",
         12, OSV_IMG_AVIF},
        {"\0\0\0\x18"
         "ftypheic",
         12, OSV_IMG_HEIF},
        {"\0\0\1\0", 4, OSV_IMG_ICO},
        {"\xff\xd8", 2, OSV_IMG_UNKNOWN},
        {"\x89PNG", 4, OSV_IMG_UNKNOWN},
        {"{\"a\":1}", 7, OSV_IMG_UNKNOWN},
        {"", 0, OSV_IMG_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_int_equal(osv_img_sniff(cases[i].bytes, cases[i].n), cases[i].f);
    assert_string_equal(osv_img_format_name(OSV_IMG_PNG), "PNG");
    assert_string_equal(osv_img_format_name((osv_img_format_t)99), "unknown");
    assert_int_equal(osv_img_sniff(NULL, 10), OSV_IMG_UNKNOWN);
}

/* ---- config ----------------------------------------------------------------------------------------------
 */

static void expect_spec_error(const char *json, const char *needle)
{
    osv_img_spec_t s;
    osv_err_t err;
    int rc = osv_img_spec_parse(json, strlen(json), NULL, &s, &err);
    assert_int_equal(rc, OSV_EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("'%s': message '%s' lacks '%s'", json, err.msg, needle);
}

static void test_spec_parse(void **state)
{
    (void)state;
    osv_img_spec_t s = spec_of("{\"height\":48,\"width\":192}");
    assert_int_equal(s.channels, 3);
    assert_int_equal(s.resize, OSV_IMG_RESIZE_STRETCH);
    assert_int_equal(s.dtype, OSV_DTYPE_FP32);
    assert_true(fabsf(s.scale - 1.0f / 255) < 1e-9f);
    assert_true(s.mean[2] == 0 && s.std[1] == 1 && s.pad[0] == 0 && s.pad_center && s.jpeg_dct_scale);
    assert_int_equal(s.limits.max_pixels, OSV_IMG_DEFAULT_MAX_PIXELS);
    s = spec_of("{\"height\":224,\"width\":200,\"resize\":\"crop\",\"dtype\":\"UINT8\",\"color\":\"BGR\","
                "\"layout\":\"NHWC\",\"mean\":[1,2,3],\"std\":2,\"pad_value\":[4,5,6],\"filter\":\"area\","
                "\"max_pixels\":99,\"max_bytes\":77,\"max_images\":3,\"jpeg_dct_scaling\":false,"
                "\"pad_position\":\"top_left\"}");
    assert_int_equal(s.resize_short, 224); /* default: the crop's larger side */
    assert_true(s.scale == 1.0f && s.mean[1] == 2 && s.std[2] == 2 && s.pad[2] == 6);
    assert_int_equal(s.color, OSV_IMG_BGR);
    assert_int_equal(s.layout, OSV_IMG_NHWC);
    assert_int_equal(s.filter, OSV_IMG_FILTER_AREA);
    assert_false(s.jpeg_dct_scale || s.pad_center);
    assert_true(s.limits.max_pixels == 99 && s.limits.max_bytes == 77 && s.limits.max_images == 3);
    s = spec_of("{\"height\":1,\"width\":1,\"color\":\"GRAY\",\"mean\":[0.5]}");
    assert_int_equal(s.channels, 1);
    assert_int_equal(osv_img_tensor_bytes(&s), 4);
    int64_t dims[4];
    s = spec_of("{\"height\":48,\"width\":192,\"layout\":\"NHWC\",\"dtype\":\"FP16\"}");
    osv_img_tensor_dims(&s, 5, dims);
    assert_true(dims[0] == 5 && dims[1] == 48 && dims[2] == 192 && dims[3] == 3);
    assert_int_equal(osv_img_tensor_bytes(&s), 48 * 192 * 3 * 2);

    expect_spec_error("{\"width\":10}", "\"height\" and \"width\" are required");
    expect_spec_error("{\"height\":10,\"width\":10,\"heigth\":3}", "image.heigth is not a known key");
    expect_spec_error("{\"height\":0,\"width\":10}", "image.height must be an integer in [1, 16384]");
    expect_spec_error("{\"height\":10,\"width\":10,\"resize\":\"zoom\"}",
                      "must be one of \"stretch\", \"pad\", \"crop\", \"paddle_ocr\"");
    expect_spec_error("{\"height\":10,\"width\":10,\"std\":[1,0,1]}", "1e-6 to 1e6");
    expect_spec_error("{\"height\":10,\"width\":10,\"std\":2e-95}", "1e-6 to 1e6"); /* 0 as a float */
    expect_spec_error("{\"height\":10,\"width\":10,\"scale\":3e38}", "1e-6 to 1e6");
    expect_spec_error("{\"height\":10,\"width\":10,\"mean\":[1,2]}", "array of 1 or 3 numbers");
    expect_spec_error("{\"height\":10,\"width\":10,\"scale\":-1}", "1e-6 to 1e6");
    expect_spec_error("{\"height\":10,\"width\":10,\"color\":\"GRAY\",\"mean\":[1,2,3]}", "1 channel");
    expect_spec_error("{\"height\":10,\"width\":10,\"resize_short\":12}", "applies to resize \"crop\" only");
    expect_spec_error("{\"height\":10,\"width\":20,\"resize\":\"crop\",\"resize_short\":12}", "at least");
    expect_spec_error("{\"height\":10,\"width\":10,\"jpeg_dct_scaling\":1}", "true or false");
    expect_spec_error("{\"height\":10,\"width\":10,\"input\":\"x\"}", "needs a model");
    expect_spec_error("[1]", "must be an object");
    expect_spec_error("{\"height\":", "'image'");
}

/* A model directory with config.json `cfg` over mobilenetv2.onnx ([N,3,224,224] -> probs [N,1000]). */
static int load_with_config(const char *cfg, osv_model_t **m, osv_err_t *err)
{
    char dir[256], model[512], labels[512], path[600];
    osv_test_tmpdir(dir, sizeof dir);
    osv_test_model("mobilenetv2.onnx", model, sizeof model);
    osv_test_model("mobilenetv2.labels.txt", labels, sizeof labels);
    osv_test_write_file(dir, "config.json", cfg);
    osv_test_copy_file(labels, dir, "labels.txt");
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    osv_test_copy_file(model, dir, "model.onnx");
    int rc = osv_model_load(osv_test_env(), "mnv2", 1, path, dir, NULL, m, err);
    if (rc == 0 && (rc = osv_img_model_attach(*m, NULL, err)) != 0) {
        osv_model_release(*m);
        *m = NULL;
    }
    osv_test_rmtree(dir);
    return rc;
}

static void expect_attach_error(const char *cfg, const char *needle)
{
    osv_model_t *m = NULL;
    osv_err_t err;
    int rc = load_with_config(cfg, &m, &err);
    assert_int_not_equal(rc, 0);
    if (!strstr(err.msg, needle))
        fail_msg("config %s: message '%s' lacks '%s'", cfg, err.msg, needle);
}

static void test_model_attach(void **state)
{
    (void)state;
    osv_model_t *m = NULL;
    osv_err_t err;
    OSV_ASSERT_OK(
        load_with_config("{\"labels\":\"labels.txt\",\"image\":{\"resize\":\"crop\",\"resize_short\":256},"
                         "\"postprocess\":{\"softmax\":true,\"top_k\":3}}",
                         &m, &err),
        &err);
    const osv_img_model_t *im = osv_img_model(m);
    assert_non_null(im);
    assert_true(im->spec.height == 224 && im->spec.width == 224 && im->spec.channels == 3);
    assert_int_equal(im->spec.layout, OSV_IMG_NCHW);
    assert_int_equal(im->spec.dtype, OSV_DTYPE_FP32);
    assert_int_equal(im->batch, -1);
    assert_int_equal(im->classes, 1000);
    assert_true(im->post.softmax && im->post.top_k == 3 && im->post.output == 0 && im->input == 0);
    osv_model_release(m);
    /* no image section: nothing attached */
    OSV_ASSERT_OK(load_with_config("{\"labels\":\"labels.txt\"}", &m, &err), &err);
    assert_null(osv_img_model(m));
    osv_model_release(m);

    expect_attach_error("{\"image\":{\"color\":\"GRAY\"}}",
                        "has 3 channels at dim 1 (NCHW) but color GRAY has 1");
    expect_attach_error("{\"image\":{\"height\":100}}", "image.height is 100 but input 'input' has 224");
    expect_attach_error("{\"image\":{\"dtype\":\"UINT8\"}}",
                        "image.dtype is UINT8 but input 'input' is FP32");
    expect_attach_error("{\"image\":{\"input\":\"nope\"}}", "image.input 'nope' is not an input");
    expect_attach_error("{\"image\":{\"layout\":\"NHWC\"}}", "channels at dim 3");
    expect_attach_error("{\"image\":{},\"postprocess\":{\"output\":\"x\"}}", "postprocess.output 'x'");
    expect_attach_error("{\"image\":{},\"postprocess\":{\"top_k\":0}}",
                        "postprocess.top_k must be an integer");
    expect_attach_error("{\"image\":{},\"postprocess\":{\"argmax\":true}}",
                        "postprocess.argmax is not a known key");
    expect_attach_error("{\"postprocess\":{}}", "'postprocess' needs an 'image' section");
    expect_attach_error("{\"image\":{\"resize\":\"crop\",\"resize_short\":200}}", "resize_short (200)");
}

/* ---- top-k -------------------------------------------------------------------------------------------- */

static void test_topk(void **state)
{
    (void)state;
    const float s[] = {0.1f, 0.7f, NAN, 0.7f, -1.0f, 0.3f};
    osv_img_class_t out[8];
    osv_err_t err;
    assert_int_equal(osv_img_topk(s, OSV_DTYPE_FP32, 6, false, 4, out, &err), 4);
    assert_true(out[0].index == 1 && out[1].index == 3 && out[2].index == 5 && out[3].index == 0);
    assert_true(out[0].score == 0.7f && out[3].score == 0.1f && out[0].label == NULL);
    assert_int_equal(osv_img_topk(s, OSV_DTYPE_FP32, 6, false, 8, out, &err), 6);
    assert_int_equal(out[5].index, 2); /* NaN ranks last */
    assert_true(isnan(out[5].score));
    /* softmax of the finite ones only (NaN contributes nothing) */
    const double logits[] = {1.0, 2.0, 3.0};
    assert_int_equal(osv_img_topk(logits, OSV_DTYPE_FP64, 3, true, 3, out, &err), 3);
    double z = exp(1.0) + exp(2.0) + exp(3.0);
    assert_true(out[0].index == 2 && fabs(out[0].score - exp(3.0) / z) < 1e-6);
    assert_true(fabs(out[2].score - exp(1.0) / z) < 1e-6);
    const uint16_t half[] = {0x3c00 /* 1 */, 0xc000 /* -2 */, 0x4200 /* 3 */};
    assert_int_equal(osv_img_topk(half, OSV_DTYPE_FP16, 3, false, 2, out, &err), 2);
    assert_true(out[0].index == 2 && out[0].score == 3.0f && out[1].score == 1.0f);
    assert_int_equal(osv_img_topk(half, OSV_DTYPE_INT32, 3, false, 2, out, &err), OSV_EDTYPE);
    assert_int_equal(osv_img_topk(s, OSV_DTYPE_FP32, 0, false, 2, out, &err), 0);
}

/* ---- preprocessing properties ------------------------------------------------------------------------ */

static osv_img_ctx_t *ctx;

static int group_setup(void **state)
{
    osv_err_t err;
    (void)state;
    return osv_img_ctx_create(&ctx, &err);
}

static int group_teardown(void **state)
{
    (void)state;
    osv_img_ctx_destroy(ctx);
    return 0;
}

/* A constant image lands as the normalized constant inside the image area, the pad value outside. */
static void check_constant(const char *json, const blob_t *img, const float rgb[3], uint32_t x0, uint32_t y0,
                           uint32_t nw, uint32_t nh)
{
    osv_img_spec_t s = spec_of(json);
    osv_err_t err;
    uint64_t n = osv_img_tensor_bytes(&s);
    void *t = malloc(n);
    OSV_ASSERT_OK(osv_img_preprocess(ctx, &s, img->p, img->n, t, n, NULL, &err), &err);
    for (uint32_t c = 0; c < s.channels; c++) {
        float v = s.channels == 1 ? (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 32768) / 65536.0f
                                  : rgb[s.color == OSV_IMG_BGR ? 2 - c : c];
        if (s.channels == 1)
            v = floorf(v);
        float want = (v * s.scale - s.mean[c]) / s.std[c];
        if (s.dtype == OSV_DTYPE_UINT8)
            want = rintf(want);
        for (uint32_t y = 0; y < s.height; y++)
            for (uint32_t x = 0; x < s.width; x++) {
                bool in = x >= x0 && x < x0 + nw && y >= y0 && y < y0 + nh;
                float got = elem(&s, t, c, y, x), exp = in ? want : s.pad[c];
                float tol = s.dtype == OSV_DTYPE_FP16 ? fabsf(exp) * 1e-3f + 1e-4f : 1e-4f;
                if (fabsf(got - exp) > tol)
                    fail_msg("%s: (c%u, y%u, x%u) = %g, want %g", json, c, y, x, (double)got, (double)exp);
            }
    }
    free(t);
}

static void test_constant_images(void **state)
{
    (void)state;
    const float rgb[3] = {200, 100, 50};
    blob_t jpg = jpeg_const(64, 32, 200, 100, 50, TJSAMP_444), png = png_const(64, 32, 200, 100, 50);
    const blob_t *imgs[] = {&jpg, &png};
    for (int k = 0; k < 2; k++) {
        const blob_t *im = imgs[k];
        check_constant("{\"height\":20,\"width\":30}", im, rgb, 0, 0, 30, 20);
        check_constant(
            "{\"height\":20,\"width\":30,\"color\":\"BGR\",\"layout\":\"NHWC\",\"mean\":[0.1,0.2,0.3],"
            "\"std\":[0.5,0.25,2]}",
            im, rgb, 0, 0, 30, 20);
        check_constant("{\"height\":20,\"width\":30,\"color\":\"GRAY\"}", im, rgb, 0, 0, 30, 20);
        /* 64x32 into 30x30: width-bound, 30 x 15 centred at y 7 */
        check_constant("{\"height\":30,\"width\":30,\"resize\":\"pad\",\"pad_value\":[-1,-2,-3]}", im, rgb, 0,
                       7, 30, 15);
        check_constant(
            "{\"height\":30,\"width\":30,\"resize\":\"pad\",\"pad_position\":\"top_left\",\"pad_value\":9,"
            "\"layout\":\"NHWC\",\"dtype\":\"UINT8\",\"scale\":1}",
            im, rgb, 0, 0, 30, 15);
        check_constant(
            "{\"height\":16,\"width\":16,\"resize\":\"crop\",\"resize_short\":20,\"dtype\":\"FP16\"}", im,
            rgb, 0, 0, 16, 16);
        /* PaddleOCR: 64x32 -> height 48 -> width ceil(96) capped at 192? no: 96 wide, padded to 192 */
        check_constant(
            "{\"height\":48,\"width\":192,\"resize\":\"paddle_ocr\",\"color\":\"BGR\",\"mean\":0.5,"
            "\"std\":0.5}",
            im, rgb, 0, 0, 96, 48);
        check_constant("{\"height\":48,\"width\":40,\"resize\":\"paddle_ocr\"}", im, rgb, 0, 0, 40, 48);
        check_constant("{\"height\":5,\"width\":300,\"filter\":\"area\"}", im, rgb, 0, 0, 300, 5);
    }
    free(jpg.p);
    free(png.p);
}

static void expect_image_error(const osv_img_spec_t *s, const void *p, size_t n, int code, const char *needle)
{
    uint64_t bytes = osv_img_tensor_bytes(s);
    void *t = malloc(bytes);
    osv_err_t err;
    int rc = osv_img_preprocess(ctx, s, p, n, t, bytes, NULL, &err);
    free(t);
    if (rc != code || !strstr(err.msg, needle))
        fail_msg("got %s '%s', want %s with '%s'", osv_err_name(rc), rc ? err.msg : "", osv_err_name(code),
                 needle);
}

static void test_errors_and_limits(void **state)
{
    (void)state;
    osv_img_spec_t s = spec_of("{\"height\":8,\"width\":8,\"max_pixels\":10000,\"max_bytes\":100000}");
    blob_t jpg = jpeg_const(64, 32, 1, 2, 3, TJSAMP_420), png = png_const(64, 32, 1, 2, 3);
    osv_img_info_t info;
    osv_err_t err;
    expect_image_error(&s, jpg.p, 0, OSV_EINVAL, "empty image");
    expect_image_error(&s, "GIF89a....", 10, OSV_EMEDIA, "GIF images are not supported");
    expect_image_error(&s, "hello world", 11, OSV_EMEDIA, "starts with 68 65 6c 6c 6f 20 77 6f");
    expect_image_error(&s, jpg.p, jpg.n - 40, OSV_EPARSE, "truncated JPEG");
    expect_image_error(&s, jpg.p, 200, OSV_EPARSE, "JPEG");
    expect_image_error(&s, png.p, png.n - 20, OSV_EPARSE, "PNG");
    expect_image_error(&s, "\xff\xd8\xff\xd9", 4, OSV_EPARSE, "JPEG");
    /* a header declaring 65000 x 65000 (SOF0 patched): rejected before decoding */
    uint8_t *bomb = malloc(jpg.n);
    memcpy(bomb, jpg.p, jpg.n);
    for (size_t i = 0; i + 9 < jpg.n; i++)
        if (bomb[i] == 0xff && bomb[i + 1] == 0xc0) {
            bomb[i + 5] = bomb[i + 7] = 0xfd;
            bomb[i + 6] = bomb[i + 8] = 0xe8;
            break;
        }
    expect_image_error(&s, bomb, jpg.n, OSV_ETOOBIG, "65000 x 65000");
    OSV_ASSERT_OK(osv_img_probe(ctx, jpg.p, jpg.n, NULL, &info, &err), &err);
    assert_true(info.width == 64 && info.height == 32 && info.components == 3 && info.orientation == 1);
    assert_int_equal(osv_img_probe(ctx, bomb, jpg.n, &s.limits, &info, &err), OSV_ETOOBIG);
    s.limits.max_bytes = 50;
    expect_image_error(&s, png.p, png.n, OSV_ETOOBIG, "max_bytes");
    s.limits.max_bytes = 100000;
    s.limits.max_pixels = 64 * 32 - 1;
    expect_image_error(&s, png.p, png.n, OSV_ETOOBIG, "max_pixels");
    /* destination too small */
    float small[4];
    assert_int_equal(osv_img_preprocess(ctx, &s, png.p, png.n, small, sizeof small, NULL, &err), OSV_EINVAL);
    free(bomb);
    free(jpg.p);
    free(png.p);
}

static void test_bytes_and_batch(void **state)
{
    (void)state;
    osv_img_spec_t s = spec_of("{\"height\":4,\"width\":4,\"scale\":1}");
    blob_t a = png_const(8, 8, 10, 20, 30), b = jpeg_const(8, 8, 200, 200, 200, TJSAMP_444);
    uint64_t one = osv_img_tensor_bytes(&s);
    float *t = malloc(3 * one);
    uint8_t *ser = malloc(a.n + b.n + 8);
    uint32_t failed = 99;
    osv_err_t err;
    uint32_t la = (uint32_t)a.n, lb = (uint32_t)b.n;
    memcpy(ser, &la, 4), memcpy(ser + 4, a.p, a.n), memcpy(ser + 4 + a.n, &lb, 4),
        memcpy(ser + 8 + a.n, b.p, b.n);
    OSV_ASSERT_OK(osv_img_preprocess_bytes(ctx, &s, ser, a.n + b.n + 8, 2, t, 2 * one, &failed, &err), &err);
    assert_true(fabsf(t[0] - 10) < 1e-3f && fabsf(t[16] - 20) < 1e-3f && fabsf(t[48] - 200) < 0.6f);
    assert_int_equal(osv_img_preprocess_bytes(ctx, &s, ser, a.n + b.n + 8, 3, t, 3 * one, &failed, &err),
                     OSV_EPARSE);
    assert_int_equal(failed, 2);
    assert_int_equal(osv_img_preprocess_bytes(ctx, &s, ser, a.n + 8, 2, t, 2 * one, &failed, &err),
                     OSV_EPARSE);
    assert_int_equal(failed, 1);
    assert_int_equal(osv_img_preprocess_bytes(ctx, &s, ser, a.n + b.n + 8, 1, t, one, &failed, &err),
                     OSV_EPARSE);
    assert_non_null(strstr(err.msg, "follow the last"));
    osv_img_blob_t blobs[3] = {{a.p, a.n}, {b.p, b.n}, {"GIF89a", 6}};
    assert_int_equal(osv_img_preprocess_batch(ctx, &s, blobs, 3, t, 3 * one, &failed, &err), OSV_EMEDIA);
    assert_int_equal(failed, 2);
    assert_int_equal(err.index, 2); /* the image is named by index, never by parsing the message */
    assert_null(strstr(err.msg, "image 2"));
    assert_non_null(strstr(err.msg, "GIF"));
    assert_int_equal(osv_img_preprocess_batch(ctx, &s, blobs, 2, t, one, &failed, &err), OSV_EINVAL);
    /* steady state: no ortserve allocations per image */
    OSV_ASSERT_OK(osv_img_preprocess_batch(ctx, &s, blobs, 2, t, 2 * one, &failed, &err), &err);
    uint64_t before = osv_alloc_count();
    for (int i = 0; i < 20; i++)
        OSV_ASSERT_OK(osv_img_preprocess_batch(ctx, &s, blobs, 2, t, 2 * one, &failed, &err), &err);
    assert_int_equal(osv_alloc_count(), before);
    free(t);
    free(ser);
    free(a.p);
    free(b.p);
}

static void *thread_ctx_main(void *arg)
{
    osv_err_t err;
    osv_img_ctx_t *c = osv_img_thread_ctx(&err);
    *(osv_img_ctx_t **)arg = c;
    return c == osv_img_thread_ctx(&err) ? c : NULL; /* stable on one thread */
}

static void test_thread_ctx(void **state)
{
    (void)state;
    osv_img_ctx_t *a = NULL, *b = NULL;
    void *ra, *rb;
    pthread_t ta, tb;
    pthread_create(&ta, NULL, thread_ctx_main, &a);
    pthread_join(ta, &ra);
    pthread_create(&tb, NULL, thread_ctx_main, &b);
    pthread_join(tb, &rb);
    assert_non_null(ra);
    assert_non_null(rb); /* (destroyed at each thread's exit: ASan's leak check covers it) */
}

/* ---- classify --------------------------------------------------------------------------------------------
 */

static void test_classify_batch_equals_single(void **state)
{
    (void)state;
    osv_model_t *m = NULL;
    osv_pool_t *pool = NULL;
    osv_pool_opts_t po = {.total_bytes = 64ull << 20};
    osv_err_t err;
    OSV_ASSERT_OK(
        load_with_config("{\"labels\":\"labels.txt\",\"image\":{\"resize\":\"crop\",\"resize_short\":256,"
                         "\"mean\":[0.485,0.456,0.406],\"std\":[0.229,0.224,0.225]},"
                         "\"postprocess\":{\"top_k\":4}}",
                         &m, &err),
        &err);
    OSV_ASSERT_OK(osv_pool_create(&po, &pool, &err), &err);
    blob_t imgs[3] = {jpeg_const(300, 200, 250, 30, 30, TJSAMP_420), png_const(100, 140, 20, 240, 20),
                      jpeg_const(64, 64, 10, 10, 250, TJSAMP_444)};
    osv_img_blob_t blobs[3];
    for (int i = 0; i < 3; i++)
        blobs[i] = (osv_img_blob_t){imgs[i].p, imgs[i].n};
    osv_img_class_t batch[3 * 4], single[4];
    osv_img_times_t times = {0};
    osv_img_classify_opts_t o = {.pool = pool, .times = &times};
    uint32_t k = 0, failed = 99;
    OSV_ASSERT_OK(osv_img_classify(ctx, m, blobs, 3, &o, batch, &k, &failed, &err), &err);
    assert_int_equal(k, 4);
    assert_int_equal(times.runs, 1); /* dynamic batch dim: one Run */
    assert_true(times.preprocess_ns > 0 && times.run_ns > 0);
    for (int i = 0; i < 3; i++) {
        OSV_ASSERT_OK(osv_img_classify(ctx, m, &blobs[i], 1, &o, single, &k, &failed, &err), &err);
        for (uint32_t j = 0; j < k; j++) {
            assert_int_equal(single[j].index, batch[i * 4 + j].index);
            assert_true(fabsf(single[j].score - batch[i * 4 + j].score) < 1e-5f);
            assert_non_null(single[j].label);
            assert_true(strncmp(single[j].label, "class_", 6) == 0);
        }
    }
    o.top_k = 2000; /* more than the classes: all of them */
    osv_img_class_t *all = malloc(2000 * sizeof *all);
    OSV_ASSERT_OK(osv_img_classify(ctx, m, blobs, 1, &o, all, &k, &failed, &err), &err);
    assert_int_equal(k, 1000);
    free(all);
    /* an image's failure names it */
    blobs[1] = (osv_img_blob_t){"GIF89a", 6};
    o.top_k = 0;
    assert_int_equal(osv_img_classify(ctx, m, blobs, 3, &o, batch, &k, &failed, &err), OSV_EMEDIA);
    assert_int_equal(failed, 1);
    assert_int_equal(err.index, 1);
    assert_int_equal(osv_img_classify(ctx, m, blobs, 0, &o, batch, &k, &failed, &err), OSV_EINVAL);
    for (int i = 0; i < 3; i++)
        free(imgs[i].p);
    osv_pool_destroy(pool);
    osv_model_release(m);
}

/* Mutated and truncated JPEG/PNG files (seeded): every call returns a clean error or succeeds, never
 * crashes or reads out of bounds (the ASan/UBSan run makes this a small fuzz test). */
static void test_mutations(void **state)
{
    (void)state;
    osv_img_spec_t s = spec_of("{\"height\":24,\"width\":40,\"resize\":\"pad\",\"max_pixels\":1000000}");
    uint8_t rgb[48 * 40 * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 7 + (i / 120) * 13);
    blob_t src[2] = {png_of(48, 40, 2, rgb), jpeg_const(48, 40, 90, 160, 30, TJSAMP_420)};
    uint64_t n = osv_img_tensor_bytes(&s);
    void *t = malloc(n);
    uint32_t x = 12345;
    int ok = 0, bad = 0;
    for (int it = 0; it < 600; it++) {
        const blob_t *b = &src[it % 2];
        uint8_t *m = malloc(b->n);
        size_t len = b->n;
        osv_err_t err;
        memcpy(m, b->p, b->n);
        x = x * 1103515245u + 12345u;
        if (x % 4 == 0) {
            len = (x >> 8) % b->n; /* truncate */
        } else {
            for (uint32_t k = 0, flips = 1 + (x >> 8) % 8; k < flips; k++) {
                x = x * 1103515245u + 12345u;
                m[(x >> 4) % b->n] = (uint8_t)(x >> 20);
            }
        }
        int rc = osv_img_preprocess(ctx, &s, m, len, t, n, NULL, &err);
        if (rc != 0 && rc != OSV_EPARSE && rc != OSV_EMEDIA && rc != OSV_ETOOBIG && rc != OSV_EINVAL)
            fail_msg("iteration %d: unexpected %s: %s", it, osv_err_name(rc), err.msg);
        rc == 0 ? ok++ : bad++;
        free(m);
    }
    assert_true(ok > 0 && bad > 0);
    free(t);
    free(src[0].p);
    free(src[1].p);
}

/* ---- decode memory budget ---------------------------------------------------------------------------- */

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A small real PNG whose IHDR (CRC fixed) declares w x h, depth and colour type: the attack's shape,
 * for computing a cost from the header. */
static blob_t png_declaring(uint32_t w, uint32_t h, uint8_t depth, uint8_t ct, uint8_t interlace)
{
    blob_t b = png_const(8, 8, 1, 2, 3);
    put_be32(b.p + 16, w);
    put_be32(b.p + 20, h);
    b.p[24] = depth, b.p[25] = ct, b.p[28] = interlace;
    put_be32(b.p + 29, crc32_of(b.p + 12, 17));
    return b;
}

/* A JPEG of a smooth gradient, w x h, with TurboJPEG's subsampling and flags. */
static blob_t jpeg_gradient(int w, int h, int samp, int flags)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    unsigned char *out = NULL;
    unsigned long len = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *q = px + 3 * ((size_t)y * w + x);
            q[0] = (uint8_t)(x * 255 / w), q[1] = (uint8_t)(y * 255 / h), q[2] = (uint8_t)((x + y) & 255);
        }
    tjhandle t = tjInitCompress();
    assert_int_equal(tjCompress2(t, px, w, 0, h, TJPF_RGB, &out, &len, samp, 85, flags), 0);
    tjDestroy(t);
    free(px);
    blob_t bl = {malloc(len), len};
    memcpy(bl.p, out, len);
    tjFree(out);
    return bl;
}

static osv_img_cost_t cost_of(const osv_img_spec_t *s, const blob_t *b)
{
    osv_img_cost_t c;
    osv_err_t err;
    OSV_ASSERT_OK(osv_img_decode_cost(ctx, s, b->p, b->n, &c, &err), &err);
    assert_int_equal(c.total, c.codec + c.pixels + c.resample);
    return c;
}

static void test_budget_reserve(void **state)
{
    (void)state;
    osv_img_budget_t *b;
    osv_img_budget_stats_t st;
    osv_err_t err;
    OSV_ASSERT_OK(osv_img_budget_create(1000, &b, &err), &err);
    assert_int_equal(osv_img_budget_reserve(b, 600), 0);
    assert_int_equal(osv_img_budget_reserve(b, 401), OSV_EBUSY); /* does not fit now */
    assert_int_equal(osv_img_budget_reserve(b, 1001), OSV_ETOOBIG); /* never fits */
    assert_int_equal(osv_img_budget_reserve(b, 400), 0);
    assert_int_equal(osv_img_budget_reserve(b, 1), OSV_EBUSY);
    osv_img_budget_release(b, 1000);
    assert_int_equal(osv_img_budget_reserve(b, 1000), 0);
    osv_img_budget_release(b, 1000);
    osv_img_budget_get_stats(b, &st);
    assert_true(st.limit == 1000 && st.in_use == 0 && st.high_water == 1000);
    assert_true(st.refused_busy == 2 && st.refused_too_big == 1);
    osv_img_budget_destroy(b);
    /* unlimited: counted, never refused; no budget: everything accepted */
    OSV_ASSERT_OK(osv_img_budget_create(0, &b, &err), &err);
    assert_int_equal(osv_img_budget_reserve(b, UINT64_MAX / 2), 0);
    osv_img_budget_get_stats(b, &st);
    assert_true(st.in_use == UINT64_MAX / 2 && osv_img_budget_limit(b) == 0);
    osv_img_budget_destroy(b);
    assert_int_equal(osv_img_budget_reserve(NULL, 1ull << 40), 0);
}

typedef struct hammer {
    osv_img_budget_t *b;
    int over; /* a reservation succeeded while the counter said more than the limit was in use */
} hammer_t;

static void *hammer_main(void *arg)
{
    hammer_t *h = arg;
    osv_img_budget_stats_t st;
    for (int i = 0; i < 20000; i++) {
        if (osv_img_budget_reserve(h->b, 100) != 0)
            continue;
        osv_img_budget_get_stats(h->b, &st);
        h->over |= st.in_use > st.limit;
        osv_img_budget_release(h->b, 100);
    }
    return NULL;
}

/* Four threads reserving 100 of 250 bytes at once: never more than two hold it, nothing leaks. */
static void test_budget_concurrent(void **state)
{
    (void)state;
    osv_img_budget_t *b;
    osv_img_budget_stats_t st;
    osv_err_t err;
    pthread_t t[4];
    hammer_t h[4];
    OSV_ASSERT_OK(osv_img_budget_create(250, &b, &err), &err);
    for (int i = 0; i < 4; i++) {
        h[i] = (hammer_t){b, 0};
        pthread_create(&t[i], NULL, hammer_main, &h[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_false(h[i].over);
    }
    osv_img_budget_get_stats(b, &st);
    assert_true(st.in_use == 0 && st.high_water <= 200);
    osv_img_budget_destroy(b);
}

/* PNG: the decoded image (RGB8, or G8 for ≤ 8-bit gray), libspng's two scanlines of the stored format
 * and, interlaced, a row of the output: from the header alone (the attack file declares 6300 x 6300 in
 * 116 KB; here the IHDR of a tiny file is rewritten). */
static void test_decode_cost_png(void **state)
{
    (void)state;
    osv_img_spec_t s = spec_of("{\"height\":224,\"width\":224}");
    blob_t rgb = png_declaring(6300, 6300, 8, 2, 0), gray = png_declaring(6300, 6300, 8, 0, 0),
           rgba16 = png_declaring(6300, 6300, 16, 6, 1);
    osv_img_cost_t c = cost_of(&s, &rgb), g = cost_of(&s, &gray), a = cost_of(&s, &rgba16);
    assert_int_equal(c.pixels, 6300ull * 6300 * 3 + 16);
    assert_int_equal(g.pixels, 6300ull * 6300 + 16);
    assert_int_equal(a.pixels, 6300ull * 6300 * 3 + 16); /* 16-bit RGBA decodes to RGB8 */
    assert_true(c.codec >= 2 * (6300ull * 3 + 1) && c.codec < (1u << 20));
    assert_true(a.codec >= 2 * (6300ull * 8 + 1) + 6300ull * 3); /* 8-byte pixels, deinterlacing row */
    /* resampling 6300 rows to 224: a ring as tall as the vertical kernel (2·⌈6300/224⌉ + 1 rows) */
    assert_true(c.resample >= 57ull * 224 * 4 * sizeof(float) && c.resample < (1u << 20));
    /* the limits still come first */
    s.limits.max_pixels = 6300ull * 6300 - 1;
    osv_err_t err;
    osv_img_cost_t x;
    assert_int_equal(osv_img_decode_cost(ctx, &s, rgb.p, rgb.n, &x, &err), OSV_ETOOBIG);
    free(rgb.p);
    free(gray.p);
    free(rgba16.p);
}

/* JPEG: libjpeg buffers every coefficient of the image (64 two-byte coefficients per 8 x 8 block, each
 * component at its own sampling, at full resolution whatever the DCT scale) only for progressive and
 * multi-scan files; baseline files decode through row buffers. */
static void test_decode_cost_jpeg(void **state)
{
    (void)state;
    osv_img_spec_t s = spec_of("{\"height\":224,\"width\":224}");
    osv_img_spec_t full = spec_of("{\"height\":224,\"width\":224,\"jpeg_dct_scaling\":false}");
    blob_t p444 = jpeg_gradient(1024, 768, TJSAMP_444, TJFLAG_PROGRESSIVE),
           p420 = jpeg_gradient(1024, 768, TJSAMP_420, TJFLAG_PROGRESSIVE),
           b444 = jpeg_gradient(1024, 768, TJSAMP_444, 0);
    const uint64_t blocks = 128ull * 96, coef444 = 3 * blocks * 128, coef420 = (blocks + 2 * blocks / 4) * 128;
    osv_img_cost_t cp = cost_of(&s, &p444), cq = cost_of(&s, &p420), cb = cost_of(&s, &b444),
                   cf = cost_of(&full, &p444);
    assert_true(cb.codec < (1u << 20));                                /* no coefficient buffer */
    assert_true(cp.codec >= coef444 && cp.codec - coef444 < (1u << 20)); /* 4:4:4: w·h·6 bytes */
    assert_true(cq.codec >= coef420 && cq.codec - coef420 < (1u << 20)); /* 4:2:0: w·h·3 bytes */
    /* DCT scaling: 1024 x 768 for 224 x 224 decodes at 1/2 (512 x 384); the coefficients stay whole */
    assert_int_equal(cp.pixels, 512ull * 384 * 3 + 16);
    assert_int_equal(cf.pixels, 1024ull * 768 * 3 + 16);
    assert_true(cf.codec >= coef444);
    free(p444.p);
    free(p420.p);
    free(b444.p);
}


#ifndef OSV_ASAN
static unsigned long long status_kb(const char *key)
{
    char line[256];
    unsigned long long v = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0)
            v = strtoull(line + strlen(key) + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

/* Decodes b in a child process and compares the growth of its peak RSS (VmHWM reset through
 * /proc/self/clear_refs) with the bound: the bound must hold for what the libraries really touch.
 * The child's exit status says whether it held. */
static void expect_bound_holds(const osv_img_spec_t *s, const blob_t *b, const char *what)
{
    osv_img_cost_t c = cost_of(s, b);
    uint64_t n = osv_img_tensor_bytes(s);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Large blocks from fresh mappings, and the heap's free memory (resident since the parent used
         * it) given back: what the decode touches shows up in RSS. */
        mallopt(M_MMAP_THRESHOLD, 64 << 10);
        malloc_trim(0);
        osv_img_ctx_t *cx;
        osv_err_t err;
        void *dst = malloc(n);
        memset(dst, 0, n); /* the tensor is the caller's memory, resident before */
        /* A first decode faults the libraries' code in (file pages a fork does not carry over). */
        if (osv_img_ctx_create(&cx, &err) != 0 || osv_img_preprocess(cx, s, b->p, b->n, dst, n, NULL, &err) != 0)
            _exit(3);
        osv_img_ctx_destroy(cx);
        malloc_trim(0);
        if (osv_img_ctx_create(&cx, &err) != 0)
            _exit(3);
        FILE *f = fopen("/proc/self/clear_refs", "w");
        if (!f || fputs("5", f) < 0 || fclose(f) != 0)
            _exit(4); /* cannot measure */
        unsigned long long before = status_kb("VmRSS:");
        int rc = osv_img_preprocess(cx, s, b->p, b->n, dst, n, NULL, &err);
        unsigned long long peak = status_kb("VmHWM:");
        fprintf(stderr, "%s: bound %llu bytes, peak RSS growth %llu bytes\n", what, (unsigned long long)c.total,
                (peak - before) * 1024);
        _exit(rc != 0 ? 2 : (peak - before) * 1024 > c.total ? 1 : 0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 4)
        return;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s: the decode's peak RSS growth exceeds the bound (child status %d)", what, st);
}
#endif

static void test_decode_cost_measured(void **state)
{
    (void)state;
#ifdef OSV_ASAN
    skip(); /* ASan's redzones and quarantine are not the libraries' memory */
#else
    osv_img_spec_t s = spec_of("{\"height\":48,\"width\":192,\"resize\":\"paddle_ocr\"}");
    osv_img_spec_t full = spec_of("{\"height\":224,\"width\":224,\"jpeg_dct_scaling\":false}");
    blob_t jp = jpeg_gradient(2000, 1500, TJSAMP_444, TJFLAG_PROGRESSIVE),
           jq = jpeg_gradient(2000, 1500, TJSAMP_420, TJFLAG_PROGRESSIVE),
           jg = jpeg_gradient(2000, 1500, TJSAMP_GRAY, TJFLAG_PROGRESSIVE), jb = jpeg_gradient(2000, 1500, TJSAMP_420, 0),
           pc = png_const(1500, 1000, 40, 80, 120);
    expect_bound_holds(&s, &jp, "progressive 4:4:4 JPEG");
    expect_bound_holds(&full, &jp, "progressive 4:4:4 JPEG, no DCT scaling");
    expect_bound_holds(&s, &jq, "progressive 4:2:0 JPEG");
    expect_bound_holds(&s, &jg, "progressive gray JPEG");
    expect_bound_holds(&full, &jb, "baseline 4:2:0 JPEG, no DCT scaling");
    expect_bound_holds(&s, &pc, "RGB PNG");
    free(jp.p);
    free(jq.p);
    free(jg.p);
    free(jb.p);
    free(pc.p);
#endif
}

/* With a budget attached: an image larger than the whole budget is refused before decoding (413's
 * OSV_ETOOBIG), one that does not fit in what is left now gets OSV_EBUSY (503), both naming the budget;
 * everything reserved for an image is released after it but what the context keeps. */
static void test_budget_preprocess(void **state)
{
    (void)state;
    osv_img_spec_t s = spec_of("{\"height\":48,\"width\":192,\"resize\":\"paddle_ocr\"}");
    blob_t big = png_const(1600, 1200, 40, 80, 120), small = png_const(64, 32, 1, 2, 3);
    osv_img_cost_t c = cost_of(&s, &big);
    osv_img_budget_t *b;
    osv_img_budget_stats_t st;
    osv_img_ctx_t *cx;
    osv_err_t err;
    uint64_t n = osv_img_tensor_bytes(&s);
    float *t = malloc(n);
    OSV_ASSERT_OK(osv_img_ctx_create(&cx, &err), &err);
    OSV_ASSERT_OK(osv_img_budget_create(c.total - 1, &b, &err), &err);
    osv_img_ctx_set_budget(cx, b);
    assert_int_equal(osv_img_preprocess(cx, &s, big.p, big.n, t, n, NULL, &err), OSV_ETOOBIG);
    assert_non_null(strstr(err.msg, "more than the whole image decode budget"));
    osv_img_budget_get_stats(b, &st);
    assert_true(st.refused_too_big == 1 && st.in_use == 0);
    osv_img_ctx_set_budget(cx, NULL);
    osv_img_budget_destroy(b);

    OSV_ASSERT_OK(osv_img_budget_create(c.total + (8u << 20), &b, &err), &err);
    osv_img_ctx_set_budget(cx, b);
    assert_int_equal(osv_img_budget_reserve(b, 9u << 20), 0); /* another request's image */
    assert_int_equal(osv_img_preprocess(cx, &s, big.p, big.n, t, n, NULL, &err), OSV_EBUSY);
    assert_non_null(strstr(err.msg, "of the image decode budget"));
    assert_non_null(strstr(err.msg, "retry later"));
    osv_img_budget_release(b, 9u << 20);
    osv_img_ctx_set_budget(cx, NULL);
    osv_img_budget_destroy(b);
    /* the reservation is the cost, and what is kept afterwards stays reserved */
    OSV_ASSERT_OK(osv_img_budget_create(c.total + (8u << 20), &b, &err), &err);
    osv_img_ctx_set_budget(cx, b);
    OSV_ASSERT_OK(osv_img_preprocess(cx, &s, big.p, big.n, t, n, NULL, &err), &err);
    osv_img_budget_get_stats(b, &st);
    assert_true(st.high_water >= c.total && st.high_water <= c.total + (64u << 10));
    assert_true(st.in_use <= OSV_IMG_KEEP_BYTES && st.in_use < c.pixels); /* 5.5 MiB of pixels are not kept */
    /* a small image's scratch is kept and stays reserved while kept */
    OSV_ASSERT_OK(osv_img_preprocess(cx, &s, small.p, small.n, t, n, NULL, &err), &err);
    osv_img_budget_get_stats(b, &st);
    uint64_t kept = st.in_use;
    assert_true(kept > 0 && kept <= OSV_IMG_KEEP_BYTES);
    /* ...but never blocks its own context: with only the big image's cost left free, the context
     * gives back what it keeps and decodes */
    uint64_t others = st.limit - kept - c.total;
    assert_int_equal(osv_img_budget_reserve(b, others), 0);
    OSV_ASSERT_OK(osv_img_preprocess(cx, &s, big.p, big.n, t, n, NULL, &err), &err);
    osv_img_budget_release(b, others);
    osv_img_ctx_set_budget(cx, NULL); /* detaching returns everything */
    osv_img_budget_get_stats(b, &st);
    assert_int_equal(st.in_use, 0);
    osv_img_ctx_destroy(cx);
    osv_img_budget_destroy(b);
    free(t);
    free(big.p);
    free(small.p);
}

/* Ancillary PNG chunks are not in the header's bound: libspng's allocations for them are reserved as
 * they happen, and refused (503) when the budget is spent. */
static void test_budget_png_chunks(void **state)
{
    (void)state;
    osv_img_spec_t s = spec_of("{\"height\":48,\"width\":192,\"resize\":\"paddle_ocr\"}");
    blob_t p = png_const(64, 32, 1, 2, 3);
    /* a tEXt chunk of 3 MiB after IHDR */
    size_t tl = 3u << 20, n = p.n + 12 + tl;
    uint8_t *q = malloc(n);
    memcpy(q, p.p, 33);
    put_be32(q + 33, (uint32_t)tl);
    memcpy(q + 37, "tEXtComment", 11);
    memset(q + 48, 'a', tl - 7);
    put_be32(q + 41 + tl, crc32_of(q + 37, 4 + tl));
    memcpy(q + 45 + tl, p.p + 33, p.n - 33);
    blob_t text = {q, n};
    osv_img_cost_t c = cost_of(&s, &text);
    osv_img_budget_t *b;
    osv_img_budget_stats_t st;
    osv_img_ctx_t *cx;
    osv_err_t err;
    uint64_t tb = osv_img_tensor_bytes(&s);
    float *t = malloc(tb);
    OSV_ASSERT_OK(osv_img_ctx_create(&cx, &err), &err);
    OSV_ASSERT_OK(osv_img_budget_create(c.total + (1u << 20), &b, &err), &err);
    osv_img_ctx_set_budget(cx, b);
    assert_int_equal(osv_img_preprocess(cx, &s, text.p, text.n, t, tb, NULL, &err), OSV_EBUSY);
    assert_non_null(strstr(err.msg, "image decode budget"));
    osv_img_ctx_set_budget(cx, NULL);
    osv_img_budget_destroy(b);
    OSV_ASSERT_OK(osv_img_budget_create(64u << 20, &b, &err), &err);
    osv_img_ctx_set_budget(cx, b);
    OSV_ASSERT_OK(osv_img_preprocess(cx, &s, text.p, text.n, t, tb, NULL, &err), &err);
    osv_img_budget_get_stats(b, &st);
    assert_true(st.high_water >= tl); /* the chunk was counted */
    osv_img_ctx_destroy(cx);                         /* destroying detaches */
    osv_img_budget_get_stats(b, &st);
    assert_int_equal(st.in_use, 0);
    osv_img_budget_destroy(b);
    free(t);
    free(q);
    free(p.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),           cmocka_unit_test(test_spec_parse),
        cmocka_unit_test(test_model_attach),    cmocka_unit_test(test_topk),
        cmocka_unit_test(test_constant_images), cmocka_unit_test(test_errors_and_limits),
        cmocka_unit_test(test_mutations),       cmocka_unit_test(test_bytes_and_batch),
        cmocka_unit_test(test_thread_ctx),      cmocka_unit_test(test_classify_batch_equals_single),
        cmocka_unit_test(test_budget_reserve),  cmocka_unit_test(test_budget_concurrent),
        cmocka_unit_test(test_decode_cost_png), cmocka_unit_test(test_decode_cost_jpeg),
        cmocka_unit_test(test_decode_cost_measured), cmocka_unit_test(test_budget_preprocess),
        cmocka_unit_test(test_budget_png_chunks),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
