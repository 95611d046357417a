/* batching_config.c — the scheduling keys of a model's config.json, in Triton's JSON form of
 * ModelConfig: max_batch_size, dynamic_batching (preferred sizes, delay, ordering, priority levels,
 * queue policies), instance_group, response_cache, and ortserve's parameters.batching.
 *
 * Strict like the rest of config.json: an unknown key, a wrong type or a value outside its limit is
 * an error naming the key. Triton writes uint64 fields as JSON strings ("100"); both forms are read.
 * Runs at load time only (the control thread); allocates nothing. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "batching_config.h"

/* The limits the messages below quote. */
_Static_assert(OSV_BATCH_MAX_PREFERRED == 16 && OSV_BATCH_MAX_SIZE == 4096 && OSV_BATCH_MAX_INSTANCES == 256,
               "update the messages that quote these limits");

typedef struct bctx {
    const osv_json_doc_t *doc;
    osv_batching_config_t *b;
    osv_cache_config_t *cache;
    osv_err_t *err;
} bctx_t;

void osv_batching_config_default(osv_batching_config_t *b, osv_cache_config_t *c)
{
    if (b)
        memset(b, 0, sizeof *b);
    if (c)
        memset(c, 0, sizeof *c);
}

const osv_queue_policy_t *osv_batching_policy(const osv_batching_config_t *b, uint32_t level)
{
    if (level >= 1 && level <= b->priority_levels && level <= OSV_BATCH_MAX_PRIORITIES &&
        b->level_policy_set[level - 1])
        return &b->level_policy[level - 1];
    return &b->default_queue_policy;
}

osv_batching_mode_t osv_batching_effective_mode(const osv_batching_config_t *b)
{
    if (b->mode_set)
        return b->mode;
    return b->max_queue_delay_set ? OSV_BATCHING_FIXED : OSV_BATCHING_ADAPTIVE;
}

/* ---- values ----------------------------------------------------------------------------------------- */

static int fail(bctx_t *c, uint32_t tok, const char *key, const char *what)
{
    return osv_err_set(c->err, OSV_EINVAL, "'%s' %s (at byte %u)", key, what, c->doc->toks[tok].start);
}

/* An unsigned integer in [lo, hi]: a JSON integer, or a string of digits (Triton's JSON form of
 * uint64 fields). */
static int uint_in(bctx_t *c, uint32_t tok, const char *key, uint64_t lo, uint64_t hi, uint64_t *out)
{
    const osv_json_tok_t *t = &c->doc->toks[tok];
    char msg[96];
    uint64_t v = 0;
    bool ok = false;
    if (t->type == OSV_JSON_STRING && t->len > 0 && t->len <= 20 && !(t->flags & OSV_JSON_F_ESCAPED)) {
        ok = true;
        for (uint32_t i = 0; ok && i < t->len; i++) {
            char ch = c->doc->src[t->start + i];
            ok = ch >= '0' && ch <= '9' && v <= (UINT64_MAX - (uint64_t)(ch - '0')) / 10;
            v = ok ? v * 10 + (uint64_t)(ch - '0') : v;
        }
    } else {
        ok = osv_json_tok_u64(c->doc, tok, &v, NULL) == 0;
    }
    if (ok && v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    snprintf(msg, sizeof msg, "must be an integer in [%" PRIu64 ", %" PRIu64 "]", lo, hi);
    return fail(c, tok, key, msg);
}

static int flag(bctx_t *c, uint32_t tok, const char *key, bool *out)
{
    return osv_json_tok_bool(c->doc, tok, out, NULL) == 0 ? 0 : fail(c, tok, key, "must be true or false");
}

static int object_of(bctx_t *c, uint32_t tok, const char *key)
{
    return c->doc->toks[tok].type == OSV_JSON_OBJECT ? 0 : fail(c, tok, key, "must be an object");
}

/* Calls fn(c, key, val, ud) for each member of object obj. */
typedef int (*member_fn)(bctx_t *c, uint32_t key, uint32_t val, void *ud);

static int members(bctx_t *c, uint32_t obj, const char *what, member_fn fn, void *ud)
{
    int rc = object_of(c, obj, what);
    uint32_t k = obj + 1;
    for (uint32_t i = 0; !rc && i < c->doc->toks[obj].count; i++) {
        rc = fn(c, k, k + 1, ud);
        k = c->doc->toks[k + 1].next;
    }
    return rc;
}

static int unknown(bctx_t *c, uint32_t key, const char *where, const char *valid)
{
    const osv_json_tok_t *t = &c->doc->toks[key];
    return osv_err_set(c->err, OSV_EINVAL, "unknown key '%.*s' in %s (valid: %s)",
                       (int)(t->len > 64 ? 64 : t->len), c->doc->src + t->start, where, valid);
}

#define KEY_IS(lit) osv_json_str_eq(c->doc, key, lit)

/* ---- dynamic_batching ------------------------------------------------------------------------------ */

static int policy_member(bctx_t *c, uint32_t key, uint32_t val, void *ud)
{
    osv_queue_policy_t *p = ud;
    uint64_t v;
    int rc;
    if (KEY_IS("timeout_action")) {
        if (osv_json_str_eq(c->doc, val, "REJECT"))
            p->timeout_action = OSV_TIMEOUT_REJECT;
        else if (osv_json_str_eq(c->doc, val, "DELAY"))
            p->timeout_action = OSV_TIMEOUT_DELAY;
        else
            return fail(c, val, "timeout_action", "must be \"REJECT\" or \"DELAY\"");
        return 0;
    }
    if (KEY_IS("default_timeout_microseconds")) {
        if ((rc = uint_in(c, val, "default_timeout_microseconds", 0, OSV_BATCH_MAX_TIMEOUT_US, &v)) == 0)
            p->default_timeout_us = v;
        return rc;
    }
    if (KEY_IS("allow_timeout_override"))
        return flag(c, val, "allow_timeout_override", &p->allow_timeout_override);
    if (KEY_IS("max_queue_size")) {
        if ((rc = uint_in(c, val, "max_queue_size", 0, 1u << 20, &v)) == 0)
            p->max_queue_size = (uint32_t)v;
        return rc;
    }
    return unknown(c, key, "a queue policy",
                   "timeout_action, default_timeout_microseconds, allow_timeout_override, max_queue_size");
}

static int level_policy_member(bctx_t *c, uint32_t key, uint32_t val, void *ud)
{
    uint64_t level;
    int rc;
    (void)ud;
    if ((rc = uint_in(c, key, "priority_queue_policy key", 1, OSV_BATCH_MAX_PRIORITIES, &level)) != 0)
        return rc;
    c->b->level_policy_set[level - 1] = true;
    return members(c, val, "priority_queue_policy", policy_member, &c->b->level_policy[level - 1]);
}

static int preferred_sizes(bctx_t *c, uint32_t val)
{
    const osv_json_tok_t *t = &c->doc->toks[val];
    int64_t v[OSV_BATCH_MAX_PREFERRED];
    osv_batching_config_t *b = c->b;
    if (t->type != OSV_JSON_LEAF_ARRAY || t->ndim > 1 || t->count > OSV_BATCH_MAX_PREFERRED ||
        (t->count && osv_json_leaves_decode(c->doc, val, OSV_JSON_KIND_I64, v, t->count, NULL) != 0))
        return fail(c, val, "preferred_batch_size", "must be an array of at most 16 positive integers");
    b->n_preferred = 0;
    for (uint32_t i = 0; i < t->count; i++) {
        uint32_t j = b->n_preferred;
        if (v[i] < 1 || v[i] > OSV_BATCH_MAX_SIZE)
            return fail(c, val, "preferred_batch_size", "entries must be in [1, 4096]");
        while (j > 0 && b->preferred[j - 1] > (uint32_t)v[i]) { /* insertion: kept ascending */
            b->preferred[j] = b->preferred[j - 1];
            j--;
        }
        if (j > 0 && b->preferred[j - 1] == (uint32_t)v[i])
            return fail(c, val, "preferred_batch_size", "entries must be distinct");
        b->preferred[j] = (uint32_t)v[i];
        b->n_preferred++;
    }
    return 0;
}

static int dynamic_member(bctx_t *c, uint32_t key, uint32_t val, void *ud)
{
    osv_batching_config_t *b = c->b;
    uint64_t v;
    int rc;
    (void)ud;
    if (KEY_IS("preferred_batch_size"))
        return preferred_sizes(c, val);
    if (KEY_IS("max_queue_delay_microseconds")) {
        rc = uint_in(c, val, "max_queue_delay_microseconds", 0, OSV_BATCH_MAX_DELAY_US, &v);
        b->max_queue_delay_us = rc ? 0 : v;
        b->max_queue_delay_set = rc == 0;
        return rc;
    }
    if (KEY_IS("preserve_ordering"))
        return flag(c, val, "preserve_ordering", &b->preserve_ordering);
    if (KEY_IS("priority_levels") || KEY_IS("default_priority_level")) {
        bool levels = KEY_IS("priority_levels");
        const char *name = levels ? "priority_levels" : "default_priority_level";
        if ((rc = uint_in(c, val, name, 0, OSV_BATCH_MAX_PRIORITIES, &v)) == 0)
            *(levels ? &b->priority_levels : &b->default_priority_level) = (uint32_t)v;
        return rc;
    }
    if (KEY_IS("default_queue_policy"))
        return members(c, val, "default_queue_policy", policy_member, &b->default_queue_policy);
    if (KEY_IS("priority_queue_policy"))
        return members(c, val, "priority_queue_policy", level_policy_member, NULL);
    return unknown(c, key, "dynamic_batching",
                   "preferred_batch_size, max_queue_delay_microseconds, preserve_ordering, priority_levels, "
                   "default_priority_level, default_queue_policy, priority_queue_policy");
}

/* ---- instance_group, response_cache, parameters ---------------------------------------------------- */

static int group_member(bctx_t *c, uint32_t key, uint32_t val, void *ud)
{
    uint64_t *count = ud;
    if (KEY_IS("count"))
        return uint_in(c, val, "instance_group.count", 1, OSV_BATCH_MAX_INSTANCES, count);
    if (KEY_IS("kind")) {
        if (osv_json_str_eq(c->doc, val, "KIND_CPU") || osv_json_str_eq(c->doc, val, "KIND_AUTO"))
            return 0;
        return fail(c, val, "instance_group.kind",
                    "must be \"KIND_CPU\" or \"KIND_AUTO\": this server runs models on the CPU only");
    }
    if (KEY_IS("name"))
        return c->doc->toks[val].type == OSV_JSON_STRING ? 0 : fail(c, val, "instance_group.name", "must be a string");
    return unknown(c, key, "instance_group", "count, kind, name");
}

static int instance_groups(bctx_t *c, uint32_t val)
{
    const osv_json_tok_t *t = &c->doc->toks[val];
    uint32_t g = val + 1;
    uint64_t total = 0;
    if (t->type != OSV_JSON_ARRAY && !(t->type == OSV_JSON_LEAF_ARRAY && t->count == 0))
        return fail(c, val, "instance_group", "must be an array of {\"count\": N, \"kind\": \"KIND_CPU\"}");
    for (uint32_t i = 0; t->type == OSV_JSON_ARRAY && i < t->count; i++) {
        uint64_t count = 1; /* Triton: a group without count has one instance */
        int rc = members(c, g, "instance_group", group_member, &count);
        if (rc)
            return rc;
        total += count;
        if (total > OSV_BATCH_MAX_INSTANCES)
            return fail(c, val, "instance_group", "counts add up to more than 256 instances");
        g = c->doc->toks[g].next;
    }
    c->b->instance_count = (uint32_t)total;
    return 0;
}

static int cache_member(bctx_t *c, uint32_t key, uint32_t val, void *ud)
{
    (void)ud;
    if (KEY_IS("enable"))
        return flag(c, val, "response_cache.enable", &c->cache->enable);
    return unknown(c, key, "response_cache", "enable");
}

/* parameters.batching: "adaptive" | "fixed", or Triton's {"string_value": "..."}. */
static int parameter_member(bctx_t *c, uint32_t key, uint32_t val, void *ud)
{
    int32_t sv = val;
    (void)ud;
    if (!KEY_IS("batching"))
        return unknown(c, key, "parameters", "batching");
    if (c->doc->toks[val].type == OSV_JSON_OBJECT)
        sv = osv_json_obj_get(c->doc, val, "string_value", 12);
    if (sv >= 0 && osv_json_str_eq(c->doc, (uint32_t)sv, "adaptive"))
        c->b->mode = OSV_BATCHING_ADAPTIVE;
    else if (sv >= 0 && osv_json_str_eq(c->doc, (uint32_t)sv, "fixed"))
        c->b->mode = OSV_BATCHING_FIXED;
    else
        return fail(c, val, "parameters.batching", "must be \"adaptive\" or \"fixed\"");
    c->b->mode_set = true;
    return 0;
}

int osv_batching_config_json(osv_batching_config_t *b, osv_cache_config_t *cache, const osv_json_doc_t *doc,
                             uint32_t key, uint32_t val, bool *handled, osv_err_t *err)
{
    bctx_t cx = {.doc = doc, .b = b, .cache = cache, .err = err}, *c = &cx;
    uint64_t v;
    int rc;
    *handled = true;
    if (KEY_IS("max_batch_size")) {
        if ((rc = uint_in(c, val, "max_batch_size", 0, OSV_BATCH_MAX_SIZE, &v)) == 0)
            b->max_batch_size = (uint32_t)v;
        return rc;
    }
    if (KEY_IS("dynamic_batching")) {
        b->dynamic = true;
        return members(c, val, "dynamic_batching", dynamic_member, NULL);
    }
    if (KEY_IS("instance_group"))
        return instance_groups(c, val);
    if (KEY_IS("response_cache"))
        return members(c, val, "response_cache", cache_member, NULL);
    if (KEY_IS("parameters"))
        return members(c, val, "parameters", parameter_member, NULL);
    *handled = false;
    return 0;
}

/* ---- consistency, and the model's tensors ---------------------------------------------------------- */

static int check_settings(const osv_batching_config_t *b, osv_err_t *err)
{
    if (b->dynamic && b->max_batch_size == 0)
        return osv_err_set(err, OSV_EINVAL,
                           "'dynamic_batching' needs 'max_batch_size' > 0 (the batch dimension requests are "
                           "joined along)");
    for (uint32_t i = 0; i < b->n_preferred; i++)
        if (b->preferred[i] > b->max_batch_size)
            return osv_err_set(err, OSV_EINVAL,
                               "'preferred_batch_size' %u exceeds 'max_batch_size' %u", b->preferred[i],
                               b->max_batch_size);
    if (b->priority_levels == 0 && b->default_priority_level != 0)
        return osv_err_set(err, OSV_EINVAL, "'default_priority_level' needs 'priority_levels'");
    if (b->priority_levels > 0 &&
        (b->default_priority_level < 1 || b->default_priority_level > b->priority_levels))
        return osv_err_set(err, OSV_EINVAL, "'default_priority_level' must be in [1, %u] ('priority_levels')",
                           b->priority_levels);
    for (uint32_t l = b->priority_levels; l < OSV_BATCH_MAX_PRIORITIES; l++)
        if (b->level_policy_set[l])
            return osv_err_set(err, OSV_EINVAL,
                               "'priority_queue_policy' names level %u but 'priority_levels' is %u", l + 1,
                               b->priority_levels);
    if (!b->dynamic && (b->mode_set || b->n_preferred))
        return osv_err_set(err, OSV_EINVAL, "'parameters.batching' needs 'dynamic_batching'");
    return 0;
}

int osv_batching_config_check(const osv_batching_config_t *b, const osv_tensor_info_t *in, uint32_t n_in,
                              const osv_tensor_info_t *out, uint32_t n_out, osv_err_t *err)
{
    int rc;
    if ((rc = check_settings(b, err)) != 0 || b->max_batch_size == 0)
        return rc;
    if (n_in == 0)
        return osv_err_set(err, OSV_EINVAL, "'max_batch_size' needs a model with inputs");
    for (uint32_t i = 0; i < n_in + n_out; i++) {
        const osv_tensor_info_t *t = i < n_in ? &in[i] : &out[i - n_in];
        const char *what = i < n_in ? "input" : "output";
        if (t->kind != OSV_VALUE_TENSOR || t->rank < 1)
            return osv_err_set(err, OSV_EINVAL,
                               "'max_batch_size' %u: %s '%s' has no first dimension to batch along",
                               b->max_batch_size, what, t->name);
        if (t->dims[0] >= 0)
            return osv_err_set(err, OSV_EINVAL,
                               "'max_batch_size' %u: %s '%s' has a fixed first dimension (%" PRId64
                               "); the batch dimension must be dynamic",
                               b->max_batch_size, what, t->name, t->dims[0]);
    }
    return 0;
}
