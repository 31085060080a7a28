#!/usr/bin/env bash
# Prove the Raspberry Pi install path on an x86_64 Debian machine, without a Pi:
#
#   1. build an arm64 Debian root (debootstrap --foreign + qemu-user-static via binfmt_misc),
#   2. build the edge-app wheel from this checkout,
#   3. run deploy/install.sh inside that root (real useradd, venv with
#      --system-site-packages, pip with the `pi` extra pinned to the OS NumPy,
#      systemctl enable offline),
#   4. run `edge-app classify` on a generated image with the shipped model
#      through the aarch64 ai-edge-litert wheel, under emulation.
#
# Not part of CI (downloads ~100 MB of .debs and wheels, several minutes under qemu).
# Run as root:  deploy/prove-arm64.sh            (SUITE=trixie for Debian 13 / Python 3.13)
# It proves a fresh Pi only from a fresh WORK directory: an existing root under WORK is refused
# (REUSE_ROOT=1 reuses it, for a quicker rerun of the later steps; the output then says so). Run
# it with a new WORK=... after any change to the packages the Pi gets (ROOT_PACKAGES below).
#               deploy/prove-arm64.sh --print-mirror   (which Debian mirror it would use; no root needed)
# Needs: apt-get install qemu-user-static binfmt-support debootstrap
# The Debian mirror is the one this machine's apt already uses (MIRROR=URL overrides it); the
# wheel is built by pip in an isolated build environment (setuptools and wheel fetched as
# pyproject.toml's [build-system] asks), so neither `wheel` nor a project .venv is needed.
# What it cannot prove: python3-picamera2 and libcamera come from the Raspberry Pi
# archive, so they are not in this root; the camera path is exercised on a Pi only.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=${SUITE:-bookworm}
WORK=${WORK:-/var/tmp/edge-app-arm64}
TARGET=$WORK/root-$SUITE
MODEL=${MODEL:-$REPO/models/student_fp16.tflite}
REUSE_ROOT=${REUSE_ROOT:-0}
# What a Raspberry Pi OS image brings plus install.sh's apt packages (python3-venv, python3-numpy,
# python3-cryptography). python3-cffi-backend is named because python3-cryptography depends on the
# virtual python3-cffi-backend-api-min/max, which debootstrap does not resolve.
ROOT_PACKAGES=python3,python3-venv,python3-numpy,python3-cryptography,python3-cffi-backend,ca-certificates,systemd

step() { printf '\n### %s  [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The Debian archive this machine's apt uses: the first `deb` source (one-line *.list or deb822
# *.sources, comments and disabled stanzas skipped) that is not the security archive.
apt_mirror() {
    local etc=${APT_ETC:-/etc/apt}
    {
        cat "$etc/sources.list" "$etc"/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }'
        cat "$etc"/sources.list.d/*.sources 2>/dev/null | awk '
            function flush() { if (deb && !off) for (i = 1; i <= n; i++) print uris[i]; deb = 0; off = 0; n = 0 }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "enabled:" && tolower($2) == "no" { off = 1 }
            tolower($1) == "uris:" { for (i = 2; i <= NF; i++) uris[++n] = $i }
            END { flush() }'
    } | grep -v -e security -e '^cdrom:' | head -n 1 || true
}

MIRROR=${MIRROR:-$(apt_mirror)}
if [ "${1:-}" = --print-mirror ]; then
    [ -n "$MIRROR" ] || die "no Debian mirror found in ${APT_ETC:-/etc/apt}/sources.list{,.d}: set MIRROR=<Debian mirror URL>"
    printf '%s\n' "$MIRROR"
    exit 0
fi
[ $# -eq 0 ] || die "usage: prove-arm64.sh [--print-mirror]   (settings via SUITE, MIRROR, WORK, MODEL, HOST_PYTHON, REUSE_ROOT)"
if [ -e "$TARGET" ] && [ "$REUSE_ROOT" != 1 ]; then
    die "$TARGET exists: a root built before proves nothing about a fresh Pi. Run with a fresh WORK directory
       (e.g. WORK=/var/tmp/edge-app-arm64-$(date -u +%Y%m%d%H%M%S)), or REUSE_ROOT=1 to reuse it knowingly"
fi
[ -n "$MIRROR" ] || die "no Debian mirror found in ${APT_ETC:-/etc/apt}/sources.list{,.d}: set MIRROR=<Debian mirror URL>"

# Any Python >= 3.11 with pip builds the wheel: the project venv if there is one, else the OS python3.
if [ -z "${HOST_PYTHON:-}" ]; then
    HOST_PYTHON=python3
    [ -x "$REPO/.venv/bin/python" ] && HOST_PYTHON=$REPO/.venv/bin/python
fi
"$HOST_PYTHON" -m pip --version >/dev/null 2>&1 || die "$HOST_PYTHON has no pip: apt-get install python3-pip (or set HOST_PYTHON)"

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot)"
for tool in debootstrap chroot; do
    command -v "$tool" >/dev/null || die "$tool missing: apt-get install qemu-user-static binfmt-support debootstrap"
done
echo "Debian mirror (from this machine's apt sources unless MIRROR is set): $MIRROR"

step "binfmt_misc: can this kernel run aarch64 binaries through qemu?"
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "cannot mount binfmt_misc (container without the privilege): arm64 emulation impossible here"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 || die "cannot register qemu-aarch64 with binfmt_misc"
fi
grep -E '^(enabled|interpreter|flags)' /proc/sys/fs/binfmt_misc/qemu-aarch64

if [ ! -f "$MODEL" ]; then
    printf 'NOTE: %s not found; using the test model tests/fixtures/tiny_fp16.tflite instead\n' "$MODEL"
    MODEL=$REPO/tests/fixtures/tiny_fp16.tflite
fi
MODEL_JSON=${MODEL%.tflite}.json

step "arm64 Debian $SUITE root in $TARGET"
mkdir -p "$WORK"
if [ -e "$TARGET" ]; then
    ROOT_KIND="REUSED root $TARGET (REUSE_ROOT=1): not a proof for a fresh Pi; rerun with a fresh WORK for that"
    if [ ! -x "$TARGET/usr/bin/python3" ] || [ -d "$TARGET/debootstrap" ]; then
        die "$TARGET is not a finished root (an interrupted debootstrap?): run with a fresh WORK directory"
    fi
else
    ROOT_KIND="FRESH root: debootstrap into an empty $TARGET (WORK=$WORK) with $ROOT_PACKAGES"
    debootstrap --arch=arm64 --variant=minbase --foreign --include="$ROOT_PACKAGES" "$SUITE" "$TARGET" "$MIRROR"
    chroot "$TARGET" /debootstrap/debootstrap --second-stage
fi
echo "$ROOT_KIND"

step "wheel from this checkout (tracked + untracked, not ignored)"
rm -rf "$WORK/src" "$WORK/dist"
mkdir -p "$WORK/src" "$WORK/dist"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && tar --null --ignore-failed-read -T - -cf -) | tar -x -C "$WORK/src"
# Isolated build: pip installs what [build-system] requires (setuptools, wheel) into a throwaway env.
"$HOST_PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/edge_app-*.whl)
ls -l "$WHEEL"

step "stage installer, units, wheel and model inside the root"
STAGE=/tmp/edge-app-src
rm -rf "$TARGET$STAGE"
mkdir -p "$TARGET$STAGE/models"
cp -r "$REPO/deploy" "$REPO/systemd" "$TARGET$STAGE/"
cp "$WHEEL" "$TARGET$STAGE/"
cp "$MODEL" "$TARGET$STAGE/models/student_fp16.tflite"
cp "$MODEL_JSON" "$TARGET$STAGE/models/student_fp16.json"
if [ -f "${MODEL%.tflite}.aux.npz" ]; then cp "${MODEL%.tflite}.aux.npz" "$TARGET$STAGE/models/student_fp16.aux.npz"; fi
if [ -f "${MODEL%.tflite}.scope.tflite" ]; then cp "${MODEL%.tflite}.scope.tflite" "$TARGET$STAGE/models/student_fp16.scope.tflite"; fi
cp /etc/resolv.conf "$TARGET/etc/resolv.conf"
# This sandbox reaches PyPI through the host's CA bundle; a Pi uses pip's own.
cp /etc/ssl/certs/ca-certificates.crt "$TARGET/etc/ssl/certs/host-ca-bundle.crt"

mounts=()
cleanup() {
    local m
    for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
for m in proc sys dev; do
    mount --bind "/$m" "$TARGET/$m"
    mounts+=("$TARGET/$m")
done

in_root() {
    chroot "$TARGET" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 PIP_CONFIG_FILE=/dev/null PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt \
        PIP_DEFAULT_TIMEOUT=180 "$@"
}

step "inside the root: what machine is this?"
# shellcheck disable=SC2016  # expanded by the shell inside the root
in_root /bin/sh -c 'uname -m; . /etc/os-release; echo "$PRETTY_NAME"; python3 --version; python3 -c "import numpy; print(\"OS numpy\", numpy.__version__, numpy.__file__)"'

step "deploy/install.sh inside the arm64 root (--no-apt: base packages came with debootstrap; python3-picamera2 is Raspberry Pi archive only)"
in_root bash "$STAGE/deploy/install.sh" --no-apt --no-start \
    --wheel "$STAGE/$(basename "$WHEEL")" --model "$STAGE/models/student_fp16.tflite"

step "result of the install"
# shellcheck disable=SC2016  # expanded by the shell inside the root
in_root /bin/sh -c '
set -e
id edge-app
systemctl is-enabled edge-app.service
ls -l /etc/edge-app /opt/edge-app /opt/edge-app/models
cat /opt/edge-app/constraints.txt
echo "--- packages inside the venv (NumPy must not be among them):"
/opt/edge-app/venv/bin/python -m pip list --path "$(/opt/edge-app/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()[\"purelib\"])")"
/opt/edge-app/venv/bin/python -c "import numpy, ai_edge_litert, platform; print(platform.machine(), \"numpy\", numpy.__version__, numpy.__file__); print(\"ai_edge_litert\", ai_edge_litert.__file__)"
'

# LiteRT's CPU detection (cpuinfo) parses /proc/cpuinfo and /sys/devices/system/cpu; under
# qemu-user those are the x86_64 host's, and it crashes (SIGSEGV in Interpreter()). Without
# them it logs "Error in cpuinfo: failed to parse ..." and falls back to defaults. A Pi has
# its own aarch64 /proc, so only the emulation needs this.
step "unmount /proc and /sys (qemu-user shows the host's CPU there, which crashes LiteRT's cpuinfo)"
cleanup
mounts=("$TARGET/dev")
mount --bind /dev "$TARGET/dev"

step "edge-app classify on a generated image, shipped model, aarch64 LiteRT under qemu"
in_root /opt/edge-app/venv/bin/python -c '
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:480, 0:640]
skin = np.array([205, 160, 140], float)
lesion = ((yy - 240) ** 2 + (xx - 320) ** 2) < 110 ** 2
img = np.where(lesion[..., None], skin * 0.45, skin) + rng.normal(0, 6, (480, 640, 3))
Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save("/tmp/lesion.png")
print("wrote /tmp/lesion.png")'
time in_root /opt/edge-app/venv/bin/edge-app classify /tmp/lesion.png \
    --model /opt/edge-app/models/student_fp16.tflite --json

step "arm64 proof finished"
echo "$ROOT_KIND"
