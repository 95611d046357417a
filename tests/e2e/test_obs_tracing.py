#!/usr/bin/python3
"""test_obs_tracing.py — W3C trace context and OTLP/HTTP span export against a local OTLP receiver
(obs_support.OtlpReceiver: an http.server thread on loopback collecting POST /v1/traces bodies).

Checks span names, ids, parentage (the caller's span -> ortserve's server span -> queue /
compute_input / compute_infer / compute_output), the traceparent response header, attributes,
timestamp order, tracestate pass-through (and its truncation at member boundaries), error status,
parent-based sampling (flags 00 exports nothing), the shutdown flush, export-failure counters, and
that without --otlp-endpoint there is no exporter thread at all.

"Nothing was exported" is proven with a barrier: a sampled request sent afterwards on the same
keep-alive connection (so the same loop thread and span ring, drained in order) whose spans did
arrive."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obs_support import (BIN, OtlpReceiver, Server, access_records, attrs_dict, fail_body, free_port,  # noqa: E402
                         make_repo, metrics, mlp_body, post_json, slow_body, thread_names, wait_until)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
EXPORT_WAIT = 15  # seconds; spans leave every second


def traceparent(trace_id, span_id, sampled=True):
    return "00-%s-%s-%s" % (trace_id, span_id, "01" if sampled else "00")


def new_ids(seed):
    return "%032x" % (0x1234 + seed * 7919 + (1 << 120)), "%016x" % (0xabcd00 + seed + (1 << 60))


def parse_tp(value):
    m = re.match(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$", value or "")
    assert m, "bad traceparent in response: %r" % value
    return m.group(1), m.group(2), m.group(3)


class Tracing(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "slow": "slow.onnx", "fail": "fail.onnx"})
        cls.rx = OtlpReceiver()
        # every model runs inline on its loop (no queue span), whatever the machine's speed
        cls.srv = Server(cls.repo, "--otlp-endpoint", cls.rx.endpoint, "--trace-sample-ratio", "1",
                         "--service-name", "ortserve-e2e", "--inline-threshold-us", "10000000")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        logs = cls.srv.logs()
        cls.srv.__exit__(None)
        cls.rx.close()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d:\n%s" % (rc, logs[-6000:])

    def wait_trace(self, rx, trace_id, n, what="spans"):
        return wait_until(lambda: (lambda s: s if len(s) >= n else None)(rx.trace(trace_id)), EXPORT_WAIT,
                          "%d %s of trace %s" % (n, what, trace_id), interval=0.01)

    def sampled_infer(self, seed, model="mlp", body=None, extra=None, conn=None):
        trace_id, parent = new_ids(seed)
        headers = {"traceparent": traceparent(trace_id, parent), "Content-Type": "application/json"}
        headers.update(extra or {})
        st, h, _ = self.srv.request("POST", "/v2/models/%s/infer" % model, json.dumps(body or mlp_body(1, seed)),
                                    headers, conn)
        return st, h, trace_id, parent

    # ---- a sampled request, inline model ------------------------------------------------------------------

    def test_sampled_request_spans(self):
        tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        st, h, trace_id, parent = self.sampled_infer(
            1, extra={"tracestate": tracestate, "X-Request-ID": "req-trace-1"})
        self.assertEqual(st, 200)
        rtrace, rspan, flags = parse_tp(h.get("traceparent"))
        self.assertEqual((rtrace, flags), (trace_id, "01"))
        self.assertNotEqual(rspan, parent)
        self.assertEqual(h.get("x-request-id"), "req-trace-1")
        spans = self.wait_trace(self.rx, trace_id, 4)
        by_name = {s["name"]: s for s in spans}
        self.assertEqual(len(spans), len(by_name), "duplicate span names: %r" % [s["name"] for s in spans])
        # inline on the loop (--inline-threshold-us 10 s): no queue span
        self.assertEqual(set(by_name), {"POST /v2/models/{model}/infer", "compute_input", "compute_infer",
                                        "compute_output"})
        server = by_name["POST /v2/models/{model}/infer"]
        self.assertEqual(server["kind"], 2)  # SERVER
        self.assertEqual(server["traceId"], trace_id)
        self.assertEqual(server["spanId"], rspan)
        self.assertEqual(server["parentSpanId"], parent)
        self.assertEqual(server["traceState"], tracestate)
        self.assertEqual(server["status"].get("code", 0), 0)
        ids = set()
        for s in spans:
            self.assertRegex(s["traceId"], HEX32)
            self.assertRegex(s["spanId"], HEX16)
            self.assertNotEqual(s["spanId"], "0" * 16)
            ids.add(s["spanId"])
            if s is not server:
                self.assertEqual(s["parentSpanId"], server["spanId"], s["name"])
                self.assertEqual(s["kind"], 1)  # INTERNAL
                a = attrs_dict(s["attributes"])
                self.assertEqual((a["ortserve.model"], a["ortserve.model_version"]), ("mlp", 1))
        self.assertEqual(len(ids), 4)
        a = attrs_dict(server["attributes"])
        self.assertEqual(a["ortserve.model"], "mlp")
        self.assertEqual(a["ortserve.model_version"], 1)
        self.assertEqual(a["http.response.status_code"], 200)
        self.assertEqual(a["http.request.method"], "POST")
        self.assertEqual(a["http.route"], "/v2/models/{model}/infer")
        self.assertEqual(a["ortserve.request_id"], "req-trace-1")
        self.assertEqual(a["ortserve.binding"], "zero_copy")
        self.assertEqual(a["ortserve.batch_size"], 1)
        self.assertGreater(a["http.request.size"], 0)  # wire sizes, head included
        self.assertGreater(a["http.response.size"], 0)
        res = [r for sp, r in self.rx.spans() if sp["spanId"] == server["spanId"]][0]
        self.assertEqual(res["service.name"], "ortserve-e2e")
        self.assertIn("service.version", res)
        self.check_order(by_name, server, ["compute_input", "compute_infer", "compute_output"])
        self.assertTrue(all(p == "/v1/traces" for p in self.rx.paths), self.rx.paths)
        self.assertTrue(all(ct.startswith("application/json") for ct in self.rx.content_types))

    def check_order(self, by_name, server, phases):
        t = lambda s, k: int(s[k])  # noqa: E731  (OTLP/JSON carries uint64 nanoseconds as strings)
        for s in by_name.values():
            self.assertLessEqual(t(s, "startTimeUnixNano"), t(s, "endTimeUnixNano"), s["name"])
            self.assertGreaterEqual(t(s, "startTimeUnixNano"), t(server, "startTimeUnixNano"), s["name"])
            self.assertLessEqual(t(s, "endTimeUnixNano"), t(server, "endTimeUnixNano"), s["name"])
        for a, b in zip(phases, phases[1:]):
            self.assertLessEqual(t(by_name[a], "endTimeUnixNano"), t(by_name[b], "startTimeUnixNano"), (a, b))
        # wall clock: the spans are from now, not from the monotonic epoch
        self.assertLess(abs(t(server, "startTimeUnixNano") / 1e9 - time.time()), 600)

    # ---- a worker-run model: queue span ------------------------------------------------------------------

    def test_worker_run_has_queue_span(self):
        """A model handed to a worker (--inline-threshold-us 0: every model) waits in the queue: a
        fifth span, between compute_input and compute_infer."""
        with OtlpReceiver() as rx:
            srv = Server(self.repo, "--otlp-endpoint", rx.endpoint, "--trace-sample-ratio", "1",
                         "--inline-threshold-us", "0")
            try:
                trace_id, parent = new_ids(100)
                st, h, _ = srv.request("POST", "/v2/models/slow/infer", json.dumps(slow_body(300)),
                                       {"traceparent": traceparent(trace_id, parent)})
                self.assertEqual(st, 200)
                found = self.wait_trace(rx, trace_id, 5)
                self.assertEqual(srv.stop(), 0, srv.logs()[-4000:])
            finally:
                srv.__exit__(None)
        by_name = {s["name"]: s for s in found}
        self.assertEqual(set(by_name), {"POST /v2/models/{model}/infer", "queue", "compute_input",
                                        "compute_infer", "compute_output"})
        server = by_name["POST /v2/models/{model}/infer"]
        self.assertEqual(server["parentSpanId"], parent)
        self.assertEqual(by_name["queue"]["parentSpanId"], server["spanId"])
        self.assertEqual(attrs_dict(by_name["queue"]["attributes"])["ortserve.model"], "slow")
        self.check_order(by_name, server, ["compute_input", "queue", "compute_infer", "compute_output"])

    # ---- sampling ---------------------------------------------------------------------------------------

    def test_unsampled_parent_exports_nothing(self):
        c = self.srv.conn()
        try:
            trace_id, parent = new_ids(200)
            st, h, _ = self.srv.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_body(1)),
                                        {"traceparent": traceparent(trace_id, parent, sampled=False),
                                         "Content-Type": "application/json"}, conn=c)
            self.assertEqual(st, 200)
            rtrace, rspan, flags = parse_tp(h.get("traceparent"))
            self.assertEqual((rtrace, flags), (trace_id, "00"))  # propagated, not sampled
            st, _, barrier, _ = self.sampled_infer(201, conn=c)  # same connection: same loop and ring
            self.assertEqual(st, 200)
        finally:
            c.close()
        self.wait_trace(self.rx, barrier, 4, "barrier spans")
        self.assertEqual(self.rx.trace(trace_id), [])
        # still logged, with its trace id
        wait_until(lambda: [r for r in access_records(self.srv) if r.get("trace_id") == trace_id], 5,
                   "access record of the unsampled request")

    def test_no_traceparent_is_a_root_span(self):
        st, h, _ = post_json(self.srv, "/v2/models/mlp/infer", mlp_body(1))
        self.assertEqual(st, 200)
        trace_id, span_id, flags = parse_tp(h.get("traceparent"))
        self.assertEqual(flags, "01")  # --trace-sample-ratio 1
        spans = self.wait_trace(self.rx, trace_id, 4)
        server = [s for s in spans if s["spanId"] == span_id][0]
        self.assertNotIn("parentSpanId", server)

    def test_invalid_traceparent_starts_a_new_trace(self):
        sent = []
        for i, bad in enumerate(["00-%s-%s-01" % (CALLER_TRACE.upper(), "b7ad6b7169203331"),  # upper-case hex
                                 "ff-%s-%s-01" % (CALLER_TRACE, "b7ad6b7169203331"),  # version ff
                                 "00-%s-%s-01" % ("0" * 32, "b7ad6b7169203331"),  # all-zero trace id
                                 "00-%s-%s-01" % (CALLER_TRACE, "0" * 16),  # all-zero parent id
                                 "00-%s-%s-01-extra" % (CALLER_TRACE, "b7ad6b7169203331"),  # 00 + extra
                                 "01-%s-%s-01x" % (CALLER_TRACE, "b7ad6b7169203331")]):  # v01, no '-'
            st, h, _ = self.srv.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_body(1)),
                                        {"traceparent": bad, "tracestate": "k=v",
                                         "Content-Type": "application/json"})
            self.assertEqual(st, 200)
            trace_id, span_id, _ = parse_tp(h.get("traceparent"))
            self.assertNotEqual(trace_id, CALLER_TRACE, bad)
            sent.append((bad, trace_id, span_id))
        for bad, trace_id, span_id in sent:  # all sent first: one export period covers them
            spans = self.wait_trace(self.rx, trace_id, 4)
            server = [s for s in spans if s["spanId"] == span_id][0]
            self.assertNotIn("parentSpanId", server, bad)
            self.assertNotIn("traceState", server, bad)  # W3C: no tracestate without a valid parent
        # a future version with extra fields is read by the version-00 layout
        st, h, _ = self.srv.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_body(1)),
                                    {"traceparent": "01-%s-%s-01-future" % (CALLER_TRACE, "b7ad6b7169203331"),
                                     "Content-Type": "application/json"})
        self.assertEqual(parse_tp(h.get("traceparent"))[0], CALLER_TRACE)

    def test_long_tracestate_is_truncated_by_whole_members(self):
        members = ["v%02d=%s" % (i, ("%02d" % i) * 20) for i in range(12)]  # 12 x 44 bytes + commas: 539
        tracestate = ",".join(members[:11])  # 495 bytes: within the 512 accepted
        st, h, trace_id, _ = self.sampled_infer(300, extra={"tracestate": tracestate})
        self.assertEqual(st, 200)
        rspan = parse_tp(h.get("traceparent"))[1]
        spans = self.wait_trace(self.rx, trace_id, 4)
        exported = [s for s in spans if s["spanId"] == rspan][0]["traceState"]
        self.assertTrue(tracestate.startswith(exported), exported)
        kept = exported.split(",")
        self.assertEqual(kept, members[:len(kept)])  # whole members only
        self.assertGreaterEqual(len(kept), 4)

    # ---- status, counters -----------------------------------------------------------------------------

    def test_error_status(self):
        st, h, trace_id, _ = self.sampled_infer(400, model="fail", body=fail_body())
        self.assertEqual(st, 500)
        rspan = parse_tp(h.get("traceparent"))[1]
        bad = mlp_body(1)
        bad["inputs"][0]["shape"] = [1, 65]
        st4, h4, trace4, _ = self.sampled_infer(401, body=bad)
        self.assertEqual(st4, 400)
        server = [s for s in self.wait_trace(self.rx, trace_id, 1) if s["spanId"] == rspan][0]
        self.assertEqual(server["status"]["code"], 2)  # ERROR for 5xx
        self.assertEqual(attrs_dict(server["attributes"])["http.response.status_code"], 500)
        s4 = [s for s in self.wait_trace(self.rx, trace4, 1) if s["name"].startswith("POST")][0]
        self.assertEqual(s4["status"].get("code", 0), 0)  # a client error leaves a server span unset
        self.assertEqual(attrs_dict(s4["attributes"])["http.response.status_code"], 400)

    def test_exported_counter(self):
        st, _, trace_id, _ = self.sampled_infer(500)
        self.wait_trace(self.rx, trace_id, 4)
        wait_until(lambda: metrics(self.srv).value("ortserve_trace_spans_exported_total") >= 4, EXPORT_WAIT,
                   "ortserve_trace_spans_exported_total")
        m = metrics(self.srv)
        self.assertEqual(m.value("ortserve_trace_export_failures_total"), 0)
        self.assertEqual(m.value("ortserve_trace_spans_dropped_total"), 0)
        self.assertLessEqual(m.value("ortserve_trace_spans_exported_total"), len(self.rx.spans()))

    # ---- other servers ------------------------------------------------------------------------------------

    def test_exporter_thread_only_with_an_endpoint(self):
        with Server(self.repo, "--loops", "2", "--workers", "2") as plain, OtlpReceiver() as rx, \
                Server(self.repo, "--loops", "2", "--workers", "2", "--otlp-endpoint", rx.endpoint) as traced:
            for s in (plain, traced):
                for i in range(3):
                    self.assertEqual(post_json(s, "/v2/models/mlp/infer", mlp_body(1))[0], 200)
            plain_threads = thread_names(plain.proc.pid)
            traced_threads = thread_names(traced.proc.pid)
            self.assertNotIn("osv-otlp", plain_threads)
            self.assertEqual(traced_threads.count("osv-otlp"), 1)
            self.assertEqual(len(traced_threads), len(plain_threads) + 1, (plain_threads, traced_threads))
            # libcurl (and its ~30 dependencies) is loaded only by the exporting server
            def maps(pid):
                with open("/proc/%d/maps" % pid) as f:
                    return f.read()
            self.assertNotIn("libcurl", maps(plain.proc.pid))
            self.assertIn("libcurl", maps(traced.proc.pid))
            # without an endpoint the context is still propagated
            trace_id, parent = new_ids(600)
            st, h, _ = plain.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_body(1)),
                                     {"traceparent": traceparent(trace_id, parent)})
            self.assertEqual(parse_tp(h["traceparent"])[0], trace_id)
            m = metrics(plain)
            self.assertEqual(m.value("ortserve_trace_spans_exported_total"), 0)

    def test_parent_based_sampling_and_shutdown_flush(self):
        """Ratio 0: requests without a parent are not sampled, a sampled parent still is; spans
        recorded just before SIGTERM are flushed on the way out."""
        with OtlpReceiver() as rx:
            srv = Server(self.repo, "--otlp-endpoint", rx.endpoint + "/v1/traces", "--trace-sample-ratio", "0",
                         "--inline-threshold-us", "10000000")  # inline: 4 spans, no queue span
            try:
                c = srv.conn()
                st, h, _ = srv.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_body(1)), conn=c)
                root_trace, _, flags = parse_tp(h["traceparent"])
                self.assertEqual(flags, "00")
                trace_id, parent = new_ids(700)
                st, h, _ = srv.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_body(1)),
                                       {"traceparent": traceparent(trace_id, parent)}, conn=c)
                self.assertEqual(parse_tp(h["traceparent"])[2], "01")
                c.close()
                rc = srv.stop()  # well within the 1 s export period: only the final flush can deliver
                self.assertEqual(rc, 0, srv.logs()[-4000:])
                self.assertEqual(len(rx.trace(trace_id)), 4)
                self.assertEqual(rx.trace(root_trace), [])
                self.assertEqual(set(rx.paths), {"/v1/traces"})
            finally:
                srv.__exit__(None)

    def test_export_failures_are_counted(self):
        port = free_port()  # nothing listens there
        srv = Server(self.repo, "--otlp-endpoint", "http://127.0.0.1:%d" % port, "--trace-sample-ratio", "1")
        try:
            for i in range(3):
                self.assertEqual(post_json(srv, "/v2/models/mlp/infer", mlp_body(1))[0], 200)
            m = wait_until(lambda: (lambda x: x if x.value("ortserve_trace_export_failures_total") >= 1 else None)(
                metrics(srv)), EXPORT_WAIT, "an export failure")
            self.assertGreaterEqual(m.value("ortserve_trace_spans_dropped_total"), 4)
            self.assertEqual(m.value("ortserve_trace_spans_exported_total"), 0)
            self.assertEqual(post_json(srv, "/v2/models/mlp/infer", mlp_body(1))[0], 200)  # still serving
            self.assertEqual(srv.stop(), 0, srv.logs()[-4000:])
        finally:
            srv.__exit__(None)

    def test_bad_endpoint_is_refused_at_startup(self):
        p = subprocess.run([BIN, "serve", "--model-repository", self.repo, "--port", "0",
                            "--otlp-endpoint", "ftp://127.0.0.1:1"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"--otlp-endpoint must be an http:// or https:// URL", p.stderr)

if __name__ == "__main__":
    unittest.main(verbosity=2)
