#!/usr/bin/env python3
"""Turn results/raw.tsv (+ functest.txt) into the markdown tables of RESULTS.md.

Usage: report.py RAW_TSV [FUNCTEST_TXT]
Medians over rounds; ratios are candidate median / nginx median for the same
connection count, measured in the same run.
"""
import statistics
import sys
from collections import defaultdict

NAMES = {
    "nginx": "E nginx 1.22 (baseline)",
    "A": "A epoll + http-parser 2.9",
    "B": "B libevent 2.1 evhttp",
    "C": "C h2o 2.2.5 evloop",
    "D": "D libmicrohttpd 0.9.75",
}
ORDER = [("nginx", 1), ("A", 1), ("B", 1), ("C", 1), ("D", 1), ("A", 2), ("B", 2), ("C", 2), ("D", 2)]


def main():
    runs = defaultdict(list)
    with open(sys.argv[1]) as f:
        next(f)
        for line in f:
            r, cand, t, c, rps, p50, p99, err = line.split("\t")
            runs[(cand, int(t), int(c))].append((float(rps), int(p50), int(p99), int(err)))

    def med(key, i):
        return statistics.median(x[i] for x in runs[key])

    print("| candidate | threads | conns | rps (median) | rps min–max | p50 µs | p99 µs | rps ÷ nginx | p99 ÷ nginx | runs | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for conns in sorted({k[2] for k in runs}):
        base = ("nginx", 1, conns)
        for cand, t in ORDER:
            key = (cand, t, conns)
            if key not in runs:
                continue
            rps, p50, p99 = med(key, 0), med(key, 1), med(key, 2)
            lo, hi = min(x[0] for x in runs[key]), max(x[0] for x in runs[key])
            ratio = rps / med(base, 0) if base in runs else float("nan")
            p99r = p99 / med(base, 2) if base in runs else float("nan")
            errs = sum(x[3] for x in runs[key])
            print("| %s | %d | %d | %.0f | %.0f–%.0f | %.0f | %.0f | %.2f | %.2f | %d | %d |" % (
                NAMES[cand], t, conns, rps, lo, hi, p50, p99, ratio, p99r, len(runs[key]), errs))

    if len(sys.argv) > 2:
        rows = []
        try:
            with open(sys.argv[2]) as f:
                rows = [line.split() for line in f if line.startswith("SUMMARY")]
        except OSError:
            pass
        if rows:
            checks = [kv.split("=")[0] for kv in rows[0][2:-1]]
            print()
            print("| candidate | " + " | ".join(checks) + " | user-space KiB per idle keep-alive conn |")
            print("|---|" + "---|" * len(checks) + "---:|")
            for r in rows:
                kv = dict(x.split("=") for x in r[2:])
                print("| %s | %s | %s |" % (NAMES.get(r[1], r[1]), " | ".join(kv[c] for c in checks),
                                            kv["mem_kib_per_conn"]))


if __name__ == "__main__":
    main()
