#!/usr/bin/env bash
# The main job on the embedded default data, end to end on CPU: synthesize CTPA phantoms, train the demo recipe,
# predict held-out phantoms given as DICOM series, and evaluate the predictions.
# Usage: scripts/demo.sh [OUTPUT_DIR]   (run through `make demo`, which sets up .venv first)
# DEMO_EPOCHS (default: the recipe's) shortens training, e.g. for the test suite.
set -euo pipefail
out="${1:-demo_output}"
pe_seg=".venv/bin/pe-seg"
epochs=()
[ -n "${DEMO_EPOCHS:-}" ] && epochs=(--epochs "$DEMO_EPOCHS")
rm -rf "$out"
mkdir -p "$out"

echo "== 1/6 synthesize 12 training phantoms and 4 held-out phantoms (DICOM series) =="
"$pe_seg" synth --output "$out/data" --cases 12 --seed 0 --shape 160 160 128 --profile uniform --negative-fraction 0 --no-progress
"$pe_seg" synth --output "$out/heldout" --cases 4 --seed 1000 --shape 160 160 128 --profile uniform --negative-fraction 0 --format both --no-progress

echo
echo "== 2/6 what is in a held-out DICOM series: pe-seg info =="
"$pe_seg" info --input "$out/heldout/dicom/phantom_000"

echo
echo "== 3/6 the training data pipeline: pe-seg data-check =="
"$pe_seg" data-check --datalist "$out/data/datalist.json" --output "$out/data_check" \
  --spacing 2.24 2.24 2.5 --patch-size 32 32 32 --samples 4 --max-cases 2 --augment

echo
echo "== 4/6 train the demo recipe (3D UNet, CPU): pe-seg train =="
"$pe_seg" train --config configs/demo.yaml --dataset "$out/data" --run-dir "$out/run" "${epochs[@]}" --no-progress

echo
echo "== 5/6 predict the held-out DICOM series: pe-seg infer =="
"$pe_seg" infer --input "$out/heldout/dicom" --output "$out/predictions" \
  --checkpoint "$out/run/checkpoints/best.pt" --save-probability

echo
echo "== 6/6 evaluate against the held-out labels: pe-seg evaluate =="
"$pe_seg" evaluate --pred "$out/predictions" --prob "$out/predictions" --label "$out/heldout/labels" \
  --output "$out/evaluation" --no-progress

echo
echo "Done. Outputs in $out/:"
echo "  run/curves.png, run/metrics.csv, run/checkpoints/best.pt   training"
echo "  predictions/<case>/{mask.nii.gz,report.json,preview.png,...}  predictions"
echo "  evaluation/report.md, summary.json, boxplots.png, froc.png   evaluation"
