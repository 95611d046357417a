#!/usr/bin/python3
"""test_manifests.py — every YAML file under deploy/kubernetes and deploy/kserve, parsed (Debian's
python3-yaml) and checked against ortserve itself rather than against a copy of its rules:

- container args are `ortserve serve` options the binary lists in --help (and the manifests' args,
  run for real, start a server that refuses to load or unload models); environment variables are
  ORTSERVE_* names it lists;
- container ports equal the --port argument; probes use ortserve's health endpoints on that port
  (by number or name), and those endpoints answer 200 on the running server;
- Service, PodDisruptionBudget, ServiceMonitor and HorizontalPodAutoscaler select/target what the
  Deployment defines; the grace period outlasts the preStop pause plus the drain timeout;
- the HPA's metrics are the Prometheus adapter rules' names, and those series exist as gauges in
  what a live server's /metrics exports;
- memory: requests equal limits, the pool (--pool-bytes, or ortserve's default of a quarter of the
  limit) leaves at least half the limit and 512 MiB for the models and the rest, and the running
  server's pool is the size the argument asks for; --loops/--workers fit the CPU request;
- KServe: the ServingRuntime speaks v2 for the onnx format, uses only {{.Name}}/{{.Namespace}}
  placeholders, and its args, with {{.Name}} replaced and a directory laid out as KServe's storage
  initializer leaves /mnt/models, serve the InferenceService's model under its name.
"""
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import unittest

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from deploy_support import (MODELS, SRC, LiveServer, default_pool_bytes, demo_repo, metric_types,  # noqa: E402
                            metric_value, parse_args, parse_quantity, parse_size, serve_options)

K8S = os.path.join(SRC, "deploy", "kubernetes")
KSERVE = os.path.join(SRC, "deploy", "kserve")
HEALTH = {"/v2/health/live", "/v2/health/ready"}
OTHER_ENV = {"ORT_DISABLE_TELEMETRY"}  # ONNX Runtime's own switch, not an ortserve option
IMAGE_UID = 10001  # the Dockerfile's USER (test_container.py checks that side)


def load(directory):
    docs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
        with open(path) as f:
            docs[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d is not None]
    return docs


def one(docs, kind):
    found = [d for ds in docs.values() for d in ds if d.get("kind") == kind]
    assert len(found) == 1, "%d %s documents" % (len(found), kind)
    return found[0]


class Container:
    """A container spec read the way ortserve reads it."""

    def __init__(self, spec, opts):
        self.spec, self.opts = spec, opts
        self.args = parse_args(spec.get("args", []))
        self.argd = dict(self.args)

    def arg(self, name):
        return self.argd.get(name)

    def port(self):
        return int(self.arg("port") or 8000)

    def ports(self):
        """The ports the container listens on: --port, then --grpc-port when it is set and not -1."""
        g = self.arg("grpc-port")
        return [self.port()] + ([int(g)] if g is not None and int(g) >= 0 else [])


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.opts = serve_options()
        cls.envs = {o.env for o in cls.opts.values()}
        cls.k8s = load(K8S)
        cls.kserve = load(KSERVE)
        cls.deploy = one(cls.k8s, "Deployment")
        cls.pod = cls.deploy["spec"]["template"]
        (c,) = cls.pod["spec"]["containers"]
        cls.c = Container(c, cls.opts)
        cls.runtime = one(cls.kserve, "ServingRuntime")
        (rc,) = cls.runtime["spec"]["containers"]
        cls.rc = Container(rc, cls.opts)
        cls.tmp = tempfile.mkdtemp(prefix="osv-manifests-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- checks shared by the Deployment's and the ServingRuntime's container ---------------------

    def check_container(self, c, where):
        for k, v in c.args:
            self.assertIn(k, self.opts, "%s: --%s is not an `ortserve serve` option" % (where, k))
            if v is None:
                self.assertEqual(self.opts[k].arg, "0|1", "%s: --%s needs a value" % (where, k))
        for e in c.spec.get("env", []):
            if e["name"].startswith("ORTSERVE_"):
                self.assertIn(e["name"], self.envs, "%s: %s is not an ortserve variable" % (where, e["name"]))
            else:
                self.assertIn(e["name"], OTHER_ENV, where)
        ports = c.spec["ports"]
        listed = [p["containerPort"] for p in ports]
        self.assertEqual(listed[0], c.port(), "%s: the first port != --port" % where)
        self.assertTrue(set(listed) <= set(c.ports()), "%s: ports %s but ortserve listens on %s" %
                        (where, listed, c.ports()))
        names = {p.get("name"): p["containerPort"] for p in ports if p.get("name")}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe not in c.spec:
                continue
            get = c.spec[probe]["httpGet"]
            self.assertIn(get["path"], HEALTH, "%s %s" % (where, probe))
            port = names[get["port"]] if isinstance(get["port"], str) else get["port"]
            self.assertEqual(port, c.port(), "%s %s port" % (where, probe))
        self.assertEqual(c.arg("host"), "0.0.0.0", "%s: reachable from outside the pod" % where)
        # Memory: Guaranteed QoS, and room beside the pool.
        res = c.spec["resources"]
        limit = parse_quantity(res["limits"]["memory"])
        self.assertEqual(parse_quantity(res["requests"]["memory"]), limit, where)
        pool = parse_size(c.arg("pool-bytes")) if c.arg("pool-bytes") else default_pool_bytes(int(limit))
        self.assertLessEqual(pool, limit / 2, "%s: pool %d of limit %d" % (where, pool, limit))
        self.assertGreaterEqual(limit - pool, 512 << 20, where)
        # Threads: ortserve's defaults count the node's CPUs, not the pod's.
        cpus = math.ceil(parse_quantity(res["requests"]["cpu"]))
        for k in ("loops", "workers"):
            self.assertIsNotNone(c.arg(k), "%s: --%s defaults to the node's CPU count" % (where, k))
            self.assertLessEqual(int(c.arg(k)), cpus, where)
        sc = c.spec.get("securityContext", {})
        self.assertFalse(sc.get("allowPrivilegeEscalation", True), where)
        self.assertTrue(sc.get("readOnlyRootFilesystem"), where)
        self.assertEqual(sc.get("capabilities", {}).get("drop"), ["ALL"], where)

    def server_args(self, c, repo, subst=None):
        """The container's args, run here: the repository replaced (host and port are overridden by
        LiveServer); placeholders substituted."""
        out = []
        for k, v in c.args:
            if k == "model-repository":
                v = repo
            elif v is not None:
                for a, b in (subst or {}).items():
                    v = v.replace(a, b)
            out.append("--%s" % k if v is None else "--%s=%s" % (k, v))
        return out

    def container_env(self, c, subst=None):
        env = {}
        for e in c.spec.get("env", []):
            v = e["value"]
            for a, b in (subst or {}).items():
                v = v.replace(a, b)
            env[e["name"]] = v
        return env

    # ---- Kubernetes ---------------------------------------------------------------------------------

    def test_files_parse_and_kustomization_lists_them(self):
        for docs in (self.k8s, self.kserve):
            for name, ds in docs.items():
                self.assertTrue(ds, name)
                for d in ds:
                    self.assertIn("apiVersion", d, name)
                    self.assertIn("kind", d, name)
                    if d["kind"] != "Kustomization":
                        self.assertTrue(d["metadata"]["name"], name)
        kust = self.k8s["kustomization.yaml"][0]
        listed = set(kust["resources"])
        self.assertEqual(listed, set(self.k8s) - {"kustomization.yaml", "prometheus-adapter-rules.yaml"})
        self.assertIn(self.c.spec["image"].split(":")[0], [i["name"] for i in kust.get("images", [])])

    def test_deployment_container(self):
        self.check_container(self.c, "Deployment")
        spec = self.pod["spec"]
        sc = spec["securityContext"]
        self.assertTrue(sc["runAsNonRoot"])
        self.assertEqual(sc["runAsUser"], IMAGE_UID)
        self.assertEqual(self.deploy["spec"]["selector"]["matchLabels"].items() - self.pod["metadata"]["labels"].items(),
                         set())
        # Drain: preStop pause + --drain-timeout-ms must end before the SIGKILL.
        pre = self.c.spec["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre[0], "sleep")
        drain_ms = int(self.c.arg("drain-timeout-ms") or 10000)
        self.assertGreater(spec["terminationGracePeriodSeconds"], int(pre[1]) + drain_ms / 1000)
        self.assertIn("startupProbe", self.c.spec)
        ann = self.pod["metadata"]["annotations"]
        self.assertEqual(int(ann["prometheus.io/port"]), self.c.port())
        self.assertEqual(ann["prometheus.io/path"], "/metrics")

    def test_pods_pass_the_prometheus_pod_discovery_filters(self):
        """deploy/prometheus/prometheus-kubernetes.yml keeps pods by label and annotation: the pod
        template must pass every such `keep` rule."""
        path = os.path.join(SRC, "deploy", "prometheus", "prometheus-kubernetes.yml")
        with open(path) as f:
            cfg = yaml.safe_load(f)
        meta = {}
        for kind, values in (("label", self.pod["metadata"]["labels"]),
                             ("annotation", self.pod["metadata"]["annotations"])):
            for k, v in values.items():
                meta["__meta_kubernetes_pod_%s_%s" % (kind, re.sub(r"[^a-zA-Z0-9_]", "_", k))] = str(v)
        kept = 0
        for job in cfg["scrape_configs"]:
            for rule in job.get("relabel_configs", []):
                src = rule.get("source_labels", [])
                if rule.get("action") == "keep" and len(src) == 1 and \
                        re.match(r"__meta_kubernetes_pod_(label|annotation)_", src[0]):
                    self.assertRegex(meta.get(src[0], ""), "^(?:%s)$" % rule.get("regex", "(.*)"), src[0])
                    kept += 1
                elif len(src) == 2 and src[1] == "__meta_kubernetes_pod_annotation_prometheus_io_port":
                    self.assertEqual(int(meta[src[1]]), self.c.port())
        self.assertGreater(kept, 0)

    def test_service_pdb_servicemonitor_select_the_pods(self):
        labels = self.pod["metadata"]["labels"]
        svc = one(self.k8s, "Service")
        self.assertLessEqual(svc["spec"]["selector"].items(), labels.items())
        port_names = {p["name"] for p in self.c.spec["ports"]}
        for p in svc["spec"]["ports"]:
            self.assertIn(p["targetPort"], port_names | {self.c.port()})
        pdb = one(self.k8s, "PodDisruptionBudget")
        self.assertLessEqual(pdb["spec"]["selector"]["matchLabels"].items(), labels.items())
        hpa = one(self.k8s, "HorizontalPodAutoscaler")
        self.assertLess(pdb["spec"]["minAvailable"], min(self.deploy["spec"]["replicas"], hpa["spec"]["minReplicas"]),
                        "a drain must be able to evict a pod")
        sm = one(self.k8s, "ServiceMonitor")
        self.assertLessEqual(sm["spec"]["selector"]["matchLabels"].items(), svc["metadata"]["labels"].items())
        for ep in sm["spec"]["endpoints"]:
            self.assertIn(ep["port"], {p["name"] for p in svc["spec"]["ports"]})
            self.assertEqual(ep["path"], "/metrics")

    def adapter_rules(self):
        cm = self.k8s["prometheus-adapter-rules.yaml"][0]
        return yaml.safe_load(cm["data"]["config.yaml"])["rules"]

    def test_hpa_uses_the_adapter_rules(self):
        hpa = one(self.k8s, "HorizontalPodAutoscaler")
        ref = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((ref["kind"], ref["name"]), ("Deployment", self.deploy["metadata"]["name"]))
        served = {}
        for r in self.adapter_rules():
            series = re.match(r"^'?([a-zA-Z_:][a-zA-Z0-9_:]*)\{", r["seriesQuery"]).group(1)
            self.assertEqual(set(r["resources"]["overrides"]), {"namespace", "pod"})
            self.assertRegex(series, r["name"]["matches"])
            served[r["name"].get("as") or series] = series
            self.assertNotIn("rate(", r["metricsQuery"], "gauges are averaged, not rated")
        names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        self.assertTrue(names)
        for n in names:
            self.assertIn(n, served, "the HPA asks for %s, which no adapter rule serves" % n)
        self.assertGreaterEqual(hpa["spec"]["minReplicas"], 2)
        type(self).adapter_series = sorted(served.values())

    def test_live_server_with_the_deployment_args(self):
        repo = demo_repo(os.path.join(self.tmp, "demo", "models"))
        args = self.server_args(self.c, repo)
        with LiveServer(args, env=self.container_env(self.c)) as srv:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                path = self.c.spec[probe]["httpGet"]["path"]
                self.assertEqual(srv.get(path)[0], 200, "%s %s" % (probe, path))
            st, body = srv.get("/metrics")
            self.assertEqual(st, 200)
            text = body.decode()
            types = metric_types(text)
            self.test_hpa_uses_the_adapter_rules()
            for series in self.adapter_series:
                self.assertEqual(types.get(series), "gauge", "%s is not a gauge in /metrics" % series)
                self.assertIsNotNone(metric_value(text, series))
            # The pool the server made is the one the manifest sized.
            pool = sum(float(v) for v in re.findall(r'^ortserve_pool_bytes\{state="\w+"\} (\S+)$', text, re.M))
            want = parse_size(self.c.arg("pool-bytes"))
            self.assertTrue(0.9 * want <= pool <= want, "pool %d for --pool-bytes %d" % (pool, want))
            # Replicas cannot drift apart: the repository API may not load or unload models.
            self.assertEqual(self.c.arg("model-control-mode"), "none")
            st, body = srv.get("/v2/repository/models/mlp/unload", "POST", "{}")
            self.assertEqual(st, 403, body)
            self.assertEqual(srv.get("/v2/models/mlp/ready")[0], 200)
        self.assertEqual(srv.proc.returncode, 0, srv.logs())

    # The HPA averages ortserve_inflight_requests over the pods: on an idle server it must read exactly
    # 1 (the scrape itself), whatever the requests before it did (requests sent with "Connection: close"
    # were once subtracted twice, driving the gauge below zero).
    def test_inflight_gauge_returns_to_idle(self):
        mnt = os.path.join(self.tmp, "idle")
        os.makedirs(os.path.join(mnt, "1"))
        shutil.copyfile(os.path.join(MODELS, "mlp.onnx"), os.path.join(mnt, "1", "model.onnx"))
        x = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]})
        with LiveServer(["--model-repository", mnt, "--model-name", "mlp"]) as srv:
            for _ in range(3):
                self.assertEqual(srv.get("/v2/health/ready", headers={"Connection": "close"})[0], 200)
                self.assertEqual(srv.get("/v2/models/mlp/infer", "POST", x, {"Connection": "close"})[0], 200)
                self.assertEqual(srv.get("/v2/models/mlp/infer", "POST", x)[0], 200)
            # A request leaves the gauge just after its response is written: poll (bounded) until the
            # last one has; a gauge driven below zero never comes back to 1.
            deadline = time.monotonic() + 10
            while True:
                text = srv.get("/metrics")[1].decode()
                if metric_value(text, "ortserve_inflight_requests") == 1 or time.monotonic() > deadline:
                    break
            self.assertEqual(metric_value(text, "ortserve_queue_depth"), 0)
            self.assertEqual(metric_value(text, "ortserve_inflight_requests"), 1)

    # ---- KServe -------------------------------------------------------------------------------------

    def test_serving_runtime(self):
        spec = self.runtime["spec"]
        self.assertIn("v2", spec["protocolVersions"])
        self.assertIn("onnx", [f["name"] for f in spec["supportedModelFormats"]])
        self.assertEqual(self.rc.spec["name"], "kserve-container")
        self.assertEqual(self.rc.arg("model-repository"), "/mnt/models")
        self.assertEqual(self.rc.arg("model-name"), "{{.Name}}")
        text = json.dumps(self.rc.spec)
        for ph in re.findall(r"\{\{[^}]*\}\}", text):
            self.assertIn(ph, ("{{.Name}}", "{{.Namespace}}"), "KServe fills only ObjectMeta fields")
        self.check_container(self.rc, "ServingRuntime")
        ann = spec.get("annotations", {})
        self.assertEqual(int(ann["prometheus.kserve.io/port"]), self.rc.port())
        self.assertEqual(ann["prometheus.kserve.io/path"], "/metrics")

    def test_inference_service(self):
        isvc = one(self.kserve, "InferenceService")
        model = isvc["spec"]["predictor"]["model"]
        self.assertEqual(model["runtime"], self.runtime["metadata"]["name"])
        self.assertEqual(model["modelFormat"]["name"], "onnx")
        self.assertEqual(model["protocolVersion"], "v2")
        self.assertRegex(isvc["metadata"]["name"], r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

    def test_live_server_as_kserve_runs_it(self):
        isvc = one(self.kserve, "InferenceService")
        name = isvc["metadata"]["name"]
        mnt = os.path.join(self.tmp, "mnt", "models")  # what the storage initializer leaves
        os.makedirs(os.path.join(mnt, "1"))
        shutil.copyfile(os.path.join(MODELS, "mlp.onnx"), os.path.join(mnt, "1", "model.onnx"))
        subst = {"{{.Name}}": name, "{{.Namespace}}": "default"}
        args = self.server_args(self.rc, mnt, subst)
        with LiveServer(args, env=self.container_env(self.rc, subst)) as srv:
            self.assertEqual(srv.get(self.rc.spec["readinessProbe"]["httpGet"]["path"])[0], 200, srv.logs())
            self.assertEqual(srv.get("/v2/models/%s/ready" % name)[0], 200)
            x = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": [0.25] * 128}]}
            st, body = srv.get("/v2/models/%s/infer" % name, "POST", json.dumps(x))
            self.assertEqual(st, 200, body)
            r = json.loads(body)
            self.assertEqual(r["model_name"], name)
            self.assertEqual(r["outputs"][0]["shape"], [2, 10])
            st, body = srv.get("/v2/repository/index", "POST", b"{}")
            self.assertEqual([m["name"] for m in json.loads(body)], [name])
        self.assertEqual(srv.proc.returncode, 0, srv.logs())


if __name__ == "__main__":
    unittest.main(verbosity=2)
