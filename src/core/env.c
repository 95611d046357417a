/* env.c — loads ONNX Runtime with dlopen, checks its C API version, owns the one OrtEnv.
 *
 * ORT exports its symbols with a per-release version (VERS_1.29.0), so linking against one release
 * would refuse every other; resolving OrtGetApiBase with dlsym works with any release that supports
 * the API version we were compiled against, and lets us say exactly what is wrong when none does. */
#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ort.h"
#include "ortserve/alloc.h"

#ifndef OSV_ORT_BUILD_LIB
#define OSV_ORT_BUILD_LIB ""
#endif
#ifndef OSV_VERSION_STRING
#define OSV_VERSION_STRING "0.0.0"
#endif

const OrtApi *osv_ort;
static osv_env_t *current;
static unsigned generation;

/* Run options cache: one per thread, registered here so the env can release them all. */
static pthread_mutex_t ro_lock = PTHREAD_MUTEX_INITIALIZER;
static OrtRunOptions **ro_all;
static size_t ro_n, ro_cap;
static _Thread_local OrtRunOptions *ro_mine;
static _Thread_local unsigned ro_gen;

const char *osv_version(void)
{
    return OSV_VERSION_STRING;
}

int osv_env_api_version(void)
{
    return ORT_API_VERSION;
}

osv_env_t *osv_env_current(void)
{
    return current;
}

void osv_env_opts_default(osv_env_opts_t *o)
{
    memset(o, 0, sizeof *o);
    /* Measured on 2 cores (docs/DESIGN.md, "Threads"): one intra-op thread per session and
     * concurrent Runs from the workers beat a shared multi-threaded pool on throughput, and
     * spinning only burns the core the other worker needs. */
    o->global_thread_pools = false;
    o->threads.intra_op = 1;
    o->threads.inter_op = 1;
    o->threads.spinning = 0;
    o->log_severity = ORT_LOGGING_LEVEL_WARNING;
}

static bool is_allocation_failure(const char *msg)
{
    return msg && (strstr(msg, "Failed to allocate") || strstr(msg, "bad_alloc") || strstr(msg, "out of memory"));
}

int osv_ort_status(OrtStatus *st, osv_err_t *err, const char *what)
{
    int code;
    if (!st)
        return 0;
    switch (osv_ort->GetErrorCode(st)) {
    case ORT_INVALID_ARGUMENT:
    case ORT_INVALID_GRAPH:
        code = OSV_EINVAL;
        break;
    case ORT_NO_SUCHFILE:
        code = OSV_ENOTFOUND;
        break;
    case ORT_NOT_IMPLEMENTED:
        code = OSV_EUNSUPPORTED;
        break;
    case ORT_INVALID_PROTOBUF:
        code = OSV_EPARSE;
        break;
    default:
        code = OSV_EORT;
    }
    /* ONNX Runtime has no code for "out of memory" (a failed allocation surfaces as ORT_FAIL or
     * ORT_RUNTIME_EXCEPTION): this is the one place that reads its message, so that everything above
     * decides by OSV_ENOMEM (a transient failure, retried, then 503), never by text. */
    if (code == OSV_EORT && is_allocation_failure(osv_ort->GetErrorMessage(st)))
        code = OSV_ENOMEM;
    osv_err_set(err, code, "%s: %s", what, osv_ort->GetErrorMessage(st));
    osv_ort->ReleaseStatus(st);
    return code;
}

/* Directory of the module (executable or libortserve.so) this code lives in. */
static int own_dir(char *buf, size_t cap)
{
    Dl_info info;
    char tmp[4096];
    if (!dladdr((void *)&osv_env_create, &info) || !info.dli_fname || !realpath(info.dli_fname, tmp))
        return 0;
    snprintf(buf, cap, "%s", dirname(tmp));
    return 1;
}

/* Tries the candidate locations in order; on failure describes every attempt in err. */
static void drop_status(OrtStatus *st)
{
    if (st)
        osv_ort->ReleaseStatus(st);
}

static void *load_library(const osv_env_opts_t *o, char **path_out, osv_err_t *err)
{
    char installed[4200] = "", dir[4096], tried[OSV_ERR_MSG_MAX] = "";
    const char *cands[5];
    size_t n = 0, used = 0;
    const char *envp = getenv("ORTSERVE_ORT_LIBRARY");

    /* An explicit choice (option or environment) is the only candidate: falling back to another
     * library behind the user's back would hide a typo. */
    if (o->ort_library && *o->ort_library)
        cands[n++] = o->ort_library;
    else if (envp && *envp)
        cands[n++] = envp;
    else {
        /* The copy installed next to this module (<prefix>/bin or <prefix>/lib, then
         * <prefix>/lib/ortserve) comes before the build tree's: an installed ortserve must keep using
         * the library it was installed with, even on the machine (and the tree) it was built on. */
        if (own_dir(dir, sizeof dir)) {
            snprintf(installed, sizeof installed, "%s/../lib/ortserve/libonnxruntime.so.1", dir);
            cands[n++] = installed;
        }
        if (*OSV_ORT_BUILD_LIB)
            cands[n++] = OSV_ORT_BUILD_LIB;
        cands[n++] = "libonnxruntime.so.1";
    }
    for (size_t i = 0; i < n; i++) {
        void *dl = dlopen(cands[i], RTLD_NOW | RTLD_LOCAL);
        if (dl) {
            *path_out = osv_strdup(cands[i]);
            return dl;
        }
        used += (size_t)snprintf(tried + used, used < sizeof tried ? sizeof tried - used : 0, "%s%s",
                                 i ? "; " : "", dlerror());
        if (used >= sizeof tried)
            used = sizeof tried;
    }
    osv_err_set(err, OSV_ENOTFOUND,
                "cannot load ONNX Runtime (set --ort-library or ORTSERVE_ORT_LIBRARY): %s", tried);
    return NULL;
}

static void ORT_API_CALL log_bridge(void *param, OrtLoggingLevel sev, const char *category, const char *logid,
                                    const char *where, const char *msg)
{
    osv_env_t *e = param;
    (void)logid;
    (void)where;
    e->opts.log_fn(e->opts.log_ud, (int)sev, category, msg);
}

static int create_ort_env(osv_env_t *e, osv_err_t *err)
{
    const OrtApi *api = e->api;
    OrtLoggingLevel sev = (OrtLoggingLevel)e->opts.log_severity;
    OrtThreadingOptions *tp = NULL;
    OrtStatus *st = NULL;
    int rc;

    if (!e->opts.global_thread_pools) {
        st = e->opts.log_fn ? api->CreateEnvWithCustomLogger(log_bridge, e, sev, "ortserve", &e->env)
                            : api->CreateEnv(sev, "ortserve", &e->env);
        return osv_ort_status(st, err, "creating the ONNX Runtime environment");
    }
    if ((rc = osv_ort_status(api->CreateThreadingOptions(&tp), err, "threading options")) != 0)
        return rc;
    st = api->SetGlobalIntraOpNumThreads(tp, e->opts.threads.intra_op < 0 ? 0 : e->opts.threads.intra_op);
    if (!st)
        st = api->SetGlobalInterOpNumThreads(tp, e->opts.threads.inter_op < 0 ? 0 : e->opts.threads.inter_op);
    if (!st)
        st = api->SetGlobalSpinControl(tp, e->opts.threads.spinning > 0);
    if (!st)
        st = e->opts.log_fn ? api->CreateEnvWithCustomLoggerAndGlobalThreadPools(log_bridge, e, sev,
                                                                                 "ortserve", tp, &e->env)
                            : api->CreateEnvWithGlobalThreadPools(sev, "ortserve", tp, &e->env);
    api->ReleaseThreadingOptions(tp);
    return osv_ort_status(st, err, "creating the ONNX Runtime environment with global thread pools");
}

int osv_env_create(const osv_env_opts_t *opts, osv_env_t **out, osv_err_t *err)
{
    osv_env_t *e;
    const OrtApiBase *(*get_base)(void);
    const OrtApiBase *base;
    int rc;

    if (current)
        return osv_err_set(err, OSV_EEXIST, "an ONNX Runtime environment already exists in this process");
    if (!(e = osv_calloc(1, sizeof *e)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if (opts)
        e->opts = *opts;
    else
        osv_env_opts_default(&e->opts);
    /* ORT's official builds start Microsoft's telemetry SDK when the library initialises (it writes
     * a device id and a database under ~/.cache and a log per process in /tmp). A server must not
     * phone home or litter by default: ORT_DISABLE_TELEMETRY=1 prevents it, unless the user has set
     * the variable or asked for telemetry. */
    if (!e->opts.telemetry)
        setenv("ORT_DISABLE_TELEMETRY", "1", 0);
    if (!(e->dl = load_library(&e->opts, &e->path, err))) {
        osv_free(e);
        return err ? err->code : OSV_ENOTFOUND;
    }
    *(void **)&get_base = dlsym(e->dl, "OrtGetApiBase");
    base = get_base ? get_base() : NULL;
    if (!base) {
        rc = osv_err_set(err, OSV_EVERSION, "%s does not export OrtGetApiBase: not an ONNX Runtime library",
                         e->path);
        goto fail;
    }
    e->ort_version = base->GetVersionString();
    if (!(e->api = base->GetApi(ORT_API_VERSION))) {
        rc = osv_err_set(err, OSV_EVERSION,
                         "ONNX Runtime %s (%s) does not support C API version %d; ortserve needs ONNX "
                         "Runtime 1.%d or newer",
                         e->ort_version, e->path, ORT_API_VERSION, ORT_API_VERSION);
        goto fail;
    }
    osv_ort = e->api;
    if ((rc = create_ort_env(e, err)) != 0)
        goto fail;
    if ((rc = osv_ort_status(e->api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &e->cpu_info),
                             err, "CPU memory info")) != 0 ||
        (rc = osv_ort_status(e->api->GetAllocatorWithDefaultOptions(&e->allocator), err,
                             "default allocator")) != 0)
        goto fail;
    if (!e->opts.telemetry)
        drop_status(e->api->DisableTelemetryEvents(e->env));
    e->generation = ++generation;
    current = e;
    *out = e;
    return 0;
fail:
    if (e->env)
        e->api->ReleaseEnv(e->env);
    if (e->cpu_info)
        e->api->ReleaseMemoryInfo(e->cpu_info);
    dlclose(e->dl);
    osv_free(e->path);
    osv_free(e);
    osv_ort = NULL;
    return rc;
}

OrtRunOptions *osv_env_run_options(osv_env_t *env)
{
    OrtRunOptions *ro = NULL;
    if (ro_mine && ro_gen == env->generation)
        return ro_mine;
    if (env->api->CreateRunOptions(&ro) != NULL)
        return NULL;
    /* A failing Run comes back to the caller with ORT's message; ORT's own per-run error log lines
     * would only say the same thing again on stderr. */
    OrtStatus *st = env->api->RunOptionsSetRunLogSeverityLevel(ro, ORT_LOGGING_LEVEL_FATAL);
    if (st)
        env->api->ReleaseStatus(st);
    pthread_mutex_lock(&ro_lock);
    if (ro_n == ro_cap) {
        size_t cap = ro_cap ? ro_cap * 2 : 16;
        OrtRunOptions **p = osv_realloc(ro_all, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&ro_lock);
            env->api->ReleaseRunOptions(ro);
            return NULL;
        }
        ro_all = p;
        ro_cap = cap;
    }
    ro_all[ro_n++] = ro;
    pthread_mutex_unlock(&ro_lock);
    ro_mine = ro;
    ro_gen = env->generation;
    return ro;
}

void osv_env_destroy(osv_env_t *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&ro_lock);
    for (size_t i = 0; i < ro_n; i++)
        e->api->ReleaseRunOptions(ro_all[i]);
    osv_free(ro_all);
    ro_all = NULL;
    ro_n = ro_cap = 0;
    pthread_mutex_unlock(&ro_lock);
    e->api->ReleaseMemoryInfo(e->cpu_info);
    e->api->ReleaseEnv(e->env);
    /* The library stays loaded: ORT keeps process-wide state (thread pools, static registries)
     * that is not safe to unmap, and reloading it in the same process is unsupported upstream. */
    osv_free(e->path);
    if (current == e)
        current = NULL;
    osv_free(e);
}

const char *osv_env_ort_version(const osv_env_t *e)
{
    return e->ort_version;
}

const char *osv_env_ort_path(const osv_env_t *e)
{
    return e->path;
}

const osv_env_opts_t *osv_env_opts(const osv_env_t *e)
{
    return &e->opts;
}
