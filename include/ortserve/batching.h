/* ortserve/batching.h — a model's scheduling settings as Triton's ModelConfig names them: the batch
 * dimension (max_batch_size), the dynamic batcher (dynamic_batching with its queue policies and
 * priority levels), the number of executions at once (instance_group count) and the response cache.
 *
 * Plain data, filled at load time from the model's config.json (osv_batching_config_json, the same
 * keys and nesting as Triton's JSON form of ModelConfig) and checked against the model's tensors
 * (osv_batching_config_check); a config.pbtxt reader fills the same structs. Read-only once the model
 * is loaded (osv_model_config(m)->batching / ->cache), any thread. */
#ifndef ORTSERVE_BATCHING_H
#define ORTSERVE_BATCHING_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Named limits on what a config may ask for (each refusal names the key and the limit). */
#define OSV_BATCH_MAX_SIZE       4096 /* max_batch_size */
#define OSV_BATCH_MAX_PREFERRED  16   /* entries of preferred_batch_size */
#define OSV_BATCH_MAX_PRIORITIES 16   /* priority_levels */
#define OSV_BATCH_MAX_INSTANCES  256  /* instance_group count, summed over groups */
#define OSV_BATCH_MAX_DELAY_US   10000000ull /* max_queue_delay_microseconds: 10 s */
#define OSV_BATCH_MAX_TIMEOUT_US 86400000000ull /* default_timeout_microseconds: a day */

/* ModelQueuePolicy.TimeoutAction. */
typedef enum osv_timeout_action {
    OSV_TIMEOUT_REJECT = 0, /* a request that waited its timeout is answered with an error */
    OSV_TIMEOUT_DELAY = 1   /* ... goes behind the requests of its level that have not timed out */
} osv_timeout_action_t;

/* ModelQueuePolicy: per priority level (or the model's single queue). */
typedef struct osv_queue_policy {
    osv_timeout_action_t timeout_action;
    uint64_t default_timeout_us; /* 0 = no queue timeout */
    bool allow_timeout_override; /* a request's own `timeout` may shorten it */
    uint32_t max_queue_size;     /* 0 = the model's max_queue (ortserve bounds every queue) */
} osv_queue_policy_t;

/* How the dynamic batcher decides a batch's size and its wait. */
typedef enum osv_batching_mode {
    OSV_BATCHING_FIXED = 0,   /* Triton's rules: largest (preferred) batch, wait max_queue_delay */
    OSV_BATCHING_ADAPTIVE = 1 /* ortserve's: batch only up to the size where a row gets cheaper, wait
                                 only while the expected gain covers the wait */
} osv_batching_mode_t;

typedef struct osv_batching_config {
    /* max_batch_size: > 0 means the first dimension of every input and output is the batch
     * dimension, and a request may carry at most this many rows; 0 = no batch dimension. */
    uint32_t max_batch_size;
    /* dynamic_batching { ... } is present: requests are batched by the server. */
    bool dynamic;
    osv_batching_mode_t mode;
    bool mode_set; /* parameters.batching was given (else: adaptive when no delay is set) */
    uint64_t max_queue_delay_us;
    bool max_queue_delay_set; /* the key was present (0 set explicitly means "no delay, fixed") */
    uint32_t n_preferred;
    uint32_t preferred[OSV_BATCH_MAX_PREFERRED]; /* ascending, distinct, each <= max_batch_size */
    bool preserve_ordering;
    uint32_t priority_levels;        /* 0 = one level */
    uint32_t default_priority_level; /* 1..priority_levels (0 when priority_levels is 0) */
    osv_queue_policy_t default_queue_policy;
    /* priority_queue_policy: policy of level i+1 when level_policy_set[i] */
    osv_queue_policy_t level_policy[OSV_BATCH_MAX_PRIORITIES];
    bool level_policy_set[OSV_BATCH_MAX_PRIORITIES];
    /* instance_group: executions of this model at once (sum of KIND_CPU counts); 0 = not set (as
     * many as there are workers). */
    uint32_t instance_count;
} osv_batching_config_t;

/* response_cache { enable: true }: successful responses are kept in the server's cache
 * (--cache-size), keyed by model, version, requested outputs and input bytes. */
typedef struct osv_cache_config {
    bool enable;
} osv_cache_config_t;

/* ---- Triton's ModelConfig as config.pbtxt writes it (src/core/tconfig.c reads it; the model's load
 * turns it into the osv_batching_config_t above, which is what the batcher reads) ---------------- */

/* One priority_queue_policy entry: the policy of priority level `level`. */
typedef struct osv_priority_policy {
    uint64_t level;
    osv_queue_policy_t policy;
} osv_priority_policy_t;

/* ModelDynamicBatching; `enabled` is false when the model has no dynamic_batching section (and
 * auto-completion did not add one). Arrays live as long as the model version. */
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

/* Defaults: no batch dimension, no dynamic batching, no cache. */
OSV_API void osv_batching_config_default(osv_batching_config_t *b, osv_cache_config_t *c);

/* The queue policy of priority level `level` (1-based; 0 or out of range = the default level). */
OSV_API const osv_queue_policy_t *osv_batching_policy(const osv_batching_config_t *b, uint32_t level);

/* The mode the batcher runs: parameters.batching when given, else adaptive when dynamic_batching sets
 * no max_queue_delay_microseconds, else fixed (docs/DESIGN.md, "Dynamic batching"). */
OSV_API osv_batching_mode_t osv_batching_effective_mode(const osv_batching_config_t *b);

#ifdef __cplusplus
}
#endif
#endif
