#!/usr/bin/python3
"""test_cli.py — the real `ortserve` binary's CLI on real models: --version, info, run.

Results of `ortserve run` are checked against an independent numpy forward pass of the MLP computed
from the model file's own initializers, and against known properties of the real PaddleOCR model.
Run with /usr/bin/python3 (Debian's numpy and onnx); ctest passes OSV_BINARY_DIR and model dirs.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx
from onnx import numpy_helper

BIN = os.path.join(os.environ.get("OSV_BINARY_DIR", "build/release"), "ortserve")
MODELS = os.environ.get("OSV_TEST_MODELS", "var/models")
REAL = os.environ.get("OSV_REAL_MODELS", "third_party/models")


def ortserve(*args, env=None, check=True):
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120, env=full_env)
    if check and p.returncode != 0:
        raise AssertionError("ortserve %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return p


def mlp_reference(x):
    """Forward pass of mlp.onnx in numpy from its initializers (Gemm transB=1, ReLU, Gemm, softmax)."""
    m = onnx.load(os.path.join(MODELS, "mlp.onnx"))
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    logits = h @ w["fc2.weight"].T + w["fc2.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Cli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_version_and_help(self):
        out = ortserve("--version").stdout
        self.assertRegex(out, r"ortserve \d+\.\d+\.\d+")
        self.assertRegex(out, r"ONNX Runtime 1\.\d+")
        self.assertIn("info", ortserve("--help").stdout)
        self.assertIn("--input", ortserve("run", "--help").stdout)
        p = ortserve("frobnicate", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown command", p.stderr)

    def test_explicit_missing_library_is_an_error(self):
        p = ortserve("--version", env={"ORTSERVE_ORT_LIBRARY": "/nonexistent/libonnxruntime.so.1"}, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("/nonexistent/libonnxruntime.so.1", p.stderr)

    def test_info_json(self):
        info = json.loads(ortserve("info", "--json", os.path.join(MODELS, "mlp.onnx")).stdout)
        self.assertEqual(info["name"], "mlp")
        self.assertEqual(info["inputs"], [{"name": "x", "kind": "tensor", "datatype": "FP32",
                                           "shape": [-1, 64], "dim_names": ["N", ""]}])
        self.assertEqual(info["outputs"][0]["shape"], [-1, 10])
        self.assertEqual(info["metadata"]["producer"], "ortserve/tools/gen_models.py")
        self.assertEqual(info["metadata"]["custom"]["ortserve.test"], "mlp")

    def test_info_model_directory_picks_highest_version(self):
        for v in ("2", "10"):
            os.makedirs(os.path.join(self.dir, "m", v))
            os.link(os.path.join(MODELS, "mlp.onnx" if v == "10" else "sum.onnx"),
                    os.path.join(self.dir, "m", v, "model.onnx"))
        info = json.loads(ortserve("info", "--json", os.path.join(self.dir, "m")).stdout)
        self.assertEqual(info["version"], 10)
        self.assertEqual(info["inputs"][0]["name"], "x")
        # The real PaddleOCR classifier: every dim but the channels is dynamic, with symbolic names.
        table = ortserve("info", os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx")).stdout
        self.assertIn("[p2o.DynamicDimension.0,3,p2o.DynamicDimension.1,p2o.DynamicDimension.2]", table)
        self.assertIn("softmax_0.tmp_0", table)

    def test_run_mlp_matches_numpy(self):
        rng = np.random.default_rng(7)
        x = rng.standard_normal((3, 64)).astype(np.float32)
        np.save(os.path.join(self.dir, "x.npy"), x)
        out = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input",
                       "x=" + os.path.join(self.dir, "x.npy"), "--output-dir", os.path.join(self.dir, "o")).stdout
        self.assertIn("zero_copy", out)
        self.assertIn("0 bytes copied", out)
        probs = np.load(os.path.join(self.dir, "o", "probs.npy"))
        self.assertEqual(probs.shape, (3, 10))
        self.assertEqual(probs.dtype, np.float32)
        np.testing.assert_allclose(probs, mlp_reference(x.astype(np.float64)), rtol=1e-5, atol=1e-6)

    def test_run_force_copy_gives_same_result(self):
        x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
        np.save(os.path.join(self.dir, "x.npy"), x)
        outs = []
        for extra in ([], ["--force-copy"]):
            d = os.path.join(self.dir, "o%d" % len(outs))
            r = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input", "x=" + os.path.join(self.dir, "x.npy"),
                         "--output-dir", d, *extra).stdout
            outs.append(np.load(os.path.join(d, "probs.npy")))
        self.assertIn("forced", r)
        self.assertIn("296 bytes copied", r)  # 256 in + 40 out
        np.testing.assert_array_equal(outs[0], outs[1])

    def test_run_errors(self):
        p = ortserve("run", os.path.join(MODELS, "mlp.onnx"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing input 'x'", p.stderr)
        np.save(os.path.join(self.dir, "bad.npy"), np.zeros((1, 63), np.float32))
        p = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input", "x=" + os.path.join(self.dir, "bad.npy"),
                     check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("[1,63]", p.stderr)
        np.save(os.path.join(self.dir, "f64.npy"), np.zeros((1, 64), np.float64))
        p = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input", "x=" + os.path.join(self.dir, "f64.npy"),
                     check=False)
        self.assertIn("FP64", p.stderr)
        p = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input", "y=" + os.path.join(self.dir, "f64.npy"),
                     check=False)
        self.assertIn("no input 'y'", p.stderr)

    def test_run_real_paddleocr_classifier(self):
        x = np.zeros((2, 3, 48, 192), np.float32)
        np.save(os.path.join(self.dir, "x.npy"), x)
        ortserve("run", os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx"), "--input",
                 "x=" + os.path.join(self.dir, "x.npy"), "--output-dir", os.path.join(self.dir, "o"))
        (name,) = os.listdir(os.path.join(self.dir, "o"))
        y = np.load(os.path.join(self.dir, "o", name))
        self.assertEqual(y.shape, (2, 2))
        np.testing.assert_allclose(y.sum(axis=1), [1, 1], rtol=1e-5)

    def test_run_names_the_missing_input(self):
        m = onnx.load(os.path.join(MODELS, "identity.onnx"))
        args = []
        for inp in m.graph.input:
            name = inp.name
            t = name[3:]
            if t == "BYTES":
                arr = np.array([b"ab", b"", b"xyz"])
            elif t == "BF16":
                continue  # numpy has no bfloat16: the run must refuse rather than guess
            else:
                special = {"BOOL": np.bool_, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
                dt = special[t] if t in special else getattr(np, t.lower())
                arr = np.arange(3).astype(dt)
            np.save(os.path.join(self.dir, name + ".npy"), arr)
            args += ["--input", "%s=%s" % (name, os.path.join(self.dir, name + ".npy"))]
        p = ortserve("run", os.path.join(MODELS, "identity.onnx"), *args, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing input 'in_BF16'", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
