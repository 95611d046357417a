#!/usr/bin/python3
"""batching.py — dynamic batching variants side by side (figures, never asserted).

    /usr/bin/python3 bench/batching.py [--seconds 4] [--rounds 3] [--models mlp,mbv2,cls] [--conns 1,4,16,64]

For each model and client count, the variants run interleaved in every round (one server each, started
fresh; medians over rounds): batching off (no dynamic_batching), Triton-style fixed delay of 100 µs and
1 ms, and ortserve's adaptive mode. Load: wrk (bench/wrk/post.lua) over keep-alive connections, binary
requests of one row (MLP also JSON). Printed per run: rps, p50 and p99 (µs), server CPU µs per request,
mean batch size (inference_count / execution_count) and bytes copied per request for batching
(reason "batch"). The MobileNetV2-shaped and PaddleOCR classifier runs need their models
(var/models, third_party/models). gRPC batching is measured once the gRPC front is merged."""
import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "release", "ortserve")

MODELS = {  # name: (model file, input name, per-row shape, max_batch_size)
    "mlp": (os.path.join(ROOT, "var", "models", "mlp.onnx"), "x", (64,), 64),
    "mbv2": (os.path.join(ROOT, "var", "models", "mobilenetv2.onnx"), "input", (3, 224, 224), 16),
    "cls": (os.path.join(ROOT, "third_party", "models", "ch_ppocr_mobile_v2.0_cls_infer.onnx"), "x", (3, 48, 192), 16),
}

VARIANTS = {
    "off": lambda mbs: {},
    "fixed_100us": lambda mbs: {"max_batch_size": mbs, "dynamic_batching": {"max_queue_delay_microseconds": 100}},
    "fixed_1ms": lambda mbs: {"max_batch_size": mbs, "dynamic_batching": {"max_queue_delay_microseconds": 1000}},
    "adaptive": lambda mbs: {"max_batch_size": mbs, "dynamic_batching": {}},
}


def body_file(tmp, name, fmt):
    f, inp, shape, _ = MODELS[name]
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    if fmt == "json":
        body = json.dumps({"inputs": [{"name": inp, "shape": [1, *shape], "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        return benchlib.write(os.path.join(tmp, "%s.json" % name), body), None
    hdr = json.dumps({"inputs": [{"name": inp, "shape": [1, *shape], "datatype": "FP32",
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "parameters": {"binary_data_output": True}}).encode()
    return benchlib.write(os.path.join(tmp, "%s.bin" % name), hdr + x.tobytes()), len(hdr)


def scrape(port, name):
    st, body = benchlib.http_get(port, "/metrics")
    text = body.decode() if isinstance(body, bytes) else body

    def val(metric, extra=""):
        m = re.search(r'^%s\{model="%s",version="1"%s\} (\S+)$' % (metric, name, extra), text, re.M)
        return float(m.group(1)) if m else 0.0
    return (val("ortserve_inference_count_total"), val("ortserve_execution_count_total"),
            val("ortserve_copied_bytes_total", ',reason="batch"'))


def one_run(name, variant, conns, seconds, fmt, tmp):
    f, _, _, mbs = MODELS[name]
    repo = os.path.join(tmp, "repo-%s-%s" % (name, variant))
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(os.path.join(repo, name, "1"))
    os.link(f, os.path.join(repo, name, "1", "model.onnx"))
    with open(os.path.join(repo, name, "config.json"), "w") as fh:
        json.dump(VARIANTS[variant](mbs), fh)
    srv = benchlib.Ortserve(BIN, repo, ["--deadline-ms", "0", "--max-queue", "1024"])
    try:
        path = "/v2/models/%s/infer" % name
        bf, ihcl = body_file(tmp, name, fmt)
        before = scrape(srv.port, name)
        r = benchlib.wrk_measured(srv, path, bf, conns, seconds, ihcl)
        after = scrape(srv.port, name)
    finally:
        srv.stop()
    inf, exe, copied = (a - b for a, b in zip(after, before))
    ok = max(1, r["requests"] - r["non2xx"])
    return {"rps": r["ok_rps"], "p50": r["p50_us"], "p99": r["p99_us"], "cpu_us": r["cpu_us_per_ok"],
            "batch": inf / exe if exe else 0.0, "copied": copied / ok, "non2xx": r["non2xx"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="mlp,mbv2,cls")
    ap.add_argument("--conns", default="1,4,16,64")
    ap.add_argument("--formats", default="binary,json")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="osv-batchbench-")
    print("| model | format | clients | variant | rps | p50 µs | p99 µs | CPU µs/req | mean batch | batch-copied B/req |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name in a.models.split(","):
        if not os.path.exists(MODELS[name][0]):
            print("| %s | (model missing: %s) |" % (name, MODELS[name][0]))
            continue
        for fmt in a.formats.split(",") if name == "mlp" else ["binary"]:
            for conns in (int(c) for c in a.conns.split(",")):
                runs = {v: [] for v in VARIANTS}
                for _ in range(a.rounds):  # interleaved: every variant once per round
                    for v in VARIANTS:
                        runs[v].append(one_run(name, v, conns, a.seconds, fmt, tmp))
                for v, rs in runs.items():
                    med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
                    print("| %s | %s | %d | %s | %.0f | %.0f | %.0f | %.1f | %.2f | %.0f |" % (
                        name, fmt, conns, v, med["rps"], med["p50"], med["p99"], med["cpu_us"], med["batch"],
                        med["copied"]), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
