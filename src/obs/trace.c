/* trace.c — W3C trace context and the OTLP/HTTP (JSON) span exporter; see trace.h.
 *
 * libcurl is loaded with dlopen only when an endpoint is configured: linked, it would bring ~30
 * shared libraries (TLS, Kerberos, LDAP, ...) and ~5.6 MiB of resident memory into every process,
 * exporting or not (docs/BENCHMARKS.md, "RSS"). Its header gives the types and constants. */
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "obs/trace.h"
#include "ortserve.h"
#include "util/json.h"

/* The libcurl functions the exporter calls, resolved from libcurl.so.4 by load_curl. */
static struct {
    void *lib;
    CURLcode (*global_init)(long);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} C;

/* curl.h may define curl_easy_setopt/getinfo as type-checking macros around the real functions. */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_global_init    C.global_init
#define curl_global_cleanup C.global_cleanup
#define curl_easy_init      C.easy_init
#define curl_easy_setopt    C.easy_setopt
#define curl_easy_perform   C.easy_perform
#define curl_easy_getinfo   C.easy_getinfo
#define curl_easy_cleanup   C.easy_cleanup
#define curl_slist_append   C.slist_append
#define curl_slist_free_all C.slist_free_all


typedef struct span_rec {
    uint8_t trace_id[16], span_id[8], parent_id[8];
    bool has_parent, server, error;
    char name[80];
    uint64_t start_wall, end_wall;
    int status;
    char model[128]; /* model names are at most 127 bytes */
    int64_t version;
    char request_id[64]; /* X-Request-ID values are at most 63 bytes */
    char binding[16];
    char tracestate[257]; /* truncated at a list-member boundary (W3C allows dropping members) */
    char method[8], route[48];
    uint64_t batch, copied, bytes_in, bytes_out;
} span_rec_t;

/* Single-producer (one loop thread) / single-consumer (the exporter) ring. */
typedef struct ring {
    _Alignas(64) _Atomic uint64_t head; /* next to read (consumer) */
    _Alignas(64) _Atomic uint64_t tail; /* next to write (producer) */
    span_rec_t *slots;
    uint64_t mask;
} ring_t;

static struct {
    bool on;
    osv_trace_opts_t o;
    char url[1024], service[128];
    ring_t *rings;
    uint64_t *limits; /* per ring: how far the current export round drains */
    int n_rings;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    span_rec_t *batch;
    char *json;
    size_t json_cap;
    CURL *curl;
    struct curl_slist *headers;
    int64_t wall_minus_mono;
    _Atomic uint64_t exported, dropped, failed;
} T;

static _Thread_local uint64_t rng;

static uint64_t rnd(void)
{
    uint64_t x = rng;
    if (!x) {
        if (getrandom(&x, sizeof x, 0) != sizeof x)
            x = osv_now_ns() ^ (uint64_t)(uintptr_t)&rng;
        x |= 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void rnd_bytes(uint8_t *b, int n)
{
    for (int i = 0; i < n; i += 8) {
        uint64_t v = rnd();
        memcpy(b + i, &v, (size_t)(n - i < 8 ? n - i : 8));
    }
}

void osv_trace_hex(const uint8_t *b, int n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int unhex(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static bool parse_hex(const char *s, int n, uint8_t *out)
{
    bool nonzero = false;
    for (int i = 0; i < n; i++) {
        int hi = unhex(s[2 * i]), lo = unhex(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
        nonzero |= out[i] != 0;
    }
    return nonzero; /* all-zero ids are invalid */
}

/* traceparent: version "-" trace-id(32) "-" parent-id(16) "-" flags(2); lower-case hex. Versions
 * other than 00 are read by the 00 layout (forward compatibility); "ff" is invalid. */
static bool parse_traceparent(osv_trace_ctx_t *t, const char *v, uint32_t len)
{
    uint8_t flags[1];
    if (len < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || (len > 55 && (v[0] == '0' && v[1] == '0')))
        return false;
    if (len > 55 && v[55] != '-') /* a future version may append fields, after a '-' */
        return false;
    if ((v[0] == 'f' && v[1] == 'f') || unhex(v[0]) < 0 || unhex(v[1]) < 0)
        return false;
    if (!parse_hex(v + 3, 16, t->trace_id) || !parse_hex(v + 36, 8, t->parent_id))
        return false;
    if (unhex(v[53]) < 0 || unhex(v[54]) < 0)
        return false;
    flags[0] = (uint8_t)(unhex(v[53]) << 4 | unhex(v[54]));
    t->sampled = flags[0] & 1;
    return true;
}

void osv_trace_begin(osv_trace_ctx_t *t, const char *traceparent, uint32_t len)
{
    t->has_parent = traceparent && parse_traceparent(t, traceparent, len);
    if (!t->has_parent) {
        rnd_bytes(t->trace_id, 16);
        t->sampled = T.on && T.o.ratio > 0 && (double)(rnd() >> 11) * 0x1.0p-53 < T.o.ratio;
    }
    rnd_bytes(t->span_id, 8);
}

void osv_trace_format(const osv_trace_ctx_t *t, char out[56])
{
    memcpy(out, "00-", 3);
    osv_trace_hex(t->trace_id, 16, out + 3);
    out[35] = '-';
    osv_trace_hex(t->span_id, 8, out + 36);
    out[52] = '-';
    out[53] = '0';
    out[54] = t->sampled ? '1' : '0';
    out[55] = '\0';
}

bool osv_trace_exporting(void)
{
    return T.on;
}

/* ---- recording (loop threads) ------------------------------------------------------------------- */

static void copy_str(char *dst, size_t cap, const char *s, size_t n)
{
    if (!s) {
        dst[0] = '\0';
        return;
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Copies the caller's tracestate, dropping whole list-members from the end when it does not fit
 * (W3C trace-context: truncation removes entries, it never cuts one). */
static void copy_tracestate(char *dst, size_t cap, const char *s, size_t n)
{
    if (!s || n == 0) {
        dst[0] = '\0';
        return;
    }
    if (n >= cap) {
        size_t keep = 0;
        for (size_t i = 0; i < cap; i++)
            if (s[i] == ',')
                keep = i; /* members before this comma fit */
        n = keep;
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static bool push(ring_t *r, const span_rec_t *s)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (tail - atomic_load_explicit(&r->head, memory_order_acquire) > r->mask) {
        atomic_fetch_add_explicit(&T.dropped, 1, memory_order_relaxed);
        return false;
    }
    r->slots[tail & r->mask] = *s;
    atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
    return true;
}

void osv_trace_record(int loop, const osv_span_req_t *q)
{
    span_rec_t s;
    if (!T.on || !q->ctx->sampled || loop < 0 || loop >= T.n_rings)
        return;
    memset(&s, 0, sizeof s);
    memcpy(s.trace_id, q->ctx->trace_id, 16);
    memcpy(s.span_id, q->ctx->span_id, 8);
    memcpy(s.parent_id, q->ctx->parent_id, 8);
    s.has_parent = q->ctx->has_parent;
    s.server = true;
    s.error = q->status >= 500;
    snprintf(s.name, sizeof s.name, "%s %s", q->method, q->route);
    s.start_wall = q->start_mono + (uint64_t)T.wall_minus_mono;
    s.end_wall = q->end_mono + (uint64_t)T.wall_minus_mono;
    s.status = q->status;
    copy_str(s.model, sizeof s.model, q->model, q->model ? strlen(q->model) : 0);
    s.version = q->version;
    copy_str(s.request_id, sizeof s.request_id, q->request_id, q->request_id ? strlen(q->request_id) : 0);
    copy_str(s.binding, sizeof s.binding, q->binding, q->binding ? strlen(q->binding) : 0);
    copy_tracestate(s.tracestate, sizeof s.tracestate, q->tracestate, q->tracestate_len);
    copy_str(s.method, sizeof s.method, q->method, strlen(q->method));
    copy_str(s.route, sizeof s.route, q->route, strlen(q->route));
    s.batch = q->batch;
    s.copied = q->copied;
    s.bytes_in = q->bytes_in;
    s.bytes_out = q->bytes_out;
    if (!push(&T.rings[loop], &s))
        return;
    for (int p = OSV_PHASE_QUEUE; p < OSV_PHASE_COUNT; p++) { /* children of the request span */
        span_rec_t c;
        if (!q->phase_end[p])
            continue;
        memset(&c, 0, sizeof c);
        memcpy(c.trace_id, s.trace_id, 16);
        memcpy(c.parent_id, s.span_id, 8);
        c.has_parent = true;
        rnd_bytes(c.span_id, 8);
        snprintf(c.name, sizeof c.name, "%s", osv_phase_name((osv_phase_t)p));
        c.start_wall = q->phase_start[p] + (uint64_t)T.wall_minus_mono;
        c.end_wall = q->phase_end[p] + (uint64_t)T.wall_minus_mono;
        memcpy(c.model, s.model, sizeof c.model);
        c.version = s.version;
        push(&T.rings[loop], &c);
    }
}

void osv_trace_counters(uint64_t *exported, uint64_t *dropped, uint64_t *failed)
{
    *exported = atomic_load(&T.exported);
    *dropped = atomic_load(&T.dropped);
    *failed = atomic_load(&T.failed);
}

/* ---- export (the background thread) ------------------------------------------------------------- */

static void attr_str(osv_jw_t *w, const char *k, const char *v)
{
    osv_jw_obj_begin(w);
    osv_jw_key(w, "key", 3);
    osv_jw_str(w, k, strlen(k));
    osv_jw_key(w, "value", 5);
    osv_jw_obj_begin(w);
    osv_jw_key(w, "stringValue", 11);
    osv_jw_str(w, v, strlen(v));
    osv_jw_obj_end(w);
    osv_jw_obj_end(w);
}

static void attr_int(osv_jw_t *w, const char *k, int64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)v);
    osv_jw_obj_begin(w);
    osv_jw_key(w, "key", 3);
    osv_jw_str(w, k, strlen(k));
    osv_jw_key(w, "value", 5);
    osv_jw_obj_begin(w);
    osv_jw_key(w, "intValue", 8); /* OTLP/JSON encodes int64 as a string */
    osv_jw_str(w, s, strlen(s));
    osv_jw_obj_end(w);
    osv_jw_obj_end(w);
}

static void write_span(osv_jw_t *w, const span_rec_t *s)
{
    char hex[40], ts[24];
    osv_jw_obj_begin(w);
    osv_trace_hex(s->trace_id, 16, hex);
    osv_jw_key(w, "traceId", 7);
    osv_jw_str(w, hex, 32);
    osv_trace_hex(s->span_id, 8, hex);
    osv_jw_key(w, "spanId", 6);
    osv_jw_str(w, hex, 16);
    if (s->has_parent) {
        osv_trace_hex(s->parent_id, 8, hex);
        osv_jw_key(w, "parentSpanId", 12);
        osv_jw_str(w, hex, 16);
    }
    if (s->tracestate[0]) {
        osv_jw_key(w, "traceState", 10);
        osv_jw_str(w, s->tracestate, strlen(s->tracestate));
    }
    osv_jw_key(w, "name", 4);
    osv_jw_str(w, s->name, strlen(s->name));
    osv_jw_key(w, "kind", 4);
    osv_jw_i64(w, s->server ? 2 : 1); /* SPAN_KIND_SERVER / SPAN_KIND_INTERNAL */
    snprintf(ts, sizeof ts, "%llu", (unsigned long long)s->start_wall);
    osv_jw_key(w, "startTimeUnixNano", 17);
    osv_jw_str(w, ts, strlen(ts));
    snprintf(ts, sizeof ts, "%llu", (unsigned long long)s->end_wall);
    osv_jw_key(w, "endTimeUnixNano", 15);
    osv_jw_str(w, ts, strlen(ts));
    osv_jw_key(w, "attributes", 10);
    osv_jw_arr_begin(w);
    if (s->model[0]) {
        attr_str(w, "ortserve.model", s->model);
        attr_int(w, "ortserve.model_version", s->version);
    }
    if (s->server) {
        attr_str(w, "http.request.method", s->method);
        attr_str(w, "http.route", s->route);
        attr_int(w, "http.response.status_code", s->status);
        attr_str(w, "ortserve.request_id", s->request_id);
        if (s->binding[0])
            attr_str(w, "ortserve.binding", s->binding);
        attr_int(w, "ortserve.batch_size", (int64_t)s->batch);
        attr_int(w, "ortserve.copied_bytes", (int64_t)s->copied);
        /* wire sizes, head included: OpenTelemetry's http.request.size / http.response.size (the
         * *.body.size attributes would be the bodies alone) */
        attr_int(w, "http.request.size", (int64_t)s->bytes_in);
        attr_int(w, "http.response.size", (int64_t)s->bytes_out);
    }
    osv_jw_arr_end(w);
    osv_jw_key(w, "status", 6);
    osv_jw_obj_begin(w);
    osv_jw_key(w, "code", 4);
    osv_jw_i64(w, s->error ? 2 : 0); /* STATUS_CODE_ERROR / STATUS_CODE_UNSET */
    osv_jw_obj_end(w);
    osv_jw_obj_end(w);
}

static size_t encode(const span_rec_t *spans, size_t n)
{
    osv_jw_t w;
    osv_jw_init(&w, T.json, T.json_cap);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "resourceSpans", 13);
    osv_jw_arr_begin(&w);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "resource", 8);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "attributes", 10);
    osv_jw_arr_begin(&w);
    attr_str(&w, "service.name", T.service);
    attr_str(&w, "service.version", osv_version());
    osv_jw_arr_end(&w);
    osv_jw_obj_end(&w);
    osv_jw_key(&w, "scopeSpans", 10);
    osv_jw_arr_begin(&w);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "scope", 5);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "name", 4);
    osv_jw_str(&w, "ortserve", 8);
    osv_jw_obj_end(&w);
    osv_jw_key(&w, "spans", 5);
    osv_jw_arr_begin(&w);
    for (size_t i = 0; i < n; i++)
        write_span(&w, &spans[i]);
    osv_jw_arr_end(&w);
    osv_jw_obj_end(&w);
    osv_jw_arr_end(&w);
    osv_jw_obj_end(&w);
    osv_jw_arr_end(&w);
    osv_jw_obj_end(&w);
    return osv_jw_error(&w) ? 0 : osv_jw_len(&w);
}

/* Moves up to cap spans into out, taking from each ring no further than limit[i] (its tail when the
 * round began: spans queued meanwhile wait for the next round, so a steady trickle of new spans
 * cannot keep the exporter posting tiny batches back to back). */
static size_t drain(span_rec_t *out, size_t cap, const uint64_t *limit)
{
    size_t n = 0;
    for (int i = 0; i < T.n_rings && n < cap; i++) {
        ring_t *r = &T.rings[i];
        uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
        while (head < limit[i] && n < cap)
            out[n++] = r->slots[head++ & r->mask];
        atomic_store_explicit(&r->head, head, memory_order_release);
    }
    return n;
}

static size_t discard(void *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static void post(size_t n)
{
    size_t len = encode(T.batch, n);
    long code = 0;
    if (!len) {
        atomic_fetch_add(&T.failed, 1);
        atomic_fetch_add(&T.dropped, n);
        return;
    }
    curl_easy_setopt(T.curl, CURLOPT_POSTFIELDS, T.json);
    curl_easy_setopt(T.curl, CURLOPT_POSTFIELDSIZE, (long)len);
    if (curl_easy_perform(T.curl) == CURLE_OK &&
        curl_easy_getinfo(T.curl, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code >= 200 && code < 300) {
        atomic_fetch_add(&T.exported, n);
    } else {
        atomic_fetch_add(&T.failed, 1);
        atomic_fetch_add(&T.dropped, n);
    }
}

/* One export round: everything queued now, in batches of at most T.o.batch spans. */
static void export_round(void)
{
    for (int i = 0; i < T.n_rings; i++)
        T.limits[i] = atomic_load_explicit(&T.rings[i].tail, memory_order_acquire);
    for (size_t n; (n = drain(T.batch, T.o.batch, T.limits)) > 0;)
        post(n);
}

static void *exporter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&T.lock);
    for (;;) {
        struct timespec ts;
        bool stop;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += T.o.interval_ms / 1000;
        ts.tv_nsec += (long)(T.o.interval_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (!T.stop)
            pthread_cond_timedwait(&T.cond, &T.lock, &ts);
        stop = T.stop;
        pthread_mutex_unlock(&T.lock);
        export_round(); /* at stop: the final flush */
        if (stop)
            return NULL;
        pthread_mutex_lock(&T.lock);
    }
}

/* Stores dlsym(lib, name) into *fn (a function pointer, written through its object representation). */
static bool resolve(void *lib, const char *name, void *fn)
{
    void *p = dlsym(lib, name);
    memcpy(fn, &p, sizeof p);
    return p != NULL;
}

static int load_curl(char *err, unsigned cap)
{
    if (C.lib)
        return 0;
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(err, cap, "--otlp-endpoint needs libcurl (Debian: libcurl4): %s", dlerror());
        return -1;
    }
    if (!resolve(lib, "curl_global_init", &C.global_init) ||
        !resolve(lib, "curl_global_cleanup", &C.global_cleanup) ||
        !resolve(lib, "curl_easy_init", &C.easy_init) || !resolve(lib, "curl_easy_setopt", &C.easy_setopt) ||
        !resolve(lib, "curl_easy_perform", &C.easy_perform) ||
        !resolve(lib, "curl_easy_getinfo", &C.easy_getinfo) ||
        !resolve(lib, "curl_easy_cleanup", &C.easy_cleanup) ||
        !resolve(lib, "curl_slist_append", &C.slist_append) ||
        !resolve(lib, "curl_slist_free_all", &C.slist_free_all)) {
        snprintf(err, cap, "libcurl.so.4 lacks a function the OTLP exporter needs");
        dlclose(lib);
        memset(&C, 0, sizeof C);
        return -1;
    }
    C.lib = lib;
    return 0;
}

static int setup_curl(char *err, unsigned cap)
{
    if (load_curl(err, cap) != 0)
        return -1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(T.curl = curl_easy_init())) {
        snprintf(err, cap, "cannot initialise libcurl");
        return -1;
    }
    T.headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(T.curl, CURLOPT_URL, T.url);
    curl_easy_setopt(T.curl, CURLOPT_HTTPHEADER, T.headers);
    curl_easy_setopt(T.curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(T.curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(T.curl, CURLOPT_WRITEFUNCTION, discard);
    return 0;
}

int osv_trace_init(const osv_trace_opts_t *o, char *err, unsigned cap)
{
    struct timespec rt, mono;
    memset(&T, 0, sizeof T);
    T.o = *o;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    T.wall_minus_mono =
        ((int64_t)rt.tv_sec - (int64_t)mono.tv_sec) * 1000000000ll + (rt.tv_nsec - mono.tv_nsec);
    if (!o->endpoint || !*o->endpoint)
        return 0; /* propagation only: no exporter thread */
    if (strncmp(o->endpoint, "http://", 7) != 0 && strncmp(o->endpoint, "https://", 8) != 0) {
        snprintf(err, cap, "--otlp-endpoint must be an http:// or https:// URL");
        return -1;
    }
    const char *path = strchr(strstr(o->endpoint, "//") + 2, '/');
    snprintf(T.url, sizeof T.url, "%s%s", o->endpoint,
             !path || !strcmp(path, "/") ? (path ? "v1/traces" : "/v1/traces") : "");
    snprintf(T.service, sizeof T.service, "%s",
             o->service_name && *o->service_name ? o->service_name : "ortserve");
    if (!T.o.ring)
        T.o.ring = 4096;
    if (!T.o.batch)
        T.o.batch = 512;
    if (!T.o.interval_ms)
        T.o.interval_ms = 1000;
    uint64_t cap_pow2 = 1;
    while (cap_pow2 < T.o.ring)
        cap_pow2 <<= 1;
    T.n_rings = o->loops > 0 ? o->loops : 1;
    T.rings = osv_calloc((size_t)T.n_rings, sizeof *T.rings);
    T.limits = osv_calloc((size_t)T.n_rings, sizeof *T.limits);
    T.batch = osv_malloc(T.o.batch * sizeof *T.batch);
    T.json_cap = (size_t)T.o.batch * 2048 + 4096;
    T.json = osv_malloc(T.json_cap);
    for (int i = 0; T.rings && i < T.n_rings; i++) {
        T.rings[i].slots = osv_malloc(cap_pow2 * sizeof(span_rec_t));
        T.rings[i].mask = cap_pow2 - 1;
        if (!T.rings[i].slots)
            T.json = NULL;
    }
    if (!T.rings || !T.limits || !T.batch || !T.json || setup_curl(err, cap) != 0) {
        if (!*err)
            snprintf(err, cap, "out of memory for the span exporter");
        return -1;
    }
    pthread_mutex_init(&T.lock, NULL);
    pthread_cond_init(&T.cond, NULL);
    T.on = true;
    if (pthread_create(&T.thread, NULL, exporter, NULL) != 0) {
        T.on = false;
        snprintf(err, cap, "cannot start the span exporter thread");
        return -1;
    }
    pthread_setname_np(T.thread, "osv-otlp"); /* visible in /proc/<pid>/task/<tid>/comm, top -H */
    return 0;
}

void osv_trace_shutdown(void)
{
    if (!T.on)
        return;
    pthread_mutex_lock(&T.lock);
    T.stop = true;
    pthread_cond_signal(&T.cond);
    pthread_mutex_unlock(&T.lock);
    pthread_join(T.thread, NULL);
    T.on = false;
    curl_slist_free_all(T.headers);
    curl_easy_cleanup(T.curl);
    curl_global_cleanup();
    for (int i = 0; i < T.n_rings; i++)
        osv_free(T.rings[i].slots);
    osv_free(T.rings);
    osv_free(T.limits);
    osv_free(T.batch);
    osv_free(T.json);
}
