#!/usr/bin/python3
"""test_server_http.py — HTTP/1.1 framing of the real server: keep-alive reuse, pipelining (responses
in order, including a binary body with the next request right behind it), requests that arrive in
pieces (each piece provably read by the server before the next is sent), Expect: 100-continue the way
curl sends it, HTTP/1.0 with and without keep-alive, HEAD on every GET endpoint, 405 with Allow,
X-Request-ID echoed or generated, Connection: close, and the body timeout."""
import json
import os
import re
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from server import (RawConn, Server, binary_body, check_mlp, make_repo, mlp_reference, mlp_request,  # noqa: E402
                    request_bytes, server_consumed, split_binary, wait_until)

GET_ENDPOINTS = ["/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/mlp", "/v2/models/mlp/versions/1",
                 "/v2/models/mlp/ready", "/v2/models/mlp/config", "/v2/models/mlp/stats", "/v2/models/stats",
                 "/v2/systemsharedmemory/status", "/v2/models/nope"]


def infer_bytes(x, rid=None, extra_headers=()):
    body = json.dumps(mlp_request(x, id=rid) if rid else mlp_request(x)).encode()
    return request_bytes("POST", "/v2/models/mlp/infer", body, list(extra_headers))


class Http(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "scale2x": "scale2x.onnx"})
        # No request deadline: a request sent in acknowledged pieces can take a delayed ACK (40+ ms) per
        # piece, and a request may shorten the server's deadline but not lift it.
        cls.srv = Server(repo, "--body-timeout-ms", "1000", "--max-body-bytes", "1M", "--deadline-ms", "0")
        cls.rng = np.random.default_rng(2024)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def x(self, n=1):
        return self.rng.standard_normal((n, 64)).astype(np.float32)

    def test_keep_alive_reuses_the_connection(self):
        c = self.srv.conn()
        try:
            c.connect()
            sock = c.sock
            for i in range(5):
                x = self.x(i + 1)
                st, h, body = self.srv.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_request(x)), conn=c)
                self.assertEqual(st, 200, body)
                self.assertNotIn("connection", h)
                check_mlp(self, x, body)
                self.assertEqual(self.srv.request("GET", "/v2/health/live", conn=c)[0], 200)
                self.assertIs(c.sock, sock, "http.client had to reconnect: the server closed the connection")
        finally:
            c.close()

    def test_pipelined_requests_answer_in_order(self):
        xs = [self.x(k) for k in (1, 2, 3)]
        hdr = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "parameters": {"binary_data_size": 512}}],
               "outputs": [{"name": "probs", "parameters": {"binary_data": True}}], "id": "bin"}
        bbody, bh = binary_body(hdr, [xs[1].tobytes()])
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("GET", "/v2/health/live") + infer_bytes(xs[0], "first") +
                   request_bytes("HEAD", "/v2") + request_bytes("POST", "/v2/models/mlp/infer", bbody, list(bh.items())) +
                   request_bytes("GET", "/v2/models/nope") + infer_bytes(xs[2], "last"))
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b'{"live":true}'))
            r = c.read_response()
            self.assertEqual(r.json()["id"], "first")
            check_mlp(self, xs[0], r.body)
            r = c.read_response(head_only=True)
            self.assertEqual((r.status, r.body), (200, b""))
            r = c.read_response()
            meta, blobs = split_binary({k.lower(): v for k, v in r.headers}, r.body)
            self.assertEqual(meta["id"], "bin")
            np.testing.assert_allclose(np.frombuffer(blobs["probs"], np.float32).reshape(2, 10),
                                       mlp_reference(xs[1]), rtol=1e-5, atol=1e-6)
            r = c.read_response()
            self.assertEqual(r.status, 404)
            r = c.read_response()
            self.assertEqual(r.json()["id"], "last")
            check_mlp(self, xs[2], r.body)

    def test_large_binary_body_with_the_next_request_behind_it(self):
        n = 200000  # 800 KB of tensor, received straight into the slot; the next request follows at once
        v = self.rng.standard_normal(n).astype(np.float32)
        hdr = {"inputs": [{"name": "x", "shape": [n], "datatype": "FP32", "parameters": {"binary_data_size": 4 * n}}],
               "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
        body, h = binary_body(hdr, [v.tobytes()])
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("POST", "/v2/models/scale2x/infer", body, list(h.items())) +
                   infer_bytes(self.x(), "behind"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            _, blobs = split_binary({k.lower(): v for k, v in r.headers}, r.body)
            np.testing.assert_array_equal(np.frombuffer(blobs["y"], np.float32), v * 2)
            r = c.read_response()
            self.assertEqual((r.status, r.json()["id"]), (200, "behind"))

    def test_request_arriving_in_pieces(self):
        """Each piece is provably read by the server (its socket's receive queue is empty) before the
        next is sent: the head split inside a header name, between CR and LF, and the body split."""
        x = self.x(2)
        data = infer_bytes(x, "pieces", [("X-Custom-Header", "value")])
        head_end = data.index(b"\r\n\r\n")
        cuts = sorted({3, 17, data.index(b"X-Custom") + 4, data.index(b"\r\n") + 1, head_end + 1, head_end + 3,
                       head_end + 4, head_end + 50, len(data) - 1})
        with RawConn(self.srv.port) as c:
            prev = 0
            for cut in cuts + [len(data)]:
                c.send(data[prev:cut])
                prev = cut
                wait_until(lambda: server_consumed(self.srv.port, c.sock), 10, "the server to read a piece")
            r = c.read_response()
            self.assertEqual((r.status, r.json()["id"]), (200, "pieces"))
            check_mlp(self, x, r.body)

    def test_expect_100_continue(self):
        x = self.x(3)
        body = json.dumps(mlp_request(x)).encode()
        with RawConn(self.srv.port) as c:  # curl: headers, wait for 100, then the body
            c.send(request_bytes("POST", "/v2/models/mlp/infer", b"",
                                 [("Content-Length", str(len(body))), ("Expect", "100-continue")]))
            r = c.read_response()
            self.assertEqual(r.status, 100)
            c.send(body)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            check_mlp(self, x, r.body)
            c.send(request_bytes("GET", "/v2/health/live"))  # still usable
            self.assertEqual(c.read_response().status, 200)

    def test_expect_100_continue_refused_before_the_body(self):
        for path, length, status in (("/v2/models/mlp/infer", 2 << 20, 413), ("/v2/models/nope/infer", 100, 404)):
            with RawConn(self.srv.port) as c:
                c.send(request_bytes("POST", path, b"", [("Content-Length", str(length)),
                                                         ("Expect", "100-continue")]))
                r = c.read_response()
                self.assertEqual(r.status, status, r)  # the final status, not 100: the body is not wanted
                self.assertEqual(r.header("Connection"), "close")
                self.assertTrue(c.closed_by_peer(10))

    def test_http10_closes_without_keep_alive(self):
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("GET", "/v2/health/live", version="1.0"))
            r = c.read_response()
            self.assertEqual((r.version, r.status, r.header("Connection")), ("HTTP/1.0", 200, "close"))
            self.assertTrue(c.closed_by_peer(10))

    def test_http10_keep_alive(self):
        x = self.x()
        with RawConn(self.srv.port) as c:
            for i in range(3):
                c.send(infer_bytes(x, "k%d" % i, [("Connection", "keep-alive")]).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
                r = c.read_response()
                self.assertEqual((r.version, r.status, r.header("Connection")), ("HTTP/1.0", 200, "keep-alive"))
                self.assertEqual(r.json()["id"], "k%d" % i)

    def test_connection_close_is_honoured(self):
        with RawConn(self.srv.port) as c:
            c.send(infer_bytes(self.x(), "bye", [("Connection", "close")]))
            r = c.read_response()
            self.assertEqual((r.status, r.header("Connection"), r.json()["id"]), (200, "close", "bye"))
            self.assertTrue(c.closed_by_peer(10))

    def test_head_on_get_endpoints(self):
        """HEAD gives GET's status and headers (Content-Length of GET's body) and no body: a HEAD and a
        GET pipelined on one connection parse cleanly only if the HEAD response has no body."""
        for path in GET_ENDPOINTS:
            with RawConn(self.srv.port) as c:
                c.send(request_bytes("HEAD", path) + request_bytes("GET", path))
                head = c.read_response(head_only=True)
                get = c.read_response()
                self.assertEqual(head.status, get.status, path)
                self.assertEqual(int(head.header("Content-Length")), len(get.body), path)
                self.assertEqual(head.header("Content-Type"), get.header("Content-Type"), path)
                c.send(request_bytes("GET", "/v2/health/live"))
                self.assertEqual(c.read_response().body, b'{"live":true}', path)

    def test_405_has_allow(self):
        cases = [("POST", "/v2/health/live", "GET, HEAD"), ("GET", "/v2/models/mlp/infer", "POST"),
                 ("PUT", "/v2/models/mlp/infer", "POST"), ("DELETE", "/v2/models/mlp", "GET, HEAD"),
                 ("PATCH", "/v2/models/mlp/config", "GET, HEAD"), ("OPTIONS", "/v2/repository/index", "POST"),
                 ("GET", "/v2/repository/models/mlp/load", "POST"), ("GET", "/infer", "POST")]
        for method, path, allow in cases:
            with RawConn(self.srv.port) as c:
                c.send(request_bytes(method, path))
                r = c.read_response()
                self.assertEqual((r.status, r.header("Allow")), (405, allow), (method, path))
                self.assertIn("method not allowed", r.json()["error"])

    def test_request_id(self):
        st, h, _ = self.srv.request("GET", "/v2/health/live", headers={"X-Request-ID": "client-id-42"})
        self.assertEqual((st, h["x-request-id"]), (200, "client-id-42"))
        st, h, _ = self.srv.request("GET", "/v2/models/nope", headers={"X-Request-ID": "err-7"})
        self.assertEqual((st, h["x-request-id"]), (404, "err-7"))  # errors too
        ids = set()
        for _ in range(3):
            st, h, _ = self.srv.request("GET", "/v2/health/live")
            self.assertRegex(h["x-request-id"], r"^[0-9a-f]{32}$")
            ids.add(h["x-request-id"])
        self.assertEqual(len(ids), 3)
        for bad in ("has space", "x" * 100):  # not usable as an id: a fresh one is generated
            st, h, _ = self.srv.request("GET", "/v2/health/live", headers={"X-Request-ID": bad})
            self.assertTrue(re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"]), h["x-request-id"])

    def test_truncated_body_times_out_and_closes(self):
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("POST", "/v2/models/mlp/infer", b'{"inputs": [', [("Content-Length", "500")]))
            r = c.read_response()  # a body that never completes is answered 408 and dropped (--body-timeout-ms)
            self.assertEqual((r.status, r.header("Connection")), (408, "close"), r)
            self.assertIn("timed out waiting for the request body", r.json()["error"])
            self.assertTrue(c.closed_by_peer(15), "the connection stayed open after the body timeout")
        st, body = self.srv.json("POST", "/v2/models/mlp/infer", mlp_request(self.x()))
        self.assertEqual(st, 200, body)


if __name__ == "__main__":
    unittest.main(verbosity=2)
