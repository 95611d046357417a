"""server.py — test support: starts the real `ortserve serve` on 127.0.0.1 with an ephemeral port
and talks HTTP/1.1 to it (stdlib http.client + numpy). Used by every e2e server test.

Readiness is detected by polling the port file the server writes once it listens (no sleeps as
synchronisation: each poll is bounded and the whole wait has a deadline)."""
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import numpy as np

BIN_DIR = os.environ.get("OSV_BINARY_DIR", "build/release")
BIN = os.path.join(BIN_DIR, "ortserve")
MODELS = os.environ.get("OSV_TEST_MODELS", "var/models")
REAL = os.environ.get("OSV_REAL_MODELS", "third_party/models")
# Start-up waits are multiplied by this: `make test-arm64` sets it, emulated arm64 loads models 10-50x slower.
TIME_SCALE = float(os.environ.get("OSV_TEST_TIME_SCALE", "1"))
# A command the server binary runs under, e.g. "valgrind --error-exitcode=99" (tools/valgrind_e2e.sh).
WRAPPER = shlex.split(os.environ.get("OSV_SERVER_WRAPPER", ""))


def link(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def make_repo(root, models, configs=None, files=None):
    """models: {name: model file in MODELS (or absolute path)}; configs: {name: dict}; files: {relpath: text}."""
    for name, f in models.items():
        link(f if os.path.isabs(f) else os.path.join(MODELS, f), os.path.join(root, name, "1", "model.onnx"))
    for name, cfg in (configs or {}).items():
        with open(os.path.join(root, name, "config.json"), "w") as fh:
            json.dump(cfg, fh)
    for rel, text in (files or {}).items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w") as fh:
            fh.write(text)
    return root


class Server:
    """A running ortserve. Use as a context manager; .port, .request(), .stop()."""

    def __init__(self, repo, *args, env=None, wait_ready=True, preexec_fn=None):
        self.tmp = tempfile.mkdtemp(prefix="osv-e2e-")
        self.port_file = os.path.join(self.tmp, "port")
        self.log_path = os.path.join(self.tmp, "server.log")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*WRAPPER, BIN, "serve", "--model-repository", repo, "--host", "127.0.0.1",
                                      "--port", "0", "--port-file", self.port_file, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=full_env, preexec_fn=preexec_fn)
        self.port = self._wait_port(30 * TIME_SCALE)
        if wait_ready:
            self.wait_ready(30 * TIME_SCALE)

    def _wait_port(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ortserve exited with %d:\n%s" % (self.proc.returncode, self.logs()))
            try:
                with open(self.port_file) as f:
                    return int(f.read())
            except (OSError, ValueError):
                time.sleep(0.02)  # bounded poll of the port file (the wait has a deadline)
        self.proc.kill()  # a server that never listened must not outlive the test
        self.proc.wait()
        raise RuntimeError("ortserve did not start listening:\n" + self.logs())

    def wait_live(self, timeout=30):
        wait_until(lambda: self.request("GET", "/v2/health/live")[0] == 200, timeout, "ortserve to be live")

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st, _, _ = self.request("GET", "/v2/health/ready")
            if st == 200:
                return
            time.sleep(0.02)
        raise RuntimeError("ortserve never became ready:\n" + self.logs())

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """Returns (status, headers dict with lower-case names, body bytes)."""
        c = conn or self.conn()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            if conn is None:
                c.close()

    def json(self, method, path, obj=None, headers=None, conn=None):
        body = None if obj is None else (obj if isinstance(obj, (bytes, str)) else json.dumps(obj))
        st, h, data = self.request(method, path, body, headers, conn)
        return st, (json.loads(data) if data else None)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def finish(self):
        """Stops the server (SIGTERM, drain) and removes its files; returns the exit status, which a test
        should assert is 0 (a sanitizer report makes it non-zero). The log is printed when it is not."""
        rc = self.stop()
        if rc != 0:
            print("ortserve exited with %s; its log:\n%s" % (rc, self.logs()))
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- helpers shared by the e2e server tests -------------------------------------------------------

def slow_iters(run, seconds, lo=20000, hi=5000000):
    """Loop iterations that keep slow.onnx busy about `seconds` on this machine: run(iters) sends one
    request and waits for its answer (asserting it succeeded); a 2000-iteration run is timed and scaled."""
    t0 = time.monotonic()
    run(2000)
    return int(min(max(2000 * seconds / max(time.monotonic() - t0, 1e-4), lo), hi))


def wait_until(pred, timeout, what, interval=0.002):
    """Polls pred() until it returns a truthy value (returned) or `timeout` seconds pass (AssertionError).
    Each poll is bounded; the sleep between polls only paces the polling, it never stands in for a
    condition."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version, self.status, self.reason, self.headers, self.body = version, status, reason, headers, body

    def header(self, name):
        """Value of the first header `name` (case-insensitive) or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Response(%d, %r, %r)" % (self.status, self.headers, self.body[:300])


class RawConn:
    """A raw TCP connection for framing-level tests: send exact bytes, read responses one by one."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("peer closed the connection")
        self.buf += chunk

    def read_response(self, head_only=False):
        """Reads one response (a 100 Continue is returned as a response of its own). head_only: the
        request was HEAD (no body follows whatever Content-Length says)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        r = Response(version, int(status), reason, headers, b"")
        if r.status == 100 or head_only:
            return r
        n = int(r.header("Content-Length") or 0)
        while len(self.buf) < n:
            self._fill()
        r.body, self.buf = self.buf[:n], self.buf[n:]
        return r

    def closed_by_peer(self, timeout=10):
        """True when the server closes the connection (EOF) within `timeout` s with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        self.buf += data
        return data == b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request_bytes(method, path, body=b"", headers=None, version="1.1", content_length=True):
    """One HTTP request as bytes (Host and, with a body, Content-Length added unless given)."""
    h = [("Host", "127.0.0.1")]
    names = {k.lower() for k, _ in (headers or [])}
    if content_length and "content-length" not in names and "transfer-encoding" not in names and \
            (body or method in ("POST", "PUT")):
        h.append(("Content-Length", str(len(body))))
    h += list(headers or [])
    head = "%s %s HTTP/%s\r\n" % (method, path, version) + "".join("%s: %s\r\n" % kv for kv in h) + "\r\n"
    return head.encode("latin-1") + body


# ---- KServe v2 request/response encoding ----------------------------------------------------------

NP_DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
             "FP32": np.float32, "FP64": np.float64, "BF16": np.uint16}  # BF16: raw bits


def bytes_serialize(items):
    """Triton's binary BYTES layout: for each element a u32 little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def bytes_deserialize(data):
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("<I", data, i)
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    if i != len(data):
        raise ValueError("trailing bytes in BYTES tensor")
    return out


def binary_body(header, blobs):
    """(body, headers) of a binary-extension request: JSON header then the raw tensors."""
    hdr = json.dumps(header).encode()
    return hdr + b"".join(blobs), {"Inference-Header-Content-Length": str(len(hdr))}


def split_binary(headers, body):
    """(JSON header dict, {output name: raw bytes}) of a response that may carry binary outputs."""
    n = headers.get("inference-header-content-length")
    if n is None:
        return json.loads(body), {}
    n = int(n)
    meta = json.loads(body[:n])
    blobs, pos = {}, n
    for o in meta["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            blobs[o["name"]] = body[pos:pos + size]
            pos += size
    if pos != len(body):
        raise ValueError("binary section is %d bytes, outputs account for %d" % (len(body) - n, pos - n))
    return meta, blobs


def _tcp_queues():
    """{(local port, remote port): (tx_queue, rx_queue)} of the loopback IPv4 TCP sockets."""
    out = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            lport, rport = int(parts[1].split(":")[1], 16), int(parts[2].split(":")[1], 16)
            tx, rx = (int(v, 16) for v in parts[4].split(":"))
            out[(lport, rport)] = (tx, rx)
    return out


def server_consumed(server_port, sock):
    """True once the server process has read every byte the client sent on `sock`: the server side's
    receive queue is empty and the client side has nothing unacknowledged (/proc/net/tcp). A request
    whose bytes the server has read and that has no response yet is provably in flight. (An
    acknowledgement can be delayed by 40 ms or more, so a poll on this can take that long.)"""
    cport = sock.getsockname()[1]
    q = _tcp_queues()
    srv_side, cli_side = q.get((server_port, cport)), q.get((cport, server_port))
    return srv_side is not None and cli_side is not None and srv_side[1] == 0 and cli_side[0] == 0


def stats_of(srv, model, version=None):
    path = "/v2/models/%s%s/stats" % (model, "" if version is None else "/versions/%s" % version)
    st, body = srv.json("GET", path)
    if st != 200:
        raise AssertionError("stats of %s: %d %r" % (model, st, body))
    return body["model_stats"][0]


_mlp_weights = None


def tanh_reference(x):
    """tanh.onnx's output in float64 numpy: 64 x Tanh, element by element."""
    ref = np.asarray(x, np.float64)
    for _ in range(64):
        ref = np.tanh(ref)
    return ref


def mlp_reference(x):
    """Forward pass of mlp.onnx in float64 numpy from its own initializers (Gemm, ReLU, Gemm, softmax)."""
    global _mlp_weights
    if _mlp_weights is None:
        import onnx
        from onnx import numpy_helper
        m = onnx.load(os.path.join(MODELS, "mlp.onnx"))
        _mlp_weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    w = _mlp_weights
    h = np.maximum(np.asarray(x, np.float64) @ w["fc1.weight"].T + w["fc1.bias"], 0)
    logits = h @ w["fc2.weight"].T + w["fc2.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mlp_request(x, **extra):
    """JSON infer request for mlp with input x (FP32 [N,64])."""
    req = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    req.update(extra)
    return req


def check_mlp(testcase, x, body_or_obj):
    """Asserts a JSON mlp response holds mlp(x)."""
    r = json.loads(body_or_obj) if isinstance(body_or_obj, (bytes, str)) else body_or_obj
    out = r["outputs"][0]
    testcase.assertEqual((out["name"], out["datatype"], out["shape"]), ("probs", "FP32", [x.shape[0], 10]))
    np.testing.assert_allclose(np.array(out["data"]).reshape(x.shape[0], 10), mlp_reference(x), rtol=1e-5,
                               atol=1e-6)


def wait_stats(srv, model, pred, what, timeout=20):
    """A request is recorded in its model's statistics once its response has been written, so a client
    that has just read a response can see statistics from a moment before: poll (bounded) until
    pred(stats) holds and return those statistics."""
    last = []

    def check():
        last[:] = [stats_of(srv, model)]
        return pred(last[0])
    try:
        wait_until(check, timeout, what)
    except AssertionError as e:
        raise AssertionError("%s; last statistics: %s" % (e, json.dumps(last[0] if last else None)))
    return last[0]
