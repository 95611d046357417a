#!/usr/bin/env bash
# qemu_env.sh — runs a command (ctest, usually) with arm64 binaries executed by qemu-user, set up so
# that ONNX Runtime's arm64 build works under emulation:
#
#   tools/arm64/qemu_env.sh ctest --test-dir build/arm64 ...        (what `make test-arm64` does)
#
# Why (docs/PORTABILITY.md): Debian's qemu-user 7.2 passes the host's x86 /proc/cpuinfo through to
# the guest, and the pytorch/cpuinfo code inside ORT (run from a static constructor, at dlopen)
# crashes on a /proc/cpuinfo that describes no Arm core. qemu-user opens every absolute path the
# guest opens under QEMU_LD_PREFIX first when the file exists there, so a prefix holding only
# proc/cpuinfo gives ORT an Arm /proc/cpuinfo: no root, no mount namespace, nothing else changes.
#
#   QEMU_CPU       the emulated core (default neoverse-n1; `max` adds SVE/SME)
#   OSV_QEMU_PREFIX where the fake root goes (default build/arm64/qemu-prefix)
#
# Test programs that ctest starts directly get qemu-aarch64 from CMAKE_CROSSCOMPILING_EMULATOR; the
# Python end-to-end tests start build/arm64/ortserve themselves, so sitecustomize.py (beside this
# script, put on PYTHONPATH) prefixes qemu-aarch64 to any aarch64 ELF that subprocess starts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
qemu=$(command -v qemu-aarch64) || { echo "qemu_env: qemu-aarch64 missing (tools/deps.sh arm64)" >&2; exit 1; }

export QEMU_CPU=${QEMU_CPU:-neoverse-n1}
prefix=${OSV_QEMU_PREFIX:-$repo/build/arm64/qemu-prefix}
mkdir -p "$prefix/proc"
# One entry per CPU the host has; the identification fields are those of the emulated core (MIDR):
# cpuinfo takes the ISA features from AT_HWCAP, which qemu derives from QEMU_CPU, not from here.
case "$QEMU_CPU" in
cortex-a53) part=0xd03 variant=0x0 rev=4 ;;
cortex-a57) part=0xd07 variant=0x1 rev=1 ;;
cortex-a72) part=0xd08 variant=0x0 rev=3 ;;
cortex-a76) part=0xd0b variant=0x4 rev=1 ;;
*) part=0xd0c variant=0x4 rev=1 ;; # Neoverse-N1 (also what `max` is given: qemu's max has no real MIDR)
esac
n=$(nproc --all)
for ((i = 0; i < n; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %d\n\n' \
        "$variant" "$part" "$rev"
done >"$prefix/proc/cpuinfo.tmp"
mv "$prefix/proc/cpuinfo.tmp" "$prefix/proc/cpuinfo"

export QEMU_LD_PREFIX=$prefix
# Emulated arm64 runs models 10-50x slower than the host: the server's default 500 ms deadline
# would turn ordinary runs into 504s. Tests that check deadlines pass their own; a hung run is
# still cut after 30 s.
export ORTSERVE_DEADLINE_MS=${ORTSERVE_DEADLINE_MS:-30000}
# The end-to-end harness (tests/e2e/server.py) waits 5x longer for a server to start.
export OSV_TEST_TIME_SCALE=${OSV_TEST_TIME_SCALE:-5}
export OSV_QEMU=$qemu
export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}
exec "$@"
