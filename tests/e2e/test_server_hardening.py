#!/usr/bin/python3
"""test_server_hardening.py — the attacks of the adversarial review (issue "hardening"), each against
the real binary: writes bounded by their slot range, request framing that cannot be smuggled, clients
that vanish, element counts bounded before allocation, deadlines that saturate, classification
bounds. Each test failed against the server before its fix."""
import json
import os
import re
import resource
import socket
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from cgroup_support import Cgroup, available as cgroup_unavailable  # noqa: E402
from server import (RawConn, Server, binary_body, make_repo, mlp_request, request_bytes, server_consumed,  # noqa: E402
                    slow_iters, split_binary, tanh_reference, wait_until)

MiB = 1 << 20


def metric(srv, name, labels=None):
    """Value of one sample of /metrics (labels: dict that must match), or None."""
    st, _, body = srv.request("GET", "/metrics")
    assert st == 200, st
    for line in body.decode().splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        sname, _, lab = head.partition("{")
        if sname != name:
            continue
        if labels and any('%s="%s"' % kv not in lab for kv in labels.items()):
            continue
        return float(value)
    return None


def pool_in_use(srv):
    """Pool bytes in use (ortserve_pool_bytes{state="in_use"})."""
    return metric(srv, "ortserve_pool_bytes", {"state": "in_use"})


def close_wait(port):
    """Server-side sockets of `port` in CLOSE-WAIT (the peer closed, the server has not): /proc/net/tcp."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "08":
                n += 1
    return n


class SlotBounds(unittest.TestCase):
    """A JSON BYTES input is written into its slot range in Triton's serialized form; the range is exactly
    the serialized size, so a terminating NUL written after the last string would land in the next
    tensor (here the FP32 input laid out right after it) or another client's slot."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-hard-")
        cls.srv = Server(make_repo(cls.tmp, {"bytes_fp32": "bytes_fp32.onnx"}))

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.finish() == 0, "the server exited with an error (a sanitizer report?)"

    def infer(self, strings, x):
        # x is filled first (request order) and laid out after text (model order): a byte written past
        # text's range would change x[0].
        req = {"inputs": [{"name": "x", "shape": [len(x)], "datatype": "FP32", "data": x},
                          {"name": "text", "shape": [len(strings)], "datatype": "BYTES", "data": strings}]}
        st, body = self.srv.json("POST", "/v2/models/bytes_fp32/infer", json.dumps(req))  # escapes non-ASCII
        self.assertEqual(st, 200, body)
        return {o["name"]: o["data"] for o in body["outputs"]}

    def test_escaped_last_string_ending_a_64_byte_range(self):
        # 4 + 60 bytes: the range ends on a 64-byte boundary, so x starts right after it.
        for strings in (["\u00e9" * 30], ["a" * 28, "\u00e9" * 14], ["x\n" * 30]):
            size = sum(4 + len(s.encode()) for s in strings)
            self.assertEqual(size % 64, 0)
            out = self.infer(strings, [0.1, 0.2, 0.3])
            self.assertEqual(out["text_out"], strings)
            np.testing.assert_array_equal(np.float32(out["x_out"]), np.float32([0.1, 0.2, 0.3]))

    def test_every_size_around_the_boundary(self):
        for n in range(20, 40):
            s = ["\u00e9" * n]
            out = self.infer(s, [0.1])
            self.assertEqual(out["text_out"], s)
            self.assertEqual(np.float32(out["x_out"][0]), np.float32(0.1), "n=%d" % n)


def strict_json(data):
    """json.loads that refuses what RFC 8259 does not allow (bare NaN, Infinity)."""
    def bad(name):
        raise ValueError("not JSON: %s" % name)
    return json.loads(data, parse_constant=bad)


class OutputEdges(unittest.TestCase):
    """Classification bounds and non-finite numbers in JSON responses."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-hard-")
        cls.srv = Server(make_repo(cls.tmp, {"mlp": "mlp.onnx", "bytes_fp32": "bytes_fp32.onnx"}))

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.finish() == 0

    def test_classification_beyond_the_classes_is_clamped(self):
        for k in (10, 11, 1000000, 2 ** 40):
            req = mlp_request(np.ones((2, 64), np.float32), outputs=[{"name": "probs",
                                                                      "parameters": {"classification": k}}])
            st, body = self.srv.json("POST", "/v2/models/mlp/infer", req)
            self.assertEqual(st, 200, (k, body))
            out = body["outputs"][0]
            self.assertEqual((out["datatype"], out["shape"]), ("BYTES", [2, 10]))
            self.assertEqual(len(out["data"]), 20)
            self.assertEqual(sorted(int(e.split(":")[1]) for e in out["data"][:10]), list(range(10)))

    def test_classification_of_a_bytes_output_is_refused(self):
        req = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                          {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
               "outputs": [{"name": "text_out", "parameters": {"classification": 1}}]}
        st, body = self.srv.json("POST", "/v2/models/bytes_fp32/infer", req)
        self.assertEqual(st, 400, body)
        self.assertIn("output 'text_out' is BYTES", body["error"])

    def test_classification_ranks_nan_last(self):
        # /infer's classification used to answer index 0 for [NaN, 1, 2] while /classify answered 2: one
        # top-k now (core), NaN below every number, ties by index.
        req = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                          {"name": "x", "shape": [5], "datatype": "FP32", "data": ["NaN", 1, 2, "-Infinity", 2]}],
               "outputs": [{"name": "x_out", "parameters": {"classification": 5}}]}
        st, _, data = self.srv.request("POST", "/v2/models/bytes_fp32/infer", json.dumps(req))
        self.assertEqual(st, 200, data)
        out = {o["name"]: o["data"] for o in strict_json(data)["outputs"]}["x_out"]
        self.assertEqual([e.split(":")[1] for e in out], ["2", "4", "1", "3", "0"], out)
        self.assertEqual(out[0], "2.000000:2")

    def test_nan_and_infinity_are_strict_json(self):
        req = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                          {"name": "x", "shape": [4], "datatype": "FP32", "data": [1.5, "NaN", "Infinity", "-Infinity"]}]}
        st, _, data = self.srv.request("POST", "/v2/models/bytes_fp32/infer", json.dumps(req))
        self.assertEqual(st, 200, data)
        out = {o["name"]: o["data"] for o in strict_json(data)["outputs"]}
        self.assertEqual(out["x_out"], [1.5, "NaN", "Infinity", "-Infinity"])
        # bare NaN (Python's json.dumps writes it) is still accepted on input
        body = json.dumps({"inputs": [req["inputs"][0], {"name": "x", "shape": [2], "datatype": "FP32",
                                                         "data": [float("nan"), float("-inf")]}]})
        st, _, data = self.srv.request("POST", "/v2/models/bytes_fp32/infer", body)
        self.assertEqual(st, 200, data)
        self.assertEqual({o["name"]: o["data"] for o in strict_json(data)["outputs"]}["x_out"], ["NaN", "-Infinity"])


SMUGGLED = request_bytes("POST", "/v2/models/scale2x/unload", b"")


def chunked(data):
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


class Smuggling(unittest.TestCase):
    """A body the server does not read must never be taken for the next request: every early answer
    closes the connection when body bytes are unread, and a body whose length cannot be known
    (Transfer-Encoding other than a final chunked) is refused with 400 and a close. Each case carries an
    unload of scale2x as its body; the model must still be ready afterwards."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-hard-")
        cls.srv = Server(make_repo(cls.tmp, {"scale2x": "scale2x.onnx"}), "--allow-shm",
                         "--model-control-mode", "explicit")

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.finish() == 0

    def attack(self, head_path, headers, body, want_status, method="POST"):
        with RawConn(self.srv.port) as rc:
            rc.send(request_bytes(method, head_path, body, headers, content_length=False))
            r = rc.read_response()
            self.assertEqual(r.status, want_status, r)
            self.assertEqual((r.header("Connection") or "").lower(), "close", r)
            self.assertIn("error", r.json())
            self.assertTrue(rc.closed_by_peer(), "the connection stayed open after an unread body")
            self.assertEqual(rc.buf, b"", "the unread body was answered as a request of its own")
        st, _, _ = self.srv.request("GET", "/v2/models/scale2x/ready")
        self.assertEqual(st, 200, "the smuggled unload ran")

    def test_chunked_body_of_an_unknown_model(self):
        self.attack("/v2/models/nosuch/infer", [("Transfer-Encoding", "chunked")], chunked(SMUGGLED), 404)

    def test_chunked_body_of_a_refused_shm_registration(self):
        srv = Server(make_repo(tempfile.mkdtemp(prefix="osv-hard-"), {"scale2x": "scale2x.onnx"}),
                     "--model-control-mode", "explicit")  # no --allow-shm: registration is refused
        try:
            with RawConn(srv.port) as rc:
                rc.send(request_bytes("POST", "/v2/systemsharedmemory/region/r/register", chunked(SMUGGLED),
                                      [("Transfer-Encoding", "chunked")], content_length=False))
                r = rc.read_response()
                self.assertEqual(r.status, 403, r)
                self.assertTrue(rc.closed_by_peer())
                self.assertEqual(rc.buf, b"", "the unread body was answered as a request of its own")
            self.assertEqual(srv.request("GET", "/v2/models/scale2x/ready")[0], 200)
        finally:
            self.assertEqual(srv.finish(), 0)

    def test_chunked_body_of_an_unknown_route(self):
        self.attack("/v2/nothing/here", [("Transfer-Encoding", "chunked")], chunked(SMUGGLED), 404)

    def test_length_body_of_an_unknown_model(self):
        self.attack("/v2/models/nosuch/infer", [("Content-Length", str(len(SMUGGLED)))], SMUGGLED, 404)

    def test_transfer_encoding_gzip(self):
        self.attack("/v2/models/scale2x/infer", [("Transfer-Encoding", "gzip")], SMUGGLED, 400)

    def test_transfer_encoding_chunked_then_identity(self):
        self.attack("/v2/models/scale2x/infer", [("Transfer-Encoding", "chunked, identity")], SMUGGLED, 400)

    def test_transfer_encoding_gzip_then_chunked(self):
        self.attack("/v2/models/scale2x/infer", [("Transfer-Encoding", "gzip, chunked")], chunked(SMUGGLED), 501)

    def test_two_transfer_encodings(self):
        self.attack("/v2/models/scale2x/infer", [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
                    chunked(SMUGGLED), 501)

    def test_a_read_body_keeps_the_connection(self):
        """The other side of the rule: a chunked body read to its end leaves the connection reusable, and
        what follows it is a request of its own (pipelining)."""
        x = np.arange(4, dtype=np.float32)
        body = json.dumps({"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": x.tolist()}]})
        with RawConn(self.srv.port) as rc:
            rc.send(request_bytes("POST", "/v2/models/scale2x/infer", chunked(body.encode()),
                                  [("Transfer-Encoding", "chunked")], content_length=False) +
                    request_bytes("GET", "/v2/models/scale2x/ready"))
            r1, r2 = rc.read_response(), rc.read_response()
            self.assertEqual(r1.status, 200, r1)
            self.assertEqual(r1.json()["outputs"][0]["data"], (2 * x).tolist())
            self.assertEqual(r2.status, 200, r2)


SLOW_X = np.linspace(-1, 1, 256, dtype=np.float32).tolist()


def slow_body(iters, **params):
    req = {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": SLOW_X},
                      {"name": "iters", "shape": [], "datatype": "INT64", "data": [int(iters)]}]}
    if params:
        req["parameters"] = params
    return json.dumps(req).encode()


class Deadlines(unittest.TestCase):
    """A client's timeout saturates instead of wrapping into an immediate 504, and it may shorten the
    server's deadline but not lift it (Triton's allow_timeout_override semantics): 0 means "not set"."""
    DEADLINE_MS = 300

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-hard-")
        cls.srv = Server(make_repo(cls.tmp, {"slow": "slow.onnx", "scale2x": "scale2x.onnx"}),
                         "--deadline-ms", str(cls.DEADLINE_MS), "--workers", "1", "--inline-threshold-us", "0")
        # Iterations that keep slow.onnx busy for about 3 s (measured without a deadline of the request's
        # own: the server's 300 ms applies, so measure a short run and scale).
        with RawConn(cls.srv.port) as c:
            def run(iters):
                c.send(request_bytes("POST", "/v2/models/slow/infer", slow_body(iters)))
                assert c.read_response().status == 200
            cls.long_iters = slow_iters(run, 3.0)

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.finish() == 0

    def scale2x(self, headers=(), **params):
        req = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
        if params:
            req["parameters"] = params
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("POST", "/v2/models/scale2x/infer", json.dumps(req).encode(), list(headers)))
            return c.read_response()

    def test_huge_timeouts_saturate(self):
        for headers, params in (((), {"timeout": 18446744073709551}), ((), {"timeout": 18446744073709551615}),
                                ((("Ortserve-Timeout-Ms", "18446744073709"),), {}),
                                ((("Ortserve-Timeout-Ms", "99999999999999999999999999"),), {})):
            r = self.scale2x(headers, **params)
            self.assertEqual(r.status, 200, (headers, params, r))
            self.assertEqual(r.json()["outputs"][0]["data"], [2.0, 4.0])

    def slow(self, headers=(), **params):
        """(status, seconds) of a ~3 s slow.onnx run under the server's 300 ms deadline."""
        with RawConn(self.srv.port) as c:
            t0 = time.monotonic()
            c.send(request_bytes("POST", "/v2/models/slow/infer", slow_body(self.long_iters, **params),
                                 list(headers)))
            r = c.read_response()
            return r, time.monotonic() - t0

    def test_zero_does_not_lift_the_server_deadline(self):
        for headers, params in (((("Ortserve-Timeout-Ms", "0"),), {}), ((), {"timeout": 0}),
                                ((("Ortserve-Timeout-Ms", "60000"),), {"timeout": 60000000})):
            r, took = self.slow(headers, **params)
            self.assertEqual(r.status, 504, (headers, params, r))
            self.assertLess(took, self.DEADLINE_MS / 1000 + 1.0, (headers, params))

    def test_a_shorter_timeout_is_honoured(self):
        for headers, params in (((("Ortserve-Timeout-Ms", "100"),), {}), ((), {"timeout": 100000})):
            r, took = self.slow(headers, **params)
            self.assertEqual(r.status, 504, (headers, params, r))
            self.assertGreaterEqual(took, 0.1)
            self.assertLess(took, 0.1 + 1.0, (headers, params))


def log_events(text, event):
    """The JSON log records of one event."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and
            json.loads(line).get("event") == event]


class DeadlineSources(unittest.TestCase):
    """The default deadline follows the model: a fixed 500 ms used to answer 504 to an ordinary
    1-second CPU model (heavy.onnx) that nobody had given a deadline. And every 504 names the deadline
    that fired and who set it: the request's timeout parameter, the timeout header, the model's
    deadline_ms, or the server's --deadline-ms."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-dl-")
        repo = make_repo(cls.tmp, {"heavy": "heavy.onnx", "heavy_cfg": "heavy.onnx", "scale2x": "scale2x.onnx"},
                         configs={"heavy_cfg": {"deadline_ms": 40}})
        cls.srv = Server(repo, "--workers", "1")
        cls.ready = {r["model"]: r for r in log_events(cls.srv.logs(), "model_ready")}
        x = np.zeros((256, 1024), np.float32)
        cls.body, cls.hdrs = binary_body({"inputs": [{"name": "x", "shape": [256, 1024], "datatype": "FP32",
                                                      "parameters": {"binary_data_size": x.nbytes}}],
                                          "outputs": [{"name": "y", "parameters": {"binary_data": True}}]},
                                         [x.tobytes()])

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.finish() == 0

    def heavy(self, model="heavy", headers=None, params=None, srv=None):
        body, hdrs = self.body, dict(self.hdrs, **(headers or {}))
        if params:
            head = json.loads(body[:int(hdrs["Inference-Header-Content-Length"])])
            head["parameters"] = params
            body, h = binary_body(head, [body[int(hdrs["Inference-Header-Content-Length"]):]])
            hdrs.update(h)
        st, _, data = (srv or self.srv).request("POST", "/v2/models/%s/infer" % model, body, hdrs)
        return st, data

    def test_the_default_follows_the_warmup_run(self):
        h, s = self.ready["heavy"], self.ready["scale2x"]
        want = max(500, int(h["warmup_ms"]) * 10)
        self.assertLessEqual(abs(h["deadline_ms"] - want), 10, h)
        self.assertIn("warm-up" if want > 500 else "--deadline-ms", h["deadline_source"])
        self.assertEqual((s["deadline_ms"], s["deadline_source"]), (500, "the server's --deadline-ms"))
        self.assertEqual((self.ready["heavy_cfg"]["deadline_ms"], self.ready["heavy_cfg"]["deadline_source"]),
                         (40, "the model's deadline_ms"))
        for _ in range(2):  # a run of about a second, under no deadline anyone chose: answered
            st, data = self.heavy()
            self.assertEqual(st, 200, data[:300])

    def test_every_504_names_its_deadline(self):
        cases = [("heavy", {"Ortserve-Timeout-Ms": "30"}, None, "deadline of 30 ms (the request's timeout header)"),
                 ("heavy", None, {"timeout": 20000}, "deadline of 20 ms (the request's timeout parameter)"),
                 ("heavy_cfg", None, None, "deadline of 40 ms (the model's deadline_ms)")]
        for model, headers, params, want in cases:
            st, data = self.heavy(model, headers, params)
            self.assertEqual(st, 504, data[:300])
            self.assertIn(want, json.loads(data)["error"])
        with Server(make_repo(os.path.join(self.tmp, "flag"), {"heavy": "heavy.onnx"}), "--deadline-ms", "50") as srv:
            st, data = self.heavy(srv=srv)
            self.assertEqual(st, 504, data[:300])
            self.assertIn("deadline of 50 ms (the server's --deadline-ms)", json.loads(data)["error"])


class AnsweredWorkerIsFree(unittest.TestCase):
    """A worker that has handed its answer on no longer counts as busy. It used to count until after the
    hand-off, so a client's next request, sent on that answer, could find its only worker "running" and be
    refused with 503 "would not finish before the request's deadline" (CI saw one right after a 504 in
    DeadlineSources). The test hook pauses each worker after its hand-off, as a preempted one would. Runs of
    slow.onnx of about 200 ms, one before each fast request, hold the estimate of a run near 100 ms (an
    average over runs): half a run of queued work ahead, were the worker counted busy, would be twice the
    fast requests' 25 ms deadline, which their own runs (microseconds) meet many times over."""

    def test_a_request_sent_on_an_answer_is_admitted(self):
        tmp = tempfile.mkdtemp(prefix="osv-hard-")
        with Server(make_repo(tmp, {"slow": "slow.onnx", "scale2x": "scale2x.onnx"}), "--deadline-ms", "0",
                    "--workers", "1", "--inline-threshold-us", "0",
                    env={"ORTSERVE_TEST_ANSWER_JITTER_US": "5000"}) as srv, RawConn(srv.port) as c:
            def post(model, body, headers=()):
                c.send(request_bytes("POST", "/v2/models/%s/infer" % model, body, list(headers)))
                return c.read_response()
            iters = slow_iters(lambda n: self.assertEqual(post("slow", slow_body(n)).status, 200), 0.2, lo=2000)
            fast = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]})
            for _ in range(4):
                self.assertEqual(post("slow", slow_body(iters)).status, 200)
            statuses = []
            for _ in range(8):
                self.assertEqual(post("slow", slow_body(iters)).status, 200)
                r = post("scale2x", fast.encode(), [("Ortserve-Timeout-Ms", "25")])
                statuses.append((r.status, r.body[:200]))
            self.assertEqual([st for st, _ in statuses], [200] * 8, statuses)
            self.assertEqual(metric(srv, "ortserve_deadline_refusals_total"), 0)


class SlowBodies(unittest.TestCase):
    """A chunked body holds a slot as large as what has arrived (it used to take a slot of the body
    limit, 64 MiB: a few clients trickling a byte every few seconds made every large request answer
    503), and a body must keep a minimum average rate after a grace period."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-hard-")
        # No request deadline: it counts from the first byte, and these bodies take seconds to arrive.
        cls.srv = Server(make_repo(cls.tmp, {"scale2x": "scale2x.onnx"}), "--deadline-ms", "0",
                         "--body-rate-grace-ms", "1500", "--min-body-rate", "1000")

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.finish() == 0

    def slots_of(self, size):
        return metric(self.srv, "ortserve_pool_slots", {"slot_bytes": str(size), "state": "free"}) + \
            metric(self.srv, "ortserve_pool_slots", {"slot_bytes": str(size), "state": "in_use"})

    def test_trickling_chunked_bodies_hold_small_slots(self):
        big = 64 * MiB
        n = int(self.slots_of(big)) + 2  # more tricklers than the largest class has slots
        tricklers = []
        try:
            for _ in range(n):
                rc = RawConn(self.srv.port)
                rc.send(request_bytes("POST", "/v2/models/scale2x/infer", b"10\r\n{\"inputs\"",
                                      [("Transfer-Encoding", "chunked")], content_length=False))
                tricklers.append(rc)
            wait_until(lambda: all(server_consumed(self.srv.port, t.sock) for t in tricklers), 10,
                       "the tricklers' first bytes to be read")
            in_use_big = metric(self.srv, "ortserve_pool_slots", {"slot_bytes": str(big), "state": "in_use"})
            self.assertEqual(in_use_big, 0, "a trickling chunked body holds a 64 MiB slot")
            # A large request still finds its slot, chunked or not.
            x = np.arange(4 * MiB, dtype=np.float32)  # 16 MiB
            for headers, body in (([], x.tobytes()), ([("Transfer-Encoding", "chunked")], None)):
                with RawConn(self.srv.port) as c:
                    if body is not None:
                        c.send(request_bytes("POST", "/v2/models/scale2x/infer", body,
                                             [("Inference-Header-Content-Length", "0")]))
                    else:
                        raw = x.tobytes()
                        c.send(request_bytes("POST", "/v2/models/scale2x/infer", b"",
                                             headers + [("Inference-Header-Content-Length", "0")],
                                             content_length=False) +
                               b"".join(b"%x\r\n%s\r\n" % (len(raw[i:i + MiB]), raw[i:i + MiB])
                                        for i in range(0, len(raw), MiB)) + b"0\r\n\r\n")
                    r = c.read_response()
                    self.assertEqual(r.status, 200, r)
                    y = np.frombuffer(r.body[int(r.header("Inference-Header-Content-Length")):], np.float32)
                    np.testing.assert_array_equal(y, 2 * x)
        finally:
            for t in tricklers:
                t.close()

    def test_a_body_slower_than_the_minimum_rate_gets_408(self):
        for headers, first in (([("Content-Length", "100000")], b"{"),
                               ([("Transfer-Encoding", "chunked")], b"10\r\n{")):
            with RawConn(self.srv.port) as c:
                t0 = time.monotonic()
                c.send(request_bytes("POST", "/v2/models/scale2x/infer", first, headers, content_length=False))
                r = c.read_response()
                took = time.monotonic() - t0
                self.assertEqual(r.status, 408, r)
                self.assertIn("--min-body-rate", r.json()["error"])
                self.assertGreaterEqual(took, 1.4)
                self.assertLess(took, 5, "the 30 s --body-timeout-ms fired, not the rate")

    def test_a_body_at_the_rate_completes(self):
        x = np.arange(1024, dtype=np.float32).tobytes()  # 4 KiB sent at ~2 KB/s over ~2 s
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("POST", "/v2/models/scale2x/infer", b"",
                                 [("Content-Length", str(len(x))), ("Inference-Header-Content-Length", "0")],
                                 content_length=False))
            for i in range(0, len(x), 512):
                c.send(x[i:i + 512])
                time.sleep(0.25)  # the client's own pace (what is tested), not a synchronisation
            r = c.read_response()
            self.assertEqual(r.status, 200, r)


class CompressedBodies(unittest.TestCase):
    """A compressed body is inflated once, on a worker: four 65 KB deflate bodies that inflate to 64 MiB
    used to be inflated twice each (measure, then decode) on the loop thread, stalling every other
    connection of that loop for seconds."""

    def test_inflating_does_not_stall_the_loop(self):
        import threading
        import zlib
        srv = Server(make_repo(tempfile.mkdtemp(prefix="osv-hard-"), {"scale2x": "scale2x.onnx"}),
                     "--loops", "1", "--workers", "2", "--deadline-ms", "0")
        try:
            raw = zlib.compress(b"\0" * (64 * MiB - 1), 9)  # 4 bytes short of a whole FP32 tensor: 400
            self.assertLess(len(raw), 100 << 10)
            answers, worst = [], [0.0]

            def send():
                with RawConn(srv.port, timeout=60) as c:
                    c.send(request_bytes("POST", "/v2/models/scale2x/infer", raw,
                                         [("Content-Encoding", "deflate"), ("Inference-Header-Content-Length", "0")]))
                    answers.append(c.read_response())
            threads = [threading.Thread(target=send) for _ in range(4)]
            with RawConn(srv.port) as probe:
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    t0 = time.monotonic()
                    probe.send(request_bytes("GET", "/v2/health/live"))
                    self.assertEqual(probe.read_response().status, 200)
                    worst[0] = max(worst[0], time.monotonic() - t0)
            for t in threads:
                t.join()
            for r in answers:
                self.assertEqual(r.status, 400, r)
                self.assertIn("does not fit input", r.json()["error"])
            print("4 deflate bodies of 64 MiB: the loop answered within %.0f ms at worst" % (worst[0] * 1e3))
            self.assertLess(worst[0], 0.25, "the loop stalled while bodies were inflated")
        finally:
            self.assertEqual(srv.finish(), 0)

    def test_gzip_and_deflate_round_trip(self):
        import gzip
        import zlib
        srv = Server(make_repo(tempfile.mkdtemp(prefix="osv-hard-"), {"scale2x": "scale2x.onnx"}))
        try:
            x = np.arange(300000, dtype=np.float32)  # 1.2 MB: grows past the first slot of a deflate body
            body = json.dumps({"inputs": [{"name": "x", "shape": [len(x)], "datatype": "FP32",
                                           "data": x.tolist()}]}).encode()
            for enc, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
                st, _, out = srv.request("POST", "/v2/models/scale2x/infer", data, {"Content-Encoding": enc})
                self.assertEqual(st, 200, out[:300])
                np.testing.assert_array_equal(np.float32(json.loads(out)["outputs"][0]["data"]), 2 * x)
            for enc, data in (("gzip", gzip.compress(body)[:-9]), ("deflate", zlib.compress(body)[:-5])):
                st, _, out = srv.request("POST", "/v2/models/scale2x/infer", data, {"Content-Encoding": enc})
                self.assertEqual(st, 400, out)
                self.assertIn("corrupt or truncated", json.loads(out)["error"])
        finally:
            self.assertEqual(srv.finish(), 0)


class CountedCopies(unittest.TestCase):
    """A body that cannot land in its slot as it arrives is copied, and each such copy is counted under its
    reason in ortserve_copied_bytes_total: a chunked body is decoded out of the read buffer (`chunked`), a
    compressed one inflated (`decompress`); a Content-Length body of the same bytes is neither."""

    def copied(self, srv, reason):
        return metric(srv, "ortserve_copied_bytes_total", {"model": "scale2x", "reason": reason}) or 0

    def test_chunked_and_compressed_bodies_are_counted(self):
        import gzip
        with Server(make_repo(tempfile.mkdtemp(prefix="osv-hard-"), {"scale2x": "scale2x.onnx"})) as srv:
            x = np.arange(1000, dtype=np.float32)  # 6.9 KB of JSON: within the first chunked slot (16 KiB)
            body = json.dumps({"inputs": [{"name": "x", "shape": [len(x)], "datatype": "FP32",
                                           "data": x.tolist()}]}).encode()
            self.assertLess(len(body), 16 << 10)
            cases = ((None, body, None), (("Transfer-Encoding", "chunked"), chunked(body), "chunked"),
                     (("Content-Encoding", "gzip"), gzip.compress(body), "decompress"))
            for header, data, reason in cases:
                before = {r: self.copied(srv, r) for r in ("chunked", "decompress")}
                with RawConn(srv.port) as c:
                    c.send(request_bytes("POST", "/v2/models/scale2x/infer", data, [header] if header else []))
                    r = c.read_response()
                self.assertEqual(r.status, 200, r)
                np.testing.assert_array_equal(np.float32(r.json()["outputs"][0]["data"]), 2 * x)
                grew = {k: self.copied(srv, k) - v for k, v in before.items()}
                want = {k: 0 for k in grew}
                if reason == "chunked":
                    want[reason] = len(body)  # each body byte once out of the read buffer, no regrowth
                elif reason == "decompress":
                    self.assertGreaterEqual(grew[reason], len(body))
                    want[reason] = grew[reason]
                self.assertEqual(grew, want, header)


class VanishedClients(unittest.TestCase):
    """A client that sends part of a request and closes must release what it holds at once: its FIN can
    arrive in the same edge as its last bytes, and edge-triggered epoll reports it only once."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-hard-")
        cls.srv = Server(make_repo(cls.tmp, {"scale2x": "scale2x.onnx"}), "--loops", "1")

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.finish() == 0

    def raw_head(self, n):
        return request_bytes("POST", "/v2/models/scale2x/infer", b"",
                             [("Content-Length", str(n)), ("Inference-Header-Content-Length", "0")],
                             content_length=False)

    def test_aborted_binary_bodies_release_their_slots(self):
        # Each client's last bytes and its FIN arrive together (sent, then closed at once).
        n = 1 << 20
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", self.srv.port))
            s.sendall(self.raw_head(n) + b"\0" * 1024)  # head + 1 KB of a 1 MiB tensor, then gone
            s.close()
        t0 = time.monotonic()
        wait_until(lambda: pool_in_use(self.srv) == 0 and close_wait(self.srv.port) == 0, 3,
                   "the slots and sockets of vanished clients to be released")
        print("100 aborted 1 MiB bodies: slots and sockets released %.1f ms after the last client closed"
              % ((time.monotonic() - t0) * 1e3))

    def test_aborted_heads_are_closed(self):
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", self.srv.port))
            s.sendall(b"POST /v2/models/scale2x/infer HTTP/1.1\r\nHost: x\r\nContent-Le")
            s.close()
        wait_until(lambda: close_wait(self.srv.port) == 0, 3, "no socket left in CLOSE-WAIT")

    def test_half_close_mid_body_gets_400_naming_the_missing_bytes(self):
        with RawConn(self.srv.port) as rc:
            rc.send(self.raw_head(4096) + b"\0" * 1000)
            rc.sock.shutdown(socket.SHUT_WR)
            r = rc.read_response()
            self.assertEqual(r.status, 400, r)
            self.assertIn("1000 of its 4096 bytes", r.json()["error"])
            self.assertTrue(rc.closed_by_peer())
        with RawConn(self.srv.port) as rc:  # chunked
            rc.send(request_bytes("POST", "/v2/models/scale2x/infer", b"10\r\n0123456789",
                                  [("Transfer-Encoding", "chunked")], content_length=False))
            rc.sock.shutdown(socket.SHUT_WR)
            r = rc.read_response()
            self.assertEqual(r.status, 400, r)
            self.assertIn("before its last chunk", r.json()["error"])
        wait_until(lambda: pool_in_use(self.srv) == 0, 2, "the slots to be released")


def rss(srv):
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def asan(srv):
    """True when the server is an AddressSanitizer build."""
    with open("/proc/%d/maps" % srv.proc.pid) as f:
        return "libasan" in f.read()


class UnboundedCounts(unittest.TestCase):
    """What a request makes the server allocate is bounded before the allocation, and a connection does
    not keep a large request's memory after it: 100 keep-alive connections each send a request that
    used to grow their arena by megabytes, and stay open."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-hard-")
        cls.srv = Server(make_repo(cls.tmp, {"scale2x": "scale2x.onnx"}))

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.finish() == 0

    def flood(self, body, want_status, want_text):
        conns = [RawConn(self.srv.port) for _ in range(100)]
        before = metric(self.srv, "ortserve_heap_bytes")
        try:
            for rc in conns:
                rc.send(request_bytes("POST", "/v2/models/scale2x/infer", body))
            for rc in conns:
                r = rc.read_response()
                self.assertEqual(r.status, want_status, r)
                self.assertIn(want_text, r.json()["error"])
                self.assertNotEqual((r.header("Connection") or "").lower(), "close")  # kept alive
            grown = metric(self.srv, "ortserve_heap_bytes") - before
            print("100 connections: ortserve's heap grew by %.1f MiB" % (grown / MiB))
            self.assertLess(grown, 8 * MiB, "connections kept the memory of their refused requests")
        finally:
            for rc in conns:
                rc.close()

    def test_inputs_array_longer_than_the_model(self):
        body = b'{"inputs": [' + b",".join([b"{}"] * 17000) + b"]}"
        self.flood(body, 400, "'inputs' has 17000 elements but model 'scale2x' has 1 input(s)")

    def test_outputs_array_longer_than_the_model(self):
        body = (b'{"inputs": [{"name":"x","shape":[1],"datatype":"FP32","data":[1]}], "outputs": [' +
                b",".join([b'{"name":"y"}'] * 17000) + b"]}")
        self.flood(body, 400, "'outputs' has 17000 elements but model 'scale2x' has 1 output(s)")

    def test_a_large_arena_is_returned_after_the_request(self):
        # An escaped input name is unescaped into the request arena (3 MB here); the answer is 400.
        body = json.dumps({"inputs": [{"name": "\u00e9" * 500000, "shape": [1], "datatype": "FP32",
                                       "data": [1]}]}).encode()
        self.flood(body, 400, "unknown input")


class LargeInputLeavesTheLoop(unittest.TestCase):
    """A fast model runs inline on the loop that decoded its request. A request far larger than those its
    run-time estimate was measured on goes to a worker instead (the estimate scaled by its input bytes), so the
    loop's other connections are answered during its run. Before, the loop ran it: a health probe on the same
    loop waited for the whole run."""

    def test_probes_are_answered_during_a_large_run(self):
        import threading
        small = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
        big = np.random.default_rng(5).uniform(-1, 1, (1, 7 << 20)).astype(np.float32)  # 28 MiB in, 28 out: one slot

        def body(x):
            return binary_body({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                            "parameters": {"binary_data_size": x.nbytes}}],
                                "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}, [x.tobytes()])

        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"tanh": "tanh.onnx"}), "--loops", "1", "--workers", "1", "--deadline-ms", "0")
            try:
                c = srv.conn()
                b, h = body(small)
                for _ in range(20):  # the estimate: fast runs of 64-byte inputs, run inline
                    st, _, data = srv.request("POST", "/v2/models/tanh/infer", b, h, conn=c)
                    self.assertEqual(st, 200, data)
                b, h = body(big)
                c.request("POST", "/v2/models/tanh/infer", body=b, headers=h)  # returns once it is sent
                sent, got = time.monotonic(), {}

                def answer():
                    r = c.getresponse()
                    got["status"], got["headers"], got["body"] = r.status, dict(r.getheaders()), r.read()
                    got["at"] = time.monotonic()

                t = threading.Thread(target=answer)
                t.start()
                probe, lat = srv.conn(), []
                deadline = time.monotonic() + 60
                while t.is_alive() and len(lat) < 5000 and time.monotonic() < deadline:
                    t0 = time.monotonic()
                    st, _, _ = srv.request("GET", "/v2/health/ready", conn=probe)
                    self.assertEqual(st, 200)
                    if t.is_alive():
                        lat.append(time.monotonic() - t0)
                t.join(60)
                self.assertEqual(got.get("status"), 200, got.get("body", b"")[:300])
                _, blobs = split_binary({k.lower(): v for k, v in got["headers"].items()}, got["body"])
                y = np.frombuffer(blobs["y"], np.float32)
                np.testing.assert_allclose(y[:4096], tanh_reference(big[0, :4096]), rtol=1e-5, atol=1e-6)
                run = got["at"] - sent
                self.assertGreaterEqual(len(lat), 3, "probes answered during a %.0f ms run" % (run * 1000))
                # on the loop, one probe would wait for the rest of the run; beside it, none waits for it
                self.assertLess(max(lat), run / 3, "slowest probe %.0f ms of a %.0f ms run" % (max(lat) * 1000,
                                                                                              run * 1000))
                c.close()
                probe.close()
            finally:
                self.assertEqual(srv.finish(), 0)


class WarmConnectionAllocatesNothing(unittest.TestCase):
    """Steady state on one keep-alive connection makes no heap allocation in ortserve's own code
    (ortserve_heap_allocations_total, the osv_malloc family's count): 200 JSON and 200 binary mlp
    requests, run inline on the loop and handed to a worker. The counter is read as a scrape begins, so
    the difference between two scrapes includes the first one's own allocations (its page, its model
    rows): measured as the difference between back-to-back scrapes, it must be the same constant every
    time, and N requests must add nothing to it."""

    N = 200

    def allocations(self, srv, conn):
        st, _, body = srv.request("GET", "/metrics", conn=conn)
        self.assertEqual(st, 200)
        m = re.search(rb"^ortserve_heap_allocations_total (\d+)$", body, re.M)
        self.assertIsNotNone(m, "no ortserve_heap_allocations_total on /metrics")
        return int(m.group(1))

    def steady_state(self, *args):
        x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
        json_body = json.dumps(mlp_request(x)).encode()
        hdr = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}],
               "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}
        bin_body, bin_headers = binary_body(hdr, [x.tobytes()])
        kinds = (("JSON", json_body, {}), ("binary", bin_body, bin_headers))
        tmp = tempfile.TemporaryDirectory()
        srv = Server(make_repo(tmp.name, {"mlp": "mlp.onnx"}), "--loops", "1", *args)
        conn = srv.conn()
        try:
            first = {}
            for _ in range(5):  # warm: the connection's buffer, arena chunks, response slots, timers
                for name, body, headers in kinds:
                    st, _, data = srv.request("POST", "/v2/models/mlp/infer", body, headers, conn=conn)
                    self.assertEqual(st, 200, data)
                    first[name] = data
            sock = conn.sock
            a = [self.allocations(srv, conn) for _ in range(4)]
            per_scrape = a[1] - a[0]
            self.assertEqual([a[2] - a[1], a[3] - a[2]], [per_scrape] * 2, "a scrape's own allocations vary: %s" % a)
            added = {}
            for name, body, headers in kinds:
                before = self.allocations(srv, conn)
                for _ in range(self.N):
                    st, _, data = srv.request("POST", "/v2/models/mlp/infer", body, headers, conn=conn)
                    self.assertEqual((st, data), (200, first[name]))
                added[name] = self.allocations(srv, conn) - before - per_scrape
            self.assertIs(conn.sock, sock, "the connection was not kept alive")
            print("%s: a scrape allocates %d times; %d JSON requests add %d allocations, %d binary ones %d" %
                  (" ".join(args) or "inline", per_scrape, self.N, added["JSON"], self.N, added["binary"]))
            self.assertEqual(added, {"JSON": 0, "binary": 0})
        finally:
            conn.close()
            self.assertEqual(srv.finish(), 0)
            tmp.cleanup()

    def test_inline_runs(self):
        self.steady_state("--inline-threshold-us", "10000000")  # inline whatever the machine's speed

    def test_runs_on_a_worker(self):
        self.steady_state("--workers", "1", "--inline-threshold-us", "0")


class BuffersAfterAFlood(unittest.TestCase):
    """Read buffers and connection objects a flood leaves on the free lists go back to the system within
    seconds: 3000 connections each holding an unfinished 15 KB head, then closed."""

    def test_rss_returns_after_the_flood(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 9000)), hard))
        srv = Server(make_repo(tempfile.mkdtemp(prefix="osv-hard-"), {"scale2x": "scale2x.onnx"}),
                     "--max-connections", "4000")
        conns = []
        try:
            idle, heap0 = rss(srv), metric(srv, "ortserve_heap_bytes")
            head = b"POST /v2/models/scale2x/infer HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (15 << 10)
            for _ in range(3000):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(head)
                conns.append(s)
            wait_until(lambda: rss(srv) > idle + 60 * MiB, 10, "the flood to hold its buffers", interval=0.05)
            peak = rss(srv)
            for s in conns:
                s.close()
            conns = []
            t0 = time.monotonic()

            def returned():
                bufs = (metric(srv, "ortserve_connection_buffers", {"state": "in_use"}) +
                        metric(srv, "ortserve_connection_buffers", {"state": "free"}))
                heap = metric(srv, "ortserve_heap_bytes")
                last[:] = [bufs, heap, heap0, rss(srv), idle]
                # An ASan build's allocator keeps freed blocks in quarantine: its RSS says nothing here.
                return bufs <= 2 * 16 + 4 and heap < heap0 + 2 * MiB and (asan(srv) or rss(srv) < idle + 24 * MiB)
            last = []
            try:
                wait_until(returned, 5, "buffers, heap and RSS to fall back after the flood", interval=0.05)
            except AssertionError as e:
                raise AssertionError("%s: buffers, heap, heap before, RSS, RSS before = %s" % (e, last))
            print("3000 held heads: RSS %.0f -> %.0f MiB, back to %.0f MiB %.2f s after they closed" %
                  (idle / MiB, peak / MiB, rss(srv) / MiB, time.monotonic() - t0))
        finally:
            for s in conns:
                s.close()
            self.assertEqual(srv.finish(), 0)


@unittest.skipIf(os.geteuid() != 0 or cgroup_unavailable(), "needs root and a memory cgroup: %s" % cgroup_unavailable())
class ConnectionFlood(unittest.TestCase):
    """4090 connections each holding an unfinished 15 KB request head, against a server in a memory cgroup
    whose headroom over the server's idle size is that of a 64 MB (and a 128 MB) group for the release
    build: the connection limit follows the memory plan (the rest get 503 at once), nothing is OOM-killed,
    and once the flood ends the buffers go back to the system, so inferences succeed again at once (before:
    an OOM kill at 64 MB; at 128 MB every inference got 503 for 50 s after the flood)."""

    @classmethod
    def setUpClass(cls):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 9000)), hard))
        cls.repo = make_repo(tempfile.mkdtemp(prefix="osv-hard-"), {"scale2x": "scale2x.onnx"})
        probe = Server(cls.repo)
        cls.idle = rss(probe)  # the build's own size (an ASan build is four times larger)
        assert probe.finish() == 0

    def flood(self, headroom):
        cg = Cgroup(self.idle + headroom, "flood-%d" % (headroom >> 20))
        srv = Server(self.repo, preexec_fn=cg.enter)
        conns, refused = [], 0
        try:
            head = b"POST /v2/models/scale2x/infer HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (15 << 10)
            for _ in range(4090):
                try:
                    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                    s.sendall(head)
                    conns.append(s)
                except OSError:
                    refused += 1
            self.assertIsNone(srv.proc.poll(), "the server died during the flood")
            for s in conns:
                s.close()
            x = np.float32([1, 2])
            req = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": x.tolist()}]})

            def serves():
                st, _, _ = srv.request("POST", "/v2/models/scale2x/infer", req)
                return st == 200
            t0 = time.monotonic()
            wait_until(serves, 5, "inferences to succeed after the flood", interval=0.05)
            stats = cg.stats()
            rejected = metric(srv, "ortserve_rejected_connections_total")
            print("flood at %d MiB over idle: %s; %d answered 503, %d refused at connect; inferences OK %.2f s "
                  "after the flood; group peak %.1f MiB, OOM kills %d" %
                  (headroom >> 20, re.search(r'"max_connections":\d+', srv.logs()).group(0), rejected, refused,
                   time.monotonic() - t0, stats["peak_bytes"] / MiB, stats["oom_kills"]))
            self.assertEqual(stats["oom_kills"], 0)
            self.assertIsNone(srv.proc.poll())
        finally:
            for s in conns:
                s.close()
            self.assertEqual(srv.finish(), 0)
            cg.remove()

    def test_64_mb(self):
        self.flood(64 * MiB - 27 * MiB)

    def test_128_mb(self):
        self.flood(128 * MiB - 27 * MiB)

    def test_256_mb(self):
        self.flood(256 * MiB - 27 * MiB)


if __name__ == "__main__":
    unittest.main()
