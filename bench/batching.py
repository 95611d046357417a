#!/usr/bin/python3
"""batching.py — dynamic batching variants side by side (figures, never asserted).

    /usr/bin/python3 bench/batching.py [--seconds 3] [--rounds 5] [--models mlp,mbv2,cls]
                                       [--formats binary,json,grpc] [--conns 1,4,16,64] [--cache] [--raw FILE]
                                       [--split-cores]

For each model, format and client count the variants run interleaved, every round in another order (one server
each, started fresh): batching off (no dynamic_batching), Triton's fixed delay of 100 µs and 1 ms, and ortserve's
adaptive mode. Load: wrk (bench/wrk/post.lua) over keep-alive connections for HTTP (binary requests of one row;
MLP also JSON), bench/grpc_load for gRPC ModelInfer (MLP; one call in flight per client), as bench/grpc_bench.py drives it.

Printed per cell (medians over rounds): rps with its spread over rounds (min..max), p50 and p99 (µs), server CPU
µs per answered request, mean batch size (inference_count / execution_count), bytes copied per request for
batching (copy reason "batch": rows gathered into a batch's slot) and for any reason (readahead, grpc_receive,
batch, ...), and the throughput against batching off as the median of the per-round ratios [min..max] — each
round's variants ran minutes apart at most, so a ratio within a round is steadier than a ratio of medians. For
the adaptive mode also the ratio against the best other variant of that round. `others` is the median number of
cores other processes (not the server, not the load generator) kept busy during the cell's runs: the machine is
shared.

--split-cores puts the server on one CPU and the load generator on the others (taskset / the affinity mask), as a
client on another machine would be: the server's own capacity, which is what batching changes, without the load
generator's CPU in the same two cores.

--cache adds the response cache on the MobileNetV2-shaped model: one client on a keep-alive connection sends, in
alternating blocks, the same input again and again (hits after the first) and fresh inputs (misses), and the
client-side latencies of each are compared (p50, p99; the client's own sending is in both).

The MobileNetV2-shaped and PaddleOCR classifier runs need their models (var/models, third_party/models)."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import http.client
import resource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "release", "ortserve")
GRPC_LOAD = os.path.join(ROOT, "build", "release", "bench", "grpc_load")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

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

SERVER_ARGS = ["--deadline-ms", "0", "--max-queue", "1024"]
SERVER_WRAPPER = []  # --split-cores: ["taskset", "-c", CPU]


class Ortserve(benchlib.Ortserve):
    """benchlib's server with the gRPC port open too (its port file read once HTTP is ready)."""

    def __init__(self, repo, extra=()):
        gdir = tempfile.mkdtemp(prefix="gport-", dir=benchlib.TMP)
        gpf = os.path.join(gdir, "port")
        super().__init__(BIN, repo, [*SERVER_ARGS, "--grpc-port", "0", "--grpc-port-file", gpf, *extra],
                         wrapper=SERVER_WRAPPER)
        deadline = time.monotonic() + 30
        self.gport = None
        while self.gport is None and time.monotonic() < deadline:
            try:
                self.gport = int(open(gpf).read())
            except (OSError, ValueError):
                time.sleep(0.02)  # bounded poll of the port file
        shutil.rmtree(gdir, ignore_errors=True)


def row_input(name, seed=1):
    shape = MODELS[name][2]
    return np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)


def body_file(tmp, name, fmt):
    """(file, Inference-Header-Content-Length or None) of a one-row request in the format."""
    _, inp, shape, _ = MODELS[name]
    x = row_input(name)
    path = os.path.join(tmp, "%s.%s" % (name, fmt))
    if fmt == "json":
        body = json.dumps({"inputs": [{"name": inp, "shape": [1, *shape], "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        return benchlib.write(path, body), None
    if fmt == "grpc":
        from grpc_support import infer_request
        msg = infer_request(name, [(inp, x)]).SerializeToString()
        return benchlib.write(path, b"\0" + len(msg).to_bytes(4, "big") + msg), None
    hdr = json.dumps({"inputs": [{"name": inp, "shape": [1, *shape], "datatype": "FP32",
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "parameters": {"binary_data_output": True}}).encode()
    return benchlib.write(path, hdr + x.tobytes()), len(hdr)


def counters(srv, name):
    """(inferences, executions, batch-copied bytes, all copied bytes, answered requests) from /metrics."""
    m = srv.metrics()
    s = lambda metric, **kw: benchlib.Ortserve.msum(m, metric, model=name, **kw)  # noqa: E731
    return (s("ortserve_inference_count_total"), s("ortserve_execution_count_total"),
            s("ortserve_copied_bytes_total", reason="batch"), s("ortserve_copied_bytes_total"),
            s("ortserve_requests_total"))


def grpc_measured(srv, name, body, conns, seconds, tmp):
    """gRPC ModelInfer with bench/grpc_load (the generator bench/grpc_bench.py uses; one call in flight per
    connection): the fields wrk_measured gives (rps of answered calls, p50/p99 of each call from issue to
    complete answer, server CPU per answered request, others' cores). h2load's per-request log is not used:
    it gave 65 µs medians for calls that took over a millisecond (fixed 1 ms delay, 839 calls/s on one
    connection)."""
    cmd = [GRPC_LOAD, "--port", str(srv.gport), "--mode", "unary", "--path",
           "/inference.GRPCInferenceService/ModelInfer", "--body", body, "--header", "content-type: application/grpc",
           "--header", "te: trailers", "--conns", str(conns), "--threads", str(min(conns, 2)),
           "--seconds", str(seconds), "--warmup", "1"]
    cpu0, busy0, t0 = srv.cpu(), benchlib.machine_busy(), time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    cpu1, busy1, t1 = srv.cpu(), benchlib.machine_busy(), time.monotonic()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), out.stderr.strip()))
    r = json.loads(out.stdout)
    load_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)  # the generator's own CPU
    busy_s = (busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK")
    return {"ok_rps": r["rps"], "p50_us": r["p50_us"], "p99_us": r["p99_us"], "requests": r["done"] + r["failed"],
            "non2xx": r["failed"], "server_cpu_s": cpu1 - cpu0,
            "others_cores": max(0.0, busy_s - (cpu1 - cpu0) - load_s) / (t1 - t0)}


def one_run(name, variant, conns, seconds, fmt, tmp):
    f, _, _, mbs = MODELS[name]
    repo = os.path.join(tmp, "repo-%s-%s" % (name, variant))
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(os.path.join(repo, name, "1"))
    os.link(f, os.path.join(repo, name, "1", "model.onnx"))
    with open(os.path.join(repo, name, "config.json"), "w") as fh:
        json.dump(VARIANTS[variant](mbs), fh)
    srv = Ortserve(repo)
    try:
        bf, ihcl = body_file(tmp, name, fmt)
        before = counters(srv, name)
        if fmt == "grpc":
            r = grpc_measured(srv, name, bf, conns, seconds, tmp)
        else:
            r = benchlib.wrk_measured(srv, "/v2/models/%s/infer" % name, bf, conns, seconds, ihcl)
            r["server_cpu_s"] = r["cpu_us_per_req"] * r["requests"] / 1e6
        after = counters(srv, name)
    finally:
        srv.stop()
    inf, exe, batch_copied, all_copied, answered = (a - b for a, b in zip(after, before))
    answered = max(1, answered)  # every request the server answered, warm-up included (as the CPU is)
    return {"rps": r["ok_rps"], "p50": r["p50_us"], "p99": r["p99_us"], "cpu_us": r["server_cpu_s"] * 1e6 / answered,
            "batch": inf / exe if exe else 0.0, "copied": batch_copied / answered, "all_copied": all_copied / answered,
            "non2xx": r["non2xx"], "others": r.get("others_cores")}


def ratio_stats(runs, v, against):
    """Median [min..max] of per-round rps ratios of variant v to `against` (a variant, or "best": the best
    other variant of the same round)."""
    rs = []
    for i in range(len(runs[v])):
        if against == "best":
            den = max(runs[o][i]["rps"] for o in runs if o != v)
        else:
            den = runs[against][i]["rps"]
        rs.append(runs[v][i]["rps"] / den if den else 0.0)
    return statistics.median(rs), min(rs), max(rs)


def cell(name, fmt, conns, a, tmp, raw):
    runs = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    for r in range(a.rounds):  # interleaved, every round in another order (rotated, then reversed)
        k = r % len(order)
        seq = order[k:] + order[:k]
        for v in (seq if r % 2 == 0 else seq[::-1]):
            runs[v].append(one_run(name, v, conns, a.seconds, fmt, tmp))
    raw.append({"model": name, "format": fmt, "clients": conns, "runs": runs})
    for v, rs in runs.items():
        med = {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p99", "cpu_us", "batch", "copied",
                                                                "all_copied")}
        others = [x["others"] for x in rs if x["others"] is not None]
        vs_off = "—" if v == "off" else "%.2f× [%.2f..%.2f]" % ratio_stats(runs, v, "off")
        vs_best = "%.2f× [%.2f..%.2f]" % ratio_stats(runs, v, "best") if v == "adaptive" else ""
        print("| %s | %s | %d | %s | %.0f | %.0f..%.0f | %.0f | %.0f | %.1f | %.2f | %.0f | %.0f | %s | %s | %.2f |" % (
            name, fmt, conns, v, med["rps"], min(x["rps"] for x in rs), max(x["rps"] for x in rs), med["p50"],
            med["p99"], med["cpu_us"], med["batch"], med["copied"], med["all_copied"], vs_off, vs_best,
            statistics.median(others) if others else float("nan")), flush=True)


# ---- the response cache -------------------------------------------------------------------------------------

def cache_bench(a, tmp):
    """Hits against misses on the MobileNetV2-shaped model, one client, alternating blocks."""
    f, inp, shape, _ = MODELS["mbv2"]
    repo = os.path.join(tmp, "repo-cache")
    os.makedirs(os.path.join(repo, "mbv2", "1"))
    os.link(f, os.path.join(repo, "mbv2", "1", "model.onnx"))
    with open(os.path.join(repo, "mbv2", "config.json"), "w") as fh:
        json.dump({"response_cache": {"enable": True}}, fh)
    srv = Ortserve(repo, ["--cache-size", "64M"])
    lat = {"hit": [], "miss": []}
    rng = np.random.default_rng(5)
    same = rng.standard_normal((1, *shape)).astype(np.float32)

    def body(x):
        hdr = json.dumps({"inputs": [{"name": inp, "shape": [1, *shape], "datatype": "FP32",
                                      "parameters": {"binary_data_size": x.nbytes}}],
                          "parameters": {"binary_data_output": True}}).encode()
        return hdr + x.tobytes(), {"Inference-Header-Content-Length": str(len(hdr))}
    try:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)

        def send(b, h):
            t0 = time.perf_counter_ns()
            c.request("POST", "/v2/models/mbv2/infer", b, h)
            resp = c.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            return (time.perf_counter_ns() - t0) / 1000
        hb, hh = body(same)
        send(hb, hh)  # the entry
        for block in range(a.cache_blocks):
            misses = [body(rng.standard_normal((1, *shape)).astype(np.float32)) for _ in range(a.cache_block)]
            for b, h in misses:
                lat["miss"].append(send(b, h))
            for _ in range(a.cache_block):
                lat["hit"].append(send(hb, hh))
        st = json.loads(benchlib.http_get(srv.port, "/v2/models/mbv2/stats")[1])["model_stats"][0]["inference_stats"]
    finally:
        srv.stop()
    print()
    print("| mbv2, 1 client, binary | requests | p50 µs | p99 µs | server: cache lookup µs (mean) |")
    print("|---|---:|---:|---:|---:|")
    for k in ("miss", "hit"):
        q = statistics.quantiles(lat[k], n=100)
        s = st["cache_%s" % k]
        print("| %s | %d | %.0f | %.0f | %.1f |" % (k, len(lat[k]), q[49], q[98], s["ns"] / max(1, s["count"]) / 1000))
    print("\nhit p50 / miss p50 = %.3f" % (statistics.median(lat["hit"]) / statistics.median(lat["miss"])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="mlp,mbv2,cls")
    ap.add_argument("--conns", default="1,4,16,64")
    ap.add_argument("--formats", default="binary,json,grpc", help="MLP's; the others run binary")
    ap.add_argument("--cache", action="store_true", help="also the response cache (MobileNetV2-shaped)")
    ap.add_argument("--cache-only", action="store_true")
    ap.add_argument("--cache-blocks", type=int, default=10)
    ap.add_argument("--cache-block", type=int, default=20)
    ap.add_argument("--raw", help="write every run's figures to this JSON file")
    ap.add_argument("--split-cores", action="store_true",
                    help="the server on the last CPU of this process's mask, the load generator on the others (as a "
                         "client on another machine would be; the server then sizes itself to one CPU)")
    a = ap.parse_args()
    if a.split_cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit("--split-cores needs two CPUs in this process's affinity mask")
        SERVER_WRAPPER[:] = ["taskset", "-c", str(cpus[-1])]
        os.sched_setaffinity(0, cpus[:-1])  # wrk and grpc_load inherit it
        print("server on CPU %d, load generator on CPU %s" % (cpus[-1], ",".join(map(str, cpus[:-1]))))
    os.makedirs(benchlib.TMP, exist_ok=True)  # the servers' port files
    tmp = tempfile.mkdtemp(prefix="osv-batchbench-")
    raw = []
    try:
        if not a.cache_only:
            print("| model | format | clients | variant | rps | rps min..max | p50 µs | p99 µs | CPU µs/req | mean batch "
                  "| batch-copied B/req | all copied B/req | vs off | adaptive vs best other | others (cores) |")
            print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
            for name in a.models.split(","):
                if not os.path.exists(MODELS[name][0]):
                    print("| %s | (model missing: %s) |" % (name, MODELS[name][0]))
                    continue
                for fmt in a.formats.split(",") if name == "mlp" else ["binary"]:
                    for conns in (int(c) for c in a.conns.split(",")):
                        cell(name, fmt, conns, a, tmp, raw)
        if a.cache or a.cache_only:
            cache_bench(a, tmp)
    finally:
        if a.raw:
            with open(a.raw, "w") as f:
                json.dump(raw, f, indent=1)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
