#!/usr/bin/python3
"""test_server_hardening.py — the attacks of the adversarial review (issue "hardening"), each against
the real binary: writes bounded by their slot range, request framing that cannot be smuggled, clients
that vanish, element counts bounded before allocation, deadlines that saturate, classification
bounds. Each test failed against the server before its fix."""
import json
import os
import socket
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from server import (RawConn, Server, make_repo, mlp_request, request_bytes, server_consumed,  # noqa: E402
                    wait_until)


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
    """Slots in use over every class (ortserve_pool_slots_in_use)."""
    st, _, body = srv.request("GET", "/metrics")
    total = 0
    for line in body.decode().splitlines():
        if line.startswith("ortserve_pool_slots_in_use"):
            total += float(line.rsplit(" ", 1)[1])
    return total


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


if __name__ == "__main__":
    unittest.main()
