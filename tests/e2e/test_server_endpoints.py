#!/usr/bin/python3
"""test_server_endpoints.py — every endpoint of the real server over HTTP: health (live; ready only
when every wanted model is loaded), server and model metadata (with and without a version), model
readiness, Triton's model configuration, inference on a version, the POST /infer alias, statistics
(counts and cumulative durations after successes and failures, batch-aware inference_count), and
the model repository extension (index states, unload -> 503, load again -> served), and Triton's
model control flags (--model-control-mode none|explicit, --load-model). Shared memory endpoints are
in test_server_shm.py."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from server import (BIN, MODELS, TIME_SCALE, WRAPPER, Server, check_mlp, make_repo, mlp_request,  # noqa: E402
                    slow_iters, stats_of, wait_stats, wait_until)

EXTENSIONS = {"binary_tensor_data", "classification", "model_configuration", "model_repository", "parameters",
              "schedule_policy", "statistics", "system_shared_memory"}


def scale2x_request(x):
    return {"inputs": [{"name": "x", "shape": [len(x)], "datatype": "FP32", "data": list(map(float, x))}]}


class Endpoints(unittest.TestCase):
    """One server over mlp (with a labels file), identity, scale2x and fail."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "identity": "identity.onnx", "scale2x": "scale2x.onnx",
                                        "fail": "fail.onnx"},
                         configs={"mlp": {"labels": "labels.txt"}},
                         files={"mlp/labels.txt": "".join("c%d\n" % i for i in range(10))})
        cls.srv = Server(repo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def test_health_live(self):
        st, h, body = self.srv.request("GET", "/v2/health/live")
        self.assertEqual((st, body), (200, b'{"live":true}'))
        self.assertEqual(h["content-type"], "application/json")
        st, h, body = self.srv.request("HEAD", "/v2/health/live")
        self.assertEqual((st, body, h["content-length"]), (200, b"", "13"))

    def test_health_ready(self):
        self.assertEqual(self.srv.json("GET", "/v2/health/ready"), (200, {"ready": True}))

    def test_server_metadata(self):
        st, meta = self.srv.json("GET", "/v2")
        self.assertEqual(st, 200)
        self.assertEqual(meta["name"], "ortserve")
        self.assertRegex(meta["version"], r"^\d+\.\d+\.\d+")
        self.assertEqual(set(meta["extensions"]), EXTENSIONS)

    def test_model_metadata(self):
        st, meta = self.srv.json("GET", "/v2/models/mlp")
        self.assertEqual(st, 200)
        self.assertEqual(meta["name"], "mlp")
        self.assertEqual(meta["versions"], ["1"])
        self.assertEqual(meta["platform"], "onnxruntime_onnx")
        self.assertEqual(meta["inputs"], [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}])
        self.assertEqual(meta["outputs"], [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}])
        self.assertEqual(self.srv.json("GET", "/v2/models/mlp/versions/1"), (200, meta))
        st, meta = self.srv.json("GET", "/v2/models/identity")
        self.assertEqual(len(meta["inputs"]), 14)
        self.assertIn({"name": "in_BYTES", "datatype": "BYTES", "shape": [-1]}, meta["inputs"])
        self.assertIn({"name": "out_BF16", "datatype": "BF16", "shape": [-1]}, meta["outputs"])

    def test_model_metadata_unknown(self):
        st, body = self.srv.json("GET", "/v2/models/nope")
        self.assertEqual(st, 404)
        self.assertIn("nope", body["error"])
        st, body = self.srv.json("GET", "/v2/models/mlp/versions/2")
        self.assertEqual(st, 404)
        self.assertIn("no version 2", body["error"])

    def test_model_ready(self):
        self.assertEqual(self.srv.json("GET", "/v2/models/mlp/ready"),
                         (200, {"name": "mlp", "version": "1", "ready": True}))
        self.assertEqual(self.srv.json("GET", "/v2/models/mlp/versions/1/ready")[0], 200)
        self.assertEqual(self.srv.json("GET", "/v2/models/mlp/versions/3/ready")[0], 404)
        self.assertEqual(self.srv.json("GET", "/v2/models/nope/ready")[0], 404)

    def test_model_config(self):
        st, cfg = self.srv.json("GET", "/v2/models/mlp/config")
        self.assertEqual(st, 200)
        self.assertEqual((cfg["name"], cfg["platform"], cfg["backend"], cfg["max_batch_size"]),
                         ("mlp", "onnxruntime_onnx", "onnxruntime", 0))
        self.assertEqual(cfg["input"], [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NONE",
                                         "dims": [-1, 64], "is_shape_tensor": False, "allow_ragged_batch": False,
                                         "optional": False, "is_non_linear_format_io": False}])
        # The real labels file, as config.json names it (issue 18, item 8: it said "labels").
        self.assertEqual(cfg["output"], [{"name": "probs", "data_type": "TYPE_FP32", "dims": [-1, 10],
                                          "label_filename": "labels.txt", "is_shape_tensor": False,
                                          "is_non_linear_format_io": False}])
        # A model without config.pbtxt: every version, every thread may run it on its one session.
        self.assertEqual(cfg["version_policy"], {"all": {}})
        self.assertEqual(cfg["instance_group"][0]["kind"], "KIND_CPU")
        self.assertEqual(cfg["parameters"]["share_session_between_instances"], {"string_value": "true"})
        st, cfg = self.srv.json("GET", "/v2/models/identity/versions/1/config")
        self.assertEqual(st, 200)
        types = {t["name"]: t["data_type"] for t in cfg["input"]}
        self.assertEqual(types["in_BYTES"], "TYPE_STRING")
        self.assertEqual(types["in_BF16"], "TYPE_BF16")
        self.assertEqual(cfg["output"][0]["label_filename"], "")
        self.assertEqual(self.srv.json("GET", "/v2/models/nope/config")[0], 404)

    def test_infer_with_and_without_version(self):
        x = np.random.default_rng(11).standard_normal((3, 64)).astype(np.float32)
        for path in ("/v2/models/mlp/infer", "/v2/models/mlp/versions/1/infer"):
            st, r = self.srv.json("POST", path, mlp_request(x))
            self.assertEqual(st, 200, r)
            self.assertEqual((r["model_name"], r["model_version"]), ("mlp", "1"))
            check_mlp(self, x, r)
        st, r = self.srv.json("POST", "/v2/models/mlp/versions/5/infer", mlp_request(x))
        self.assertEqual(st, 404)
        self.assertIn("no version 5", r["error"])

    def test_infer_alias_needs_a_single_model(self):
        st, r = self.srv.json("POST", "/infer", scale2x_request([1.0]))
        self.assertEqual(st, 400)
        self.assertIn("exactly one", r["error"])

    def test_stats_counts_and_durations(self):
        """scale2x: x FP32[N] (batch dim 0), so inference_count grows by N per request."""
        s0 = stats_of(self.srv, "scale2x")
        self.assertEqual((s0["name"], s0["version"]), ("scale2x", "1"))
        self.assertEqual((s0["inference_count"], s0["execution_count"]), (0, 0))
        self.assertEqual(s0["inference_stats"]["success"], {"count": 0, "ns": 0})
        before_ms = int(time.time() * 1000)
        seen = []
        for k, n in enumerate((1, 4, 7)):
            st, r = self.srv.json("POST", "/v2/models/scale2x/infer", scale2x_request(range(n)))
            self.assertEqual(st, 200, r)
            self.assertEqual(r["outputs"][0]["data"], [2.0 * i for i in range(n)])
            seen.append(wait_stats(self.srv, "scale2x", lambda s: s["inference_stats"]["success"]["count"] == k + 1,
                                   "success %d to be recorded" % (k + 1)))
        s = seen[-1]
        self.assertEqual(s["inference_count"], 12)  # batch-aware: 1 + 4 + 7
        self.assertEqual(s["execution_count"], 3)
        self.assertEqual(s["inference_stats"]["success"]["count"], 3)
        self.assertEqual(s["inference_stats"]["fail"], {"count": 0, "ns": 0})
        ns = [x["inference_stats"]["success"]["ns"] for x in seen]
        self.assertTrue(0 < ns[0] < ns[1] < ns[2], ns)  # cumulative
        for phase in ("compute_input", "compute_infer", "compute_output"):
            self.assertEqual(s["inference_stats"][phase]["count"], 3, phase)
            self.assertGreater(s["inference_stats"][phase]["ns"], 0, phase)
        self.assertLessEqual(s["inference_stats"]["compute_infer"]["ns"], s["inference_stats"]["success"]["ns"])
        self.assertTrue(before_ms - 1000 <= s["last_inference"] <= int(time.time() * 1000) + 1000,
                        s["last_inference"])

        # A request the model refuses (wrong datatype) is a failure and runs nothing.
        st, r = self.srv.json("POST", "/v2/models/scale2x/infer",
                              {"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2]}]})
        self.assertEqual(st, 400)
        s = wait_stats(self.srv, "scale2x", lambda s: s["inference_stats"]["fail"]["count"] >= 1, "the failure")
        self.assertEqual(s["inference_stats"]["fail"]["count"], 1)
        self.assertGreater(s["inference_stats"]["fail"]["ns"], 0)
        self.assertEqual(s["inference_stats"]["success"]["count"], 3)
        self.assertEqual((s["inference_count"], s["execution_count"]), (12, 3))

    def test_stats_of_a_failed_run(self):
        """fail.onnx: a Reshape to a shape whose size differs from the input fails inside ORT. A failed
        run is a failure in inference_stats and, as in Triton, not an inference nor an execution."""
        good = {"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                           {"name": "shape", "shape": [1], "datatype": "INT64", "data": [4]}]}
        st, r = self.srv.json("POST", "/v2/models/fail/infer", good)
        self.assertEqual(st, 200, r)
        self.assertEqual(r["outputs"][0]["data"], [1, 2, 3, 4])
        bad = {"inputs": [good["inputs"][0], {"name": "shape", "shape": [1], "datatype": "INT64", "data": [3]}]}
        st, r = self.srv.json("POST", "/v2/models/fail/infer", bad)
        self.assertEqual(st, 500)
        self.assertIn("Reshape", r["error"])
        s = wait_stats(self.srv, "fail", lambda s: s["inference_stats"]["success"]["count"] +
                       s["inference_stats"]["fail"]["count"] >= 2, "both requests to be recorded")
        self.assertEqual(s["inference_stats"]["success"]["count"], 1)
        self.assertEqual(s["inference_stats"]["fail"]["count"], 1)
        self.assertGreater(s["inference_stats"]["fail"]["ns"], 0)
        self.assertEqual(s["inference_count"], 1)
        self.assertEqual(s["execution_count"], 1)
        for phase in ("compute_input", "compute_infer", "compute_output"):  # successes only, as Triton
            self.assertEqual(s["inference_stats"][phase]["count"], 1, phase)

    def test_stats_selection(self):
        st, body = self.srv.json("GET", "/v2/models/stats")
        self.assertEqual(st, 200)
        self.assertEqual(sorted(m["name"] for m in body["model_stats"]), ["fail", "identity", "mlp", "scale2x"])
        st, body = self.srv.json("GET", "/v2/models/mlp/versions/1/stats")
        self.assertEqual(st, 200)
        self.assertEqual([(m["name"], m["version"]) for m in body["model_stats"]], [("mlp", "1")])
        keys = set(body["model_stats"][0]["inference_stats"])
        self.assertEqual(keys, {"success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
                                "cache_hit", "cache_miss"})
        self.assertEqual(self.srv.json("GET", "/v2/models/mlp/versions/2/stats")[0], 404)
        self.assertEqual(self.srv.json("GET", "/v2/models/nope/stats")[0], 404)


class InferAlias(unittest.TestCase):
    """POST /infer on a repository holding exactly one model."""

    def test_alias_serves_the_only_model(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"scale2x": "scale2x.onnx"}))
            try:
                st, r = srv.json("POST", "/infer", scale2x_request([1.5, -2.0]))
                self.assertEqual(st, 200, r)
                self.assertEqual(r["model_name"], "scale2x")
                self.assertEqual(r["outputs"][0]["data"], [3.0, -4.0])
                self.assertEqual(srv.json("GET", "/infer")[0], 405)
            finally:
                self.assertEqual(srv.finish(), 0)


class Repository(unittest.TestCase):
    """Readiness with a broken model, and the repository extension's index/load/unload."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.repo = make_repo(self.tmp.name, {"mlp": "mlp.onnx", "scale2x": "scale2x.onnx"},
                              files={"broken/1/model.onnx": "this is not an ONNX model"})
        self.srv = Server(self.repo, wait_ready=False)
        self.srv.wait_live()

    def tearDown(self):
        rc = self.srv.finish()
        self.tmp.cleanup()
        self.assertEqual(rc, 0)

    def index(self, body=None):
        st, rows = self.srv.json("POST", "/v2/repository/index", body)
        self.assertEqual(st, 200, rows)
        return {r["name"]: r for r in rows}

    def test_broken_model_keeps_the_server_unready_until_unloaded(self):
        for _ in range(3):  # stays 503: the model never loads; the answer says which model and why
            st, r = self.srv.json("GET", "/v2/health/ready")
            self.assertEqual((st, r["ready"]), (503, False))
            self.assertEqual(r["reason"], "models that should be served are not ready")
            self.assertEqual([(m["name"], m["state"]) for m in r["models"]], [("broken", "UNAVAILABLE")])
            self.assertIn("broken", r["models"][0]["reason"])
        self.assertEqual(self.srv.json("GET", "/v2/health/live"), (200, {"live": True}))
        rows = self.index()
        self.assertEqual(rows["broken"]["state"], "UNAVAILABLE")
        self.assertEqual(rows["broken"]["version"], "1")  # each version has its row, state and reason
        self.assertIn("broken", rows["broken"]["reason"])
        self.assertEqual((rows["mlp"]["state"], rows["mlp"]["version"]), ("READY", "1"))
        st, r = self.srv.json("GET", "/v2/models/broken")
        self.assertEqual(st, 503)
        self.assertIn("not ready", r["error"])
        self.assertEqual(self.srv.json("GET", "/v2/models/broken/ready")[0], 503)
        # Other models are served meanwhile.
        self.assertEqual(self.srv.json("POST", "/v2/models/scale2x/infer", scale2x_request([1]))[0], 200)

        self.assertEqual(self.srv.json("POST", "/v2/repository/models/broken/unload"), (200, None))
        self.assertEqual(self.srv.json("GET", "/v2/health/ready"), (200, {"ready": True}))
        self.assertEqual(self.index()["broken"]["reason"], "unloaded")
        self.assertNotIn("version", self.index()["broken"])

        # Repair it on disk and load it: served, still ready.
        os.remove(os.path.join(self.repo, "broken", "1", "model.onnx"))
        shutil.copyfile(os.path.join(MODELS, "scale2x.onnx"), os.path.join(self.repo, "broken", "1", "model.onnx"))
        self.assertEqual(self.srv.json("POST", "/v2/repository/models/broken/load", {}), (200, None))
        self.assertEqual(self.srv.json("GET", "/v2/health/ready"), (200, {"ready": True}))
        self.assertEqual(self.index()["broken"]["state"], "READY")
        st, r = self.srv.json("POST", "/v2/models/broken/infer", scale2x_request([4]))
        self.assertEqual((st, r["outputs"][0]["data"]), (200, [8.0]))

    def test_failed_load_of_a_broken_model_is_reported(self):
        self.assertEqual(self.srv.json("POST", "/v2/repository/models/broken/unload")[0], 200)
        st, r = self.srv.json("POST", "/v2/repository/models/broken/load")
        self.assertEqual(st, 400)
        self.assertIn("broken", r["error"])
        self.assertEqual(self.index()["broken"]["state"], "UNAVAILABLE")
        self.assertEqual(self.srv.json("GET", "/v2/health/ready")[0], 503)  # load asked for it again

    def test_unload_then_infer_is_503_and_load_serves_again(self):
        self.srv.json("POST", "/v2/repository/models/broken/unload")
        x = np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32)
        st, r = self.srv.json("POST", "/v2/models/mlp/infer", mlp_request(x))
        self.assertEqual(st, 200, r)
        check_mlp(self, x, r)

        self.assertEqual(self.srv.json("POST", "/v2/repository/models/mlp/unload", {"parameters": {}}), (200, None))
        row = self.index()["mlp"]
        self.assertEqual((row["state"], row["reason"]), ("UNAVAILABLE", "unloaded"))
        self.assertNotIn("mlp", self.index({"ready": True}))
        self.assertIn("scale2x", self.index({"ready": True}))
        st, h, body = self.srv.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_request(x)))
        self.assertEqual(st, 503, body)
        self.assertEqual(h.get("retry-after"), "1")
        self.assertIn(b"not ready", body)
        self.assertEqual(self.srv.json("GET", "/v2/models/mlp/ready")[0], 503)
        self.assertEqual(self.srv.json("GET", "/v2/health/ready"), (200, {"ready": True}))  # not wanted

        self.assertEqual(self.srv.json("POST", "/v2/repository/models/mlp/load"), (200, None))
        self.assertEqual(self.index()["mlp"]["state"], "READY")
        st, r = self.srv.json("POST", "/v2/models/mlp/infer", mlp_request(x))
        self.assertEqual(st, 200, r)
        check_mlp(self, x, r)

    def test_load_of_an_unknown_model_changes_nothing(self):
        self.srv.json("POST", "/v2/repository/models/broken/unload")
        self.assertEqual(self.srv.json("GET", "/v2/health/ready")[0], 200)
        st, r = self.srv.json("POST", "/v2/repository/models/ghost/load")
        self.assertEqual(st, 404)
        self.assertIn("ghost", r["error"])
        self.assertEqual(self.srv.json("GET", "/v2/health/ready"), (200, {"ready": True}))
        self.assertNotIn("ghost", self.index())
        st, r = self.srv.json("POST", "/v2/repository/models/ghost/unload")
        self.assertEqual(st, 404)
        self.assertIn("ghost", r["error"])

    def test_load_refuses_models_in_the_request(self):
        st, r = self.srv.json("POST", "/v2/repository/models/mlp/load",
                              {"parameters": {"config": "{}", "file:1/model.onnx": "AAAA"}})
        self.assertEqual(st, 400)
        self.assertIn("not supported", r["error"])
        st, r = self.srv.json("POST", "/v2/repository/index", {"ready": "yes"})
        self.assertEqual(st, 400)
        self.assertIn("ready", r["error"])


class ModelControl(unittest.TestCase):
    """--model-control-mode none refuses load/unload; explicit with --load-model loads only the
    models named (the rest can be loaded through the API); bad combinations stop start-up."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.repo = make_repo(self.tmp.name, {"mlp": "mlp.onnx", "scale2x": "scale2x.onnx"},
                              files={"broken/1/model.onnx": "this is not an ONNX model"})
        self.x = np.random.default_rng(9).standard_normal((1, 64)).astype(np.float32)

    def tearDown(self):
        self.tmp.cleanup()

    def index(self, srv):
        st, rows = srv.json("POST", "/v2/repository/index")
        self.assertEqual(st, 200, rows)
        return {r["name"]: (r["state"], r["reason"]) for r in rows}

    def test_none_refuses_load_and_unload_and_keeps_serving(self):
        srv = Server(self.repo, "--model-control-mode", "none", wait_ready=False)
        try:
            srv.wait_live()
            for action in ("load", "unload"):
                for model in ("mlp", "broken", "ghost"):
                    st, r = srv.json("POST", "/v2/repository/models/%s/%s" % (model, action), {})
                    self.assertEqual(st, 403, r)
                    self.assertIn("explicit model load / unload is not allowed", r["error"])
                    self.assertIn("--model-control-mode", r["error"])
            rows = self.index(srv)
            self.assertEqual(rows["mlp"], ("READY", ""))
            self.assertEqual(rows["broken"][0], "UNAVAILABLE")  # every model was tried at start-up
            self.assertEqual(srv.json("GET", "/v2/health/ready")[0], 503)  # and broken cannot be dropped
            st, r = srv.json("POST", "/v2/models/mlp/infer", mlp_request(self.x))
            self.assertEqual(st, 200, r)
            check_mlp(self, self.x, r)
            self.assertIn('"model_control":"none"', srv.logs())
        finally:
            self.assertEqual(srv.finish(), 0)

    def test_loads_and_unloads_do_not_wait_for_a_busy_worker(self):
        """Loads and unloads run on the control thread, never on an inference worker: with the only worker
        busy for about 3 s, unloading and loading mlp are answered while that run goes on."""
        import threading
        from obs_support import metrics, slow_body
        srv = Server(make_repo(os.path.join(self.tmp.name, "busy"), {"slow": "slow.onnx", "mlp": "mlp.onnx"}),
                     "--workers", "1", "--deadline-ms", "0", "--inline-threshold-us", "0")
        try:
            iters = slow_iters(lambda n: self.assertEqual(srv.json("POST", "/v2/models/slow/infer", slow_body(n))[0], 200),
                               3.0)
            done = {}

            def run():
                done["status"] = srv.json("POST", "/v2/models/slow/infer", slow_body(iters))[0]
                done["at"] = time.monotonic()
            busy = threading.Thread(target=run)
            busy.start()
            wait_until(lambda: metrics(srv).value("ortserve_inflight_requests") >= 2, 10,
                       "the slow request in flight (the scrape is the other)")
            self.assertEqual(srv.json("POST", "/v2/repository/models/mlp/unload"), (200, None))
            self.assertEqual(srv.json("POST", "/v2/repository/models/mlp/load"), (200, None))
            answered = time.monotonic()
            self.assertTrue(busy.is_alive(), "the slow run ended before the load was answered: it proves nothing")
            busy.join(60)
            self.assertEqual(done["status"], 200)
            self.assertLess(answered, done["at"])
            st, r = srv.json("POST", "/v2/models/mlp/infer", mlp_request(self.x))
            self.assertEqual(st, 200, r)
            check_mlp(self, self.x, r)
        finally:
            self.assertEqual(srv.finish(), 0)

    def test_explicit_loads_only_the_listed_models(self):
        # The flag replaces the environment's list: only scale2x is loaded, broken is left alone.
        srv = Server(self.repo, "--model-control-mode", "explicit", "--load-model", "scale2x",
                     env={"ORTSERVE_LOAD_MODEL": "mlp,broken"})
        try:
            self.assertEqual(srv.json("GET", "/v2/health/ready"), (200, {"ready": True}))
            rows = self.index(srv)
            self.assertEqual(rows["scale2x"], ("READY", ""))
            self.assertEqual(rows["mlp"], ("UNAVAILABLE", "not loaded"))
            self.assertEqual(rows["broken"], ("UNAVAILABLE", "not loaded"))
            st, r = srv.json("POST", "/v2/models/mlp/infer", mlp_request(self.x))
            self.assertEqual(st, 503, r)
            self.assertIn("not ready", r["error"])
            self.assertEqual(srv.json("POST", "/v2/repository/models/mlp/load"), (200, None))
            st, r = srv.json("POST", "/v2/models/mlp/infer", mlp_request(self.x))
            self.assertEqual(st, 200, r)
            check_mlp(self, self.x, r)
            self.assertEqual(srv.json("GET", "/v2/health/ready")[0], 200)
            log = srv.logs()
            self.assertIn('"event":"model_not_loaded","model":"broken"', log)
            self.assertNotIn('"event":"model_unavailable"', log)
        finally:
            self.assertEqual(srv.finish(), 0)

    def test_environment_list_and_a_listed_broken_model(self):
        # ORTSERVE_LOAD_MODEL alone: both listed models are wanted, so the broken one keeps the
        # server unready (as with every model loaded), while scale2x, not listed, is not loaded.
        srv = Server(self.repo, wait_ready=False, env={"ORTSERVE_LOAD_MODEL": "mlp,broken"})
        try:
            srv.wait_live()
            self.assertEqual(srv.json("GET", "/v2/health/ready")[0], 503)
            rows = self.index(srv)
            self.assertEqual(rows["mlp"], ("READY", ""))
            self.assertEqual(rows["broken"][0], "UNAVAILABLE")
            self.assertIn("broken", rows["broken"][1])
            self.assertEqual(rows["scale2x"], ("UNAVAILABLE", "not loaded"))
            self.assertIn('"event":"model_unavailable","model":"broken"', srv.logs())
        finally:
            self.assertEqual(srv.finish(), 0)

    def start_fails(self, *args):
        """Runs `ortserve serve` on the repository and returns (exit status, output)."""
        p = subprocess.run([*WRAPPER, BIN, "serve", "--model-repository", self.repo, "--port", "0", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60 * TIME_SCALE)
        return p.returncode, p.stdout.decode(errors="replace")

    def test_bad_combinations_stop_start_up(self):
        cases = [
            (["--model-control-mode", "poll"], 2, "not supported"),
            (["--model-control-mode", "sometimes"], 2, "none or explicit"),
            (["--model-control-mode", "none", "--load-model", "mlp"], 2, "needs --model-control-mode explicit"),
            (["--load-model", "*", "--load-model", "mlp"], 2, "'*' must be the only --load-model"),
            (["--load-model", "../mlp"], 2, "not a model name"),
            (["--load-model", "mlp,ghost"], 1, "--load-model ghost: model 'ghost' is not in the repository"),
        ]
        for args, want_rc, want_msg in cases:
            with self.subTest(args=args):
                rc, out = self.start_fails(*args)
                self.assertEqual(rc, want_rc, out)
                self.assertIn(want_msg, out)


class PoolHints(unittest.TestCase):
    """The pool is planned from the models loaded at start-up: MobileNetV2's fixed 602 KB input
    makes the 1 MiB class hold many slots of a small budget; a model with a dynamic dim gives no
    hint and the budget is shared equally."""

    def slots(self, models, pool_bytes):
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, models), "--pool-bytes", pool_bytes)
            try:
                st, _, body = srv.request("GET", "/metrics")
                self.assertEqual(st, 200)
                return {int(size): int(float(n)) for size, n in re.findall(
                    r'^ortserve_pool_slots\{slot_bytes="(\d+)",state="free"\} (\S+)$', body.decode(), re.M)}
            finally:
                self.assertEqual(srv.finish(), 0)

    def test_fixed_size_model_gets_slots_of_its_size(self):
        hinted = self.slots({"mobilenetv2": "mobilenetv2.onnx"}, "24M")
        plain = self.slots({"scale2x": "scale2x.onnx"}, "24M")
        # 24 MiB / 8 classes = 3 MiB of 1 MiB slots, and one of the 5 MiB whole slots leave (with a 4 MiB)
        self.assertEqual(plain[1 << 20], 4)
        self.assertEqual(sum(k * v for k, v in plain.items()), 24 << 20)  # the whole budget
        self.assertGreaterEqual(hinted[1 << 20], 12)
        self.assertEqual(max(hinted), max(plain))  # the largest slot is kept
        self.assertLessEqual(sum(k * v for k, v in hinted.items()), 24 << 20)


if __name__ == "__main__":
    unittest.main(verbosity=2)
