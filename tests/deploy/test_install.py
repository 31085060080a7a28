"""deploy/install.sh and uninstall.sh: dry run, install into a throwaway root, idempotence, uninstall.

System commands (apt-get, useradd, systemctl, the OS python) are recording shims
(see conftest.py), so the tests run in a second on any machine, root or not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DEPLOY, OS_NUMPY, REPO, TINY_MODEL, UNIT, shim_calls

SCRIPTS = [
    DEPLOY / "install.sh",
    DEPLOY / "uninstall.sh",
    DEPLOY / "lib.sh",
    DEPLOY / "prove-arm64.sh",
    DEPLOY / "kiosk" / "edge-app-kiosk",
]


def run_script(name: str, env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", str(DEPLOY / name), *map(str, args)], env=env, check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"{name} {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def pi_root(tmp_path: Path) -> Path:
    """A throwaway root that looks like a fresh Raspberry Pi OS: a desktop user, video and render groups."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\nvideo:x:44:pi\nrender:x:105:pi\npi:x:1000:\n")
    (root / "home" / "pi").mkdir(parents=True)
    return root


def install(env: dict[str, str], root: Path) -> subprocess.CompletedProcess[str]:
    return run_script("install.sh", env, "--root", root, "--kiosk", "--no-start", "--model", TINY_MODEL)


def test_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], check=False, capture_output=True, text=True, cwd=DEPLOY)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_strict_and_executable():
    for script in SCRIPTS:
        if script.name != "lib.sh":
            assert "set -euo pipefail" in script.read_text(), script
            assert script.stat().st_mode & 0o111, f"{script} is not executable"


def test_dry_run_prints_the_whole_plan_and_runs_nothing(shims):
    out = run_script("install.sh", shims, "--dry-run", "--kiosk", "--kiosk-user", "root").stdout
    for expected in [
        "apt-get install -y --no-install-recommends python3-picamera2",
        "apt-get install -y python3-venv python3-numpy",
        "apt-get install -y chromium curl squeekboard",
        "useradd --system --user-group --home-dir /var/lib/edge-app",
        "venv --system-site-packages /opt/edge-app/venv",
        f"write /opt/edge-app/constraints.txt: numpy=={OS_NUMPY}",
        "pip --disable-pip-version-check --no-input install --constraint /opt/edge-app/constraints.txt",
        f"{REPO}[pi]",
        "install -m 0644 " + str(UNIT) + " /etc/systemd/system/edge-app.service",
        "systemctl enable edge-app.service",
        "/usr/local/bin/edge-app-kiosk",
        "/root/.config/labwc/autostart",
    ]:
        assert expected in out, f"{expected!r} missing from the dry-run plan:\n{out}"
    # Only the read-only NumPy version query ran; nothing was installed or registered.
    assert [c for c in shim_calls(shims) if not c.startswith("python3 -c")] == []


def test_install_into_a_throwaway_root_lays_out_the_appliance(shims, pi_root):
    install(shims, pi_root)
    calls = shim_calls(shims)

    assert not [c for c in calls if c.startswith("apt-get")], "apt must not run against the host under --root"
    assert f"python3 -m venv --system-site-packages {pi_root}/opt/edge-app/venv" in calls
    pip_calls = [c for c in calls if c.startswith("venv-python -m pip")]
    assert any(c.endswith(f"install --constraint {pi_root}/opt/edge-app/constraints.txt {REPO}[pi]") for c in pip_calls)
    assert any("--no-deps --force-reinstall" in c for c in pip_calls)
    constraints = (pi_root / "opt/edge-app/constraints.txt").read_text().splitlines()
    assert f"numpy=={OS_NUMPY}" in constraints
    assert "opencv-python-headless<4.12" in constraints, "Bookworm's NumPy 1.x needs OpenCV < 4.12"
    assert any(c.startswith(f"useradd --root {pi_root} --system") and c.endswith(" edge-app") for c in calls)
    assert f"usermod --root {pi_root} --append --groups video,render edge-app" in calls
    assert not [c for c in calls if c.startswith("groupadd")], "render exists on Raspberry Pi OS"
    assert f"systemctl --root={pi_root} enable edge-app.service" in calls

    assert (pi_root / "opt/edge-app/models/student_fp16.tflite").read_bytes() == TINY_MODEL.read_bytes()
    assert (pi_root / "opt/edge-app/models/student_fp16.json").is_file()
    assert (pi_root / "var/lib/edge-app").is_dir()
    config = pi_root / "etc/edge-app/config.toml"
    assert config.read_text() == (DEPLOY / "config.example.toml").read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert (pi_root / "etc/systemd/system/edge-app.service").read_text() == UNIT.read_text()

    kiosk = pi_root / "usr/local/bin/edge-app-kiosk"
    assert kiosk.stat().st_mode & 0o111
    assert "/usr/local/bin/edge-app-kiosk &" in (pi_root / "home/pi/.config/labwc/autostart").read_text().splitlines()
    wayfire = (pi_root / "home/pi/.config/wayfire.ini").read_text()
    assert "edge_app_kiosk = /usr/local/bin/edge-app-kiosk" in wayfire and "screensaver_timeout = -1" in wayfire
    osk = (pi_root / "usr/share/glib-2.0/schemas/90_edge-app-kiosk.gschema.override").read_text()
    assert "[org.gnome.desktop.a11y.applications]" in osk and "screen-keyboard-enabled=true" in osk


def test_second_install_keeps_user_venv_and_an_edited_config(shims, pi_root):
    install(shims, pi_root)
    config = pi_root / "etc/edge-app/config.toml"
    config.write_text(config.read_text() + 'camera = "opencv:0"  # edited by the clinic\n')
    edited = config.read_text()

    out = install(shims, pi_root).stdout
    calls = shim_calls(shims)
    assert config.read_text() == edited
    assert "keeping existing /etc/edge-app/config.toml" in out
    assert sum(c.startswith("useradd") for c in calls) == 1
    assert sum(" -m venv " in c for c in calls) == 1
    assert sum(c.startswith("venv-python -m pip") for c in calls) == 4, "the package is reinstalled on update"
    assert (pi_root / "home/pi/.config/labwc/autostart").read_text().count("edge-app-kiosk") == 1
    assert (pi_root / "home/pi/.config/wayfire.ini").read_text().count("[autostart]") == 1


def test_uninstall_keeps_records_and_config_unless_purged(shims, pi_root):
    install(shims, pi_root)
    record = pi_root / "var/lib/edge-app/screenings.sqlite"
    record.write_bytes(b"records")

    run_script("uninstall.sh", shims, "--root", pi_root)
    assert record.read_bytes() == b"records"
    assert (pi_root / "etc/edge-app/config.toml").is_file()
    assert not (pi_root / "opt/edge-app").exists()
    assert not (pi_root / "etc/systemd/system/edge-app.service").exists()
    assert not (pi_root / "usr/local/bin/edge-app-kiosk").exists()
    assert not (pi_root / "usr/share/glib-2.0/schemas/90_edge-app-kiosk.gschema.override").exists()
    assert "edge-app-kiosk" not in (pi_root / "home/pi/.config/labwc/autostart").read_text()
    assert f"systemctl --root={pi_root} disable edge-app.service" in shim_calls(shims)

    run_script("uninstall.sh", shims, "--root", pi_root, "--purge")
    assert not (pi_root / "var/lib/edge-app").exists()
    assert not (pi_root / "etc/edge-app").exists()
    assert f"userdel --root {pi_root} edge-app" in shim_calls(shims)


def test_missing_render_group_is_created_so_the_unit_can_start(shims, pi_root):
    (pi_root / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")
    install(shims, pi_root)
    assert f"groupadd --root {pi_root} --system render" in shim_calls(shims)


def test_install_refuses_to_run_without_a_model(shims, pi_root, tmp_path):
    proc = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--root", str(pi_root), "--model", str(tmp_path / "none.tflite")],
        env=shims,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "not found" in proc.stderr and "--model" in proc.stderr
    assert shim_calls(shims) == []


def test_install_creates_the_trusted_keys_folder_and_trusts_the_keys_it_is_given(shims, pi_root, tmp_path):
    from edge_app.bundle import generate_key

    _, public = generate_key(tmp_path / "keys", "clinic-2026")
    model = REPO / "models" / "student_fp16.tflite"
    run_script("install.sh", shims, "--root", pi_root, "--no-start", "--model", model, "--trusted-key", public)
    trusted = pi_root / "etc/edge-app/trusted_keys"
    assert trusted.is_dir() and trusted.stat().st_mode & 0o777 == 0o755
    assert (trusted / "clinic-2026.pub").read_bytes() == public.read_bytes()
    if (model.parent / "MODEL_CARD.md").is_file():
        assert (pi_root / "opt/edge-app/models/MODEL_CARD.md").read_bytes() == (model.parent / "MODEL_CARD.md").read_bytes()

    install(shims, pi_root)  # an update without --trusted-key keeps the keys already trusted
    assert (trusted / "clinic-2026.pub").is_file()


@pytest.mark.parametrize("bad", ["clinic.pem", "missing.pub"])
def test_install_refuses_a_trusted_key_that_is_not_a_public_key(shims, pi_root, tmp_path, bad):
    from edge_app.bundle import generate_key

    private, _ = generate_key(tmp_path, "clinic")
    key = private if bad.endswith(".pem") else tmp_path / bad
    proc = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--root", str(pi_root), "--trusted-key", str(key)],
                          env=shims, check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "--trusted-key" in proc.stderr
    assert not (pi_root / "etc/edge-app").exists()


def _print_mirror(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    return subprocess.run(["bash", str(DEPLOY / "prove-arm64.sh"), "--print-mirror"],
                          env={"PATH": "/usr/bin:/bin", "APT_ETC": str(etc)},
                          check=False, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "files",
    [
        {"sources.list.d/debian.sources": "Types: deb\n# http://old.example/debian\nURIs: http://mirror.example/debian\n"
                                          "Suites: bookworm bookworm-updates\nComponents: main\n\n"
                                          "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"},
        {"sources.list.d/off.sources": "Types: deb\nEnabled: no\nURIs: http://disabled.example/debian\n",
         "sources.list.d/src.sources": "Types: deb-src\nURIs: http://source-only.example/debian\n",
         "sources.list": "# deb http://commented.example/debian bookworm main\n"
                         "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian bookworm main\n"},
    ],
    ids=["deb822", "one-line"],
)
def test_prove_arm64_takes_the_debian_mirror_from_this_machines_apt_sources(tmp_path, files):
    proc = _print_mirror(tmp_path, files)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "http://mirror.example/debian"


def test_prove_arm64_without_apt_sources_asks_for_a_mirror(tmp_path):
    proc = _print_mirror(tmp_path, {})
    assert proc.returncode != 0 and "MIRROR=" in proc.stderr


def test_prove_arm64_writes_no_package_host_and_builds_without_a_preinstalled_wheel_package():
    script = (DEPLOY / "prove-arm64.sh").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "://" not in code.replace(":\\/\\/", ""), "a package host is written in the script"
    assert "--no-build-isolation" not in code, "an isolated build brings setuptools and wheel itself"


def test_prove_arm64_roots_get_every_package_install_sh_needs_and_the_cffi_backend():
    """python3-cryptography depends on virtual packages (python3-cffi-backend-api-min/max) that debootstrap
    does not resolve: a fresh root stopped in debootstrap until python3-cffi-backend was named."""
    import re

    script = (DEPLOY / "prove-arm64.sh").read_text()
    packages = set(re.search(r"^ROOT_PACKAGES=(\S+)$", script, re.MULTILINE).group(1).split(","))
    assert '--include="$ROOT_PACKAGES"' in script
    base = re.search(r"local base=\(([^)]*)\)", (DEPLOY / "install.sh").read_text()).group(1).split()
    assert set(base) | {"python3", "python3-cffi-backend"} <= packages


def test_prove_arm64_refuses_a_root_left_by_an_earlier_run_unless_told(tmp_path):
    (tmp_path / "root-bookworm").mkdir()
    proc = subprocess.run(["bash", str(DEPLOY / "prove-arm64.sh")], check=False, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "WORK": str(tmp_path), "MIRROR": "http://mirror.example/debian"})
    assert proc.returncode != 0 and "proves nothing about a fresh Pi" in proc.stderr
    assert "fresh WORK directory" in proc.stderr and "REUSE_ROOT=1" in proc.stderr
    script = (DEPLOY / "prove-arm64.sh").read_text()
    assert 'ROOT_KIND="FRESH root' in script and script.rstrip().endswith('echo "$ROOT_KIND"')


def test_install_ships_the_scope_sidecar_beside_the_model_and_the_installed_model_loads(shims, pi_root):
    from edge_app.runtime import Classifier

    scoped = REPO / "tests" / "fixtures" / "tiny_scope_fp16.tflite"
    run_script("install.sh", shims, "--root", pi_root, "--no-start", "--model", scoped)
    models = pi_root / "opt/edge-app/models"
    assert (models / "student_fp16.aux.npz").read_bytes() == scoped.with_name("tiny_scope_fp16.aux.npz").read_bytes()
    assert Classifier(models / "student_fp16.tflite", num_threads=1).has_scope
    run_script("install.sh", shims, "--root", pi_root, "--no-start", "--model", TINY_MODEL)  # a model without one
    assert not (models / "student_fp16.aux.npz").exists()
