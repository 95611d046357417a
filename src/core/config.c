/* config.c — parses a model's config.json into osv_model_config_t.
 *
 * Strict: an unknown key is an error naming the key (a typo must not silently change nothing).
 * Sections owned by other layers ("image", "postprocess", "slo") must be objects and are kept as
 * raw JSON text for those layers. Runs at load time only, so it may allocate. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "batching_config.h"
#include "model_internal.h"
#include "ortserve/alloc.h"
#include "util/json.h"

#define CONFIG_TOKENS 4096

typedef struct cfg_ctx {
    osv_model_t *m;
    osv_json_doc_t doc;
    osv_err_t *err;
} cfg_ctx_t;

static const char *const section_keys[OSV_CONFIG_SECTIONS] = {"image", "postprocess", "slo"};

static int bad(cfg_ctx_t *c, uint32_t tok, const char *what)
{
    return osv_err_set(c->err, OSV_EINVAL, "%s (at byte %u)", what, c->doc.toks[tok].start);
}

static int get_bool(cfg_ctx_t *c, uint32_t tok, bool *out, const char *key)
{
    char msg[160];
    if (osv_json_tok_bool(&c->doc, tok, out, NULL) == 0)
        return 0;
    snprintf(msg, sizeof msg, "'%s' must be true or false", key);
    return bad(c, tok, msg);
}

static int get_int(cfg_ctx_t *c, uint32_t tok, int64_t lo, int64_t hi, int64_t *out, const char *key)
{
    char msg[160];
    int64_t v;
    if (osv_json_tok_i64(&c->doc, tok, &v, NULL) == 0 && v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    snprintf(msg, sizeof msg, "'%s' must be an integer in [%" PRId64 ", %" PRId64 "]", key, lo, hi);
    return bad(c, tok, msg);
}

/* Copies string token tok into a new model-owned C string. */
static int get_str(cfg_ctx_t *c, uint32_t tok, char **out, const char *key)
{
    const osv_json_tok_t *t = &c->doc.toks[tok];
    char msg[160], *s;
    size_t n;
    if (t->type != OSV_JSON_STRING) {
        snprintf(msg, sizeof msg, "'%s' must be a string", key);
        return bad(c, tok, msg);
    }
    if (!(s = osv_model_own(c->m, osv_malloc(t->len + 1))))
        return osv_err_set(c->err, OSV_ENOMEM, "out of memory");
    if (osv_json_str_unescape(&c->doc, tok, s, t->len + 1, &n) != 0 || strlen(s) != n) {
        snprintf(msg, sizeof msg, "'%s' is not a valid string", key);
        return bad(c, tok, msg);
    }
    *out = s;
    return 0;
}

/* Calls fn(c, key_tok, val_tok) for each member of object `obj`. */
typedef int (*member_fn)(cfg_ctx_t *c, uint32_t key, uint32_t val);

static int each_member(cfg_ctx_t *c, uint32_t obj, const char *what, member_fn fn)
{
    const osv_json_tok_t *t = &c->doc.toks[obj];
    char msg[160];
    uint32_t k = obj + 1;
    int rc;
    if (t->type != OSV_JSON_OBJECT) {
        snprintf(msg, sizeof msg, "'%s' must be an object", what);
        return bad(c, obj, msg);
    }
    for (uint32_t i = 0; i < t->count; i++) {
        if ((rc = fn(c, k, k + 1)) != 0)
            return rc;
        k = c->doc.toks[k + 1].next;
    }
    return 0;
}

static int unknown(cfg_ctx_t *c, uint32_t key, const char *where, const char *valid)
{
    const osv_json_tok_t *t = &c->doc.toks[key];
    return osv_err_set(c->err, OSV_EINVAL, "unknown key '%.*s' in %s (valid: %s)",
                       (int)(t->len > 64 ? 64 : t->len), c->doc.src + t->start, where, valid);
}

#define KEY_IS(lit) osv_json_str_eq(&c->doc, key, lit)

static int threads_member(cfg_ctx_t *c, uint32_t key, uint32_t val)
{
    osv_threads_t *t = &c->m->cfg.threads;
    int64_t v;
    bool b;
    int rc;
    if (KEY_IS("intra_op") || KEY_IS("inter_op")) {
        if ((rc = get_int(c, val, 0, 1024, &v, "threads.intra_op/inter_op")) != 0)
            return rc;
        *(KEY_IS("intra_op") ? &t->intra_op : &t->inter_op) = (int)v;
        c->m->json_set |= KEY_IS("intra_op") ? CFG_SET_INTRA_OP : CFG_SET_INTER_OP;
        return 0;
    }
    if (KEY_IS("spinning")) {
        if ((rc = get_bool(c, val, &b, "threads.spinning")) != 0)
            return rc;
        t->spinning = b;
        return 0;
    }
    return unknown(c, key, "threads", "intra_op, inter_op, spinning");
}

static int memory_member(cfg_ctx_t *c, uint32_t key, uint32_t val)
{
    if (KEY_IS("arena")) {
        c->m->json_set |= CFG_SET_ARENA;
        return get_bool(c, val, &c->m->cfg.arena, "memory.arena");
    }
    if (KEY_IS("mem_pattern")) {
        c->m->json_set |= CFG_SET_MEM_PATTERN;
        return get_bool(c, val, &c->m->cfg.mem_pattern, "memory.mem_pattern");
    }
    return unknown(c, key, "memory", "arena, mem_pattern");
}

static int limits_member(cfg_ctx_t *c, uint32_t key, uint32_t val)
{
    osv_limits_t *l = &c->m->cfg.limits;
    int64_t v;
    int rc;
    if (KEY_IS("max_dims")) {
        if ((rc = get_int(c, val, 0, OSV_MAX_DIMS, &v, "limits.max_dims")) == 0)
            l->max_dims = (uint32_t)v;
        return rc;
    }
    uint64_t *dst = KEY_IS("max_tensor_elements") ? &l->max_tensor_elements
                    : KEY_IS("max_tensor_bytes")  ? &l->max_tensor_bytes
                    : KEY_IS("max_string_bytes")  ? &l->max_string_bytes
                                                  : NULL;
    if (!dst)
        return unknown(c, key, "limits", "max_dims, max_tensor_elements, max_tensor_bytes, max_string_bytes");
    if ((rc = get_int(c, val, 0, INT64_MAX, &v, "limits.*")) == 0)
        *dst = (uint64_t)v;
    return rc;
}

static int output_labels_member(cfg_ctx_t *c, uint32_t key, uint32_t val)
{
    config_labels_t *lc = &c->m->labels_cfg;
    uint32_t i = lc->n_outputs;
    int rc;
    if ((rc = get_str(c, key, &lc->output_names[i], "output_labels key")) != 0 ||
        (rc = get_str(c, val, &lc->output_files[i], "output_labels value")) != 0)
        return rc;
    lc->n_outputs++;
    return 0;
}

static int optimization(cfg_ctx_t *c, uint32_t val)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"none", 0}, {"basic", 1}, {"extended", 2}, {"all", 99}};
    for (size_t i = 0; i < sizeof levels / sizeof *levels; i++) {
        if (osv_json_str_eq(&c->doc, val, levels[i].name)) {
            c->m->cfg.optimization = levels[i].level;
            c->m->json_set |= CFG_SET_OPTIMIZATION;
            return 0;
        }
    }
    return bad(c, val, "'optimization' must be \"none\", \"basic\", \"extended\" or \"all\"");
}

static int section(cfg_ctx_t *c, uint32_t key, uint32_t val, int *handled)
{
    for (int i = 0; i < OSV_CONFIG_SECTIONS; i++) {
        if (KEY_IS(section_keys[i])) {
            const osv_json_tok_t *t = &c->doc.toks[val];
            char msg[96];
            *handled = 1;
            if (t->type != OSV_JSON_OBJECT) {
                snprintf(msg, sizeof msg, "'%s' must be an object", section_keys[i]);
                return bad(c, val, msg);
            }
            c->m->sections[i].key = section_keys[i];
            c->m->sections[i].text = c->doc.src + t->start;
            c->m->sections[i].len = t->len;
            return 0;
        }
    }
    *handled = 0;
    return 0;
}

static int top_member(cfg_ctx_t *c, uint32_t key, uint32_t val)
{
    osv_model_config_t *cfg = &c->m->cfg;
    int64_t v;
    int rc, handled;
    bool b;

    if ((rc = section(c, key, val, &handled)) != 0 || handled)
        return rc;
    if ((rc = osv_batching_config_json(&cfg->batching, &cfg->cache, &c->doc, key, val, &b, c->err)) != 0 || b)
        return rc;
    if (KEY_IS("threads"))
        return each_member(c, val, "threads", threads_member);
    if (KEY_IS("memory"))
        return each_member(c, val, "memory", memory_member);
    if (KEY_IS("limits"))
        return each_member(c, val, "limits", limits_member);
    if (KEY_IS("optimization"))
        return optimization(c, val);
    if (KEY_IS("labels"))
        return get_str(c, val, &c->m->labels_cfg.default_file, "labels");
    if (KEY_IS("output_labels")) {
        uint32_t n = c->doc.toks[val].count;
        config_labels_t *lc = &c->m->labels_cfg;
        if (c->doc.toks[val].type != OSV_JSON_OBJECT)
            return bad(c, val, "'output_labels' must be an object of output name -> labels file");
        if (lc->output_names) /* a second "output_labels" would index past the first one's arrays */
            return bad(c, key, "'output_labels' is given twice");
        lc->output_names = osv_calloc(n ? n : 1, sizeof(char *));
        lc->output_files = osv_calloc(n ? n : 1, sizeof(char *));
        if (!lc->output_names || !lc->output_files)
            return osv_err_set(c->err, OSV_ENOMEM, "out of memory");
        return each_member(c, val, "output_labels", output_labels_member);
    }
    if (KEY_IS("warmup")) {
        c->m->json_set |= CFG_SET_WARMUP;
        return get_bool(c, val, &cfg->warmup, "warmup");
    }
    if (KEY_IS("allow_dtype_conversion"))
        return get_bool(c, val, &cfg->allow_dtype_conversion, "allow_dtype_conversion");
    if (KEY_IS("deadline_ms")) {
        rc = get_int(c, val, 0, 86400000, &v, "deadline_ms");
        cfg->deadline_ms = rc ? cfg->deadline_ms : v;
        return rc;
    }
    if (KEY_IS("max_queue")) {
        rc = get_int(c, val, 0, 1 << 20, &v, "max_queue");
        cfg->max_queue = rc ? cfg->max_queue : v;
        return rc;
    }
    if (KEY_IS("batch_dim")) {
        if ((rc = get_bool(c, val, &b, "batch_dim")) == 0) { /* b is unset when it fails */
            cfg->batch_dim = b;
            c->m->json_set |= CFG_SET_BATCH_DIM;
        }
        return rc;
    }
    return unknown(c, key, "config.json",
                   "threads, optimization, memory, limits, labels, output_labels, warmup, "
                   "allow_dtype_conversion, deadline_ms, max_queue, batch_dim, image, postprocess, slo, "
                   "max_batch_size, dynamic_batching, instance_group, response_cache, parameters");
}

int osv_model_config_parse(osv_model_t *m, osv_err_t *err)
{
    osv_json_tok_t *toks = osv_malloc(CONFIG_TOKENS * sizeof *toks);
    osv_json_limits_t lim = {.max_depth = 16};
    osv_json_err_t jerr;
    cfg_ctx_t c = {.m = m, .err = err};
    int rc;

    if (!toks)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if (osv_json_parse(m->config_text, m->config_len, toks, CONFIG_TOKENS, &lim, &c.doc, &jerr) != 0)
        rc = osv_err_set(err, OSV_EPARSE, "invalid JSON: %s", jerr.msg);
    else
        rc = each_member(&c, 0, "config.json", top_member);
    osv_free(toks);
    return rc;
}
