#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one go (CI has no GPU): the CUDA tests, bench_train with AMP, a model
# trained on the GPU for bench_infer, and bench_infer with both pipelines on the GPU.
#
#   bash benchmarks/cuda_checks.sh OUTPUT_DIR [PHASES]
#
# PHASES (default: all): any of env tests train-bench model infer-bench. Each phase has its own time limit and
# its log in OUTPUT_DIR; a failing phase does not stop the later ones. Run from the repository root with a
# Python that has torch (CUDA build) and pe-seg's dependencies (PYTHON=..., default python3, pe-seg from this
# checkout on PYTHONPATH). The model phase writes OUTPUT_DIR/bench_unet16_fp16.pt: configs/unet.yaml at width 16
# trained on phantoms, weights stored in float16 (half the size; loaded into a float32 network they give masks
# equal to within a voxel or two), for bench_infer on a CPU as well.
set -u
OUT_DIR=${1:?usage: cuda_checks.sh OUTPUT_DIR [PHASES]}
shift
PHASES=${*:-env tests train-bench model infer-bench}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK=${WORK:-/tmp/pe-seg-cuda}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the script on a machine without a GPU
mkdir -p "$OUT_DIR" "$WORK"

phase() {  # phase NAME SECONDS COMMAND...: run it with a time limit, log to OUT_DIR/NAME.log, show the tail
  local name=$1 limit=$2 start rc
  shift 2
  case " $PHASES " in *" $name "*) ;; *) return 0 ;; esac
  echo "=== $name (limit ${limit} s)"
  start=$(date +%s)
  timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  echo "=== $name: exit $rc after $(($(date +%s) - start)) s"
  tail -n "${TAIL:-20}" "$OUT_DIR/$name.log"
}

phase env 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; \
  $PY -c 'import torch, monai; print(torch.__version__, monai.__version__, torch.cuda.get_device_name(0), \
  torch.cuda.is_bf16_supported())'"

phase tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/training/test_cuda_training.py \
  tests/inference/test_cuda_inference.py

# the recipe of configs/unet.yaml (patch 96, width 32, depth 4, batch 2), fp16 autocast + gradient scaling
phase train-bench 120 "$PY" benchmarks/bench_train.py --device "$DEVICE" --precision auto --patch 96 --batch 2 \
  --base-channels 32 --depth 4 --cases 6 --shape 160 160 128 --epochs 6 --workers 4

train_bench_model() {
  local data=$WORK/phantoms run=$WORK/run
  rm -rf "$data" "$run"
  # bench_infer's training set: its series' field of view at 1.4 mm, resampled to 1 mm in training
  "$PY" -m pe_segmentation synth --output "$data" --cases "${MODEL_CASES:-16}" --seed 1 --shape 256 256 214 \
    --spacing 1.4 1.4 1.4 --no-progress || return
  # killed by its time limit, the run still leaves its last checkpoint; validation every 10 epochs keeps a best
  local settings=(data.path="$data" data.dataset=synthetic data.val_fraction=0.15 data.num_workers=12
    model.base_channels=16 "patch.patch_size=[96, 96, 96]" patch.samples_per_volume=4 patch.pos_fraction=0.5
    "validation.roi_size=[96, 96, 96]" validation.every=10 training.epochs="${MODEL_EPOCHS:-150}"
    training.batch_size=2 training.augment=true optimizer.lr=1e-3 schedule.warmup_epochs=2
    output.run_dir="$run" output.tensorboard=false)
  local overrides=() setting
  for setting in "${settings[@]}"; do overrides+=(--set "$setting"); done
  timeout "${MODEL_SECONDS:-180}" "$PY" -m pe_segmentation train --config configs/unet.yaml "${overrides[@]}"
  "$PY" - "$run" "$OUT_DIR/bench_unet16_fp16.pt" <<'EOF'
import sys
from pathlib import Path

from pe_segmentation.runtime.checkpoint import load_checkpoint, save_checkpoint

run, target = Path(sys.argv[1]), sys.argv[2]
best = run / "checkpoints" / "best.pt"
source = best if best.is_file() else run / "checkpoints" / "last.pt"
saved = load_checkpoint(source)
weights = {k: v.half() if v.is_floating_point() else v for k, v in saved["model"].items()}
keep = {k: saved.get(k) for k in ("config", "trainer", "metrics", "versions", "saved_at")}
save_checkpoint(target, {"kind": "bench", "model": weights, **keep})
print(f"exported {source} (epoch {saved['trainer']['epoch']}, metrics {saved.get('metrics')}) to {target}")
EOF
  cp "$run/metrics.csv" "$OUT_DIR/bench_model_metrics.csv"
  tail -n 3 "$run/metrics.csv"
}
export -f train_bench_model
export PY WORK OUT_DIR
phase model $((${MODEL_SECONDS:-180} + 90)) bash -c train_bench_model

# the peer as bundles run on a GPU: fp16 autocast (PEERS=bf16 for a dry run on a CPU)
phase infer-bench 240 "$PY" benchmarks/bench_infer.py --device "$DEVICE" \
  --checkpoint "$OUT_DIR/bench_unet16_fp16.pt" \
  --peer ${PEERS:-fp16 fp16+crop} --repeats 2 --slices "${BENCH_SLICES:-300}"
