#!/usr/bin/python3
"""shm_attacks.py — what hostile shared-memory clients do to a server (docs/RELIABILITY.md, "Shared
memory"): figures, never asserted (tests/e2e/test_server_shm.py asserts the outcomes).

  sparse    a 200 MB sparse /dev/shm object (ftruncate'd, never written) registered and used by scale2x:
            100 MB of input read from it, 100 MB of output written into it, in a memory cgroup;
  rounds    objects the size of the pool's budget, sparse, used one after another by the same client and
            kept alive after each unregister (their pages stay charged to the server), in the cgroup;
  truncate  a region whose object is truncated to 0 before an inference (no cgroup);
  race      the same while the inference runs: 32 MB in and out of scale2x, the object truncated after a
            random 0-20 ms, many times (no cgroup; outcomes depend on timing, hence figures).

Needs root and a memory controller (cgroup v2, or v1 at /sys/fs/cgroup/memory) for the first two.
  /usr/bin/python3 bench/shm_attacks.py [--build build/release] [--limit-mb 128] [--rounds 10]
--build may name any build directory holding an `ortserve` (e.g. one of an older commit)."""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20


def rss_kb(pid):
    """(VmRSS, RssShmem) of a process in kB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssShmem"):
                out[k] = int(v.split()[0])
    return out.get("VmRSS"), out.get("RssShmem")


def group_usage(cg):
    return cg.usage()


def infer(srv, req):
    try:
        return srv.json("POST", "/v2/models/scale2x/infer", req)
    except Exception as e:  # the server went away under the request
        return None, repr(e)


def in_cgroup(t, limit, tag, fn):
    cg, why = t.cgroup_support.make(limit, tag)
    if cg is None:
        return {"skipped": why}
    objs = []
    with tempfile.TemporaryDirectory() as tmp:
        srv = t.Server(t.make_repo(tmp, {"scale2x": "scale2x.onnx"}), "--allow-shm", "--workers", "1",
                       preexec_fn=cg.enter)
        try:
            res = {"usage_start_mb": group_usage(cg) / MiB}
            res.update(fn(srv, objs, cg))
            vm, shm = rss_kb(srv.proc.pid) if srv.proc.poll() is None else (None, None)
            alive = vm is not None  # a killed process not yet reaped has no VmRSS
            if alive:
                res.update(rss_end_mb=vm / 1024, rss_shmem_end_mb=shm / 1024, usage_end_mb=group_usage(cg) / MiB)
            else:
                srv.proc.wait()
            res.update(peak_mb=(cg.peak() or 0) / MiB, oom_kills=cg.oom_kills(),
                       exit=srv.finish() if alive else srv.proc.returncode)
        finally:
            if srv.proc.poll() is None:
                srv.stop()
            for o in objs:
                o.close()
            cg.remove()
    return res


def sparse(t):
    def attack(srv, objs, cg):
        obj = t.ShmObject(200 * MiB, map=False)
        objs.append(obj)
        st_reg, r_reg = t.register(srv, "big", obj.key, 0, 200 * MiB)
        st, r = infer(srv, t.scale2x_via_shm("big", 25 * MiB, 0, 100 * MiB))
        return {"register": st_reg, "register_error": (r_reg or {}).get("error"), "infer": st,
                "infer_error": r if st is None else (r or {}).get("error")}
    return attack


def rounds(t, n):
    def attack(srv, objs, cg):
        half = t.listening_record(srv)["pool_bytes"] // 2 // 4096 * 4096  # the default budget, in two
        out = {"object_mb": 2 * half / MiB, "statuses": [], "usage_mb": []}
        for i in range(n):
            obj = t.ShmObject(2 * half)
            objs.append(obj)
            st, _ = t.register(srv, "s", obj.key, 0, 2 * half)
            if st != 200:
                out["statuses"].append("register %s" % st)
                continue
            st, r = infer(srv, t.scale2x_via_shm("s", half // 4, 0, half))
            out["statuses"].append(st)
            if st is None:
                break
            srv.json("POST", "/v2/systemsharedmemory/region/s/unregister")
            obj.mm.close()
            obj.mm = None  # the object lives on
            out["usage_mb"].append(round(group_usage(cg) / MiB, 1))
        return out
    return attack


def truncate(t):
    with tempfile.TemporaryDirectory() as tmp, t.ShmObject(1 << 16) as obj:
        srv = t.Server(t.make_repo(tmp, {"mlp": "mlp.onnx"}), "--allow-shm")
        st_reg, _ = t.register(srv, "tr", obj.key, 0, 1 << 16)
        obj.mm.close()
        obj.mm = None
        obj.truncate(0)
        try:
            st, r = srv.json("POST", "/v2/models/mlp/infer", t.mlp_via_shm("tr"))
            err = (r or {}).get("error")
        except Exception as e:
            st, err = None, repr(e)
        alive = srv.proc.poll() is None
        return {"register": st_reg, "infer": st, "error": err, "alive_after": alive,
                "exit": srv.finish() if alive else srv.proc.returncode}


def race(t, n):
    import random
    import threading
    import time
    out = {"tries": n, "statuses": {}, "truncated_while_in_use": 0}
    half = 32 * MiB
    with tempfile.TemporaryDirectory() as tmp:
        srv = t.Server(t.make_repo(tmp, {"scale2x": "scale2x.onnx"}), "--allow-shm")
        rng = random.Random(1)
        for i in range(n):
            with t.ShmObject(2 * half) as obj:
                obj.mm[0:half] = b"\x01" * half
                obj.mm.close()
                obj.mm = None
                t.register(srv, "r", obj.key, 0, 2 * half)
                res = []
                th = threading.Thread(target=lambda: res.append(infer(srv, t.scale2x_via_shm("r", half // 4, 0, half))))
                th.start()
                time.sleep(rng.uniform(0, 0.02))  # the race itself: when the truncation lands
                obj.truncate(0)
                th.join()
                st, r = res[0]
                out["statuses"][str(st)] = out["statuses"].get(str(st), 0) + 1
                out["truncated_while_in_use"] += st == 400 and "while in use" in (r or {}).get("error", "")
                if st is None:
                    break
                srv.json("POST", "/v2/systemsharedmemory/unregister")
        alive = srv.proc.poll() is None or srv.proc.wait() is None
        out.update(alive_after=alive, exit=srv.finish() if alive else srv.proc.returncode)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--limit-mb", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--races", type=int, default=200)
    a = ap.parse_args()
    os.environ["OSV_BINARY_DIR"] = os.path.abspath(a.build)
    os.environ.setdefault("OSV_TEST_MODELS", os.path.join(HERE, "..", "var", "models"))
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
    import test_server_shm as t  # noqa: E402 (after OSV_BINARY_DIR: server.py reads it at import)
    limit = a.limit_mb * MiB
    report = {"build": a.build, "limit_mb": a.limit_mb,
              "sparse": in_cgroup(t, limit, "bench-sparse", sparse(t)),
              "rounds": in_cgroup(t, limit, "bench-rounds", rounds(t, a.rounds)),
              "truncate": truncate(t), "race": race(t, a.races)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
