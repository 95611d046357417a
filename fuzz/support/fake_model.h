/* fake_model.h — a model version built in memory with the core's internal layout, for the harnesses
 * that exercise what a load does after ONNX Runtime has described the model (config.json, Triton's
 * config.pbtxt, the server's load hook) without an ORT session. */
#ifndef OSV_FUZZ_FAKE_MODEL_H
#define OSV_FUZZ_FAKE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/model_internal.h"

typedef struct fz_fake_tensor {
    const char *name;
    osv_dtype_t dt;
    int32_t rank;
    int64_t dims[4];
} fz_fake_tensor_t;

/* What ORT would report: inputs, then outputs, then n_init initializers a request may override. */
typedef struct fz_fake {
    const char *name;
    uint32_t n_in, n_out;
    fz_fake_tensor_t t[4];
    uint32_t n_init;
} fz_fake_t;

/* The model as osv_model_load leaves it before reading its configs: ORT's view filled in, the
 * config.json text (may be empty) held, no Triton config yet. Release with osv_model_release. */
osv_model_t *fz_fake_model(const fz_fake_t *f, const uint8_t *json, size_t json_len);

/* What a load does next: config.json parsed (when there is text), config.pbtxt (pbtxt NULL: none)
 * read and merged, completed against ORT's view, as osv_model_load_ex orders it. 0 or the error. */
int fz_fake_configure(osv_model_t *m, const uint8_t *pbtxt, size_t pbtxt_len, osv_err_t *err);

#endif
