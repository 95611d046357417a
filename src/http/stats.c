/* stats.c — the statistics extension: GET /v2/models[/{m}[/versions/{v}]]/stats in Triton's format,
 * summed from each model version's lock-free shards. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "http/handlers.h"

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
    duration(w, "queue", s.phase[OSV_PHASE_QUEUE].count, s.phase[OSV_PHASE_QUEUE].ns);
    duration(w, "compute_input", s.phase[OSV_PHASE_COMPUTE_INPUT].count, s.phase[OSV_PHASE_COMPUTE_INPUT].ns);
    duration(w, "compute_infer", s.phase[OSV_PHASE_COMPUTE_INFER].count, s.phase[OSV_PHASE_COMPUTE_INFER].ns);
    duration(w, "compute_output", s.phase[OSV_PHASE_COMPUTE_OUTPUT].count,
             s.phase[OSV_PHASE_COMPUTE_OUTPUT].ns);
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
    osv_server_t *s = c->loop->srv;
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
