/* outputs.h — internal: Triton's classification extension over a finished inference's output view,
 * the same for every front: the top k of each row (the core's osv_topk) as "score:index[:label]"
 * strings in Triton's serialized BYTES form. What a row is follows Triton: with a batch dimension
 * (`batched`: osv_model_batched — a config.pbtxt max_batch_size > 0, or a model without config.pbtxt
 * whose first dims are a batch) each batch row is ranked over all its elements, with flat indices;
 * without one, the whole tensor is one list. No front header here. Pure functions over caller
 * memory; any thread. */
#ifndef OSV_SERVE_OUTPUTS_H
#define OSV_SERVE_OUTPUTS_H

#include <stdbool.h>
#include <stdint.h>

#include "ortserve.h"

/* The classification of view v: k clamped to the classes per row (an empty output: 1). */
uint32_t osv_classify_k(const osv_tensor_view_t *v, bool batched, uint32_t k);
/* Upper bound of the serialized strings osv_classify writes for view v (ti: the model output, for its
 * labels) and k (already clamped). */
uint64_t osv_classify_max(const osv_tensor_info_t *ti, const osv_tensor_view_t *v, bool batched, uint32_t k);

/* Shape of a classification result. */
typedef struct osv_class_shape {
    uint64_t count; /* strings */
    uint32_t rank;
    int64_t dims[2];
} osv_class_shape_t;

/* Writes the top k of each row of v into dst[0..cap) (cap ≥ osv_classify_max), using top[0..k) as
 * scratch; returns the bytes written and fills *shape, or UINT64_MAX when a row has more than 2^32
 * classes (the tensor limits keep that from happening). */
uint64_t osv_classify(const osv_tensor_info_t *ti, const osv_tensor_view_t *v, bool batched, uint32_t k,
                      uint32_t *top, uint8_t *dst, osv_class_shape_t *shape);

#endif
