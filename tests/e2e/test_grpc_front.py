"""test_grpc_front.py — the gRPC front end to end: the real binary on ephemeral loopback ports, driven
by a client written here on Debian's python3-grpcio with stubs compiled from proto/ at test time
(grpc_support.py). Every method; every datatype raw and typed; BYTES; classification; shared memory
with zero tensor bytes copied; ModelStreamInfer with hundreds in flight and interleaved errors;
deadlines and cancellation on a slow model; load/unload while streaming; malformed messages each
answered with the right status while the server keeps serving."""
import mmap
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from grpc_support import (GrpcServer, bytes_serialize, hpb, infer_request, output, pb, tensor,  # noqa: E402
                          NP_OF)
from obs_support import metrics, wait_access  # noqa: E402  (the parsed and checked /metrics page, access log)
from server import make_repo, mlp_reference, wait_until  # noqa: E402

SVC = "/inference.GRPCInferenceService/"


def metric_sum(m, name, **labels):
    return m.value(name, **labels)


def raw_call(channel, method, payload, timeout=10):
    """A unary call with the message bytes as given (no serializer): malformed messages."""
    f = channel.unary_unary(SVC + method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return f(payload, timeout=timeout)


def varint(v):
    out = b""
    while True:
        b = v & 0x7f
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def field(num, wire, payload):
    if wire == 2:
        return varint(num << 3 | 2) + varint(len(payload)) + payload
    return varint(num << 3 | wire) + payload


class GrpcFront(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "identity": "identity.onnx", "slow": "slow.onnx",
                                        "bytes_fp32": "bytes_fp32.onnx"},
                         configs={"slow": {"deadline_ms": 0}})
        cls.srv = GrpcServer(repo, "--allow-shm", "--deadline-ms", "0", "--grpc-max-message-bytes", "4M",
                             "--inline-threshold-us", "0", "--max-queue", "512")  # runs on workers: a cancel reaches a running run
        cls.stub = cls.srv.stub()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %s" % rc

    def assertServing(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest()).live)
        x = np.random.rand(1, 64).astype(np.float32)
        r = self.stub.ModelInfer(infer_request("mlp", [("x", x)]))
        np.testing.assert_allclose(output(r, "probs"), mlp_reference(x), atol=1e-5)

    def code_of(self, fn, *a, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*a, **kw)
        return cm.exception.code(), cm.exception.details()

    # ---- health, metadata, configuration, statistics, repository, log settings -------------------

    def test_health_and_metadata(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest()).live)
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest()).ready)
        self.assertTrue(self.stub.ModelReady(pb.ModelReadyRequest(name="mlp")).ready)
        self.assertTrue(self.stub.ModelReady(pb.ModelReadyRequest(name="mlp", version="1")).ready)
        self.assertFalse(self.stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready)
        m = self.stub.ServerMetadata(pb.ServerMetadataRequest())
        self.assertEqual(m.name, "ortserve")
        self.assertIn("system_shared_memory", m.extensions)
        md = self.stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"))
        self.assertEqual((md.name, list(md.versions), md.platform), ("mlp", ["1"], "onnxruntime_onnx"))
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.inputs], [("x", "FP32", [-1, 64])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.outputs], [("probs", "FP32", [-1, 10])])
        code, msg = self.code_of(self.stub.ModelMetadata, pb.ModelMetadataRequest(name="nope"))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("nope", msg)
        # gRPC statuses have their own family beside HTTP's
        m = wait_until(lambda: (lambda m: m if m.value("ortserve_grpc_responses_total", code=5) >= 1 else None)(
            metrics(self.srv)), 10, "the NOT_FOUND call counted")
        self.assertGreaterEqual(m.value("ortserve_grpc_responses_total", code=0), 1)
        h = self.srv.health()
        self.assertEqual(h.Check(hpb.HealthCheckRequest()).status, hpb.HealthCheckResponse.SERVING)
        self.assertEqual(h.Check(hpb.HealthCheckRequest(service="inference.GRPCInferenceService")).status,
                         hpb.HealthCheckResponse.SERVING)
        self.assertEqual(self.code_of(h.Check, hpb.HealthCheckRequest(service="other"))[0], grpc.StatusCode.NOT_FOUND)
        watch = h.Watch(hpb.HealthCheckRequest(), timeout=10)
        self.assertEqual(next(watch).status, hpb.HealthCheckResponse.SERVING)
        watch.cancel()

    def test_model_config_and_statistics(self):
        cfg = self.stub.ModelConfig(pb.ModelConfigRequest(name="identity")).config
        self.assertEqual((cfg.name, cfg.platform, cfg.backend, cfg.max_batch_size),
                         ("identity", "onnxruntime_onnx", "onnxruntime", 0))
        types = {i.name: i.data_type for i in cfg.input}
        self.assertEqual(types["in_BYTES"], 13)  # TYPE_STRING
        self.assertEqual(types["in_BF16"], 14)
        self.assertEqual(list(cfg.input[0].dims), [-1])
        self.assertEqual(self.code_of(self.stub.ModelConfig, pb.ModelConfigRequest(name="nope"))[0],
                         grpc.StatusCode.NOT_FOUND)
        before = self.stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp")).model_stats[0]
        self.stub.ModelInfer(infer_request("mlp", [("x", np.zeros((3, 64), np.float32))]))
        after = self.stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp")).model_stats[0]
        self.assertEqual(after.inference_stats.success.count, before.inference_stats.success.count + 1)
        self.assertEqual(after.inference_count, before.inference_count + 3)
        names = {s.name for s in self.stub.ModelStatistics(pb.ModelStatisticsRequest()).model_stats}
        self.assertTrue({"mlp", "identity"} <= names)

    def test_model_config_matches_http(self):
        """One protocol-neutral view renders both: GET /v2/models/m/config and ModelConfig agree."""
        from grpc_support import mc
        for model in ("identity", "mlp"):
            st, js = self.srv.json("GET", "/v2/models/%s/config" % model)
            self.assertEqual(st, 200)
            cfg = self.stub.ModelConfig(pb.ModelConfigRequest(name=model)).config
            self.assertEqual((js["name"], js["platform"], js["backend"], js["max_batch_size"]),
                             (cfg.name, cfg.platform, cfg.backend, cfg.max_batch_size))
            self.assertEqual([(i["name"], i["data_type"], i["dims"]) for i in js["input"]],
                             [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input])
            self.assertEqual([(o["name"], o["data_type"], o["dims"], o["label_filename"]) for o in js["output"]],
                             [(o.name, mc.DataType.Name(o.data_type), list(o.dims), o.label_filename)
                              for o in cfg.output])
            self.assertEqual([(g["kind"], g["count"]) for g in js["instance_group"]],
                             [(mc.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in cfg.instance_group])
            self.assertEqual({k: v["string_value"] for k, v in js["parameters"].items()},
                             {k: v.string_value for k, v in cfg.parameters.items()})

    def test_repository_index_load_unload(self):
        idx = {m.name: m for m in self.stub.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        self.assertEqual(idx["mlp"].state, "READY")
        self.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="bytes_fp32"))
        self.assertFalse(self.stub.ModelReady(pb.ModelReadyRequest(name="bytes_fp32")).ready)
        ready = {m.name for m in self.stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models}
        self.assertNotIn("bytes_fp32", ready)
        self.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="bytes_fp32"))
        self.assertTrue(self.stub.ModelReady(pb.ModelReadyRequest(name="bytes_fp32")).ready)
        code, msg = self.code_of(self.stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="nope"))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        req = pb.RepositoryModelLoadRequest(model_name="mlp")
        req.parameters["config"].string_param = "{}"
        code, msg = self.code_of(self.stub.RepositoryModelLoad, req)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("config", msg)

    def test_log_settings(self):
        r = self.stub.LogSettings(pb.LogSettingsRequest())
        self.assertEqual(r.settings["log_verbose_level"].uint32_param, 0)
        self.assertTrue(r.settings["log_info"].bool_param)
        req = pb.LogSettingsRequest()
        req.settings["log_verbose_level"].uint32_param = 1
        r = self.stub.LogSettings(req)
        self.assertEqual(r.settings["log_verbose_level"].uint32_param, 1)
        req = pb.LogSettingsRequest()
        req.settings["log_verbose_level"].uint32_param = 0
        req.settings["log_info"].bool_param = False
        r = self.stub.LogSettings(req)
        self.assertFalse(r.settings["log_info"].bool_param)
        self.assertTrue(r.settings["log_warning"].bool_param)
        req = pb.LogSettingsRequest()
        req.settings["log_info"].bool_param = True
        self.assertTrue(self.stub.LogSettings(req).settings["log_info"].bool_param)
        req = pb.LogSettingsRequest()
        req.settings["log_file"].string_param = "/tmp/x"
        self.assertEqual(self.code_of(self.stub.LogSettings, req)[0], grpc.StatusCode.INVALID_ARGUMENT)

    def test_cuda_shared_memory_unimplemented(self):
        for m, req in (("CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest()),
                       ("CudaSharedMemoryRegister", pb.CudaSharedMemoryRegisterRequest(name="g")),
                       ("CudaSharedMemoryUnregister", pb.CudaSharedMemoryUnregisterRequest())):
            code, msg = self.code_of(getattr(self.stub, m), req)
            self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED, m)
            self.assertIn("CUDA", msg)

    # ---- inference ---------------------------------------------------------------------------------

    def test_infer_mlp_raw_and_id(self):
        x = np.random.rand(4, 64).astype(np.float32)
        req = infer_request("mlp", [("x", x)])
        req.id = "req-42"
        r = self.stub.ModelInfer(req)
        self.assertEqual((r.model_name, r.model_version, r.id), ("mlp", "1", "req-42"))
        self.assertEqual(list(r.outputs[0].shape), [4, 10])
        np.testing.assert_allclose(output(r, "probs"), mlp_reference(x), atol=1e-5)

    ALL = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16",
           "FP32", "FP64", "BYTES")

    def identity_request(self, dt, a, typed):
        """identity's input `dt` = a, every other input empty ([0]); typed: `contents` everywhere except
        FP16/BF16, which travel raw only — those empties come from a zero-byte shared-memory range."""
        from grpc_support import fill_contents
        req = pb.ModelInferRequest(model_name="identity")
        req.outputs.append(pb.ModelInferRequest.InferRequestedOutputTensor(name="out_" + dt))
        for other in self.ALL:
            arr = a if other == dt else np.zeros(0, np.uint16 if other == "BF16" else NP_OF.get(other, np.uint8))
            t = pb.ModelInferRequest.InferInputTensor(name="in_" + other, datatype=other, shape=list(arr.shape))
            if not typed:
                req.raw_input_contents.append(arr.tobytes() if other != "BYTES" else b"")
            elif other in ("FP16", "BF16"):
                t.parameters["shared_memory_region"].string_param = "empty"
                t.parameters["shared_memory_byte_size"].int64_param = 0
            elif other == "BYTES":
                t.contents.bytes_contents.extend([])
            else:
                fill_contents(t, arr)
            req.inputs.append(t)
        return req

    def test_every_datatype_raw_and_typed(self):
        rng = np.random.default_rng(1)
        name = "/osv-grpc-empty-%d" % os.getpid()
        fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_RDWR, 0o600)
        os.ftruncate(fd, 64)
        self.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="empty", key=name,
                                                                                  byte_size=64))
        try:
            for dt in self.ALL[:-1]:
                npt = np.uint16 if dt == "BF16" else NP_OF[dt]
                if dt == "BOOL":
                    a = rng.integers(0, 2, 7).astype(bool)
                elif np.issubdtype(npt, np.integer):
                    info = np.iinfo(npt)
                    a = rng.integers(max(info.min, -1000), min(info.max, 1000), 7).astype(npt)
                else:
                    a = rng.standard_normal(7).astype(npt)
                r = self.stub.ModelInfer(self.identity_request(dt, a, typed=False))
                self.assertEqual((r.outputs[0].datatype, list(r.outputs[0].shape)), (dt, [7]))
                self.assertEqual(r.raw_output_contents[0], a.tobytes(), "%s raw" % dt)
                if dt in ("FP16", "BF16"):  # no typed field: refused, naming why
                    req = self.identity_request("FP32", np.zeros(1, np.float32), typed=True)
                    for t in req.inputs:
                        if t.name == "in_" + dt:
                            t.ClearField("parameters")
                            t.shape[:] = [7]
                            t.contents.fp32_contents.extend([0.0] * 7)
                    code, msg = self.code_of(self.stub.ModelInfer, req)
                    self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
                    self.assertIn("raw_input_contents only", msg)
                    continue
                r = self.stub.ModelInfer(self.identity_request(dt, a, typed=True))
                self.assertEqual(r.raw_output_contents[0], a.tobytes(), "%s typed" % dt)
        finally:
            self.stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name="empty"))
            os.close(fd)
            os.unlink("/dev/shm" + name)

    def test_typed_contents_values(self):
        x = np.random.rand(2, 64).astype(np.float32)
        r = self.stub.ModelInfer(infer_request("mlp", [("x", x)], raw=False))
        np.testing.assert_allclose(output(r, "probs"), mlp_reference(x), atol=1e-5)
        t = tensor("x", x)
        t.contents.fp32_contents.extend([1.0] * 5)
        req = pb.ModelInferRequest(model_name="mlp", inputs=[t])
        code, msg = self.code_of(self.stub.ModelInfer, req)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("fp32_contents has 5 elements", msg)
        t = tensor("x", x)
        t.contents.int_contents.extend([1] * 128)
        code, msg = self.code_of(self.stub.ModelInfer, pb.ModelInferRequest(model_name="mlp", inputs=[t]))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("int_contents", msg)

    def test_bytes_raw_and_typed(self):
        items = [b"hello", b"", b"\x00\xffbin", "caf\u00e9".encode()]
        x = np.arange(3, dtype=np.float32)
        for typed in (False, True):
            req = pb.ModelInferRequest(model_name="bytes_fp32")
            t = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[len(items)])
            tx = tensor("x", x)
            if typed:
                t.contents.bytes_contents.extend(items)
                tx.contents.fp32_contents.extend(x.tolist())
                req.inputs.extend([t, tx])
            else:
                req.inputs.extend([t, tx])
                req.raw_input_contents.extend([bytes_serialize(items), x.tobytes()])
            r = self.stub.ModelInfer(req)
            self.assertEqual(output(r, "text_out"), items)
            self.assertEqual(list(r.outputs[0].shape), [4])
            np.testing.assert_array_equal(output(r, "x_out"), x)

    def test_classification(self):
        x = np.random.rand(2, 64).astype(np.float32)
        req = infer_request("mlp", [("x", x)])
        o = pb.ModelInferRequest.InferRequestedOutputTensor(name="probs")
        o.parameters["classification"].int64_param = 3
        req.outputs.append(o)
        r = self.stub.ModelInfer(req)
        self.assertEqual((r.outputs[0].datatype, list(r.outputs[0].shape)), ("BYTES", [2, 3]))
        got = output(r, "probs")
        ref = mlp_reference(x)
        self.assertEqual(int(got[0].split(b":")[1]), int(np.argmax(ref[0])))
        self.assertEqual(len(got), 6)

    def test_large_tensor_is_received_in_place(self):
        """A 3.9 MB tensor (grpcio sends it in DATA frames of the server's 1 MiB SETTINGS_MAX_FRAME_SIZE): past
        each frame's first read, the server reads the payload straight into the request's slot, so what it
        copies out of its read buffer is a fraction of the tensor — and the answer is right. Before: all of it
        (4 096 027 bytes) was copied."""
        mv = {"model": "mlp"}
        for _ in range(3):
            big = np.random.rand(16000, 64).astype(np.float32)
            m0 = metrics(self.srv)
            r = self.stub.ModelInfer(infer_request("mlp", [("x", big)]))
            m1 = metrics(self.srv)
            np.testing.assert_allclose(output(r, "probs"), mlp_reference(big), atol=1e-5)
            received = metric_sum(m1, "ortserve_copied_bytes_total", reason="grpc_receive", **mv) - \
                metric_sum(m0, "ortserve_copied_bytes_total", reason="grpc_receive", **mv)
            self.assertLess(received, big.nbytes // 4, "the tensor was copied out of the read buffer")

    def test_shared_memory_round_trip_zero_copy(self):
        name = "/osv-grpc-%d" % os.getpid()
        fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, 8192)
            mm = mmap.mmap(fd, 8192)
            x = np.random.rand(2, 64).astype(np.float32)
            mm[0:x.nbytes] = x.tobytes()
            self.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
                name="io", key=name, offset=0, byte_size=8192))
            st = self.stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
            self.assertEqual(st.regions["io"].byte_size, 8192)
            m0 = metrics(self.srv)
            req = pb.ModelInferRequest(model_name="mlp")
            t = tensor("x", x)
            t.parameters["shared_memory_region"].string_param = "io"
            t.parameters["shared_memory_byte_size"].int64_param = x.nbytes
            req.inputs.append(t)
            o = pb.ModelInferRequest.InferRequestedOutputTensor(name="probs")
            o.parameters["shared_memory_region"].string_param = "io"
            o.parameters["shared_memory_byte_size"].int64_param = 80
            o.parameters["shared_memory_offset"].int64_param = 4096
            req.outputs.append(o)
            r = self.stub.ModelInfer(req)
            self.assertEqual(r.outputs[0].parameters["shared_memory_byte_size"].uint64_param, 80)
            got = np.frombuffer(mm[4096:4096 + 80], dtype=np.float32).reshape(2, 10)
            np.testing.assert_allclose(got, mlp_reference(x), atol=1e-5)
            m1 = metrics(self.srv)
            mv = {"model": "mlp"}
            copied = metric_sum(m1, "ortserve_copied_bytes_total", **mv) - \
                metric_sum(m0, "ortserve_copied_bytes_total", **mv)
            received = metric_sum(m1, "ortserve_copied_bytes_total", reason="grpc_receive", **mv) - \
                metric_sum(m0, "ortserve_copied_bytes_total", reason="grpc_receive", **mv)
            self.assertEqual(copied - received, 0, "tensor bytes were copied beyond the receive")
            self.assertLess(received, 512, "only the small message was received")
            # raw inputs: what was copied is the socket-to-slot receive only
            m2 = metrics(self.srv)
            big = np.random.rand(512, 64).astype(np.float32)
            self.stub.ModelInfer(infer_request("mlp", [("x", big)]))
            m3 = metrics(self.srv)
            copied = metric_sum(m3, "ortserve_copied_bytes_total", **mv) - \
                metric_sum(m2, "ortserve_copied_bytes_total", **mv)
            received = metric_sum(m3, "ortserve_copied_bytes_total", reason="grpc_receive", **mv) - \
                metric_sum(m2, "ortserve_copied_bytes_total", reason="grpc_receive", **mv)
            self.assertEqual(copied, received)
            self.assertLess(received, big.nbytes + 256)  # at most once (tensor bytes read in place: none)
            self.stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name="io"))
            code, _ = self.code_of(self.stub.SystemSharedMemoryStatus, pb.SystemSharedMemoryStatusRequest(name="io"))
            self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
            mm.close()
        finally:
            os.close(fd)
            os.unlink("/dev/shm" + name)

    # ---- compressed messages --------------------------------------------------------------------------

    def test_compressed_requests(self):
        """grpc-encoding gzip and deflate (tritonclient.grpc's compression_algorithm): inferences, unary and
        streamed, and a small method answer as uncompressed ones do; the inflating is counted as a copy
        (reason decompress); a message that inflates beyond --grpc-max-message-bytes (4M here) is
        RESOURCE_EXHAUSTED, not memory."""
        before = metrics(self.srv).value("ortserve_copied_bytes_total", model="mlp", reason="decompress")
        rng = np.random.default_rng(15)
        for algo in (grpc.Compression.Gzip, grpc.Compression.Deflate):  # (grpcio sends a message plain when
            x = rng.integers(0, 4, (2, 64)).astype(np.float32)          # compressing would not shrink it)
            r = self.stub.ModelInfer(infer_request("mlp", [("x", x)]), compression=algo)
            np.testing.assert_allclose(output(r, "probs"), mlp_reference(x), atol=1e-5)
            xs = [rng.integers(0, 4, (1, 64)).astype(np.float32) for _ in range(20)]
            answers = list(self.stub.ModelStreamInfer(iter([infer_request("mlp", [("x", v)]) for v in xs]),
                                                      compression=algo, timeout=30))
            self.assertEqual(sorted(a.error_message for a in answers), [""] * 20)
            md = self.stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), compression=algo)
            self.assertEqual(md.name, "mlp")
        m = wait_until(lambda: (lambda m: m if m.value("ortserve_copied_bytes_total", model="mlp",
                                                        reason="decompress") > before else None)(metrics(self.srv)),
                       10, "decompressed bytes counted")
        tensors = 2 * (2 * 64 * 4 + 20 * 64 * 4)  # both algorithms: the unary call's and the streams' inputs
        self.assertGreaterEqual(m.value("ortserve_copied_bytes_total", model="mlp", reason="decompress") - before,
                                2 * tensors)  # inflated, then split into the aligned slot
        bomb = infer_request("identity", [("in_FP32", np.zeros(2 ** 20 + 10, np.float32))])  # 4 MiB of zeros
        code, msg = self.code_of(self.stub.ModelInfer, bomb, compression=grpc.Compression.Gzip)
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("--grpc-max-message-bytes", msg)
        self.assertServing()

    # ---- streaming ------------------------------------------------------------------------------------

    def test_stream_hundreds_in_flight_with_errors(self):
        n = 300
        xs = [np.random.rand(1, 64).astype(np.float32) for _ in range(n)]

        def reqs():
            for i in range(n):
                if i % 10 == 7:
                    r = infer_request("nope", [("x", xs[i])])
                else:
                    r = infer_request("mlp", [("x", xs[i])])
                r.id = str(i)
                yield r
        ok = errs = 0
        seen = set()
        for resp in self.stub.ModelStreamInfer(reqs(), timeout=60):
            if resp.error_message:
                errs += 1
                self.assertIn("nope", resp.error_message)
                continue
            i = int(resp.infer_response.id)
            seen.add(i)
            np.testing.assert_allclose(output(resp.infer_response, "probs"), mlp_reference(xs[i]), atol=1e-5)
            ok += 1
        self.assertEqual((ok, errs), (270, 30))
        self.assertEqual(len(seen), 270)
        self.assertServing()

    def test_stream_load_unload_while_streaming(self):
        stop = threading.Event()
        results = []

        def reqs():
            i = 0
            while not stop.is_set() and i < 2000:
                r = pb.ModelInferRequest(model_name="bytes_fp32")
                r.inputs.extend([pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1]),
                                 tensor("x", np.ones(2, np.float32))])
                r.raw_input_contents.extend([bytes_serialize([b"a"]), np.ones(2, np.float32).tobytes()])
                yield r
                i += 1
                time.sleep(0.001)  # paces the stream only; every assertion waits on responses
        call = self.stub.ModelStreamInfer(reqs(), timeout=60)

        def consume():
            for resp in call:
                results.append(resp.error_message)
        th = threading.Thread(target=consume)
        th.start()
        wait_until(lambda: len(results) >= 50, 30, "50 stream answers")
        self.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="bytes_fp32"))
        n_unloaded = len(results)
        wait_until(lambda: any(results[n_unloaded:]), 30, "an error answer while unloaded")
        self.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="bytes_fp32"))
        n_loaded = len(results)
        wait_until(lambda: len(results) > n_loaded + 20 and results[-1] == "", 30, "answers after reload")
        stop.set()
        th.join(30)
        self.assertFalse(th.is_alive())
        errors = [e for e in results if e]
        self.assertTrue(errors and all("bytes_fp32" in e for e in errors), errors[:3])
        self.assertServing()

    # ---- deadlines and cancellation -------------------------------------------------------------------

    def slow_request(self, iters):
        req = pb.ModelInferRequest(model_name="slow")
        x = np.zeros((1, 256), np.float32)
        req.inputs.extend([tensor("x", x), tensor("iters", np.array(iters, np.int64))])
        req.raw_input_contents.extend([x.tobytes(), np.array(iters, np.int64).tobytes()])
        return req

    def test_deadline_grpc_timeout_and_parameter(self):
        t0 = time.monotonic()
        code, msg = self.code_of(self.stub.ModelInfer, self.slow_request(10 ** 7), timeout=0.3)
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - t0, 5)
        req = self.slow_request(10 ** 7)
        req.parameters["timeout"].int64_param = 200000  # µs
        t0 = time.monotonic()
        code, msg = self.code_of(self.stub.ModelInfer, req, timeout=30)
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertServing()

    def test_cancel_terminates_the_run(self):
        before = metric_sum(metrics(self.srv), "ortserve_inflight_requests")
        fut = self.stub.ModelInfer.future(self.slow_request(10 ** 7), timeout=60)
        wait_until(lambda: metric_sum(metrics(self.srv), "ortserve_inflight_requests") > before, 10,
                   "the slow request to be in flight")
        fut.cancel()
        wait_until(lambda: metric_sum(metrics(self.srv), "ortserve_inflight_requests") == before, 10,
                   "the canceled run to end")
        self.assertServing()

    def test_sequence_parameters_refused(self):
        req = infer_request("mlp", [("x", np.zeros((1, 64), np.float32))], sequence_id=5)
        code, msg = self.code_of(self.stub.ModelInfer, req)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("sequence", msg)
        req = infer_request("mlp", [("x", np.zeros((1, 64), np.float32))], priority=1)
        self.assertEqual(len(self.stub.ModelInfer(req).outputs), 1)

    # ---- malformed messages ---------------------------------------------------------------------------

    def test_malformed_messages(self):
        ch = self.srv.channel()
        x = np.zeros((1, 64), np.float32).tobytes()
        inp = field(1, 2, b"x") + field(2, 2, b"FP32") + field(3, 2, varint(1) + varint(64))
        good = field(1, 2, b"mlp") + field(5, 2, inp) + field(7, 2, x)
        self.assertEqual(len(raw_call(ch, "ModelInfer", good)) > 0, True)
        IA, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
        cases = [
            ("truncated protobuf", good[:-10], IA),
            ("truncated tag", good + b"\x80", IA),
            ("length past the end", field(1, 2, b"mlp") + b"\x2a\xff\x01" + inp, IA),
            ("model_name as varint", b"\x08\x05" + good[5:], IA),
            ("raw_input_contents as varint", field(1, 2, b"mlp") + field(5, 2, inp) + b"\x38\x01", IA),
            ("group wire type", field(1, 2, b"mlp") + b"\x0b", IA),
            ("field number 0", b"\x02\x00" + good, IA),
            ("inputs as varint", field(1, 2, b"mlp") + b"\x28\x01", IA),
            ("two raw for one input", good + field(7, 2, x), IA),
            ("raw without inputs", field(1, 2, b"mlp") + field(7, 2, x), IA),
            ("raw size disagrees with shape", field(1, 2, b"mlp") + field(5, 2, inp) + field(7, 2, x[:-4]), IA),
            ("shape overflows", field(1, 2, b"mlp") + field(5, 2, field(1, 2, b"x") + field(2, 2, b"FP32") +
                                                             field(3, 2, varint(2 ** 62) + varint(2 ** 62))) +
             field(7, 2, x), IA),
            ("negative dim", field(1, 2, b"mlp") + field(5, 2, field(1, 2, b"x") + field(2, 2, b"FP32") +
                                                          field(3, 2, varint(2 ** 64 - 1) + varint(64))), IA),
            ("too many dims", field(1, 2, b"mlp") + field(5, 2, field(1, 2, b"x") + field(2, 2, b"FP32") +
                                                           field(3, 2, varint(1) * 40)), IA),
            ("unknown datatype", field(1, 2, b"mlp") + field(5, 2, field(1, 2, b"x") + field(2, 2, b"FP8") +
                                                              field(3, 2, varint(1) + varint(64))) +
             field(7, 2, x), IA),
            ("wrong datatype", field(1, 2, b"mlp") + field(5, 2, field(1, 2, b"x") + field(2, 2, b"INT32") +
                                                            field(3, 2, varint(1) + varint(64))) +
             field(7, 2, x), IA),
            ("unknown input", field(1, 2, b"mlp") + field(5, 2, field(1, 2, b"y") + field(2, 2, b"FP32") +
                                                           field(3, 2, varint(1) + varint(64))) +
             field(7, 2, x), IA),
            ("missing input", field(1, 2, b"mlp"), IA),
            ("unknown model", field(1, 2, b"zzz") + field(5, 2, inp) + field(7, 2, x), NF),
            ("empty model name", field(5, 2, inp) + field(7, 2, x), NF),
            ("bad version", field(1, 2, b"mlp") + field(2, 2, b"v1") + field(5, 2, inp) + field(7, 2, x), IA),
            ("unknown version", field(1, 2, b"mlp") + field(2, 2, b"7") + field(5, 2, inp) + field(7, 2, x), NF),
            ("unknown output", good + field(6, 2, field(1, 2, b"nope")), IA),
            ("output twice", good + field(6, 2, field(1, 2, b"probs")) * 2, IA),
            ("classification zero", good + field(6, 2, field(1, 2, b"probs") + field(2, 2, field(1, 2, b"classification") +
                                                                                 field(2, 2, b"\x10\x00"))), IA),
            ("unregistered shm", field(1, 2, b"mlp") + field(5, 2, inp + field(4, 2, field(1, 2, b"shared_memory_region") +
                                                                                field(2, 2, field(3, 2, b"r")))), IA),
            ("raw and contents", field(1, 2, b"mlp") + field(5, 2, inp + field(5, 2, b"")) + field(7, 2, x), IA),
            ("timeout negative", good + field(4, 2, field(1, 2, b"timeout") + field(2, 2, b"\x10" + varint(2 ** 64 - 5))), IA),
            ("parameter map entry as varint", good + b"\x20\x01", IA),
            ("contents count", field(1, 2, b"mlp") + field(5, 2, inp + field(5, 2, field(6, 2, b"\x00" * 8))), IA),
        ]
        for what, payload, want in cases:
            code, msg = self.code_of(raw_call, ch, "ModelInfer", payload)
            if what == "unregistered shm":
                want = grpc.StatusCode.INVALID_ARGUMENT if code == IA else NF
            self.assertEqual(code, want, "%s: %s %s" % (what, code, msg))
            self.assertTrue(msg, what)
        # framing-level: an unknown method, a second message on a unary call
        self.assertEqual(self.code_of(raw_call, ch, "NoSuchMethod", b"")[0], grpc.StatusCode.UNIMPLEMENTED)
        self.assertEqual(self.code_of(raw_call, ch, "ModelMetadata", b"\x0a\x05")[0], IA)
        self.assertServing()

    def test_message_limit(self):
        big = np.zeros((20000, 64), np.float32)  # 5 MB > --grpc-max-message-bytes 4M
        code, msg = self.code_of(self.stub.ModelInfer, infer_request("mlp", [("x", big)]))
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("limit", msg)
        self.assertServing()

    def test_http1_on_grpc_port(self):
        s = socket.create_connection(("127.0.0.1", self.srv.grpc_port), timeout=10)
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 505"), data[:80])
        self.assertServing()


class GrpcQueueFull(unittest.TestCase):
    """A full model queue answers UNAVAILABLE with the request layer's message (it was once a bare
    'OSV_EBUSY'): on a stream as error_message, on a unary call as the status."""

    def test_queue_full_message(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(tmp, {"slow": "slow.onnx"}, configs={"slow": {"deadline_ms": 0, "max_queue": 1}})
            srv = GrpcServer(repo, "--inline-threshold-us", "0", "--workers", "1", "--deadline-ms", "0")
            try:
                stub = srv.stub()
                x = np.zeros((1, 256), np.float32)

                def reqs():
                    for _ in range(6):
                        r = pb.ModelInferRequest(model_name="slow")
                        r.inputs.extend([tensor("x", x), tensor("iters", np.array(200000, np.int64))])
                        r.raw_input_contents.extend([x.tobytes(), np.array(200000, np.int64).tobytes()])
                        yield r
                errors = [r.error_message for r in stub.ModelStreamInfer(reqs(), timeout=120) if r.error_message]
                self.assertTrue(errors, "6 slow requests at once never filled a queue of 1")
                for e in errors:
                    self.assertIn("too many queued requests", e)
            finally:
                self.assertEqual(srv.finish(), 0)


def slow_request(iters, id=""):
    r = pb.ModelInferRequest(model_name="slow", id=id)
    x = np.zeros((1, 256), np.float32)
    r.inputs.extend([tensor("x", x), tensor("iters", np.array(iters, np.int64))])
    r.raw_input_contents.extend([x.tobytes(), np.array(iters, np.int64).tobytes()])
    return r


class GrpcInflightLimit(unittest.TestCase):
    """Over --grpc-max-inflight, the request beyond the limit fails alone: a unary call ends UNAVAILABLE
    with gRPC's retry pushback (grpc-retry-pushback-ms) in its trailers; on ModelStreamInfer that request
    gets an error answer naming it (infer_response.id) with parameters.retry_after_ms, and the stream goes
    on serving the others and what is sent after."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"slow": "slow.onnx"}, configs={"slow": {"deadline_ms": 0}})
        cls.srv = GrpcServer(repo, "--grpc-max-inflight", "2", "--inline-threshold-us", "0", "--workers", "1",
                             "--deadline-ms", "0")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %s" % rc

    def test_unary_beyond_the_limit(self):
        stub = self.srv.stub()  # one channel: the calls share one connection
        futs = [stub.ModelInfer.future(slow_request(100000), timeout=60) for _ in range(4)]  # ~0.3 s each
        ok, refused = 0, []
        for f in futs:
            try:
                self.assertEqual(len(f.result().outputs), 1)
                ok += 1
            except grpc.RpcError as e:
                refused.append(e)
        self.assertGreaterEqual(ok, 1)
        self.assertTrue(refused, "4 slow calls at once never went beyond a limit of 2")
        for e in refused:
            self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("--grpc-max-inflight", e.details())
            self.assertIn(("grpc-retry-pushback-ms", "1000"), [(m.key, m.value) for m in e.trailing_metadata()])

    def test_stream_goes_on(self):
        answered = threading.Event()
        later = queue.Queue()

        def reqs():
            for i in range(8):  # at once: two run, the others arrive while they do
                yield slow_request(100000, str(i))
            answered.wait(60)  # then, once all eight have their answer, one more on the same stream
            yield slow_request(1000, "later")
        answers = {}
        for resp in self.srv.stub().ModelStreamInfer(reqs(), timeout=120):
            rid = resp.infer_response.id
            self.assertNotIn(rid, answers)
            answers[rid] = resp
            if len(answers) == 8:
                answered.set()
            if rid == "later":
                later.put(resp)
        self.assertEqual(set(answers), {str(i) for i in range(8)} | {"later"})
        refused = [r for r in answers.values() if r.error_message]
        self.assertTrue(refused, "8 slow requests at once never went beyond a limit of 2")
        self.assertGreaterEqual(8 - len(refused), 2)
        for r in refused:
            self.assertIn("--grpc-max-inflight", r.error_message)
            self.assertEqual(r.infer_response.parameters["retry_after_ms"].int64_param, 1000)
        resp = later.get_nowait()
        self.assertEqual(resp.error_message, "")
        self.assertEqual(len(resp.infer_response.outputs), 1)


class GrpcHealthWatch(unittest.TestCase):
    """grpc.health.v1.Health/Watch pushes every change: a model's service goes NOT_SERVING when it is
    unloaded and SERVING when loaded again, the server's ("") with it when no model is left; an unknown
    service is SERVICE_UNKNOWN (Check: NOT_FOUND); when the server drains, every watcher hears NOT_SERVING
    and its stream ends UNAVAILABLE."""

    def test_watch_pushes_changes(self):
        S, N, U = (hpb.HealthCheckResponse.SERVING, hpb.HealthCheckResponse.NOT_SERVING,
                   hpb.HealthCheckResponse.SERVICE_UNKNOWN)
        with tempfile.TemporaryDirectory() as tmp:
            srv = GrpcServer(make_repo(tmp, {"mlp": "mlp.onnx"}))
            try:
                h, stub = srv.health(), srv.stub()
                server, model, unknown = (h.Watch(hpb.HealthCheckRequest(service=s), timeout=60)
                                          for s in ("", "mlp", "nope"))
                self.assertEqual((next(server).status, next(model).status, next(unknown).status), (S, S, U))
                self.assertEqual(h.Check(hpb.HealthCheckRequest(service="mlp")).status, S)
                self.assertEqual(self.code_of(h.Check, hpb.HealthCheckRequest(service="nope")),
                                 grpc.StatusCode.NOT_FOUND)
                stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="mlp"))
                self.assertEqual((next(model).status, next(server).status), (N, N))
                self.assertEqual(h.Check(hpb.HealthCheckRequest(service="mlp")).status, N)
                stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="mlp"))
                self.assertEqual((next(model).status, next(server).status), (S, S))
                srv.proc.send_signal(signal.SIGTERM)  # the drain: each stream hears it, then ends
                for w in (server, model, unknown):
                    self.assertEqual(next(w).status, N)
                    with self.assertRaises(grpc.RpcError) as cm:
                        next(w)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
                    self.assertIn("shutting down", cm.exception.details())
            finally:
                self.assertEqual(srv.finish(), 0)

    def code_of(self, fn, *a):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*a)
        return cm.exception.code()


class GrpcObservabilityAndAuth(unittest.TestCase):
    """The same records as HTTP: an access-log line with protocol "grpc", the method, the gRPC status and
    the caller's trace id (traceparent metadata); statistics shared with HTTP; bearer tokens required on
    all but the health methods."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        tokens = os.path.join(cls.tmp.name, "tokens")
        with open(tokens, "w") as f:
            f.write("sekrit-token\n")
        os.chmod(tokens, 0o600)
        repo = make_repo(os.path.join(cls.tmp.name, "repo"), {"mlp": "mlp.onnx"})
        cls.srv = GrpcServer(repo, "--auth-token-file", tokens)
        cls.stub = cls.srv.stub()
        cls.md = [("authorization", "Bearer sekrit-token")]

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %s" % rc

    def test_tokens(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest()).live)  # health: no token needed
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest()).ready)
        for md in (None, [("authorization", "Bearer wrong")]):
            with self.assertRaises(grpc.RpcError) as cm:
                self.stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), metadata=md)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            self.assertIn("authorization", cm.exception.details())
        self.assertEqual(self.stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), metadata=self.md).name, "mlp")
        with self.assertRaises(grpc.RpcError) as cm:  # this server has no --allow-shm
            self.stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(), metadata=self.md)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("--allow-shm", cm.exception.details())

    def test_access_log_trace_and_shared_statistics(self):
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        x = np.random.rand(1, 64).astype(np.float32)
        before = self.stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp"), metadata=self.md)
        self.stub.ModelInfer(infer_request("mlp", [("x", x)]),
                             metadata=self.md + [("traceparent", "00-%s-00f067aa0ba902b7-01" % trace)])
        rec = wait_access(self.srv, lambda r: r.get("trace_id") == trace, 10, "the gRPC call's access line")
        self.assertEqual((rec["protocol"], rec["method"], rec["status"], rec["model"]), ("grpc", "ModelInfer", 0, "mlp"))
        self.assertEqual(rec["path"], "/inference.GRPCInferenceService/ModelInfer")

        # one HTTP inference: the statistics count both fronts
        body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
        st, _ = self.srv.json("POST", "/v2/models/mlp/infer", body, headers={"Authorization": "Bearer sekrit-token"})
        self.assertEqual(st, 200)
        after = wait_until(lambda: (lambda a: a if a.model_stats[0].inference_stats.success.count >=
                                    before.model_stats[0].inference_stats.success.count + 2 else None)(
            self.stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp"), metadata=self.md)), 10,
            "both inferences in the statistics")
        self.assertEqual(after.model_stats[0].inference_stats.success.count,
                         before.model_stats[0].inference_stats.success.count + 2)


class GrpcWarmConnectionAllocatesNothing(unittest.TestCase):
    """As over HTTP (test_server_hardening.py): on one warm gRPC connection, N unary calls and a stream
    of N requests add no heap allocation in ortserve's own code, nghttp2's included (its allocator hooks
    count through osv_malloc; the connection recycles calls, streams and nghttp2's small blocks)."""

    N = 200

    def test_no_allocations(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = GrpcServer(make_repo(tmp, {"mlp": "mlp.onnx"}), "--loops", "1")
            try:
                stub = srv.stub()
                x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
                conn = srv.conn()

                def allocations():
                    st, _, body = srv.request("GET", "/metrics", conn=conn)
                    self.assertEqual(st, 200)
                    return int(re.search(rb"^ortserve_heap_allocations_total (\d+)$", body, re.M).group(1))

                def stream(n):
                    """n requests on one stream, each sent once the previous one was answered (the
                    steady state of one request in flight: more at once may take new calls)."""
                    answered = queue.Queue()

                    def reqs():
                        for i in range(n):
                            if i:
                                answered.get(timeout=30)
                            yield infer_request("mlp", [("x", x)])
                    out = []
                    for r in stub.ModelStreamInfer(reqs(), timeout=60):
                        out.append(r)
                        answered.put(1)
                    return out
                for _ in range(10):  # warm: buffers, arenas, recycled calls and streams, nghttp2's blocks
                    stub.ModelInfer(infer_request("mlp", [("x", x)]))
                    stream(3)
                a = [allocations() for _ in range(4)]
                per_scrape = a[1] - a[0]
                self.assertEqual([a[2] - a[1], a[3] - a[2]], [per_scrape] * 2, "a scrape's own allocations vary")
                before = allocations()
                for _ in range(self.N):
                    stub.ModelInfer(infer_request("mlp", [("x", x)]))
                self.assertEqual(allocations() - before, per_scrape, "unary calls allocated")
                before = allocations()
                self.assertEqual(len(stream(self.N)), self.N)
                self.assertEqual(allocations() - before, per_scrape, "a stream's requests allocated")
            finally:
                self.assertEqual(srv.finish(), 0)


class GrpcCancelQueued(unittest.TestCase):
    """A call canceled while its request waits in the model's queue never runs: with one worker busy
    on a short run, a queued run that would take about 45 s is canceled by the client; the worker then
    finds it canceled and the server is idle again in seconds."""

    def test_cancel_queued(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(tmp, {"slow": "slow.onnx"}, configs={"slow": {"deadline_ms": 0}})
            srv = GrpcServer(repo, "--inline-threshold-us", "0", "--workers", "1", "--deadline-ms", "0")
            try:
                stub = srv.stub()
                x = np.zeros((1, 256), np.float32)

                def req(iters):
                    r = pb.ModelInferRequest(model_name="slow")
                    r.inputs.extend([tensor("x", x), tensor("iters", np.array(iters, np.int64))])
                    r.raw_input_contents.extend([x.tobytes(), np.array(iters, np.int64).tobytes()])
                    return r
                base = metrics(srv).value("ortserve_inflight_requests")
                a = stub.ModelInfer.future(req(200000), timeout=60)  # about a second
                wait_until(lambda: metrics(srv).value("ortserve_queue_depth") == 0 and
                           metrics(srv).value("ortserve_inflight_requests") >= base + 1, 10, "A running")
                b = stub.ModelInfer.future(req(10 ** 7), timeout=120)  # ~45 s if it ever ran
                wait_until(lambda: metrics(srv).value("ortserve_queue_depth") >= 1, 10, "B queued")
                b.cancel()
                t0 = time.monotonic()
                self.assertEqual(len(a.result(timeout=60).outputs), 1)
                wait_until(lambda: metrics(srv).value("ortserve_inflight_requests") <= base, 20,
                           "the canceled request to leave")
                self.assertLess(time.monotonic() - t0, 20)
                self.assertEqual(metrics(srv).value("ortserve_queue_depth"), 0)
            finally:
                self.assertEqual(srv.finish(), 0)


class GrpcBatching(unittest.TestCase):
    """The dynamic batcher serves gRPC as it serves HTTP: four concurrent ModelInfer calls to a model with
    preferred_batch_size [4] and a 2 s delay run as one batch of 4 at once (Triton's batch statistics
    show it), and each answer is that request's own rows, equal to the model run alone."""

    def test_calls_form_one_batch(self):
        cfg = {"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [4],
                                                         "max_queue_delay_microseconds": 2000000},
               "instance_group": [{"count": 1}]}
        with tempfile.TemporaryDirectory() as tmp:
            srv = GrpcServer(make_repo(tmp, {"mlp": "mlp.onnx"}, configs={"mlp": cfg}), "--deadline-ms", "10000")
            try:
                stub = srv.stub()
                xs = [np.random.default_rng(40 + i).standard_normal((1, 64)).astype(np.float32) for i in range(4)]
                t0 = time.monotonic()
                futs = [stub.ModelInfer.future(infer_request("mlp", [("x", x)]), timeout=30) for x in xs]
                outs = [f.result() for f in futs]
                self.assertLess(time.monotonic() - t0, 1.5)  # the preferred size went at once, not after 2 s
                for x, r in zip(xs, outs):
                    np.testing.assert_allclose(output(r, "probs"), mlp_reference(x), atol=1e-5)
                st, body = srv.json("GET", "/v2/models/mlp/stats")
                self.assertEqual(st, 200, body)
                batches = {b["batch_size"]: b["compute_infer"]["count"] for b in body["model_stats"][0]["batch_stats"]}
                self.assertEqual(batches, {4: 1}, body)
                # zero-copy batching: each call's raw_input_contents went straight into its rows of the
                # forming batch, which ran on them in place — nothing gathered
                self.assertEqual(metrics(srv).value("ortserve_copied_bytes_total", model="mlp", reason="batch"), 0)
            finally:
                self.assertEqual(srv.finish(), 0)

    def test_early_build_undone(self):
        """What the early build cannot take is built at the message's end as before: a message whose
        `outputs` field comes after raw_input_contents (valid protobuf, unlike what encoders write) is
        answered correctly, its payload moved out of the rows (counted as `batch`); a payload of a size the
        shape does not give is refused naming the sizes, and the server serves on."""
        cfg = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 1000}}
        with tempfile.TemporaryDirectory() as tmp:
            srv = GrpcServer(make_repo(tmp, {"mlp": "mlp.onnx"}, configs={"mlp": cfg}))
            try:
                ch = srv.channel()
                x = np.random.default_rng(50).standard_normal((1, 64)).astype(np.float32)
                inp = field(1, 2, b"x") + field(2, 2, b"FP32") + field(3, 2, varint(1) + varint(64))
                late = field(1, 2, b"mlp") + field(5, 2, inp) + field(7, 2, x.tobytes()) + field(6, 2, field(1, 2, b"probs"))
                r = pb.ModelInferResponse.FromString(raw_call(ch, "ModelInfer", late))
                np.testing.assert_allclose(output(r, "probs"), mlp_reference(x), atol=1e-5)
                self.assertEqual(metrics(srv).value("ortserve_copied_bytes_total", model="mlp", reason="batch"),
                                 x.nbytes)
                short = field(1, 2, b"mlp") + field(5, 2, inp) + field(7, 2, x.tobytes()[:100])
                with self.assertRaises(grpc.RpcError) as e:
                    raw_call(ch, "ModelInfer", short)
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("100", e.exception.details())
                r = srv.stub().ModelInfer(infer_request("mlp", [("x", x)]))
                np.testing.assert_allclose(output(r, "probs"), mlp_reference(x), atol=1e-5)
            finally:
                self.assertEqual(srv.finish(), 0)


class GrpcPortOptions(unittest.TestCase):
    """--grpc-port: a port another process listens on stops start-up (the transport's probe, before the
    models load); -1 turns gRPC off; out-of-range values are usage errors."""

    def run_serve(self, repo, *args):
        from server import BIN
        p = subprocess.run([BIN, "serve", "--model-repository", repo, "--port", "0", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        return p.returncode, p.stdout.decode(errors="replace")

    def test_port_in_use_and_range(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(tmp, {"mlp": "mlp.onnx"})
            busy = socket.socket()
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            try:
                rc, out = self.run_serve(repo, "--grpc-port", str(busy.getsockname()[1]))
                self.assertEqual(rc, 1, out)
                self.assertIn("address already in use", out)
            finally:
                busy.close()
            for bad in ("-2", "65536", "x"):
                rc, out = self.run_serve(repo, "--grpc-port", bad)
                self.assertEqual(rc, 2, out)
                self.assertIn("--grpc-port", out)

    def test_on_and_off(self):
        from server import Server
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(os.path.join(tmp, "r"), {"mlp": "mlp.onnx"})
            srv = GrpcServer(repo)
            try:  # the start-up line names the gRPC port
                self.assertIn('"grpc_port":%d' % srv.grpc_port, srv.logs())
            finally:
                self.assertEqual(srv.finish(), 0)
            pf = os.path.join(tmp, "gport")
            srv = Server(repo, "--grpc-port", "-1", "--grpc-port-file", pf)
            try:
                self.assertEqual(srv.request("GET", "/v2/health/ready")[0], 200)
                self.assertFalse(os.path.exists(pf), "a gRPC port file was written with gRPC off")
                self.assertNotIn('"grpc_port"', srv.logs())
            finally:
                self.assertEqual(srv.finish(), 0)


if __name__ == "__main__":
    unittest.main()
