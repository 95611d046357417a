/* auth.c — bearer tokens from `--auth-token-file`: reading and checking the file, the constant-time
 * comparison, and reloading (SIGHUP) behind a read-write lock, so loops never see half a token set.
 * See auth.h for the file format. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "serve/auth.h"
#include "ortserve/alloc.h"

#define MAX_FILE (64u << 10)

typedef struct token_set {
    uint32_t n;
    uint32_t len[OSV_AUTH_MAX_TOKENS];
    uint64_t id[OSV_AUTH_MAX_TOKENS]; /* identities; a token written twice has one */
    char tok[OSV_AUTH_MAX_TOKENS][OSV_AUTH_MAX_TOKEN];
} token_set_t;

struct osv_auth {
    pthread_rwlock_t lock;
    token_set_t *set; /* under lock */
    char *path;
    uint64_t last_id; /* the main thread's (create, reload) */
};

bool osv_auth_equal(const char *a, size_t an, const char *b, size_t bn)
{
    /* Every byte of a is compared (with b repeated) and differences are OR-ed, never branched on. */
    volatile unsigned char diff = (unsigned char)(an != bn);
    size_t j = 0;
    for (size_t i = 0; i < an; i++) {
        diff |= (unsigned char)(a[i] ^ b[j]);
        j = j + 1 == bn ? 0 : j + 1;
    }
    return diff == 0;
}

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool b64token(const char *s, size_t n)
{
    size_t i = 0;
    for (; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '.' || ch == '_' || ch == '~' || ch == '+' || ch == '/'))
            break;
    }
    if (i == 0)
        return false;
    for (; i < n; i++)
        if (s[i] != '=')
            return false;
    return true;
}

static bool space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

/* Parses the file's text into set. */
static int parse(const char *path, const char *text, size_t n, token_set_t *set, osv_err_t *err)
{
    size_t pos = 0;
    unsigned line = 0;
    set->n = 0;
    while (pos < n) {
        const char *p = text + pos, *nl = memchr(p, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - p) : n - pos;
        pos += len + (nl ? 1 : 0);
        line++;
        while (len && space(*p))
            p++, len--;
        while (len && space(p[len - 1]))
            len--;
        if (len == 0 || *p == '#')
            continue;
        if (len > OSV_AUTH_MAX_TOKEN || !b64token(p, len))
            return osv_err_set(err, OSV_EINVAL,
                               "auth token file '%s', line %u: a token is 1 to %d of the characters "
                               "A-Z a-z 0-9 - . _ ~ + / (then '=' padding), with nothing else on the line",
                               path, line, OSV_AUTH_MAX_TOKEN);
        if (set->n == OSV_AUTH_MAX_TOKENS)
            return osv_err_set(err, OSV_EINVAL, "auth token file '%s' holds more than %d tokens", path,
                               OSV_AUTH_MAX_TOKENS);
        memcpy(set->tok[set->n], p, len);
        set->len[set->n++] = (uint32_t)len;
    }
    if (set->n == 0)
        return osv_err_set(err, OSV_EINVAL, "auth token file '%s' holds no token", path);
    return 0;
}

/* Reads and parses the file into a new set (caller frees). */
static int read_set(const char *path, token_set_t **out, char *warn, size_t warn_cap, osv_err_t *err)
{
    struct stat st;
    char *text = NULL;
    token_set_t *set = NULL;
    ssize_t got = 0;
    int fd, rc;
    if (warn && warn_cap)
        warn[0] = '\0';
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0)
        return osv_err_set(err, OSV_EIO, "cannot open auth token file '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return osv_err_set(err, OSV_EINVAL, "auth token file '%s' is not a regular file", path);
    }
    if (st.st_mode & S_IWOTH) {
        close(fd);
        return osv_err_set(err, OSV_EPERM,
                           "auth token file '%s' is writable by others (mode %03o): chmod o-w", path,
                           (unsigned)(st.st_mode & 0777));
    }
    if (st.st_size > (off_t)MAX_FILE) {
        close(fd);
        return osv_err_set(err, OSV_EINVAL, "auth token file '%s' is larger than %u bytes", path, MAX_FILE);
    }
    if (!(text = osv_malloc((size_t)st.st_size + 1)) || !(set = osv_malloc(sizeof *set))) {
        close(fd);
        osv_free(text);
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    while (got < st.st_size) {
        ssize_t r = read(fd, text + got, (size_t)(st.st_size - got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += r;
    }
    close(fd);
    rc = parse(path, text, (size_t)got, set, err);
    explicit_bzero(text, (size_t)got); /* no copies of secrets left in freed memory */
    osv_free(text);
    if (rc) {
        explicit_bzero(set, sizeof *set);
        osv_free(set);
        return rc;
    }
    if ((st.st_mode & (S_IRGRP | S_IROTH)) && warn && warn_cap)
        snprintf(warn, warn_cap, "auth token file '%s' is readable by %s (mode %03o): chmod 600 it", path,
                 st.st_mode & S_IROTH ? "everyone" : "its group", (unsigned)(st.st_mode & 0777));
    *out = set;
    return 0;
}

static void free_set(token_set_t *set)
{
    if (set) {
        explicit_bzero(set, sizeof *set);
        osv_free(set);
    }
}

/* The identity of token i of `set`: an earlier equal token's (in `set`, or in `old`, the set in use
 * before a reload), else a new one. */
static uint64_t identify(osv_auth_t *a, const token_set_t *old, const token_set_t *set, uint32_t i)
{
    for (uint32_t j = 0; j < i; j++)
        if (osv_auth_equal(set->tok[i], set->len[i], set->tok[j], set->len[j]))
            return set->id[j];
    for (uint32_t j = 0; old && j < old->n; j++)
        if (osv_auth_equal(set->tok[i], set->len[i], old->tok[j], old->len[j]))
            return old->id[j];
    return ++a->last_id;
}

static void identify_all(osv_auth_t *a, const token_set_t *old, token_set_t *set)
{
    for (uint32_t i = 0; i < set->n; i++)
        set->id[i] = identify(a, old, set, i);
}

int osv_auth_create(const char *path, osv_auth_t **out, char *warn, size_t warn_cap, osv_err_t *err)
{
    osv_auth_t *a = osv_calloc(1, sizeof *a);
    int rc;
    if (!a || !(a->path = osv_strdup(path))) {
        osv_free(a);
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    if ((rc = read_set(path, &a->set, warn, warn_cap, err)) != 0) {
        osv_free(a->path);
        osv_free(a);
        return rc;
    }
    identify_all(a, NULL, a->set);
    pthread_rwlock_init(&a->lock, NULL);
    *out = a;
    return 0;
}

int osv_auth_reload(osv_auth_t *a, char *warn, size_t warn_cap, osv_err_t *err)
{
    token_set_t *set = NULL, *old;
    int rc = read_set(a->path, &set, warn, warn_cap, err);
    if (rc)
        return rc;
    identify_all(a, a->set, set); /* reads a->set: only this thread ever replaces it */
    pthread_rwlock_wrlock(&a->lock);
    old = a->set;
    a->set = set;
    pthread_rwlock_unlock(&a->lock);
    free_set(old);
    return (int)set->n;
}

bool osv_auth_check(osv_auth_t *a, const char *value, size_t len, uint64_t *id)
{
    static const char scheme[] = "bearer";
    bool ok = false;
    uint64_t who = 0;
    if (!value || len <= sizeof scheme - 1 || value[sizeof scheme - 1] != ' ')
        return false;
    for (size_t i = 0; i < sizeof scheme - 1; i++) /* the scheme is case-insensitive (RFC 9110) */
        if ((value[i] | 0x20) != scheme[i])
            return false;
    value += sizeof scheme - 1;
    len -= sizeof scheme - 1;
    while (len && (*value == ' ' || *value == '\t'))
        value++, len--;
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0)
        return false;
    pthread_rwlock_rdlock(&a->lock);
    /* No early exit or branch: which token matched does not show. */
    for (uint32_t i = 0; i < a->set->n; i++) {
        bool eq = osv_auth_equal(value, len, a->set->tok[i], a->set->len[i]);
        ok |= eq;
        who |= a->set->id[i] & (0 - (uint64_t)eq); /* equal tokens share one identity */
    }
    pthread_rwlock_unlock(&a->lock);
    if (ok && id)
        *id = who;
    return ok;
}

bool osv_auth_has(osv_auth_t *a, uint64_t id)
{
    bool found = false;
    pthread_rwlock_rdlock(&a->lock);
    for (uint32_t i = 0; i < a->set->n; i++)
        found |= a->set->id[i] == id;
    pthread_rwlock_unlock(&a->lock);
    return found;
}

void osv_auth_destroy(osv_auth_t *a)
{
    if (!a)
        return;
    pthread_rwlock_destroy(&a->lock);
    free_set(a->set);
    osv_free(a->path);
    osv_free(a);
}
