/* model_internal.h — internal: the layout of osv_model_t, shared by model.c, config.c, infer.c and
 * repo.c. */
#ifndef OSV_CORE_MODEL_INTERNAL_H
#define OSV_CORE_MODEL_INTERNAL_H

#include <stdatomic.h>

#include "ort.h"
#include "ortserve/model.h"

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

struct osv_model {
    _Atomic int refs;
    osv_env_t *env;
    char *name;
    int64_t version;
    char *path;
    OrtSession *session;
    uint32_t n_in, n_out;
    osv_tensor_info_t *in, *out;
    const char **in_names, **out_names; /* arrays for OrtApi::Run */
    _Atomic uint8_t *derive_broken;     /* per output: symbolic-dim derivation proved wrong */
    int batch_dim;                      /* resolved: 1 when the first dim of every tensor is a batch */
    bool outputs_symbolic;              /* some output dim is named by a symbol (derivable from the inputs) */
    osv_model_meta_t meta;
    osv_model_config_t cfg;
    char *config_text;
    size_t config_len;
    config_section_t sections[OSV_CONFIG_SECTIONS];
    config_labels_t labels_cfg;
    osv_stats_t *stats;
    double load_ms;
    char *warmup_error;
    uint64_t warmup_ns;    /* the warm-up Run's duration (0 when none ran) */
    uint64_t warmup_bytes; /* resident memory the warm-up Run added (0 when none ran) */
    char **owned;       /* every string above, freed with the model */
    size_t n_owned, cap_owned;
    struct {
        void *ptr;
        void (*dtor)(void *);
    } attach[OSV_ATTACH_MAX];
};

/* Parses config.json text into cfg/sections/labels of m (m->config_text must hold the text). */
int osv_model_config_parse(osv_model_t *m, osv_err_t *err);
/* Keeps s (allocated with osv_malloc) until the model is freed; returns s, or NULL (and frees s)
 * when it cannot be recorded. */
char *osv_model_own(osv_model_t *m, char *s);

#endif
