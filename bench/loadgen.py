"""loadgen.py — a small HTTP/1.1 load generator for bench/overload.py and bench/soak.py: starting
ortserve on 127.0.0.1 with a temporary repository, closed-loop runs (N clients back to back, to
measure capacity) and open-loop runs (requests scheduled at a fixed rate whatever the answers, as
real traffic arrives), over keep-alive connections with pre-built request bytes. Latency is taken
from the moment a request was due, so a generator that falls behind shows it (no coordinated
omission); each result also says how late it was sent. Figures only: nothing here asserts."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "var", "models")


def pct(values, p):
    """p-th percentile (nearest rank) of values; nan when empty."""
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Server:
    """ortserve on 127.0.0.1:ephemeral over {name: model file in var/models}."""

    def __init__(self, binary, models, args=(), log=os.devnull):
        self.dir = tempfile.mkdtemp(prefix="osv-bench-")
        repo = os.path.join(self.dir, "repo")
        for name, f in models.items():
            os.makedirs(os.path.join(repo, name, "1"))
            shutil.copyfile(os.path.join(MODELS, f), os.path.join(repo, name, "1", "model.onnx"))
        pf = os.path.join(self.dir, "port")
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([binary, "serve", "--model-repository", repo, "--host", "127.0.0.1",
                                      "--port", "0", "--port-file", pf, *args], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("ortserve exited with %d" % self.proc.returncode)
            try:
                with open(pf) as f:
                    self.port = int(f.read())
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("ortserve did not start")
                time.sleep(0.01)
        while self.exchange(b"GET /v2/health/ready HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")[0] != 200:
            time.sleep(0.01)

    def exchange(self, req):
        c = Conn(self.port)
        try:
            return c.send(req)
        finally:
            c.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def header(lower_head, name):
    """The value (bytes, stripped) of header `name` (lower case) in a lower-cased response head, or None."""
    i = lower_head.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    j = lower_head.find(b"\r\n", i + 2)
    return lower_head[i + len(name) + 3:j if j >= 0 else len(lower_head)].strip()


class Conn:
    """One keep-alive connection; send() returns (status, headers bytes, body bytes)."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, req):
        if self.sock is None:
            self._connect()
        self.sock.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        status = int(head[9:12])
        lower = head.lower()
        n = int(header(lower, b"content-length") or 0)
        while len(rest) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed by the server mid-body")
            rest += chunk
        body, self.buf = rest[:n], rest[n:]
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, head, body

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def request_bytes(path, body, headers=()):
    h = "".join("%s: %s\r\n" % kv for kv in headers)
    return ("POST %s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n%s\r\n" % (path, len(body), h)).encode() + body


def json_request(path, obj):
    return request_bytes(path, json.dumps(obj).encode())


def binary_request(path, header, blobs):
    hdr = json.dumps(header).encode()
    return request_bytes(path, hdr + b"".join(blobs), [("Inference-Header-Content-Length", str(len(hdr)))])


class Result:
    __slots__ = ("kind", "due", "sent", "done", "status", "retry_after", "error")

    def __init__(self, kind, due, sent, done, status, retry_after=None, error=None):
        self.kind, self.due, self.sent, self.done = kind, due, sent, done
        self.status, self.retry_after, self.error = status, retry_after, error

    @property
    def latency(self):  # from the moment the request was due
        return self.done - self.due


def _one(conn, kind, req, due, check):
    sent = time.monotonic()
    try:
        status, head, body = conn.send(req)
    except (OSError, ValueError) as e:
        conn.close()
        return Result(kind, due, sent, time.monotonic(), 0, error=repr(e))
    done = time.monotonic()
    ra = header(head.lower(), b"retry-after")
    ra = ra.decode() if ra is not None else None
    err = None
    if status == 200 and check is not None:
        err = check(kind, body)
    return Result(kind, due, sent, done, status, ra, err)


def closed_loop(port, pick, clients, seconds, check=None):
    """`clients` connections sending back to back for `seconds`; pick(i) -> (kind, request bytes).
    Returns the results."""
    out, lock = [], threading.Lock()
    end = time.monotonic() + seconds

    def run(k):
        conn, i, mine = Conn(port), k, []
        while time.monotonic() < end:
            kind, req = pick(i)
            mine.append(_one(conn, kind, req, time.monotonic(), check))
            i += clients
        conn.close()
        with lock:
            out.extend(mine)
    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 300)
    return out


def open_loop(port, pick, rate, seconds, connections, check=None, on_tick=None, tick_s=5.0):
    """Requests due at t0 + i/rate for `seconds`, spread over `connections` keep-alive connections
    (a connection takes the next due request when free). on_tick(elapsed) is called about every tick_s
    seconds from the calling thread. Returns the results."""
    total = int(rate * seconds)
    out, lock = [], threading.Lock()
    nxt = [0]
    t0 = time.monotonic() + 0.2

    def run():
        conn, mine = Conn(port), []
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= total:
                break
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            kind, req = pick(i)
            mine.append(_one(conn, kind, req, due, check))
        conn.close()
        with lock:
            out.extend(mine)
    threads = [threading.Thread(target=run, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    next_tick = time.monotonic() + tick_s
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)  # pacing the ticks; the threads keep their own schedule
        if on_tick is not None and time.monotonic() >= next_tick:
            on_tick(time.monotonic() - t0)
            next_tick += tick_s
    return out
