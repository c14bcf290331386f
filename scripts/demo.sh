#!/usr/bin/env bash
# The main job on the embedded default data: synthesize CTPA phantoms (NIfTI + DICOM), inspect and convert a
# DICOM series, and run the training data pipeline over the set, drawing the patches a network would see.
# Usage: scripts/demo.sh [OUTPUT_DIR]   (run through `make demo`, which sets up .venv first)
set -euo pipefail
out="${1:-demo_output}"
pe_seg=".venv/bin/pe-seg"
rm -rf "$out"
mkdir -p "$out"

echo "== 1/4 synthesize 4 CTPA phantoms (NIfTI + DICOM series) =="
"$pe_seg" synth --output "$out/data" --cases 4 --seed 0 --format both --shape 192 192 160

echo
echo "== 2/4 what is in a DICOM series: pe-seg info =="
"$pe_seg" info --input "$out/data/dicom/phantom_000"

echo
echo "== 3/4 DICOM series to NIfTI: pe-seg convert =="
"$pe_seg" convert --input "$out/data/dicom/phantom_000" --output "$out/converted/phantom_000.nii.gz"

echo
echo "== 4/4 the training data pipeline on the DICOM series: pe-seg data-check =="
"$pe_seg" data-check --datalist "$out/data/datalist.json" --image-key dicom --output "$out/data_check" \
  --spacing 1.5 1.5 1.5 --patch-size 64 64 64 --samples 4 --augment

echo
echo "Done. Look at $out/data_check/patches.png (patches with emboli in red) and $out/data/datalist.json."
