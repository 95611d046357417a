#!/usr/bin/python3
"""grpc_bench.py — gRPC against HTTP, side by side in one run, with one load generator: h2load (Debian
nghttp2-client) speaks HTTP/2 with prior knowledge for gRPC and HTTP/1.1 (--h1) for the REST front.

  /usr/bin/python3 bench/grpc_bench.py [--binary build/release/ortserve] [--seconds 5] [--conc 1,16,64]

For the MLP ([1,64] FP32) and MobileNetV2 ([1,3,224,224] FP32) models it measures, at each
concurrency (h2load clients, one request in flight each), the same server process serving:
  http-json     POST /v2/models/M/infer, JSON data
  http-binary   the same with Triton's binary tensor extension (Inference-Header-Content-Length)
  grpc-unary    ModelInfer, raw_input_contents (as tritonclient.grpc sends)
  grpc-stream   ModelStreamInfer, 32 requests per stream (MobileNetV2: 8) (one HTTP/2 stream carries them all, the
                server answers each as it completes): rps counts requests, not streams
and prints rps, p50 / p99 latency (per h2load request: a stream for grpc-stream), server CPU per
request (utime + stime of the server process over the requests it answered, ortserve_requests_total,
warm-up included), bytes the server copied per request (ortserve_copied_bytes_total over the same
count), and the ratios the targets are stated in. Figures only: nothing is
asserted. Loopback, bounded in time; the server is stopped at the end."""
import argparse
import json
import os
import re
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

STREAM_K = 32  # requests per stream (MobileNetV2 at 64 streams x 32 would queue ~10 s of work: 8 there)
TICKS = os.sysconf("SC_CLK_TCK")


def grpc_msg(m):
    b = m.SerializeToString()
    return struct.pack(">BI", 0, len(b)) + b


class Server:
    def __init__(self, binary, repo):
        self.tmp = tempfile.mkdtemp(prefix="osv-grpcbench-")
        pf, gpf = os.path.join(self.tmp, "port"), os.path.join(self.tmp, "gport")
        self.proc = subprocess.Popen([binary, "serve", "--model-repository", repo, "--port", "0", "--port-file", pf,
                                      "--grpc-port", "0", "--grpc-port-file", gpf, "--access-log", "0",
                                      "--deadline-ms", "0", "--max-queue", "1024"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        """(bytes copied, requests answered) for model, from the server's own /metrics: per-request
        figures then include h2load's warm-up and the calls it abandons at the end, as the CPU does."""
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=10).read().decode()
        copied = reqs = 0.0
        for line in body.splitlines():
            if 'model="%s"' % model not in line:
                continue
            if line.startswith("ortserve_copied_bytes_total{"):
                copied += float(line.rsplit(" ", 1)[1])
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
    """{mode: (path, body file, extra h2load args, requests per h2load request)}"""
    name = "x" if model == "mlp" else "input"
    out = {}

    def put(mode, data):
        p = os.path.join(tmp, "%s-%s.bin" % (model, mode))
        with open(p, "wb") as f:
            f.write(data)
        return p
    hdr = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "parameters": {"binary_data_output": True}}).encode()
    out["http-binary"] = ("/v2/models/%s/infer" % model, put("bin", hdr + x.tobytes()),
                          ["--h1", "-H", "Inference-Header-Content-Length: %d" % len(hdr),
                           "-H", "Content-Type: application/octet-stream"], 1)
    js = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                 "data": x.reshape(-1).tolist()}]}).encode()
    out["http-json"] = ("/v2/models/%s/infer" % model, put("json", js), ["--h1", "-H", "Content-Type: application/json"], 1)
    req = infer_request(model, [(name, x)])
    g = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    out["grpc-unary"] = ("/inference.GRPCInferenceService/ModelInfer", put("unary", grpc_msg(req)), g, 1)
    k = STREAM_K if model == "mlp" else 8
    out["grpc-stream"] = ("/inference.GRPCInferenceService/ModelStreamInfer", put("stream", grpc_msg(req) * k), g, k)
    return out


def h2load(port, path, body, extra, conc, seconds, log):
    cmd = ["h2load", "-c", str(conc), "-m", "1", "-t", str(min(conc, 2)), "-D", str(seconds), "--warm-up-time=1",
           "-d", body, "--log-file", log, *extra, "http://127.0.0.1:%d%s" % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    done, failed = (int(m.group(3)), int(m.group(5))) if m else (0, 0)
    lat = []
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "200":
                lat.append(int(parts[2]))
    return done, failed, lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(SRC, "build", "release", "ortserve"))
    ap.add_argument("--models", default=os.environ.get("OSV_TEST_MODELS", os.path.join(SRC, "var", "models")))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conc", default="1,16,64")
    ap.add_argument("--only", default="mlp,mobilenetv2")
    a = ap.parse_args()
    if not shutil.which("h2load"):
        sys.exit("h2load not found: apt-get install nghttp2-client (tools/deps.sh bench)")
    tmp = tempfile.mkdtemp(prefix="osv-grpcbench-")
    repo = os.path.join(tmp, "repo")
    for m in ("mlp", "mobilenetv2"):
        os.makedirs(os.path.join(repo, m, "1"))
        shutil.copy(os.path.join(a.models, m + ".onnx"), os.path.join(repo, m, "1", "model.onnx"))
    srv = Server(a.binary, repo)
    rows = []
    try:
        for model in a.only.split(","):
            x = (np.random.rand(1, 64) if model == "mlp" else np.random.rand(1, 3, 224, 224)).astype(np.float32)
            for conc in [int(c) for c in a.conc.split(",")]:
                for mode, (path, body, extra, per) in bodies(model, x, tmp).items():
                    port = srv.gport if mode.startswith("grpc") else srv.port
                    time.sleep(0.5)  # pacing: the previous run's last records are counted after its answers
                    cpu0, (cp0, n0) = srv.cpu_s(), srv.counters(model)
                    done, failed, lat = h2load(port, path, body, extra, conc, a.seconds,
                                               os.path.join(tmp, "log-%s-%s-%d" % (model, mode, conc)))
                    time.sleep(0.5)
                    cpu1, (cp1, n1) = srv.cpu_s(), srv.counters(model)
                    reqs = done * per
                    served = (n1 - n0) or 1  # every request the server answered in the cell
                    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0] * 99
                    row = {"model": model, "conc": conc, "mode": mode, "rps": reqs / a.seconds,
                           "p50_us": q[49], "p99_us": q[98], "failed": failed,
                           "cpu_us_per_req": (cpu1 - cpu0) * 1e6 / served,
                           "copied_per_req": (cp1 - cp0) / served}
                    rows.append(row)
                    print("%-11s c=%-3d %-12s %9.0f rps  p50 %8.0f us  p99 %8.0f us  cpu %7.1f us/req  copied %9.0f "
                          "B/req  failed %d" % (model, conc, mode, row["rps"], row["p50_us"], row["p99_us"],
                                                row["cpu_us_per_req"], row["copied_per_req"], failed), flush=True)
                by = {r["mode"]: r for r in rows if r["model"] == model and r["conc"] == conc}
                hb = by["http-binary"]["rps"] or 1
                print("%-11s c=%-3d ratios vs http-binary: grpc-unary %.2fx  grpc-stream %.2fx  http-json %.2fx"
                      % (model, conc, by["grpc-unary"]["rps"] / hb, by["grpc-stream"]["rps"] / hb,
                         by["http-json"]["rps"] / hb), flush=True)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
