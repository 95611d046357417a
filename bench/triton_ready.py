#!/usr/bin/python3
"""triton_ready.py — time to ready of Triton model repositories (config.pbtxt, several versions), and what
warm-up samples cost at load and save on the first request. Figures only: nothing is asserted.

    /usr/bin/python3 bench/triton_ready.py [--build build/release] [--rounds 5] [--json OUT]

Cases (run interleaved, round by round; each a fresh server, spawn -> first 200 on /v2/health/ready):
  repo20x3/*      20 small models (mlp and scale2x, alternating) x 3 version folders, version_policy all:
                  config.pbtxt with Triton's default instance group (2 CPU instances a version), with
                  count 1, and the same folders without config.pbtxt (ortserve's own rules)
  mobilenet/*     the MobileNetV2-shaped model (max_batch_size 4, one instance): no warm-up at all,
                  ortserve's default run on zeros, one model_warmup sample (batch 1, zeros), and one
                  sample of batch 4 with random data run 4 times; with the latency of the first request
                  after ready (batch 1, binary)
"""
import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import benchlib as B  # noqa: E402
from server import link  # noqa: E402

MOBILENET_PBTXT = "max_batch_size: 4\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n"
WARM_ONE = ('model_warmup [ { name: "zeros" batch_size: 1 inputs { key: "input" value: { data_type: TYPE_FP32 '
            'dims: [ 3, 224, 224 ] zero_data: true } } } ]\n')
WARM_FOUR = ('model_warmup [ { name: "random4" batch_size: 4 count: 4 inputs { key: "input" value: { data_type: '
             'TYPE_FP32 dims: [ 3, 224, 224 ] random_data: true } } } ]\n')


def put(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def repo20x3(root, pbtxt):
    for i in range(20):
        onnx = "mlp" if i % 2 == 0 else "scale2x"
        for v in (1, 2, 3):
            link(B.model_file(onnx), os.path.join(root, "m%02d" % i, str(v), "model.onnx"))
        if pbtxt is not None:
            put(os.path.join(root, "m%02d" % i, "config.pbtxt"), pbtxt)
    return root


def mobilenet(root, pbtxt, json_cfg=None):
    link(B.model_file("mobilenetv2"), os.path.join(root, "mobilenet", "1", "model.onnx"))
    put(os.path.join(root, "mobilenet", "config.pbtxt"), pbtxt)
    if json_cfg:
        put(os.path.join(root, "mobilenet", "config.json"), json.dumps(json_cfg))
    return root


def first_request_ms(port):
    x = b"\0" * (3 * 224 * 224 * 4)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                      "parameters": {"binary_data_size": len(x)}}]}).encode()
    t0 = time.monotonic()
    st, _ = B.http_post(port, "/v2/models/mobilenet/infer", header + x,
                        {"Inference-Header-Content-Length": str(len(header))})
    if st != 200:
        raise RuntimeError("first request: %d" % st)
    return (time.monotonic() - t0) * 1e3


def ready_events(text):
    out = []
    for line in text.splitlines():
        if '"event":"model_ready"' in line:
            out.append(json.loads(line))
        elif '"event":"listening"' in line:
            out.append(json.loads(line))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    binary = os.path.join(B.ROOT, a.build, "ortserve")
    os.makedirs(B.TMP, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="triton-ready-", dir=B.TMP)
    cases = {
        "repo20x3/config.pbtxt, 2 instances (Triton's default)": repo20x3(os.path.join(tmp, "a"), "version_policy: { all { } }\n"),
        "repo20x3/config.pbtxt, 1 instance": repo20x3(os.path.join(tmp, "b"),
                                                      "version_policy: { all { } }\ninstance_group [ { count: 1 } ]\n"),
        "repo20x3/no config.pbtxt": repo20x3(os.path.join(tmp, "c"), None),
        "mobilenet/no warm-up": mobilenet(os.path.join(tmp, "d"), MOBILENET_PBTXT, {"warmup": False}),
        "mobilenet/default run on zeros": mobilenet(os.path.join(tmp, "e"), MOBILENET_PBTXT),
        "mobilenet/1 sample, batch 1": mobilenet(os.path.join(tmp, "f"), MOBILENET_PBTXT + WARM_ONE),
        "mobilenet/1 sample, batch 4, count 4": mobilenet(os.path.join(tmp, "g"), MOBILENET_PBTXT + WARM_FOUR),
    }
    results = {name: [] for name in cases}
    names = list(cases)
    for r in range(a.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            srv = B.Ortserve(binary, cases[name], log_level="info")
            try:
                res = {"ready_ms": srv.ready_ms}
                if name.startswith("mobilenet"):
                    res["first_request_ms"] = first_request_ms(srv.port)
                srv.log.flush()
                with open(srv.log_path, errors="replace") as f:
                    ev = ready_events(f.read())
                res["startup_ms"] = next((e["startup_ms"] for e in ev if e.get("event") == "listening"), None)
                loads = [e["load_ms"] for e in ev if e.get("event") == "model_ready"]
                res["versions"] = len(loads)
                res["load_ms_sum"] = sum(loads)
                res["warmup_runs"] = sum(e.get("warmup_runs", 0) for e in ev if e.get("event") == "model_ready")
            finally:
                srv.stop()
            results[name].append(res)
    shutil.rmtree(tmp, ignore_errors=True)
    print("%-52s %9s %9s %9s %9s %8s %12s" % ("case (median of %d rounds)" % a.rounds, "ready ms", "min", "max",
                                              "loads ms", "versions", "first req ms"))
    for name in names:
        rs = results[name]
        first = B.med([x.get("first_request_ms") for x in rs if x.get("first_request_ms")])
        print("%-52s %9.1f %9.1f %9.1f %9.1f %8d %12s" % (
            name, B.med([x["ready_ms"] for x in rs]), min(x["ready_ms"] for x in rs), max(x["ready_ms"] for x in rs),
            B.med([x["load_ms_sum"] for x in rs]), rs[0]["versions"], "%.1f" % first if first else "-"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": a.rounds, "results": results,
                       "command": "/usr/bin/python3 bench/triton_ready.py --rounds %d" % a.rounds}, f, indent=1)


if __name__ == "__main__":
    main()
