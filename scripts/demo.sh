#!/usr/bin/env bash
# The main job on the embedded default data, end to end on CPU: synthesize calibrated CTPA phantoms, fine-tune the
# bundle's weights with the demo recipe, predict held-out phantoms given as DICOM series, and evaluate.
# Usage: scripts/demo.sh [OUTPUT_DIR]   (run through `make demo`, which sets up .venv first)
# DEMO_EPOCHS (default 2) sets the fine-tuning epochs, DEMO_WEIGHTS the weights fine-tuned (default: the
# bundle's). DEMO_FROM_SCRATCH=1 trains the recipe from random weights instead (its own 35 epochs unless
# DEMO_EPOCHS is set: about half an hour on two cores, and a weaker model; docs/phantoms.md has its figures).
set -euo pipefail
out="${1:-demo_output}"
pe_seg=".venv/bin/pe-seg"
weights="${DEMO_WEIGHTS:-bundles/pe_segmentation/models/model.pt}"
if [ -n "${DEMO_FROM_SCRATCH:-}" ]; then
  start=()
  epochs=()
  [ -n "${DEMO_EPOCHS:-}" ] && epochs=(--epochs "$DEMO_EPOCHS")
  what="train the demo recipe from random weights"
else
  start=(--checkpoint "$weights" --lr 3e-4)
  epochs=(--epochs "${DEMO_EPOCHS:-2}")
  what="fine-tune the bundle's weights ($weights, the same recipe trained for 60 epochs on 40 phantoms)"
fi
rm -rf "$out"
mkdir -p "$out"

echo "== 1/6 synthesize 12 training phantoms and 16 held-out phantoms of another seed (DICOM series) =="
# clinical profile: scanners, noise, contrast timing and PE mimics drawn per case; emboli sized as FUMPE's
"$pe_seg" synth --output "$out/data" --cases 12 --seed 500 --shape 160 160 128 --profile clinical \
  --negative-fraction 0.25 --vessel-label --format nifti --no-progress
"$pe_seg" synth --output "$out/heldout" --cases 16 --seed 1000 --shape 160 160 128 --profile clinical \
  --negative-fraction 0.35 --format both --no-progress

echo
echo "== 2/6 what is in a held-out DICOM series: pe-seg info =="
"$pe_seg" info --input "$out/heldout/dicom/phantom_000"

echo
echo "== 3/6 the training data pipeline: pe-seg data-check =="
"$pe_seg" data-check --datalist "$out/data/datalist.json" --output "$out/data_check" \
  --spacing 2.24 2.24 2.5 --patch-size 32 32 32 --samples 4 --max-cases 2 --augment

echo
echo "== 4/6 $what: pe-seg train =="
"$pe_seg" train --config configs/demo.yaml --dataset "$out/data" --run-dir "$out/run" "${start[@]}" \
  "${epochs[@]}" --no-progress

echo
echo "== 5/6 predict the held-out DICOM series: pe-seg infer =="
"$pe_seg" infer --input "$out/heldout/dicom" --output "$out/predictions" \
  --checkpoint "$out/run/checkpoints/last.pt" --save-probability

echo
echo "== 6/6 evaluate against the held-out labels: pe-seg evaluate =="
"$pe_seg" evaluate --pred "$out/predictions" --prob "$out/predictions" --label "$out/heldout/labels" \
  --output "$out/evaluation" --no-progress

echo
echo "Done. Outputs in $out/:"
echo "  run/curves.png, run/metrics.csv, run/checkpoints/last.pt   training"
echo "  predictions/<case>/{mask.nii.gz,report.json,preview.png,...}  predictions"
echo "  evaluation/report.md, summary.json, boxplots.png, froc.png   evaluation"
