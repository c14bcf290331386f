#!/usr/bin/env bash
# Build the MONAI bundle's weights: train the demo recipe (configs/demo.yaml) for 60 epochs on 40 clinical-profile
# phantoms labelled with their arteries, export the last checkpoint into bundles/pe_segmentation/models/model.pt
# with its resolved config as configs/recipe.yaml, then check the bundle with MONAI's own tools: metadata fields,
# verify_net_in_out, ckpt_export to TorchScript, and the bundle's inference + evaluation configs on 16 held-out
# phantoms of another seed (the demo's held-out set).
# Usage: scripts/bundle_weights.sh [WORK_DIR]   (make bundle-weights; WORK_DIR default bundle_build/)
# BUNDLE_EPOCHS (default 60: about 45 minutes with one thread on the 2-core development machine) shortens training.
set -euo pipefail
work="${1:-bundle_build}"
bundle="bundles/pe_segmentation"
py=".venv/bin/python"
pe_seg=".venv/bin/pe-seg"
mkdir -p "$work"

echo "== 1/5 phantoms: 40 for training (seed 0), 16 held out (seed 1000), and 60 epochs of the demo recipe =="
"$pe_seg" synth --output "$work/phantoms" --cases 40 --seed 0 --shape 160 160 128 --profile clinical \
  --negative-fraction 0.25 --vessel-label --format nifti --no-progress
"$pe_seg" synth --output "$work/heldout" --cases 16 --seed 1000 --shape 160 160 128 --profile clinical \
  --negative-fraction 0.35 --format nifti --no-progress
"$pe_seg" train --config configs/demo.yaml --dataset "$work/phantoms" --run-dir "$work/run" \
  --epochs "${BUNDLE_EPOCHS:-60}" --set data.val_fraction=0.1 --set validation.every=10 --no-progress

echo
echo "== 2/5 export the weights and their recipe into $bundle =="
# the end of the cosine schedule: validation on 4 phantoms is too noisy to pick an epoch by
checkpoint="$work/run/checkpoints/last.pt"
"$py" -m pe_segmentation.bundle export "$checkpoint" "$bundle"

echo
echo "== 3/5 MONAI: verify_net_in_out =="
"$py" -m monai.bundle verify_net_in_out network_def --meta_file "$bundle/configs/metadata.json" \
  --config_file "$bundle/configs/inference.yaml" --bundle_root "$bundle" --device cpu

echo
echo "== 4/5 MONAI: ckpt_export to TorchScript ($work/model.ts) =="
"$py" -m monai.bundle ckpt_export network_def --filepath "$work/model.ts" --ckpt_file "$bundle/models/model.pt" \
  --meta_file "$bundle/configs/metadata.json" --config_file "$bundle/configs/inference.yaml" \
  --bundle_root "$bundle" --key_in_ckpt model

echo
echo "== 5/5 the bundle's inference + evaluation on the held-out phantoms =="
"$py" -m monai.bundle run \
  --config_file "['$bundle/configs/inference.yaml','$bundle/configs/evaluate.yaml']" \
  --bundle_root "$bundle" --dataset_dir "$work/heldout" --output_dir "$work/bundle_predictions" \
  --evaluation_dir "$work/bundle_evaluation"

echo
echo "Done: $bundle/models/model.pt ($(du -h "$bundle/models/model.pt" | cut -f1)), $bundle/configs/recipe.yaml."
echo "Evaluation of the exported weights: $work/bundle_evaluation/report.md"
