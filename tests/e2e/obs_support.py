"""obs_support.py — helpers for the observability e2e tests (tests/e2e/test_obs_*.py, test_slo_gate.py):

- a strict parser/checker of the Prometheus text (0.0.4) and OpenMetrics (1.0) expositions,
- promtool wrappers (`check metrics`, and OpenMetrics parsing through `tsdb create-blocks-from`),
- a PromQL metric-name extractor (for the dashboard and alert rules),
- an OTLP/HTTP receiver on loopback (a thread collecting POST /v1/traces JSON bodies),
- a real Prometheus server on loopback (Debian's /usr/bin/prometheus),
- access-log polling and thread listing of a running server.

stdlib + numpy only. The server harness itself lives in server.py (imported, never modified here).
Every wait polls with a deadline; the short sleeps inside polls only pace them."""
import http.client
import http.server
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server import BIN, MODELS, RawConn, Server, make_repo, request_bytes, wait_until  # noqa: E402,F401

SOURCE_DIR = os.environ.get("OSV_SOURCE_DIR",
                            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
OM_ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"


# ---- requests -------------------------------------------------------------------------------------

def mlp_body(batch=1, seed=0):
    """A JSON infer request for the generated mlp model (x FP32 [N,64])."""
    import numpy as np
    x = np.random.default_rng(seed).standard_normal((batch, 64)).astype(np.float32)
    return {"inputs": [{"name": "x", "shape": [batch, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}


def slow_body(iters):
    """The generated `slow` model: run time grows with iters (about 20 us each)."""
    return {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [0.01] * 256},
                       {"name": "iters", "shape": [], "datatype": "INT64", "data": [iters]}]}


def fail_body():
    """The generated `fail` model with a shape whose product != N: ONNX Runtime fails the run (500)."""
    return {"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                       {"name": "shape", "shape": [1], "datatype": "INT64", "data": [3]}]}


def post_json(srv, path, obj, headers=None):
    """(status, lower-cased headers, body bytes) of one POST on a fresh connection."""
    return srv.request("POST", path, json.dumps(obj), dict(headers or {}, **{"Content-Type": "application/json"}))


# ---- exposition parsing ------------------------------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset", "gaugehistogram"}


class ExpositionError(AssertionError):
    pass


class Family:
    def __init__(self, name, mtype=None, help_text=None):
        self.name, self.type, self.help, self.samples = name, mtype, help_text, []

    def __repr__(self):
        return "Family(%s %s, %d samples)" % (self.name, self.type, len(self.samples))


def _parse_labels(s, i, line):
    """Parses {a="b",...} starting at s[i] == '{'; returns (dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if s[i] == "}":
            return labels, i + 1
        m = re.match(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", s[i:])
        if not m:
            raise ExpositionError("bad label syntax in %r" % line)
        name = m.group(1)
        i += m.end()
        val = []
        while True:
            ch = s[i]
            if ch == "\\":
                nxt = s[i + 1]
                if nxt not in "\\\"n":
                    raise ExpositionError("bad escape \\%s in %r" % (nxt, line))
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif ch == '"':
                i += 1
                break
            elif ch == "\n":
                raise ExpositionError("newline in label value: %r" % line)
            else:
                val.append(ch)
                i += 1
        if name in labels:
            raise ExpositionError("duplicate label %s in %r" % (name, line))
        labels[name] = "".join(val)
        if s[i] == ",":
            i += 1
        elif s[i] != "}":
            raise ExpositionError("expected , or } in %r" % line)


def _parse_value(v, line):
    if v in ("+Inf", "Inf"):
        return math.inf
    if v == "-Inf":
        return -math.inf
    if v == "NaN":
        return math.nan
    try:
        return float(v)
    except ValueError:
        raise ExpositionError("bad sample value %r in %r" % (v, line)) from None


class Exposition:
    """A parsed /metrics page. Strict: every line must parse, every sample must belong to a family
    declared with # TYPE before it, families are contiguous and declared once, series are unique,
    counters are >= 0, histograms are cumulative with +Inf == _count; OpenMetrics pages end with
    '# EOF' and name counter samples <family>_total. Raises ExpositionError otherwise."""

    def __init__(self, text, openmetrics):
        self.text, self.om = text, openmetrics
        self.families = {}
        self.samples = []  # (sample name, labels dict, value, family)
        self._parse()
        self._check_histograms()

    def _family_of(self, name):
        for suffix, types in (("_total", {"counter"}), ("_created", {"counter", "histogram"}),
                              ("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                              ("_count", {"histogram", "summary"}), ("_info", {"info"}), ("", None)):
            if suffix and not name.endswith(suffix):
                continue
            base = name[:-len(suffix)] if suffix else name
            f = self.families.get(base)
            if f is None:
                continue
            if types is None:
                if f.type in ("counter",) and self.om:
                    raise ExpositionError("OpenMetrics counter sample %s lacks the _total suffix" % name)
                if f.type in ("histogram",):
                    raise ExpositionError("histogram sample %s without _bucket/_sum/_count" % name)
                return f
            if f.type in types:
                return f
        # Prometheus text: counters are declared with their _total name.
        f = self.families.get(name)
        if f is not None:
            return f
        raise ExpositionError("sample %s belongs to no declared family" % name)

    def _parse(self):
        lines = self.text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        else:
            raise ExpositionError("exposition does not end with a newline")
        if self.om:
            if not lines or lines[-1] != "# EOF":
                raise ExpositionError("OpenMetrics exposition does not end with '# EOF'")
            lines.pop()
        seen_series = set()
        current, closed = None, set()
        for line in lines:
            if line == "":
                raise ExpositionError("blank line in the exposition")
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE", "UNIT"):
                    name = parts[2]
                    if not _NAME.match(name):
                        raise ExpositionError("bad metric name in %r" % line)
                    f = self.families.get(name)
                    if f is None:
                        if name in closed:
                            raise ExpositionError("family %s declared twice" % name)
                        f = self.families[name] = Family(name)
                        if current is not None and current is not f:
                            closed.add(current.name)
                        current = f
                    elif f is not current or f.samples:
                        raise ExpositionError("metadata for %s after its samples or elsewhere" % name)
                    if parts[1] == "TYPE":
                        if f.type is not None or len(parts) != 4 or parts[3] not in _TYPES:
                            raise ExpositionError("bad or repeated TYPE: %r" % line)
                        f.type = parts[3]
                    elif parts[1] == "HELP":
                        if f.help is not None:
                            raise ExpositionError("repeated HELP: %r" % line)
                        f.help = parts[3] if len(parts) == 4 else ""
                    continue
                if self.om:
                    raise ExpositionError("OpenMetrics allows only HELP/TYPE/UNIT/EOF comments: %r" % line)
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
            if not m:
                raise ExpositionError("bad sample line %r" % line)
            name, i = m.group(1), m.end()
            labels = {}
            if i < len(line) and line[i] == "{":
                labels, i = _parse_labels(line + "\n", i, line)
            if i >= len(line) or line[i] != " ":
                raise ExpositionError("expected a space before the value in %r" % line)
            rest = line[i + 1:].split(" ")
            if len(rest) not in (1, 2):
                raise ExpositionError("bad value/timestamp in %r" % line)
            value = _parse_value(rest[0], line)
            f = self._family_of(name)
            if f.type is None:
                raise ExpositionError("samples of %s before its TYPE" % f.name)
            if f is not current:
                raise ExpositionError("samples of family %s are not contiguous (line %r)" % (f.name, line))
            key = (name, tuple(sorted(labels.items())))
            if key in seen_series:
                raise ExpositionError("duplicate series %r" % (key,))
            seen_series.add(key)
            if f.type == "counter" and not value >= 0:
                raise ExpositionError("negative or NaN counter: %r" % line)
            f.samples.append((name, labels, value))
            self.samples.append((name, labels, value, f))
        for f in self.families.values():
            if f.type is None:
                raise ExpositionError("family %s has no TYPE" % f.name)
            if not self.om and f.type == "counter" and not f.name.endswith("_total"):
                raise ExpositionError("text-format counter %s does not end in _total" % f.name)

    def _check_histograms(self):
        for f in self.families.values():
            if f.type != "histogram":
                continue
            groups = {}
            for name, labels, value in f.samples:
                rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
                if name.endswith("_bucket"):
                    if "le" not in labels:
                        raise ExpositionError("bucket without le in %s" % f.name)
                    g["buckets"].append((_parse_value(labels["le"], labels["le"]), value))
                elif name.endswith("_sum"):
                    g["sum"] = value
                elif name.endswith("_count"):
                    g["count"] = value
            for rest, g in groups.items():
                b = g["buckets"]
                if not b or b[-1][0] != math.inf:
                    raise ExpositionError("%s%r: no +Inf bucket (or not last)" % (f.name, rest))
                if any(b[i][0] >= b[i + 1][0] for i in range(len(b) - 1)):
                    raise ExpositionError("%s%r: le bounds not increasing" % (f.name, rest))
                if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
                    raise ExpositionError("%s%r: buckets not cumulative" % (f.name, rest))
                if g["count"] is None or g["sum"] is None:
                    raise ExpositionError("%s%r: _count or _sum missing" % (f.name, rest))
                if g["count"] != b[-1][1]:
                    raise ExpositionError("%s%r: _count %s != +Inf bucket %s" % (f.name, rest, g["count"], b[-1][1]))

    # -- queries --
    def names(self):
        """Every sample name on the page (e.g. x_bucket, x_sum, x_count, y_total, z)."""
        return {s[0] for s in self.samples}

    def find(self, name, **labels):
        """[(labels, value)] of samples called `name` whose labels include `labels`."""
        return [(lab, v) for n, lab, v, _ in self.samples
                if n == name and all(lab.get(k) == str(val) for k, val in labels.items())]

    def value(self, name, **labels):
        """Sum of the matching samples (0 when none; use find() to test presence)."""
        return sum(v for _, v in self.find(name, **labels))

    def one(self, name, **labels):
        """The value of exactly one matching sample."""
        found = self.find(name, **labels)
        if len(found) != 1:
            raise AssertionError("expected one %s%r, found %d" % (name, labels, len(found)))
        return found[0][1]

    def label_sets(self, name):
        return [lab for n, lab, _, _ in self.samples if n == name]

    def family(self, name):
        """The family a sample or family name belongs to (None when absent)."""
        f = self.families.get(name)
        if f is None:
            try:
                f = self._family_of(name)
            except ExpositionError:
                return None
        return f


def scrape(srv, openmetrics=False):
    """(Content-Type, text) of GET /metrics."""
    headers = {"Accept": OM_ACCEPT} if openmetrics else {}
    st, h, body = srv.request("GET", "/metrics", headers=headers)
    if st != 200:
        raise AssertionError("GET /metrics: %d %r" % (st, body[:300]))
    return h.get("content-type", ""), body.decode()


def metrics(srv, openmetrics=False):
    """The parsed (and checked) /metrics page."""
    return Exposition(scrape(srv, openmetrics)[1], openmetrics)


def settled_metrics(srv, before, requests, timeout=10, **labels):
    """The /metrics page once the server has accounted for `requests` more inference requests
    (matching `labels`) than in `before`. A request is counted after its response is written, so
    a client can hold the response an instant before the count moves: read exact figures from here."""
    def ready():
        m = metrics(srv)
        n = m.value("ortserve_requests_total", **labels) - before.value("ortserve_requests_total", **labels)
        return m if n >= requests else None
    return wait_until(ready, timeout, "%d more requests counted in /metrics" % requests, interval=0.005)


# ---- promtool ----------------------------------------------------------------------------------------

def promtool_check_metrics(text):
    """(exit code, list of findings) of `promtool check metrics` on text."""
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    return p.returncode, [line for line in out.splitlines() if line.strip()]


def promtool_parse_openmetrics(text, workdir):
    """Runs the OpenMetrics text through Prometheus's own OpenMetrics parser (`promtool tsdb
    create-blocks-from openmetrics`, which needs a timestamp on every sample, so one is appended).
    Returns (ok, output)."""
    ts = int(time.time())
    out = []
    for line in text.split("\n"):
        out.append(line if (not line or line.startswith("#")) else "%s %d" % (line, ts))
    src = os.path.join(workdir, "scrape.om")
    with open(src, "w") as f:
        f.write("\n".join(out))
    blocks = os.path.join(workdir, "blocks")
    shutil.rmtree(blocks, ignore_errors=True)
    p = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", src, blocks],
                       capture_output=True, timeout=120)
    msg = (p.stdout + p.stderr).decode(errors="replace")
    return p.returncode == 0 and "error" not in msg.lower() and "expected" not in msg.lower(), msg


# ---- PromQL ---------------------------------------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "inf", "nan", "atan2", "start", "end",
}


def promql_metric_names(expr):
    """Metric names an expression selects (identifiers that are neither functions, aggregation
    operators, keywords, label names in by/without/on/ignoring/group_* clauses, nor inside strings,
    label matchers or range/offset durations). Grafana variables ($model, $__rate_interval) are
    dropped first."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    e = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", "1", e)  # Grafana variables
    e = re.sub(r"\{[^{}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        ident, call = m.group(1), m.group(2)
        if call or ident in _PROMQL_KEYWORDS:
            continue
        # durations after offset (offset 5m) and number suffixes are already excluded by the lookbehind
        names.add(ident)
    return names


# ---- OTLP receiver ---------------------------------------------------------------------------------

class OtlpReceiver:
    """An OTLP/HTTP (JSON) trace receiver on 127.0.0.1:<ephemeral>, serving in a thread.
    .endpoint is the URL to give ortserve; .bodies the decoded POST bodies; .spans() flattens them.
    discard=True only counts requests (for benchmarks). status: the HTTP status to answer."""

    def __init__(self, discard=False, status=200):
        self.bodies, self.paths, self.content_types = [], [], []
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                with outer.lock:
                    outer.requests += 1
                    if not discard:
                        outer.paths.append(self.path)
                        outer.content_types.append(self.headers.get("Content-Type"))
                        outer.bodies.append(json.loads(data))
                body = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def spans(self):
        """[(span dict, resource attributes dict)] of everything received so far."""
        out = []
        with self.lock:
            bodies = list(self.bodies)
        for b in bodies:
            for rs in b.get("resourceSpans", []):
                res = attrs_dict(rs.get("resource", {}).get("attributes", []))
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        out.append((sp, res))
        return out

    def trace(self, trace_id):
        return [s for s, _ in self.spans() if s["traceId"] == trace_id]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def attrs_dict(attrs):
    """OTLP attribute list -> {key: python value} (intValue strings become ints)."""
    out = {}
    for a in attrs:
        v = a["value"]
        if "stringValue" in v:
            out[a["key"]] = v["stringValue"]
        elif "intValue" in v:
            out[a["key"]] = int(v["intValue"])
        elif "doubleValue" in v:
            out[a["key"]] = float(v["doubleValue"])
        elif "boolValue" in v:
            out[a["key"]] = bool(v["boolValue"])
        else:
            out[a["key"]] = v
    return out


# ---- Prometheus ----------------------------------------------------------------------------------------

def free_port():
    """A port that was free a moment ago on 127.0.0.1 (for programs that need a port number up
    front; callers retry when it is taken in between)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A real Prometheus (Debian's /usr/bin/prometheus) on 127.0.0.1, scraping `targets` (host:port)
    as job "ortserve" every `interval`, with optional rule files, its TSDB in a temporary directory.
    Use as a context manager; .query(expr), .api(path, **params)."""

    def __init__(self, targets, rule_files=(), interval="1s", timeout=60):
        self.tmp = tempfile.mkdtemp(prefix="osv-prom-")
        self.config = os.path.join(self.tmp, "prometheus.yml")
        rules = "".join("  - %s\n" % json.dumps(os.path.abspath(r)) for r in rule_files)
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n"
                    % (interval, interval, interval))
            if rules:
                f.write("rule_files:\n" + rules)
            f.write("scrape_configs:\n  - job_name: ortserve\n    static_configs:\n      - targets: [%s]\n"
                    % ", ".join(json.dumps(t) for t in targets))
        self.proc, self.log = None, None
        self.log_path = os.path.join(self.tmp, "prometheus.log")
        for attempt in range(3):  # the port picked may be taken before Prometheus binds it
            self.port = free_port()
            self.log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [PROMETHEUS, "--config.file=" + self.config, "--storage.tsdb.path=" + os.path.join(self.tmp, "data"),
                 "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn",
                 "--web.console.templates=" + self.tmp, "--web.console.libraries=" + self.tmp],
                stdout=self.log, stderr=subprocess.STDOUT)
            if self._wait_ready(timeout):
                return
            self._kill()
        raise RuntimeError("Prometheus did not become ready:\n" + self.logs())

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/-/ready")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)  # paces the readiness poll (bounded by the deadline)
        return False

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-5000:]
        except OSError:
            return ""

    def api(self, path, **params):
        """The `data` of a Prometheus HTTP API call (GET /api/v1/<path>?params)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("GET", "/api/v1/%s?%s" % (path, urllib.parse.urlencode(params)))
            r = c.getresponse()
            body = json.loads(r.read())
        finally:
            c.close()
        if body.get("status") != "success":
            raise AssertionError("Prometheus API %s %r: %r" % (path, params, body))
        return body["data"]

    def query(self, expr):
        """Instant query -> [(labels dict, float value)] (vector) or [(None, value)] (scalar)."""
        d = self.api("query", query=expr)
        if d["resultType"] == "vector":
            return [(r["metric"], float(r["value"][1])) for r in d["result"]]
        if d["resultType"] == "scalar":
            return [(None, float(d["result"][1]))]
        return d["result"]

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()

    def close(self):
        self._kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- access log and process ----------------------------------------------------------------------------

def log_records(srv):
    """Every JSON line of the server's log (stdout+stderr), parsed; other lines skipped."""
    out = []
    for line in srv.logs().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def access_records(srv):
    return [r for r in log_records(srv) if r.get("event") == "access"]


def wait_access(srv, pred, timeout, what):
    """Polls the log until an access record satisfies pred; returns it."""
    def find():
        for r in access_records(srv):
            if pred(r):
                return r
        return None
    return wait_until(find, timeout, what, interval=0.001)


def thread_names(pid):
    """comm of every thread of process pid."""
    names = []
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open(os.path.join(base, tid, "comm")) as f:
                names.append(f.read().strip())
        except OSError:
            pass  # the thread exited meanwhile
    return names


def cgroup_memory_known():
    """True when the process's cgroup exposes its memory usage (v2 memory.current or v1 usage)."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0":
            return os.path.exists("/sys/fs/cgroup%s/memory.current" % parts[2].rstrip("/")) or \
                os.path.exists("/sys/fs/cgroup/memory.current")
        if len(parts) == 3 and "memory" in parts[1].split(","):
            return os.path.exists("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    return False
