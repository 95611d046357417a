"""test_grpc_h2.py — the gRPC front at the HTTP/2 frame level: a tiny client written here on Debian's
python3-h2 (its hpack and hyperframe modules build the frames; the socket is ours) sends what a
well-behaved gRPC library never does — wrong content-types and methods, compressed flags, length
prefixes past the limit, truncated messages — and the floods HTTP/2 servers must survive (rapid
reset, PING, SETTINGS, empty DATA, CONTINUATION) and a client that never opens its window. Each
gets the right answer (an HTTP status, a grpc-status, or GOAWAY / a closed connection), and the
server serves a well-formed call afterwards, its memory bounded."""
import os
import socket
import struct
import sys
import tempfile
import time
import unittest

from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

sys.path.insert(0, os.path.dirname(__file__))
from grpc_support import GrpcServer, infer_request, pb  # noqa: E402
from server import make_repo  # noqa: E402
import numpy as np  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PATH = b"/inference.GRPCInferenceService/"


def grpc_msg(payload, flag=0, length=None):
    return struct.pack(">BI", flag, len(payload) if length is None else length) + payload


class H2:
    """One HTTP/2 connection, frames in and out."""

    def __init__(self, port, settings=None, window=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.enc, self.dec = Encoder(), Decoder()
        self.buf = b""
        self.next_id = 1
        sf = SettingsFrame(0)
        for k, v in (settings or {}).items():
            sf.settings[k] = v
        self.s.sendall(PREFACE + sf.serialize())
        if window:
            self.send(WindowUpdateFrame(0, window_increment=window))

    def send(self, *frames):
        self.s.sendall(b"".join(f.serialize() for f in frames))

    def headers(self, method="POST", path=PATH + b"ServerLive", ctype=b"application/grpc", extra=(),
                end_stream=False):
        sid = self.next_id
        self.next_id += 2
        hs = [(b":method", method.encode()), (b":scheme", b"http"), (b":path", path), (b":authority", b"x"),
              (b"content-type", ctype), (b"te", b"trailers"), *extra]
        f = HeadersFrame(sid, self.enc.encode(hs))
        f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        self.send(f)
        return sid

    def data(self, sid, payload, end_stream=True):
        f = DataFrame(sid, payload)
        if end_stream:
            f.flags.add("END_STREAM")
        self.send(f)

    def frame(self, timeout=10):
        """The next frame, or None when the connection closed."""
        self.s.settimeout(timeout)
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            try:
                chunk = self.s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return None
            if not chunk:
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
        f.parse_body(memoryview(self.buf[9:9 + n]))
        self.buf = self.buf[9 + n:]
        return f

    def answer(self, sid, timeout=10):
        """(headers dict, data bytes, trailers dict) of stream sid; reading until it ends."""
        heads, data, trailers = None, b"", {}
        while True:
            f = self.frame(timeout)
            if f is None:
                raise AssertionError("connection closed before stream %d ended" % sid)
            if isinstance(f, GoAwayFrame):
                raise AssertionError("GOAWAY %d before stream %d ended" % (f.error_code, sid))
            if f.stream_id != sid:
                continue
            if isinstance(f, HeadersFrame):
                h = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                     for k, v in self.dec.decode(f.data)}
                if heads is None:
                    heads = h
                else:
                    trailers = h
            elif isinstance(f, DataFrame):
                data += f.data
            elif isinstance(f, RstStreamFrame):
                return heads, data, {"rst": f.error_code}
            if "END_STREAM" in f.flags:
                return heads, data, trailers or heads

    def closed(self, timeout=10):
        """True when the server sends GOAWAY or closes within timeout (frames before it are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.frame(max(0.1, deadline - time.monotonic()))
            if f is None or isinstance(f, GoAwayFrame):
                return True
        return False

    def close(self):
        self.s.close()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class GrpcIdle(unittest.TestCase):
    """--grpc-idle-timeout-ms: a connection without open streams gets GOAWAY and is closed; one with an
    open stream is not."""

    def test_idle_connection_goaway(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = GrpcServer(make_repo(tmp, {"mlp": "mlp.onnx"}), "--grpc-idle-timeout-ms", "300",
                             "--grpc-keepalive-ms", "0")
            try:
                c = H2(srv.grpc_port)
                sid = c.headers()
                c.data(sid, grpc_msg(b""))
                _, _, t = c.answer(sid)
                self.assertEqual(t["grpc-status"], "0")
                t0 = time.monotonic()
                self.assertTrue(c.closed(10), "an idle connection was kept")
                self.assertGreater(time.monotonic() - t0, 0.2)
                c.close()
            finally:
                self.assertEqual(srv.finish(), 0)


class GrpcKeepalive(unittest.TestCase):
    """--grpc-keepalive-ms: a silent connection is PINGed; one that does not answer is closed, one that
    does is kept (until its idle timeout)."""

    def test_unanswered_ping_closes(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = GrpcServer(make_repo(tmp, {"mlp": "mlp.onnx"}), "--grpc-keepalive-ms", "200",
                             "--grpc-idle-timeout-ms", "0")
            try:
                c = H2(srv.grpc_port)
                pinged = closed = False
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    f = c.frame(5)
                    if f is None or isinstance(f, GoAwayFrame):
                        closed = True
                        break
                    if isinstance(f, PingFrame) and "ACK" not in f.flags:
                        pinged = True  # not answered
                self.assertTrue(pinged and closed, (pinged, closed))
                c.close()
                c = H2(srv.grpc_port)  # one that answers stays open past several keepalive periods
                t_end = time.monotonic() + 1.0
                while time.monotonic() < t_end:
                    f = c.frame(3)  # a PING comes every 200 ms; None = closed (or nothing for 3 s)
                    self.assertIsNotNone(f, "a connection that answers PINGs was closed")
                    if isinstance(f, PingFrame) and "ACK" not in f.flags:
                        ack = PingFrame(0, opaque_data=f.opaque_data)
                        ack.flags.add("ACK")
                        c.send(ack)
                    self.assertNotIsInstance(f, GoAwayFrame)
                c.close()
            finally:
                self.assertEqual(srv.finish(), 0)


class GrpcH2(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = make_repo(cls.tmp.name, {"mlp": "mlp.onnx"})
        cls.srv = GrpcServer(repo, "--grpc-max-message-bytes", "1M", "--grpc-frame-rate", "50",
                             "--grpc-stall-timeout-ms", "500", "--grpc-max-streams", "8")
        cls.stub = cls.srv.stub()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.finish()
        cls.tmp.cleanup()
        assert rc == 0, "ortserve exited with %s" % rc

    def setUp(self):
        self.c = H2(self.srv.grpc_port)

    def tearDown(self):
        self.c.close()
        # the server serves afterwards
        x = np.zeros((1, 64), np.float32)
        self.assertEqual(len(self.stub.ModelInfer(infer_request("mlp", [("x", x)])).outputs), 1)

    def status(self, sid):
        h, data, t = self.c.answer(sid)
        return h, data, t

    def test_well_formed_call(self):
        sid = self.c.headers()
        self.c.data(sid, grpc_msg(b""))
        h, data, t = self.status(sid)
        self.assertEqual(h[":status"], "200")
        self.assertEqual(t["grpc-status"], "0")
        self.assertEqual(pb.ServerLiveResponse.FromString(data[5:]).live, True)

    def test_stream_requests_and_end_in_one_frame(self):
        """Many ModelStreamInfer requests and the client's END_STREAM in one DATA frame (as h2load sends
        them): every request is answered, then the trailers say OK (this once hung: the answers of
        requests that ran inline were queued before the end of the stream was seen)."""
        x = np.zeros((1, 64), np.float32)
        sid = self.c.headers(path=PATH + b"ModelStreamInfer")
        self.c.data(sid, grpc_msg(infer_request("mlp", [("x", x)]).SerializeToString()) * 5)
        _, data, t = self.status(sid)
        self.assertEqual(t.get("grpc-status"), "0")
        n, off = 0, 0
        while off + 5 <= len(data):
            ln = struct.unpack(">I", data[off + 1:off + 5])[0]
            r = pb.ModelStreamInferResponse.FromString(data[off + 5:off + 5 + ln])
            self.assertEqual(r.error_message, "")
            off += 5 + ln
            n += 1
        self.assertEqual(n, 5)

    def test_grpc_timeout_while_receiving(self):
        """A call whose message never completes ends at its grpc-timeout with DEADLINE_EXCEEDED (the
        connection's timer), and its slot goes back."""
        sid = self.c.headers(path=PATH + b"ModelInfer", extra=[(b"grpc-timeout", b"200m")])
        self.c.data(sid, grpc_msg(b"\x0a\x03mlp", length=1000), end_stream=False)
        t0 = time.monotonic()
        _, _, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "4")
        self.assertIn("deadline", t["grpc-message"])
        self.assertLess(time.monotonic() - t0, 5)

    def test_wrong_content_type_415(self):
        sid = self.c.headers(ctype=b"application/json")
        self.c.data(sid, grpc_msg(b""))
        h, _, _ = self.status(sid)
        self.assertEqual(h[":status"], "415")

    def test_get_405(self):
        sid = self.c.headers(method="GET", end_stream=True)
        h, _, _ = self.status(sid)
        self.assertEqual(h[":status"], "405")

    def test_unknown_method_unimplemented(self):
        sid = self.c.headers(path=PATH + b"Nope")
        self.c.data(sid, grpc_msg(b""))
        _, _, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "12")
        self.assertIn("Nope", t["grpc-message"])

    def test_compressed_flag_without_encoding_internal(self):
        sid = self.c.headers()
        self.c.data(sid, grpc_msg(b"", flag=1))
        _, _, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "13")
        self.assertIn("compress", t["grpc-message"])

    def test_grpc_encoding_unknown_unimplemented(self):
        """An encoding the server does not decode: UNIMPLEMENTED, naming the ones it does
        (grpc-accept-encoding), as the protocol asks."""
        sid = self.c.headers(extra=[(b"grpc-encoding", b"snappy")])
        self.c.data(sid, grpc_msg(b"", flag=1))
        _, _, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "12")
        self.assertEqual(t["grpc-accept-encoding"], "identity,deflate,gzip")

    def test_grpc_encoding_corrupt_message(self):
        """A message flagged compressed under grpc-encoding gzip that is not gzip: INVALID_ARGUMENT."""
        sid = self.c.headers(path=PATH + b"ModelInfer", extra=[(b"grpc-encoding", b"gzip")])
        self.c.data(sid, grpc_msg(b"\x1f\x8b not gzip at all", flag=1))
        _, _, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "3")
        self.assertIn("corrupt", t["grpc-message"])

    def test_grpc_encoding_flag_zero_is_plain(self):
        """Under grpc-encoding gzip, a message whose compressed flag is 0 is read as it is."""
        x = np.zeros((1, 64), np.float32)
        sid = self.c.headers(path=PATH + b"ModelInfer", extra=[(b"grpc-encoding", b"gzip")])
        self.c.data(sid, grpc_msg(infer_request("mlp", [("x", x)]).SerializeToString()))
        _, data, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "0")
        self.assertEqual(pb.ModelInferResponse.FromString(data[5:]).model_name, "mlp")

    def test_length_prefix_beyond_limit(self):
        sid = self.c.headers(path=PATH + b"ModelInfer")
        self.c.data(sid, grpc_msg(b"\x0a\x03mlp", length=2 ** 31), end_stream=False)
        _, _, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "8")
        self.assertIn("limit", t["grpc-message"])

    def test_truncated_message(self):
        sid = self.c.headers(path=PATH + b"ModelInfer")
        self.c.data(sid, grpc_msg(b"\x0a\x03mlp", length=100))
        _, _, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "13")
        self.assertIn("truncated", t["grpc-message"])

    def test_no_message(self):
        sid = self.c.headers(end_stream=True)
        _, _, t = self.status(sid)
        self.assertEqual(t["grpc-status"], "13")

    def test_two_messages_on_unary(self):
        """The first message is answered as soon as it is complete; the second one then has no call to
        join (it is ignored, or INTERNAL when it came before the answer): one answer, never two."""
        sid = self.c.headers()
        self.c.data(sid, grpc_msg(b"") + grpc_msg(b""))
        _, data, t = self.status(sid)
        self.assertIn(t["grpc-status"], ("0", "13"))
        self.assertLessEqual(len(data), 5 + 2)

    def test_header_list_too_large_431(self):
        sid = self.c.headers(extra=[(b"x-big", b"a" * 8000), (b"x-big2", b"b" * 9000)])
        self.c.data(sid, grpc_msg(b""))
        h, _, _ = self.status(sid)
        self.assertEqual(h[":status"], "431")

    def test_streams_beyond_the_limit_refused(self):
        sids = [self.c.headers() for _ in range(12)]  # --grpc-max-streams 8, none finished
        refused = 0
        for _ in range(40):
            f = self.c.frame(5)
            if f is None:
                break
            if isinstance(f, RstStreamFrame) and f.stream_id in sids:
                refused += 1
                if refused == 4:
                    break
        self.assertEqual(refused, 4)

    def test_rapid_reset_goaway(self):
        try:
            for _ in range(400):
                sid = self.c.headers()
                self.c.send(RstStreamFrame(sid, error_code=8))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up on us before we were done
        self.assertTrue(self.c.closed(10), "no GOAWAY after 400 rapid resets")

    def test_ping_flood_goaway(self):
        self.c.send(*[PingFrame(0, opaque_data=b"12345678") for _ in range(1000)])
        self.assertTrue(self.c.closed(10))

    def test_settings_flood_goaway(self):
        self.c.send(*[SettingsFrame(0) for _ in range(1000)])
        self.assertTrue(self.c.closed(10))

    def test_empty_data_flood_goaway(self):
        sid = self.c.headers()
        self.c.send(*[DataFrame(sid, b"") for _ in range(1000)])
        self.assertTrue(self.c.closed(10))

    def test_continuation_flood_goaway(self):
        sid = self.c.next_id
        f = HeadersFrame(sid, self.c.enc.encode([(b":method", b"POST")]))
        frames = [f] + [ContinuationFrame(sid, self.c.enc.encode([(b"x-a", b"b" * 100)])) for _ in range(200)]
        self.c.send(*frames)
        self.assertTrue(self.c.closed(10))

    def test_zero_window_stall_closes(self):
        pid = self.srv.proc.pid
        c = H2(self.srv.grpc_port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        try:
            x = np.zeros((512, 64), np.float32)
            sid = c.headers(path=PATH + b"ModelInfer")
            c.data(sid, grpc_msg(infer_request("mlp", [("x", x)]).SerializeToString()))
            self.assertTrue(c.closed(10), "a client that never opens its window was not disconnected")
        finally:
            c.close()
        self.assertLess(rss_kb(pid), 2 << 20)

    def test_http1_answered_505(self):
        s = socket.create_connection(("127.0.0.1", self.srv.grpc_port), timeout=10)
        s.sendall(b"POST /inference.GRPCInferenceService/ServerLive HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(s.recv(64).startswith(b"HTTP/1.1 505"))
        s.close()

    def test_garbage_preface_closed(self):
        s = socket.create_connection(("127.0.0.1", self.srv.grpc_port), timeout=10)
        s.sendall(b"\x00" * 64)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertNotIn(b"HTTP/1.1", data)


if __name__ == "__main__":
    unittest.main()
