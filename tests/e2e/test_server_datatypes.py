#!/usr/bin/python3
"""test_server_datatypes.py — inference for every KServe datatype through identity.onnx (one Identity
per datatype): JSON and binary (Triton's extension) requests and responses, compared with numpy
bit for bit; FP16/BF16 JSON numbers rounded to nearest-even from their exact decimal value (checked
against a brute-force table of every representable value); BYTES as JSON strings and as Triton's
u32-length-prefixed binary; requested-output subsets and order; `id` echoed; request `parameters`
accepted; requests without any Content-Type; the binary_data_output default and per-output override;
raw binary requests; and the classification extension ("score:index[:label]") on mlp (labels from
config.json) and on the real PaddleOCR text-orientation classifier (labels 0 and 180)."""
import bisect
import http.client
import json
import os
import struct
import sys
import tempfile
import unittest
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from server import (REAL, RawConn, Server, binary_body, bytes_deserialize, bytes_serialize, make_repo,  # noqa: E402
                    mlp_reference, request_bytes, split_binary)

TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32",
         "FP64", "BYTES"]
NP = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
      "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
      "BF16": np.uint16, "FP32": np.float32, "FP64": np.float64}  # BF16 as its raw bits
BITS = {"FP16": np.uint16, "BF16": np.uint16, "FP32": np.uint32, "FP64": np.uint64}
PAPER_OCR = os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx")

STRINGS = [b"", b"a", b"hello world", "\u00e9t\u00e9 \u65e5\u672c \U0001F600".encode(), b'quote " and \\ backslash',
           b"tab\tnewline\ncr\r", b"\x00nul inside\x00", b"\x01\x1f\x7f controls", b"x" * 300]
BINARY_ONLY_STRINGS = [b"\xff\xfe not utf-8", b"\x80"]


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(values):
    """Exact conversion of float32 values that are bf16 values (low 16 bits zero)."""
    b = np.asarray(values, np.float32).view(np.uint32)
    assert not (b & 0xFFFF).any(), "not a bf16 value"
    return (b >> 16).astype(np.uint16)


def _head(v, extremes):
    k = min(len(v), len(extremes))
    v[:k] = extremes[:k]
    return v


def random_values(t, n, rng):
    """n values of datatype t (numpy array; BF16 as bits; BYTES as a list of bytes), with the extremes."""
    if t == "BYTES":
        return [STRINGS[i % len(STRINGS)] for i in range(n)]
    if t == "BOOL":
        v = rng.integers(0, 2, n).astype(np.bool_)
        return _head(v, [True, False])
    if t in ("FP32", "FP64"):
        dt = NP[t]
        v = (rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 30, n)).astype(dt)
        fi = np.finfo(dt)
        return _head(v, [fi.max, -fi.max, fi.tiny, fi.smallest_subnormal, -0.0, 0.1])
    if t == "FP16":
        v = (rng.standard_normal(n) * 100).astype(np.float16)
        return _head(v, [65504, -65504, np.float16(2 ** -24), -0.0, 0.1])
    if t == "BF16":
        v = f32_to_bf16_bits((rng.standard_normal(n).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32))
        return _head(v, [0x7F7F, 0xFF7F, 0x0001, 0x8000])  # max, -max, smallest subnormal, -0
    info = np.iinfo(NP[t])
    v = rng.integers(info.min, info.max, n, endpoint=True, dtype=NP[t])
    return _head(v, [info.min, info.max, 0])


def json_data(t, v):
    if t == "BYTES":
        return [s.decode() for s in v]
    if t == "BF16":
        return [float(x) for x in bf16_bits_to_f32(v)]
    if t == "BOOL":
        return [bool(x) for x in v]
    if t in ("FP16", "FP32", "FP64"):
        return [float(x) for x in v]
    return [int(x) for x in v]


def raw_bytes(t, v):
    return bytes_serialize(v) if t == "BYTES" else np.ascontiguousarray(v, NP[t]).tobytes()


def from_json(t, data):
    """An output's JSON data as numpy (BF16 as bits), BYTES as a list of bytes."""
    if t == "BYTES":
        return [s.encode() for s in data]
    if t == "BF16":
        return f32_to_bf16_bits(np.array(data, np.float32))
    if t in ("UINT64", "INT64"):
        return np.array([int(x) for x in data], NP[t])
    return np.array(data, NP[t])


def from_binary(t, blob):
    return bytes_deserialize(blob) if t == "BYTES" else np.frombuffer(blob, NP[t])


# ---- round to nearest-even from the exact decimal value, by brute force over every representable value ----

def _table(bits_to_value, n_exp_bits, n_mant_bits):
    """Sorted (value, bits) of every finite non-negative value of a binary format, plus +inf placed one
    ulp above the largest finite value (IEEE: overflow when |x| >= max + ulp/2, ties to even -> inf)."""
    vals = []
    inf_bits = ((1 << n_exp_bits) - 1) << n_mant_bits
    for b in range(inf_bits):
        vals.append((Fraction(float(bits_to_value(b))), b))
    ulp = vals[-1][0] - vals[-2][0]
    vals.append((vals[-1][0] + ulp, inf_bits))
    return vals


FP16_TABLE = _table(lambda b: np.array([b], np.uint16).view(np.float16)[0], 5, 10)
BF16_TABLE = _table(lambda b: bf16_bits_to_f32([b])[0], 8, 7)
FP16_KEYS = [v for v, _ in FP16_TABLE]
BF16_KEYS = [v for v, _ in BF16_TABLE]


def rne_bits(text, table, keys, sign_bit):
    x = Fraction(text)
    neg = text.lstrip().startswith("-")
    ax = abs(x)
    i = bisect.bisect_left(keys, ax)
    if i == len(keys):
        bits = table[-1][1]
    elif keys[i] == ax or i == 0:
        bits = table[i][1]
    else:
        (lo, lb), (hi, hb) = table[i - 1], table[i]
        d_lo, d_hi = ax - lo, hi - ax
        bits = lb if d_lo < d_hi else hb if d_hi < d_lo else (lb if lb % 2 == 0 else hb)
    return bits | (sign_bit if neg else 0)


FP16_CASES = ["1.00048828125",  # 1 + 2^-11: a tie, to even (1.0)
              "1.0004882812500001",  # just above the tie
              "1.00146484375",  # 1 + 3*2^-11: a tie, to even (1 + 2^-9)
              "0.1", "-0.1", "3.14159", "-2.71828", "0.333333333333333333333333333333", "1e-3", "123.456",
              "65504", "65519.999", "65520", "-65520", "70000", "1e5",  # the largest finite; overflow to inf
              "6.103515625e-05", "6.1e-05",  # smallest normal; a subnormal
              "5.9604644775390625e-08",  # smallest subnormal 2^-24
              "2.98023223876953125e-08",  # 2^-25: half of it, a tie, to even (0)
              "2.9802322387695313e-08",  # just above: the smallest subnormal
              "1e-10", "-0.0", "0", "2048.5", "2049", "4097"]
BF16_CASES = ["1.00390625",  # 1 + 2^-8: a tie, to even (1.0)
              "1.0039062500000000000001",  # just above the tie
              "1.01171875",  # 1 + 3*2^-8: a tie, to even
              "0.1", "3.3", "-3.3", "1e10", "-123456.789", "0.333333333333333333333333333333",
              "3.3895313892515355e38",  # the largest finite
              "3.39e38", "3.4e38", "-3.4e38", "1e39",  # overflow to inf
              "1.1754943508222875e-38",  # smallest normal
              "9.183549615799121e-41",  # smallest subnormal 2^-133
              "4.591774807899561e-41",  # 2^-134: a tie, to even (0)
              "4.5917748078995606e-41", "1e-45", "-0.0", "255.5", "256.5", "257.5"]


class Datatypes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"identity": "identity.onnx", "mlp": "mlp.onnx",
                                        "text_orientation": os.path.abspath(PAPER_OCR)},
                         configs={"mlp": {"labels": "labels.txt"}, "text_orientation": {"labels": "labels.txt"}},
                         files={"mlp/labels.txt": "".join("label_%d\n" % i for i in range(10)),
                                "text_orientation/labels.txt": "0\n180\n"})
        cls.srv = Server(repo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    # -- helpers --

    def identity_values(self, n, seed):
        rng = np.random.default_rng(seed)
        return {t: random_values(t, n, rng) for t in TYPES}

    def assert_same(self, t, got, want, what):
        if t == "BYTES":
            self.assertEqual(got, list(want), what)
        elif t in BITS:
            np.testing.assert_array_equal(np.asarray(got).view(BITS[t]), np.asarray(want, NP[t]).view(BITS[t]),
                                          err_msg="%s %s" % (what, t))
        else:
            np.testing.assert_array_equal(got, want, err_msg="%s %s" % (what, t))

    def post(self, body, headers=None, model="identity"):
        st, h, data = self.srv.request("POST", "/v2/models/%s/infer" % model, body, headers or {})
        self.assertEqual(st, 200, data[:500])
        return h, data

    # -- every datatype --

    def test_json_every_datatype(self):
        n = 37
        vals = self.identity_values(n, 1)
        req = {"inputs": [{"name": "in_" + t, "shape": [n], "datatype": t, "data": json_data(t, vals[t])}
                          for t in TYPES]}
        h, data = self.post(json.dumps(req))
        self.assertEqual(h["content-type"], "application/json")
        self.assertNotIn("inference-header-content-length", h)
        outs = json.loads(data)["outputs"]
        self.assertEqual([o["name"] for o in outs], ["out_" + t for t in TYPES])
        for o, t in zip(outs, TYPES):
            self.assertEqual((o["datatype"], o["shape"]), (t, [n]))
            self.assertNotIn("parameters", o)
            self.assert_same(t, from_json(t, o["data"]), vals[t], "json")

    def test_json_nested_data_and_multi_dim_shapes(self):
        """Flat and nested data for mlp's [N,64] input are the same row-major tensor."""
        x = np.random.default_rng(3).standard_normal((3, 64)).astype(np.float32)
        flat = {"inputs": [{"name": "x", "shape": [3, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
        nested = {"inputs": [{"name": "x", "shape": [3, 64], "datatype": "FP32", "data": x.tolist()}]}
        r1 = json.loads(self.post(json.dumps(flat), model="mlp")[1])
        r2 = json.loads(self.post(json.dumps(nested), model="mlp")[1])
        self.assertEqual(r1["outputs"], r2["outputs"])
        np.testing.assert_allclose(np.array(r1["outputs"][0]["data"]).reshape(3, 10), mlp_reference(x), rtol=1e-5,
                                   atol=1e-6)

    def test_binary_every_datatype(self):
        n = 53
        vals = self.identity_values(n, 2)
        vals["BYTES"][-len(BINARY_ONLY_STRINGS):] = BINARY_ONLY_STRINGS  # any bytes when binary
        vals["FP32"][6:9] = [np.inf, -np.inf, np.nan]
        vals["FP16"][5:8] = [np.inf, -np.inf, np.nan]
        inputs, blobs = [], []
        for t in TYPES:
            blob = raw_bytes(t, vals[t])
            inputs.append({"name": "in_" + t, "shape": [n], "datatype": t, "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        body, h = binary_body({"inputs": inputs, "parameters": {"binary_data_output": True}}, blobs)
        rh, data = self.post(body, h)
        self.assertEqual(rh["content-type"], "application/octet-stream")
        meta, out = split_binary(rh, data)
        for o, t in zip(meta["outputs"], TYPES):
            self.assertEqual(o["datatype"], t)
            self.assertNotIn("data", o)
            self.assertEqual(o["parameters"]["binary_data_size"], len(out[o["name"]]))
            self.assert_same(t, from_binary(t, out[o["name"]]), vals[t], "binary")

    def test_mixed_json_and_binary_inputs_and_outputs(self):
        n = 5
        vals = self.identity_values(n, 3)
        inputs, blobs = [], []
        for i, t in enumerate(TYPES):
            if i % 2:
                blob = raw_bytes(t, vals[t])
                inputs.append({"name": "in_" + t, "shape": [n], "datatype": t,
                               "parameters": {"binary_data_size": len(blob)}})
                blobs.append(blob)
            else:
                inputs.append({"name": "in_" + t, "shape": [n], "datatype": t, "data": json_data(t, vals[t])})
        wanted = ["BYTES", "FP16", "UINT64", "BOOL", "BF16"]  # a subset, in an order of our choosing
        outputs = [{"name": "out_" + t, "parameters": {"binary_data": i % 2 == 0}} for i, t in enumerate(wanted)]
        body, h = binary_body({"inputs": inputs, "outputs": outputs}, blobs)
        rh, data = self.post(body, h)
        meta, out = split_binary(rh, data)
        self.assertEqual([o["name"] for o in meta["outputs"]], ["out_" + t for t in wanted])
        for i, (o, t) in enumerate(zip(meta["outputs"], wanted)):
            got = from_binary(t, out[o["name"]]) if i % 2 == 0 else from_json(t, o["data"])
            self.assertEqual(o["name"] in out, i % 2 == 0)
            self.assert_same(t, got, vals[t], "mixed")

    def test_output_subset_json(self):
        vals = self.identity_values(4, 4)
        req = {"inputs": [{"name": "in_" + t, "shape": [4], "datatype": t, "data": json_data(t, vals[t])} for t in TYPES],
               "outputs": [{"name": "out_INT32"}]}
        r = json.loads(self.post(json.dumps(req))[1])
        self.assertEqual(len(r["outputs"]), 1)
        self.assertEqual(r["outputs"][0]["data"], [int(v) for v in vals["INT32"]])

    def test_bytes_json_and_binary(self):
        vals = self.identity_values(len(STRINGS), 5)
        vals["BYTES"] = STRINGS
        n = len(STRINGS)
        inputs = [{"name": "in_" + t, "shape": [n], "datatype": t, "data": json_data(t, vals[t])} for t in TYPES]
        body = json.dumps({"inputs": inputs, "outputs": [{"name": "out_BYTES"},
                                                         {"name": "out_INT8", "parameters": {"binary_data": True}}]})
        rh, data = self.post(body)
        meta, out = split_binary(rh, data)
        self.assertEqual([s.encode() for s in meta["outputs"][0]["data"]], STRINGS)
        self.assertEqual(meta["outputs"][0]["shape"], [n])
        np.testing.assert_array_equal(np.frombuffer(out["out_INT8"], np.int8), vals["INT8"])
        # BYTES in, BYTES out, both binary (Triton's layout: u32 LE length, then the bytes).
        strings = STRINGS + BINARY_ONLY_STRINGS
        blob = bytes_serialize(strings)
        self.assertEqual(struct.unpack_from("<I", blob, 4)[0], 1)
        inputs[-1] = {"name": "in_BYTES", "shape": [len(strings)], "datatype": "BYTES",
                      "parameters": {"binary_data_size": len(blob)}}
        body, h = binary_body({"inputs": inputs, "outputs": [{"name": "out_BYTES", "parameters": {"binary_data": True}}]},
                              [blob])
        rh, data = self.post(body, h)
        meta, out = split_binary(rh, data)
        self.assertEqual(out["out_BYTES"], blob)
        self.assertEqual(meta["outputs"][0]["shape"], [len(strings)])

    def test_fp16_bf16_json_round_to_nearest_even(self):
        n16, nb = len(FP16_CASES), len(BF16_CASES)
        n = max(n16, nb)
        want16 = [rne_bits(s, FP16_TABLE, FP16_KEYS, 0x8000) for s in FP16_CASES]
        wantb = [rne_bits(s, BF16_TABLE, BF16_KEYS, 0x8000) for s in BF16_CASES]
        # Spot-check the reference itself on the documented ties.
        self.assertEqual(want16[0], 0x3C00)
        self.assertEqual(want16[1], 0x3C01)
        self.assertEqual(want16[2], 0x3C02)
        self.assertEqual(want16[FP16_CASES.index("65520")], 0x7C00)
        self.assertEqual(want16[FP16_CASES.index("2.98023223876953125e-08")], 0)
        self.assertEqual(wantb[0], 0x3F80)
        self.assertEqual(wantb[1], 0x3F81)
        self.assertEqual(wantb[BF16_CASES.index("3.4e38")], 0x7F80)

        def pad(cases):
            return (cases * 2)[:n]
        vals = self.identity_values(n, 6)
        parts = []
        for t in TYPES:
            if t == "FP16":
                data = "[" + ",".join(pad(FP16_CASES)) + "]"
            elif t == "BF16":
                data = "[" + ",".join(pad(BF16_CASES)) + "]"
            else:
                data = json.dumps(json_data(t, vals[t]))
            parts.append('{"name":"in_%s","shape":[%d],"datatype":"%s","data":%s}' % (t, n, t, data))
        body = '{"inputs":[%s],"outputs":[{"name":"out_FP16"},{"name":"out_BF16"}],%s}'
        rh, data = self.post((body % (",".join(parts), '"parameters":{"binary_data_output":true}')).encode())
        _, out = split_binary(rh, data)
        got16 = np.frombuffer(out["out_FP16"], np.uint16)[:n16]
        gotb = np.frombuffer(out["out_BF16"], np.uint16)[:nb]
        for s, g, w in zip(FP16_CASES, got16, want16):
            self.assertEqual(hex(g), hex(w), "FP16 %s" % s)
        for s, g, w in zip(BF16_CASES, gotb, wantb):
            self.assertEqual(hex(g), hex(w), "BF16 %s" % s)
        # The JSON forms of the same outputs convert back to the same bits.
        rh, data = self.post((body % (",".join(parts), '"id":"json"')).encode())
        outs = json.loads(data)["outputs"]
        j16 = np.array(outs[0]["data"], np.float64).astype(np.float16).view(np.uint16)[:n16]
        jb = f32_to_bf16_bits(np.array(outs[1]["data"], np.float32))[:nb]
        np.testing.assert_array_equal(j16, got16)
        np.testing.assert_array_equal(jb, gotb)

    def test_float_json_output_round_trips(self):
        """FP32 and FP64 written as JSON parse back to the very same bits (shortest round-trip form)."""
        rng = np.random.default_rng(8)
        n = 400
        vals = self.identity_values(n, 9)
        vals["FP32"] = (rng.standard_normal(n) * 10.0 ** rng.uniform(-40, 38, n)).astype(np.float32)
        vals["FP64"] = rng.standard_normal(n) * 10.0 ** rng.uniform(-300, 300, n)
        vals["FP64"][:3] = [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]
        inputs, blobs = [], []
        for t in TYPES:
            blob = raw_bytes(t, vals[t])
            inputs.append({"name": "in_" + t, "shape": [n], "datatype": t, "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        body, h = binary_body({"inputs": inputs, "outputs": [{"name": "out_FP32"}, {"name": "out_FP64"}]}, blobs)
        rh, data = self.post(body, h)
        outs = json.loads(data)["outputs"]
        self.assert_same("FP32", np.array(outs[0]["data"], np.float32), vals["FP32"], "json fp32")
        self.assert_same("FP64", np.array(outs[1]["data"], np.float64), vals["FP64"], "json fp64")

    # -- request features --

    def test_id_and_parameters(self):
        vals = self.identity_values(2, 10)
        for rid in ("req-1", "", "caf\u00e9 \"quoted\" \\ \u65e5\u672c", "x" * 1024):
            req = {"id": rid, "parameters": {"custom": "value", "priority": 0, "flag": True, "timeout": 0,
                                             "triton_x": 1.5},
                   "inputs": [{"name": "in_" + t, "shape": [2], "datatype": t, "data": json_data(t, vals[t]),
                               "parameters": {"note": "per input"}} for t in TYPES],
                   "outputs": [{"name": "out_UINT8", "parameters": {"other": 3}}]}
            r = json.loads(self.post(json.dumps(req))[1])
            self.assertEqual(r["id"], rid)
            self.assertEqual((r["model_name"], r["model_version"]), ("identity", "1"))
            self.assertEqual(r["outputs"][0]["data"], [int(v) for v in vals["UINT8"]])
        r = json.loads(self.post(json.dumps({k: v for k, v in req.items() if k != "id"}))[1])
        self.assertNotIn("id", r)

    def test_requests_without_content_type(self):
        class Capture:
            data = b""

            def sendall(self, b):
                Capture.data += b

        probe = http.client.HTTPConnection("127.0.0.1", 1)
        probe.sock = Capture()
        probe.request("POST", "/v2/models/mlp/infer", body=b'{"inputs": []}')
        self.assertNotIn(b"content-type", Capture.data.lower(), "http.client added a Content-Type")
        self.assertIn(b"Content-Length: 14", Capture.data)

        x = np.random.default_rng(12).standard_normal((2, 64)).astype(np.float32)
        req = json.dumps({"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": x.ravel().tolist()}]})
        st, h, data = self.srv.request("POST", "/v2/models/mlp/infer", req.encode())  # no Content-Type
        self.assertEqual(st, 200, data)
        np.testing.assert_allclose(np.array(json.loads(data)["outputs"][0]["data"]).reshape(2, 10), mlp_reference(x),
                                   rtol=1e-5, atol=1e-6)
        body, hh = binary_body({"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32",
                                            "parameters": {"binary_data_size": 512}}]}, [x.tobytes()])
        with RawConn(self.srv.port) as c:  # nothing but Host, Content-Length and the binary header
            c.send(request_bytes("POST", "/v2/models/mlp/infer", body, list(hh.items())))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
        # Whatever Content-Type a client sends is not held against it either.
        for ct in ("application/json", "application/octet-stream", "text/plain"):
            st, h, data = self.srv.request("POST", "/v2/models/mlp/infer", req.encode(), {"Content-Type": ct})
            self.assertEqual(st, 200, (ct, data))

    def test_binary_data_output_default_and_override(self):
        x = np.random.default_rng(13).standard_normal((1, 64)).astype(np.float32)
        want = mlp_reference(x)
        inp = [{"name": "x", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}]
        # A binary request with no outputs named: outputs come back as JSON by default.
        body, h = binary_body({"inputs": inp}, [x.tobytes()])
        rh, data = self.post(body, h, model="mlp")
        self.assertEqual(rh["content-type"], "application/json")
        self.assertNotIn("inference-header-content-length", rh)
        np.testing.assert_allclose(np.array(json.loads(data)["outputs"][0]["data"]), want[0], rtol=1e-5, atol=1e-6)
        # binary_data_output: true makes every output binary ...
        body, h = binary_body({"inputs": inp, "parameters": {"binary_data_output": True}}, [x.tobytes()])
        rh, data = self.post(body, h, model="mlp")
        meta, out = split_binary(rh, data)
        self.assertEqual(rh["content-type"], "application/octet-stream")
        np.testing.assert_allclose(np.frombuffer(out["probs"], np.float32), want[0], rtol=1e-5, atol=1e-6)
        # ... unless an output says binary_data: false.
        body, h = binary_body({"inputs": inp, "parameters": {"binary_data_output": True},
                               "outputs": [{"name": "probs", "parameters": {"binary_data": False}}]}, [x.tobytes()])
        rh, data = self.post(body, h, model="mlp")
        self.assertEqual(rh["content-type"], "application/json")
        self.assertIn("data", json.loads(data)["outputs"][0])
        # A JSON request can ask for binary outputs too.
        req = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}],
               "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}
        rh, data = self.post(json.dumps(req), model="mlp")
        meta, out = split_binary(rh, data)
        self.assertEqual(meta["outputs"][0]["parameters"]["binary_data_size"], 40)

    def test_raw_binary_request(self):
        """Inference-Header-Content-Length: 0: the body is the only input's bytes; outputs are binary."""
        x = np.random.default_rng(14).standard_normal((3, 64)).astype(np.float32)
        rh, data = self.post(x.tobytes(), {"Inference-Header-Content-Length": "0"}, model="mlp")
        meta, out = split_binary(rh, data)
        self.assertEqual(meta["outputs"][0]["shape"], [3, 10])
        np.testing.assert_allclose(np.frombuffer(out["probs"], np.float32).reshape(3, 10), mlp_reference(x),
                                   rtol=1e-5, atol=1e-6)

    # -- classification --

    def classify(self, model, x, k, label=True, binary=False, output="probs"):
        req = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
               "outputs": [{"name": output, "parameters": {"classification": k, "binary_data": binary}}]}
        rh, data = self.post(json.dumps(req), model=model)
        meta, out = split_binary(rh, data)
        o = meta["outputs"][0]
        self.assertEqual((o["name"], o["datatype"]), (output, "BYTES"))
        items = [s.decode() for s in bytes_deserialize(out[output])] if binary else o["data"]
        return o["shape"], items

    def check_classes(self, items, scores, k, labels, exact=True):
        """items: "score:index[:label]" strings for one row; scores: that row's probabilities (exact: the
        server's own float32 values; else a float64 reference)."""
        order = np.argsort(-scores, kind="stable")[:k]
        self.assertEqual(len(items), k)
        for item, idx in zip(items, order):
            parts = item.split(":")
            self.assertEqual(len(parts), 3 if labels else 2, item)
            self.assertRegex(parts[0], r"^-?\d+\.\d{6}$")  # std::to_string's format, as Triton
            if exact:
                self.assertEqual(parts[0], "%f" % scores[idx])
            else:
                self.assertAlmostEqual(float(parts[0]), scores[idx], delta=2e-6)
            self.assertEqual(int(parts[1]), idx)
            if labels:
                self.assertEqual(parts[2], labels[idx])

    def test_classification_with_labels(self):
        x = np.random.default_rng(15).standard_normal((2, 64)).astype(np.float32)
        probs = mlp_reference(x)
        labels = ["label_%d" % i for i in range(10)]
        for binary in (False, True):
            shape, items = self.classify("mlp", x, 3, binary=binary)
            self.assertEqual(shape, [2, 3])
            for row in range(2):
                self.check_classes(items[row * 3:row * 3 + 3], probs[row], 3, labels, exact=False)
        shape, items = self.classify("mlp", x, 25)  # more than there are classes: all of them
        self.assertEqual(shape, [2, 10])
        self.check_classes(items[:10], probs[0], 10, labels, exact=False)

    def test_classification_without_labels(self):
        vals = self.identity_values(6, 16)
        vals["FP32"] = np.array([0.5, -1.0, 3.25, 2.0, 3.0, -7.5], np.float32)
        req = {"inputs": [{"name": "in_" + t, "shape": [6], "datatype": t, "data": json_data(t, vals[t])} for t in TYPES],
               "outputs": [{"name": "out_FP32", "parameters": {"classification": 2}}, {"name": "out_INT16"}]}
        r = json.loads(self.post(json.dumps(req))[1])
        self.assertEqual(r["outputs"][0]["shape"], [2])  # rank-1 output: [k]
        self.assertEqual(r["outputs"][0]["data"], ["3.250000:2", "3.000000:4"])
        self.assertEqual(r["outputs"][1]["data"], [int(v) for v in vals["INT16"]])

    def test_classification_real_model(self):
        rng = np.random.default_rng(17)
        x = rng.uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)
        x[1] = x[1, :, ::-1, ::-1]  # the same "text" upside down
        req = {"inputs": [{"name": "x", "shape": [2, 3, 48, 192], "datatype": "FP32", "parameters": {
            "binary_data_size": x.nbytes}}], "outputs": [{"name": "softmax_0.tmp_0", "parameters": {"binary_data": True}}]}
        body, h = binary_body(req, [x.tobytes()])
        rh, data = self.post(body, h, model="text_orientation")
        _, out = split_binary(rh, data)
        probs = np.frombuffer(out["softmax_0.tmp_0"], np.float32).reshape(2, 2)
        np.testing.assert_allclose(probs.sum(axis=1), [1, 1], rtol=1e-5)
        req["outputs"] = [{"name": "softmax_0.tmp_0", "parameters": {"classification": 1}}]
        body, h = binary_body(req, [x.tobytes()])
        r = json.loads(self.post(body, h, model="text_orientation")[1])
        self.assertEqual(r["outputs"][0]["shape"], [2, 1])
        for row in range(2):
            self.check_classes(r["outputs"][0]["data"][row:row + 1], probs[row], 1, ["0", "180"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
