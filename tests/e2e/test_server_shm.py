#!/usr/bin/python3
"""test_server_shm.py — Triton's system shared memory extension on the real server: a POSIX shm
object made by the test (os.open under /dev/shm + mmap) is registered as input and output regions,
inference reads its inputs from and writes its outputs into the regions (checked in the test's own
mapping), and /metrics shows that no tensor byte was copied (a misaligned input, which must be
copied, shows that the counter does count). Also: every datatype through shared memory, validation
of register/infer parameters, status/unregister, and 403 without --allow-shm.

Hostile clients (docs/RELIABILITY.md, "Shared memory from hostile clients"): the budget of registered bytes
(--shm-max-bytes / ORTSERVE_SHM_MAX_BYTES) refuses a registration beyond it before opening the object;
an object truncated under its region gives 400 naming the region and the server stays up (a truncation
racing a run is tested in C, tests/unit/test_shm.c); with --auth-token-file a region belongs to the
token that registered it (other tokens are told it is not registered, have names of their own, and a
token dropped by SIGHUP takes its regions with it); in a 128 MB memory cgroup (root and a memory
controller needed, else skipped) sparse objects registered and used for inputs and outputs cause no
OOM kill: the budget refuses one larger than the plan, and pages the server would be first to touch
count against the memory guard."""
import http.client
import json
import mmap
import os
import re
import signal
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import cgroup_support  # noqa: E402
from obs_support import log_records  # noqa: E402
from server import Server, bytes_serialize, make_repo, mlp_reference, wait_until  # noqa: E402

SIZE = 1 << 16
TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32",
         "FP64"]
NP = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
      "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
      "BF16": np.uint16, "FP32": np.float32, "FP64": np.float64}


def metrics(srv):
    """{(name, frozenset(labels)): value} from GET /metrics (Prometheus text format)."""
    st, h, body = srv.request("GET", "/metrics")
    assert st == 200, body
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([-+0-9.eEinfNa]+)$', line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric_sum(m, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))


class SharedMemory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "identity": "identity.onnx"})
        cls.srv = Server(repo, "--allow-shm")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def setUp(self):
        self.key = "osv-e2e-%d-%s" % (os.getpid(), self._testMethodName[-20:])
        self.path = "/dev/shm/" + self.key
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            self.mm = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)

    def tearDown(self):
        self.assertEqual(self.srv.json("POST", "/v2/systemsharedmemory/unregister")[0], 200)
        self.mm.close()
        os.unlink(self.path)

    def register(self, name, offset, size, key=None):
        return self.srv.json("POST", "/v2/systemsharedmemory/region/%s/register" % name,
                             {"key": key or self.key, "offset": offset, "byte_size": size})

    def put(self, offset, arr):
        b = arr.tobytes() if isinstance(arr, np.ndarray) else arr
        self.mm[offset:offset + len(b)] = b

    def get(self, offset, dtype, count):
        return np.frombuffer(self.mm[offset:offset + np.dtype(dtype).itemsize * count], dtype)

    def mlp_shm_request(self, in_region, in_off, out_region, out_off, n):
        return {"inputs": [{"name": "x", "shape": [n, 64], "datatype": "FP32", "parameters": {
            "shared_memory_region": in_region, "shared_memory_offset": in_off, "shared_memory_byte_size": n * 256}}],
                "outputs": [{"name": "probs", "parameters": {
                    "shared_memory_region": out_region, "shared_memory_offset": out_off,
                    "shared_memory_byte_size": n * 40}}]}

    def test_bytes_output_into_shared_memory(self):
        """BYTES outputs are written into the region in Triton's serialized format (as
        tritonclient's shared_memory.get_contents_as_numpy reads them); a too-small range is a 400."""
        strings = [b"alpha", b"", b"\xce\xbb\x00z"]
        blob = bytes_serialize(strings)
        self.put(0, blob)
        self.assertEqual(self.register("in", 0, len(blob)), (200, None))
        self.assertEqual(self.register("out", 8192, 4096), (200, None))
        inputs = [{"name": "in_BYTES", "shape": [3], "datatype": "BYTES", "parameters": {
            "shared_memory_region": "in", "shared_memory_byte_size": len(blob)}}]
        for t in TYPES:  # the other inputs: empty tensors
            inputs.append({"name": "in_" + t, "shape": [0], "datatype": t, "data": []})
        req = {"inputs": inputs, "outputs": [{"name": "out_BYTES", "parameters": {
            "shared_memory_region": "out", "shared_memory_byte_size": 4096}}]}
        st, r = self.srv.json("POST", "/v2/models/identity/infer", req)
        self.assertEqual(st, 200, r)
        out = r["outputs"][0]
        self.assertEqual((out["datatype"], out["shape"]), ("BYTES", [3]))
        self.assertEqual(out["parameters"], {"shared_memory_byte_size": len(blob)})
        self.assertEqual(self.mm[8192:8192 + len(blob)], blob)
        req["outputs"][0]["parameters"]["shared_memory_byte_size"] = len(blob) - 1
        st, r = self.srv.json("POST", "/v2/models/identity/infer", req)
        self.assertEqual(st, 400)
        self.assertIn("needs %d bytes of shared memory" % len(blob), r["error"])

    def test_round_trip_without_copies(self):
        x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
        self.put(4096 + 128, x)
        self.assertEqual(self.register("in", 4096, 4096), (200, None))  # a region at an offset of the object
        self.assertEqual(self.register("out", 16384, 4096), (200, None))
        self.mm[16384:16384 + 4096] = b"\xee" * 4096
        m0 = metrics(self.srv)
        st, r = self.srv.json("POST", "/v2/models/mlp/infer", self.mlp_shm_request("in", 128, "out", 64, 2))
        self.assertEqual(st, 200, r)
        out = r["outputs"][0]
        self.assertEqual((out["name"], out["datatype"], out["shape"]), ("probs", "FP32", [2, 10]))
        self.assertEqual(out["parameters"], {"shared_memory_byte_size": 80})
        self.assertNotIn("data", out)
        np.testing.assert_allclose(self.get(16384 + 64, np.float32, 20).reshape(2, 10), mlp_reference(x), rtol=1e-5,
                                   atol=1e-6)
        self.assertEqual(self.mm[16384:16384 + 64], b"\xee" * 64)  # nothing written outside the range
        self.assertEqual(self.mm[16384 + 144:16384 + 256], b"\xee" * 112)
        m1 = metrics(self.srv)
        mv = {"model": "mlp", "version": "1"}
        self.assertEqual(metric_sum(m1, "ortserve_copied_bytes_total", **mv),
                         metric_sum(m0, "ortserve_copied_bytes_total", **mv), "tensor bytes were copied")
        for d in ("input", "output"):
            self.assertEqual(metric_sum(m1, "ortserve_tensor_bindings_total", direction=d, result="zero_copy", **mv) -
                             metric_sum(m0, "ortserve_tensor_bindings_total", direction=d, result="zero_copy", **mv),
                             1, d)
            self.assertEqual(metric_sum(m1, "ortserve_tensor_bindings_total", direction=d, **mv) -
                             metric_sum(m0, "ortserve_tensor_bindings_total", direction=d, **mv), 1, d)

        # The control: FP32 data at an odd address cannot be bound in place; the copy is counted.
        x2 = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
        self.put(4096 + 1001, x2)
        st, r = self.srv.json("POST", "/v2/models/mlp/infer", self.mlp_shm_request("in", 1001, "out", 0, 1))
        self.assertEqual(st, 200, r)
        np.testing.assert_allclose(self.get(16384, np.float32, 10), mlp_reference(x2)[0], rtol=1e-5, atol=1e-6)
        m2 = metrics(self.srv)
        self.assertEqual(metric_sum(m2, "ortserve_copied_bytes_total", reason="misaligned", **mv) -
                         metric_sum(m1, "ortserve_copied_bytes_total", reason="misaligned", **mv), 256)

    def test_every_datatype_through_shared_memory(self):
        rng = np.random.default_rng(3)
        n = 9
        vals, inputs, outputs, off = {}, [], [], 0
        self.assertEqual(self.register("io", 0, SIZE), (200, None))
        out_base = SIZE // 2
        for t in TYPES:
            if t == "BOOL":
                v = rng.integers(0, 2, n).astype(np.bool_)
            elif t in ("FP16", "FP32", "FP64"):
                v = rng.standard_normal(n).astype(NP[t])
            else:
                info = np.iinfo(NP[t])
                v = rng.integers(info.min, info.max, n, endpoint=True, dtype=NP[t])
            vals[t] = v
            self.put(off, v)
            p = {"shared_memory_region": "io", "shared_memory_offset": off, "shared_memory_byte_size": v.nbytes}
            inputs.append({"name": "in_" + t, "shape": [n], "datatype": t, "parameters": p})
            outputs.append({"name": "out_" + t, "parameters": dict(p, shared_memory_offset=out_base + off)})
            off += 128
        strings = [b"shared", b"", "m\u00e9moire".encode()]
        blob = bytes_serialize(strings * 3)
        self.put(off, blob)
        inputs.append({"name": "in_BYTES", "shape": [n], "datatype": "BYTES", "parameters": {
            "shared_memory_region": "io", "shared_memory_offset": off, "shared_memory_byte_size": len(blob)}})
        outputs.append({"name": "out_BYTES"})  # BYTES outputs come back in the response
        st, r = self.srv.json("POST", "/v2/models/identity/infer", {"inputs": inputs, "outputs": outputs})
        self.assertEqual(st, 200, r)
        for i, t in enumerate(TYPES):
            o = r["outputs"][i]
            self.assertEqual((o["name"], o["shape"], o["parameters"]["shared_memory_byte_size"]),
                             ("out_" + t, [n], vals[t].nbytes))
            got = self.get(out_base + i * 128, NP[t], n)
            np.testing.assert_array_equal(got.view(np.uint8), vals[t].view(np.uint8), err_msg=t)
        self.assertEqual([s.encode() for s in r["outputs"][-1]["data"]], strings * 3)

    def test_register_status_unregister(self):
        self.assertEqual(self.register("a", 0, 1024), (200, None))
        self.assertEqual(self.register("b", 4096, 8192, key="/" + self.key), (200, None))  # leading '/' allowed
        st, rows = self.srv.json("GET", "/v2/systemsharedmemory/status")
        self.assertEqual(st, 200)
        self.assertEqual(sorted(rows, key=lambda r: r["name"]),
                         [{"name": "a", "key": self.key, "offset": 0, "byte_size": 1024},
                          {"name": "b", "key": "/" + self.key, "offset": 4096, "byte_size": 8192}])
        self.assertEqual(self.srv.json("GET", "/v2/systemsharedmemory/region/a/status"),
                         (200, [{"name": "a", "key": self.key, "offset": 0, "byte_size": 1024}]))
        st, r = self.register("a", 0, 16)
        self.assertEqual(st, 409)
        self.assertIn("already registered", r["error"])
        self.assertEqual(self.srv.json("POST", "/v2/systemsharedmemory/region/a/unregister"), (200, None))
        # Unregistering what is not registered succeeds (Triton's semantics; its examples rely on it).
        self.assertEqual(self.srv.json("POST", "/v2/systemsharedmemory/region/a/unregister"), (200, None))
        st, r = self.srv.json("GET", "/v2/systemsharedmemory/region/a/status")
        self.assertEqual(st, 404)
        self.assertEqual(self.srv.json("POST", "/v2/systemsharedmemory/unregister"), (200, None))  # all
        self.assertEqual(self.srv.json("GET", "/v2/systemsharedmemory/status"), (200, []))

    def test_register_validation(self):
        cases = [({"offset": 0, "byte_size": 64}, 400, "string 'key'"),
                 ({"key": self.key, "offset": 0}, 400, "'byte_size'"),
                 ({"key": self.key, "byte_size": -1}, 400, "'byte_size'"),
                 ({"key": self.key, "byte_size": 0}, 400, "byte_size must be positive"),
                 ({"key": self.key, "offset": "0", "byte_size": 64}, 400, "'offset'"),
                 ({"key": "../etc/passwd", "byte_size": 64}, 400, "key must name an object"),
                 ({"key": "a/b", "byte_size": 64}, 400, "key must name an object"),
                 ({"key": self.key, "offset": SIZE - 8, "byte_size": 64}, 400, "outside it"),
                 ({"key": self.key, "offset": 0, "byte_size": SIZE + 1}, 400, "outside it"),
                 ({"key": self.key + "-missing", "byte_size": 64}, 400, "cannot open")]
        for body, status, sub in cases:
            st, r = self.srv.json("POST", "/v2/systemsharedmemory/region/r/register", body)
            self.assertEqual(st, status, body)
            self.assertIn(sub, r["error"], body)
        st, r = self.srv.json("POST", "/v2/systemsharedmemory/region/r/register", b"[1]")
        self.assertEqual(st, 400)
        st, r = self.srv.json("POST", "/v2/systemsharedmemory/region/r/register", b"")
        self.assertEqual(st, 400)
        self.assertEqual(self.srv.json("GET", "/v2/systemsharedmemory/status"), (200, []))  # nothing registered

    def test_ranges_ending_exactly_at_the_end_and_one_byte_past(self):
        """Every bound is checked at the last byte: a range that ends exactly at the end of its region
        (offset + size == region size) works, one byte further is a 400, for an input and an output,
        by offset and by size; the same at registration against the object's size."""
        x = np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)
        R = 1024  # regions inside the object, so a byte past a region is still mapped memory
        self.assertEqual(self.register("in", 4096, R), (200, None))
        self.assertEqual(self.register("out", 8192, R), (200, None))
        self.assertEqual(self.register("in256", 16384, 256), (200, None))  # exactly one input tensor
        self.assertEqual(self.register("in255", 20480, 255), (200, None))  # one byte short of it

        def infer(in_region, in_off, out_off, out_size=40):
            self.mm[8192:8192 + R + 64] = b"\xee" * (R + 64)  # the output region and what follows it
            req = self.mlp_shm_request(in_region, in_off, "out", out_off, 1)
            req["outputs"][0]["parameters"]["shared_memory_byte_size"] = out_size
            return self.srv.json("POST", "/v2/models/mlp/infer", req)

        def ok(out_obj_off, st_r):
            st, r = st_r
            self.assertEqual(st, 200, r)
            self.assertEqual(r["outputs"][0]["parameters"], {"shared_memory_byte_size": 40})
            np.testing.assert_allclose(self.get(out_obj_off, np.float32, 10), mlp_reference(x)[0], rtol=1e-5,
                                       atol=1e-6)
            self.assertEqual(self.mm[8192 + R:8192 + R + 64], b"\xee" * 64)  # nothing written past the region

        def outside(region, off, size, st_r):
            st, r = st_r
            self.assertEqual(st, 400, r)
            self.assertIn("shared memory region '%s' holds %d bytes: offset %d + size %d is outside it" %
                          (region, {"in": R, "out": R, "in255": 255}[region], off, size), r["error"])

        # Input by offset: [768, 1024) ends at the region's end; [769, 1025) is one byte past it.
        self.put(4096 + 768, x)
        ok(8192, infer("in", 768, 0))
        self.put(4096 + 769, x)
        outside("in", 769, 256, infer("in", 769, 0))
        # Input by size: 256 bytes in a 256-byte region, and in a 255-byte one.
        self.put(16384, x)
        ok(8192, infer("in256", 0, 0))
        outside("in255", 0, 256, infer("in255", 0, 0))
        # Output by offset: [984, 1024) is the region's last 40 bytes; [985, 1025) one byte past.
        self.put(4096, x)
        ok(8192 + R - 40, infer("in", 0, R - 40))
        self.assertEqual(self.mm[8192:8192 + R - 40], b"\xee" * (R - 40))
        outside("out", R - 39, 40, infer("in", 0, R - 39))
        # Output by size: the whole region as its range, then one byte more.
        ok(8192, infer("in", 0, 0, R))
        outside("out", 0, R + 1, infer("in", 0, 0, R + 1))

        # Registration against the object (SIZE bytes): ending at its last byte, and one byte past it.
        self.assertEqual(self.register("tail", SIZE - 64, 64), (200, None))
        self.assertEqual(self.register("whole", 0, SIZE), (200, None))
        for name, off, size in (("past_by_offset", SIZE - 63, 64), ("past_by_size", 0, SIZE + 1)):
            st, r = self.register(name, off, size)
            self.assertEqual(st, 400, (name, r))
            self.assertIn("is %d bytes: offset %d + byte_size %d is outside it" % (SIZE, off, size), r["error"])
        self.mm[SIZE - 40:SIZE] = b"\xee" * 40
        self.put(4096, x)
        st, r = self.srv.json("POST", "/v2/models/mlp/infer", {
            "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "parameters": {
                "shared_memory_region": "whole", "shared_memory_offset": 4096, "shared_memory_byte_size": 256}}],
            "outputs": [{"name": "probs", "parameters": {
                "shared_memory_region": "tail", "shared_memory_offset": 24, "shared_memory_byte_size": 40}}]})
        self.assertEqual(st, 200, r)
        np.testing.assert_allclose(self.get(SIZE - 40, np.float32, 10), mlp_reference(x)[0], rtol=1e-5, atol=1e-6)

    def test_infer_parameter_validation(self):
        self.assertEqual(self.register("in", 0, 1024), (200, None))
        self.assertEqual(self.register("small", 4096, 40), (200, None))
        good = self.mlp_shm_request("in", 0, "in", 512, 1)

        def variant(inp=None, out=None, **extra):
            r = json.loads(json.dumps(good))
            r["inputs"][0]["parameters"].update(inp or {})
            r["outputs"][0]["parameters"].update(out or {})
            for k, v in extra.items():
                r["inputs"][0][k] = v
            return r
        cases = [(variant({"shared_memory_byte_size": 100}), 400, "100 bytes of data, but shape [1,64] of FP32 needs 256"),
                 (variant({"shared_memory_offset": 900}), 400, "outside it"),
                 (variant({"shared_memory_offset": -4}), 400, "'shared_memory_offset' must be"),
                 (variant({"shared_memory_region": "nowhere"}), 404, "'nowhere' is not registered"),
                 (variant(out={"shared_memory_region": "small", "shared_memory_offset": 0,
                               "shared_memory_byte_size": 80}), 400, "outside it"),
                 (variant(out={"classification": 2}), 400, "cannot be combined"),
                 (variant(out={"binary_data": True}), 400, "cannot be combined"),
                 (variant(data=[0.0] * 64), 400, "exactly one of")]
        for req, status, sub in cases:
            st, r = self.srv.json("POST", "/v2/models/mlp/infer", req)
            self.assertEqual(st, status, req)
            self.assertIn(sub, r["error"], req)
        # An output range smaller than the output (2 rows: 80 bytes into 40).
        req = self.mlp_shm_request("in", 0, "small", 0, 2)
        req["outputs"][0]["parameters"]["shared_memory_byte_size"] = 40
        st, r = self.srv.json("POST", "/v2/models/mlp/infer", req)
        self.assertEqual(st, 400, r)
        self.assertIn("probs", r["error"])
        # A BYTES output whose serialized strings do not fit the region range.
        ins = [{"name": "in_" + t, "shape": [1], "datatype": t, "data": [1] if t != "BOOL" else [True]} for t in TYPES]
        ins.append({"name": "in_BYTES", "shape": [1], "datatype": "BYTES", "data": ["s" * 100]})
        st, r = self.srv.json("POST", "/v2/models/identity/infer", {"inputs": ins, "outputs": [{"name": "out_BYTES",
                              "parameters": {"shared_memory_region": "in", "shared_memory_byte_size": 64}}]})
        self.assertEqual(st, 400)
        self.assertIn("needs 104 bytes of shared memory", r["error"])
        # After all that, the good request works.
        x = np.random.default_rng(4).standard_normal((1, 64)).astype(np.float32)
        self.put(0, x)
        st, r = self.srv.json("POST", "/v2/models/mlp/infer", good)
        self.assertEqual(st, 200, r)
        np.testing.assert_allclose(self.get(512, np.float32, 10), mlp_reference(x)[0], rtol=1e-5, atol=1e-6)


class SharedMemoryNotAllowed(unittest.TestCase):
    def test_register_is_refused_without_allow_shm(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"mlp": "mlp.onnx"}))
            try:
                st, r = srv.json("POST", "/v2/systemsharedmemory/region/r/register", {"key": "k", "byte_size": 64})
                self.assertEqual(st, 403)
                self.assertIn("--allow-shm", r["error"])
                self.assertEqual(srv.json("GET", "/v2/systemsharedmemory/status"), (200, []))
                self.assertEqual(srv.json("GET", "/v2/systemsharedmemory/region/r/status")[0], 404)
                self.assertEqual(srv.json("POST", "/v2/systemsharedmemory/region/r/unregister")[0], 200)
                self.assertEqual(srv.json("POST", "/v2/systemsharedmemory/unregister"), (200, None))
            finally:
                self.assertEqual(srv.finish(), 0)


# ---- hostile clients ------------------------------------------------------------------------------

MiB = 1 << 20
_objects = [0]


class ShmObject:
    """A POSIX shared-memory object of `size` bytes made by the test (ftruncate: sparse until written),
    unlinked on exit. .mm maps it (map=True) — never touch it after truncating the object."""

    def __init__(self, size, map=True):
        _objects[0] += 1
        self.key = "osv-e2e-%d-h%d" % (os.getpid(), _objects[0])
        self.path = "/dev/shm/" + self.key
        self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.ftruncate(self.fd, size)
        self.mm = mmap.mmap(self.fd, size) if map else None

    def truncate(self, size):
        os.ftruncate(self.fd, size)

    def close(self):
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def register(srv, name, key, offset, size, headers=None):
    return srv.json("POST", "/v2/systemsharedmemory/region/%s/register" % name,
                    {"key": key, "offset": offset, "byte_size": size}, headers=headers)


def mlp_via_shm(region, out_region=None, n=1, in_off=0, out_off=4096):
    return {"inputs": [{"name": "x", "shape": [n, 64], "datatype": "FP32", "parameters": {
        "shared_memory_region": region, "shared_memory_offset": in_off, "shared_memory_byte_size": n * 256}}],
            "outputs": [{"name": "probs", "parameters": {
                "shared_memory_region": out_region or region, "shared_memory_offset": out_off,
                "shared_memory_byte_size": n * 40}}]}


def scale2x_via_shm(region, count, in_off, out_off):
    """scale2x (y = 2x, FP32 [N]) reading x from and writing y into `region`."""
    return {"inputs": [{"name": "x", "shape": [count], "datatype": "FP32", "parameters": {
        "shared_memory_region": region, "shared_memory_offset": in_off, "shared_memory_byte_size": count * 4}}],
            "outputs": [{"name": "y", "parameters": {
                "shared_memory_region": region, "shared_memory_offset": out_off,
                "shared_memory_byte_size": count * 4}}]}


def listening_record(srv):
    return next(r for r in log_records(srv) if r.get("event") == "listening")


class Budget(unittest.TestCase):
    """--shm-max-bytes: the bytes of all registered regions together. Checked before the object is
    opened or mapped; beyond it a registration is a 400 that names the limit and the flag."""

    def test_registrations_beyond_the_budget_are_refused(self):
        with tempfile.TemporaryDirectory() as tmp, ShmObject(SIZE) as obj:
            srv = Server(make_repo(tmp, {"mlp": "mlp.onnx"}), "--allow-shm", "--shm-max-bytes", "48K")
            try:
                self.assertEqual(listening_record(srv)["shm_max_bytes"], 48 << 10)
                self.assertEqual(register(srv, "a", obj.key, 0, 32768), (200, None))
                st, r = register(srv, "b", obj.key, 32768, 16385)  # one byte over
                self.assertEqual(st, 400, r)
                for part in ("'b'", "16385", "49153", "49152", "--shm-max-bytes"):
                    self.assertIn(part, r["error"])
                # Checked before the object is opened: a missing key gets the limit, not "cannot open".
                st, r = register(srv, "c", obj.key + "-missing", 0, 1 << 30)
                self.assertEqual(st, 400, r)
                self.assertIn("--shm-max-bytes", r["error"])
                self.assertEqual(register(srv, "b", obj.key, 32768, 16384), (200, None))  # exactly the limit
                st, rows = srv.json("GET", "/v2/systemsharedmemory/status")
                self.assertEqual(sorted(x["name"] for x in rows), ["a", "b"])
                # The bytes come back with the region: unregistering makes room again.
                self.assertEqual(srv.json("POST", "/v2/systemsharedmemory/region/a/unregister"), (200, None))
                self.assertEqual(register(srv, "c", obj.key, 0, 32768), (200, None))
                # A failed registration (here: outside the object) leaves no bytes taken.
                self.assertEqual(srv.json("POST", "/v2/systemsharedmemory/unregister"), (200, None))
                st, r = register(srv, "d", obj.key, SIZE - 8, 64)
                self.assertEqual(st, 400)
                self.assertIn("outside it", r["error"])
                self.assertEqual(register(srv, "e", obj.key, 0, 48 << 10), (200, None))
                # The regions still work.
                x = np.full((1, 64), 0.25, np.float32)
                obj.mm[0:256] = x.tobytes()
                st, r = srv.json("POST", "/v2/models/mlp/infer", mlp_via_shm("e"))
                self.assertEqual(st, 200, r)
                np.testing.assert_allclose(np.frombuffer(obj.mm[4096:4136], np.float32), mlp_reference(x)[0],
                                           rtol=1e-5, atol=1e-6)
            finally:
                self.assertEqual(srv.finish(), 0)

    def test_variable_and_default(self):
        """ORTSERVE_SHM_MAX_BYTES works like the flag; by default the budget is the slot pool's."""
        with tempfile.TemporaryDirectory() as tmp, ShmObject(SIZE) as obj:
            repo = make_repo(tmp, {"mlp": "mlp.onnx"})
            srv = Server(repo, "--allow-shm", env={"ORTSERVE_SHM_MAX_BYTES": "16K"})
            try:
                st, r = register(srv, "a", obj.key, 0, 16385)
                self.assertEqual(st, 400, r)
                self.assertIn("16384", r["error"])
                self.assertEqual(register(srv, "a", obj.key, 0, 16384), (200, None))
            finally:
                self.assertEqual(srv.finish(), 0)
            srv = Server(repo, "--allow-shm", "--pool-bytes", "24M")
            try:
                rec = listening_record(srv)
                self.assertEqual(rec["shm_max_bytes"], rec["pool_bytes"])
                self.assertGreater(rec["shm_max_bytes"], 16 << 20)
            finally:
                self.assertEqual(srv.finish(), 0)


class Truncation(unittest.TestCase):
    """A client shrinks its object under a registered region: touching the lost pages would raise
    SIGBUS in the server. The size is checked before every use: 400 naming the region, and the
    server stays up. (A truncation racing a run: tests/unit/test_shm.c.)"""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.srv = Server(make_repo(cls.tmp.name, {"mlp": "mlp.onnx", "identity": "identity.onnx"}), "--allow-shm")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def tearDown(self):
        self.assertEqual(self.srv.json("POST", "/v2/systemsharedmemory/unregister")[0], 200)

    def alive(self):
        self.assertIsNone(self.srv.proc.poll(), "ortserve died: exit %s" % self.srv.proc.returncode)
        self.assertEqual(self.srv.request("GET", "/v2/health/live")[0], 200)

    def test_truncated_object_is_a_400_naming_the_region(self):
        with ShmObject(SIZE) as obj:
            x = np.full((1, 64), 0.5, np.float32)
            obj.mm[0:256] = x.tobytes()
            self.assertEqual(register(self.srv, "tr", obj.key, 0, SIZE), (200, None))
            obj.mm.close()
            obj.mm = None
            obj.truncate(0)
            st, r = self.srv.json("POST", "/v2/models/mlp/infer", mlp_via_shm("tr"))
            self.alive()
            self.assertEqual(st, 400, r)
            self.assertIn("'tr'", r["error"])
            self.assertIn("truncated", r["error"])
            # Shrunk to less than the region (the input's page is still there, the output's is not).
            obj.truncate(4096)
            st, r = self.srv.json("POST", "/v2/models/mlp/infer", mlp_via_shm("tr"))
            self.alive()
            self.assertEqual((st, "'tr'" in r["error"]), (400, True), r)
            # An output-only region truncated: the input comes as JSON.
            req = mlp_via_shm("tr")
            req["inputs"][0] = {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}
            obj.truncate(0)
            st, r = self.srv.json("POST", "/v2/models/mlp/infer", req)
            self.alive()
            self.assertEqual((st, "'tr'" in r["error"]), (400, True), r)
            # Grown back, the object is usable again through the same registration (zeros now).
            obj.truncate(SIZE)
            st, r = self.srv.json("POST", "/v2/models/mlp/infer", mlp_via_shm("tr"))
            self.assertEqual(st, 200, r)
            obj.mm = mmap.mmap(obj.fd, SIZE)
            np.testing.assert_allclose(np.frombuffer(obj.mm[4096:4136], np.float32),
                                       mlp_reference(np.zeros((1, 64), np.float32))[0], rtol=1e-5, atol=1e-6)

    def test_truncated_bytes_input_and_output(self):
        """BYTES inputs are read and BYTES outputs written by the server itself, not by ORT."""
        with ShmObject(SIZE) as obj:
            blob = bytes_serialize([b"one", b"two"])
            obj.mm[0:len(blob)] = blob
            self.assertEqual(register(self.srv, "bi", obj.key, 0, 4096), (200, None))
            self.assertEqual(register(self.srv, "bo", obj.key, 8192, 4096), (200, None))
            inputs = [{"name": "in_BYTES", "shape": [2], "datatype": "BYTES", "parameters": {
                "shared_memory_region": "bi", "shared_memory_byte_size": len(blob)}}]
            for t in TYPES:
                inputs.append({"name": "in_" + t, "shape": [0], "datatype": t, "data": []})
            req = {"inputs": inputs, "outputs": [{"name": "out_BYTES", "parameters": {
                "shared_memory_region": "bo", "shared_memory_byte_size": 4096}}]}
            st, r = self.srv.json("POST", "/v2/models/identity/infer", req)
            self.assertEqual(st, 200, r)
            self.assertEqual(obj.mm[8192:8192 + len(blob)], blob)
            obj.mm.close()
            obj.mm = None
            obj.truncate(8192)  # "bi" is whole, "bo" is gone
            st, r = self.srv.json("POST", "/v2/models/identity/infer", req)
            self.alive()
            self.assertEqual((st, "'bo'" in r["error"]), (400, True), r)
            obj.truncate(0)
            st, r = self.srv.json("POST", "/v2/models/identity/infer", req)
            self.alive()
            self.assertEqual((st, "'bi'" in r["error"]), (400, True), r)


TOKEN_A, TOKEN_B = "shm-token-a", "shm-token-b"


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def write_tokens(path, tokens):
    with open(path, "w") as f:
        f.write("\n".join(tokens) + "\n")
    os.chmod(path, 0o600)


class Ownership(unittest.TestCase):
    """With --auth-token-file a region belongs to the token that registered it: to every other token
    it does not exist (404 "not registered" for status and infer, unregister is a no-op, the name is
    free), and a token removed from the file (SIGHUP) takes its regions with it. Without tokens
    every client shares one namespace, as in Triton (the classes above)."""

    def test_regions_belong_to_their_token(self):
        with tempfile.TemporaryDirectory() as tmp, ShmObject(SIZE) as obj:
            tokens = os.path.join(tmp, "tokens")
            write_tokens(tokens, [TOKEN_A, TOKEN_B])
            srv = Server(make_repo(os.path.join(tmp, "repo"), {"mlp": "mlp.onnx"}), "--allow-shm",
                         "--auth-token-file", tokens)
            a, b = bearer(TOKEN_A), bearer(TOKEN_B)
            try:
                x = np.full((1, 64), 0.125, np.float32)
                obj.mm[0:256] = x.tobytes()
                self.assertEqual(register(srv, "r", obj.key, 0, 8192, headers=a), (200, None))
                self.assertEqual(srv.json("GET", "/v2/systemsharedmemory/region/r/status", headers=a)[0], 200)
                # Token B cannot see, use or unregister A's region, and learns nothing of it.
                st, r = srv.json("GET", "/v2/systemsharedmemory/region/r/status", headers=b)
                self.assertEqual(st, 404, r)
                self.assertIn("'r' is not registered", r["error"])
                self.assertEqual(srv.json("GET", "/v2/systemsharedmemory/status", headers=b), (200, []))
                st, r = srv.json("POST", "/v2/models/mlp/infer", mlp_via_shm("r"), headers=b)
                self.assertEqual(st, 404, r)
                self.assertIn("'r' is not registered", r["error"])
                self.assertEqual(srv.json("POST", "/v2/systemsharedmemory/region/r/unregister", headers=b),
                                 (200, None))
                self.assertEqual(srv.json("POST", "/v2/systemsharedmemory/unregister", headers=b), (200, None))
                st, r = srv.json("POST", "/v2/models/mlp/infer", mlp_via_shm("r"), headers=a)
                self.assertEqual(st, 200, r)  # still A's, still working
                np.testing.assert_allclose(np.frombuffer(obj.mm[4096:4136], np.float32), mlp_reference(x)[0],
                                           rtol=1e-5, atol=1e-6)
                # Names are per token: B's own "r" (no 409 that would tell B that A has one).
                self.assertEqual(register(srv, "r", obj.key, 16384, 8192, headers=b), (200, None))
                st, rows = srv.json("GET", "/v2/systemsharedmemory/status", headers=b)
                self.assertEqual(rows, [{"name": "r", "key": obj.key, "offset": 16384, "byte_size": 8192}])
                st, rows = srv.json("GET", "/v2/systemsharedmemory/status", headers=a)
                self.assertEqual(rows, [{"name": "r", "key": obj.key, "offset": 0, "byte_size": 8192}])
                x2 = np.full((1, 64), -0.5, np.float32)
                obj.mm[16384:16384 + 256] = x2.tobytes()
                st, r = srv.json("POST", "/v2/models/mlp/infer", mlp_via_shm("r"), headers=b)
                self.assertEqual(st, 200, r)
                np.testing.assert_allclose(np.frombuffer(obj.mm[16384 + 4096:16384 + 4136], np.float32),
                                           mlp_reference(x2)[0], rtol=1e-5, atol=1e-6)
                # A's unregister-all removes A's regions only.
                self.assertEqual(srv.json("POST", "/v2/systemsharedmemory/unregister", headers=a), (200, None))
                self.assertEqual(srv.json("GET", "/v2/systemsharedmemory/status", headers=a), (200, []))
                self.assertEqual(len(srv.json("GET", "/v2/systemsharedmemory/status", headers=b)[1]), 1)

                # SIGHUP with B removed: B's regions go with the token (nobody could reach them).
                self.assertEqual(register(srv, "keep", obj.key, 0, 4096, headers=a), (200, None))
                write_tokens(tokens, [TOKEN_A])
                srv.proc.send_signal(signal.SIGHUP)
                reloads = wait_until(lambda: [r for r in log_records(srv) if r.get("event") == "auth_reloaded"], 10,
                                     "the reload")
                self.assertEqual((reloads[0]["tokens"], reloads[0]["shm_regions_dropped"]), (1, 1))
                self.assertEqual(srv.request("GET", "/v2/systemsharedmemory/status", headers=b)[0], 401)
                write_tokens(tokens, [TOKEN_A, TOKEN_B])
                srv.proc.send_signal(signal.SIGHUP)
                wait_until(lambda: srv.request("GET", "/v2/systemsharedmemory/status", headers=b)[0] == 200, 10,
                           "token B to be back")
                self.assertEqual(srv.json("GET", "/v2/systemsharedmemory/status", headers=b), (200, []))
                self.assertEqual([x["name"] for x in srv.json("GET", "/v2/systemsharedmemory/status",
                                                               headers=a)[1]], ["keep"])
            finally:
                self.assertEqual(srv.finish(), 0)


class SparseObjects(unittest.TestCase):
    """Sparse /dev/shm objects (ftruncate'd, never written) used for inputs and outputs: tmpfs charges a
    page to whoever touches it first, so every page the server reads or writes is charged to the
    server's group. In 128 MB: a 200 MB object is refused at registration (before: OOM kill), and
    objects that fit the budget, used one after another and kept alive after unregistering (their
    pages stay charged to the server), end in 503s from the memory guard, not an OOM kill."""

    LIMIT = 128 * MiB

    def setUp(self):
        self.cg, why = cgroup_support.make(self.LIMIT, "shm")
        if self.cg is None:
            self.skipTest(why)
        self.tmp = tempfile.TemporaryDirectory()
        self.objs = []
        try:
            self.srv = Server(make_repo(self.tmp.name, {"scale2x": "scale2x.onnx"}), "--allow-shm", "--workers",
                              "1", preexec_fn=self.cg.enter)
        except Exception:
            self.tmp.cleanup()
            self.cg.remove()
            raise

    def tearDown(self):
        rc = self.srv.finish() if self.srv.proc.poll() is None else self.srv.proc.returncode
        for o in self.objs:
            o.close()
        self.tmp.cleanup()
        self.cg.remove()
        self.assertEqual(rc, 0, "ortserve exited with %s" % rc)

    def infer(self, req):
        """(status, body) of a scale2x request; (None, why) when the server went away under it."""
        try:
            return self.srv.json("POST", "/v2/models/scale2x/infer", req)
        except (ConnectionError, http.client.HTTPException) as e:
            return None, repr(e)

    def survived(self):
        self.assertIsNone(self.srv.proc.poll(), "ortserve died (exit %s): OOM kills in its group: %d" % (
            self.srv.proc.returncode, self.cg.oom_kills()))
        self.assertEqual(self.cg.oom_kills(), 0)

    def test_a_sparse_object_larger_than_the_plan(self):
        obj = ShmObject(200 * MiB, map=False)
        self.objs.append(obj)
        st_reg, r_reg = register(self.srv, "big", obj.key, 0, 200 * MiB)
        # The attack itself: 100 MB read from the sparse object, 100 MB written into it.
        st, r = self.infer(scale2x_via_shm("big", 25 * MiB, 0, 100 * MiB))
        self.survived()
        self.assertEqual(st_reg, 400, r_reg)
        self.assertIn("--shm-max-bytes", r_reg["error"])
        self.assertEqual(st, 404, r)

    def test_sparse_objects_within_the_budget_one_after_another(self):
        budget = listening_record(self.srv)["shm_max_bytes"]
        self.assertGreater(budget, 4 * MiB)
        half = budget // 2 // 4096 * 4096
        count = half // 4
        statuses = []
        for i in range(10):
            obj = ShmObject(2 * half)
            self.objs.append(obj)
            # Two written pages, the rest sparse: the output's first and last values show the run wrote it.
            obj.mm[0:4] = np.float32(1.5).tobytes()
            obj.mm[half - 4:half] = np.float32(-3.0).tobytes()
            self.assertEqual(register(self.srv, "s", obj.key, 0, 2 * half), (200, None))
            st, r = self.infer(scale2x_via_shm("s", count, 0, half))
            self.survived()
            statuses.append(st)
            if st == 200:
                self.assertEqual(np.frombuffer(obj.mm[half:half + 4], np.float32)[0], 3.0)
                self.assertEqual(np.frombuffer(obj.mm[2 * half - 4:2 * half], np.float32)[0], -6.0)
            else:
                self.assertEqual(st, 503, r)
                self.assertIn("memory", r["error"])
            self.assertEqual(srv_unregister(self.srv, "s"), (200, None))
            obj.mm.close()
            obj.mm = None  # the object lives on (its pages stay charged to the server's group)
        self.survived()
        self.assertIn(200, statuses)
        self.assertIn(503, statuses)


def srv_unregister(srv, name):
    return srv.json("POST", "/v2/systemsharedmemory/region/%s/unregister" % name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
