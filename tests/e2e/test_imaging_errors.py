#!/usr/bin/python3
"""test_imaging_errors.py — every bad image and bad classify request gets the right status and a clear
JSON {"error": ...}, and the server keeps serving: corrupt, truncated, unsupported (GIF, BMP, WebP,
text), zero-size, decompression bombs declared by a header (JPEG and PNG; answered without decoding),
too-large bodies and parts, non-image content types, empty or non-image multipart parts, malformed
multipart, too many images, bad query parameters, models without an image config, invalid image
configs at load time, and the CLI's per-file errors.

Limits come from the server's flags here (--image-max-bytes 200000 --image-max-pixels 4000000
--image-max-images 4), so the limits path through the load hook is covered too."""
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import imaging_ref as R  # noqa: E402
from server import BIN, MODELS, REAL, Server, link  # noqa: E402

URL = "/v2/models/text_orientation/classify"
CONFIG = {"labels": "labels.txt",
          "image": {"height": 48, "width": 192, "resize": "paddle_ocr", "color": "BGR", "mean": 0.5, "std": 0.5},
          "postprocess": {"top_k": 2}}


def jpeg_bytes(w=120, h=40, **kw):
    buf = io.BytesIO()
    Image.fromarray(R.photo_like(w, h, 1)).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png_bytes(w=120, h=40):
    buf = io.BytesIO()
    Image.fromarray(R.photo_like(w, h, 2)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_with_size(data, w, h):
    """The same JPEG with its SOF0 header claiming w x h (a decompression bomb in 700 bytes)."""
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]


def png_with_size(w, h):
    """A PNG whose (valid, CRC-correct) IHDR declares w x h, followed by a tiny IDAT."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def multipart(parts, boundary="b0undary"):
    """parts: [(headers dict or None, bytes)]."""
    out = bytearray()
    for hdrs, data in parts:
        out += ("--%s\r\n" % boundary).encode()
        for k, v in (hdrs if hdrs is not None else {"Content-Disposition": 'form-data; name="f"; filename="x.jpg"',
                                                    "Content-Type": "image/jpeg"}).items():
            out += ("%s: %s\r\n" % (k, v)).encode()
        out += b"\r\n" + data + b"\r\n"
    out += ("--%s--\r\n" % boundary).encode()
    return bytes(out), "multipart/form-data; boundary=%s" % boundary


class Errors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = os.path.join(cls.tmp.name, "repo")
        d = os.path.join(root, "text_orientation")
        link(os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx"), os.path.join(d, "1", "model.onnx"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(CONFIG, f)
        with open(os.path.join(d, "labels.txt"), "w") as f:
            f.write("0\n180\n")
        link(os.path.join(MODELS, "mlp.onnx"), os.path.join(root, "mlp", "1", "model.onnx"))
        # Invalid image configs: each model must fail to load with a message naming the problem.
        cls.bad = {
            "bad_resize": ({"image": {"resize": "zoom"}}, "image.resize"),
            "bad_key": ({"image": {"heigth": 224}}, "heigth"),
            "bad_channels": ({"image": {"color": "GRAY"}}, "channels"),
            "bad_std": ({"image": {"std": [0.2, 0, 0.2]}}, "image.std"),
            "bad_dims": ({"image": {"height": 100}}, "image.height is 100"),
            "bad_crop": ({"image": {"resize": "crop", "resize_short": 100}}, "resize_short"),
            "post_only": ({"postprocess": {"top_k": 3}}, "needs an 'image' section"),
            "bad_output": ({"image": {}, "postprocess": {"output": "nope"}}, "postprocess.output"),
        }
        for name, (cfg, _) in cls.bad.items():
            link(os.path.join(MODELS, "mobilenetv2.onnx"), os.path.join(root, name, "1", "model.onnx"))
            with open(os.path.join(root, name, "config.json"), "w") as f:
                json.dump(cfg, f)
        cls.root = root
        cls.srv = Server(root, "--image-max-bytes", "200000", "--image-max-pixels", "4000000",
                         "--image-max-images", "4", wait_ready=False)
        cls.good = jpeg_bytes()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def post(self, body, ctype="application/octet-stream", url=URL):
        st, h, data = self.srv.request("POST", url, body, {"Content-Type": ctype} if ctype else {})
        doc = json.loads(data) if data else None
        return st, doc

    def expect(self, status, needle, body, ctype="application/octet-stream", url=URL):
        st, doc = self.post(body, ctype, url)
        self.assertEqual(st, status, doc)
        self.assertIsInstance(doc, dict, doc)
        self.assertIn(needle, doc["error"])
        return doc["error"]

    def tearDown(self):
        # after every bad request the server still classifies
        st, doc = self.post(self.good, "image/jpeg")
        self.assertEqual(st, 200, doc)
        self.assertEqual(len(doc), 2)

    # ---- bad images ----------------------------------------------------------------------------------

    def test_corrupt(self):
        self.expect(400, "corrupt JPEG", b"\xff\xd8\xff" + bytes(range(256)) * 4)
        j = bytearray(self.good)
        i = j.index(b"\xff\xdb")
        j[i:i + 2] = b"\xff\xfe"  # the quantization table becomes a comment: libjpeg fails fatally
        self.expect(400, "corrupt JPEG: Quantization table 0x00 was not defined", bytes(j))
        p = bytearray(png_bytes())
        p[29] ^= 0xff  # IHDR CRC
        self.expect(400, "corrupt PNG", bytes(p))
        p = bytearray(png_bytes())
        i = p.index(b"IDAT") + 4
        p[i + 2:i + 40] = bytes(38)  # the zlib stream
        self.expect(400, "corrupt PNG", bytes(p))

    def test_truncated(self):
        self.expect(400, "truncated JPEG", self.good[:len(self.good) // 2])
        self.expect(400, "truncated PNG", png_bytes()[:300])
        self.expect(400, "corrupt", self.good[:10])

    def test_unsupported_formats(self):
        for fmt, name in (("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF")):
            buf = io.BytesIO()
            Image.fromarray(R.photo_like(40, 30, 3)).save(buf, fmt)
            err = self.expect(415, name + " images are not supported", buf.getvalue(), "image/" + fmt.lower())
            self.assertIn("JPEG or PNG", err)
        self.expect(415, "WebP", b"RIFF\x10\0\0\0WEBPVP8 " + bytes(20), "image/webp")
        self.expect(415, "unrecognised image data (starts with 7b 22 61 22", b'{"a": 1}', "image/jpeg")

    def test_zero_size(self):
        self.expect(400, "empty body", b"")
        body, ctype = multipart([(None, self.good), (None, b"")])
        self.expect(400, "part 1 ('x.jpg') is empty", body, ctype)

    def test_decompression_bombs(self):
        t0 = time.monotonic()
        err = self.expect(413, "max_pixels", jpeg_with_size(self.good, 60000, 60000))
        self.assertIn("60000 x 60000", err)
        self.expect(413, "max_pixels", png_with_size(100000, 100000))
        self.expect(413, "max_pixels", png_with_size(2001, 2000))  # just over 4000000
        self.assertLess(time.monotonic() - t0, 5.0)  # nothing was decoded

    # ---- bad requests ---------------------------------------------------------------------------------

    def test_too_large(self):
        big = bytes(200001)
        # checked from Content-Length before the body is read: answered, then the connection closes
        with socket.create_connection(("127.0.0.1", self.srv.port), timeout=30) as s:
            s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                       % (URL, len(big))).encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 413"), head)
        self.assertIn(b"Connection: close", head)
        self.assertIn("max_bytes", json.loads(body)["error"])
        body, ctype = multipart([(None, self.good), (None, big)])
        self.expect(413, "part 1 ('x.jpg'): image of 200001 bytes exceeds the limit of 200000", body, ctype)

    def test_content_types(self):
        self.expect(415, "Content-Type 'text/plain' is not an image", self.good, "text/plain")
        self.expect(415, "is not an image", self.good, "application/json")
        body, ctype = multipart([(None, self.good), ({"Content-Disposition": 'form-data; name="note"',
                                                      "Content-Type": "text/plain"}, b"hello")])
        self.expect(415, "part 1 ('note') has Content-Type 'text/plain'", body, ctype)
        # no Content-Type at all, and curl's default for --data-binary, are sniffed
        for ctype in (None, "application/x-www-form-urlencoded"):
            st, doc = self.post(self.good, ctype)
            self.assertEqual(st, 200, doc)

    def test_error_longer_than_the_head_buffer(self):
        # Control characters escape to 6 bytes in JSON: this message's body (about 1.6 KB) no longer fits
        # the response's head buffer, which used to answer a Content-Length without the body.
        name, ctype = "\x01" * 200, "text/" + "\x02" * 59
        body, mp = multipart([(None, self.good), ({"Content-Disposition": 'form-data; name="%s"' % name,
                                                   "Content-Type": ctype}, b"hello")])
        err = self.expect(415, "has Content-Type", body, mp)
        self.assertIn("part 1 ('%s')" % name, err)
        self.assertIn(ctype, err)

    def test_multipart_errors(self):
        self.expect(400, "needs a boundary", self.good, "multipart/form-data")
        body, ctype = multipart([(None, self.good)])
        self.expect(400, "no delimiter", body.replace(b"b0undary", b"other"), ctype)
        self.expect(400, "malformed multipart body", body[:len(body) // 2], ctype)
        self.expect(400, "no parts", b"--b0undary--\r\n", ctype)
        body, ctype = multipart([(None, self.good)] * 5)
        self.expect(413, "too many images in one request: the limit is 4 (max_images)", body, ctype)
        body, ctype = multipart([(None, self.good), (None, b"GIF89a" + bytes(30))])
        self.expect(415, "part 1 ('x.jpg'): GIF images are not supported", body, ctype)
        body, ctype = multipart([(None, self.good)] * 4)
        st, doc = self.post(body, ctype)
        self.assertEqual((st, len(doc)), (200, 4), doc)

    def test_query_method_and_models(self):
        self.expect(400, "unknown query parameter 'topk'", self.good, url=URL + "?topk=2")
        self.expect(400, "top_k must be an integer from 1 to 1000", self.good, url=URL + "?top_k=0")
        self.expect(400, "top_k must be", self.good, url=URL + "?top_k=abc")
        st, doc = self.post(self.good, url=URL + "?top_k=1")
        self.assertEqual((st, len(doc)), (200, 1))
        self.expect(400, "has no \"image\" section", self.good, url="/v2/models/mlp/classify")
        self.expect(404, "unknown model", self.good, url="/v2/models/nope/classify")
        st, _, _ = self.srv.request("GET", URL)
        self.assertEqual(st, 405)

    def test_invalid_configs_fail_the_load(self):
        st, index = self.srv.json("POST", "/v2/repository/index", {})
        self.assertEqual(st, 200)
        by_name = {e["name"]: e for e in index}
        for name, (_, needle) in self.bad.items():
            self.assertEqual(by_name[name].get("state"), "UNAVAILABLE", by_name[name])
            self.assertIn(needle, by_name[name].get("reason", ""), name)
        self.assertEqual(by_name["text_orientation"]["state"], "READY")

    def test_mutated_requests(self):
        """Seeded random damage to multipart bodies and images (flipped bytes, cuts, boundary noise): each
        answer is a clean 200/400/413/415 with JSON, and the server stays up (tearDown classifies)."""
        rng = np.random.default_rng(7)
        body, ctype = multipart([(None, self.good), (None, png_bytes(60, 30))])
        seen = set()
        for _ in range(150):
            b = bytearray(body)
            kind = rng.integers(4)
            if kind == 0:
                for _ in range(int(rng.integers(1, 10))):
                    b[int(rng.integers(len(b)))] = int(rng.integers(256))
            elif kind == 1:
                b = b[:int(rng.integers(1, len(b)))]
            elif kind == 2:
                i = int(rng.integers(len(b)))
                b[i:i] = rng.choice([b"--b0undary", b"\r\n", b"\r\n\r\n", b"--b0undary--"])
            else:
                i, j = sorted(int(v) for v in rng.integers(0, len(b), 2))
                del b[i:j]
            st, doc = self.post(bytes(b), ctype)
            self.assertIn(st, (200, 400, 413, 415), doc)
            self.assertIsInstance(doc, list if st == 200 else dict, doc)
            seen.add(st)
        self.assertTrue({200, 400} <= seen, seen)

    # ---- CLI --------------------------------------------------------------------------------------------

    def test_cli_reports_bad_files_and_classifies_the_rest(self):
        with tempfile.TemporaryDirectory() as tmp:
            good, bad, gif = (os.path.join(tmp, n) for n in ("good.jpg", "bad.jpg", "x.gif"))
            with open(good, "wb") as f:
                f.write(self.good)
            with open(bad, "wb") as f:
                f.write(self.good[:100])
            Image.new("RGB", (10, 10)).save(gif, "GIF")
            p = subprocess.run([BIN, "classify", "--model-repository", self.root, "-m", "text_orientation", "--json",
                                bad, good, gif, os.path.join(tmp, "missing.png")],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 1, p.stderr)
            r = {os.path.basename(x["image"]): x for x in json.loads(p.stdout)}
            self.assertIn("truncated or corrupt JPEG", r["bad.jpg"]["error"])
            self.assertEqual(len(r["good.jpg"]["classes"]), 2)
            self.assertIn("GIF images are not supported", r["x.gif"]["error"])
            self.assertIn("cannot open", r["missing.png"]["error"])
            p = subprocess.run([BIN, "classify", "--model-repository", self.root, "-m", "text_orientation",
                                "--max-pixels", "100", good], capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 1)
            self.assertIn("max_pixels", p.stdout)
            p = subprocess.run([BIN, "classify", "--model-repository", self.root, "-m", "mlp", good],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 1)
            self.assertIn("no \"image\" section", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
