/* fake_model.c — in-memory model versions for the config harnesses; see fake_model.h. */
#include <string.h>

#include "fake_model.h"
#include "ortserve/alloc.h"
#include "fuzz.h"

static char *own(osv_model_t *m, const char *s)
{
    char *p = osv_model_own(m, osv_strdup(s));
    FZ_CHECK(p, "out of memory");
    return p;
}

static void fill_tensor(osv_model_t *m, osv_tensor_info_t *ti, const fz_fake_tensor_t *f)
{
    ti->name = own(m, f->name);
    ti->kind = OSV_VALUE_TENSOR;
    ti->dtype = f->dt;
    ti->ort_type = osv_dtype_to_ort(f->dt);
    ti->rank = f->rank;
    for (int32_t d = 0; d < f->rank; d++) {
        ti->dims[d] = f->dims[d];
        ti->sym[d] = "";
    }
}

osv_model_t *fz_fake_model(const fz_fake_t *f, const uint8_t *json, size_t json_len)
{
    osv_model_t *m = osv_calloc(1, sizeof *m);
    FZ_CHECK(m, "out of memory");
    atomic_init(&m->refs, 1);
    m->version = 1;
    osv_model_config_default(&m->cfg);
    osv_load_opts_default(&m->lo);
    m->name = own(m, f->name);
    m->path = own(m, "fuzz/model.onnx");
    m->stats = osv_stats_new();
    m->n_ort_in = f->n_in;
    m->n_ort_init = f->n_init;
    m->n_ort_out = f->n_out;
    m->ort_in = osv_calloc(f->n_in + f->n_init, sizeof *m->ort_in); /* inputs, then initializers */
    m->ort_out = osv_calloc(f->n_out, sizeof *m->ort_out);
    FZ_CHECK(m->stats && m->ort_in && m->ort_out, "out of memory");
    for (uint32_t i = 0; i < f->n_in + f->n_out; i++)
        fill_tensor(m, i < f->n_in ? &m->ort_in[i] : &m->ort_out[i - f->n_in], &f->t[i]);
    for (uint32_t i = 0; i < f->n_init; i++)
        fill_tensor(m, &m->ort_in[f->n_in + i], &f->t[f->n_in + f->n_out + i]);
    m->config_text = osv_model_own(m, osv_malloc(json_len + 1)); /* NUL-terminated, as the file reader */
    FZ_CHECK(m->config_text, "out of memory");
    memcpy(m->config_text, json, json_len);
    m->config_text[json_len] = '\0';
    m->config_len = json_len;
    m->batch_dim = -1;
    return m;
}

int fz_fake_configure(osv_model_t *m, const uint8_t *pbtxt, size_t pbtxt_len, osv_err_t *err)
{
    osv_tconfig_limits_t lim = {m->lo.config_max_bytes, m->lo.config_max_depth, m->lo.max_instances,
                                m->lo.max_warmup_runs};
    int rc;
    if (m->config_len && (rc = osv_model_config_parse(m, err)) != 0)
        return rc;
    if (pbtxt)
        rc = osv_tconfig_from_text((const char *)pbtxt, pbtxt_len, "fuzz/config.pbtxt", m->name, &lim, &m->tc,
                                   err);
    else
        rc = osv_tconfig_read(NULL, m->name, &lim, &m->tc, err);
    if (rc || (rc = osv_tconfig_merge_json(m, err)) != 0 || (rc = osv_tconfig_complete(m, err)) != 0)
        return rc;
    m->derive_broken = osv_calloc(m->n_out ? m->n_out : 1, sizeof *m->derive_broken);
    FZ_CHECK(m->derive_broken, "out of memory");
    return 0;
}
