#!/usr/bin/python3
"""test_obs_metrics.py — GET /metrics on a live server after mixed traffic (successes, 4xx, 500, 503
from a full queue and from a full pool, 504), in the Prometheus text format and in OpenMetrics:

- `promtool check metrics` on both pages (for OpenMetrics, whose counter samples carry a _total
  suffix the family name lacks, promtool's text-format linter can only report "no help text" for
  exactly those names; anything else fails), plus Prometheus's own OpenMetrics parser (`promtool tsdb
  create-blocks-from openmetrics`) and a strict structural check (obs_support.Exposition);
- every required family exists with the right type and labels, and moves with the traffic.

One server (setUpClass) with --inline-threshold-us 0 (every model runs on a worker, so the queue
histogram moves), --workers 1 (a slow run makes others queue), and a small pool (five 64 KiB slots)
that held partial uploads exhaust."""
import json
import os
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obs_support import (Exposition, RawConn, Server, cgroup_memory_known, fail_body, make_repo,  # noqa: E402
                         metrics, mlp_body, post_json, promtool_check_metrics, promtool_parse_openmetrics,
                         request_bytes, scrape, settled_metrics, slow_body, wait_until)

LONG = "m" * 120 + "-long.1"  # a 127-byte model name (the longest allowed) in every per-model family
BIG_N = 6144  # scale2x input of 24 KiB (+ 24 KiB output): needs a 64 KiB slot


def scale2x_binary(n, head_only_part=None):
    """A binary-extension infer request for scale2x with n floats; returns the request bytes."""
    x = np.arange(n, dtype=np.float32)
    hdr = json.dumps({"inputs": [{"name": "x", "shape": [n], "datatype": "FP32",
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    return request_bytes("POST", "/v2/models/scale2x/infer", hdr + x.tobytes(),
                         [("Inference-Header-Content-Length", str(len(hdr)))])


class Metrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(
            cls.tmp.name,
            {"mlp": "mlp.onnx", "busy": "mlp.onnx", "slow": "slow.onnx", "fail": "fail.onnx",
             "scale2x": "scale2x.onnx", LONG: "mlp.onnx"},
            configs={"mlp": {"slo": {"latency_ms": 0.001}},
                     "busy": {"max_queue": 0, "slo": {"latency_ms": 1000}},
                     # a request may shorten the deadline, not lift it: slow's own allows the queue phase
                     "slow": {"slo": {"latency_ms": 10000}, "deadline_ms": 30000}})
        cls.srv = Server(repo, "--inline-threshold-us", "0", "--workers", "1", "--pool-bytes", "1M",
                         "--pool-max-slot-bytes", "64K")
        srv = cls.srv
        cls.before = metrics(srv)
        cls.statuses = {}

        def note(name, st):
            cls.statuses.setdefault(name, []).append(st)

        # successes: 3 single + 1 batch of 4 (mlp), one on the long-named model
        for i in range(3):
            note("mlp", post_json(srv, "/v2/models/mlp/infer", mlp_body(1, i))[0])
        note("mlp_batch4", post_json(srv, "/v2/models/mlp/infer", mlp_body(4, 9))[0])
        note("long", post_json(srv, "/v2/models/%s/infer" % LONG, mlp_body(1))[0])
        # 4xx on a known model (wrong shape) and on an unknown one
        bad = mlp_body(1)
        bad["inputs"][0]["shape"] = [1, 63]
        bad["inputs"][0]["data"] = bad["inputs"][0]["data"][:63]
        note("mlp_400", post_json(srv, "/v2/models/mlp/infer", bad)[0])
        note("nosuch_404", post_json(srv, "/v2/models/nosuch/infer", mlp_body(1))[0])
        # 500: ONNX Runtime fails the run
        note("fail_500", post_json(srv, "/v2/models/fail/infer", fail_body())[0])
        # 503: max_queue 0
        note("busy_503", post_json(srv, "/v2/models/busy/infer", mlp_body(1))[0])
        # 504: the watchdog cancels a run past its deadline
        note("slow_504", post_json(srv, "/v2/models/slow/infer", slow_body(10 ** 7),
                                   {"Ortserve-Timeout-Ms": "50"})[0])
        # binary request sent in one piece: the head's read carries body bytes (readahead copy)
        with RawConn(srv.port) as rc:
            rc.send(scale2x_binary(256))
            note("scale2x_binary", rc.read_response().status)

        # queue depth: one long run occupies the single worker, two more wait behind it
        cls.queue_seen = cls._observe_queue(srv)
        # pool exhaustion: partial uploads hold every 64 KiB slot, one more request gets 503
        cls.pool_seen = cls._exhaust_pool(srv)

        # 14 requests to known models (the 404 counts nowhere): wait until all are accounted for
        cls.after = settled_metrics(srv, cls.before, 14)
        cls.text_ct, cls.text = scrape(srv)
        cls.om_ct, cls.om = scrape(srv, openmetrics=True)

    @classmethod
    def _observe_queue(cls, srv):
        """Three runs of ~250 ms each on the single worker: whichever goes first, the other two wait
        in the queue for 250 ms or more, long enough for a scrape to see them."""
        results = []

        def run():
            results.append(post_json(srv, "/v2/models/slow/infer", slow_body(40000),
                                     {"Ortserve-Timeout-Ms": "30000"})[0])
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        seen = {}

        def queued():
            m = metrics(srv)
            if m.value("ortserve_queue_depth") >= 1 and m.value("ortserve_queued_requests", model="slow") >= 1:
                seen["depth"] = m.value("ortserve_queue_depth")
                seen["model_queued"] = m.value("ortserve_queued_requests", model="slow")
                return True
            return False
        try:
            wait_until(queued, 20, "a queued request in /metrics")
        finally:
            for t in threads:
                t.join(60)
        seen["statuses"] = results
        return seen

    @classmethod
    def _exhaust_pool(cls, srv):
        # From an idle server: a slot or a socket of the phase before, released a moment after its
        # response was read, would otherwise count in "before" and not in "during".
        m = wait_until(lambda: (lambda x: x if x.one("ortserve_pool_bytes", state="in_use") == 0 and
                                x.one("ortserve_open_connections") <= 1 and
                                x.one("ortserve_inflight_requests") <= 1 else None)(metrics(srv)), 20,
                       "an idle server before the pool is exhausted")
        free = int(m.one("ortserve_pool_slots", slot_bytes="65536", state="free"))
        seen = {"free": free, "before": m}
        req = scale2x_binary(BIG_N)
        held = []
        try:
            for _ in range(free):
                c = RawConn(srv.port)
                held.append(c)
                c.send(req[:len(req) // 2])  # head + half the tensor: the slot is taken, the rest awaited
            # Both gauges, polled together: a scrape served by the other loop thread can land between a
            # held upload's slot acquisition and its in-flight count (one loop iteration apart).
            base = m.one("ortserve_inflight_requests")
            seen["during"] = wait_until(
                lambda: (lambda x: x if x.one("ortserve_pool_slots", slot_bytes="65536", state="in_use") == free and
                         x.one("ortserve_inflight_requests") - base >= free else None)(metrics(srv)), 20,
                "every 64 KiB slot in use and its upload in flight")
            with RawConn(srv.port) as c:
                c.send(req)
                r = c.read_response()
                seen["status"], seen["retry_after"] = r.status, r.header("Retry-After")
            seen["after_503"] = metrics(srv)
        finally:
            for c in held:
                c.close()
        seen["released"] = wait_until(
            lambda: (lambda x: x if x.one("ortserve_pool_slots", slot_bytes="65536", state="in_use") == 0
                     else None)(metrics(srv)), 20, "slots released after the uploads were abandoned")
        return seen

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        logs = cls.srv.logs()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d:\n%s" % (rc, logs[-8000:])

    def delta(self, name, **labels):
        return self.after.value(name, **labels) - self.before.value(name, **labels)

    # ---- the traffic itself ----------------------------------------------------------------------------

    def test_00_traffic_had_every_status(self):
        s = self.statuses
        self.assertEqual(s["mlp"], [200, 200, 200])
        self.assertEqual(s["mlp_batch4"], [200])
        self.assertEqual(s["long"], [200])
        self.assertEqual(s["mlp_400"], [400])
        self.assertEqual(s["nosuch_404"], [404])
        self.assertEqual(s["fail_500"], [500])
        self.assertEqual(s["busy_503"], [503])
        self.assertEqual(s["slow_504"], [504])
        self.assertEqual(s["scale2x_binary"], [200])
        self.assertEqual(sorted(self.queue_seen["statuses"]), [200, 200, 200])
        self.assertEqual(self.pool_seen["status"], 503)
        self.assertIsNotNone(self.pool_seen["retry_after"])

    # ---- format checks ---------------------------------------------------------------------------------

    def test_promtool_text(self):
        self.assertTrue(self.text_ct.startswith("text/plain; version=0.0.4"), self.text_ct)
        rc, findings = promtool_check_metrics(self.text)
        self.assertEqual((rc, findings), (0, []), "promtool check metrics (text):\n" + "\n".join(findings))

    def test_promtool_openmetrics(self):
        self.assertTrue(self.om_ct.startswith("application/openmetrics-text; version=1.0.0"), self.om_ct)
        rc, findings = promtool_check_metrics(self.om)
        om = Exposition(self.om, openmetrics=True)
        # promtool lints with the text-format parser: an OpenMetrics counter family "x" (TYPE/HELP
        # without _total) has samples "x_total", which that parser sees as an undeclared metric.
        counter_samples = {n for n, _, _, f in om.samples if f.type == "counter"}
        expected = {"%s no help text" % n for n in counter_samples}
        unexpected = [f for f in findings if f not in expected]
        self.assertEqual(unexpected, [], "promtool check metrics (OpenMetrics), beyond the known limitation")
        self.assertIn(rc, (0, 3))  # 3: lint findings (only the expected ones above); 1 would be a parse error
        with tempfile.TemporaryDirectory() as d:
            ok, out = promtool_parse_openmetrics(self.om, d)
        self.assertTrue(ok, "Prometheus's OpenMetrics parser rejected the page:\n" + out)

    def test_both_formats_carry_the_same_samples(self):
        text = Exposition(self.text, openmetrics=False)
        om = Exposition(self.om, openmetrics=True)
        self.assertEqual(text.names(), om.names())
        for name in ("ortserve_requests_total", "ortserve_inference_duration_seconds_bucket"):
            self.assertEqual(sorted(map(lambda d: sorted(d.items()), text.label_sets(name))),
                             sorted(map(lambda d: sorted(d.items()), om.label_sets(name))))
        self.assertIsNotNone(om.families.get("ortserve_requests"))  # OpenMetrics: family without _total
        self.assertIsNone(om.families.get("ortserve_requests_total"))

    def test_openmetrics_negotiation(self):
        """q=0 refuses OpenMetrics; Prometheus's own Accept header gets it."""
        st, h, _ = self.srv.request("GET", "/metrics", headers={
            "Accept": "application/openmetrics-text;q=0, text/plain"})
        self.assertTrue(h["content-type"].startswith("text/plain"), h)
        st, h, body = self.srv.request("GET", "/metrics", headers={
            "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                      "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})
        self.assertTrue(h["content-type"].startswith("application/openmetrics-text"), h)
        self.assertTrue(body.endswith(b"# EOF\n"))

    # ---- families, labels and movement ------------------------------------------------------------------

    def assertFamily(self, name, mtype, labels):
        for exp in (self.after, Exposition(self.om, openmetrics=True)):
            f = exp.family(name)
            self.assertIsNotNone(f, "%s missing (%s)" % (name, "OpenMetrics" if exp.om else "text"))
            self.assertEqual(f.type, mtype, name)
            self.assertTrue(f.help, "%s has no HELP" % name)
        sets = self.after.label_sets(name if mtype != "histogram" else name + "_count")
        self.assertTrue(sets, "%s has no samples" % name)
        for s in sets:
            self.assertEqual(set(s), set(labels), "%s labels %r" % (name, s))

    def test_requests_by_outcome(self):
        self.assertFamily("ortserve_requests_total", "counter", {"model", "version", "outcome"})
        outcomes = {s["outcome"] for s in self.after.label_sets("ortserve_requests_total")}
        self.assertEqual(outcomes, {"success", "invalid", "rejected", "timeout", "error"})
        d = self.delta
        self.assertEqual(d("ortserve_requests_total", model="mlp", outcome="success"), 4)
        self.assertEqual(d("ortserve_requests_total", model="mlp", outcome="invalid"), 1)
        self.assertEqual(d("ortserve_requests_total", model="fail", outcome="error"), 1)
        self.assertEqual(d("ortserve_requests_total", model="busy", outcome="rejected"), 1)
        self.assertEqual(d("ortserve_requests_total", model="slow", outcome="timeout"), 1)
        self.assertEqual(d("ortserve_requests_total", model="slow", outcome="success"), 3)
        self.assertEqual(d("ortserve_requests_total", model="scale2x", outcome="rejected"), 1)
        self.assertEqual(d("ortserve_requests_total", model=LONG, outcome="success"), 1)
        self.assertEqual(self.after.find("ortserve_requests_total", model="nosuch"), [])
        self.assertEqual(self.after.one("ortserve_requests_total", model="mlp", version="1", outcome="success"),
                         4)

    def test_http_responses_by_code(self):
        for code, n in (("400", 1), ("404", 1), ("500", 1), ("503", 2), ("504", 1)):
            self.assertGreaterEqual(self.delta("ortserve_http_responses_total", code=code), n, code)

    def test_latency_histograms(self):
        for name in ("ortserve_inference_duration_seconds", "ortserve_queue_duration_seconds",
                     "ortserve_compute_input_duration_seconds", "ortserve_compute_infer_duration_seconds",
                     "ortserve_compute_output_duration_seconds"):
            self.assertFamily(name, "histogram", {"model", "version"})
            les = [s["le"] for s in self.after.label_sets(name + "_bucket") if s["model"] == "mlp"]
            self.assertEqual(les[-1], "+Inf")
            self.assertGreaterEqual(len(les), 10, name)
            self.assertGreaterEqual(self.delta(name + "_count", model="mlp"), 4, name)
            self.assertGreater(self.delta(name + "_sum", model="mlp"), 0, name)
        # end to end: every answered request of the model, whatever its outcome
        self.assertEqual(self.delta("ortserve_inference_duration_seconds_count", model="mlp"), 5)
        self.assertEqual(self.delta("ortserve_inference_duration_seconds_bucket", model="mlp", le="+Inf"), 5)
        # slow: the 50 ms-deadline run and three ~250 ms runs, none under 25 ms
        self.assertEqual(self.delta("ortserve_inference_duration_seconds_count", model="slow"), 4)
        self.assertEqual(self.delta("ortserve_inference_duration_seconds_bucket", model="slow", le="0.025"), 0)
        self.assertGreater(self.delta("ortserve_compute_infer_duration_seconds_sum", model="slow"), 0.05)

    def test_inference_and_execution_counts(self):
        self.assertFamily("ortserve_inference_count_total", "counter", {"model", "version"})
        self.assertFamily("ortserve_execution_count_total", "counter", {"model", "version"})
        self.assertEqual(self.delta("ortserve_inference_count_total", model="mlp"), 3 + 4)  # batch-aware
        self.assertEqual(self.delta("ortserve_execution_count_total", model="mlp"), 4)

    def test_zero_copy_and_bindings(self):
        self.assertFamily("ortserve_zero_copy_success_total", "counter", {"model", "version", "direction"})
        self.assertFamily("ortserve_tensor_bindings_total", "counter", {"model", "version", "direction", "result"})
        self.assertFamily("ortserve_copied_bytes_total", "counter", {"model", "version", "reason"})
        for d in ("input", "output"):
            self.assertEqual(self.delta("ortserve_zero_copy_success_total", model="mlp", direction=d), 4, d)
            self.assertEqual(self.delta("ortserve_tensor_bindings_total", model="mlp", direction=d,
                                        result="zero_copy"), 4, d)
        self.assertEqual({s["reason"] for s in self.after.label_sets("ortserve_copied_bytes_total")} &
                         {"misaligned", "conversion", "forced", "bytes", "readahead"},
                         {"misaligned", "conversion", "forced", "bytes", "readahead"})
        self.assertGreater(self.delta("ortserve_copied_bytes_total", model="scale2x", reason="readahead"), 0)
        self.assertEqual(self.delta("ortserve_copied_bytes_total", model="mlp"), 0)

    def test_recovery_and_pool_exhaustion(self):
        self.assertFamily("ortserve_recovery_attempts_total", "counter", {"model", "version"})
        self.assertFamily("ortserve_pool_acquire_failures_total", "counter", {"slot_bytes"})
        p = self.pool_seen
        self.assertGreaterEqual(p["free"], 1)
        # three backoff retries (2, 4, 8 ms) before the 503
        self.assertEqual(p["after_503"].value("ortserve_recovery_attempts_total", model="scale2x") -
                         p["during"].value("ortserve_recovery_attempts_total", model="scale2x"), 3)
        self.assertEqual(p["after_503"].value("ortserve_pool_acquire_failures_total", slot_bytes="65536") -
                         p["during"].value("ortserve_pool_acquire_failures_total", slot_bytes="65536"), 4)

    def test_pool_gauges_move(self):
        self.assertFamily("ortserve_pool_slots", "gauge", {"slot_bytes", "state"})
        self.assertFamily("ortserve_pool_bytes", "gauge", {"state"})
        self.assertFamily("ortserve_pool_slots_high_water", "gauge", {"slot_bytes"})
        p = self.pool_seen
        self.assertEqual(p["during"].one("ortserve_pool_slots", slot_bytes="65536", state="free"), 0)
        self.assertGreaterEqual(p["during"].one("ortserve_pool_bytes", state="in_use") -
                                p["before"].one("ortserve_pool_bytes", state="in_use"), p["free"] * 65536)
        self.assertEqual(p["released"].one("ortserve_pool_slots", slot_bytes="65536", state="in_use"), 0)
        self.assertEqual(p["released"].one("ortserve_pool_slots_high_water", slot_bytes="65536"), p["free"])
        # the scrape itself takes no pool memory: idle server, every slot free (slots are released
        # just after their response is written, hence the poll)
        wait_until(lambda: metrics(self.srv).value("ortserve_pool_bytes", state="in_use") == 0, 10,
                   "an idle pool", interval=0.01)

    def test_queue_depth_and_inflight(self):
        self.assertFamily("ortserve_queue_depth", "gauge", set())
        self.assertFamily("ortserve_queued_requests", "gauge", {"model", "version"})
        self.assertFamily("ortserve_inflight_requests", "gauge", set())
        q = self.queue_seen
        self.assertGreaterEqual(q["depth"], 1)
        self.assertGreaterEqual(q["model_queued"], 1)
        self.assertEqual(self.after.value("ortserve_queue_depth"), 0)
        # held uploads are in flight: the gauge rises by at least their number
        p = self.pool_seen
        self.assertGreaterEqual(p["during"].value("ortserve_inflight_requests") -
                                p["before"].value("ortserve_inflight_requests"), p["free"])

    def test_inflight_never_negative(self):
        """Responses sent with "Connection: close" are counted out of `inflight` once (they were once
        counted twice, driving the gauge below zero)."""
        for i in range(3):
            self.srv.request("GET", "/v2/health/live", headers={"Connection": "close"})
        seen = []

        def settled():
            # the scrape itself is in flight; a request whose response the client already has may
            # still be counted for an instant (its loop decrements after the write), never less
            seen.append(metrics(self.srv).value("ortserve_inflight_requests"))
            return seen[-1] == 1
        wait_until(settled, 10, "ortserve_inflight_requests back to 1", interval=0.01)
        self.assertGreaterEqual(min(seen), 1, seen)

    def test_deadline_and_slo_counters(self):
        self.assertFamily("ortserve_deadline_cancellations_total", "counter", {"model", "version"})
        self.assertFamily("ortserve_slo_violations_total", "counter", {"model", "version", "kind"})
        self.assertEqual(self.delta("ortserve_deadline_cancellations_total", model="slow"), 1)
        self.assertEqual(self.delta("ortserve_slo_violations_total", model="mlp", kind="latency"), 4)
        self.assertEqual(self.delta("ortserve_slo_violations_total", model="mlp", kind="error"), 0)  # 400
        self.assertEqual(self.delta("ortserve_slo_violations_total", model="busy", kind="error"), 1)  # 503
        self.assertEqual(self.delta("ortserve_slo_violations_total", model="slow", kind="error"), 1)  # 504
        self.assertEqual(self.delta("ortserve_slo_violations_total", model="slow", kind="latency"), 0)

    def test_slo_objectives(self):
        self.assertFamily("ortserve_slo_latency_seconds", "gauge", {"model", "version"})
        self.assertFamily("ortserve_slo_latency_target_ratio", "gauge", {"model", "version"})
        self.assertFamily("ortserve_slo_error_budget_ratio", "gauge", {"model", "version"})
        a = self.after
        self.assertEqual(a.one("ortserve_slo_latency_seconds", model="mlp"), 1e-6)
        self.assertEqual(a.one("ortserve_slo_latency_seconds", model="slow"), 10.0)
        self.assertEqual(a.one("ortserve_slo_latency_target_ratio", model="busy"), 0.99)  # default p99
        self.assertEqual(a.one("ortserve_slo_error_budget_ratio", model="busy"), 0.01)  # default 1%
        self.assertEqual(a.find("ortserve_slo_latency_seconds", model="fail"), [])  # no SLO, no series
        self.assertEqual(a.find("ortserve_slo_error_budget_ratio", model="fail"), [])

    def test_server_gauges(self):
        self.assertFamily("ortserve_build_info", "gauge", {"version", "onnxruntime", "ort_api"})
        info = self.after.find("ortserve_build_info")
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0][1], 1)
        self.assertRegex(info[0][0]["onnxruntime"], r"^1\.\d+\.\d+")
        self.assertEqual(self.after.one("ortserve_ready"), 1)
        self.assertFamily("ortserve_memory_limit_bytes", "gauge", set())
        self.assertFamily("ortserve_memory_usage_bytes", "gauge", set())
        self.assertGreater(self.after.one("ortserve_memory_limit_bytes"), 1 << 20)
        if cgroup_memory_known():
            self.assertGreater(self.after.one("ortserve_memory_usage_bytes"), 1 << 20)
        self.assertGreaterEqual(self.after.one("ortserve_open_connections"), 1)

    def test_process_metrics(self):
        self.assertFamily("process_cpu_seconds_total", "counter", set())
        for g in ("process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
                  "process_max_fds", "process_virtual_memory_bytes"):
            self.assertFamily(g, "gauge", set())
        a = self.after
        self.assertGreater(a.one("process_resident_memory_bytes"), 4 << 20)
        self.assertGreater(a.one("process_cpu_seconds_total"), 0)
        self.assertGreaterEqual(a.one("process_cpu_seconds_total"), self.before.one("process_cpu_seconds_total"))
        self.assertLessEqual(a.one("process_open_fds"), a.one("process_max_fds"))
        # held uploads are open sockets
        p = self.pool_seen
        self.assertGreaterEqual(p["during"].one("process_open_fds") - p["before"].one("process_open_fds"),
                                p["free"])
        start = a.one("process_start_time_seconds")
        self.assertLessEqual(abs(start - time.time()), 600)
        self.assertEqual(start, self.before.one("process_start_time_seconds"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
