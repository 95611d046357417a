"""server.py — test support: starts the real `ortserve serve` on 127.0.0.1 with an ephemeral port
and talks HTTP/1.1 to it (stdlib http.client + numpy). Used by every e2e server test.

Readiness is detected by polling the port file the server writes once it listens (no sleeps as
synchronisation: each poll is bounded and the whole wait has a deadline)."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

BIN_DIR = os.environ.get("OSV_BINARY_DIR", "build/release")
BIN = os.path.join(BIN_DIR, "ortserve")
MODELS = os.environ.get("OSV_TEST_MODELS", "var/models")
REAL = os.environ.get("OSV_REAL_MODELS", "third_party/models")


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

    def __init__(self, repo, *args, env=None, wait_ready=True):
        self.tmp = tempfile.mkdtemp(prefix="osv-e2e-")
        self.port_file = os.path.join(self.tmp, "port")
        self.log_path = os.path.join(self.tmp, "server.log")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BIN, "serve", "--model-repository", repo, "--host", "127.0.0.1", "--port", "0",
                                      "--port-file", self.port_file, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        self.port = self._wait_port(30)
        if wait_ready:
            self.wait_ready(30)

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
        raise RuntimeError("ortserve did not start listening:\n" + self.logs())

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
