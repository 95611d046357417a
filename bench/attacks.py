#!/usr/bin/python3
"""attacks.py — the figures of docs/RELIABILITY.md, "The adversarial review": each attack of issue 13
that the HTTP layer answers, run against one build and measured (no assertions: those are
tests/e2e/test_server_hardening.py). Run it against two builds to compare:

  /usr/bin/python3 bench/attacks.py [--build build/release] [--parts all|slot,inputs,...]

Parts:
  slot      a JSON BYTES input ending a 64-byte range with an escaped string, beside an FP32 input: x[0]
  inputs    300 keep-alive connections, each sending "inputs": [{}, ... 17 000]: status, RSS held
  heads     3000 connections holding an unfinished 15 KB head (--max-connections 4000), then closed:
            RSS at the peak and 3 s after
  vanish    100 clients send a head and 1 KB of a 1 MiB raw tensor and close at once: time until the
            pool holds nothing (bounded at 40 s)
  trickle   as many chunked bodies trickling as the 64 MiB class has slots, then a 16 MiB request
  deflate   four deflate bodies inflating to 64 MiB on one loop: worst health-probe latency meanwhile
  deadline  "timeout": 18446744073709551 (µs) and Ortserve-Timeout-Ms: 18446744073709 on scale2x
  classify  "classification": 1000000 on mlp's 10 classes
  flood     (root + memory cgroup) 4090 connections with unfinished 15 KB heads in groups of 64, 128 and
            256 MB (headroom over the idle server as for the release build): OOM kills, inference after
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
MiB = 1 << 20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build", "release"))
    ap.add_argument("--parts", default="all")
    a = ap.parse_args()
    os.environ["OSV_BINARY_DIR"] = os.path.abspath(a.build)
    os.environ.setdefault("OSV_TEST_MODELS", os.path.join(HERE, "..", "var", "models"))
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 9000)), hard))
    import test_server_hardening as H  # noqa: E402 (reads OSV_BINARY_DIR at import)
    from server import RawConn, Server, make_repo, request_bytes  # noqa: E402
    parts = set(a.parts.split(",")) if a.parts != "all" else None
    want = lambda p: parts is None or p in parts  # noqa: E731
    tmp = tempfile.mkdtemp(prefix="osv-attacks-")
    repo = make_repo(tmp, {"bytes_fp32": "bytes_fp32.onnx", "scale2x": "scale2x.onnx", "mlp": "mlp.onnx"})
    print("build: %s" % a.build)

    def serve(*args):
        return Server(repo, *args)

    if want("slot"):
        with serve() as srv:
            req = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.1]},
                              {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\u00e9" * 30]}]}
            st, body = srv.json("POST", "/v2/models/bytes_fp32/infer", json.dumps(req))
            x = {o["name"]: o["data"] for o in body["outputs"]}["x_out"][0] if st == 200 else body
            print("slot: status %d, x sent 0.1, x received %r" % (st, x))

    if want("inputs"):
        with serve() as srv:
            body = b'{"inputs": [' + b",".join([b"{}"] * 17000) + b"]}"
            before = H.rss(srv)
            conns = [RawConn(srv.port) for _ in range(300)]
            for c in conns:
                c.send(request_bytes("POST", "/v2/models/scale2x/infer", body))
            statuses = {c.read_response().status for c in conns}
            held = H.rss(srv)
            for c in conns:
                c.close()
            time.sleep(3)  # what stays after the connections closed (a measurement interval)
            print("inputs: statuses %s; RSS %.0f MiB before, %.0f MiB with 300 connections open, %.0f MiB 3 s "
                  "after they closed" % (sorted(statuses), before / MiB, held / MiB, H.rss(srv) / MiB))

    if want("heads"):
        with serve("--max-connections", "4000") as srv:
            idle = H.rss(srv)
            head = b"POST /v2/models/scale2x/infer HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (15 << 10)
            conns = []
            for _ in range(3000):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(head)
                conns.append(s)
            time.sleep(1)  # let the server read them all (a measurement interval)
            peak = H.rss(srv)
            for s in conns:
                s.close()
            time.sleep(3)
            print("heads: RSS %.0f MiB idle, %.0f MiB holding 3000 heads, %.0f MiB 3 s after they closed" %
                  (idle / MiB, peak / MiB, H.rss(srv) / MiB))

    if want("vanish"):
        with serve() as srv:
            head = request_bytes("POST", "/v2/models/scale2x/infer", b"",
                                 [("Content-Length", str(MiB)), ("Inference-Header-Content-Length", "0")],
                                 content_length=False)
            for _ in range(100):
                s = socket.create_connection(("127.0.0.1", srv.port))
                s.sendall(head + b"\0" * 1024)
                s.close()
            t0 = time.monotonic()
            while H.pool_in_use(srv) and time.monotonic() - t0 < 40:
                time.sleep(0.005)
            left = H.pool_in_use(srv)
            print("vanish: 100 aborted 1 MiB bodies: pool in use %s %.3f s after the last close" %
                  ("empty" if not left else "still %.0f MiB" % (left / MiB), time.monotonic() - t0))

    if want("trickle"):
        with serve("--deadline-ms", "0") as srv:
            big = 64 * MiB
            n = int(H.metric(srv, "ortserve_pool_slots", {"slot_bytes": str(big), "state": "free"}))
            tr = []
            for _ in range(n + 2):
                c = RawConn(srv.port)
                c.send(request_bytes("POST", "/v2/models/scale2x/infer", b"10\r\n{\"inputs\"",
                                     [("Transfer-Encoding", "chunked")], content_length=False))
                tr.append(c)
            time.sleep(0.5)
            held = H.metric(srv, "ortserve_pool_slots", {"slot_bytes": str(big), "state": "in_use"})
            x = np.arange(4 * MiB, dtype=np.float32)
            with RawConn(srv.port) as c:
                c.send(request_bytes("POST", "/v2/models/scale2x/infer", x.tobytes(),
                                     [("Inference-Header-Content-Length", "0")]))
                st = c.read_response().status
            for c in tr:
                c.close()
            print("trickle: %d chunked tricklers hold %d of the %d 64 MiB slots; a 16 MiB request beside them: %d"
                  % (n + 2, held, n, st))

    if want("deflate"):
        with serve("--loops", "1", "--workers", "2", "--deadline-ms", "0") as srv:
            raw = zlib.compress(b"\0" * (64 * MiB - 1), 9)
            worst = [0.0]

            def send():
                with RawConn(srv.port, timeout=120) as c:
                    c.send(request_bytes("POST", "/v2/models/scale2x/infer", raw,
                                         [("Content-Encoding", "deflate"), ("Inference-Header-Content-Length", "0")]))
                    c.read_response()
            threads = [threading.Thread(target=send) for _ in range(4)]
            with RawConn(srv.port) as probe:
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    t0 = time.monotonic()
                    probe.send(request_bytes("GET", "/v2/health/live"))
                    probe.read_response()
                    worst[0] = max(worst[0], time.monotonic() - t0)
            print("deflate: four %d-byte bodies inflating to 64 MiB: worst health probe %.0f ms" %
                  (len(raw), worst[0] * 1e3))

    if want("deadline"):
        with serve() as srv:
            for hdr, params in (({}, {"timeout": 18446744073709551}), ({"Ortserve-Timeout-Ms": "18446744073709"}, {})):
                req = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
                if params:
                    req["parameters"] = params
                st, _, _ = srv.request("POST", "/v2/models/scale2x/infer", json.dumps(req), hdr)
                print("deadline: %s: %d" % (params or hdr, st))

    if want("classify"):
        with serve() as srv:
            req = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}],
                   "outputs": [{"name": "probs", "parameters": {"classification": 1000000}}]}
            st, body = srv.json("POST", "/v2/models/mlp/infer", req)
            print("classify: classification 1000000 of 10 classes: %d %s" %
                  (st, body.get("error") or "%d entries" % len(body["outputs"][0]["data"])))

    if want("flood"):
        import cgroup_support
        why = cgroup_support.available()
        if why:
            print("flood: skipped (%s)" % why)
        else:
            probe = serve()
            idle = H.rss(probe)
            probe.finish()
            head = b"POST /v2/models/scale2x/infer HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (15 << 10)
            for mb in (64, 128, 256):
                cg = cgroup_support.Cgroup(idle + (mb - 27) * MiB, "attacks-%d" % mb)
                srv = Server(repo, preexec_fn=cg.enter)
                conns = []
                try:
                    for _ in range(4090):
                        try:
                            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                            s.sendall(head)
                            conns.append(s)
                        except OSError:
                            pass
                    alive = srv.proc.poll() is None
                    for s in conns:
                        s.close()
                    t0, st = time.monotonic(), None
                    while alive and time.monotonic() - t0 < 60:
                        st = srv.request("POST", "/v2/models/scale2x/infer", json.dumps(
                            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}))[0]
                        if st == 200:
                            break
                        time.sleep(0.05)
                    print("flood %d MB: %s; OOM kills %d; first inference 200 %s" % (
                        mb, "alive" if alive else "killed (exit %s)" % srv.proc.returncode, cg.oom_kills(),
                        "%.2f s after the flood" % (time.monotonic() - t0) if st == 200 else "never (60 s)"))
                finally:
                    for s in conns:
                        s.close()
                    if srv.proc.poll() is None:
                        srv.finish()
                    cg.remove()


if __name__ == "__main__":
    main()
