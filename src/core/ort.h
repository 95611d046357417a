/* ort.h — internal: the loaded ONNX Runtime API and the environment object behind osv_env_t.
 * Only src/core includes this; nothing outside the core sees ORT types. */
#ifndef OSV_CORE_ORT_H
#define OSV_CORE_ORT_H

#include <onnxruntime_c_api.h>

#include "ortserve/env.h"
#include "ortserve/error.h"

struct osv_env {
    void *dl; /* dlopen handle of libonnxruntime */
    const OrtApi *api;
    OrtEnv *env;
    OrtMemoryInfo *cpu_info; /* CPU memory info for tensors over our memory */
    OrtAllocator *allocator; /* ORT's default CPU allocator (names, metadata) */
    osv_env_opts_t opts;
    char *path; /* where ORT was loaded from */
    const char *ort_version;
    unsigned generation; /* changes with every env; invalidates per-thread caches */
};

/* The ORT API of the live environment (NULL before osv_env_create). Read-only after creation. */
extern const OrtApi *osv_ort;
/* The live environment, or NULL. */
osv_env_t *osv_env_current(void);

/* Converts an OrtStatus to an ortserve error (prefixing `what`), releases it, returns the code
 * (0 for a NULL status). ORT's message is kept. */
int osv_ort_status(OrtStatus *st, osv_err_t *err, const char *what);

/* Per-thread reusable OrtRunOptions (created on first use in each thread, released with the env).
 * Returns NULL on ORT failure. The caller must leave it un-terminated when done. */
OrtRunOptions *osv_env_run_options(osv_env_t *env);

#endif
