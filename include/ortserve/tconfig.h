/* ortserve/tconfig.h — a model version's Triton ModelConfig, completed, as plain data.
 *
 * Every model version carries one: read from <model>/config.pbtxt when there is one (Triton's
 * ModelConfig in protobuf text format), completed from the ONNX model the way Triton's ONNX Runtime
 * backend auto-completes (inputs, outputs, max_batch_size, dynamic batching, instance groups), with
 * the settings of ortserve's own config.json that Triton has a field for folded in (threads, graph
 * optimization, memory arena, labels, warm-up). It is what the model serves: fronts render it as
 * Triton's JSON (GET .../config) or its protobuf (the gRPC ModelConfig method) without deciding
 * anything themselves. Field names and meanings follow common/protobuf/model_config.proto; only what
 * an ONNX model served on CPUs can use is represented (the reader refuses the rest by name).
 *
 * Lifetime: owned by the model version (osv_model_triton_config), immutable, valid while a
 * reference to it is held; any thread may read it. */
#ifndef ORTSERVE_TCONFIG_H
#define ORTSERVE_TCONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "batching.h"
#include "dtype.h"
#include "error.h"
#include "shape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum osv_version_policy {
    OSV_VERSIONS_LATEST = 0, /* the `latest_versions` highest versions (Triton's default, 1) */
    OSV_VERSIONS_ALL,
    OSV_VERSIONS_SPECIFIC /* the listed `versions` */
} osv_version_policy_t;

typedef enum osv_tensor_format { OSV_FORMAT_NONE = 0, OSV_FORMAT_NHWC, OSV_FORMAT_NCHW } osv_tensor_format_t;

typedef enum osv_instance_kind {
    OSV_KIND_AUTO = 0,
    OSV_KIND_GPU = 1,
    OSV_KIND_CPU = 2,
    OSV_KIND_MODEL = 3
} osv_instance_kind_t;

typedef enum osv_warmup_source {
    OSV_WARMUP_ZERO = 0,
    OSV_WARMUP_RANDOM,
    OSV_WARMUP_FILE
} osv_warmup_source_t;

/* ModelInput / ModelOutput. */
typedef struct osv_tc_tensor {
    const char *name;
    osv_dtype_t dtype;
    uint32_t rank;              /* of dims */
    int64_t dims[OSV_MAX_DIMS]; /* without the batch dim when max_batch_size > 0; -1 = variable */
    bool has_reshape;
    uint32_t reshape_rank; /* 0 with has_reshape: the model takes [batch] (or a scalar) */
    int64_t reshape[OSV_MAX_DIMS];
    osv_tensor_format_t format; /* inputs */
    bool optional;              /* inputs: a request may leave it out */
    bool allow_ragged_batch;    /* inputs */
    const char *label_filename; /* outputs: the classification labels file, "" when none */
} osv_tc_tensor_t;

/* ModelInstanceGroup (CPU instances only: KIND_GPU is refused at load). */
typedef struct osv_tc_group {
    const char *name;
    osv_instance_kind_t kind;
    int32_t count;
    const char *host_policy;
} osv_tc_group_t;

/* A map<string, string> entry (parameters: ModelParameter.string_value). */
typedef struct osv_tc_kv {
    const char *key, *value;
} osv_tc_kv_t;

/* ModelWarmup.Input, keyed by input name. */
typedef struct osv_tc_warmup_input {
    const char *name;
    osv_dtype_t dtype;
    uint32_t rank; /* of dims, without the batch dim */
    int64_t dims[OSV_MAX_DIMS];
    osv_warmup_source_t source;
    const char *file; /* OSV_WARMUP_FILE: the name under <model>/warmup/ */
} osv_tc_warmup_input_t;

/* ModelWarmup. */
typedef struct osv_tc_warmup {
    const char *name;
    uint32_t batch_size;
    uint32_t count; /* executions; 0 = once */
    const osv_tc_warmup_input_t *inputs;
    uint32_t n_inputs;
} osv_tc_warmup_t;

typedef struct osv_triton_config {
    const char *name, *platform, *backend, *runtime;
    osv_version_policy_t version_policy;
    uint32_t latest_versions; /* LATEST */
    const int64_t *versions;  /* SPECIFIC, as written */
    uint32_t n_versions;
    int32_t max_batch_size; /* 0: dims are full shapes; > 0: a batch dim of at most this is prepended */
    const osv_tc_tensor_t *input;
    uint32_t n_input;
    const osv_tc_tensor_t *output;
    uint32_t n_output;
    /* optimization */
    bool has_graph_level;
    int32_t graph_level; /* ORT backend: -1 basic, 0 all (default), 1 extended, 2 none */
    int32_t priority;    /* ModelPriority: 0 default, 1 max, 2 min (no effect on CPU) */
    bool input_pinned_memory, output_pinned_memory;
    uint32_t gather_kernel_buffer_threshold;
    bool eager_batching;
    osv_dynamic_batching_t dynamic_batching;
    osv_response_cache_t response_cache;
    const osv_tc_group_t *instance_group;
    uint32_t n_instance_group;
    const char *default_model_filename;
    const osv_tc_kv_t *parameters; /* the user's, plus the session settings in effect */
    uint32_t n_parameters;
    const osv_tc_kv_t *metric_tags;
    uint32_t n_metric_tags;
    const osv_tc_kv_t *cc_model_filenames;
    uint32_t n_cc_model_filenames;
    const osv_tc_warmup_t *model_warmup;
    uint32_t n_model_warmup;
} osv_triton_config_t;

#ifdef __cplusplus
}
#endif
#endif
