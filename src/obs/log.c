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

/* End of the JSON string starting at p (just past its opening quote): the closing quote, or the NUL. */
static const char *string_end(const char *p)
{
    while (*p && *p != '"')
        p += p[0] == '\\' && p[1] ? 2 : 1;
    return p;
}

/* The text form of a fields fragment ("\"k\":\"v w\",\"n\":3"): k="v w" n=3 — strings unquoted unless
 * they hold a space, '=' or nothing, \" and \\ unescaped; numbers, booleans and nested values as
 * written. The fragments are the server's own (keys plain, values escaped by osv_log_escape). */
static void text_fields(const char *p, char *out, size_t cap)
{
    size_t n = 0;
#define PUT(ch) (n + 1 < cap ? (void)(out[n++] = (char)(ch)) : (void)0)
    while (*p) {
        if (*p == ',' || *p == ' ') {
            p++;
            continue;
        }
        if (n)
            PUT(' ');
        if (*p == '"') { /* the key */
            const char *e = string_end(p + 1);
            for (p++; p < e; p++)
                PUT(*p);
            p = *e ? e + 1 : e;
            if (*p == ':')
                p++;
            PUT('=');
        }
        if (*p == '"') { /* a string value */
            const char *e = string_end(p + 1);
            bool quote = e == p + 1 || memchr(p + 1, ' ', (size_t)(e - p - 1)) || memchr(p + 1, '=', (size_t)(e - p - 1));
            if (quote)
                PUT('"');
            for (p++; p < e; p++) {
                if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                    p++;
                PUT(*p);
            }
            if (quote)
                PUT('"');
            p = *e ? e + 1 : e;
            continue;
        }
        for (int depth = 0; *p && (depth > 0 || *p != ','); p++) { /* a number, literal or nested value */
            if (*p == '"') {
                const char *e = string_end(p + 1);
                for (; p < e; p++)
                    PUT(*p);
                if (!*e)
                    break;
            }
            depth += (*p == '[' || *p == '{') - (*p == ']' || *p == '}');
            PUT(*p);
        }
    }
#undef PUT
    out[n] = '\0';
}

void osv_log(int level, const char *event, const char *fields, ...)
{
    char line[8192], ts[40], f[7000] = "", t[7000];
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
    else {
        text_fields(f, t, sizeof t);
        n = snprintf(line, sizeof line, "%s %-5s %s%s%s", ts, names[level], event, *t ? " " : "", t);
    }
    if (n > 0)
        osv_log_raw(line, (unsigned)n < sizeof line ? (unsigned)n : sizeof line - 1);
}
