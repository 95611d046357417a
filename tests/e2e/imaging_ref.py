"""imaging_ref.py — test support for ortserve's imaging: an independent reference of the
preprocessing (PIL + numpy, /usr/bin/python3), test-image generators, a small PNG writer for the
formats PIL cannot write (16-bit RGB, 1/2/4-bit gray, Adam7 interlacing), and rendered text lines
for the PaddleOCR orientation model.

The reference follows docs/DESIGN.md ("Imaging") step by step, written from the definitions rather
than from ortserve's code:
  1. decode with PIL; JPEG at the DCT scale PIL's Image.draft picks for the resized size;
  2. ImageOps.exif_transpose;
  3. to RGB (or L) with PIL's conversions (16-bit gray: high byte);
  4. each channel as a float ("F") image resized with PIL's BILINEAR (or BOX per downscaled axis
     for "area"), horizontal then vertical, no 8-bit rounding in between;
  5. crop / pad by the mode's geometry, normalize (v*scale - mean)/std, lay out, convert."""
import io
import math
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

FONT_DIR = "/usr/share/fonts/truetype/dejavu"


# ---- geometry (the documented formulas) ---------------------------------------------------------

def half_even(d):
    """int(round(d / 2.0)) in Python 3 (banker's rounding): torchvision's CenterCrop offset."""
    return int(round(d / 2.0))


def geometry(spec, w, h):
    """(rw, rh, u0, nu, v0, nv, x0, y0) for an oriented image of w x h."""
    W, H = spec["width"], spec["height"]
    mode = spec.get("resize", "stretch")
    if mode == "stretch":
        return W, H, 0, W, 0, H, 0, 0
    if mode == "pad":
        if W * h <= H * w:
            rw, rh = W, int(math.floor(h * W / w + 0.5))
        else:
            rw, rh = int(math.floor(w * H / h + 0.5)), H
        rw, rh = min(max(rw, 1), W), min(max(rh, 1), H)
        center = spec.get("pad_position", "center") == "center"
        return rw, rh, 0, rw, 0, rh, (W - rw) // 2 if center else 0, (H - rh) // 2 if center else 0
    if mode == "crop":
        s = spec.get("resize_short", max(W, H))
        if w <= h:
            rw, rh = s, int(s * h / w)
        else:
            rw, rh = int(s * w / h), s
        return rw, rh, half_even(rw - W), W, half_even(rh - H), H, 0, 0
    if mode == "paddle_ocr":
        ratio = w / float(h)
        rw = W if math.ceil(H * ratio) > W else int(math.ceil(H * ratio))
        return max(rw, 1), H, 0, max(rw, 1), 0, H, 0, 0
    raise ValueError(mode)


def dct_scale(w, h, nw, nh):
    """PIL's Image.draft rule: the largest s in 8, 4, 2 with w >= s*nw and h >= s*nh, else 1."""
    for s in (8, 4, 2):
        if w >= s * nw and h >= s * nh:
            return s
    return 1


# ---- reference ------------------------------------------------------------------------------------

def _to_rgb_array(im, gray):
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):
        a = (np.asarray(im).astype(np.int64) >> 8).astype(np.uint8)  # 16-bit gray: high byte
        im = Image.fromarray(a, "L")
    if gray:
        if im.mode != "L":
            im = im.convert("RGB").convert("L")
        return np.asarray(im, dtype=np.float32)[:, :, None]
    return np.asarray(im.convert("RGB"), dtype=np.float32)


def _resize_channel(a, rw, rh, filt):
    """One float32 channel resized like PIL on an "F" image; filt: "bilinear" or "area"."""
    im = Image.fromarray(a, "F")
    h, w = a.shape
    if filt == "bilinear":
        return np.asarray(im.resize((rw, rh), Image.BILINEAR), dtype=np.float64)
    fx = Image.BOX if w > rw else Image.BILINEAR
    fy = Image.BOX if h > rh else Image.BILINEAR
    im = im.resize((rw, h), fx)
    return np.asarray(im.resize((rw, rh), fy), dtype=np.float64)


def reference(path, spec):
    """The expected tensor (float64, before dtype conversion) and a dict of what was decided."""
    color = spec.get("color", "RGB")
    C = 1 if color == "GRAY" else 3
    im = Image.open(path)
    w0, h0 = im.size
    orient = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    if orient not in range(1, 9):
        orient = 1
    ow, oh = (h0, w0) if orient >= 5 else (w0, h0)
    rw, rh, u0, nu, v0, nv, x0, y0 = geometry(spec, ow, oh)
    scale_used = 1
    if im.format == "JPEG" and spec.get("jpeg_dct_scaling", True):
        nw, nh = (rh, rw) if orient >= 5 else (rw, rh)
        scale_used = dct_scale(w0, h0, nw, nh)
        if scale_used > 1:
            im.draft(im.mode, (w0 // scale_used, h0 // scale_used))
            assert im.size == ((w0 + scale_used - 1) // scale_used, (h0 + scale_used - 1) // scale_used), im.size
    decoded = im.size
    im = ImageOps.exif_transpose(im)
    src = _to_rgb_array(im, color == "GRAY")
    filt = spec.get("filter", "bilinear")
    res = np.stack([_resize_channel(np.ascontiguousarray(src[:, :, c]), rw, rh, filt) for c in range(C)], axis=2)
    if color == "BGR":
        res = res[:, :, ::-1]
    H, W = spec["height"], spec["width"]
    pad = np.broadcast_to(np.asarray(spec.get("pad_value", 0.0), dtype=np.float64), (C,))
    out = np.empty((H, W, C), dtype=np.float64)
    out[:, :, :] = pad
    mean = np.broadcast_to(np.asarray(spec.get("mean", 0.0), dtype=np.float64), (C,))
    std = np.broadcast_to(np.asarray(spec.get("std", 1.0), dtype=np.float64), (C,))
    dtype = spec.get("dtype", "FP32")
    scale = spec.get("scale", 1.0 if dtype == "UINT8" else 1.0 / 255.0)
    out[y0:y0 + nv, x0:x0 + nu, :] = (res[v0:v0 + nv, u0:u0 + nu, :] * scale - mean) / std
    if spec.get("layout", "NCHW") == "NCHW":
        out = out.transpose(2, 0, 1)
    info = {"decoded_width": decoded[0], "decoded_height": decoded[1], "resized_width": rw, "resized_height": rh,
            "orientation": orient, "dct_scale": scale_used, "tol_unit": float(np.max(np.abs(scale / std)))}
    return np.ascontiguousarray(out), info


def load_tensor(path, spec):
    dtype = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}[spec.get("dtype", "FP32")]
    C = 1 if spec.get("color", "RGB") == "GRAY" else 3
    H, W = spec["height"], spec["width"]
    shape = (C, H, W) if spec.get("layout", "NCHW") == "NCHW" else (H, W, C)
    return np.fromfile(path, dtype=dtype).reshape(shape)


# ---- test images ----------------------------------------------------------------------------------

def photo_like(w, h, seed):
    """A deterministic RGB image with smooth gradients, edges and some noise (a resampling test needs
    structure at every scale)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 100 * np.sin(x / (7 + seed % 5)) * np.cos(y / 11.0)
    g = 255 * (x + y) / (w + h)
    b = np.where(((x // 13) + (y // 9)) % 2 == 0, 220.0, 35.0)
    a = np.stack([r, g, b], axis=2) + rng.normal(0, 12, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def save(arr_or_im, path, fmt, **kw):
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    im.save(path, fmt, **kw)
    return path


def exif_orientation(o):
    ex = Image.Exif()
    ex[0x0112] = o
    return ex.tobytes()


def png_raw(path, arr, bit_depth, color_type, interlace=False, palette=None, exif=None):
    """Writes a PNG from samples: arr is (h, w) or (h, w, c) of ints < 2**bit_depth. Filter type 0 (none)
    on every row; Adam7 when interlace. Chunks: IHDR, [PLTE], [eXIf], IDAT, IEND."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape

    def rows(a):
        out = bytearray()
        for row in a:
            out.append(0)
            if bit_depth == 16:
                out += row.astype(">u2").tobytes()
            elif bit_depth == 8:
                out += row.astype(np.uint8).tobytes()
            else:
                vals = row.reshape(-1)
                per = 8 // bit_depth
                for i in range(0, len(vals), per):
                    byte = 0
                    for j in range(per):
                        v = int(vals[i + j]) if i + j < len(vals) else 0
                        byte |= v << (8 - bit_depth * (j + 1))
                    out.append(byte)
        return bytes(out)

    if interlace:
        data = bytearray()
        for (x0, y0, dx, dy) in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                                 (0, 1, 1, 2)]:
            sub = arr[y0::dy, x0::dx]
            if sub.size:
                data += rows(sub)
        raw = bytes(data)
    else:
        raw = rows(arr)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0,
                                                             1 if interlace else 0))
    if palette is not None:
        png += chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1)))
    if exif is not None:
        png += chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)
    return path


# ---- rendered text lines (PaddleOCR orientation) ---------------------------------------------------

WORDS = ("invoice total amount paid due date number customer account balance credit order shipping "
         "address phone email reference description quantity price tax discount subtotal payment method "
         "model server inference runtime image label score orientation classifier batch tensor layout "
         "the quick brown fox jumps over lazy dog hello world receipt station platform ticket journey "
         "Monday Tuesday January February 2024 2025 12.50 99.99 #4821 No. 17 ID: AX-3391").split()

FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
         "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"]


def fonts():
    """Fonts of fonts-dejavu-core that are present (the test needs at least two)."""
    return [os.path.join(FONT_DIR, f) for f in FONTS if os.path.exists(os.path.join(FONT_DIR, f))]


def text_line(rng, font_files):
    """A tight crop of one rendered text line, as a detector would hand it to the classifier."""
    n = int(rng.integers(2, 6))
    text = " ".join(str(w) for w in rng.choice(WORDS, size=n))
    size = int(rng.integers(18, 44))
    font = ImageFont.truetype(font_files[int(rng.integers(len(font_files)))], size)
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 70, 3))
    l, t, r, b = font.getbbox(text)
    mx, my = int(rng.integers(2, 10)), int(rng.integers(2, 8))
    im = Image.new("RGB", (r - l + 2 * mx, b - t + 2 * my), bg)
    ImageDraw.Draw(im).text((mx - l, my - t), text, font=font, fill=fg)
    return im, text


def encode(im, fmt, rng=None):
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=int(rng.integers(70, 96)) if rng is not None else 90)
    else:
        im.save(buf, "PNG")
    return buf.getvalue()
