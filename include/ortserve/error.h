/* ortserve/error.h — error codes and the error-detail object shared by every libortserve module.
 *
 * Convention (libuv's): functions return 0 on success or a negative OSV_E* code on failure. Calls
 * that can fail for a reason worth telling a user also take an `osv_err_t *` (may be NULL) that
 * receives the code and a human-readable message naming what was wrong. */
#ifndef ORTSERVE_ERROR_H
#define ORTSERVE_ERROR_H

#include <stddef.h>

#if defined(__GNUC__)
#define OSV_API               __attribute__((visibility("default")))
#define OSV_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define OSV_API
#define OSV_PRINTF(fmt, args)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* X-macro so the enum, the names and the descriptions cannot drift apart.
 * XX(name, value, description) */
#define OSV_ERRNO_MAP(XX)                                                                                    \
    XX(INVAL, -1, "invalid argument")                                                                        \
    XX(NOMEM, -2, "out of memory")                                                                           \
    XX(NOTFOUND, -3, "not found")                                                                            \
    XX(EXIST, -4, "already exists")                                                                          \
    XX(DTYPE, -5, "datatype mismatch")                                                                       \
    XX(SHAPE, -6, "shape mismatch")                                                                          \
    XX(LIMIT, -7, "limit exceeded")                                                                          \
    XX(OVERFLOW, -8, "size overflow")                                                                        \
    XX(BUSY, -9, "resource exhausted, retry later")                                                          \
    XX(UNAVAIL, -10, "not available")                                                                        \
    XX(CANCELED, -11, "canceled")                                                                            \
    XX(TIMEDOUT, -12, "deadline exceeded")                                                                   \
    XX(ORT, -13, "ONNX Runtime error")                                                                       \
    XX(IO, -14, "I/O error")                                                                                 \
    XX(UNSUPPORTED, -15, "unsupported")                                                                      \
    XX(VERSION, -16, "incompatible version")                                                                 \
    XX(PERM, -17, "not permitted")                                                                           \
    XX(PARSE, -18, "malformed input")                                                                        \
    XX(TOOBIG, -19, "too large")                                                                             \
    XX(MEDIA, -20, "unsupported media type")                                                                 \
    XX(LOAD, -21, "model load failed")                                                                       \
    XX(NOTIMPL, -22, "not implemented")                                                                      \
    XX(PROTO, -23, "protocol violation")                                                                     \
    XX(AUTH, -24, "unauthenticated")

enum {
#define OSV__ERR_ENUM(name, value, desc) OSV_E##name = (value),
    OSV_ERRNO_MAP(OSV__ERR_ENUM)
#undef OSV__ERR_ENUM
        OSV_OK = 0
};

#define OSV_ERR_MSG_MAX 1024

/* Error detail. Plain data: callers own it (usually on the stack); no cleanup needed. */
typedef struct osv_err {
    int code;                  /* 0 or an OSV_E* code */
    int index;                 /* the input, output or image the error is about; -1 when none */
    char msg[OSV_ERR_MSG_MAX]; /* NUL-terminated; "" when code is 0 */
} osv_err_t;

/* Static description of a code ("shape mismatch"); never NULL. Thread-safe. */
OSV_API const char *osv_strerror(int code);
/* Static symbolic name of a code ("OSV_ESHAPE"); never NULL. Thread-safe. */
OSV_API const char *osv_err_name(int code);

/* Fills *err (when not NULL) with `code` and a printf-formatted message, index -1; returns `code` so
 * callers can write `return osv_err_set(err, OSV_EINVAL, "...")`. Thread-safe for distinct err
 * objects. */
OSV_API int osv_err_set(osv_err_t *err, int code, const char *fmt, ...) OSV_PRINTF(3, 4);
/* Records which input, output or image (index) an error is about; returns err's code. */
OSV_API int osv_err_at(osv_err_t *err, int index);

/* Prepends "prefix: " to an existing message (for adding context on the way up). */
OSV_API void osv_err_prefix(osv_err_t *err, const char *fmt, ...) OSV_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif
#endif
