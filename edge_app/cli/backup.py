"""`edge-app backup DEST` and `edge-app restore SRC`: a consistent copy of the records and images.

The database is read with SQLite's online backup API, so a backup taken while
the app is serving is a consistent snapshot; the files of every record it holds
are copied and each image's sha256 checked. Backup only reads the data directory
(and appends its line to audit.log). Restore verifies the backup (integrity check,
every image's sha256) before touching anything, and never deletes existing data:
with `--replace` the current data directory is moved aside. Restore refuses to run
while the app serves that directory: stop the app first (`sudo systemctl stop
edge-app`) and start it again afterwards.

    edge-app backup /media/usb/dermaedge-2026-03-01
    sudo systemctl stop edge-app
    edge-app restore /media/usb/dermaedge-2026-03-01 --replace
    sudo systemctl start edge-app
"""

from __future__ import annotations

import argparse
import sys

from .common import add_data_dir_arguments

EXIT_FAILED = 1
EXIT_INCOMPLETE = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="copy the records (SQLite backup API) and images to DEST",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", metavar="DEST", help="a new (or empty) directory, e.g. on a USB stick")
    add_data_dir_arguments(p)
    p.set_defaults(func=run_backup)
    r = sub.add_parser("restore", help="restore a backup made by `edge-app backup` (stop the app first)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("src", metavar="SRC", help="the backup directory")
    r.add_argument("--replace", action="store_true",
                   help="the data directory already holds records: move it aside and restore in its place")
    add_data_dir_arguments(r)
    r.set_defaults(func=run_restore)


def _data_dir(args: argparse.Namespace):
    from ..config import ConfigError, data_dir_setting

    try:
        return data_dir_setting(args.config, args.data_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def run_backup(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..store import StoreError, backup

    data_dir = _data_dir(args)
    if data_dir is None:
        return EXIT_FAILED
    try:
        summary = backup(data_dir, args.dest, app_version=__version__)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: backup failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"backed up {summary['records']} screening(s), {summary['images']} image(s), "
          f"{summary['image_bytes'] / 1e6:.1f} MB from {data_dir} to {args.dest}")
    if summary["missing_or_damaged_images"]:
        print(f"warning: {len(summary['missing_or_damaged_images'])} image(s) missing or damaged in {data_dir}: "
              + ", ".join(summary["missing_or_damaged_images"][:5]), file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..store import StoreError, restore_backup

    data_dir = _data_dir(args)
    if data_dir is None:
        return EXIT_FAILED
    try:
        result = restore_backup(args.src, data_dir, replace=args.replace, app_version=__version__)
    except (StoreError, OSError) as exc:
        print(f"error: restore failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"restored {result['records']} screening(s) from {args.src} into {data_dir}")
    if result["moved_aside"]:
        print(f"the previous data directory was kept at {result['moved_aside']}")
    return 0
