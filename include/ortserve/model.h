/* ortserve/model.h — one loaded model version: ORT session, introspection, configuration, labels.
 *
 * A model is immutable after loading and reference-counted: the repository holds one reference,
 * each request holds one while it runs, and the last release frees it. That is what lets a reload
 * swap in a new session while requests on the old one finish normally. Every accessor is
 * thread-safe; strings and arrays returned live as long as the model. */
#ifndef ORTSERVE_MODEL_H
#define ORTSERVE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "env.h"
#include "error.h"
#include "shape.h"
#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osv_model osv_model_t;

/* ONNX value kinds a graph input/output can have. Only tensors can be served. */
typedef enum osv_value_kind {
    OSV_VALUE_TENSOR = 0,
    OSV_VALUE_SEQUENCE,
    OSV_VALUE_MAP,
    OSV_VALUE_OPTIONAL,
    OSV_VALUE_OTHER
} osv_value_kind_t;

typedef struct osv_tensor_info {
    const char *name;
    osv_value_kind_t kind;
    osv_dtype_t dtype;             /* OSV_DTYPE_INVALID when KServe cannot express the ORT type */
    int ort_type;                  /* ONNXTensorElementDataType as reported by ORT */
    int32_t rank;                  /* -1 when the model declares no rank */
    int64_t dims[OSV_MAX_DIMS];    /* -1 for dynamic dims */
    const char *sym[OSV_MAX_DIMS]; /* symbolic dim names ("" when none) */
    const char *const *labels;     /* classification labels for this output, or NULL */
    uint32_t n_labels;
} osv_tensor_info_t;

typedef struct osv_model_meta {
    const char *producer;
    const char *graph_name;
    const char *domain;
    const char *description;
    const char *graph_description;
    int64_t version; /* the model's own model_version, -1 when unset */
    uint32_t n_custom;
    const char *const *custom_keys;
    const char *const *custom_values;
} osv_model_meta_t;

/* Settings from <model>/config.json (all optional). Sections other layers own ("image",
 * "postprocess", "slo") are kept as raw JSON for them (osv_model_config_section). */
typedef struct osv_model_config {
    osv_threads_t threads;       /* < 0 fields inherit the environment's */
    int optimization;            /* 0 none, 1 basic, 2 extended, 99 all (default 99) */
    bool arena;                  /* ORT CPU memory arena (default true) */
    bool mem_pattern;            /* ORT memory pattern planning (default true) */
    osv_limits_t limits;         /* tensor limits for requests to this model */
    bool warmup;                 /* run once at load with zeros (default true) */
    bool allow_dtype_conversion; /* accept numeric inputs of another datatype (default false) */
    int64_t deadline_ms;         /* per-request deadline; -1 = server default, 0 = none */
    int64_t max_queue;           /* queued requests before 503; -1 = server default */
    int batch_dim;               /* 1: first dim is the batch (for inference_count); 0: no; -1 auto */
} osv_model_config_t;

/* Fills *cfg with the defaults above. */
OSV_API void osv_model_config_default(osv_model_config_t *cfg);

/* Loads `path` (a model.onnx file) as model `name` version `version`, applying the config.json in
 * `config_dir` when not NULL (labels files are resolved relative to it). `base_limits` are the
 * server-wide limits a config can tighten or widen. On success *out holds one reference. */
OSV_API int osv_model_load(osv_env_t *env, const char *name, int64_t version, const char *path,
                           const char *config_dir, const osv_limits_t *base_limits, osv_model_t **out,
                           osv_err_t *err);

/* Reference counting; thread-safe. The last release frees the session and everything else. */
OSV_API osv_model_t *osv_model_ref(osv_model_t *m);
OSV_API void osv_model_release(osv_model_t *m);

OSV_API const char *osv_model_name(const osv_model_t *m);
OSV_API int64_t osv_model_version(const osv_model_t *m);
OSV_API const char *osv_model_path(const osv_model_t *m);
OSV_API uint32_t osv_model_input_count(const osv_model_t *m);
OSV_API uint32_t osv_model_output_count(const osv_model_t *m);
OSV_API const osv_tensor_info_t *osv_model_input(const osv_model_t *m, uint32_t i);
OSV_API const osv_tensor_info_t *osv_model_output(const osv_model_t *m, uint32_t i);
/* Index of the input/output named name[0..len), or -1. */
OSV_API int osv_model_find_input(const osv_model_t *m, const char *name, size_t len);
OSV_API int osv_model_find_output(const osv_model_t *m, const char *name, size_t len);
/* The names of the model's inputs (outputs = false) or outputs as "'x', 'y'" for messages, in buf
 * (always NUL-terminated; a list that does not fit ends with ", ..."). Returns buf. Thread-safe. */
OSV_API const char *osv_model_names(const osv_model_t *m, bool outputs, char *buf, size_t cap);
OSV_API const osv_model_meta_t *osv_model_meta(const osv_model_t *m);
OSV_API const osv_model_config_t *osv_model_config(const osv_model_t *m);
/* Raw JSON text of a config section owned by another layer ("image", "slo", ...), or NULL. */
OSV_API const char *osv_model_config_section(const osv_model_t *m, const char *key, size_t *len);
/* The model's statistics block (lives as long as the model). */
OSV_API osv_stats_t *osv_model_stats(const osv_model_t *m);
/* Milliseconds the load took (session creation + warm-up). */
OSV_API double osv_model_load_ms(const osv_model_t *m);
/* How long the warm-up Run took (0 when it did not run or failed): a first estimate of run time. */
OSV_API uint64_t osv_model_warmup_ns(const osv_model_t *m);
/* Resident memory the warm-up Run added to the process (ONNX Runtime's buffers for one run; 0 when
 * it did not run): an estimate of what each further run in flight at once may take. */
OSV_API uint64_t osv_model_warmup_bytes(const osv_model_t *m);
/* Why the warm-up run failed (the model still serves), or NULL. */
OSV_API const char *osv_model_warmup_error(const osv_model_t *m);
/* True when every input and output is a tensor of a KServe datatype (else it cannot be served). */
OSV_API bool osv_model_servable(const osv_model_t *m, const char **why);
/* Bytes a request of batch 1 holds in slots: its inputs and its outputs, each tensor rounded up to
 * 64 as in a slot. OSV_EINVAL when that size is not known before the request: a dim other than the
 * batch dim is dynamic, the rank is undeclared, or a tensor is BYTES or not a tensor. */
OSV_API int osv_model_request_bytes(const osv_model_t *m, uint64_t *in_bytes, uint64_t *out_bytes);

/* Opaque per-model attachment for other layers (imaging preprocessing plan, ...). Set once, right
 * after loading and before the model is shared; the destructor runs when the model is freed. */
OSV_API void osv_model_set_attachment(osv_model_t *m, int key, void *ptr, void (*dtor)(void *));
OSV_API void *osv_model_attachment(const osv_model_t *m, int key);
#define OSV_ATTACH_IMAGING 0
#define OSV_ATTACH_OBS     1
#define OSV_ATTACH_MAX     4

#ifdef __cplusplus
}
#endif
#endif
