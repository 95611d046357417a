#!/usr/bin/env python3
"""test_triton_repo.py — a Triton model repository (config.pbtxt, several versions) served unchanged.

Repositories are written the way Triton's documentation shows them (docs/user_guide/model_configuration.md,
model_repository.md): config.pbtxt with max_batch_size, inputs and outputs with dims and reshape, label
files, version policies, instance groups, parameters of the ONNX Runtime backend, warm-up samples,
dynamic batching and the response cache. Each test checks what a client sees over HTTP: shapes in
metadata, the completed config (GET .../config, Triton's JSON form), outputs against numpy, which version
answers, and load failures that name the file, line and field while the other models keep serving.

Run: OSV_BINARY_DIR=build/release /usr/bin/python3 tests/e2e/test_triton_repo.py [Class.test]"""
import json
import re
import os
import shutil
import struct
import sys
import tempfile
import threading
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obs_support import log_records, metrics  # noqa: E402
from server import (MODELS, Server, binary_body, link, mlp_reference, split_binary, stats_of,  # noqa: E402
                    slow_iters, wait_until)

LABELS = "".join("class_%d\n" % i for i in range(10))


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w" if isinstance(text, str) else "wb") as f:
        f.write(text)


def model(root, name, onnx, versions=(1,), config=None, files=None, filename="model.onnx"):
    """<root>/<name>/<v>/<filename> for each version, config.pbtxt and other files."""
    for v in versions:
        link(os.path.join(MODELS, onnx), os.path.join(root, name, str(v), filename))
    if config is not None:
        write(root, "%s/config.pbtxt" % name, config)
    for rel, text in (files or {}).items():
        write(root, "%s/%s" % (name, rel), text)


def string_model(path):
    """An ONNX model echoing one BYTES input [N, 1] (written with the onnx package)."""
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Identity", ["text"], ["text_out"])], "echo",
                          [helper.make_tensor_value_info("text", TensorProto.STRING, ["N", 1])],
                          [helper.make_tensor_value_info("text_out", TensorProto.STRING, ["N", 1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(m, path)


def raw_request(srv, name, body):
    return srv.request("POST", "/v2/models/%s/infer" % name, body, {"Inference-Header-Content-Length": "0"})


def read_text(path):
    with open(path) as f:
        return f.read()


def events(srv, kind):
    return [r for r in log_records(srv) if r.get("event") == kind]


def infer(srv, name, inputs, version=None, outputs=None):
    path = "/v2/models/%s%s/infer" % (name, "" if version is None else "/versions/%d" % version)
    req = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": dt, "data": a.ravel().tolist()}
                      for n, dt, a in inputs]}
    if outputs:
        req["outputs"] = outputs
    return srv.json("POST", path, req)


MLP_BATCHED = """
# the MLP of tests/e2e as Triton's documentation writes a batching model
name: "mlp_batched"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "x"
    data_type: TYPE_FP32
    dims: [ 64 ]
  }
]
output [
  {
    name: "probs"
    data_type: TYPE_FP32
    dims: [ 10 ]
    label_filename: "mlp_labels.txt"
  }
]
instance_group [ { count: 3, kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
parameters: { key: "execution_mode" value: { string_value: "0" } }
optimization { graph { level: 1 } }
"""

MLP_RESHAPE = """
backend: "onnxruntime"
max_batch_size: 4
input [ { name: "x", data_type: TYPE_FP32, dims: [ 8, 8 ], reshape: { shape: [ 64 ] } } ]
output [ { name: "probs", data_type: TYPE_FP32, dims: [ 2, 5 ], reshape: { shape: [ 10 ] } } ]
"""


DEFAULTS = """
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] },
        { name: "w" data_type: TYPE_FP32 dims: [ 4 ] optional: true } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
"""


class Served(unittest.TestCase):
    """One server over a repository of Triton-configured models."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        r = cls.tmp.name
        model(r, "mlp_batched", "mlp.onnx", config=MLP_BATCHED, files={"mlp_labels.txt": LABELS})
        model(r, "mlp_reshape", "mlp.onnx", config=MLP_RESHAPE)
        # max_batch_size 0: the dims are the full shape, and nothing is a batch row.
        model(r, "mlp_nobatch", "mlp.onnx", config='max_batch_size: 0\n'
              'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 64 ] } ]\n'
              'output [ { name: "probs" data_type: TYPE_FP32 dims: [ -1, 10 ] } ]\n')
        # A minimal config: Triton's ONNX Runtime backend completes everything else from the model.
        model(r, "scale_auto", "scale2x.onnx", config='platform: "onnxruntime_onnx"\n')
        model(r, "mlp_auto", "mlp.onnx", config="")
        model(r, "mlp_named_file", "mlp.onnx", config='default_model_filename: "net.onnx"\n', filename="net.onnx")
        model(r, "batcher", "mlp.onnx", config="max_batch_size: 4\ndynamic_batching { max_queue_delay_microseconds: "
                                                "100 }\nresponse_cache { enable: true }\n")
        # Versions 1..3 of the same model, under each policy.
        for name, policy in (("v_default", ""), ("v_latest2", "version_policy: { latest: { num_versions: 2 } }"),
                             ("v_all", "version_policy: { all { } }"),
                             ("v_specific", "version_policy: { specific: { versions: [ 1, 3 ] } }")):
            model(r, name, "scale2x.onnx", versions=(1, 2, 3), config=policy + "\n")
        # A model without config.pbtxt keeps ortserve's own rules: every version, full shapes.
        model(r, "native", "mlp.onnx", versions=(1, 2))
        # One BYTES input, echoed: Triton's raw binary request takes the whole body as its one element.
        string_model(os.path.join(r, "echo", "1", "model.onnx"))
        write(r, "echo/config.pbtxt", 'max_batch_size: 4\ninput [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
                                      'output [ { name: "text_out" data_type: TYPE_STRING dims: [ 1 ] } ]\n')
        # An optional input: w is an initializer with a default the request may override (ONNX IR >= 4).
        model(r, "defaults", "defaults.onnx", config=DEFAULTS)
        model(r, "defaults_auto", "defaults.onnx")
        # b is marked optional, but the model has no default for it: a request without it is the client's error.
        model(r, "needs_b", "dynamic.onnx", config='input [ { name: "a" data_type: TYPE_FP32 dims: [ -1, -1 ] },\n'
              '        { name: "b" data_type: TYPE_FP32 dims: [ -1, -1 ] optional: true } ]\n')
        cls.srv = Server(r)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, rc

    def meta(self, name, version=None):
        st, m = self.srv.json("GET", "/v2/models/%s%s" % (name, "" if version is None else "/versions/%d" % version))
        self.assertEqual(st, 200, m)
        return m

    def config(self, name):
        st, c = self.srv.json("GET", "/v2/models/%s/config" % name)
        self.assertEqual(st, 200, c)
        return c

    def test_batching_model_shapes_config_and_outputs(self):
        m = self.meta("mlp_batched")
        self.assertEqual([(t["name"], t["datatype"], t["shape"]) for t in m["inputs"]], [("x", "FP32", [-1, 64])])
        self.assertEqual([(t["name"], t["shape"]) for t in m["outputs"]], [("probs", [-1, 10])])
        c = self.config("mlp_batched")
        self.assertEqual((c["name"], c["platform"], c["backend"], c["max_batch_size"]),
                         ("mlp_batched", "onnxruntime_onnx", "onnxruntime", 8))
        self.assertEqual((c["input"][0]["dims"], c["output"][0]["dims"]), ([64], [10]))
        self.assertEqual(c["output"][0]["label_filename"], "mlp_labels.txt")
        self.assertEqual(c["version_policy"], {"latest": {"num_versions": 1}})
        self.assertEqual([(g["kind"], g["count"]) for g in c["instance_group"]], [("KIND_CPU", 3)])
        self.assertEqual(c["parameters"]["intra_op_thread_count"], {"string_value": "1"})
        self.assertEqual(c["optimization"]["graph"], {"level": 1})
        x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
        st, r = infer(self.srv, "mlp_batched", [("x", "FP32", x)])
        self.assertEqual(st, 200, r)
        self.assertEqual(r["outputs"][0]["shape"], [5, 10])
        np.testing.assert_allclose(np.array(r["outputs"][0]["data"]).reshape(5, 10), mlp_reference(x), rtol=1e-5,
                                   atol=1e-6)
        # The batch dim is bounded by max_batch_size, as Triton bounds it.
        st, r = infer(self.srv, "mlp_batched", [("x", "FP32", np.zeros((9, 64), np.float32))])
        self.assertEqual(st, 400, r)
        self.assertIn("max_batch_size 8", r["error"])
        # Classification with the config's labels file.
        st, r = infer(self.srv, "mlp_batched", [("x", "FP32", x[:1])],
                      outputs=[{"name": "probs", "parameters": {"classification": 2}}])
        self.assertEqual(st, 200, r)
        best = int(np.argmax(mlp_reference(x[:1])[0]))
        self.assertTrue(r["outputs"][0]["data"][0].endswith(":%d:class_%d" % (best, best)), r)
        ready = [e for e in events(self.srv, "model_ready") if e["model"] == "mlp_batched"]
        self.assertEqual([(e["instances"], e["max_batch_size"], e["config"]) for e in ready],
                         [(3, 8, "config.pbtxt")])

    def test_reshape_clients_see_dims_the_model_gets_reshape(self):
        m = self.meta("mlp_reshape")
        self.assertEqual((m["inputs"][0]["shape"], m["outputs"][0]["shape"]), ([-1, 8, 8], [-1, 2, 5]))
        x = np.random.default_rng(2).standard_normal((3, 8, 8)).astype(np.float32)
        st, r = infer(self.srv, "mlp_reshape", [("x", "FP32", x)])
        self.assertEqual(st, 200, r)
        self.assertEqual(r["outputs"][0]["shape"], [3, 2, 5])
        np.testing.assert_allclose(np.array(r["outputs"][0]["data"]), mlp_reference(x.reshape(3, 64)).ravel(),
                                   rtol=1e-5, atol=1e-6)
        # Binary tensors too: the bytes are bound where they arrived (the reshape is only a shape).
        req = {"inputs": [{"name": "x", "shape": [3, 8, 8], "datatype": "FP32",
                           "parameters": {"binary_data_size": x.nbytes}}],
               "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}
        body, headers = binary_body(req, [x.tobytes()])
        st, h, data = self.srv.request("POST", "/v2/models/mlp_reshape/infer", body, headers)
        self.assertEqual(st, 200, data)
        meta, out = split_binary(h, data)
        self.assertEqual(meta["outputs"][0]["shape"], [3, 2, 5])
        np.testing.assert_allclose(np.frombuffer(out["probs"], np.float32), mlp_reference(x.reshape(3, 64)).ravel(),
                                   rtol=1e-5, atol=1e-6)
        c = self.config("mlp_reshape")
        self.assertEqual((c["input"][0]["reshape"], c["output"][0]["reshape"]), ({"shape": [64]}, {"shape": [10]}))

    def test_auto_complete_as_the_onnxruntime_backend(self):
        # mlp: [N,64] -> [N,10] is batchable: max_batch_size = --default-max-batch-size (4), dims without N,
        # and dynamic batching turned on, with the max as the preferred size (what Triton prints).
        c = self.config("mlp_auto")
        self.assertEqual(c["max_batch_size"], 4)
        self.assertEqual([(t["name"], t["data_type"], t["dims"]) for t in c["input"]], [("x", "TYPE_FP32", [64])])
        self.assertEqual(c["dynamic_batching"]["preferred_batch_size"], [4])
        self.assertEqual([(g["kind"], g["count"]) for g in c["instance_group"]], [("KIND_CPU", 2)])
        # scale2x: x [N] -> y [N]: the batch dim is all there is, so dims [1] with reshape [] (as Triton).
        c = self.config("scale_auto")
        self.assertEqual((c["input"][0]["dims"], c["input"][0]["reshape"]), ([1], {"shape": []}))
        self.assertEqual(self.meta("scale_auto")["inputs"][0]["shape"], [-1, 1])
        st, r = infer(self.srv, "scale_auto", [("x", "FP32", np.array([[1.5], [-2.0], [4.0]], np.float32))])
        self.assertEqual(st, 200, r)
        self.assertEqual((r["outputs"][0]["shape"], r["outputs"][0]["data"]), ([3, 1], [3.0, -4.0, 8.0]))

    def test_an_optional_input_may_be_left_out(self):
        """Triton's `optional` input over ONNX Runtime: an initializer the model lets a request override
        (w, default [1, 2, 3, 4]). Left out, the model's default is used; given, the request's values."""
        x = np.array([[1, 1, 2, 2]], np.float32)
        st, r = infer(self.srv, "defaults", [("x", "FP32", x)])
        self.assertEqual(st, 200, r)
        np.testing.assert_array_equal(np.float32(r["outputs"][0]["data"]), (x * [1, 2, 3, 4]).ravel())
        w = np.array([10, 20, 30, 40], np.float32)
        st, r = infer(self.srv, "defaults", [("x", "FP32", x), ("w", "FP32", w)])
        self.assertEqual(st, 200, r)
        np.testing.assert_array_equal(np.float32(r["outputs"][0]["data"]), (x * w).ravel())
        st, r = infer(self.srv, "defaults", [("w", "FP32", w)])
        self.assertEqual(st, 400, r)
        self.assertIn("missing input 'x' (the model needs 'x')", r["error"])
        self.assertEqual([(i["name"], i["shape"]) for i in self.meta("defaults")["inputs"]], [("x", [-1, 4]), ("w", [4])])
        self.assertEqual([i.get("optional", False) for i in self.config("defaults")["input"]], [False, True])
        # Without config.pbtxt the model's default is not an input (the ONNX Runtime backend's auto-complete).
        self.assertEqual([i["name"] for i in self.meta("defaults_auto")["inputs"]], ["x"])
        st, r = infer(self.srv, "defaults_auto", [("x", "FP32", x)])
        self.assertEqual(st, 200, r)
        np.testing.assert_array_equal(np.float32(r["outputs"][0]["data"]), (x * [1, 2, 3, 4]).ravel())
        # An optional input the model cannot run without: 400 naming it (ONNX Runtime's own error was a 500).
        a = np.ones((2, 2), np.float32)
        st, r = infer(self.srv, "needs_b", [("a", "FP32", a)])
        self.assertEqual(st, 400, r)
        self.assertIn("missing input 'b': the config marks it optional, but the model has no default", r["error"])
        st, r = infer(self.srv, "needs_b", [("a", "FP32", a), ("b", "FP32", a)])
        self.assertEqual(st, 200, r)
        np.testing.assert_array_equal(np.float32(r["outputs"][0]["data"]), (a + a).ravel())

    def test_default_model_filename(self):
        st, r = infer(self.srv, "mlp_named_file", [("x", "FP32", np.ones((1, 64), np.float32))])
        self.assertEqual(st, 200, r)
        self.assertEqual(self.config("mlp_named_file")["default_model_filename"], "net.onnx")

    def test_version_policies(self):
        def ready(name):
            st, rows = self.srv.json("POST", "/v2/repository/index", {"ready": True})
            return sorted(int(r["version"]) for r in rows if r["name"] == name)
        self.assertEqual(ready("v_default"), [3])  # Triton's default: the latest version
        self.assertEqual(ready("v_latest2"), [2, 3])
        self.assertEqual(ready("v_all"), [1, 2, 3])
        self.assertEqual(ready("v_specific"), [1, 3])
        self.assertEqual(self.meta("v_specific")["versions"], ["1", "3"])
        self.assertEqual(self.config("v_specific")["version_policy"], {"specific": {"versions": [1, 3]}})
        x = np.array([[2.0]], np.float32)
        for v in (1, 3):  # the version asked for answers
            st, r = infer(self.srv, "v_specific", [("x", "FP32", x)], version=v)
            self.assertEqual((st, r["model_version"]), (200, str(v)))
        st, r = infer(self.srv, "v_specific", [("x", "FP32", x)])
        self.assertEqual((st, r["model_version"]), (200, "3"))  # the default is the highest served
        st, r = infer(self.srv, "v_specific", [("x", "FP32", x)], version=2)
        self.assertEqual(st, 404, r)
        self.assertEqual(self.srv.json("GET", "/v2/models/v_specific/versions/2/ready")[0], 404)
        self.assertEqual(self.srv.json("GET", "/v2/models/v_all/versions/2/ready")[0], 200)
        # Statistics are per version, and so are the metrics of versions served side by side.
        self.assertEqual(stats_of(self.srv, "v_specific", 1)["version"], "1")
        self.assertEqual(stats_of(self.srv, "v_specific", 1)["inference_count"], 1)
        self.assertEqual(stats_of(self.srv, "v_specific", 3)["inference_count"], 2)
        m = metrics(self.srv)
        self.assertEqual([m.value("ortserve_inference_count_total", model="v_specific", version=v) for v in "13"],
                         [1, 2])
        self.assertEqual(m.value("ortserve_requests_total", model="v_specific", version="1", outcome="success"), 1)
        self.assertEqual(m.value("ortserve_requests_total", model="v_specific", version="3", outcome="success"), 2)

    def test_batching_and_cache_from_config_pbtxt_reach_the_batcher(self):
        # /config shows the settings the batcher runs (cfg.batching), so these come through the load's
        # conversion of config.pbtxt, not from the file's own parse
        c = self.config("batcher")
        self.assertEqual(c["dynamic_batching"]["max_queue_delay_microseconds"], 100)
        self.assertEqual(c["response_cache"], {"enable": True})
        warned = {(e["event"], e["model"]) for e in log_records(self.srv) if e.get("event", "") == "response_cache_off"}
        self.assertIn(("response_cache_off", "batcher"), warned)  # no --cache-size on this server
        st, r = infer(self.srv, "batcher", [("x", "FP32", np.ones((2, 64), np.float32))])
        self.assertEqual(st, 200, r)

    def test_classification_ranks_each_batch_row_or_the_whole_tensor(self):
        x = np.random.default_rng(5).standard_normal((2, 8, 8)).astype(np.float32)
        probs = mlp_reference(x.reshape(2, 64))
        # A batching model: one list per batch row, over all of the row's elements ([2, 5] here), with
        # flat indices into the row.
        st, r = infer(self.srv, "mlp_reshape", [("x", "FP32", x)],
                      outputs=[{"name": "probs", "parameters": {"classification": 3}}])
        self.assertEqual(st, 200, r)
        self.assertEqual(r["outputs"][0]["shape"], [2, 3])
        for row in range(2):
            got = [int(e.split(":")[1]) for e in r["outputs"][0]["data"][row * 3:row * 3 + 3]]
            self.assertEqual(got, list(np.argsort(-probs[row], kind="stable")[:3]))
        # A model without batching: the whole tensor is one list, with flat indices ([2, 10] -> 0..19).
        st, r = infer(self.srv, "mlp_nobatch", [("x", "FP32", x.reshape(2, 64))],
                      outputs=[{"name": "probs", "parameters": {"classification": 4}}])
        self.assertEqual(st, 200, r)
        self.assertEqual(r["outputs"][0]["shape"], [4])
        got = [int(e.split(":")[1]) for e in r["outputs"][0]["data"]]
        self.assertEqual(got, list(np.argsort(-probs.ravel(), kind="stable")[:4]))

    def test_raw_binary_request_is_batch_one(self):
        # Triton's raw binary request (Inference-Header-Content-Length: 0) to a batching model: batch 1 of
        # its one input, [1, 64]; outputs come back binary.
        x = np.random.default_rng(4).standard_normal(64).astype(np.float32)
        st, h, data = raw_request(self.srv, "mlp_batched", x.tobytes())
        self.assertEqual(st, 200, data)
        meta, out = split_binary(h, data)
        self.assertEqual(meta["outputs"][0]["shape"], [1, 10])
        np.testing.assert_allclose(np.frombuffer(out["probs"], np.float32), mlp_reference(x[None])[0], rtol=1e-5,
                                   atol=1e-6)
        st, h, data = raw_request(self.srv, "mlp_batched", np.zeros(128, np.float32).tobytes())
        self.assertEqual(st, 400, data)  # two rows: a raw request is one
        self.assertIn(b"batch 1", data)
        # A model without config.pbtxt (max_batch_size 0) keeps taking its one variable dim from the size.
        st, h, data = raw_request(self.srv, "native", np.zeros(128, np.float32).tobytes())
        self.assertEqual(st, 200, data)
        self.assertEqual(split_binary(h, data)[0]["outputs"][0]["shape"], [2, 10])

    def test_raw_binary_bytes_input_is_one_element(self):
        for body in (b"hello, raw world", b"", bytes(range(256)) * 40):
            st, h, data = raw_request(self.srv, "echo", body)
            self.assertEqual(st, 200, data)
            meta, out = split_binary(h, data)
            self.assertEqual((meta["outputs"][0]["datatype"], meta["outputs"][0]["shape"]), ("BYTES", [1, 1]))
            self.assertEqual(out["text_out"], struct.pack("<I", len(body)) + body)
        # The same body chunked (received whole before it is laid out).
        st, h, data = self.srv.request("POST", "/v2/models/echo/infer", iter([b"chun", b"ked"]),
                                       {"Inference-Header-Content-Length": "0"})
        self.assertEqual(st, 200, data)
        self.assertEqual(split_binary(h, data)[1]["text_out"], struct.pack("<I", 7) + b"chunked")

    def test_raw_request_without_a_body_runs_once_on_a_worker(self):
        # An empty raw body is dispatched from the request's handler, before any body is received:
        # queued for a worker (--inline-threshold-us 0), it must run once and answer once (it was
        # submitted again, its queue corrupted, answered twice).
        with tempfile.TemporaryDirectory() as r:
            string_model(os.path.join(r, "echo", "1", "model.onnx"))
            write(r, "echo/config.pbtxt", read_text(os.path.join(self.tmp.name, "echo", "config.pbtxt")))
            srv = Server(r, "--inline-threshold-us", "0")
            try:
                conn = srv.conn()  # one keep-alive connection: the next request follows on it
                for body in (b"", b"after empty", b"", b""):
                    st, h, data = srv.request("POST", "/v2/models/echo/infer", body,
                                              {"Inference-Header-Content-Length": "0"}, conn=conn)
                    self.assertEqual(st, 200, data)
                    self.assertEqual(split_binary(h, data)[1]["text_out"], struct.pack("<I", len(body)) + body)
                conn.close()
                st, stats = srv.json("GET", "/v2/models/echo/stats")
                self.assertEqual(stats["model_stats"][0]["inference_stats"]["success"]["count"], 4)
            finally:
                self.assertEqual(srv.finish(), 0)

    def test_model_without_config_pbtxt_is_served_as_before(self):
        c = self.config("native")
        self.assertEqual((c["max_batch_size"], c["input"][0]["dims"], c["version_policy"]), (0, [-1, 64], {"all": {}}))
        self.assertEqual(self.meta("native")["versions"], ["1", "2"])
        st, r = infer(self.srv, "native", [("x", "FP32", np.ones((16, 64), np.float32))])  # no batch bound
        self.assertEqual(st, 200, r)


MLP_IO = ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]\n'
          'output [ { name: "probs" data_type: TYPE_FP32 dims: [ 10 ] } ]\n')

class OverGrpc(unittest.TestCase):
    """The same Triton repository through the gRPC front: ModelConfig is the completed config /config
    shows (dims without the batch dim, the label file, instance groups, parameters), model_version
    reaches one version, reshape holds."""

    @classmethod
    def setUpClass(cls):
        from grpc_support import GrpcServer, mc, pb  # the gRPC client side: python3-grpcio (tools/deps.sh)
        cls.pb, cls.mc = pb, mc
        cls.tmp = tempfile.TemporaryDirectory()
        r = cls.tmp.name
        model(r, "mlp_batched", "mlp.onnx", config=MLP_BATCHED, files={"mlp_labels.txt": LABELS})
        model(r, "mlp_reshape", "mlp.onnx", config=MLP_RESHAPE)
        model(r, "v_specific", "scale2x.onnx", versions=(1, 2, 3),
              config="version_policy: { specific: { versions: [ 1, 3 ] } }\n")
        model(r, "defaults", "defaults.onnx", config=DEFAULTS)
        cls.srv = GrpcServer(r)
        cls.stub = cls.srv.stub()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, rc

    def test_model_config_is_the_completed_config(self):
        c = self.stub.ModelConfig(self.pb.ModelConfigRequest(name="mlp_batched")).config
        st, h = self.srv.json("GET", "/v2/models/mlp_batched/config")
        self.assertEqual(st, 200, h)
        self.assertEqual((c.name, c.platform, c.max_batch_size), ("mlp_batched", "onnxruntime_onnx", 8))
        self.assertEqual([(i.name, list(i.dims)) for i in c.input], [(i["name"], i["dims"]) for i in h["input"]])
        self.assertEqual([list(i.dims) for i in c.input], [[64]])
        self.assertEqual([(o.name, o.label_filename) for o in c.output], [("probs", "mlp_labels.txt")])
        self.assertEqual([(g.kind, g.count) for g in c.instance_group],
                         [(self.mc.ModelInstanceGroup.KIND_CPU, 3)])
        self.assertEqual(c.parameters["intra_op_thread_count"].string_value, "1")
        r = self.stub.ModelConfig(self.pb.ModelConfigRequest(name="mlp_reshape")).config
        self.assertEqual((list(r.input[0].dims), list(r.input[0].reshape.shape)), ([8, 8], [64]))

    def test_an_optional_input_may_be_left_out(self):
        from grpc_support import infer_request, output
        x = np.array([[1, 1, 2, 2]], np.float32)
        c = self.stub.ModelConfig(self.pb.ModelConfigRequest(name="defaults")).config
        self.assertEqual([(i.name, i.optional) for i in c.input], [("x", False), ("w", True)])
        y = output(self.stub.ModelInfer(infer_request("defaults", [("x", x)])), "y")
        np.testing.assert_array_equal(y, x * [1, 2, 3, 4])
        w = np.array([10, 20, 30, 40], np.float32)
        y = output(self.stub.ModelInfer(infer_request("defaults", [("x", x), ("w", w)], raw=False)), "y")
        np.testing.assert_array_equal(y, x * w)

    def test_versions_and_reshape(self):
        from grpc_support import infer_request, output
        import grpc
        x = np.array([[1.5], [-2.0]], np.float32)  # scale2x's [N], completed by Triton's rules as [-1, 1]
        for v in ("1", "3"):
            req = infer_request("v_specific", [("x", x)])
            req.model_version = v
            self.assertEqual(self.stub.ModelInfer(req).model_version, v)
        self.assertEqual(self.stub.ModelInfer(infer_request("v_specific", [("x", x)])).model_version, "3")
        req = infer_request("v_specific", [("x", x)])
        req.model_version = "2"  # on disk, not selected by the policy
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.ModelInfer(req)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        xb = np.random.default_rng(3).standard_normal((2, 8, 8)).astype(np.float32)
        out = output(self.stub.ModelInfer(infer_request("mlp_reshape", [("x", xb)])), "probs")
        self.assertEqual(out.shape, (2, 2, 5))
        np.testing.assert_allclose(out.reshape(2, 10), mlp_reference(xb.reshape(2, 64)), atol=1e-5)


# (model file, config.pbtxt, config.json or None, what the failure names: the field and the cause)
MALFORMED = {
    "neg_batch": ("mlp.onnx", "max_batch_size: -1\n", None, "max_batch_size: expected an integer from 0"),
    "not_batchable": ("slow.onnx", "max_batch_size: 8\n", None, "max_batch_size 8: the model does not support batching"),
    "dtype": ("mlp.onnx", "max_batch_size: 4\n" + MLP_IO.replace("TYPE_FP32 dims: [ 64 ]", "TYPE_INT64 dims: [ 64 ]"),
              None, "data_type: TYPE_INT64 contradicts the model's TYPE_FP32"),
    "dims": ("mlp.onnx", "max_batch_size: 4\n" + MLP_IO.replace("[ 64 ]", "[ 32 ]"), None,
             "input 'x': the config gives the model [-1,32] (batch dim first), the model's shape is [-1,64]"),
    "input_name": ("mlp.onnx", "max_batch_size: 4\n" + MLP_IO.replace('"x"', '"y"'), None,
                   "input 'y': the model has no input of that name (its inputs: x)"),
    "output_name": ("mlp.onnx", "max_batch_size: 4\n" + MLP_IO.replace('"probs"', '"logits"'), None,
                    "output 'logits': the model has no output of that name"),
    "input_missing": ("dynamic.onnx", 'input [ { name: "a" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]\n'
                      'output [ { name: "sum" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]\n', None,
                      "input: the model's input 'b' is not listed"),
    "initializer_required": ("defaults.onnx", DEFAULTS.replace(" optional: true", ""), None,
                             "input 'w': an initializer of the model (it has a default), so it needs optional: true"),
    "initializer_batched": ("defaults.onnx", 'max_batch_size: 2\n'
                            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] },\n'
                            '        { name: "w" data_type: TYPE_FP32 dims: [ 4 ] optional: true } ]\n', None,
                            "input 'w': an initializer of the model has no batch dimension; it needs max_batch_size 0"),
    "name": ("mlp.onnx", 'name: "other"\n', None, "name: 'other' does not match the model's directory name 'name'"),
    "platform": ("mlp.onnx", 'platform: "tensorflow_savedmodel"\n', None,
                 "platform: platform 'tensorflow_savedmodel' is not available here"),
    "backend": ("mlp.onnx", 'backend: "python"\n', None, "backend: backend 'python' is not available"),
    "sequence": ("mlp.onnx", "sequence_batching { max_sequence_idle_microseconds: 5000000 }\n", None,
                 "sequence_batching: sequence batching is not supported"),
    "ensemble": ("mlp.onnx", 'ensemble_scheduling { step [ { model_name: "a" model_version: -1 } ] }\n', None,
                 "ensemble_scheduling: ensembles are not supported"),
    "gpu": ("mlp.onnx", "instance_group [ { count: 1 kind: KIND_GPU } ]\n", None, "instance_group[0].kind: KIND_GPU"),
    "gpus": ("mlp.onnx", "instance_group [ { count: 1 gpus: [ 0 ] } ]\n", None, "instance_group[0].gpus: this server has no GPUs"),
    "decoupled": ("mlp.onnx", "model_transaction_policy { decoupled: true }\n", None,
                  "model_transaction_policy.decoupled: decoupled models"),
    "typo": ("mlp.onnx", "max_batch_sise: 4\n", None, "unknown field 'max_batch_sise' in ModelConfig"),
    "no_dtype": ("mlp.onnx", 'input [ { name: "x" dims: [ 64 ] } ]\n', None, "input[0]: 'x' has no data_type"),
    "bad_dtype": ("mlp.onnx", 'input [ { name: "x" data_type: TYPE_FP33 dims: [ 64 ] } ]\n', None,
                  "input[0].data_type: 'TYPE_FP33' is not a datatype"),
    "bad_dim": ("mlp.onnx", 'input [ { name: "x" data_type: TYPE_FP32 dims: [ -2 ] } ]\n', None,
                "input[0].dims: expected an integer from -1"),
    "latest0": ("mlp.onnx", "version_policy: { latest: { num_versions: 0 } }\n", None,
                "version_policy.latest.num_versions: must be at least 1"),
    "specific_none": ("mlp.onnx", "version_policy { specific { versions: [ 7 ] } }\n", None,
                      "version_policy selects none of the versions on disk (1)"),
    "preferred": ("mlp.onnx", "max_batch_size: 4\ndynamic_batching { preferred_batch_size: [ 16 ] }\n", None,
                  "dynamic_batching.preferred_batch_size 16 is above max_batch_size 4"),
    "threads": ("mlp.onnx", 'parameters { key: "intra_op_thread_count" value: { string_value: "many" } }\n', None,
                "parameters[\"intra_op_thread_count\"]: parameter 'intra_op_thread_count' must be a thread count"),
    "exec_mode": ("mlp.onnx", 'parameters { key: "execution_mode" value: { string_value: "2" } }\n', None,
                  "parameter 'execution_mode' must be \"0\" (sequential) or \"1\" (parallel)"),
    "graph_level": ("mlp.onnx", "optimization { graph { level: 7 } }\n", None,
                    "optimization.graph.level: expected an integer from -1 to 2"),
    "unclosed": ("mlp.onnx", 'input [ { name: "x"\n', None, "the text ends inside a message (missing '}')"),
    "twice": ("mlp.onnx", "max_batch_size: 4\nmax_batch_size: 8\n", None, "max_batch_size: 'max_batch_size' is given more than once"),
    "op_library": ("mlp.onnx", 'model_operations { op_library_filename: "libcustom.so" }\n', None,
                   "model_operations: custom operator libraries are not loaded"),
    "model_file": ("mlp.onnx", 'default_model_filename: "../x.onnx"\n', None,
                   "default_model_filename: '../x.onnx' must be a file name inside the model directory"),
    "label_file": ("mlp.onnx", "max_batch_size: 4\n" + MLP_IO.replace("dims: [ 10 ]", 'dims: [ 10 ] label_filename: "gone.txt"'),
                   None, "output 'probs' label_filename: cannot open"),
    "reshape": ("mlp.onnx", 'max_batch_size: 4\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 8, 8 ] reshape: { shape: [ 65 ] } } ]\n'
                'output [ { name: "probs" data_type: TYPE_FP32 dims: [ 10 ] } ]\n', None,
                "input[0]: 'x': reshape has 65 elements, dims 64"),
    "json_threads": ("mlp.onnx", 'parameters { key: "intra_op_thread_count" value: { string_value: "2" } }\n',
                     {"threads": {"intra_op": 1}}, "parameter intra_op_thread_count is 2 here but config.json's \"threads.intra_op\" is 1"),
    "json_batch_dim": ("mlp.onnx", "max_batch_size: 4\n", {"batch_dim": False},
                       "max_batch_size 4 contradicts config.json's \"batch_dim\": false"),
    "warmup_input": ("mlp.onnx", "max_batch_size: 4\nmodel_warmup [ { name: \"w\" inputs { key: \"nope\" value: "
                     "{ data_type: TYPE_FP32 dims: [ 64 ] zero_data: true } } } ]\n", None,
                     "model_warmup[0] ('w'): the model has no input 'nope'"),
    "instances": ("mlp.onnx", "instance_group [ { count: 100 } ]\n", None, "instance_group[0].count: expected an integer from 0 to 16"),
    "dup_input": ("mlp.onnx", 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] }, { name: "x" data_type: TYPE_FP32 '
                  'dims: [ 64 ] } ]\n', None, "input[1]: input 'x' is listed twice"),
    "dup_param": ("mlp.onnx", 'parameters [ { key: "k" value: { string_value: "1" } }, { key: "k" value: { string_value: '
                  '"2" } } ]\n', None, "parameters[1]: key 'k' is given twice"),
}


class Malformed(unittest.TestCase):
    """Malformed or contradictory config.pbtxt files: each fails its model's load with a message naming the
    file, line, column and field; the server keeps serving the rest."""

    def test_each_names_file_line_and_field(self):
        import re
        self.assertGreaterEqual(len(MALFORMED), 25)
        with tempfile.TemporaryDirectory() as r:
            for name, (onnx, text, cfg, _) in MALFORMED.items():
                model(r, name, onnx, config=text, files={"config.json": json.dumps(cfg)} if cfg else None)
            model(r, "good", "mlp.onnx", config="max_batch_size: 4\n")
            with Server(r, wait_ready=False) as srv:
                srv.wait_live()
                st, rows = srv.json("POST", "/v2/repository/index")
                reasons = {}
                for row in rows:
                    reasons.setdefault(row["name"], []).append((row["state"], row["reason"]))
                self.assertEqual(reasons["good"], [("READY", "")])
                logged = {e["model"]: e["reason"] for e in events(srv, "model_load_failed")}
                for name, (_, _, _, want) in MALFORMED.items():
                    (state, reason), = reasons[name]
                    self.assertEqual(state, "UNAVAILABLE", name)
                    path = os.path.join(os.path.realpath(r), name, "config.pbtxt")
                    self.assertRegex(reason, re.escape(path) + r":\d+:\d+: ", name)
                    self.assertIn(want.replace("'name'", "'%s'" % name), reason, name)
                    self.assertIn(reason, logged.get(name, ""), name)
                # The load API answers 400 with the cause (issue 18, item 6), and the rest serves.
                st, body = srv.json("POST", "/v2/repository/models/gpu/load")
                self.assertEqual(st, 400, body)
                self.assertIn("KIND_GPU", body["error"])
                st, res = infer(srv, "good", [("x", "FP32", np.ones((2, 64), np.float32))])
                self.assertEqual(st, 200, res)
                self.assertEqual(srv.json("GET", "/v2/health/ready")[0], 503)  # the broken ones are wanted


IMAGE_CONFIG = {"labels": "labels.txt", "image": {"height": 224, "width": 224, "resize": "crop", "resize_short": 256,
                                                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


class FirstHour(unittest.TestCase):
    """Issue 18: repository layouts that serve nothing (item 3), failed loads (item 6), a truthful /config
    (item 8), and the image input a client can discover (item 9)."""

    def layout(self, r, *args):
        with Server(r, *args, wait_ready=False) as srv:
            srv.wait_live()
            st, body = srv.json("GET", "/v2/health/ready")
            msg = [e["message"] for e in events(srv, "repository_layout")]
            if msg:  # the readiness answer gives the same reason, and so the fix, as the log
                self.assertEqual(body.get("reason"), msg[0])
            st_i, rows = srv.json("POST", "/v2/repository/index")
            return st, msg, rows

    def test_layouts_that_serve_nothing_are_not_ready_and_say_how_to_fix(self):
        with tempfile.TemporaryDirectory() as r:  # model.onnx right in the repository folder
            link(os.path.join(MODELS, "mlp.onnx"), os.path.join(r, "model.onnx"))
            st, msg, rows = self.layout(r)
            self.assertEqual((st, rows), (503, []))
            self.assertIn("holds model.onnx", msg[0])
            self.assertIn("--model-name NAME", msg[0])
            self.assertIn("parent folder", msg[0])
        with tempfile.TemporaryDirectory() as r:  # one model's folder: versions 1 and 2 are not models
            for v in (1, 2):
                link(os.path.join(MODELS, "mlp.onnx"), os.path.join(r, str(v), "model.onnx"))
            st, msg, rows = self.layout(r)
            self.assertEqual((st, rows), (503, []))
            self.assertIn("one model's folder (it holds version folders with model.onnx)", msg[0])
            st, msg, rows = self.layout(r, "--model-name", "mlp")  # the fix the message names
            self.assertEqual((st, msg, sorted(x["version"] for x in rows)), (200, [], ["1", "2"]))
        with tempfile.TemporaryDirectory() as r:  # nothing at all
            st, msg, rows = self.layout(r)
            self.assertEqual((st, rows), (503, []))
            self.assertIn("holds no model folder", msg[0])

    def test_failed_load_is_400_with_its_cause_and_logged(self):
        with tempfile.TemporaryDirectory() as r:
            model(r, "mlp", "mlp.onnx", files={"config.json": json.dumps({"labels": "labels.txt"})})
            with Server(r, wait_ready=False) as srv:
                srv.wait_live()
                failed = events(srv, "model_load_failed")
                self.assertEqual([(e["model"], e["version"]) for e in failed], [("mlp", 1)])
                self.assertIn("labels.txt", failed[0]["reason"])
                st, body = srv.json("POST", "/v2/repository/models/mlp/load")
                self.assertEqual(st, 400, body)  # not 404: the model exists, its load failed
                self.assertIn("cannot open", body["error"])
                self.assertIn("labels.txt", body["error"])
                write(r, "mlp/labels.txt", LABELS)
                self.assertEqual(srv.json("POST", "/v2/repository/models/mlp/load")[0], 200)
                self.assertEqual(srv.json("POST", "/v2/repository/models/mlp/unload")[0], 200)
                log = [(e["event"], e.get("version")) for e in log_records(srv)
                       if e.get("event") in ("model_ready", "model_unloaded", "model_load_failed")]
                self.assertEqual(log, [("model_load_failed", 1), ("model_load_failed", 1), ("model_ready", 1),
                                       ("model_unloaded", 1)])
                self.assertEqual(events(srv, "model_unloaded")[0]["reason"], "unloaded")

    def test_config_says_what_the_session_uses(self):
        with tempfile.TemporaryDirectory() as r:
            model(r, "mlp", "mlp.onnx", files={"config.json": json.dumps({"labels": "labels.txt"}),
                                               "labels.txt": LABELS})
            for args, want in (((), "1"), (("--intra-op-threads", "2"), "2")):
                with Server(r, *args) as srv:
                    st, c = srv.json("GET", "/v2/models/mlp/config")
                    self.assertEqual(c["parameters"]["intra_op_thread_count"], {"string_value": want})
                    listening = events(srv, "listening")[0]
                    self.assertEqual(str(listening["intra_op_threads"]), want)  # the log and /config agree
                    self.assertEqual(c["output"][0]["label_filename"], "labels.txt")

    def test_inter_op_threads_reach_the_session(self):
        """parameters inter_op_thread_count with execution_mode 1 (parallel) gives the session an inter-op
        pool of that many threads (the caller is one of them): the server's thread count grows by the
        difference, and /config says what the session uses."""
        def threads(inter):
            with tempfile.TemporaryDirectory() as r:
                model(r, "mlp", "mlp.onnx", config='instance_group [ { count: 1, kind: KIND_CPU } ]\n'
                      'parameters { key: "execution_mode" value: { string_value: "1" } }\n'
                      'parameters { key: "inter_op_thread_count" value: { string_value: "%d" } }\n' % inter)
                srv = Server(r, "--intra-op-threads", "1")
                try:
                    st, c = srv.json("GET", "/v2/models/mlp/config")
                    self.assertEqual(c["parameters"]["inter_op_thread_count"], {"string_value": str(inter)})
                    self.assertEqual(c["parameters"]["execution_mode"], {"string_value": "1"})
                    return len(os.listdir("/proc/%d/task" % srv.proc.pid))
                finally:
                    self.assertEqual(srv.finish(), 0)
        self.assertEqual(threads(4) - threads(1), 3)

    def test_image_input_is_discoverable(self):
        with tempfile.TemporaryDirectory() as r:
            model(r, "mobilenet", "mobilenetv2.onnx",
                  files={"config.json": json.dumps(IMAGE_CONFIG),
                         "labels.txt": read_text(os.path.join(MODELS, "mobilenetv2.labels.txt"))})
            with Server(r) as srv:
                st, meta = srv.json("GET", "/v2/models/mobilenet")
                want = {"image_input": "input", "image_input_datatype": "BYTES", "image_input_shape": "[-1]",
                        "image_formats": "JPEG,PNG", "image_size": "224x224",
                        "image_classify": "/v2/models/mobilenet/classify"}
                self.assertEqual(meta["parameters"], want)
                self.assertEqual([(t["name"], t["datatype"]) for t in meta["inputs"]], [("input", "FP32")])
                st, c = srv.json("GET", "/v2/models/mobilenet/config")
                for k, v in want.items():
                    self.assertEqual(c["parameters"][k], {"string_value": v})
                # What the parameters say works: the named input takes encoded images as BYTES.
                from PIL import Image
                import io
                b = io.BytesIO()
                Image.new("RGB", (300, 200), (200, 30, 40)).save(b, "PNG")
                png = b.getvalue()
                req = {"inputs": [{"name": meta["parameters"]["image_input"], "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": 4 + len(png)}}],
                       "outputs": [{"name": "probs", "parameters": {"classification": 1}}]}
                body, headers = binary_body(req, [struct.pack("<I", len(png)) + png])
                st, h, data = srv.request("POST", "/v2/models/mobilenet/infer", body, headers)
                self.assertEqual(st, 200, data)


class WarmUp(unittest.TestCase):
    """model_warmup samples run before the version is READY, on every instance; a failing one fails the load."""

    def test_samples_run_before_ready_and_a_bad_sample_fails_the_load(self):
        with tempfile.TemporaryDirectory() as r:
            item = np.arange(64, dtype=np.float32) / 64
            model(r, "warm", "mlp.onnx", config="""
max_batch_size: 4
instance_group [ { count: 2 kind: KIND_CPU } ]
model_warmup [
  { name: "zeros" batch_size: 2 count: 3 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 64 ] zero_data: true } } },
  { name: "random" batch_size: 4 inputs [ { key: "x", value: { data_type: TYPE_FP32, dims: [ 64 ], random_data: true } } ] },
  { name: "file" inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 64 ] input_data_file: "x.bin" } } }
]
""", files={"warmup/x.bin": item.tobytes()})
            model(r, "badwarm", "mlp.onnx", config="""
max_batch_size: 4
model_warmup { name: "short" inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 64 ] input_data_file: "x.bin" } } }
""", files={"warmup/x.bin": item[:10].tobytes()})
            model(r, "fine", "scale2x.onnx")
            with Server(r, wait_ready=False) as srv:
                srv.wait_live()
                ready = {e["model"]: e for e in events(srv, "model_ready")}
                # (3 + 1 + 1 runs) on each of the 2 instances' sessions, all done before model_ready.
                self.assertEqual(ready["warm"]["warmup_runs"], 10)
                self.assertEqual(stats_of(srv, "warm")["inference_count"], 0)  # warm-up is not inference
                failed = {e["model"]: e["reason"] for e in events(srv, "model_load_failed")}
                self.assertIn("model_warmup[0] 'short'", failed["badwarm"])
                self.assertIn("x.bin holds 40 bytes", failed["badwarm"])
                self.assertNotIn("badwarm", ready)
                self.assertEqual(srv.json("GET", "/v2/models/badwarm/ready")[0], 503)
                st, c = srv.json("GET", "/v2/models/warm/config")
                self.assertEqual([w["name"] for w in c["model_warmup"]], ["zeros", "random", "file"])
                self.assertEqual(c["model_warmup"][2]["inputs"]["x"]["input_data_file"], "x.bin")
                self.assertEqual(c["model_warmup"][0]["inputs"]["x"]["zero_data"], True)



class InstanceGroups(unittest.TestCase):
    """count x KIND_CPU: that many runs of the model at once, no more."""

    SLOW = "instance_group [ { count: %d, kind: KIND_CPU } ]\n"

    def queue_of_two(self, count):
        """Two requests at once to a model of `count` instances on two workers: the queue time they
        recorded, and one run's compute time."""
        with tempfile.TemporaryDirectory() as r:
            model(r, "slow", "slow.onnx", config=self.SLOW % count)
            with Server(r, "--workers", "2", "--inline-threshold-us", "0", "--deadline-ms", "0") as srv:
                def body_of(iters):
                    return json.dumps({"inputs": [
                        {"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [0.0] * 256},
                        {"name": "iters", "shape": [1], "datatype": "INT64", "data": [iters]}]})
                # Runs of ~0.8 s: the second request must arrive within the first half of the first run, and a
                # loaded machine (ctest -j2) once took longer than half of a 0.18 s run to start a thread.
                body = body_of(slow_iters(lambda n: self.assertEqual(
                    srv.request("POST", "/v2/models/slow/infer", body_of(n))[0], 200), 0.8))
                before = stats_of(srv, "slow")["inference_stats"]
                results = []
                threads = [threading.Thread(target=lambda: results.append(
                    srv.request("POST", "/v2/models/slow/infer", body)[0])) for _ in range(2)]
                threads[0].start()
                # the second starts once the first is in flight (the scrape itself counts one): started
                # together, a slow thread start could let the first finish before the second arrives
                wait_until(lambda: float(re.search(r"^ortserve_inflight_requests (\S+)$",
                                                   srv.request("GET", "/metrics")[2].decode(), re.M).group(1)) >= 2,
                           20, "the first request in flight")
                threads[1].start()
                for t in threads:
                    t.join(120)
                self.assertEqual(results, [200, 200])
                after = wait_stats_count(srv, "slow", 3)["inference_stats"]
                st, c = srv.json("GET", "/v2/models/slow/config")
                self.assertEqual(c["instance_group"][0]["count"], count)
                return (after["queue"]["ns"] - before["queue"]["ns"],
                        (after["compute_infer"]["ns"] - before["compute_infer"]["ns"]) / 2)

    def test_one_instance_runs_requests_one_at_a_time(self):
        # With one instance the second request waits in the queue for the first run to end (about a
        # whole run); with two, both start at once on the two workers.
        queued, run = self.queue_of_two(1)
        self.assertGreater(queued, 0.5 * run, (queued, run))
        queued, run = self.queue_of_two(2)
        self.assertLess(queued, 0.5 * run, (queued, run))


def wait_stats_count(srv, name, n):
    out = {}

    def done():
        out["s"] = stats_of(srv, name)
        return out["s"]["inference_count"] >= n
    wait_until(done, 30, "statistics of %d requests" % n)
    return out["s"]


class Reload(unittest.TestCase):
    """A load adds and removes versions under traffic: no request fails, unchanged versions keep serving."""

    def test_versions_added_and_removed_under_traffic(self):
        with tempfile.TemporaryDirectory() as r:
            model(r, "m", "mlp.onnx", versions=(1, 2), config="max_batch_size: 8\nversion_policy: { all { } }\n")
            with Server(r, "--inline-threshold-us", "0", "--deadline-ms", "0") as srv:
                stop, errors, seen = threading.Event(), [], set()
                x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
                want = mlp_reference(x)

                def client():
                    while not stop.is_set():
                        st, res = infer(srv, "m", [("x", "FP32", x)])
                        if st != 200:
                            errors.append((st, res))
                            continue
                        seen.add(res["model_version"])
                        np.testing.assert_allclose(np.array(res["outputs"][0]["data"]).reshape(2, 10), want,
                                                   rtol=1e-5, atol=1e-6)
                threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
                for t in threads:
                    t.start()
                wait_until(lambda: "2" in seen, 30, "traffic on version 2")
                link(os.path.join(MODELS, "mlp.onnx"), os.path.join(r, "m", "3", "model.onnx"))
                shutil.rmtree(os.path.join(r, "m", "1"))
                st, body = srv.json("POST", "/v2/repository/models/m/load")
                self.assertEqual(st, 200, body)
                wait_until(lambda: "3" in seen, 30, "traffic on version 3")
                stop.set()
                for t in threads:
                    t.join(60)
                self.assertEqual(errors, [])
                st, rows = srv.json("POST", "/v2/repository/index")
                self.assertEqual(sorted((x["version"], x["state"]) for x in rows if x["name"] == "m"),
                                 [("2", "READY"), ("3", "READY")])
                ready = [(e["version"], e["reloaded"]) for e in events(srv, "model_ready") if e["model"] == "m"]
                self.assertEqual(ready, [(1, False), (2, False), (3, False)])  # version 2 was kept, not reloaded
                self.assertEqual([e["version"] for e in events(srv, "model_unloaded")], [1])
                self.assertEqual(srv.json("GET", "/v2/models/m/versions/1/ready")[0], 404)


    def test_a_removed_version_finishes_its_requests_first(self):
        """A load that removes a version unloads it after its requests in progress: a run of about 2 s on
        version 1 still answers 200 from version 1 although the load removed it while it ran."""
        with tempfile.TemporaryDirectory() as r:
            # Completed as Triton's backend does: the scalar iters becomes dims [1], reshaped to [].
            model(r, "s", "slow.onnx", versions=(1, 2), config="version_policy: { all { } }\n")
            srv = Server(r, "--deadline-ms", "0", "--inline-threshold-us", "0")  # runs on workers, loops free
            try:
                x = np.full((1, 256), 0.01, np.float32)

                def run(iters, version):
                    return infer(srv, "s", [("x", "FP32", x), ("iters", "INT64", np.array([iters], np.int64))],
                                 version=version)
                iters = slow_iters(lambda n: self.assertEqual(run(n, 2)[0], 200), 2.0)
                done = {}
                busy = threading.Thread(target=lambda: done.update(answer=run(iters, 1)))
                busy.start()
                wait_until(lambda: metrics(srv).value("ortserve_inflight_requests") >= 2, 10,
                           "the run on version 1 in flight (the scrape is the other)")
                shutil.rmtree(os.path.join(r, "s", "1"))
                self.assertEqual(srv.json("POST", "/v2/repository/models/s/load"), (200, None))
                self.assertTrue(busy.is_alive(), "the run ended before the load was answered: it proves nothing")
                busy.join(60)
                st, res = done["answer"]
                self.assertEqual((st, res.get("model_version")), (200, "1"), res)
                self.assertEqual(res["outputs"][0]["shape"], [1, 256])
                wait_until(lambda: srv.json("GET", "/v2/models/s/versions/1/ready")[0] == 404, 10, "version 1 gone")
                self.assertEqual([e["version"] for e in events(srv, "model_unloaded")], [1])
                self.assertEqual(run(10, None)[1]["model_version"], "2")
            finally:
                self.assertEqual(srv.finish(), 0)

if __name__ == "__main__":
    unittest.main(verbosity=2)
