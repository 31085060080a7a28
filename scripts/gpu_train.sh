#!/usr/bin/env bash
# Train the student (and the leave-one-source-out study) on a lent GPU machine (PyTorch, no TensorFlow): the same
# `edge-train` steps as on a CPU, under KERAS_BACKEND=torch, with the augmented passes held on the GPU as uint8 tensors
# (training/tensor_input.py) and mixed precision (`precision=auto` -> mixed_bfloat16 on a GPU). The float16 TFLite
# export, evaluation and card then run on the CPU side from the handed-back run folder:
#   edge-train export --run-dir RUN && edge-train evaluate --run-dir RUN && edge-train card --run-dir RUN
# Usage: scripts/gpu_train.sh CODE_DIR DATA_DIR WEIGHTS_DIR WHEELS_DIR OUT_DIR [extra edge-train args, e.g. --preset v4]
# STEPS (default "split shortcuts tensors student-ce loso") picks the steps. The run folder (RUN_DIR, default /tmp/run)
# and the cache (/tmp/cache) stay on the machine, so a later call on the same warm machine can go on (STEPS=loso);
# after each step the run folder (without tensors) is packed into OUT_DIR/run-<step>.tgz, whatever happens next.
set -euo pipefail
code=$1 data=$2 weights=$3 wheels=$4 out=$5
shift 5
if compgen -G "$wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
fi
export PYTHONPATH="/tmp/site:$code" KERAS_BACKEND=torch PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
run="${RUN_DIR:-/tmp/run}"
mkdir -p "$run" "$out"
train() { python3 -m edge_app.training.cli "$1" --preset cpu --data "$data" --weights-dir "$weights" --run-dir "$run" \
          --cache-dir /tmp/cache --models-dir /tmp/models "${@:2}"; }
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader || true
for step in ${STEPS:-split shortcuts tensors student-ce loso}; do
  train "$step" "$@"
  tar -C "$(dirname "$run")" -czf "$out/run-$step.tgz" --exclude='*.npy' "$(basename "$run")"
done
