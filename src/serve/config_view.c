/* config_view.c — the protocol-neutral model configuration view; see config_view.h. */
#include <stdio.h>
#include <string.h>

#include "serve/config_view.h"

void osv_cfg_view(const osv_model_t *m, osv_cfg_view_t *out)
{
    memset(out, 0, sizeof *out);
    out->name = osv_model_name(m);
    out->platform = "onnxruntime_onnx";
    out->backend = "onnxruntime";
    out->max_batch_size = 0;
    out->instance_kind = "KIND_CPU";
    out->instance_count = 1;
    out->params[0].key = "intra_op_thread_count";
    snprintf(out->params[0].value, sizeof out->params[0].value, "%d", osv_model_config(m)->threads.intra_op);
    out->n_params = 1;
}

const char *osv_cfg_type_name(osv_dtype_t dt)
{
    static const char *const names[OSV_DTYPE_COUNT] = {
        [OSV_DTYPE_BOOL] = "TYPE_BOOL",     [OSV_DTYPE_UINT8] = "TYPE_UINT8",   [OSV_DTYPE_UINT16] = "TYPE_UINT16",
        [OSV_DTYPE_UINT32] = "TYPE_UINT32", [OSV_DTYPE_UINT64] = "TYPE_UINT64", [OSV_DTYPE_INT8] = "TYPE_INT8",
        [OSV_DTYPE_INT16] = "TYPE_INT16",   [OSV_DTYPE_INT32] = "TYPE_INT32",   [OSV_DTYPE_INT64] = "TYPE_INT64",
        [OSV_DTYPE_FP16] = "TYPE_FP16",     [OSV_DTYPE_BF16] = "TYPE_BF16",     [OSV_DTYPE_FP32] = "TYPE_FP32",
        [OSV_DTYPE_FP64] = "TYPE_FP64",     [OSV_DTYPE_BYTES] = "TYPE_STRING",
    };
    return (unsigned)dt < OSV_DTYPE_COUNT && names[dt] ? names[dt] : "TYPE_INVALID";
}

const char *osv_cfg_label_file(const osv_tensor_info_t *t)
{
    return t->n_labels ? "labels" : "";
}
