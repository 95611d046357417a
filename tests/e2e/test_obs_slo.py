#!/usr/bin/python3
"""test_obs_slo.py — per-model SLOs from config.json's "slo" section {latency_ms, percentile,
error_rate}: successes slower than latency_ms count as latency violations, 5xx / 503 / 504 answers
as error violations, client errors (4xx) as neither; a model without an SLO counts nothing; a bad
"slo" section fails that model's load with a reason naming the problem, visible in
/v2/repository/index and the start-up log, and a corrected config.json loads through the
repository API."""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obs_support import (Server, fail_body, log_records, make_repo, metrics, mlp_body, post_json,  # noqa: E402
                         settled_metrics, slow_body, wait_until)

GOOD = {"latency_ms": 60000, "percentile": 99.9, "error_rate": 0.001}
BAD = {
    "bad_negative": ({"latency_ms": -1}, "slo.latency_ms must be a number of milliseconds > 0"),
    "bad_zero": ({"latency_ms": 0}, "slo.latency_ms must be a number of milliseconds > 0"),
    "bad_huge": ({"latency_ms": 1e400}, "slo.latency_ms must be a number of milliseconds > 0"),
    "bad_string": ({"latency_ms": "5"}, "slo.latency_ms must be a number"),
    "bad_key": ({"p99_ms": 5}, "unknown key 'p99_ms' in 'slo'"),
    "bad_percentile": ({"percentile": 100}, "slo.percentile must be a number > 0 and < 100"),
    "bad_error_rate": ({"error_rate": 1.5}, "slo.error_rate must be a number from 0 to 1"),
    "bad_type": ("fast", "'slo' must be an object"),
}


class Slo(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        models = {"fast": "mlp.onnx", "relaxed": "mlp.onnx", "timeouts": "slow.onnx", "errors": "fail.onnx",
                  "busy": "mlp.onnx", "noslo": "fail.onnx"}
        configs = {"fast": {"slo": {"latency_ms": 0.001}},
                   "relaxed": {"slo": GOOD},
                   "timeouts": {"slo": GOOD},
                   "errors": {"slo": GOOD},
                   "busy": {"max_queue": 0, "slo": GOOD}}
        for name, (slo, _) in BAD.items():
            models[name] = "mlp.onnx"
            configs[name] = {"slo": slo}
        cls.repo = make_repo(cls.tmp.name, models, configs)
        # every model on a worker: busy (max_queue 0) answers 503
        # not ready as a whole (some models fail to load, on purpose): wait for the good ones
        cls.srv = Server(cls.repo, "--inline-threshold-us", "0", wait_ready=False)
        for name in ("fast", "relaxed", "timeouts", "errors", "busy", "noslo"):
            wait_until(lambda name=name: cls.srv.request("GET", "/v2/models/%s/ready" % name)[0] == 200, 30,
                       "model %s ready" % name, interval=0.02)
        cls.before = metrics(cls.srv)
        cls.sent = {}  # requests sent per model

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        logs = cls.srv.logs()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d:\n%s" % (rc, logs[-6000:])

    def violations(self, model, kind):
        """Violations of `model` since the start, once every request sent to it so far is counted."""
        m = settled_metrics(self.srv, self.before, self.sent.get(model, 0), model=model)
        return m.value("ortserve_slo_violations_total", model=model, kind=kind) - \
            self.before.value("ortserve_slo_violations_total", model=model, kind=kind)

    def post(self, model, body, headers=None):
        self.sent[model] = self.sent.get(model, 0) + 1
        return post_json(self.srv, "/v2/models/%s/infer" % model, body, headers)[0]

    def test_latency_violations(self):
        for i in range(5):
            self.assertEqual(self.post("fast", mlp_body(1, i)), 200)
            self.assertEqual(self.post("relaxed", mlp_body(1, i)), 200)
        self.assertEqual(self.violations("fast", "latency"), 5)  # 1 us objective: every request breaks it
        self.assertEqual(self.violations("fast", "error"), 0)
        self.assertEqual(self.violations("relaxed", "latency"), 0)
        self.assertEqual(self.violations("relaxed", "error"), 0)

    def test_client_errors_are_not_violations(self):
        bad = mlp_body(1)
        bad["inputs"][0]["shape"] = [1, 65]
        self.assertEqual(self.post("relaxed", bad), 400)
        self.assertEqual(self.violations("relaxed", "error"), 0)
        self.assertEqual(self.violations("relaxed", "latency"), 0)

    def test_error_violations(self):
        self.assertEqual(self.post("errors", fail_body()), 500)
        self.assertEqual(self.post("busy", mlp_body(1)), 503)
        self.assertEqual(self.post("timeouts", slow_body(10 ** 7), {"Ortserve-Timeout-Ms": "30"}), 504)
        for model in ("errors", "busy", "timeouts"):
            self.assertEqual(self.violations(model, "error"), 1, model)
            self.assertEqual(self.violations(model, "latency"), 0, model)  # failures are never latency ones

    def test_objectives_are_exported(self):
        m = metrics(self.srv)
        self.assertEqual(m.one("ortserve_slo_latency_seconds", model="relaxed"), 60.0)
        self.assertEqual(m.one("ortserve_slo_latency_target_ratio", model="relaxed"), 0.999)
        self.assertEqual(m.one("ortserve_slo_error_budget_ratio", model="relaxed"), 0.001)
        self.assertEqual(m.one("ortserve_slo_latency_seconds", model="fast"), 1e-6)
        self.assertEqual(m.find("ortserve_slo_latency_seconds", model="noslo"), [])
        for name in set(BAD) - {"bad_key"}:  # never loaded (bad_key is fixed and loaded by another test)
            self.assertEqual(m.find("ortserve_slo_error_budget_ratio", model=name), [])

    def test_no_slo_counts_nothing(self):
        self.assertEqual(self.post("noslo", fail_body()), 500)
        m = settled_metrics(self.srv, self.before, self.sent["noslo"], model="noslo")
        self.assertEqual(m.value("ortserve_slo_violations_total", model="noslo"), 0)
        self.assertEqual(m.value("ortserve_requests_total", model="noslo", outcome="error") -
                         self.before.value("ortserve_requests_total", model="noslo", outcome="error"), 1)

    def test_server_not_ready_while_models_failed(self):
        self.assertEqual(self.srv.request("GET", "/v2/health/ready")[0], 503)
        self.assertEqual(metrics(self.srv).one("ortserve_ready"), 0)

    def test_bad_slo_fails_the_load_with_a_reason(self):
        st, index = self.srv.json("POST", "/v2/repository/index", {})
        self.assertEqual(st, 200)
        by_name = {e["name"]: e for e in index}
        for name, (_, reason) in BAD.items():
            e = by_name[name]
            self.assertEqual(e["state"], "UNAVAILABLE", name)
            self.assertIn(reason, e["reason"], name)
            st, _, body = post_json(self.srv, "/v2/models/%s/infer" % name, mlp_body(1))
            self.assertEqual(st, 503, name)  # the model exists but is unavailable
            self.assertIn(reason, json.loads(body)["error"], name)
        for name in ("fast", "relaxed", "timeouts", "errors", "busy", "noslo"):
            self.assertEqual(by_name[name]["state"], "READY", name)
        logged = {r["model"]: r["reason"] for r in log_records(self.srv) if r.get("event") == "model_unavailable"}
        for name, (_, reason) in BAD.items():
            self.assertIn(reason, logged.get(name, ""), name)

    def test_fixed_config_loads_through_the_repository_api(self):
        path = os.path.join(self.repo, "bad_key", "config.json")
        st, body = self.srv.json("POST", "/v2/repository/models/bad_key/load", {})
        self.assertEqual(st, 400, body)
        self.assertIn("unknown key 'p99_ms' in 'slo'", body["error"])
        with open(path, "w") as f:
            json.dump({"slo": {"latency_ms": 0.001}}, f)
        st, body = self.srv.json("POST", "/v2/repository/models/bad_key/load", {})
        self.assertEqual(st, 200, body)
        self.assertEqual(self.post("bad_key", mlp_body(1)), 200)
        self.assertEqual(self.violations("bad_key", "latency"), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
