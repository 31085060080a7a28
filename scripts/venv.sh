# shellcheck shell=bash
# Sourced by run.sh and test.sh: a project venv with the requested extras, reinstalled
# only when pyproject.toml changes.
VENV=${EDGE_APP_VENV:-.venv}

ensure_venv() {
    local extras=$1 stamp
    stamp="$VENV/.installed-${extras//,/-}"
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: Python >= 3.11 is needed (found $(python3 --version 2>&1))" >&2
        exit 1
    fi
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
        return
    fi
    echo "setting up $VENV with extras [$extras] (first run only)..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[$extras]"
    touch "$stamp"
}

ensure_debian_tools() {
    local missing=() pkg bin
    for pkg in "$@"; do
        bin=$pkg
        command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} from Debian (first run only)..." >&2
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    else
        echo "note: ${missing[*]} not installed; the tests that need them will be skipped" >&2
    fi
}
