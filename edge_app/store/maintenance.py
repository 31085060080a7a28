"""Upkeep of the records: recovery after a crash, retention, purge, backup and restore.

Who may delete what:
- `recover` deletes files no row names (what a crash between file and row left) and
  temp files. Such a file may also be a screening the app is saving right now, so
  only the data directory's owner runs it, at start, before it screens anything.
- `apply_retention` and `purge` delete rows first (one transaction), then the files
  of exactly those rows; safe beside the running app.
- `backup` reads the database through SQLite's online backup API (a consistent
  snapshot, even while screenings are written) and copies the files its rows list;
  it deletes nothing. `restore_backup` writes into a stopped app's data directory,
  holding the owner's lock.
Every deletion, backup and restore is appended to `<data_dir>/audit.log`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from ..fileio import TEMP_SUFFIX, append_audit, write_atomic
from .lock import LOCK_FILE, DataDirLock
from .records import ScreeningStore
from .schema import BACKUP_MANIFEST, DB_NAME, IMAGES, StoreError, record_files

RESTORE_BUSY = "stop the app first (sudo systemctl stop edge-app), restore, then start it again"


def recover(store: ScreeningStore, owner: DataDirLock) -> dict[str, int]:
    """Delete temp files and files no row names (a crash between file and row). Owner only."""
    if not owner.held or owner.data_dir.resolve() != store.data_dir.resolve():
        raise StoreError(f"recovery of {store.data_dir} needs the data directory's lock: only the serving app recovers")
    with store.connection() as db:
        known = {r[0] for r in db.execute("SELECT image_path FROM screenings")}
    stems = {rel.split(".", 1)[0] for rel in known}  # images/<day>/<id>: the image and every derived file stay
    removed_tmp = removed_orphans = 0
    for path in (store.data_dir / IMAGES).rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(store.data_dir).as_posix()
        if path.name.endswith(TEMP_SUFFIX):
            path.unlink(missing_ok=True)
            removed_tmp += 1
        elif rel.split(".", 1)[0] not in stems:
            path.unlink(missing_ok=True)
            removed_orphans += 1
    return {"temp_files": removed_tmp, "orphan_images": removed_orphans}


def apply_retention(store: ScreeningStore, retention_days: float = 0, retention_gb: float = 0) -> int:
    """Delete the oldest records beyond `retention_days` / `retention_gb` (0 = no limit); returns how many."""
    if not retention_days and not retention_gb:
        return 0
    with store.connection() as db:
        doomed: list[sqlite3.Row] = []
        if retention_days:
            doomed += db.execute("SELECT seq, id, image_path FROM screenings WHERE timestamp < ?",
                                 (_stamp_days_ago(retention_days),)).fetchall()
        if retention_gb:
            budget = retention_gb * 1024**3
            total = 0
            seen = {r[0] for r in doomed}
            for r in db.execute("SELECT seq, id, image_path, image_bytes FROM screenings ORDER BY seq DESC"):
                total += r[3]
                if total > budget and r[0] not in seen:
                    doomed.append(r)
    ids = _delete(store, doomed)
    if ids:
        store.audit("retention", deleted=len(ids), retention_days=retention_days, retention_gb=retention_gb, ids=ids)
    return len(ids)


def purge(store: ScreeningStore, older_than_days: float | None = None, everything: bool = False) -> list[str]:
    """Really delete records and their files; returns the deleted ids.

    The one deliberate exception to append-only records (data protection: a
    retention policy or a patient's request). Rows are removed with SQLite
    `secure_delete` (freed pages overwritten) and the WAL is checkpointed and
    truncated, so no copy of a purged row stays in the database files; the
    record's files are unlinked. Every purge is written to `<data_dir>/audit.log`.
    """
    if everything == (older_than_days is not None):
        raise ValueError("purge needs exactly one of: older_than_days, everything")
    if older_than_days is not None and older_than_days < 0:
        raise ValueError("older_than_days must be >= 0")
    with store.connection() as db:
        if everything:
            doomed = db.execute("SELECT seq, id, image_path FROM screenings").fetchall()
        else:
            doomed = db.execute("SELECT seq, id, image_path FROM screenings WHERE timestamp < ?",
                                (_stamp_days_ago(older_than_days or 0.0),)).fetchall()
    ids = _delete(store, doomed)
    with store.connection() as db:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    store.audit("purge", deleted=len(ids), criteria="all" if everything else f"older than {older_than_days:g} days",
                wal_truncated=not busy, ids=ids)
    return ids


def _delete(store: ScreeningStore, rows: list[sqlite3.Row]) -> list[str]:
    """Rows first (one transaction), then their files: a crash in between leaves only orphans for recovery."""
    if not rows:
        return []
    with store.connection() as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM screenings WHERE seq = ?", [(r["seq"],) for r in rows])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    for r in rows:
        for rel in record_files(r["image_path"]):
            (store.data_dir / rel).unlink(missing_ok=True)
    return [r["id"] for r in rows]


# --------------------------------------------------------------------------- backup and restore


def backup(data_dir: str | Path, dest: str | Path, app_version: str = "") -> dict[str, Any]:
    """Consistent copy of the records and their files into the empty directory `dest`.

    The database is read with SQLite's online backup API on a connection of its own (a
    snapshot, consistent while the app writes); then the files every snapshot row lists
    are copied, the image's sha256 checked. Writes nothing into `data_dir` but its audit
    line. Returns a summary, also written to `dest/backup.json`.
    """
    data_dir, dest = Path(data_dir), Path(dest)
    db_file = data_dir / DB_NAME
    if not db_file.is_file():
        raise StoreError(f"no records to back up: {db_file} does not exist (wrong --data-dir?)")
    if dest.exists() and any(dest.iterdir()):
        raise StoreError(f"backup destination {dest} is not empty; choose a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{db_file}?mode=rw", uri=True, timeout=10)
    target = sqlite3.connect(dest / DB_NAME)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        rows = target.execute("SELECT id, image_path, image_sha256 FROM screenings ORDER BY seq").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"database {db_file} cannot be read ({exc})") from None
    finally:
        source.close()
        target.close()
    missing, n_bytes = [], 0
    for record_id, rel, digest in rows:
        try:
            data = (data_dir / rel).read_bytes()
        except OSError:
            missing.append(record_id)
            continue
        if sha256(data).hexdigest() != digest:
            missing.append(record_id)
            continue
        write_atomic(dest / rel, data)
        n_bytes += len(data)
        _copy_derived(data_dir, dest, rel)
    summary = {"created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
               "source": str(data_dir), "records": len(rows), "images": len(rows) - len(missing),
               "image_bytes": n_bytes, "missing_or_damaged_images": missing, "app_version": app_version}
    write_atomic(dest / BACKUP_MANIFEST, json.dumps(summary, indent=2).encode())
    append_audit(data_dir, "backup", app_version, destination=str(dest), records=len(rows), missing=len(missing))
    return summary


def _copy_derived(src: Path, dest: Path, image_rel: str) -> None:
    """The record's derived files (thumbnail, screen rendition) that exist under `src`."""
    for rel in record_files(image_rel)[1:]:
        try:
            data = (src / rel).read_bytes()
        except FileNotFoundError:
            continue
        write_atomic(dest / rel, data)


def verify_backup(src: str | Path) -> dict[str, Any]:
    """Check a backup directory: database integrity and every image present with its sha256."""
    src = Path(src)
    db_file = src / DB_NAME
    if not db_file.is_file():
        raise StoreError(f"{src} is not a backup: {DB_NAME} is missing")
    db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT id, image_path, image_sha256 FROM screenings").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"backup database {db_file} cannot be read ({exc})") from None
    finally:
        db.close()
    if check != "ok":
        raise StoreError(f"backup database {db_file} is damaged (integrity_check: {check})")
    bad = []
    for record_id, rel, digest in rows:
        path = src / rel
        if not path.is_file() or sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(record_id)
    if bad:
        raise StoreError(f"backup {src}: {len(bad)} image(s) missing or damaged (e.g. {bad[0]}); use another backup")
    return {"records": len(rows)}


def restore_backup(src: str | Path, data_dir: str | Path, replace: bool = False, app_version: str = "") -> dict[str, Any]:
    """Restore a backup made by `backup` into `data_dir`, holding its lock (the app must be stopped:
    DataDirBusy says so otherwise).

    The backup is verified first. An existing data directory with records is
    refused unless `replace`; then it is moved aside to `<data_dir>.before-restore-<time>`,
    never deleted.
    """
    src, data_dir = Path(src), Path(data_dir)
    summary = verify_backup(src)
    lock = DataDirLock(data_dir, "edge-app restore", when_busy=RESTORE_BUSY).acquire()
    try:
        n = _count_records(data_dir / DB_NAME)
        if n and not replace:
            raise StoreError(f"data directory {data_dir} already holds {n} screening(s); "
                             "pass --replace to move it aside and restore the backup in its place")
        moved_to = None
        if any(p.name != LOCK_FILE for p in data_dir.iterdir()):
            moved_to = data_dir.with_name(f"{data_dir.name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
            data_dir.rename(moved_to)  # the lock file (and our lock) moves with it; take the new directory's
            lock.release()
            lock = DataDirLock(data_dir, "edge-app restore", when_busy=RESTORE_BUSY).acquire()
        total = _restore_into(src, data_dir, app_version)
        append_audit(data_dir, "restore", app_version, source=str(src), records=total,
                     previous_data_moved_to=str(moved_to) if moved_to else None)
    finally:
        lock.release()
    if total != summary["records"]:
        raise StoreError(f"restore incomplete: backup has {summary['records']} records, restored {total}")
    return {"records": total, "moved_aside": str(moved_to) if moved_to else None}


def _restore_into(src: Path, data_dir: Path, app_version: str) -> int:
    """Copy the backup's database and the files its rows list into the (empty) `data_dir`."""
    (data_dir / IMAGES).mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src / DB_NAME}?mode=ro", uri=True)
    target = sqlite3.connect(data_dir / DB_NAME)
    try:
        source.backup(target)
        rows = target.execute("SELECT image_path FROM screenings").fetchall()
    finally:
        source.close()
        target.close()
    for (rel,) in rows:
        write_atomic(data_dir / rel, (src / rel).read_bytes())
        _copy_derived(src, data_dir, rel)
    store = ScreeningStore(data_dir, app_version=app_version)  # WAL mode and the schema of this version
    try:
        return store.counts()["total"]
    finally:
        store.close()


def _count_records(db_file: Path) -> int:
    if not db_file.is_file():
        return 0
    db = sqlite3.connect(f"file:{db_file}?mode=rw", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT COUNT(*) FROM screenings").fetchone()[0])
    except sqlite3.Error as exc:
        raise StoreError(f"database {db_file} cannot be read ({exc}); move it aside by hand") from None
    finally:
        db.close()


def _stamp_days_ago(days: float) -> str:
    cutoff = datetime.fromtimestamp(time.time() - days * 86400, UTC)
    return cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")
