/* router.c — maps a request path to its handler by splitting it on '/' (no regex, no allocation),
 * and answers 404 for unknown paths and 405 (with Allow) for wrong methods. */
#include <string.h>
#include <strings.h>

#include "serve/auth.h"
#include "http/handlers.h"
#include "http/inflate.h"
#include "obs/obs.h"

#define MAX_SEGS 8

typedef struct seg {
    const char *p;
    uint32_t n;
} seg_t;

static int split(const char *path, uint32_t len, seg_t *s)
{
    int n = 0;
    uint32_t i = 0;
    while (i < len) {
        while (i < len && path[i] == '/')
            i++;
        if (i == len)
            break;
        if (n == MAX_SEGS)
            return -1;
        s[n].p = path + i;
        while (i < len && path[i] != '/')
            i++;
        s[n].n = (uint32_t)(path + i - s[n].p);
        n++;
    }
    return n;
}

static bool is(const seg_t *s, const char *lit)
{
    return s->n == strlen(lit) && memcmp(s->p, lit, s->n) == 0;
}

static bool parse_version(const seg_t *s, int64_t *v)
{
    int64_t x = 0;
    if (s->n == 0 || s->n > 18)
        return false;
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->p[i] < '0' || s->p[i] > '9')
            return false;
        x = x * 10 + (s->p[i] - '0');
    }
    *v = x;
    return true;
}

/* Method check: GET routes also answer HEAD. */
static bool allow(osv_conn_t *c, bool get, bool post)
{
    int m = c->req.head.method;
    if ((get && (m == OSV_HTTP_GET || m == OSV_HTTP_HEAD)) || (post && m == OSV_HTTP_POST))
        return true;
    osv_res_begin(c, 405);
    osv_res_header(c, "Allow", "%s", get && post ? "GET, HEAD, POST" : get ? "GET, HEAD" : "POST");
    osv_res_header(c, "Content-Type", "application/json");
    static const char body[] = "{\"error\":\"method not allowed\"}";
    osv_res_end_head(c, sizeof body - 1);
    if (m != OSV_HTTP_HEAD)
        osv_res_add_iov(c, body, sizeof body - 1);
    osv_conn_send(c);
    return false;
}

static void not_found(osv_conn_t *c)
{
    osv_res_error(c, 404, "no such endpoint: %.*s",
                  (int)(c->req.head.path_len > 200 ? 200 : c->req.head.path_len), c->req.head.path);
}

/* /v2/models/{m}[/versions/{v}][/action] */
static void route_model(osv_conn_t *c, seg_t *s, int n)
{
    osv_route_t r = {.model = s[2].p, .model_len = s[2].n, .version = -1};
    int i = 3;
    if (n > 3 && is(&s[3], "versions")) {
        if (n < 5 || !parse_version(&s[4], &r.version)) {
            osv_res_error(c, 400, "model version must be a non-negative integer");
            return;
        }
        i = 5;
    }
    if (i == n) {
        if (allow(c, true, false))
            osv_h_model_meta(c, &r);
    } else if (i + 1 == n && is(&s[i], "infer")) {
        if (allow(c, false, true))
            osv_h_infer(c, &r);
    } else if (i + 1 == n && is(&s[i], "classify")) {
        if (allow(c, false, true))
            osv_h_classify(c, &r);
    } else if (i + 1 == n && is(&s[i], "ready")) {
        if (allow(c, true, false))
            osv_h_model_ready(c, &r);
    } else if (i + 1 == n && is(&s[i], "config")) {
        if (allow(c, true, false))
            osv_h_model_config(c, &r);
    } else if (i + 1 == n && is(&s[i], "stats")) {
        if (allow(c, true, false))
            osv_h_stats(c, &r);
    } else {
        not_found(c);
    }
}

static void route_repository(osv_conn_t *c, seg_t *s, int n)
{
    if (n == 3 && is(&s[2], "index")) {
        if (allow(c, false, true))
            osv_h_repo_index(c);
    } else if (n == 5 && is(&s[2], "models") && (is(&s[4], "load") || is(&s[4], "unload"))) {
        osv_route_t r = {.model = s[3].p, .model_len = s[3].n, .version = -1};
        if (allow(c, false, true))
            osv_h_repo_load(c, &r, is(&s[4], "load"));
    } else {
        not_found(c);
    }
}

/* /v2/systemsharedmemory[/region/{r}]/status|register|unregister */
static void route_shm(osv_conn_t *c, seg_t *s, int n)
{
    osv_route_t r = {.version = -1};
    int i = 2;
    if (n >= 4 && is(&s[2], "region")) {
        r.region = s[3].p;
        r.region_len = s[3].n;
        i = 4;
    }
    if (i + 1 != n) {
        not_found(c);
    } else if (is(&s[i], "status")) {
        if (allow(c, true, false))
            osv_h_shm_status(c, &r);
    } else if (is(&s[i], "register") && r.region) {
        if (allow(c, false, true))
            osv_h_shm_register(c, &r);
    } else if (is(&s[i], "unregister")) {
        if (allow(c, false, true))
            osv_h_shm_unregister(c, &r);
    } else {
        not_found(c);
    }
}

/* /v2/cudasharedmemory/...: a CPU server has no CUDA regions. Status lists none and unregistering
 * succeeds (as a CPU-only Triton answers: Triton's own shm examples start by unregistering);
 * only registration is refused. */
static void route_cuda_shm(osv_conn_t *c, seg_t *s, int n)
{
    static const char none[] = "[]";
    bool status = is(&s[n - 1], "status"), unreg = is(&s[n - 1], "unregister"),
         reg = is(&s[n - 1], "register");
    bool shape = n == 3 || (n == 5 && is(&s[2], "region"));
    if (!shape || !(status || unreg || reg)) {
        not_found(c);
    } else if (status) {
        if (allow(c, true, false))
            osv_res_json(c, 200, none, sizeof none - 1);
    } else if (unreg) {
        if (allow(c, false, true)) /* a body, if any, was not read: close after answering */
            osv_res_empty(c, 200);
    } else if (allow(c, false, true)) {
        osv_res_error(c, 400,
                      "CUDA shared memory is not supported by this CPU server: use system shared memory");
    }
}

static void route_v2(osv_conn_t *c, seg_t *s, int n)
{
    if (n == 1) {
        if (allow(c, true, false))
            osv_h_server_meta(c);
    } else if (n == 3 && is(&s[1], "health") && (is(&s[2], "live") || is(&s[2], "ready"))) {
        c->req.route = is(&s[2], "live") ? "/v2/health/live" : "/v2/health/ready";
        if (allow(c, true, false))
            is(&s[2], "live") ? osv_h_live(c) : osv_h_ready(c);
    } else if (n == 3 && is(&s[1], "models") && is(&s[2], "stats")) {
        osv_route_t r = {.version = -1};
        if (allow(c, true, false))
            osv_h_stats(c, &r);
    } else if (n >= 3 && is(&s[1], "models")) {
        route_model(c, s, n);
    } else if (n >= 3 && is(&s[1], "repository")) {
        route_repository(c, s, n);
    } else if (n >= 3 && is(&s[1], "systemsharedmemory")) {
        route_shm(c, s, n);
    } else if (n >= 3 && is(&s[1], "cudasharedmemory")) {
        route_cuda_shm(c, s, n);
    } else {
        not_found(c);
    }
}

/* Content-Encodings nobody here decodes get 415 at once (gzip and deflate are decoded by the
 * endpoints that take them, see osv_h_receive_body). */
static bool encoded_body(osv_conn_t *c)
{
    const osv_http_header_t *h = osv_req_header(c, "Content-Encoding");
    if (osv_content_encoding(h) != OSV_ENC_UNSUPPORTED)
        return false;
    osv_res_error(c, 415,
                  "Content-Encoding '%.*s' is not supported: send the body uncompressed, gzip or deflate",
                  (int)(h->value_len > 32 ? 32 : h->value_len), h->value);
    return true;
}

/* Health endpoints answer without a token (Kubernetes probes, load balancers): KServe v2's health
 * API — server live, server ready, model ready — as Triton's `health` API group. */
static bool auth_exempt(const seg_t *s, int n)
{
    if (n == 3 && is(&s[0], "v2") && is(&s[1], "health"))
        return is(&s[2], "live") || is(&s[2], "ready");
    return (n == 4 || (n == 6 && is(&s[3], "versions"))) && is(&s[0], "v2") && is(&s[1], "models") &&
           is(&s[n - 1], "ready");
}

/* With --auth-token-file: true when the request may go on; otherwise a 401 has been prepared (a body
 * the request carries is not read, so the connection closes after it). */
static bool authorized(osv_conn_t *c, const seg_t *s, int n)
{
    static const char missing[] =
        "{\"error\":\"authentication required: send 'Authorization: Bearer <token>'\"}";
    static const char invalid[] = "{\"error\":\"invalid bearer token\"}";
    osv_auth_t *a = c->srv->auth;
    if (!a || (n >= 0 && auth_exempt(s, n)))
        return true;
    const osv_http_header_t *h = osv_req_header(c, "Authorization");
    if (osv_auth_check(a, h ? h->value : NULL, h ? h->value_len : 0, &c->req.auth_id))
        return true;
    osv_res_begin(c, 401);
    osv_res_header(c, "WWW-Authenticate", "%s",
                   h ? "Bearer realm=\"ortserve\", error=\"invalid_token\"" : "Bearer realm=\"ortserve\"");
    osv_res_header(c, "Content-Type", "application/json");
    osv_res_end_head(c, h ? sizeof invalid - 1 : sizeof missing - 1);
    if (c->req.head.method != OSV_HTTP_HEAD)
        osv_res_add_iov(c, h ? invalid : missing, h ? sizeof invalid - 1 : sizeof missing - 1);
    osv_conn_send(c);
    return false;
}

/* The request's id and trace context from its X-Request-ID, traceparent and tracestate. */
static void begin_ids(osv_conn_t *c)
{
    const osv_http_header_t *h = osv_req_header(c, "X-Request-ID"), *tp = osv_req_header(c, "traceparent"),
                            *ts = osv_req_header(c, "tracestate");
    osv_obs_ids_begin(&c->req.ids, h ? h->value : NULL, h ? h->value_len : 0, tp ? tp->value : NULL,
                      tp ? tp->value_len : 0, ts ? ts->value : NULL, ts ? ts->value_len : 0);
}

void osv_route(osv_conn_t *c)
{
    seg_t s[MAX_SEGS];
    int n = split(c->req.head.path, c->req.head.path_len, s);
    begin_ids(c);
    if (!authorized(c, s, n) || encoded_body(c))
        return;
    /* Methods other than GET, HEAD and POST reach allow(), whose 405 carries the Allow header. */
    if (n < 0) {
        not_found(c);
    } else if (n >= 1 && is(&s[0], "v2")) {
        route_v2(c, s, n);
    } else if (n == 1 && is(&s[0], "metrics")) {
        c->req.route = "/metrics";
        if (allow(c, true, false))
            osv_h_metrics(c);
    } else if (n == 1 && is(&s[0], "infer")) {
        if (allow(c, false, true))
            osv_h_infer_alias(c);
    } else {
        not_found(c);
    }
}
