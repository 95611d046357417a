#!/usr/bin/python3
"""http_bench.py — the server's HTTP benchmark: ortserve under wrk, side by side in one run with
(a) the in-process limit of the same model (bench/inproc_rate, no HTTP) and (b) the HTTP limit of
this box: nginx (1 worker, access log off) answering the same request with a canned response of the
same size. Variants are interleaved in rounds; medians are reported. Prints markdown tables (and
--json FILE for the raw numbers). Figures only: nothing is asserted.

    /usr/bin/python3 bench/http_bench.py [--build build/release] [--rounds 3] [--seconds 5] [--quick]
                                         [--only mlp,mnv2,big,rss,startup]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "var", "models")
LUA = os.path.join(ROOT, "bench", "wrk", "post.lua")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port_file(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            with open(path) as f:
                return int(f.read())
        except (OSError, ValueError):
            time.sleep(0.001)
    raise RuntimeError("server did not start")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Ortserve:
    def __init__(self, binary, models, extra=()):
        self.dir = tempfile.mkdtemp(prefix="osv-bench-")
        repo = os.path.join(self.dir, "repo")
        for name, f in models.items():
            os.makedirs(os.path.join(repo, name, "1"))
            os.link(os.path.join(MODELS, f), os.path.join(repo, name, "1", "model.onnx"))
        pf = os.path.join(self.dir, "port")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([binary, "serve", "--model-repository", repo, "--port", "0", "--port-file", pf,
                                      "--access-log", "0", "--deadline-ms", "0", *extra],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))
        self.port = wait_port_file(pf, self.proc)
        self.ready_s = time.monotonic() - self.t0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


class Nginx:
    """nginx with one worker answering POSTs with a canned body of the given size."""

    def __init__(self, body_len):
        self.dir = tempfile.mkdtemp(prefix="osv-nginx-")
        self.port = free_port()
        canned = '{"model_name":"mlp","model_version":"1","outputs":[{"data":[' + "0" * max(1, body_len - 58) + ']}]}'
        conf = """worker_processes 1; daemon off; master_process off; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; client_body_buffer_size 64m; client_max_body_size 128m;
  client_body_temp_path %(d)s; proxy_temp_path %(d)s; fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
  server { listen 127.0.0.1:%(p)d; default_type application/json;
    location / { return 200 '%(c)s'; } } }
""" % {"d": self.dir, "p": self.port, "c": canned}
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["nginx", "-c", os.path.join(self.dir, "nginx.conf"), "-p", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("nginx did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def wrk(port, path, body_file, conns, seconds, ihcl=None):
    env = dict(os.environ, BODY_FILE=body_file, REQ_PATH=path, IHCL=str(ihcl) if ihcl is not None else "")
    threads = 1 if conns == 1 else 2
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds, "--latency", "-s", LUA,
                          "http://127.0.0.1:%d" % port], capture_output=True, text=True, env=env,
                         timeout=seconds + 60).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("wrk printed no summary:\n" + out)


def bodies(tmp):
    """Request bodies: MLP JSON and binary, MobileNetV2 JSON and binary, 16 MB binary (scale2x)."""
    rng = np.random.default_rng(0)
    out = {}
    x = rng.standard_normal((1, 64)).astype(np.float32)
    out["mlp_json"] = (json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                               "data": [float("%.6g" % v) for v in x.ravel()]}]}).encode(), None)
    img = rng.random((1, 3, 224, 224), dtype=np.float32)
    out["mnv2_json"] = (json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                                "data": [float("%.6g" % v) for v in img.ravel()]}]}).encode(), None)

    def binary(name, arr, outputs):
        hdr = json.dumps({"inputs": [{"name": name, "shape": list(arr.shape), "datatype": "FP32",
                                      "parameters": {"binary_data_size": arr.nbytes}}],
                          "outputs": outputs}).encode()
        return hdr + arr.tobytes(), len(hdr)

    out["mlp_bin"] = binary("x", x, [{"name": "probs", "parameters": {"binary_data": True}}])
    out["mnv2_bin"] = binary("input", img, [{"name": "probs", "parameters": {"binary_data": True}}])
    big = rng.random(4 << 20, dtype=np.float32)  # 16 MiB
    out["big_bin"] = binary("x", big, [{"name": "y", "parameters": {"binary_data": True}}])
    files = {}
    for k, (b, ihcl) in out.items():
        p = os.path.join(tmp, k + ".body")
        with open(p, "wb") as f:
            f.write(b)
        files[k] = (p, ihcl, len(b))
    return files


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def run_http(args, files, results):
    groups = []
    if "mlp" in args.only:
        groups.append(("mlp", {"mlp": "mlp.onnx"}, [("mlp_json", "/v2/models/mlp/infer"), ("mlp_bin", "/v2/models/mlp/infer")]))
    if "mnv2" in args.only:
        groups.append(("mnv2", {"mobilenetv2": "mobilenetv2.onnx"},
                       [("mnv2_bin", "/v2/models/mobilenetv2/infer"), ("mnv2_json", "/v2/models/mobilenetv2/infer")]))
    if "big" in args.only:
        groups.append(("big", {"scale2x": "scale2x.onnx"}, [("big_bin", "/v2/models/scale2x/infer")]))
    conns = [1, 16]
    for gname, models, cases in groups:
        srv = Ortserve(args.ortserve, models)
        nginx = Nginx(236) if gname == "mlp" else None
        try:
            for r in range(args.rounds):
                for body, path in cases:
                    p, ihcl, _ = files[body]
                    for c in conns:
                        if gname == "mlp" and nginx and body == "mlp_json":
                            res = wrk(nginx.port, path, p, c, args.seconds)
                            results.setdefault(("nginx canned 236 B", c), []).append(res)
                        secs = args.seconds if body != "mnv2_json" else max(args.seconds, 5)
                        res = wrk(srv.port, path, p, c, secs, ihcl)
                        res["rss_kb"] = rss_kb(srv.proc.pid)
                        results.setdefault((body, c), []).append(res)
                        print("  round %d %-10s c=%-2d %8.0f rps  p50 %6d µs  p99 %6d µs  non2xx %d" %
                              (r + 1, body, c, res["rps"], res["p50_us"], res["p99_us"], res["non2xx"]), file=sys.stderr)
        finally:
            srv.stop()
            if nginx:
                nginx.stop()


def inproc(args, model, threads, dims=()):
    out = subprocess.run([args.inproc, os.path.join(MODELS, model), str(threads), str(args.seconds), *map(str, dims)],
                         capture_output=True, text=True, timeout=args.seconds + 120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_compare(args, results):
    """Idle RSS with the MLP loaded and after a load run, vs a bare ORT program holding the same model."""
    bare = [json.loads(subprocess.run([args.bare, args.ort_lib, os.path.join(MODELS, "mlp.onnx"), "100000"],
                                      capture_output=True, text=True).stdout) for _ in range(3)]
    idle, after = [], []
    for _ in range(3):
        srv = Ortserve(args.ortserve, {"mlp": "mlp.onnx"})
        try:
            time.sleep(0.3)  # let start-up settle before reading RSS (a reading, not synchronisation)
            idle.append(rss_kb(srv.proc.pid))
            with tempfile.TemporaryDirectory() as t:
                files = bodies(t)
                wrk(srv.port, "/v2/models/mlp/infer", files["mlp_json"][0], 16, args.seconds)
            after.append(rss_kb(srv.proc.pid))
        finally:
            srv.stop()
    results["rss"] = {"bare_loaded_kb": med([b["rss_loaded_kb"] for b in bare]),
                      "bare_after_runs_kb": med([b["rss_after_runs_kb"] for b in bare]),
                      "ortserve_idle_kb": med(idle), "ortserve_after_load_kb": med(after)}


def startup(args, results):
    times, internal = [], []
    for _ in range(5):
        srv = Ortserve(args.ortserve, {"mobilenetv2": "mobilenetv2.onnx"})
        times.append(srv.ready_s * 1000)
        srv.stop()
    results["startup_ms"] = {"median": med(times), "all": times}


def table(args, results):
    print("\n## HTTP benchmark (medians of %d rounds, %d s each; wrk on the same 2 cores)\n" % (args.rounds, args.seconds))
    print("| request | conns | rps | p50 µs | p99 µs | server RSS MiB | vs limit |")
    print("|---|---:|---:|---:|---:|---:|---|")
    lim = results.get("limits", {})
    for (name, c), runs in sorted((k, v) for k, v in results.items() if isinstance(k, tuple)):
        rps = med([r["rps"] for r in runs])
        rss = med([r.get("rss_kb", 0) for r in runs]) / 1024
        ref = ""
        if name.startswith("mlp_json") and ("nginx canned 236 B", c) in results:
            ng = med([r["rps"] for r in results[("nginx canned 236 B", c)]])
            ngp99 = med([r["p99_us"] for r in results[("nginx canned 236 B", c)]])
            ref = "%.2f× nginx rps, p99 %.2f× nginx" % (rps / ng, med([r["p99_us"] for r in runs]) / ngp99)
        elif name.startswith("mnv2") and "mobilenetv2" in lim:
            ref = "%.2f× in-process (%.0f runs/s, 2 threads)" % (rps / lim["mobilenetv2"]["runs_per_s"], lim["mobilenetv2"]["runs_per_s"])
        elif name.startswith("mlp") and "mlp" in lim:
            ref = "%.2f× in-process (%.0f runs/s)" % (rps / lim["mlp"]["runs_per_s"], lim["mlp"]["runs_per_s"])
        print("| %s | %d | %.0f | %.0f | %.0f | %s | %s |" % (name, c, rps, med([r["p50_us"] for r in runs]),
                                                            med([r["p99_us"] for r in runs]),
                                                            "%.1f" % rss if rss else "", ref))
    if "rss" in results:
        r = results["rss"]
        print("\nRSS: bare ORT holding mlp %.1f MiB loaded, %.1f MiB after 100k runs; ortserve with mlp %.1f MiB idle, "
              "%.1f MiB after a load run: +%.1f MiB over bare" % (r["bare_loaded_kb"] / 1024, r["bare_after_runs_kb"] / 1024,
                                                                  r["ortserve_idle_kb"] / 1024, r["ortserve_after_load_kb"] / 1024,
                                                                  (r["ortserve_after_load_kb"] - r["bare_after_runs_kb"]) / 1024))
    if "startup_ms" in results:
        print("\nStart to ready with mobilenetv2 (process spawn to listening with the model loaded): median %.1f ms (%s)"
              % (results["startup_ms"]["median"], ", ".join("%.0f" % t for t in results["startup_ms"]["all"])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="mlp,mnv2,big,rss,startup")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2
    args.only = set(args.only.split(","))
    args.ortserve = os.path.join(args.build, "ortserve")
    args.inproc = os.path.join(args.build, "bench", "inproc_rate")
    args.bare = os.path.join(args.build, "bench", "bare_ort")
    args.ort_lib = os.path.join(ROOT, "third_party", "onnxruntime", "lib", "libonnxruntime.so.1")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = bodies(tmp)
        limits = {}
        if "mlp" in args.only:
            limits["mlp"] = inproc(args, "mlp.onnx", 2)
        if "mnv2" in args.only:
            limits["mobilenetv2"] = inproc(args, "mobilenetv2.onnx", 2)
        results["limits"] = limits
        run_http(args, files, results)
    if "rss" in args.only:
        rss_compare(args, results)
    if "startup" in args.only:
        startup(args, results)
    table(args, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({("%s@%d" % k if isinstance(k, tuple) else k): v for k, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()
