/* sanitize.h — internal: AddressSanitizer hooks for memory ortserve manages itself, and the
 * invariant checks (OSV_ALWAYS / OSV_NEVER) that the ASan build turns into aborts.
 *
 * The slot pool and the request layout inside a slot are plain mapped memory that ASan knows nothing
 * about, so a write past a slot's range would land silently in another request's tensor. In the ASan
 * build (`make test` runs the whole suite there) these macros poison what no request may touch —
 * guard zones between slots, a slot's bytes beyond what was asked for, red zones between the tensors
 * of one request, released slots — so any such access aborts with a report. In other builds they
 * compile to nothing. */
#ifndef OSV_UTIL_SANITIZE_H
#define OSV_UTIL_SANITIZE_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define OSV_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OSV_ASAN 1
#endif
#endif

#ifdef OSV_ASAN
#include <sanitizer/asan_interface.h>
/* Bytes poisoned after every slot (the class stride grows by this) and between the tensors a
 * request lays out in its slot. */
#define OSV_ASAN_GUARD   4096u
#define OSV_ASAN_REDZONE 64u
#define osv_poison(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define osv_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define osv_is_poisoned(p) (__asan_address_is_poisoned((p)) != 0)
#else
#define OSV_ASAN_GUARD     0u
#define OSV_ASAN_REDZONE   0u
#define osv_poison(p, n)   ((void)(p), (void)(n))
#define osv_unpoison(p, n) ((void)(p), (void)(n))
#define osv_is_poisoned(p) ((void)(p), 0)
#endif

/* Invariants — conditions the code guarantees, never ones input decides (input gets an error answer).
 * SQLite's ALWAYS/NEVER: the condition wraps a branch that is still handled in release builds, where
 * OSV_ALWAYS(x) is just (x); in the ASan build (the whole suite runs there) a broken invariant aborts
 * with its text and place, so a test finds it instead of the branch hiding it:
 *     if (OSV_NEVER(n > cap)) return OSV_ELIMIT;
 *     if (OSV_ALWAYS(fits)) write(); else give_up(); */
#ifdef OSV_ASAN
#include <stdio.h>
#include <stdlib.h>
static inline int osv_invariant_failed(const char *what, const char *file, int line)
{
    fprintf(stderr, "ortserve: invariant broken at %s:%d: %s\n", file, line, what);
    abort();
}
#define OSV_ALWAYS(x) ((x) ? 1 : osv_invariant_failed("ALWAYS(" #x ")", __FILE__, __LINE__))
#define OSV_NEVER(x)  ((x) ? osv_invariant_failed("NEVER(" #x ")", __FILE__, __LINE__) : 0)
#else
#define OSV_ALWAYS(x) (!!(x))
#define OSV_NEVER(x)  (!!(x))
#endif

#endif
