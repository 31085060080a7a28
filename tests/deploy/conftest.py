"""Fixtures for the deploy tests: the repo paths and recording shims for system commands."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = REPO / "systemd" / "edge-app.service"
TINY_MODEL = REPO / "tests" / "fixtures" / "tiny_fp16.tflite"
OS_NUMPY = "1.24.2"

# Each shim appends "<name> <args>" to $SHIM_LOG. The system-python shim answers the
# NumPy version query and makes a venv whose python is itself a recording shim.
_RECORD = '#!/bin/bash\nprintf "%s %s\\n" "$(basename "$0")" "$*" >> "$SHIM_LOG"\n'
_SHIMS = {
    "apt-get": _RECORD,
    "apt-cache": _RECORD,
    "usermod": _RECORD,
    "groupadd": _RECORD,
    "userdel": _RECORD,
    "systemctl": _RECORD,
    "raspi-config": _RECORD,
    "chown": _RECORD,
    "useradd": _RECORD
    + 'while [ $# -gt 0 ]; do [ "$1" = --root ] && root=$2; shift; done\n'
    + 'echo "edge-app:x:998:998::/var/lib/edge-app:/usr/sbin/nologin" >> "${root:-/nonexistent}/etc/passwd"\n',
    "venv-python": '#!/bin/bash\nprintf "venv-python %s\\n" "$*" >> "$SHIM_LOG"\n',
    "python3": _RECORD
    + 'case "$1" in\n'
    + f"  -c) echo {OS_NUMPY} ;;\n"
    + '  -m) [ "$2" = venv ] || exit 2; dir=${!#}; mkdir -p "$dir/bin"\n'
    + '      cp "$(dirname "$0")/venv-python" "$dir/bin/python" ;;\n'
    + "esac\n",
}


@pytest.fixture
def shims(tmp_path: Path) -> dict[str, str]:
    """Environment with recording shims first on PATH; the log is at env['SHIM_LOG']."""
    bin_dir = tmp_path / "shim-bin"
    bin_dir.mkdir()
    for name, body in _SHIMS.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "shim.log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUDO_", "DESTDIR", "EDGE_APP_"))}
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}", SHIM_LOG=str(log), EDGE_APP_SYSTEM_PYTHON=str(bin_dir / "python3")
    )
    return env


def shim_calls(env: dict[str, str]) -> list[str]:
    return Path(env["SHIM_LOG"]).read_text().splitlines()
