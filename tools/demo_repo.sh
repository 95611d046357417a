#!/usr/bin/env bash
# demo_repo.sh DEST MODELS [REAL_MODELS] [PORT] — lays out the demo model repository `make run` serves (Triton layout):
#   mlp/1/model.onnx                 synthetic MLP, x FP32[N,64] -> probs FP32[N,10]
#   mobilenetv2/1/model.onnx         MobileNetV2-shaped network, RANDOM weights, 1000 synthetic labels
#   text_orientation/1/model.onnx    the real PaddleOCR text-orientation classifier (labels "0", "180")
# Files are hard-linked (or copied) so the repository holds no symlinks leading outside it.
set -euo pipefail
dest=$1
models=$2
real=${3:-third_party/models}
port=${4:-8000} # for the hints printed at the end

put() { # src dest-relative
    mkdir -p "$(dirname "$dest/$2")"
    [ -e "$dest/$2" ] && cmp -s "$1" "$dest/$2" && return 0
    ln -f "$1" "$dest/$2" 2>/dev/null || cp -f "$1" "$dest/$2"
}

put "$models/mlp.onnx" mlp/1/model.onnx
put "$models/mobilenetv2.onnx" mobilenetv2/1/model.onnx
put "$models/mobilenetv2.labels.txt" mobilenetv2/labels.txt
# ImageNet preprocessing (torchvision's Resize(256) + CenterCrop(224) + Normalize), for classify.
cat >"$dest/mobilenetv2/config.json" <<'JSON'
{
  "labels": "labels.txt",
  "image": {
    "height": 224, "width": 224,
    "resize": "crop", "resize_short": 256,
    "color": "RGB", "layout": "NCHW",
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]
  },
  "postprocess": {"top_k": 5}
}
JSON
if [ -e "$real/ch_ppocr_mobile_v2.0_cls_infer.onnx" ]; then
    put "$real/ch_ppocr_mobile_v2.0_cls_infer.onnx" text_orientation/1/model.onnx
    printf '0\n180\n' >"$dest/text_orientation/labels.txt"
    # PaddleOCR's resize_norm_img: height 48 keeping the aspect ratio, width up to 192, BGR,
    # (x/255 - 0.5)/0.5, the rest of the width padded with 0 after normalization.
    cat >"$dest/text_orientation/config.json" <<'JSON'
{
  "labels": "labels.txt",
  "image": {
    "height": 48, "width": 192,
    "resize": "paddle_ocr", "color": "BGR",
    "mean": 0.5, "std": 0.5, "pad_value": 0
  },
  "postprocess": {"top_k": 2}
}
JSON
fi

# Sample images for the classify endpoint (drawn with PIL; skipped without it).
images=$(dirname "$dest")/demo-images
if [ ! -e "$images/cat.jpg" ] && /usr/bin/python3 -c 'import PIL' 2>/dev/null; then
    mkdir -p "$images"
    /usr/bin/python3 - "$images" <<'PY'
import sys
from PIL import Image, ImageDraw, ImageFont
out = sys.argv[1]
im = Image.new("RGB", (640, 480), (120, 170, 210))
d = ImageDraw.Draw(im)
d.rectangle((0, 360, 640, 480), fill=(90, 140, 60))
d.polygon([(210, 170), (240, 60), (300, 140)], fill=(230, 140, 50))   # ears
d.polygon([(430, 170), (400, 60), (340, 140)], fill=(230, 140, 50))
d.ellipse((190, 110, 450, 360), fill=(235, 150, 60))                  # head
d.ellipse((255, 200, 295, 250), fill=(250, 250, 240))
d.ellipse((345, 200, 385, 250), fill=(250, 250, 240))
d.ellipse((268, 212, 288, 245), fill=(30, 30, 30))
d.ellipse((358, 212, 378, 245), fill=(30, 30, 30))
d.polygon([(305, 270), (335, 270), (320, 288)], fill=(200, 80, 90))  # nose
for dy in (-12, 0, 12):
    d.line((300, 285 + dy, 200, 275 + 2 * dy), fill=(60, 40, 30), width=3)
    d.line((340, 285 + dy, 440, 275 + 2 * dy), fill=(60, 40, 30), width=3)
im.save(out + "/cat.jpg", quality=90)
font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 32)
line = Image.new("RGB", (420, 48), (245, 245, 240))
ImageDraw.Draw(line).text((8, 4), "ortserve reads text lines", font=font, fill=(20, 20, 20))
line.save(out + "/text_upright.png")
line.rotate(180).save(out + "/text_upside_down.jpg", quality=90)
PY
fi
if [ -e "$images/cat.jpg" ]; then
    echo "demo: try  curl --data-binary @$images/cat.jpg 'localhost:$port/v2/models/mobilenetv2/classify?top_k=5'"
    echo "      and  curl -F a=@$images/text_upright.png -F b=@$images/text_upside_down.jpg" \
         "localhost:$port/v2/models/text_orientation/classify"
fi
