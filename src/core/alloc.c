/* alloc.c — counted, replaceable, fault-injectable heap allocation for ortserve's own objects.
 *
 * Counters are relaxed atomics: exact under concurrency, with no ordering implied. */
#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ortserve/alloc.h"

static osv_malloc_fn a_malloc = malloc;
static osv_realloc_fn a_realloc = realloc;
static osv_calloc_fn a_calloc = calloc;
static osv_free_fn a_free = free;

static _Atomic uint64_t n_allocs;
static _Atomic uint64_t n_live;
static _Atomic uint64_t live_bytes;
static _Atomic int sized = 1; /* the C library's allocator: malloc_usable_size gives block sizes */
static _Atomic uint64_t fail_countdown; /* 0 = off; 1 = fail the next allocation */
static _Atomic int fail_persistent;
static _Atomic uint64_t n_injected;

int osv_replace_allocator(osv_malloc_fn m, osv_realloc_fn r, osv_calloc_fn c, osv_free_fn f)
{
    if (!m || !r || !c || !f)
        return OSV_EINVAL;
    a_malloc = m;
    a_realloc = r;
    a_calloc = c;
    a_free = f;
    atomic_store(&sized, m == malloc && r == realloc && c == calloc && f == free);
    return 0;
}

/* True when this allocation must fail (fault injection). */
int osv_alloc_should_fail(void)
{
    uint64_t n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    while (n != 0) {
        if (n == 1) {
            if (atomic_load_explicit(&fail_persistent, memory_order_relaxed) ||
                atomic_compare_exchange_weak(&fail_countdown, &n, 0)) {
                atomic_fetch_add_explicit(&n_injected, 1, memory_order_relaxed);
                return 1;
            }
        } else if (atomic_compare_exchange_weak(&fail_countdown, &n, n - 1)) {
            return 0;
        }
    }
    return 0;
}

static uint64_t block_size(void *p)
{
    return p && atomic_load_explicit(&sized, memory_order_relaxed) ? (uint64_t)malloc_usable_size(p) : 0;
}

/* `fresh`: the block is new (not a realloc of a live one), so it adds to the live count. */
static void *counted(void *p, int fresh)
{
    if (p) {
        atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&live_bytes, block_size(p), memory_order_relaxed);
        if (fresh)
            atomic_fetch_add_explicit(&n_live, 1, memory_order_relaxed);
    }
    return p;
}

void *osv_malloc(size_t size)
{
    return osv_alloc_should_fail() ? NULL : counted(a_malloc(size ? size : 1), 1);
}

void *osv_calloc(size_t count, size_t size)
{
    return osv_alloc_should_fail() ? NULL : counted(a_calloc(count ? count : 1, size ? size : 1), 1);
}

void *osv_realloc(void *ptr, size_t size)
{
    uint64_t old = block_size(ptr);
    void *p;
    if (osv_alloc_should_fail() || !(p = a_realloc(ptr, size ? size : 1)))
        return NULL;
    atomic_fetch_sub_explicit(&live_bytes, old, memory_order_relaxed);
    return counted(p, ptr == NULL);
}

void osv_free(void *ptr)
{
    if (ptr) {
        atomic_fetch_sub_explicit(&n_live, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&live_bytes, block_size(ptr), memory_order_relaxed);
        a_free(ptr);
    }
}

char *osv_strndup(const char *s, size_t len)
{
    char *p = osv_malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

char *osv_strdup(const char *s)
{
    return osv_strndup(s, strlen(s));
}

uint64_t osv_alloc_live(void)
{
    return atomic_load_explicit(&n_live, memory_order_relaxed);
}

uint64_t osv_alloc_live_bytes(void)
{
    return atomic_load_explicit(&live_bytes, memory_order_relaxed);
}

uint64_t osv_alloc_count(void)
{
    return atomic_load_explicit(&n_allocs, memory_order_relaxed);
}

void osv_alloc_fail_after(uint64_t n, int persistent)
{
    atomic_store(&fail_persistent, persistent);
    atomic_store(&fail_countdown, n);
}

uint64_t osv_alloc_failures_injected(void)
{
    return atomic_load_explicit(&n_injected, memory_order_relaxed);
}
