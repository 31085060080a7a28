"""systemd/edge-app.service: hardening, camera device access, watchdog; `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import UNIT


def directives(path: Path = UNIT) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_service_is_a_notify_service_with_a_watchdog_and_restarts_on_failure():
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["WatchdogSec"][0].rstrip("s").isdigit()
    assert d["Restart"] == ["on-failure"]
    assert d["SyslogIdentifier"] == ["edge-app"]
    assert d["ExecStart"] == ["/opt/edge-app/venv/bin/edge-app serve --config /etc/edge-app/config.toml"]


def test_service_and_run_script_cap_the_glibc_malloc_arenas():
    assert "MALLOC_ARENA_MAX=2" in directives()["Environment"]
    assert 'export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"' in (UNIT.parents[1] / "run.sh").read_text()


def test_service_runs_unprivileged_and_sandboxed():
    d = directives()
    expected = {
        "User": "edge-app",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/edge-app",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], f"{key}={d.get(key)}, want {value}"
    assert set(d["SupplementaryGroups"][0].split()) == {"video", "render"}
    assert d["MemoryMax"][0].endswith(("M", "G"))


def test_camera_devices_stay_reachable_while_all_other_devices_are_closed():
    d = directives()
    # PrivateDevices=yes would replace /dev with one that has no camera in it.
    assert d["PrivateDevices"] == ["no"]
    assert d["DevicePolicy"] == ["closed"]
    allowed = {entry.split()[0]: entry.split()[1] for entry in d["DeviceAllow"]}
    for device in ("char-video4linux", "char-media", "char-dma_heap", "/dev/vchiq"):
        assert allowed.get(device) == "rw", f"DeviceAllow={device} rw missing (libcamera needs it)"
    # libcamera watches udev over netlink; sd_notify needs AF_UNIX.
    assert {"AF_UNIX", "AF_NETLINK"} <= set(d["RestrictAddressFamilies"][0].split())


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    # verify checks that ExecStart's binary exists: point it at a stand-in in tmp.
    fake = tmp_path / "edge-app"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    unit = tmp_path / "edge-app.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-app/venv/bin/edge-app", str(fake)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "edge-app.service" in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr
