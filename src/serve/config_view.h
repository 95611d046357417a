/* config_view.h — internal: Triton's model configuration of a served model as plain data, the one
 * source both fronts render (HTTP: GET /v2/models/{m}/config as JSON; gRPC: ModelConfig as protobuf).
 * Facts only, no wire format: what a front prints is decided here once. The Triton-repository work
 * (config.pbtxt) extends this view; the fronts render whatever it holds. */
#ifndef OSV_SERVE_CONFIG_VIEW_H
#define OSV_SERVE_CONFIG_VIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "ortserve.h"

#define OSV_CFG_MAX_PARAMS 8

typedef struct osv_cfg_param {
    const char *key;
    char value[32];
} osv_cfg_param_t;

/* A view of model m (pointers into m: valid while the caller holds its reference). */
typedef struct osv_cfg_view {
    const char *name, *platform, *backend;
    int32_t max_batch_size; /* 0: full shapes, the model handles batching */
    const char *instance_kind; /* "KIND_CPU" */
    int32_t instance_count;
    osv_cfg_param_t params[OSV_CFG_MAX_PARAMS];
    uint32_t n_params;
} osv_cfg_view_t;

void osv_cfg_view(const osv_model_t *m, osv_cfg_view_t *out);
/* Triton's data type name of dt ("TYPE_FP32"; BYTES is "TYPE_STRING"). */
const char *osv_cfg_type_name(osv_dtype_t dt);
/* The label_filename an output reports ("labels" when it has labels, else ""). */
const char *osv_cfg_label_file(const osv_tensor_info_t *t);

#endif
