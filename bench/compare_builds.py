#!/usr/bin/python3
"""compare_builds.py — the load and copy figures of two builds of ortserve side by side, interleaved:
is a refactor free? (Issue 14 asked this of the pipeline split; any later refactor can ask it again.)

    /usr/bin/python3 bench/compare_builds.py --base DIR [--build build/release] [--rounds 5] [--out FILE]

--base is the build directory of the commit before the change (e.g. a `git worktree` of it built with
`make build`), --build the one after. Cases, each a fresh server per build per round, variants in
order A B in even rounds and B A in odd ones (the machine is shared and drifts):

  mlp_json c1/c16/c64    KServe v2 JSON, MLP x FP32[1,64]        (run_all.py's `load` part)
  mlp_bin  c16/c64       the binary extension, same model
  mnv2_bin c1/c16        MobileNetV2-shaped FP32[1,3,224,224] binary, 602 KB in
  copy_64k / copy_4m c1  scale2x binary, 64 KiB and 4 MiB each way  (run_all.py's `copy` part)

Per case: median ok/s, p50 and p99 (wrk), server CPU µs per request, bytes the server copied per
request (its own ortserve_copied_bytes_total), and the median of per-round after/before ratios of
ok/s. Prints a markdown table; --out also writes it (bench/compare/RESULTS.md by convention).
Figures only: nothing is asserted."""
import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import benchlib as B  # noqa: E402
from run_all import load_bodies  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20


def copy_bodies():
    out = {}
    rng = np.random.default_rng(0)
    for name, size in (("copy_64k", 64 * KiB), ("copy_4m", 4 * MiB)):
        x = rng.random(size // 4, dtype=np.float32)
        body, ihcl = B.binary_body([("x", x, "FP32")], ["y"])
        out[name] = (B.write(os.path.join(B.TMP, "cmp_%s.body" % name), body), ihcl)
    return out


def cases(quick):
    secs = 1 if quick else 2
    return [("mlp_json", "mlp", 1, secs), ("mlp_json", "mlp", 16, secs), ("mlp_json", "mlp", 64, secs),
            ("mlp_bin", "mlp", 16, secs), ("mlp_bin", "mlp", 64, secs),
            ("mnv2_bin", "mobilenetv2", 1, secs), ("mnv2_bin", "mobilenetv2", 16, secs),
            ("copy_64k", "scale2x", 1, secs), ("copy_4m", "scale2x", 1, secs)]


def measure(binary, repo, body, model, conns, secs):
    srv = B.Ortserve(binary, repo)
    try:
        path = "/v2/models/%s/infer" % model
        B.wrk(srv.port, path, body[0], min(conns, 16), 1, body[1])  # warm: slot pages, ORT's first runs
        m0 = srv.metrics()
        res = B.wrk_measured(srv, path, body[0], conns, secs, body[1])
        m1 = srv.metrics()
        n = B.Ortserve.msum(m1, "ortserve_requests_total") - B.Ortserve.msum(m0, "ortserve_requests_total")
        copied = B.Ortserve.msum(m1, "ortserve_copied_bytes_total") - B.Ortserve.msum(m0, "ortserve_copied_bytes_total")
        res["copied_per_req"] = copied / max(1, n)
    finally:
        res_exit = srv.stop()
    res["exit"] = res_exit
    return res


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def table(runs, labels):
    rows = ["| case | conns | ok/s before | ok/s after | after/before (median of rounds) | p50 µs before → after | "
            "p99 µs before → after | CPU µs/req before → after | copied B/req before → after |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, per in runs.items():
        a, b = per[labels[0]], per[labels[1]]
        ratio = med([y["ok_rps"] / x["ok_rps"] for x, y in zip(a, b) if x["ok_rps"] > 0])
        case, conns = key
        rows.append("| %s | %d | %.0f | %.0f | **%.3f** | %.0f → %.0f | %.0f → %.0f | %.1f → %.1f | %.0f → %.0f |" % (
            case, conns, med([x["ok_rps"] for x in a]), med([x["ok_rps"] for x in b]), ratio,
            med([x["p50_us"] for x in a]), med([x["p50_us"] for x in b]),
            med([x["p99_us"] for x in a]), med([x["p99_us"] for x in b]),
            med([x["cpu_us_per_req"] for x in a]), med([x["cpu_us_per_req"] for x in b]),
            med([x["copied_per_req"] for x in a]), med([x["copied_per_req"] for x in b])))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="build directory of the commit before the change")
    ap.add_argument("--build", default=os.path.join(B.ROOT, "build", "release"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 round, 1 s per point: a smoke run")
    ap.add_argument("--out", help="also write the table (markdown) here")
    ap.add_argument("--cases", help="only these cases, comma-separated (e.g. copy_64k,mlp_json)")
    a = ap.parse_args()
    rounds = 1 if a.quick else a.rounds
    os.makedirs(B.TMP, exist_ok=True)
    builds = {"before": os.path.join(os.path.abspath(a.base), "ortserve"),
              "after": os.path.join(os.path.abspath(a.build), "ortserve")}
    bodies = dict(load_bodies(), **copy_bodies())
    repo = B.make_repo(["mlp", "mobilenetv2", "scale2x"], "cmp")
    runs = {}
    for r in range(rounds):
        for case, model, conns, secs in cases(a.quick):
            if a.cases and case not in a.cases.split(","):
                continue
            for label in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
                res = measure(builds[label], repo, bodies[case], model, conns, secs)
                runs.setdefault((case, conns), {"before": [], "after": []})[label].append(res)
                B.log("cmp r%d %-8s c=%-2d %-6s %8.0f ok/s p50 %6.0f us p99 %7.0f us cpu %6.1f us/req copied %8.0f B/req "
                      "others %.2f cores" % (r + 1, case, conns, label, res["ok_rps"], res["p50_us"], res["p99_us"],
                                             res["cpu_us_per_req"], res["copied_per_req"], res["others_cores"]))
    cmd = "/usr/bin/python3 bench/compare_builds.py --base %s --build %s --rounds %d" % (
        os.path.relpath(os.path.abspath(a.base), B.ROOT), os.path.relpath(os.path.abspath(a.build), B.ROOT), rounds)
    text = ("Command: `%s`. %d rounds, a fresh server per build per point, builds interleaved (A B, then B A); "
            "medians.\n\n%s\n" % (cmd, rounds, table(runs, ("before", "after"))))
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
