/* fuzz_image_decode.c — image decoding and preprocessing (src/imaging: sniffing, TurboJPEG and
 * libspng decoding under the pixel/byte limits, EXIF orientation via libexif, DCT-domain scaling,
 * the fused resample + normalize pass into the tensor), through the public API the server uses.
 *
 * The input is an encoded image (JPEG, PNG, or anything else). Its LAST byte also selects how it is
 * preprocessed (decoders ignore trailing bytes after the image's end):
 *   bits 0-1 resize (stretch, pad, crop, paddle_ocr)   bit 2 layout NHWC (else NCHW)
 *   bits 3-4 dtype (FP32, FP16, UINT8, FP32)           bit 5 filter area (else bilinear)
 *   bit 6    GRAY (else RGB, or BGR when bit 2)        bit 7 also the KServe BYTES path
 *   (osv_img_preprocess_bytes: the image as one serialized element, and the raw input as a
 *   serialized tensor of two elements)
 * The target tensor is small (a size from a table of eight, also by the last byte) and the limits
 * are small (max 2^18 pixels, 1 MiB), so fuzzing stays fast. The output buffer is allocated to the
 * exact tensor size, so any write past it is caught by ASan. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ortserve/imaging.h"
#include "support/fuzz.h"

static osv_img_ctx_t *ctx;

static const uint32_t sides[8][2] = {{16, 16}, {24, 32}, {7, 13}, {48, 16},
                                     {1, 1},   {32, 32}, {3, 64}, {40, 24}};

/* The spec for selector sel, through the same parser a config.json "image" section goes through
 * (so only specs the server can hold are used). */
static void make_spec(uint8_t sel, osv_img_spec_t *s)
{
    static const char *const resizes[4] = {"stretch", "pad", "crop", "paddle_ocr"};
    static const char *const dtypes[4] = {"FP32", "FP16", "UINT8", "FP32"};
    const uint32_t *hw = sides[(sel ^ (sel >> 3)) & 7];
    const char *color = sel & 0x40 ? "GRAY" : sel & 4 ? "BGR" : "RGB";
    bool u8 = ((sel >> 3) & 3) == 2, crop = (sel & 3) == 2;
    char json[512], extra[64] = "";
    osv_err_t err;
    if (crop)
        snprintf(extra, sizeof extra, ", \"resize_short\": %u",
                 (hw[0] > hw[1] ? hw[0] : hw[1]) + (sel & 8 ? 5 : 0));
    snprintf(json, sizeof json,
             "{\"height\": %u, \"width\": %u, \"resize\": \"%s\", \"layout\": \"%s\", \"dtype\": \"%s\", "
             "\"filter\": \"%s\", \"color\": \"%s\", \"mean\": %s, \"std\": %s, \"pad_value\": 0.5, "
             "\"pad_position\": \"%s\", \"jpeg_dct_scaling\": %s, \"max_pixels\": %u, \"max_bytes\": %u%s}",
             hw[0], hw[1], resizes[sel & 3], sel & 4 ? "NHWC" : "NCHW", dtypes[(sel >> 3) & 3],
             sel & 0x20 ? "area" : "bilinear", color, u8 ? "0" : "0.5", u8 ? "1" : "0.25",
             sel & 0x10 ? "top_left" : "center", sel & 2 ? "false" : "true", 1u << 18, 1u << 20, extra);
    FZ_CHECK(osv_img_spec_parse(json, strlen(json), NULL, s, &err) == 0, "spec %s: %s", json, err.msg);
}

/* Runs one call into a buffer of exactly `len` bytes (ASan catches any write beyond). */
static void run_bytes(const osv_img_spec_t *s, const uint8_t *ser, size_t len, uint32_t n)
{
    uint64_t one = osv_img_tensor_bytes(s);
    uint8_t *dst = malloc(one * n);
    uint32_t failed = UINT32_MAX;
    osv_err_t err;
    FZ_CHECK(dst, "out of memory");
    int rc = osv_img_preprocess_bytes(ctx, s, ser, len, n, dst, one * n, &failed, &err);
    FZ_CHECK(rc == 0 || failed <= n, "failed image index %u of %u", failed, n);
    free(dst);
}

static void bytes_paths(const osv_img_spec_t *s, const uint8_t *data, size_t size)
{
    uint8_t *ser = malloc(size + 4);
    FZ_CHECK(ser, "out of memory");
    uint32_t n = (uint32_t)size;
    ser[0] = (uint8_t)n, ser[1] = (uint8_t)(n >> 8), ser[2] = (uint8_t)(n >> 16), ser[3] = (uint8_t)(n >> 24);
    memcpy(ser + 4, data, size);
    run_bytes(s, ser, size + 4, 1);
    free(ser);
    run_bytes(s, data, size, 2);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    osv_err_t err;
    (void)argc, (void)argv;
    FZ_CHECK(osv_img_ctx_create(&ctx, &err) == 0, "imaging context: %s", err.msg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    osv_img_spec_t spec;
    osv_img_info_t info;
    osv_err_t err;
    if (size == 0)
        return 0;
    uint8_t sel = data[size - 1];
    make_spec(sel, &spec);
    if (osv_img_probe(ctx, data, size, &spec.limits, &info, &err) == 0)
        FZ_CHECK(info.width >= 1 && info.height >= 1 &&
                     (uint64_t)info.width * info.height <= spec.limits.max_pixels && info.orientation >= 1 &&
                     info.orientation <= 8,
                 "probe: %ux%u orientation %u", info.width, info.height, info.orientation);
    uint64_t len = osv_img_tensor_bytes(&spec);
    void *dst = malloc(len);
    FZ_CHECK(dst, "out of memory");
    if (osv_img_preprocess(ctx, &spec, data, size, dst, len, &info, &err) == 0)
        FZ_CHECK(info.decoded_width >= 1 && info.decoded_height >= 1 && info.decoded_width <= info.width &&
                     info.decoded_height <= info.height,
                 "decoded %ux%u from %ux%u", info.decoded_width, info.decoded_height, info.width,
                 info.height);
    free(dst);
    if (sel & 0x80)
        bytes_paths(&spec, data, size);
    return 0;
}
