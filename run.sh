#!/usr/bin/env bash
# Set up (first run) and start the DermaEdge screening app on http://127.0.0.1:8080.
# Uses the best camera it finds (Pi camera > USB/OpenCV camera > upload only).
# Extra arguments go to `edge-app serve`, e.g. ./run.sh --camera folder:/path/to/images
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv pi,eval
# Two glibc malloc arenas, as the systemd unit: a smaller, flat server RSS (README, "Memory, uploads and the soak")
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec "$VENV/bin/edge-app" serve --camera auto "$@"
