#!/usr/bin/python3
"""test_obs_deploy.py — the deploy artefacts under deploy/:

- prometheus/prometheus.yml passes `promtool check config` (with its rule file);
- prometheus/prometheus-kubernetes.yml: its relabeling keeps exactly the opted-in, running ortserve
  pods with the annotated port and path (`promtool check service-discovery` on the same config with
  the pod discovery replaced by static targets carrying the same __meta_kubernetes_* labels: Debian's
  Prometheus is built without Kubernetes discovery);
- prometheus/alerts.yml passes `promtool check rules` and its unit tests (`promtool test rules
  alerts_test.yml`);
- grafana/ortserve-dashboard.json parses, is a well-formed dashboard, covers the required views,
  and every metric its PromQL selects exists on a live /metrics page.
(test_obs_prometheus.py loads the rules and runs the dashboard's queries in a real Prometheus.)"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obs_support import PROMTOOL, SOURCE_DIR, Server, make_repo, metrics, post_json, mlp_body  # noqa: E402
from obs_support import promql_metric_names  # noqa: E402

PROM_DIR = os.path.join(SOURCE_DIR, "deploy", "prometheus")
DASHBOARD = os.path.join(SOURCE_DIR, "deploy", "grafana", "ortserve-dashboard.json")
SYNTHETIC = {"up"}


def promtool(*args, cwd=None):
    p = subprocess.run([PROMTOOL, *args], capture_output=True, timeout=120, cwd=cwd)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


PODS = '''    static_configs:
      - targets: ["10.0.0.1:8080"]
        labels:
          __meta_kubernetes_pod_label_app_kubernetes_io_name: ortserve
          __meta_kubernetes_pod_label_app_kubernetes_io_version: "0.1.0"
          __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true"
          __meta_kubernetes_pod_annotation_prometheus_io_port: "8000"
          __meta_kubernetes_pod_phase: Running
          __meta_kubernetes_namespace: ml
          __meta_kubernetes_pod_name: ortserve-a
          __meta_kubernetes_pod_node_name: node1
      - targets: ["10.0.0.2"]
        labels:
          __meta_kubernetes_pod_label_app_kubernetes_io_name: ortserve
          __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true"
          __meta_kubernetes_pod_annotation_prometheus_io_port: "9000"
          __meta_kubernetes_pod_annotation_prometheus_io_path: /custom/metrics
          __meta_kubernetes_pod_phase: Running
          __meta_kubernetes_namespace: ml
          __meta_kubernetes_pod_name: ortserve-b
          __meta_kubernetes_pod_node_name: node2
      - targets: ["10.0.0.3:8080"]
        labels:
          __meta_kubernetes_pod_label_app_kubernetes_io_name: ortserve
          __meta_kubernetes_pod_annotation_prometheus_io_port: "8000"
          __meta_kubernetes_pod_phase: Running
          __meta_kubernetes_pod_name: not-annotated
      - targets: ["10.0.0.4:8080"]
        labels:
          __meta_kubernetes_pod_label_app_kubernetes_io_name: ortserve
          __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true"
          __meta_kubernetes_pod_annotation_prometheus_io_port: "8000"
          __meta_kubernetes_pod_phase: Pending
          __meta_kubernetes_pod_name: pending
      - targets: ["10.0.0.5:8080"]
        labels:
          __meta_kubernetes_pod_label_app_kubernetes_io_name: redis
          __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true"
          __meta_kubernetes_pod_annotation_prometheus_io_port: "6379"
          __meta_kubernetes_pod_phase: Running
          __meta_kubernetes_pod_name: other-app
'''


class Deploy(unittest.TestCase):
    def test_prometheus_config(self):
        rc, out = promtool("check", "config", os.path.join(PROM_DIR, "prometheus.yml"))
        self.assertEqual(rc, 0, out)
        self.assertIn("SUCCESS: 1 rule files found", out)

    def test_kubernetes_relabeling(self):
        with open(os.path.join(PROM_DIR, "prometheus-kubernetes.yml")) as f:
            text = f.read()
        self.assertIn("kubernetes_sd_configs:\n      - role: pod\n", text)
        rc, out = promtool("check", "config", "--syntax-only", os.path.join(PROM_DIR, "prometheus-kubernetes.yml"))
        if "field kubernetes_sd_configs not found" not in out:  # a Prometheus built with Kubernetes discovery
            self.assertEqual(rc, 0, out)
        with tempfile.TemporaryDirectory() as d:
            cfg = os.path.join(d, "k8s-static.yml")
            with open(cfg, "w") as f:
                f.write(text.replace("    kubernetes_sd_configs:\n      - role: pod\n", PODS)
                        .replace("rule_files:\n  - alerts.yml\n", ""))
            rc, out = promtool("check", "config", cfg)
            self.assertEqual(rc, 0, out)
            # static targets are there at once; the timeout only bounds the wait for more
            rc, out = promtool("check", "service-discovery", "--timeout=2s", cfg, "ortserve")
            self.assertEqual(rc, 0, out)
        targets = json.loads(out[out.index("["):])
        kept = sorted((t["labels"] for t in targets if t["labels"]), key=lambda x: x["pod"])
        self.assertEqual([k["pod"] for k in kept], ["ortserve-a", "ortserve-b"])
        a, b = kept
        self.assertEqual((a["__address__"], a["__metrics_path__"]), ("10.0.0.1:8000", "/metrics"))
        self.assertEqual((b["__address__"], b["__metrics_path__"]), ("10.0.0.2:9000", "/custom/metrics"))
        self.assertEqual((a["namespace"], a["node"], a["job"], a["app_version"]), ("ml", "node1", "ortserve", "0.1.0"))
        self.assertNotIn("app_version", b)

    def test_alert_rules(self):
        rc, out = promtool("check", "rules", os.path.join(PROM_DIR, "alerts.yml"))
        self.assertEqual(rc, 0, out)
        self.assertIn("SUCCESS: 10 rules found", out)

    def test_alert_rules_unit_tests(self):
        rc, out = promtool("test", "rules", "alerts_test.yml", cwd=PROM_DIR)
        self.assertEqual(rc, 0, out)
        self.assertIn("SUCCESS", out)
        with open(os.path.join(PROM_DIR, "alerts_test.yml")) as f:
            tested = set(re.findall(r"alertname: (\w+)", f.read()))
        with open(os.path.join(PROM_DIR, "alerts.yml")) as f:
            defined = set(re.findall(r"- alert: (\w+)", f.read()))
        self.assertEqual(tested, defined, "every alert has a unit test")


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD) as f:
            cls.dash = json.load(f)
        cls.targets = [(p["title"], t) for p in cls.dash["panels"] for t in p.get("targets", [])]

    def test_well_formed(self):
        d = self.dash
        for k in ("title", "uid", "panels", "templating", "schemaVersion", "time"):
            self.assertIn(k, d)
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        cells = set()
        for p in d["panels"]:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, "panel %r overlaps another" % p["title"])
                    cells.add((x, y))
            if p["type"] != "row":
                self.assertTrue(p.get("targets"), p["title"])
                self.assertTrue(p.get("description"), p["title"])
        variables = {v["name"] for v in d["templating"]["list"]}
        self.assertEqual(variables, {"datasource", "job", "instance", "model"})
        for title, t in self.targets:
            self.assertEqual(t["datasource"], {"type": "prometheus", "uid": "${datasource}"}, title)
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
            self.assertLessEqual(used, variables, title)

    def test_covers_the_required_views(self):
        exprs = " ".join(t["expr"] for _, t in self.targets)
        self.assertIn("histogram_quantile(0.99, sum by (le) (rate(ortserve_inference_duration_seconds_bucket", exprs)
        self.assertIn("histogram_quantile(0.5,", exprs)
        for needle in ('ortserve_requests_total{job=~"$job", instance=~"$instance", model=~"$model", '
                       'outcome="success"}',  # throughput
                       "sum by (model, outcome) (rate(ortserve_requests_total",  # errors by outcome
                       'result="zero_copy"',  # zero-copy ratio
                       "ortserve_pool_bytes", "ortserve_pool_slots", "ortserve_pool_acquire_failures_total",
                       "ortserve_queue_depth", "ortserve_inflight_requests", "ortserve_slo_violations_total",
                       "ortserve_slo_latency_seconds", "ortserve_memory_usage_bytes"):
            self.assertIn(needle, exprs)

    def test_metric_names_exist_on_a_live_server(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(tmp, {"mlp": "mlp.onnx"}, configs={"mlp": {"slo": {"latency_ms": 5}}})
            with Server(repo) as srv:
                self.assertEqual(post_json(srv, "/v2/models/mlp/infer", mlp_body(1))[0], 200)
                exported = metrics(srv).names() | SYNTHETIC
                self.assertEqual(srv.stop(), 0, srv.logs()[-4000:])
        used = set()
        for title, t in self.targets:
            names = promql_metric_names(t["expr"])
            self.assertTrue(names, "%s: no metric in %r" % (title, t["expr"]))
            self.assertLessEqual(names, exported, "%s: %r" % (title, t["expr"]))
            used |= names
        self.assertGreaterEqual(len(used), 25)


if __name__ == "__main__":
    unittest.main(verbosity=2)
