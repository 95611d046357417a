/* fuzz_model_config.c — a model's config.json: the core's strict parser (src/core/config.c) and
 * the load hook every served model goes through (osv_server_model_hook: servability, the "slo"
 * section in src/obs/obs.c, the "image"/"postprocess" sections validated against the model in
 * src/imaging/config.c, the scheduling attachment).
 *
 * The input is the config.json text. It is applied, in turn, to four models built in memory with the
 * core's internal layout (support/fake_model.c) — an NCHW image classifier, an NHWC UINT8 detector
 * with dynamic sides, an FP16 grayscale classifier with a fixed batch, and a plain MLP — exactly as
 * osv_model_load applies it after reading the file (no ORT session is needed: the config is parsed,
 * merged with the model's (absent) config.pbtxt, completed and checked against the inputs and
 * outputs ORT reported). Labels files named by the config are not
 * read. A resolved imaging configuration must then be usable: sane dims, a tensor size that does not
 * overflow, non-zero std. The "image" section is also parsed on its own (osv_img_spec_parse). */
#include <string.h>

#include "http/http.h"
#include "ortserve/imaging.h"
#include "support/fake_model.h"
#include "support/fuzz.h"

static const fz_fake_t fakes[] = {
    {"classifier",
     1,
     1,
     {{"input", OSV_DTYPE_FP32, 4, {-1, 3, 224, 224}}, {"probs", OSV_DTYPE_FP32, 2, {-1, 1000}}}},
    {"detector",
     1,
     2,
     {{"image", OSV_DTYPE_UINT8, 4, {1, -1, -1, 3}},
      {"scores", OSV_DTYPE_FP32, 2, {1, 5}},
      {"boxes", OSV_DTYPE_FP32, 3, {1, -1, 4}}}},
    {"gray", 1, 1, {{"img", OSV_DTYPE_FP16, 4, {2, 1, 32, 48}}, {"logits", OSV_DTYPE_FP16, 2, {2, 2}}}},
    {"mlp", 1, 1, {{"x", OSV_DTYPE_FP32, 2, {-1, 64}}, {"probs", OSV_DTYPE_FP32, 2, {-1, 10}}}},
};

static osv_server_opts_t opts;

static void check_imaging(const osv_model_t *m)
{
    const osv_img_model_t *im = osv_img_model(m);
    if (!im)
        return;
    const osv_img_spec_t *s = &im->spec;
    FZ_CHECK(s->height >= 1 && s->width >= 1 && s->height <= OSV_IMG_MAX_SIDE && s->width <= OSV_IMG_MAX_SIDE,
             "image spec %ux%u", s->width, s->height);
    FZ_CHECK(s->channels == 1 || s->channels == 3, "image spec with %u channels", s->channels);
    FZ_CHECK(im->input < osv_model_input_count(m) && im->post.output < osv_model_output_count(m),
             "image config names input %u / output %u", im->input, im->post.output);
    for (uint32_t c = 0; c < s->channels; c++)
        FZ_CHECK(s->std[c] != 0, "std[%u] is 0", c);
    FZ_CHECK(osv_img_tensor_bytes(s) / s->height / s->width >= s->channels, "tensor size overflows");
}

static void apply(const fz_fake_t *f, const uint8_t *data, size_t size)
{
    osv_model_t *m = fz_fake_model(f, data, size);
    osv_err_t err;
    if (fz_fake_configure(m, NULL, 0, &err) == 0 && osv_server_model_hook(&opts, m, &err) == 0)
        check_imaging(m);
    osv_model_release(m);
}

/* The "image" section alone, as a standalone spec. */
static void spec_alone(const uint8_t *data, size_t size)
{
    osv_model_t *m = fz_fake_model(&fakes[3], data, size);
    osv_err_t err;
    size_t len;
    const char *text;
    if (osv_model_config_parse(m, &err) == 0 && (text = osv_model_config_section(m, "image", &len))) {
        osv_img_spec_t spec;
        if (osv_img_spec_parse(text, len, NULL, &spec, &err) == 0)
            FZ_CHECK(spec.height >= 1 && spec.width >= 1 && (spec.channels == 1 || spec.channels == 3),
                     "standalone spec %ux%ux%u", spec.channels, spec.height, spec.width);
    }
    osv_model_release(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    osv_server_opts_default(&opts);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20)) /* config files are limited to 1 MiB (model.c, MAX_CONFIG_FILE) */
        return 0;
    for (size_t i = 0; i < sizeof fakes / sizeof *fakes; i++)
        apply(&fakes[i], data, size);
    spec_alone(data, size);
    return 0;
}
