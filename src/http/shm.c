/* shm.c — the registry of system shared-memory regions and its HTTP endpoints. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/handlers.h"
#include "http/shm.h"

#define MAX_REGIONS 1024

struct osv_shm_region {
    _Atomic int refs;
    char name[128], key[256];
    uint64_t offset, size;
    void *map; /* mapping of [offset rounded down to a page, offset + size) */
    size_t map_len;
    uint8_t *base; /* = byte `offset` of the object */
};

struct osv_shm {
    pthread_mutex_t lock;
    osv_shm_region_t *regions[MAX_REGIONS];
    uint32_t n;
};

int osv_shm_create(osv_shm_t **out)
{
    osv_shm_t *s = osv_calloc(1, sizeof *s);
    if (!s)
        return OSV_ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    *out = s;
    return 0;
}

void osv_shm_put(osv_shm_region_t *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        munmap(r->map, r->map_len);
        osv_free(r);
    }
}

void osv_shm_destroy(osv_shm_t *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n; i++)
        osv_shm_put(s->regions[i]);
    pthread_mutex_destroy(&s->lock);
    osv_free(s);
}

/* Keys name objects in /dev/shm: an optional leading '/', then [A-Za-z0-9_.-], not "." or "..". */
static bool key_valid(const char *k, size_t n)
{
    size_t i = n && k[0] == '/' ? 1 : 0;
    if (n - i == 0 || n - i > 250 || (n - i <= 2 && k[i] == '.'))
        return false;
    for (; i < n; i++) {
        char ch = k[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

static int find(osv_shm_t *s, const char *name, size_t len)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (strlen(s->regions[i]->name) == len && memcmp(s->regions[i]->name, name, len) == 0)
            return (int)i;
    return -1;
}

static int map_region(osv_shm_region_t *r, osv_err_t *err)
{
    char path[260];
    struct stat st;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t start = r->offset / (uint64_t)page * (uint64_t)page, end;
    int fd;
    snprintf(path, sizeof path, "%s%s", r->key[0] == '/' ? "" : "/", r->key);
    if ((fd = shm_open(path, O_RDWR | O_CLOEXEC, 0)) < 0)
        return osv_err_set(err, errno == ENOENT ? OSV_ENOTFOUND : OSV_EPERM,
                           "cannot open shared memory '%s': %s", r->key, strerror(errno));
    if (fstat(fd, &st) != 0 || !osv_add_u64(r->offset, r->size, &end) || end > (uint64_t)st.st_size) {
        close(fd);
        return osv_err_set(err, OSV_EINVAL,
                           "shared memory '%s' is %lld bytes: offset %" PRIu64 " + byte_size %" PRIu64
                           " is outside it",
                           r->key, (long long)st.st_size, r->offset, r->size);
    }
    r->map_len = (size_t)(end - start);
    r->map = r->map_len ? mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)start) : NULL;
    close(fd);
    if (r->map_len && r->map == MAP_FAILED)
        return osv_err_set(err, OSV_EIO, "cannot map shared memory '%s': %s", r->key, strerror(errno));
    r->base = (uint8_t *)r->map + (r->offset - start);
    return 0;
}

int osv_shm_register(osv_shm_t *s, const char *name, size_t name_len, const char *key, size_t key_len,
                     uint64_t offset, uint64_t size, osv_err_t *err)
{
    osv_shm_region_t *r;
    int rc;
    if (name_len == 0 || name_len >= sizeof r->name)
        return osv_err_set(err, OSV_EINVAL, "region name must be 1 to 127 bytes");
    if (!key_valid(key, key_len))
        return osv_err_set(err, OSV_EINVAL,
                           "shared memory key must name an object in /dev/shm: an optional '/' then letters, "
                           "digits, '_', '-' or '.'");
    if (size == 0)
        return osv_err_set(err, OSV_EINVAL, "byte_size must be positive");
    if (!(r = osv_calloc(1, sizeof *r)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    memcpy(r->name, name, name_len);
    memcpy(r->key, key, key_len);
    r->offset = offset;
    r->size = size;
    atomic_init(&r->refs, 1);
    if ((rc = map_region(r, err)) != 0) {
        osv_free(r);
        return rc;
    }
    pthread_mutex_lock(&s->lock);
    if (find(s, name, name_len) >= 0)
        rc = osv_err_set(err, OSV_EEXIST, "shared memory region '%s' is already registered", r->name);
    else if (s->n == MAX_REGIONS)
        rc = osv_err_set(err, OSV_ELIMIT, "more than %d shared memory regions", MAX_REGIONS);
    else
        s->regions[s->n++] = r;
    pthread_mutex_unlock(&s->lock);
    if (rc)
        osv_shm_put(r);
    return rc;
}

int osv_shm_unregister(osv_shm_t *s, const char *name, size_t name_len, osv_err_t *err)
{
    osv_shm_region_t *gone[MAX_REGIONS];
    uint32_t n = 0;
    pthread_mutex_lock(&s->lock);
    if (name_len == 0) {
        memcpy(gone, s->regions, s->n * sizeof *gone);
        n = s->n;
        s->n = 0;
    } else {
        int i = find(s, name, name_len);
        if (i >= 0) {
            gone[n++] = s->regions[i];
            s->regions[i] = s->regions[--s->n];
        }
    }
    pthread_mutex_unlock(&s->lock);
    for (uint32_t i = 0; i < n; i++)
        osv_shm_put(gone[i]);
    if (name_len && n == 0)
        return osv_err_set(err, OSV_ENOTFOUND, "shared memory region '%.*s' is not registered",
                           (int)(name_len > 128 ? 128 : name_len), name);
    return 0;
}

osv_shm_region_t *osv_shm_get(osv_shm_t *s, const char *name, size_t len)
{
    osv_shm_region_t *r = NULL;
    pthread_mutex_lock(&s->lock);
    int i = find(s, name, len);
    if (i >= 0) {
        r = s->regions[i];
        atomic_fetch_add(&r->refs, 1);
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

int osv_shm_range(const osv_shm_region_t *r, uint64_t offset, uint64_t size, void **ptr, osv_err_t *err)
{
    uint64_t end;
    if (!osv_add_u64(offset, size, &end) || end > r->size)
        return osv_err_set(err, OSV_EINVAL,
                           "shared memory region '%s' holds %" PRIu64 " bytes: offset %" PRIu64
                           " + size %" PRIu64 " is outside it",
                           r->name, r->size, offset, size);
    *ptr = r->base + offset;
    return 0;
}

int osv_shm_list(osv_shm_t *s, const char *name, size_t name_len, osv_shm_info_t *out, size_t cap, size_t *n)
{
    size_t k = 0;
    pthread_mutex_lock(&s->lock);
    for (uint32_t i = 0; i < s->n; i++) {
        const osv_shm_region_t *r = s->regions[i];
        if (name_len && (strlen(r->name) != name_len || memcmp(r->name, name, name_len) != 0))
            continue;
        if (k < cap) {
            snprintf(out[k].name, sizeof out[k].name, "%s", r->name);
            snprintf(out[k].key, sizeof out[k].key, "%s", r->key);
            out[k].offset = r->offset;
            out[k].byte_size = r->size;
        }
        k++;
    }
    pthread_mutex_unlock(&s->lock);
    *n = k;
    return name_len && k == 0 ? OSV_ENOTFOUND : 0;
}

/* ---- endpoints -------------------------------------------------------------------------------------- */

void osv_h_shm_status(osv_conn_t *c, const osv_route_t *r)
{
    osv_shm_t *s = c->loop->srv->shm;
    size_t n = 0;
    if (osv_shm_list(s, r->region, r->region_len, NULL, 0, &n) != 0) {
        osv_res_error(c, 404, "shared memory region '%.*s' is not registered",
                      (int)(r->region_len > 128 ? 128 : r->region_len), r->region);
        return;
    }
    osv_shm_info_t *rows = osv_arena_alloc(&c->arena, (n ? n : 1) * sizeof *rows, 8);
    uint64_t cap = 16 + (uint64_t)n * (6 * (sizeof rows->name + sizeof rows->key) + 128);
    char *buf = rows ? osv_res_body_buf(c, cap) : NULL;
    osv_jw_t w;
    if (!buf) {
        osv_res_error(c, 503, "no memory for the response, retry later");
        return;
    }
    osv_shm_list(s, r->region, r->region_len, rows, n, &n);
    osv_jw_init(&w, buf, cap);
    osv_jw_arr_begin(&w);
    for (size_t i = 0; i < n; i++) {
        osv_jw_obj_begin(&w);
        osv_jw_key(&w, "name", 4);
        osv_jw_str(&w, rows[i].name, strlen(rows[i].name));
        osv_jw_key(&w, "key", 3);
        osv_jw_str(&w, rows[i].key, strlen(rows[i].key));
        osv_jw_key(&w, "offset", 6);
        osv_jw_u64(&w, rows[i].offset);
        osv_jw_key(&w, "byte_size", 9);
        osv_jw_u64(&w, rows[i].byte_size);
        osv_jw_obj_end(&w);
    }
    osv_jw_arr_end(&w);
    osv_res_json(c, 200, buf, osv_jw_len(&w));
}

static void register_done(osv_conn_t *c)
{
    const osv_route_t *r = c->req.ctx;
    osv_json_doc_t doc;
    osv_err_t err;
    int32_t tk, to, ts;
    uint64_t off = 0, size = 0;
    char key[256];
    size_t key_len = 0;
    if (!c->req.body_len) {
        osv_res_error(c, 400, "register needs a JSON body {\"key\", \"offset\", \"byte_size\"}");
        return;
    }
    if (osv_h_parse_json(c, &doc) != 0)
        return;
    if (doc.toks[0].type != OSV_JSON_OBJECT || (tk = osv_json_obj_get(&doc, 0, "key", 3)) < 0 ||
        doc.toks[tk].type != OSV_JSON_STRING || doc.toks[tk].len >= sizeof key ||
        osv_json_str_unescape(&doc, (uint32_t)tk, key, sizeof key, &key_len) != 0) {
        osv_res_error(c, 400, "register needs a string 'key' (the shared memory object's name)");
        return;
    }
    to = osv_json_obj_get(&doc, 0, "offset", 6);
    ts = osv_json_obj_get(&doc, 0, "byte_size", 9);
    if ((to >= 0 && osv_json_tok_u64(&doc, (uint32_t)to, &off, NULL) != 0) || ts < 0 ||
        osv_json_tok_u64(&doc, (uint32_t)ts, &size, NULL) != 0) {
        osv_res_error(c, 400, "register needs a non-negative integer 'byte_size' and an optional 'offset'");
        return;
    }
    int rc = osv_shm_register(c->loop->srv->shm, r->region, r->region_len, key, key_len, off, size, &err);
    if (rc)
        osv_res_error(c,
                      rc == OSV_EPERM       ? 403
                      : rc == OSV_ENOTFOUND ? 400
                                            : osv_http_status(rc),
                      "%s", err.msg);
    else
        osv_res_empty(c, 200);
}

void osv_h_shm_register(osv_conn_t *c, const osv_route_t *r)
{
    osv_route_t *copy;
    if (!c->loop->srv->o.allow_shm) {
        osv_res_error(c, 403, "shared memory registration is disabled: start the server with --allow-shm");
        return;
    }
    if (!(copy = osv_arena_alloc(&c->arena, sizeof *copy, 8))) {
        osv_res_error(c, 503, "out of memory");
        return;
    }
    *copy = *r;
    c->req.ctx = copy;
    osv_h_receive_json(c, register_done);
}

static void unregister_done(osv_conn_t *c)
{
    const osv_route_t *r = c->req.ctx;
    /* Unregistering a region that is not registered succeeds, as in Triton: the caller's goal (it is
     * not registered) holds. */
    osv_shm_unregister(c->loop->srv->shm, r->region, r->region ? r->region_len : 0, NULL);
    osv_res_empty(c, 200);
}

void osv_h_shm_unregister(osv_conn_t *c, const osv_route_t *r)
{
    osv_route_t *copy = osv_arena_alloc(&c->arena, sizeof *copy, 8);
    if (!copy) {
        osv_res_error(c, 503, "out of memory");
        return;
    }
    *copy = *r;
    c->req.ctx = copy;
    osv_h_receive_json(c, unregister_done);
}
