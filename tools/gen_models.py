#!/usr/bin/python3
"""gen_models.py — writes the synthetic ONNX models ortserve's tests and benchmarks use.

    /usr/bin/python3 tools/gen_models.py --out DIR [--force]

Needs Debian's python3-onnx (1.12) and python3-numpy; the pyenv python3 on PATH has neither,
hence the explicit /usr/bin/python3. Every model is ONNX IR version 8, opset 17, built from a
seeded numpy generator (one seed per model), so the bytes are identical from run to run.

DIR/STAMP holds GEN_VERSION. A model whose file exists is kept when the stamp matches, so a
second run does nothing; a missing or different stamp regenerates everything.
Bump GEN_VERSION whenever a model definition below changes.

Models (inputs -> outputs; N, B, T, K symbolic):
  mlp.onnx          x f32[N,64] -> probs f32[N,10]            Gemm, Relu, Gemm, Softmax
  identity.onnx     in_<T>[N] -> out_<T>[N] for 14 types       Identity (BOOL ... BYTES=string)
  dynamic.onnx      a, b f32[B,T] -> sum f32[B,T], nz i64[2,K] Add; NonZero(Greater(a, 0))
  scale2x.onnx      x f32[N] -> y f32[N]                       Mul(x, 2)
  sum.onnx          x f32[N] -> s f32[1]                       ReduceSum(keepdims=1)
  mobilenetv2.onnx  input f32[N,3,224,224] -> probs f32[N,1000] (+ mobilenetv2.labels.txt)
                    random weights; the classifier is calibrated with a numpy forward pass
  slow.onnx         x f32[1,256], iters i64[] -> y f32[1,256] Loop(iters){x = Tanh(x @ W)}
  fail.onnx         x f32[N], shape i64[1] -> y f32[?]         Reshape (bad shape = run error)
  mislead.onnx      x f32[N] -> y f32[N] (really [2N])         Concat; a wrong symbolic output shape
  compress.onnx     x f32[4], cond bool[4] -> y f32[2] (really data-dependent)   Compress
  heavy.onnx        x f32[256,1024] -> y f32[256,1024]         64 x Tanh(x @ W): ~34 GFLOP, every run
                    (also the warm-up, which runs zeros: a model whose default deadline follows it)
  linear.onnx       x f32[N,65536] -> y f32[N,65536]            64 x Tanh: run time grows linearly with N
                    (batching never makes a row cheaper: the adaptive batcher's "does not pay" model)
  tanh.onnx         x f32[N,T] -> y f32[N,T]                   the same 64 x Tanh over any width: a long run
                    on demand (a wide row), and rows of other widths never share its batch
  rows.onnx         x f32[N,T] -> y f32[N,T]                   y = 2x + 1 (batches of other T never mix)
  gather.onnx       idx i64[N,1] -> y f32[N,1,4]               Gather from a [10,4] table: an index
                    outside 0..9 fails the run (a failed batch)
"""

import argparse
import os
import sys
import time

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:  # e.g. the pyenv python3 on PATH
    sys.exit("gen_models: %s; run with /usr/bin/python3 (Debian python3-onnx, python3-numpy)" % e)

GEN_VERSION = "ortserve-gen_models 8"
IR_VERSION = 8
OPSET = 17
PRODUCER = "ortserve/tools/gen_models.py"

F32 = TensorProto.FLOAT
I64 = TensorProto.INT64


def vi(name, elem_type, shape):
    """Value info; shape entries are ints (fixed), strings (symbolic) or None (unknown)."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def make_model(graph, doc):
    model = helper.make_model(
        graph,
        producer_name=PRODUCER,
        producer_version=GEN_VERSION.split()[-1],
        ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.doc_string = doc
    return model


# --- 1. mlp ---------------------------------------------------------------------------------
def build_mlp():
    rng = np.random.default_rng(1001)
    # PyTorch-export layout: weights [out, in], Gemm transB=1.
    w1 = (rng.standard_normal((128, 64)) * np.sqrt(2.0 / 64)).astype(np.float32)
    b1 = (rng.standard_normal(128) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((10, 128)) * np.sqrt(1.0 / 128)).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["h_relu"], name="relu"),
        helper.make_node("Gemm", ["h_relu", "fc2.weight", "fc2.bias"], ["logits"], name="fc2",
                         transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [vi("x", F32, ["N", 64])],
        [vi("probs", F32, ["N", 10])],
        initializer=[const("fc1.weight", w1), const("fc1.bias", b1),
                     const("fc2.weight", w2), const("fc2.bias", b2)],
    )
    model = make_model(graph, "64 -> 128 (ReLU) -> 10 softmax MLP with random weights")
    model.model_version = 3
    helper.set_model_props(model, {"ortserve.test": "mlp", "license": "public domain"})
    return model


# --- 2. identity ----------------------------------------------------------------------------
IDENTITY_TYPES = [
    ("BOOL", TensorProto.BOOL),
    ("UINT8", TensorProto.UINT8),
    ("UINT16", TensorProto.UINT16),
    ("UINT32", TensorProto.UINT32),
    ("UINT64", TensorProto.UINT64),
    ("INT8", TensorProto.INT8),
    ("INT16", TensorProto.INT16),
    ("INT32", TensorProto.INT32),
    ("INT64", TensorProto.INT64),
    ("FP16", TensorProto.FLOAT16),
    ("BF16", TensorProto.BFLOAT16),
    ("FP32", TensorProto.FLOAT),
    ("FP64", TensorProto.DOUBLE),
    ("BYTES", TensorProto.STRING),
]


def build_identity():
    nodes, inputs, outputs = [], [], []
    for tname, etype in IDENTITY_TYPES:
        nodes.append(helper.make_node("Identity", ["in_" + tname], ["out_" + tname],
                                      name="identity_" + tname))
        inputs.append(vi("in_" + tname, etype, ["N"]))
        outputs.append(vi("out_" + tname, etype, ["N"]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    return make_model(graph, "one Identity per element type; all share the symbolic dim N")


def build_bytes_fp32():
    """A BYTES input laid out right before an FP32 one: a write past the strings' range lands in x."""
    nodes = [helper.make_node("Identity", ["text"], ["text_out"], name="identity_text"),
             helper.make_node("Identity", ["x"], ["x_out"], name="identity_x")]
    graph = helper.make_graph(nodes, "bytes_fp32",
                              [vi("text", TensorProto.STRING, ["N"]), vi("x", TensorProto.FLOAT, ["M"])],
                              [vi("text_out", TensorProto.STRING, ["N"]), vi("x_out", TensorProto.FLOAT, ["M"])])
    return make_model(graph, "BYTES then FP32 inputs, echoed (slot-range bounds tests)")


# --- 3. dynamic -----------------------------------------------------------------------------
def build_dynamic():
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
        helper.make_node("Greater", ["a", "zero"], ["a_pos"], name="greater"),
        helper.make_node("NonZero", ["a_pos"], ["nz"], name="nonzero"),
    ]
    graph = helper.make_graph(
        nodes, "dynamic",
        [vi("a", F32, ["B", "T"]), vi("b", F32, ["B", "T"])],
        # nz is [rank(a), count of a > 0]: the second dim is only known after the run.
        [vi("sum", F32, ["B", "T"]), vi("nz", I64, [2, "K"])],
        initializer=[const("zero", np.array(0.0, dtype=np.float32))],
    )
    return make_model(graph, "sum = a + b; nz = NonZero(a > 0) (data-dependent output shape)")


# --- 4. scale2x -----------------------------------------------------------------------------
def build_scale2x():
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"], name="mul")],
        "scale2x",
        [vi("x", F32, ["N"])],
        [vi("y", F32, ["N"])],
        initializer=[const("two", np.array(2.0, dtype=np.float32))],
    )
    return make_model(graph, "y = 2 * x")


# --- 5. sum ---------------------------------------------------------------------------------
def build_sum():
    graph = helper.make_graph(
        # No axes input: ReduceSum-13 reduces over every axis.
        [helper.make_node("ReduceSum", ["x"], ["s"], name="reduce_sum", keepdims=1)],
        "sum",
        [vi("x", F32, ["N"])],
        [vi("s", F32, [1])],
    )
    return make_model(graph, "s = sum(x), keepdims=1")


# --- 6. mobilenetv2 -------------------------------------------------------------------------
# (expansion t, output channels c, repeats n, first stride s) — Sandler et al. 2018, Table 2.
MBV2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
MBV2_CLASSES = 1000


MBV2_FEATURES = 1280


def _mbv2_layers(rng):
    """Random MobileNetV2 parameters as a list of blocks; each block is a list of convs
    (name, weight, bias, stride, group, relu6) plus whether it ends in a residual Add.
    BN is folded: every conv has a bias and no BN node follows it."""

    def conv(name, cin, cout, k, stride, group, gain, relu6):
        # He-style: gain 2 before ReLU6, ~1 for the linear projection.
        fan_in = cin // group * k * k
        w = (rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(gain / fan_in))
        b = rng.standard_normal(cout) * 0.05
        return (name, w.astype(np.float32), b.astype(np.float32), stride, group, relu6)

    blocks = [([conv("stem", 3, 32, 3, 2, 1, 2.0, True)], False)]
    cin, idx = 32, 0
    for t, c, n, s in MBV2_BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            pre, hidden = "block%02d" % idx, cin * t
            residual = stride == 1 and cin == c
            convs = []
            if t != 1:  # the t = 1 block has no expansion conv, as in the paper
                convs.append(conv(pre + ".expand", cin, hidden, 1, 1, 1, 2.0, True))
            convs.append(conv(pre + ".dw", hidden, hidden, 3, stride, hidden, 2.0, True))
            # Damp residual branches so the trunk's variance stays put across the Adds.
            convs.append(conv(pre + ".project", hidden, c, 1, 1, 1, 0.5 if residual else 1.0,
                              False))
            blocks.append((convs, residual))
            cin = c
            idx += 1
    blocks.append(([conv("head", cin, MBV2_FEATURES, 1, 1, 1, 2.0, True)], False))
    return blocks


def _np_conv(x, w, b, stride, group):
    """NCHW conv with pad k//2, for the three shapes MobileNetV2 uses (float32)."""
    n, cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    if k == 1:
        y = np.matmul(w.reshape(cout, cin), x.reshape(n, cin, h * wd)).reshape(n, cout, h, wd)
        return y + b[None, :, None, None]
    p = k // 2
    ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    taps = [[xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
             for j in range(k)] for i in range(k)]
    if group == cin == cout:  # depthwise
        y = np.zeros((n, cout, ho, wo), np.float32)
        for i in range(k):
            for j in range(k):
                y += w[None, :, 0, i, j, None, None] * taps[i][j]
    else:  # dense (the stem): im2col
        cols = np.stack([np.stack(row, 2) for row in taps], 2)  # n, cin, k, k, ho, wo
        y = np.matmul(w.reshape(cout, -1), cols.reshape(n, cin * k * k, ho * wo))
        y = y.reshape(n, cout, ho, wo)
    return y + b[None, :, None, None]


def _mbv2_features(blocks, x):
    """Reference forward pass up to the pooled 1280-vector (numpy, float32)."""
    for convs, residual in blocks:
        h = x
        for _, w, b, stride, group, relu6 in convs:
            h = _np_conv(h, w, b, stride, group)
            if relu6:
                h = np.clip(h, 0.0, 6.0)
        x = x + h if residual else h
    return x.mean(axis=(2, 3), dtype=np.float64)


def _mbv2_calibration_images(rng):
    """Varied 224x224 inputs: noise, flat greys, single colours, a gradient, a checkerboard."""
    imgs = [rng.uniform(-1, 1, (3, 224, 224)), rng.standard_normal((3, 224, 224))]
    for v in (-1.0, 0.0, 1.0):
        imgs.append(np.full((3, 224, 224), v))
    for c in range(3):
        img = np.full((3, 224, 224), -1.0)
        img[c] = 1.5
        imgs.append(img)
    ramp = np.linspace(-2, 2, 224)
    imgs.append(np.broadcast_to(ramp[None, None, :], (3, 224, 224)))
    yy, xx = np.mgrid[0:224, 0:224]
    imgs.append(np.broadcast_to(np.where((yy // 28 + xx // 28) % 2, 1.0, -1.0), (3, 224, 224)))
    return np.stack(imgs).astype(np.float32)


def build_mobilenetv2():
    rng = np.random.default_rng(1006)
    blocks = _mbv2_layers(rng)
    # Classifier calibration. Pooled ReLU6 features share a large input-independent part, so a
    # plain random classifier gives (almost) the same top-1 for every input. Centre it on the
    # mean feature of a varied image set (what folding a BN before the classifier would do) and
    # scale it for a logit spread of ~3, so different images get different, non-degenerate
    # answers. Rounding keeps the bytes stable across BLAS builds.
    feats = _mbv2_features(blocks, _mbv2_calibration_images(rng))
    mu = feats.mean(axis=0)
    w = rng.standard_normal((MBV2_CLASSES, MBV2_FEATURES)) / np.sqrt(MBV2_FEATURES)
    spread = np.median(((feats - mu) @ w.T).std(axis=1))
    w *= np.round(3.0 / spread, 2)
    b = np.round(rng.standard_normal(MBV2_CLASSES) * 0.1 - w @ mu, 3)

    nodes, inits = [], [const("relu6_min", np.array(0.0, dtype=np.float32)),
                        const("relu6_max", np.array(6.0, dtype=np.float32))]
    x = "input"
    for convs, residual in blocks:
        h = x
        for name, cw, cb, stride, group, relu6 in convs:
            k = cw.shape[2]
            inits += [const(name + ".weight", cw), const(name + ".bias", cb)]
            nodes.append(helper.make_node(
                "Conv", [h, name + ".weight", name + ".bias"], [name + ".out"], name=name,
                kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group))
            h = name + ".out"
            if relu6:
                nodes.append(helper.make_node("Clip", [h, "relu6_min", "relu6_max"],
                                              [name + ".relu6"], name=name + ".relu6"))
                h = name + ".relu6"
        if residual:
            add = convs[-1][0].rsplit(".", 1)[0] + ".add"
            nodes.append(helper.make_node("Add", [x, h], [add], name=add))
            h = add
        x = h
    inits += [const("classifier.weight", w.astype(np.float32)),
              const("classifier.bias", b.astype(np.float32))]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "classifier.weight", "classifier.bias"], ["logits"],
                         name="classifier", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mobilenetv2",
        [vi("input", F32, ["N", 3, 224, 224])],
        [vi("probs", F32, ["N", MBV2_CLASSES])],
        initializer=inits,
    )
    return make_model(graph, "MobileNetV2-shaped network (BN folded) with random weights; "
                             "labels in mobilenetv2.labels.txt")


def mobilenetv2_labels():
    return "".join("class_%03d\n" % i for i in range(MBV2_CLASSES))


# --- 7. slow --------------------------------------------------------------------------------
SLOW_DIM = 256


def build_slow():
    rng = np.random.default_rng(1007)
    # Gaussian W with gain 1.5: the state neither collapses to 0 nor saturates tanh.
    w = (rng.standard_normal((SLOW_DIM, SLOW_DIM)) * (1.5 / np.sqrt(SLOW_DIM))).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
            helper.make_node("MatMul", ["x_in", "W"], ["xw"], name="matmul"),
            helper.make_node("Tanh", ["xw"], ["x_out"], name="tanh"),
        ],
        "slow_body",
        [vi("iter", I64, []), vi("cond_in", TensorProto.BOOL, []),
         vi("x_in", F32, [1, SLOW_DIM])],
        [vi("cond_out", TensorProto.BOOL, []), vi("x_out", F32, [1, SLOW_DIM])],
        initializer=[const("W", w)],
    )
    loop = helper.make_node("Loop", ["iters", "", "x"], ["y"], name="loop", body=body)
    graph = helper.make_graph(
        [loop], "slow",
        [vi("x", F32, [1, SLOW_DIM]), vi("iters", I64, [])],
        [vi("y", F32, [1, SLOW_DIM])],
    )
    return make_model(graph, "y = (x -> tanh(x @ W)) applied iters times; run time ~ iters")


# --- 8. fail --------------------------------------------------------------------------------
def build_fail():
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")],
        "fail",
        [vi("x", F32, ["N"]), vi("shape", I64, [1])],
        # Fully unknown dim (neither value nor name) on purpose.
        [vi("y", F32, [None])],
    )
    return make_model(graph, "y = Reshape(x, shape); a shape whose product != N fails the run")


# --- 9. mislead -----------------------------------------------------------------------------
def build_mislead():
    # The declared output shape [N] is wrong on purpose (the result has 2N elements): a server that
    # pre-sizes outputs from symbolic names must notice ORT's shape error and fall back.
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y"], name="concat", axis=0)],
        "mislead",
        [vi("x", F32, ["N"])],
        [vi("y", F32, ["N"])],
    )
    return make_model(graph, "y = concat(x, x), declared [N] although it is [2N]")


# --- 10. compress ---------------------------------------------------------------------------
def build_compress():
    # A fixed declared output shape recorded from one example of a data-dependent op (as ONNX's
    # own test models do): [2] is only right when cond selects exactly two elements.
    graph = helper.make_graph(
        [helper.make_node("Compress", ["x", "cond"], ["y"], name="compress", axis=0)],
        "compress",
        [vi("x", F32, [4]), vi("cond", TensorProto.BOOL, [4])],
        [vi("y", F32, [2])],
    )
    return make_model(graph, "y = x[cond], declared [2] (the shape of one example)")


# --- 11. heavy ------------------------------------------------------------------------------
HEAVY_ROWS, HEAVY_DIM, HEAVY_LAYERS = 256, 1024, 64


def build_heavy():
    # Unlike slow.onnx (whose Loop count is an input, zero at warm-up), every run costs the same:
    # 64 MatMuls of [256,1024] x [1024,1024], about 34 GFLOP: about a second on one core (an ordinary
    # CPU model that the old fixed 500 ms default deadline answered 504).
    rng = np.random.default_rng(1011)
    w = (rng.standard_normal((HEAVY_DIM, HEAVY_DIM)) / np.sqrt(HEAVY_DIM)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(HEAVY_LAYERS):
        nodes.append(helper.make_node("MatMul", [prev, "W"], ["m%d" % i], name="matmul%d" % i))
        out = "y" if i == HEAVY_LAYERS - 1 else "t%d" % i
        nodes.append(helper.make_node("Tanh", ["m%d" % i], [out], name="tanh%d" % i))
        prev = out
    graph = helper.make_graph(nodes, "heavy", [vi("x", F32, [HEAVY_ROWS, HEAVY_DIM])],
                              [vi("y", F32, [HEAVY_ROWS, HEAVY_DIM])], initializer=[const("W", w)])
    return make_model(graph, "y = 64 x (x -> tanh(x @ W)): a fixed cost of about a second per run")


# --- 12. linear / rows / gather: batching tests ---------------------------------------------------
LINEAR_WIDTH = 65536
LINEAR_DEPTH = 64


def build_linear(width=LINEAR_WIDTH):
    nodes, prev = [], "x"
    for i in range(LINEAR_DEPTH):
        out = "y" if i == LINEAR_DEPTH - 1 else "t%d" % i
        nodes.append(helper.make_node("Tanh", [prev], [out], name="tanh%d" % i))
        prev = out
    graph = helper.make_graph(nodes, "linear", [vi("x", F32, ["N", width])], [vi("y", F32, ["N", width])])
    return make_model(graph, "y = tanh^64(x) row by row: run time linear in N, no gain from batching")


def build_tanh():
    return build_linear("T")


def build_rows():
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["x2"], name="mul"),
         helper.make_node("Add", ["x2", "one"], ["y"], name="add")],
        "rows", [vi("x", F32, ["N", "T"])], [vi("y", F32, ["N", "T"])],
        initializer=[const("two", np.array(2, np.float32)), const("one", np.array(1, np.float32))])
    return make_model(graph, "y = 2x + 1 over [N,T]")


def build_defaults():
    # w is a graph input with an initializer of the same name: ORT (IR >= 4) lists it as an overridable
    # initializer, which a request may give or leave out (Triton: an `optional` input).
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"], name="scale")],
        "defaults", [vi("x", F32, ["N", 4]), vi("w", F32, [4])], [vi("y", F32, ["N", 4])],
        initializer=[const("w", np.array([1, 2, 3, 4], np.float32))])
    return make_model(graph, "y = x * w; w defaults to [1, 2, 3, 4] and a request may override it")


def build_gather():
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y"], name="gather", axis=0)],
        "gather", [vi("idx", I64, ["N", 1])], [vi("y", F32, ["N", 1, 4])],
        initializer=[const("table", table)])
    return make_model(graph, "y = table[idx]; an index outside 0..9 fails the run")


MODELS = [
    ("mlp.onnx", build_mlp),
    ("identity.onnx", build_identity),
    ("dynamic.onnx", build_dynamic),
    ("scale2x.onnx", build_scale2x),
    ("sum.onnx", build_sum),
    ("mobilenetv2.onnx", build_mobilenetv2),
    ("slow.onnx", build_slow),
    ("fail.onnx", build_fail),
    ("mislead.onnx", build_mislead),
    ("compress.onnx", build_compress),
    ("bytes_fp32.onnx", build_bytes_fp32),
    ("heavy.onnx", build_heavy),
    ("linear.onnx", build_linear),
    ("tanh.onnx", build_tanh),
    ("rows.onnx", build_rows),
    ("gather.onnx", build_gather),
    ("defaults.onnx", build_defaults),
]
TEXT_FILES = [("mobilenetv2.labels.txt", mobilenetv2_labels)]


def write_atomic(path, data):
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description="Generate ortserve's synthetic ONNX test models.")
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--force", action="store_true", help="regenerate even when up to date")
    args = ap.parse_args()

    out = args.out
    os.makedirs(out, exist_ok=True)
    stamp_path = os.path.join(out, "STAMP")
    try:
        with open(stamp_path) as f:
            stamp_ok = f.read().strip() == GEN_VERSION
    except OSError:
        stamp_ok = False
    if not stamp_ok or args.force:
        # Drop the stamp first: an interrupted run must not leave old models looking current.
        if os.path.exists(stamp_path):
            os.remove(stamp_path)
        stamp_ok = False

    written = 0
    for fname, build in MODELS:
        path = os.path.join(out, fname)
        if stamp_ok and os.path.exists(path):
            continue
        t0 = time.monotonic()
        model = build()
        onnx.checker.check_model(model, full_check=True)
        data = model.SerializeToString()
        write_atomic(path, data)
        written += 1
        g = model.graph
        print("gen_models: wrote %s (%d bytes, %d nodes, %d inputs, %d outputs, %.2fs)"
              % (path, len(data), len(g.node), len(g.input), len(g.output),
                 time.monotonic() - t0))
    for fname, build in TEXT_FILES:
        path = os.path.join(out, fname)
        if stamp_ok and os.path.exists(path):
            continue
        data = build().encode()
        write_atomic(path, data)
        written += 1
        print("gen_models: wrote %s (%d bytes)" % (path, len(data)))

    if not stamp_ok:
        write_atomic(stamp_path, (GEN_VERSION + "\n").encode())
    if written == 0:
        print("gen_models: %s up to date (%s)" % (out, GEN_VERSION))
    return 0


if __name__ == "__main__":
    sys.exit(main())
