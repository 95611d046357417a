/* model_internal.h — internal: the layout of osv_model_t, shared by model.c, config.c, infer.c and
 * repo.c. */
#ifndef OSV_CORE_MODEL_INTERNAL_H
#define OSV_CORE_MODEL_INTERNAL_H

#include <stdatomic.h>

#include "ort.h"
#include "ortserve/model.h"
#include "tconfig.h"

/* A span of the config text owned by another layer ("image", "slo", ...). */
typedef struct config_section {
    const char *key;
    const char *text; /* points into osv_model.config_text */
    size_t len;
} config_section_t;

#define OSV_CONFIG_SECTIONS 3 /* image, postprocess, slo */

/* Labels files named by config.json, resolved at load (paths relative to the config dir). */
typedef struct config_labels {
    char *default_file; /* "labels" */
    uint32_t n_outputs; /* "output_labels" entries */
    char **output_names;
    char **output_files;
} config_labels_t;

/* Keys of config.json that a Triton config.pbtxt can also set (osv_model.json_set): when both set
 * one, the values must agree (tcomplete.c). */
enum {
    CFG_SET_INTRA_OP = 1u << 0,
    CFG_SET_INTER_OP = 1u << 1,
    CFG_SET_OPTIMIZATION = 1u << 2,
    CFG_SET_ARENA = 1u << 3,
    CFG_SET_MEM_PATTERN = 1u << 4,
    CFG_SET_WARMUP = 1u << 5,
    CFG_SET_BATCH_DIM = 1u << 6,
};

#define OSV_MAX_INSTANCE_BITS 64 /* instances tracked in osv_model.busy */

/* One instance (Triton's model instance): the session its runs use. Instances may share a session
 * (share_session_between_instances, and models without config.pbtxt). */
struct osv_model {
    _Atomic int refs;
    osv_env_t *env;
    char *name;
    int64_t version;
    char *path;
    OrtSession *session;            /* sessions[0] */
    OrtSession **sessions;          /* one per instance (the same pointer when shared) */
    uint32_t n_instances;           /* runs this model may have at once (Triton's instance count) */
    bool shared_session;            /* every instance runs sessions[0] */
    _Atomic uint64_t busy;          /* instances running now (bit i: instance i, i < OSV_MAX_INSTANCE_BITS) */
    _Atomic uint32_t next_instance; /* round robin beyond 64 instances */
    /* What clients see (the completed Triton config's inputs and outputs, in its order). */
    uint32_t n_in, n_out;
    osv_tensor_info_t *in, *out;
    const char **in_names, **out_names; /* arrays for OrtApi::Run (the same names) */
    /* What ONNX Runtime reports: ort_in[in_ort[i]] is client input i as the session takes it (its
     * shape differs when the config reshapes it or adds a batch dim). ort_in holds the n_ort_in inputs
     * ORT needs, then n_ort_init initializers a request may override (inputs with a default, which a
     * config may list as `optional`). */
    uint32_t n_ort_in, n_ort_init, n_ort_out;
    osv_tensor_info_t *ort_in, *ort_out;
    uint32_t *in_ort, *out_ort;
    _Atomic uint8_t *derive_broken;     /* per output: symbolic-dim derivation proved wrong */
    int batch_dim;                      /* resolved: 1 when the first dim of every tensor is a batch */
    int32_t max_batch_size;             /* Triton's: > 0 = the batch dim is bounded by it */
    bool outputs_symbolic;              /* some output dim is named by a symbol (derivable from the inputs) */
    osv_model_meta_t meta;
    osv_model_config_t cfg;
    uint32_t json_set;    /* CFG_SET_*: keys config.json gave */
    osv_tconfig_t *tc;    /* the Triton config, completed (never NULL once loaded) */
    osv_load_opts_t lo;   /* how it was loaded */
    uint64_t fingerprint; /* of the files it was loaded from (osv_model_fingerprint) */
    char *config_text;
    size_t config_len;
    config_section_t sections[OSV_CONFIG_SECTIONS];
    config_labels_t labels_cfg;
    osv_stats_t *stats;
    double load_ms;
    char *warmup_error;
    uint64_t warmup_ns;    /* the warm-up Run's duration (0 when none ran) */
    uint64_t warmup_bytes; /* resident memory the warm-up Run added (0 when none ran) */
    uint32_t warmup_runs;  /* warm-up executions that completed before the version was shared */
    char **owned;       /* every string above, freed with the model */
    size_t n_owned, cap_owned;
    struct {
        void *ptr;
        void (*dtor)(void *);
    } attach[OSV_ATTACH_MAX];
};

/* Parses config.json text into cfg/sections/labels of m (m->config_text must hold the text). */
int osv_model_config_parse(osv_model_t *m, osv_err_t *err);

/* tcomplete.c: folds config.json's settings into m->tc and checks the two agree (before the session
 * exists: they decide its options). */
int osv_tconfig_merge_json(osv_model_t *m, osv_err_t *err);
/* Client input i is one of the initializers a request may override: ORT has a default for it. */
static inline bool osv_model_input_has_default(const osv_model_t *m, uint32_t i)
{
    return m->in_ort[i] >= m->n_ort_in;
}

/* tcomplete.c: completes m->tc against what ORT reports (m->ort_in/ort_out) and builds the clients'
 * view (m->in/out, in_ort/out_ort, max_batch_size, instances). */
int osv_tconfig_complete(osv_model_t *m, osv_err_t *err);
/* warmup.c: runs the warm-up before the version is shared — config.pbtxt's model_warmup samples on
 * every session (a failure fails the load, naming the sample), else one run on zeros (a failure is
 * recorded in warmup_error: some models reject zeros). Sets warmup_ns and warmup_bytes. */
int osv_model_warmup_run(osv_model_t *m, const char *config_dir, osv_err_t *err);

/* model.c: ORT's shape for client input i sent with dims[0..rank) (the same unless config.pbtxt
 * reshapes it; the batch dim stays first): 0, or OSV_ESHAPE / OSV_EOVERFLOW when the elements do not
 * fit the reshape. out holds OSV_MAX_DIMS. */
int osv_model_ort_input_shape(const osv_model_t *m, uint32_t i, const int64_t *dims, uint32_t rank,
                              int64_t *out, uint32_t *out_rank);
/* model.c: the clients' shape of output k that ORT produced as ort[0..ort_rank). */
void osv_model_client_output_shape(const osv_model_t *m, uint32_t k, const int64_t *ort, uint32_t ort_rank,
                                   int64_t *out, uint32_t *out_rank);

/* tcomplete.c: the labels file of output k (config.pbtxt's label_filename, else config.json's), or
 * NULL; *from_json (may be NULL) says whether config.json names it. Contradictions were refused by
 * osv_tconfig_complete. */
const char *osv_tconfig_labels_file(const osv_model_t *m, uint32_t k, bool *from_json);
/* Keeps s (allocated with osv_malloc) until the model is freed; returns s, or NULL (and frees s)
 * when it cannot be recorded. */
char *osv_model_own(osv_model_t *m, char *s);

#endif
