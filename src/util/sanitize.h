/* sanitize.h — internal: AddressSanitizer hooks for memory ortserve manages itself.
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

#endif
