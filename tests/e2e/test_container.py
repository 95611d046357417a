#!/usr/bin/python3
"""test_container.py — the container image: checked without a container engine, and, when podman and
the image are present, for real:

- the Dockerfile, parsed: a Debian bookworm build stage and a debian:bookworm-slim runtime stage,
  every RUN line a single call into tools/image_build.sh, a numeric non-root USER that the script
  creates, EXPOSE == ORTSERVE_PORT == ortserve's default port, every ORTSERVE_* variable a real
  option, the HEALTHCHECK running the staged health-check script, an exec-form ENTRYPOINT
  `ortserve serve` whose default repository is the staged demo repository;
- `tools/image_build.sh install ROOTFS` run for real into a temporary root (the build and
  runtime steps need apt and a network, and belong to the fresh-machine proof): the binary, ONNX
  Runtime, its notices, the health check, the demo repository with its config.json and labels, and
  the list of runtime packages land where the Dockerfile expects them — and nothing for developers;
- the staged binary, run from the staged root with the image's environment, serves the staged demo
  repository (it finds the staged ONNX Runtime by itself), and the staged health check answers 0
  while it is ready and 1 once it is gone;
- the image itself (RealContainer), built from the Dockerfile by `make container-test`
  (tools/container_check.sh build, a few minutes: not part of `make test`): tools/container_check.sh
  check runs it under a 512 MiB memory limit and checks from outside that it serves the demo models,
  passes its HEALTHCHECK, runs as uid 10001, stays under the limit (which ortserve must see), and exits
  0 on SIGTERM well within the drain timeout; its figures (time to ready, memory, stop time) and the
  image's size (under 80 MB compressed) are asserted. Skipped, with the reason, when podman or the
  image is missing (OSV_CONTAINER_CHECK=1, as `make container-test` sets, makes that a failure), and
  in sanitizer builds (the image holds the release build).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from deploy_support import (BIN_DIR, MODELS, REAL, SRC, LiveServer, cmake_cache, default_of,  # noqa: E402
                            project_version, run, serve_options)

DOCKERFILE = os.path.join(SRC, "Dockerfile")
SCRIPT = "tools/image_build.sh"


def parse_dockerfile(path):
    """[(instruction, argument text)] with comments dropped and continuation lines joined."""
    out, cur = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not cur and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if cur and line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            cur += line
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def stages(instructions):
    """[{"from": image, "name": alias, "ins": [(instr, args)...]}] in order."""
    st = []
    for ins, arg in instructions:
        if ins == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arg, re.I)
            st.append({"from": m.group(1), "name": m.group(2), "ins": []})
        elif st:
            st[-1]["ins"].append((ins, arg))
    return st


def exec_form(arg):
    return json.loads(arg) if arg.startswith("[") else None


def stage_env(stage):
    """The ENV of a stage: {name: value}."""
    env = {}
    for ins, arg in stage["ins"]:
        if ins == "ENV":
            for k, v in re.findall(r'([A-Z_][A-Z0-9_]*)=("[^"]*"|\S+)', arg):
                env[k] = v.strip('"')
    return env


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stages = stages(parse_dockerfile(DOCKERFILE))
        cls.final = cls.stages[-1]
        cls.opts = serve_options()

    def final_ins(self, name):
        return [a for i, a in self.final["ins"] if i == name]

    def env(self):
        return stage_env(self.final)

    def test_stages(self):
        self.assertGreaterEqual(len(self.stages), 2)
        self.assertRegex(self.stages[0]["from"], r"^debian:bookworm(@sha256:[0-9a-f]+)?$")
        self.assertRegex(self.final["from"], r"^debian:bookworm-slim(@sha256:[0-9a-f]+)?$")
        names = [s["name"] for s in self.stages[:-1]]
        copies = [a for i, a in self.final["ins"] if i == "COPY"]
        self.assertTrue(copies, "the runtime stage copies nothing from the build stage")
        for c in copies:
            m = re.search(r"--from=(\S+)", c)
            self.assertTrue(m and m.group(1) in names, "runtime COPY not from a build stage: " + c)

    def test_every_run_line_is_one_call_into_the_script(self):
        runs = [(s["name"], a) for s in self.stages for i, a in s["ins"] if i == "RUN"]
        self.assertTrue(runs)
        for stage, arg in runs:
            cmd = re.sub(r"--mount=\S+\s+", "", arg).strip()
            self.assertNotRegex(cmd, r"&&|;|\|", "RUN does more than call the script: " + arg)
            self.assertRegex(cmd, r"^(\S*/)?image_build\.sh [a-z-]+( \S+)*$", arg)
            if cmd.startswith("/tmp/"):  # the runtime stage mounts the script instead of copying it
                self.assertIn("source=%s" % SCRIPT, arg)
        steps = [re.sub(r"--mount=\S+\s+", "", a).split()[1] for _, a in runs]
        self.assertEqual(steps, ["build-deps", "build", "install", "runtime"])

    def test_user_is_numeric_non_root_and_created_by_the_script(self):
        users = self.final_ins("USER")
        self.assertEqual(len(users), 1)
        uid, _, gid = users[0].partition(":")
        self.assertRegex(uid, r"^\d+$", "Kubernetes' runAsNonRoot needs a numeric USER")
        self.assertNotEqual(int(uid), 0)
        with open(os.path.join(SRC, SCRIPT)) as f:
            script = f.read()
        self.assertIn("IMAGE_UID=%s" % uid, script)
        if gid:
            self.assertEqual(gid, uid)
        for s in self.stages[:-1]:
            self.assertNotIn("USER", [i for i, _ in s["ins"]])  # building needs root; only the image drops it

    def test_port_and_environment(self):
        env = self.env()
        for k in env:
            if k.startswith("ORTSERVE_"):
                self.assertIn(k, {o.env for o in self.opts.values()}, "%s is not an ortserve variable" % k)
        default_port = default_of(self.opts["port"])
        # HTTP's port and gRPC's (8001 whenever --port is not 0, as `serve --help` says)
        self.assertIn("default 8001", self.opts["grpc-port"].help)
        self.assertEqual(self.final_ins("EXPOSE"), ["%s 8001" % default_port])
        self.assertEqual(env.get("ORTSERVE_PORT"), default_port)
        self.assertEqual(env.get("ORTSERVE_HOST"), "0.0.0.0")
        self.assertEqual(env.get("ORTSERVE_MODEL_REPOSITORY"), "/srv/ortserve/models")

    def test_entrypoint_and_healthcheck(self):
        ep = exec_form(self.final_ins("ENTRYPOINT")[0])
        self.assertEqual(ep, ["/usr/local/bin/ortserve", "serve"], "exec form, so ortserve is PID 1 and gets SIGTERM")
        self.assertEqual(exec_form(self.final_ins("CMD")[0]), [])
        self.assertEqual(self.final_ins("STOPSIGNAL"), ["SIGTERM"])
        hc = self.final_ins("HEALTHCHECK")
        self.assertEqual(len(hc), 1)
        opts = dict(re.findall(r"--([a-z-]+)=(\S+)", hc[0]))
        self.assertTrue({"interval", "timeout", "start-period", "retries"} <= set(opts))
        cmd = exec_form(hc[0].split("CMD", 1)[1].strip())
        self.assertEqual(cmd, ["/usr/local/libexec/ortserve/healthcheck"])
        with open(os.path.join(SRC, "deploy", "container", "healthcheck.sh")) as f:
            self.assertIn("GET /v2/health/ready ", f.read())


class ImageSteps(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-image-")
        cls.root = os.path.join(cls.tmp, "rootfs")
        cls.out = run([os.path.join(SRC, SCRIPT), "install", cls.root, BIN_DIR, MODELS, REAL]).stdout

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def p(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def test_files_land(self):
        self.assertTrue(os.access(self.p("/usr/local/bin/ortserve"), os.X_OK))
        self.assertTrue(os.path.isfile(self.p("/usr/local/lib/ortserve/libonnxruntime.so.1")))
        self.assertTrue(os.access(self.p("/usr/local/libexec/ortserve/healthcheck"), os.X_OK))
        if os.path.exists(os.path.join(SRC, "third_party", "onnxruntime", "LICENSE")):
            self.assertTrue(os.path.isfile(self.p("/usr/local/share/doc/ortserve/onnxruntime/LICENSE")))
        repo = self.p("/srv/ortserve/models")
        for rel in ["mlp/1/model.onnx", "mobilenetv2/1/model.onnx", "mobilenetv2/config.json",
                    "mobilenetv2/labels.txt"]:
            self.assertTrue(os.path.isfile(os.path.join(repo, rel)), rel)
        with open(os.path.join(repo, "mobilenetv2", "config.json")) as f:
            self.assertEqual(json.load(f)["labels"], "labels.txt")
        if os.path.exists(os.path.join(REAL, "ch_ppocr_mobile_v2.0_cls_infer.onnx")):
            self.assertTrue(os.path.isfile(os.path.join(repo, "text_orientation", "1", "model.onnx")))
        for dirpath, _, files in os.walk(repo):  # readable by the image's unprivileged user
            for f in files:
                self.assertTrue(os.stat(os.path.join(dirpath, f)).st_mode & 0o004, f)

    def test_no_developer_files(self):
        for rel in ["/usr/local/include", "/usr/local/lib/libortserve.a", "/usr/local/lib/pkgconfig",
                    "/usr/local/lib/cmake", "/usr/local/share/man"]:
            self.assertFalse(os.path.exists(self.p(rel)), rel)
        syms = run(["readelf", "-S", self.p("/usr/local/bin/ortserve")]).stdout
        self.assertNotIn(".debug_info", syms, "the image's binary is stripped")
        self.assertNotIn(".symtab", syms)

    def test_runtime_packages(self):
        with open(self.p("/usr/local/share/ortserve/runtime-packages")) as f:
            pkgs = f.read().split()
        for p in ["libc6", "libcurl4", "libhttp-parser2.9", "libstdc++6"]:
            self.assertIn(p, pkgs)
        for p in pkgs:
            self.assertRegex(p, r"^[a-z0-9][a-z0-9+.-]+$")
            self.assertNotRegex(p, r"-dev$")
            st = run(["dpkg-query", "-W", "-f=${Status}", p]).stdout
            self.assertIn("install ok installed", st)

    def test_staged_binary_serves_the_demo_repository(self):
        image_env = stage_env(stages(parse_dockerfile(DOCKERFILE))[-1])
        image_env["ORTSERVE_MODEL_REPOSITORY"] = self.p(image_env["ORTSERVE_MODEL_REPOSITORY"])
        env = {k: v for k, v in os.environ.items() if k != "ORTSERVE_ORT_LIBRARY"}
        env.update(image_env)
        version = subprocess.run([self.p("/usr/local/bin/ortserve"), "--version"], capture_output=True,
                                 text=True, env=env, timeout=60)
        self.assertEqual(version.returncode, 0, version.stderr)
        self.assertIn(os.path.realpath(self.p("/usr/local/lib/ortserve/libonnxruntime.so.1")),
                      [os.path.realpath(x) for x in re.findall(r"\((/[^)]*)\)", version.stdout)])
        hc = self.p("/usr/local/libexec/ortserve/healthcheck")
        with LiveServer([], env=env, binary=self.p("/usr/local/bin/ortserve")) as srv:
            st, _ = srv.get("/v2/health/ready")
            self.assertEqual(st, 200, srv.logs())
            st, body = srv.get("/v2/models/mobilenetv2")
            self.assertEqual(st, 200)
            self.assertEqual(json.loads(body)["outputs"][0]["shape"], [-1, 1000])
            x = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
            st, body = srv.get("/v2/models/mlp/infer", "POST", json.dumps(x))
            self.assertEqual(st, 200, body)
            hc_env = dict(os.environ, ORTSERVE_PORT=str(srv.port), ORTSERVE_HOST="0.0.0.0")
            self.assertEqual(subprocess.run([hc], env=hc_env, timeout=10).returncode, 0)
            port = srv.port
        self.assertEqual(srv.proc.returncode, 0)
        gone = subprocess.run([hc], env=dict(os.environ, ORTSERVE_PORT=str(port)), timeout=10)
        self.assertEqual(gone.returncode, 1)

    def test_healthcheck_fails_while_not_ready(self):
        # A repository whose only model cannot load: ortserve listens, live, but never ready.
        repo = os.path.join(self.tmp, "broken")
        os.makedirs(os.path.join(repo, "bad", "1"))
        with open(os.path.join(repo, "bad", "1", "model.onnx"), "wb") as f:
            f.write(b"not an onnx model")
        hc = self.p("/usr/local/libexec/ortserve/healthcheck")
        with LiveServer(["--model-repository", repo]) as srv:
            self.assertEqual(srv.get("/v2/health/live")[0], 200)
            self.assertEqual(srv.get("/v2/health/ready")[0], 503)
            r = subprocess.run([hc], env=dict(os.environ, ORTSERVE_PORT=str(srv.port)), timeout=10)
            self.assertEqual(r.returncode, 1)


ENGINE = os.environ.get("ENGINE", "podman")
CHECK = os.path.join(SRC, "tools", "container_check.sh")


def real_container_skip_reason(image):
    if cmake_cache("OSV_SANITIZE"):
        return "a sanitizer build: the image holds the release build, checked in the release run"
    if not shutil.which(ENGINE):
        return "%s is not installed (tools/deps.sh container; `make container-test` builds and runs the image)" % ENGINE
    if os.geteuid() != 0:
        return "needs root (rootful %s; the container's cgroup is read on the host)" % ENGINE
    if subprocess.run([ENGINE, "image", "inspect", image], capture_output=True, timeout=60).returncode != 0:
        return "no image %s: `make container-test` builds it (a few minutes)" % image
    return None


class RealContainer(unittest.TestCase):
    """The image, run by tools/container_check.sh check; its figures asserted here."""

    @classmethod
    def setUpClass(cls):
        cls.image = os.environ.get("OSV_CONTAINER_IMAGE") or "localhost/ortserve:%s" % project_version()
        reason = real_container_skip_reason(cls.image)
        if reason:
            if os.environ.get("OSV_CONTAINER_CHECK"):
                raise AssertionError(reason)
            raise unittest.SkipTest(reason)
        env = dict(os.environ, ENGINE=ENGINE, MEMORY="512m")
        cls.check = subprocess.run([CHECK, "check", cls.image], capture_output=True, text=True, env=env, timeout=300)
        cls.size = subprocess.run([CHECK, "size", cls.image], capture_output=True, text=True, env=env, timeout=300)
        cls.figures = {}
        for line in (cls.check.stdout + cls.size.stdout).splitlines():
            m = re.fullmatch(r"figure (\w+) ([0-9.]+)", line)
            if m:
                cls.figures[m.group(1)] = float(m.group(2))
        sys.stderr.write("container %s: %s\n" % (cls.image, cls.figures))

    def fig(self, name):
        self.assertIn(name, self.figures, self.check.stdout + self.check.stderr)
        return self.figures[name]

    def test_check_passes(self):
        # Serves mlp, mobilenetv2 and text_orientation (metadata, infer, classify on the image's demo
        # images), HEALTHCHECK passes, SIGTERM: exit 0 and no OOM kill.
        self.assertEqual(self.check.returncode, 0, self.check.stdout + self.check.stderr)
        self.assertIn("ok: " + self.image, self.check.stderr)

    def test_image_config(self):
        cfg = json.loads(run([ENGINE, "image", "inspect", self.image]).stdout)[0]
        conf = cfg.get("Config") or {}
        self.assertEqual(conf.get("User"), "10001:10001")
        self.assertEqual(conf.get("Entrypoint"), ["/usr/local/bin/ortserve", "serve"])
        hc = cfg.get("Healthcheck") or cfg.get("HealthCheck") or {}  # kept by the docker format only
        self.assertEqual(hc.get("Test"), ["CMD", "/usr/local/libexec/ortserve/healthcheck"], cfg.keys())

    def test_runs_as_the_image_user(self):
        self.assertEqual(self.fig("uid"), 10001)

    def test_ready_quickly(self):
        self.assertLess(self.fig("startup_ms"), 5000)  # ortserve's own start, models loaded
        self.assertLess(self.fig("ready_ms_from_run"), 30000)  # from `podman run` to 200 on /v2/health/ready

    def test_memory_limit_seen_and_kept(self):
        self.assertEqual(self.fig("memory_limit_bytes"), 512 << 20)
        self.assertLess(self.fig("memory_peak_bytes"), self.fig("memory_limit_bytes"))

    def test_stops_on_sigterm(self):
        self.assertLess(self.fig("stop_ms"), 10000)

    def test_image_size(self):
        self.assertEqual(self.size.returncode, 0, self.size.stderr)
        self.assertLess(self.fig("image_gzip_bytes"), 80e6, "the image's goal: under 80 MB compressed")


if __name__ == "__main__":
    unittest.main(verbosity=2)
