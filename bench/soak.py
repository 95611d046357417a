#!/usr/bin/python3
"""soak.py — a long run at ~80 % of measured capacity (docs/RELIABILITY.md, "Soak"): errors and
memory drift. Figures only: nothing is asserted.

The server serves mobilenetv2 (binary FP32 [1,3,224,224], on the workers) and mlp (JSON [1,64],
inline on the loops), with its defaults (one loop and one worker per core, access log on — to
/dev/null). The traffic is 80 % mobilenetv2, 20 % mlp, each response checked against the first
answer to the same input (inputs are drawn from 16 fixed ones).
  1. capacity: --clients connections back to back for --capacity-s seconds -> requests/s;
  2. soak: an open-loop stream at --load (0.8) x capacity for --seconds (600), RSS sampled every
     5 s; the start RSS is taken after --warmup-s (60) seconds, the end RSS at the end;
  3. report: requests, errors (any status but 200, wrong answer, connection error), latency
     p50/p99 per minute, RSS at start/end/max and the drift (end - start) / start.

    /usr/bin/python3 bench/soak.py [--build build/release] [--seconds 600] [--load 0.8]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(loadgen.ROOT, "build", "release"))
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--warmup-s", type=float, default=60)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--capacity-s", type=float, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()

    rng = np.random.default_rng(2025)
    reqs = []
    for i in range(16):
        if i % 5 == 4:
            x = rng.standard_normal((1, 64)).astype(np.float32)
            reqs.append(("mlp", loadgen.json_request("/v2/models/mlp/infer", {"inputs": [
                {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [float(v) for v in x.ravel()]}]})))
        else:
            img = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
            reqs.append(("mobilenetv2", loadgen.binary_request("/v2/models/mobilenetv2/infer", {
                "inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                            "parameters": {"binary_data_size": img.nbytes}}],
                "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}, [img.tobytes()])))
    srv = loadgen.Server(os.path.join(a.build, "ortserve"), {"mlp": "mlp.onnx", "mobilenetv2": "mobilenetv2.onnx"},
                         ["--deadline-ms", "0"])
    # Every response is compared with the first answer to the same request (bit-identical outputs).
    expected = {}
    for i, (kind, req) in enumerate(reqs):
        st, _, body = srv.exchange(req)
        assert st == 200, body[:300]
        expected["%s#%d" % (kind, i)] = body

    def pick(i):
        k = i % len(reqs)
        return "%s#%d" % (reqs[k][0], k), reqs[k][1]

    def check(kind, body):
        return None if body == expected[kind] else "wrong answer"

    t0 = time.monotonic()
    cap = loadgen.closed_loop(srv.port, pick, a.clients, a.capacity_s, check=check)
    capacity = sum(r.status == 200 and not r.error for r in cap) / a.capacity_s
    rate = a.load * capacity
    print("capacity: %.1f requests/s (%d clients, %.0f s, errors %d); soak at %.1f requests/s for %.0f s" % (
        capacity, a.clients, a.capacity_s, sum(r.status != 200 for r in cap), rate, a.seconds), flush=True)

    samples = []  # (elapsed s, rss kB)

    def tick(elapsed):
        samples.append((elapsed, loadgen.rss_kb(srv.proc.pid)))
        print("  t=%5.0fs rss=%d kB" % samples[-1], flush=True)

    res = loadgen.open_loop(srv.port, pick, rate, a.seconds, connections=32, check=check, on_tick=tick)
    samples.append((a.seconds, loadgen.rss_kb(srv.proc.pid)))
    rc = srv.stop()

    errors = [r for r in res if r.status != 200 or r.error]
    start = next((s for s in samples if s[0] >= a.warmup_s), samples[0])
    end = samples[-1]
    drift = 100.0 * (end[1] - start[1]) / start[1]
    per_min = {}
    for r in res:
        per_min.setdefault(int((r.due - res[0].due) // 60) if res else 0, []).append(r.latency)
    print("\n| requests | errors | p50 ms | p99 ms | generator late p99 ms | RSS start (t=%.0fs) | RSS end | RSS max | drift |"
          % start[0])
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lat = [r.latency for r in res if r.status == 200]
    print("| %d | %d | %.1f | %.1f | %.1f | %.1f MiB | %.1f MiB | %.1f MiB | %+.2f %% |" % (
        len(res), len(errors), 1e3 * loadgen.pct(lat, 50), 1e3 * loadgen.pct(lat, 99),
        1e3 * loadgen.pct([r.sent - r.due for r in res], 99), start[1] / 1024, end[1] / 1024,
        max(s[1] for s in samples) / 1024, drift))
    print("\nper minute: " + ", ".join("%d: p99 %.0f ms" % (m, 1e3 * loadgen.pct(v, 99)) for m, v in sorted(per_min.items())))
    if errors:
        print("first errors: %r" % [(r.kind, r.status, r.error) for r in errors[:5]])
    print("server exit status %d; total %.0f s" % (rc, time.monotonic() - t0))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"capacity_rps": capacity, "rate_rps": rate, "requests": len(res), "errors": len(errors),
                       "rss_samples_kb": samples, "drift_pct": drift, "exit": rc}, f, indent=1)


if __name__ == "__main__":
    main()
