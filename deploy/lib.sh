# shellcheck shell=bash
# Helpers shared by install.sh and uninstall.sh (sourced, not run).
#
# Every action that changes the system goes through `run` (or one of the
# helpers built on it), so `--dry-run` prints the whole plan and does nothing.

DRY_RUN=${DRY_RUN:-0}
ROOT=${ROOT:-}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Normalise $ROOT (empty = this system) and insist on root, unless it is a dry run or a throwaway root.
resolve_root_or_die() {
    local script=$1
    if [ -n "$ROOT" ]; then
        ROOT=$(cd "$ROOT" && pwd) || die "--root $ROOT: no such directory"
        [ "$ROOT" = / ] && ROOT=
    fi
    if [ "$DRY_RUN" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
        die "run as root (sudo deploy/$script), or use --dry-run to see the plan"
    fi
}

# quote ARGS...: the arguments as a shell would read them back (plain words unquoted).
quote() {
    local arg out=()
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then out+=("$arg"); else out+=("${arg@Q}"); fi
    done
    printf '%s' "${out[*]}"
}

# run CMD ARGS...: print the command; execute it unless in dry-run mode.
run() {
    printf '+ %s\n' "$(quote "$@")"
    if [ "$DRY_RUN" = 0 ]; then
        "$@"
    fi
}

# append_line FILE LINE: add LINE to FILE unless an identical line is there (idempotent).
append_line() {
    local file=$1 line=$2
    if [ -f "$file" ] && grep -qxF -- "$line" "$file"; then
        return 0
    fi
    printf '+ append %s to %s\n' "$(quote "$line")" "$file"
    if [ "$DRY_RUN" = 0 ]; then
        mkdir -p "$(dirname "$file")"
        printf '%s\n' "$line" >>"$file"
    fi
}

# remove_lines_matching FILE FIXED_STRING: delete every line containing the string.
remove_lines_matching() {
    local file=$1 needle=$2
    if [ -f "$file" ] && grep -qF -- "$needle" "$file"; then
        printf '+ remove lines containing %s from %s\n' "$(quote "$needle")" "$file"
        if [ "$DRY_RUN" = 0 ]; then
            local tmp
            tmp=$(mktemp)
            grep -vF -- "$needle" "$file" >"$tmp" || true
            cat "$tmp" >"$file"
            rm -f "$tmp"
        fi
    fi
}

# passwd_field USER N: field N of USER's line in $ROOT/etc/passwd (empty if absent).
passwd_field() {
    [ -f "$ROOT/etc/passwd" ] || return 0
    awk -F: -v u="$1" -v n="$2" '$1 == u { print $n; exit }' "$ROOT/etc/passwd"
}

group_exists() {
    [ -f "$ROOT/etc/group" ] && grep -q "^$1:" "$ROOT/etc/group"
}

# The desktop user who autologs in on the touchscreen: --kiosk-user, else the
# user who ran sudo, else the first regular user (uid 1000 on Raspberry Pi OS).
default_desktop_user() {
    if [ -n "${SUDO_USER:-}" ] && [ "${SUDO_USER}" != root ]; then
        printf '%s\n' "$SUDO_USER"
        return 0
    fi
    [ -f "$ROOT/etc/passwd" ] || return 0
    awk -F: '$3 >= 1000 && $3 < 60000 { print $1; exit }' "$ROOT/etc/passwd"
}

# systemd is running (not a chroot, not an image build, not --root)?
systemd_running() {
    [ -z "$ROOT" ] && [ -d /run/systemd/system ]
}

# systemctl with --root=DIR when installing into a root (enable/disable work offline).
systemctl_root() {
    if [ -n "$ROOT" ]; then
        run systemctl --root="$ROOT" "$@"
    else
        run systemctl "$@"
    fi
}
