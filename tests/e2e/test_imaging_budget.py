#!/usr/bin/python3
"""test_imaging_budget.py — image decode memory comes from a budget (--image-decode-budget), not from the
heap without bound: the attack files of issue 13 (a 116 KB PNG declaring 6300 x 6300, a progressive
4:4:4 JPEG of the same size, both under max_pixels) are refused with 413 when they need more than the
whole budget, with 503 + Retry-After while other decodes hold it, and decoded when they fit; on the
classify endpoint, through a KServe BYTES image input, and in `ortserve classify`. With concurrent big
requests the server's peak RSS stays within the budget plus its baseline; in real memory cgroups of
128 and 256 MB (root and a memory controller needed; skipped with the reason otherwise) the attacks
get answers, never an OOM kill.

The budget is given as ORTSERVE_IMAGE_DECODE_BUDGET, so a server that does not know it still starts
and the tests judge what it does with the attack."""
import base64
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import unittest
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from cgroup_support import Cgroup, available as cgroup_unavailable  # noqa: E402
from server import BIN, REAL, Server, link  # noqa: E402

MiB = 1 << 20
URL = "/v2/models/text_orientation/classify"
INFER = "/v2/models/text_orientation/infer"
CONFIG = {"labels": "labels.txt",
          "image": {"height": 48, "width": 192, "resize": "paddle_ocr", "color": "BGR", "mean": 0.5, "std": 0.5},
          "postprocess": {"top_k": 2}}
SIDE = 6300  # 39.7 M pixels: under the default max_pixels of 40 M


def attack_png(side=SIDE):
    """An RGB PNG of side x side zeros: ~116 KB that decode to side² · 3 bytes."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    rows = zlib.compress(b"\0" * ((side * 3 + 1) * side), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def attack_jpeg(side=SIDE):
    """A progressive 4:4:4 JPEG (~560 KB): libjpeg holds all side² · 6 bytes of coefficients."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    img = np.stack([x / side * 255, y / side * 255, (x + y) / (2 * side) * 255], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=75, progressive=True, subsampling=0)
    return buf.getvalue()


def small_jpeg():
    buf = io.BytesIO()
    Image.fromarray((np.arange(120 * 40 * 3) % 251).astype(np.uint8).reshape(40, 120, 3)).save(buf, "JPEG")
    return buf.getvalue()


def make_repo(root):
    d = os.path.join(root, "text_orientation")
    link(os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx"), os.path.join(d, "1", "model.onnx"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    with open(os.path.join(d, "labels.txt"), "w") as f:
        f.write("0\n180\n")
    return root


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def metric(srv, name, labels=""):
    st, _, body = srv.request("GET", "/metrics")
    assert st == 200, st
    for line in body.decode().splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    return None


def post(srv, body, url=URL):
    c = srv.conn(timeout=120)  # decoding an attack file takes a while on a busy machine
    try:
        st, h, data = srv.request("POST", url, body, {"Content-Type": "application/octet-stream"}, conn=c)
    finally:
        c.close()
    return st, h, json.loads(data) if data else None


def post_all(srv, bodies, url=URL):
    """Sends the bodies at once (one connection each); returns [(status, headers, json)] in order."""
    out = [None] * len(bodies)
    go = threading.Barrier(len(bodies))

    def one(i):
        go.wait()
        out[i] = post(srv, bodies[i], url)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


class Budget(unittest.TestCase):
    BUDGET = 150 * MiB  # one attack PNG (~115 MiB) fits, two at once do not, the JPEG (~230 MiB) never

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = make_repo(os.path.join(cls.tmp.name, "repo"))
        cls.png, cls.jpg, cls.small = attack_png(), attack_jpeg(), small_jpeg()
        cls.srv = Server(cls.root, "--workers", "2", "--deadline-ms", "0",
                         env={"ORTSERVE_IMAGE_DECODE_BUDGET": str(cls.BUDGET)})

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def post(self, body, url=URL):
        return post(self.srv, body, url)

    def tearDown(self):
        st, _, doc = self.post(self.small)  # the server keeps serving
        self.assertEqual(st, 200, doc)

    def test_attack_files(self):
        self.assertLess(len(self.png), 130000)
        st, _, doc = self.post(self.jpg)
        self.assertEqual(st, 413, doc)
        self.assertIn("more than the whole image decode budget of 150.0 MiB", doc["error"])
        self.assertIn("6300 x 6300", doc["error"])
        st, _, doc = self.post(self.png)  # fits: decoded
        self.assertEqual(st, 200, doc)
        self.assertEqual(len(doc), 2)
        self.assertGreaterEqual(metric(self.srv, "ortserve_image_decode_refusals_total", '{reason="too_large"}'), 1)
        self.assertEqual(metric(self.srv, "ortserve_image_decode_budget_bytes", '{state="limit"}'), self.BUDGET)

    def test_concurrent_attacks_stay_within_the_budget(self):
        pid = self.srv.proc.pid
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")  # peak RSS := RSS now
        base = status_kb(pid, "VmRSS") * 1024
        busy = 0
        for _ in range(3):  # two workers decode at once as good as always; a few rounds make sure
            res = post_all(self.srv, [self.png] * 4)
            for st, h, doc in res:
                self.assertIn(st, (200, 503), doc)
                if st == 503:
                    busy += 1
                    self.assertIn("of the image decode budget (150.0 MiB", doc["error"])
                    self.assertIn("retry later", doc["error"])
                    self.assertEqual(h.get("retry-after"), "1")
            self.assertIn(200, [r[0] for r in res])
            if busy:
                break
        growth = status_kb(pid, "VmHWM") * 1024 - base
        self.assertGreater(busy, 0, "no attack was refused while another held the budget")
        # the budget, plus request bodies, responses and thread stacks: far from two decodes at once
        self.assertLess(growth, self.BUDGET + 16 * MiB, "peak RSS grew by %.1f MiB" % (growth / MiB))
        self.assertGreaterEqual(metric(self.srv, "ortserve_image_decode_refusals_total", '{reason="busy"}'), 1)
        # afterwards only what the worker contexts keep (at most 4 MiB each) stays reserved
        self.assertLessEqual(metric(self.srv, "ortserve_image_decode_budget_bytes", '{state="in_use"}'), 8 * MiB)
        self.assertGreaterEqual(metric(self.srv, "ortserve_image_decode_budget_high_water_bytes"), 100 * MiB)

    def test_kserve_bytes_input(self):
        def req(img):
            return json.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1],
                                           "data": [base64.b64encode(img).decode()]}],
                               "outputs": [{"name": "softmax_0.tmp_0", "parameters": {"classification": 2}}]})
        st, _, doc = self.post(req(self.jpg), INFER)
        self.assertEqual(st, 413, doc)
        self.assertIn("input 'x'", doc["error"])
        self.assertIn("image decode budget", doc["error"])
        st, _, doc = self.post(req(self.png), INFER)
        self.assertEqual(st, 200, doc)

    def test_cli(self):
        with tempfile.TemporaryDirectory() as tmp:
            big, ok = os.path.join(tmp, "big.png"), os.path.join(tmp, "ok.jpg")
            with open(big, "wb") as f:
                f.write(self.png)
            with open(ok, "wb") as f:
                f.write(self.small)
            p = subprocess.run([BIN, "classify", "--model-repository", self.root, "-m", "text_orientation", "--json",
                                "--decode-budget", "100M", big, ok], capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 1, p.stderr)
            r = {os.path.basename(x["image"]): x for x in json.loads(p.stdout)}
            self.assertIn("more than the whole image decode budget of 100.0 MiB", r["big.png"]["error"])
            self.assertEqual(len(r["ok.jpg"]["classes"]), 2)


@unittest.skipIf(os.geteuid() != 0 or cgroup_unavailable(), "needs root and a memory cgroup: %s" % cgroup_unavailable())
class CgroupAttacks(unittest.TestCase):
    """The server with its default memory plan in a real memory cgroup: the attacks are answered (413 or
    503, naming the budget; 200 if one fits), the server stays alive, no OOM kill."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = make_repo(os.path.join(cls.tmp.name, "repo"))
        cls.png, cls.jpg, cls.small = attack_png(), attack_jpeg(), small_jpeg()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_in_group(self, mb, bodies_list):
        cg = Cgroup(mb * MiB, "%dmb" % mb)
        srv = None
        try:
            srv = Server(self.root, "--workers", "2", "--deadline-ms", "0", preexec_fn=cg.enter)
            for bodies in bodies_list:
                for st, h, doc in post_all(srv, bodies):
                    self.assertIsNone(srv.proc.poll(), "ortserve died (exit %s) in a %d MB group; OOM kills: %d"
                                      % (srv.proc.returncode, mb, cg.stats()["oom_kills"]))
                    self.assertIn(st, (200, 413, 503), doc)
                    if st != 200:
                        self.assertIn("image decode budget", doc["error"])
            st, _, doc = srv.request("POST", URL, self.small, {"Content-Type": "image/jpeg"})
            self.assertEqual(st, 200, doc)
            self.assertIsNone(srv.proc.poll())
            rc = srv.finish()
            srv = None
            self.assertEqual(cg.stats()["oom_kills"], 0)
            self.assertEqual(rc, 0)
            print("%d MB group: 0 OOM kills, memory.failcnt %s" % (mb, cg.stats()["failcnt"]), file=sys.stderr)
        finally:
            if srv:
                srv.finish()
            kills = cg.stats()["oom_kills"]
            cg.remove()
            self.assertEqual(kills, 0, "%d OOM kill(s) in the %d MB group" % (kills, mb))

    def test_png_attack_in_128_mb(self):
        self.run_in_group(128, [[self.png], [self.jpg]])

    def test_three_concurrent_attacks_in_256_mb(self):
        self.run_in_group(256, [[self.png] * 3, [self.jpg, self.png, self.jpg]])


if __name__ == "__main__":
    unittest.main(verbosity=2)
