/* log.h — internal: structured application logs, one line per event, JSON (default) or text.
 *
 * A line is formatted into a stack buffer and written with one write(2), so lines from different
 * threads never interleave. Thread-safe; allocation-free. */
#ifndef OSV_OBS_LOG_H
#define OSV_OBS_LOG_H

#include <stdbool.h>

enum { OSV_LOG_DEBUG = 0, OSV_LOG_INFO, OSV_LOG_WARN, OSV_LOG_ERROR, OSV_LOG_OFF };

/* level: minimum level written; json: JSON lines (else text); fd: where lines go (2 = stderr). */
void osv_log_init(int level, bool json, int fd);
/* Parses "debug|info|warn|error|off"; -1 when unknown. */
int osv_log_level_from(const char *s);
/* The level and format at run time (LogSettings over gRPC): any thread. */
void osv_log_set_level(int level);
int osv_log_get_level(void);
void osv_log_set_json(bool json);
bool osv_log_enabled(int level);
bool osv_log_json(void);

/* Writes one event. `fields` is printf-formatted JSON members without braces, e.g.
 * "\"model\":\"%s\",\"ms\":%.1f" (NULL for none); in text mode they follow the message as is.
 * String values interpolated into `fields` must be JSON-safe (use osv_log_escape). */
void osv_log(int level, const char *event, const char *fields, ...) __attribute__((format(printf, 3, 4)));

/* Escapes s (JSON string rules, without quotes) into dst (cap bytes, NUL-terminated); returns dst. */
const char *osv_log_escape(const char *s, char *dst, unsigned cap);

/* Writes a preformatted line (a trailing newline is added). */
void osv_log_raw(const char *line, unsigned len);

#endif
