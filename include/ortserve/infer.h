/* ortserve/infer.h — one inference: validate, lay out, bind (zero-copy where possible), run, read.
 *
 * Life of an osv_infer_t (all on one thread, except osv_infer_cancel):
 *   osv_infer_init          over caller storage of osv_infer_size(model) bytes (no allocation)
 *   osv_infer_add_input     per input: datatype + shape (+ serialized size for BYTES), validated
 *   osv_infer_input_external  optional: the input's bytes already sit in caller memory (a shared-
 *                           memory region, a receive buffer): bound in place when aligned,
 *                           otherwise copied into the slot (counted, reason "misaligned")
 *   osv_infer_add_output    per requested output (none = all); osv_infer_output_external to have
 *                           ORT write it into caller memory
 *   osv_infer_prepare       computes every size (overflow-checked, limits enforced), derives output
 *                           shapes, acquires ONE pool slot holding all slot-resident inputs and
 *                           outputs at 64-byte-aligned offsets (OSV_EBUSY when the pool is full)
 *   osv_infer_input_buffer  where the caller writes a slot-resident input (receive or parse)
 *   osv_infer_run           ORT Run with input OrtValues over the caller's/slot memory and output
 *                           OrtValues over slot ranges (ORT allocates only unknown-shape outputs)
 *   osv_infer_output_view   where each output's bytes are — no copy
 *   osv_infer_fini          releases ORT values and the slot
 * The caller holds a model reference for the whole life of the infer. */
#ifndef ORTSERVE_INFER_H
#define ORTSERVE_INFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"
#include "model.h"
#include "pool.h"
#include "shape.h"
#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osv_infer osv_infer_t;

typedef struct osv_infer_opts {
    osv_pool_t *pool; /* where slots come from (required when any tensor is slot-resident) */
    bool force_copy;  /* copy every input into the slot and every output out of ORT's buffer
                         (benchmarks' honest comparison; counted as reason "forced") */
} osv_infer_opts_t;

/* Where an output's bytes are after Run. Valid until osv_infer_fini. */
typedef struct osv_tensor_view {
    const char *name;
    osv_dtype_t dtype;
    uint32_t rank;
    int64_t dims[OSV_MAX_DIMS];
    uint64_t count;            /* elements */
    void *data;                /* fixed-size dtypes: the bytes (slot, external memory, or ORT's buffer) */
    uint64_t bytes;            /* fixed-size: count × size; BYTES: size of the serialized form */
    osv_copy_reason_t binding; /* NONE = ORT wrote into our memory; ORT_ALLOCATED; FORCED; BYTES */
} osv_tensor_view_t;

/* Bytes of storage an infer over `m` needs (depends on its input/output counts). */
OSV_API size_t osv_infer_size(const osv_model_t *m);

/* Initialises an infer in `mem` (size ≥ osv_infer_size(m), 16-byte aligned). Never allocates.
 * The infer does not take a model reference: keep one until osv_infer_fini. */
OSV_API int osv_infer_init(void *mem, size_t size, osv_model_t *m, const osv_infer_opts_t *opts,
                           osv_infer_t **out, osv_err_t *err);

/* Declares model input `idx` with the request's datatype and shape. `byte_size` is the size of the
 * data the caller will supply: for fixed-size types 0 (= computed from the shape) or a value that
 * must equal the computed size; for BYTES the size of the serialized elements (4-byte
 * little-endian length + bytes, per element — Triton's binary format). Checks: dtype matches the
 * model (or converts when the model's config allows), shape against the model and limits, and that
 * the input was not given twice. */
OSV_API int osv_infer_add_input(osv_infer_t *inf, uint32_t idx, osv_dtype_t dt, const int64_t *dims,
                                uint32_t rank, uint64_t byte_size, osv_err_t *err);

/* The data of declared input `idx` is at data[0..len) in caller memory that outlives the run.
 * len must equal the input's byte size. */
OSV_API int osv_infer_input_external(osv_infer_t *inf, uint32_t idx, void *data, uint64_t len,
                                     osv_err_t *err);

/* Requests model output `idx` (call for each; no call at all = every output). */
OSV_API int osv_infer_add_output(osv_infer_t *inf, uint32_t idx, osv_err_t *err);

/* Requested output `idx` goes to dst[0..cap) (caller memory that outlives the run). When its shape
 * is computable ORT writes there directly; otherwise its bytes are copied there after Run
 * (counted). A result larger than cap fails the run with OSV_ETOOBIG. */
OSV_API int osv_infer_output_external(osv_infer_t *inf, uint32_t idx, void *dst, uint64_t cap,
                                      osv_err_t *err);

/* Checks every model input is declared, lays out the slot and binds external inputs. */
OSV_API int osv_infer_prepare(osv_infer_t *inf, osv_err_t *err);

/* Slot range for declared input `idx` (after prepare): the caller writes exactly *len bytes there
 * (for a converted input: in the request's datatype). OSV_EINVAL for an external input. */
OSV_API int osv_infer_input_buffer(osv_infer_t *inf, uint32_t idx, void **ptr, uint64_t *len);
/* Where the caller writes declared input `idx`'s bytes after prepare: its slot range (as
 * osv_infer_input_buffer), or, for an input bound with osv_infer_input_external and read in place,
 * that memory (a staged request's rows in a forming batch). OSV_EINVAL when prepare copied the
 * external bytes into the slot (misaligned, forced): bytes written now would not be seen. */
OSV_API int osv_infer_input_dest(osv_infer_t *inf, uint32_t idx, void **ptr, uint64_t *len);

/* Runs the model. Thread-safe against osv_infer_cancel only. OSV_ECANCELED when canceled,
 * OSV_EORT (message from ORT) on a model failure, OSV_EINVAL when ORT rejects the inputs. */
OSV_API int osv_infer_run(osv_infer_t *inf, osv_err_t *err);

/* After a failed Run: releases that run's ORT values so osv_infer_run can try again (the inputs
 * stay where they are). For transient failures only; a canceled infer stays canceled. */
OSV_API int osv_infer_rearm(osv_infer_t *inf);

/* Cancels a pending or running Run (RunOptionsSetTerminate); callable from any thread, any number
 * of times, also after the run finished (then it does nothing). */
OSV_API void osv_infer_cancel(osv_infer_t *inf);
OSV_API bool osv_infer_canceled(const osv_infer_t *inf);
/* True while ORT's Run is executing this infer (for watchdogs and tests). */
OSV_API bool osv_infer_running(const osv_infer_t *inf);

/* Number of requested outputs and, for the k-th of them, its model output index and view. */
OSV_API uint32_t osv_infer_output_count(const osv_infer_t *inf);
OSV_API int osv_infer_output_view(osv_infer_t *inf, uint32_t k, osv_tensor_view_t *view, osv_err_t *err);

/* Serializes BYTES output k into Triton's binary format at dst[0..cap) (view.bytes is the exact
 * size needed). Counted as copied bytes, reason "bytes". */
OSV_API int osv_infer_output_bytes(osv_infer_t *inf, uint32_t k, void *dst, uint64_t cap, osv_err_t *err);

/* Bytes ortserve copied for this request so far (all reasons). */
OSV_API uint64_t osv_infer_copied(const osv_infer_t *inf);
/* Accounts bytes the caller copied on this request's behalf (receive path), by reason. */
OSV_API void osv_infer_note_copy(osv_infer_t *inf, osv_copy_reason_t r, uint64_t bytes);
/* First fallback reason met on input/output binding (NONE when everything was zero-copy). */
OSV_API osv_copy_reason_t osv_infer_fallback(const osv_infer_t *inf);
/* Batch size of this request (first dim when the model's first dim is a batch dim, else 1). */
OSV_API uint64_t osv_infer_batch(const osv_infer_t *inf);
/* Nanoseconds spent in compute_input (prepare + binding) and compute_infer (Run). */
OSV_API uint64_t osv_infer_ns(const osv_infer_t *inf, osv_phase_t p);

/* ---- batching (the server's batcher joins requests of one model into one run) ------------------------- */

/* A declared input as the request sent it: datatype, shape, byte size, whether it is converted to the
 * model's datatype, and — once prepared — where its bytes are (the slot or caller memory; NULL before
 * prepare). Valid until osv_infer_fini. */
typedef struct osv_infer_input_info {
    osv_dtype_t dtype;
    uint32_t rank;
    const int64_t *dims;
    uint64_t bytes;
    bool convert;
    const void *data;
} osv_infer_input_info_t;

/* 0, or OSV_EINVAL when idx is not a declared input (or, prepared, its bytes have no place). */
OSV_API int osv_infer_input_info(const osv_infer_t *inf, uint32_t idx, osv_infer_input_info_t *info);
/* Model output index of the k-th requested output (UINT32_MAX when none). After prepare. */
OSV_API uint32_t osv_infer_output_index(const osv_infer_t *inf, uint32_t k);

/* A prepared request that was run as rows [row0, row0 + rows) of `batch` (an infer of the same model
 * that has run): each of its requested outputs becomes a view of those rows of the batch's output —
 * no copy, except into an output the caller bound to its own memory (shared memory: copied, counted
 * as reason "batch"). The request is then finished as if it had run; its views stay valid while the
 * batch's outputs are. release(ud) is called once, by osv_infer_fini of the request, so the batch's
 * owner knows when the last view is gone. On error (an output without a row per batch row) the
 * request must be answered with it; release is still called by osv_infer_fini. */
OSV_API int osv_infer_adopt_rows(osv_infer_t *inf, const osv_infer_t *batch, uint64_t row0, uint64_t rows,
                                 void (*release)(void *ud), void *ud, osv_err_t *err);

/* A prepared request answered without a run (a response cache hit): its k-th requested output becomes
 * views[k] (n = its output count; a BYTES output's view holds Triton's serialized form) — no copy,
 * except into caller memory it bound an output to (counted, reason "cache"). release(ud) is called
 * once by osv_infer_fini. */
OSV_API int osv_infer_adopt_views(osv_infer_t *inf, const osv_tensor_view_t *views, uint32_t n,
                                  void (*release)(void *ud), void *ud, osv_err_t *err);

/* For tests: the data pointer ORT's input OrtValue holds for input idx after Run (NULL if none). */
OSV_API const void *osv_infer_bound_input_ptr(const osv_infer_t *inf, uint32_t idx);

/* Releases ORT values and the slot. The storage can then be reused or freed. */
OSV_API void osv_infer_fini(osv_infer_t *inf);

#ifdef __cplusplus
}
#endif
#endif
