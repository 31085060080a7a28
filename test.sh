#!/usr/bin/env bash
# Set up (first run) and run the whole test suite: lint + pytest.
# Installs the browser for the UI test and the shell linter from Debian when run as root.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv pi,train,dev
ensure_debian_tools chromium shellcheck
"$VENV/bin/ruff" check edge_app tests benchmarks scripts
exec "$VENV/bin/python" -m pytest -q "$@"
