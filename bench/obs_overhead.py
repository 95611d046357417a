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
                                           [--conns 16] [--threads 2] [--variants off2,log,trace,full]
                                           [--json FILE]

--variants adds processes to the rotation, each compared with "off": off2 (a second "off": the noise
floor of the machine), log (access log only, to a file like full), lognull (access log only, written
to /dev/null: formatting and write(2) without the file system), logpipe (access log only, to a
pipe that `cat` drains, as a container runtime would), trace (span export only).
The access log and spans of "full" go to a regular file in the temporary directory (on this
machine's ext4 disk). --profile S then perf-records the full server under the same load and
attributes its CPU samples to the observability work (a direct measure, for machines too noisy for
the throughput comparison to resolve a few per cent: compare off2 with off).
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
    def __init__(self, binary, repo, tmp, name, extra, log_to=None):
        self.port_file = os.path.join(tmp, name + ".port")
        self.log_path = os.path.join(tmp, name + ".log") if log_to in (None, "pipe") else log_to
        self.reader = None
        if log_to == "pipe":  # like a container runtime collecting stderr
            self.reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            self.log = self.reader.stdin
        else:
            self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "serve", "--model-repository", repo, "--port", "0",
                                      "--port-file", self.port_file, *extra], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %d" % (name, self.proc.returncode))
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
        if self.reader:
            self.reader.wait(timeout=60)


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


# Symbols of work that only the observability features do (the always-on request id and
# traceparent generation is in both configurations and not counted).
PROFILE_GROUPS = [
    ("access log: formatting (access_line, put_*, flush)",
     lambda comm, sym: sym in ("access_line", "put_esc", "put_time", "put_str", "put_u64", "write_chunks",
                               "osv_obs_flush", "osv_obs_tick")),
    ("access log: trace/span ids in hex (half of osv_trace_hex)", lambda comm, sym: sym == "osv_trace_hex"),
    ("span recording on the loops", lambda comm, sym: sym in ("osv_trace_record", "record_spans",
                                                              "copy_tracestate", "copy_str", "push")),
    ("span export thread (osv-otlp, everything)", lambda comm, sym: comm == "osv-otlp"),
]


def profile(srv, body, args):
    """perf record -g on the full server during one wrk run; shares of its CPU samples by group."""
    import re
    if not shutil.which("perf"):
        return None
    data = os.path.join(os.path.dirname(srv.log_path), "perf.data")
    rec = subprocess.Popen(["perf", "record", "-q", "-g", "-F", "1999", "-p", str(srv.proc.pid), "-o", data, "--",
                            "sleep", str(args.profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wrk(srv.port, body, args.conns, args.threads, args.profile + 1)
    rec.wait()
    rows, write_path = [], 0.0
    out = subprocess.run(["perf", "report", "-i", data, "--percentage", "relative", "--no-children", "--sort",
                          "comm,symbol", "--stdio", "-g", "none"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(\S+)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3)))
    out = subprocess.run(["perf", "report", "-i", data, "--percentage", "relative", "--children", "--sort",
                          "symbol", "--stdio", "-g", "none"], capture_output=True, text=True).stdout
    for line in out.splitlines():  # write(2) is the access log's alone (responses use writev, curl send)
        m = re.match(r"\s+([\d.]+)%\s+[\d.]+%\s+\[k\]\s+ksys_write\s", line)
        if m:
            write_path = float(m.group(1))
    groups = []
    for name, pred in PROFILE_GROUPS:
        share = sum(p for p, comm, sym in rows if pred(comm, sym))
        groups.append((name, share / 2 if "half" in name else share))
    groups.append(("access log: write(2) in the kernel (ksys_write and below)", write_path))
    return groups


def scrape_cpu_us(srv, n=200):
    """Server CPU time per GET /metrics, over n back-to-back scrapes."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    t0 = cpu_seconds(srv.proc.pid)
    for _ in range(n):
        c.request("GET", "/metrics")
        c.getresponse().read()
    c.close()
    return (cpu_seconds(srv.proc.pid) - t0) * 1e6 / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--models", default=os.path.join(ROOT, "var", "models"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    ap.add_argument("--variants", default="off,full",
                    help="comma-separated, compared with 'off': off2 (a second identical 'off' process: the "
                         "noise floor), log (access log only), lognull (access log only, to /dev/null), logpipe "
                         "(access log only, to a pipe read by cat), trace (span export only), full")
    ap.add_argument("--profile", type=int, default=0, metavar="S",
                    help="afterwards, perf-profile the full server for S seconds under the same load and "
                         "attribute its CPU to the observability work (needs perf and 'full')")
    ap.add_argument("--json")
    args = ap.parse_args()
    variants = ["off"] + [v for v in args.variants.split(",") if v and v != "off"]
    flags = {"off": ["--access-log", "0"], "off2": ["--access-log", "0"], "log": [], "lognull": [], "logpipe": [],
             "trace": ["--access-log", "0", "--otlp-endpoint", None], "full": ["--otlp-endpoint", None]}
    unknown = set(variants) - set(flags)
    if unknown:
        ap.error("unknown variants: %s" % ", ".join(sorted(unknown)))
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
        for name in variants:
            servers[name] = Server(binary, repo, tmp, name, [sink.url if f is None else f for f in flags[name]],
                                   log_to={"lognull": os.devnull, "logpipe": "pipe"}.get(name))
        scraper = Scraper(servers["full"], args.scrape_interval) if "full" in servers else None
        for name in variants:  # warm-up, not counted
            wrk(servers[name].port, body, args.conns, args.threads, 2)
        results = {name: [] for name in variants}
        for r in range(args.rounds):
            for name in (variants if r % 2 == 0 else variants[::-1]):
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
        exported, access_lines, prof, scrape_us = [], 0, None, None
        if "full" in servers:
            scrape_us = scrape_cpu_us(servers["full"])
            if args.profile:
                prof = profile(servers["full"], body, args)
            st, page = servers["full"].get("/metrics")
            exported = [float(line.split()[-1]) for line in page.decode().splitlines()
                        if line.startswith("ortserve_trace_spans_exported_total ")]
        for s in servers.values():
            s.stop()
        if "full" in servers:
            with open(servers["full"].log_path, "rb") as f:
                access_lines = sum(1 for line in f if b'"event":"access"' in line)
    finally:
        for s in servers.values():
            if s.proc.poll() is None:
                s.proc.kill()
        sink.close()

    med = {k: statistics.median(x["rps"] for x in v) for k, v in results.items()}

    def round_ratios(name, key):
        return [a[key] / b[key] for a, b in zip(results[name], results["off"])]
    compare = {}
    for name in variants[1:]:
        compare[name] = {"ratio_of_medians": med[name] / med["off"],
                         "median_round_ratio": statistics.median(round_ratios(name, "rps")),
                         "rounds_slower": sum(x < 1 for x in round_ratios(name, "rps")),
                         "median_round_cpu_ratio": statistics.median(round_ratios(name, "cpu_us_per_req"))}
    summary = {
        "rps_median": med, "rps_min": {k: min(x["rps"] for x in v) for k, v in results.items()},
        "rps_max": {k: max(x["rps"] for x in v) for k, v in results.items()},
        "p50_us_median": {k: statistics.median(x["p50_us"] for x in v) for k, v in results.items()},
        "p99_us_median": {k: statistics.median(x["p99_us"] for x in v) for k, v in results.items()},
        "cpu_us_per_req_median": {k: statistics.median(x["cpu_us_per_req"] for x in v) for k, v in results.items()},
        "compare_with_off": compare, "rounds": args.rounds,
        "non2xx": sum(x["non2xx"] + x["socket_errors"] for v in results.values() for x in v),
        "access_lines": access_lines, "requests_full": sum(x["requests"] for x in results.get("full", [])),
        "spans_exported": exported[0] if exported else 0, "otlp_posts": sink.posts,
        "scrapes": scraper.scrapes if scraper else 0, "metrics_page_bytes": scraper.bytes if scraper else 0,
        "scrape_cpu_us": scrape_us, "profile": prof,
        "config": vars(args),
    }
    print("\n| config | req/s median (min–max) | p50 µs | p99 µs | server CPU µs/req | vs off: req/s, median "
          "of per-round ratios (slower in) | vs off: CPU/req |\n|---|---|---|---|---|---|---|")
    for k in variants:
        c = compare.get(k)
        print("| %s | %.0f (%.0f–%.0f) | %.0f | %.0f | %.1f | %s | %s |"
              % (k, med[k], summary["rps_min"][k], summary["rps_max"][k], summary["p50_us_median"][k],
                 summary["p99_us_median"][k], summary["cpu_us_per_req_median"][k],
                 "%.3f (%d/%d rounds)" % (c["median_round_ratio"], c["rounds_slower"], args.rounds) if c else "—",
                 "%+.1f %%" % ((c["median_round_cpu_ratio"] - 1) * 100) if c else "—"))
    if "full" in compare:
        ovh = (1 - compare["full"]["median_round_ratio"]) * 100
        print("\nfull vs off: throughput overhead %.1f %% (median of per-round ratios; ratio of medians %.3f); "
              "server CPU per request %+.1f %%; target <= 3 %%: %s"
              % (ovh, compare["full"]["ratio_of_medians"], (compare["full"]["median_round_cpu_ratio"] - 1) * 100,
                 "met" if ovh <= 3 else "NOT met"))
        print("full did: %d access lines for %d measured requests (+ warm-up), %d spans exported in %d OTLP POSTs, "
              "%d scrapes of %d bytes" % (access_lines, summary["requests_full"], summary["spans_exported"],
                                          sink.posts, summary["scrapes"], summary["metrics_page_bytes"]))
        print("a scrape costs %.0f us of server CPU (%.3f %% of one core at one scrape a second)"
              % (scrape_us, scrape_us / 1e4 / args.scrape_interval))
    if prof:
        print("\nfull server under the same load, share of its CPU samples (perf, %d s):" % args.profile)
        for name, share in prof:
            print("  %5.2f %%  %s" % (share, name))
        print("  %5.2f %%  total observability work (+ scrapes, above)" % sum(v for _, v in prof))
    print("non-2xx/socket errors in all runs: %d" % summary["non2xx"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": results}, f, indent=2)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
