#!/usr/bin/python3
"""test_server_malformed.py — malformed requests, each on its own raw connection: the right status,
a JSON {"error": ...} body naming what was wrong, the connection kept alive when the request was
read completely (checked by a valid inference on the same connection) or closed, with
"Connection: close", when its body was not consumed; and after every case a valid inference on a
fresh connection. One generated test per case (CASES); 503 and 504 are in test_server_lifecycle.py.
"""
import json
import os
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from server import RawConn, Server, check_mlp, make_repo, mlp_request, request_bytes  # noqa: E402

MAX_BODY = 65536
X = np.random.default_rng(7).standard_normal((1, 64)).astype(np.float32)
XS = X.ravel().tolist()
IDENTITY_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16",
                  "FP32", "FP64", "BYTES"]


def infer(model, obj, headers=(), method="POST"):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return request_bytes(method, "/v2/models/%s/infer" % model, body, list(headers))


def mlp(**top):
    """A valid mlp request with top-level members replaced (None deletes one)."""
    req = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": XS}]}
    for k, v in top.items():
        if v is None:
            req.pop(k, None)
        else:
            req[k] = v
    return req


def mlp_input(**fields):
    """A valid mlp request whose single input has fields replaced (None deletes one)."""
    inp = {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": XS}
    for k, v in fields.items():
        if v is None:
            inp.pop(k, None)
        else:
            inp[k] = v
    return {"inputs": [inp]}


def identity(**override):
    """A valid identity request (all 14 inputs, one element each) with some inputs' fields replaced."""
    ins = []
    for t in IDENTITY_TYPES:
        d = {"name": "in_" + t, "shape": [1], "datatype": t,
             "data": [True] if t == "BOOL" else ["s"] if t == "BYTES" else [1]}
        d.update(override.get(t, {}))
        ins.append(d)
    return {"inputs": ins}


def binary(header, blob, ihcl=None, model="mlp"):
    hdr = json.dumps(header).encode()
    return request_bytes("POST", "/v2/models/%s/infer" % model, hdr + blob,
                         [("Inference-Header-Content-Length", str(len(hdr)) if ihcl is None else ihcl)])


BIN_X = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}]}
BLOB = X.tobytes()

# (name, request bytes, status, distinctive substring of the error, "keep" | "close")
CASES = [
    # --- the JSON request: syntax and structure ---
    ("invalid_json", infer("mlp", b'{"inputs": ['), 400, "invalid JSON", "keep"),
    ("trailing_garbage", infer("mlp", json.dumps(mlp()).encode() + b" x"), 400, "after the JSON value", "keep"),
    ("invalid_utf8", infer("mlp", b'{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":["\xff"]}]}'),
     400, "invalid UTF-8", "keep"),
    ("nesting_too_deep", infer("mlp", b'{"inputs":' + b"[" * 100 + b"]" * 100 + b"}"), 400, "nesting deeper",
     "keep"),
    ("body_not_an_object", infer("mlp", b"[1, 2]"), 400, "must be a JSON object", "keep"),
    ("empty_body", infer("mlp", b""), 400, "no body", "keep"),
    ("inputs_missing", infer("mlp", mlp(inputs=None, id="a")), 400, "'inputs' must be an array", "keep"),
    ("inputs_not_array", infer("mlp", mlp(inputs={"name": "x"})), 400, "'inputs' must be an array", "keep"),
    ("input_not_object", infer("mlp", mlp(inputs=[[{}]])), 400,
     "every element of 'inputs' must be an object", "keep"),
    ("input_name_not_string", infer("mlp", mlp_input(name=1)), 400, "no string 'name'", "keep"),
    ("unknown_input", infer("mlp", mlp_input(name="y")), 400, "unknown input 'y' for model 'mlp' (its inputs: 'x')", "keep"),
    ("input_twice", infer("mlp", mlp(inputs=mlp()["inputs"] * 2)), 400, "each is sent at most once", "keep"),
    ("input_missing", infer("identity", {"inputs": identity()["inputs"][1:]}), 400, "missing input 'in_BOOL'",
     "keep"),
    ("datatype_missing", infer("mlp", mlp_input(datatype=None)), 400, "no string 'datatype'", "keep"),
    ("datatype_unknown", infer("mlp", mlp_input(datatype="FP128")), 400, "unknown datatype 'FP128'", "keep"),
    ("datatype_mismatch", infer("mlp", mlp_input(datatype="FP64")), 400, "FP64 does not match the model's FP32",
     "keep"),
    ("shape_not_array", infer("mlp", mlp_input(shape="1,64")), 400, "'shape' must be a flat array", "keep"),
    ("shape_negative", infer("mlp", mlp_input(shape=[-1, 64])), 400, "negative", "keep"),
    ("shape_fraction", infer("mlp", mlp_input(shape=[1.5, 64])), 400, "'shape' must be a flat array", "keep"),
    ("shape_too_many_dims", infer("mlp", mlp_input(shape=[1, 64] + [1] * 18)), 400, "20 dimensions", "keep"),
    ("shape_rank_vs_model", infer("mlp", mlp_input(shape=[64])), 400, "rank 1", "keep"),
    ("shape_dim_vs_model", infer("mlp", mlp_input(shape=[1, 63], data=XS[:63])), 400,
     "does not match the model's [-1,64]", "keep"),
    ("shape_vs_data_length", infer("mlp", mlp_input(shape=[2, 64])), 400, "64 values but shape needs 128", "keep"),
    ("data_nested_vs_shape", infer("identity", identity(FP32={"data": [[1, 2]]})), 400, "2 values but shape needs 1",
     "keep"),
    ("data_string_for_fp32", infer("mlp", mlp_input(data=["a"] * 64)), 400, "is not a number", "keep"),
    ("data_null", infer("identity", identity(FP32={"data": [None]})), 400, "(null) is not a number", "keep"),
    ("int8_out_of_range", infer("identity", identity(INT8={"data": [128]})), 400, "out of range for INT8", "keep"),
    ("uint16_negative", infer("identity", identity(UINT16={"data": [-1]})), 400, "out of range for UINT16", "keep"),
    ("int32_fraction", infer("identity", identity(INT32={"data": [1.5]})), 400, "not an integer", "keep"),
    ("bool_not_boolean", infer("identity", identity(BOOL={"data": [2]})), 400, "not a valid BOOL", "keep"),
    ("bytes_not_strings", infer("identity", identity(BYTES={"data": [5]})), 400, "BYTES data must be", "keep"),
    ("no_data_source", infer("mlp", mlp_input(data=None)), 400, "exactly one of", "keep"),
    ("two_data_sources", infer("mlp", mlp_input(parameters={"binary_data_size": 256})), 400, "(it has 2)", "keep"),
    ("binary_without_header", infer("mlp", BIN_X), 400, "no Inference-Header-Content-Length", "keep"),
    ("input_parameters_not_object", infer("mlp", mlp_input(parameters=[1])), 400,
     "input 'x': 'parameters' must be an object", "keep"),
    ("shm_without_region", infer("mlp", mlp_input(data=None, parameters={"shared_memory_byte_size": 256})), 400,
     "needs both", "keep"),
    ("id_not_string", infer("mlp", mlp(id=5)), 400, "'id' must be a string", "keep"),
    ("id_too_long", infer("mlp", mlp(id="i" * 2000)), 400, "at most 1024 bytes", "keep"),
    ("parameters_not_object", infer("mlp", mlp(parameters=[1])), 400, "'parameters' must be an object", "keep"),
    ("binary_data_output_not_bool", infer("mlp", mlp(parameters={"binary_data_output": "yes"})), 400,
     "'binary_data_output' must be a boolean", "keep"),
    ("timeout_negative", infer("mlp", mlp(parameters={"timeout": -5})), 400, "'timeout' must be", "keep"),
    ("sequence_id", infer("mlp", mlp(parameters={"sequence_id": 7})), 400, "sequence batching", "keep"),
    ("outputs_not_array", infer("mlp", mlp(outputs={"name": "probs"})), 400, "'outputs' must be an array", "keep"),
    ("unknown_output", infer("mlp", mlp(outputs=[{"name": "logits"}])), 400, "unknown output 'logits' for model 'mlp' (its outputs: 'probs')", "keep"),
    ("output_twice", infer("mlp", mlp(outputs=[{"name": "probs"}] * 2)), 400, "each is requested at most once",
     "keep"),
    ("classification_zero", infer("mlp", mlp(outputs=[{"name": "probs", "parameters": {"classification": 0}}])),
     400, "'classification' must be a positive integer", "keep"),
    ("timeout_header_invalid", infer("mlp", mlp(), [("Ortserve-Timeout-Ms", "soon")]), 400,
     "Ortserve-Timeout-Ms", "close"),  # refused before its body was read
    ("model_run_error", infer("fail", {"inputs": [
        {"name": "x", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "shape", "shape": [1], "datatype": "INT64", "data": [3]}]}), 500, "Reshape", "keep"),

    # --- the binary tensor extension (the tensors after the JSON header were not all read: close) ---
    ("ihcl_beyond_body", binary(BIN_X, BLOB, ihcl="100000"), 400, "exceeds Content-Length", "close"),
    ("ihcl_not_a_number", binary(BIN_X, BLOB, ihcl="12abc"), 400, "Inference-Header-Content-Length", "close"),
    ("ihcl_cuts_the_json", binary(BIN_X, BLOB, ihcl="20"), 400, "invalid JSON", "close"),
    ("binary_truncated", binary(BIN_X, BLOB[:100]), 400, "add up to 256 bytes but 100 bytes follow", "close"),
    ("binary_extra_bytes", binary(BIN_X, BLOB + b"\0" * 4), 400, "but 260 bytes follow", "close"),
    ("binary_size_vs_shape", binary({"inputs": [dict(BIN_X["inputs"][0], parameters={"binary_data_size": 252})]},
                                    BLOB[:252]), 400, "252 bytes of data, but shape [1,64] of FP32 needs 256",
     "close"),
    ("binary_dtype_mismatch", binary({"inputs": [dict(BIN_X["inputs"][0], datatype="INT32")]}, BLOB), 400,
     "INT32 does not match", "close"),
    ("raw_body_does_not_fit", request_bytes("POST", "/v2/models/mlp/infer", b"\0" * 10,
                                            [("Inference-Header-Content-Length", "0")]), 400,
     "raw body of 10 bytes", "close"),
    ("raw_body_two_inputs", request_bytes("POST", "/v2/models/fail/infer", b"\0" * 16,
                                          [("Inference-Header-Content-Length", "0")]), 400,
     "needs a model with one", "close"),

    # --- not found ---
    ("unknown_model", infer("nope", mlp()), 404, "unknown model 'nope'", "close"),
    ("unknown_version", request_bytes("POST", "/v2/models/mlp/versions/9/infer", json.dumps(mlp()).encode()), 404,
     "no version 9", "close"),
    ("version_not_integer", request_bytes("GET", "/v2/models/mlp/versions/latest"), 400,
     "non-negative integer", "keep"),
    ("unknown_path", request_bytes("GET", "/v2/modelz"), 404, "no such endpoint: /v2/modelz", "keep"),
    ("unknown_model_action", request_bytes("GET", "/v2/models/mlp/explain"), 404, "no such endpoint", "keep"),
    ("unknown_shm_region_in_infer", infer("mlp", mlp_input(data=None, parameters={
        "shared_memory_region": "nowhere", "shared_memory_byte_size": 256})), 404, "'nowhere' is not registered",
     "keep"),
    ("unknown_shm_region_status", request_bytes("GET", "/v2/systemsharedmemory/region/nowhere/status"), 404,
     "'nowhere' is not registered", "keep"),

    # --- methods ---
    ("get_on_infer", request_bytes("GET", "/v2/models/mlp/infer"), 405, "method not allowed", "keep"),
    ("post_on_ready", request_bytes("POST", "/v2/health/ready", b'{"x": 1}'), 405, "method not allowed", "close"),
    ("delete_model", request_bytes("DELETE", "/v2/models/mlp"), 405, "method not allowed", "keep"),
    ("put_infer_with_body", request_bytes("PUT", "/v2/models/mlp/infer", json.dumps(mlp()).encode()), 405,
     "method not allowed", "close"),

    # --- framing and limits ---
    ("chunked_infer_not_json", b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n0\r\n\r\n", 400, "invalid JSON", "keep"),
    ("chunked_bad_size", b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5x\r\nhello\r\n0\r\n\r\n", 400, "chunk size", "close"),
    ("body_over_limit", b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
     % (MAX_BODY + 1), 413, "exceeds the limit of %d" % MAX_BODY, "close"),
    ("control_body_over_limit", b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
     % (2 << 20), 413, "exceeds the limit", "close"),
    ("content_encoding", infer("mlp", b"\x0b\x02\x80", [("Content-Encoding", "br")]), 415, "'br'", "close"),
    ("header_too_large", request_bytes("GET", "/v2/health/live", b"", [("X-Big", "b" * 5000)]), 431,
     "header size limit", "close"),
    ("too_many_headers", request_bytes("GET", "/v2/health/live", b"", [("X-H%d" % i, "v") for i in range(40)]),
     431, "too many request headers", "close"),
    ("content_length_invalid", b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
     400, "content-length", "close"),
    ("content_length_twice", b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                             b"Content-Length: 3\r\n\r\n{}", 400, "content-length", "close"),
    ("garbage_request_line", b"HELLO THERE\r\n\r\n", 400, "invalid", "close"),
    ("http2_version", b"GET /v2 HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/1.x", "close"),
    ("head_never_finished", b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n", 408, "timed out waiting", "close"),
    ("shm_register_not_allowed", request_bytes("POST", "/v2/systemsharedmemory/region/r/register",
                                               b'{"key": "k", "byte_size": 64}'), 403, "--allow-shm", "close"),
    ("cuda_shm", request_bytes("POST", "/v2/cudasharedmemory/region/r/register", b'{"raw_handle": {}}'), 400,
     "CUDA shared memory", "close"),
]


class Malformed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "identity": "identity.onnx", "fail": "fail.onnx"})
        cls.srv = Server(repo, "--max-body-bytes", str(MAX_BODY), "--max-header-bytes", "4096", "--max-headers",
                         "32", "--header-timeout-ms", "1000", "--deadline-ms", "0")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def valid_infer_on(self, conn):
        conn.send(request_bytes("POST", "/v2/models/mlp/infer", json.dumps(mlp_request(X, id="after")).encode()))
        r = conn.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["id"], "after")
        check_mlp(self, X, r.body)

    def run_case(self, data, status, substring, after):
        with RawConn(self.srv.port, timeout=30) as c:
            c.send(data)
            r = c.read_response(head_only=data.startswith(b"HEAD "))
            self.assertEqual(r.status, status, r)
            self.assertEqual(r.header("Content-Type"), "application/json", r)
            err = r.json()
            self.assertEqual(list(err), ["error"], r)
            self.assertIn(substring, err["error"])
            if status == 405:
                self.assertTrue(r.header("Allow"), "405 without an Allow header: %r" % r)
            if after == "close":
                self.assertEqual(r.header("Connection"), "close", "the response must announce the close: %r" % r)
                self.assertTrue(c.closed_by_peer(10), "the connection stayed open")
            else:
                self.assertIsNone(r.header("Connection"), r)
                self.valid_infer_on(c)  # the same connection still works
        st, body = self.srv.json("POST", "/v2/models/mlp/infer", mlp_request(X))  # and a fresh one
        self.assertEqual(st, 200, body)
        check_mlp(self, X, body)

    def test_count(self):
        self.assertGreaterEqual(len(CASES), 40)
        self.assertEqual(len({c[0] for c in CASES}), len(CASES))


def make_test(data, status, substring, after):
    def test(self):
        self.run_case(data, status, substring, after)
    return test


for _i, (_name, _data, _status, _sub, _after) in enumerate(CASES):
    setattr(Malformed, "test_%02d_%s_%d" % (_i, _name, _status), make_test(_data, _status, _sub, _after))

if __name__ == "__main__":
    unittest.main(verbosity=2)
