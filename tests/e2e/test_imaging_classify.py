#!/usr/bin/python3
"""test_imaging_classify.py — image classification end to end with the real PaddleOCR text-orientation
classifier (third_party/models/ch_ppocr_mobile_v2.0_cls_infer.onnx, labels "0" and "180"), through the
server's classify endpoint and through `ortserve classify`.

Test data: text lines rendered with PIL from Debian's DejaVu fonts (fonts-dejavu-core: sans, sans
bold, mono, serif...), random words, sizes 18-43 px, light backgrounds and dark ink, tight crops as a
text detector would give the classifier; each upright and rotated 180 degrees, each as JPEG
(quality 70-95) and PNG. Seeded: the same 400 images every run. Both paths must be >= 95 % accurate
and must agree with each other exactly (they run the same code).

Also: batches (multipart, one Run for a dynamic batch dim) give the same scores as single requests;
a model with a fixed batch dim of 1 is run image by image; Content-Type is not trusted (a PNG sent
as image/jpeg is still a PNG). The KServe v2 infer endpoint takes the same images as a BYTES input
(binary extension, base64 JSON strings, chunked bodies) and answers through the classification
extension with the same scores as the classify endpoint."""
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import imaging_ref as R  # noqa: E402
from server import BIN, REAL, Server, link  # noqa: E402

MODEL = os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx")
N_LINES = 100
ACCURACY = 0.95
PADDLE_CONFIG = {
    "labels": "labels.txt",
    "image": {"height": 48, "width": 192, "resize": "paddle_ocr", "color": "BGR", "scale": 1 / 255.0,
              "mean": 0.5, "std": 0.5, "pad_value": 0},
    "postprocess": {"top_k": 2},
}


def multipart(files, boundary="osvBoundary7MA4YWxkTrZu0gW"):
    """files: [(filename, content type, bytes)] -> (body, content type)."""
    out = bytearray()
    for name, ctype, data in files:
        out += ("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%s\"\r\n"
                "Content-Type: %s\r\n\r\n" % (boundary, name, ctype)).encode()
        out += data + b"\r\n"
    out += ("--%s--\r\n" % boundary).encode()
    return bytes(out), "multipart/form-data; boundary=%s" % boundary


def read(path):
    with open(path, "rb") as f:
        return f.read()


def make_repo(root):
    d = os.path.join(root, "text_orientation")
    link(MODEL, os.path.join(d, "1", "model.onnx"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(PADDLE_CONFIG, f)
    with open(os.path.join(d, "labels.txt"), "w") as f:
        f.write("0\n180\n")
    return root


class Classify(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.repo = make_repo(os.path.join(cls.tmp.name, "repo"))
        cls.imgdir = os.path.join(cls.tmp.name, "lines")
        os.makedirs(cls.imgdir)
        rng = np.random.default_rng(20241124)
        fonts = R.fonts()
        assert len(fonts) >= 2, "fonts-dejavu-core is needed"
        cls.images = []  # (path, expected label, format, bytes)
        for i in range(N_LINES):
            im, _ = R.text_line(rng, fonts)
            for rot in (0, 180):
                x = im.rotate(180) if rot else im
                for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
                    data = R.encode(x, fmt, rng)
                    path = os.path.join(cls.imgdir, "%03d_%d.%s" % (i, rot, ext))
                    with open(path, "wb") as f:
                        f.write(data)
                    cls.images.append((path, str(rot), fmt, data))
        cls.srv = Server(cls.repo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.__exit__(None)
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def report(self, name, results):
        """results: [(expected, predicted label, format)]"""
        acc = np.mean([e == p for e, p, _ in results])
        by_fmt = {f: np.mean([e == p for e, p, ff in results if ff == f]) for f in ("JPEG", "PNG")}
        print("\n%s: accuracy %.1f%% on %d images (JPEG %.1f%%, PNG %.1f%%)" % (
            name, 100 * acc, len(results), 100 * by_fmt["JPEG"], 100 * by_fmt["PNG"]), file=sys.stderr)
        self.assertGreaterEqual(acc, ACCURACY, name)
        return acc

    def classify_server(self):
        """Every image once: the first 40 as single POSTs, the rest in multipart batches of 25."""
        out = {}
        for path, _, fmt, data in self.images[:40]:
            st, h, body = self.srv.request("POST", "/v2/models/text_orientation/classify", data,
                                           {"Content-Type": "image/jpeg" if fmt == "JPEG" else "image/png"})
            self.assertEqual(st, 200, body)
            out[path] = json.loads(body)
        rest = self.images[40:]
        for i in range(0, len(rest), 25):
            chunk = rest[i:i + 25]
            body, ctype = multipart([(os.path.basename(p), "image/jpeg" if f == "JPEG" else "image/png", d)
                                     for p, _, f, d in chunk])
            st, h, resp = self.srv.request("POST", "/v2/models/text_orientation/classify?top_k=2", body,
                                           {"Content-Type": ctype})
            self.assertEqual(st, 200, resp)
            lists = json.loads(resp)
            self.assertEqual(len(lists), len(chunk))
            for (p, _, _, _), r in zip(chunk, lists):
                out[p] = r
        return out

    def test_accuracy_server_and_cli_agree(self):
        srv = self.classify_server()
        for r in srv.values():
            self.assertEqual([c["label"] for c in r], sorted([c["label"] for c in r],
                                                              key=lambda l: -[c["score"] for c in r if c["label"] == l][0]))
            self.assertEqual({c["label"] for c in r}, {"0", "180"})
            self.assertAlmostEqual(sum(c["score"] for c in r), 1.0, places=4)  # the model ends in softmax
        self.report("server", [(e, srv[p][0]["label"], f) for p, e, f, _ in self.images])
        p = subprocess.run([BIN, "classify", "--model-repository", self.repo, "-m", "text_orientation", "--json",
                            *[x[0] for x in self.images]], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        cli = {x["image"]: x["classes"] for x in json.loads(p.stdout)}
        self.report("cli", [(e, cli[p][0]["label"], f) for p, e, f, _ in self.images])
        for path, *_ in self.images:
            self.assertEqual([c["index"] for c in cli[path]], [c["index"] for c in srv[path]], path)
            np.testing.assert_allclose([c["score"] for c in cli[path]], [c["score"] for c in srv[path]], rtol=1e-5,
                                       atol=1e-6)

    def test_cli_table(self):
        path, expected, _, _ = self.images[0]
        p = subprocess.run([BIN, "classify", "--model-repository", self.repo, "-m", "text_orientation", path,
                            "--top-k", "1"], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.strip().splitlines()
        self.assertEqual(lines[0], path)
        self.assertIn("rank", lines[1])
        self.assertEqual(lines[2].split()[0], "1")
        self.assertEqual(lines[2].split()[-1], expected)
        self.assertEqual(len(lines), 3)

    def test_batch_equals_single_and_sniffing(self):
        picks = self.images[:6]
        body, ctype = multipart([(os.path.basename(p), "application/octet-stream", d) for p, _, _, d in picks])
        st, _, resp = self.srv.request("POST", "/v2/models/text_orientation/classify", body, {"Content-Type": ctype})
        self.assertEqual(st, 200, resp)
        batch = json.loads(resp)
        for (p, _, fmt, d), b in zip(picks, batch):
            # the wrong Content-Type on purpose: the bytes decide
            st, _, single = self.srv.request("POST", "/v2/models/text_orientation/classify", d,
                                             {"Content-Type": "image/png" if fmt == "JPEG" else "image/jpeg"})
            self.assertEqual(st, 200, single)
            s = json.loads(single)
            self.assertEqual([c["index"] for c in s], [c["index"] for c in b])
            np.testing.assert_allclose([c["score"] for c in s], [c["score"] for c in b], rtol=1e-4, atol=1e-6)

    # ---- the KServe v2 infer endpoint with a BYTES image input --------------------------------------

    def infer_images(self, datas, k=1, headers=None):
        """The images as one binary BYTES input; the scores output through the classification
        extension. Returns (status, parsed body)."""
        ser = b"".join(struct.pack("<I", len(d)) + d for d in datas)
        hdr = json.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [len(datas)],
                                      "parameters": {"binary_data_size": len(ser)}}],
                          "outputs": [{"name": "softmax_0.tmp_0", "parameters": {"classification": k}}]}).encode()
        h = {"Inference-Header-Content-Length": str(len(hdr)), "Content-Type": "application/octet-stream"}
        h.update(headers or {})
        st, _, resp = self.srv.request("POST", "/v2/models/text_orientation/infer", hdr + ser, h)
        return st, json.loads(resp)

    def classify_one(self, data):
        st, _, resp = self.srv.request("POST", "/v2/models/text_orientation/classify?top_k=2", data,
                                       {"Content-Type": "application/octet-stream"})
        self.assertEqual(st, 200, resp)
        return {c["label"]: c["score"] for c in json.loads(resp)}

    def test_kserve_binary_bytes_input_classification(self):
        picks = self.images  # all 400, in batches of 25
        results = []
        for i in range(0, len(picks), 25):
            chunk = picks[i:i + 25]
            st, r = self.infer_images([d for _, _, _, d in chunk])
            self.assertEqual(st, 200, r)
            out = r["outputs"][0]
            self.assertEqual((out["name"], out["datatype"], out["shape"]), ("softmax_0.tmp_0", "BYTES", [len(chunk), 1]))
            for (p, e, f, d), cell in zip(chunk, out["data"]):
                score, index, label = cell.split(":")
                self.assertEqual(label, ["0", "180"][int(index)])
                results.append((e, label, f))
        self.report("kserve binary", results)
        for _, _, _, d in picks[:4]:  # same scores as the classify endpoint (same preprocessing)
            st, r = self.infer_images([d], k=2)
            self.assertEqual(st, 200, r)
            got = {c.split(":")[2]: float(c.split(":")[0]) for c in r["outputs"][0]["data"]}
            ref = self.classify_one(d)
            for label in ("0", "180"):
                self.assertAlmostEqual(got[label], ref[label], places=5)

    def test_kserve_base64_json_and_chunked(self):
        (_, _, _, jpg), (_, _, _, png) = self.images[0], self.images[3]
        data = ["data:image/jpeg;base64," + base64.b64encode(jpg).decode(),
                base64.encodebytes(png).decode()]  # MIME line breaks, JSON-escaped as \n
        req = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2, 1], "data": data}]}
        st, r = self.srv.json("POST", "/v2/models/text_orientation/infer", req)
        self.assertEqual(st, 200, r)
        out = r["outputs"][0]
        self.assertEqual((out["datatype"], out["shape"]), ("FP32", [2, 2]))
        for row, d in zip(np.array(out["data"]).reshape(2, 2), (jpg, png)):
            ref = self.classify_one(d)
            np.testing.assert_allclose(row, [ref["0"], ref["180"]], rtol=1e-5, atol=1e-6)
        # the binary form in a chunked body (decoded into memory first) gives the same answer
        ser = struct.pack("<I", len(png)) + png
        hdr = json.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1],
                                      "parameters": {"binary_data_size": len(ser)}}],
                          "parameters": {"binary_data_output": False}}).encode()
        body = hdr + ser
        c = self.srv.conn()
        c.putrequest("POST", "/v2/models/text_orientation/infer")
        c.putheader("Transfer-Encoding", "chunked")
        c.putheader("Inference-Header-Content-Length", str(len(hdr)))
        c.endheaders()
        for i in range(0, len(body), 1000):
            part = body[i:i + 1000]
            c.send(b"%x\r\n" % len(part) + part + b"\r\n")
        c.send(b"0\r\n\r\n")
        resp = c.getresponse()
        got = json.loads(resp.read())
        c.close()
        self.assertEqual(resp.status, 200, got)
        ref = self.classify_one(png)
        np.testing.assert_allclose(got["outputs"][0]["data"], [ref["0"], ref["180"]], rtol=1e-5, atol=1e-6)

    def test_kserve_image_input_errors(self):
        jpg = self.images[0][3]

        def b64(shape, data):
            return self.srv.json("POST", "/v2/models/text_orientation/infer",
                                 {"inputs": [{"name": "x", "datatype": "BYTES", "shape": shape, "data": data}]})
        cases = [
            (self.infer_images([b"GIF89a" + b"\0" * 40]), 415, "not supported"),
            (self.infer_images([jpg[: len(jpg) // 3]]), 400, "input 'x'"),
            (self.infer_images([jpg, b"\x89PNG\r\n\x1a\n" + b"\0" * 20]), 400, "image 1"),
            (b64([1], ["@@not base64@@"]), 400, "not valid base64"),
            (b64([2], [base64.b64encode(jpg).decode()]), 400, "1 strings for 2 images"),
            (b64([2, 2], ["a", "b", "c", "d"]), 400, "[n] or [n,1]"),
            (b64([1], [17]), 400, "base64 strings"),
        ]
        for (st, r), want_st, want in cases:
            self.assertEqual(st, want_st, r)
            self.assertIn(want, r["error"])
        # an image longer than the bytes sent: a framing error, not a crash
        ser = struct.pack("<I", 1 << 20) + jpg
        hdr = json.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1],
                                      "parameters": {"binary_data_size": len(ser)}}]}).encode()
        st, _, resp = self.srv.request("POST", "/v2/models/text_orientation/infer", hdr + ser,
                                       {"Inference-Header-Content-Length": str(len(hdr))})
        self.assertEqual(st, 400, resp)
        self.assertIn("error", json.loads(resp))
        st, r = self.infer_images([jpg])  # and the server keeps serving
        self.assertEqual(st, 200, r)

    def test_stats_count_classify_requests(self):
        st, stats = self.srv.json("GET", "/v2/models/text_orientation/stats")
        self.assertEqual(st, 200)
        self.assertGreater(stats["model_stats"][0]["inference_count"], 0)


class FixedBatch(unittest.TestCase):
    """A model whose input has a fixed batch of 1 runs image by image; its output is each channel's
    mean, so the expected scores follow from the reference preprocessing."""

    def test_fixed_batch_runs_image_by_image(self):
        import onnx
        from onnx import TensorProto, helper
        g = helper.make_graph(
            [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0)], "chanmean",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
            [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 3])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        with tempfile.TemporaryDirectory() as tmp:
            d = os.path.join(tmp, "repo", "chanmean")
            os.makedirs(os.path.join(d, "1"))
            onnx.save(model, os.path.join(d, "1", "model.onnx"))
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"labels": "labels.txt", "image": {"resize": "stretch", "scale": 1.0},
                           "postprocess": {"top_k": 3}}, f)
            with open(os.path.join(d, "labels.txt"), "w") as f:
                f.write("red\ngreen\nblue\n")
            imgs = []
            for i, color in enumerate([(250, 10, 10), (10, 240, 10), (5, 5, 230)]):
                a = np.zeros((20, 30, 3), np.uint8)
                a[:, :] = color
                imgs.append(R.save(a, os.path.join(tmp, "c%d.png" % i), "PNG"))
            with Server(os.path.join(tmp, "repo")) as srv:
                body, ctype = multipart([(os.path.basename(p), "image/png", read(p)) for p in imgs])
                st, _, resp = srv.request("POST", "/v2/models/chanmean/classify", body, {"Content-Type": ctype})
                self.assertEqual(st, 200, resp)
                r = json.loads(resp)
                self.assertEqual([x[0]["label"] for x in r], ["red", "green", "blue"])
                self.assertAlmostEqual(r[0][0]["score"], 250.0, places=3)
                st, stats = srv.json("GET", "/v2/models/chanmean/stats")
                self.assertEqual(stats["model_stats"][0]["execution_count"], 3)  # three Runs of batch 1


if __name__ == "__main__":
    unittest.main(verbosity=2)
