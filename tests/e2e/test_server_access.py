#!/usr/bin/python3
"""test_server_access.py — access control on the real server (docs/RELIABILITY.md, "Access control"):

- the default bind address is 127.0.0.1 (the listening socket, read from /proc/net/tcp*);
- --auth-token-file: every endpoint but the health ones (server live/ready, model ready) answers 401
  with WWW-Authenticate: Bearer and a JSON error without a valid `Authorization: Bearer` token, also
  HEAD, unknown paths and requests with bodies (which are not read: the connection closes); a keep-
  alive connection survives a 401 without a body; either of two tokens works; near misses do not;
  the variable ORTSERVE_AUTH_TOKEN_FILE works like the flag; the file is checked at start-up
  (refused when writable by others, empty or malformed — the message names the line, never the
  token; a warning when readable by others); SIGHUP re-reads it (a bad file keeps the tokens in use);
- TLS through the reverse proxy set-up in deploy/nginx/ortserve-tls.conf, run with Debian's nginx on
  127.0.0.1: health, 401 passed through, JSON and an 8 MB binary infer over HTTPS;
- confinement: model names outside the safe character set are refused by the repository endpoints,
  models whose files resolve outside the repository (a symlinked directory or file) are not loaded;
  a shared-memory key that is a symlink in /dev/shm is refused (shm_open's O_NOFOLLOW).

Servers bind 127.0.0.1 on ephemeral ports; nginx listens on 127.0.0.1 only."""
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from obs_support import free_port, log_records  # noqa: E402
from server import (BIN, MODELS, RawConn, Server, binary_body, check_mlp, make_repo, mlp_request,  # noqa: E402
                    request_bytes, split_binary, wait_until)

SRC = os.environ.get("OSV_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TOKENS = ["secret-token-1", "tok2/+~._-AZaz09=="]
X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)

# (method, path, body): every endpoint family that needs a token; with the token each gives `status`.
PROTECTED = [
    ("GET", "/v2", None, 200), ("GET", "/v2/models/mlp", None, 200), ("GET", "/v2/models/mlp/versions/1", None, 200),
    ("GET", "/v2/models/mlp/config", None, 200), ("GET", "/v2/models/mlp/stats", None, 200),
    ("GET", "/v2/models/stats", None, 200), ("GET", "/metrics", None, 200),
    ("POST", "/v2/models/mlp/infer", json.dumps(mlp_request(X)), 200),
    ("POST", "/v2/models/mlp/versions/1/infer", json.dumps(mlp_request(X)), 200),
    ("POST", "/v2/repository/index", "{}", 200), ("POST", "/v2/repository/models/mlp/load", None, 200),
    ("GET", "/v2/systemsharedmemory/status", None, 200), ("GET", "/v2/cudasharedmemory/status", None, 200),
    ("POST", "/v2/models/mlp/classify", b"\xff\xd8\xff", 400), ("POST", "/infer", json.dumps(mlp_request(X)), 200),
    ("GET", "/v2/models/nope", None, 404), ("GET", "/nothing/here", None, 404),
]
EXEMPT = ["/v2/health/live", "/v2/health/ready", "/v2/models/mlp/ready", "/v2/models/mlp/versions/1/ready"]


def write_tokens(path, lines, mode=0o600):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, mode)


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def listening(port):
    """[(family, address hex)] of the sockets listening on `port` (/proc/net/tcp and tcp6)."""
    out = []
    for fam in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + fam) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, p = parts[1].rsplit(":", 1)
            if int(p, 16) == port and parts[3] == "0A":  # 0A = LISTEN
                out.append((fam, addr))
    return out


class DefaultBind(unittest.TestCase):
    def test_binds_loopback_unless_told_otherwise(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(os.path.join(tmp, "repo"), {"mlp": "mlp.onnx"})
            port_file = os.path.join(tmp, "port")
            # No --host: the default. (Server() always passes --host 127.0.0.1, so start it directly.)
            proc = subprocess.Popen([BIN, "serve", "--model-repository", repo, "--port", "0", "--port-file",
                                     port_file, "--log-level", "error"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                def read_port():
                    try:
                        with open(port_file) as f:
                            return int(f.read())
                    except (OSError, ValueError):
                        return None
                port = wait_until(read_port, 30, "the port file")
                # 127.0.0.1 and nothing else (one SO_REUSEPORT listener per event loop)
                self.assertEqual(set(listening(port)), {("tcp", "0100007F")})
            finally:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=30), 0)
        p = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
        self.assertIn("default 127.0.0.1", p.stdout)


class Auth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.tokens = os.path.join(cls.tmp.name, "tokens")
        write_tokens(cls.tokens, ["# ortserve tokens", "", "  " + TOKENS[0] + "  ", TOKENS[1]])
        cls.repo = make_repo(os.path.join(cls.tmp.name, "repo"), {"mlp": "mlp.onnx"})
        cls.srv = Server(cls.repo, "--auth-token-file", cls.tokens)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def check_401(self, st, h, data, invalid):
        self.assertEqual(st, 401, data)
        self.assertEqual(h.get("www-authenticate"),
                         'Bearer realm="ortserve", error="invalid_token"' if invalid else 'Bearer realm="ortserve"')
        self.assertEqual(h.get("content-type"), "application/json")
        err = json.loads(data)
        self.assertEqual(list(err), ["error"])
        self.assertIn("invalid bearer token" if invalid else "Authorization: Bearer", err["error"])

    def test_health_endpoints_need_no_token(self):
        for path in EXEMPT:
            st, _, data = self.srv.request("GET", path)
            self.assertEqual(st, 200, (path, data))
            st, _, _ = self.srv.request("HEAD", path)
            self.assertEqual(st, 200, path)

    def test_everything_else_needs_a_token(self):
        for method, path, body, status in PROTECTED:
            st, h, data = self.srv.request(method, path, body)
            self.check_401(st, h, data, invalid=False)
            st, h, data = self.srv.request(method, path, body, {"Authorization": "Bearer wrong"})
            self.check_401(st, h, data, invalid=True)
            for tok in TOKENS:
                st, h, data = self.srv.request(method, path, body, bearer(tok))
                self.assertEqual(st, status, (method, path, data[:200]))
                self.assertNotIn("www-authenticate", h)
        st, h, data = self.srv.request("HEAD", "/v2/models/mlp")
        self.assertEqual((st, data, h.get("www-authenticate")), (401, b"", 'Bearer realm="ortserve"'))

    def test_near_misses_are_refused(self):
        t = TOKENS[0]
        for value in ["Bearer", "Bearer ", "Basic " + t, t, "Bearer " + t[:-1], "Bearer " + t + "x",
                      "Bearer x" + t, "Bearer " + t.upper(), "Bearer " + TOKENS[0] + TOKENS[1], "Token " + t,
                      "Bearer " + t + " " + t, "Bearer\t" + t[:-1]]:
            st, h, data = self.srv.request("GET", "/v2/models/mlp", headers={"Authorization": value})
            self.assertEqual(st, 401, value)
        for value in ["bearer " + t, "BEARER " + t, "Bearer   " + t, "Bearer " + t + "  "]:  # RFC 9110: case-
            st, _, data = self.srv.request("GET", "/v2/models/mlp", headers={"Authorization": value})  # insensitive
            self.assertEqual(st, 200, (value, data))

    def test_401_closes_only_when_a_body_is_left_unread(self):
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("GET", "/v2/models/mlp"))
            r = c.read_response()
            self.assertEqual((r.status, r.header("Connection")), (401, None))
            c.send(request_bytes("GET", "/v2/models/mlp", headers=[("Authorization", "Bearer " + TOKENS[0])]))
            self.assertEqual(c.read_response().status, 200)  # the same connection
        body = json.dumps(mlp_request(X)).encode()
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("POST", "/v2/models/mlp/infer", body))
            r = c.read_response()
            self.assertEqual((r.status, r.header("Connection")), (401, "close"))
            self.assertTrue(c.closed_by_peer(10))
        with RawConn(self.srv.port) as c:  # Expect: 100-continue: the final 401, never a 100
            c.send(request_bytes("POST", "/v2/models/mlp/infer", b"", [("Content-Length", str(len(body))),
                                                                       ("Expect", "100-continue")]))
            r = c.read_response()
            self.assertEqual((r.status, r.header("Connection")), (401, "close"))
        with RawConn(self.srv.port) as c:  # with the token, the same request runs
            c.send(request_bytes("POST", "/v2/models/mlp/infer", body, [("Authorization", "Bearer " + TOKENS[1])]))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            check_mlp(self, X, r.body)

    def test_401s_are_counted(self):
        tok = bearer(TOKENS[0])
        st, _, page = self.srv.request("GET", "/metrics", headers=tok)
        before = sum(float(line.split()[-1]) for line in page.decode().splitlines()
                     if line.startswith('ortserve_http_responses_total{code="401"}'))
        self.srv.request("GET", "/v2")

        def count():
            page = self.srv.request("GET", "/metrics", headers=tok)[2]
            return sum(float(line.split()[-1]) for line in page.decode().splitlines()
                       if line.startswith('ortserve_http_responses_total{code="401"}'))
        # a response is counted just after it is written: the client can scrape an instant before (bounded poll)
        wait_until(lambda: count() >= before + 1, 10, "the 401 to be counted")
        self.assertEqual(count(), before + 1)


class TokenFile(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.repo = make_repo(os.path.join(self.tmp.name, "repo"), {"mlp": "mlp.onnx"})
        self.path = os.path.join(self.tmp.name, "tokens")

    def tearDown(self):
        self.tmp.cleanup()

    def start_fails(self, *args, env=None):
        p = subprocess.run([BIN, "serve", "--model-repository", self.repo, "--port", "0", *args], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, **(env or {})))
        self.assertEqual(p.returncode, 1, p.stderr)
        return p.stdout + p.stderr

    def test_bad_files_refuse_to_start(self):
        write_tokens(self.path, ["good-token"], 0o602)
        self.assertIn("writable by others", self.start_fails("--auth-token-file", self.path))
        write_tokens(self.path, ["# only a comment", ""])
        self.assertIn("holds no token", self.start_fails("--auth-token-file", self.path))
        write_tokens(self.path, ["good-token", "", "has space-in-it-SECRET"])
        out = self.start_fails("--auth-token-file", self.path)
        self.assertIn("line 3", out)
        self.assertNotIn("SECRET", out)
        write_tokens(self.path, ["t%d" % i for i in range(17)])
        self.assertIn("more than 16 tokens", self.start_fails("--auth-token-file", self.path))
        self.assertIn("cannot open", self.start_fails("--auth-token-file", self.path + ".missing"))
        self.assertIn("not a regular file", self.start_fails("--auth-token-file", self.tmp.name))
        write_tokens(self.path, [""])
        self.assertIn("holds no token", self.start_fails(env={"ORTSERVE_AUTH_TOKEN_FILE": self.path}))

    def test_variable_readable_file_warning_and_sighup_reload(self):
        write_tokens(self.path, ["first-token"], 0o644)
        srv = Server(self.repo, env={"ORTSERVE_AUTH_TOKEN_FILE": self.path})
        try:
            warn = [r for r in log_records(srv) if r.get("event") == "auth_token_file"]
            self.assertEqual(len(warn), 1)
            self.assertIn("readable by everyone", warn[0]["warning"])

            def status(tok):
                return srv.request("GET", "/v2/models/mlp", headers=bearer(tok))[0]
            self.assertEqual((status("first-token"), status("second-token")), (200, 401))
            # Rotation: add the new token, SIGHUP, then drop the old one, SIGHUP.
            write_tokens(self.path, ["first-token", "second-token"])
            srv.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: status("second-token") == 200, 10, "the reload to take the new token")
            write_tokens(self.path, ["second-token"])
            srv.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: status("first-token") == 401, 10, "the reload to drop the old token")
            # A bad file keeps the tokens in use (and says so).
            write_tokens(self.path, ["bad token"])
            srv.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: any(r.get("event") == "auth_reload_failed" for r in log_records(srv)), 10,
                       "the failed reload in the log")
            self.assertEqual((status("second-token"), status("first-token")), (200, 401))
            self.assertEqual(sum(r.get("event") == "auth_reloaded" for r in log_records(srv)), 2)
            self.assertIsNone(srv.proc.poll())  # SIGHUP does not stop the server
        finally:
            self.assertEqual(srv.finish(), 0)


class TlsReverseProxy(unittest.TestCase):
    def test_https_through_nginx(self):
        # tools/deps.sh test installs both: a missing one is a failure, not a skip
        self.assertTrue(shutil.which("nginx") and shutil.which("openssl"), "nginx and openssl are needed")
        with tempfile.TemporaryDirectory() as tmp:
            tokens = os.path.join(tmp, "tokens")
            write_tokens(tokens, [TOKENS[0]])
            srv = Server(make_repo(os.path.join(tmp, "repo"), {"mlp": "mlp.onnx", "scale2x": "scale2x.onnx"}),
                         "--auth-token-file", tokens, "--max-body-bytes", "64M",
                         "--deadline-ms", "0")  # 8 MB through a TLS proxy can outlast 500 ms
            nginx = None
            try:
                cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
                subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                               check=True, capture_output=True, timeout=60)
                tls_port = free_port()
                with open(os.path.join(SRC, "deploy", "nginx", "ortserve-tls.conf")) as f:
                    conf = f.read()
                for old, new in (("listen 443 ssl;", "listen 127.0.0.1:%d ssl;" % tls_port),
                                 ("server 127.0.0.1:8000;", "server 127.0.0.1:%d;" % srv.port),
                                 ("/etc/ssl/ortserve/fullchain.pem", cert), ("/etc/ssl/ortserve/privkey.pem", key)):
                    self.assertEqual(conf.count(old), 1, old)
                    conf = conf.replace(old, new)
                with open(os.path.join(tmp, "ortserve.conf"), "w") as f:
                    f.write(conf)
                with open(os.path.join(tmp, "nginx.conf"), "w") as f:
                    f.write("worker_processes 1;\npid %(t)s/nginx.pid;\nerror_log %(t)s/error.log warn;\n"
                            "daemon off;\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n"
                            "  client_body_temp_path %(t)s/body;\n  proxy_temp_path %(t)s/proxy;\n"
                            "  fastcgi_temp_path %(t)s/fcgi;\n  uwsgi_temp_path %(t)s/uwsgi;\n"
                            "  scgi_temp_path %(t)s/scgi;\n  include %(t)s/ortserve.conf;\n}\n" % {"t": tmp})
                nginx = subprocess.Popen(["nginx", "-e", os.path.join(tmp, "error.log"), "-p", tmp, "-c",
                                          os.path.join(tmp, "nginx.conf")], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
                ctx = ssl.create_default_context(cafile=cert)

                def https(method, path, body=None, headers=None):
                    c = http.client.HTTPSConnection("127.0.0.1", tls_port, context=ctx, timeout=60)
                    try:
                        c.request(method, path, body=body, headers=headers or {})
                        r = c.getresponse()
                        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), c.sock.version()
                    finally:
                        c.close()

                def up():
                    if nginx.poll() is not None:
                        raise AssertionError("nginx exited: %s" % nginx.stderr.read().decode())
                    try:
                        return https("GET", "/v2/health/ready")[0] == 200
                    except (ConnectionError, OSError):
                        return False
                wait_until(up, 30, "nginx to serve HTTPS", interval=0.05)
                self.assertEqual(set(listening(tls_port)), {("tcp", "0100007F")})

                st, h, data, version = https("GET", "/v2/models/mlp")
                self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
                self.assertEqual((st, h.get("www-authenticate")), (401, 'Bearer realm="ortserve"'), data)
                st, h, data, _ = https("POST", "/v2/models/mlp/infer", json.dumps(mlp_request(X)), bearer(TOKENS[0]))
                self.assertEqual(st, 200, data)
                check_mlp(self, X, data)
                n = 2 * 1024 * 1024  # 8 MB of tensor, streamed through nginx to ortserve and back
                v = np.random.default_rng(7).standard_normal(n).astype(np.float32)
                hdr = {"inputs": [{"name": "x", "shape": [n], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4 * n}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
                body, hh = binary_body(hdr, [v.tobytes()])
                hh.update(bearer(TOKENS[0]))
                st, h, data, _ = https("POST", "/v2/models/scale2x/infer", body, hh)
                self.assertEqual(st, 200, data[:300])
                _, out = split_binary(h, data)
                np.testing.assert_array_equal(np.frombuffer(out["y"], np.float32), v * 2)
                with self.assertRaises(ssl.SSLError):  # the certificate is really checked
                    c = http.client.HTTPSConnection("127.0.0.1", tls_port, context=ssl.create_default_context(),
                                                    timeout=30)
                    try:
                        c.request("GET", "/v2/health/live")
                    finally:
                        c.close()
            finally:
                if nginx is not None:
                    nginx.send_signal(signal.SIGQUIT)  # graceful stop
                    try:
                        nginx.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        nginx.kill()
                        nginx.wait()
                    nginx.stderr.close()
                self.assertEqual(srv.finish(), 0)


class Confinement(unittest.TestCase):
    def test_names_and_files_stay_in_the_repository(self):
        with tempfile.TemporaryDirectory() as tmp:
            outside = os.path.join(tmp, "outside")
            os.makedirs(os.path.join(outside, "1"))
            shutil.copyfile(os.path.join(MODELS, "mlp.onnx"), os.path.join(outside, "1", "model.onnx"))
            repo = make_repo(os.path.join(tmp, "repo"), {"mlp": "mlp.onnx"})
            os.symlink(outside, os.path.join(repo, "dirlink"))  # a model directory that leads outside
            os.makedirs(os.path.join(repo, "filelink", "1"))
            os.symlink(os.path.join(outside, "1", "model.onnx"), os.path.join(repo, "filelink", "1", "model.onnx"))
            os.makedirs(os.path.join(repo, "inside", "1"))  # a symlink that stays inside is fine
            os.symlink(os.path.join(repo, "mlp", "1", "model.onnx"), os.path.join(repo, "inside", "1", "model.onnx"))
            srv = Server(repo, "--allow-shm", wait_ready=False)
            try:
                srv.wait_live()
                rows = {r["name"]: r for r in srv.json("POST", "/v2/repository/index", {})[1]}
                self.assertEqual(rows["mlp"]["state"], "READY")
                self.assertEqual(rows["inside"]["state"], "READY")
                for name in ("dirlink", "filelink"):
                    self.assertNotEqual(rows.get(name, {}).get("state"), "READY", name)
                    st, body = srv.json("POST", "/v2/models/%s/infer" % name, mlp_request(X))
                    self.assertIn(st, (404, 503), body)
                    st, body = srv.json("POST", "/v2/repository/models/%s/load" % name)
                    self.assertNotEqual(st, 200, body)
                for name in ("..", "..%2Fetc", "a%2Fb", "%2e%2e", ".hidden", "a b", "x" * 200):
                    st, body = srv.json("POST", "/v2/repository/models/%s/load" % name.replace(" ", "%20"))
                    self.assertIn(st, (400, 404), (name, body))
                    self.assertIn("error", body)
                # Shared memory: a key that is a symlink in /dev/shm is not followed.
                link = "/dev/shm/osv-access-link-%d" % os.getpid()
                target = os.path.join(tmp, "secret")
                with open(target, "wb") as f:
                    f.write(b"s" * 4096)
                os.symlink(target, link)
                try:
                    st, body = srv.json("POST", "/v2/systemsharedmemory/region/r/register",
                                        {"key": os.path.basename(link), "byte_size": 64})
                    self.assertNotEqual(st, 200, body)
                    self.assertIn("cannot open shared memory", body["error"])
                finally:
                    os.unlink(link)
            finally:
                self.assertEqual(srv.finish(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
