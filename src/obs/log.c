/* log.c — JSON-lines / text application log; see log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "obs/log.h"

#include <stdatomic.h>

/* Written at start-up and by LogSettings (any thread), read by every thread that logs. */
static _Atomic int min_level = OSV_LOG_INFO;
static _Atomic bool as_json = true;
static int out_fd = 2;

static const char *const names[] = {"debug", "info", "warn", "error"};

void osv_log_init(int level, bool json, int fd)
{
    min_level = level;
    as_json = json;
    out_fd = fd;
}

void osv_log_set_level(int level)
{
    atomic_store_explicit(&min_level, level, memory_order_relaxed);
}

int osv_log_get_level(void)
{
    return atomic_load_explicit(&min_level, memory_order_relaxed);
}

void osv_log_set_json(bool json)
{
    atomic_store_explicit(&as_json, json, memory_order_relaxed);
}

int osv_log_level_from(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    if (strcmp(s, "warning") == 0)
        return OSV_LOG_WARN;
    return strcmp(s, "off") == 0 ? OSV_LOG_OFF : -1;
}

bool osv_log_enabled(int level)
{
    return level >= min_level && level < OSV_LOG_OFF;
}

bool osv_log_json(void)
{
    return as_json;
}

const char *osv_log_escape(const char *s, char *dst, unsigned cap)
{
    unsigned n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (unsigned)snprintf(dst + n, cap - n, "\\u%04x", ch);
        } else {
            dst[n++] = (char)ch;
        }
    }
    dst[n] = '\0';
    return dst;
}

void osv_log_raw(const char *line, unsigned len)
{
    char buf[8192];
    if (len > sizeof buf - 1)
        len = sizeof buf - 1;
    memcpy(buf, line, len);
    buf[len] = '\n';
    ssize_t r = write(out_fd, buf, len + 1);
    (void)r;
}

static unsigned timestamp(char *buf, unsigned cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    return (unsigned)snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                              ts.tv_nsec / 1000000);
}

void osv_log(int level, const char *event, const char *fields, ...)
{
    char line[8192], ts[40], f[7000] = "";
    va_list ap;
    int n;
    if (!osv_log_enabled(level))
        return;
    if (fields) {
        va_start(ap, fields);
        vsnprintf(f, sizeof f, fields, ap);
        va_end(ap);
    }
    timestamp(ts, sizeof ts);
    if (as_json)
        n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\"%s%s}", ts,
                     names[level], event, *f ? "," : "", f);
    else
        n = snprintf(line, sizeof line, "%s %-5s %s %s", ts, names[level], event, f);
    if (n > 0)
        osv_log_raw(line, (unsigned)n < sizeof line ? (unsigned)n : sizeof line - 1);
}
