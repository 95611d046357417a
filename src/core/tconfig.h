/* tconfig.h — internal to src/core: reading a model's config.pbtxt into an osv_triton_config_t
 * (tconfig.c) and completing it against the ONNX model and config.json (tcomplete.c).
 *
 * One osv_tconfig_t per model version (and one more that repo.c reads for the version policy): it
 * owns everything its osv_triton_config_t points to, in one arena freed with it. It is built on the
 * loading thread and immutable once the version is shared. */
#ifndef OSV_CORE_TCONFIG_H
#define OSV_CORE_TCONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "ortserve/error.h"
#include "ortserve/tconfig.h"
#include "util/arena.h"

/* Where a field was written in config.pbtxt (line 0: not written, e.g. auto-completed). */
typedef struct tc_pos {
    uint32_t line, col;
} tc_pos_t;

/* Positions of the fields completion may have to name in a message. */
typedef struct tc_tensor_pos {
    tc_pos_t at, data_type, dims, reshape, label_filename;
} tc_tensor_pos_t;

enum {
    TC_POS_NAME,
    TC_POS_MAX_BATCH_SIZE,
    TC_POS_GRAPH_LEVEL,
    TC_POS_INSTANCE_GROUP,
    TC_POS_DYNAMIC_BATCHING,
    TC_POS_DEFAULT_MODEL_FILENAME,
    TC_POS_INTRA_OP,
    TC_POS_INTER_OP,
    TC_POS_EXECUTION_MODE,
    TC_POS_MEM_ARENA,
    TC_POS_MEM_PATTERN,
    TC_POS_SHARE_SESSION,
    TC_POS_VERSION_POLICY,
    TC_POS_MODEL_WARMUP,
    TC_POS_COUNT
};

/* Bits of osv_tconfig_t.set: fields config.pbtxt gave (so completion knows what to fill in). */
enum {
    TC_SET_MAX_BATCH_SIZE = 1u << 0,
    TC_SET_VERSION_POLICY = 1u << 1,
    TC_SET_INTRA_OP = 1u << 2,
    TC_SET_INTER_OP = 1u << 3,
    TC_SET_EXECUTION_MODE = 1u << 4,
    TC_SET_MEM_ARENA = 1u << 5,
    TC_SET_MEM_PATTERN = 1u << 6,
    TC_SET_SHARE_SESSION = 1u << 7,
};

/* ORT session settings the ONNX Runtime backend's `parameters` carry (validated when read). */
typedef struct tc_session {
    int intra_op, inter_op; /* thread counts (0 = ORT's default) */
    int execution_mode;     /* 0 sequential, 1 parallel */
    bool mem_arena, mem_pattern;
    bool share_session;                     /* share_session_between_instances */
    bool device_allocator_for_initializers; /* session.use_device_allocator_for_initializers */
} tc_session_t;

typedef struct osv_tconfig {
    osv_triton_config_t c;
    osv_arena_t arena; /* owns every string and array c points to */
    const char *path;  /* <dir>/config.pbtxt, for messages */
    bool present;      /* a config.pbtxt was read (else: completion fills everything) */
    uint32_t set;      /* TC_SET_* */
    tc_session_t session;
    tc_pos_t pos[TC_POS_COUNT];
    tc_tensor_pos_t *in_pos, *out_pos; /* parallel to c.input / c.output */
    tc_pos_t *warm_pos;                /* parallel to c.model_warmup */
} osv_tconfig_t;

/* Limits on config.pbtxt (the ortserve serve flags --model-config-max-bytes, --model-config-max-depth,
 * --max-instances and --max-warmup-runs, through osv_load_opts_t). */
typedef struct osv_tconfig_limits {
    uint64_t max_bytes;
    uint32_t max_depth;
    uint32_t max_instances;   /* count of one instance group */
    uint32_t max_warmup_runs; /* count of one warm-up sample */
} osv_tconfig_limits_t;

/* Reads <dir>/config.pbtxt for model `model_name` (dir NULL or no file: *out has present = false and
 * Triton's defaults). Errors name the file, line, column and field; the config is refused when it names
 * another model, asks for a platform, backend or feature this server does not run (sequence
 * batching, ensembles, GPU instances, ...), or is malformed. Free with osv_tconfig_free. */
int osv_tconfig_read(const char *dir, const char *model_name, const osv_tconfig_limits_t *lim,
                     osv_tconfig_t **out, osv_err_t *err);
/* The same from text already in memory (path names it in messages). */
int osv_tconfig_from_text(const char *text, size_t len, const char *path, const char *model_name,
                          const osv_tconfig_limits_t *lim, osv_tconfig_t **out, osv_err_t *err);
void osv_tconfig_free(osv_tconfig_t *t);

/* Which of the versions found on disk (ascending, n of them) the version policy selects: sets
 * selected[i]. For a model without config.pbtxt every version is selected (ortserve's rule). */
void osv_tconfig_select_versions(const osv_tconfig_t *t, const int64_t *versions, uint32_t n, bool *selected);

/* Arena helpers for tcomplete.c: a copy of s (NULL on no memory) and n zeroed elements. */
const char *osv_tconfig_strdup(osv_tconfig_t *t, const char *s);
void *osv_tconfig_alloc(osv_tconfig_t *t, size_t n, size_t size);

/* "file:line:col: " for pos (or "file: " when the field was not written), for messages. */
const char *osv_tconfig_where(const osv_tconfig_t *t, tc_pos_t pos, char *buf, size_t cap);

#endif
