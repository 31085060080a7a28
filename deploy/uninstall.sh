#!/usr/bin/env bash
# Remove DermaEdge from this Pi. Screening records, images and the config are kept
# unless --purge is given (then /var/lib/edge-app, /etc/edge-app and the user go too).
#
#   sudo deploy/uninstall.sh [--purge] [--dry-run] [--root DIR] [--kiosk-user USER]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

APP_USER=edge-app
PREFIX=/opt/edge-app
DATA_DIR=/var/lib/edge-app
CONF_DIR=/etc/edge-app
UNIT=/etc/systemd/system/edge-app.service
KIOSK_BIN=/usr/local/bin/edge-app-kiosk

ROOT=${DESTDIR:-}
PURGE=0
KIOSK_USER=

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --purge) PURGE=1 ;;
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --kiosk-user) KIOSK_USER=${2:?--kiosk-user needs a user}; shift ;;
        -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
    shift
done
resolve_root_or_die uninstall.sh
[ "$DRY_RUN" = 1 ] && say "dry run: nothing will be changed"

say "service"
if [ -e "$ROOT$UNIT" ]; then
    if systemd_running; then
        run systemctl disable --now edge-app.service
    else
        systemctl_root disable edge-app.service
    fi
    run rm -f "$ROOT$UNIT"
    if systemd_running; then
        run systemctl daemon-reload
    fi
fi

say "application (venv, model)"
if [ -e "$ROOT$PREFIX" ]; then
    run rm -rf "$ROOT$PREFIX"
fi

say "kiosk"
if [ -e "$ROOT$KIOSK_BIN" ]; then
    run rm -f "$ROOT$KIOSK_BIN"
fi
OSK_OVERRIDE=/usr/share/glib-2.0/schemas/90_edge-app-kiosk.gschema.override
if [ -e "$ROOT$OSK_OVERRIDE" ]; then
    run rm -f "$ROOT$OSK_OVERRIDE"
    if [ -z "$ROOT" ] && command -v glib-compile-schemas >/dev/null 2>&1; then
        run glib-compile-schemas "$(dirname "$OSK_OVERRIDE")"
    fi
fi
user=${KIOSK_USER:-$(default_desktop_user)}
home=
[ -n "$user" ] && home=$(passwd_field "$user" 6)
if [ -n "$home" ]; then
    remove_lines_matching "$ROOT$home/.config/labwc/autostart" "$KIOSK_BIN"
    remove_lines_matching "$ROOT$home/.config/wayfire.ini" "$KIOSK_BIN"
fi

if [ "$PURGE" = 1 ]; then
    say "purge: records, images, config, user"
    run rm -rf "$ROOT$DATA_DIR" "$ROOT$CONF_DIR"
    if [ -n "$(passwd_field "$APP_USER" 1)" ]; then
        root_opt=()
        [ -n "$ROOT" ] && root_opt=(--root "$ROOT")
        run userdel "${root_opt[@]}" "$APP_USER"
    fi
else
    say "kept $DATA_DIR (records, images) and $CONF_DIR; remove them with --purge"
fi
say "done"
