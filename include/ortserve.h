/* ortserve.h — umbrella header of libortserve, the embeddable core of the ortserve inference server.
 *
 * Modules (one header each, under ortserve/):
 *   error   error codes and the osv_err_t detail object
 *   alloc   the counted, replaceable allocator for ortserve's own objects
 *   batching  a model's scheduling settings (max_batch_size, dynamic batching, instances, cache)
 *   dtype   KServe datatype <-> ONNX Runtime element type table
 *   shape   shapes, limits, overflow-checked sizes
 *   sysmem  cgroup v2/v1 and physical memory limits
 *   pool    preallocated 64-byte-aligned slot pool with lock-free acquire/release
 *   stats   lock-free per-model counters and histograms
 *   env     the process's ONNX Runtime environment (dlopen, API version check, threads)
 *   model   one loaded model version: introspection, metadata, config, labels
 *   repo    a Triton-layout model repository with safe reload/unload
 *   infer   one inference: validation, slot layout, zero-copy binding, cancellable run */
#ifndef ORTSERVE_H
#define ORTSERVE_H

#include "ortserve/alloc.h"
#include "ortserve/batching.h"
#include "ortserve/dtype.h"
#include "ortserve/env.h"
#include "ortserve/error.h"
#include "ortserve/infer.h"
#include "ortserve/model.h"
#include "ortserve/pool.h"
#include "ortserve/repo.h"
#include "ortserve/shape.h"
#include "ortserve/stats.h"
#include "ortserve/sysmem.h"

#endif
