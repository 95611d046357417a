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


if __name__ == "__main__":
    unittest.main()
