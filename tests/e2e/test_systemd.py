#!/usr/bin/python3
"""test_systemd.py — deploy/systemd/ortserve.service and its EnvironmentFile, without a running
systemd (this machine has none as PID 1):

- `systemd-analyze verify` accepts the unit without a single message, once it is pointed at an
  installed copy of the build (ExecStart must exist) and at the installed man page
  (Documentation=man:ortserve(1) is checked too); `systemd-analyze security --offline` rates it
  "OK" (exposure below 2);
- the settings the brief asks for are there: DynamicUser, ProtectSystem=strict, ProtectHome,
  PrivateTmp, PrivateDevices, NoNewPrivileges, RestrictAddressFamilies, SystemCallFilter,
  MemoryMax, LimitNOFILE above --max-connections, StateDirectory/ConfigurationDirectory holding
  the repository, Restart=on-failure, Type=exec, KillSignal=SIGTERM with TimeoutStopSec longer
  than the drain timeout; every ORTSERVE_* name in the unit and the EnvironmentFile is an option;
- ExecStart run the way systemd would run it (the unit's Environment= with %S, then the
  EnvironmentFile) serves a demo repository laid out in the StateDirectory, and exits 0 on SIGTERM;
- under strace, that run (start, inferences on the loop and on a worker, a reload, /metrics,
  drain) makes only system calls the unit's SystemCallFilter= allows, opens only the socket
  families RestrictAddressFamilies= allows, and never maps memory writable and executable
  (MemoryDenyWriteExecute=). Skipped for sanitizer builds (their runtime needs ptrace) and without
  strace.
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
from deploy_support import (SRC, LiveServer, cmake_cache, cross_built, default_of, demo_repo, install,  # noqa: E402
                            parse_size, run, serve_options)

UNIT = os.path.join(SRC, "deploy", "systemd", "ortserve.service")
ENVFILE = os.path.join(SRC, "deploy", "systemd", "ortserve.env")
OTHER_ENV = {"ORT_DISABLE_TELEMETRY"}


def parse_unit(path):
    """[(section, key, value)] in order (keys repeat: Environment=, SystemCallFilter=)."""
    out, section = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            m = re.fullmatch(r"\[(\w+)\]", line)
            if m:
                section = m.group(1)
                continue
            k, _, v = line.partition("=")
            out.append((section, k.strip(), v.strip()))
    return out


def parse_envfile(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k.strip()] = v.strip().strip('"')
    return env


def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|min)?", v)
    return int(m.group(1)) * {"ms": 0.001, None: 1, "s": 1, "min": 60}[m.group(2)]


def syscall_groups():
    """{@group: set of syscalls}, nested groups expanded (systemd-analyze syscall-filter)."""
    raw, cur = {}, None
    for line in run(["systemd-analyze", "syscall-filter"]).stdout.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if line.startswith("@"):
            cur = s
            raw[cur] = set()
        elif cur:
            raw[cur].add(s)

    def expand(g, seen=()):
        out = set()
        for x in raw.get(g, ()):
            out |= expand(x, seen + (g,)) if x.startswith("@") and x not in seen else {x}
        return out

    return {g: expand(g) for g in raw}


class Unit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-systemd-")
        cls.prefix = install(os.path.join(cls.tmp, "stage"))
        cls.entries = parse_unit(UNIT)
        cls.svc = {}
        for sec, k, v in cls.entries:
            if sec == "Service":
                cls.svc.setdefault(k, []).append(v)
        cls.opts = serve_options()
        # A copy of the unit pointed at the installed binary and a copy of the EnvironmentFile.
        cls.envfile = os.path.join(cls.tmp, "ortserve.env")
        shutil.copyfile(ENVFILE, cls.envfile)
        with open(UNIT) as f:
            text = f.read()
        text = re.sub(r"(?m)^ExecStart=/usr/local/", "ExecStart=%s/" % cls.prefix, text)
        text = re.sub(r"(?m)^EnvironmentFile=-/etc/ortserve/ortserve.env$", "EnvironmentFile=-" + cls.envfile, text)
        cls.unit_copy = os.path.join(cls.tmp, "ortserve.service")
        with open(cls.unit_copy, "w") as f:
            f.write(text)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def one(self, key):
        v = self.svc.get(key)
        self.assertIsNotNone(v, "%s= is missing" % key)
        return v[-1]

    def test_systemd_analyze_verify_is_silent(self):
        env = dict(os.environ, MANPATH=os.path.join(self.prefix, "share", "man"), SYSTEMD_LOG_COLOR="0")
        p = subprocess.run(["systemd-analyze", "verify", "--man=yes", self.unit_copy], capture_output=True,
                           text=True, env=env, timeout=60)
        mine = [line for line in (p.stdout + p.stderr).splitlines() if "ortserve" in line]
        self.assertEqual(mine, [], "systemd-analyze verify:\n" + p.stdout + p.stderr)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_security_exposure_is_ok(self):
        p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", self.unit_copy],
                           capture_output=True, text=True, timeout=60, env=dict(os.environ, SYSTEMD_COLORS="0"))
        m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", p.stdout + p.stderr)
        self.assertIsNotNone(m, p.stdout + p.stderr)
        self.assertLess(float(m.group(1)), 2.0, p.stdout)

    def test_settings(self):
        expect = {"Type": "exec", "DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                  "PrivateTmp": "yes", "PrivateDevices": "yes", "NoNewPrivileges": "yes", "Restart": "on-failure",
                  "KillSignal": "SIGTERM", "StateDirectory": "ortserve", "ConfigurationDirectory": "ortserve",
                  "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "MemoryDenyWriteExecute": "yes"}
        for k, v in expect.items():
            self.assertEqual(self.one(k), v, k)
        self.assertEqual(self.svc["SystemCallFilter"][0], "@system-service")
        self.assertRegex(self.one("ExecStart"), r"^/usr/local/bin/ortserve serve$")
        self.assertTrue(self.one("EnvironmentFile").startswith("-/etc/ortserve/"), "optional, in ConfigurationDirectory")
        self.assertIn(("Unit", "Documentation", "man:ortserve(1)"), self.entries)
        self.assertIn(("Install", "WantedBy", "multi-user.target"), self.entries)
        env = self.environment("/var/lib")
        # The repository lives in the StateDirectory (by default and in the shipped EnvironmentFile).
        self.assertTrue(env["ORTSERVE_MODEL_REPOSITORY"].startswith("/var/lib/ortserve/"))
        for k in env:
            if k.startswith("ORTSERVE_"):
                self.assertIn(k, {o.env for o in self.opts.values()}, "%s is not an ortserve variable" % k)
            else:
                self.assertIn(k, OTHER_ENV)
        drain_s = int(env.get("ORTSERVE_DRAIN_TIMEOUT_MS", default_of(self.opts["drain-timeout-ms"]))) / 1000
        self.assertGreater(seconds(self.one("TimeoutStopSec")), drain_s + 5)
        self.assertGreater(int(self.one("LimitNOFILE")), 2 * int(default_of(self.opts["max-connections"])))
        mem = parse_size(self.one("MemoryMax"))
        pool = parse_size(env["ORTSERVE_POOL_BYTES"]) if "ORTSERVE_POOL_BYTES" in env else mem // 4
        self.assertGreaterEqual(mem - pool, 512 << 20)

    def environment(self, state_dir):
        """The service's environment as systemd builds it: Environment= (%S expanded), then the
        EnvironmentFile over it; /var/lib in the result mapped to state_dir."""
        env = {}
        for v in self.svc.get("Environment", []):
            k, _, val = v.partition("=")
            env[k] = val.replace("%S", "/var/lib")
        env.update(parse_envfile(ENVFILE))
        return {k: re.sub(r"^/var/lib(?=/|$)", state_dir, v) for k, v in env.items()}

    def start(self, **kw):
        state = os.path.join(self.tmp, "var", "lib")
        env = self.environment(state)
        if not os.path.isdir(env["ORTSERVE_MODEL_REPOSITORY"]):
            demo_repo(env["ORTSERVE_MODEL_REPOSITORY"])
        cmd = self.one("ExecStart").split()
        self.assertEqual(cmd[1:], ["serve"])
        return LiveServer([], env=env, binary=os.path.join(self.prefix, "bin", "ortserve"), **kw)

    def exercise(self, srv):
        self.assertEqual(srv.get("/v2/health/ready")[0], 200, srv.logs())
        x = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
        self.assertEqual(srv.get("/v2/models/mlp/infer", "POST", json.dumps(x))[0], 200)
        img = {"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                           "data": [0.1] * (3 * 224 * 224)}]}
        st, body = srv.get("/v2/models/mobilenetv2/infer", "POST", json.dumps(img))
        self.assertEqual(st, 200, body[:300])
        self.assertEqual(srv.get("/v2/repository/models/mlp/load", "POST", b"{}")[0], 200)
        self.assertEqual(srv.get("/metrics")[0], 200)

    def test_execstart_serves_the_state_directory(self):
        with self.start() as srv:
            self.exercise(srv)
        self.assertEqual(srv.proc.returncode, 0, srv.logs())

    def test_sandbox_allows_what_ortserve_does(self):
        if cmake_cache("OSV_SANITIZE"):
            self.skipTest("sanitizer runtimes make system calls (ptrace) the unit's filter refuses")
        if cross_built():
            self.skipTest("under qemu-user, strace would see the emulator's system calls, not ortserve's")
        if not shutil.which("strace"):
            self.skipTest("strace is not installed (tools/deps.sh test installs it)")
        trace = os.path.join(self.tmp, "strace.txt")
        with self.start(wrapper=["strace", "-f", "-qq", "-o", trace]) as srv:
            self.exercise(srv)
        self.assertEqual(srv.proc.returncode, 0, srv.logs())
        with open(trace) as f:
            lines = f.read().splitlines()
        calls = {m.group(1) for m in (re.match(r"^\d+\s+([a-z0-9_]+)\(", line) for line in lines) if m}
        self.assertIn("epoll_wait", calls)
        groups = syscall_groups()
        allowed = set()
        filters = self.svc["SystemCallFilter"]
        for f in filters:  # an allow list first, then deny lists taken out of it (systemd.exec(5))
            names = f.lstrip("~").split()
            s = set().union(*(groups[n] if n.startswith("@") else {n} for n in names))
            allowed = allowed - s if f.startswith("~") else allowed | s
        calls.discard("execve")  # ExecStart itself, before the filter applies
        self.assertEqual(calls - allowed, set(), "system calls the unit's SystemCallFilter= refuses")
        families = set(re.findall(r"\bsocket\((AF_\w+)", "\n".join(lines)))
        self.assertLessEqual(families, set(self.one("RestrictAddressFamilies").split()))
        wx = [line for line in lines if re.search(r"\b(mmap|mprotect|pkey_mprotect)\(", line)
              and "PROT_EXEC" in line and ("PROT_WRITE" in line or "mprotect" in line)]
        self.assertEqual(wx, [], "MemoryDenyWriteExecute= would refuse these")


if __name__ == "__main__":
    unittest.main(verbosity=2)
