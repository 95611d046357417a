"""grpc_support.py — test support for the gRPC front: compiles the repo's proto/*.proto with Debian's
python3-grpc-tools into a temporary directory (once per process) and starts the real server with
--grpc-port 0, reading the bound port from --grpc-port-file. A client written here, on python3-grpcio:
what tritonclient.grpc sends (raw_input_contents, cleartext channel, INT32_MAX message sizes)."""
import atexit
import importlib
import os
import shutil
import sys
import tempfile

import grpc
import numpy as np

from server import Server, wait_until

SRC = os.environ.get("OSV_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_DIR = os.path.join(SRC, "proto")
_out = None


def protos():
    """(grpc_service_pb2, grpc_service_pb2_grpc, health_pb2, health_pb2_grpc, model_config_pb2)"""
    global _out
    if _out is None:
        from grpc_tools import protoc
        _out = tempfile.mkdtemp(prefix="osv-proto-")
        atexit.register(shutil.rmtree, _out, True)
        rc = protoc.main(["protoc", "-I" + PROTO_DIR, "--python_out=" + _out, "--grpc_python_out=" + _out,
                          "grpc_service.proto", "model_config.proto", "health.proto"])
        if rc != 0:
            raise RuntimeError("protoc failed on %s" % PROTO_DIR)
        sys.path.insert(0, _out)
    return tuple(importlib.import_module(m) for m in
                 ("grpc_service_pb2", "grpc_service_pb2_grpc", "health_pb2", "health_pb2_grpc", "model_config_pb2"))


pb, pb_grpc, hpb, hpb_grpc, mc = protos()

MAX = 2 ** 31 - 1
CHANNEL_OPTS = [("grpc.max_send_message_length", MAX), ("grpc.max_receive_message_length", MAX)]


class GrpcServer(Server):
    """The real server with both fronts on ephemeral ports; .grpc_port, .channel(), .stub()."""

    def __init__(self, repo, *args, **kw):
        tmp_pf = tempfile.mktemp(prefix="osv-grpc-port-")
        self.grpc_port_file = tmp_pf
        super().__init__(repo, "--grpc-port", "0", "--grpc-port-file", tmp_pf, *args, **kw)
        self.grpc_port = wait_until(self._read_grpc_port, 30, "the gRPC port file")
        self._channels = []

    def _read_grpc_port(self):
        try:
            with open(self.grpc_port_file) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def channel(self):
        ch = grpc.insecure_channel("127.0.0.1:%d" % self.grpc_port, options=CHANNEL_OPTS)
        self._channels.append(ch)
        return ch

    def stub(self):
        return pb_grpc.GRPCInferenceServiceStub(self.channel())

    def health(self):
        return hpb_grpc.HealthStub(self.channel())

    def stop(self, *a, **kw):
        for ch in getattr(self, "_channels", []):
            ch.close()
        try:
            os.unlink(self.grpc_port_file)
        except OSError:
            pass
        return super().stop(*a, **kw)


def tensor(name, arr, datatype=None):
    arr = np.asarray(arr)  # (np.ascontiguousarray makes a 0-d array 1-d)
    t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype or np_datatype(arr.dtype))
    t.shape.extend(arr.shape)
    return t


def np_datatype(dt):
    return {np.dtype("bool"): "BOOL", np.dtype("uint8"): "UINT8", np.dtype("uint16"): "UINT16",
            np.dtype("uint32"): "UINT32", np.dtype("uint64"): "UINT64", np.dtype("int8"): "INT8",
            np.dtype("int16"): "INT16", np.dtype("int32"): "INT32", np.dtype("int64"): "INT64",
            np.dtype("float16"): "FP16", np.dtype("float32"): "FP32", np.dtype("float64"): "FP64",
            np.dtype("object"): "BYTES"}[np.dtype(dt)]


NP_OF = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
         "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
         "FP32": np.float32, "FP64": np.float64}


def infer_request(model, inputs, outputs=None, raw=True, **params):
    """inputs: [(name, ndarray)] — raw_input_contents (as tritonclient sends) or typed contents."""
    req = pb.ModelInferRequest(model_name=model)
    for name, arr in inputs:
        t = tensor(name, arr)
        if raw:
            req.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
        else:
            fill_contents(t, arr)
        req.inputs.append(t)
    for o in outputs or []:
        req.outputs.append(pb.ModelInferRequest.InferRequestedOutputTensor(name=o))
    for k, v in params.items():
        set_param(req.parameters[k], v)
    return req


def set_param(p, v):
    if isinstance(v, bool):
        p.bool_param = v
    elif isinstance(v, int):
        p.int64_param = v
    else:
        p.string_param = v


def fill_contents(t, arr):
    c = t.contents
    flat = np.ascontiguousarray(arr).reshape(-1)
    dt = t.datatype
    if dt == "BOOL":
        c.bool_contents.extend(bool(x) for x in flat)
    elif dt in ("INT8", "INT16", "INT32"):
        c.int_contents.extend(int(x) for x in flat)
    elif dt == "INT64":
        c.int64_contents.extend(int(x) for x in flat)
    elif dt in ("UINT8", "UINT16", "UINT32"):
        c.uint_contents.extend(int(x) for x in flat)
    elif dt == "UINT64":
        c.uint64_contents.extend(int(x) for x in flat)
    elif dt == "FP32":
        c.fp32_contents.extend(float(x) for x in flat)
    elif dt == "FP64":
        c.fp64_contents.extend(float(x) for x in flat)
    else:
        raise ValueError("no typed contents for " + dt)


def output(resp, name):
    """The named output of a ModelInferResponse as an ndarray (raw_output_contents)."""
    for i, o in enumerate(resp.outputs):
        if o.name == name:
            raw = resp.raw_output_contents[i]
            if o.datatype == "BYTES":
                return bytes_deserialize(raw)
            return np.frombuffer(raw, dtype=NP_OF[o.datatype]).reshape(tuple(o.shape))
    raise KeyError(name)


def bytes_serialize(items):
    out = b""
    for b in items:
        out += len(b).to_bytes(4, "little") + b
    return out


def bytes_deserialize(data):
    out, i = [], 0
    while i + 4 <= len(data):
        n = int.from_bytes(data[i:i + 4], "little")
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out
