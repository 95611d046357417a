/* stats.c — the statistics extension: GET /v2/models[/{m}[/versions/{v}]]/stats in Triton's format,
 * summed from each model version's lock-free shards; and GET /metrics, whose page obs renders from
 * the gauges gathered here. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/handlers.h"
#include "ortserve/imaging.h"

typedef struct stats_ctx {
    const osv_route_t *r;
    osv_jw_t *w;
    size_t matched;
} stats_ctx_t;

static void duration(osv_jw_t *w, const char *key, uint64_t count, uint64_t ns)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_obj_begin(w);
    osv_jw_key(w, "count", 5);
    osv_jw_u64(w, count);
    osv_jw_key(w, "ns", 2);
    osv_jw_u64(w, ns);
    osv_jw_obj_end(w);
}

static bool matches(const osv_route_t *r, const osv_model_t *m)
{
    if (!r->model)
        return true;
    if (strlen(osv_model_name(m)) != r->model_len || memcmp(osv_model_name(m), r->model, r->model_len) != 0)
        return false;
    return r->version < 0 || r->version == osv_model_version(m);
}

static int one_model(void *ud, osv_model_t *m)
{
    stats_ctx_t *x = ud;
    osv_jw_t *w = x->w;
    osv_stats_snapshot_t s;
    char v[24];
    if (!matches(x->r, m))
        return 0;
    x->matched++;
    osv_stats_snapshot(osv_model_stats(m), &s);
    snprintf(v, sizeof v, "%" PRId64, osv_model_version(m));
    osv_jw_obj_begin(w);
    osv_jw_key(w, "name", 4);
    osv_jw_str(w, osv_model_name(m), strlen(osv_model_name(m)));
    osv_jw_key(w, "version", 7);
    osv_jw_str(w, v, strlen(v));
    osv_jw_key(w, "last_inference", 14);
    osv_jw_u64(w, s.last_inference_ms);
    osv_jw_key(w, "inference_count", 15);
    osv_jw_u64(w, s.inference_count);
    osv_jw_key(w, "execution_count", 15);
    osv_jw_u64(w, s.execution_count);
    osv_jw_key(w, "inference_stats", 15);
    osv_jw_obj_begin(w);
    duration(w, "success", s.success.count, s.success.ns);
    duration(w, "fail", s.fail.count, s.fail.ns);
    for (int p = OSV_PHASE_QUEUE; p < OSV_PHASE_COUNT; p++) /* Triton's names: osv_phase_name */
        duration(w, osv_phase_name((osv_phase_t)p), s.phase[p].count, s.phase[p].ns);
    duration(w, "cache_hit", 0, 0);
    duration(w, "cache_miss", 0, 0);
    osv_jw_obj_end(w);
    osv_jw_key(w, "batch_stats", 11);
    osv_jw_arr_begin(w);
    osv_jw_arr_end(w);
    osv_jw_obj_end(w);
    return 0;
}

void osv_h_stats(osv_conn_t *c, const osv_route_t *r)
{
    osv_server_t *s = c->srv;
    size_t n_rows = 0;
    osv_jw_t w;
    stats_ctx_t x = {.r = r, .w = &w};
    char *buf;
    uint64_t cap;

    if (r->model) { /* unknown model or version: 404 / 503 like every model endpoint */
        osv_model_t *m = osv_h_model(c, r);
        if (!m)
            return;
        osv_model_release(m);
    }
    osv_repo_index(s->repo, true, NULL, 0, &n_rows);
    cap = 256 + (n_rows + 1) * 1536;
    if (!(buf = osv_res_body_buf(c, cap))) {
        osv_res_error(c, 503, "no memory for the response, retry later");
        return;
    }
    osv_jw_init(&w, buf, cap);
    osv_jw_obj_begin(&w);
    osv_jw_key(&w, "model_stats", 11);
    osv_jw_arr_begin(&w);
    osv_repo_foreach(s->repo, one_model, &x);
    osv_jw_arr_end(&w);
    osv_jw_obj_end(&w);
    if (osv_jw_error(&w))
        osv_res_error(c, 500, "statistics did not fit the response buffer");
    else
        osv_res_json(c, 200, buf, osv_jw_len(&w));
}

/* ---- GET /metrics -------------------------------------------------------------------------------------- */

/* The q value of one media range ("type/sub;version=1.0.0;q=0.5"): 1 when absent. */
static double media_q(const char *p, const char *end)
{
    while ((p = memchr(p, ';', (size_t)(end - p))) != NULL) {
        char tmp[16];
        size_t n;
        for (p++; p < end && (*p == ' ' || *p == '\t'); p++)
            ;
        if (end - p < 2 || (*p != 'q' && *p != 'Q') || p[1] != '=')
            continue;
        n = (size_t)(end - p - 2) < sizeof tmp - 1 ? (size_t)(end - p - 2) : sizeof tmp - 1;
        memcpy(tmp, p + 2, n);
        tmp[n] = '\0';
        return strtod(tmp, NULL);
    }
    return 1.0;
}

/* OpenMetrics when the Accept header lists application/openmetrics-text without q=0 (Prometheus
 * sends "application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,..."). */
static bool wants_openmetrics(const osv_conn_t *c)
{
    static const char om[] = "application/openmetrics-text";
    const osv_http_header_t *h = osv_req_header(c, "Accept");
    const char *p = h ? h->value : NULL, *end = h ? h->value + h->value_len : NULL;
    while (p && p < end) {
        const char *range_end = memchr(p, ',', (size_t)(end - p));
        if (!range_end)
            range_end = end;
        while (p < range_end && (*p == ' ' || *p == '\t'))
            p++;
        if ((size_t)(range_end - p) >= sizeof om - 1 && strncasecmp(p, om, sizeof om - 1) == 0 &&
            media_q(p, range_end) > 0)
            return true;
        p = range_end + 1;
    }
    return false;
}

static void free_page(osv_conn_t *c)
{
    osv_free(c->req.ctx);
    c->req.ctx = NULL;
}

void osv_h_metrics(osv_conn_t *c)
{
    osv_server_t *s = c->srv;
    osv_serve_counters_t sc;
    osv_serve_get_counters(s->serve, &sc);
    osv_obs_gauges_t g = {.ort_version = osv_env_ort_version(s->env),
                          .ort_api = osv_env_api_version(),
                          .ready = !atomic_load(&s->stopping) && osv_repo_ready(s->repo),
                          .queue_depth = sc.queued,
                          .inflight = atomic_load(&s->inflight),
                          .open_connections = osv_net_connections(s->net),
                          .memory_pressure = sc.memory_pressure,
                          .guard_working_set = sc.working_set,
                          .deadline_refusals = sc.deadline_refusals,
                          .memory_shed = sc.memory_shed,
                          .pool = s->pool,
                          .repo = s->repo,
                          .model_queued = osv_serve_model_queued};
    bool om = wants_openmetrics(c);
    char *page;
    size_t len;
    osv_net_buffers(s->net, &g.conn_buffers_in_use, &g.conn_buffers_free);
    osv_img_budget_get_stats(s->img_budget, &g.image_budget);
    if (osv_obs_render_metrics(&g, om, &page, &len) != 0) {
        osv_res_error(c, 503, "no memory for the metrics, retry later");
        return;
    }
    c->req.ctx = page; /* freed once the response is written */
    c->req.cleanup = free_page;
    osv_res_begin(c, 200);
    osv_res_header(c, "Content-Type", "%s", osv_obs_metrics_content_type(om));
    osv_res_end_head(c, len);
    if (c->req.head.method != OSV_HTTP_HEAD)
        osv_res_add_iov(c, page, len);
    osv_conn_send(c);
}
