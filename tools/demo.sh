#!/usr/bin/env bash
# End-to-end demo on the embedded synthetic dataset (run by `make demo` after the install):
#   1. generate data/synthetic (skipped when already complete),
#   2. train the quickstart Deformable DETR (box refinement + two-stage) on the CPU,
#   3. evaluate the checkpoint with tools/test.py (COCO bbox mAP),
#   4. draw the predictions on one validation image -> work_dirs/demo/predictions.png,
#   5. attention pictures and training curves,
#   6. publish the checkpoint (weights + config + classes, no training state) and run mmdet's
#      own DetInferencer on it, from the published file alone.
# Environment:
#   VENV=.venv          virtual env to use
#   DEMO_RETRAIN=1      train from scratch even if work_dirs/demo holds a finished run
#                       (otherwise an interrupted run is resumed, a finished one reused)
#   DEMO_DEVICE=cpu     device for the prediction picture (training follows CUDA_VISIBLE_DEVICES)
#   DEMO_WORK_DIR=work_dirs/demo   where the run, the logs and predictions.png go
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
CONFIG=configs/deformable_detr/deformable-detr-refine-twostage_r18_1xb4-4e_synthetic.py
DATA=data/synthetic
WORK=${DEMO_WORK_DIR:-work_dirs/demo}
# Must match the quickstart config (its data_root and img_scale).
GEN_ARGS=(--out "$DATA" --seed 0 --num-train 800 --num-val 100 --img-size 128)
IMG="$DATA/val/000000.png"

if [ ! -x "$PY" ]; then
  echo "[demo] $PY not found: run 'make install' (or bash tools/install.sh) first" >&2
  exit 1
fi

echo "[demo] 1/6 dataset -> $DATA"
"$PY" tools/misc/generate_synthetic_dataset.py "${GEN_ARGS[@]}"

if [ "${DEMO_RETRAIN:-0}" = 1 ]; then
  rm -rf "$WORK"
fi
mkdir -p "$WORK"
echo "[demo] 2/6 training $CONFIG -> $WORK (CPU: a few minutes)"
# --resume: continue an interrupted run; a finished one ends at once and is reused.
start=$(date +%s)
# Progress: one short line per logged iteration (the full log is in $WORK/train.log).
PYTHONUNBUFFERED=1 "$PY" tools/train.py "$CONFIG" --work-dir "$WORK" --resume 2>&1 \
  | tee "$WORK/train.log" \
  | sed -u -nE 's/.*(Epoch\(train\) +\[[0-9]+\]\[ *[0-9]+\/[0-9]+\]).*(eta: [0-9:]+).* (loss: [0-9.]+).*/  \1  \2  \3/p
                /bbox_mAP_copypaste|Error/p' || true
[ "${PIPESTATUS[0]}" = 0 ] || { echo "[demo] training failed, see $WORK/train.log" >&2; exit 1; }
train_s=$(( $(date +%s) - start ))
CKPT="$(cat "$WORK/last_checkpoint" 2>/dev/null || true)"
if [ -z "$CKPT" ] || [ ! -f "$CKPT" ]; then
  echo "[demo] no checkpoint found in $WORK (see $WORK/train.log)" >&2
  exit 1
fi

echo "[demo] 3/6 evaluating $CKPT"
PYTHONUNBUFFERED=1 "$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" 2>&1 \
  | tee "$WORK/test.log" | grep --line-buffered -E "Average Precision|Average Recall" || true
[ "${PIPESTATUS[0]}" = 0 ] || { echo "[demo] evaluation failed, see $WORK/test.log" >&2; exit 1; }
MAP=$(grep -oE "coco/bbox_mAP: [0-9.]+" "$WORK/test.log" | tail -1 | awk '{print $2}')

echo "[demo] 4/6 drawing predictions on $IMG"
"$PY" tools/misc/draw_predictions.py "$CONFIG" "$CKPT" --img "$IMG" \
  --out "$WORK/predictions.png" --score-thr 0.3 --device "${DEMO_DEVICE:-cpu}"

echo "[demo] 5/6 attention pictures and training curves"
"$PY" tools/analysis_tools/visualize_attention.py "$CONFIG" "$CKPT" --img "$IMG" \
  --out-dir "$WORK/attention" --topk 3 --device "${DEMO_DEVICE:-cpu}"
"$PY" tools/analysis_tools/plot_logs.py "$WORK" --keys loss loss_cls loss_bbox loss_iou \
  --out "$WORK/curves.png"

echo "[demo] 6/6 publishing the checkpoint and running mmdet's DetInferencer on it"
rm -f "$WORK"/published-*.pth  # a re-run publishes the (possibly retrained) checkpoint again
PUBLISHED=$("$PY" tools/model_converters/publish_model.py "$CKPT" "$WORK/published.pth" \
  | sed -n 's/^published \(.*\.pth\) (.*/\1/p')
[ -n "$PUBLISHED" ] || { echo "[demo] publishing failed" >&2; exit 1; }
"$PY" - "$PUBLISHED" "$IMG" <<'PY'
import sys

from mmdet.apis import DetInferencer  # builds the model from the published file alone

inferencer = DetInferencer(model=None, weights=sys.argv[1], device='cpu', show_progress=False)
pred = inferencer(sys.argv[2], return_datasamples=True)['predictions'][0].pred_instances
keep = pred.scores >= 0.3
classes = inferencer.model.dataset_meta['classes']
found = ', '.join(f'{classes[int(l)]} {float(s):.2f}' for l, s in
                  zip(pred.labels[keep][:10], pred.scores[keep][:10]))
print(f'  DetInferencer(weights={sys.argv[1]}): {int(keep.sum())} objects >= 0.3: {found}')
PY

cat <<EOF

[demo] done
  dataset      $DATA  (COCO json in $DATA/annotations)
  training     ${train_s}s, log $WORK/train.log
  checkpoint   $CKPT
  COCO bbox mAP on val: ${MAP:-see $WORK/test.log}
  evaluation   $WORK/test.log
  predictions  $WORK/predictions.png  (left: ground truth, right: predictions, score >= 0.3)
  attention    $WORK/attention/decoder_sampling.png, $WORK/attention/encoder_sampling.png
  curves       $WORK/curves.png
  published    $PUBLISHED  (DetInferencer(weights=...) / mmdet's image_demo.py IMG FILE work on it)
EOF
