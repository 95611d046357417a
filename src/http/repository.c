/* repository.c — the model repository extension: index, load (on a worker: loading takes
 * milliseconds to seconds and must not stall a loop), and unload (both refused with 403 under
 * --model-control-mode none). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "http/handlers.h"

#define INDEX_MAX_ROWS 4096

void osv_h_index_row(osv_jw_t *w, const osv_repo_entry_t *e)
{
    char v[24];
    const char *state = osv_model_state_name(e->state);
    osv_jw_obj_begin(w);
    osv_jw_key(w, "name", 4);
    osv_jw_str(w, e->name, strlen(e->name));
    if (e->version >= 0) { /* Triton writes versions as strings */
        snprintf(v, sizeof v, "%" PRId64, e->version);
        osv_jw_key(w, "version", 7);
        osv_jw_str(w, v, strlen(v));
    }
    osv_jw_key(w, "state", 5);
    osv_jw_str(w, state, strlen(state));
    osv_jw_key(w, "reason", 6);
    osv_jw_str(w, e->reason, strlen(e->reason));
    osv_jw_obj_end(w);
}

static void index_done(osv_conn_t *c)
{
    osv_server_t *s = c->srv;
    osv_json_doc_t doc;
    bool ready_only = false;
    size_t n = 0;
    if (c->req.body_len) {
        if (osv_h_parse_json(c, &doc) != 0)
            return;
        int32_t t = doc.toks[0].type == OSV_JSON_OBJECT ? osv_json_obj_get(&doc, 0, "ready", 5) : -2;
        if (t == -2 || (t >= 0 && osv_json_tok_bool(&doc, (uint32_t)t, &ready_only, NULL) != 0)) {
            osv_res_error(c, 400, "index request must be an object with an optional boolean 'ready'");
            return;
        }
    }
    osv_repo_index(s->repo, ready_only, NULL, 0, &n);
    if (n > INDEX_MAX_ROWS)
        n = INDEX_MAX_ROWS;
    osv_repo_entry_t *rows = osv_arena_alloc(&c->nc.arena, (n ? n : 1) * sizeof *rows, 8);
    uint64_t cap = 64 + (uint64_t)n * (sizeof rows->name * 6 + sizeof rows->reason * 6 + 96);
    char *buf = rows ? osv_res_body_buf(c, cap) : NULL;
    osv_jw_t w;
    if (!buf) {
        osv_res_error(c, 503, "no memory for the response, retry later");
        return;
    }
    osv_repo_index(s->repo, ready_only, rows, n, &n);
    osv_jw_init(&w, buf, cap);
    osv_jw_arr_begin(&w);
    for (size_t i = 0; i < n && i < INDEX_MAX_ROWS; i++)
        osv_h_index_row(&w, &rows[i]);
    osv_jw_arr_end(&w);
    osv_res_json(c, 200, buf, osv_jw_len(&w));
}

void osv_h_repo_index(osv_conn_t *c)
{
    osv_h_receive_json(c, index_done);
}

typedef struct load_ctx {
    char name[128];
    bool load;
    osv_stask_t task; /* on the request layer's control thread */
    osv_conn_t *c;
    int rc;
    osv_err_t err;
} load_ctx_t;

/* Control thread: loads (or unloads) the model; never an inference worker. */
static void load_run(osv_stask_t *t)
{
    load_ctx_t *x = t->ud;
    osv_repo_t *repo = x->c->srv->repo;
    x->rc = x->load ? osv_repo_load(repo, x->name, &x->err) : osv_repo_unload(repo, x->name, &x->err);
}

static void load_answer(load_ctx_t *x)
{
    if (x->rc)
        osv_res_error_code(x->c, x->rc, x->err.msg);
    else
        osv_res_empty(x->c, 200);
}

/* Still the control thread: the answer is written by the connection's loop. */
static void load_complete(osv_stask_t *t)
{
    load_ctx_t *x = t->ud;
    load_answer(x);
    osv_conn_complete(x->c);
}

/* Load/unload bodies may carry {"parameters": {...}}. Triton's "config" and "file:<path>" overrides
 * (uploading a model in the request) are refused: models come from the repository directory. */
static int check_parameters(osv_conn_t *c)
{
    osv_json_doc_t doc;
    int32_t p;
    if (!c->req.body_len)
        return 0;
    if (osv_h_parse_json(c, &doc) != 0)
        return -1;
    if (doc.toks[0].type != OSV_JSON_OBJECT) {
        osv_res_error(c, 400, "load/unload request must be a JSON object");
        return -1;
    }
    p = osv_json_obj_get(&doc, 0, "parameters", 10);
    if (p < 0)
        return 0;
    if (doc.toks[p].type != OSV_JSON_OBJECT) {
        osv_res_error(c, 400, "'parameters' must be an object");
        return -1;
    }
    for (uint32_t i = 0, k = (uint32_t)p + 1; i < doc.toks[p].count; i++, k = doc.toks[k + 1].next) {
        const osv_json_tok_t *key = &doc.toks[k];
        if ((key->len == 6 && memcmp(doc.src + key->start, "config", 6) == 0) ||
            (key->len > 5 && memcmp(doc.src + key->start, "file:", 5) == 0)) {
            osv_res_error(
                c, 400,
                "loading a model from request parameters ('%.*s') is not supported: place it in the "
                "model repository",
                (int)(key->len > 64 ? 64 : key->len), doc.src + key->start);
            return -1;
        }
    }
    return 0;
}

static void load_body_done(osv_conn_t *c)
{
    load_ctx_t *x = c->req.ctx;
    if (check_parameters(c) != 0)
        return;
    x->c = c;
    x->task = (osv_stask_t){.run = load_run, .complete = load_complete, .ud = x};
    if (!x->load) { /* unloading only drops references: quick enough for the loop */
        load_run(&x->task);
        load_answer(x);
        return;
    }
    if (osv_serve_control(c->srv->serve, &x->task) != 0)
        osv_res_error(c, 503, "too many model loads in progress, retry later");
}

void osv_h_repo_load(osv_conn_t *c, const osv_route_t *r, bool load)
{
    load_ctx_t *x;
    if (!c->srv->o.model_control) {
        osv_res_error(c, 403,
                      "explicit model load / unload is not allowed: the server runs with "
                      "--model-control-mode none");
        return;
    }
    if (!osv_model_name_valid(r->model, r->model_len)) {
        osv_res_error(c, 400, "invalid model name '%.*s' (allowed: letters, digits, '_', '-', '.')",
                      (int)(r->model_len > 128 ? 128 : r->model_len), r->model);
        return;
    }
    if (!(x = osv_arena_alloc(&c->nc.arena, sizeof *x, 8))) {
        osv_res_error(c, 503, "out of memory");
        return;
    }
    memcpy(x->name, r->model, r->model_len);
    x->name[r->model_len] = '\0';
    x->load = load;
    c->req.ctx = x;
    osv_h_receive_json(c, load_body_done);
}
