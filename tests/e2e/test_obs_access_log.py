#!/usr/bin/python3
"""test_obs_access_log.py — the access log: one JSON line per request with its identity (request id
from X-Request-ID or generated, echoed in the response; trace and span ids matching the response's
traceparent), the model, status, bytes, phase durations and the binding result; flushed by a timer
(~100 ms) on an idle server; never torn by concurrent loops; --access-log 0 writes none;
--log-format text writes text lines. Log lines are read from the server's stderr file by polling
with a deadline."""
import concurrent.futures
import json
import os
import re
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obs_support import (RawConn, Server, access_records, fail_body, log_records, make_repo,  # noqa: E402
                         mlp_body, post_json, request_bytes, wait_access, wait_until)

FLUSH_WAIT = 10  # deadline for a line to show up (the flush period is 100 ms)


def tp_ids(h):
    m = re.match(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$", h.get("traceparent", ""))
    assert m, h
    return m.group(1), m.group(2)


class AccessLog(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "scale2x": "scale2x.onnx", "fail": "fail.onnx"})
        cls.srv = Server(cls.repo, "--inline-threshold-us", "10000000")  # inline: queue_us is 0

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        logs = cls.srv.logs()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d:\n%s" % (rc, logs[-6000:])

    def test_json_line_for_an_inference(self):
        body = json.dumps(mlp_body(2, 1))
        st, h, resp = self.srv.request("POST", "/v2/models/mlp/infer", body,
                                       {"X-Request-ID": "client-id-42", "Content-Type": "application/json"})
        self.assertEqual(st, 200)
        self.assertEqual(h["x-request-id"], "client-id-42")
        trace_id, span_id = tp_ids(h)
        r = wait_access(self.srv, lambda r: r.get("request_id") == "client-id-42", FLUSH_WAIT, "the access line")
        self.assertRegex(r["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(r["level"], "info")
        self.assertEqual((r["trace_id"], r["span_id"]), (trace_id, span_id))
        self.assertEqual((r["method"], r["path"], r["status"]), ("POST", "/v2/models/mlp/infer", 200))
        self.assertEqual((r["model"], r["version"]), ("mlp", 1))
        self.assertGreater(r["bytes_in"], 0)  # head + body: see test_bytes_in_counts_the_body
        self.assertGreater(r["bytes_out"], len(resp))  # head + body
        self.assertLess(r["bytes_out"], len(resp) + 1024)
        for k in ("queue_us", "infer_us", "total_us"):
            self.assertIsInstance(r[k], int, k)
            self.assertGreaterEqual(r[k], 0, k)
        self.assertGreaterEqual(r["total_us"], r["infer_us"])
        self.assertEqual(r["queue_us"], 0)  # ran inline on its loop
        self.assertEqual(r["binding"], "zero_copy")
        self.assertEqual(r["copied_bytes"], 0)
        self.assertEqual(sum(1 for x in access_records(self.srv) if x.get("request_id") == "client-id-42"), 1)

    def test_bytes_in_counts_the_body(self):
        """bytes_in counts head and body, including body bytes that arrived in the same read as the
        head, and not the bytes of a pipelined next request."""
        body = json.dumps(mlp_body(2, 1)).encode()
        with RawConn(self.srv.port) as c:  # head and body in one write, so they arrive in one read
            c.send(request_bytes("POST", "/v2/models/mlp/infer", body, [("X-Request-ID", "bytes-in-1")]))
            self.assertEqual(c.read_response().status, 200)
        r = wait_access(self.srv, lambda r: r.get("request_id") == "bytes-in-1", FLUSH_WAIT, "the access line")
        self.assertGreater(r["bytes_in"], len(body))  # head + body
        self.assertLess(r["bytes_in"], len(body) + 1024)

    def test_generated_and_rejected_request_ids(self):
        st, h, _ = post_json(self.srv, "/v2/models/mlp/infer", mlp_body(1))
        rid = h["x-request-id"]
        self.assertRegex(rid, r"^[0-9a-f]{32}$")
        wait_access(self.srv, lambda r: r.get("request_id") == rid, FLUSH_WAIT, "generated id in the log")
        for bad in ("has space", "x" * 64, 'quote"d'):
            st, h, _ = post_json(self.srv, "/v2/models/mlp/infer", mlp_body(1), {"X-Request-ID": bad})
            self.assertEqual(st, 200)
            self.assertRegex(h["x-request-id"], r"^[0-9a-f]{32}$", bad)
            wait_access(self.srv, lambda r, rid=h["x-request-id"]: r.get("request_id") == rid, FLUSH_WAIT, bad)
        longest = "k" * 63
        st, h, _ = post_json(self.srv, "/v2/models/mlp/infer", mlp_body(1), {"X-Request-ID": longest})
        self.assertEqual(h["x-request-id"], longest)
        wait_access(self.srv, lambda r: r.get("request_id") == longest, FLUSH_WAIT, "63-byte id")

    def test_one_line_per_request_never_torn(self):
        """200 requests from 8 threads on both loops: exactly one line each, every line whole JSON."""
        ids = ["many-%03d" % i for i in range(200)]

        def one(rid):
            return post_json(self.srv, "/v2/models/mlp/infer", mlp_body(1), {"X-Request-ID": rid})[0]
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            self.assertEqual(set(ex.map(one, ids)), {200})
        want = set(ids)
        wait_until(lambda: want <= {r.get("request_id") for r in access_records(self.srv)}, FLUSH_WAIT,
                   "200 access lines")
        counts = {}
        for r in access_records(self.srv):
            if r.get("request_id") in want:
                counts[r["request_id"]] = counts.get(r["request_id"], 0) + 1
        self.assertEqual(set(counts.values()), {1})
        for line in self.srv.logs().splitlines():
            if '"event":"access"' in line:
                json.loads(line)  # a torn or interleaved line would not parse

    def test_errors_and_levels(self):
        st, h, _ = post_json(self.srv, "/v2/models/fail/infer", fail_body(), {"X-Request-ID": "err-500"})
        self.assertEqual(st, 500)
        r = wait_access(self.srv, lambda r: r.get("request_id") == "err-500", FLUSH_WAIT, "500 line")
        self.assertEqual((r["level"], r["status"], r["model"]), ("error", 500, "fail"))
        st, _, _ = post_json(self.srv, "/v2/models/nosuch/infer", mlp_body(1), {"X-Request-ID": "err-404"})
        self.assertEqual(st, 404)
        r = wait_access(self.srv, lambda r: r.get("request_id") == "err-404", FLUSH_WAIT, "404 line")
        self.assertEqual((r["level"], r["status"]), ("info", 404))
        self.assertNotIn("model", r)

    def test_malformed_head_gets_real_ids(self):
        """A head that never reaches the router still gets a request id and a trace context."""
        with RawConn(self.srv.port) as c:
            c.send(b"GET /v2/health/\x7flive HTTP/1.1\r\nHost: x\r\n\r\n")  # http-parser: invalid URL
            r = c.read_response()
        self.assertEqual(r.status, 400)
        rid = r.header("X-Request-ID")
        self.assertRegex(rid or "", r"^[0-9a-f]{32}$")
        trace_id, span_id = tp_ids({"traceparent": r.header("traceparent")})
        self.assertNotEqual(trace_id, "0" * 32)
        rec = wait_access(self.srv, lambda x: x.get("request_id") == rid, FLUSH_WAIT, "the 400 line")
        self.assertEqual((rec["trace_id"], rec["span_id"], rec["status"]), (trace_id, span_id, 400))

    def test_hostile_path_is_escaped_and_bounded(self):
        """Bytes >= 0x7f and quotes in a long path: escaped, capped at 512 bytes of output (a path
        like the first once overflowed the 1 KiB line buffer, ASan's stack-buffer-overflow)."""
        for i, path in enumerate((b"/" + b"\xff" * 3000, b"/" + b'"' * 3000, b"/\\" * 300)):
            with RawConn(self.srv.port) as c:
                c.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-Request-ID: hostile-%d\r\n\r\n" % i)
                self.assertEqual(c.read_response().status, 404)
        for i, prefix in enumerate(("/\xff", '/"', "/\\")):
            rec = wait_access(self.srv, lambda r, i=i: r.get("request_id") == "hostile-%d" % i, FLUSH_WAIT,
                              "hostile-%d" % i)
            self.assertTrue(rec["path"].startswith(prefix), rec["path"][:20])
            self.assertLessEqual(len(json.dumps(rec["path"])) - 2, 512)  # bytes of escaped output
            self.assertGreater(len(json.dumps(rec["path"])) - 2, 500)  # filled up to the cap, not cut early
        self.assertEqual(self.srv.request("GET", "/v2/health/live")[0], 200)

    def test_flushed_within_about_100ms_when_idle(self):
        """No further traffic: the 100 ms timer alone writes the line out."""
        delays = []
        for i in range(3):
            rid = "flush-%d" % i
            st, _, _ = post_json(self.srv, "/v2/models/mlp/infer", mlp_body(1), {"X-Request-ID": rid})
            t0 = time.monotonic()
            wait_access(self.srv, lambda r, rid=rid: r.get("request_id") == rid, FLUSH_WAIT, rid)
            delays.append(time.monotonic() - t0)
        print("\naccess-line delays after the response: %s ms" % ", ".join("%.0f" % (d * 1e3) for d in delays),
              file=sys.stderr)
        self.assertLess(min(delays), 0.25, delays)
        self.assertLess(max(delays), 1.0, delays)

    def test_binding_readahead_counts_copied_bytes(self):
        x = np.arange(64, dtype=np.float32)
        hdr = json.dumps({"inputs": [{"name": "x", "shape": [64], "datatype": "FP32",
                                      "parameters": {"binary_data_size": x.nbytes}}]}).encode()
        with RawConn(self.srv.port) as c:  # head and body in one write: the body is read ahead
            c.send(request_bytes("POST", "/v2/models/scale2x/infer", hdr + x.tobytes(),
                                 [("Inference-Header-Content-Length", str(len(hdr))), ("X-Request-ID", "ra-1")]))
            self.assertEqual(c.read_response().status, 200)
        r = wait_access(self.srv, lambda r: r.get("request_id") == "ra-1", FLUSH_WAIT, "binary line")
        self.assertEqual(r["binding"], "zero_copy")
        self.assertEqual(r["copied_bytes"], x.nbytes)

    # ---- other configurations --------------------------------------------------------------------------

    def test_force_copy_binding(self):
        with Server(self.repo, "--force-copy") as srv:
            st, h, _ = post_json(srv, "/v2/models/mlp/infer", mlp_body(1), {"X-Request-ID": "forced-1"})
            self.assertEqual(st, 200)
            r = wait_access(srv, lambda r: r.get("request_id") == "forced-1", FLUSH_WAIT, "forced line")
            self.assertEqual(r["binding"], "forced")
            self.assertGreaterEqual(r["copied_bytes"], 10 * 4)  # at least the output, copied out of ORT's
            self.assertEqual(srv.stop(), 0, srv.logs()[-4000:])

    def test_access_log_off(self):
        with Server(self.repo, "--access-log", "0") as srv:
            for i in range(5):
                self.assertEqual(post_json(srv, "/v2/models/mlp/infer", mlp_body(1))[0], 200)
            self.assertEqual(srv.request("GET", "/nope")[0], 404)
            self.assertEqual(srv.stop(), 0, srv.logs()[-4000:])  # exiting flushes whatever was buffered
            recs = log_records(srv)
            self.assertTrue(any(r.get("event") == "listening" for r in recs))
            self.assertEqual([r for r in recs if r.get("event") == "access"], [])

    def test_text_format(self):
        with Server(self.repo, "--log-format", "text") as srv:
            st, h, _ = post_json(srv, "/v2/models/mlp/infer", mlp_body(1), {"X-Request-ID": "text-1"})
            self.assertEqual(st, 200)
            pat = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info  access 200 POST /v2/models/mlp/infer "
                             r"total_us=\d+ in=\d+ out=\d+ infer_us=\d+ queue_us=\d+ binding=zero_copy rid=text-1$")
            line = wait_until(lambda: next((x for x in srv.logs().splitlines() if x.endswith("rid=text-1")), None),
                              FLUSH_WAIT, "the text access line")
            self.assertRegex(line, pat)
            self.assertFalse(any(x.startswith("{") for x in srv.logs().splitlines()))  # no JSON at all
            # The application's own events too: key=value, not JSON fragments (the listening line used to
            # read 'listening "host":"127.0.0.1","port":...'); values with spaces are quoted.
            lines = srv.logs().splitlines()
            listening = next(x for x in lines if " listening " in x)
            self.assertRegex(listening, r" info  listening host=127\.0\.0\.1 port=%d repository=\S+ models=\d+ "
                                        r"ready=true " % srv.port)
            self.assertNotIn('"', listening)
            ready = next(x for x in lines if " model_ready model=mlp " in x)
            self.assertRegex(ready, r" model=mlp version=1 .* deadline_ms=500 "
                                    r"deadline_source=\"the server's --deadline-ms\"$")
            self.assertEqual(srv.stop(), 0, srv.logs()[-4000:])


if __name__ == "__main__":
    unittest.main(verbosity=2)
