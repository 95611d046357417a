#!/usr/bin/python3
"""test_server_smoke.py — the real server on an ephemeral loopback port: health, metadata, JSON and
binary inference checked against a numpy reference, and a clean SIGTERM exit."""
import json
import os
import sys
import tempfile
import unittest

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from server import MODELS, Server, make_repo  # noqa: E402


def mlp_reference(x):
    m = onnx.load(os.path.join(MODELS, "mlp.onnx"))
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    logits = h @ w["fc2.weight"].T + w["fc2.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Smoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx"})
        cls.srv = Server(repo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def test_health_and_metadata(self):
        self.assertEqual(self.srv.json("GET", "/v2/health/live"), (200, {"live": True}))
        self.assertEqual(self.srv.json("GET", "/v2/health/ready"), (200, {"ready": True}))
        st, meta = self.srv.json("GET", "/v2/models/mlp")
        self.assertEqual(st, 200)
        self.assertEqual(meta["inputs"], [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}])

    def test_json_infer_matches_numpy(self):
        x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
        st, r = self.srv.json("POST", "/v2/models/mlp/infer", {
            "id": "abc", "inputs": [{"name": "x", "shape": [4, 64], "datatype": "FP32", "data": x.tolist()}]})
        self.assertEqual(st, 200, r)
        self.assertEqual(r["id"], "abc")
        out = r["outputs"][0]
        self.assertEqual((out["name"], out["datatype"], out["shape"]), ("probs", "FP32", [4, 10]))
        np.testing.assert_allclose(np.array(out["data"]).reshape(4, 10), mlp_reference(x.astype(np.float64)),
                                   rtol=1e-5, atol=1e-6)

    def test_binary_infer_matches_numpy(self):
        x = np.random.default_rng(4).standard_normal((2, 64)).astype(np.float32)
        hdr = json.dumps({"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32",
                                      "parameters": {"binary_data_size": x.nbytes}}],
                          "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}).encode()
        st, h, body = self.srv.request("POST", "/v2/models/mlp/infer", hdr + x.tobytes(),
                                       {"Inference-Header-Content-Length": str(len(hdr))})
        self.assertEqual(st, 200, body)
        n = int(h["inference-header-content-length"])
        meta = json.loads(body[:n])
        self.assertEqual(meta["outputs"][0]["parameters"]["binary_data_size"], 80)
        probs = np.frombuffer(body[n:], np.float32).reshape(2, 10)
        np.testing.assert_allclose(probs, mlp_reference(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    unittest.main(verbosity=2)
