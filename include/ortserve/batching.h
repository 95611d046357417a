/* ortserve/batching.h — a model's dynamic-batching and response-cache settings, as plain data.
 *
 * Filled from Triton's `dynamic_batching { ... }` and `response_cache { ... }` (config.pbtxt, read by
 * src/core/tconfig.c, validated there) for whoever schedules requests (the batcher in src/serve) to
 * read. Field names and meanings are Triton's ModelDynamicBatching / ModelQueuePolicy /
 * ModelResponseCache (common/protobuf/model_config.proto). Immutable once a model version is loaded;
 * arrays live as long as the model version that holds them. */
#ifndef ORTSERVE_BATCHING_H
#define ORTSERVE_BATCHING_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum osv_timeout_action {
    OSV_TIMEOUT_REJECT = 0, /* a request whose queue timeout passes is refused */
    OSV_TIMEOUT_DELAY = 1   /* it waits behind the requests that have not timed out */
} osv_timeout_action_t;

/* ModelQueuePolicy. */
typedef struct osv_queue_policy {
    osv_timeout_action_t timeout_action;
    uint64_t default_timeout_us; /* 0 = no queue timeout */
    bool allow_timeout_override; /* a request may shorten (never lengthen) the timeout */
    uint32_t max_queue_size;     /* 0 = unbounded */
} osv_queue_policy_t;

/* One priority_queue_policy entry: the policy of priority level `level`. */
typedef struct osv_priority_policy {
    uint64_t level;
    osv_queue_policy_t policy;
} osv_priority_policy_t;

/* ModelDynamicBatching; `enabled` is false when the model has no dynamic_batching section (and
 * auto-completion did not add one). */
typedef struct osv_dynamic_batching {
    bool enabled;
    const int32_t *preferred_batch_size; /* ascending as written; never above max_batch_size */
    uint32_t n_preferred;
    uint64_t max_queue_delay_us;
    bool preserve_ordering;
    uint64_t priority_levels;        /* 0 = priorities off */
    uint64_t default_priority_level; /* in [1, priority_levels] when levels are on */
    osv_queue_policy_t default_queue_policy;
    const osv_priority_policy_t *priority_queue_policy;
    uint32_t n_priority_policies;
} osv_dynamic_batching_t;

/* ModelResponseCache. */
typedef struct osv_response_cache {
    bool enable;
} osv_response_cache_t;

#ifdef __cplusplus
}
#endif
#endif
