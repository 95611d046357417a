/* obs.c — per-request observability: request ids, W3C trace context, statistics, SLOs, responses by
 * status, and the access log.
 *
 * The access log is formatted by hand (no printf: a line costs a few hundred nanoseconds) into a
 * per-loop-thread buffer that is flushed with write(2) when it fills or every 100 ms. Each write
 * holds whole lines; when the destination is a pipe or socket, writes stay within PIPE_BUF so lines
 * from different loops never interleave. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "obs/log.h"
#include "obs/obs.h"
#include "obs/trace.h"
#include "util/json.h"

#define LOG_BUF  (64u << 10)
#define FLUSH_NS 100000000ull

static struct {
    bool access_log;
    int fd;
    size_t chunk; /* largest write: PIPE_BUF for pipes/sockets */
    uint64_t start_wall_s;
} O = {.fd = 2, .chunk = PIPE_BUF};

static _Thread_local struct {
    char buf[LOG_BUF];
    size_t len;
    uint64_t first_at; /* when the oldest unflushed line was added */
    time_t sec;        /* cached timestamp prefix for this second */
    char prefix[24];
} lb;

static _Thread_local uint64_t rng_state;

/* ---- slo ---------------------------------------------------------------------------------------------- */

typedef struct slo {
    uint64_t latency_ns; /* 0 = no latency objective */
    double percentile;   /* informational: the share of requests that must meet latency_ns */
    double error_rate;   /* informational: the error budget */
} slo_t;

/* Longest latency objective: a day, like deadline_ms. */
#define SLO_MAX_LATENCY_MS 86400000.0

int osv_obs_model_hook(osv_model_t *m, osv_err_t *err)
{
    size_t len;
    const char *text = osv_model_config_section(m, "slo", &len);
    osv_json_tok_t toks[32];
    osv_json_doc_t doc;
    slo_t *slo;
    double v;
    if (!text)
        return 0;
    if (osv_json_parse(text, len, toks, 32, NULL, &doc, NULL) != 0 || doc.toks[0].type != OSV_JSON_OBJECT)
        return osv_err_set(
            err, OSV_EINVAL,
            "config.json: 'slo' must be an object of numbers: latency_ms, percentile, error_rate");
    if (!(slo = osv_calloc(1, sizeof *slo)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    slo->percentile = 99;
    slo->error_rate = 0.01;
    for (uint32_t i = 0, k = 1; i < doc.toks[0].count; i++, k = doc.toks[k + 1].next) {
        bool num = osv_json_tok_f64(&doc, k + 1, &v, NULL) == 0 && v == v; /* and not NaN */
        const char *bad = NULL;
        if (osv_json_str_eq(&doc, k, "latency_ms")) {
            if (num && v > 0 && v <= SLO_MAX_LATENCY_MS)
                slo->latency_ns = (uint64_t)(v * 1e6) ? (uint64_t)(v * 1e6) : 1;
            else
                bad = "slo.latency_ms must be a number of milliseconds > 0 and <= 86400000";
        } else if (osv_json_str_eq(&doc, k, "percentile")) {
            if (num && v > 0 && v < 100)
                slo->percentile = v;
            else
                bad = "slo.percentile must be a number > 0 and < 100 (e.g. 99 for p99)";
        } else if (osv_json_str_eq(&doc, k, "error_rate")) {
            if (num && v >= 0 && v <= 1)
                slo->error_rate = v;
            else
                bad = "slo.error_rate must be a number from 0 to 1 (e.g. 0.01 for 1%)";
        } else {
            const osv_json_tok_t *t = &doc.toks[k];
            osv_free(slo);
            return osv_err_set(err, OSV_EINVAL,
                               "config.json: unknown key '%.*s' in 'slo' (it accepts latency_ms, percentile "
                               "and error_rate)",
                               (int)(t->len > 64 ? 64 : t->len), doc.src + t->start);
        }
        if (bad) {
            osv_free(slo);
            return osv_err_set(err, OSV_EINVAL, "config.json: %s", bad);
        }
    }
    osv_model_set_attachment(m, OSV_ATTACH_OBS, slo, osv_free);
    return 0;
}

bool osv_obs_model_slo(const osv_model_t *m, double *latency_s, double *target, double *error_budget)
{
    const slo_t *slo = osv_model_attachment(m, OSV_ATTACH_OBS);
    if (!slo)
        return false;
    *latency_s = (double)slo->latency_ns / 1e9;
    *target = slo->percentile / 100.0;
    *error_budget = slo->error_rate;
    return true;
}

static void record_slo(osv_model_t *m, osv_outcome_t o, uint64_t total_ns)
{
    const slo_t *slo = osv_model_attachment(m, OSV_ATTACH_OBS);
    if (!slo)
        return;
    if (o == OSV_OUTCOME_ERROR || o == OSV_OUTCOME_TIMEOUT || o == OSV_OUTCOME_REJECTED)
        osv_stats_add_slo_violation(osv_model_stats(m), OSV_SLO_ERROR);
    else if (o == OSV_OUTCOME_SUCCESS && slo->latency_ns && total_ns > slo->latency_ns)
        osv_stats_add_slo_violation(osv_model_stats(m), OSV_SLO_LATENCY);
}

/* ---- init, ids ---------------------------------------------------------------------------------------- */

int osv_obs_init(const osv_obs_opts_t *o, osv_err_t *err)
{
    struct stat st;
    char msg[256] = "";
    osv_trace_opts_t to = {.endpoint = o->otlp_endpoint,
                           .service_name = o->service_name,
                           .ratio = o->trace_ratio,
                           .loops = o->loops};
    O.access_log = o->access_log;
    O.start_wall_s = (uint64_t)time(NULL);
    O.chunk = fstat(O.fd, &st) == 0 && S_ISREG(st.st_mode) ? LOG_BUF : PIPE_BUF;
    if (osv_trace_init(&to, msg, sizeof msg) != 0)
        return osv_err_set(err, OSV_EINVAL, "%s", msg);
    return 0;
}

void osv_obs_shutdown(void)
{
    osv_obs_flush();
    osv_trace_shutdown();
}

uint64_t osv_obs_start_time(void)
{
    return O.start_wall_s;
}

static uint64_t next_random(void)
{
    uint64_t x = rng_state;
    if (!x) {
        if (getrandom(&x, sizeof x, 0) != sizeof x)
            x = osv_now_ns() ^ (uint64_t)(uintptr_t)&rng_state;
        x |= 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static bool printable_id(const char *s, uint32_t n)
{
    if (n == 0 || n > 63)
        return false;
    for (uint32_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return false;
    return true;
}

void osv_obs_request_begin(osv_conn_t *c)
{
    const osv_http_header_t *h = osv_req_header(c, "X-Request-ID"), *tp = osv_req_header(c, "traceparent"),
                            *ts = osv_req_header(c, "tracestate");
    if (h && printable_id(h->value, h->value_len)) {
        memcpy(c->req.request_id, h->value, h->value_len);
        c->req.request_id_len = (uint8_t)h->value_len;
    } else {
        uint64_t a = next_random(), b = next_random();
        uint8_t id[16];
        memcpy(id, &a, 8);
        memcpy(id + 8, &b, 8);
        osv_trace_hex(id, 16, c->req.request_id);
        c->req.request_id_len = 32;
    }
    osv_trace_begin(&c->req.trace, tp ? tp->value : NULL, tp ? tp->value_len : 0);
    /* W3C: tracestate is only meaningful with a valid traceparent. */
    if (ts && ts->value_len <= 512 && c->req.trace.has_parent) {
        c->req.tracestate = ts->value;
        c->req.tracestate_len = ts->value_len;
    }
}

/* A request answered before its head was routed (a malformed head: 400, 431, ...) never went
 * through osv_obs_request_begin; give it an identity so its response and log line carry real ids
 * instead of zeros. Its headers are not looked at (they may not have been parsed). Returns true
 * when it had to. */
static bool ensure_begun(osv_conn_t *c)
{
    static const uint8_t zero[8];
    if (memcmp(c->req.trace.span_id, zero, 8) != 0)
        return false; /* a begun trace always has a non-zero span id (xorshift never yields 0) */
    uint64_t a = next_random(), b = next_random();
    uint8_t id[16];
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
    osv_trace_hex(id, 16, c->req.request_id);
    c->req.request_id_len = 32;
    osv_trace_begin(&c->req.trace, NULL, 0);
    return true;
}

void osv_obs_response_headers(osv_conn_t *c)
{
    char tp[56];
    if (ensure_begun(c)) /* osv_res_begin wrote X-Request-ID only when the request had one */
        osv_res_header_raw(c, "X-Request-ID", 12, c->req.request_id, c->req.request_id_len);
    osv_trace_format(&c->req.trace, tp);
    osv_res_header_raw(c, "traceparent", 11, tp, 55);
}

osv_outcome_t osv_obs_outcome(int status)
{
    if (status < 400)
        return OSV_OUTCOME_SUCCESS;
    if (status == 503)
        return OSV_OUTCOME_REJECTED;
    if (status == 504)
        return OSV_OUTCOME_TIMEOUT;
    return status < 500 ? OSV_OUTCOME_INVALID : OSV_OUTCOME_ERROR;
}

/* ---- responses by status ------------------------------------------------------------------------------ */

static const int status_codes[OSV_OBS_STATUS_SLOTS] = {200, 400, 403, 404, 405, 408, 409, 411, 413, 415,
                                                       422, 431, 500, 501, 503, 504, 505, 204, 401, 0};

int osv_obs_status_slot(int status)
{
    for (int i = 0; i < OSV_OBS_STATUS_SLOTS - 1; i++)
        if (status_codes[i] == status)
            return i;
    return OSV_OBS_STATUS_SLOTS - 1; /* other */
}

int osv_obs_status_code(int slot)
{
    return slot >= 0 && slot < OSV_OBS_STATUS_SLOTS - 1 ? status_codes[slot] : 0;
}

void osv_obs_status_totals(osv_server_t *s, uint64_t out[OSV_OBS_STATUS_SLOTS])
{
    for (int l = 0; l < s->n_loops; l++)
        for (int i = 0; i < OSV_OBS_STATUS_SLOTS; i++)
            out[i] += atomic_load_explicit(&s->loops[l].status[i], memory_order_relaxed);
}

/* ---- access log -----------------------------------------------------------------------------------------
 */

static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* JSON-escapes s (client-controlled paths, ids) writing at most `max` bytes. The bound is on what
 * is written, not on what is read: an escape turns one byte into six (a path of 256 bytes >= 0x7f
 * once overflowed the 1 KiB line buffer). */
static char *put_esc(char *p, const char *s, size_t n, size_t max)
{
    static const char hx[] = "0123456789abcdef";
    const char *end = p + max;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            if (end - p < 2)
                break;
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            if (end - p < 6)
                break;
            p = put_str(p, "\\u00");
            *p++ = hx[ch >> 4];
            *p++ = hx[ch & 15];
        } else {
            if (end == p)
                break;
            *p++ = (char)ch;
        }
    }
    return p;
}

static char *put_time(char *p)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != lb.sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        snprintf(lb.prefix, sizeof lb.prefix, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        lb.sec = ts.tv_sec;
    }
    p = put_str(p, lb.prefix);
    long ms = ts.tv_nsec / 1000000;
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    return p;
}

static void write_chunks(const char *p, size_t n)
{
    while (n > 0) {
        size_t k = n <= O.chunk ? n : O.chunk;
        if (k < n) { /* end the chunk on a line boundary */
            const char *nl = memrchr(p, '\n', k);
            k = nl ? (size_t)(nl - p) + 1 : k;
        }
        ssize_t w = write(O.fd, p, k);
        if (w <= 0)
            return; /* a broken log must not break serving */
        p += w;
        n -= (size_t)w;
    }
}

void osv_obs_flush(void)
{
    if (lb.len)
        write_chunks(lb.buf, lb.len);
    lb.len = 0;
    lb.first_at = 0;
}

int osv_obs_tick(void)
{
    uint64_t now;
    if (!lb.len)
        return -1;
    now = osv_now_ns();
    if (now - lb.first_at >= FLUSH_NS) {
        osv_obs_flush();
        return -1;
    }
    return (int)((FLUSH_NS - (now - lb.first_at)) / 1000000) + 1;
}

static const char *method_name(int m)
{
    static const char *const names[] = {"?", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "OTHER"};
    return m >= 0 && m <= OSV_HTTP_OTHER ? names[m] : "?";
}

/* Most bytes an escaped path, model name or request id takes in a line; the fixed fields take
 * under 700 bytes, so a line always fits ACCESS_LINE. */
#define PATH_OUT    512
#define MODEL_OUT   256
#define RID_OUT     128
#define ACCESS_LINE 2048

static void access_line(osv_conn_t *c)
{
    const osv_request_t *q = &c->req;
    char line[ACCESS_LINE], *p = line, hex[40];
    if (lb.len + sizeof line > LOG_BUF)
        osv_obs_flush();
    if (osv_log_json()) {
        p = put_str(p, "{\"ts\":\"");
        p = put_time(p);
        p = put_str(p, c->res.status >= 500 ? "\",\"level\":\"error\"" : "\",\"level\":\"info\"");
        p = put_str(p, ",\"event\":\"access\",\"request_id\":\"");
        p = put_esc(p, q->request_id, q->request_id_len, RID_OUT);
        osv_trace_hex(q->trace.trace_id, 16, hex);
        p = put_str(p, "\",\"trace_id\":\"");
        p = put_str(p, hex);
        osv_trace_hex(q->trace.span_id, 8, hex);
        p = put_str(p, "\",\"span_id\":\"");
        p = put_str(p, hex);
        p = put_str(p, "\",\"method\":\"");
        p = put_str(p, method_name(q->head.method));
        p = put_str(p, "\",\"path\":\"");
        p = put_esc(p, q->head.path, q->head.path_len, PATH_OUT);
        p = put_str(p, "\",\"status\":");
        p = put_u64(p, (uint64_t)c->res.status);
        if (q->model) {
            p = put_str(p, ",\"model\":\"");
            p = put_esc(p, osv_model_name(q->model), strlen(osv_model_name(q->model)), MODEL_OUT);
            p = put_str(p, "\",\"version\":");
            p = put_u64(p, (uint64_t)osv_model_version(q->model));
        }
        p = put_str(p, ",\"bytes_in\":");
        p = put_u64(p, q->bytes_in);
        p = put_str(p, ",\"bytes_out\":");
        p = put_u64(p, c->res.sent);
        p = put_str(p, ",\"queue_us\":");
        p = put_u64(p, q->ns[OSV_PHASE_QUEUE] / 1000);
        p = put_str(p, ",\"infer_us\":");
        p = put_u64(p, q->ns[OSV_PHASE_COMPUTE_INFER] / 1000);
        p = put_str(p, ",\"total_us\":");
        p = put_u64(p, q->ns[OSV_PHASE_REQUEST] / 1000);
        if (q->model) {
            p = put_str(p, ",\"binding\":\"");
            p = put_str(p, osv_copy_reason_name(q->fallback));
            p = put_str(p, "\",\"copied_bytes\":");
            p = put_u64(p, q->core_copied + q->copied);
        }
        p = put_str(p, "}\n");
    } else {
        p = put_time(p);
        p = put_str(p, c->res.status >= 500 ? " error access " : " info  access ");
        p = put_u64(p, (uint64_t)c->res.status);
        *p++ = ' ';
        p = put_str(p, method_name(q->head.method));
        *p++ = ' ';
        p = put_esc(p, q->head.path, q->head.path_len, PATH_OUT);
        p = put_str(p, " total_us=");
        p = put_u64(p, q->ns[OSV_PHASE_REQUEST] / 1000);
        p = put_str(p, " in=");
        p = put_u64(p, q->bytes_in);
        p = put_str(p, " out=");
        p = put_u64(p, c->res.sent);
        if (q->model) {
            p = put_str(p, " infer_us=");
            p = put_u64(p, q->ns[OSV_PHASE_COMPUTE_INFER] / 1000);
            p = put_str(p, " queue_us=");
            p = put_u64(p, q->ns[OSV_PHASE_QUEUE] / 1000);
            p = put_str(p, " binding=");
            p = put_str(p, osv_copy_reason_name(q->fallback));
        }
        p = put_str(p, " rid=");
        p = put_esc(p, q->request_id, q->request_id_len, RID_OUT);
        *p++ = '\n';
    }
    if (!lb.len)
        lb.first_at = osv_now_ns();
    memcpy(lb.buf + lb.len, line, (size_t)(p - line));
    lb.len += (size_t)(p - line);
}

/* ---- request done -------------------------------------------------------------------------------------- */

static const char *route_of(const osv_request_t *q)
{
    if (q->model)
        return q->route ? q->route : "/v2/models/{model}/infer";
    return q->route ? q->route : "other";
}

static void record_spans(osv_conn_t *c)
{
    const osv_request_t *q = &c->req;
    osv_span_req_t r = {.ctx = &q->trace,
                        .tracestate = q->tracestate,
                        .tracestate_len = q->tracestate_len,
                        .method = method_name(q->head.method),
                        .route = route_of(q),
                        .status = c->res.status,
                        .request_id = q->request_id,
                        .batch = q->batch,
                        .copied = q->core_copied + q->copied,
                        .bytes_in = q->bytes_in,
                        .bytes_out = c->res.sent,
                        .start_mono = q->t_start,
                        .end_mono = q->t_start + q->ns[OSV_PHASE_REQUEST]};
    if (q->model) {
        r.model = osv_model_name(q->model);
        r.version = osv_model_version(q->model);
        r.binding = osv_copy_reason_name(q->fallback);
    }
    for (int p = 0; p < 4; p++) {
        r.phase_start[p] = q->phase_t0[p];
        r.phase_end[p] = q->phase_t1[p];
    }
    osv_trace_record(c->loop->id, &r);
}

void osv_obs_request_done(osv_conn_t *c)
{
    osv_request_t *q = &c->req;
    uint64_t total = osv_now_ns() - q->t_start;
    ensure_begun(c); /* normally done by the response head already (osv_obs_response_headers) */
    q->ns[OSV_PHASE_REQUEST] = total;
    q->outcome = osv_obs_outcome(c->res.status);
    atomic_fetch_add_explicit(&c->loop->status[osv_obs_status_slot(c->res.status)], 1, memory_order_relaxed);
    if (q->model && !q->counted) {
        osv_stats_t *st = osv_model_stats(q->model);
        q->counted = true;
        osv_stats_record_outcome(st, q->outcome, total);
        osv_stats_record_phase(st, OSV_PHASE_REQUEST, total);
        /* Queue and compute phases describe successful inferences only, as Triton's statistics do:
         * a request rejected half-way would otherwise lower the averages it never completed. */
        for (int p = OSV_PHASE_QUEUE; q->outcome == OSV_OUTCOME_SUCCESS && p < OSV_PHASE_COUNT; p++)
            if (q->ns[p])
                osv_stats_record_phase(st, (osv_phase_t)p, q->ns[p]);
        if (q->copied)
            osv_stats_record_copy(st, OSV_COPY_READAHEAD, q->copied);
        record_slo(q->model, q->outcome, total);
    }
    if (O.access_log)
        access_line(c);
    if (q->trace.sampled && osv_trace_exporting())
        record_spans(c);
}

void osv_obs_note_timeout(osv_server_t *s, const char *kind)
{
    int i = strcmp(kind, "header") == 0  ? 0
            : strcmp(kind, "body") == 0  ? 1
            : strcmp(kind, "write") == 0 ? 2
                                         : 3;
    atomic_fetch_add_explicit(&s->timeouts[i], 1, memory_order_relaxed);
}

void osv_obs_note_accept_error(osv_server_t *s, int err)
{
    (void)err;
    atomic_fetch_add_explicit(&s->accept_errors, 1, memory_order_relaxed);
}

void osv_obs_note_rejected_connection(osv_server_t *s)
{
    atomic_fetch_add_explicit(&s->rejected_connections, 1, memory_order_relaxed);
}
