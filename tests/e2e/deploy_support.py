"""deploy_support.py — test support for the packaging and deployment tests (test_install.py,
test_container.py, test_manifests.py, test_systemd.py): what `ortserve serve --help` declares,
installs of the build tree into temporary directories, ortserve's size syntax and Kubernetes
quantities, and a server started with exactly the options a deployment file gives it.

Paths come from ctest's environment (OSV_SOURCE_DIR, OSV_BINARY_DIR, OSV_TEST_MODELS, OSV_REAL_MODELS)."""
import glob
import http.client
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

SRC = os.environ.get("OSV_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN_DIR = os.environ.get("OSV_BINARY_DIR", os.path.join(SRC, "build", "release"))
BIN = os.path.join(BIN_DIR, "ortserve")
MODELS = os.environ.get("OSV_TEST_MODELS", os.path.join(SRC, "var", "models"))
REAL = os.environ.get("OSV_REAL_MODELS", os.path.join(SRC, "third_party", "models"))

# ONNX Runtime 1.29 keeps a telemetry database under $HOME and files in /tmp unless told not to; the
# deployment files set this too.
QUIET_ORT = {"ORT_DISABLE_TELEMETRY": "1"}


def run(cmd, env=None, cwd=None, timeout=120, check=True):
    full = dict(os.environ)
    full.update(QUIET_ORT)
    full.update(env or {})
    p = subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def cmake_cache(name):
    """Value of a CMakeCache.txt entry of the build under test ("" when absent)."""
    with open(os.path.join(BIN_DIR, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split("=", 1)[1].strip()
    return ""


def sanitize_flags():
    """Compiler/linker flags a program linking this build's libortserve needs (its sanitizers)."""
    s = cmake_cache("OSV_SANITIZE")
    return ["-fsanitize=" + s] if s else []


def elf_machine(path):
    """e_machine of an ELF file (62 x86-64, 183 aarch64)."""
    with open(path, "rb") as f:
        head = f.read(20)
    return int.from_bytes(head[18:20], "little")


def cross_built():
    """True when the build under test targets another machine (make test-arm64: run under qemu-user)."""
    return elf_machine(BIN) != elf_machine(os.path.realpath("/proc/self/exe"))


def c_compiler():
    """The build's C compiler (the cross compiler for a cross build, which a toolchain file sets without
    caching it: CMake records it in CMakeFiles/<version>/CMakeCCompiler.cmake)."""
    cc = cmake_cache("CMAKE_C_COMPILER")
    if not cc:
        for path in glob.glob(os.path.join(BIN_DIR, "CMakeFiles", "*", "CMakeCCompiler.cmake")):
            with open(path) as f:
                m = re.search(r'^set\(CMAKE_C_COMPILER "([^"]+)"\)', f.read(), re.M)
            if m:
                cc = m.group(1)
    return cc or "cc"


def project_version():
    return cmake_cache("CMAKE_PROJECT_VERSION") or cmake_cache("ortserve_VERSION")


class ServeOption:
    def __init__(self, flag, arg, env, help_text):
        self.flag, self.arg, self.env, self.help = flag, arg, env, help_text


def serve_options():
    """{flag name: ServeOption} from `ortserve serve --help` (the binary is the reference)."""
    out = run([BIN, "serve", "--help"]).stdout
    opts, last = {}, None
    for line in out.splitlines():
        m = re.match(r"^  --([a-z0-9-]+) (\S+)\s+(.*)$", line)
        if m:
            last = ServeOption(m.group(1), m.group(2), None, m.group(3))
            opts[last.flag] = last
            continue
        m = re.match(r"^\s+env (ORTSERVE_[A-Z0-9_]+)$", line)
        if m and last:
            last.env = m.group(1)
    return opts


def default_of(opt):
    """The default a help text states, e.g. "TCP port (default 8000; ...)" -> "8000", "(10000)" -> "10000"."""
    m = re.search(r"\(default (\w+)", opt.help) or re.search(r"\((\w+)\)\s*$", opt.help)
    return m.group(1) if m else None


def parse_args(args):
    """["--a=1", "--b", "2", "--c"] -> [("a", "1"), ("b", "2"), ("c", None)] (as ortserve's getopt_long
    reads them; a value never starts with "--")."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise AssertionError("not an option: %r in %r" % (a, args))
        if "=" in a:
            k, v = a[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            k, v = a[2:], args[i + 1]
            i += 1
        else:
            k, v = a[2:], None
        out.append((k, v))
        i += 1
    return out


def parse_size(s):
    """ortserve's SIZE: digits with an optional K, M or G (powers of 1024), optionally followed by i, B or iB
    (osv_opt_parse_size in src/cli/opts.c)."""
    m = re.fullmatch(r"(\d+)(?:([KkMmGg])i?[Bb]?)?", str(s))
    if not m:
        raise ValueError("not an ortserve size: %r" % s)
    return int(m.group(1)) * {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2) and m.group(2).lower()]


def parse_quantity(q):
    """A Kubernetes resource quantity in bytes or cores: 2Gi, 512Mi, 1G, 500m, "2"."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T|m)?", str(q))
    if not m:
        raise ValueError("not a quantity: %r" % q)
    mul = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 1e3, "K": 1e3, "M": 1e6,
           "G": 1e9, "T": 1e12, "m": 1e-3}[m.group(2)]
    return float(m.group(1)) * mul


def default_pool_bytes(limit):
    """ortserve's default pool for a memory limit: a quarter, clamped to [16 MiB, 4 GiB] (src/core/pool.c)."""
    return min(max(limit // 4, 16 << 20), 4 << 30)


def install(dest, prefix="/usr/local", component=None, strip=False):
    """cmake --install of the build under test, staged under DESTDIR=dest; returns dest + prefix."""
    cmd = ["cmake", "--install", BIN_DIR, "--prefix", prefix]
    if component:
        cmd += ["--component", component]
    if strip:
        cmd.append("--strip")
    run(cmd, env={"DESTDIR": dest})
    return dest + prefix


def metric_types(text):
    """{family: type} of a Prometheus exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def metric_value(text, name):
    m = re.search(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


class LiveServer:
    """`ortserve serve ARGS...` as a deployment file gives it, moved to 127.0.0.1 and a free port (those
    options are appended, so they win over the file's). Use as a context manager."""

    def __init__(self, args, env=None, binary=None, timeout=60, wrapper=()):
        self.tmp = tempfile.mkdtemp(prefix="osv-deploy-")
        pf = os.path.join(self.tmp, "port")
        self.log_path = os.path.join(self.tmp, "log")
        full = dict(os.environ)
        full.update(QUIET_ORT)
        full.update(env or {})
        self.log = open(self.log_path, "wb")
        self.last_logs = ""
        self.wrapper = tuple(wrapper)
        self.proc = subprocess.Popen([*wrapper, binary or BIN, "serve", *args, "--host", "127.0.0.1", "--port", "0",
                                      "--grpc-port", "0", "--port-file", pf], stdout=self.log, stderr=subprocess.STDOUT, env=full)
        deadline = time.monotonic() + timeout
        self.port = None
        while time.monotonic() < deadline and self.port is None:
            if self.proc.poll() is not None:
                raise AssertionError("ortserve exited with %d:\n%s" % (self.proc.returncode, self.logs()))
            try:
                with open(pf) as f:
                    self.port = int(f.read())
            except (OSError, ValueError):
                time.sleep(0.02)  # bounded poll of the port file; the wait has a deadline
        if self.port is None:
            raise AssertionError("ortserve did not listen within %ds:\n%s" % (timeout, self.logs()))

    def get(self, path, method="GET", body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                self.last_logs = f.read().decode(errors="replace")
        except OSError:
            pass  # removed by __exit__: the copy taken then
        return self.last_logs

    def server_pid(self):
        """ortserve's pid: the process started, or its child when it runs under a wrapper (strace)."""
        if not self.wrapper:
            return self.proc.pid
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            kids = f.read().split()
        return int(kids[0]) if kids else self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.server_pid(), signal.SIGTERM)  # the drain, as systemd or Kubernetes stops it
            except (OSError, ValueError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        self.logs()
        shutil.rmtree(self.tmp, ignore_errors=True)


def demo_repo(dest):
    """The demo repository `make run` serves (tools/demo_repo.sh), laid out in dest."""
    run([os.path.join(SRC, "tools", "demo_repo.sh"), dest, MODELS, REAL])
    return dest
