/* config.c — the "image" and "postprocess" sections of a model's config.json: strict parsing (an
 * unknown key, a wrong type or an out-of-range value is an error naming the key), resolution
 * against the model's input and output (dims, layout, element type), and the attachment.
 *
 *   "image": {
 *     "input": "x",                 model input fed with images (default: the only input)
 *     "height": 224, "width": 224,  tensor size (default: the input's static dims)
 *     "resize": "stretch" | "pad" | "crop" | "paddle_ocr"            (default "stretch")
 *     "resize_short": 256,          crop: short side before the center crop (default max(h, w))
 *     "color": "RGB" | "BGR" | "GRAY",                               (default "RGB")
 *     "layout": "NCHW" | "NHWC",    (default: where the input's channel dim is)
 *     "dtype": "FP32" | "FP16" | "UINT8",   must match the input (default: the input's)
 *     "scale": 0.00392156862745098, (default 1/255 for FP32/FP16, 1 for UINT8)
 *     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],   number or one per channel
 *     "pad_value": 0,               number or one per channel, in tensor units (default 0)
 *     "pad_position": "center" | "top_left",                         (default "center")
 *     "filter": "bilinear" | "area",                                 (default "bilinear")
 *     "jpeg_dct_scaling": true,
 *     "max_pixels": 40000000, "max_bytes": 20971520, "max_images": 64   (default: server's)
 *   },
 *   "postprocess": {"output": "probs", "softmax": false, "top_k": 5}
 *
 * Runs at load time only (never on a request). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "imaging/imaging_internal.h"
#include "util/json.h"

#define CFG_TOKENS 256
#define MAX_TOP_K  100000

typedef struct img_cfg {
    osv_img_spec_t s;
    bool has_h, has_w, has_layout, has_dtype, has_scale, has_short;
    bool has_max_pixels, has_max_bytes, has_max_images;
    uint32_t n_mean, n_std, n_pad; /* values given: 0 (unset), 1 (all channels) or 3 */
    float mean[3], std[3], pad[3];
    char input[256];
    /* postprocess */
    char output[256];
    bool softmax;
    uint32_t top_k;
} img_cfg_t;

typedef struct pctx {
    osv_json_doc_t doc;
    osv_err_t *err;
    const char *section;
} pctx_t;

static int bad(pctx_t *p, uint32_t key, const char *what)
{
    const osv_json_tok_t *k = &p->doc.toks[key];
    return osv_err_set(p->err, OSV_EINVAL, "config.json: %s.%.*s %s", p->section,
                       (int)(k->len > 64 ? 64 : k->len), p->doc.src + k->start, what);
}

static int get_int(pctx_t *p, uint32_t key, int64_t lo, int64_t hi, int64_t *out)
{
    char what[96];
    int64_t v;
    if (osv_json_tok_i64(&p->doc, key + 1, &v, NULL) == 0 && v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    snprintf(what, sizeof what, "must be an integer in [%" PRId64 ", %" PRId64 "]", lo, hi);
    return bad(p, key, what);
}

static int get_bool(pctx_t *p, uint32_t key, bool *out)
{
    const osv_json_tok_t *t = &p->doc.toks[key + 1];
    if (t->type == OSV_JSON_TRUE || t->type == OSV_JSON_FALSE) {
        *out = t->type == OSV_JSON_TRUE;
        return 0;
    }
    return bad(p, key, "must be true or false");
}

/* One of `names` (NULL-terminated); returns its index or an error listing them. */
static int get_enum(pctx_t *p, uint32_t key, const char *const *names, int *out)
{
    char list[256] = "must be one of ";
    for (int i = 0; names[i]; i++) {
        if (osv_json_str_eq(&p->doc, key + 1, names[i])) {
            *out = i;
            return 0;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", names[i]);
    }
    return bad(p, key, list);
}

static int get_str(pctx_t *p, uint32_t key, char *dst, size_t cap)
{
    size_t n;
    if (p->doc.toks[key + 1].type != OSV_JSON_STRING ||
        osv_json_str_unescape(&p->doc, key + 1, dst, cap, &n) != 0 || n == 0 || strlen(dst) != n)
        return bad(p, key, "must be a non-empty string");
    return 0;
}

/* A finite number, or an array of 1 or 3 finite numbers. */
static int get_floats(pctx_t *p, uint32_t key, float out[3], uint32_t *n, bool nonzero)
{
    const osv_json_tok_t *t = &p->doc.toks[key + 1];
    double v[3];
    uint32_t cnt = t->type == OSV_JSON_NUMBER ? 1 : t->type == OSV_JSON_LEAF_ARRAY ? t->count : 0;
    if ((cnt != 1 && cnt != 3) || (t->type == OSV_JSON_LEAF_ARRAY && t->ndim != 1) ||
        osv_json_leaves_decode(&p->doc, key + 1, OSV_JSON_KIND_F64, v, cnt, NULL) != 0)
        return bad(p, key, "must be a number or an array of 1 or 3 numbers");
    for (uint32_t i = 0; i < cnt; i++) {
        /* std divides: a value that is 0 once it is a float (2e-95), or so small that scale / std
         * overflows, would turn every pixel into inf or NaN. */
        if (!isfinite(v[i]) || fabs(v[i]) > 3.4e38 || (nonzero && (fabs(v[i]) < 1e-6 || fabs(v[i]) > 1e6)))
            return bad(p, key,
                       nonzero ? "values must be finite, 1e-6 to 1e6 in magnitude" : "values must be finite");
        out[i] = (float)v[i];
    }
    for (uint32_t i = cnt; i < 3; i++)
        out[i] = out[0];
    *n = cnt;
    return 0;
}

static int image_member(pctx_t *p, img_cfg_t *c, uint32_t key)
{
    static const char *const resizes[] = {"stretch", "pad", "crop", "paddle_ocr", NULL};
    static const char *const colors[] = {"RGB", "BGR", "GRAY", NULL};
    static const char *const layouts[] = {"NCHW", "NHWC", NULL};
    static const char *const dtypes[] = {"FP32", "FP16", "UINT8", NULL};
    static const char *const positions[] = {"center", "top_left", NULL};
    static const char *const filters[] = {"bilinear", "area", NULL};
    osv_json_doc_t *d = &p->doc;
    int64_t v;
    int e, rc;
    double f;
#define IS(lit) osv_json_str_eq(d, key, lit)
    if (IS("input"))
        return get_str(p, key, c->input, sizeof c->input);
    if (IS("height") || IS("width")) {
        if ((rc = get_int(p, key, 1, OSV_IMG_MAX_SIDE, &v)) == 0) {
            *(IS("height") ? &c->s.height : &c->s.width) = (uint32_t)v;
            *(IS("height") ? &c->has_h : &c->has_w) = true;
        }
        return rc;
    }
    if (IS("resize")) {
        if ((rc = get_enum(p, key, resizes, &e)) == 0)
            c->s.resize = (osv_img_resize_t)e;
        return rc;
    }
    if (IS("resize_short")) {
        if ((rc = get_int(p, key, 1, OSV_IMG_MAX_SIDE, &v)) == 0) {
            c->s.resize_short = (uint32_t)v;
            c->has_short = true;
        }
        return rc;
    }
    if (IS("color")) {
        if ((rc = get_enum(p, key, colors, &e)) == 0) {
            c->s.color = (osv_img_color_t)e;
            c->s.channels = e == OSV_IMG_GRAY ? 1 : 3;
        }
        return rc;
    }
    if (IS("layout")) {
        if ((rc = get_enum(p, key, layouts, &e)) == 0) {
            c->s.layout = (osv_img_layout_t)e;
            c->has_layout = true;
        }
        return rc;
    }
    if (IS("dtype")) {
        if ((rc = get_enum(p, key, dtypes, &e)) == 0) {
            c->s.dtype = e == 0 ? OSV_DTYPE_FP32 : e == 1 ? OSV_DTYPE_FP16 : OSV_DTYPE_UINT8;
            c->has_dtype = true;
        }
        return rc;
    }
    if (IS("scale")) {
        if (osv_json_tok_f64(d, key + 1, &f, NULL) != 0 || !(f >= 1e-6) || !(f <= 1e6))
            return bad(p, key, "must be a number from 1e-6 to 1e6");
        c->s.scale = (float)f;
        c->has_scale = true;
        return 0;
    }
    if (IS("mean"))
        return get_floats(p, key, c->mean, &c->n_mean, false);
    if (IS("std"))
        return get_floats(p, key, c->std, &c->n_std, true);
    if (IS("pad_value"))
        return get_floats(p, key, c->pad, &c->n_pad, false);
    if (IS("pad_position")) {
        if ((rc = get_enum(p, key, positions, &e)) == 0)
            c->s.pad_center = e == 0;
        return rc;
    }
    if (IS("filter")) {
        if ((rc = get_enum(p, key, filters, &e)) == 0)
            c->s.filter = (osv_img_filter_t)e;
        return rc;
    }
    if (IS("jpeg_dct_scaling"))
        return get_bool(p, key, &c->s.jpeg_dct_scale);
    if (IS("max_pixels")) {
        if ((rc = get_int(p, key, 1, INT64_MAX, &v)) == 0) {
            c->s.limits.max_pixels = (uint64_t)v;
            c->has_max_pixels = true;
        }
        return rc;
    }
    if (IS("max_bytes")) {
        if ((rc = get_int(p, key, 1, INT64_MAX, &v)) == 0) {
            c->s.limits.max_bytes = (uint64_t)v;
            c->has_max_bytes = true;
        }
        return rc;
    }
    if (IS("max_images")) {
        if ((rc = get_int(p, key, 1, 1 << 20, &v)) == 0) {
            c->s.limits.max_images = (uint32_t)v;
            c->has_max_images = true;
        }
        return rc;
    }
#undef IS
    return bad(p, key,
               "is not a known key (valid: input, height, width, resize, resize_short, color, layout, dtype, "
               "scale, mean, std, pad_value, pad_position, filter, jpeg_dct_scaling, max_pixels, max_bytes, "
               "max_images)");
}

static int post_member(pctx_t *p, img_cfg_t *c, uint32_t key)
{
    int64_t v;
    int rc;
    if (osv_json_str_eq(&p->doc, key, "output"))
        return get_str(p, key, c->output, sizeof c->output);
    if (osv_json_str_eq(&p->doc, key, "softmax"))
        return get_bool(p, key, &c->softmax);
    if (osv_json_str_eq(&p->doc, key, "top_k")) {
        if ((rc = get_int(p, key, 1, MAX_TOP_K, &v)) == 0)
            c->top_k = (uint32_t)v;
        return rc;
    }
    return bad(p, key, "is not a known key (valid: output, softmax, top_k)");
}

static int parse_section(const char *text, size_t len, const char *name, img_cfg_t *c, bool image,
                         osv_err_t *err)
{
    osv_json_tok_t toks[CFG_TOKENS];
    osv_json_limits_t lim = {.max_depth = 4};
    osv_json_err_t jerr;
    pctx_t p = {.err = err, .section = name};
    int rc;
    if (osv_json_parse(text, len, toks, CFG_TOKENS, &lim, &p.doc, &jerr) != 0)
        return osv_err_set(err, OSV_EINVAL, "config.json: '%s': %s", name, jerr.msg);
    if (toks[0].type != OSV_JSON_OBJECT)
        return osv_err_set(err, OSV_EINVAL, "config.json: '%s' must be an object", name);
    for (uint32_t i = 0, k = 1; i < toks[0].count; i++, k = toks[k + 1].next)
        if ((rc = image ? image_member(&p, c, k) : post_member(&p, c, k)) != 0)
            return rc;
    return 0;
}

static void cfg_init(img_cfg_t *c, const osv_img_limits_t *defaults)
{
    memset(c, 0, sizeof *c);
    c->s.channels = 3;
    c->s.dtype = OSV_DTYPE_FP32;
    c->s.pad_center = true;
    c->s.jpeg_dct_scale = true;
    c->top_k = 5;
    if (defaults)
        c->s.limits = *defaults;
    else
        osv_img_limits_default(&c->s.limits);
}

/* Defaults that depend on other keys, and the checks between keys. */
static int finish(img_cfg_t *c, osv_err_t *err)
{
    osv_img_spec_t *s = &c->s;
    if (!c->has_scale)
        s->scale = s->dtype == OSV_DTYPE_UINT8 ? 1.0f : 1.0f / 255.0f;
    for (int i = 0; i < 3; i++) {
        s->mean[i] = c->n_mean ? c->mean[i] : 0.0f;
        s->std[i] = c->n_std ? c->std[i] : 1.0f;
        s->pad[i] = c->n_pad ? c->pad[i] : 0.0f;
    }
    if ((c->n_mean == 3 || c->n_std == 3 || c->n_pad == 3) && s->channels != 3)
        return osv_err_set(
            err, OSV_EINVAL,
            "config.json: image.mean/std/pad_value have 3 values but color \"GRAY\" has 1 channel");
    if (s->resize == OSV_IMG_RESIZE_CROP) {
        uint32_t need = s->height > s->width ? s->height : s->width;
        if (!c->has_short)
            s->resize_short = need;
        if (s->resize_short < need)
            return osv_err_set(
                err, OSV_EINVAL,
                "config.json: image.resize_short (%u) must be at least the crop's height and width (%u)",
                s->resize_short, need);
    } else if (c->has_short) {
        return osv_err_set(err, OSV_EINVAL,
                           "config.json: image.resize_short applies to resize \"crop\" only");
    }
    return 0;
}

int osv_img_spec_parse(const char *json, size_t len, const osv_img_limits_t *defaults, osv_img_spec_t *out,
                       osv_err_t *err)
{
    img_cfg_t c;
    int rc;
    cfg_init(&c, defaults);
    if ((rc = parse_section(json, len, "image", &c, true, err)) != 0)
        return rc;
    if (!c.has_h || !c.has_w)
        return osv_err_set(err, OSV_EINVAL, "image spec: \"height\" and \"width\" are required");
    if (c.input[0])
        return osv_err_set(err, OSV_EINVAL, "image spec: \"input\" needs a model");
    if ((rc = finish(&c, err)) != 0)
        return rc;
    *out = c.s;
    return 0;
}

/* ---- resolving against the model ------------------------------------------------------------------- */

static osv_dtype_t img_dtype_ok(osv_dtype_t dt)
{
    return dt == OSV_DTYPE_FP32 || dt == OSV_DTYPE_FP16 || dt == OSV_DTYPE_UINT8 ? dt : OSV_DTYPE_INVALID;
}

static int resolve_input(img_cfg_t *c, osv_model_t *m, osv_img_model_t *im, osv_err_t *err)
{
    osv_img_spec_t *s = &c->s;
    const osv_tensor_info_t *t;
    int idx;
    if (c->input[0]) {
        if ((idx = osv_model_find_input(m, c->input, strlen(c->input))) < 0)
            return osv_err_set(err, OSV_EINVAL, "config.json: image.input '%s' is not an input of the model",
                               c->input);
    } else if (osv_model_input_count(m) == 1) {
        idx = 0;
    } else {
        return osv_err_set(err, OSV_EINVAL, "config.json: image.input must name one of the model's %u inputs",
                           osv_model_input_count(m));
    }
    t = osv_model_input(m, (uint32_t)idx);
    im->input = (uint32_t)idx;
    if (t->rank != 4)
        return osv_err_set(
            err, OSV_EINVAL,
            "config.json: image input '%s' must have rank 4 ([N,C,H,W] or [N,H,W,C]); it has %d", t->name,
            t->rank);
    if (!img_dtype_ok(t->dtype))
        return osv_err_set(err, OSV_EINVAL,
                           "config.json: image input '%s' is %s; images feed FP32, FP16 or UINT8", t->name,
                           osv_dtype_name(t->dtype));
    if (c->has_dtype && s->dtype != t->dtype)
        return osv_err_set(err, OSV_EINVAL, "config.json: image.dtype is %s but input '%s' is %s",
                           osv_dtype_name(s->dtype), t->name, osv_dtype_name(t->dtype));
    s->dtype = t->dtype;
    const int64_t C = s->channels;
    if (!c->has_layout) /* where the channel dim is; NCHW when both (or neither) could be */
        s->layout = t->dims[3] == C && t->dims[1] != C ? OSV_IMG_NHWC : OSV_IMG_NCHW;
    const int ci = s->layout == OSV_IMG_NHWC ? 3 : 1, hi = s->layout == OSV_IMG_NHWC ? 1 : 2, wi = hi + 1;
    if (t->dims[ci] >= 0 && t->dims[ci] != C)
        return osv_err_set(err, OSV_EINVAL,
                           "config.json: image input '%s' has %" PRId64
                           " channels at dim %d (%s) but color %s has %" PRId64,
                           t->name, t->dims[ci], ci, s->layout == OSV_IMG_NHWC ? "NHWC" : "NCHW",
                           s->color == OSV_IMG_GRAY  ? "GRAY"
                           : s->color == OSV_IMG_BGR ? "BGR"
                                                     : "RGB",
                           C);
    for (int k = 0; k < 2; k++) {
        int64_t d = t->dims[k ? wi : hi];
        uint32_t *dst = k ? &s->width : &s->height;
        bool given = k ? c->has_w : c->has_h;
        const char *nm = k ? "width" : "height";
        if (given && d >= 0 && d != (int64_t)*dst)
            return osv_err_set(err, OSV_EINVAL, "config.json: image.%s is %u but input '%s' has %" PRId64, nm,
                               *dst, t->name, d);
        if (!given) {
            if (d <= 0 || d > OSV_IMG_MAX_SIDE)
                return osv_err_set(err, OSV_EINVAL,
                                   "config.json: image.%s is required: input '%s' has a dynamic %s dim", nm,
                                   t->name, nm);
            *dst = (uint32_t)d;
        }
    }
    if (t->dims[0] == 0)
        return osv_err_set(err, OSV_EINVAL, "config.json: image input '%s' has a batch dim of 0", t->name);
    im->batch = t->dims[0] < 0 ? -1 : t->dims[0];
    return 0;
}

static int resolve_output(img_cfg_t *c, osv_model_t *m, osv_img_model_t *im, osv_err_t *err)
{
    const osv_tensor_info_t *t;
    int idx = 0;
    if (c->output[0] && (idx = osv_model_find_output(m, c->output, strlen(c->output))) < 0)
        return osv_err_set(err, OSV_EINVAL,
                           "config.json: postprocess.output '%s' is not an output of the model", c->output);
    if (osv_model_output_count(m) == 0)
        return osv_err_set(err, OSV_EINVAL, "config.json: the model has no output to classify");
    t = osv_model_output(m, (uint32_t)idx);
    if (t->dtype != OSV_DTYPE_FP32 && t->dtype != OSV_DTYPE_FP16 && t->dtype != OSV_DTYPE_FP64)
        return osv_err_set(err, OSV_EINVAL,
                           "config.json: output '%s' is %s; class scores must be FP32, FP16 or FP64", t->name,
                           osv_dtype_name(t->dtype));
    if (t->rank == 0)
        return osv_err_set(err, OSV_EINVAL, "config.json: output '%s' is a scalar, not class scores",
                           t->name);
    im->post = (osv_img_post_t){.output = (uint32_t)idx, .softmax = c->softmax, .top_k = c->top_k};
    im->classes = t->rank > 0 && t->dims[t->rank - 1] > 0 ? (uint32_t)t->dims[t->rank - 1] : 0;
    return 0;
}

int osv_img_model_attach(osv_model_t *m, const osv_img_limits_t *defaults, osv_err_t *err)
{
    size_t ilen = 0, plen = 0;
    const char *itext = osv_model_config_section(m, "image", &ilen);
    const char *ptext = osv_model_config_section(m, "postprocess", &plen);
    osv_img_model_t *im;
    img_cfg_t c;
    int rc;
    if (!itext) {
        if (ptext)
            return osv_err_set(err, OSV_EINVAL, "config.json: 'postprocess' needs an 'image' section");
        return 0;
    }
    cfg_init(&c, defaults);
    if ((rc = parse_section(itext, ilen, "image", &c, true, err)) != 0 ||
        (ptext && (rc = parse_section(ptext, plen, "postprocess", &c, false, err)) != 0))
        return rc;
    if (!(im = osv_calloc(1, sizeof *im)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if ((rc = resolve_input(&c, m, im, err)) != 0 || (rc = finish(&c, err)) != 0 ||
        (rc = resolve_output(&c, m, im, err)) != 0) {
        osv_free(im);
        return rc;
    }
    im->spec = c.s;
    osv_model_set_attachment(m, OSV_ATTACH_IMAGING, im, osv_free);
    return 0;
}

const osv_img_model_t *osv_img_model(const osv_model_t *m)
{
    return osv_model_attachment(m, OSV_ATTACH_IMAGING);
}

uint32_t osv_img_model_params(const osv_model_t *m, osv_img_param_t out[OSV_IMG_PARAMS])
{
    const osv_img_model_t *im = osv_img_model(m);
    const osv_tensor_info_t *in;
    uint32_t n = 0;
    if (!im || !(in = osv_model_input(m, im->input)))
        return 0;
    out[n].key = "image_input";
    snprintf(out[n++].value, sizeof out->value, "%s", in->name);
    out[n].key = "image_input_datatype";
    snprintf(out[n++].value, sizeof out->value, "BYTES");
    out[n].key = "image_input_shape";
    snprintf(out[n++].value, sizeof out->value, "[%" PRId64 "]", im->batch > 0 ? im->batch : -1);
    out[n].key = "image_formats";
    snprintf(out[n++].value, sizeof out->value, "JPEG,PNG");
    out[n].key = "image_size";
    snprintf(out[n++].value, sizeof out->value, "%ux%u", im->spec.width, im->spec.height);
    out[n].key = "image_classify";
    snprintf(out[n++].value, sizeof out->value, "/v2/models/%s/classify", osv_model_name(m));
    return n;
}
