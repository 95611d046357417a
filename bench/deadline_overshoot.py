#!/usr/bin/python3
"""deadline_overshoot.py — how late a 504 reaches the client after the request's deadline
(docs/RELIABILITY.md, "Deadlines"): the distribution behind DEADLINE_SLACK in
tests/e2e/test_server_lifecycle.py. Figures only: nothing is asserted.

Every time is taken from just before the request's first byte is sent (the server's deadline starts
at that byte or later), on a fresh connection, against slow.onnx (a loop whose length is its input
`iters`) with one worker and every run on it:

  run    a run that would take hours, with a 100 ms deadline: 504 arrival - 100 ms;
  free   the next request on the same connection, a 10-iteration run: how soon the worker is free;
  queued a holder with a 1 s deadline, then a request with 100 ms queued behind it: its 504 arrives
         when the holder is canceled, so arrival - 1 s from the holder's start (one loop, no server
         default deadline, a fresh server each time so admission has no run-time estimate yet).

    /usr/bin/python3 bench/deadline_overshoot.py [--build build/release] [--servers 3] [--runs 200]
                                                 [--queued 30] [--json FILE]

About 1.5 minutes with the defaults. Load the machine from outside to see the tail move (the figures
in docs/RELIABILITY.md were taken with and without two extra busy processes).
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))


def slow_request(request_bytes, iters, timeout_ms):
    x = [((i * 37) % 200 - 100) / 100.0 for i in range(256)]
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": x},
                                  {"name": "iters", "shape": [], "datatype": "INT64", "data": [int(iters)]}]})
    return request_bytes("POST", "/v2/models/slow/infer", body.encode(), [("Ortserve-Timeout-Ms", str(timeout_ms))])


def summary(v):
    v = sorted(v)
    q = lambda p: v[min(len(v) - 1, int(p * len(v)))]  # noqa: E731
    return "n=%4d  p50 %6.1f  p90 %6.1f  p99 %6.1f  max %6.1f ms" % (len(v), q(.5), q(.9), q(.99), v[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--servers", type=int, default=3, help="servers for the run/free measurements")
    ap.add_argument("--runs", type=int, default=200, help="canceled runs per server")
    ap.add_argument("--queued", type=int, default=30, help="queued-request measurements (a server each)")
    ap.add_argument("--json", help="write the raw overshoots (ms) here")
    a = ap.parse_args()
    os.environ["OSV_BINARY_DIR"] = a.build
    from server import RawConn, Server, make_repo, request_bytes, server_consumed, wait_until

    res = {"run": [], "free": [], "queued": []}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(tmp, {"slow": "slow.onnx"})
        for _ in range(a.servers):
            srv = Server(repo, "--inline-threshold-us", "0", "--workers", "1")
            try:
                for _ in range(a.runs):
                    with RawConn(srv.port) as c:
                        t0 = time.monotonic()
                        c.send(slow_request(request_bytes, 10 ** 12, 100))
                        r = c.read_response()
                        res["run"].append((time.monotonic() - t0) * 1000 - 100)
                        assert r.status == 504, r
                        c.send(slow_request(request_bytes, 10, 0))
                        t0 = time.monotonic()
                        r = c.read_response()
                        res["free"].append((time.monotonic() - t0) * 1000)
                        assert r.status == 200, r
            finally:
                srv.finish()
        for _ in range(a.queued):
            srv = Server(repo, "--inline-threshold-us", "0", "--workers", "1", "--loops", "1", "--deadline-ms", "0")
            try:
                t0 = time.monotonic()
                with RawConn(srv.port, timeout=60) as holder:
                    holder.send(slow_request(request_bytes, 10 ** 12, 1000))
                    wait_until(lambda: server_consumed(srv.port, holder.sock), 20, "the server to read the holder")
                    with RawConn(srv.port) as c:
                        c.send(slow_request(request_bytes, 10, 100))
                        r = c.read_response()
                        res["queued"].append((time.monotonic() - t0) * 1000 - 1000)
                        assert r.status == 504 and "queued too long" in r.json()["error"], r
                    assert holder.read_response().status == 504
            finally:
                srv.finish()
    print("%s, load average %.1f -> %.1f" % (a.build, load0, os.getloadavg()[0]))
    for k, v in res.items():
        if v:
            print("  %-6s %s" % (k, summary(v)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
