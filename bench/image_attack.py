#!/usr/bin/python3
"""image_attack.py — the image decode memory figures of docs/RELIABILITY.md ("Image decode memory"):
the attack files of issue 13 (a 116 KB PNG declaring 6300 x 6300, a ~560 KB progressive 4:4:4 JPEG of the
same size) sent to a server (text_orientation, 2 workers) and what its memory does:

  1. no cgroup, --image-decode-budget BUDGET (150M): peak RSS growth (VmHWM after /proc/PID/clear_refs,
     minus VmRSS before) and RSS after, for one PNG, one JPEG, then 4 PNGs at once;
  2. with root and a memory controller: the default memory plan in cgroups of 128 and 256 MB, one PNG then
     one JPEG (128) and three at once (256): statuses, the group's peak usage, memory.failcnt, OOM kills.

Usage: /usr/bin/python3 bench/image_attack.py [--build build/release] [--budget 150M]
Figures, not assertions (the assertions are tests/e2e/test_imaging_budget.py)."""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build", "release"))
    ap.add_argument("--budget", default="150M")
    a = ap.parse_args()
    os.environ["OSV_BINARY_DIR"] = os.path.abspath(a.build)
    os.environ.setdefault("OSV_REAL_MODELS", os.path.join(HERE, "..", "third_party", "models"))
    import test_imaging_budget as T  # noqa: E402 (reads OSV_BINARY_DIR at import)
    import cgroup_support  # noqa: E402
    from server import Server  # noqa: E402

    png, jpg = T.attack_png(), T.attack_jpeg()
    print("attack files: PNG %d bytes, JPEG %d bytes (%d x %d)" % (len(png), len(jpg), T.SIDE, T.SIDE))
    with tempfile.TemporaryDirectory() as tmp:
        root = T.make_repo(os.path.join(tmp, "repo"))
        with Server(root, "--workers", "2", "--deadline-ms", "0", "--image-decode-budget", a.budget) as srv:
            pid = srv.proc.pid
            for name, bodies in (("1 PNG", [png]), ("1 JPEG", [jpg]), ("4 PNGs at once", [png] * 4)):
                with open("/proc/%d/clear_refs" % pid, "w") as f:
                    f.write("5")
                before = T.status_kb(pid, "VmRSS")
                res = T.post_all(srv, bodies)
                print("budget %s, %-15s statuses %s: RSS %d kB before, peak +%d kB, %d kB after" % (
                    a.budget, name, sorted(r[0] for r in res), before, T.status_kb(pid, "VmHWM") - before,
                    T.status_kb(pid, "VmRSS")))
        why = cgroup_support.available()
        if why:
            print("cgroup runs skipped: " + why)
            return
        for mb, rounds in ((128, [[png], [jpg]]), (256, [[png] * 3, [jpg, png, jpg]])):
            cg = cgroup_support.Cgroup(mb * T.MiB, "bench%d" % mb)
            try:
                with Server(root, "--workers", "2", "--deadline-ms", "0", preexec_fn=cg.enter) as srv:
                    budget = [ln for ln in srv.logs().splitlines() if '"event":"listening"' in ln]
                    statuses = [sorted(r[0] for r in T.post_all(srv, b)) for b in rounds]
                    alive = srv.proc.poll() is None
                    peak = cg.peak()
                    print("%d MB group: %s, statuses %s, alive %s, group peak %.1f MiB, failcnt %s, OOM kills %d"
                          % (mb, budget[0].split('"image_decode_budget":')[1].split(",")[0] + " bytes of decode budget"
                             if budget else "?", statuses, alive, peak / T.MiB, cg.stats()["failcnt"], cg.oom_kills()))
            finally:
                cg.remove()


if __name__ == "__main__":
    main()
