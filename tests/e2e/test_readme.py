#!/usr/bin/python3
"""test_readme.py — what the README (and the man page and DESIGN.md where they say the same) tells a
newcomer is true of the build under test:

- the tour ("A short tour"): every command of its second block is run as pasted, by bash, against a
  real server that serves the demo repository the way `make run` lays it out (127.0.0.1, a free port
  substituted for 8000, `build/release/` for the binary under test); curl fails on any HTTP error
  status (a wrapper adds --fail-with-body), so each command must succeed and answer what the README
  says; the first block's `make run [PORT=N]` lines must serve var/demo-repo on port N (`make -n`);
- `make run` is the fast path: it installs the `run` profile of tools/deps.sh (not the test
  toolchain) and builds the `ortserve` target alone;
- every document in docs/ is linked from the README;
- `ortserve run` writes .npy files only with --output-dir, as the README and ortserve(1) say, and
  says so when it writes none;
- the classify endpoint's answer follows the request's shape (a raw body: one list; multipart: one
  list per part, also for one part), as the README, ortserve(1) and DESIGN.md say;
- the differences a Triton client sees (DESIGN.md, "What a Triton client sees differently") hold.
"""
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from deploy_support import BIN, BIN_DIR, MODELS, QUIET_ORT, REAL, SRC, LiveServer, demo_repo, run  # noqa: E402

README = os.path.join(SRC, "README.md")


def read(rel):
    with open(os.path.join(SRC, rel)) as f:
        return f.read()


def section(text, title):
    """The text of the markdown section `## title` (up to the next `## `)."""
    m = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), text, re.M | re.S)
    if not m:
        raise AssertionError("no section '## %s'" % title)
    return m.group(1)


def sh_blocks(text):
    return re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)


def commands(block):
    """The commands of a shell block as a user pastes them: a command continues over lines until bash
    can parse it (backslash continuations, quotes spanning lines); comment lines are skipped."""
    out, cur = [], ""
    for line in block.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line + "\n"
        if line.endswith("\\"):
            continue
        if subprocess.run(["bash", "-n", "-c", cur], capture_output=True).returncode == 0:
            out.append(cur.strip())
            cur = ""
    if cur:
        raise AssertionError("incomplete command at the end of a block: %r" % cur)
    return out


def man_text():
    """ortserve(1) as man renders it."""
    return run(["man", "-l", os.path.join(SRC, "docs", "ortserve.1")],
               env={"MANWIDTH": "200", "MANPAGER": "cat", "PAGER": "cat", "LC_ALL": "C.UTF-8"}).stdout


def one_line(text):
    return re.sub(r"\s+", " ", text)


class Tour(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cmds = [c for b in sh_blocks(section(read("README.md"), "A short tour")) for c in commands(b)]
        cls.server_cmds = [c for c in cmds if c.startswith("make run")]
        cls.client_cmds = [c for c in cmds if not c.startswith("make run")]
        # The tree a user is in after `make run`: var/demo-repo and var/demo-images (tools/demo_repo.sh),
        # docs/ from the sources, the binary in build/release.
        cls.tmp = tempfile.mkdtemp(prefix="osv-readme-")
        os.makedirs(os.path.join(cls.tmp, "var"))
        demo_repo(os.path.join(cls.tmp, "var", "demo-repo"))
        os.symlink(os.path.join(SRC, "docs"), os.path.join(cls.tmp, "docs"))
        cls.bin = os.path.join(cls.tmp, "bin")
        os.makedirs(cls.bin)
        with open(os.path.join(cls.bin, "curl"), "w") as f:  # an HTTP error status fails the command
            f.write('#!/bin/sh\nexec /usr/bin/curl --fail-with-body -sS --max-time 60 "$@"\n')
        os.chmod(os.path.join(cls.bin, "curl"), 0o755)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_make_run_lines(self):
        self.assertTrue(self.server_cmds, "the tour does not show how to start the server")
        for cmd in self.server_cmds:
            m = re.fullmatch(r"make run(?: PORT=(\d+))?", re.sub(r"\s+#.*$", "", cmd))
            self.assertIsNotNone(m, "not a `make run` line: %r" % cmd)
            port = m.group(1) or "8000"
            out = run(["make", "-n", "-s", "-C", SRC, "run", "BUILD=" + BIN_DIR] + (["PORT=" + port] if m.group(1)
                                                                                      else [])).stdout
            self.assertRegex(out, r"(?m)^%s serve --model-repository var/demo-repo --host 127\.0\.0\.1 --port %s$"
                             % (re.escape(os.path.join(BIN_DIR, "ortserve")), port))

    def test_client_block(self):
        self.assertTrue(self.client_cmds)
        srv = LiveServer(["--model-repository", os.path.join(self.tmp, "var", "demo-repo")])
        env = dict(os.environ, PATH=self.bin + ":" + os.environ["PATH"], MANPAGER="cat", PAGER="cat",
                   MANWIDTH="80", **QUIET_ORT)
        env.pop("ORTSERVE_ORT_LIBRARY", None)
        outs = {}
        with srv:
            for cmd in self.client_cmds:
                real = cmd.replace("localhost:8000", "127.0.0.1:%d" % srv.port)
                real = re.sub(r"(?<![\w/])build/release/", BIN_DIR + "/", real)
                p = subprocess.run(["bash", "-o", "pipefail", "-c", real], cwd=self.tmp, env=env, capture_output=True,
                                   text=True, timeout=120)
                self.assertEqual(p.returncode, 0, "README command failed:\n%s\n%s%s" % (cmd, p.stdout, p.stderr))
                self.assertTrue(p.stdout.strip(), "no output: " + cmd)
                outs[cmd] = p.stdout
        by_path = {}
        for cmd, out in outs.items():
            m = re.search(r"localhost:8000(/\S*?)['\s]|localhost:8000(/\S*)$", cmd)
            if m:
                by_path[(m.group(1) or m.group(2)).strip("'")] = json.loads(out)
        self.assertEqual(by_path["/v2/health/ready"], {"ready": True})
        self.assertEqual(by_path["/v2/models/mlp"]["inputs"][0]["shape"], [-1, 64])
        probs = by_path["/v2/models/mlp/infer"]["outputs"][0]
        self.assertEqual((probs["name"], probs["shape"], len(probs["data"])), ("probs", [1, 3], 3))
        cat = by_path["/v2/models/mobilenetv2/classify?top_k=5"]
        self.assertEqual(len(cat), 5)  # a raw body: one flat list
        self.assertEqual(set(cat[0]), {"label", "index", "score"})
        two = by_path["/v2/models/text_orientation/classify"]  # multipart: one list per part, in order
        self.assertEqual([r[0]["label"] for r in two], ["0", "180"])
        orient = by_path["/v2/models/text_orientation/infer"]["outputs"][0]
        self.assertEqual(orient["shape"], [1, 2])
        self.assertRegex(orient["data"][0], r"^[0-9.]+:0:0$")
        texts = [out for cmd, out in outs.items() if "ortserve" in cmd or cmd.startswith("man ")]
        self.assertTrue(any("usage: ortserve" in t for t in texts))
        self.assertTrue(any("x" in t and "probs" in t and "FP32" in t for t in texts))
        self.assertTrue(any("ORTSERVE" in t for t in texts))
        self.assertGreaterEqual(len(self.client_cmds), 10)

    def test_the_tour_says_where_things_are(self):
        tour = section(read("README.md"), "A short tour")
        self.assertIn("build/release/ortserve", tour)
        self.assertIn("make install", tour)
        self.assertIn("PORT=", tour)
        self.assertNotIn("...", "\n".join(sh_blocks(tour)), "an elided command cannot be pasted")


class MakeRun(unittest.TestCase):
    def test_make_run_installs_and_builds_only_the_server(self):
        out = run(["make", "-n", "-C", SRC, "run", "BUILD=" + BIN_DIR]).stdout
        self.assertRegex(out, r"(?m)^tools/deps\.sh run$")
        self.assertNotRegex(out, r"(?m)^tools/deps\.sh( test)?$", "make run installs the test toolchain")
        builds = re.findall(r"(?m)^cmake --build .*$", out)
        self.assertTrue(builds)
        for b in builds:
            self.assertRegex(b, r"--target ortserve$", "make run builds more than the server: " + b)
        # The run profile: what compiling and the demo need, nothing of the test toolchain.
        deps = read("tools/deps.sh")
        run_pkgs = set(re.search(r"pkgs_demo=\(([^)]*)\)", deps).group(1).split())
        build_pkgs = set(re.search(r"pkgs_build=\(([^)]*)\)", deps, re.S).group(1).split())
        self.assertRegex(deps, r"(?m)^run \| image\) want\+=\(\"\$\{pkgs_demo\[@\]\}\"\) ;;$")
        for p in ["libcmocka-dev", "clang", "prometheus", "nginx-light", "systemd", "strace", "libonnx-testdata"]:
            self.assertNotIn(p, run_pkgs | build_pkgs)
        self.assertIn("fonts-dejavu-core", run_pkgs)  # tools/demo_repo.sh draws text with it
        # The tour's client commands run on what the run profile installs (a fresh machine has no curl:
        # tools/fresh_machine.sh found the tour failing with "curl: not found").
        # A fresh machine has gcc, make and cmake (tools/fresh_machine.sh); the binary is the build's.
        cmds = [c for b in sh_blocks(section(read("README.md"), "A short tour")) for c in commands(b)]
        package = {"curl": "curl", "man": "man-db", "make": None, "build/release/ortserve": None}
        for prog in {c.split()[0] for c in cmds}:
            self.assertIn(prog, package, "the tour runs %s: which package of the run profile gives it?" % prog)
            if package[prog]:
                self.assertIn(package[prog], run_pkgs, "the tour runs %s, the run profile lacks it" % prog)

    def test_documents_are_linked_from_the_readme(self):
        readme = read("README.md")
        for path in sorted(glob.glob(os.path.join(SRC, "docs", "*.md"))):
            rel = os.path.relpath(path, SRC)
            self.assertTrue(rel in readme, "%s is not linked from the README" % rel)


class RunOutputs(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="osv-readme-run-")
        import numpy as np  # /usr/bin/python3 with python3-numpy
        np.save(os.path.join(self.tmp, "x.npy"), np.ones((1, 64), np.float32))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_docs_say_when_run_writes_files(self):
        readme = one_line(read("README.md"))
        self.assertIsNone(re.search(r"runs once on NumPy files, writes `\.npy` outputs", readme),
                          "the README says `ortserve run` writes .npy outputs (only --output-dir does)")
        self.assertTrue(re.search(r"`--output-dir DIR` also writes them as `DIR/<output>\.npy`", readme),
                        "the README does not say that --output-dir writes the outputs")
        man = one_line(man_text())
        self.assertTrue(re.search(r"written to files only with --output-dir; without it nothing is written", man),
                        "ortserve(1) does not say when run writes files")
        self.assertTrue(re.search(r"--output-dir dir Also write every output as dir/name\.npy", man))

    def test_run_writes_npy_only_with_output_dir(self):
        mlp = os.path.join(MODELS, "mlp.onnx")
        p = run([BIN, "run", mlp, "--input", "x=x.npy"], cwd=self.tmp)
        self.assertRegex(p.stdout, r"(?m)^output probs +FP32 +\[1,10\]")
        self.assertEqual(sorted(os.listdir(self.tmp)), ["x.npy"], "run wrote files without --output-dir")
        self.assertIn("--output-dir", p.stderr, "run does not say how to write the outputs")
        p = run([BIN, "run", mlp, "--input", "x=x.npy", "--output-dir", "out"], cwd=self.tmp)
        self.assertEqual(os.listdir(os.path.join(self.tmp, "out")), ["probs.npy"])
        self.assertIn("out/probs.npy", p.stdout)


class ClassifyShape(unittest.TestCase):
    """One image, sent raw and as a one-part multipart body: the documented shapes."""

    def test_documented_in_readme_man_page_and_design(self):
        for name, text, pattern in [
                ("README.md", read("README.md"), r"`\[\[\.\.\.\]\]` for a batch of one"),
                ("docs/DESIGN.md", read("docs/DESIGN.md"), r"also for a single part \(`\[\[\.\.\.\]\]`\)"),
                ("ortserve(1)", man_text(), r"multipart/form-data body gets one list per part, in part order, also "
                                            r"for a single part")]:
            self.assertTrue(re.search(pattern, one_line(text)),
                            "%s does not say that multipart answers a list per part, also for one" % name)

    def test_server_answers_as_documented(self):
        tmp = tempfile.mkdtemp(prefix="osv-readme-cls-")
        try:
            repo = demo_repo(os.path.join(tmp, "var", "demo-repo"))
            img = os.path.join(tmp, "var", "demo-images", "text_upright.png")
            if not os.path.exists(os.path.join(repo, "text_orientation")) or not os.path.exists(img):
                self.skipTest("the real text_orientation model or PIL is missing")
            with open(img, "rb") as f:
                png = f.read()
            with LiveServer(["--model-repository", repo]) as srv:
                st, body = srv.get("/v2/models/text_orientation/classify", "POST", png,
                                   {"Content-Type": "image/png"})
                self.assertEqual(st, 200, body)
                flat = json.loads(body)
                self.assertIsInstance(flat[0], dict)
                b = "osvboundary"
                mp = (b"--" + b.encode() + b"\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a.png\"\r\n"
                      b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + b.encode() + b"--\r\n")
                st, body = srv.get("/v2/models/text_orientation/classify", "POST", mp,
                                   {"Content-Type": "multipart/form-data; boundary=" + b})
                self.assertEqual(st, 200, body)
                nested = json.loads(body)
                self.assertEqual(nested, [flat])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class TritonDifferences(unittest.TestCase):
    """DESIGN.md's list of what a Triton client sees differently, replayed at the wire level (the checks
    once made with tritonclient, docs/compat-notes.md, whose fixed failures have tests of their own)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-readme-triton-")
        repo = os.path.join(cls.tmp, "repo")
        for m in ("mlp", "identity"):
            os.makedirs(os.path.join(repo, m, "1"))
            shutil.copy(os.path.join(MODELS, m + ".onnx"), os.path.join(repo, m, "1", "model.onnx"))
        # Triton configs: one with batching and a cache asked for, one asking for sequence batching.
        for m, text in (("batching", "max_batch_size: 4\ndynamic_batching { }\nresponse_cache { enable: true }\n"),
                        ("sequence", "sequence_batching { }\n")):
            os.makedirs(os.path.join(repo, m, "1"))
            shutil.copy(os.path.join(MODELS, "mlp.onnx"), os.path.join(repo, m, "1", "model.onnx"))
            with open(os.path.join(repo, m, "config.pbtxt"), "w") as f:
                f.write(text)
        cls.srv = LiveServer(["--model-repository", repo, "--allow-shm", "1"])

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def post(self, path, obj=None, headers=None):
        st, body = self.srv.get(path, "POST", json.dumps(obj).encode() if obj is not None else b"", headers)
        return st, body

    def mlp(self, **extra):
        req = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": [0.25] * 128}]}
        req.update(extra)
        return req

    def test_the_list_is_in_design(self):
        text = section(read("docs/DESIGN.md"), "What a Triton client sees differently")
        for needle in ["parameters.sequence_id", "parameters.config", "/v2/trace/setting", "/v2/logging", "Accept-Encoding",
                       "parameters.timeout", "[N, k]", "shared_memory_byte_size", "cudasharedmemory",
                       "a model directory without `config.pbtxt`",
                       "`sequence_batching`, ensembles", "503 (Triton: 400)", "404 (Triton: 400)"]:
            self.assertIn(needle, text)

    def test_sequence_batching_is_refused(self):
        st, body = self.post("/v2/models/mlp/infer", self.mlp(parameters={"sequence_id": 7}))
        self.assertEqual(st, 400)
        self.assertIn("sequence_id", body.decode())

    def test_load_with_config_is_refused(self):
        st, body = self.post("/v2/repository/models/mlp/load", {"parameters": {"config": "{}"}})
        self.assertEqual(st, 400)
        self.assertIn("config", body.decode())

    def test_trace_and_logging_extensions_are_absent(self):
        for path in ("/v2/trace/setting", "/v2/logging"):
            self.assertEqual(self.srv.get(path)[0], 404, path)

    def test_responses_are_not_compressed(self):
        c = socket.create_connection(("127.0.0.1", self.srv.port), timeout=30)
        body = json.dumps(self.mlp()).encode()
        c.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, deflate\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        c.close()
        head = data.split(b"\r\n\r\n", 1)[0].decode().lower()
        self.assertIn(" 200 ", head.splitlines()[0] + " ")
        self.assertNotIn("content-encoding", head)

    def test_timeout_parameter_is_a_deadline(self):
        st, body = self.post("/v2/models/mlp/infer", self.mlp(parameters={"timeout": 1}))
        self.assertEqual(st, 504, body)

    def test_a_model_without_config_pbtxt_keeps_its_shapes(self):
        cfg = json.loads(self.srv.get("/v2/models/mlp/config")[1])
        self.assertEqual((cfg["max_batch_size"], cfg["input"][0]["dims"], cfg["version_policy"]), (0, [-1, 64], {"all": {}}))

    def test_batching_and_cache_from_config_pbtxt_are_active(self):
        cfg = json.loads(self.srv.get("/v2/models/batching/config")[1])
        self.assertEqual((cfg["dynamic_batching"]["preferred_batch_size"], cfg["response_cache"]), ([4], {"enable": True}))
        # the batcher runs it; the cache needs --cache-size, and the log says so
        self.assertIn('"event":"response_cache_off"', self.srv.logs())
        st, body = self.post("/v2/models/batching/infer", self.mlp())
        self.assertEqual(st, 200, body)

    def test_unsupported_configs_fail_their_model_only(self):
        st, rows = self.post("/v2/repository/index")
        reason = {r["name"]: r["reason"] for r in json.loads(rows)}
        self.assertIn("sequence_batching: sequence batching is not supported", reason["sequence"])
        self.assertEqual(self.post("/v2/models/mlp/infer", self.mlp())[0], 200)

    def test_statuses_for_not_ready_and_unknown(self):
        self.assertEqual(self.srv.get("/v2/models/sequence/ready")[0], 503)
        self.assertEqual(self.srv.get("/v2/health/ready")[0], 503)
        st, body = self.post("/v2/repository/models/nowhere/load")
        self.assertEqual(st, 404, body)

    def test_classification_keeps_the_batch_dimension(self):
        st, body = self.post("/v2/models/mlp/infer", self.mlp(outputs=[{"name": "probs",
                                                                         "parameters": {"classification": 3}}]))
        self.assertEqual(st, 200, body)
        out = json.loads(body)["outputs"][0]
        self.assertEqual((out["datatype"], out["shape"]), ("BYTES", [2, 3]))
        self.assertEqual(json.loads(self.srv.get("/v2/models/mlp/config")[1])["max_batch_size"], 0)

    def test_shared_memory_outputs_carry_their_size(self):
        name = "/osv-readme-%d" % os.getpid()
        fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, 4096)
            st, _ = self.post("/v2/systemsharedmemory/region/r/register", {"key": name, "offset": 0, "byte_size": 4096})
            self.assertEqual(st, 200)
            dts = {"BOOL": [True], "UINT8": [1], "UINT16": [1], "UINT32": [1], "UINT64": [1], "INT8": [1],
                   "INT16": [1], "INT32": [1], "INT64": [1], "FP16": [1.0], "BF16": [1.0], "FP32": [1.0],
                   "FP64": [1.0], "BYTES": ["hello"]}
            req = {"inputs": [{"name": "in_" + d, "shape": [1], "datatype": d, "data": v} for d, v in dts.items()],
                   "outputs": [{"name": "out_FP32", "parameters": {"shared_memory_region": "r",
                                                                   "shared_memory_byte_size": 4096}}]}
            st, body = self.post("/v2/models/identity/infer", req)
            self.assertEqual(st, 200, body)
            out = json.loads(body)["outputs"][0]
            self.assertEqual(out["parameters"], {"shared_memory_byte_size": 4})
            self.assertNotIn("data", out)
            self.post("/v2/systemsharedmemory/region/r/unregister")
        finally:
            os.close(fd)
            os.unlink("/dev/shm" + name)

    def test_cuda_shared_memory_is_absent_but_harmless(self):
        st, body = self.srv.get("/v2/cudasharedmemory/status")
        self.assertEqual((st, json.loads(body)), (200, []))
        self.assertEqual(self.post("/v2/cudasharedmemory/unregister")[0], 200)
        st, _ = self.post("/v2/cudasharedmemory/region/r/register",
                          {"raw_handle": {"b64": "AA=="}, "device_id": 0, "byte_size": 16})
        self.assertEqual(st, 400)


if __name__ == "__main__":
    unittest.main(verbosity=2)
