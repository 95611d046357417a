#!/usr/bin/env python3
"""Functional checks for one running candidate server (bench only).

Usage: functest.py NAME PORT PID

Checks: single POST, pipelining (3 requests in one write: POST, GET /unknown,
POST -> 200, 404, 200 in order), deep pipelining (100 POSTs in one write),
a request split across several writes, a 200 KiB Content-Length body, a chunked
body, and user-space memory per idle keep-alive connection (VmRSS delta of PID
after opening 1000 connections that each completed one request).
Prints one line per check and a final SUMMARY line.
"""
import socket
import sys
import time

HOST = "127.0.0.1"
PATH = "/v2/models/mlp/infer"
RESP_BODY = (b'{"model_name":"mlp","outputs":[{"name":"probs","datatype":"FP32","shape":[1,10],'
             b'"data":[0.021,0.087,0.144,0.052,0.313,0.093,0.021,0.118,0.070,0.081]}]}')


def body64():
    xs = ",".join("%.6f" % ((i * 37 % 200) / 100.0 - 1.0) for i in range(64))
    return ('{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[%s]}]}' % xs).encode()


def post(body, path=PATH, extra=b""):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def get(path):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Reader:
    def __init__(self, sock):
        self.s, self.buf = sock, b""

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed by server")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def response(self):
        status = int(self._line().split()[1])
        hdrs = {}
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.split(b":", 1)
            hdrs[k.strip().lower().decode()] = v.strip().decode()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                n = int(self._line().split(b";")[0], 16)
                if n == 0:
                    while self._line():
                        pass
                    break
                body += self._take(n)
                self._take(2)
        else:
            body = self._take(int(hdrs.get("content-length", "0")))
        return status, hdrs, body


def connect():
    s = socket.create_connection((HOST, PORT), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def ok200(r):
    st, h, b = r
    return st == 200 and h.get("content-type", "").startswith("application/json") and b == RESP_BODY


def t_single():
    with connect() as s:
        s.sendall(post(body64()))
        r = Reader(s).response()
        return ok200(r), "status=%d len=%d" % (r[0], len(r[2]))


def t_pipeline3():
    with connect() as s:
        s.sendall(post(body64()) + get("/v2/no/such/thing") + post(body64()))
        rd = Reader(s)
        rs = [rd.response() for _ in range(3)]
        sts = [r[0] for r in rs]
        return sts == [200, 404, 200] and ok200(rs[0]) and ok200(rs[2]), "statuses=%s" % sts


def t_pipeline100():
    with connect() as s:
        s.sendall(post(body64()) * 100)
        rd = Reader(s)
        good = sum(1 for _ in range(100) if ok200(rd.response()))
        return good == 100, "ok=%d/100" % good


def t_split():
    req = post(body64())
    cut = [30, req.index(b"\r\n\r\n") + 2, req.index(b"\r\n\r\n") + 40, len(req) - 5]
    with connect() as s:
        prev = 0
        for c in cut + [len(req)]:
            s.sendall(req[prev:c])
            prev = c
            time.sleep(0.03)
        r = Reader(s).response()
        return ok200(r), "status=%d" % r[0]


def t_large():
    body = b'{"blob":"' + b"x" * (200 * 1024) + b'"}'
    with connect() as s:
        s.sendall(post(body))
        r = Reader(s).response()
        # and the connection must still be usable afterwards
        s.sendall(post(body64()))
        r2 = Reader(s).response()
        return ok200(r) and ok200(r2), "status=%d then %d (body %d B)" % (r[0], r2[0], len(body))


def t_chunked():
    b = body64()
    parts = [b[:100], b[100:400], b[400:]]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    req = (b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    with connect() as s:
        s.sendall(req)
        r = Reader(s).response()
        return ok200(r), "status=%d" % r[0]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def t_memory(pid, n=1000):
    warm = [connect() for _ in range(8)]
    for s in warm:
        s.sendall(post(body64()))
        Reader(s).response()
    time.sleep(0.2)
    before = rss_kib(pid)
    socks = []
    try:
        for _ in range(n):
            s = connect()
            s.sendall(post(body64()))
            Reader(s).response()
            socks.append(s)
        time.sleep(0.3)
        after = rss_kib(pid)
    finally:
        for s in socks + warm:
            s.close()
    per = (after - before) / n
    return True, "rss_before=%dKiB rss_after=%dKiB per_conn=%.2fKiB" % (before, after, per), per


def main():
    global PORT
    name, PORT, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    results = {}
    for t in (t_single, t_pipeline3, t_pipeline100, t_split, t_large, t_chunked):
        try:
            ok, info = t()
        except Exception as e:  # noqa: BLE001 - report any failure as FAIL
            ok, info = False, "%s: %s" % (type(e).__name__, e)
        results[t.__name__[2:]] = ok
        print("CHECK %-10s %-12s %s  %s" % (name, t.__name__[2:], "PASS" if ok else "FAIL", info), flush=True)
    try:
        _, info, per = t_memory(pid)
    except Exception as e:  # noqa: BLE001
        info, per = "%s: %s" % (type(e).__name__, e), float("nan")
    print("CHECK %-10s %-12s %s  %s" % (name, "memory", "INFO", info), flush=True)
    print("SUMMARY %s %s mem_kib_per_conn=%.2f" % (
        name, " ".join("%s=%s" % (k, "PASS" if v else "FAIL") for k, v in results.items()), per), flush=True)


if __name__ == "__main__":
    main()
