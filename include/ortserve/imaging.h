/* ortserve/imaging.h — images in, tensors out: JPEG/PNG decoding, EXIF orientation, resize and
 * normalization fused into one pass that writes a model input's memory, and top-k classification.
 *
 * A model opts in with an "image" section (and optionally "postprocess") in its config.json. The
 * server's load hook calls osv_img_model_attach(), which validates both sections against the model
 * and attaches the resolved osv_img_model_t; osv_img_model() finds it again.
 *
 * One image, as data (osv_img_preprocess):
 *   sniff the magic bytes (never the Content-Type) → read the header and check width × height and
 *   the encoded size against the limits BEFORE any pixel is decoded → decode into the context's
 *   scratch: TurboJPEG with DCT-domain downscaling (1/2, 1/4, 1/8) when the image is at least twice
 *   the resize target, libspng for PNG (every colour type and bit depth, 16-bit reduced to 8 by
 *   taking the high byte) → apply the EXIF orientation as a strided view of that buffer (no copy)
 *   → separable resampling with PIL's kernels (BILINEAR = triangle, BOX for "area" downscaling,
 *   support widened by the scale when downscaling, exactly PIL's coefficient rule) whose vertical
 *   pass normalizes ((v·scale − mean[c]) / std[c]) and stores in the tensor's layout (NCHW/NHWC)
 *   and element type (FP32, FP16, UINT8) straight into caller memory. Only a few float rows are
 *   buffered; no intermediate float image exists.
 *
 * Errors (functions return 0 or a negative OSV_E* code; *err names what was wrong):
 *   OSV_EINVAL        empty input, bad argument, bad config
 *   OSV_EUNSUPPORTED  not JPEG or PNG (GIF, BMP, WebP, TIFF, unknown bytes)   — HTTP maps to 415
 *   OSV_EPARSE        corrupt or truncated image data                         — 400
 *   OSV_ETOOBIG       encoded bytes, pixel count or image count over a limit  — 413
 *   OSV_ENOMEM        no scratch memory                                       — 503
 *   OSV_EBUSY         the image decode budget is spent for now                — 503
 * plus the core's codes from osv_img_classify (OSV_EBUSY, OSV_ECANCELED, OSV_EORT, ...).
 *
 * Threads: specs, limits and attached osv_img_model_t are immutable and may be shared by any
 * number of threads. An osv_img_ctx_t (decoder handles and scratch rows) belongs to one thread at
 * a time. */
#ifndef ORTSERVE_IMAGING_H
#define ORTSERVE_IMAGING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"
#include "infer.h"
#include "model.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- formats ------------------------------------------------------------------------------------ */

typedef enum osv_img_format {
    OSV_IMG_UNKNOWN = 0,
    OSV_IMG_JPEG,
    OSV_IMG_PNG,
    /* recognised so that the error can name them, never decoded: */
    OSV_IMG_GIF,
    OSV_IMG_BMP,
    OSV_IMG_WEBP,
    OSV_IMG_TIFF,
    OSV_IMG_ICO,
    OSV_IMG_JPEG2000,
    OSV_IMG_HEIF,
    OSV_IMG_AVIF,
} osv_img_format_t;

/* Format from the first bytes (magic numbers); OSV_IMG_UNKNOWN when none matches. Thread-safe. */
OSV_API osv_img_format_t osv_img_sniff(const void *data, size_t len);
/* Static name ("JPEG", "PNG", "GIF", ..., "unknown"); never NULL. Thread-safe. */
OSV_API const char *osv_img_format_name(osv_img_format_t f);

/* ---- the preprocessing specification ------------------------------------------------------------ */

typedef enum osv_img_resize {
    OSV_IMG_RESIZE_STRETCH = 0, /* to height × width, aspect ratio not kept */
    OSV_IMG_RESIZE_PAD,         /* keep aspect, fit inside, pad the rest (letterbox) */
    OSV_IMG_RESIZE_CROP,        /* short side to resize_short (torchvision Resize), then center crop */
    OSV_IMG_RESIZE_PADDLE,      /* PaddleOCR resize_norm_img: height to H keeping aspect, width
                                   min(ceil(H·w/h), W), the remaining width padded on the right */
} osv_img_resize_t;

typedef enum osv_img_color { OSV_IMG_RGB = 0, OSV_IMG_BGR, OSV_IMG_GRAY } osv_img_color_t;
typedef enum osv_img_layout { OSV_IMG_NCHW = 0, OSV_IMG_NHWC } osv_img_layout_t;

typedef enum osv_img_filter {
    OSV_IMG_FILTER_BILINEAR = 0, /* PIL Image.BILINEAR: triangle kernel, antialiased when downscaling */
    OSV_IMG_FILTER_AREA,         /* PIL Image.BOX on an axis that is downscaled (area average), BILINEAR
                                    on an axis that is upscaled (BOX would be nearest-neighbour there) */
} osv_img_filter_t;

/* Limits, checked before allocation and before decoding pixels. */
typedef struct osv_img_limits {
    uint64_t max_pixels; /* width × height declared by the header (default 40 000 000) */
    uint64_t max_bytes;  /* encoded bytes of one image (default 20 MiB) */
    uint32_t max_images; /* images in one classify request (default 64) */
} osv_img_limits_t;

#define OSV_IMG_DEFAULT_MAX_PIXELS 40000000ull
#define OSV_IMG_DEFAULT_MAX_BYTES  (20ull << 20)
#define OSV_IMG_DEFAULT_MAX_IMAGES 64u
#define OSV_IMG_MAX_SIDE           16384u /* largest tensor height/width a spec accepts */

/* Fills *l with the defaults above. */
OSV_API void osv_img_limits_default(osv_img_limits_t *l);

/* How encoded images become one image's worth of tensor (a fully resolved "image" section).
 * Plain data: copy it freely. */
typedef struct osv_img_spec {
    uint32_t height, width; /* the tensor's spatial size */
    uint32_t channels;      /* 3 (RGB/BGR) or 1 (GRAY) */
    osv_img_resize_t resize;
    uint32_t resize_short; /* CROP: short side after resizing (≥ height and width) */
    osv_img_color_t color;
    osv_img_layout_t layout;
    osv_img_filter_t filter;
    osv_dtype_t dtype;   /* FP32, FP16 or UINT8 */
    float scale;         /* v·scale: 1/255 by default for FP32/FP16, 1 for UINT8 */
    float mean[3];       /* per tensor channel, in the tensor's channel order (default 0) */
    float std[3];        /* per tensor channel (default 1; never 0) */
    float pad[3];        /* value stored in padded elements (tensor units, i.e. after normalization) */
    bool pad_center;     /* PAD: centre the image (default) instead of top-left */
    bool jpeg_dct_scale; /* decode JPEGs at 1/2..1/8 scale when large enough (default true) */
    osv_img_limits_t limits;
} osv_img_spec_t;

/* Parses a standalone "image" object (the JSON text of config.json's "image" section) into *out.
 * Without a model there is nothing to infer dims from, so "height" and "width" are required and
 * "dtype" (default FP32) and "layout" (default NCHW) are taken as given. Unknown keys, wrong types
 * and out-of-range values are errors naming the key. `defaults` (may be NULL) supplies limits the
 * section does not set. Thread-safe; allocates nothing. */
OSV_API int osv_img_spec_parse(const char *json, size_t len, const osv_img_limits_t *defaults,
                               osv_img_spec_t *out, osv_err_t *err);

/* Bytes one image occupies in the tensor: channels × height × width × element size. */
OSV_API uint64_t osv_img_tensor_bytes(const osv_img_spec_t *spec);
/* Tensor shape for a batch of n images: [n,C,H,W] (NCHW) or [n,H,W,C] (NHWC), into dims[0..4). */
OSV_API void osv_img_tensor_dims(const osv_img_spec_t *spec, int64_t n, int64_t dims[4]);

/* ---- per-model configuration -------------------------------------------------------------------- */

typedef struct osv_img_post {
    uint32_t output; /* model output holding the class scores ("output", default: the first) */
    bool softmax;    /* apply softmax to each row before ranking (default false) */
    uint32_t top_k;  /* default k (5) */
} osv_img_post_t;

/* A model's resolved imaging configuration; attached at load, immutable afterwards. */
typedef struct osv_img_model {
    osv_img_spec_t spec;
    osv_img_post_t post;
    uint32_t input;   /* index of the model input the images feed */
    int64_t batch;    /* that input's first dim: -1 dynamic (images run as one batch), else fixed */
    uint32_t classes; /* scores per image when the output's last dim is static, else 0 */
} osv_img_model_t;

/* Reads the model's "image" and "postprocess" config sections, validates them against the model's
 * input and output (rank 4, element type, channel/height/width dims, layout) and attaches the result
 * (OSV_ATTACH_IMAGING; freed with the model). No "image" section: returns 0 and attaches nothing; a
 * "postprocess" section without "image" is an error. `defaults` (may be NULL) are the limits the
 * section does not override (server flags). Call once per model version, before it is shared (the
 * repository's load hook). */
OSV_API int osv_img_model_attach(osv_model_t *m, const osv_img_limits_t *defaults, osv_err_t *err);

/* The model's imaging configuration, or NULL when its config.json has no "image" section. Lives as
 * long as the model. Thread-safe. */
OSV_API const osv_img_model_t *osv_img_model(const osv_model_t *m);

/* What a client needs to send m images (issue 18, item 9): the input that takes them as BYTES
 * ("image_input"), its datatype and shape (one encoded image per element), the formats decoded, the
 * size images are resized to (WIDTHxHEIGHT) and the classify endpoint. For a model's metadata
 * `parameters` and its config's; string values. Returns how many were written (0: not an image model). */
#define OSV_IMG_PARAMS 6
typedef struct osv_img_param {
    const char *key;
    char value[160];
} osv_img_param_t;
OSV_API uint32_t osv_img_model_params(const osv_model_t *m, osv_img_param_t out[OSV_IMG_PARAMS]);

/* ---- decoding context --------------------------------------------------------------------------- */

typedef struct osv_img_ctx osv_img_ctx_t;

/* Creates a context: scratch buffers that grow to the largest image seen and are kept between images
 * while they total at most OSV_IMG_KEEP_BYTES (larger ones are released after each image), so
 * steady-state calls allocate nothing of ortserve's own (the codecs allocate their internal state per
 * image). On success *out is owned by the caller: free with osv_img_ctx_destroy (which also returns
 * what it holds to its budget). Use from one thread at a time. */
OSV_API int osv_img_ctx_create(osv_img_ctx_t **out, osv_err_t *err);
OSV_API void osv_img_ctx_destroy(osv_img_ctx_t *ctx);

#define OSV_IMG_KEEP_BYTES (4u << 20) /* scratch a context keeps between images (reserved while kept) */

/* ---- decode memory budget ------------------------------------------------------------------------ */

/* A budget of the bytes image decoding may hold at once across every context attached to it (the
 * server has one). Before decoding, a context computes from the header an upper bound of what the
 * image needs (osv_img_decode_cost) and reserves it; decoding releases it when done. Scratch a
 * context keeps between images stays reserved while kept. Lock-free (one atomic counter). */
typedef struct osv_img_budget osv_img_budget_t;

typedef struct osv_img_budget_stats {
    uint64_t limit;           /* bytes; 0 = unlimited (counted, never refused) */
    uint64_t in_use;          /* reserved now (gauge) */
    uint64_t high_water;      /* most reserved at once (gauge) */
    uint64_t refused_busy;    /* reservations refused because the budget was spent (503) */
    uint64_t refused_too_big; /* reservations larger than the whole budget (413) */
} osv_img_budget_stats_t;

/* Defaults of osv_img_budget_default without a cgroup limit: an eighth of memory, clamped. */
#define OSV_IMG_BUDGET_MIN_DEFAULT (64ull << 20)
#define OSV_IMG_BUDGET_MAX_DEFAULT (1ull << 30)

/* Creates a budget of `limit` bytes (0 = unlimited). On success *out is owned by the caller: destroy
 * it after every context attached to it was destroyed or detached. */
OSV_API int osv_img_budget_create(uint64_t limit, osv_img_budget_t **out, osv_err_t *err);
OSV_API void osv_img_budget_destroy(osv_img_budget_t *b);

/* Reserves `bytes`: 0, OSV_EBUSY when they do not fit in what is left now (retry later), OSV_ETOOBIG
 * when they exceed the whole budget. A NULL budget accepts everything. Thread-safe, lock-free. */
OSV_API int osv_img_budget_reserve(osv_img_budget_t *b, uint64_t bytes);
/* Returns bytes reserved earlier. Thread-safe. */
OSV_API void osv_img_budget_release(osv_img_budget_t *b, uint64_t bytes);
/* The limit (0 for NULL or unlimited). */
OSV_API uint64_t osv_img_budget_limit(const osv_img_budget_t *b);
/* Snapshot of the counters (relaxed reads). Thread-safe. */
OSV_API void osv_img_budget_get_stats(const osv_img_budget_t *b, osv_img_budget_stats_t *out);

/* The default budget: an eighth of the memory this process may use (the smaller of the cgroup limit
 * and physical memory), clamped to [OSV_IMG_BUDGET_MIN_DEFAULT, OSV_IMG_BUDGET_MAX_DEFAULT]; under a
 * cgroup limit at most half of what the group has left (limit − working set − `committed`, the
 * memory already promised elsewhere, e.g. the tensor pool and ONNX Runtime's runs in flight), at
 * least 1 MiB. Call it after loading models. Thread-safe. */
OSV_API uint64_t osv_img_budget_default(uint64_t committed);

/* Attaches ctx to budget b (NULL: no budget, nothing is counted). What the context kept under its
 * previous budget is freed first. The budget must outlive the attachment. */
OSV_API void osv_img_ctx_set_budget(osv_img_ctx_t *ctx, osv_img_budget_t *b);

/* Upper bound of the memory one image needs to be decoded and resampled under spec, from its header:
 *   codec:    the decoder's own allocations — JPEG: libjpeg's row buffers at the chosen DCT scale, its
 *             tables and, for a progressive or multi-scan file, the whole-image coefficient buffer
 *             (every component's blocks at full resolution, 128 bytes a block); PNG: libspng's two
 *             scanlines, its deinterlacing row, zlib's state and window (ancillary chunks are counted
 *             as libspng allocates them);
 *   pixels:   the decoded image (at the DCT scale for JPEG);
 *   resample: the resampler's scratch (source row, coefficient tables, ring of float rows).
 * total = codec + pixels + resample. Checks the limits of spec like osv_img_preprocess. */
typedef struct osv_img_cost {
    uint64_t codec, pixels, resample, total;
} osv_img_cost_t;
OSV_API int osv_img_decode_cost(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const void *data, size_t len,
                                osv_img_cost_t *cost, osv_err_t *err);

/* The calling thread's own context, created on first use and destroyed when the thread exits
 * (pthread key destructor). NULL (with *err set) when it cannot be created. The pointer is valid
 * on this thread until it exits; never pass it to another thread. */
OSV_API osv_img_ctx_t *osv_img_thread_ctx(osv_err_t *err);

/* ---- one image ---------------------------------------------------------------------------------- */

typedef struct osv_img_info {
    osv_img_format_t format;
    uint32_t width, height;                 /* as stored (header) */
    uint32_t components;                    /* as stored: 1 gray, 3 colour, 4 CMYK/RGBA-like */
    uint32_t orientation;                   /* EXIF orientation 1..8 (1 when absent or invalid) */
    uint32_t decoded_width, decoded_height; /* after DCT-domain downscaling, before orientation */
    uint32_t resized_width, resized_height; /* the image inside the tensor before crop/pad */
} osv_img_info_t;

/* Header only: format, dims, components and orientation, with the limits of `limits` (may be NULL:
 * defaults) enforced. Never decodes pixels. */
OSV_API int osv_img_probe(osv_img_ctx_t *ctx, const void *data, size_t len, const osv_img_limits_t *limits,
                          osv_img_info_t *info, osv_err_t *err);

/* Decodes the encoded image data[0..len) and writes exactly osv_img_tensor_bytes(spec) bytes of
 * tensor at dst (caller memory of dst_len bytes, aligned for spec->dtype — e.g. one image's part of
 * an input's pool slot). `info` may be NULL. On error dst may be partly written. With a budget
 * attached, the image's osv_img_decode_cost is reserved before a pixel is decoded and released
 * after: OSV_EBUSY when the budget is spent for now, OSV_ETOOBIG when the image needs more than the
 * whole budget (both messages name the budget). */
OSV_API int osv_img_preprocess(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const void *data, size_t len,
                               void *dst, uint64_t dst_len, osv_img_info_t *info, osv_err_t *err);

/* One encoded image (borrowed bytes). */
typedef struct osv_img_blob {
    const void *data;
    size_t len;
} osv_img_blob_t;

/* n images into consecutive image slots of dst: image i at dst + i · osv_img_tensor_bytes(spec)
 * (the layout of an [n,C,H,W] or [n,H,W,C] tensor). dst_len must hold all n. On failure *failed
 * (may be NULL) and err->index are the index of the image that failed (the message does not name
 * it: the caller knows what the images are called). */
OSV_API int osv_img_preprocess_batch(osv_img_ctx_t *ctx, const osv_img_spec_t *spec,
                                     const osv_img_blob_t *imgs, uint32_t n, void *dst, uint64_t dst_len,
                                     uint32_t *failed, osv_err_t *err);

/* The same for a serialized BYTES tensor of n elements (Triton's binary form, as osv_infer and the
 * KServe binary extension use: per element a 4-byte little-endian length, then the bytes) — the
 * KServe v2 path for an input declared an image: decode the request's BYTES elements straight into
 * the model input's slot range. Framing errors are OSV_EPARSE. */
OSV_API int osv_img_preprocess_bytes(osv_img_ctx_t *ctx, const osv_img_spec_t *spec, const void *serialized,
                                     uint64_t len, uint32_t n, void *dst, uint64_t dst_len, uint32_t *failed,
                                     osv_err_t *err);

/* ---- classification ----------------------------------------------------------------------------- */

typedef struct osv_img_class {
    uint32_t index;
    float score;
    const char *label; /* the output's label (lives as long as the model), or NULL */
} osv_img_class_t;

/* Top-k of one row of n scores (dtype FP32, FP64 or FP16), after a softmax when `softmax`: highest
 * score first, ties by lower index. Writes min(k, n) entries to out (labels left NULL) and returns
 * that count, or a negative OSV_E* code. NaN scores rank last. Allocates nothing. */
OSV_API int osv_img_topk(const void *scores, osv_dtype_t dtype, uint32_t n, bool softmax, uint32_t k,
                         osv_img_class_t *out, osv_err_t *err);

/* Timings of one osv_img_classify call (nanoseconds, summed over its runs). */
typedef struct osv_img_times {
    uint64_t preprocess_ns; /* decode + resize + normalize, into the slot */
    uint64_t run_ns;        /* ORT Run */
    uint64_t post_ns;       /* softmax + top-k */
    uint32_t runs;          /* Runs made (1 for a dynamic batch, n for a model with batch 1) */
} osv_img_times_t;

typedef struct osv_img_classify_opts {
    osv_pool_t *pool; /* slots for the input tensor and the scores (required) */
    uint32_t top_k;   /* 0 = the model's default (postprocess.top_k) */
    /* Optional: called right before (begin = true) and after each Run, on the calling thread, e.g. to
     * register the infer with a deadline watchdog that may osv_infer_cancel() it. */
    void (*on_run)(void *ud, osv_infer_t *inf, bool begin);
    void *ud;
    osv_img_times_t *times; /* optional */
} osv_img_classify_opts_t;

/* Classifies n images on model m (which must have an imaging configuration and one input): all n
 * run as one batch when the input's first dim is dynamic, otherwise in runs of the fixed batch size
 * (the last one padded with pad values). Image i's results go to out[i·k .. i·k + *k_out), where k is
 * the requested top_k (or the model's default) and *k_out = min(k, classes). `out` holds n·k entries
 * (caller memory). The caller keeps a model reference for the call. On an image's failure *failed
 * (may be NULL) is its index. Thread-safe for distinct contexts. */
OSV_API int osv_img_classify(osv_img_ctx_t *ctx, osv_model_t *m, const osv_img_blob_t *imgs, uint32_t n,
                             const osv_img_classify_opts_t *opts, osv_img_class_t *out, uint32_t *k_out,
                             uint32_t *failed, osv_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
