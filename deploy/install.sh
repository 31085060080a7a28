#!/usr/bin/env bash
# Turn a Raspberry Pi OS (64-bit Bookworm or Trixie) into a DermaEdge screening appliance.
#
#   sudo deploy/install.sh             # app + hardened service, enabled and started
#   sudo deploy/install.sh --kiosk     # ... and Chromium full screen on the touchscreen
#   deploy/install.sh --dry-run        # print every action, change nothing
#
# Safe to run again (that is how you update): existing user, venv and an
# edited /etc/edge-app/config.toml are kept. See deploy/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

APP_USER=edge-app
PREFIX=/opt/edge-app
VENV=$PREFIX/venv
MODEL_DIR=$PREFIX/models
DATA_DIR=/var/lib/edge-app
CONF_DIR=/etc/edge-app
# Public keys (*.pub) that model bundles must be signed with (`edge-app model install`).
TRUSTED_KEYS=$CONF_DIR/trusted_keys
UNIT_DIR=/etc/systemd/system
KIOSK_BIN=/usr/local/bin/edge-app-kiosk
SCHEMA_DIR=/usr/share/glib-2.0/schemas
OSK_OVERRIDE=90_edge-app-kiosk.gschema.override
# The OS interpreter: the venv must sit on top of it to see apt's picamera2, libcamera and NumPy.
SYSTEM_PYTHON=${EDGE_APP_SYSTEM_PYTHON:-/usr/bin/python3}

ROOT=${DESTDIR:-}
KIOSK=0
KIOSK_USER=
USE_APT=1
START=1
SOURCE=$REPO
MODEL=$REPO/models/student_fp16.tflite
KEYS=()

usage() {
    cat <<EOF
usage: install.sh [options]

  --dry-run          print every action, change nothing
  --kiosk            also install the Chromium kiosk on the touchscreen (labwc / wayfire)
                     with the squeekboard on-screen keyboard for its text fields
  --kiosk-user USER  desktop user that autologs in (default: \$SUDO_USER, else uid 1000)
  --wheel FILE       install this edge-app wheel instead of the source tree $REPO
  --model FILE       model to ship (default: models/student_fp16.tflite; its .json and
                     MODEL_CARD.md beside it)
  --trusted-key FILE.pub
                     trust this public key for signed model bundles: copied into
                     $TRUSTED_KEYS/ (repeatable; the folder is always created)
  --root DIR         install into DIR instead of / (tests, staging; also DESTDIR=DIR).
                     apt is skipped there; useradd/systemctl get --root DIR.
  --no-apt           do not run apt-get (packages already installed)
  --no-start         enable the service but do not (re)start it now
  -h, --help         this text
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --kiosk) KIOSK=1 ;;
        --kiosk-user) KIOSK_USER=${2:?--kiosk-user needs a user}; shift ;;
        --wheel) SOURCE=${2:?--wheel needs a file}; shift ;;
        --model) MODEL=${2:?--model needs a file}; shift ;;
        --trusted-key) KEYS+=("${2:?--trusted-key needs a .pub file}"); shift ;;
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --no-apt) USE_APT=0 ;;
        --no-start) START=0 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

resolve_root_or_die install.sh
MODEL_JSON=${MODEL%.tflite}.json
MODEL_AUX=${MODEL%.tflite}.aux.npz
MODEL_SCOPE_NET=${MODEL%.tflite}.scope.tflite
if [ ! -f "$MODEL" ] || [ ! -f "$MODEL_JSON" ]; then
    msg="model $MODEL (and its manifest $MODEL_JSON) not found: train/export it or pass --model FILE"
    if [ "$DRY_RUN" = 1 ]; then warn "$msg"; else die "$msg"; fi
fi
for key in ${KEYS[@]+"${KEYS[@]}"}; do
    case $key in *.pub) ;; *) die "--trusted-key $key: expected a public key NAME.pub (from edge-app model keygen)" ;; esac
    [ -f "$key" ] || die "--trusted-key $key: not found"
    grep -q "BEGIN PUBLIC KEY" "$key" || die "--trusted-key $key: not a PEM public key"
done
if [ "$SOURCE" != "$REPO" ] && [ ! -f "$SOURCE" ] && [ "$DRY_RUN" = 0 ]; then
    die "wheel $SOURCE not found"
fi
[ "$DRY_RUN" = 1 ] && say "dry run: nothing will be changed"
[ -n "$ROOT" ] && say "installing into root $ROOT"

# ---------------------------------------------------------------- packages
install_packages() {
    # picamera2 and libcamera come only from apt (Raspberry Pi archive), never from pip.
    # --no-install-recommends keeps the GUI preview stack (Qt, OpenGL) off a headless service.
    local base=(python3-venv python3-numpy python3-cryptography)
    local kiosk=()
    if [ "$KIOSK" = 1 ]; then
        # Raspberry Pi OS ships `chromium` (Trixie, late Bookworm); older images `chromium-browser`.
        # squeekboard: the on-screen keyboard Raspberry Pi OS uses on labwc and wayfire.
        if [ "$DRY_RUN" = 0 ] && ! apt-cache show chromium >/dev/null 2>&1; then
            kiosk=(chromium-browser curl squeekboard)
        else
            kiosk=(chromium curl squeekboard)
        fi
    fi
    if [ "$USE_APT" = 0 ] || [ -n "$ROOT" ]; then
        say "skipping apt (--no-apt or --root): needs $(quote "${base[@]}" python3-picamera2 "${kiosk[@]}")"
        return 0
    fi
    say "apt packages"
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y "${base[@]}"
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-picamera2
    if [ "${#kiosk[@]}" -gt 0 ]; then
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y "${kiosk[@]}"
    fi
}

# ---------------------------------------------------------------- user
create_user() {
    say "system user $APP_USER"
    local root_opt=()
    [ -n "$ROOT" ] && root_opt=(--root "$ROOT")
    if [ -n "$(passwd_field "$APP_USER" 1)" ]; then
        say "user $APP_USER exists"
    else
        run useradd "${root_opt[@]}" --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "DermaEdge screening service" "$APP_USER"
    fi
    # video: /dev/video*, /dev/media*, /dev/vchiq; render: /dev/dri and, on some images, dma_heap.
    # The unit names both in SupplementaryGroups=, and systemd refuses to start it (216/GROUP)
    # if one is missing, so create `render` where udev has not (minimal and container images).
    if ! group_exists render; then
        run groupadd "${root_opt[@]}" --system render
    fi
    run usermod "${root_opt[@]}" --append --groups video,render "$APP_USER"
}

# ---------------------------------------------------------------- venv + package
numpy_pin() {
    # The version of the OS NumPy, or a placeholder in a dry run before apt has run.
    "$SYSTEM_PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || {
        [ "$DRY_RUN" = 1 ] || die "NumPy not importable by $SYSTEM_PYTHON: apt-get install python3-numpy"
        echo '<os-numpy-version>'
    }
}

install_app() {
    say "virtual environment $VENV (on top of the OS Python and its packages)"
    local venv=$ROOT$VENV py=$ROOT$VENV/bin/python
    if [ -x "$py" ]; then
        say "venv exists"
    else
        # --system-site-packages: picamera2, libcamera and NumPy come from apt and stay there.
        run "$SYSTEM_PYTHON" -m venv --system-site-packages "$venv"
    fi

    # Pin NumPy to the OS build. picamera2's compiled helpers (simplejpeg, pidng,
    # python3-libcamera, python3-av) are built against the OS NumPy; if pip put a
    # second NumPy (e.g. 2.x) into the venv it would shadow the OS one and they
    # would fail with "_ARRAY_API not found" / "numpy.core.multiarray failed to
    # import". The constraint makes pip choose dependency versions that work with
    # the OS NumPy (e.g. opencv-python-headless < 4.12 on Bookworm's NumPy 1.24)
    # or fail loudly at install time instead of on the device.
    local pin constraints=$ROOT$PREFIX/constraints.txt
    pin=$(numpy_pin)
    local lines=("numpy==$pin")
    # OpenCV >= 4.12 wheels need NumPy 2: say so up front instead of letting pip download
    # and reject every newer release (~35 MB each) on Bookworm's NumPy 1.24.
    case $pin in 1.*) lines+=("opencv-python-headless<4.12") ;; esac
    printf '+ write %s: %s\n' "$constraints" "${lines[*]}"
    if [ "$DRY_RUN" = 0 ]; then
        mkdir -p "$(dirname "$constraints")"
        {
            echo "# written by deploy/install.sh: keep the OS NumPy (see deploy/README.md)"
            printf '%s\n' "${lines[@]}"
        } >"$constraints"
    fi

    local pip=("$py" -m pip --disable-pip-version-check --no-input)
    # 1) the package with the `pi` extra and its dependencies, NumPy held at the OS version;
    # 2) the package alone again, so an update with an unchanged version number still lands.
    run "${pip[@]}" install --constraint "$constraints" "${SOURCE}[pi]"
    run "${pip[@]}" install --constraint "$constraints" --no-deps --force-reinstall "$SOURCE"
    # Refuse a venv that shadows the OS NumPy (the ABI errors above would follow).
    run "$py" -c 'import sys, numpy
if not numpy.__file__.startswith("/usr/lib/python3/"):
    sys.exit(f"numpy {numpy.__version__} from {numpy.__file__} shadows the OS NumPy: remove it from the venv (see deploy/README.md)")
import ai_edge_litert.interpreter
print(f"ok: OS numpy {numpy.__version__}, ai-edge-litert interpreter importable")'
}

# ---------------------------------------------------------------- model, data, config
install_files() {
    say "model, data directory, config"
    run install -d -m 0755 "$ROOT$MODEL_DIR"
    run install -m 0644 "$MODEL" "$ROOT$MODEL_DIR/student_fp16.tflite"
    run install -m 0644 "$MODEL_JSON" "$ROOT$MODEL_DIR/student_fp16.json"
    # The card is shown by the app (Model card link); a model without one ships without it.
    if [ -f "$(dirname "$MODEL")/MODEL_CARD.md" ]; then
        run install -m 0644 "$(dirname "$MODEL")/MODEL_CARD.md" "$ROOT$MODEL_DIR/MODEL_CARD.md"
    fi
    # The sidecar (scope check + heatmap head), when the model was exported with one; the manifest
    # names its sha256 and the app refuses the model without it.
    if [ -f "$MODEL_AUX" ]; then
        run install -m 0644 "$MODEL_AUX" "$ROOT$MODEL_DIR/student_fp16.aux.npz"
    else
        run rm -f "$ROOT$MODEL_DIR/student_fp16.aux.npz"
    fi
    # The scope network, when the manifest names one (`edge-train scope`): refused without it, like the sidecar.
    if [ -f "$MODEL_SCOPE_NET" ]; then
        run install -m 0644 "$MODEL_SCOPE_NET" "$ROOT$MODEL_DIR/student_fp16.scope.tflite"
    else
        run rm -f "$ROOT$MODEL_DIR/student_fp16.scope.tflite"
    fi

    # Ownership only on the real system (under --root the user lives in another passwd;
    # systemd's StateDirectory= fixes the owner of the data directory at start anyway).
    local owner=() group=()
    if [ -z "$ROOT" ]; then
        owner=(-o "$APP_USER" -g "$APP_USER")
        group=(-g "$APP_USER")
    fi
    run install -d -m 0750 "${owner[@]}" "$ROOT$DATA_DIR"
    run install -d -m 0755 "$ROOT$CONF_DIR"
    # Root-owned and read-only to the service: only an administrator decides whose models are trusted.
    run install -d -m 0755 "$ROOT$TRUSTED_KEYS"
    local key
    for key in ${KEYS[@]+"${KEYS[@]}"}; do
        run install -m 0644 "$key" "$ROOT$TRUSTED_KEYS/$(basename "$key")"
    done
    run install -m 0644 "$HERE/config.example.toml" "$ROOT$CONF_DIR/config.example.toml"
    run install -m 0644 "$HERE/README.md" "$ROOT$PREFIX/README.md"
    if [ -e "$ROOT$CONF_DIR/config.toml" ]; then
        say "keeping existing $CONF_DIR/config.toml (new defaults: $CONF_DIR/config.example.toml)"
    else
        # 0640 root:edge-app: it may hold the access token for LAN access.
        run install -m 0640 "${group[@]}" "$HERE/config.example.toml" "$ROOT$CONF_DIR/config.toml"
    fi
}

# ---------------------------------------------------------------- systemd
install_units() {
    say "systemd unit"
    run install -d -m 0755 "$ROOT$UNIT_DIR"
    run install -m 0644 "$REPO/systemd/edge-app.service" "$ROOT$UNIT_DIR/edge-app.service"
    if systemd_running; then
        run systemctl daemon-reload
    fi
    systemctl_root enable edge-app.service
    if [ "$START" = 1 ] && systemd_running; then
        run systemctl restart edge-app.service
    elif [ "$START" = 1 ]; then
        say "systemd is not running here (chroot / image / --root): the service starts at next boot"
    fi
}

# ---------------------------------------------------------------- kiosk
install_kiosk() {
    say "kiosk: Chromium full screen on the touchscreen"
    local user=${KIOSK_USER:-$(default_desktop_user)}
    [ -n "$user" ] || die "no desktop user found for the kiosk: pass --kiosk-user USER"
    local home
    home=$(passwd_field "$user" 6)
    [ -n "$home" ] || die "kiosk user $user not found in $ROOT/etc/passwd"

    run install -d -m 0755 "$ROOT$(dirname "$KIOSK_BIN")"
    run install -m 0755 "$HERE/kiosk/edge-app-kiosk" "$ROOT$KIOSK_BIN"

    # On-screen keyboard: squeekboard (apt, above) is started by the launcher from the
    # autostart below; this default makes it appear whenever a text field has focus.
    run install -d -m 0755 "$ROOT$SCHEMA_DIR"
    run install -m 0644 "$HERE/kiosk/$OSK_OVERRIDE" "$ROOT$SCHEMA_DIR/$OSK_OVERRIDE"
    if [ -z "$ROOT" ] && command -v glib-compile-schemas >/dev/null 2>&1; then
        run glib-compile-schemas "$SCHEMA_DIR"
    else
        say "glib-compile-schemas not run here: the keyboard default applies after it runs on the device"
    fi

    # labwc (Raspberry Pi OS since late 2024): ~/.config/labwc/autostart is a shell script.
    # A user autostart replaces the desktop's one: no panel, no screen-blanking daemon.
    append_line "$ROOT$home/.config/labwc/autostart" "$KIOSK_BIN &"
    # wayfire (earlier Bookworm images): [autostart] entry and idle/blanking off.
    local ini=$ROOT$home/.config/wayfire.ini
    if [ -f "$ini" ] && grep -qF "$KIOSK_BIN" "$ini"; then
        :
    elif [ -f "$ini" ] && grep -q '^\[autostart\]' "$ini"; then
        run sed -i "/^\[autostart\]/a edge_app_kiosk = $KIOSK_BIN" "$ini"
    else
        append_line "$ini" "[autostart]"
        append_line "$ini" "edge_app_kiosk = $KIOSK_BIN"
    fi
    if [ -f "$ini" ] && grep -q '^\[idle\]' "$ini"; then
        grep -q '^screensaver_timeout' "$ini" || run sed -i '/^\[idle\]/a screensaver_timeout = -1' "$ini"
        grep -q '^dpms_timeout' "$ini" || run sed -i '/^\[idle\]/a dpms_timeout = -1' "$ini"
    else
        append_line "$ini" "[idle]"
        append_line "$ini" "screensaver_timeout = -1"
        append_line "$ini" "dpms_timeout = -1"
    fi
    if [ -z "$ROOT" ]; then
        run chown -R "$user:" "$home/.config/labwc" "$ini"
    fi

    # Desktop autologin and screen blanking off, where raspi-config is present (Raspberry Pi OS).
    if [ -z "$ROOT" ] && command -v raspi-config >/dev/null 2>&1; then
        run raspi-config nonint do_boot_behaviour B4
        run raspi-config nonint do_blanking 1
    else
        say "raspi-config not available: enable desktop autologin and disable screen blanking by hand"
    fi
}

install_packages
create_user
install_app
install_files
install_units
if [ "$KIOSK" = 1 ]; then
    install_kiosk
fi
say "done. Logs: journalctl -u edge-app -f   Status: systemctl status edge-app   UI: http://127.0.0.1:8080"
