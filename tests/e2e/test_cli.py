#!/usr/bin/python3
"""test_cli.py — the real `ortserve` binary's CLI on real models: --version, info, run; the options of
every command (typed values with ranges, one size syntax, usage errors that name the option and
suggest the closest one, unknown ORTSERVE_* variables) and the pool plan --pool-bytes gives.

Results of `ortserve run` are checked against an independent numpy forward pass of the MLP computed
from the model file's own initializers, and against known properties of the real PaddleOCR model.
Run with /usr/bin/python3 (Debian's numpy and onnx); ctest passes OSV_BINARY_DIR and model dirs.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

import numpy as np
import onnx
from onnx import numpy_helper

BIN = os.path.join(os.environ.get("OSV_BINARY_DIR", "build/release"), "ortserve")
MODELS = os.environ.get("OSV_TEST_MODELS", "var/models")
REAL = os.environ.get("OSV_REAL_MODELS", "third_party/models")


def ortserve(*args, env=None, check=True):
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120, env=full_env)
    if check and p.returncode != 0:
        raise AssertionError("ortserve %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return p


def mlp_reference(x):
    """Forward pass of mlp.onnx in numpy from its initializers (Gemm transB=1, ReLU, Gemm, softmax)."""
    m = onnx.load(os.path.join(MODELS, "mlp.onnx"))
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    logits = h @ w["fc2.weight"].T + w["fc2.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Cli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_version_and_help(self):
        out = ortserve("--version").stdout
        self.assertRegex(out, r"ortserve \d+\.\d+\.\d+")
        self.assertRegex(out, r"ONNX Runtime 1\.\d+")
        self.assertIn("info", ortserve("--help").stdout)
        self.assertIn("--input", ortserve("run", "--help").stdout)
        p = ortserve("frobnicate", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown command", p.stderr)

    def test_explicit_missing_library_is_an_error(self):
        p = ortserve("--version", env={"ORTSERVE_ORT_LIBRARY": "/nonexistent/libonnxruntime.so.1"}, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("/nonexistent/libonnxruntime.so.1", p.stderr)

    def test_info_json(self):
        info = json.loads(ortserve("info", "--json", os.path.join(MODELS, "mlp.onnx")).stdout)
        self.assertEqual(info["name"], "mlp")
        self.assertEqual(info["inputs"], [{"name": "x", "kind": "tensor", "datatype": "FP32",
                                           "shape": [-1, 64], "dim_names": ["N", ""]}])
        self.assertEqual(info["outputs"][0]["shape"], [-1, 10])
        self.assertEqual(info["metadata"]["producer"], "ortserve/tools/gen_models.py")
        self.assertEqual(info["metadata"]["custom"]["ortserve.test"], "mlp")

    def test_info_model_directory_picks_highest_version(self):
        for v in ("2", "10"):
            os.makedirs(os.path.join(self.dir, "m", v))
            os.link(os.path.join(MODELS, "mlp.onnx" if v == "10" else "sum.onnx"),
                    os.path.join(self.dir, "m", v, "model.onnx"))
        info = json.loads(ortserve("info", "--json", os.path.join(self.dir, "m")).stdout)
        self.assertEqual(info["version"], 10)
        self.assertEqual(info["inputs"][0]["name"], "x")
        # The real PaddleOCR classifier: every dim but the channels is dynamic, with symbolic names.
        table = ortserve("info", os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx")).stdout
        self.assertIn("[p2o.DynamicDimension.0,3,p2o.DynamicDimension.1,p2o.DynamicDimension.2]", table)
        self.assertIn("softmax_0.tmp_0", table)

    def test_run_mlp_matches_numpy(self):
        rng = np.random.default_rng(7)
        x = rng.standard_normal((3, 64)).astype(np.float32)
        np.save(os.path.join(self.dir, "x.npy"), x)
        out = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input",
                       "x=" + os.path.join(self.dir, "x.npy"), "--output-dir", os.path.join(self.dir, "o")).stdout
        self.assertIn("zero_copy", out)
        self.assertIn("0 bytes copied", out)
        probs = np.load(os.path.join(self.dir, "o", "probs.npy"))
        self.assertEqual(probs.shape, (3, 10))
        self.assertEqual(probs.dtype, np.float32)
        np.testing.assert_allclose(probs, mlp_reference(x.astype(np.float64)), rtol=1e-5, atol=1e-6)

    def test_run_force_copy_gives_same_result(self):
        x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
        np.save(os.path.join(self.dir, "x.npy"), x)
        outs = []
        for extra in ([], ["--force-copy"]):
            d = os.path.join(self.dir, "o%d" % len(outs))
            r = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input", "x=" + os.path.join(self.dir, "x.npy"),
                         "--output-dir", d, *extra).stdout
            outs.append(np.load(os.path.join(d, "probs.npy")))
        self.assertIn("forced", r)
        self.assertIn("296 bytes copied", r)  # 256 in + 40 out
        np.testing.assert_array_equal(outs[0], outs[1])

    def test_run_errors(self):
        p = ortserve("run", os.path.join(MODELS, "mlp.onnx"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing input 'x'", p.stderr)
        np.save(os.path.join(self.dir, "bad.npy"), np.zeros((1, 63), np.float32))
        p = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input", "x=" + os.path.join(self.dir, "bad.npy"),
                     check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("[1,63]", p.stderr)
        np.save(os.path.join(self.dir, "f64.npy"), np.zeros((1, 64), np.float64))
        p = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input", "x=" + os.path.join(self.dir, "f64.npy"),
                     check=False)
        self.assertIn("FP64", p.stderr)
        p = ortserve("run", os.path.join(MODELS, "mlp.onnx"), "--input", "y=" + os.path.join(self.dir, "f64.npy"),
                     check=False)
        self.assertIn("no input 'y'", p.stderr)

    def test_run_real_paddleocr_classifier(self):
        x = np.zeros((2, 3, 48, 192), np.float32)
        np.save(os.path.join(self.dir, "x.npy"), x)
        ortserve("run", os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx"), "--input",
                 "x=" + os.path.join(self.dir, "x.npy"), "--output-dir", os.path.join(self.dir, "o"))
        (name,) = os.listdir(os.path.join(self.dir, "o"))
        y = np.load(os.path.join(self.dir, "o", name))
        self.assertEqual(y.shape, (2, 2))
        np.testing.assert_allclose(y.sum(axis=1), [1, 1], rtol=1e-5)

    def test_run_names_the_missing_input(self):
        m = onnx.load(os.path.join(MODELS, "identity.onnx"))
        args = []
        for inp in m.graph.input:
            name = inp.name
            t = name[3:]
            if t == "BYTES":
                arr = np.array([b"ab", b"", b"xyz"])
            elif t == "BF16":
                continue  # numpy has no bfloat16: the run must refuse rather than guess
            else:
                special = {"BOOL": np.bool_, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
                dt = special[t] if t in special else getattr(np, t.lower())
                arr = np.arange(3).astype(dt)
            np.save(os.path.join(self.dir, name + ".npy"), arr)
            args += ["--input", "%s=%s" % (name, os.path.join(self.dir, name + ".npy"))]
        p = ortserve("run", os.path.join(MODELS, "identity.onnx"), *args, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing input 'in_BF16'", p.stderr)


def serve(repo, *args, env=None, timeout=30):
    """`ortserve serve --model-repository repo ARGS...` (on port 0 unless ARGS or env choose one). Returns
    (exit status, or None when it listened, the port it bound or None, its output). A server that
    listened is stopped with SIGTERM before this returns."""
    with tempfile.TemporaryDirectory() as tmp:
        pf = os.path.join(tmp, "port")
        full = dict(os.environ)
        full.update(env or {})
        port_given = any(a == "--port" or a.startswith("--port=") for a in args) or "ORTSERVE_PORT" in (env or {})
        cmd = [BIN, "serve", "--model-repository", repo, "--port-file", pf, "--log-level", "info",
               *([] if port_given else ["--port", "0"]), *args]
        with open(os.path.join(tmp, "out"), "w+") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full, text=True)
            deadline, port = time.monotonic() + timeout, None
            while time.monotonic() < deadline and proc.poll() is None and port is None:
                try:
                    with open(pf) as f:
                        port = int(f.read())
                except (OSError, ValueError):
                    time.sleep(0.02)  # bounded poll of the port file; the wait has a deadline
            rc = proc.poll()
            if rc is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if port is None:
                    raise AssertionError("ortserve neither listened nor exited within %ds" % timeout)
            out.seek(0)
            return rc, port, out.read()


def log_events(text, event):
    """The JSON log records of one event."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == event:
                out.append(rec)
    return out


def png(width, height, seed=1):
    """A valid RGB PNG of noise (incompressible: about width x height x 3 bytes), from the stdlib only."""
    raw = np.random.default_rng(seed).integers(0, 256, (height, width * 3 + 1), dtype=np.uint8)
    raw[:, 0] = 0  # filter type None on every row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw.tobytes())) + chunk(b"IEND", b""))


class ServeOptions(unittest.TestCase):
    """`ortserve serve` options as users get them wrong: every value is typed and range-checked at parse
    time (exit 2 with one message naming the flag or variable and what it accepts), sizes have one
    syntax in every command, and an unknown flag gets a suggestion instead of the whole help."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.repo = os.path.join(cls.tmp.name, "repo")
        os.makedirs(os.path.join(cls.repo, "mlp", "1"))
        os.link(os.path.join(MODELS, "mlp.onnx"), os.path.join(cls.repo, "mlp", "1", "model.onnx"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def usage_error(self, args=(), env=None, names=(), wants=()):
        """Asserts that serve refuses ARGS/env at parse time: exit 2 without listening, and a short message
        naming each of `names` and saying each of `wants`."""
        rc, port, out = serve(self.repo, *args, env=env)
        self.assertEqual(rc, 2, "%s %s: listened on port %s:\n%s" % (args, env or "", port, out))
        self.assertLessEqual(len(out.strip().splitlines()), 3, out)  # the error stays on screen
        for text in (*names, *wants):
            self.assertIn(text, out)
        return out

    def test_port_out_of_range_is_a_usage_error(self):
        # 70000 used to listen on 4464 (70000 mod 65536), 65536 on a random port, 73537 on 8001.
        want = "from 0 to 65535"
        for value in ("70000", "65536", "-1", "abc", "8000x", "", "99999999999999999999"):
            self.usage_error(["--port", value], names=["--port", "'%s'" % value], wants=[want])
        self.usage_error(["--port=70000"], names=["--port"], wants=[want])
        self.usage_error(env={"ORTSERVE_PORT": "73537"}, names=["ORTSERVE_PORT", "'73537'"], wants=[want])
        # In range, the port asked for is the port bound: 0 any free one.
        rc, port, out = serve(self.repo, "--port", "0")
        self.assertIsNone(rc, out)
        self.assertTrue(1 <= port <= 65535, port)
        with socket_on_free_port() as free:
            rc, port, out = serve(self.repo, env={"ORTSERVE_PORT": str(free)})
        self.assertIsNone(rc, out)
        self.assertEqual(port, free)

    def test_startup_failure_is_one_json_record_naming_the_path(self):
        # A path holding a quote and a backslash: the record stays JSON, and the path in it is the path given.
        bad = os.path.join(self.tmp.name, 'we"ird\\dir', "nope")
        rc, port, out = serve(bad)
        self.assertEqual(rc, 1, "listened on port %s:\n%s" % (port, out))
        rec, = log_events(out, "startup_failed")
        self.assertIn("model repository %s: No such file or directory" % bad, rec["error"])

    def test_port_in_use_fails_at_start(self):
        # SO_REUSEPORT used to let a second server bind a port another one holds; the kernel then spread
        # connections over both (20 requests: 12 x 404, 8 x 200).
        from server import Server
        other = make_repo_with(self.tmp.name, "other", "identity")
        with Server(self.repo) as first:
            rc, port, out = serve(other, "--port", str(first.port))
            self.assertEqual(rc, 1, "a second server started on port %d:\n%s" % (first.port, out))
            self.assertIsNone(port, out)
            self.assertIn("address already in use", out)
            statuses = [first.request("GET", "/v2/models/mlp/ready")[0] for _ in range(20)]
            self.assertEqual(statuses, [200] * 20)
        # A socket of another program that also set SO_REUSEPORT does not let us in either.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            rc, port, out = serve(self.repo, "--port", str(s.getsockname()[1]))
            self.assertEqual(rc, 1, out)
            self.assertIn("address already in use", out)
        finally:
            s.close()

    def test_model_control_is_off_by_default_beyond_loopback(self):
        # Any client could unload every model of a server listening on 0.0.0.0 without tokens. The
        # decision itself is unit-tested (test_opts loopback_hosts); here, without binding beyond
        # loopback, what a user sees: --load-model then needs the mode said out loud.
        out = self.usage_error(["--host", "0.0.0.0", "--load-model", "mlp"], names=["--load-model"],
                               wants=["needs --model-control-mode explicit", "beyond loopback"])
        self.assertIn("--auth-token-file", out)
        # asked for explicitly, or on loopback, it stays on (the start-up log says which)
        rc, port, out = serve(self.repo)
        self.assertIsNone(rc, out)
        (start,) = log_events(out, "listening")
        self.assertEqual(start["model_control"], "explicit")
        self.assertEqual(log_events(out, "model_control_off"), [])

    def test_values_are_range_checked(self):
        cases = [("--memory-high-pct", "101", "from 0 to 100"), ("--max-dims", "17", "from 1 to 16"),
                 ("--max-dims", "0", "from 1 to 16"), ("--workers", "100000", "from 0 to 1024"),
                 ("--loops", "-1", "from 0 to 1024"), ("--max-json-depth", "0", "from 1 to 1024"),
                 ("--inline-threshold-us", "99999999999999999", "microseconds"),
                 ("--deadline-ms", "9223372036854775807", "milliseconds"),
                 ("--trace-sample-ratio", "1.5", "from 0 to 1"), ("--allow-shm", "maybe", "0|1"),
                 ("--max-body-bytes", "0", "size"), ("--max-header-bytes", "2G", "size")]
        for flag, value, want in cases:
            self.usage_error([flag, value], names=[flag, "'%s'" % value], wants=[want])
        self.usage_error(env={"ORTSERVE_MEMORY_HIGH_PCT": "150"}, names=["ORTSERVE_MEMORY_HIGH_PCT"],
                         wants=["from 0 to 100"])
        # The bounds themselves are accepted, and typed values arrive whole.
        rc, _, out = serve(self.repo, "--memory-high-pct", "100", "--max-dims", "16", "--deadline-ms", "86400000",
                           "--max-header-bytes", "64K", "--allow-shm", "yes", "--access-log=0")
        self.assertIsNone(rc, out)
        (rec,) = log_events(out, "listening")
        self.assertEqual(rec["deadline_ms"], 86400000)
        self.assertGreater(rec["shm_max_bytes"], 0)  # --allow-shm yes
        self.assertEqual(log_events(out, "access"), [])

    def test_one_size_syntax(self):
        for form in ("1M", "1m", "1Mi", "1MB", "1MiB", "1024K", "1048576"):
            rc, _, out = serve(self.repo, "--max-body-bytes", form)
            self.assertIsNone(rc, out)
            (rec,) = log_events(out, "listening")
            self.assertEqual(rec["max_body_bytes"], 1 << 20, form)
        for bad in ("1X", "M", "-1M", "1.5M", "1 M", "1MiBs", "99999999999G", "0x10"):
            self.usage_error(["--max-body-bytes", bad], names=["--max-body-bytes", "'%s'" % bad])
        out = ortserve("serve", "--help").stdout
        self.assertEqual(out.count("64M = 64Mi = 64MB = 64MiB"), 1, out)

    def test_classify_takes_the_same_sizes(self):
        repo = os.path.join(self.tmp.name, "img-repo")
        d = os.path.join(repo, "text_orientation")
        os.makedirs(os.path.join(d, "1"), exist_ok=True)
        if not os.path.exists(os.path.join(d, "1", "model.onnx")):
            os.link(os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx"), os.path.join(d, "1", "model.onnx"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"image": {"height": 48, "width": 192, "resize": "paddle_ocr", "color": "BGR",
                                 "scale": 1 / 255.0, "mean": 0.5, "std": 0.5, "pad_value": 0}}, f)
        img = os.path.join(self.tmp.name, "noise.png")
        with open(img, "wb") as f:
            f.write(png(64, 32))  # about 6 KiB
        base = ["classify", "--model-repository", repo, "-m", "text_orientation", "--json", img]
        for form in ("1Ki", "1KiB", "1K", "1024"):  # serve's --image-max-bytes 1Ki was accepted, this was not
            p = ortserve(*base, "--max-bytes", form, check=False)
            self.assertEqual(p.returncode, 1, "--max-bytes %s: %s" % (form, p.stderr))
            (res,) = json.loads(p.stdout)
            self.assertIn("1024", res["error"])  # the image is over the 1 KiB limit
        for form in ("1Mi", "1MiB", "64K"):
            p = ortserve(*base, "--max-bytes", form, "--decode-budget", "64MiB", check=False)
            self.assertEqual(p.returncode, 0, "--max-bytes %s: %s" % (form, p.stderr))
            self.assertEqual(len(json.loads(p.stdout)[0]["classes"]), 2)
        p = ortserve(*base, "--max-bytes", "1.5M", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--max-bytes", p.stderr)
        self.assertIn("'1.5M'", p.stderr)
        self.assertIn("64M = 64Mi = 64MB = 64MiB", ortserve("classify", "--help").stdout)

    def test_unknown_flag_suggests_the_closest(self):
        cases = [(["--prot", "8000"], "--port"), (["--model-repo=x", "--workrs", "2"], "--workers"),
                 (["--http-port", "8000"], "--port"), (["--model-store", "/m"], "--model-repository"),
                 (["--log-verbose", "1"], "--log-level"), (["-port", "8000"], "--port"),
                 (["--Port", "8000"], "--port"), (["--max_body_bytes", "1M"], "--max-body-bytes")]
        for args, want in cases:
            out = self.usage_error(args, names=["did you mean %s?" % want, "ortserve serve --help"])
            self.assertNotIn("usage:", out)
        out = self.usage_error(["--grpc-port", "70000"], names=["--grpc-port", "-1 (off)", "65535"])
        self.assertNotIn("usage:", out)
        out = self.usage_error(["--zzzzzz"], names=["'--zzzzzz'", "ortserve serve --help"])
        self.assertNotIn("did you mean", out)
        self.usage_error(["--mod", "x"], names=["'--mod'", "ambiguous", "--model-name", "--model-repository"])
        self.usage_error(["--port"], names=["--port", "needs a value"])
        self.usage_error(["stray"], names=["'stray'"])

    def test_unknown_command_and_other_commands_flags(self):
        for args, want in ((["srve"], "did you mean 'serve'?"), (["clasify"], "did you mean 'classify'?"),
                           (["info", "--jsn", "m.onnx"], "did you mean --json?"),
                           (["run", "m.onnx", "--inputs", "x=x.npy"], "did you mean --input?"),
                           (["classify", "--top_k", "3"], "did you mean --top-k?")):
            p = ortserve(*args, check=False)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(want, p.stderr)
            self.assertIn("ortserve %s--help" % ("" if len(args) == 1 else args[0] + " "), p.stderr)
            self.assertLessEqual(len(p.stderr.strip().splitlines()), 3, p.stderr)

    def test_unknown_variable_is_a_warning(self):
        # An ORTSERVE_* variable no option reads is a typo or meant for another version: the server
        # starts (a shared environment must not stop it) and says which variable it ignores.
        rc, port, out = serve(self.repo, env={"ORTSERVE_PROT": "9000", "ORTSERVE_SOMETHING_ELSE": "1"})
        self.assertIsNone(rc, out)
        warned = {r["variable"]: r for r in log_events(out, "unknown_variable")}
        self.assertEqual(set(warned), {"ORTSERVE_PROT", "ORTSERVE_SOMETHING_ELSE"})
        self.assertEqual(warned["ORTSERVE_PROT"]["level"], "warn")
        self.assertEqual(warned["ORTSERVE_PROT"]["did_you_mean"], "ORTSERVE_PORT")
        self.assertNotIn("did_you_mean", warned["ORTSERVE_SOMETHING_ELSE"])
        # Options' variables, and those ortserve reads outside the options table, are not reported.
        rc, port, out = serve(self.repo, env={"ORTSERVE_LOG_LEVEL": "info", "ORTSERVE_CGROUP_ROOT": "/sys/fs/cgroup"})
        self.assertIsNone(rc, out)
        self.assertEqual(log_events(out, "unknown_variable"), [])

    def test_threads_follow_the_cpus_this_process_may_use(self):
        # Loops and workers default to the CPUs the affinity mask allows (taskset, a cpuset), lowered to a
        # cgroup CPU quota (a container's --cpus, a Kubernetes CPU limit); they were one per online CPU of
        # the machine, so a server limited to one CPU of 64 started 64 loops and 64 workers.
        mine = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, {min(mine)})  # inherited by the server
            rc, _, out = serve(self.repo)
        finally:
            os.sched_setaffinity(0, mine)
        self.assertIsNone(rc, out)
        (lis,) = log_events(out, "listening")
        self.assertEqual((lis["cpus"], lis["loops"], lis["workers"]), (1, 1, 1), lis)
        with tempfile.TemporaryDirectory() as cg:
            os.makedirs(os.path.join(cg, "root", "ctr"))
            with open(os.path.join(cg, "self"), "w") as f:
                f.write("0::/ctr\n")
            with open(os.path.join(cg, "root", "ctr", "cpu.max"), "w") as f:
                f.write("100000 100000\n")  # one CPU's time
            env = {"ORTSERVE_CGROUP_ROOT": os.path.join(cg, "root"), "ORTSERVE_PROC_CGROUP": os.path.join(cg, "self")}
            rc, _, out = serve(self.repo, env=env)
            self.assertIsNone(rc, out)
            (lis,) = log_events(out, "listening")
            self.assertEqual((lis["cpus"], lis["loops"], lis["workers"]), (1, 1, 1), lis)
            rc, _, out = serve(self.repo, "--loops", "3", "--workers", "2", env=env)  # flags still win
            self.assertIsNone(rc, out)
            (lis,) = log_events(out, "listening")
            self.assertEqual((lis["cpus"], lis["loops"], lis["workers"]), (1, 3, 2), lis)

    def test_pool_bytes_is_what_the_pool_reserves(self):
        # --pool-bytes 512M used to reserve 464 MiB: the 4 KiB and 16 KiB classes stop at 4096 slots and
        # their unused share was lost. Now the budget is planned whole, and the plan is logged.
        for flag, want in (("512M", 512 << 20), ("24M", 24 << 20), ("1G", 1 << 30)):
            rc, _, out = serve(self.repo, "--pool-bytes", flag)
            self.assertIsNone(rc, out)
            (listening,) = log_events(out, "listening")
            (plan,) = log_events(out, "pool_plan")
            self.assertEqual(plan["budget_bytes"], want, flag)
            self.assertEqual(plan["budget"], "--pool-bytes")
            classes = [tuple(int(x) for x in c.split("x")) for c in plan["classes"].split(",")]
            planned = sum(size * n for size, n in classes)
            self.assertEqual(plan["planned_bytes"], planned)
            self.assertEqual(listening["pool_bytes"], planned)
            self.assertLessEqual(planned, want)
            self.assertGreater(planned, want - 4096, "%s: %d of %d bytes planned" % (flag, planned, want))
            self.assertTrue(all(n <= 4096 for _, n in classes), classes)
        rc, _, out = serve(self.repo)
        (plan,) = log_events(out, "pool_plan")
        self.assertEqual(plan["budget"], "default")


def make_repo_with(root, name, model):
    """root/NAME/1/model.onnx from MODELS/MODEL.onnx; returns the repository root/name-repo."""
    repo = os.path.join(root, name + "-repo")
    os.makedirs(os.path.join(repo, name, "1"), exist_ok=True)
    dst = os.path.join(repo, name, "1", "model.onnx")
    if not os.path.exists(dst):
        os.link(os.path.join(MODELS, model + ".onnx"), dst)
    return repo


class socket_on_free_port:
    """A port that was free a moment ago (bound and released): for a test that must name a port."""

    def __enter__(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    unittest.main(verbosity=2)
