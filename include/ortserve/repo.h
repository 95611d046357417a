/* ortserve/repo.h — a model repository in Triton's layout.
 *
 *   <repo>/<model>/<version>/model.onnx     numeric version directories (the file name is
 *                                           config.pbtxt's default_model_filename when it gives one)
 *   <repo>/<model>/model.onnx               a bare model counts as version 1
 *   <repo>/<model>/config.pbtxt             optional: Triton's ModelConfig (ortserve/tconfig.h)
 *   <repo>/<model>/config.json              optional: ortserve's own settings
 *
 * or, with osv_repo_opts_t.model_name, a directory that is itself one model (KServe mounts a
 * model's storage at /mnt/models):
 *
 *   <dir>/<version>/model.onnx, <dir>/model.onnx, <dir>/config.*    served as `model_name`
 *
 * Which versions are served is config.pbtxt's version_policy (Triton's default: the latest one);
 * a model without config.pbtxt serves every version. Each version loads on its own and has its own
 * state; a request without a version gets the highest ready one. Model names are restricted to
 * [A-Za-z0-9_.-] (not starting with '.'), and model files must resolve inside the repository (no
 * symlink escapes). All functions are thread-safe: lookups take a read lock for a few nanoseconds;
 * load/unload build the new sessions outside the lock and swap them in, so requests already running
 * on an old session finish on it; a load keeps the versions whose files did not change. */
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

typedef enum osv_repo_event_kind {
    OSV_REPO_READY,    /* a version became ready (loaded, or reloaded over one that served) */
    OSV_REPO_UNLOADED, /* a version stopped serving (unloaded, removed from disk, left out by the policy) */
    OSV_REPO_FAILED    /* a version (or, with version -1, the model) failed to load */
} osv_repo_event_kind_t;

/* What a load or unload did, one event per version, delivered on the loading thread after the
 * change is visible to requests (no lock held). Pointers are valid for the call only. */
typedef struct osv_repo_event {
    osv_repo_event_kind_t kind;
    const char *name;
    int64_t version;    /* -1: about the model as a whole (its config could not be read, ...) */
    osv_model_t *model; /* READY: the version now serving */
    bool reloaded;      /* READY: it replaced a version that was serving */
    const char *reason; /* UNLOADED and FAILED: why */
} osv_repo_event_t;

typedef void (*osv_repo_event_fn)(void *ud, const osv_repo_event_t *e);

typedef struct osv_repo_opts {
    osv_env_t *env;
    const char *path;        /* repository directory */
    osv_limits_t limits;     /* server-wide tensor limits (config.json may override per model) */
    bool load_all;           /* load every model at open (default true); else only on request */
    osv_repo_load_hook hook; /* optional */
    void *hook_ud;
    const char *model_name; /* optional: `path` is one model's directory, served under this name */
    osv_load_opts_t load;   /* how versions are loaded (all zero: osv_load_opts_default) */
    osv_repo_event_fn on_event; /* optional: what loads and unloads did (e.g. to log it) */
    void *event_ud;
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
    int64_t version; /* -1 for a model with no version loaded or attempted */
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
 * in *out. OSV_ENOTFOUND for an unknown model or version, OSV_EUNAVAIL for one not loaded (the
 * message says why). */
OSV_API int osv_repo_acquire(osv_repo_t *repo, const char *name, size_t nlen, int64_t version,
                             osv_model_t **out, osv_err_t *err);

/* (Re)loads `name` from disk: reads its config, loads the versions its policy selects that are new
 * or whose files changed, keeps the unchanged ones serving, and unloads the versions no longer
 * selected (after their in-flight requests). A version that fails to reload keeps its previous
 * instance serving. 0 when every selected version serves; OSV_ENOTFOUND for a model not in the
 * repository; OSV_ELOAD (the message says why) when the model or a version failed to load. */
OSV_API int osv_repo_load(osv_repo_t *repo, const char *name, osv_err_t *err);
/* Unloads every version of `name`; in-flight requests finish on their reference. */
OSV_API int osv_repo_unload(osv_repo_t *repo, const char *name, osv_err_t *err);

/* Writes up to `cap` index rows (one per version loaded or attempted, with its state and reason;
 * one per model that has none, models on disk never loaded included) into entries; *n receives the
 * total row count. With `ready_only`, lists only READY rows. */
OSV_API int osv_repo_index(osv_repo_t *repo, bool ready_only, osv_repo_entry_t *entries, size_t cap,
                           size_t *n);

/* Ready versions of name[0..nlen), ascending, into out[0..cap); *n receives how many there are.
 * OSV_ENOTFOUND for an unknown model. */
OSV_API int osv_repo_versions(osv_repo_t *repo, const char *name, size_t nlen, int64_t *out, size_t cap,
                              size_t *n);

/* Calls fn for every READY model version (holding a reference during the call). Stops early and
 * returns fn's value when it is non-zero. */
OSV_API int osv_repo_foreach(osv_repo_t *repo, int (*fn)(void *ud, osv_model_t *m), void *ud);

/* Number of models (directories) known, and whether the repository is ready: at least one model
 * version serves and every model that should be loaded is READY (explicitly unloaded models do not
 * count against readiness; a repository with no model is not ready). */
OSV_API size_t osv_repo_model_count(osv_repo_t *repo);
OSV_API bool osv_repo_ready(osv_repo_t *repo);
OSV_API const char *osv_repo_path(const osv_repo_t *repo);
/* When the directory is laid out in a way that serves nothing (it holds model.onnx itself, is one
 * model's folder, or holds no model folder): what is wrong and how to fix it; else NULL. Lives as
 * long as the repository. */
OSV_API const char *osv_repo_layout_problem(const osv_repo_t *repo);

/* True when name[0..len) is a valid model name ([A-Za-z0-9_.-]{1,127}, not starting with '.'). */
OSV_API bool osv_model_name_valid(const char *name, size_t len);

#ifdef __cplusplus
}
#endif
#endif
