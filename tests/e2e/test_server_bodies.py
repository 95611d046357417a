#!/usr/bin/python3
"""test_server_bodies.py — request bodies beyond plain Content-Length: gzip and deflate
Content-Encoding (JSON and binary requests, decompression bombs, corrupt streams, unsupported
codings), chunked transfer coding (with a request pipelined right behind the last chunk), the
lingering close that lets a client read an early error while it is still uploading, and the CUDA
shared-memory endpoints a CPU server answers like a CPU-only Triton."""
import gzip
import json
import os
import sys
import tempfile
import unittest
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from server import (RawConn, Server, binary_body, check_mlp, make_repo, mlp_reference, mlp_request,  # noqa: E402
                    request_bytes, split_binary)


def chunked(body, sizes):
    """body in chunks of the given sizes (the rest in one last chunk), then the final 0-chunk."""
    out, pos = b"", 0
    for n in list(sizes) + [len(body)]:
        part = body[pos:pos + n]
        if part:
            out += b"%x\r\n%s\r\n" % (len(part), part)
        pos += len(part)
    return out + b"0\r\n\r\n"


class Bodies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx"})
        cls.srv = Server(repo, "--max-body-bytes", "4M")
        cls.rng = np.random.default_rng(77)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0

    def x(self, n=2):
        return self.rng.standard_normal((n, 64)).astype(np.float32)

    def test_gzip_and_deflate_json(self):
        for name, enc in (("gzip", gzip.compress), ("deflate", zlib.compress)):
            x = self.x()
            body = enc(json.dumps(mlp_request(x)).encode())
            st, h, data = self.srv.request("POST", "/v2/models/mlp/infer", body, {"Content-Encoding": name})
            self.assertEqual(st, 200, data)
            check_mlp(self, x, data)

    def test_gzip_binary_request(self):
        x = self.x(3)
        header = {"inputs": [{"name": "x", "shape": [3, 64], "datatype": "FP32",
                              "parameters": {"binary_data_size": x.nbytes}}],
                  "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}
        body, headers = binary_body(header, [x.tobytes()])
        headers["Content-Encoding"] = "gzip"  # Inference-Header-Content-Length counts decoded bytes
        st, h, data = self.srv.request("POST", "/v2/models/mlp/infer", gzip.compress(body), headers)
        self.assertEqual(st, 200, data)
        _, blobs = split_binary(h, data)
        np.testing.assert_allclose(np.frombuffer(blobs["probs"], np.float32).reshape(3, 10), mlp_reference(x),
                                   rtol=1e-5, atol=1e-6)

    def test_bad_encodings(self):
        bomb = gzip.compress(b"[" + b" " * (16 << 20) + b"]")  # 16 MiB of spaces in ~16 KiB
        cases = [("gzip", bomb, 413, "exceeds the limit"),
                 ("gzip", b"\x1f\x8b\x08\x00not really gzip", 400, "corrupt"),
                 ("deflate", b"not deflate", 400, "corrupt"),
                 ("br", b"xx", 415, "not supported")]
        for enc, body, status, text in cases:
            st, _, data = self.srv.request("POST", "/v2/models/mlp/infer", body, {"Content-Encoding": enc})
            self.assertEqual(st, status, (enc, data))
            self.assertIn(text, json.loads(data)["error"])
        # A control-plane endpoint does not take compressed bodies.
        st, _, data = self.srv.request("POST", "/v2/repository/index", gzip.compress(b"{}"),
                                       {"Content-Encoding": "gzip"})
        self.assertEqual(st, 415)
        x = self.x(1)
        check_mlp(self, x, self.srv.json("POST", "/v2/models/mlp/infer", mlp_request(x))[1])

    def test_chunked_body_with_a_pipelined_request_behind_it(self):
        x = self.x()
        body = json.dumps(mlp_request(x)).encode()
        head = request_bytes("POST", "/v2/models/mlp/infer", b"", [("Transfer-Encoding", "chunked")])
        conn = RawConn(self.srv.port)
        conn.send(head + chunked(body, [7, 100, 1]) + request_bytes("GET", "/v2/health/live"))
        r1, r2 = conn.read_response(), conn.read_response()
        self.assertEqual(r1.status, 200, r1.body)
        check_mlp(self, x, r1.body)
        self.assertEqual((r2.status, json.loads(r2.body)), (200, {"live": True}))
        # The same connection keeps working.
        conn.send(request_bytes("POST", "/v2/models/mlp/infer", json.dumps(mlp_request(x)).encode()))
        check_mlp(self, x, conn.read_response().body)

    def test_chunked_errors(self):
        head = request_bytes("POST", "/v2/models/mlp/infer", b"", [("Transfer-Encoding", "chunked")])
        conn = RawConn(self.srv.port)
        conn.send(head + b"zz\r\nabc\r\n")  # not a hex chunk size
        r = conn.read_response()
        self.assertEqual(r.status, 400)
        self.assertEqual(r.header("Connection"), "close")
        self.assertTrue(conn.closed_by_peer())
        big = b"[" + b"0," * (3 << 20) + b"0]"  # 6 MiB of JSON, over the 4M limit
        conn = RawConn(self.srv.port)
        conn.send(head + chunked(big, [1 << 20] * 6))
        r = conn.read_response()
        self.assertEqual(r.status, 413)
        self.assertIn("limit", json.loads(r.body)["error"])

    def test_early_error_is_readable_while_the_client_uploads(self):
        """An unknown model answered before a 3 MB binary body is read: the response must arrive (the
        server shuts its side and discards the upload instead of resetting the connection)."""
        blob = self.rng.random((3 << 20) // 4, dtype=np.float32).tobytes()
        header = {"inputs": [{"name": "x", "shape": [len(blob) // 4], "datatype": "FP32",
                              "parameters": {"binary_data_size": len(blob)}}]}
        body, headers = binary_body(header, [blob])
        for _ in range(3):
            st, h, data = self.srv.request("POST", "/v2/models/nope/infer", body, headers)
            self.assertEqual(st, 404)
            self.assertIn("unknown model 'nope'", json.loads(data)["error"])
            self.assertEqual(h.get("connection"), "close")

    def test_cuda_shared_memory_endpoints(self):
        self.assertEqual(self.srv.json("GET", "/v2/cudasharedmemory/status"), (200, []))
        self.assertEqual(self.srv.json("GET", "/v2/cudasharedmemory/region/r/status"), (200, []))
        self.assertEqual(self.srv.json("POST", "/v2/cudasharedmemory/unregister"), (200, None))
        self.assertEqual(self.srv.json("POST", "/v2/cudasharedmemory/region/r/unregister"), (200, None))
        st, r = self.srv.json("POST", "/v2/cudasharedmemory/region/r/register",
                              {"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 8})
        self.assertEqual(st, 400)
        self.assertIn("CUDA shared memory is not supported", r["error"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
