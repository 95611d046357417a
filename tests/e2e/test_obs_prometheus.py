#!/usr/bin/python3
"""test_obs_prometheus.py — a real Prometheus (Debian's /usr/bin/prometheus) on loopback scraping a
real ortserve every second, with deploy/prometheus/alerts.yml loaded; everything is asserted through
Prometheus's HTTP API:

- the target is up (`up{job="ortserve"} == 1`) and its scrape has no error;
- Prometheus negotiated OpenMetrics (its metadata names the counter family without _total) and
  ingested the page with its own parser;
- a request counter increases after traffic;
- every alert rule loads and evaluates with health "ok", and selects only metrics the server exports;
- every query of deploy/grafana/ortserve-dashboard.json evaluates, and returns series.

Prometheus runs with a temporary TSDB and a generated config, and is killed at the end."""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obs_support import (SOURCE_DIR, Prometheus, Server, make_repo, metrics, mlp_body, post_json,  # noqa: E402
                         promql_metric_names, wait_until)

ALERTS = os.path.join(SOURCE_DIR, "deploy", "prometheus", "alerts.yml")
DASHBOARD = os.path.join(SOURCE_DIR, "deploy", "grafana", "ortserve-dashboard.json")
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}
WAIT = 60  # seconds; scrapes and rule evaluations happen every second


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def grafana_to_promql(expr):
    return (expr.replace("$__rate_interval", "1m").replace('"$job"', '"ortserve"')
            .replace('"$instance"', '".*"').replace('"$model"', '".*"'))


class WithPrometheus(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "fail": "fail.onnx"},
                         configs={"mlp": {"slo": {"latency_ms": 50, "percentile": 99, "error_rate": 0.01}}})
        cls.srv = Server(repo)
        try:
            cls.prom = Prometheus(["127.0.0.1:%d" % cls.srv.port], rule_files=[ALERTS], interval="1s")
        except Exception:
            cls.srv.__exit__(None)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.prom.close()
        rc = cls.srv.stop()
        logs = cls.srv.logs()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d:\n%s" % (rc, logs[-6000:])

    def value(self, expr):
        r = self.prom.query(expr)
        return r[0][1] if r else None

    def wait_up(self):
        return wait_until(lambda: self.value('up{job="ortserve"}') == 1, WAIT, 'up{job="ortserve"} == 1',
                          interval=0.1)

    def test_1_target_up(self):
        self.wait_up()
        targets = self.prom.api("targets")["activeTargets"]
        self.assertEqual(len(targets), 1)
        t = targets[0]
        self.assertEqual((t["labels"]["job"], t["health"], t["lastError"]), ("ortserve", "up", ""), t)
        self.assertEqual(t["scrapeUrl"], "http://127.0.0.1:%d/metrics" % self.srv.port)

    def test_2_openmetrics_negotiated(self):
        """With OpenMetrics, a counter's family (and so Prometheus's metadata) has no _total suffix."""
        self.wait_up()
        meta = wait_until(lambda: self.prom.api("targets/metadata", match_target='{job="ortserve"}',
                                                metric="ortserve_requests"), WAIT, "metadata of ortserve_requests",
                          interval=0.1)
        self.assertEqual(meta[0]["type"], "counter")
        self.assertEqual(meta[0]["help"], "Inference requests by outcome.")
        self.assertEqual(self.prom.api("targets/metadata", match_target='{job="ortserve"}',
                                       metric="ortserve_requests_total"), [])
        hist = self.prom.api("targets/metadata", match_target='{job="ortserve"}',
                             metric="ortserve_inference_duration_seconds")
        self.assertEqual(hist[0]["type"], "histogram")

    def test_3_request_counter_increases(self):
        self.wait_up()
        q = 'sum(ortserve_requests_total{job="ortserve", model="mlp", outcome="success"})'
        wait_until(lambda: self.value(q) is not None, WAIT, "the counter series", interval=0.1)
        before = self.value(q)
        for i in range(5):
            self.assertEqual(post_json(self.srv, "/v2/models/mlp/infer", mlp_body(1, i))[0], 200)
        self.assertEqual(post_json(self.srv, "/v2/models/fail/infer", {"inputs": []})[0], 400)
        wait_until(lambda: (self.value(q) or 0) >= before + 5, WAIT, "the counter to rise by 5", interval=0.1)
        wait_until(lambda: (self.value('sum(ortserve_requests_total{job="ortserve", model="fail", '
                                       'outcome="invalid"})') or 0) >= 1, WAIT, "the invalid counter", interval=0.1)

    def test_4_alert_rules_healthy_and_use_exported_metrics(self):
        self.wait_up()
        exported = metrics(self.srv).names() | SYNTHETIC

        def healthy():
            groups = self.prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if len(rules) == 10 and all(r["health"] == "ok" and not r.get("lastError") for r in rules):
                return rules
            return None
        rules = wait_until(healthy, WAIT, "every alert rule evaluated with health ok", interval=0.1)
        for r in rules:
            self.assertEqual(r["type"], "alerting")
            self.assertIn(r["labels"].get("severity"), ("critical", "warning", "info"), r["name"])
            self.assertTrue(r["annotations"].get("summary") and r["annotations"].get("description"), r["name"])
            names = promql_metric_names(r["query"])
            self.assertTrue(names, r["name"])
            self.assertLessEqual(names, exported, "%s selects metrics ortserve does not export" % r["name"])
        # a healthy server with a healthy model fires nothing
        self.assertEqual([a for a in self.prom.api("alerts")["alerts"] if a["state"] == "firing"], [])

    def test_5_dashboard_queries_evaluate_and_return_series(self):
        self.wait_up()
        for i in range(5):
            self.assertEqual(post_json(self.srv, "/v2/models/mlp/infer", mlp_body(1, i))[0], 200)
        # rates need two samples of the new traffic in the 1m window
        wait_until(lambda: (self.value('sum(rate(ortserve_requests_total{job="ortserve", outcome="success"}[1m]))')
                            or 0) > 0, WAIT, "a non-zero request rate", interval=0.1)
        empty = []
        for title, expr in dashboard_exprs():
            result = self.prom.query(grafana_to_promql(expr))  # raises on a parse or evaluation error
            if not result:
                empty.append((title, expr))
        self.assertEqual(empty, [], "dashboard queries without any series")


if __name__ == "__main__":
    unittest.main(verbosity=2)
