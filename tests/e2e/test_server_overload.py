#!/usr/bin/python3
"""test_server_overload.py — the real server under overload, failure and hostile clients
(docs/RELIABILITY.md), with slow.onnx (run time set by its input `iters`) and fail.onnx:

- overload: 40 clients against one worker and a queue of 4 — the excess gets 503 + Retry-After with
  a JSON error, every admitted request completes with the right answer, nothing else happens, the
  server stays healthy (latency under overload is a benchmark, bench/overload.py, never asserted);
- failures: a run error is 500 with ONNX Runtime's message; only safe things are retried — a full
  pool 3 times (then 503), a model error or a bad request never (recovery counters on /metrics);
- slow clients: a head dribbled byte by byte is cut by --header-timeout-ms (408), a stalled body by
  --body-timeout-ms (408), a body dribbled faster than that timeout completes, idle keep-alive and
  silent connections are closed by --idle-timeout-ms, --max-connections answers the excess 503;
- out of descriptors: under a small RLIMIT_NOFILE the server answers the connections it cannot take
  with 503 instead of spinning on accept (its CPU time over a window is measured from /proc), and
  serves again once descriptors are free;
- SIGTERM under load: every request the server read completes with 200, the rest are refused
  cleanly (no response byte), and it exits 0.

Every load loop is bounded in count and time; waits poll conditions with deadlines."""
import http.client
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from obs_support import access_records, metrics  # noqa: E402
from server import (TIME_SCALE, WRAPPER, RawConn, Server, binary_body, make_repo, mlp_request,  # noqa: E402
                    request_bytes, server_consumed, wait_until)

X = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
MiB = 1 << 20


def slow_body(iters):
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": X.ravel().tolist()},
                                  {"name": "iters", "shape": [], "datatype": "INT64", "data": [int(iters)]}]})


def calibrate(srv, seconds):
    """Loop iterations that keep slow.onnx busy about `seconds` here (from a short timed run)."""
    conn = srv.conn()
    try:
        best = None
        for _ in range(3):
            t0 = time.monotonic()
            st, _, data = srv.request("POST", "/v2/models/slow/infer", slow_body(300), conn=conn)
            dt = time.monotonic() - t0
            assert st == 200, data
            best = dt if best is None else min(best, dt)
    finally:
        conn.close()
    return int(min(max(300 * seconds / max(best, 1e-4), 10), 5000000))


def cpu_seconds(pid):
    """User + system CPU time of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Overload(unittest.TestCase):
    def test_ten_times_capacity_gets_503_and_admitted_requests_complete(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"slow": "slow.onnx"}), "--workers", "1", "--loops", "1", "--max-queue", "4",
                         "--retry-after-s", "2", "--deadline-ms", "0", "--inline-threshold-us", "0")
            try:
                iters = calibrate(srv, 0.05)  # capacity ~20 requests/s: one worker, 50 ms a run
                body = slow_body(iters)
                st, _, ref = srv.request("POST", "/v2/models/slow/infer", body)
                self.assertEqual(st, 200)
                expected = json.loads(ref)["outputs"]
                n_threads, per_thread, deadline = 40, 30, time.monotonic() + 90 * TIME_SCALE
                lock, results, errors = threading.Lock(), [], []

                def client():
                    conn = srv.conn(timeout=60)
                    try:
                        for _ in range(per_thread):
                            if time.monotonic() > deadline:
                                break
                            t0 = time.monotonic()
                            try:
                                st, h, data = srv.request("POST", "/v2/models/slow/infer", body, conn=conn)
                            except (OSError, http.client.HTTPException) as e:
                                with lock:
                                    errors.append(repr(e))
                                conn.close()
                                conn = srv.conn(timeout=60)
                                continue
                            with lock:
                                results.append((st, h, data, time.monotonic() - t0))
                    finally:
                        conn.close()

                threads = [threading.Thread(target=client, daemon=True) for _ in range(n_threads)]
                t0 = time.monotonic()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(max(1, deadline - time.monotonic() + 10))
                    self.assertFalse(t.is_alive(), "a client did not finish in time")
                elapsed = time.monotonic() - t0
                self.assertEqual(errors, [], "connections failed instead of getting an answer")
                statuses = [r[0] for r in results]
                self.assertEqual(set(statuses) - {200, 503}, set(), "only 200 and 503 are acceptable")
                n200, n503 = statuses.count(200), statuses.count(503)
                self.assertGreater(n200, 0)
                self.assertGreater(n503, 0)
                # The load really exceeded capacity several times over (counts over the same interval). The
                # 10x figure is measured by bench/overload.py; Python clients on a busy 2-core machine
                # cannot promise exactly 10x, so the precondition checked here is 5x.
                # (Under valgrind the server, not the clients, is the slow side: it still must refuse, but
                # the ratio is not a precondition there.)
                self.assertGreaterEqual(len(results), (2 if WRAPPER else 5) * n200, (len(results), n200, elapsed))
                for st, h, data, _ in results:
                    if st == 503:
                        self.assertEqual(h.get("retry-after"), "2")
                        self.assertEqual(h.get("content-type"), "application/json")
                        self.assertIn("too many queued requests", json.loads(data)["error"])
                    else:
                        self.assertEqual(json.loads(data)["outputs"], expected)
                # Healthy afterwards: the queue drained, the server answers, /metrics agrees with the clients.
                m = wait_until(lambda: (lambda m: m if m.value("ortserve_queue_depth") == 0 else None)(metrics(srv)),
                               30, "the queue to drain")
                self.assertGreaterEqual(m.value("ortserve_http_responses_total", code="503"), n503)
                st, _, data = srv.request("POST", "/v2/models/slow/infer", slow_body(10))
                self.assertEqual(st, 200, data)
                print("overload: %d requests in %.1fs, %d admitted (200), %d refused (503)" %
                      (len(results), elapsed, n200, n503))
            finally:
                self.assertEqual(srv.finish(), 0)


class DeadlineAdmission(unittest.TestCase):
    def test_a_deadline_the_queue_would_miss_is_refused_at_once(self):
        """With every worker busy and queued work ahead longer than a request's deadline (by recent run
        times), the request gets 503 + Retry-After at once instead of a queue place and a late 504;
        a request without a deadline is still admitted behind the same queue."""
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"slow": "slow.onnx"}), "--workers", "1", "--loops", "1", "--max-queue", "16",
                         "--deadline-ms", "0", "--inline-threshold-us", "0")
            conns = []
            try:
                iters = calibrate(srv, 0.1)  # ~100 ms a run: the work ahead is 5x the deadline, robust to a busy machine
                body = slow_body(iters).encode()
                for _ in range(16):  # recent run times for the estimate (an EWMA with weight 1/8)
                    self.assertEqual(srv.request("POST", "/v2/models/slow/infer", body)[0], 200)
                for _ in range(6):  # one running, five queued: ~500 ms of work ahead of the next request
                    c = RawConn(srv.port, timeout=60 * TIME_SCALE)
                    c.send(request_bytes("POST", "/v2/models/slow/infer", body))
                    conns.append(c)
                wait_until(lambda: metrics(srv).value("ortserve_queue_depth") >= 4, 20 * TIME_SCALE,
                           "the queue to fill")
                t0 = time.monotonic()
                st, h, data = srv.request("POST", "/v2/models/slow/infer", body, {"Ortserve-Timeout-Ms": "100"})
                self.assertEqual(st, 503, data)
                self.assertEqual(h.get("retry-after"), "1")
                self.assertIn("would not finish before the request's deadline", json.loads(data)["error"])
                refused_ms = (time.monotonic() - t0) * 1000
                # answered without waiting for the queue: the requests ahead of it are still queued
                self.assertGreaterEqual(metrics(srv).value("ortserve_queue_depth"), 1)
                self.assertGreaterEqual(metrics(srv).value("ortserve_deadline_refusals_total"), 1)
                # no deadline: admitted behind the same queue, and every queued request completes
                late = RawConn(srv.port, timeout=60 * TIME_SCALE)
                conns.append(late)
                late.send(request_bytes("POST", "/v2/models/slow/infer", body, [("Ortserve-Timeout-Ms", "0")]))
                for c in conns:
                    r = c.read_response()
                    self.assertEqual(r.status, 200, r)
                print("deadline admission: refused in %.1f ms" % refused_ms)
            finally:
                for c in conns:
                    c.close()
                self.assertEqual(srv.finish(), 0)


    def test_the_requests_own_run_counts_against_its_deadline(self):
        """Admission adds the request's own run to the wait ahead: with the only worker busy and nothing
        queued, the wait is half a run; a deadline of 3/4 of a run covers that wait but not the wait
        plus its own run, so the request is refused at once; a deadline of three runs covers both and
        the request is queued (and then, the holder outlasting its estimate, expires in the queue)."""
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"slow": "slow.onnx"}), "--workers", "1", "--loops", "1", "--max-queue", "16",
                         "--deadline-ms", "0", "--inline-threshold-us", "0")
            conns = []
            try:
                iters = calibrate(srv, 0.1)  # ~100 ms a run
                body = slow_body(iters).encode()
                took = []
                for _ in range(16):  # the run-time estimates (EWMAs with weight 1/8) settle on these runs
                    t0 = time.monotonic()
                    self.assertEqual(srv.request("POST", "/v2/models/slow/infer", body)[0], 200)
                    took.append(time.monotonic() - t0)
                run_ms = sorted(took)[len(took) // 2] * 1000
                # The holder keeps the worker until the watchdog cancels it 2 s after it arrived; one loop
                # queued it before answering /metrics, so an empty queue means the worker is running it.
                holder = RawConn(srv.port, timeout=60 * TIME_SCALE)
                conns.append(holder)
                holder.send(request_bytes("POST", "/v2/models/slow/infer", slow_body(10 ** 12).encode(),
                                          [("Ortserve-Timeout-Ms", "2000")]))
                wait_until(lambda: server_consumed(srv.port, holder.sock), 20, "the server to read the holder")
                wait_until(lambda: metrics(srv).value("ortserve_queue_depth") == 0, 20, "the holder to run")
                refusals = metrics(srv).value("ortserve_deadline_refusals_total")
                # 3/4 of a run: the wait ahead (half a run) fits, the wait and its own run do not.
                st, h, data = srv.request("POST", "/v2/models/slow/infer", body,
                                          {"Ortserve-Timeout-Ms": str(int(run_ms * 3 / 4))})
                self.assertEqual(st, 503, data)
                self.assertEqual(h.get("retry-after"), "1")
                self.assertIn("would not finish before the request's deadline", json.loads(data)["error"])
                self.assertEqual(metrics(srv).value("ortserve_deadline_refusals_total"), refusals + 1)
                # Three runs: the wait and its own run fit (with room for estimates above the median), so it
                # is queued behind the holder.
                fits = RawConn(srv.port, timeout=60 * TIME_SCALE)
                conns.append(fits)
                fits.send(request_bytes("POST", "/v2/models/slow/infer", body,
                                        [("Ortserve-Timeout-Ms", str(int(run_ms * 3)))]))
                r = fits.read_response()
                self.assertEqual(r.status, 504, r)
                self.assertIn("queued too long", r.json()["error"])  # it was queued, not refused
                self.assertEqual(metrics(srv).value("ortserve_deadline_refusals_total"), refusals + 1)
                r = holder.read_response()
                self.assertEqual(r.status, 504, r)
                self.assertIn("canceled", r.json()["error"])
                print("deadline admission: a run takes %.0f ms; %d ms refused, %d ms queued" %
                      (run_ms, int(run_ms * 3 / 4), int(run_ms * 3)))
            finally:
                for c in conns:
                    c.close()
                self.assertEqual(srv.finish(), 0)


class Failures(unittest.TestCase):
    def test_model_error_is_500_and_only_a_full_pool_is_retried(self):
        # One 4 MiB slot (see test_server_lifecycle.py's full-pool test): a partial upload holds it.
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"fail": "fail.onnx", "mlp": "mlp.onnx", "scale2x": "scale2x.onnx"}),
                         "--pool-bytes", "24M", "--pool-max-slot-bytes", "4M", "--deadline-ms", "0")
            try:
                def recoveries(model):
                    return metrics(srv).value("ortserve_recovery_attempts_total", model=model)

                # A run error: 500 with ORT's message (Reshape's complaint), no retry.
                req = {"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                                  {"name": "shape", "shape": [1], "datatype": "INT64", "data": [3]}]}
                for _ in range(3):
                    st, body = srv.json("POST", "/v2/models/fail/infer", req)
                    self.assertEqual(st, 500, body)
                    self.assertIn("Reshape", body["error"])
                    self.assertIn("ONNX Runtime", body["error"])
                # A bad request: 400, no retry.
                st, body = srv.json("POST", "/v2/models/mlp/infer", {"inputs": [
                    {"name": "x", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}]})
                self.assertEqual(st, 400, body)
                self.assertEqual((recoveries("fail"), recoveries("mlp")), (0, 0))

                # A full pool: retried 3 times (2, 4, 8 ms), then 503 + Retry-After.
                n = 200000
                v = np.arange(n, dtype=np.float32)
                hdr = {"inputs": [{"name": "x", "shape": [n], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4 * n}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
                body, h = binary_body(hdr, [v.tobytes()])
                jlen = int(h["Inference-Header-Content-Length"])
                head = request_bytes("POST", "/v2/models/scale2x/infer", b"",
                                     list(h.items()) + [("Content-Length", str(len(body)))])
                with RawConn(srv.port) as holder:
                    holder.send(head + body[:jlen + 1000])
                    wait_until(lambda: server_consumed(srv.port, holder.sock), 20, "the holder's bytes to be read")
                    with RawConn(srv.port) as c:
                        c.send(head + body[:jlen])
                        r = c.read_response()
                        self.assertEqual((r.status, r.header("Retry-After")), (503, "1"), r)
                    self.assertEqual(recoveries("scale2x"), 3)
                    holder.send(body[jlen + 1000:])
                    self.assertEqual(holder.read_response().status, 200)
                self.assertEqual((recoveries("fail"), recoveries("mlp"), recoveries("scale2x")), (0, 0, 3))
            finally:
                self.assertEqual(srv.finish(), 0)


class MemoryGuard(unittest.TestCase):
    """Near the cgroup limit, inferences get 503 + Retry-After instead of growing towards an OOM kill.
    The cgroup is a fake tree (ORTSERVE_CGROUP_ROOT / ORTSERVE_PROC_CGROUP) whose usage the test moves.
    The guard reads it on the watchdog thread (at most every 10 ms; every 50 ms when idle): after each
    move the test waits until the guard's own reading (ortserve_memory_guard_working_set_bytes) is the
    new working set — always a value other than its previous reading — then checks the decision the
    guard made on it (ortserve_memory_pressure, which a scrape shows from that reading or a later one)
    and what an inference gets. The limit is 1000 MiB, so 10 MiB is one percentage point."""

    LIMIT_MIB = 1000
    MARK = 80

    def start(self, tmp, v1):
        """A server in a fake v2 group (memory.max, memory.current, inactive_file in memory.stat) or v1
        group (memory.limit_in_bytes, memory.usage_in_bytes, total_inactive_file); returns the server and
        set_usage(usage MiB, inactive file MiB). memory.stat is written before the usage; each move
        below changes one of the two, except the first, whose intermediate reading is far below the mark."""
        root = os.path.join(tmp, "cg")
        grp = os.path.join(root, "memory", "ortserve") if v1 else os.path.join(root, "ortserve")
        os.makedirs(grp)
        self_cg = os.path.join(tmp, "self_cgroup")

        def put(name, value):
            with open(os.path.join(grp, name) + ".tmp", "w") as f:
                f.write(value)
            os.replace(os.path.join(grp, name) + ".tmp", os.path.join(grp, name))

        def set_usage(usage_mib, inactive_mib):
            # v1's memory.stat also has the group's own inactive_file, which is not what counts there
            # (the hierarchical total_inactive_file is): a large one here would hide the mark.
            put("memory.stat", "inactive_file %d\ntotal_inactive_file %d\n" % (500 * MiB, inactive_mib * MiB) if v1
                else "anon 1\ninactive_file %d\n" % (inactive_mib * MiB))
            put("memory.usage_in_bytes" if v1 else "memory.current", "%d\n" % (usage_mib * MiB))

        with open(self_cg, "w") as f:
            f.write("5:memory:/ortserve\n" if v1 else "0::/ortserve\n")
        put("memory.limit_in_bytes" if v1 else "memory.max", "%d\n" % (self.LIMIT_MIB * MiB))
        set_usage(250, 0)
        srv = Server(make_repo(os.path.join(tmp, "repo"), {"mlp": "mlp.onnx"}), "--memory-high-pct", str(self.MARK),
                     env={"ORTSERVE_CGROUP_ROOT": root, "ORTSERVE_PROC_CGROUP": self_cg})
        return srv, set_usage

    def guard_reads(self, srv, ws_mib):
        """Waits until the guard has read a working set of ws_mib; returns its decision (1 = on)."""
        def reading():
            m = metrics(srv)
            if m.value("ortserve_memory_guard_working_set_bytes") == ws_mib * MiB:
                return [m.value("ortserve_memory_pressure")]
            return None
        return wait_until(reading, 10 * TIME_SCALE, "the memory guard to read a working set of %d MiB" % ws_mib)[0]

    def infer(self, srv):
        return srv.request("POST", "/v2/models/mlp/infer", json.dumps(mlp_request(X[:, :64])).encode())

    def assert_serves(self, srv):
        st, _, data = self.infer(srv)
        self.assertEqual(st, 200, data)

    def assert_sheds(self, srv):
        st, h, data = self.infer(srv)
        self.assertEqual(st, 503, data)
        self.assertEqual(h.get("retry-after"), "1")
        self.assertIn("near the limit", json.loads(data)["error"])

    def test_working_set_above_the_mark_sheds_inferences_and_recovers(self):
        """v2: inactive file cache does not count; the guard turns on at the mark (80 %), stays on down to
        5 points below it (75 %), turns off below that (74.9 %), and once off stays off up to 79 %."""
        with tempfile.TemporaryDirectory() as tmp:
            srv, set_usage = self.start(tmp, v1=False)
            try:
                self.assertEqual(self.guard_reads(srv, 250), 0)
                self.assertEqual(metrics(srv).value("ortserve_memory_limit_bytes"), self.LIMIT_MIB * MiB)
                self.assert_serves(srv)
                # Usage 85 %, 10 % of it inactive file cache: the working set (75 %) is below the mark.
                set_usage(850, 100)
                self.assertEqual(self.guard_reads(srv, 750), 0)
                self.assert_serves(srv)
                # Exactly at the mark: on. Inferences get 503 (health does not), counted.
                shed = metrics(srv).value("ortserve_memory_shed_total")
                set_usage(900, 100)
                self.assertEqual(self.guard_reads(srv, 800), 1)
                self.assert_sheds(srv)
                self.assertEqual(srv.request("GET", "/v2/health/ready")[0], 200)
                self.assertEqual(metrics(srv).value("ortserve_memory_shed_total"), shed + 1)
                # Hysteresis: down to 5 points below the mark it stays on ...
                set_usage(860, 100)
                self.assertEqual(self.guard_reads(srv, 760), 1)
                self.assert_sheds(srv)
                set_usage(850, 100)
                self.assertEqual(self.guard_reads(srv, 750), 1)
                self.assert_sheds(srv)
                # ... below that it turns off,
                set_usage(849, 100)
                self.assertEqual(self.guard_reads(srv, 749), 0)
                self.assert_serves(srv)
                # and once off it turns on only at the mark.
                set_usage(890, 100)
                self.assertEqual(self.guard_reads(srv, 790), 0)
                self.assert_serves(srv)
                logs = srv.logs()
                self.assertEqual((logs.count('"event":"memory_high"'), logs.count('"event":"memory_ok"')), (1, 1),
                                 logs[-3000:])
            finally:
                self.assertEqual(srv.finish(), 0)

    def test_cgroup_v1_total_inactive_file_does_not_count(self):
        """v1: usage minus the hierarchical total_inactive_file (not the group's own inactive_file)."""
        with tempfile.TemporaryDirectory() as tmp:
            srv, set_usage = self.start(tmp, v1=True)
            try:
                self.assertEqual(self.guard_reads(srv, 250), 0)
                set_usage(950, 200)
                self.assertEqual(self.guard_reads(srv, 750), 0)
                self.assert_serves(srv)
                set_usage(950, 150)
                self.assertEqual(self.guard_reads(srv, 800), 1)
                self.assert_sheds(srv)
            finally:
                self.assertEqual(srv.finish(), 0)


class SlowClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        ms = lambda v: str(int(v * TIME_SCALE))  # noqa: E731
        # No request deadline (it counts from the first byte; a dribbled body takes 2.5 s to arrive, and a
        # request can shorten the server's deadline but not lift it).
        cls.srv = Server(make_repo(cls.tmp.name, {"mlp": "mlp.onnx"}), "--loops", "1",
                         "--header-timeout-ms", ms(1000), "--body-timeout-ms", ms(2000),
                         "--idle-timeout-ms", ms(1500), "--max-connections", "6", "--deadline-ms", "0")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %d" % rc

    def timeouts(self, kind):
        return metrics(self.srv).value("ortserve_connection_timeouts_total", kind=kind)

    def test_slowloris_head_is_cut(self):
        before = self.timeouts("header")
        with RawConn(self.srv.port, timeout=30) as c:
            c.send(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            c.sock.settimeout(0.1)
            sent, got = 0, b""
            for _ in range(int(300 * TIME_SCALE)):  # one byte every 100 ms: a head that would take 30 s
                try:
                    c.sock.sendall(b"a")
                    sent += 1
                    got = c.sock.recv(4096)
                    break
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            c.sock.settimeout(10)
            c.buf = got
            r = c.read_response()
            self.assertEqual((r.status, r.header("Connection")), (408, "close"), r)
            self.assertIn("timed out waiting for the request head", r.json()["error"])
            self.assertTrue(c.closed_by_peer(10))
            self.assertLess(sent, int(300 * TIME_SCALE), "the head was never cut")
        wait_until(lambda: self.timeouts("header") > before, 10, "the header timeout on /metrics")

    def test_stalled_body_is_cut(self):
        before = self.timeouts("body")
        with RawConn(self.srv.port, timeout=30 * TIME_SCALE) as c:
            body = json.dumps(mlp_request(np.zeros((1, 64), np.float32))).encode()
            c.send(request_bytes("POST", "/v2/models/mlp/infer", body[:40], [("Content-Length", str(len(body)))]))
            r = c.read_response()
            self.assertEqual((r.status, r.header("Connection")), (408, "close"), r)
            self.assertIn("timed out waiting for the request body", r.json()["error"])
            self.assertTrue(c.closed_by_peer(10))
        wait_until(lambda: self.timeouts("body") > before, 10, "the body timeout on /metrics")

    def test_body_dribbled_within_the_timeout_completes(self):
        # --body-timeout-ms is the time between body bytes: 10 pieces 250 ms apart (2.5 s in all, more
        # than the 2 s timeout) arrive in time.
        x = np.full((1, 64), 0.25, np.float32)
        body = json.dumps(mlp_request(x, id="dribbled")).encode()
        pieces = [body[i * len(body) // 10:(i + 1) * len(body) // 10] for i in range(10)]
        with RawConn(self.srv.port) as c:
            c.send(request_bytes("POST", "/v2/models/mlp/infer", b"", [("Content-Length", str(len(body)))]))
            for p in pieces:
                time.sleep(0.25 * TIME_SCALE)  # the client's own pace (what is tested), not a synchronisation
                c.send(p)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["id"], "dribbled")

    def test_idle_connections_are_closed(self):
        before = self.timeouts("idle")
        with RawConn(self.srv.port) as silent, RawConn(self.srv.port) as kept:
            kept.send(request_bytes("GET", "/v2/health/live"))
            self.assertEqual(kept.read_response().status, 200)
            self.assertTrue(silent.closed_by_peer(20 * TIME_SCALE), "a connection that never sent anything stayed open")
            self.assertTrue(kept.closed_by_peer(20 * TIME_SCALE), "an idle keep-alive connection stayed open")
        wait_until(lambda: self.timeouts("idle") >= before + 2, 10, "two idle timeouts on /metrics")

    def test_max_connections(self):
        held = []

        def one_more():
            c = RawConn(self.srv.port)
            try:
                c.send(request_bytes("GET", "/v2/health/live"))
                r = c.read_response()
            except (ConnectionError, OSError):
                c.close()
                return None
            if r.status == 200:
                return c
            c.close()  # connections of earlier tests may not be closed on the server side yet: retry
            return None
        try:
            for _ in range(6):
                held.append(wait_until(one_more, 20, "a connection under the limit", interval=0.05))
            with RawConn(self.srv.port) as extra:  # the 7th: answered at once, without a request
                r = extra.read_response()
                self.assertEqual((r.status, r.header("Retry-After"), r.header("Connection")), (503, "1", "close"), r)
                self.assertIn("too many connections", r.json()["error"])
                self.assertTrue(extra.closed_by_peer(10))
            for c in held:  # the held ones still work
                c.send(request_bytes("GET", "/v2/health/live"))
                self.assertEqual(c.read_response().status, 200)
            held.pop().close()
            held.append(wait_until(one_more, 20, "a connection once one was closed", interval=0.05))
        finally:
            for c in held:
                c.close()
        self.assertGreaterEqual(metrics(self.srv).value("ortserve_rejected_connections_total"), 1)


@unittest.skipIf(WRAPPER, "descriptor counts differ under a wrapper (valgrind keeps its own)")
class OutOfDescriptors(unittest.TestCase):
    def test_emfile_does_not_spin_and_recovers(self):
        limit = 64
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"mlp": "mlp.onnx"}), "--loops", "1", "--workers", "1",
                         "--idle-timeout-ms", "600000",
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
            held = []
            try:
                # Hold connections until the server has no descriptor left: then new ones are answered
                # 503 (out of file descriptors) by the reserve-descriptor trick.
                refused = None
                for _ in range(limit + 8):
                    c = RawConn(srv.port)
                    c.send(request_bytes("GET", "/v2/health/live"))
                    r = c.read_response()
                    if r.status == 503:
                        refused = r
                        c.close()
                        break
                    self.assertEqual(r.status, 200, r)
                    held.append(c)
                self.assertIsNotNone(refused, "the server never ran out of descriptors")
                self.assertIn("out of file descriptors", refused.json()["error"])
                self.assertEqual(open_fds(srv.proc.pid), limit)
                # At the limit, with connections arriving, the server does not spin: its CPU time over a
                # window of 20 connection attempts (100 ms apart) stays far below the window's length.
                cpu0, t0, answered = cpu_seconds(srv.proc.pid), time.monotonic(), 0
                for _ in range(20):
                    with RawConn(srv.port) as c:
                        r = c.read_response()
                        self.assertEqual(r.status, 503, r)
                        answered += 1
                    time.sleep(0.1)  # pacing the arrivals (the window being measured), not a synchronisation
                cpu, window = cpu_seconds(srv.proc.pid) - cpu0, time.monotonic() - t0
                self.assertEqual(answered, 20)
                self.assertLess(cpu, 0.25 * window, "the server burned %.2fs of CPU in %.2fs" % (cpu, window))
                # Descriptors free again: it serves.
                for c in held:
                    c.close()
                held = []

                def serves():
                    try:
                        return srv.request("GET", "/v2/health/live")[0] == 200
                    except (ConnectionError, OSError, http.client.HTTPException):
                        return False
                wait_until(serves, 20, "the server to serve again", interval=0.05)
                st, body = srv.json("POST", "/v2/models/mlp/infer", mlp_request(np.ones((1, 64), np.float32)))
                self.assertEqual(st, 200, body)
                self.assertGreater(metrics(srv).value("ortserve_accept_errors_total"), 0)
                self.assertIn('"event":"nofile_limit"', srv.logs())  # warned at start-up: 64 < 4096 + 256
                print("EMFILE: %d connections held at RLIMIT_NOFILE %d; %.3fs CPU over a %.2fs window of refusals" %
                      (len(held) or limit, limit, cpu, window))
            finally:
                for c in held:
                    c.close()
                self.assertEqual(srv.finish(), 0)


class DrainTimeout(unittest.TestCase):
    def test_a_run_outliving_the_drain_timeout_gets_504(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"slow": "slow.onnx"}), "--loops", "1", "--workers", "1", "--deadline-ms",
                         "0", "--inline-threshold-us", "0", "--drain-timeout-ms", "300")
            try:
                with RawConn(srv.port, timeout=60) as c:
                    c.send(request_bytes("POST", "/v2/models/slow/infer", slow_body(10 ** 12).encode()))
                    wait_until(lambda: server_consumed(srv.port, c.sock), 20, "the server to read the request")
                    # One loop: it decoded and queued the request before answering /metrics, so an empty
                    # queue means the worker is running it.
                    wait_until(lambda: metrics(srv).value("ortserve_queue_depth") == 0, 20, "the run to start")
                    srv.proc.send_signal(signal.SIGTERM)
                    r = c.read_response()
                    self.assertEqual((r.status, r.header("Connection")), (504, "close"), r)
                    self.assertIn("canceled", r.json()["error"])
                    self.assertTrue(c.closed_by_peer(10))
                self.assertEqual(srv.proc.wait(timeout=60), 0)
                self.assertIn('"drained":false', srv.logs())
            finally:
                self.assertEqual(srv.finish(), 0)


class DrainUnderLoad(unittest.TestCase):
    def test_sigterm_under_load_fails_no_request_in_flight(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = Server(make_repo(tmp, {"slow": "slow.onnx"}), "--workers", "2", "--deadline-ms", "0",
                         "--inline-threshold-us", "0", "--drain-timeout-ms", str(int(30000 * TIME_SCALE)))
            try:
                self.load_then_sigterm(srv)
            finally:
                if srv.proc.poll() is None:  # the test failed before the server stopped
                    srv.proc.kill()
                srv.finish()

    def load_then_sigterm(self, srv):
        iters = calibrate(srv, 0.03)
        body = slow_body(iters)
        stop_at = time.monotonic() + 120 * TIME_SCALE
        lock, ok, refused, failed = threading.Lock(), [0], [0], []
        sent_before_term = []
        term = threading.Event()

        def client(k):
            conn = None
            for _ in range(400):
                if time.monotonic() > stop_at:
                    break
                try:
                    conn = conn or srv.conn(timeout=60)
                    conn.request("POST", "/v2/models/slow/infer", body=body)
                    r = conn.getresponse()
                    data = r.read()
                except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError,
                        http.client.RemoteDisconnected) as e:
                    # No byte of a response arrived: the server never took this request.
                    with lock:
                        if term.is_set():
                            refused[0] += 1
                        else:
                            failed.append("before SIGTERM: %r" % e)
                    if conn:
                        conn.close()
                    conn = None
                    if isinstance(e, ConnectionRefusedError):
                        return  # the listener is closed: done
                    continue
                except Exception as e:  # noqa: BLE001 - a partial response or a timeout is a failure
                    with lock:
                        failed.append(repr(e))
                    return
                with lock:
                    if r.status == 200 and json.loads(data)["outputs"][0]["shape"] == [1, 256]:
                        ok[0] += 1
                    else:
                        failed.append("status %d: %r" % (r.status, data[:200]))
                if r.getheader("Connection") == "close":
                    conn.close()
                    conn = None

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: ok[0] >= 24, 60 * TIME_SCALE, "the load to be under way")
        sent_before_term.append(ok[0])
        term.set()
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(max(1, stop_at - time.monotonic() + 10))
            self.assertFalse(t.is_alive(), "a client did not finish")
        rc = srv.proc.wait(timeout=60 * TIME_SCALE)
        self.assertEqual(failed, [])
        self.assertEqual(rc, 0, srv.logs()[-2000:])
        self.assertIn('"drained":true', srv.logs())
        # The server's own account: every request it read got 200, as many as the clients saw.
        infer = [r for r in access_records(srv) if r.get("path") == "/v2/models/slow/infer"]
        self.assertEqual({r["status"] for r in infer}, {200})
        self.assertEqual(len(infer), ok[0] + 3)  # and the 3 calibration runs
        print("SIGTERM under load: %d requests answered 200 (%d after SIGTERM), %d refused cleanly, 0 failed" %
              (ok[0], ok[0] - sent_before_term[0], refused[0]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
