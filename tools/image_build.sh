#!/usr/bin/env bash
# image_build.sh — the build steps of ortserve's container image, one script for the Dockerfile's RUN
# lines (each is a single call into it) and for a chroot, where they can be proven without a
# container engine (docs/DEPLOY.md, "Container image").
#
#   tools/image_build.sh build-deps                    build stage: Debian packages, ONNX Runtime and
#                                                      the real demo model (tools/deps.sh image); the
#                                                      CA certificates of the build secret `extra-ca`,
#                                                      if mounted, are trusted for the npm downloads
#   tools/image_build.sh build [BUILD_DIR]             build stage: release build (no tests, no
#                                                      benchmarks) and the synthetic demo models
#   tools/image_build.sh install ROOTFS [BUILD_DIR] [MODELS_DIR] [REAL_MODELS_DIR]
#                                                      build stage: stage the image's files under ROOTFS
#   tools/image_build.sh runtime [ROOT]                runtime stage: apt-get the shared libraries the
#                                                      staged files need, add the ortserve user
#   tools/image_build.sh ROOTFS                        all of them in one system (a chroot proof);
#                                                      `runtime` runs when ROOTFS is / or holds an OS
#
# BUILD_DIR defaults to build/image, MODELS_DIR to BUILD_DIR/models, REAL_MODELS_DIR to
# third_party/models. What `install` puts under ROOTFS (the runtime stage copies it to /):
#   /usr/local/bin/ortserve                     stripped binary
#   /usr/local/lib/ortserve/libonnxruntime.so.1 ONNX Runtime (found by ortserve's dlopen search)
#   /usr/local/share/doc/ortserve/onnxruntime/  ONNX Runtime's LICENSE and ThirdPartyNotices.txt
#   /usr/local/libexec/ortserve/healthcheck     the HEALTHCHECK (bash /dev/tcp, no curl)
#   /srv/ortserve/models/                       the demo repository (tools/demo_repo.sh), and its
#   /srv/ortserve/demo-images/                  sample images for the classify endpoint
#   /usr/local/share/ortserve/runtime-packages  Debian packages of the libraries the binaries need,
#                                               read by `runtime` (derived from their ELF NEEDED lists)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
IMAGE_UID=10001 # numeric, so Kubernetes' runAsNonRoot can verify it
PREFIX=/usr/local
REPO=/srv/ortserve/models

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

# A TLS-inspecting proxy re-signs the npm registry's certificate: its CA, handed to the build as the
# secret `extra-ca` (tools/container_check.sh build), is trusted by npm for this step only.
EXTRA_CA=/run/secrets/extra-ca

build_deps() {
    if [ -s "$EXTRA_CA" ]; then
        export NODE_EXTRA_CA_CERTS=$EXTRA_CA
        echo "image_build: trusting the extra CA certificates of the build secret extra-ca"
    fi
    "$src/tools/deps.sh" image
}

build() { # [BUILD_DIR]
    local b=${1:-$src/build/image}
    cmake -S "$src" -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOSV_BUILD_TESTS=OFF \
        -DOSV_BUILD_BENCH=OFF
    cmake --build "$b" -j "$(nproc)"
    /usr/bin/python3 "$src/tools/gen_models.py" --out "$b/models"
}

# Multiarch triplet of an ELF file's machine (where Debian keeps its libraries).
triplet() {
    case $(readelf -h "$1" | sed -n 's/^ *Machine: *//p') in
    *X86-64*) echo x86_64-linux-gnu ;;
    *AArch64*) echo aarch64-linux-gnu ;;
    *) echo "image_build: unsupported machine of $1" >&2; return 1 ;;
    esac
}

# Debian packages that provide the shared libraries the given ELF files need (ONNX Runtime excluded:
# it is shipped with ortserve), one per line. Fails when a library belongs to no package.
needed_packages() {
    local f lib tri line path pkg missing=0
    local -A want=() owner=()
    local paths=()
    for f in "$@"; do
        tri=$(triplet "$f")
        while read -r lib; do
            case $lib in libonnxruntime*) ;; *) want[$lib]=$tri ;; esac
        done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
        # Loaded with dlopen, so not in NEEDED: libcurl, by the OTLP exporter (src/obs/trace.c).
        case $f in */bin/ortserve) want[libcurl.so.4]=$tri ;; esac
    done
    for lib in "${!want[@]}"; do # both halves of merged /usr: dpkg knows the path a package ships
        paths+=("/lib/${want[$lib]}/$lib" "/usr/lib/${want[$lib]}/$lib")
    done
    # One dpkg -S for every path (a glob per library would take a second each).
    while IFS= read -r line; do
        case $line in *": /"*) ;; *) continue ;; esac
        path=${line##*: }
        pkg=${line%%:*}
        owner[${path##*/}]=${pkg%%,*}
    done < <(dpkg -S "${paths[@]}" 2>/dev/null || true)
    local pkgs=()
    for lib in "${!want[@]}"; do
        if [ -z "${owner[$lib]:-}" ]; then
            echo "image_build: no Debian package provides $lib (${want[$lib]})" >&2
            missing=1
        else
            pkgs+=("${owner[$lib]}")
        fi
    done
    printf '%s\n' "${pkgs[@]}" | sort -u
    return $missing
}

install_rootfs() { # ROOTFS [BUILD_DIR] [MODELS_DIR] [REAL_MODELS_DIR]
    local root=$1 b=${2:-$src/build/image}
    local models=${3:-$b/models} real=${4:-$src/third_party/models}
    [ -x "$b/ortserve" ] || { echo "image_build: no ortserve in $b: run '$0 build $b' first" >&2; exit 1; }
    mkdir -p "$root"
    DESTDIR="$root" cmake --install "$b" --prefix "$PREFIX" --component runtime --strip >/dev/null
    install -D -m 0755 "$src/deploy/container/healthcheck.sh" "$root$PREFIX/libexec/ortserve/healthcheck"
    "$src/tools/demo_repo.sh" "$root$REPO" "$models" "$real"
    chmod -R a+rX "$root/srv/ortserve"
    local pkgs
    pkgs=$(needed_packages "$root$PREFIX/bin/ortserve" "$root$PREFIX"/lib/ortserve/*.so*)
    mkdir -p "$root$PREFIX/share/ortserve"
    echo "$pkgs" >"$root$PREFIX/share/ortserve/runtime-packages"
    echo "image_build: staged in $root (runtime packages: ${pkgs//$'\n'/ })"
}

runtime() { # [ROOT]
    local root=${1:-/} list pkgs
    local run=()
    list=$root$PREFIX/share/ortserve/runtime-packages
    [ -s "$list" ] || { echo "image_build: $list is missing: stage the files first ('$0 install')" >&2; exit 1; }
    if [ "$root" != / ]; then
        [ -x "$root/usr/bin/apt-get" ] || { echo "image_build: $root holds no Debian system" >&2; exit 1; }
        run=(chroot "$root")
    fi
    mapfile -t pkgs <"$list"
    "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
    "${run[@]}" apt-get clean
    rm -rf "${root%/}"/var/lib/apt/lists/*
    if ! "${run[@]}" getent passwd ortserve >/dev/null; then
        "${run[@]}" groupadd --system --gid "$IMAGE_UID" ortserve
        "${run[@]}" useradd --system --uid "$IMAGE_UID" --gid "$IMAGE_UID" --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin ortserve
    fi
    # The staged binary starts on this system (its libraries and ONNX Runtime are found).
    "${run[@]}" env ORT_DISABLE_TELEMETRY=1 "$PREFIX/bin/ortserve" --version
}

case ${1:-} in
build-deps) build_deps ;;
build) build "${2:-}" ;;
install) [ $# -ge 2 ] || usage; shift; install_rootfs "$@" ;;
runtime) runtime "${2:-/}" ;;
"" | -h | --help) usage ;;
-*) usage ;;
*)
    root=$1
    build_deps
    build "$src/build/image"
    install_rootfs "$root" "$src/build/image"
    if [ "$root" = / ] || [ -x "$root/usr/bin/apt-get" ]; then
        runtime "$root"
    else
        echo "image_build: $root is not a system root; run '$0 runtime' in the runtime system"
    fi
    ;;
esac
