/* shm_api.c — Triton's system shared-memory extension over HTTP: GET .../status, POST .../register and
 * .../unregister (the registry itself, protocol-neutral, is serve/shm.c). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "http/handlers.h"
#include "serve/shm.h"

/* ---- endpoints -------------------------------------------------------------------------------------- */

void osv_h_shm_status(osv_conn_t *c, const osv_route_t *r)
{
    osv_shm_t *s = c->srv->shm;
    size_t n = 0;
    if (osv_shm_list(s, c->req.auth_id, r->region, r->region_len, NULL, 0, &n) != 0) {
        osv_res_error(c, 404, "shared memory region '%.*s' is not registered",
                      (int)(r->region_len > 128 ? 128 : r->region_len), r->region);
        return;
    }
    osv_shm_info_t *rows = osv_arena_alloc(&c->nc.arena, (n ? n : 1) * sizeof *rows, 8);
    uint64_t cap = 16 + (uint64_t)n * (6 * (sizeof rows->name + sizeof rows->key) + 128);
    char *buf = rows ? osv_res_body_buf(c, cap) : NULL;
    osv_jw_t w;
    if (!buf) {
        osv_res_error(c, 503, "no memory for the response, retry later");
        return;
    }
    osv_shm_list(s, c->req.auth_id, r->region, r->region_len, rows, n, &n);
    osv_jw_init(&w, buf, cap);
    osv_jw_arr_begin(&w);
    for (size_t i = 0; i < n; i++) {
        osv_jw_obj_begin(&w);
        osv_jw_key(&w, "name", 4);
        osv_jw_str(&w, rows[i].name, strlen(rows[i].name));
        osv_jw_key(&w, "key", 3);
        osv_jw_str(&w, rows[i].key, strlen(rows[i].key));
        osv_jw_key(&w, "offset", 6);
        osv_jw_u64(&w, rows[i].offset);
        osv_jw_key(&w, "byte_size", 9);
        osv_jw_u64(&w, rows[i].byte_size);
        osv_jw_obj_end(&w);
    }
    osv_jw_arr_end(&w);
    osv_res_json(c, 200, buf, osv_jw_len(&w));
}

static void register_done(osv_conn_t *c)
{
    const osv_route_t *r = c->req.ctx;
    osv_json_doc_t doc;
    osv_err_t err;
    int32_t tk, to, ts;
    uint64_t off = 0, size = 0;
    char key[256];
    size_t key_len = 0;
    if (!c->req.body_len) {
        osv_res_error(c, 400, "register needs a JSON body {\"key\", \"offset\", \"byte_size\"}");
        return;
    }
    if (osv_h_parse_json(c, &doc) != 0)
        return;
    if (doc.toks[0].type != OSV_JSON_OBJECT || (tk = osv_json_obj_get(&doc, 0, "key", 3)) < 0 ||
        doc.toks[tk].type != OSV_JSON_STRING || doc.toks[tk].len >= sizeof key ||
        osv_json_str_unescape(&doc, (uint32_t)tk, key, sizeof key, &key_len) != 0) {
        osv_res_error(c, 400, "register needs a string 'key' (the shared memory object's name)");
        return;
    }
    to = osv_json_obj_get(&doc, 0, "offset", 6);
    ts = osv_json_obj_get(&doc, 0, "byte_size", 9);
    if ((to >= 0 && osv_json_tok_u64(&doc, (uint32_t)to, &off, NULL) != 0) || ts < 0 ||
        osv_json_tok_u64(&doc, (uint32_t)ts, &size, NULL) != 0) {
        osv_res_error(c, 400, "register needs a non-negative integer 'byte_size' and an optional 'offset'");
        return;
    }
    int rc = osv_shm_register(c->srv->shm, c->req.auth_id, r->region, r->region_len, key, key_len, off,
                              size, &err);
    if (rc)
        osv_res_error_code(c, rc, err.msg);
    else
        osv_res_empty(c, 200);
}

void osv_h_shm_register(osv_conn_t *c, const osv_route_t *r)
{
    osv_route_t *copy;
    if (!c->srv->o.allow_shm) {
        osv_res_error(c, 403, "shared memory registration is disabled: start the server with --allow-shm");
        return;
    }
    if (!(copy = osv_arena_alloc(&c->nc.arena, sizeof *copy, 8))) {
        osv_res_error(c, 503, "out of memory");
        return;
    }
    *copy = *r;
    c->req.ctx = copy;
    osv_h_receive_json(c, register_done);
}

static void unregister_done(osv_conn_t *c)
{
    const osv_route_t *r = c->req.ctx;
    /* Unregistering a region that is not registered succeeds, as in Triton: the caller's goal (it is
     * not registered) holds. */
    osv_shm_unregister(c->srv->shm, c->req.auth_id, r->region, r->region ? r->region_len : 0, NULL);
    osv_res_empty(c, 200);
}

void osv_h_shm_unregister(osv_conn_t *c, const osv_route_t *r)
{
    osv_route_t *copy = osv_arena_alloc(&c->nc.arena, sizeof *copy, 8);
    if (!copy) {
        osv_res_error(c, 503, "out of memory");
        return;
    }
    *copy = *r;
    c->req.ctx = copy;
    osv_h_receive_json(c, unregister_done);
}
