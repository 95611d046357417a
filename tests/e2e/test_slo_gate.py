#!/usr/bin/python3
"""test_slo_gate.py — bench/slo_gate.py as a CI gate against a live server, with tiny loads: exit 0
for an SLO that must hold, 1 for a latency objective that cannot (1 us) and for a model that only
answers 503, 2 for usage and setup errors; client and server measurements; the --json report."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obs_support import SOURCE_DIR, Server, make_repo  # noqa: E402

GATE = os.path.join(SOURCE_DIR, "bench", "slo_gate.py")


class SloGate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.repo = make_repo(os.path.join(cls.tmp.name, "repo"), {"mlp": "mlp.onnx", "busy": "mlp.onnx"},
                             configs={"mlp": {"slo": {"latency_ms": 60000, "percentile": 99, "error_rate": 0.01}},
                                      "busy": {"max_queue": 0, "slo": {"latency_ms": 60000}}})
        cls.srv = Server(cls.repo, "--inline-threshold-us", "0")  # workers: busy (max_queue 0) answers 503
        cls.url = "http://127.0.0.1:%d" % cls.srv.port

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        logs = cls.srv.logs()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d:\n%s" % (rc, logs[-6000:])

    def gate(self, *args):
        p = subprocess.run(["/usr/bin/python3", GATE, "--url", self.url, "--requests", "40", "--concurrency", "2",
                            "--warmup", "2", "--duration", "30", *args], capture_output=True, timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_met(self):
        report = os.path.join(self.tmp.name, "met.json")
        rc, out, err = self.gate("--model", "mlp", "--repository", self.repo, "--json", report)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("SLO met", out)
        self.assertIn("p99 <= 60000.000 ms", out)
        with open(report) as f:
            r = json.load(f)
        self.assertTrue(r["met"])
        self.assertEqual(r["client"]["requests"], 40)
        self.assertEqual(r["client"]["errors"], 0)
        self.assertEqual(r["slo"], {"latency_ms": 60000, "percentile": 99, "error_rate": 0.01})
        self.assertEqual(r["server"]["successes"], 40 + 2)  # the server also saw the warm-up
        self.assertEqual(r["server"]["latency_violations"], 0)

    def test_latency_broken(self):
        rc, out, err = self.gate("--model", "mlp", "--repository", self.repo, "--latency-ms", "0.001")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("latency: FAIL", out)
        self.assertIn("errors:  PASS", out)
        self.assertIn("SLO BROKEN", out)

    def test_errors_broken(self):
        for measure in ("client", "server"):
            rc, out, err = self.gate("--model", "busy", "--repository", self.repo, "--measure", measure)
            self.assertEqual(rc, 1, out + err)
            self.assertIn("errors:  FAIL", out)
            self.assertIn("errors 40 of 40 (100.00%)", out)

    def test_server_measure(self):
        rc, out, err = self.gate("--model", "mlp", "--repository", self.repo, "--measure", "server")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("(violations 0.00% <= 1.00% of successes, server)", out)

    def test_usage_errors(self):
        rc, out, err = self.gate("--model", "nosuch", "--latency-ms", "5")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("GET /v2/models/nosuch: 404", err)
        rc, out, err = self.gate("--model", "mlp")  # no SLO anywhere
        self.assertEqual(rc, 2, out + err)
        self.assertIn("no SLO", err)
        bad = os.path.join(self.tmp.name, "bad.json")
        with open(bad, "w") as f:
            json.dump({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, f)
        rc, out, err = self.gate("--model", "mlp", "--latency-ms", "5", "--request", bad)
        self.assertEqual(rc, 2, out + err)
        self.assertIn("rejected the request as invalid (400)", err)
        rc, out, err = self.gate("--model", "mlp", "--latency-ms", "-1")
        self.assertEqual(rc, 2, out + err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
