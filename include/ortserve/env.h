/* ortserve/env.h — the process-wide ONNX Runtime environment.
 *
 * ortserve loads libonnxruntime at run time (dlopen) instead of linking it, so the same binary works
 * with ORT 1.29 or any later 1.x (ORT's symbols are versioned per release) and a missing or too-old
 * library gives a clear message instead of a loader error. There is one environment per process. */
#ifndef ORTSERVE_ENV_H
#define ORTSERVE_ENV_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osv_env osv_env_t;

/* Thread settings. A value < 0 means "not set here" (inherit the next level's setting). */
typedef struct osv_threads {
    int intra_op; /* threads per Run; 1 = the calling thread only; 0 = ORT picks (one per core) */
    int inter_op; /* threads across nodes (only with parallel execution); 1 = none */
    int spinning; /* 1 = ORT pool threads spin-wait for work (lower latency, burns CPU); 0 = block */
} osv_threads_t;

/* Log callback for ORT's own messages. severity: 0 verbose .. 4 fatal (OrtLoggingLevel). */
typedef void (*osv_log_fn)(void *ud, int severity, const char *category, const char *msg);

typedef struct osv_env_opts {
    const char *ort_library;  /* path to libonnxruntime.so.1; NULL = $ORTSERVE_ORT_LIBRARY, then the
                                 installed copy (<prefix>/lib/ortserve), then the build-time ORT,
                                 then the loader path */
    bool global_thread_pools; /* one intra/inter-op pool shared by every session */
    osv_threads_t threads;    /* defaults for sessions (or the global pool's settings) */
    int log_severity;         /* minimum ORT severity forwarded (default 2 = warning) */
    osv_log_fn log_fn;        /* NULL = ORT messages go to stderr */
    bool telemetry;           /* let ORT's telemetry run (default false: ORT_DISABLE_TELEMETRY=1 is set
                                 unless already set, and telemetry events are disabled) */
    void *log_ud;
} osv_env_opts_t;

/* Fills *opts with ortserve's measured defaults (see docs/DESIGN.md, "Threads"). */
OSV_API void osv_env_opts_default(osv_env_opts_t *opts);

/* Loads ORT, checks that it supports the C API version ortserve was compiled against
 * (OSV_EVERSION with both versions in the message if not), and creates the OrtEnv.
 * Only one environment may exist at a time (OSV_EEXIST). Free with osv_env_destroy() after every
 * model is released. Not thread-safe against itself. */
OSV_API int osv_env_create(const osv_env_opts_t *opts, osv_env_t **out, osv_err_t *err);
OSV_API void osv_env_destroy(osv_env_t *env);

/* Version string of the loaded ORT library ("1.29.0"); valid while env lives. */
OSV_API const char *osv_env_ort_version(const osv_env_t *env);
/* Path the ORT library was loaded from; valid while env lives. */
OSV_API const char *osv_env_ort_path(const osv_env_t *env);
/* C API version ortserve was compiled against (ORT_API_VERSION). */
OSV_API int osv_env_api_version(void);
/* The env's settings after defaults were applied. */
OSV_API const osv_env_opts_t *osv_env_opts(const osv_env_t *env);

/* ortserve's own version ("0.1.0"). */
OSV_API const char *osv_version(void);

#ifdef __cplusplus
}
#endif
#endif
