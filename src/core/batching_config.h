/* batching_config.h — internal to src/core: reading the scheduling keys of config.json into
 * osv_batching_config_t / osv_cache_config_t (ortserve/batching.h), and checking them against the
 * model's tensors once its session describes them. Load time only. */
#ifndef OSV_CORE_BATCHING_CONFIG_H
#define OSV_CORE_BATCHING_CONFIG_H

#include <stdbool.h>

#include "ortserve/batching.h"
#include "ortserve/model.h"
#include "util/json.h"

/* One top-level member of config.json (key and value tokens of doc): *handled is set when the key is
 * one of max_batch_size, dynamic_batching, instance_group, response_cache, parameters; then the
 * value is read into b / cache (0, or OSV_EINVAL naming the key). */
int osv_batching_config_json(osv_batching_config_t *b, osv_cache_config_t *cache, const osv_json_doc_t *doc,
                             uint32_t key, uint32_t val, bool *handled, osv_err_t *err);

/* The settings are consistent (dynamic batching needs max_batch_size, preferred sizes within it,
 * priority levels and their policies), and with max_batch_size > 0 every input and output has a
 * dynamic first dimension. 0 or OSV_EINVAL naming what is wrong. */
int osv_batching_config_check(const osv_batching_config_t *b, const osv_tensor_info_t *in, uint32_t n_in,
                              const osv_tensor_info_t *out, uint32_t n_out, osv_err_t *err);

#endif
