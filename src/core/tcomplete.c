/* tcomplete.c — completes a model version's Triton config against the ONNX model, as Triton's ONNX
 * Runtime backend auto-completes one, and builds the view clients get.
 *
 *   config.json + config.pbtxt  — osv_tconfig_merge_json: a setting both give must agree; the
 *                                 effective value is shown in the config (threads, graph level,
 *                                 memory arena and pattern, warm-up, labels)
 *   ONNX model (ORT's view)     — osv_tconfig_complete: inputs, outputs and max_batch_size filled in
 *                                 when the config leaves them out (a leading variable dim on every
 *                                 input and output means batchable: --default-max-batch-size), or
 *                                 checked against the model (names, datatypes, dims); instance groups,
 *                                 dynamic batching and warm-up samples normalised and checked
 *   clients' view               — m->in/out: config order, dims with the batch dim prepended
 *                                 (max_batch_size > 0); ORT still gets its own (reshaped) shapes
 *
 * A model without config.pbtxt is completed with its full ONNX shapes, max_batch_size 0, every
 * version, and `native_instances` instances on one shared session: what ortserve always served.
 * Load time only (the loading thread); messages name config.pbtxt's line and field. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"
#include "ortserve/alloc.h"

#define DEFAULT_CPU_INSTANCES 2 /* Triton's KIND_CPU count for the ONNX Runtime backend */

static int fail_at(const osv_model_t *m, tc_pos_t pos, int code, osv_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail_at(const osv_model_t *m, tc_pos_t pos, int code, osv_err_t *err, const char *fmt, ...)
{
    char where[4200], msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return osv_err_set(err, code, "%s%s", osv_tconfig_where(m->tc, pos, where, sizeof where), msg);
}

static int no_memory(osv_err_t *err)
{
    return osv_err_set(err, OSV_ENOMEM, "out of memory completing the model's configuration");
}

/* ---- config.json and config.pbtxt together --------------------------------------------------------- */

/* ORT graph optimization level <-> the ORT backend's optimization.graph.level. */
static int level_to_ort(int32_t level)
{
    return level == -1 ? 1 : level == 1 ? 2 : level == 2 ? 0 : 99;
}

static int32_t ort_to_level(int ort)
{
    return ort == 1 ? -1 : ort == 2 ? 1 : ort == 0 ? 2 : 0;
}

/* A setting both files give: the same value, or an error naming both. */
static int agree(const osv_model_t *m, bool in_json, bool in_pbtxt, long json_v, long pbtxt_v, tc_pos_t pos,
                 const char *json_key, const char *pbtxt_key, osv_err_t *err)
{
    if (!in_json || !in_pbtxt || json_v == pbtxt_v)
        return 0;
    return fail_at(
        m, pos, OSV_EINVAL, err,
        "%s is %ld here but config.json's \"%s\" is %ld: the two files contradict each other (set it in "
        "one of them)",
        pbtxt_key, pbtxt_v, json_key, json_v);
}

int osv_tconfig_merge_json(osv_model_t *m, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    osv_model_config_t *c = &m->cfg;
    tc_session_t *s = &t->session;
    uint32_t j = m->json_set, p = t->set;
    int rc;
    if ((rc = agree(m, j & CFG_SET_INTRA_OP, p & TC_SET_INTRA_OP, c->threads.intra_op, s->intra_op,
                    t->pos[TC_POS_INTRA_OP], "threads.intra_op", "parameter intra_op_thread_count", err)) ||
        (rc = agree(m, j & CFG_SET_INTER_OP, p & TC_SET_INTER_OP, c->threads.inter_op, s->inter_op,
                    t->pos[TC_POS_INTER_OP], "threads.inter_op", "parameter inter_op_thread_count", err)) ||
        (rc = agree(m, j & CFG_SET_OPTIMIZATION, t->c.has_graph_level, ort_to_level(c->optimization),
                    t->c.graph_level, t->pos[TC_POS_GRAPH_LEVEL], "optimization (as a graph level)",
                    "optimization.graph.level", err)) ||
        (rc = agree(m, j & CFG_SET_ARENA, p & TC_SET_MEM_ARENA, c->arena, s->mem_arena,
                    t->pos[TC_POS_MEM_ARENA], "memory.arena", "parameter enable_mem_arena", err)) ||
        (rc = agree(m, j & CFG_SET_MEM_PATTERN, p & TC_SET_MEM_PATTERN, c->mem_pattern, s->mem_pattern,
                    t->pos[TC_POS_MEM_PATTERN], "memory.mem_pattern", "parameter enable_mem_pattern", err)))
        return rc;
    if ((j & CFG_SET_WARMUP) && !c->warmup && t->c.n_model_warmup)
        return fail_at(
            m, t->pos[TC_POS_MODEL_WARMUP], OSV_EINVAL, err,
            "model_warmup declares %u sample(s) but config.json's \"warmup\" is false: the two files "
            "contradict each other",
            t->c.n_model_warmup);
    /* What config.pbtxt sets applies; what only config.json sets is shown in the config. */
    if (p & TC_SET_INTRA_OP)
        c->threads.intra_op = s->intra_op;
    if (p & TC_SET_INTER_OP)
        c->threads.inter_op = s->inter_op;
    if (t->c.has_graph_level)
        c->optimization = level_to_ort(t->c.graph_level);
    else if (j & CFG_SET_OPTIMIZATION) {
        t->c.has_graph_level = true;
        t->c.graph_level = ort_to_level(c->optimization);
    }
    if (p & TC_SET_MEM_ARENA)
        c->arena = s->mem_arena;
    if (p & TC_SET_MEM_PATTERN)
        c->mem_pattern = s->mem_pattern;
    return 0;
}

/* ---- shapes -----------------------------------------------------------------------------------------------
 */

static const char *shape_str(const int64_t *dims, int32_t rank, char *buf, size_t cap)
{
    return osv_shape_str(dims, rank, buf, cap);
}

static int find_ort(const osv_tensor_info_t *a, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(a[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Names of a tensor list, for messages. */
static const char *names_of(const osv_tensor_info_t *a, uint32_t n, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", i ? ", " : "", a[i].name);
    return buf;
}

/* Every ORT input and output has a variable leading dim (the ORT backend's test for batching). */
static bool batchable(const osv_model_t *m, const char **why)
{
    for (uint32_t i = 0; i < m->n_ort_in + m->n_ort_out; i++) {
        const osv_tensor_info_t *t = i < m->n_ort_in ? &m->ort_in[i] : &m->ort_out[i - m->n_ort_in];
        if (t->rank < 1 || t->dims[0] != -1) {
            *why = t->name;
            return false;
        }
    }
    return m->n_ort_in > 0;
}

/* The full shape the config gives ORT for tensor t: [-1] + (reshape or dims). */
static int32_t config_ort_shape(const osv_tc_tensor_t *t, int32_t mbs, int64_t *out)
{
    uint32_t r = 0;
    const int64_t *src = t->has_reshape ? t->reshape : t->dims;
    uint32_t n = t->has_reshape ? t->reshape_rank : t->rank;
    if (mbs > 0)
        out[r++] = -1;
    for (uint32_t i = 0; i < n && r < OSV_MAX_DIMS; i++)
        out[r++] = src[i];
    return (int32_t)r;
}

/* A config tensor against the model's: datatype and shape (a fixed model dim must be given as is;
 * a variable one may be fixed by the config). */
static int check_tensor(const osv_model_t *m, const osv_tc_tensor_t *t, const tc_tensor_pos_t *pos,
                        const osv_tensor_info_t *o, bool output, osv_err_t *err)
{
    const char *what = output ? "output" : "input";
    int64_t full[OSV_MAX_DIMS];
    char a[96], b[96];
    int32_t rank = config_ort_shape(t, m->max_batch_size, full);
    if (o->kind == OSV_VALUE_TENSOR && o->dtype != t->dtype)
        return fail_at(m, pos->data_type, OSV_EINVAL, err, "%s '%s' data_type: %s contradicts the model's %s",
                       what, t->name, osv_dtype_config_name(t->dtype), osv_dtype_config_name(o->dtype));
    if (o->kind != OSV_VALUE_TENSOR || o->rank < 0)
        return 0; /* no shape to check against */
    bool same = rank == o->rank;
    for (int32_t d = 0; same && d < rank; d++)
        same = o->dims[d] < 0 ? !(d == 0 && m->max_batch_size > 0 && full[d] >= 0) : full[d] == o->dims[d];
    if (same)
        return 0;
    if (m->max_batch_size > 0 && o->rank > 0 && o->dims[0] >= 0)
        return fail_at(
            m, m->tc->pos[TC_POS_MAX_BATCH_SIZE], OSV_EINVAL, err,
            "max_batch_size %d needs a variable first (batch) dim on every input and output, but the "
            "model's %s '%s' is %s",
            m->max_batch_size, what, t->name, shape_str(o->dims, o->rank, a, sizeof a));
    return fail_at(m, t->has_reshape ? pos->reshape : pos->dims, OSV_EINVAL, err,
                   "%s '%s': the config gives the model %s%s, the model's shape is %s", what, t->name,
                   shape_str(full, rank, b, sizeof b), m->max_batch_size > 0 ? " (batch dim first)" : "",
                   shape_str(o->dims, o->rank, a, sizeof a));
}

/* ---- auto-completion of inputs, outputs and max_batch_size ----------------------------------------------
 */

/* A config tensor from the model's: dims without the batch dim; a tensor left without dims (a scalar,
 * or [batch] alone) becomes dims [1] with reshape [] (as Triton's backend writes it). */
static int tensor_from_ort(const osv_model_t *m, const osv_tensor_info_t *o, osv_tc_tensor_t *t,
                           osv_err_t *err)
{
    uint32_t from = m->max_batch_size > 0 ? 1 : 0;
    if (o->kind != OSV_VALUE_TENSOR || o->rank < 0)
        return fail_at(m, (tc_pos_t){0, 0}, OSV_EINVAL, err,
                       "'%s' has no tensor shape in the model: list it with its dims in config.pbtxt",
                       o->name);
    t->name = o->name;
    t->dtype = o->dtype;
    t->label_filename = "";
    for (uint32_t d = from; d < (uint32_t)o->rank; d++)
        t->dims[t->rank++] = o->dims[d];
    if (t->rank == 0) {
        t->dims[t->rank++] = 1;
        t->has_reshape = true;
    }
    return 0;
}

/* A model without config.pbtxt: its tensors exactly as ORT reports them (ranks unknown stay so in the
 * clients' view; the config shows them as []). */
static void tensor_native(const osv_tensor_info_t *o, osv_tc_tensor_t *t)
{
    t->name = o->name;
    t->dtype = o->dtype;
    t->label_filename = "";
    for (int32_t d = 0; d < o->rank; d++)
        t->dims[t->rank++] = o->dims[d];
}

static int complete_list(osv_model_t *m, bool output, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    const osv_tensor_info_t *ort = output ? m->ort_out : m->ort_in;
    uint32_t n = output ? m->n_ort_out : m->n_ort_in;
    osv_tc_tensor_t *arr = osv_tconfig_alloc(t, n, sizeof *arr);
    tc_tensor_pos_t *pos = osv_tconfig_alloc(t, n, sizeof *pos);
    int rc;
    if (!arr || !pos)
        return no_memory(err);
    for (uint32_t i = 0; i < n; i++) {
        if (!t->present) {
            tensor_native(&ort[i], &arr[i]);
            if (t->c.max_batch_size > 0 && arr[i].rank > 0) { /* config.json's max_batch_size: Triton's
                                                                  dims leave the batch dim out */
                memmove(arr[i].dims, arr[i].dims + 1, (size_t)(arr[i].rank - 1) * sizeof arr[i].dims[0]);
                arr[i].rank--;
            }
        } else if ((rc = tensor_from_ort(m, &ort[i], &arr[i], err)) != 0)
            return rc;
    }
    if (output) {
        t->c.output = arr;
        t->c.n_output = n;
        t->out_pos = pos;
    } else {
        t->c.input = arr;
        t->c.n_input = n;
        t->in_pos = pos;
    }
    return 0;
}

/* The ORT backend's AutoCompleteMaxBatch, when the config leaves inputs or outputs out. */
static int complete_max_batch(osv_model_t *m, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    const char *why = NULL;
    bool can = batchable(m, &why);
    if (can && t->c.max_batch_size == 0) {
        t->c.max_batch_size = m->lo.default_max_batch_size > 0 ? m->lo.default_max_batch_size : 0;
    } else if (!can && t->c.max_batch_size != 0) {
        return fail_at(
            m, t->pos[TC_POS_MAX_BATCH_SIZE], OSV_EINVAL, err,
            "max_batch_size %d: the model does not support batching ('%s' has no variable first dim)",
            t->c.max_batch_size, why ? why : "?");
    }
    if (t->c.max_batch_size > 1 && !t->c.dynamic_batching.enabled)
        t->c.dynamic_batching.enabled = true; /* as Triton's backend turns it on */
    return 0;
}

/* A config input naming an initializer the model lets a request override: a default stands behind it, so
 * the config must say a request may leave it out, and a weight has no batch dimension to add. */
static int check_initializer(osv_model_t *m, const osv_tc_tensor_t *c, const tc_tensor_pos_t *pos,
                             osv_err_t *err)
{
    if (!c->optional)
        return fail_at(
            m, pos->at, OSV_EINVAL, err,
            "input '%s': an initializer of the model (it has a default), so it needs optional: true",
            c->name);
    if (m->tc->c.max_batch_size > 0)
        return fail_at(
            m, pos->at, OSV_EINVAL, err,
            "input '%s': an initializer of the model has no batch dimension; it needs max_batch_size 0",
            c->name);
    return 0;
}

/* Config inputs (or outputs) that the model does not have, and model inputs the config leaves out. */
static int check_list(osv_model_t *m, bool output, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    const osv_tensor_info_t *ort = output ? m->ort_out : m->ort_in;
    uint32_t n_ort = output ? m->n_ort_out : m->n_ort_in, n = output ? t->c.n_output : t->c.n_input;
    const osv_tc_tensor_t *arr = output ? t->c.output : t->c.input;
    const tc_tensor_pos_t *pos = output ? t->out_pos : t->in_pos;
    const char *what = output ? "output" : "input";
    char names[512];
    int rc;
    for (uint32_t k = 0; k < n; k++) {
        int o = find_ort(ort, n_ort + (output ? 0 : m->n_ort_init), arr[k].name);
        if (o < 0)
            return fail_at(m, pos[k].at, OSV_EINVAL, err,
                           "%s '%s': the model has no %s of that name (its %ss: %s)", what, arr[k].name, what,
                           what, names_of(ort, n_ort, names, sizeof names));
        if ((uint32_t)o >= n_ort && (rc = check_initializer(m, &arr[k], &pos[k], err)) != 0)
            return rc;
        if ((rc = check_tensor(m, &arr[k], &pos[k], &ort[o], output, err)) != 0)
            return rc;
    }
    for (uint32_t i = 0; !output && i < n_ort; i++) {
        bool listed = false;
        for (uint32_t k = 0; k < n && !listed; k++)
            listed = strcmp(arr[k].name, ort[i].name) == 0;
        if (!listed)
            return fail_at(m, n ? pos[0].at : (tc_pos_t){0, 0}, OSV_EINVAL, err,
                           "input: the model's input '%s' is not listed (the model needs: %s)", ort[i].name,
                           names_of(ort, n_ort, names, sizeof names));
    }
    return 0;
}

/* ---- the clients' view -------------------------------------------------------------------------------- */

static int build_view(osv_model_t *m, bool output, osv_err_t *err)
{
    const osv_tconfig_t *t = m->tc;
    uint32_t n = output ? t->c.n_output : t->c.n_input,
             n_ort = output ? m->n_ort_out : m->n_ort_in + m->n_ort_init;
    const osv_tc_tensor_t *arr = output ? t->c.output : t->c.input;
    const osv_tensor_info_t *ort = output ? m->ort_out : m->ort_in;
    osv_tensor_info_t *v = osv_calloc(n ? n : 1, sizeof *v);
    const char **names = osv_calloc(n ? n : 1, sizeof *names);
    uint32_t *map = osv_calloc(n ? n : 1, sizeof *map);
    if (output) {
        m->out = v, m->out_names = names, m->out_ort = map, m->n_out = n;
    } else {
        m->in = v, m->in_names = names, m->in_ort = map, m->n_in = n;
    }
    if (!v || !names || !map)
        return no_memory(err);
    for (uint32_t k = 0; k < n; k++) {
        int o = find_ort(ort, n_ort, arr[k].name);
        const osv_tensor_info_t *src = &ort[o < 0 ? 0 : o];
        map[k] = (uint32_t)(o < 0 ? 0 : o);
        v[k] = *src; /* name, kind, ORT type, symbols */
        names[k] = v[k].name;
        v[k].optional = !output && arr[k].optional;
        if (!t->present)
            continue; /* the model's own shapes */
        v[k].dtype = arr[k].dtype;
        v[k].rank = 0;
        if (m->max_batch_size > 0)
            v[k].dims[v[k].rank++] = -1;
        for (uint32_t d = 0; d < arr[k].rank; d++)
            v[k].dims[v[k].rank++] = arr[k].dims[d];
        bool same = !arr[k].has_reshape && src->rank == v[k].rank;
        for (int32_t d = 0; d < v[k].rank; d++)
            v[k].sym[d] = same ? src->sym[d] : "";
    }
    return 0;
}

/* ---- instance groups, batching, warm-up, labels, parameters ----------------------------------------------
 */

static int complete_instances(osv_model_t *m, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    uint64_t total = 0;
    if (t->c.n_instance_group == 0) {
        osv_tc_group_t *g = osv_tconfig_alloc(t, 1, sizeof *g);
        if (!g)
            return no_memory(err);
        g->name = t->c.name;
        g->kind = OSV_KIND_CPU;
        g->count = t->present ? DEFAULT_CPU_INSTANCES
                              : (int32_t)(m->lo.native_instances ? m->lo.native_instances : 1);
        g->host_policy = "";
        t->c.instance_group = g;
        t->c.n_instance_group = 1;
    }
    for (uint32_t i = 0; i < t->c.n_instance_group; i++) {
        osv_tc_group_t *g = (osv_tc_group_t *)&t->c.instance_group[i];
        char name[160];
        if (!g->name || !g->name[0]) {
            snprintf(name, sizeof name, "%s_%u", t->c.name, i);
            if (!(g->name = osv_tconfig_strdup(t, name)))
                return no_memory(err);
        }
        if (!g->host_policy)
            g->host_policy = "";
        g->kind = OSV_KIND_CPU; /* AUTO and MODEL: the CPU, the only device here */
        if (g->count <= 0)
            g->count = DEFAULT_CPU_INSTANCES;
        total += (uint64_t)g->count;
    }
    if (t->present && total > m->lo.max_instances)
        return fail_at(m, t->pos[TC_POS_INSTANCE_GROUP], OSV_ELIMIT, err,
                       "instance_group asks for %" PRIu64 " instances, more than --max-instances (%u)", total,
                       m->lo.max_instances);
    m->n_instances = (uint32_t)total;
    m->shared_session = !t->present || t->session.share_session;
    return 0;
}

static int complete_batching(osv_model_t *m, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    osv_dynamic_batching_t *db = &t->c.dynamic_batching;
    if (!db->enabled)
        return 0;
    for (uint32_t i = 0; i < db->n_preferred; i++)
        if (m->max_batch_size > 0 && db->preferred_batch_size[i] > m->max_batch_size)
            return fail_at(m, t->pos[TC_POS_DYNAMIC_BATCHING], OSV_EINVAL, err,
                           "dynamic_batching.preferred_batch_size %d is above max_batch_size %d",
                           db->preferred_batch_size[i], m->max_batch_size);
    if (db->n_preferred == 0 && m->max_batch_size > 0) { /* as Triton completes it */
        int32_t *p = osv_tconfig_alloc(t, 1, sizeof *p);
        if (!p)
            return no_memory(err);
        *p = m->max_batch_size;
        db->preferred_batch_size = p;
        db->n_preferred = 1;
    }
    return 0;
}

static int check_warmup_input(osv_model_t *m, const osv_tc_warmup_t *w, uint32_t s,
                              const osv_tc_warmup_input_t *in, osv_err_t *err)
{
    const osv_tconfig_t *t = m->tc;
    tc_pos_t none = t->warm_pos ? t->warm_pos[s] : (tc_pos_t){0, 0};
    int k = find_ort(m->in, m->n_in, in->name);
    char a[96], b[96];
    if (k < 0)
        return fail_at(m, none, OSV_EINVAL, err, "model_warmup[%u] ('%s'): the model has no input '%s'", s,
                       w->name, in->name);
    if (in->dtype != t->c.input[k].dtype)
        return fail_at(m, none, OSV_EINVAL, err, "model_warmup[%u] ('%s'): input '%s' is %s, not %s", s,
                       w->name, in->name, osv_dtype_config_name(t->c.input[k].dtype),
                       osv_dtype_config_name(in->dtype));
    bool fits = in->rank == t->c.input[k].rank;
    for (uint32_t d = 0; fits && d < in->rank; d++)
        fits = t->c.input[k].dims[d] < 0 || t->c.input[k].dims[d] == in->dims[d];
    if (!fits)
        return fail_at(m, none, OSV_EINVAL, err,
                       "model_warmup[%u] ('%s'): input '%s' dims %s do not fit its dims %s", s, w->name,
                       in->name, shape_str(in->dims, (int32_t)in->rank, a, sizeof a),
                       shape_str(t->c.input[k].dims, (int32_t)t->c.input[k].rank, b, sizeof b));
    return 0;
}

static int complete_warmup(osv_model_t *m, osv_err_t *err)
{
    const osv_tconfig_t *t = m->tc;
    uint64_t runs = 0;
    int rc;
    for (uint32_t s = 0; s < t->c.n_model_warmup; s++) {
        const osv_tc_warmup_t *w = &t->c.model_warmup[s];
        tc_pos_t at = t->warm_pos ? t->warm_pos[s] : (tc_pos_t){0, 0};
        if (m->max_batch_size > 0 ? w->batch_size > (uint32_t)m->max_batch_size : w->batch_size != 1)
            return fail_at(m, at, OSV_EINVAL, err,
                           "model_warmup[%u] ('%s'): batch_size %u is not allowed with max_batch_size %d%s",
                           s, w->name, w->batch_size, m->max_batch_size,
                           m->max_batch_size ? "" : " (a model without batching takes batch_size 1)");
        for (uint32_t i = 0; i < w->n_inputs; i++)
            if ((rc = check_warmup_input(m, w, s, &w->inputs[i], err)) != 0)
                return rc;
        for (uint32_t k = 0; k < m->n_in; k++) {
            bool given = false;
            for (uint32_t i = 0; i < w->n_inputs && !given; i++)
                given = strcmp(w->inputs[i].name, m->in[k].name) == 0;
            if (!given && !m->in[k].optional)
                return fail_at(m, at, OSV_EINVAL, err, "model_warmup[%u] ('%s') gives no data for input '%s'",
                               s, w->name, m->in[k].name);
        }
        runs += (uint64_t)(w->count ? w->count : 1) * m->n_instances;
    }
    if (runs > m->lo.max_warmup_runs)
        return fail_at(m, t->pos[TC_POS_MODEL_WARMUP], OSV_ELIMIT, err,
                       "model_warmup asks for %" PRIu64
                       " executions (samples x count x instances), more than "
                       "--max-warmup-runs (%u)",
                       runs, m->lo.max_warmup_runs);
    return 0;
}

/* config.json's labels file for output `name`: output_labels, else labels, else NULL. */
static const char *json_labels(const osv_model_t *m, const char *name)
{
    const config_labels_t *lc = &m->labels_cfg;
    for (uint32_t k = 0; k < lc->n_outputs; k++)
        if (strcmp(lc->output_names[k], name) == 0)
            return lc->output_files[k];
    return lc->default_file;
}

static int complete_labels(osv_model_t *m, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    for (uint32_t k = 0; k < t->c.n_output; k++) {
        osv_tc_tensor_t *o = (osv_tc_tensor_t *)&t->c.output[k];
        const char *json = json_labels(m, o->name);
        if (json && o->label_filename[0] && strcmp(json, o->label_filename) != 0)
            return fail_at(m, t->out_pos[k].label_filename, OSV_EINVAL, err,
                           "output '%s' label_filename: '%s' contradicts config.json's labels file '%s'",
                           o->name, o->label_filename, json);
        if (json && !o->label_filename[0])
            o->label_filename = json;
    }
    return 0;
}

/* Sets parameter key to value (replacing the user's entry, or adding one). */
static int set_param(osv_tconfig_t *t, osv_tc_kv_t *arr, uint32_t *n, const char *key, const char *value)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (strcmp(arr[i].key, key) == 0) {
            arr[i].value = osv_tconfig_strdup(t, value);
            return arr[i].value ? 0 : -1;
        }
    }
    arr[*n].key = key;
    arr[*n].value = osv_tconfig_strdup(t, value);
    return arr[(*n)++].value ? 0 : -1;
}

/* The session settings in effect, shown among the parameters (what the log and the session say). */
static int complete_parameters(osv_model_t *m, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    osv_env_opts_t def;
    const osv_env_opts_t *eo = m->env ? osv_env_opts(m->env) : (osv_env_opts_default(&def), &def);
    const osv_model_config_t *c = &m->cfg;
    int intra =
        eo->global_thread_pools || c->threads.intra_op < 0 ? eo->threads.intra_op : c->threads.intra_op;
    int inter =
        eo->global_thread_pools || c->threads.inter_op < 0 ? eo->threads.inter_op : c->threads.inter_op;
    osv_tc_kv_t *arr = osv_tconfig_alloc(t, t->c.n_parameters + 6, sizeof *arr);
    uint32_t n = t->c.n_parameters;
    char v[24];
    if (!arr)
        return no_memory(err);
    if (n)
        memcpy(arr, t->c.parameters, n * sizeof *arr);
    int rc = 0;
    snprintf(v, sizeof v, "%d", intra < 0 ? 0 : intra);
    rc |= set_param(t, arr, &n, "intra_op_thread_count", v);
    snprintf(v, sizeof v, "%d", inter < 0 ? 0 : inter);
    rc |= set_param(t, arr, &n, "inter_op_thread_count", v);
    rc |= set_param(t, arr, &n, "execution_mode", t->session.execution_mode ? "1" : "0");
    rc |= set_param(t, arr, &n, "enable_mem_arena", c->arena ? "1" : "0");
    rc |= set_param(t, arr, &n, "enable_mem_pattern", c->mem_pattern ? "1" : "0");
    if (m->shared_session && m->n_instances > 1)
        rc |= set_param(t, arr, &n, "share_session_between_instances", "true");
    if (rc)
        return no_memory(err);
    t->c.parameters = arr;
    t->c.n_parameters = n;
    return 0;
}

static int check_batch_dim(osv_model_t *m, osv_err_t *err)
{
    if (!m->tc->present) {
        m->batch_dim = -1; /* model.c resolves it from the shapes, as before */
        return 0;
    }
    if ((m->json_set & CFG_SET_BATCH_DIM) && m->cfg.batch_dim != (m->max_batch_size > 0))
        return fail_at(m, m->tc->pos[TC_POS_MAX_BATCH_SIZE], OSV_EINVAL, err,
                       "max_batch_size %d contradicts config.json's \"batch_dim\": %s", m->max_batch_size,
                       m->cfg.batch_dim ? "true" : "false");
    m->batch_dim = m->max_batch_size > 0;
    return 0;
}

int osv_tconfig_complete(osv_model_t *m, osv_err_t *err)
{
    osv_tconfig_t *t = m->tc;
    bool auto_io = t->c.n_input == 0 || t->c.n_output == 0;
    int rc;
    if (!t->c.name[0])
        t->c.name = m->name;
    if (!t->c.platform[0])
        t->c.platform = "onnxruntime_onnx";
    if (!t->c.backend[0])
        t->c.backend = "onnxruntime";
    if (!t->c.default_model_filename[0])
        t->c.default_model_filename = "model.onnx";
    if (!t->present) { /* ortserve's own rules; config.json may give a max_batch_size (batching.h) */
        t->c.version_policy = OSV_VERSIONS_ALL;
        t->c.max_batch_size = (int32_t)m->cfg.batching.max_batch_size;
    } else if (auto_io && (rc = complete_max_batch(m, err)) != 0) {
        return rc;
    }
    m->max_batch_size = t->c.max_batch_size;
    if ((t->c.n_input == 0 && (rc = complete_list(m, false, err)) != 0) ||
        (t->c.n_output == 0 && (rc = complete_list(m, true, err)) != 0) ||
        (t->present && ((rc = check_list(m, false, err)) != 0 || (rc = check_list(m, true, err)) != 0)) ||
        (rc = build_view(m, false, err)) != 0 || (rc = build_view(m, true, err)) != 0 ||
        (rc = complete_instances(m, err)) != 0 || (rc = complete_batching(m, err)) != 0 ||
        (rc = complete_warmup(m, err)) != 0 || (rc = complete_labels(m, err)) != 0 ||
        (rc = complete_parameters(m, err)) != 0)
        return rc;
    return check_batch_dim(m, err);
}

const char *osv_tconfig_labels_file(const osv_model_t *m, uint32_t k, bool *from_json)
{
    const osv_tc_tensor_t *o = k < m->tc->c.n_output ? &m->tc->c.output[k] : NULL;
    if (from_json)
        *from_json = o && json_labels(m, o->name) != NULL;
    return o && o->label_filename[0] ? o->label_filename : NULL;
}
