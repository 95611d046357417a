/* testutil.c — see testutil.h. */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static osv_env_t *env;

static const char *dir_from(const char *var, const char *fallback)
{
    const char *d = getenv(var);
    return d && *d ? d : fallback;
}

const char *osv_test_model(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", dir_from("OSV_TEST_MODELS", "var/models"), name);
    return buf;
}

const char *osv_test_real_model(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", dir_from("OSV_REAL_MODELS", "third_party/models"), name);
    return buf;
}

static void destroy_env(void)
{
    osv_env_destroy(env);
    env = NULL;
}

osv_env_t *osv_test_env(void)
{
    osv_err_t err;
    if (!env) {
        osv_env_opts_t o;
        osv_env_opts_default(&o);
        o.log_severity = 3; /* errors only: warm-ups of odd test models make ORT warn */
        if (osv_env_create(&o, &env, &err) != 0)
            fail_msg("cannot create the ORT environment: %s", err.msg);
        atexit(destroy_env);
    }
    return env;
}

const char *osv_test_tmpdir(char *buf, size_t cap)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, cap, "%s/osv-test-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(buf))
        fail_msg("mkdtemp: %s", strerror(errno));
    return buf;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void osv_test_rmtree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void mkparents(const char *file)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", file);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    }
}

void osv_test_write_file(const char *dir, const char *name, const char *text)
{
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    mkparents(path);
    if (!(f = fopen(path, "w")))
        fail_msg("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

void osv_test_copy_file(const char *src, const char *dir, const char *name)
{
    char path[4096], buf[16384];
    FILE *in, *out;
    size_t n;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    mkparents(path);
    if (!(in = fopen(src, "rb")))
        fail_msg("cannot read %s: %s", src, strerror(errno));
    if (!(out = fopen(path, "wb")))
        fail_msg("cannot write %s: %s", path, strerror(errno));
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            fail_msg("short write to %s", path);
    fclose(in);
    fclose(out);
}

osv_model_t *osv_test_load(const char *file)
{
    char path[4096], name[256];
    osv_model_t *m = NULL;
    osv_err_t err;
    snprintf(name, sizeof name, "%s", file);
    char *dot = strstr(name, ".onnx");
    if (dot)
        *dot = '\0';
    if (osv_model_load(osv_test_env(), name, 1, osv_test_model(file, path, sizeof path), NULL, NULL, &m,
                       &err) != 0)
        fail_msg("loading %s: %s", path, err.msg);
    return m;
}
