/* repo.c — the model repository: scanning Triton's directory layout, loading the versions each
 * model's version policy selects, lookups for requests, and reload/unload that never disturb
 * requests already running.
 *
 * Each model has a list of version records (ascending): a READY record holds the loaded version, an
 * UNAVAILABLE one the reason it failed. A load reads the model's config.pbtxt (policy, model file
 * name), lists the version folders on disk, and for each selected version keeps the loaded instance
 * when its files did not change (osv_model_fingerprint) or loads it anew; versions no longer
 * selected are dropped. What a load did is reported through osv_repo_opts_t.on_event.
 *
 * Concurrency: `lock` (a reader-writer lock) guards the table of models and their version arrays;
 * requests take it shared just long enough to find a model and add a reference. `op_lock`
 * serialises load/unload operations, which build new sessions without holding `lock` and then swap
 * them in under a short exclusive hold; the replaced versions are released after the swap, and each
 * is freed when its last in-flight request lets go. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ortserve/alloc.h"
#include "ortserve/repo.h"
#include "tconfig.h"

#define MAX_MODELS   4096
#define MAX_VERSIONS 64

/* One version of a model: serving (model set), or unavailable with its reason. */
typedef struct repo_version {
    int64_t version;
    osv_model_t *model; /* one reference; NULL when the version failed */
    char *reason;       /* osv_malloc'ed; NULL when serving */
    /* what the load in progress did, reported once the records are installed (op lock held) */
    uint8_t loaded; /* 1 loaded, 2 reloaded over a serving instance */
    char *failure;  /* the load failed (the old instance, if any, keeps serving); osv_malloc'ed */
} repo_version_t;

typedef struct repo_model {
    char name[128];
    repo_version_t *versions; /* ascending version order */
    uint32_t n_versions;
    osv_model_state_t state;
    char reason[OSV_ERR_MSG_MAX]; /* why no version serves */
    bool want;                    /* should be loaded: counts against readiness */
} repo_model_t;

struct osv_repo {
    osv_repo_opts_t opts;
    char root[PATH_MAX]; /* realpath of the repository */
    char single[128];    /* non-empty: root is this one model's directory (osv_repo_opts_t.model_name) */
    char problem[1024];  /* osv_repo_layout_problem, "" when none */
    pthread_rwlock_t lock;
    pthread_mutex_t op_lock;
    repo_model_t *models;
    size_t n, cap;
};

/* Version folders found on disk, ascending. */
typedef struct version_list {
    int64_t v[MAX_VERSIONS];
    char path[MAX_VERSIONS][PATH_MAX];
    bool selected[MAX_VERSIONS];
    uint32_t n;
} version_list_t;

const char *osv_model_state_name(osv_model_state_t s)
{
    switch (s) {
    case OSV_MODEL_READY:
        return "READY";
    case OSV_MODEL_LOADING:
        return "LOADING";
    case OSV_MODEL_UNLOADING:
        return "UNLOADING";
    default:
        return "UNAVAILABLE";
    }
}

bool osv_model_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > 127 || name[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

/* Version directory names are decimal numbers. */
static bool parse_version(const char *s, int64_t *v)
{
    int64_t x = 0;
    if (!*s || strlen(s) > 18)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        x = x * 10 + (*s - '0');
    }
    *v = x;
    return true;
}

/* True when `path` resolves (symlinks followed) to a regular file inside the repository. */
static bool confined(const osv_repo_t *r, const char *path)
{
    char real[PATH_MAX];
    struct stat st;
    size_t n = strlen(r->root);
    if (!realpath(path, real) || stat(real, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    return strncmp(real, r->root, n) == 0 && real[n] == '/';
}

/* Directory of model `name`: <root>/<name>, or the root itself in single-model mode. */
static void model_dir(const osv_repo_t *r, const char *name, char *dir, size_t cap)
{
    if (r->single[0])
        snprintf(dir, cap, "%s", r->root);
    else
        snprintf(dir, cap, "%s/%s", r->root, name);
}

/* Sorts the list by version, ascending (insertion sort: at most MAX_VERSIONS entries). */
static void sort_versions(version_list_t *l)
{
    char path[PATH_MAX];
    for (uint32_t i = 1; i < l->n; i++) {
        int64_t v = l->v[i];
        uint32_t j = i;
        memcpy(path, l->path[i], PATH_MAX);
        for (; j > 0 && l->v[j - 1] > v; j--) {
            l->v[j] = l->v[j - 1];
            memcpy(l->path[j], l->path[j - 1], PATH_MAX);
        }
        l->v[j] = v;
        memcpy(l->path[j], path, PATH_MAX);
    }
}

/* Lists the versions of model `name` on disk (numeric dirs holding `file`, or a bare `file` as
 * version 1), sorted ascending, into *out (caller memory: 260 KiB, on the heap — never a worker's
 * stack). */
static int list_versions(const osv_repo_t *r, const char *name, const char *file, version_list_t *out,
                         osv_err_t *err)
{
    char dir[PATH_MAX], path[PATH_MAX];
    DIR *d;
    struct dirent *e;

    out->n = 0;
    model_dir(r, name, dir, sizeof dir);
    if (!(d = opendir(dir)))
        return osv_err_set(err, OSV_ENOTFOUND, "model '%s' is not in the repository", name);
    while ((e = readdir(d)) != NULL && out->n < MAX_VERSIONS) {
        int64_t v;
        if (!parse_version(e->d_name, &v))
            continue;
        snprintf(path, sizeof path, "%s/%s/%s", dir, e->d_name, file);
        if (!confined(r, path))
            continue;
        out->v[out->n] = v;
        snprintf(out->path[out->n++], PATH_MAX, "%s", path);
    }
    closedir(d);
    if (out->n == 0) {
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (confined(r, path)) {
            out->v[0] = 1;
            snprintf(out->path[out->n++], PATH_MAX, "%s", path);
        }
    }
    if (out->n == 0)
        return osv_err_set(err, OSV_ELOAD, "model '%s' has no <version>/%s or %s inside the repository", name,
                           file, file);
    sort_versions(out);
    return 0;
}

static repo_model_t *find_model(const osv_repo_t *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strlen(r->models[i].name) == len && memcmp(r->models[i].name, name, len) == 0)
            return &r->models[i];
    }
    return NULL;
}

/* Adds a table row for `name` if missing (under the write lock). */
static repo_model_t *ensure_model(osv_repo_t *r, const char *name, osv_err_t *err)
{
    repo_model_t *m = find_model(r, name, strlen(name));
    if (m)
        return m;
    if (r->n == MAX_MODELS) {
        osv_err_set(err, OSV_ELIMIT, "more than %d models", MAX_MODELS);
        return NULL;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        repo_model_t *p = osv_realloc(r->models, cap * sizeof *p);
        if (!p) {
            osv_err_set(err, OSV_ENOMEM, "out of memory");
            return NULL;
        }
        r->models = p;
        r->cap = cap;
    }
    m = &r->models[r->n++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->reason, sizeof m->reason, "not loaded");
    return m;
}

/* ---- the repository's layout ------------------------------------------------------------------------ */

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A directory that is itself a model (model.onnx, or version folders holding one, or a config
 * file) given as the repository: nothing would be served. Sets r->problem with the fix. */
static void check_layout(osv_repo_t *r)
{
    char path[PATH_MAX + 64];
    bool model_file, config, version_dirs = false, other_dirs = false;
    struct dirent *e;
    DIR *d;
    snprintf(path, sizeof path, "%s/model.onnx", r->root);
    model_file = is_file(path);
    snprintf(path, sizeof path, "%s/config.pbtxt", r->root);
    config = is_file(path);
    snprintf(path, sizeof path, "%s/config.json", r->root);
    config |= is_file(path);
    if (!(d = opendir(r->root)))
        return;
    while ((e = readdir(d)) != NULL) {
        int64_t v;
        bool version_dir = false;
        snprintf(path, sizeof path, "%s/%s", r->root, e->d_name);
        if (e->d_name[0] == '.' || !is_dir(path) || strcmp(e->d_name, "warmup") == 0)
            continue;
        if (parse_version(e->d_name, &v)) { /* a version folder holds the model file itself */
            snprintf(path, sizeof path, "%s/%s/model.onnx", r->root, e->d_name);
            version_dir = is_file(path);
        }
        version_dirs |= version_dir;
        other_dirs |= !version_dir;
    }
    closedir(d);
    if (other_dirs)
        return; /* model folders: a repository (a stray file beside them is not our business) */
    if (model_file || version_dirs || config)
        snprintf(r->problem, sizeof r->problem,
                 "%s is one model's folder (it holds %s), not a repository of model folders: serve it with "
                 "--model-name NAME, or point --model-repository at its parent folder",
                 r->root,
                 model_file     ? "model.onnx"
                 : version_dirs ? "version folders with model.onnx"
                                : "a config file");
    else
        snprintf(r->problem, sizeof r->problem,
                 "%s holds no model folder: a repository holds <model>/<version>/model.onnx (or "
                 "<model>/model.onnx)",
                 r->root);
}

/* Registers every model directory on disk in the table (without loading). */
static int scan_names(osv_repo_t *r, osv_err_t *err)
{
    DIR *d = opendir(r->root);
    struct dirent *e;
    int rc = 0;
    if (!d)
        return osv_err_set(err, OSV_EIO, "cannot read repository %s: %s", r->root, strerror(errno));
    pthread_rwlock_wrlock(&r->lock);
    if (r->single[0]) { /* the root is the model: nothing else to find */
        if (!ensure_model(r, r->single, err))
            rc = err ? err->code : OSV_ENOMEM;
    }
    while (!rc && !r->single[0] && !r->problem[0] && (e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        if (!osv_model_name_valid(e->d_name, strlen(e->d_name)))
            continue;
        snprintf(path, sizeof path, "%s/%s", r->root, e->d_name);
        if (is_dir(path) && !ensure_model(r, e->d_name, err))
            rc = err ? err->code : OSV_ENOMEM;
    }
    pthread_rwlock_unlock(&r->lock);
    closedir(d);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------------------ */

static void emit(const osv_repo_t *r, osv_repo_event_kind_t kind, const char *name, int64_t version,
                 osv_model_t *m, bool reloaded, const char *reason)
{
    osv_repo_event_t e = {kind, name, version, m, reloaded, reason};
    if (r->opts.on_event)
        r->opts.on_event(r->opts.event_ud, &e);
}

static void free_versions(repo_version_t *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        osv_model_release(v[i].model);
        osv_free(v[i].reason);
        osv_free(v[i].failure);
    }
    osv_free(v);
}

/* The serving instance of `version` among the old records, or NULL. */
static osv_model_t *old_instance(const repo_version_t *old, uint32_t n, int64_t version)
{
    for (uint32_t i = 0; i < n; i++)
        if (old[i].version == version)
            return old[i].model;
    return NULL;
}

/* A copy of the model's records, each serving one with a reference of its own. Under the op lock. */
static int snapshot(osv_repo_t *r, const char *name, repo_version_t **out, uint32_t *n)
{
    repo_model_t *m;
    int rc = 0;
    pthread_rwlock_rdlock(&r->lock);
    m = find_model(r, name, strlen(name));
    *n = m ? m->n_versions : 0;
    *out = osv_calloc(*n ? *n : 1, sizeof **out);
    if (!*out)
        rc = OSV_ENOMEM;
    for (uint32_t i = 0; !rc && i < *n; i++) {
        (*out)[i].version = m->versions[i].version;
        (*out)[i].model = m->versions[i].model ? osv_model_ref(m->versions[i].model) : NULL;
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

/* Loads one version (then the hook): 0 with *out, or the error. */
static int load_one(osv_repo_t *r, const char *name, int64_t version, const char *path, const char *dir,
                    osv_model_t **out, osv_err_t *err)
{
    int rc =
        osv_model_load_ex(r->opts.env, name, version, path, dir, &r->opts.limits, &r->opts.load, out, err);
    if (!rc && r->opts.hook && (rc = r->opts.hook(r->opts.hook_ud, *out, err)) != 0) {
        osv_err_prefix(err, "model '%s' version %" PRId64, name, version);
        osv_model_release(*out);
        *out = NULL;
    }
    return rc;
}

/* One selected version into rec: kept when its files did not change, else loaded; a failed reload
 * keeps the old instance. Returns 0 or the load's error (rec says what serves). */
static int load_version(osv_repo_t *r, const char *name, const version_list_t *vl, uint32_t i,
                        const char *dir, const repo_version_t *old, uint32_t n_old, repo_version_t *rec,
                        osv_err_t *err)
{
    osv_model_t *prev = old_instance(old, n_old, vl->v[i]), *m = NULL;
    int rc;
    rec->version = vl->v[i];
    if (prev && osv_model_fingerprint(prev) == osv_model_files_fingerprint(vl->path[i], dir)) {
        rec->model = osv_model_ref(prev); /* unchanged: keeps serving, sessions and all */
        return 0;
    }
    if ((rc = load_one(r, name, vl->v[i], vl->path[i], dir, &m, err)) != 0) {
        rec->model = prev ? osv_model_ref(prev) : NULL;
        rec->reason = prev ? NULL : osv_strdup(err->msg);
        rec->failure = osv_strdup(err->msg);
        return rc;
    }
    rec->model = m;
    rec->loaded = prev ? 2 : 1;
    return 0;
}

/* The records of every selected version. *first_err gets the first failure. */
static int load_selected(osv_repo_t *r, const char *name, const version_list_t *vl, const char *dir,
                         const repo_version_t *old, uint32_t n_old, repo_version_t **out, uint32_t *n_out,
                         osv_err_t *first_err)
{
    repo_version_t *v = osv_calloc(vl->n ? vl->n : 1, sizeof *v);
    osv_err_t err;
    int first = 0;
    uint32_t n = 0;
    if (!v)
        return osv_err_set(first_err, OSV_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < vl->n; i++) {
        if (!vl->selected[i])
            continue;
        int rc = load_version(r, name, vl, i, dir, old, n_old, &v[n++], &err);
        if (rc && !first) {
            first = rc;
            *first_err = err;
        }
    }
    *out = v;
    *n_out = n;
    return first;
}

/* Config and version folders of `name`: which versions to serve, from which files. */
static int plan_versions(osv_repo_t *r, const char *name, const char *dir, version_list_t *vl, osv_err_t *err)
{
    osv_tconfig_limits_t lim = {r->opts.load.config_max_bytes, r->opts.load.config_max_depth,
                                r->opts.load.max_instances, r->opts.load.max_warmup_runs};
    osv_tconfig_t *tc = NULL;
    char on_disk[256] = "";
    int rc = osv_tconfig_read(dir, name, &lim, &tc, err);
    if (rc)
        return rc;
    if ((rc = list_versions(r, name,
                            tc->c.default_model_filename[0] ? tc->c.default_model_filename : "model.onnx", vl,
                            err)) == 0) {
        bool any = false;
        osv_tconfig_select_versions(tc, vl->v, vl->n, vl->selected);
        for (uint32_t i = 0; i < vl->n; i++) {
            any |= vl->selected[i];
            snprintf(on_disk + strlen(on_disk), sizeof on_disk - strlen(on_disk), "%s%" PRId64, i ? ", " : "",
                     vl->v[i]);
        }
        char where[4200];
        if (!any)
            rc = osv_err_set(err, OSV_ELOAD, "%sversion_policy selects none of the versions on disk (%s)",
                             osv_tconfig_where(tc, tc->pos[TC_POS_VERSION_POLICY], where, sizeof where),
                             on_disk);
    }
    osv_tconfig_free(tc);
    return rc;
}

static int set_state(osv_repo_t *r, const char *name, osv_model_state_t st, osv_err_t *err)
{
    repo_model_t *m;
    pthread_rwlock_wrlock(&r->lock);
    m = ensure_model(r, name, err);
    if (m)
        m->state = st;
    pthread_rwlock_unlock(&r->lock);
    return m ? 0 : (err ? err->code : OSV_ENOMEM);
}

/* Swaps in the new records (or, when the model could not be read at all, keeps the old ones). */
static void install(osv_repo_t *r, const char *name, repo_version_t *v, uint32_t n, bool replace,
                    const char *why, repo_version_t **old, uint32_t *n_old)
{
    repo_model_t *m;
    bool ready = false;
    pthread_rwlock_wrlock(&r->lock);
    m = find_model(r, name, strlen(name));
    m->want = true;
    if (replace) {
        *old = m->versions;
        *n_old = m->n_versions;
        m->versions = v;
        m->n_versions = n;
    }
    for (uint32_t i = 0; i < m->n_versions; i++)
        ready |= m->versions[i].model != NULL;
    m->state = ready ? OSV_MODEL_READY : OSV_MODEL_UNAVAILABLE;
    snprintf(m->reason, sizeof m->reason, "%s", ready ? "" : why ? why : "no version could be loaded");
    pthread_rwlock_unlock(&r->lock);
}

/* After a swap: what each new record's load did. */
static void report_loaded(const osv_repo_t *r, const char *name, repo_version_t *now, uint32_t n_now)
{
    for (uint32_t i = 0; i < n_now; i++) {
        if (now[i].loaded)
            emit(r, OSV_REPO_READY, name, now[i].version, now[i].model, now[i].loaded == 2, NULL);
        if (now[i].failure)
            emit(r, OSV_REPO_FAILED, name, now[i].version, NULL, false, now[i].failure);
        osv_free(now[i].failure);
        now[i].failure = NULL;
        now[i].loaded = 0;
    }
}

/* After a swap: the versions that served before and do not now are unloaded. */
static void report_unloaded(const osv_repo_t *r, const char *name, const repo_version_t *old, uint32_t n_old,
                            const repo_version_t *now, uint32_t n_now, const char *reason)
{
    for (uint32_t i = 0; i < n_old; i++) {
        bool still = false;
        for (uint32_t j = 0; j < n_now && !still; j++)
            still = now[j].version == old[i].version && now[j].model;
        if (old[i].model && !still)
            emit(r, OSV_REPO_UNLOADED, name, old[i].version, NULL, false, reason);
    }
}

static bool model_dir_exists(const osv_repo_t *r, const char *name)
{
    char dir[PATH_MAX];
    if (r->single[0] && strcmp(name, r->single) != 0)
        return false;
    model_dir(r, name, dir, sizeof dir);
    return is_dir(dir);
}

/* A load of a model the repository holds (under the op lock). */
static int load_locked(osv_repo_t *r, const char *name, osv_err_t *err)
{
    version_list_t *vl = osv_malloc(sizeof *vl);
    repo_version_t *old = NULL, *v = NULL, *replaced = NULL;
    uint32_t n_old = 0, n = 0, n_replaced = 0;
    char dir[PATH_MAX];
    int rc;
    if (!vl || snapshot(r, name, &old, &n_old) != 0) {
        osv_free(vl);
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    model_dir(r, name, dir, sizeof dir);
    if ((rc = set_state(r, name, OSV_MODEL_LOADING, err)) == 0 &&
        (rc = plan_versions(r, name, dir, vl, err)) == 0)
        rc = load_selected(r, name, vl, dir, old, n_old, &v, &n, err);
    else if (rc != OSV_ENOMEM)
        emit(r, OSV_REPO_FAILED, name, -1, NULL, false, err->msg);
    /* A model whose config or folders cannot be read keeps what serves; otherwise the new records. */
    install(r, name, v, n, v != NULL, rc ? err->msg : NULL, &replaced, &n_replaced);
    if (v) {
        report_loaded(r, name, v, n);
        report_unloaded(r, name, replaced, n_replaced, v, n,
                        "no longer selected by the version policy or on disk");
    }
    free_versions(replaced, n_replaced);
    free_versions(old, n_old);
    osv_free(vl);
    return rc == 0 || rc == OSV_ENOMEM                         ? rc
           : rc == OSV_ENOTFOUND && !model_dir_exists(r, name) ? rc
                                                               : OSV_ELOAD;
}

int osv_repo_load(osv_repo_t *r, const char *name, osv_err_t *user_err)
{
    osv_err_t local = {0}, *err = user_err ? user_err : &local;
    int rc;
    if (!osv_model_name_valid(name, strlen(name)))
        return osv_err_set(err, OSV_EINVAL, "invalid model name '%s'", name);
    pthread_mutex_lock(&r->op_lock);
    pthread_rwlock_rdlock(&r->lock);
    bool known = find_model(r, name, strlen(name)) != NULL;
    pthread_rwlock_unlock(&r->lock);
    if (!known && !model_dir_exists(r, name)) /* no row for a name that is not on disk: it would count */
        rc = osv_err_set(err, OSV_ENOTFOUND, "model '%s' is not in the repository", name); /* forever */
    else
        rc = load_locked(r, name, err);
    if (rc && rc != OSV_ENOTFOUND)
        err->code = rc;
    pthread_mutex_unlock(&r->op_lock);
    return rc;
}

int osv_repo_unload(osv_repo_t *r, const char *name, osv_err_t *err)
{
    repo_version_t *old;
    uint32_t n_old;
    repo_model_t *m;

    pthread_mutex_lock(&r->op_lock);
    pthread_rwlock_wrlock(&r->lock);
    m = find_model(r, name, strlen(name));
    if (!m) {
        pthread_rwlock_unlock(&r->lock);
        pthread_mutex_unlock(&r->op_lock);
        return osv_err_set(err, OSV_ENOTFOUND, "unknown model '%s'", name);
    }
    old = m->versions;
    n_old = m->n_versions;
    m->versions = NULL;
    m->n_versions = 0;
    m->state = OSV_MODEL_UNAVAILABLE;
    m->want = false;
    snprintf(m->reason, sizeof m->reason, "unloaded");
    pthread_rwlock_unlock(&r->lock);
    report_unloaded(r, name, old, n_old, NULL, 0, "unloaded");
    free_versions(old, n_old);
    pthread_mutex_unlock(&r->op_lock);
    return 0;
}

/* ---- open, close, lookups
 * ---------------------------------------------------------------------------------- */

int osv_repo_open(const osv_repo_opts_t *opts, osv_repo_t **out, osv_err_t *err)
{
    osv_repo_t *r;
    int rc;

    if (!opts || !opts->env || !opts->path)
        return osv_err_set(err, OSV_EINVAL, "repository needs an environment and a path");
    if (!(r = osv_calloc(1, sizeof *r)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    r->opts = *opts;
    if (!r->opts.load.max_instances)
        osv_load_opts_default(&r->opts.load);
    if (opts->model_name) {
        size_t len = strlen(opts->model_name);
        if (len >= sizeof r->single || !osv_model_name_valid(opts->model_name, len)) {
            osv_free(r);
            return osv_err_set(err, OSV_EINVAL, "invalid model name '%s' (letters, digits, '_', '.', '-')",
                               opts->model_name);
        }
        memcpy(r->single, opts->model_name, len + 1);
    }
    r->opts.model_name = NULL; /* the caller's string may not outlive the repository */
    if (!r->opts.limits.max_dims)
        osv_limits_default(&r->opts.limits);
    if (!realpath(opts->path, r->root)) {
        osv_free(r);
        return osv_err_set(err, OSV_ENOTFOUND, "model repository %s: %s", opts->path, strerror(errno));
    }
    pthread_rwlock_init(&r->lock, NULL);
    pthread_mutex_init(&r->op_lock, NULL);
    if (!r->single[0])
        check_layout(r);
    if ((rc = scan_names(r, err)) != 0) {
        osv_repo_close(r);
        return rc;
    }
    if (opts->load_all) {
        size_t n = r->n;
        for (size_t i = 0; i < n; i++) {
            char name[128];
            memcpy(name, r->models[i].name, sizeof name);
            osv_repo_load(r, name, NULL); /* failures are recorded as UNAVAILABLE + reason */
        }
    }
    *out = r;
    return 0;
}

void osv_repo_close(osv_repo_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free_versions(r->models[i].versions, r->models[i].n_versions);
    osv_free(r->models);
    pthread_rwlock_destroy(&r->lock);
    pthread_mutex_destroy(&r->op_lock);
    osv_free(r);
}

int osv_repo_acquire(osv_repo_t *r, const char *name, size_t nlen, int64_t version, osv_model_t **out,
                     osv_err_t *err)
{
    repo_model_t *m;
    osv_model_t *found = NULL;
    int rc = 0;

    pthread_rwlock_rdlock(&r->lock);
    m = find_model(r, name, nlen);
    if (!m) {
        rc = osv_err_set(err, OSV_ENOTFOUND, "unknown model '%.*s'", (int)(nlen > 128 ? 128 : nlen), name);
    } else if (version < 0) {
        for (uint32_t i = m->n_versions; i-- > 0 && !found;)
            found = m->versions[i].model;
        if (!found)
            rc = osv_err_set(err, OSV_EUNAVAIL, "model '%s' is not ready (%s)", m->name,
                             m->state == OSV_MODEL_LOADING ? "loading" : m->reason);
    } else {
        const repo_version_t *v = NULL;
        for (uint32_t i = 0; i < m->n_versions && !v; i++)
            if (m->versions[i].version == version)
                v = &m->versions[i];
        if (v && v->model)
            found = v->model;
        else if (v)
            rc = osv_err_set(err, OSV_EUNAVAIL, "model '%s' version %" PRId64 " is not ready (%s)", m->name,
                             version, v->reason ? v->reason : "failed");
        else
            rc = osv_err_set(err, OSV_ENOTFOUND, "model '%s' has no version %" PRId64 "%s", m->name, version,
                             m->n_versions ? " served" : " loaded");
    }
    if (found)
        *out = osv_model_ref(found);
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

int osv_repo_versions(osv_repo_t *r, const char *name, size_t nlen, int64_t *out, size_t cap, size_t *n)
{
    repo_model_t *m;
    int rc = 0;
    size_t k = 0;
    pthread_rwlock_rdlock(&r->lock);
    if (!(m = find_model(r, name, nlen))) {
        rc = OSV_ENOTFOUND;
    } else {
        for (uint32_t i = 0; i < m->n_versions; i++) {
            if (!m->versions[i].model)
                continue;
            if (k < cap)
                out[k] = m->versions[i].version;
            k++;
        }
    }
    *n = k;
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

static void put_entry(osv_repo_entry_t *e, const repo_model_t *m, const repo_version_t *v)
{
    snprintf(e->name, sizeof e->name, "%s", m->name);
    e->version = v ? v->version : -1;
    e->state = !v ? m->state : v->model ? OSV_MODEL_READY : OSV_MODEL_UNAVAILABLE;
    e->wanted = m->want;
    snprintf(e->reason, sizeof e->reason, "%s", !v ? m->reason : v->reason ? v->reason : "");
}

int osv_repo_index(osv_repo_t *r, bool ready_only, osv_repo_entry_t *entries, size_t cap, size_t *n)
{
    size_t k = 0;
    int rc = scan_names(r, NULL);
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->n; i++) {
        const repo_model_t *m = &r->models[i];
        if (m->n_versions == 0 && !ready_only) {
            if (k < cap)
                put_entry(&entries[k], m, NULL);
            k++;
        }
        for (uint32_t j = 0; j < m->n_versions; j++) {
            if (ready_only && !m->versions[j].model)
                continue;
            if (k < cap)
                put_entry(&entries[k], m, &m->versions[j]);
            k++;
        }
    }
    pthread_rwlock_unlock(&r->lock);
    *n = k;
    return rc;
}

int osv_repo_foreach(osv_repo_t *r, int (*fn)(void *ud, osv_model_t *m), void *ud)
{
    osv_model_t *batch[64];
    size_t total = 0, skip = 0;
    int rc = 0;
    /* Collect references in batches so fn runs without the lock held. */
    do {
        size_t k = 0, seen = 0;
        pthread_rwlock_rdlock(&r->lock);
        for (size_t i = 0; i < r->n && k < 64; i++) {
            for (uint32_t j = 0; j < r->models[i].n_versions && k < 64; j++) {
                osv_model_t *m = r->models[i].versions[j].model;
                if (m && seen++ >= skip)
                    batch[k++] = osv_model_ref(m);
            }
        }
        pthread_rwlock_unlock(&r->lock);
        total = k;
        skip += k;
        for (size_t i = 0; i < k; i++) {
            if (!rc)
                rc = fn(ud, batch[i]);
            osv_model_release(batch[i]);
        }
    } while (!rc && total == 64);
    return rc;
}

size_t osv_repo_model_count(osv_repo_t *r)
{
    size_t n;
    pthread_rwlock_rdlock(&r->lock);
    n = r->n;
    pthread_rwlock_unlock(&r->lock);
    return n;
}

bool osv_repo_ready(osv_repo_t *r)
{
    bool ready = true, serving = false;
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->n && ready; i++) {
        if (r->models[i].want && r->models[i].state != OSV_MODEL_READY)
            ready = false;
        serving |= r->models[i].state == OSV_MODEL_READY;
    }
    pthread_rwlock_unlock(&r->lock);
    return ready && serving;
}

const char *osv_repo_path(const osv_repo_t *r)
{
    return r->root;
}

const char *osv_repo_layout_problem(const osv_repo_t *r)
{
    return r->problem[0] ? r->problem : NULL;
}
