#!/usr/bin/python3
"""test_server_load.py — concurrency on the real server: many clients at once, each sending distinct
random inputs (JSON and binary, mlp and identity) and checking that it gets its own results back (no
cross-talk between pool slots, connections or workers), with models run inline on the loops and
handed off to workers; and model reloads (POST .../load, including one that adds a version) while
clients keep sending requests, with zero failed requests. Every loop is bounded in count and time."""
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from server import MODELS, Server, binary_body, make_repo, mlp_reference, split_binary, wait_until  # noqa: E402

THREADS = 16
PER_THREAD = 40
TIME_LIMIT = 120  # seconds for the whole of one load phase, whatever happens
TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32",
         "FP64", "BYTES"]
NP = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
      "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
      "BF16": np.uint16, "FP32": np.float32, "FP64": np.float64}


def identity_case(rng, n, binary):
    """(body, headers, check(headers, body) -> None) for identity.onnx with random values of every type."""
    vals, inputs, blobs = {}, [], []
    for t in TYPES:
        if t == "BYTES":
            v = [rng.bytes(int(rng.integers(0, 12))).hex().encode() for _ in range(n)]
        elif t == "BOOL":
            v = rng.integers(0, 2, n).astype(np.bool_)
        elif t in ("FP16", "FP32", "FP64"):
            v = rng.standard_normal(n).astype(NP[t])
        elif t == "BF16":
            v = (rng.standard_normal(n).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        else:
            info = np.iinfo(NP[t])
            v = rng.integers(info.min, info.max, n, endpoint=True, dtype=NP[t])
        vals[t] = v
        if binary:
            blob = b"".join(len(s).to_bytes(4, "little") + s for s in v) if t == "BYTES" else v.tobytes()
            inputs.append({"name": "in_" + t, "shape": [n], "datatype": t, "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        else:
            data = ([s.decode() for s in v] if t == "BYTES" else
                    [float(x) for x in (v.astype(np.uint32) << 16).view(np.float32)] if t == "BF16" else
                    [float(x) for x in v] if t.startswith("FP") else
                    [bool(x) for x in v] if t == "BOOL" else [int(x) for x in v])
            inputs.append({"name": "in_" + t, "shape": [n], "datatype": t, "data": data})
    req = {"inputs": inputs, "parameters": {"binary_data_output": binary}}
    body, headers = binary_body(req, blobs) if binary else (json.dumps(req), {})

    def check(h, data):
        meta, out = split_binary(h, data)
        for o, t in zip(meta["outputs"], TYPES):
            if binary:
                raw = out[o["name"]]
                got = ([raw[i + 4:i + 4 + int.from_bytes(raw[i:i + 4], "little")] for i in _offsets(raw)]
                       if t == "BYTES" else np.frombuffer(raw, NP[t]))
            elif t == "BYTES":
                got = [s.encode() for s in o["data"]]
            elif t == "BF16":
                got = (np.array(o["data"], np.float32).view(np.uint32) >> 16).astype(np.uint16)
            else:
                got = np.array([int(x) for x in o["data"]] if t in ("UINT64", "INT64") else o["data"], NP[t])
            if t == "BYTES":
                assert list(got) == vals[t], (t, got, vals[t])
            else:
                assert np.array_equal(np.asarray(got).view(np.uint8), vals[t].view(np.uint8)), (t, got, vals[t])
    return body, headers, check


def _offsets(raw):
    i = 0
    while i < len(raw):
        yield i
        i += 4 + int.from_bytes(raw[i:i + 4], "little")


def mlp_case(rng, n, binary):
    x = rng.standard_normal((n, 64)).astype(np.float32)
    if binary:
        req = {"inputs": [{"name": "x", "shape": [n, 64], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
               "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}
        body, headers = binary_body(req, [x.tobytes()])
    else:
        body = json.dumps({"inputs": [{"name": "x", "shape": [n, 64], "datatype": "FP32", "data": x.ravel().tolist()}]})
        headers = {}

    def check(h, data):
        meta, out = split_binary(h, data)
        got = np.frombuffer(out["probs"], np.float32) if binary else np.array(meta["outputs"][0]["data"])
        np.testing.assert_allclose(got.reshape(n, 10), mlp_reference(x), rtol=1e-5, atol=1e-6)
    return body, headers, check


def run_clients(test, srv, n_threads, per_thread, make, stop=None, tags=None):
    """n_threads clients, each sending up to per_thread requests made by make(rng, k, i) -> (path, body,
    headers, check, tag) and checking each response; stops early when `stop` is set. `tags` (a list) gets
    tag(headers, body) of each successful response as it comes. Returns (count, errors, tags)."""
    errors, counts = [], [0] * n_threads
    tags = [] if tags is None else tags
    lock = threading.Lock()
    deadline = time.monotonic() + TIME_LIMIT

    def client(k):
        rng = np.random.default_rng(1000 + k)
        conn = srv.conn(timeout=60) if k % 4 else None  # most keep one connection; some open one per request
        try:
            for i in range(per_thread):
                if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                    break
                path, body, headers, check, tag = make(rng, k, i)
                try:
                    st, h, data = srv.request("POST", path, body, headers, conn=conn)
                    if st != 200:
                        raise AssertionError("status %d: %s" % (st, data[:300]))
                    check(h, data)
                    with lock:
                        tags.append(tag(h, data) if tag else None)
                except Exception as e:  # noqa: BLE001 - collected and reported below
                    with lock:
                        errors.append("client %d request %d: %r" % (k, i, e))
                    if conn is not None:
                        conn.close()
                        conn = srv.conn(timeout=60)
                counts[k] += 1
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, deadline - time.monotonic() + 5))
        test.assertFalse(t.is_alive(), "a client thread did not finish in time")
    return sum(counts), errors, tags


def mixed(rng, k, i):
    binary = (k + i) % 2 == 1
    n = int(rng.integers(1, 9))
    if (k + i // 2) % 2:
        body, headers, check = mlp_case(rng, n, binary)
        return "/v2/models/mlp/infer", body, headers, check, None
    body, headers, check = identity_case(rng, n, binary)
    return "/v2/models/identity/infer", body, headers, check, None


class Concurrency(unittest.TestCase):
    def run_phase(self, *server_args):
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"mlp": "mlp.onnx", "identity": "identity.onnx"}), *server_args)
            try:
                total, errors, _ = run_clients(self, srv, THREADS, PER_THREAD, mixed)
                self.assertEqual(errors, [])
                self.assertEqual(total, THREADS * PER_THREAD)
                def successes():
                    st, body = srv.json("GET", "/v2/models/stats")
                    return sum(m["inference_stats"]["success"]["count"] for m in body["model_stats"])
                # Statistics are recorded once each response is written: poll until the last are in.
                wait_until(lambda: successes() >= THREADS * PER_THREAD, 20, "every request in the statistics")
                self.assertEqual(successes(), THREADS * PER_THREAD)
            finally:
                self.assertEqual(srv.finish(), 0)

    def test_many_clients_inline(self):
        self.run_phase("--loops", "2", "--deadline-ms", "5000", "--inline-threshold-us", "10000000")

    def test_many_clients_on_workers(self):
        # Every run handed to the workers: slots cross threads.
        self.run_phase("--loops", "2", "--workers", "3", "--inline-threshold-us", "0", "--deadline-ms", "5000")


class ReloadUnderTraffic(unittest.TestCase):
    def test_reload_during_traffic_fails_no_request(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(tmp, {"mlp": "mlp.onnx"})
            srv = Server(repo, "--inline-threshold-us", "0", "--deadline-ms", "5000")
            stop = threading.Event()
            result, done = {}, []

            def make(rng, k, i):
                body, headers, check = mlp_case(rng, int(rng.integers(1, 5)), binary=(k + i) % 2 == 1)
                return ("/v2/models/mlp/infer", body, headers, check,
                        lambda h, data: split_binary(h, data)[0]["model_version"])

            def traffic():
                result["r"] = run_clients(self, srv, 6, 2000, make, stop=stop, tags=done)

            t = threading.Thread(target=traffic, daemon=True)
            try:
                t.start()
                for i in range(12):
                    # Requests complete between every two loads (progress observed, not slept on).
                    wait_until(lambda: len(done) >= 20 * (i + 1) or not t.is_alive(), 60, "client progress")
                    if i == 8:  # a new version appears on disk: the next load serves it
                        os.makedirs(os.path.join(repo, "mlp", "2"))
                        shutil.copyfile(os.path.join(MODELS, "mlp.onnx"), os.path.join(repo, "mlp", "2", "model.onnx"))
                    st, body = srv.json("POST", "/v2/repository/models/mlp/load")
                    self.assertEqual(st, 200, body)
                    st, r = srv.json("POST", "/v2/models/mlp/infer", {"inputs": [
                        {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]})
                    self.assertEqual((st, r["model_version"]), (200, "2" if i >= 8 else "1"))
                n = len(done)
                wait_until(lambda: len(done) >= n + 20 or not t.is_alive(), 60, "client progress")
            finally:
                stop.set()
                t.join(TIME_LIMIT + 10)
                self.assertFalse(t.is_alive())
            total, errors, versions = result["r"]
            try:
                self.assertEqual(errors, [])
                self.assertGreater(total, 12)
                self.assertEqual(set(versions), {"1", "2"})  # traffic spanned the new version's arrival
                self.assertGreaterEqual(total, 20 * 12 + 20)
                st, rows = srv.json("POST", "/v2/repository/index")
                self.assertEqual(sorted((r["name"], r.get("version"), r["state"]) for r in rows),
                                 [("mlp", "1", "READY"), ("mlp", "2", "READY")])
                st, meta = srv.json("GET", "/v2/models/mlp")
                self.assertEqual(meta["versions"], ["1", "2"])
            finally:
                self.assertEqual(srv.finish(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
