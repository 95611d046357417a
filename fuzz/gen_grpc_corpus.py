"""gen_grpc_corpus.py — seeds of fuzz/corpus/grpc_conn: what a gRPC client sends on one connection
(python3-h2 in client mode writes the frames), one file per conversation. Run with /usr/bin/python3
from the repository's root; the files are committed."""
import os
import struct
import sys

import h2.config
import h2.connection
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from grpc_support import infer_request, pb  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "corpus", "grpc_conn")
SVC = "/inference.GRPCInferenceService/"


def msg(m, flag=0):
    b = m if isinstance(m, bytes) else m.SerializeToString()
    return struct.pack(">BI", flag, len(b)) + b


def conversation(calls, extra=None):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    for method, payload, end in calls:
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", "x"),
                             ("content-type", "application/grpc"), ("te", "trailers"),
                             ("grpc-timeout", "5S"), ("traceparent",
                                                      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
        c.send_data(sid, payload, end_stream=end)
        if not end:
            c.reset_stream(sid)
    if extra:
        extra(c)
    return c.data_to_send()


def main():
    os.makedirs(OUT, exist_ok=True)
    x = np.arange(64, dtype=np.float32).reshape(1, 64)
    seeds = {
        "seed-live-ready": conversation([(SVC + "ServerLive", msg(b""), True), (SVC + "ServerReady", msg(b""), True)]),
        "seed-infer-raw": conversation([(SVC + "ModelInfer", msg(infer_request("mlp", [("x", x)])), True)]),
        "seed-infer-typed": conversation([(SVC + "ModelInfer", msg(infer_request("mlp", [("x", x)], raw=False)), True)]),
        "seed-stream": conversation([(SVC + "ModelStreamInfer", msg(infer_request("mlp", [("x", x)])) +
                                      msg(infer_request("nope", [("x", x)])) +
                                      msg(infer_request("mlp", [("x", x)])), True)]),
        "seed-metadata": conversation([(SVC + "ModelMetadata", msg(pb.ModelMetadataRequest(name="mlp")), True),
                                       (SVC + "ModelConfig", msg(pb.ModelConfigRequest(name="identity")), True),
                                       (SVC + "ModelStatistics", msg(pb.ModelStatisticsRequest()), True),
                                       (SVC + "ServerMetadata", msg(b""), True)]),
        "seed-repository": conversation([(SVC + "RepositoryIndex", msg(pb.RepositoryIndexRequest()), True),
                                         (SVC + "RepositoryModelUnload",
                                          msg(pb.RepositoryModelUnloadRequest(model_name="dynamic")), True),
                                         (SVC + "RepositoryModelLoad",
                                          msg(pb.RepositoryModelLoadRequest(model_name="dynamic")), True)]),
        "seed-shm-log": conversation([(SVC + "SystemSharedMemoryStatus", msg(b""), True),
                                      (SVC + "LogSettings", msg(b""), True),
                                      (SVC + "CudaSharedMemoryStatus", msg(b""), True),
                                      ("/grpc.health.v1.Health/Check", msg(b""), True)]),
        "seed-reset": conversation([(SVC + "ModelInfer", msg(infer_request("mlp", [("x", x)]))[:40], False)]),
        "seed-ping": conversation([], extra=lambda c: c.ping(b"12345678")),
        "seed-compressed": conversation([(SVC + "ServerLive", msg(b"", flag=1), True)]),
    }
    r = pb.ModelInferRequest(model_name="identity")
    t = pb.ModelInferRequest.InferInputTensor(name="in_BYTES", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(b"abc")
    r.inputs.append(t)
    seeds["seed-identity-bytes"] = conversation([(SVC + "ModelInfer", msg(r), True)])
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(seeds), OUT))


if __name__ == "__main__":
    main()
