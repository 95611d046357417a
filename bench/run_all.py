#!/usr/bin/python3
"""run_all.py — the benchmark suite behind `make bench`: runs every part, writes the raw results as JSON
under var/bench/, then bench/report.py turns them into docs/BENCHMARKS.md and docs/img/*.png.
Figures only: nothing is asserted, and no test depends on them.

    /usr/bin/python3 bench/run_all.py [--build build/release] [--only PART,...] [--quick] [--no-report]

Parts (each runnable alone with --only; every one writes var/bench/PART.json):
  core      in process: bench/core_run, run-path overhead (MLP) and zero-copy vs forced copy (scale2x)
  copy      zero-copy vs forced copy over HTTP (binary tensors) and shared memory, 64 KiB .. 64 MiB
  load      throughput and p50/p99 vs connections (1..64): MLP JSON and binary, MobileNetV2 binary;
            ortserve, the Node.js baseline (onnxruntime-node), nginx canned reply (MLP JSON), and the
            in-process limit (bare ORT Run, bench/bare_ort) in the same run, interleaved
  rss       RSS of ortserve and the Node baseline over a 60 s load run
  memlimit  ortserve in a memory cgroup of 64/128/256 MB under a load beyond capacity
  startup   process start to ready for each model; idle RSS vs bare ORT holding the same model
  targets   imaging (bench/imaging_bench: decode+preprocess, classify vs in process) and
            observability overhead (bench/obs_overhead.py)
  triton    Triton repositories: reading config.pbtxt (bench/pbtxt_bench), time to ready of 20 models x 3
            versions and of the MobileNetV2-shaped model with and without warm-up samples
            (bench/triton_ready.py)

The machine is shared and noisy: compared variants run interleaved (A B C, then C B A) in >= 3 rounds
and the report gives medians and medians of per-round ratios. --quick shortens everything (1 round,
fewer points): a smoke run, not figures to publish. Servers bind 127.0.0.1 on ephemeral ports.
"""
import argparse
import glob
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from cgroup_support import Cgroup  # noqa: E402  (shared with the end-to-end tests)
import benchlib as B  # noqa: E402

PARTS = ["core", "copy", "load", "rss", "memlimit", "startup", "targets", "triton"]
KiB, MiB = 1 << 10, 1 << 20


class Ctx:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.rounds = 1 if args.quick else args.rounds
        self.build = os.path.abspath(args.build)
        self.ortserve = os.path.join(self.build, "ortserve")
        self.bench_bin = os.path.join(self.build, "bench")

    def cmd(self, part):
        c = "/usr/bin/python3 bench/run_all.py --only " + part
        if self.quick:
            c += " --quick"
        if os.path.relpath(self.build, B.ROOT) != os.path.join("build", "release"):
            c += " --build " + os.path.relpath(self.build, B.ROOT)
        return c


def order(items, r):
    """Round r runs the variants forward, round r+1 backward."""
    return list(items) if r % 2 == 0 else list(reversed(items))


# ---- 1. core: in process -----------------------------------------------------------------------------------

def part_core(ctx):
    out = {}
    q = ["--quick"] if ctx.quick else []
    for name, extra in (("mlp", ["--only", "mlp"]), ("copy", ["--only", "copy"] + ([] if ctx.quick else ["--large"]))):
        js = os.path.join(B.TMP, "core_%s.json" % name)
        argv = [os.path.join(ctx.bench_bin, "core_run"), *extra, *q, "--json", js]
        B.log("core: " + " ".join(os.path.relpath(a, B.ROOT) if a.startswith("/") else a for a in argv))
        txt = subprocess.run(argv, cwd=B.ROOT, capture_output=True, text=True, check=True).stdout
        with open(js) as f:
            out[name] = json.load(f)
        out[name]["command"] = "build/release/bench/core_run " + " ".join(extra + q)
        out[name]["text"] = txt
    return out


# ---- 2. copy vs zero-copy over HTTP and shared memory ------------------------------------------------------

def part_copy(ctx):
    sizes = [64 * KiB, 1 * MiB, 16 * MiB] + ([] if ctx.quick else [64 * MiB])
    secs = {64 * KiB: 1, 1 * MiB: 1, 16 * MiB: 2, 64 * MiB: 3}
    variants = [("http", 0), ("http", 1), ("shm", 0), ("shm", 1)]
    repo = B.make_repo(["scale2x"], "copy")
    flags = ["--allow-shm", "1", "--max-body-bytes", "80M", "--pool-max-slot-bytes", "128M", "--pool-bytes", "2G",
             "--deadline-ms", "0"]
    rng = np.random.default_rng(0)
    files, shm_paths = {}, []
    for size in sizes:
        x = rng.random(size // 4, dtype=np.float32)
        body, ihcl = B.binary_body([("x", x, "FP32")], ["y"])
        files[("http", size)] = (B.write(os.path.join(B.TMP, "copy_%d.body" % size), body), ihcl)
        key = "osv-bench-%d-%d" % (os.getpid(), size)
        for k, data in ((key + "-in", x.tobytes()), (key + "-out", bytes(size))):
            shm_paths.append(B.write("/dev/shm/" + k, data))
        req = {"inputs": [{"name": "x", "shape": [size // 4], "datatype": "FP32",
                           "parameters": {"shared_memory_region": "in", "shared_memory_byte_size": size}}],
               "outputs": [{"name": "y", "parameters": {"shared_memory_region": "out",
                                                        "shared_memory_byte_size": size}}]}
        files[("shm", size)] = (B.write(os.path.join(B.TMP, "copy_shm_%d.json" % size), json.dumps(req).encode()),
                                None, key)
    runs = {}
    try:
        for r in range(ctx.rounds):
            for size in sizes:
                for path, fc in order(variants, r):
                    srv = B.Ortserve(ctx.ortserve, repo, ["--force-copy", str(fc), *flags])
                    try:
                        rss0 = B.rss_kb(srv.pid)
                        f = files[(path, size)]
                        if path == "shm":
                            for region in ("in", "out"):
                                st, b = B.http_post(srv.port, "/v2/systemsharedmemory/region/%s/register" % region,
                                                    json.dumps({"key": f[2] + "-" + region, "offset": 0,
                                                                "byte_size": size}).encode())
                                assert st == 200, b
                        hdrs = {"Inference-Header-Content-Length": str(f[1])} if f[1] is not None else {}
                        with open(f[0], "rb") as fh:
                            body = fh.read()
                        for _ in range(3):  # warm: first touches of the slot pages, ORT's first runs
                            st, b = B.http_post(srv.port, "/v2/models/scale2x/infer", body, hdrs)
                            assert st == 200, b[:300]
                        m0, (flt0, _) = srv.metrics(), B.stat_fields(srv.pid)
                        res = B.wrk(srv.port, "/v2/models/scale2x/infer", f[0], 1, 1 if ctx.quick else secs[size],
                                    f[1], timeout_s=30)
                        m1, (flt1, _) = srv.metrics(), B.stat_fields(srv.pid)
                        # every outcome: a request wrk abandons at the end has still copied its bytes
                        n = B.Ortserve.msum(m1, "ortserve_requests_total") - B.Ortserve.msum(m0, "ortserve_requests_total")
                        copied = {}
                        for (name, labels), v in m1.items():
                            if name == "ortserve_copied_bytes_total":
                                reason = dict(labels)["reason"]
                                copied[reason] = (v - m0.get((name, labels), 0)) / max(1, n)
                        res.update(requests_server=n, copied_per_req=copied,
                                   copied_total_per_req=sum(copied.values()),
                                   minflt_per_req=(flt1 - flt0) / max(1, n), rss_ready_kb=rss0,
                                   hwm_kb=B.hwm_kb(srv.pid), rss_after_kb=B.rss_kb(srv.pid))
                        res["peak_delta_kb"] = res["hwm_kb"] - rss0
                    finally:
                        rc = srv.stop()
                    res["exit"] = rc
                    runs.setdefault("%s/%s/%d" % (path, "forced" if fc else "zero", size), []).append(res)
                    B.log("copy r%d %-4s %-6s %6d KiB: p50 %7d us p99 %7d us copied %10.0f B/req minflt %7.1f/req "
                          "peak +%6.1f MiB" % (r + 1, path, "forced" if fc else "zero", size // KiB, res["p50_us"],
                                               res["p99_us"], res["copied_total_per_req"], res["minflt_per_req"],
                                               res["peak_delta_kb"] / 1024))
    finally:
        for p in shm_paths:
            os.unlink(p)
        for f in files.values():
            os.unlink(f[0])
    return {"sizes": sizes, "seconds": secs, "server_flags": flags, "runs": runs}


# ---- 3/4. load curves with the Node baseline, nginx and the in-process limit ---------------------------------

def load_bodies():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    img = rng.random((1, 3, 224, 224), dtype=np.float32)
    out = {"mlp_json": (B.write(os.path.join(B.TMP, "mlp.json"), B.json_body("x", x)), None)}
    body, h = B.binary_body([("x", x, "FP32")], ["probs"])
    out["mlp_bin"] = (B.write(os.path.join(B.TMP, "mlp.bin"), body), h)
    body, h = B.binary_body([("input", img, "FP32")], ["probs"])
    out["mnv2_bin"] = (B.write(os.path.join(B.TMP, "mnv2.bin"), body), h)
    return out


def bare_rate(ctx, model, threads, seconds):
    """The in-process limit: bare_ort --rate, with the cores other processes kept busy meanwhile."""
    ru0, busy0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), B.machine_busy(), time.monotonic()
    r = subprocess.run([os.path.join(ctx.bench_bin, "bare_ort"), B.ORT_LIB, B.model_file(model), "--rate",
                        str(threads), str(seconds)], capture_output=True, text=True, check=True, timeout=seconds + 60)
    ru1, busy1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), B.machine_busy(), time.monotonic()
    res = json.loads(r.stdout.strip().splitlines()[-1])
    own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res["others_cores"] = max(0.0, ((busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK") - own) / (t1 - t0))
    res["ok_rps"] = res["runs_per_s"]
    return res


def part_load(ctx):
    conns = [1, 16, 64] if ctx.quick else [1, 2, 4, 8, 16, 32, 64]
    bodies = load_bodies()
    repo = B.make_repo(["mlp", "mobilenetv2"], "load")
    servers = {}
    try:
        servers["ortserve"] = B.Ortserve(ctx.ortserve, repo)
        servers["node"] = B.NodeBaseline(repo)
        with open(bodies["mlp_json"][0], "rb") as f:
            st, reply = B.http_post(servers["ortserve"].port, "/v2/models/mlp/infer", f.read())
        assert st == 200, reply
        servers["nginx"] = B.Nginx(reply)  # the same reply, canned: the HTTP limit of this box
        # "bare" is the in-process limit, interleaved like a server: bare_ort --rate on the same model with
        # min(conns, 2) calling threads (the servers run 2 ORT callers at most). mlp_bin shares mlp_json's.
        cases = [("mlp_json", "/v2/models/mlp/infer", ["ortserve", "node", "nginx", "bare"], 1, "mlp"),
                 ("mlp_bin", "/v2/models/mlp/infer", ["ortserve", "node"], 1, "mlp"),
                 ("mnv2_bin", "/v2/models/mobilenetv2/infer", ["ortserve", "node", "bare"], 2, "mobilenetv2")]
        for case, path, variants, _, _ in cases:  # warm-up, not recorded
            for v in variants:
                if v != "bare":
                    B.wrk(servers[v].port, path, bodies[case][0], 16, 1, bodies[case][1])
        runs = {}
        for r in range(ctx.rounds):
            for case, path, variants, secs, model in cases:
                for i, c in enumerate(conns):
                    for v in order(variants, r + i):
                        if v == "bare":
                            res = bare_rate(ctx, model, min(c, 2), 1 if ctx.quick else secs)
                            res.update(rps=res["runs_per_s"], non2xx=0, socket_errors=0, cpu_us_per_req=None,
                                       cpu_us_per_ok=None)
                        else:
                            res = B.wrk_measured(servers[v], path, bodies[case][0], c, 1 if ctx.quick else secs,
                                                 bodies[case][1])
                        runs.setdefault("%s/%s/%d" % (case, v, c), []).append(res)
                        B.log("load r%d %-8s %-8s c=%-2d %8.0f ok/s p50 %7.0f us p99 %7.0f us  non2xx %d err %d  "
                              "cpu %s us/req  others %.2f cores" % (
                                  r + 1, case, v, c, res["ok_rps"], res["p50_us"], res["p99_us"], res["non2xx"],
                                  res["socket_errors"], "%6.1f" % res["cpu_us_per_req"] if res["cpu_us_per_req"]
                                  else "     –", res["others_cores"]))
        mem = {k: s.mem() for k, s in servers.items()}
    finally:
        rcs = {k: s.stop() for k, s in servers.items()}
    return {"conns": conns, "cases": [c[0] for c in cases], "variants": {c[0]: c[2] for c in cases},
            "seconds": {c[0]: c[3] for c in cases}, "models": {c[0]: c[4] for c in cases}, "runs": runs,
            "mem_end": mem,
            "exit": rcs, "reply_bytes": len(reply)}


# ---- RSS over a 60 s run ---------------------------------------------------------------------------------------

def part_rss(ctx):
    seconds = 10 if ctx.quick else 60
    bodies = load_bodies()
    repo = B.make_repo(["mlp", "mobilenetv2"], "rss")
    servers = {}
    series = {"t": [], "ortserve": [], "node": []}
    try:
        servers["ortserve"] = B.Ortserve(ctx.ortserve, repo)
        servers["node"] = B.NodeBaseline(repo)
        idle = {k: s.mem() for k, s in servers.items()}
        env = dict(os.environ, BODY_FILE=bodies["mlp_json"][0], REQ_PATH="/v2/models/mlp/infer", IHCL="")
        procs = {k: subprocess.Popen(["wrk", "-t1", "-c16", "-d%ds" % seconds, "--latency", "-s", B.LUA,
                                      "http://127.0.0.1:%d" % s.port], env=env, stdout=subprocess.PIPE, text=True)
                 for k, s in servers.items()}
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds + 0.5:
            series["t"].append(round(time.monotonic() - t0, 2))
            for k, s in servers.items():
                series[k].append(s.mem())
            time.sleep(1)
        wrk = {}
        for k, p in procs.items():
            out = p.communicate(timeout=60)[0]
            wrk[k] = next((json.loads(line) for line in out.splitlines() if line.startswith("{")), None)
        end = {k: s.mem() for k, s in servers.items()}
    finally:
        rcs = {k: s.stop() for k, s in servers.items()}
    for k in ("ortserve", "node"):
        B.log("rss %-8s idle %.1f MiB, end %.1f MiB (PSS %.1f), max %.1f MiB; %s" % (
            k, idle[k]["rss_kb"] / 1024, end[k]["rss_kb"] / 1024, end[k]["pss_kb"] / 1024,
            max(x["rss_kb"] for x in series[k]) / 1024, wrk[k]))
    return {"seconds": seconds, "load": "MLP JSON, wrk -t1 -c16 against each server at the same time",
            "idle": idle, "end": end, "series": series, "wrk": wrk, "exit": rcs}


# ---- 5. memory limits -----------------------------------------------------------------------------------------

def part_memlimit(ctx):
    limits = [64, 128, 256]
    rng = np.random.default_rng(0)
    img = rng.random((1, 3, 224, 224), dtype=np.float32)
    big = rng.random(MiB // 4, dtype=np.float32)  # 1 MiB in, 1 MiB out per request
    b1, h1 = B.binary_body([("input", img, "FP32")], ["probs"])
    b2, h2 = B.binary_body([("x", big, "FP32")], ["y"])
    loads = [("mnv2_bin_c64", "mobilenetv2", "/v2/models/mobilenetv2/infer",
              B.write(os.path.join(B.TMP, "ml_mnv2.bin"), b1), h1, 64),
             ("scale2x_1MiB_c32", "scale2x", "/v2/models/scale2x/infer",
              B.write(os.path.join(B.TMP, "ml_big.bin"), b2), h2, 32)]
    repos = {m: B.make_repo([m], "ml") for m in ("mobilenetv2", "scale2x")}
    seconds = 2 if ctx.quick else 3
    out = {"machine": Cgroup.describe(), "limits_mb": limits, "loads": [x[0] for x in loads], "runs": {},
           "seconds": seconds}
    try:
        Cgroup(16 * MiB, "probe").remove()
    except (PermissionError, OSError) as e:
        out["unavailable"] = str(e)
        B.log("memlimit: " + str(e))
        return out
    for r in range(ctx.rounds):
        for name, model, path, body, ihcl, conns in loads:
            for mb in order([0] + limits, r):  # 0: no limit, the reference
                cg = Cgroup(mb * MiB, "%s-%d" % (name, mb)) if mb else None
                res = {"cgroup": cg.kind if cg else None}
                srv = None
                try:
                    try:
                        srv = B.Ortserve(ctx.ortserve, repos[model], wrapper=cg.wrapper() if cg else (),
                                         log_level="info")
                    except RuntimeError as e:
                        res.update(start_failed=str(e)[-500:])
                    if srv:
                        for line in srv.log_text().splitlines():
                            if '"event":"listening"' in line:
                                ev = json.loads(line)
                                res.update(pool_bytes=ev["pool_bytes"], pool_max_slot=ev["pool_max_slot"])
                        res["rss_ready_kb"] = B.rss_kb(srv.pid)
                        try:
                            res.update(B.wrk(srv.port, path, body, conns, seconds, ihcl))
                        except (RuntimeError, subprocess.SubprocessError) as e:
                            res["wrk_failed"] = str(e)[-300:]
                        alive = srv.proc.poll() is None
                        res["alive_after_load"] = alive
                        if alive:
                            m = srv.metrics()
                            codes = {}
                            for (n, labels), v in m.items():
                                if n == "ortserve_http_responses_total" and v:
                                    codes[dict(labels)["code"]] = v
                            res["responses_by_code"] = codes
                            res["pool_acquire_failures"] = B.Ortserve.msum(m, "ortserve_pool_acquire_failures_total")
                            res["rss_after_kb"] = B.rss_kb(srv.pid)
                            res["hwm_kb"] = B.hwm_kb(srv.pid)
                finally:
                    if srv:
                        res["exit"] = srv.stop()
                    if cg:
                        res.update(cg.stats())
                        cg.remove()
                    else:
                        res.update(oom_kills=0, peak_bytes=None, failcnt=None)
                out["runs"].setdefault("%s/%d" % (name, mb), []).append(res)
                codes = res.get("responses_by_code", {})
                tot = sum(codes.values())
                B.log("memlimit r%d %-17s %3d MB: pool %s, %s, 503 %.1f%%, p99 %s us, OOM kills %d, exit %s" % (
                    r + 1, name, mb, res.get("pool_bytes"), "alive" if res.get("alive_after_load") else "DEAD",
                    100 * codes.get("503", 0) / tot if tot else float("nan"), res.get("p99_us"), res["oom_kills"],
                    res.get("exit")))
    return out


# ---- 6. start-up and idle RSS ------------------------------------------------------------------------------------

def part_startup(ctx):
    models = ["mlp", "mobilenetv2", "scale2x", "text_orientation"]
    starts = 2 if ctx.quick else 5
    repos = {m: B.make_repo([m], "st") for m in models}
    repos["demo (mlp + mobilenetv2 + text_orientation)"] = B.make_repo(["mlp", "mobilenetv2", "text_orientation"],
                                                                       "st")
    out = {"ortserve": {}, "node": {}, "bare": {}, "starts": starts}
    for r in range(starts):
        for name in order(list(repos), r):
            srv = B.Ortserve(ctx.ortserve, repos[name], log_level="info")
            try:
                internal = None
                for line in srv.log_text().splitlines():
                    if '"event":"listening"' in line:
                        internal = json.loads(line)["startup_ms"]
                time.sleep(0.3)
                res = {"ready_ms": srv.ready_ms, "internal_ms": internal, **srv.mem()}
            finally:
                srv.stop()
            out["ortserve"].setdefault(name, []).append(res)
            if r < (1 if ctx.quick else 3) and name in ("mlp", "mobilenetv2"):
                node = B.NodeBaseline(repos[name])
                try:
                    time.sleep(0.3)
                    res_n = {"ready_ms": node.ready_ms, **node.mem()}
                finally:
                    node.stop()
                out["node"].setdefault(name, []).append(res_n)
    for name in models:
        for _ in range(1 if ctx.quick else 3):
            rr = subprocess.run([os.path.join(ctx.bench_bin, "bare_ort"), B.ORT_LIB, B.model_file(name), "100"],
                                capture_output=True, text=True, check=True)
            out["bare"].setdefault(name, []).append(json.loads(rr.stdout))
    # RSS after load: the MLP server after a 16-connection JSON run vs bare ORT after 100 000 runs.
    # Both broken down by mapping (/proc/PID/smaps), to show where a difference lies.
    bodies = load_bodies()
    after, bare_after = [], []
    for r in range(1 if ctx.quick else 3):
        srv = B.Ortserve(ctx.ortserve, repos["mlp"])
        try:
            time.sleep(0.3)
            idle = B.rss_kb(srv.pid)
            B.wrk(srv.port, "/v2/models/mlp/infer", bodies["mlp_json"][0], 16, 2)
            after.append({"idle_kb": idle, "after_kb": B.rss_kb(srv.pid), "hwm_kb": B.hwm_kb(srv.pid),
                          "smaps": B.smaps_breakdown(srv.pid)})
        finally:
            srv.stop()
        p = subprocess.Popen([os.path.join(ctx.bench_bin, "bare_ort"), B.ORT_LIB, B.model_file("mlp"), "100000",
                              "--hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        res = json.loads(p.stdout.readline())
        res["smaps"] = B.smaps_breakdown(p.pid)
        p.communicate("")
        bare_after.append(res)
    out["mlp_after_load"] = {"ortserve": after, "bare": bare_after}
    # Which of ortserve's shared libraries come with libcurl (the OTLP exporter's HTTP client)?
    curl = next((p for n, p in after[-1]["smaps"].get("paths", {}).items() if n.startswith("libcurl")), None)
    if curl:
        names = B.needed_by(curl)
        # what ortserve's other direct dependencies (readelf NEEDED) load anyway does not count
        direct = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                            subprocess.run(["readelf", "-d", ctx.ortserve], capture_output=True, text=True).stdout)
        where = B.ldd(ctx.ortserve)
        own = set()
        for lib in direct:
            if not lib.startswith("libcurl") and lib in where and os.path.exists(where[lib]):
                own |= B.needed_by(where[lib])
        out["curl_chain"] = {"libcurl": os.path.basename(curl),
                             "libs": sorted((names - own) & set(after[-1]["smaps"]["libs"])),
                             "kb": sum(v for k, v in after[-1]["smaps"]["libs"].items() if k in names and k not in own)}
    for name in repos:
        B.log("startup %-45s ready %.1f ms (internal %s ms), idle RSS %.1f MiB" % (
            name, B.med([x["ready_ms"] for x in out["ortserve"][name]]),
            B.med([x["internal_ms"] for x in out["ortserve"][name]]),
            B.med([x["rss_kb"] for x in out["ortserve"][name]]) / 1024))
    return out


# ---- targets from earlier issues: imaging and observability ----------------------------------------------------

def run_measured(argv):
    """Runs a benchmark program; returns its output and the cores other processes kept busy meanwhile."""
    ru0, busy0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), B.machine_busy(), time.monotonic()
    out = subprocess.run(argv, cwd=B.ROOT, capture_output=True, text=True, check=True).stdout
    ru1, busy1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), B.machine_busy(), time.monotonic()
    own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return out, max(0.0, ((busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK") - own) / (t1 - t0))


def part_targets(ctx):
    out = {}
    argv = [os.path.join(ctx.bench_bin, "imaging_bench"), "--only", "preprocess", "--iters",
            "60" if ctx.quick else "100"]
    out["imaging_preprocess"] = {"command": "build/release/bench/imaging_bench " + " ".join(argv[1:]), "runs": []}
    for r in range(ctx.rounds):  # single-threaded and pinned: other load only adds time, so 3 runs
        B.log("targets: imaging_bench preprocess, run %d" % (r + 1))
        text, others = run_measured(argv)
        out["imaging_preprocess"]["runs"].append({"text": text, "others_cores": others})
    argv = [os.path.join(ctx.bench_bin, "imaging_bench"), "--only", "throughput", "--seconds",
            "1" if ctx.quick else "2", "--conc", "1,2" if ctx.quick else "1,2,4"]
    B.log("targets: imaging_bench throughput")
    out["imaging_classify"] = {"command": "build/release/bench/imaging_bench " + " ".join(
        a if not a.startswith("/") else os.path.relpath(a, B.ROOT) for a in argv[1:]),
        "text": subprocess.run(argv, cwd=B.ROOT, capture_output=True, text=True, check=True).stdout}
    js = os.path.join(B.TMP, "obs.json")
    extra = ["--rounds", "2" if ctx.quick else "6", "--seconds", "2" if ctx.quick else "3"]
    argv = ["/usr/bin/python3", os.path.join(B.ROOT, "bench", "obs_overhead.py"), "--build", ctx.build, *extra,
            "--json", js]
    B.log("targets: obs_overhead.py")
    txt = subprocess.run(argv, cwd=B.ROOT, capture_output=True, text=True, check=True)
    with open(js) as f:
        out["obs"] = json.load(f)
    out["obs"]["command"] = "/usr/bin/python3 bench/obs_overhead.py " + " ".join(extra)
    out["obs"]["text"] = txt.stdout
    return out


# ---- Triton repositories: config.pbtxt and time to ready ------------------------------------------------------

def part_triton(ctx):
    out = {}
    argv = [os.path.join(ctx.bench_bin, "pbtxt_bench"), "--runs", "50" if ctx.quick else "200"]
    B.log("triton: pbtxt_bench")
    out["pbtxt"] = {"command": "build/release/bench/pbtxt_bench " + " ".join(argv[1:]),
                    "text": subprocess.run(argv, cwd=B.ROOT, capture_output=True, text=True, check=True).stdout}
    js = os.path.join(B.TMP, "triton_ready.json")
    rounds = "2" if ctx.quick else "5"
    argv = ["/usr/bin/python3", os.path.join(B.ROOT, "bench", "triton_ready.py"), "--build", ctx.build, "--rounds",
            rounds, "--json", js]
    B.log("triton: triton_ready.py")
    txt = subprocess.run(argv, cwd=B.ROOT, capture_output=True, text=True, check=True).stdout
    with open(js) as f:
        out["ready"] = json.load(f)
    out["ready"]["text"] = txt
    return out


# ---- driver --------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(B.ROOT, "build", "release"))
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ",".join(PARTS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 round, fewer points: a smoke run")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate docs/BENCHMARKS.md")
    args = ap.parse_args()
    parts = [p for p in args.only.split(",") if p]
    for p in parts:
        if p not in PARTS:
            ap.error("unknown part %r (parts: %s)" % (p, ", ".join(PARTS)))
    ctx = Ctx(args)
    os.makedirs(B.TMP, exist_ok=True)
    for stale in glob.glob(os.path.join(B.TMP, "*")):  # leftovers of an interrupted run
        shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else os.unlink(stale)
    machine = B.machine_info(ctx.build)
    t_all = time.monotonic()
    for p in parts:
        B.log("== part %s ==" % p)
        t0 = time.monotonic()
        busy0 = B.machine_busy()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        data = globals()["part_" + p](ctx)
        busy1 = B.machine_busy()
        res = {"part": p, "command": ctx.cmd(p), "quick": ctx.quick, "rounds": ctx.rounds, "started": started,
               "seconds": round(time.monotonic() - t0, 1), "machine": machine,
               "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
               "loadavg_end": open("/proc/loadavg").read().split()[:3], "data": data}
        with open(os.path.join(B.OUT, p + ".json"), "w") as f:
            json.dump(res, f, indent=1)
        B.log("== part %s: %.0f s ==" % (p, res["seconds"]))
    shutil.rmtree(B.TMP, ignore_errors=True)
    B.log("all parts: %.0f s" % (time.monotonic() - t_all))
    if not args.no_report:
        subprocess.run(["/usr/bin/python3", os.path.join(B.ROOT, "bench", "report.py")], check=True)


if __name__ == "__main__":
    main()
