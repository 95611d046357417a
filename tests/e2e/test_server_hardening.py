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


if __name__ == "__main__":
    unittest.main()
