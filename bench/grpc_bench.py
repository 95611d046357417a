#!/usr/bin/python3
"""grpc_bench.py — gRPC against HTTP, side by side in one run and one server, with one load generator for
every mode: bench/grpc_load.c (built as build/release/bench/grpc_load), a closed-loop client on nghttp2 for
HTTP/2 and plain sockets for HTTP/1.1.

  /usr/bin/python3 bench/grpc_bench.py [--rounds 7] [--seconds 3] [--conc 1,16,64] [--json FILE]

For the MLP ([1,64] FP32) and MobileNetV2 ([1,3,224,224] FP32) models, at each concurrency c (requests in
flight), the same server process serves:
  http-json     POST /v2/models/M/infer, JSON data; c keep-alive connections, one request in flight each
  http-binary   the same with Triton's binary tensor extension (Inference-Header-Content-Length)
  grpc-unary    ModelInfer with raw_input_contents (as tritonclient.grpc sends); c connections, one call
                at a time each
  grpc-stream   ModelStreamInfer, interactive: c/d streams (one per connection) with d = min(c, --depth)
                requests in flight on each; every answer releases the next request at once, so requests
                go out while answers come in (a client feeding a stream from a producer)

Rounds interleave the modes (round r runs them in one order, round r+1 in the reverse), and each figure
is the median over rounds with its [min...max]; the ratios the targets are stated in are medians of
per-round ratios (the variants of a round ran back to back). Per cell: requests/s, p50 / p99 / p99.9
latency (µs, issue to complete answer), the server's CPU per request (utime + stime over the requests it
answered in the cell, ortserve_requests_total), the load generator's CPU per request (its rusage), and the
bytes the server copied per request (ortserve_copied_bytes_total, by reason). The machine is shared with
the load generator (2 cores here): figures only, nothing asserted. Loopback; the server is stopped at
the end."""
import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
from grpc_support import infer_request  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
MODES = ("http-json", "http-binary", "grpc-unary", "grpc-stream")
GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"]


def grpc_msg(m):
    b = m.SerializeToString()
    return struct.pack(">BI", 0, len(b)) + b


class Server:
    def __init__(self, binary, repo, extra):
        self.tmp = tempfile.mkdtemp(prefix="osv-grpcbench-")
        pf, gpf = os.path.join(self.tmp, "port"), os.path.join(self.tmp, "gport")
        self.cmd = [binary, "serve", "--model-repository", repo, "--port", "0", "--port-file", pf,
                    "--grpc-port", "0", "--grpc-port-file", gpf, "--access-log", "0", "--deadline-ms", "0",
                    "--max-queue", "1024", *extra]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        self.port = self.gport = None
        while time.monotonic() < deadline and not (self.port and self.gport):
            try:
                self.port = int(open(pf).read())
                self.gport = int(open(gpf).read())
            except (OSError, ValueError):
                time.sleep(0.05)  # bounded poll of the port files
        if not (self.port and self.gport):
            self.stop()
            raise RuntimeError("ortserve did not start")

    def cpu_s(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def counters(self, model):
        """({reason: bytes copied}, requests answered) for model, from the server's own /metrics."""
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=10).read().decode()
        copied, reqs = {}, 0.0
        for line in body.splitlines():
            if 'model="%s"' % model not in line:
                continue
            if line.startswith("ortserve_copied_bytes_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                copied[reason] = copied.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
            elif line.startswith("ortserve_requests_total{"):
                reqs += float(line.rsplit(" ", 1)[1])
        return copied, reqs

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def bodies(model, x, tmp):
    """{mode: (grpc?, path, body file, headers)}"""
    name = "x" if model == "mlp" else "input"

    def put(mode, data):
        p = os.path.join(tmp, "%s-%s.bin" % (model, mode))
        with open(p, "wb") as f:
            f.write(data)
        return p
    hdr = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "parameters": {"binary_data_output": True}}).encode()
    js = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                 "data": x.reshape(-1).tolist()}]}).encode()
    msg = put("grpc", grpc_msg(infer_request(model, [(name, x)])))
    svc = "/inference.GRPCInferenceService/"
    return {
        "http-json": (False, "/v2/models/%s/infer" % model, put("json", js), ["Content-Type: application/json"]),
        "http-binary": (False, "/v2/models/%s/infer" % model, put("bin", hdr + x.tobytes()),
                        ["Inference-Header-Content-Length: %d" % len(hdr), "Content-Type: application/octet-stream"]),
        "grpc-unary": (True, svc + "ModelInfer", msg, GRPC_HEADERS),
        "grpc-stream": (True, svc + "ModelStreamInfer", msg, GRPC_HEADERS),
    }


def run_load(a, port, mode, path, body, headers, conc):
    """One cell: the load generator's JSON result and its CPU seconds."""
    argv = [a.load, "--port", str(port), "--path", path, "--body", body, "--seconds", str(a.seconds),
            "--warmup", str(a.warmup), "--threads", str(min(conc, 2))]
    for h in headers:
        argv += ["--header", h]
    if mode == "grpc-stream":
        depth = min(conc, a.depth)
        argv += ["--mode", "stream", "--conns", str(max(1, conc // depth)), "--depth", str(depth)]
    else:
        argv += ["--mode", "unary" if mode == "grpc-unary" else "h1", "--conns", str(conc)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=a.seconds + a.warmup + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), out.stderr.strip()))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(out.stdout), cpu


def cell(a, srv, model, mode, spec, conc):
    grpc, path, body, headers = spec
    cpu0, (cp0, n0) = srv.cpu_s(), srv.counters(model)
    r, load_cpu = run_load(a, srv.gport if grpc else srv.port, mode, path, body, headers, conc)
    cpu1, (cp1, n1) = srv.cpu_s(), srv.counters(model)
    served = (n1 - n0) or 1  # every request the server answered in the cell (warm-up included)
    answered = r["done"] + r["failed"]
    return {"model": model, "conc": conc, "mode": mode, "rps": r["rps"], "failed": r["failed"],
            "p50_us": r["p50_us"], "p99_us": r["p99_us"], "p999_us": r["p999_us"],
            "cpu_us_per_req": (cpu1 - cpu0) * 1e6 / served,
            "load_cpu_us_per_req": load_cpu * 1e6 / served,
            "copied_per_req": {k: (cp1.get(k, 0) - cp0.get(k, 0)) / served for k in cp1
                               if cp1.get(k, 0) - cp0.get(k, 0) > 0},
            "answered": answered}


def spread(xs, fmt="%.0f"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    return (fmt + " [" + fmt + "…" + fmt + "]") % (statistics.median(xs), min(xs), max(xs))


def summarize(rows, models, concs):
    """The tables of bench/grpc/RESULTS.md, from every round's rows."""
    out = ["| model | calls | mode | req/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | client CPU µs/req |",
           "|---|---|---|---|---|---|---|---|---|"]
    for model in models:
        for conc in concs:
            for mode in MODES:
                rs = [r for r in rows if (r["model"], r["conc"], r["mode"]) == (model, conc, mode)]
                if not rs:
                    continue
                out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                    model, conc, mode, spread([r["rps"] for r in rs]), spread([r["p50_us"] for r in rs]),
                    spread([r["p99_us"] for r in rs]), spread([r["p999_us"] for r in rs]),
                    spread([r["cpu_us_per_req"] for r in rs], "%.1f"),
                    spread([r["load_cpu_us_per_req"] for r in rs], "%.1f")))
    out += ["", "| model | calls | grpc-unary / http-binary | grpc-stream / http-binary | http-json / http-binary |",
            "|---|---|---|---|---|"]
    for model in models:
        for conc in concs:
            by = {}
            for r in rows:
                if (r["model"], r["conc"]) == (model, conc):
                    by.setdefault(r["round"], {})[r["mode"]] = r["rps"]
            rat = {m: [v[m] / v["http-binary"] for v in by.values() if v.get("http-binary") and m in v]
                   for m in ("grpc-unary", "grpc-stream", "http-json")}
            out.append("| %s | %d | %s | %s | %s |" % (model, conc, spread(rat["grpc-unary"], "%.2f"),
                                                      spread(rat["grpc-stream"], "%.2f"), spread(rat["http-json"], "%.2f")))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(SRC, "build", "release", "ortserve"))
    ap.add_argument("--load", default=os.path.join(SRC, "build", "release", "bench", "grpc_load"))
    ap.add_argument("--models", default=os.environ.get("OSV_TEST_MODELS", os.path.join(SRC, "var", "models")))
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--depth", type=int, default=4, help="requests in flight per stream at most")
    ap.add_argument("--conc", default="1,16,64")
    ap.add_argument("--only", default="mlp,mobilenetv2")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json", help="write every cell of every round here")
    ap.add_argument("--server-arg", action="append", default=[], help="extra ortserve serve argument")
    a = ap.parse_args()
    if not os.access(a.load, os.X_OK):
        sys.exit("%s not found: build it (make build)" % a.load)
    tmp = tempfile.mkdtemp(prefix="osv-grpcbench-")
    repo = os.path.join(tmp, "repo")
    models, concs = a.only.split(","), [int(c) for c in a.conc.split(",")]
    modes = [m for m in MODES if m in a.modes.split(",")]
    for m in ("mlp", "mobilenetv2"):
        os.makedirs(os.path.join(repo, m, "1"))
        shutil.copy(os.path.join(a.models, m + ".onnx"), os.path.join(repo, m, "1", "model.onnx"))
    rng = np.random.default_rng(15)
    specs = {m: bodies(m, (rng.random((1, 64)) if m == "mlp" else rng.random((1, 3, 224, 224))).astype(np.float32),
                       tmp) for m in models}
    srv = Server(a.binary, repo, a.server_arg)
    rows = []
    print("server: %s" % " ".join(srv.cmd), flush=True)
    try:
        for rnd in range(a.rounds):
            order = modes if rnd % 2 == 0 else modes[::-1]
            for model in models:
                for conc in concs:
                    for mode in order:
                        row = cell(a, srv, model, mode, specs[model][mode], conc)
                        row["round"] = rnd
                        rows.append(row)
                        print("r%d %-11s c=%-3d %-12s %9.0f rps  p50 %6d  p99 %7d  p99.9 %7d us  server %7.1f  client "
                              "%6.1f us/req  copied %s  failed %d" % (
                                  rnd, model, conc, mode, row["rps"], row["p50_us"], row["p99_us"], row["p999_us"],
                                  row["cpu_us_per_req"], row["load_cpu_us_per_req"],
                                  {k: round(v) for k, v in row["copied_per_req"].items()}, row["failed"]),
                              flush=True)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"argv": sys.argv, "rows": rows}, f, indent=1)
    print()
    print(summarize(rows, models, concs))


if __name__ == "__main__":
    main()
