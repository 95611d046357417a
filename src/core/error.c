/* error.c — error names, descriptions, and the osv_err_t helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ortserve/error.h"

const char *osv_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define OSV__ERR_DESC(name, value, desc)                                                                     \
    case (value):                                                                                            \
        return desc;
        OSV_ERRNO_MAP(OSV__ERR_DESC)
#undef OSV__ERR_DESC
    }
    return "unknown error";
}

const char *osv_err_name(int code)
{
    switch (code) {
    case 0:
        return "OSV_OK";
#define OSV__ERR_NAME(name, value, desc)                                                                     \
    case (value):                                                                                            \
        return "OSV_E" #name;
        OSV_ERRNO_MAP(OSV__ERR_NAME)
#undef OSV__ERR_NAME
    }
    return "OSV_EUNKNOWN";
}

int osv_err_set(osv_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        err->index = -1;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int osv_err_at(osv_err_t *err, int index)
{
    if (!err)
        return 0;
    err->index = index;
    return err->code;
}

void osv_err_prefix(osv_err_t *err, const char *fmt, ...)
{
    char prefix[OSV_ERR_MSG_MAX], old[OSV_ERR_MSG_MAX];
    va_list ap;
    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}
