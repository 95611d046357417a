/* model_config.c — GET /v2/models/{m}[/versions/{v}]/config: Triton's model configuration extension.
 * The answer is the JSON form of the version's completed ModelConfig (ortserve/tconfig.h), written
 * field by field in the order and with the defaults Triton prints (protobuf's JSON mapping with every
 * field shown, int64 values as numbers): what tritonclient, perf_analyzer and model_analyzer read. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "http/handlers.h"
#include "ortserve/imaging.h"

static void kstr(osv_jw_t *w, const char *key, const char *val)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_str(w, val, strlen(val));
}

static void kbool(osv_jw_t *w, const char *key, bool v)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_bool(w, v);
}

static void ki64(osv_jw_t *w, const char *key, int64_t v)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_i64(w, v);
}

static void ku64(osv_jw_t *w, const char *key, uint64_t v)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_u64(w, v);
}

static void kdims(osv_jw_t *w, const char *key, const int64_t *dims, uint32_t n)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_arr_begin(w);
    for (uint32_t i = 0; i < n; i++)
        osv_jw_i64(w, dims[i]);
    osv_jw_arr_end(w);
}

static void kempty(osv_jw_t *w, const char *key, bool object)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_raw(w, object ? "{}" : "[]", 2);
}

static void tensor(osv_jw_t *w, const osv_tc_tensor_t *t, bool output)
{
    static const char *const formats[] = {"FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"};
    osv_jw_obj_begin(w);
    kstr(w, "name", t->name);
    kstr(w, "data_type", osv_dtype_config_name(t->dtype));
    if (!output)
        kstr(w, "format", formats[t->format <= OSV_FORMAT_NCHW ? t->format : 0]);
    kdims(w, "dims", t->dims, t->rank);
    if (t->has_reshape) {
        osv_jw_key(w, "reshape", 7);
        osv_jw_obj_begin(w);
        kdims(w, "shape", t->reshape, t->reshape_rank);
        osv_jw_obj_end(w);
    }
    if (output)
        kstr(w, "label_filename", t->label_filename);
    kbool(w, "is_shape_tensor", false);
    if (!output) {
        kbool(w, "allow_ragged_batch", t->allow_ragged_batch);
        kbool(w, "optional", t->optional);
    }
    kbool(w, "is_non_linear_format_io", false);
    osv_jw_obj_end(w);
}

static void tensors(osv_jw_t *w, const char *key, const osv_tc_tensor_t *t, uint32_t n, bool output)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_arr_begin(w);
    for (uint32_t i = 0; i < n; i++)
        tensor(w, &t[i], output);
    osv_jw_arr_end(w);
}

static void version_policy(osv_jw_t *w, const osv_triton_config_t *c)
{
    osv_jw_key(w, "version_policy", 14);
    osv_jw_obj_begin(w);
    if (c->version_policy == OSV_VERSIONS_ALL) {
        kempty(w, "all", true);
    } else if (c->version_policy == OSV_VERSIONS_SPECIFIC) {
        osv_jw_key(w, "specific", 8);
        osv_jw_obj_begin(w);
        kdims(w, "versions", c->versions, c->n_versions);
        osv_jw_obj_end(w);
    } else {
        osv_jw_key(w, "latest", 6);
        osv_jw_obj_begin(w);
        ku64(w, "num_versions", c->latest_versions);
        osv_jw_obj_end(w);
    }
    osv_jw_obj_end(w);
}

static void pinned(osv_jw_t *w, const char *key, bool enable)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_obj_begin(w);
    kbool(w, "enable", enable);
    osv_jw_obj_end(w);
}

static void optimization(osv_jw_t *w, const osv_triton_config_t *c)
{
    static const char *const priorities[] = {"PRIORITY_DEFAULT", "PRIORITY_MAX", "PRIORITY_MIN"};
    osv_jw_key(w, "optimization", 12);
    osv_jw_obj_begin(w);
    if (c->has_graph_level) {
        osv_jw_key(w, "graph", 5);
        osv_jw_obj_begin(w);
        ki64(w, "level", c->graph_level);
        osv_jw_obj_end(w);
    }
    kstr(w, "priority", priorities[c->priority >= 0 && c->priority <= 2 ? c->priority : 0]);
    pinned(w, "input_pinned_memory", c->input_pinned_memory);
    pinned(w, "output_pinned_memory", c->output_pinned_memory);
    ku64(w, "gather_kernel_buffer_threshold", c->gather_kernel_buffer_threshold);
    kbool(w, "eager_batching", c->eager_batching);
    osv_jw_obj_end(w);
}

static void queue_policy(osv_jw_t *w, const osv_queue_policy_t *q)
{
    osv_jw_obj_begin(w);
    kstr(w, "timeout_action", q->timeout_action == OSV_TIMEOUT_DELAY ? "DELAY" : "REJECT");
    ku64(w, "default_timeout_microseconds", q->default_timeout_us);
    kbool(w, "allow_timeout_override", q->allow_timeout_override);
    ku64(w, "max_queue_size", q->max_queue_size);
    osv_jw_obj_end(w);
}

/* The dynamic batcher's settings as it runs them (from config.pbtxt or config.json). */
static void dynamic_batching(osv_jw_t *w, const osv_batching_config_t *b)
{
    char level[24];
    osv_jw_key(w, "dynamic_batching", 16);
    osv_jw_obj_begin(w);
    osv_jw_key(w, "preferred_batch_size", 20);
    osv_jw_arr_begin(w);
    for (uint32_t i = 0; i < b->n_preferred; i++)
        osv_jw_i64(w, b->preferred[i]);
    osv_jw_arr_end(w);
    ku64(w, "max_queue_delay_microseconds", b->max_queue_delay_us);
    kbool(w, "preserve_ordering", b->preserve_ordering);
    ku64(w, "priority_levels", b->priority_levels);
    ku64(w, "default_priority_level", b->default_priority_level);
    osv_jw_key(w, "default_queue_policy", 20);
    queue_policy(w, &b->default_queue_policy);
    osv_jw_key(w, "priority_queue_policy", 21);
    osv_jw_obj_begin(w);
    for (uint32_t l = 0; l < b->priority_levels && l < OSV_BATCH_MAX_PRIORITIES; l++) {
        if (!b->level_policy_set[l])
            continue;
        snprintf(level, sizeof level, "%u", l + 1);
        osv_jw_key(w, level, strlen(level));
        queue_policy(w, &b->level_policy[l]);
    }
    osv_jw_obj_end(w);
    osv_jw_obj_end(w);
}

static void instance_groups(osv_jw_t *w, const osv_triton_config_t *c)
{
    static const char *const kinds[] = {"KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"};
    osv_jw_key(w, "instance_group", 14);
    osv_jw_arr_begin(w);
    for (uint32_t i = 0; i < c->n_instance_group; i++) {
        const osv_tc_group_t *g = &c->instance_group[i];
        osv_jw_obj_begin(w);
        kstr(w, "name", g->name);
        kstr(w, "kind", kinds[g->kind <= OSV_KIND_MODEL ? g->kind : 0]);
        ki64(w, "count", g->count);
        kempty(w, "gpus", false);
        kempty(w, "secondary_devices", false);
        kempty(w, "profile", false);
        kbool(w, "passive", false);
        kstr(w, "host_policy", g->host_policy);
        osv_jw_obj_end(w);
    }
    osv_jw_arr_end(w);
}

/* A map<string, string> (or <string, ModelParameter>), then `extra` pairs. */
static void string_map(osv_jw_t *w, const char *key, const osv_tc_kv_t *kv, uint32_t n, bool model_parameter,
                       const osv_img_param_t *extra, uint32_t n_extra)
{
    osv_jw_key(w, key, strlen(key));
    osv_jw_obj_begin(w);
    for (uint32_t i = 0; i < n_extra; i++) {
        osv_jw_key(w, extra[i].key, strlen(extra[i].key));
        osv_jw_obj_begin(w);
        kstr(w, "string_value", extra[i].value);
        osv_jw_obj_end(w);
    }
    for (uint32_t i = 0; i < n; i++) {
        osv_jw_key(w, kv[i].key, strlen(kv[i].key));
        if (!model_parameter) {
            osv_jw_str(w, kv[i].value, strlen(kv[i].value));
            continue;
        }
        osv_jw_obj_begin(w);
        kstr(w, "string_value", kv[i].value);
        osv_jw_obj_end(w);
    }
    osv_jw_obj_end(w);
}

static void warmup(osv_jw_t *w, const osv_triton_config_t *c)
{
    osv_jw_key(w, "model_warmup", 12);
    osv_jw_arr_begin(w);
    for (uint32_t s = 0; s < c->n_model_warmup; s++) {
        const osv_tc_warmup_t *x = &c->model_warmup[s];
        osv_jw_obj_begin(w);
        kstr(w, "name", x->name);
        ku64(w, "batch_size", x->batch_size);
        osv_jw_key(w, "inputs", 6);
        osv_jw_obj_begin(w);
        for (uint32_t i = 0; i < x->n_inputs; i++) {
            const osv_tc_warmup_input_t *in = &x->inputs[i];
            osv_jw_key(w, in->name, strlen(in->name));
            osv_jw_obj_begin(w);
            kstr(w, "data_type", osv_dtype_config_name(in->dtype));
            kdims(w, "dims", in->dims, in->rank);
            if (in->source == OSV_WARMUP_FILE)
                kstr(w, "input_data_file", in->file);
            else
                kbool(w, in->source == OSV_WARMUP_RANDOM ? "random_data" : "zero_data", true);
            osv_jw_obj_end(w);
        }
        osv_jw_obj_end(w);
        ku64(w, "count", x->count);
        osv_jw_obj_end(w);
    }
    osv_jw_arr_end(w);
}

static void fill_config(osv_jw_t *w, void *ud)
{
    const osv_triton_config_t *c = osv_model_triton_config(ud);
    const osv_model_config_t *cfg = osv_model_config(ud); /* the scheduling settings in effect */
    osv_jw_obj_begin(w);
    kstr(w, "name", c->name);
    kstr(w, "platform", c->platform);
    kstr(w, "backend", c->backend);
    kstr(w, "runtime", c->runtime);
    version_policy(w, c);
    ki64(w, "max_batch_size", c->max_batch_size);
    tensors(w, "input", c->input, c->n_input, false);
    tensors(w, "output", c->output, c->n_output, true);
    kempty(w, "batch_input", false);
    kempty(w, "batch_output", false);
    optimization(w, c);
    if (cfg->batching.dynamic)
        dynamic_batching(w, &cfg->batching);
    instance_groups(w, c);
    kstr(w, "default_model_filename", c->default_model_filename);
    osv_img_param_t img[OSV_IMG_PARAMS];
    uint32_t n_img = osv_img_model_params(ud, img); /* the image input, for clients to find it */
    string_map(w, "cc_model_filenames", c->cc_model_filenames, c->n_cc_model_filenames, false, NULL, 0);
    string_map(w, "metric_tags", c->metric_tags, c->n_metric_tags, false, NULL, 0);
    string_map(w, "parameters", c->parameters, c->n_parameters, true, img, n_img);
    warmup(w, c);
    if (cfg->cache.enable) {
        osv_jw_key(w, "response_cache", 14);
        osv_jw_obj_begin(w);
        kbool(w, "enable", true);
        osv_jw_obj_end(w);
    }
    osv_jw_obj_end(w);
}

static uint64_t str_max(const char *s)
{
    return osv_jw_str_max(s ? strlen(s) : 0) + 48; /* the key, quotes and separators */
}

/* An upper bound of the JSON's size: every string as if fully escaped, every number at its longest. */
static uint64_t config_json_max(const osv_triton_config_t *c)
{
    uint64_t n = 4096 + str_max(c->name) + str_max(c->platform) + str_max(c->backend) + str_max(c->runtime) +
                 str_max(c->default_model_filename) + 24ull * c->n_versions;
    for (uint32_t i = 0; i < c->n_input + c->n_output; i++) {
        const osv_tc_tensor_t *t = i < c->n_input ? &c->input[i] : &c->output[i - c->n_input];
        n += 512 + str_max(t->name) + str_max(t->label_filename) + 24ull * (t->rank + t->reshape_rank);
    }
    for (uint32_t i = 0; i < c->n_instance_group; i++)
        n += 256 + str_max(c->instance_group[i].name) + str_max(c->instance_group[i].host_policy);
    for (uint32_t i = 0; i < c->n_parameters; i++)
        n += 64 + str_max(c->parameters[i].key) + str_max(c->parameters[i].value);
    for (uint32_t i = 0; i < c->n_metric_tags; i++)
        n += str_max(c->metric_tags[i].key) + str_max(c->metric_tags[i].value);
    for (uint32_t i = 0; i < c->n_cc_model_filenames; i++)
        n += str_max(c->cc_model_filenames[i].key) + str_max(c->cc_model_filenames[i].value);
    for (uint32_t s = 0; s < c->n_model_warmup; s++) {
        n += 256 + str_max(c->model_warmup[s].name);
        for (uint32_t i = 0; i < c->model_warmup[s].n_inputs; i++)
            n += 256 + str_max(c->model_warmup[s].inputs[i].name) +
                 str_max(c->model_warmup[s].inputs[i].file) + 24ull * c->model_warmup[s].inputs[i].rank;
    }
    n += 24ull * c->dynamic_batching.n_preferred + 256ull * c->dynamic_batching.n_priority_policies;
    return n + OSV_IMG_PARAMS * (96 + 6 * 160);
}

void osv_h_model_config(osv_conn_t *c, const osv_route_t *r)
{
    osv_model_t *m = osv_h_model(c, r);
    if (!m)
        return;
    osv_h_send_built(c, 200, config_json_max(osv_model_triton_config(m)), fill_config, m);
    osv_model_release(m);
}
