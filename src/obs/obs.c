/* obs.c — per-request observability: request ids, W3C trace context, statistics, SLOs, responses by
 * status, and the access log.
 *
 * The access log is formatted by hand (no printf: a line costs a few hundred nanoseconds) into a
 * per-loop-thread buffer that is flushed with write(2) when it fills or every 100 ms. Each write
 * holds whole lines; when the destination is a pipe or socket, writes stay within PIPE_BUF so lines
 * from different loops never interleave. */
#include <limits.h>
#include <stdatomic.h>
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

#define STATUS_SLOTS 20

/* Per recording thread: written by that thread only (relaxed increments), read by scrapes. */
typedef struct shard {
    _Alignas(64) _Atomic uint64_t status[OSV_OBS_PROTO_COUNT][STATUS_SLOTS];
} shard_t;

static struct {
    shard_t *shards; /* opts.loops of them, from osv_obs_init to osv_obs_shutdown */
    int n;
    _Atomic uint64_t events[OSV_OBS_EVENT_COUNT];
} C;

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
    C.n = o->loops > 0 ? o->loops : 1;
    if (!(C.shards = osv_calloc((size_t)C.n, sizeof *C.shards))) {
        C.n = 0;
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    O.chunk = fstat(O.fd, &st) == 0 && S_ISREG(st.st_mode) ? LOG_BUF : PIPE_BUF;
    if (osv_trace_init(&to, msg, sizeof msg) != 0)
        return osv_err_set(err, OSV_EINVAL, "%s", msg);
    return 0;
}

void osv_obs_shutdown(void)
{
    osv_obs_flush();
    osv_trace_shutdown();
    osv_free(C.shards);
    C.shards = NULL;
    C.n = 0;
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

void osv_obs_ids_begin(osv_obs_ids_t *ids, const char *request_id, uint32_t request_id_len,
                       const char *traceparent, uint32_t traceparent_len, const char *tracestate,
                       uint32_t tracestate_len)
{
    if (request_id && printable_id(request_id, request_id_len)) {
        memcpy(ids->request_id, request_id, request_id_len);
        ids->request_id_len = (uint8_t)request_id_len;
    } else {
        uint64_t a = next_random(), b = next_random();
        uint8_t id[16];
        memcpy(id, &a, 8);
        memcpy(id + 8, &b, 8);
        osv_trace_hex(id, 16, ids->request_id);
        ids->request_id_len = 32;
    }
    osv_trace_begin(&ids->trace, traceparent, traceparent ? traceparent_len : 0);
    /* W3C: tracestate is only meaningful with a valid traceparent. */
    ids->tracestate = NULL;
    ids->tracestate_len = 0;
    if (tracestate && tracestate_len <= 512 && ids->trace.has_parent) {
        ids->tracestate = tracestate;
        ids->tracestate_len = tracestate_len;
    }
}

bool osv_obs_ids_ensure(osv_obs_ids_t *ids)
{
    if (ids->request_id_len)
        return false;
    osv_obs_ids_begin(ids, NULL, 0, NULL, 0, NULL, 0);
    return true;
}

void osv_obs_traceparent(const osv_obs_ids_t *ids, char out[56])
{
    osv_trace_format(&ids->trace, out);
}

osv_outcome_t osv_obs_http_outcome(int status)
{
    if (status < 400)
        return OSV_OUTCOME_SUCCESS;
    if (status == 503)
        return OSV_OUTCOME_REJECTED;
    if (status == 504)
        return OSV_OUTCOME_TIMEOUT;
    return status < 500 ? OSV_OUTCOME_INVALID : OSV_OUTCOME_ERROR;
}

/* ---- counters obs owns: responses by status (per shard), server-wide events ------------------- */

static const int http_codes[STATUS_SLOTS] = {200, 400, 403, 404, 405, 408, 409, 411, 413, 415,
                                             422, 431, 500, 501, 503, 504, 505, 204, 401, 0};

/* HTTP: the code's slot (the last one is "other"); gRPC: the code itself (0..16). */
static int status_slot(osv_obs_proto_t proto, int status)
{
    if (proto == OSV_OBS_GRPC)
        return status >= 0 && status < STATUS_SLOTS - 1 ? status : STATUS_SLOTS - 1;
    for (int i = 0; i < STATUS_SLOTS - 1; i++)
        if (http_codes[i] == status)
            return i;
    return STATUS_SLOTS - 1;
}

void osv_obs_note(osv_obs_event_t e)
{
    if ((unsigned)e < OSV_OBS_EVENT_COUNT)
        atomic_fetch_add_explicit(&C.events[e], 1, memory_order_relaxed);
}

uint64_t osv_obs_event_count(osv_obs_event_t e)
{
    return (unsigned)e < OSV_OBS_EVENT_COUNT ? atomic_load_explicit(&C.events[e], memory_order_relaxed) : 0;
}

int osv_obs_status_counts(osv_obs_proto_t proto, int codes[], uint64_t counts[], int cap)
{
    int n = 0;
    for (int i = 0; i < STATUS_SLOTS && n < cap; i++) {
        uint64_t total = 0;
        for (int k = 0; k < C.n; k++)
            total += atomic_load_explicit(&C.shards[k].status[proto][i], memory_order_relaxed);
        if (!total)
            continue;
        codes[n] = proto == OSV_OBS_GRPC ? (i < STATUS_SLOTS - 1 ? i : -1) : (i < STATUS_SLOTS - 1 ? http_codes[i] : 0);
        counts[n++] = total;
    }
    return n;
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

/* Most bytes an escaped path, model name or request id takes in a line; the fixed fields take
 * under 700 bytes, so a line always fits ACCESS_LINE. */
#define PATH_OUT    512
#define MODEL_OUT   256
#define RID_OUT     128
#define ACCESS_LINE 2048

static uint64_t front_copied(const osv_obs_record_t *r)
{
    uint64_t n = 0;
    for (int i = 0; i < OSV_COPY_REASON_COUNT; i++)
        n += r->front_copied[i];
    return n;
}

static void access_line(const osv_obs_record_t *r)
{
    const osv_obs_ids_t *q = r->ids;
    char line[ACCESS_LINE], *p = line, hex[40];
    bool error = r->proto == OSV_OBS_GRPC ? r->outcome == OSV_OUTCOME_ERROR : r->status >= 500;
    if (lb.len + sizeof line > LOG_BUF)
        osv_obs_flush();
    if (osv_log_json()) {
        p = put_str(p, "{\"ts\":\"");
        p = put_time(p);
        p = put_str(p, error ? "\",\"level\":\"error\"" : "\",\"level\":\"info\"");
        p = put_str(p, ",\"event\":\"access\",\"request_id\":\"");
        p = put_esc(p, q->request_id, q->request_id_len, RID_OUT);
        osv_trace_hex(q->trace.trace_id, 16, hex);
        p = put_str(p, "\",\"trace_id\":\"");
        p = put_str(p, hex);
        osv_trace_hex(q->trace.span_id, 8, hex);
        p = put_str(p, "\",\"span_id\":\"");
        p = put_str(p, hex);
        if (r->proto == OSV_OBS_GRPC)
            p = put_str(p, "\",\"protocol\":\"grpc");
        p = put_str(p, "\",\"method\":\"");
        p = put_esc(p, r->method, strlen(r->method), PATH_OUT);
        p = put_str(p, "\",\"path\":\"");
        p = put_esc(p, r->path, r->path_len, PATH_OUT);
        p = put_str(p, "\",\"status\":");
        p = put_u64(p, (uint64_t)r->status);
        if (r->model) {
            p = put_str(p, ",\"model\":\"");
            p = put_esc(p, osv_model_name(r->model), strlen(osv_model_name(r->model)), MODEL_OUT);
            p = put_str(p, "\",\"version\":");
            p = put_u64(p, (uint64_t)osv_model_version(r->model));
        }
        p = put_str(p, ",\"bytes_in\":");
        p = put_u64(p, r->bytes_in);
        p = put_str(p, ",\"bytes_out\":");
        p = put_u64(p, r->bytes_out);
        p = put_str(p, ",\"queue_us\":");
        p = put_u64(p, r->ns[OSV_PHASE_QUEUE] / 1000);
        p = put_str(p, ",\"infer_us\":");
        p = put_u64(p, r->ns[OSV_PHASE_COMPUTE_INFER] / 1000);
        p = put_str(p, ",\"total_us\":");
        p = put_u64(p, r->ns[OSV_PHASE_REQUEST] / 1000);
        if (r->model) {
            p = put_str(p, ",\"binding\":\"");
            p = put_str(p, osv_copy_reason_name(r->fallback));
            p = put_str(p, "\",\"copied_bytes\":");
            p = put_u64(p, r->core_copied + front_copied(r));
        }
        p = put_str(p, "}\n");
    } else {
        p = put_time(p);
        p = put_str(p, error ? " error access " : " info  access ");
        p = put_u64(p, (uint64_t)r->status);
        *p++ = ' ';
        p = put_esc(p, r->method, strlen(r->method), PATH_OUT);
        *p++ = ' ';
        p = put_esc(p, r->path, r->path_len, PATH_OUT);
        p = put_str(p, " total_us=");
        p = put_u64(p, r->ns[OSV_PHASE_REQUEST] / 1000);
        p = put_str(p, " in=");
        p = put_u64(p, r->bytes_in);
        p = put_str(p, " out=");
        p = put_u64(p, r->bytes_out);
        if (r->model) {
            p = put_str(p, " infer_us=");
            p = put_u64(p, r->ns[OSV_PHASE_COMPUTE_INFER] / 1000);
            p = put_str(p, " queue_us=");
            p = put_u64(p, r->ns[OSV_PHASE_QUEUE] / 1000);
            p = put_str(p, " binding=");
            p = put_str(p, osv_copy_reason_name(r->fallback));
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

static void record_spans(const osv_obs_record_t *r)
{
    const osv_obs_ids_t *q = r->ids;
    osv_span_req_t sp = {.ctx = &q->trace,
                         .tracestate = q->tracestate,
                         .tracestate_len = q->tracestate_len,
                         .method = r->method,
                         .route = r->route ? r->route : r->model ? "/v2/models/{model}/infer" : "other",
                         .status = r->status,
                         .request_id = q->request_id,
                         .batch = r->batch,
                         .copied = r->core_copied + front_copied(r),
                         .bytes_in = r->bytes_in,
                         .bytes_out = r->bytes_out,
                         .start_mono = r->t_start,
                         .end_mono = r->t_start + r->ns[OSV_PHASE_REQUEST]};
    if (r->model) {
        sp.model = osv_model_name(r->model);
        sp.version = osv_model_version(r->model);
        sp.binding = osv_copy_reason_name(r->fallback);
    }
    memcpy(sp.phase_start, r->phase_t0, sizeof sp.phase_start);
    memcpy(sp.phase_end, r->phase_t1, sizeof sp.phase_end);
    osv_trace_record(r->shard, &sp);
}

static void record_stats(osv_obs_record_t *r, uint64_t total)
{
    osv_stats_t *st = osv_model_stats(r->model);
    r->counted = true;
    osv_stats_record_outcome(st, r->outcome, total);
    osv_stats_record_phase(st, OSV_PHASE_REQUEST, total);
    /* Queue and compute phases describe successful inferences only, as Triton's statistics do: a
     * request rejected half-way would otherwise lower the averages it never completed. */
    for (int p = OSV_PHASE_QUEUE; r->outcome == OSV_OUTCOME_SUCCESS && p < OSV_PHASE_COUNT; p++)
        if (r->ns[p])
            osv_stats_record_phase(st, (osv_phase_t)p, r->ns[p]);
    for (int i = 0; i < OSV_COPY_REASON_COUNT; i++)
        if (r->front_copied[i])
            osv_stats_record_copy(st, (osv_copy_reason_t)i, r->front_copied[i]);
    record_slo(r->model, r->outcome, total);
}

void osv_obs_record(osv_obs_record_t *r)
{
    uint64_t total = osv_now_ns() - r->t_start;
    osv_obs_ids_ensure(r->ids); /* normally begun with the request, or by the response head */
    r->ns[OSV_PHASE_REQUEST] = total;
    if (r->shard >= 0 && r->shard < C.n)
        atomic_fetch_add_explicit(&C.shards[r->shard].status[r->proto][status_slot(r->proto, r->status)], 1,
                                  memory_order_relaxed);
    if (r->model && !r->counted)
        record_stats(r, total);
    if (O.access_log)
        access_line(r);
    if (r->ids->trace.sampled && osv_trace_exporting())
        record_spans(r);
}
