/* shm.c — the registry of system shared-memory regions, the SIGBUS handler that keeps a client's
 * truncation from killing the server, and the extension's HTTP endpoints. See shm.h for the threats
 * and what each part does against them. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "obs/log.h"
#include "ortserve/alloc.h"
#include "ortserve/shape.h"
#include "serve/shm.h"

/* ---- the mappings the SIGBUS handler knows ------------------------------------------------------- */

/* Every region's mapping has an entry here from its mmap to its munmap: a fixed array that the signal
 * handler reads without locks. Writers (under map_lock) follow a sequence lock: `seq` is odd while an
 * entry changes, so the handler skips an entry that changed under it; len == 0 marks a free entry.
 * Lock-free atomics are async-signal-safe. Entries outlive registries (a process may have several). */
#define MAX_MAPPINGS (2 * OSV_SHM_MAX_REGIONS)

typedef struct mapping {
    _Atomic uint64_t seq;
    _Atomic uintptr_t start;
    _Atomic size_t len;
    _Atomic int broken; /* set by the handler: zero pages replaced the object's */
} mapping_t;

static mapping_t mappings[MAX_MAPPINGS];
static _Atomic uint32_t mappings_used; /* entries [0, used) may be live: the handler's scan bound */
static pthread_mutex_t map_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction prev_sigbus; /* the handler before ours; written once, before ours runs */
static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;

static void mapping_write(mapping_t *m, uintptr_t start, size_t len)
{
    atomic_fetch_add_explicit(&m->seq, 1, memory_order_relaxed); /* odd: changing */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&m->start, start, memory_order_relaxed);
    atomic_store_explicit(&m->len, len, memory_order_relaxed);
    atomic_store_explicit(&m->broken, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->seq, 1, memory_order_release); /* even: stable */
}

/* Enters [start, start + len) in the table; returns its index, or -1 when the table is full. */
static int mapping_add(void *start, size_t len)
{
    int found = -1;
    pthread_mutex_lock(&map_lock);
    for (uint32_t i = 0; i < MAX_MAPPINGS && found < 0; i++)
        if (atomic_load_explicit(&mappings[i].len, memory_order_relaxed) == 0)
            found = (int)i;
    if (found >= 0) {
        mapping_write(&mappings[found], (uintptr_t)start, len);
        if ((uint32_t)found >= atomic_load(&mappings_used))
            atomic_store(&mappings_used, (uint32_t)found + 1);
    }
    pthread_mutex_unlock(&map_lock);
    return found;
}

/* Before the munmap: an address reused by a later mapping must not look like a region's. */
static void mapping_remove(int i)
{
    pthread_mutex_lock(&map_lock);
    mapping_write(&mappings[i], 0, 0);
    pthread_mutex_unlock(&map_lock);
}

/* The live entry holding addr, or NULL. Async-signal-safe. */
static mapping_t *mapping_find(uintptr_t addr, uintptr_t *start, size_t *len)
{
    uint32_t n = atomic_load_explicit(&mappings_used, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        mapping_t *m = &mappings[i];
        uint64_t s1 = atomic_load_explicit(&m->seq, memory_order_acquire);
        uintptr_t st = atomic_load_explicit(&m->start, memory_order_relaxed);
        size_t ln = atomic_load_explicit(&m->len, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if ((s1 & 1) || s1 != atomic_load_explicit(&m->seq, memory_order_relaxed) || ln == 0)
            continue;
        if (addr >= st && addr - st < ln) {
            *start = st;
            *len = ln;
            return m;
        }
    }
    return NULL;
}

/* A SIGBUS in a region's mapping means its object shrank under it: anonymous zero pages take the
 * whole mapping's place (mmap is async-signal-safe; the faulting access then completes on them) and
 * the region is broken. Anything else goes where it went before we were installed. */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    uintptr_t start;
    size_t len;
    mapping_t *m =
        si && si->si_code == BUS_ADRERR ? mapping_find((uintptr_t)si->si_addr, &start, &len) : NULL;
    if (m && mmap((void *)start, len, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1,
                  0) != MAP_FAILED) {
        atomic_store(&m->broken, 1);
        errno = saved;
        return;
    }
    errno = saved;
    if ((prev_sigbus.sa_flags & SA_SIGINFO) && prev_sigbus.sa_sigaction) {
        prev_sigbus.sa_sigaction(sig, si, uc);
        return;
    }
    if (!(prev_sigbus.sa_flags & SA_SIGINFO) && prev_sigbus.sa_handler != SIG_DFL &&
        prev_sigbus.sa_handler != SIG_IGN) {
        prev_sigbus.sa_handler(sig);
        return;
    }
    /* The default action: a fault repeats when the access is retried on return; a signal that was
     * sent (kill, raise) does not, so it is raised again (blocked until we return). */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, NULL);
    if (!si || si->si_code <= 0)
        raise(SIGBUS);
}

/* Installed once, at the first registration: by then sanitizers have installed theirs, which
 * becomes prev_sigbus. (ASan ignores the call under ASAN_OPTIONS=allow_user_segv_handler=0: said.) */
static void install_sigbus(void)
{
    struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_ONSTACK}, now;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, NULL, &prev_sigbus);
    sigaction(SIGBUS, &sa, NULL);
    if (sigaction(SIGBUS, NULL, &now) != 0 || !(now.sa_flags & SA_SIGINFO) || now.sa_sigaction != on_sigbus)
        osv_log(OSV_LOG_WARN, "shm_sigbus_handler",
                "\"message\":\"the SIGBUS handler could not be installed: a client that truncates a "
                "registered object while a request uses it will crash the server\"");
}

/* ---- the registry ---------------------------------------------------------------------------------- */

struct osv_shm_region {
    _Atomic int refs;
    uint64_t owner;
    char name[128], key[256];
    uint64_t offset, size;
    int fd;    /* the object, kept open: its size is checked before every use */
    int slot;  /* entry in mappings[] while mapped, -1 before */
    void *map; /* mapping of [offset rounded down to a page, offset + size) */
    size_t map_len;
    uint8_t *base; /* = byte `offset` of the object */
};

struct osv_shm {
    pthread_mutex_t lock;
    osv_shm_region_t *regions[OSV_SHM_MAX_REGIONS];
    uint32_t n;
    uint64_t max_bytes;
    _Atomic uint64_t bytes; /* byte_size of the regions registered or being registered */
};

int osv_shm_create(uint64_t max_bytes, osv_shm_t **out)
{
    osv_shm_t *s = osv_calloc(1, sizeof *s);
    if (!s)
        return OSV_ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    s->max_bytes = max_bytes;
    atomic_init(&s->bytes, 0);
    *out = s;
    return 0;
}

static void free_region(osv_shm_region_t *r)
{
    if (r->slot >= 0)
        mapping_remove(r->slot);
    if (r->map_len && r->map && r->map != MAP_FAILED)
        munmap(r->map, r->map_len);
    if (r->fd >= 0)
        close(r->fd);
    osv_free(r);
}

void osv_shm_put(osv_shm_region_t *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        free_region(r);
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

static bool is_region(const osv_shm_region_t *r, uint64_t owner, const char *name, size_t len)
{
    return r->owner == owner && strlen(r->name) == len && memcmp(r->name, name, len) == 0;
}

static int find(osv_shm_t *s, uint64_t owner, const char *name, size_t len)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (is_region(s->regions[i], owner, name, len))
            return (int)i;
    return -1;
}

/* Takes `size` bytes of the budget, or explains why not. */
static int budget_take(osv_shm_t *s, const char *name, uint64_t size, osv_err_t *err)
{
    uint64_t cur = atomic_load(&s->bytes);
    do {
        if (size > s->max_bytes || cur > s->max_bytes - size)
            return osv_err_set(err, OSV_ELIMIT,
                               "shared memory region '%s' (%" PRIu64 " bytes) would bring the registered "
                               "total to %" PRIu64 " bytes, over this server's limit of %" PRIu64
                               " (--shm-max-bytes); unregister regions or raise the limit",
                               name, size, cur + size < cur ? UINT64_MAX : cur + size, s->max_bytes);
    } while (!atomic_compare_exchange_weak(&s->bytes, &cur, cur + size));
    return 0;
}

/* Gives a region's bytes back when it leaves the registry, not when its last user ends (a request
 * still using an unregistered region is bounded by the memory guard's reservation, and a client
 * that registers right after an unregister must not race the server's clean-up). */
static void budget_give(osv_shm_t *s, uint64_t size)
{
    atomic_fetch_sub(&s->bytes, size);
}

static int open_object(osv_shm_region_t *r, osv_err_t *err)
{
    char path[260];
    snprintf(path, sizeof path, "%s%s", r->key[0] == '/' ? "" : "/", r->key);
    if ((r->fd = shm_open(path, O_RDWR | O_CLOEXEC, 0)) >= 0)
        return 0;
    int e = errno;
    /* A key that names no object is a bad registration (400, as Triton), not an unknown endpoint. */
    return osv_err_set(err,
                       e == ENOENT                  ? OSV_EINVAL
                       : e == EMFILE || e == ENFILE ? OSV_EBUSY
                                                    : OSV_EPERM,
                       "cannot open shared memory '%s': %s", r->key, strerror(e));
}

static int map_region(osv_shm_region_t *r, osv_err_t *err)
{
    struct stat st;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t start = r->offset / (uint64_t)page * (uint64_t)page, end;
    int rc;
    if ((rc = open_object(r, err)) != 0)
        return rc;
    if (fstat(r->fd, &st) != 0)
        return osv_err_set(err, OSV_EIO, "shared memory '%s': fstat: %s", r->key, strerror(errno));
    if (!osv_add_u64(r->offset, r->size, &end) || end > (uint64_t)st.st_size)
        return osv_err_set(err, OSV_EINVAL,
                           "shared memory '%s' is %lld bytes: offset %" PRIu64 " + byte_size %" PRIu64
                           " is outside it",
                           r->key, (long long)st.st_size, r->offset, r->size);
    r->map_len = (size_t)(end - start);
    r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, (off_t)start);
    if (r->map == MAP_FAILED)
        return osv_err_set(err, OSV_EIO, "cannot map shared memory '%s': %s", r->key, strerror(errno));
    if ((r->slot = mapping_add(r->map, r->map_len)) < 0)
        return osv_err_set(err, OSV_ELIMIT, "more than %d shared memory mappings in this process",
                           MAX_MAPPINGS);
    r->base = (uint8_t *)r->map + (r->offset - start);
    return 0;
}

/* A region of `owner` filled in from the request, before any budget or mapping. */
static osv_shm_region_t *new_region(uint64_t owner, const char *name, size_t name_len, const char *key,
                                    size_t key_len, uint64_t offset, uint64_t size)
{
    osv_shm_region_t *r = osv_calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->owner = owner;
    memcpy(r->name, name, name_len);
    memcpy(r->key, key, key_len);
    r->offset = offset;
    r->size = size;
    r->fd = r->slot = -1;
    atomic_init(&r->refs, 1);
    return r;
}

int osv_shm_register(osv_shm_t *s, uint64_t owner, const char *name, size_t name_len, const char *key,
                     size_t key_len, uint64_t offset, uint64_t size, osv_err_t *err)
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
    if (!(r = new_region(owner, name, name_len, key, key_len, offset, size)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if ((rc = budget_take(s, r->name, size, err)) != 0) {
        osv_free(r);
        return rc;
    }
    pthread_once(&sigbus_once, install_sigbus);
    if ((rc = map_region(r, err)) != 0) {
        budget_give(s, size);
        free_region(r);
        return rc;
    }
    pthread_mutex_lock(&s->lock);
    if (find(s, owner, name, name_len) >= 0)
        rc = osv_err_set(err, OSV_EEXIST, "shared memory region '%s' is already registered", r->name);
    else if (s->n == OSV_SHM_MAX_REGIONS)
        rc = osv_err_set(err, OSV_ELIMIT, "more than %d shared memory regions", OSV_SHM_MAX_REGIONS);
    else
        s->regions[s->n++] = r;
    pthread_mutex_unlock(&s->lock);
    if (rc) {
        budget_give(s, size);
        osv_shm_put(r);
    }
    return rc;
}

/* Moves the regions `match` selects out of the registry into gone[]; returns how many. */
static uint32_t take_out(osv_shm_t *s, bool (*match)(const osv_shm_region_t *r, void *ud), void *ud,
                         osv_shm_region_t **gone)
{
    uint32_t n = 0;
    pthread_mutex_lock(&s->lock);
    for (uint32_t i = 0; i < s->n;) {
        if (match(s->regions[i], ud)) {
            gone[n++] = s->regions[i];
            s->regions[i] = s->regions[--s->n];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

typedef struct selector {
    uint64_t owner;
    const char *name; /* NULL: every region of owner */
    size_t len;
    bool (*keep)(void *ud, uint64_t owner);
    void *keep_ud;
} selector_t;

static bool match_name(const osv_shm_region_t *r, void *ud)
{
    const selector_t *q = ud;
    return q->name ? is_region(r, q->owner, q->name, q->len) : r->owner == q->owner;
}

static bool match_unkept(const osv_shm_region_t *r, void *ud)
{
    const selector_t *q = ud;
    return !q->keep(q->keep_ud, r->owner);
}

static uint32_t unregister_where(osv_shm_t *s, bool (*match)(const osv_shm_region_t *r, void *ud), void *ud)
{
    osv_shm_region_t *gone[OSV_SHM_MAX_REGIONS];
    uint32_t n = take_out(s, match, ud, gone);
    for (uint32_t i = 0; i < n; i++) {
        budget_give(s, gone[i]->size);
        osv_shm_put(gone[i]);
    }
    return n;
}

int osv_shm_unregister(osv_shm_t *s, uint64_t owner, const char *name, size_t name_len, osv_err_t *err)
{
    selector_t q = {.owner = owner, .name = name_len ? name : NULL, .len = name_len};
    if (unregister_where(s, match_name, &q) == 0 && name_len)
        return osv_err_set(err, OSV_ENOTFOUND, "shared memory region '%.*s' is not registered",
                           (int)(name_len > 128 ? 128 : name_len), name);
    return 0;
}

uint32_t osv_shm_unregister_unless(osv_shm_t *s, bool (*keep)(void *ud, uint64_t owner), void *ud)
{
    selector_t q = {.keep = keep, .keep_ud = ud};
    return unregister_where(s, match_unkept, &q);
}

osv_shm_region_t *osv_shm_get(osv_shm_t *s, uint64_t owner, const char *name, size_t len)
{
    osv_shm_region_t *r = NULL;
    pthread_mutex_lock(&s->lock);
    int i = find(s, owner, name, len);
    if (i >= 0) {
        r = s->regions[i];
        atomic_fetch_add(&r->refs, 1);
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

int osv_shm_check(const osv_shm_region_t *r, osv_err_t *err)
{
    if (!atomic_load(&mappings[r->slot].broken))
        return 0;
    return osv_err_set(err, OSV_EINVAL,
                       "shared memory region '%s' was truncated while in use; register it again", r->name);
}

/* The object must still reach the end of the region: touching a page past its end raises SIGBUS. */
static int check_size(const osv_shm_region_t *r, osv_err_t *err)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0)
        return osv_err_set(err, OSV_EIO, "shared memory region '%s': fstat: %s", r->name, strerror(errno));
    if ((uint64_t)st.st_size >= r->offset + r->size)
        return 0;
    return osv_err_set(err, OSV_EINVAL,
                       "shared memory region '%s' ends at byte %" PRIu64
                       " of '%s', which was truncated to %lld bytes; restore its size or register the region "
                       "again",
                       r->name, r->offset + r->size, r->key, (long long)st.st_size);
}

int osv_shm_range(const osv_shm_region_t *r, uint64_t offset, uint64_t size, void **ptr, osv_err_t *err)
{
    uint64_t end;
    int rc;
    if ((rc = osv_shm_check(r, err)) != 0 || (rc = check_size(r, err)) != 0)
        return rc;
    if (!osv_add_u64(offset, size, &end) || end > r->size)
        return osv_err_set(err, OSV_EINVAL,
                           "shared memory region '%s' holds %" PRIu64 " bytes: offset %" PRIu64
                           " + size %" PRIu64 " is outside it",
                           r->name, r->size, offset, size);
    *ptr = r->base + offset;
    return 0;
}

/* Without mincore (a seccomp filter such as systemd's @system-service refuses it): at most the
 * object's pages that hold no data yet, st_blocks being what tmpfs has allocated. */
static uint64_t unallocated(const osv_shm_region_t *r, uint64_t size)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0)
        return size;
    uint64_t have = (uint64_t)st.st_blocks * 512, total = (uint64_t)st.st_size;
    return have >= total ? 0 : total - have < size ? total - have : size;
}

uint64_t osv_shm_absent(const osv_shm_region_t *r, uint64_t offset, uint64_t size)
{
    unsigned char vec[4096]; /* 16 MiB of 4 KiB pages a call */
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), absent = 0;
    if (size == 0 || offset > r->size || size > r->size - offset)
        return 0;
    uintptr_t a = (uintptr_t)(r->base + offset) / page * page, end = (uintptr_t)(r->base + offset + size);
    while (a < end) {
        uint64_t pages = (end - a + page - 1) / page;
        if (pages > sizeof vec)
            pages = sizeof vec;
        if (mincore((void *)a, pages * page, vec) != 0)
            return unallocated(r, size);
        for (uint64_t i = 0; i < pages; i++)
            absent += (vec[i] & 1) ? 0 : page;
        a += pages * page;
    }
    return absent;
}

int osv_shm_list(osv_shm_t *s, uint64_t owner, const char *name, size_t name_len, osv_shm_info_t *out,
                 size_t cap, size_t *n)
{
    size_t k = 0;
    pthread_mutex_lock(&s->lock);
    for (uint32_t i = 0; i < s->n; i++) {
        const osv_shm_region_t *r = s->regions[i];
        if (r->owner != owner || (name_len && !is_region(r, owner, name, name_len)))
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
