#!/usr/bin/python3
"""overload.py — latency of admitted requests when ortserve is offered 10x its capacity
(docs/RELIABILITY.md, "Overload"). Figures only: nothing is asserted.

The model is slow.onnx with its loop count set for ~--run-ms per run, served by --workers W (default 1)
with the run on a worker. For each queue bound Q in --queues:
  1. unloaded: one client, requests back to back -> p50/p99 (the reference);
  2. capacity: W clients back to back for a few seconds -> requests/s;
  3. overload: an open-loop stream at 10x that capacity for --seconds -> how many were admitted
     (200) and refused (503 + Retry-After), the admitted requests' p50/p99 (from sending to the last
     byte of the answer) and the ratio admitted p99 / unloaded p99; how late the generator sent
     (p99, its own CPU starvation on a shared machine) is shown next to it.
The queue bound decides the ratio: an admitted request waits for at most ceil(Q/W) runs ahead of it,
so Q <= W bounds an admitted request to about two run times. There are always more connections than
the server admits (Q + W + 64), so the excess is refused rather than held back by the generator.

    /usr/bin/python3 bench/overload.py [--build build/release] [--workers 1] [--run-ms 50]
                                       [--queues 1,4,64] [--rounds 3] [--seconds 20] [--factor 10]

Each queue bound gets a fresh server per round; rounds are interleaved (1,4,64 then 64,4,1 ...) and
the table gives medians (the ratio's min..max too). About 8 minutes with the defaults.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen  # noqa: E402


def slow_request(iters):
    x = [((i * 37) % 200 - 100) / 100.0 for i in range(256)]
    return loadgen.json_request("/v2/models/slow/infer", {
        "inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": x},
                   {"name": "iters", "shape": [], "datatype": "INT64", "data": [int(iters)]}]})


def calibrate(srv, run_ms):
    conn = loadgen.Conn(srv.port)
    best = None
    for _ in range(5):
        t0 = time.monotonic()
        st, _, _ = conn.send(slow_request(4000))
        dt = time.monotonic() - t0
        assert st == 200
        best = dt if best is None else min(best, dt)
    conn.close()
    return max(10, int(4000 * run_ms / 1000.0 / best))


def measure(binary, a, q, iters):
    """One round for queue bound q: unloaded, capacity, overload. Returns a row."""
    srv = loadgen.Server(binary, {"slow": "slow.onnx"}, ["--workers", str(a.workers), "--max-queue", str(q),
                                                         "--deadline-ms", "0", "--inline-threshold-us", "0",
                                                         "--access-log", "0", "--retry-after-s", "1"])
    try:
        req = slow_request(iters)
        pick = lambda i: ("slow", req)  # noqa: E731
        loadgen.closed_loop(srv.port, pick, 1, 1)  # warm-up
        un = [r.done - r.sent for r in loadgen.closed_loop(srv.port, pick, 1, a.unloaded_s) if r.status == 200]
        cap_runs = loadgen.closed_loop(srv.port, pick, a.workers, 6)
        capacity = sum(r.status == 200 for r in cap_runs) / 6.0
        rate = a.factor * capacity
        res = loadgen.open_loop(srv.port, pick, rate, a.seconds, connections=q + a.workers + 64)
    finally:
        rc = srv.stop()
        if rc != 0:
            print("ortserve exited with %d" % rc, file=sys.stderr)
    ok = [r.done - r.sent for r in res if r.status == 200]
    refused = [r for r in res if r.status == 503]
    row = {"queue": q, "unloaded_p50_ms": 1e3 * loadgen.pct(un, 50), "unloaded_p99_ms": 1e3 * loadgen.pct(un, 99),
           "capacity_rps": capacity, "offered_rps": rate, "requests": len(res), "admitted": len(ok),
           "refused_503": len(refused), "other": sum(r.status not in (200, 503) for r in res),
           "refused_with_retry_after": sum(r.retry_after == "1" for r in refused),
           "admitted_p50_ms": 1e3 * loadgen.pct(ok, 50), "admitted_p99_ms": 1e3 * loadgen.pct(ok, 99),
           "refused_p99_ms": 1e3 * loadgen.pct([r.done - r.sent for r in refused], 99),
           "generator_late_p99_ms": 1e3 * loadgen.pct([r.sent - r.due for r in res], 99)}
    row["p99_ratio"] = row["admitted_p99_ms"] / row["unloaded_p99_ms"]
    print("  round: --max-queue %d: unloaded p99 %.1f ms, admitted p99 %.1f ms (x%.2f), %d admitted, %d refused" %
          (q, row["unloaded_p99_ms"], row["admitted_p99_ms"], row["p99_ratio"], len(ok), len(refused)), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(loadgen.ROOT, "build", "release"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--run-ms", type=float, default=50)
    ap.add_argument("--queues", default="1,4,64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--unloaded-s", type=float, default=15)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--factor", type=float, default=10)
    ap.add_argument("--json")
    a = ap.parse_args()
    binary = os.path.join(a.build, "ortserve")
    queues = [int(v) for v in a.queues.split(",")]
    srv = loadgen.Server(binary, {"slow": "slow.onnx"}, ["--workers", str(a.workers), "--deadline-ms", "0",
                                                         "--inline-threshold-us", "0", "--access-log", "0"])
    try:
        iters = calibrate(srv, a.run_ms)
    finally:
        srv.stop()
    rows = {q: [] for q in queues}
    for rnd in range(a.rounds):  # interleaved: the machine is shared, conditions drift
        for q in (queues if rnd % 2 == 0 else queues[::-1]):
            rows[q].append(measure(binary, a, q, iters))
    med = statistics.median
    print("\nslow.onnx ~%.0f ms/run (%d loop iterations), %d worker(s), offered %.0fx capacity for %.0f s; "
          "medians of %d interleaved rounds\n" % (a.run_ms, iters, a.workers, a.factor, a.seconds, a.rounds))
    print("| --max-queue | unloaded p50 / p99 ms | capacity rps | offered rps | admitted | 503 (with Retry-After) "
          "| other | admitted p50 / p99 ms | admitted p99 / unloaded p99 (min..max) | 503 p99 ms | generator late p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for q in queues:
        rs = rows[q]
        m = {k: med([r[k] for r in rs]) for k in rs[0] if k != "queue"}
        ratios = [r["p99_ratio"] for r in rs]
        print("| %d | %.1f / %.1f | %.1f | %.0f | %d | %d (%d) | %d | %.1f / %.1f | %.2f (%.2f..%.2f) | %.1f | %.1f |" % (
            q, m["unloaded_p50_ms"], m["unloaded_p99_ms"], m["capacity_rps"], m["offered_rps"], m["admitted"],
            m["refused_503"], m["refused_with_retry_after"], m["other"], m["admitted_p50_ms"], m["admitted_p99_ms"],
            med(ratios), min(ratios), max(ratios), m["refused_p99_ms"], m["generator_late_p99_ms"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)

if __name__ == "__main__":
    main()
