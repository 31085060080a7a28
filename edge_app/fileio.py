"""Durable file writes, shared by the records, the model store, the site threshold and the scope refit.

`write_atomic` (temp file in the same directory + fsync + rename, then an fsync
of the directory) means a reader, or the next start after a power cut, sees the
old file or the new one, never half of it. `append_audit` adds one fsynced JSON
line to `<data_dir>/audit.log`, the log of everything that deletes, restores or
changes what the device decides (purges, backups, model installs, site thresholds).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUDIT_LOG = "audit.log"
TEMP_SUFFIX = ".tmp"

log = logging.getLogger(__name__)


def fsync_dir(path: str | Path) -> None:
    """Make the directory's entries (renames, new files) durable. A file system that cannot fsync a
    directory (EINVAL on some network and FUSE mounts) is tolerated; other errors are raised."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes, sync_dir: bool = True, durable: bool = True) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync the directory
    (`sync_dir=False`: the caller fsyncs it once after several renames; `durable=False`: no fsync
    at all, for a file that can be made again, so a reader still never sees half of it). On any
    error the old content stays and no temp file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir and durable:
        fsync_dir(path.parent)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def append_audit(data_dir: str | Path, event: str, app_version: str, **fields: Any) -> Path:
    """Append one JSON line to `<data_dir>/audit.log` (fsynced) and log it; returns the log's path.

    Needs no store and no lock: the file is opened in append mode, so a line from a
    maintenance command lands after the app's lines, never over them."""
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), "event": event,
             "app_version": app_version} | fields
    path = Path(data_dir) / AUDIT_LOG
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.info("%s: %s", event, {k: v for k, v in fields.items() if k != "ids"})
    return path
