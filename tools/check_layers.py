#!/usr/bin/env python3
"""check_layers.py — the include graph points down the layers (docs/DESIGN.md, "Layers").

Every `#include "..."` in src/<layer>/ must name a header that layer may use:

    util     util, core's public headers (ortserve/*.h except imaging.h)
    core     core, util, core's public headers
    imaging  imaging, util, every public header
    obs      obs, util, every public header                          — never a front, net, serve
    serve    serve, util, public headers, obs's API (obs.h, log.h)   — no HTTP, JSON-RPC or protobuf
    net      net, util, public headers, obs's API                    — knows no protocol
    http     http, net.h, serve's API, obs's API, util, public headers
    grpc     grpc, net.h, serve's API, obs's API, util, public headers
    cli      the fronts' server headers, serve's API, obs's API, util, public headers

A folder's *_internal.h and a module's private headers (obs/trace.h, core/ort.h, ...) are for that
folder alone. Exit 1 with one line per forbidden include; `--self-test` checks the checker on a
temporary tree (a forbidden include must fail it, an allowed one must pass)."""
import os
import re
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

CORE_PUBLIC = re.compile(r"^ortserve/(?!imaging\.h$)[a-z_]+\.h$")
PUBLIC = re.compile(r"^ortserve(/[a-z_]+)?\.h$")
OBS_API = {"obs/obs.h", "obs/log.h"}
SERVE_API = {"serve/serve.h", "serve/errmap.h", "serve/shm.h", "serve/auth.h", "serve/bind.h", "serve/outputs.h",
             "serve/inflate.h"}
NET_API = {"net/net.h"}
SERVER_API = {"http/server.h", "grpc/server.h"}


def own(layer):
    return lambda h: h.startswith(layer + "/") or "/" not in h  # "json.h" beside the file


def util(h):
    return h.startswith("util/")


RULES = {
    "util": [own("util"), CORE_PUBLIC.match],
    "core": [own("core"), util, CORE_PUBLIC.match],
    "imaging": [own("imaging"), util, PUBLIC.match],
    "obs": [own("obs"), util, PUBLIC.match],
    "serve": [own("serve"), util, PUBLIC.match, OBS_API.__contains__],
    "net": [own("net"), util, PUBLIC.match, OBS_API.__contains__],
    "http": [own("http"), util, PUBLIC.match, OBS_API.__contains__, SERVE_API.__contains__, NET_API.__contains__],
    "grpc": [own("grpc"), util, PUBLIC.match, OBS_API.__contains__, SERVE_API.__contains__, NET_API.__contains__],
    "cli": [own("cli"), util, PUBLIC.match, OBS_API.__contains__, SERVE_API.__contains__, SERVER_API.__contains__],
}


def internal_elsewhere(layer, header):
    """A folder's *_internal.h included from another folder."""
    return header.endswith("_internal.h") and not header.startswith(layer + "/") and "/" in header


def check(src):
    bad = []
    for layer in sorted(os.listdir(src)):
        d = os.path.join(src, layer)
        if not os.path.isdir(d):
            continue
        rules = RULES.get(layer)
        if rules is None:
            bad.append("%s/: a folder the layer rules do not know (add it to tools/check_layers.py)" % layer)
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(d, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            for m in INCLUDE.finditer(text):
                h = m.group(1)
                line = text.count("\n", 0, m.start()) + 1
                if internal_elsewhere(layer, h) or not any(r(h) for r in rules):
                    bad.append("src/%s/%s:%d: includes \"%s\": %s may not depend on it" % (layer, name, line, h, layer))
    return bad


def self_test():
    with tempfile.TemporaryDirectory() as tmp:
        def write(rel, text):
            p = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        write("core/a.c", '#include "ortserve/pool.h"\n#include "util/json.h"\n#include "model_internal.h"\n')
        write("http/b.c", '#include "serve/serve.h"\n#include "net/net.h"\n#include "obs/obs.h"\n')
        assert check(tmp) == [], check(tmp)
        for rel, text in [("obs/c.c", '#include "http/http.h"\n'), ("core/d.c", '#include "serve/serve.h"\n'),
                          ("http/e.c", '#include "obs/trace.h"\n'), ("http/f.c", '#include "serve/serve_internal.h"\n'),
                          ("net/g.c", '#include "http/http.h"\n'), ("cli/h.c", '#include "http/http.h"\n'),
                          ("core/i.c", '#include "ortserve/imaging.h"\n'), ("serve/j.c", '#include "net/net.h"\n')]:
            write(rel, text)
            found = check(tmp)
            assert len(found) == 1 and rel.split("/")[1] in found[0], (rel, found)
            os.remove(os.path.join(tmp, rel))
    print("check_layers self-test: ok")


def main():
    root = os.environ.get("OSV_SOURCE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    if "--self-test" in sys.argv:
        self_test()
    bad = check(os.path.join(root, "src"))
    for b in bad:
        print(b)
    if bad:
        print("%d forbidden include(s): dependencies must point down the layers (docs/DESIGN.md)" % len(bad))
        return 1
    print("check_layers: every include points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
