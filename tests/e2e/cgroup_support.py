"""cgroup_support.py — a memory cgroup for one ortserve process, shared by the end-to-end tests and the
benchmarks: v2 (memory.max) when the unified hierarchy has the memory controller and is writable, else
v1 (memory.limit_in_bytes, as on the development machines). Needs root; `available()` says why not."""
import os
import time


def available():
    """None when a memory cgroup can be made here, else the reason (for a test's skip message)."""
    if os.geteuid() != 0:
        return "needs root to make a memory cgroup"
    try:
        Cgroup(16 << 20, "probe").remove()
        return None
    except (PermissionError, OSError) as e:
        return str(e)


def make(limit, tag):
    """(a new Cgroup, None), or (None, why not) on a machine that cannot give one."""
    why = available()
    return (None, why) if why else (Cgroup(limit, tag), None)


class Cgroup:
    """A memory cgroup for one server: v2 (memory.max) when the unified hierarchy has the memory controller
    and is writable, else v1 (memory.limit_in_bytes). `why` says what this machine allows."""

    def __init__(self, limit_bytes, tag):
        self.path, self.kind = None, None
        v2 = "/sys/fs/cgroup"
        ctl = os.path.join(v2, "cgroup.controllers")
        name = "ortserve-%d-%s" % (os.getpid(), tag)
        if os.path.exists(ctl) and "memory" in open(ctl).read().split() and os.access(v2, os.W_OK):
            self.kind, self.path = "v2", os.path.join(v2, name)
            os.mkdir(self.path)
            self._w("memory.max", limit_bytes)
            if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                self._w("memory.swap.max", 0)
        elif os.path.isdir(os.path.join(v2, "memory")) and os.access(os.path.join(v2, "memory"), os.W_OK):
            self.kind, self.path = "v1", os.path.join(v2, "memory", name)
            os.mkdir(self.path)
            self._w("memory.limit_in_bytes", limit_bytes)
            if os.path.exists(os.path.join(self.path, "memory.memsw.limit_in_bytes")):
                self._w("memory.memsw.limit_in_bytes", limit_bytes)  # no swapping around the limit either
        else:
            raise PermissionError("no writable memory cgroup (v2 %s with the memory controller, or v1 %s/memory)"
                                  % (v2, v2))

    @staticmethod
    def describe():
        v2 = "/sys/fs/cgroup"
        lines = []
        ctl = os.path.join(v2, "cgroup.controllers")
        if os.path.exists(ctl):
            lines.append("cgroup v2 at %s, controllers: %s" % (v2, open(ctl).read().strip() or "(none)"))
        uni = os.path.join(v2, "unified", "cgroup.controllers")
        if os.path.exists(uni):
            lines.append("cgroup2 mounted at %s/unified, controllers: %s" % (v2, open(uni).read().strip() or "(none)"))
        if os.path.isdir(os.path.join(v2, "memory")):
            lines.append("cgroup v1 memory controller at %s/memory (%s)" % (
                v2, "writable" if os.access(os.path.join(v2, "memory"), os.W_OK) else "not writable"))
        return lines

    def _w(self, f, v):
        with open(os.path.join(self.path, f), "w") as fh:
            fh.write(str(v))

    def _r(self, f):
        try:
            with open(os.path.join(self.path, f)) as fh:
                return fh.read()
        except OSError:
            return ""

    def enter(self):
        """For subprocess's preexec_fn: moves the child into this group before it execs."""
        self._w("cgroup.procs", os.getpid())

    def wrapper(self):
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.path]

    def read(self, f):
        return self._r(f)

    def usage(self):
        """Bytes charged to the group now."""
        return int(self._r("memory.usage_in_bytes" if self.kind == "v1" else "memory.current") or 0)

    def oom_kills(self):
        return self.stats()["oom_kills"]

    def peak(self):
        return self.stats()["peak_bytes"]

    def stats(self):
        if self.kind == "v1":
            oom = self._r("memory.oom_control")
            peak = int(self._r("memory.max_usage_in_bytes") or 0)
            fail = int(self._r("memory.failcnt") or 0)
        else:
            oom = self._r("memory.events")
            peak = int(self._r("memory.peak") or 0)
            fail = None
        kills = 0
        for line in oom.splitlines():
            if line.startswith("oom_kill "):
                kills = int(line.split()[1])
        return {"oom_kills": kills, "peak_bytes": peak, "failcnt": fail}

    def remove(self):
        """Removes the group once its processes have left it (a killed one leaves asynchronously)."""
        if self.path:
            for _ in range(100):
                try:
                    os.rmdir(self.path)
                    return
                except OSError:
                    time.sleep(0.1)
