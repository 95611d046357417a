#!/usr/bin/python3
"""slo_gate.py — an SLO gate for CI: runs a bounded load against one model of a running ortserve,
measures the latency percentile and the error rate, compares them with the model's SLO and exits
0 when it is met, 1 when it is broken, 2 on a usage or setup error.

  bench/slo_gate.py --url http://127.0.0.1:8000 --model mlp --repository var/demo-repo
  bench/slo_gate.py --url http://127.0.0.1:8000 --model mlp --latency-ms 5 --percentile 99 \\
                    --error-rate 0.01 --requests 2000 --concurrency 8 --json slo.json

The SLO is the model's config.json "slo" section ({"latency_ms": 5, "percentile": 99,
"error_rate": 0.01}; percentile and error_rate default to 99 and 0.01 as in the server), read from
--config FILE or --repository DIR (DIR/<model>/config.json); --latency-ms, --percentile and
--error-rate override it. The load is --concurrency keep-alive connections (threads) sending the
same request until --requests are done or --duration seconds pass, whichever comes first (after
--warmup requests that are not counted). The request is --request FILE (a KServe v2 JSON body) or,
by default, generated from the model's metadata (dynamic dims set to 1, deterministic values).

What counts:
- latency: the client-measured time of each successful request (connection reuse, no queueing in
  the client), nearest-rank percentile;
- errors: 5xx answers (500, 503 when the model's queue or the pool is full, 504 past a deadline)
  and failed connections, over all counted requests — the same rule as the server's
  ortserve_slo_violations_total{kind="error"};
- 4xx answers mean the request itself is wrong: the gate stops with exit 2.
With --measure server the verdict comes from the server's own counters instead (deltas of
ortserve_slo_violations_total and ortserve_requests_total across the run; they use the latency_ms of
the model's loaded config.json and see all traffic to the model, not only ours). Both views are
always printed. stdlib only."""
import argparse
import http.client
import json
import math
import os
import random
import re
import sys
import threading
import time
import urllib.parse

EXIT_MET, EXIT_BROKEN, EXIT_USAGE = 0, 1, 2


class Usage(Exception):
    pass


# ---- SLO --------------------------------------------------------------------------------------------

def load_slo(args):
    slo, source = {}, "flags"
    path = args.config
    if not path and args.repository:
        path = os.path.join(args.repository, args.model, "config.json")
        if not os.path.exists(path):
            path = None
    if path:
        try:
            with open(path) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            raise Usage("cannot read %s: %s" % (path, e))
        section = cfg.get("slo")
        if section is not None and not isinstance(section, dict):
            raise Usage("%s: 'slo' must be an object" % path)
        slo = dict(section or {})
        source = path
    for key, flag in (("latency_ms", args.latency_ms), ("percentile", args.percentile),
                      ("error_rate", args.error_rate)):
        if flag is not None:
            slo[key] = flag
            source = source if source == "flags" else source + " + flags"
    unknown = set(slo) - {"latency_ms", "percentile", "error_rate"}
    if unknown:
        raise Usage("unknown SLO keys: %s" % ", ".join(sorted(unknown)))
    if not slo:
        raise Usage("no SLO: give --repository/--config with an 'slo' section, or --latency-ms/--error-rate")
    slo.setdefault("percentile", 99.0)
    slo.setdefault("error_rate", 0.01)
    lat = slo.get("latency_ms")
    if lat is not None and not (isinstance(lat, (int, float)) and 0 < lat <= 86400000):
        raise Usage("latency_ms must be > 0 (milliseconds)")
    if not (isinstance(slo["percentile"], (int, float)) and 0 < slo["percentile"] < 100):
        raise Usage("percentile must be > 0 and < 100")
    if not (isinstance(slo["error_rate"], (int, float)) and 0 <= slo["error_rate"] <= 1):
        raise Usage("error_rate must be in [0, 1]")
    return slo, source


# ---- HTTP -------------------------------------------------------------------------------------------

class Target:
    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise Usage("--url must be http://host:port")
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.base = u.path.rstrip("/")

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def get(self, path, headers=None):
        c = self.conn()
        try:
            c.request("GET", self.base + path, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()


def model_path(args):
    return "/v2/models/%s%s" % (args.model, "/versions/%s" % args.version if args.version else "")


def make_request(target, args):
    if args.request:
        try:
            with open(args.request, "rb") as f:
                body = f.read()
            json.loads(body)
        except (OSError, ValueError) as e:
            raise Usage("cannot read --request %s: %s" % (args.request, e))
        return body
    try:
        st, data = target.get(model_path(args))
    except OSError as e:
        raise Usage("cannot reach %s:%d: %s" % (target.host, target.port, e))
    if st != 200:
        raise Usage("GET %s: %d %s" % (model_path(args), st, data[:300].decode(errors="replace")))
    meta = json.loads(data)
    rng = random.Random(0)
    inputs = []
    for i in meta.get("inputs", []):
        shape = [1 if d < 0 else d for d in i["shape"]]
        n = math.prod(shape)
        dt = i["datatype"]
        if dt == "BYTES":
            values = ["x"] * n
        elif dt == "BOOL":
            values = [rng.random() < 0.5 for _ in range(n)]
        elif dt.startswith("FP") or dt == "BF16":
            values = [round(rng.uniform(-1, 1), 4) for _ in range(n)]
        else:
            values = [rng.randint(0, 3) for _ in range(n)]
        inputs.append({"name": i["name"], "shape": shape, "datatype": dt, "data": values})
    return json.dumps({"inputs": inputs}).encode()


# ---- server counters ---------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def server_counters(target, args):
    """{(metric, frozenset(labels)): value} of this model's per-model samples, or None when /metrics
    is not reachable."""
    try:
        st, data = target.get("/metrics")
    except OSError:
        return None
    if st != 200:
        return None
    out = {}
    for line in data.decode(errors="replace").splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        if labels.get("model") != args.model or (args.version and labels.get("version") != str(args.version)):
            continue
        labels.pop("model")
        labels.pop("version", None)
        key = (m.group(1), frozenset(labels.items()))
        out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def settled_counters(target, args, before, answered, timeout=5.0):
    """The server's counters once they include every request we got an answer to (a request is
    counted just after its response is written, so the last few can lag the client by an instant)."""
    deadline = time.monotonic() + timeout
    while True:
        after = server_counters(target, args)
        if after is None or before is None or time.monotonic() >= deadline or \
                delta(before, after, "ortserve_requests_total") >= answered:
            return after
        time.sleep(0.01)  # paces the poll; bounded by the deadline


def delta(before, after, name, **labels):
    want = set(labels.items())
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == name and want <= set(k[1]))


def histogram_quantile(before, after, name, q):
    buckets = []
    for (n, labels), v in after.items():
        if n == name + "_bucket":
            le = dict(labels)["le"]
            buckets.append((math.inf if le == "+Inf" else float(le), v - before.get((n, labels), 0.0)))
    merged = {}
    for le, v in buckets:  # several versions: add up
        merged[le] = merged.get(le, 0.0) + v
    b = sorted(merged.items())
    if not b or b[-1][1] <= 0:
        return None
    rank, prev_le, prev_c = q * b[-1][1], 0.0, 0.0
    for le, c in b:
        if c >= rank:
            if le == math.inf:
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1.0)
        prev_le, prev_c = le, c
    return None


# ---- load -------------------------------------------------------------------------------------------

def run_load(target, path, body, args):
    headers = {"Content-Type": "application/json"}
    lock = threading.Lock()
    state = {"issued": 0, "latencies": [], "errors": 0, "statuses": {}, "client_errors": [], "conn_errors": 0,
             "answered": 0}
    stop_at = [None]

    def worker(warm):
        c = target.conn()
        try:
            while True:
                with lock:
                    if warm:
                        if state["warm_left"] <= 0:
                            return
                        state["warm_left"] -= 1
                    else:
                        if state["issued"] >= args.requests or time.monotonic() >= stop_at[0] or \
                                state["client_errors"]:
                            return
                        state["issued"] += 1
                t0 = time.perf_counter()
                try:
                    c.request("POST", path, body, headers)
                    r = c.getresponse()
                    data = r.read()
                    status = r.status
                except (OSError, http.client.HTTPException):
                    status, data = None, b""
                    c.close()
                    c = target.conn()
                dt = time.perf_counter() - t0
                if status is not None:
                    with lock:
                        state["answered"] += 1
                if warm:
                    continue
                with lock:
                    state["statuses"][status] = state["statuses"].get(status, 0) + 1
                    if status is not None and status < 400:
                        state["latencies"].append(dt)
                    elif status is not None and status < 500:
                        state["client_errors"].append((status, data[:300].decode(errors="replace")))
                    else:
                        state["errors"] += 1
                        state["conn_errors"] += status is None
        finally:
            c.close()

    for warm in (True, False):
        state["warm_left"] = args.warmup
        if not warm:
            stop_at[0] = time.monotonic() + args.duration
            t_start = time.monotonic()
        threads = [threading.Thread(target=worker, args=(warm,), daemon=True) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.duration + 2 * args.timeout + 5)
    state["elapsed"] = time.monotonic() - t_start
    return state


def percentile(sorted_values, p):
    """Nearest-rank percentile (p in 0..100) of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def fmt_ms(s):
    return "n/a" if s is None else "%.3f ms" % (s * 1e3)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Load a model of a running ortserve and check its SLO "
                                             "(exit 0 met, 1 broken, 2 usage/setup error).")
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (http://host:port)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--version", help="model version (default: the server's choice)")
    ap.add_argument("--repository", help="model repository: the SLO is DIR/<model>/config.json's 'slo'")
    ap.add_argument("--config", help="a config.json whose 'slo' section is the SLO")
    ap.add_argument("--latency-ms", type=float, help="latency objective (overrides the config)")
    ap.add_argument("--percentile", type=float, help="share of requests that must meet it, e.g. 99")
    ap.add_argument("--error-rate", type=float, help="error budget, e.g. 0.01")
    ap.add_argument("--requests", type=int, default=1000, help="counted requests (default 1000)")
    ap.add_argument("--duration", type=float, default=60.0, help="at most this many seconds (default 60)")
    ap.add_argument("--concurrency", type=int, default=4, help="connections / threads (default 4)")
    ap.add_argument("--warmup", type=int, default=10, help="uncounted requests first (default 10)")
    ap.add_argument("--request", help="KServe v2 JSON request body file (default: generated from metadata)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request socket timeout, s (default 30)")
    ap.add_argument("--measure", choices=("client", "server"), default="client",
                    help="whose figures decide: client-measured (default) or the server's SLO counters")
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args(argv)
    try:
        if args.requests < 1 or args.concurrency < 1 or args.warmup < 0 or not 0 < args.duration <= 3600:
            raise Usage("--requests and --concurrency must be >= 1, --warmup >= 0, 0 < --duration <= 3600")
        slo, source = load_slo(args)
        target = Target(args.url, args.timeout)
        body = make_request(target, args)
        path = target.base + model_path(args) + "/infer"
        before = server_counters(target, args)
        state = run_load(target, path, body, args)
        after = settled_counters(target, args, before, state["answered"])
    except Usage as e:
        print("slo_gate: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    if state["client_errors"]:
        st, msg = state["client_errors"][0]
        print("slo_gate: the server rejected the request as invalid (%d): %s" % (st, msg), file=sys.stderr)
        return EXIT_USAGE

    lat = sorted(state["latencies"])
    n_ok, n_err = len(lat), state["errors"]
    total = n_ok + n_err
    p = slo["percentile"]
    measured = {"requests": total, "successes": n_ok, "errors": n_err, "connection_errors": state["conn_errors"],
                "error_rate": n_err / total if total else 1.0, "elapsed_s": state["elapsed"],
                "throughput_rps": total / state["elapsed"] if state["elapsed"] > 0 else 0.0,
                "p50_s": percentile(lat, 50), "p90_s": percentile(lat, 90), "p99_s": percentile(lat, 99),
                "max_s": lat[-1] if lat else None, "slo_percentile_s": percentile(lat, p),
                "statuses": {str(k): v for k, v in state["statuses"].items()}}
    server = None
    if before is not None and after is not None:
        ok = delta(before, after, "ortserve_requests_total", outcome="success")
        answered = delta(before, after, "ortserve_requests_total") - \
            delta(before, after, "ortserve_requests_total", outcome="invalid")
        lv = delta(before, after, "ortserve_slo_violations_total", kind="latency")
        ev = delta(before, after, "ortserve_slo_violations_total", kind="error")
        server = {"successes": ok, "requests": answered, "latency_violations": lv, "error_violations": ev,
                  "latency_violation_share": lv / ok if ok else None,
                  "error_share": ev / answered if answered else None,
                  "histogram_quantile_s": histogram_quantile(before, after, "ortserve_inference_duration_seconds",
                                                             p / 100.0)}

    checks = []
    budget = 1 - p / 100.0
    if args.measure == "client":
        if slo.get("latency_ms") is not None:
            v = measured["slo_percentile_s"]
            checks.append(("latency", v is not None and v * 1e3 <= slo["latency_ms"],
                           "p%g %s <= %.3f ms" % (p, fmt_ms(v), slo["latency_ms"])))
        checks.append(("errors", measured["error_rate"] <= slo["error_rate"],
                       "%.2f%% <= %.2f%%" % (100 * measured["error_rate"], 100 * slo["error_rate"])))
    else:
        if server is None:
            print("slo_gate: --measure server needs the server's /metrics", file=sys.stderr)
            return EXIT_USAGE
        if slo.get("latency_ms") is not None:
            share = server["latency_violation_share"]
            checks.append(("latency", share is not None and share <= budget,
                           "violations %s <= %.2f%% of successes" %
                           ("n/a" if share is None else "%.2f%%" % (100 * share), 100 * budget)))
        share = server["error_share"]
        checks.append(("errors", share is not None and share <= slo["error_rate"],
                       "%s <= %.2f%%" % ("n/a" if share is None else "%.2f%%" % (100 * share),
                                         100 * slo["error_rate"])))
    met = all(ok for _, ok, _ in checks)

    print("slo_gate: %s%s at %s: %d requests, %d connections, %.2f s (%.0f req/s)"
          % (args.model, " (version %s)" % args.version if args.version else "", args.url, total,
             args.concurrency, measured["elapsed_s"], measured["throughput_rps"]))
    print("  SLO: %serror rate <= %.2f%% (%s)"
          % ("p%g <= %.3f ms, " % (p, slo["latency_ms"]) if slo.get("latency_ms") is not None else "",
             100 * slo["error_rate"], source))
    print("  client: p50 %s  p90 %s  p99 %s  max %s%s; errors %d of %d (%.2f%%)"
          % (fmt_ms(measured["p50_s"]), fmt_ms(measured["p90_s"]), fmt_ms(measured["p99_s"]),
             fmt_ms(measured["max_s"]),
             "" if p in (50, 90, 99) else "  p%g %s" % (p, fmt_ms(measured["slo_percentile_s"])),
             n_err, total, 100 * measured["error_rate"]))
    if server:
        print("  server: %d latency violations (%s of %d successes), %d error violations of %d; "
              "histogram p%g ~ %s"
              % (server["latency_violations"], "n/a" if server["latency_violation_share"] is None
                 else "%.2f%%" % (100 * server["latency_violation_share"]), server["successes"],
                 server["error_violations"], server["requests"], p, fmt_ms(server["histogram_quantile_s"])))
    for name, ok, text in checks:
        print("  %-8s %s (%s, %s)" % (name + ":", "PASS" if ok else "FAIL", text, args.measure))
    print("SLO met" if met else "SLO BROKEN")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "version": args.version, "slo": slo, "slo_source": source,
                       "measure": args.measure, "client": measured, "server": server,
                       "checks": [{"name": n, "pass": ok, "detail": t} for n, ok, t in checks], "met": met},
                      f, indent=2)
    return EXIT_MET if met else EXIT_BROKEN


if __name__ == "__main__":
    sys.exit(main())
