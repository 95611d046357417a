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

#include "batching.h"
#include "dtype.h"
#include "env.h"
#include "error.h"
#include "shape.h"
#include "stats.h"
#include "tconfig.h"

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
    bool optional; /* inputs: a request may leave it out (config.pbtxt's `optional`) */
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
    osv_batching_config_t batching; /* max_batch_size, dynamic_batching, instance_group (batching.h) */
    osv_cache_config_t cache;       /* response_cache */
} osv_model_config_t;

/* Fills *cfg with the defaults above. */
OSV_API void osv_model_config_default(osv_model_config_t *cfg);

/* How models are loaded and their Triton configs completed (the `ortserve serve` flags of the same
 * names). Plain data, copied into each model version. */
typedef struct osv_load_opts {
    int32_t default_max_batch_size; /* auto-completion of a model with config.pbtxt: max_batch_size of a
                                       batchable model that does not give one (Triton's
                                       default-max-batch-size, 4) */
    uint32_t native_instances;      /* instances (runs at once) of a model without config.pbtxt, on one
                                       shared session (default 1; the server passes its workers) */
    uint32_t max_instances;         /* instances a config.pbtxt may ask for, all groups (16) */
    uint32_t max_warmup_runs;       /* warm-up executions a config.pbtxt may ask for, all samples and
                                       instances (1000) */
    uint64_t config_max_bytes;      /* config.pbtxt size (1 MiB) */
    uint32_t config_max_depth;      /* config.pbtxt message nesting (32) */
} osv_load_opts_t;

OSV_API void osv_load_opts_default(osv_load_opts_t *o);

/* Loads `path` (a model.onnx file) as model `name` version `version`, applying the config.json in
 * `config_dir` when not NULL (labels files are resolved relative to it). `base_limits` are the
 * server-wide limits a config can tighten or widen. On success *out holds one reference. */
OSV_API int osv_model_load(osv_env_t *env, const char *name, int64_t version, const char *path,
                           const char *config_dir, const osv_limits_t *base_limits, osv_model_t **out,
                           osv_err_t *err);
/* The same with load options (NULL = osv_load_opts_default). config_dir may also hold config.pbtxt,
 * Triton's ModelConfig, which then shapes what clients see (ortserve/tconfig.h). */
OSV_API int osv_model_load_ex(osv_env_t *env, const char *name, int64_t version, const char *path,
                              const char *config_dir, const osv_limits_t *base_limits,
                              const osv_load_opts_t *lo, osv_model_t **out, osv_err_t *err);

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
/* The completed Triton ModelConfig of this version (never NULL). */
OSV_API const osv_triton_config_t *osv_model_triton_config(const osv_model_t *m);
/* True when the model directory had a config.pbtxt (a Triton model; otherwise it is completed with
 * its full ONNX shapes and max_batch_size 0). */
OSV_API bool osv_model_has_pbtxt(const osv_model_t *m);
/* Triton's max_batch_size: 0 = shapes are full shapes; > 0 = the first dim of every input and
 * output is the batch, at most this. */
OSV_API int32_t osv_model_max_batch_size(const osv_model_t *m);
/* True when the first dim of every input and output is a batch dim: max_batch_size > 0 for a model
 * with config.pbtxt; for one without, config.json's batch_dim, else a variable first dim everywhere.
 * What inference_count and classification (one top-k per batch row) go by. */
OSV_API bool osv_model_batched(const osv_model_t *m);
/* Instances: how many runs of this version may execute at once. */
OSV_API uint32_t osv_model_instance_count(const osv_model_t *m);
/* A fingerprint of the files this version was loaded from (model file, config.pbtxt, config.json,
 * labels, warm-up files): a reload keeps a version whose fingerprint did not change. */
OSV_API uint64_t osv_model_fingerprint(const osv_model_t *m);
/* Computes the fingerprint the files would give now (same inputs as osv_model_load_ex). */
OSV_API uint64_t osv_model_files_fingerprint(const char *path, const char *config_dir);
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
/* Runs the model `reps` times with `rows` along the first dimension (other dynamic dims 1; floating-point
 * inputs random in [0, 1), the same on every load; other inputs zero) and gives the fastest run's
 * nanoseconds: a point of its batch cost curve. Load time (it allocates). */
OSV_API int osv_model_time_batch(osv_model_t *m, uint64_t rows, int reps, uint64_t *best_ns, osv_err_t *err);
/* Warm-up executions completed before the version was shared (config.pbtxt's model_warmup samples ×
 * count × sessions, or the one run on zeros). */
OSV_API uint32_t osv_model_warmup_runs(const osv_model_t *m);
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
