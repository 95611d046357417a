#!/usr/bin/env bash
# demo_repo.sh DEST MODELS — lays out the demo model repository `make run` serves (Triton layout):
#   mlp/1/model.onnx                 synthetic MLP, x FP32[N,64] -> probs FP32[N,10]
#   mobilenetv2/1/model.onnx         MobileNetV2-shaped network, RANDOM weights, 1000 synthetic labels
#   text_orientation/1/model.onnx    the real PaddleOCR text-orientation classifier (labels "0", "180")
# Files are hard-linked (or copied) so the repository holds no symlinks leading outside it.
set -euo pipefail
dest=$1
models=$2
real=${3:-third_party/models}

put() { # src dest-relative
    mkdir -p "$(dirname "$dest/$2")"
    [ -e "$dest/$2" ] && cmp -s "$1" "$dest/$2" && return 0
    ln -f "$1" "$dest/$2" 2>/dev/null || cp -f "$1" "$dest/$2"
}

put "$models/mlp.onnx" mlp/1/model.onnx
put "$models/mobilenetv2.onnx" mobilenetv2/1/model.onnx
put "$models/mobilenetv2.labels.txt" mobilenetv2/labels.txt
cat >"$dest/mobilenetv2/config.json" <<'JSON'
{
  "labels": "labels.txt"
}
JSON
if [ -e "$real/ch_ppocr_mobile_v2.0_cls_infer.onnx" ]; then
    put "$real/ch_ppocr_mobile_v2.0_cls_infer.onnx" text_orientation/1/model.onnx
    printf '0\n180\n' >"$dest/text_orientation/labels.txt"
    cat >"$dest/text_orientation/config.json" <<'JSON'
{
  "labels": "labels.txt"
}
JSON
fi
