/* ortserve/repo.h — a model repository in Triton's layout.
 *
 *   <repo>/<model>/<version>/model.onnx     numeric version directories
 *   <repo>/<model>/model.onnx               a bare model counts as version 1
 *   <repo>/<model>/config.json              optional, shared by the model's versions
 *
 * or, with osv_repo_opts_t.model_name, a directory that is itself one model (KServe mounts a
 * model's storage at /mnt/models):
 *
 *   <dir>/<version>/model.onnx, <dir>/model.onnx, <dir>/config.json    served as `model_name`
 *
 * Every version found is loaded; a request without a version gets the highest ready one. Model
 * names are restricted to [A-Za-z0-9_.-] (not starting with '.'), and model files must resolve
 * inside the repository (no symlink escapes). All functions are thread-safe: lookups take a
 * read lock for a few nanoseconds; load/unload build the new sessions outside the lock and swap
 * them in, so requests already running on an old session finish on it. */
#ifndef ORTSERVE_REPO_H
#define ORTSERVE_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "env.h"
#include "error.h"
#include "model.h"
#include "shape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osv_repo osv_repo_t;

/* Called (on the loading thread) for each model version right after it loads, before requests
 * can see it: lets other layers validate config sections and attach per-model state. A non-zero
 * return fails that version's load with the message in *err. */
typedef int (*osv_repo_load_hook)(void *ud, osv_model_t *m, osv_err_t *err);

typedef struct osv_repo_opts {
    osv_env_t *env;
    const char *path;        /* repository directory */
    osv_limits_t limits;     /* server-wide tensor limits (config.json may override per model) */
    bool load_all;           /* load every model at open (default true); else only on request */
    osv_repo_load_hook hook; /* optional */
    void *hook_ud;
    const char *model_name; /* optional: `path` is one model's directory, served under this name */
} osv_repo_opts_t;

typedef enum osv_model_state {
    OSV_MODEL_UNAVAILABLE = 0, /* not loaded: never loaded, unloaded, or failed */
    OSV_MODEL_LOADING,
    OSV_MODEL_READY,
    OSV_MODEL_UNLOADING
} osv_model_state_t;

OSV_API const char *osv_model_state_name(osv_model_state_t s); /* "READY", ... */

/* One row of the repository index. Strings are copies in caller-provided storage (see
 * osv_repo_index). */
typedef struct osv_repo_entry {
    char name[128];
    int64_t version; /* -1 for a model with no loaded version */
    osv_model_state_t state;
    bool wanted;                  /* should be loaded (loaded at open or by a load; not unloaded since) */
    char reason[OSV_ERR_MSG_MAX]; /* why it is unavailable; "" otherwise */
} osv_repo_entry_t;

/* Opens the repository; with load_all, loads every model (a model that fails to load is recorded
 * as UNAVAILABLE with its reason; open itself still succeeds unless the directory is unusable).
 * Free with osv_repo_close(). */
OSV_API int osv_repo_open(const osv_repo_opts_t *opts, osv_repo_t **out, osv_err_t *err);
/* Releases the repository's references; models still held by requests live until released. */
OSV_API void osv_repo_close(osv_repo_t *repo);

/* Looks up name[0..nlen) at `version` (< 0 = highest ready version) and returns a new reference
 * in *out. OSV_ENOTFOUND for an unknown model or version, OSV_EUNAVAIL for one not loaded. */
OSV_API int osv_repo_acquire(osv_repo_t *repo, const char *name, size_t nlen, int64_t version,
                             osv_model_t **out, osv_err_t *err);

/* (Re)loads every version of `name` from disk; on failure the previous versions keep serving. */
OSV_API int osv_repo_load(osv_repo_t *repo, const char *name, osv_err_t *err);
/* Unloads every version of `name`; in-flight requests finish on their reference. */
OSV_API int osv_repo_unload(osv_repo_t *repo, const char *name, osv_err_t *err);

/* Writes up to `cap` index rows (one per loaded version, one per unavailable model; models on
 * disk that were never loaded included) into entries; *n receives the total row count. With
 * `ready_only`, lists only READY rows. */
OSV_API int osv_repo_index(osv_repo_t *repo, bool ready_only, osv_repo_entry_t *entries, size_t cap,
                           size_t *n);

/* Ready versions of name[0..nlen), ascending, into out[0..cap); *n receives how many there are.
 * OSV_ENOTFOUND for an unknown model. */
OSV_API int osv_repo_versions(osv_repo_t *repo, const char *name, size_t nlen, int64_t *out, size_t cap,
                              size_t *n);

/* Calls fn for every READY model version (holding a reference during the call). Stops early and
 * returns fn's value when it is non-zero. */
OSV_API int osv_repo_foreach(osv_repo_t *repo, int (*fn)(void *ud, osv_model_t *m), void *ud);

/* Number of models (directories) known, and whether every model that should be loaded is READY
 * (explicitly unloaded models do not count against readiness). */
OSV_API size_t osv_repo_model_count(osv_repo_t *repo);
OSV_API bool osv_repo_ready(osv_repo_t *repo);
OSV_API const char *osv_repo_path(const osv_repo_t *repo);

/* True when name[0..len) is a valid model name ([A-Za-z0-9_.-]{1,127}, not starting with '.'). */
OSV_API bool osv_model_name_valid(const char *name, size_t len);

#ifdef __cplusplus
}
#endif
#endif
