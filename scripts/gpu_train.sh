#!/usr/bin/env bash
# Train the v3 student and the retrained preprocessing ablation on a lent GPU machine (PyTorch, no TensorFlow):
# the same `edge-train` steps as on a CPU, under KERAS_BACKEND=torch. The float16 TFLite export, evaluation and
# card then run on the CPU side from the handed-back run folder:
#   edge-train export --run-dir RUN && edge-train evaluate --run-dir RUN && edge-train card --run-dir RUN
# Usage: scripts/gpu_train.sh CODE_DIR DATA_DIR WEIGHTS_DIR WHEELS_DIR OUT_DIR [extra edge-train args]
set -euo pipefail
code=$1 data=$2 weights=$3 wheels=$4 out=$5
shift 5
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
export PYTHONPATH="/tmp/site:$code" KERAS_BACKEND=torch PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
run="$out/run"
mkdir -p "$run"
train() { python3 -m edge_app.training.cli "$1" --preset cpu --data "$data" --weights-dir "$weights" --run-dir "$run" \
          --cache-dir /tmp/cache --models-dir /tmp/models "${@:2}"; }
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader || true
for step in split tensors student-ce; do train "$step" "$@"; done
tar -C "$out" -czf "$out/run-main.tgz" run   # the shipped student first, whatever happens to the ablation
train ablation "$@" || echo "ablation failed or was cut short"
tar -C "$out" -czf "$out/run-all.tgz" run
rm -rf "$run"
