"""benchlib.py — shared pieces of the benchmark suite (bench/run_all.py): servers under test (ortserve,
the Node.js baseline, nginx with a canned reply), the wrk load generator, request bodies, per-process
figures from /proc, model repositories, and the machine description. Figures only: nothing here
asserts anything about speed."""
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "var", "models")
REAL_MODELS = os.path.join(ROOT, "third_party", "models")
OUT = os.path.join(ROOT, "var", "bench")
TMP = os.path.join(OUT, "tmp")
LUA = os.path.join(ROOT, "bench", "wrk", "post.lua")
NODE_SERVER = os.path.join(ROOT, "bench", "node_baseline", "server.js")
NODE_MODULES = os.path.join(ROOT, "third_party", "node_baseline", "node_modules")
ORT_LIB = os.path.join(ROOT, "third_party", "onnxruntime", "lib", "libonnxruntime.so.1")
T0 = time.monotonic()


def log(msg):
    print("[%6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---- /proc figures ------------------------------------------------------------------------------------

def _status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid):
    return _status(pid, "VmRSS")


def hwm_kb(pid):
    return _status(pid, "VmHWM")


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def stat_fields(pid):
    """(minflt, utime+stime seconds) of a process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0.0
    return int(fields[7]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


BASE_LIBS = ("libc.so", "libm.so", "libstdc++", "libgcc_s", "ld-linux", "libpthread", "libdl.so", "librt.so")


def smaps_breakdown(pid):
    """Resident KiB of a process by kind of mapping: anonymous (heap, stacks, pool, ORT's arena), ONNX
    Runtime's library, the program itself (and libortserve), the C/C++ runtime, and every other shared
    library (listed in `libs`)."""
    out = {"anon": 0, "onnxruntime": 0, "program": 0, "c_runtime": 0, "other_libs": 0, "libs": {}}
    cur = None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    parts = line.split(None, 5)
                    path = parts[5].strip() if len(parts) > 5 else ""
                    name = os.path.basename(path)
                    if not path or path.startswith("["):
                        cur = "anon"
                    elif "libonnxruntime" in name:
                        cur = "onnxruntime"
                    elif name in ("ortserve", "bare_ort") or name.startswith("libortserve"):
                        cur = "program"
                    elif name.startswith(BASE_LIBS):
                        cur = "c_runtime"
                    elif path.startswith("/dev/shm") or path.startswith("/memfd") or "(deleted)" in path:
                        cur = "anon"
                    else:
                        cur = "other_libs"
                        out["libs"].setdefault(name, 0)
                        out.setdefault("paths", {})[name] = path
                    lib = name if cur == "other_libs" else None
                elif line.startswith("Rss:") and cur:
                    kb = int(line.split()[1])
                    out[cur] += kb
                    if lib:
                        out["libs"][lib] += kb
    except OSError:
        pass
    out["libs"] = {k: v for k, v in sorted(out["libs"].items(), key=lambda kv: -kv[1]) if v}
    return out


def ldd(path):
    """{soname: real path} of everything a program or library loads (ldd)."""
    out = {}
    for line in _cmd(["ldd", path]).splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            out[m.group(1)] = os.path.realpath(m.group(2))
    return out


def needed_by(path):
    """Basenames of the real files of the shared libraries a library loads, itself included (as they
    appear in /proc/PID/smaps)."""
    return {os.path.basename(os.path.realpath(path))} | {os.path.basename(p) for p in ldd(path).values()}


def mem_tree(pid):
    """{"rss_kb", "pss_kb"} summed over a process tree (RSS double-counts pages the processes share)."""
    ps = tree(pid)
    return {"rss_kb": sum(rss_kb(p) for p in ps), "pss_kb": sum(pss_kb(p) for p in ps), "processes": len(ps)}


def cpu_tree(pid):
    return sum(stat_fields(p)[1] for p in tree(pid))


def machine_busy():
    """(busy jiffies, total jiffies) of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


# ---- model repositories ---------------------------------------------------------------------------------

TEXT_ORIENTATION_CONFIG = {  # tools/demo_repo.sh's config for the PaddleOCR orientation classifier
    "labels": "labels.txt",
    "image": {"height": 48, "width": 192, "resize": "paddle_ocr", "color": "BGR", "mean": 0.5, "std": 0.5,
              "pad_value": 0},
    "postprocess": {"top_k": 2},
}


def model_file(name):
    if name == "text_orientation":
        return os.path.join(REAL_MODELS, "ch_ppocr_mobile_v2.0_cls_infer.onnx")
    return os.path.join(MODELS, name + ".onnx")


def make_repo(models, tag):
    """A Triton-layout repository under var/bench/tmp holding the named models (hard links; ortserve
    refuses symlinks leading out of the repository)."""
    repo = tempfile.mkdtemp(prefix="repo-%s-" % tag, dir=TMP)
    for name in models:
        d = os.path.join(repo, name, "1")
        os.makedirs(d)
        try:
            os.link(model_file(name), os.path.join(d, "model.onnx"))
        except OSError:
            shutil.copyfile(model_file(name), os.path.join(d, "model.onnx"))
        if name == "text_orientation":
            with open(os.path.join(repo, name, "config.json"), "w") as f:
                json.dump(TEXT_ORIENTATION_CONFIG, f)
            with open(os.path.join(repo, name, "labels.txt"), "w") as f:
                f.write("0\n180\n")
    return repo


# ---- servers --------------------------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http_get(port, path, timeout=5):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return r.status, r.read()


def http_post(port, path, body, headers=None, timeout=30):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body, headers=headers or {},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Server:
    """A server process that writes its port to a file once listening; `ready_ms` is the time from
    just before spawning it to the first 200 from GET /v2/health/ready."""
    name = "server"

    def _start(self, argv, port_file, env=None, ready_path="/v2/health/ready", timeout=60):
        self.port_file = port_file
        self.log_path = port_file + ".log"
        self.log = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=env, cwd=ROOT)
        deadline = t0 + timeout
        self.port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (self.name, self.proc.returncode, self.log_text()))
            if self.port is None:
                try:
                    with open(port_file) as f:
                        self.port = int(f.read())
                except (OSError, ValueError):
                    time.sleep(0.001)
                    continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % ready_path.encode())
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        self.ready_ms = (time.monotonic() - t0) * 1e3
                        return
            except OSError:
                pass
            time.sleep(0.001)
        self.kill()
        raise RuntimeError("%s did not become ready" % self.name)

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def mem(self):
        return mem_tree(self.pid)

    def cpu(self):
        return cpu_tree(self.pid)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Ortserve(Server):
    name = "ortserve"

    def __init__(self, binary, repo, extra=(), wrapper=(), log_level="warn"):
        self.dir = tempfile.mkdtemp(prefix="ortserve-", dir=TMP)
        self.argv = [*wrapper, binary, "serve", "--model-repository", repo, "--host", "127.0.0.1", "--port", "0",
                     "--port-file", os.path.join(self.dir, "port"), "--access-log", "0", "--log-level", log_level,
                     *extra]
        self._start(self.argv, os.path.join(self.dir, "port"))

    def metrics(self):
        """{(name, frozenset(labels)): value} from /metrics."""
        st, body = http_get(self.port, "/metrics")
        out = {}
        for line in body.decode().splitlines():
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([-+0-9.eEinfNa]+)$', line)
            if m:
                labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
                out[(m.group(1), labels)] = float(m.group(3))
        return out

    @staticmethod
    def msum(m, name, **labels):
        want = set(labels.items())
        return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))

    def stop(self, timeout=30):
        rc = super().stop(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


class NodeBaseline(Server):
    name = "node"

    def __init__(self, repo, workers=2):
        self.dir = tempfile.mkdtemp(prefix="node-", dir=TMP)
        env = dict(os.environ, NODE_PATH=NODE_MODULES)
        self.argv = ["node", NODE_SERVER, "--model-repository", repo, "--port", "0", "--port-file",
                     os.path.join(self.dir, "port"), "--workers", str(workers)]
        self._start(self.argv, os.path.join(self.dir, "port"), env=env)

    def stop(self, timeout=30):
        rc = super().stop(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


class Nginx(Server):
    """nginx, one worker, access log off, answering every request with a canned JSON body of the given
    size: the HTTP limit of this box for a reply like ortserve's."""
    name = "nginx"

    def __init__(self, body):
        self.dir = tempfile.mkdtemp(prefix="nginx-", dir=TMP)
        port = free_port()
        with open(os.path.join(self.dir, "reply.json"), "wb") as f:
            f.write(body)
        conf = """worker_processes 1; daemon off; master_process off; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; client_body_buffer_size 64m; client_max_body_size 128m;
  client_body_temp_path %(d)s; proxy_temp_path %(d)s; fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s;
  scgi_temp_path %(d)s;
  server { listen 127.0.0.1:%(p)d; default_type application/json;
    location = /v2/health/ready { return 200 ''; }
    location / { return 200 '%(c)s'; } } }
""" % {"d": self.dir, "p": port, "c": body.decode().replace("'", "\\'")}
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(conf)
        pf = os.path.join(self.dir, "port")
        with open(pf, "w") as f:
            f.write(str(port))
        self._start(["nginx", "-c", os.path.join(self.dir, "nginx.conf"), "-p", self.dir], pf)

    def stop(self, timeout=30):
        rc = super().stop(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


# ---- load ----------------------------------------------------------------------------------------------

def wrk(port, path, body_file, conns, seconds, ihcl=None, timeout_s=10):
    """One wrk run (keep-alive, `conns` connections over min(conns, 2) threads), POSTing the body
    file. Returns the summary of bench/wrk/post.lua: rps, p50_us, p99_us, requests, non2xx,
    socket_errors."""
    env = dict(os.environ, BODY_FILE=body_file, REQ_PATH=path, IHCL=str(ihcl) if ihcl is not None else "")
    argv = ["wrk", "-t%d" % min(conns, 2), "-c%d" % conns, "-d%ds" % seconds, "--timeout", "%ds" % timeout_s,
            "--latency", "-s", LUA, "http://127.0.0.1:%d" % port]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            r["ok_rps"] = (r["requests"] - r["non2xx"]) / (r["duration_us"] / 1e6)  # 2xx only
            return r
    raise RuntimeError("wrk printed no summary:\n" + out)


def wrk_measured(srv, path, body_file, conns, seconds, ihcl=None):
    """wrk plus the server's CPU time per request, its memory after the run, and `others`: the cores
    that processes other than the server and wrk kept busy during the run (the machine is shared)."""
    m0 = srv.metrics() if isinstance(srv, Ortserve) else None
    cpu0, ru0, busy0, t0 = srv.cpu(), resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy(), time.monotonic()
    r = wrk(srv.port, path, body_file, conns, seconds, ihcl)
    cpu1, ru1, busy1, t1 = srv.cpu(), resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy(), time.monotonic()
    if m0 is not None:  # ortserve's own count of its answers, by status
        m1 = srv.metrics()
        r["by_code"] = {dict(ls)["code"]: v - m0.get((n, ls), 0) for (n, ls), v in m1.items()
                        if n == "ortserve_http_responses_total" and v - m0.get((n, ls), 0) > 0}
    r["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / max(1, r["requests"])
    r["cpu_us_per_ok"] = (cpu1 - cpu0) * 1e6 / max(1, r["requests"] - r["non2xx"])
    r.update(srv.mem())
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    busy_s = (busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK")
    r["server_cores"] = (cpu1 - cpu0) / (t1 - t0)
    r["wrk_cores"] = wrk_cpu / (t1 - t0)
    r["others_cores"] = max(0.0, (busy_s - (cpu1 - cpu0) - wrk_cpu) / (t1 - t0))
    return r


# ---- request bodies ------------------------------------------------------------------------------------

def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def binary_body(inputs, outputs):
    """Triton binary-tensor body: JSON header + raw tensors. inputs: [(name, ndarray, dtype)];
    returns (body bytes, header length)."""
    hdr = json.dumps({"inputs": [{"name": n, "shape": list(a.shape), "datatype": dt,
                                  "parameters": {"binary_data_size": a.nbytes}} for n, a, dt in inputs],
                      "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs]}).encode()
    return hdr + b"".join(a.tobytes() for _, a, _ in inputs), len(hdr)


def json_body(name, arr, dt="FP32"):
    return json.dumps({"inputs": [{"name": name, "shape": list(arr.shape), "datatype": dt,
                                   "data": [float("%.6g" % v) for v in arr.ravel()]}]}).encode()


# ---- the machine -----------------------------------------------------------------------------------------

def _cmd(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def autogroup_info():
    """With sched_autogroup on, each session (autogroup) gets an equal share of the CPU whatever the nice
    values inside it: a `nice 19` job in a session of its own competes like a nice-0 one. Lists the
    processes at nice >= 10 that sit in autogroups other than ours whose own autogroup nice is < 10."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            enabled = f.read().strip() == "1"
        with open("/proc/self/autogroup") as f:
            mine = f.read().split()[0]
    except OSError:
        return {"enabled": False, "niced_elsewhere": []}
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            nice = int(st.rsplit(")", 1)[1].split()[16])
            if nice < 10:
                continue
            with open("/proc/%s/autogroup" % d) as f:
                ag = f.read().split()
            if ag[0] != mine and int(ag[2]) < 10:
                out.append(st.split("(", 1)[1].rsplit(")", 1)[0])
        except (OSError, IndexError, ValueError):
            continue
    return {"enabled": enabled, "niced_elsewhere": sorted(out)}


def machine_info(build):
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    debian = ""
    try:
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    except OSError:
        pass
    node_pkg = os.path.join(NODE_MODULES, "onnxruntime-node", "package.json")
    try:
        with open(node_pkg) as f:
            ort_node = json.load(f)["version"]
    except (OSError, ValueError):
        ort_node = None
    ort_stamp = os.path.join(ROOT, "third_party", "onnxruntime", "STAMP")
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(), "debian": debian,
        "ortserve": _cmd([os.path.join(build, "ortserve"), "--version"]).splitlines()[:1],
        "ort_package": open(ort_stamp).read().strip() if os.path.exists(ort_stamp) else None,
        "onnxruntime_node": ort_node, "node": _cmd(["node", "--version"]),
        "nginx": _cmd(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": _cmd(["wrk", "--version"]).splitlines()[0] if _cmd(["wrk", "--version"]) else "",
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "autogroup": autogroup_info(),
    }
    return info
