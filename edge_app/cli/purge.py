"""`edge-app purge`: really delete screenings (rows and image files), for data protection.

Screening records are append-only everywhere else; this command is the one
deliberate exception (a retention policy, a patient's request, a device leaving
service). Deleted rows are overwritten in the database (SQLite secure_delete,
WAL truncated) and their image files removed. Every purge is appended to
`<data_dir>/audit.log` (time, criteria, count, record ids). Back up first if the
records must be kept elsewhere. Safe while the app serves: it deletes the rows it
selects and their files, nothing else.

    edge-app purge --older-than 365          # asks for confirmation
    edge-app purge --older-than 365 --yes
    edge-app purge --all --yes               # everything, e.g. before the device leaves the clinic
"""

from __future__ import annotations

import argparse
import sys

from .common import add_data_dir_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("purge", help="permanently delete old (or all) screenings and their images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--older-than", dest="older_than", type=float, metavar="DAYS",
                       help="delete screenings taken more than DAYS days ago")
    which.add_argument("--all", dest="everything", action="store_true", help="delete every screening")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_data_dir_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..config import ConfigError, data_dir_setting
    from ..store import DB_NAME, ScreeningStore, StoreError, purge

    if args.older_than is not None and args.older_than < 0:
        print("error: --older-than must be >= 0 days", file=sys.stderr)
        return 2
    try:
        data_dir = data_dir_setting(args.config, args.data_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not (data_dir / DB_NAME).is_file():
        print(f"error: no records at {data_dir} (wrong --data-dir?)", file=sys.stderr)
        return 1
    what = "ALL screenings" if args.everything else f"screenings older than {args.older_than:g} days"
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"error: refusing to delete {what} without --yes", file=sys.stderr)
            return 2
        answer = input(f"Permanently delete {what} and their images from {data_dir}? Type 'delete' to confirm: ")
        if answer.strip() != "delete":
            print("nothing deleted")
            return 1
    try:
        store = ScreeningStore(data_dir, app_version=__version__)  # opens without recovery: the app may be saving a screening
        try:
            ids = purge(store, older_than_days=None if args.everything else args.older_than, everything=args.everything)
        finally:
            store.close()
    except (StoreError, OSError) as exc:
        print(f"error: purge failed: {exc}", file=sys.stderr)
        return 1
    print(f"deleted {len(ids)} screening(s) ({what}) and their images; logged in {data_dir / 'audit.log'}")
    return 0
