/* repo.c — the model repository: scanning Triton's directory layout, loading every version,
 * lookups for requests, and reload/unload that never disturb requests already running.
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

#define MAX_MODELS   4096
#define MAX_VERSIONS 64

typedef struct repo_model {
    char name[128];
    osv_model_t **versions; /* ascending version order */
    uint32_t n_versions;
    osv_model_state_t state;
    char reason[OSV_ERR_MSG_MAX];
    bool want; /* should be loaded: counts against readiness */
} repo_model_t;

struct osv_repo {
    osv_repo_opts_t opts;
    char root[PATH_MAX]; /* realpath of the repository */
    char single[128];    /* non-empty: root is this one model's directory (osv_repo_opts_t.model_name) */
    pthread_rwlock_t lock;
    pthread_mutex_t op_lock;
    repo_model_t *models;
    size_t n, cap;
};

typedef struct version_list {
    int64_t v[MAX_VERSIONS];
    char path[MAX_VERSIONS][PATH_MAX];
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

/* Lists the versions of model `name` on disk (numeric dirs with model.onnx, or a bare model.onnx
 * as version 1), sorted ascending, into *out (caller memory: 260 KiB, on the heap — never a
 * worker's stack). */
static int list_versions(const osv_repo_t *r, const char *name, version_list_t *out, osv_err_t *err)
{
    char dir[PATH_MAX], file[PATH_MAX];
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
        snprintf(file, sizeof file, "%s/%s/model.onnx", dir, e->d_name);
        if (!confined(r, file))
            continue;
        out->v[out->n] = v;
        snprintf(out->path[out->n], PATH_MAX, "%s", file);
        out->n++;
    }
    closedir(d);
    if (out->n == 0) {
        snprintf(file, sizeof file, "%s/model.onnx", dir);
        if (confined(r, file)) {
            out->v[0] = 1;
            snprintf(out->path[0], PATH_MAX, "%s", file);
            out->n = 1;
        }
    }
    if (out->n == 0)
        return osv_err_set(err, OSV_ENOTFOUND,
                           "model '%s' has no <version>/model.onnx or model.onnx inside the repository",
                           name);
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
        pthread_rwlock_unlock(&r->lock);
        closedir(d);
        return rc;
    }
    while (!rc && (e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat st;
        if (!osv_model_name_valid(e->d_name, strlen(e->d_name)))
            continue;
        snprintf(path, sizeof path, "%s/%s", r->root, e->d_name);
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (!ensure_model(r, e->d_name, err))
            rc = err ? err->code : OSV_ENOMEM;
    }
    pthread_rwlock_unlock(&r->lock);
    closedir(d);
    return rc;
}

static void release_all(osv_model_t **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        osv_model_release(v[i]);
    osv_free(v);
}

/* Loads every version of `name` from disk into a new array (no locks held). */
static int load_versions(osv_repo_t *r, const char *name, osv_model_t ***out, uint32_t *n_out, osv_err_t *err)
{
    version_list_t *vl = osv_malloc(sizeof *vl);
    osv_model_t **v = NULL;
    char dir[PATH_MAX];
    int rc;

    if (!vl)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if ((rc = list_versions(r, name, vl, err)) != 0)
        goto out;
    if (!(v = osv_calloc(vl->n, sizeof *v))) {
        rc = osv_err_set(err, OSV_ENOMEM, "out of memory");
        goto out;
    }
    model_dir(r, name, dir, sizeof dir);
    for (uint32_t i = 0; i < vl->n; i++) {
        if ((rc = osv_model_load(r->opts.env, name, vl->v[i], vl->path[i], dir, &r->opts.limits, &v[i],
                                 err)) != 0 ||
            (r->opts.hook && (rc = r->opts.hook(r->opts.hook_ud, v[i], err)) != 0)) {
            release_all(v, i + (v[i] != NULL));
            v = NULL;
            goto out;
        }
    }
    *out = v;
    *n_out = vl->n;
out:
    osv_free(vl);
    return rc;
}

static bool model_dir_exists(const osv_repo_t *r, const char *name)
{
    char dir[PATH_MAX];
    struct stat st;
    if (r->single[0] && strcmp(name, r->single) != 0)
        return false;
    model_dir(r, name, dir, sizeof dir);
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
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

int osv_repo_load(osv_repo_t *r, const char *name, osv_err_t *user_err)
{
    osv_err_t local = {0}, *err = user_err ? user_err : &local;
    osv_model_t **v = NULL, **old = NULL;
    uint32_t n = 0, n_old = 0;
    repo_model_t *m;
    int rc;

    if (!osv_model_name_valid(name, strlen(name)))
        return osv_err_set(err, OSV_EINVAL, "invalid model name '%s'", name);
    pthread_mutex_lock(&r->op_lock);
    pthread_rwlock_rdlock(&r->lock);
    m = find_model(r, name, strlen(name));
    osv_model_state_t before = m ? m->state : OSV_MODEL_UNAVAILABLE;
    pthread_rwlock_unlock(&r->lock);
    if (!m && !model_dir_exists(r, name)) {
        /* No row for a name that is not on disk: it would count against readiness forever. */
        rc = osv_err_set(err, OSV_ENOTFOUND, "model '%s' is not in the repository", name);
        goto out;
    }
    if ((rc = set_state(r, name, OSV_MODEL_LOADING, err)) != 0)
        goto out;
    rc = load_versions(r, name, &v, &n, err);
    pthread_rwlock_wrlock(&r->lock);
    m = find_model(r, name, strlen(name));
    m->want = true;
    if (rc == 0) {
        old = m->versions;
        n_old = m->n_versions;
        m->versions = v;
        m->n_versions = n;
        m->state = OSV_MODEL_READY;
        m->reason[0] = '\0';
    } else {
        /* A failed reload keeps the versions that were serving. */
        m->state = m->n_versions ? before : OSV_MODEL_UNAVAILABLE;
        if (m->state == OSV_MODEL_LOADING)
            m->state = OSV_MODEL_READY;
        snprintf(m->reason, sizeof m->reason, "%s", err->msg);
    }
    pthread_rwlock_unlock(&r->lock);
    release_all(old, n_old);
out:
    pthread_mutex_unlock(&r->op_lock);
    return rc;
}

int osv_repo_unload(osv_repo_t *r, const char *name, osv_err_t *err)
{
    osv_model_t **old;
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
    release_all(old, n_old);
    pthread_mutex_unlock(&r->op_lock);
    return 0;
}

int osv_repo_open(const osv_repo_opts_t *opts, osv_repo_t **out, osv_err_t *err)
{
    osv_repo_t *r;
    int rc;

    if (!opts || !opts->env || !opts->path)
        return osv_err_set(err, OSV_EINVAL, "repository needs an environment and a path");
    if (!(r = osv_calloc(1, sizeof *r)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    r->opts = *opts;
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
        release_all(r->models[i].versions, r->models[i].n_versions);
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
    } else if (m->n_versions == 0) {
        rc = osv_err_set(err, OSV_EUNAVAIL, "model '%s' is not ready (%s)", m->name,
                         m->state == OSV_MODEL_LOADING ? "loading" : m->reason);
    } else if (version < 0) {
        found = m->versions[m->n_versions - 1];
    } else {
        for (uint32_t i = 0; i < m->n_versions && !found; i++)
            if (osv_model_version(m->versions[i]) == version)
                found = m->versions[i];
        if (!found)
            rc = osv_err_set(err, OSV_ENOTFOUND, "model '%s' has no version %" PRId64, m->name, version);
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
    pthread_rwlock_rdlock(&r->lock);
    if (!(m = find_model(r, name, nlen))) {
        rc = OSV_ENOTFOUND;
        *n = 0;
    } else {
        for (uint32_t i = 0; i < m->n_versions && i < cap; i++)
            out[i] = osv_model_version(m->versions[i]);
        *n = m->n_versions;
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

static void put_entry(osv_repo_entry_t *e, const repo_model_t *m, int64_t version)
{
    snprintf(e->name, sizeof e->name, "%s", m->name);
    e->version = version;
    e->state = version >= 0 ? OSV_MODEL_READY : m->state;
    e->wanted = m->want;
    snprintf(e->reason, sizeof e->reason, "%s", version >= 0 ? "" : m->reason);
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
                put_entry(&entries[k], m, -1);
            k++;
        }
        for (uint32_t j = 0; j < m->n_versions; j++) {
            if (k < cap)
                put_entry(&entries[k], m, osv_model_version(m->versions[j]));
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
            for (uint32_t j = 0; j < r->models[i].n_versions && k < 64; j++, seen++)
                if (seen >= skip)
                    batch[k++] = osv_model_ref(r->models[i].versions[j]);
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
    bool ready = true;
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->n && ready; i++)
        if (r->models[i].want && r->models[i].state != OSV_MODEL_READY)
            ready = false;
    pthread_rwlock_unlock(&r->lock);
    return ready;
}

const char *osv_repo_path(const osv_repo_t *r)
{
    return r->root;
}
