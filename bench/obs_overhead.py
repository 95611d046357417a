#!/usr/bin/python3
"""obs_overhead.py — what observability costs in throughput: the MLP JSON request (1x64 FP32) under
wrk at 16 connections against two ortserve processes from the same binary, run side by side:

  full  access log on (JSON lines to a file), OTLP span export to a local sink that discards
        (--otlp-endpoint, default sampling 0.01), and /metrics scraped every second
  off   --access-log 0, no --otlp-endpoint, never scraped

Metrics are recorded in both (they always are: per-thread counters and histograms, no switch), so
"off" is the floor ortserve can reach, not a server without metrics. Rounds alternate the order
(full, off / off, full); the report gives medians, the spread, and the median of the per-round
ratios, plus the server's CPU time per request (utime + stime from /proc around each run), which
other load on the machine disturbs far less than throughput. Target: the full set costs <= 3 % of
throughput. Figures only: nothing is asserted.

    /usr/bin/python3 bench/obs_overhead.py [--build build/release] [--rounds 8] [--seconds 6]
                                           [--conns 16] [--threads 2] [--json FILE]
"""
import argparse
import http.client
import http.server
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(ROOT, "bench", "wrk", "post.lua")


class Sink:
    """OTLP/HTTP receiver that counts and discards (a thread in this process; one POST a second)."""

    def __init__(self):
        self.posts = 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Server:
    def __init__(self, binary, repo, tmp, name, extra):
        self.port_file = os.path.join(tmp, name + ".port")
        self.log_path = os.path.join(tmp, name + ".log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "serve", "--model-repository", repo, "--port", "0",
                                      "--port-file", self.port_file, *extra], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (name, open(self.log_path).read()[-2000:]))
            try:
                with open(self.port_file) as f:
                    self.port = int(f.read())
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("%s did not start" % name)
                time.sleep(0.01)

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


class Scraper:
    """GET /metrics every `interval` seconds while running (what a Prometheus would do)."""

    def __init__(self, srv, interval):
        self.srv, self.interval, self.stop_ev, self.scrapes, self.bytes = srv, interval, threading.Event(), 0, 0
        self.thread = None

    def start(self):
        self.stop_ev.clear()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_ev.wait(self.interval):
            st, body = self.srv.get("/metrics")
            self.scrapes += st == 200
            self.bytes = len(body)

    def stop(self):
        self.stop_ev.set()
        self.thread.join()


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, body_file, conns, threads, seconds):
    env = dict(os.environ, BODY_FILE=body_file, REQ_PATH="/v2/models/mlp/infer", IHCL="")
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds, "--latency", "-s", LUA,
                          "http://127.0.0.1:%d" % port], capture_output=True, text=True, env=env,
                         timeout=seconds + 60).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("wrk printed no summary:\n" + out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--models", default=os.path.join(ROOT, "var", "models"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    binary = os.path.join(args.build, "ortserve")
    tmp = tempfile.mkdtemp(prefix="osv-obs-bench-")
    sink = Sink()
    servers = {}
    try:
        repo = os.path.join(tmp, "repo")
        os.makedirs(os.path.join(repo, "mlp", "1"))
        shutil.copyfile(os.path.join(args.models, "mlp.onnx"), os.path.join(repo, "mlp", "1", "model.onnx"))
        body = os.path.join(tmp, "mlp.json")
        with open(body, "w") as f:  # the same request as bench/http_bench.py's mlp_json
            import random
            rng = random.Random(0)
            json.dump({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                   "data": [float("%.6g" % rng.gauss(0, 1)) for _ in range(64)]}]}, f)
        servers["full"] = Server(binary, repo, tmp, "full", ["--otlp-endpoint", sink.url])
        servers["off"] = Server(binary, repo, tmp, "off", ["--access-log", "0"])
        scraper = Scraper(servers["full"], args.scrape_interval)
        for name in ("full", "off"):  # warm-up, not counted
            wrk(servers[name].port, body, args.conns, args.threads, 2)
        results = {"full": [], "off": []}
        for r in range(args.rounds):
            for name in (("full", "off") if r % 2 == 0 else ("off", "full")):
                if name == "full":
                    scraper.start()
                cpu0 = cpu_seconds(servers[name].proc.pid)
                res = wrk(servers[name].port, body, args.conns, args.threads, args.seconds)
                res["cpu_us_per_req"] = (cpu_seconds(servers[name].proc.pid) - cpu0) * 1e6 / max(1, res["requests"])
                if name == "full":
                    scraper.stop()
                results[name].append(res)
                print("round %d %-4s %8.0f req/s  p50 %5d us  p99 %5d us  server CPU %5.1f us/req  non-2xx %d  "
                      "errors %d" % (r + 1, name, res["rps"], res["p50_us"], res["p99_us"], res["cpu_us_per_req"],
                                     res["non2xx"], res["socket_errors"]), file=sys.stderr)
        st, page = servers["full"].get("/metrics")
        exported = [float(line.split()[-1]) for line in page.decode().splitlines()
                    if line.startswith("ortserve_trace_spans_exported_total ")]
        for s in servers.values():
            s.stop()
        with open(servers["full"].log_path, "rb") as f:
            access_lines = sum(1 for line in f if b'"event":"access"' in line)
    finally:
        for s in servers.values():
            if s.proc.poll() is None:
                s.proc.kill()
        sink.close()

    med = {k: statistics.median(x["rps"] for x in v) for k, v in results.items()}
    ratios = [f["rps"] / o["rps"] for f, o in zip(results["full"], results["off"])]
    total_full = sum(x["requests"] for x in results["full"])
    summary = {
        "rps_median": med, "rps_min": {k: min(x["rps"] for x in v) for k, v in results.items()},
        "rps_max": {k: max(x["rps"] for x in v) for k, v in results.items()},
        "p50_us_median": {k: statistics.median(x["p50_us"] for x in v) for k, v in results.items()},
        "p99_us_median": {k: statistics.median(x["p99_us"] for x in v) for k, v in results.items()},
        "cpu_us_per_req_median": {k: statistics.median(x["cpu_us_per_req"] for x in v) for k, v in results.items()},
        "median_round_cpu_ratio": statistics.median(f["cpu_us_per_req"] / o["cpu_us_per_req"]
                                                    for f, o in zip(results["full"], results["off"])),
        "ratio_of_medians": med["full"] / med["off"], "median_round_ratio": statistics.median(ratios),
        "rounds_full_slower": sum(r < 1 for r in ratios), "rounds": args.rounds,
        "non2xx": sum(x["non2xx"] + x["socket_errors"] for v in results.values() for x in v),
        "access_lines": access_lines, "requests_full": total_full, "spans_exported": exported[0] if exported else 0,
        "otlp_posts": sink.posts, "scrapes": scraper.scrapes, "metrics_page_bytes": scraper.bytes,
        "config": vars(args),
    }
    ovh = (1 - summary["median_round_ratio"]) * 100
    print("\n| config | req/s median (min–max) | p50 µs | p99 µs | server CPU µs/req |\n|---|---|---|---|---|")
    for k in ("off", "full"):
        print("| %s | %.0f (%.0f–%.0f) | %.0f | %.0f | %.1f |"
              % (k, med[k], summary["rps_min"][k], summary["rps_max"][k], summary["p50_us_median"][k],
                 summary["p99_us_median"][k], summary["cpu_us_per_req_median"][k]))
    print("\nfull / off: ratio of medians %.3f, median of per-round ratios %.3f -> overhead %.1f %% "
          "(full slower in %d of %d rounds; target <= 3 %%: %s)"
          % (summary["ratio_of_medians"], summary["median_round_ratio"], ovh, summary["rounds_full_slower"],
             args.rounds, "met" if ovh <= 3 else "NOT met"))
    print("server CPU per request, full / off: median of per-round ratios %.3f (+%.1f %%)"
          % (summary["median_round_cpu_ratio"], (summary["median_round_cpu_ratio"] - 1) * 100))
    print("full did: %d access lines for %d measured requests (+ warm-up), %d spans exported in %d OTLP POSTs, "
          "%d scrapes of %d bytes; non-2xx/socket errors in all runs: %d"
          % (access_lines, total_full, summary["spans_exported"], sink.posts, scraper.scrapes, scraper.bytes,
             summary["non2xx"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": results}, f, indent=2)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
