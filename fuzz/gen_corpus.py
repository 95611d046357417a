#!/usr/bin/python3
"""gen_corpus.py — writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

    /usr/bin/python3 fuzz/gen_corpus.py [--out fuzz/corpus]

Seeds are small hand-written requests, configs and images (PIL, Debian's python3-pil, for the
images), one file per seed named seed-<what>. Files named regress-* are inputs that once crashed a
target or broke an invariant; they are kept by hand and never rewritten here. Re-running the script
rewrites the seed-* files only (same bytes each time).
"""

import argparse
import io
import json
import os
import struct
import sys
import zlib

# ---------------------------------------------------------------------------------------------------
# http_parse: what a client sends on one connection


def http_seeds():
    j = b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
    s = {
        "get-ready": b"GET /v2/health/ready HTTP/1.1\r\nHost: a\r\n\r\n",
        "get-live-http10": b"GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "head-model": b"HEAD /v2/models/mlp HTTP/1.1\r\nHost: a\r\n\r\n",
        "model-meta-version": b"GET /v2/models/identity/versions/1 HTTP/1.1\r\n\r\n",
        "model-config": b"GET /v2/models/mlp/config HTTP/1.1\r\n\r\n",
        "model-stats": b"GET /v2/models/stats HTTP/1.1\r\n\r\n",
        "server-meta-query": b"GET /v2?x=1&y=%20 HTTP/1.1\r\nX-Request-ID: abc-123\r\n\r\n",
        "metrics": b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
        "infer-json": b"POST /v2/models/dynamic/infer HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(j) + j,
        "infer-chunked": b"POST /v2/models/dynamic/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10\r\n" + j[:16] + b"\r\n" + (b"%x;ext=1\r\n" % (len(j) - 16)) + j[16:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n",
        "pipelined": b"GET /v2/health/live HTTP/1.1\r\n\r\nGET /v2/models/mlp/ready HTTP/1.1\r\n\r\n"
        b"POST /v2/repository/index HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        "expect-continue": b"POST /v2/models/mlp/infer HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        "traceparent": b"GET /v2/health/ready HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"
        b"00f067aa0ba902b7-01\r\ntracestate: a=b\r\n\r\n",
        "lf-only": b"GET /v2/health/ready HTTP/1.1\nHost: a\n\n",
        "obs-fold": b"GET /v2 HTTP/1.1\r\nX-Long: a\r\n  b\r\n\r\n",
        "cl-and-te": b"POST /v2/repository/index HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "gzip-index": b"POST /v2/repository/index HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
        % len(_gzip(b"{}")) + _gzip(b"{}"),
        "br-encoding": b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
        "http2": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "options": b"OPTIONS /v2/models/mlp/infer HTTP/1.1\r\n\r\n",
        "unload-load": b"POST /v2/repository/models/scale2x/unload HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        b"POST /v2/repository/models/scale2x/load HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "shm-status": b"GET /v2/systemsharedmemory/status HTTP/1.1\r\n\r\n"
        b"GET /v2/cudasharedmemory/region/a/status HTTP/1.1\r\n\r\n",
        "infer-alias": b"POST /infer HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        "many-headers": b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(40)) + b"\r\n",
    }
    return s


def _gzip(b):
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(b) + z.flush()


# ---------------------------------------------------------------------------------------------------
# infer_json: "<model>\n<JSON body>"


def inp(name, dt, shape, data=None, params=None):
    d = {"name": name, "datatype": dt, "shape": shape}
    if data is not None:
        d["data"] = data
    if params:
        d["parameters"] = params
    return d


TYPES = {
    "BOOL": [True, False, True], "UINT8": [0, 255, 7], "UINT16": [0, 65535, 1], "UINT32": [0, 4294967295, 2],
    "UINT64": [0, 18446744073709551615, 3], "INT8": [-128, 127, 0], "INT16": [-32768, 32767, 5],
    "INT32": [-2147483648, 2147483647, 9], "INT64": [-9223372036854775808, 9223372036854775807, 1],
    "FP16": [0.5, -65504, 6.1e-05], "BF16": [1.5, -3.0e38, 1e-3], "FP32": [0.1, -1e-45, 3.4e38],
    "FP64": [1e-308, -2.5, 1.7976931348623157e308], "BYTES": ["a", "caf\u00e9", ""],
}

def ident(override=None, n=3):
    """All 14 inputs of `identity` (they share the dim N = n) with JSON data, some replaced."""
    override = override or {}
    return [override.get(t, inp("in_" + t, t, [n], (v * n)[:n])) for t, v in TYPES.items()]


def infer_seeds():
    mlp64 = [round(i * 0.013 - 0.4, 3) for i in range(64)]
    s = {}
    s["mlp"] = ("mlp", {"id": "r1", "inputs": [inp("x", "FP32", [1, 64], mlp64)]})
    s["mlp-classify"] = ("mlp", {"inputs": [inp("x", "FP32", [2, 64], [mlp64, mlp64[::-1]])],
                                 "outputs": [{"name": "probs", "parameters": {"classification": 3}}]})
    s["mlp-binary-out"] = ("mlp", {"parameters": {"binary_data_output": True, "timeout": 1000000},
                                   "inputs": [inp("x", "FP32", [1, 64], mlp64)]})
    for t in ("BOOL", "UINT64", "FP16", "BF16", "BYTES"):
        s["identity-out-" + t.lower()] = ("identity", {"inputs": ident(), "outputs": [{"name": "out_" + t}]})
    s["identity-all"] = ("identity", {"inputs": ident()})
    s["identity-shm"] = ("identity", {"inputs": ident({"FP32": inp("in_FP32", "FP32", [3], params={
        "shared_memory_region": "r0", "shared_memory_byte_size": 12, "shared_memory_offset": 64})}),
        "outputs": [{"name": "out_FP32", "parameters": {"shared_memory_region": "r1",
                                                      "shared_memory_byte_size": 12}}]})
    s["identity-shm-bytes"] = ("identity", {"inputs": ident({"BYTES": inp("in_BYTES", "BYTES", [3], params={
        "shared_memory_region": "r1", "shared_memory_byte_size": 12})}),
        "outputs": [{"name": "out_BYTES", "parameters": {"shared_memory_region": "r0",
                                                       "shared_memory_byte_size": 128}}]})
    s["identity-escapes"] = ("identity", {"id": "\u00e9\n\"", "inputs": ident({"BYTES": inp(
        "in_BYTES", "BYTES", [3], ["\u0000\ud83d\ude00", "\\\"/\b\f\n\r\t", ""])})})
    s["identity-n1"] = ("identity", {"inputs": ident(n=1), "parameters": {"binary_data_output": True}})
    s["dynamic"] = ("dynamic", {"inputs": [inp("a", "FP32", [2, 3], [[1, -2, 3], [0, 5, -6]]),
                                           inp("b", "FP32", [2, 3], [1, 1, 1, 1, 1, 1])]})
    s["dynamic-nan"] = ("dynamic", {"inputs": [inp("a", "FP32", [1, 2], ["NaN", "Infinity"]),
                                               inp("b", "FP32", [1, 2], [0, 0])]})
    s["scale2x"] = ("scale2x", {"inputs": [inp("x", "FP32", [3], [1, 2.5, -3e-7])],
                                "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    s["empty-inputs"] = ("scale2x", {"inputs": []})
    s["unknown-model"] = ("nosuch", {"inputs": []})
    s["bad-binary-no-header"] = ("scale2x", {"inputs": [inp("x", "FP32", [1], params={"binary_data_size": 4})]})
    s["bad-shape"] = ("mlp", {"inputs": [inp("x", "FP32", [1, 63], mlp64)]})
    s["sequence"] = ("scale2x", {"parameters": {"sequence_id": 7}, "inputs": [inp("x", "FP32", [1], [1])]})
    out = {}
    for k, (model, body) in s.items():
        out[k] = model.encode() + b"\n" + json.dumps(body).replace(
            '"NaN"', "NaN").replace('"Infinity"', "Infinity").encode()
    raw = json.dumps({"inputs": ident({"BYTES": inp("in_BYTES", "BYTES", [3], ["café ✓", "", "x"])})},
                     ensure_ascii=False)
    out["raw-utf8"] = b"identity\n" + raw.encode()
    out["nan-literal"] = b'dynamic\n{"inputs":[{"name":"a","datatype":"FP32","shape":[1,2],"data":[NaN,-Infinity]},' \
        b'{"name":"b","datatype":"FP32","shape":[1,2],"data":[1e400,-0.0]}]}'
    return out


# ---------------------------------------------------------------------------------------------------
# binary_split: flags, chunk size, Inference-Header-Content-Length value "\n", body

MODEL = {"mlp": 0, "identity": 1, "dynamic": 2, "scale2x": 3}


def bin_seed(model, header, binary, flags=0, chunk=0, ihcl=None):
    h = json.dumps(header).encode()
    v = str(len(h) if ihcl is None else ihcl).encode()
    return bytes([flags | MODEL[model] << 5, chunk]) + v + b"\n" + h + binary


def binary_seeds():
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)
    x64 = struct.pack("<64f", *[i / 64 for i in range(64)])
    f32 = f32[:12]
    idn = {"inputs": ident({"FP32": inp("in_FP32", "FP32", [3], params={"binary_data_size": 12})}),
           "outputs": [{"name": "out_FP32", "parameters": {"binary_data": True}}]}
    two = {"inputs": ident({"INT16": inp("in_INT16", "INT16", [3], params={"binary_data_size": 6}),
                            "BYTES": inp("in_BYTES", "BYTES", [3], params={"binary_data_size": 15})})}
    by = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c" + struct.pack("<I", 0)
    s = {
        "identity": bin_seed("identity", idn, f32),
        "identity-chunked": bin_seed("identity", idn, f32, flags=0x01, chunk=7),
        "identity-deflate": bin_seed("identity", idn, f32, flags=0x02),
        "identity-gzip-chunked": bin_seed("identity", idn, f32, flags=0x05, chunk=3),
        "identity-pipelined": bin_seed("identity", idn, f32, flags=0x10),
        "identity-expect": bin_seed("identity", idn, f32, flags=0x80 | 0x10),
        "identity-two": bin_seed("identity", two, struct.pack("<3h", 1, -2, 3) + by, flags=0x10),
        "mlp": bin_seed("mlp", {"inputs": [inp("x", "FP32", [1, 64], params={"binary_data_size": 256})],
                                "parameters": {"binary_data_output": True}}, x64),
        "dynamic-mixed": bin_seed("dynamic", {"inputs": [
            inp("a", "FP32", [1, 3], params={"binary_data_size": 12}), inp("b", "FP32", [1, 3], [1, 2, 3])]},
            f32, flags=0x10),
        "scale2x-raw": bytes([MODEL["scale2x"] << 5 | 0x10, 0]) + b"0\n" + f32,
        "scale2x-raw-chunked": bytes([MODEL["scale2x"] << 5 | 0x01, 5]) + b"0\n" + f32 + f32,
        "no-header": bin_seed("identity", idn, f32, flags=0x08 | 0x10),
        "short-binary": bin_seed("identity", idn, f32[:8], flags=0x10),
        "long-binary": bin_seed("identity", idn, f32 + b"GET", flags=0x10),
        "header-too-long": bin_seed("identity", idn, f32, ihcl=99999, flags=0x10),
        "header-negative": bin_seed("identity", idn, f32, ihcl=-1),
        "header-split-early": bin_seed("identity", idn, f32, ihcl=10, flags=0x10),
    }
    return s


# ---------------------------------------------------------------------------------------------------
# shm_register: "<region>\n<JSON body>"


def shm_seeds():
    s = {
        "basic": ("r2", {"key": "ortserve-fuzz", "offset": 0, "byte_size": 64}),
        "slash-offset": ("r2", {"key": "/ortserve-fuzz", "offset": 4096, "byte_size": 4096}),
        "no-offset": ("reg", {"key": "ortserve-fuzz", "byte_size": 32}),
        "too-small": ("r3", {"key": "ortserve-fuzz", "byte_size": 8}),
        "past-end": ("r3", {"key": "ortserve-fuzz", "offset": 65536, "byte_size": 1}),
        "huge-offset": ("r3", {"key": "ortserve-fuzz", "offset": 18446744073709551615, "byte_size": 1}),
        "zero-size": ("r3", {"key": "ortserve-fuzz", "byte_size": 0}),
        "exists": ("r0", {"key": "ortserve-fuzz", "byte_size": 64}),
        "missing-object": ("r4", {"key": "no-such-object", "byte_size": 64}),
        "dotdot": ("r5", {"key": "..", "byte_size": 64}),
        "path": ("r5", {"key": "../etc/passwd", "byte_size": 64}),
        "escaped-key": ("r6", {"key": "ortserve\\u002dfuzz", "byte_size": 64}),
        "no-key": ("r7", {"byte_size": 64}),
        "float-size": ("r7", {"key": "ortserve-fuzz", "byte_size": 1.5}),
    }
    out = {k: n.encode() + b"\n" + json.dumps(b).replace("\\\\u", "\\u").encode() for k, (n, b) in s.items()}
    out["empty-body"] = b"r8\n"
    out["not-object"] = b"r8\n[1,2]"
    return out


# ---------------------------------------------------------------------------------------------------
# model_config: config.json text


def config_seeds():
    s = {
        "empty": {},
        "core": {"threads": {"intra_op": 2, "inter_op": 1, "spinning": False}, "optimization": "extended",
                 "memory": {"arena": False, "mem_pattern": True},
                 "limits": {"max_dims": 4, "max_tensor_elements": 1000, "max_tensor_bytes": 4096,
                            "max_string_bytes": 10},
                 "labels": "labels.txt", "output_labels": {"probs": "probs.txt"}, "warmup": False,
                 "allow_dtype_conversion": True, "deadline_ms": 100, "max_queue": 3, "batch_dim": True},
        "imagenet": {"labels": "labels.txt", "image": {
            "height": 224, "width": 224, "resize": "crop", "resize_short": 256, "color": "RGB", "layout": "NCHW",
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "postprocess": {"top_k": 5}},
        "paddle": {"image": {"resize": "paddle_ocr", "color": "BGR", "mean": 0.5, "std": 0.5, "pad_value": 0,
                             "max_pixels": 1000000, "max_bytes": 100000, "max_images": 8},
                   "postprocess": {"output": "probs", "softmax": True, "top_k": 2}},
        "detector": {"image": {"input": "image", "height": 320, "width": 480, "layout": "NHWC", "dtype": "UINT8",
                               "resize": "pad", "pad_position": "top_left", "filter": "area",
                               "jpeg_dct_scaling": False, "scale": 1},
                     "postprocess": {"output": "scores"}},
        "gray": {"image": {"color": "GRAY", "dtype": "FP16", "mean": [0.5], "std": 2},
                 "slo": {"latency_ms": 25, "percentile": 99.9, "error_rate": 0.001}},
        "slo": {"slo": {"latency_ms": 0.0001}, "deadline_ms": 0},
        "bad-unknown": {"thread": {}},
        "bad-type": {"image": {"height": "224"}},
        "bad-post-only": {"postprocess": {"top_k": 1}},
    }
    return {k: json.dumps(v, indent=1).encode() for k, v in s.items()}


# ---------------------------------------------------------------------------------------------------
# pbtxt: config.pbtxt text (Triton's ModelConfig in protobuf text format)


def pbtxt_seeds():
    return {
        "minimal": 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
                   'input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]\n'
                   'output [ { name: "probs" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" } ]\n',
        "empty": "",
        "comments": "# nothing but a comment\n\n# and another\n",
        "full": 'name: "mlp"\nbackend: "onnxruntime"\nmax_batch_size: 4\n'
                'version_policy: { specific { versions: [1, 3] } }\n'
                'input [ { name: "x" data_type: TYPE_FP32 format: FORMAT_NONE dims: [ 8, 8 ] reshape: { shape: [ 64 ] } '
                'optional: false } ]\n'
                'output [ { name: "probs" data_type: TYPE_FP32 dims: [ 10 ] } ]\n'
                'instance_group [ { name: "g" count: 2 kind: KIND_CPU } ]\n'
                'default_model_filename: "model.onnx"\n'
                'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
                'parameters: [ { key: "execution_mode" value: { string_value: "0" } } ]\n'
                'optimization { graph { level: 1 } }\n'
                'dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100 '
                'default_queue_policy { timeout_action: REJECT max_queue_size: 8 } }\n'
                'response_cache { enable: true }\n'
                'model_warmup [ { name: "zeros" batch_size: 2 count: 1 inputs { key: "x" value: '
                '{ data_type: TYPE_FP32 dims: [ 8, 8 ] zero_data: true } } } ]\n',
        "angle-brackets": 'instance_group < count: 1; kind: KIND_CPU >; version_policy < all < > >',
        "strings": 'name: "a\\x41\\101\\u00e9" \'joined\' "too"\nplatform: \'onnxruntime_onnx\'',
        "numbers": "max_batch_size: 0x10 a: -0 b: 017 c: 1.5e-3 d: -inf e: 2.5f f: true g: 9223372036854775808",
        "latest": "version_policy: { latest: { num_versions: 2 } }",
        "bad-unclosed": 'input [ { name: "x"',
        "bad-escape": 'name: "\\q"',
        "bad-deep": "a { " * 40 + "} " * 40,
        "bad-sequence": "sequence_batching { max_sequence_idle_microseconds: 1 }",
        "bad-gpu": "instance_group [ { kind: KIND_GPU } ]",
    }


# ---------------------------------------------------------------------------------------------------
# image_decode: encoded images (the last byte also selects the preprocessing)


def exif(orientation):
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x0112, 3, 1, orientation << 16) + struct.pack(">I", 0)
    return b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)


def image_seeds():
    from PIL import Image  # Debian's python3-pil

    def img(mode, w, h):
        im = Image.new("RGB", (w, h))
        im.putdata([((x * 37) % 256, (y * 53) % 256, ((x + y) * 11) % 256) for y in range(h) for x in range(w)])
        return im.convert(mode)

    def save(im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()

    s = {
        "jpeg-rgb": save(img("RGB", 23, 17), "JPEG", quality=50),
        "jpeg-gray": save(img("L", 40, 9), "JPEG", quality=40),
        "jpeg-cmyk": save(img("CMYK", 12, 12), "JPEG", quality=50),
        "jpeg-progressive": save(img("RGB", 33, 20), "JPEG", quality=30, progressive=True),
        "jpeg-420-big": save(img("RGB", 96, 64), "JPEG", quality=20, subsampling=2),
        "jpeg-exif6": save(img("RGB", 16, 24), "JPEG", quality=40, exif=exif(6)),
        "jpeg-exif3": save(img("RGB", 8, 8), "JPEG", quality=40, exif=exif(3)),
        "png-rgb": save(img("RGB", 19, 7), "PNG"),
        "png-rgba": save(img("RGBA", 9, 9), "PNG"),
        "png-palette": save(img("P", 13, 5), "PNG"),
        "png-gray": save(img("L", 6, 30), "PNG"),
        "png-la": save(img("LA", 5, 5), "PNG"),
        "png-gray16": save(img("L", 7, 7).convert("I"), "PNG"),
        "png-1bit": save(img("1", 17, 3), "PNG"),
        "png-interlaced": save(img("RGB", 20, 20), "PNG", optimize=False),
    }
    p = s["png-rgb"]
    s["png-exif8"] = p[:33] + png_chunk(b"eXIf", exif(8)[6:]) + p[33:]
    # Selector variants: trailing bytes after the image pick other preprocessing (see the harness).
    for k in ("jpeg-rgb", "png-rgba", "jpeg-exif6", "png-gray"):
        for sel in (0x00, 0x2e, 0x55, 0xd3):
            s["%s-sel%02x" % (k, sel)] = s[k] + bytes([sel])
    s["gif"] = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    s["truncated-jpeg"] = s["jpeg-rgb"][: len(s["jpeg-rgb"]) // 2]
    s["truncated-png"] = s["png-rgb"][:60]
    return s


# pipeline: count byte, then per request framing, route + 6 * flags (1 valid inference, 2 smuggled request),
# chunk size, filler length, filler. Framings: 0 length, 1 chunked, 2 length+gzip, 3 chunked+deflate,
# 4 TE gzip, 5 TE "chunked, identity", 6 TE "gzip, chunked", 7 Expect 100-continue, 8 no body.
# Routes: 0 scale2x infer, 1 unknown model, 2 unknown route, 3 refused load, 4 GET model, 5 mlp infer.
def pipe_req(framing, route, flags, chunk=0, filler=b""):
    return bytes([framing, route + 6 * flags, chunk, len(filler)]) + filler


def pipeline_seeds():
    s = {}
    s["all-valid"] = bytes([3]) + pipe_req(0, 0, 1) + pipe_req(1, 0, 1, 7) + pipe_req(8, 4, 0)
    s["smuggle-length"] = bytes([2]) + pipe_req(0, 1, 2) + pipe_req(0, 0, 1)
    s["smuggle-chunked-404"] = bytes([2]) + pipe_req(1, 1, 2, 5) + pipe_req(0, 0, 1)
    s["smuggle-chunked-route"] = bytes([2]) + pipe_req(1, 2, 2, 0) + pipe_req(8, 4, 0)
    s["smuggle-get-body"] = bytes([2]) + pipe_req(0, 4, 2) + pipe_req(8, 4, 0)
    s["te-gzip"] = bytes([2]) + pipe_req(4, 0, 3) + pipe_req(0, 0, 1)
    s["te-chunked-identity"] = bytes([2]) + pipe_req(5, 0, 3, 3) + pipe_req(0, 0, 1)
    s["te-gzip-chunked"] = bytes([2]) + pipe_req(6, 0, 2, 9) + pipe_req(0, 0, 1)
    s["gzip-deflate"] = bytes([3]) + pipe_req(2, 0, 1) + pipe_req(3, 0, 1, 11) + pipe_req(2, 1, 2)
    s["expect"] = bytes([2]) + pipe_req(7, 0, 1) + pipe_req(7, 1, 2)
    s["filler"] = bytes([4]) + pipe_req(1, 0, 0, 2, b"GET / HTTP/1.1\r\n\r\n") + pipe_req(0, 3, 3, 0, b"\r\n\r\n") + \
        pipe_req(8, 5, 0) + pipe_req(0, 5, 1)
    return s


def write(out, target, seeds):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for k, v in sorted(seeds.items()):
        with open(os.path.join(d, "seed-" + k), "wb") as f:
            f.write(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
    a = ap.parse_args()
    write(a.out, "http_parse", http_seeds())
    write(a.out, "infer_json", infer_seeds())
    write(a.out, "binary_split", binary_seeds())
    write(a.out, "shm_register", shm_seeds())
    write(a.out, "model_config", config_seeds())
    write(a.out, "pbtxt", {k: v.encode() for k, v in pbtxt_seeds().items()})
    write(a.out, "image_decode", image_seeds())
    write(a.out, "pipeline", pipeline_seeds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
