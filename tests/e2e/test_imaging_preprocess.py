#!/usr/bin/python3
"""test_imaging_preprocess.py — ortserve's image preprocessing against an independent PIL + numpy
reference (tests/e2e/imaging_ref.py), through tests' img_tool (osv_img_preprocess on one file).

Covered: every resize mode (stretch, pad centre/top-left, crop, paddle_ocr), both layouts, RGB/BGR/
GRAY, FP32/FP16/UINT8, the bilinear and area filters, up- and downscaling, JPEG (4:2:0, 4:4:4,
grayscale, CMYK, progressive, DCT-domain downscaling at 1/2, 1/4 and 1/8), every PNG colour type and
bit depth (1/2/4/8/16-bit gray, gray+alpha, palette with and without tRNS, RGB 8/16, RGBA 8/16,
Adam7 interlaced) and the 8 EXIF orientations (JPEG APP1 and PNG eXIf).

The bound. FP32: |ortserve - reference| <= 1e-3 * |scale / std| — a thousandth of one 8-bit pixel
level, mapped through the normalization. Why it holds: both sides decode the same pixels (the same
libjpeg-turbo with the same IDCT, upsampling and DCT scale; PNG is lossless; the decoded pixels are
checked equal below); the resampling weights are PIL's, computed in double and stored as float32
(relative error <= 2^-24), and ortserve accumulates in float32 over at most 2*ceil(support)+1 taps per
pass where PIL accumulates in double: for values <= 255 and <= 35 taps per pass (an 8x downscale)
the error is below 255 * 2 * 35 * 2^-24 ~ 1e-3 pixel levels; measured maxima are ~1e-4. FP16: the
same plus half-precision rounding (2^-11 relative). UINT8: the reference rounded half to even, +-1
(a float difference of 1e-4 may flip a value sitting exactly on .5)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import imaging_ref as R  # noqa: E402

TOOL = os.path.join(os.environ.get("OSV_BINARY_DIR", "build/release"), "tests", "img_tool")
PIXEL_TOL = 1e-3

IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
PADDLE = dict(height=48, width=192, resize="paddle_ocr", color="BGR", mean=0.5, std=0.5, pad_value=0)


def run_tool(*args):
    p = subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=60)
    return json.loads(p.stdout), p.returncode


class Preprocess(unittest.TestCase):
    worst = 0.0  # largest |diff| / tolerance unit seen (reported at the end)

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        print("\nlargest FP32 difference seen: %.3g pixel levels (bound %.0e)" % (Preprocess.worst, PIXEL_TOL),
              file=sys.stderr)

    def path(self, name):
        return os.path.join(self.dir, name)

    def check(self, img, spec, expect=None):
        """Runs ortserve on img with spec and compares with the reference; returns the tool's info."""
        out = self.path("out.bin")
        info, rc = run_tool(json.dumps(spec), img, out)
        self.assertEqual(rc, 0, info)
        got = R.load_tensor(out, spec).astype(np.float64)
        ref, rinfo = R.reference(img, spec)
        for k in ("decoded_width", "decoded_height", "resized_width", "resized_height", "orientation"):
            self.assertEqual(info[k], rinfo[k], "%s: %s vs reference %s (%s)" % (k, info[k], rinfo[k], spec))
        dtype = spec.get("dtype", "FP32")
        unit = rinfo["tol_unit"]
        if dtype == "UINT8":
            refq = np.clip(np.rint(ref), 0, 255)
            self.assertLessEqual(np.abs(got - refq).max(), 1.0, spec)
            self.assertGreater(np.mean(got == refq), 0.999, spec)
        elif dtype == "FP16":
            diff = np.abs(got - ref) - np.abs(ref) * 2.0 ** -11
            self.assertLessEqual(diff.max(), PIXEL_TOL * unit + 1e-7, spec)
        else:
            d = np.abs(got - ref).max()
            Preprocess.worst = max(Preprocess.worst, d / unit)
            self.assertLessEqual(d, PIXEL_TOL * unit, "max |diff| %.3g > %.3g for %s on %s" % (
                d, PIXEL_TOL * unit, spec, os.path.basename(img)))
        if expect:
            for k, v in expect.items():
                self.assertEqual(info[k] if k in info else rinfo[k], v, k)
        return info

    # ---- resize modes x layouts x colours x dtypes, on PNG (lossless) and JPEG ----------------------

    def test_modes_layouts_colors(self):
        png = R.save(R.photo_like(320, 200, 1), self.path("a.png"), "PNG")
        jpg = R.save(R.photo_like(320, 200, 2), self.path("a.jpg"), "JPEG", quality=90)
        tall = R.save(R.photo_like(90, 260, 3), self.path("tall.png"), "PNG")
        modes = [dict(resize="stretch"), dict(resize="pad"), dict(resize="pad", pad_position="top_left", pad_value=-1),
                 dict(resize="crop", resize_short=128), dict(resize="crop")]
        for img in (png, jpg, tall):
            for m in modes:
                for layout in ("NCHW", "NHWC"):
                    for color in ("RGB", "BGR", "GRAY"):
                        spec = dict(height=112, width=96, layout=layout, color=color, **m)
                        if color != "GRAY":
                            spec.update(IMAGENET)
                        self.check(img, spec)

    def test_dtypes(self):
        png = R.save(R.photo_like(200, 150, 4), self.path("d.png"), "PNG")
        for dtype in ("FP32", "FP16", "UINT8"):
            for layout in ("NCHW", "NHWC"):
                spec = dict(height=64, width=80, dtype=dtype, layout=layout, resize="pad", pad_value=114 if dtype ==
                            "UINT8" else 0.5)
                if dtype != "UINT8":
                    spec.update(IMAGENET)
                self.check(png, spec)

    def test_upscale_and_filters(self):
        small = R.save(R.photo_like(37, 23, 5), self.path("s.png"), "PNG")
        big = R.save(R.photo_like(900, 700, 6), self.path("b.png"), "PNG")
        for img in (small, big):
            for filt in ("bilinear", "area"):
                for (h, w) in ((50, 70), (20, 300), (333, 41)):
                    self.check(img, dict(height=h, width=w, filter=filt))

    def test_paddle_ocr_resize(self):
        # ceil(48 * w / h) below, at and above 192
        for i, (w, h) in enumerate([(100, 48), (192, 48), (400, 48), (31, 30), (700, 33), (48, 100)]):
            img = R.save(R.photo_like(w, h, 10 + i), self.path("p%d.png" % i), "PNG")
            info = self.check(img, PADDLE)
            self.assertEqual(info["resized_width"], min(192, -(-48 * w // h)))

    def test_decoded_pixels_equal_pil(self):
        """An identity resize: the tensor is the decoded image itself, so it must equal PIL's decode
        exactly (JPEG through the same libjpeg-turbo)."""
        for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
            img = R.save(R.photo_like(64, 48, 7), self.path("id." + ext), fmt)
            out = self.path("id.bin")
            spec = dict(height=48, width=64, dtype="UINT8", layout="NHWC")
            info, rc = run_tool(json.dumps(spec), img, out)
            self.assertEqual(rc, 0, info)
            got = R.load_tensor(out, spec)
            np.testing.assert_array_equal(got, np.asarray(Image.open(img).convert("RGB")))

    # ---- JPEG flavours ---------------------------------------------------------------------------------

    def test_jpeg_flavours(self):
        a = R.photo_like(300, 220, 8)
        cases = {
            "420.jpg": dict(quality=85, subsampling=2),
            "444.jpg": dict(quality=95, subsampling=0),
            "prog.jpg": dict(quality=80, progressive=True),
        }
        for name, kw in cases.items():
            img = R.save(a, self.path(name), "JPEG", **kw)
            self.check(img, dict(height=100, width=120, **IMAGENET))
        gray = R.save(Image.fromarray(a).convert("L"), self.path("gray.jpg"), "JPEG", quality=90)
        cmyk = R.save(Image.fromarray(a).convert("CMYK"), self.path("cmyk.jpg"), "JPEG", quality=90)
        for img in (gray, cmyk):
            for color in ("RGB", "BGR", "GRAY"):
                self.check(img, dict(height=100, width=120, color=color))
        info, _ = run_tool("--probe", cmyk)
        self.assertEqual(info["components"], 4)

    def test_jpeg_dct_scaling(self):
        big = R.save(R.photo_like(1600, 1200, 9), self.path("big.jpg"), "JPEG", quality=90)
        expect = {(224, 224, "crop"): 4, (64, 64, "stretch"): 8, (500, 700, "stretch"): 2, (1000, 1000, "stretch"): 1}
        for (h, w, mode), s in expect.items():
            spec = dict(height=h, width=w, resize=mode, resize_short=256, **IMAGENET) if mode == "crop" else \
                dict(height=h, width=w, resize=mode)
            info = self.check(big, spec)
            self.assertEqual(info["decoded_width"], -(-1600 // s), (spec, s))
        # switched off: always the full image
        info = self.check(big, dict(height=64, width=64, jpeg_dct_scaling=False))
        self.assertEqual(info["decoded_width"], 1600)

    # ---- PNG colour types and bit depths ---------------------------------------------------------------

    def test_png_color_types(self):
        rng = np.random.default_rng(11)
        h, w = 37, 53
        a = R.photo_like(w, h, 12)
        spec_rgb = dict(height=29, width=41, **IMAGENET)
        spec_gray = dict(height=29, width=41, color="GRAY")
        files = {
            "L.png": Image.fromarray(a).convert("L"),
            "LA.png": Image.fromarray(a).convert("LA"),
            "RGB.png": Image.fromarray(a),
            "RGBA.png": Image.fromarray(np.dstack([a, rng.integers(0, 256, (h, w), dtype=np.uint8)]), "RGBA"),
            "P.png": Image.fromarray(a).convert("P", palette=Image.ADAPTIVE, colors=50),
        }
        for name, im in files.items():
            self.check(R.save(im, self.path(name), "PNG"), spec_rgb)
            self.check(self.path(name), spec_gray)
        ptrns = Image.fromarray(a).convert("P", palette=Image.ADAPTIVE, colors=16)
        self.check(R.save(ptrns, self.path("Pt.png"), "PNG", transparency=3), spec_rgb)
        # Formats PIL cannot write, by hand: 1/2/4/16-bit gray, 16-bit RGB and RGBA, Adam7.
        for depth in (1, 2, 4, 8, 16):
            g = rng.integers(0, 2 ** depth, (h, w))
            for inter in (False, True):
                img = R.png_raw(self.path("g%d%s.png" % (depth, inter)), g, depth, 0, interlace=inter)
                self.check(img, spec_rgb)
                self.check(img, spec_gray)
        rgb16 = (a.astype(np.uint16) * 257 + rng.integers(0, 257, a.shape)).astype(np.uint16)
        self.check(R.png_raw(self.path("rgb16.png"), rgb16, 16, 2), spec_rgb)
        rgba16 = np.dstack([rgb16, rng.integers(0, 65536, (h, w))])
        self.check(R.png_raw(self.path("rgba16.png"), rgba16, 16, 6, interlace=True), spec_rgb)
        ga16 = np.dstack([rgb16[:, :, 0], rng.integers(0, 65536, (h, w))])
        self.check(R.png_raw(self.path("ga16.png"), ga16, 16, 4), spec_rgb)
        pal = rng.integers(0, 256, (4, 3))
        self.check(R.png_raw(self.path("p2.png"), rng.integers(0, 4, (h, w)), 2, 3, palette=pal), spec_rgb)

    # ---- EXIF orientation ------------------------------------------------------------------------------

    def test_exif_orientations(self):
        a = R.photo_like(60, 40, 13)  # not square: 5..8 swap the sides
        for o in range(1, 9):
            exif = R.exif_orientation(o)
            jpg = R.save(a, self.path("o%d.jpg" % o), "JPEG", quality=95, exif=exif)
            png = R.save(a, self.path("o%d.png" % o), "PNG", exif=exif)
            for img in (jpg, png):
                info = self.check(img, dict(height=45, width=45, resize="pad"), expect={"orientation": o})
                self.assertEqual(info["orientation"], o)
                # exact pixels: identity resize of the oriented image
                ow, oh = (40, 60) if o >= 5 else (60, 40)
                spec = dict(height=oh, width=ow, dtype="UINT8", layout="NHWC")
                out = self.path("o.bin")
                info, rc = run_tool(json.dumps(spec), img, out)
                self.assertEqual(rc, 0, info)
                from PIL import ImageOps
                want = np.asarray(ImageOps.exif_transpose(Image.open(img)).convert("RGB"))
                np.testing.assert_array_equal(R.load_tensor(out, spec), want, "orientation %d %s" % (o, img))

    def test_exif_big_jpeg_rotated_with_dct_scaling(self):
        """Orientation 6 swaps the sides: the DCT scale is chosen in the stored frame. Stored 1000x400,
        shown 400x1000, resized to 48x120 (w x h): stored-frame need 120x48, so 1/8 (125x50) — choosing
        in the oriented frame would have given 1/2."""
        a = R.photo_like(1000, 400, 14)
        img = R.save(a, self.path("rot.jpg"), "JPEG", quality=90, exif=R.exif_orientation(6))
        info = self.check(img, dict(height=120, width=48, resize="stretch"))
        self.assertEqual((info["decoded_width"], info["decoded_height"]), (125, 50))


if __name__ == "__main__":
    unittest.main(verbosity=2)
