"""sitecustomize.py — on PYTHONPATH only under tools/arm64/qemu_env.sh (make test-arm64): every
aarch64 ELF that `subprocess` starts runs under $OSV_QEMU (qemu-aarch64), so the end-to-end tests
start build/arm64/ortserve unchanged. Nothing else is affected: other programs (python, promtool,
curl) are x86-64 and start as usual."""
import os
import shutil
import subprocess

_QEMU = os.environ.get("OSV_QEMU")
_EM_AARCH64 = 183


def _is_aarch64(path):
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == _EM_AARCH64


if _QEMU:
    _orig = subprocess.Popen._execute_child

    def _execute_child(self, args, executable, *rest, **kw):
        if not isinstance(args, (str, bytes)) and args:
            prog = executable or args[0]
            path = os.fspath(prog)
            if os.sep not in str(path):
                path = shutil.which(path) or path
            if _is_aarch64(path):
                args = [_QEMU, os.fspath(path), *list(args)[1:]]
                executable = None
        return _orig(self, args, executable, *rest, **kw)

    subprocess.Popen._execute_child = _execute_child
