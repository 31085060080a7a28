"""Screening records: SQLite (WAL) rows + image files under one data directory.

    <data_dir>/screenings.sqlite3
    <data_dir>/images/YYYY-MM-DD/<id>.<ext>      what was screened: an upload's own bytes
                                                 (.jpg, .png, ...), a camera frame's JPEG
    <data_dir>/images/YYYY-MM-DD/<id>.thumb.jpg  a small copy for history pages
    <data_dir>/images/YYYY-MM-DD/<id>.screen.jpg a screen-size rendition (`renditions`), made after the row

Write order makes a crash harmless: the image files are written atomically
(temp file + fsync + rename, then one fsync of the day's directory for both
renames) *before* the row is committed;
start-up recovery deletes image files that no row points to and leftover temp
files. Rows are append-only (an UPDATE trigger refuses changes); a correction is
a new row whose `corrects` names the old one. Retention (keep N days / N GB,
default keep all) and an explicit purge (`edge-app purge`) are the only things
that delete; both are written to `<data_dir>/audit.log`. `backup()` /
`restore_backup()` copy the database with SQLite's online backup API plus the images.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from .decisions import NO_VERDICT, all_decisions

DB_NAME = "screenings.sqlite3"
IMAGES = "images"
DERIVED = (".thumb.jpg", ".screen.jpg")  # files made from a record's image: thumbnail, screen rendition (renditions.py)
AUDIT_LOG = "audit.log"
BACKUP_MANIFEST = "backup.json"
SCHEMA_VERSION = 3  # 2: request_id (one record per capture/upload intent); 3: threshold source, scope, heatmap
MIN_FREE_BYTES = 50 * 1024 * 1024
RETENTION_EVERY_S = 3600.0  # retention also runs at start

log = logging.getLogger(__name__)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

SCHEMA = """
CREATE TABLE IF NOT EXISTS screenings (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    id                     TEXT NOT NULL UNIQUE,
    timestamp              TEXT NOT NULL,
    operator               TEXT NOT NULL DEFAULT '',
    lesion_ref             TEXT NOT NULL DEFAULT '',
    source                 TEXT NOT NULL,
    image_path             TEXT NOT NULL,
    image_sha256           TEXT NOT NULL,
    image_width            INTEGER NOT NULL,
    image_height           INTEGER NOT NULL,
    image_bytes            INTEGER NOT NULL,
    probabilities          TEXT NOT NULL,
    malignant_probability  REAL NOT NULL,
    decision               TEXT NOT NULL,
    threshold              REAL NOT NULL,
    model_sha256           TEXT NOT NULL,
    model_version          TEXT NOT NULL,
    preprocessing_version  TEXT NOT NULL,
    timings_ms             TEXT NOT NULL,
    quality_flags          TEXT NOT NULL,
    quality_metrics        TEXT NOT NULL,
    corrects               TEXT,
    app_version            TEXT NOT NULL,
    request_id             TEXT
);
CREATE INDEX IF NOT EXISTS screenings_lesion ON screenings (lesion_ref, seq);
CREATE INDEX IF NOT EXISTS screenings_corrects ON screenings (corrects);
CREATE TRIGGER IF NOT EXISTS screenings_append_only BEFORE UPDATE ON screenings
BEGIN SELECT RAISE(ABORT, 'screening records are append-only: add a correction instead'); END;
"""

# After the migration (the column may be new): a request id names at most one record.
REQUEST_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS screenings_request ON screenings (request_id) "
                 "WHERE request_id IS NOT NULL")
# Columns added after the first schema, as (name, SQL type + default, schema version): a database made
# by an older version gets them on open (ALTER TABLE ADD COLUMN); old rows read as the default.
ADDED_COLUMNS = (
    ("request_id", "TEXT", 2),
    ("threshold_source", "TEXT NOT NULL DEFAULT 'model'", 3),  # "model" or "site" (edge-app calibrate)
    ("in_scope", "INTEGER", 3),  # 1 / 0, NULL when the model had no scope check
    ("scope_score", "REAL", 3),
    ("explain", "TEXT", 3),  # JSON {"cam": [[...]], "box": [x0, y0, x1, y1]}, NULL without a heatmap head
)

CSV_FIELDS = (
    "id", "timestamp", "operator", "lesion_ref", "source", "decision", "malignant_probability", "threshold",
    "threshold_source", "in_scope", "scope_score",
    "probabilities", "quality_flags", "image_path", "image_sha256", "image_width", "image_height",
    "model_version", "model_sha256", "preprocessing_version", "timings_ms", "corrects", "corrected_by", "app_version",
    "request_id",
)


class StoreError(RuntimeError):
    """The data directory cannot be used. The message says what to do."""


class StoreFull(StoreError):
    """The disk filled up while a screening was being saved (HTTP 507). Nothing was stored."""


class StoreBusy(StoreError):
    """The database stayed locked by another writer past the busy timeout (HTTP 503). Nothing was stored."""


class RecordNotFound(KeyError):
    pass


class DuplicateRequest(StoreError):
    """A record with this request id exists already (`record`); nothing new was stored."""

    def __init__(self, record: ScreeningRecord) -> None:
        super().__init__(f"request {record.request_id} was stored already as {record.id}")
        self.record = record


def new_record_id() -> str:
    """ULID-style id: 48-bit ms timestamp + 80 random bits, Crockford base32 (26 chars).

    Sortable by time and not guessable (80 bits from `secrets`).
    """
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_record_id(text: str) -> bool:
    return len(text) == 26 and all(c in _CROCKFORD for c in text)


@dataclass
class ScreeningRecord:
    """One screening, as stored and as returned by the API (the DESIGN.md record contract)."""

    id: str
    timestamp: str  # UTC, ISO 8601
    operator: str
    lesion_ref: str
    source: str  # "upload" or the camera kind
    image_path: str  # relative to the data dir
    image_sha256: str
    image_width: int
    image_height: int
    image_bytes: int
    probabilities: dict[str, float]
    malignant_probability: float
    decision: str
    threshold: float
    model_sha256: str
    model_version: str
    preprocessing_version: str
    timings_ms: dict[str, float]
    quality_flags: list[str]
    quality_metrics: dict[str, float]
    corrects: str | None = None
    app_version: str = ""
    request_id: str | None = None  # the client's id for one capture/upload intent
    threshold_source: str = "model"  # the threshold in force: the model's own or the site's (edge-app calibrate)
    in_scope: bool | None = None  # None: the model had no scope check
    scope_score: float | None = None
    explain: dict[str, Any] | None = None  # class activation map + analysed square, for the heatmap
    corrected_by: list[str] = field(default_factory=list)  # derived on read, never stored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: sqlite3.Row, corrected_by: list[str] | None = None) -> ScreeningRecord:
        d = dict(row)
        d.pop("seq", None)
        for key in ("probabilities", "timings_ms", "quality_flags", "quality_metrics"):
            d[key] = json.loads(d[key])
        d["explain"] = json.loads(d["explain"]) if d.get("explain") else None
        d["in_scope"] = None if d.get("in_scope") is None else bool(d["in_scope"])
        return cls(**d, corrected_by=corrected_by or [])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, sync_dir: bool = True) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync the directory
    (`sync_dir=False`: the caller fsyncs it once after several renames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        _fsync_dir(path.parent)


class ScreeningStore:
    """Owns the SQLite connection and the image files. Thread-safe (one lock)."""

    def __init__(self, data_dir: str | Path, retention_days: float = 0, retention_gb: float = 0, app_version: str = "") -> None:
        self.data_dir = Path(data_dir)
        self.retention_days = retention_days
        self.retention_gb = retention_gb
        self.app_version = app_version
        try:
            (self.data_dir / IMAGES).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"data directory {self.data_dir} cannot be created ({exc.strerror or exc}); "
                             "choose another with --data-dir or fix its permissions") from None
        self.db_path = self.data_dir / DB_NAME
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted records are overwritten, not just unlinked
            self._db.executescript(SCHEMA)
            self._migrate()
            self._db.execute(REQUEST_INDEX)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.db_path} cannot be opened ({exc}); check the disk and permissions") from None
        self.recovered = self.recover()
        self.apply_retention()
        self._retention_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        """Bring a database written by an older version up to `SCHEMA_VERSION` (columns are only added)."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(screenings)")}
        for name, ddl, version in ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE screenings ADD COLUMN {name} {ddl}")
                log.info("database %s: added column %s (schema %d)", self.db_path, name, version)

    # ------------------------------------------------------------------ writing

    def append(
        self,
        image: bytes,
        thumbnail: bytes,
        *,
        width: int,
        height: int,
        extension: str = "jpg",
        classification: dict[str, Any],
        quality_flags: list[str],
        quality_metrics: dict[str, float],
        operator: str = "",
        lesion_ref: str = "",
        source: str = "upload",
        corrects: str | None = None,
        request_id: str | None = None,
    ) -> ScreeningRecord:
        """Store the image file (`image`: the bytes as screened, named `<id>.<extension>`)
        and its thumbnail atomically, then the row. Returns the record.

        Raises DuplicateRequest (nothing stored) when `request_id` names a record already.
        """
        if corrects is not None and not self.exists(corrects):
            raise RecordNotFound(corrects)
        if not (extension.isascii() and extension.isalnum()):
            raise ValueError(f"image file extension {extension!r} is not plain letters and digits")
        if request_id is not None and (first := self.get_by_request_id(request_id)) is not None:
            raise DuplicateRequest(first)
        record_id = new_record_id()
        now = datetime.now(UTC)
        rel = Path(IMAGES) / now.strftime("%Y-%m-%d") / f"{record_id}.{extension.lower()}"
        path = self.data_dir / rel
        thumb_path = path.with_suffix(".thumb.jpg")
        new_day = not path.parent.is_dir()
        try:
            # fsync each file's data, then the directory once for both renames (a second directory
            # fsync guarded nothing more); a new day's directory entry is made durable too.
            write_atomic(path, image, sync_dir=False)
            write_atomic(thumb_path, thumbnail, sync_dir=False)
            _fsync_dir(path.parent)
            if new_day:
                _fsync_dir(path.parent.parent)
        except OSError as exc:
            path.unlink(missing_ok=True)  # the image may be complete while its thumbnail is not
            thumb_path.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(f"disk full while saving the image under {self.data_dir}; nothing was stored: "
                                "free space (export, back up and purge old screenings) and try again") from None
            raise
        c = classification
        record = ScreeningRecord(
            id=record_id,
            timestamp=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            operator=operator,
            lesion_ref=lesion_ref,
            source=source,
            image_path=rel.as_posix(),
            image_sha256=sha256(image).hexdigest(),
            image_width=int(width),
            image_height=int(height),
            image_bytes=len(image),
            probabilities=c["probabilities"],
            malignant_probability=float(c["malignant_probability"]),
            decision=c["decision"],
            threshold=float(c["threshold"]),
            model_sha256=c["model_sha256"],
            model_version=c["model_version"],
            preprocessing_version=c["preprocessing_version"],
            timings_ms=c["timings_ms"],
            quality_flags=list(quality_flags),
            quality_metrics=dict(quality_metrics),
            corrects=corrects,
            app_version=self.app_version,
            request_id=request_id,
            threshold_source=c.get("threshold_source", "model"),
            in_scope=c.get("in_scope"),
            scope_score=c.get("scope_score"),
            explain=c.get("explain"),
        )
        row = record.to_dict()
        row.pop("corrected_by")
        for key in ("probabilities", "timings_ms", "quality_flags", "quality_metrics"):
            row[key] = json.dumps(row[key], sort_keys=True)
        row["explain"] = None if row["explain"] is None else json.dumps(row["explain"], separators=(",", ":"))
        row["in_scope"] = None if row["in_scope"] is None else int(row["in_scope"])
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self._lock:
                self._db.execute(f"INSERT INTO screenings ({columns}) VALUES ({marks})", tuple(row.values()))
        except BaseException as exc:
            path.unlink(missing_ok=True)
            thumb_path.unlink(missing_ok=True)
            if isinstance(exc, sqlite3.IntegrityError) and request_id is not None:
                first = self.get_by_request_id(request_id)  # another writer stored it in between
                if first is not None:
                    raise DuplicateRequest(first) from None
            if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
                raise StoreBusy("the record database is locked by another program (a backup or purge?); "
                                "nothing was stored: try again in a moment") from None
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                raise StoreFull(f"disk full while saving the record under {self.data_dir}; nothing was stored: "
                                "free space (export, back up and purge old screenings) and try again") from None
            raise
        if time.monotonic() - self._retention_at > RETENTION_EVERY_S:
            self._retention_at = time.monotonic()
            self.apply_retention()
        return record

    # ------------------------------------------------------------------ reading

    def exists(self, record_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM screenings WHERE id = ?", (record_id,)).fetchone() is not None

    def get(self, record_id: str) -> ScreeningRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM screenings WHERE id = ?", (record_id,)).fetchone()
            if row is None:
                raise RecordNotFound(record_id)
            by = [r[0] for r in self._db.execute("SELECT id FROM screenings WHERE corrects = ? ORDER BY seq", (record_id,))]
        return ScreeningRecord.from_row(row, by)

    def get_by_request_id(self, request_id: str) -> ScreeningRecord | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM screenings WHERE request_id = ?", (request_id,)).fetchone()
        return self.get(row[0]) if row is not None else None

    def list(self, limit: int = 50, before: str | None = None, lesion_ref: str | None = None, oldest_first: bool = False) -> list[ScreeningRecord]:
        """Newest first (or oldest first); `before` is a record id (page to older records)."""
        where, params = [], []
        with self._lock:
            if before:
                row = self._db.execute("SELECT seq FROM screenings WHERE id = ?", (before,)).fetchone()
                if row is None:
                    raise RecordNotFound(before)
                where.append("seq < ?")
                params.append(row[0])
            if lesion_ref is not None:
                where.append("lesion_ref = ?")
                params.append(lesion_ref)
            sql = "SELECT * FROM screenings"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += f" ORDER BY seq {'ASC' if oldest_first else 'DESC'} LIMIT ?"
            rows = self._db.execute(sql, (*params, int(limit))).fetchall()
            ids = [r["id"] for r in rows]
            by: dict[str, list[str]] = {}
            if ids:
                marks = ",".join("?" for _ in ids)
                for old, new in self._db.execute(f"SELECT corrects, id FROM screenings WHERE corrects IN ({marks}) ORDER BY seq", ids):
                    by.setdefault(old, []).append(new)
        return [ScreeningRecord.from_row(r, by.get(r["id"])) for r in rows]

    def lesions(self, limit: int = 200) -> list[dict[str, Any]]:
        """Lesion references with their screening count and last visit, most recent first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT lesion_ref, COUNT(*) AS n, MAX(timestamp) AS last FROM screenings WHERE lesion_ref != '' "
                "GROUP BY lesion_ref ORDER BY MAX(seq) DESC LIMIT ?", (limit,)).fetchall()
        return [{"lesion_ref": r[0], "count": r[1], "last": r[2]} for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT decision, COUNT(*) FROM screenings GROUP BY decision").fetchall()
            flagged = self._db.execute("SELECT COUNT(*) FROM screenings WHERE quality_flags != '[]'").fetchone()[0]
        out = {f"decision_{d}": 0 for d in all_decisions()} | {f"decision_{d}": n for d, n in rows}
        out["total"] = sum(n for _, n in rows)
        out["no_verdict"] = sum(n for d, n in rows if d in NO_VERDICT)
        out["quality_flagged"] = flagged
        return out

    def image_file(self, record_id: str, thumbnail: bool = False) -> Path:
        path = self.data_dir / self.get(record_id).image_path
        if thumbnail:
            path = path.with_suffix(".thumb.jpg")
        if not path.is_file():
            raise RecordNotFound(f"image of {record_id}")
        return path

    def iter_csv(self) -> Iterator[str]:
        """CSV of every record, oldest first, with the model and preprocessing provenance of each."""
        buf = io.StringIO()
        writer = csv.writer(buf)

        def flush() -> str:
            text = buf.getvalue()
            buf.seek(0)
            buf.truncate()
            return text

        writer.writerow(CSV_FIELDS)
        yield flush()
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute("SELECT * FROM screenings WHERE seq > ? ORDER BY seq LIMIT 500", (last,)).fetchall()
                if not rows:
                    return
                last = rows[-1]["seq"]
                ids = [r["id"] for r in rows]
                marks = ",".join("?" for _ in ids)
                by: dict[str, list[str]] = {}
                for old, new in self._db.execute(f"SELECT corrects, id FROM screenings WHERE corrects IN ({marks})", ids):
                    by.setdefault(old, []).append(new)
            for r in rows:
                rec = ScreeningRecord.from_row(r, by.get(r["id"])).to_dict()
                values = []
                for name in CSV_FIELDS:
                    v = rec[name]
                    if isinstance(v, (dict, list)):
                        v = json.dumps(v, sort_keys=True) if not (isinstance(v, list) and all(isinstance(x, str) for x in v)) else ";".join(v)
                    values.append(_csv_safe(v))
                writer.writerow(values)
            yield flush()

    # ------------------------------------------------------------------ health and upkeep

    def is_writable(self) -> tuple[bool, str]:
        """(ok, reason): the directory accepts writes, has room, and the database answers."""
        if not os.access(self.data_dir / IMAGES, os.W_OK):
            return False, f"data directory {self.data_dir} is not writable"
        free = shutil.disk_usage(self.data_dir).free
        if free < MIN_FREE_BYTES:
            return False, f"disk almost full ({free // (1024 * 1024)} MB free under {self.data_dir})"
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            return False, f"database error: {exc}"
        return True, "ok"

    def recover(self) -> dict[str, int]:
        """Delete temp files and image files no row points to (a crash between file and row)."""
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT image_path FROM screenings")}
        stems = {rel.rsplit(".", 1)[0] for rel in known}
        removed_tmp = removed_orphans = 0
        for path in (self.data_dir / IMAGES).rglob("*"):
            if not path.is_file():
                continue
            rel = path.relative_to(self.data_dir).as_posix()
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                removed_tmp += 1
            elif rel.endswith(DERIVED):
                if rel[: -len(next(s for s in DERIVED if rel.endswith(s)))] not in stems:
                    path.unlink(missing_ok=True)
                    removed_orphans += 1
            elif rel not in known:
                path.unlink(missing_ok=True)
                removed_orphans += 1
        return {"temp_files": removed_tmp, "orphan_images": removed_orphans}

    def apply_retention(self) -> int:
        """Delete the oldest records beyond `retention_days` / `retention_gb`; returns how many."""
        if not self.retention_days and not self.retention_gb:
            return 0
        with self._lock:
            doomed: list[sqlite3.Row] = []
            if self.retention_days:
                doomed += self._db.execute("SELECT seq, id, image_path FROM screenings WHERE timestamp < ?",
                                           (_stamp_days_ago(self.retention_days),)).fetchall()
            if self.retention_gb:
                budget = self.retention_gb * 1024**3
                total = 0
                seen = {r[0] for r in doomed}
                for r in self._db.execute("SELECT seq, id, image_path, image_bytes FROM screenings ORDER BY seq DESC"):
                    total += r[3]
                    if total > budget and r[0] not in seen:
                        doomed.append(r)
        ids = self._delete(doomed)
        if ids:
            self.audit("retention", deleted=len(ids), retention_days=self.retention_days,
                       retention_gb=self.retention_gb, ids=ids)
        return len(ids)

    def purge(self, older_than_days: float | None = None, everything: bool = False) -> list[str]:
        """Really delete records and their image files; returns the deleted ids.

        The one deliberate exception to append-only records (data protection: a
        retention policy or a patient's request). Rows are removed with SQLite
        `secure_delete` (freed pages overwritten) and the WAL is checkpointed and
        truncated, so no copy of a purged row stays in the database files; the image
        files are unlinked. Every purge is written to `<data_dir>/audit.log`.
        """
        if everything == (older_than_days is not None):
            raise ValueError("purge needs exactly one of: older_than_days, everything")
        if older_than_days is not None and older_than_days < 0:
            raise ValueError("older_than_days must be >= 0")
        with self._lock:
            if everything:
                doomed = self._db.execute("SELECT seq, id, image_path FROM screenings").fetchall()
            else:
                doomed = self._db.execute("SELECT seq, id, image_path FROM screenings WHERE timestamp < ?",
                                          (_stamp_days_ago(older_than_days or 0.0),)).fetchall()
        ids = self._delete(doomed)
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        self.audit("purge", deleted=len(ids), criteria="all" if everything else f"older than {older_than_days:g} days",
                   wal_truncated=not busy, ids=ids)
        return ids

    def _delete(self, rows: list[sqlite3.Row]) -> list[str]:
        """Rows first (one transaction), then their files: a crash in between leaves only orphans for recovery."""
        if not rows:
            return []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM screenings WHERE seq = ?", [(r["seq"],) for r in rows])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        for r in rows:
            path = self.data_dir / r["image_path"]
            path.unlink(missing_ok=True)
            for suffix in DERIVED:
                path.with_suffix(suffix).unlink(missing_ok=True)
        return [r["id"] for r in rows]

    def audit(self, event: str, **fields: Any) -> None:
        """Append one JSON line to `<data_dir>/audit.log` (deletions, backups, restores) and log it."""
        append_audit(self.data_dir, event, self.app_version, **fields)

    # ------------------------------------------------------------------ backup

    def backup(self, dest: str | Path) -> dict[str, Any]:
        """Consistent copy of the records and images into the empty directory `dest`.

        The database is copied with SQLite's online backup API (a snapshot that is
        consistent even while screenings are being written); then every image the
        snapshot names is copied and its sha256 checked. Returns a summary, also
        written to `dest/backup.json`.
        """
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise StoreError(f"backup destination {dest} is not empty; choose a new directory")
        dest.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(dest / DB_NAME)
        try:
            with self._lock:
                self._db.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            rows = target.execute("SELECT id, image_path, image_sha256 FROM screenings ORDER BY seq").fetchall()
        finally:
            target.close()
        missing, n_bytes = [], 0
        for record_id, rel, digest in rows:
            src = self.data_dir / rel
            try:
                data = src.read_bytes()
            except OSError:
                missing.append(record_id)
                continue
            if sha256(data).hexdigest() != digest:
                missing.append(record_id)
                continue
            write_atomic(dest / rel, data)
            n_bytes += len(data)
            thumb = src.with_suffix(".thumb.jpg")
            if thumb.is_file():
                write_atomic((dest / rel).with_suffix(".thumb.jpg"), thumb.read_bytes())
        summary = {"created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                   "source": str(self.data_dir), "records": len(rows), "images": len(rows) - len(missing),
                   "image_bytes": n_bytes, "missing_or_damaged_images": missing, "app_version": self.app_version}
        write_atomic(dest / BACKUP_MANIFEST, json.dumps(summary, indent=2).encode())
        self.audit("backup", destination=str(dest), records=len(rows), missing=len(missing))
        return summary


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


def restore_backup(src: str | Path, data_dir: str | Path, replace: bool = False) -> dict[str, Any]:
    """Restore a backup made by `ScreeningStore.backup` into `data_dir` (the app must be stopped).

    The backup is verified first. An existing data directory with records is
    refused unless `replace`; then it is moved aside to `<data_dir>.before-restore-<time>`,
    never deleted.
    """
    src, data_dir = Path(src), Path(data_dir)
    summary = verify_backup(src)
    moved_to = None
    if (data_dir / DB_NAME).is_file():
        existing = ScreeningStore(data_dir)
        n = existing.counts()["total"]
        existing.close()
        if n and not replace:
            raise StoreError(f"data directory {data_dir} already holds {n} screening(s); "
                             "pass --replace to move it aside and restore the backup in its place")
    if data_dir.exists() and any(data_dir.iterdir()):
        moved_to = data_dir.with_name(f"{data_dir.name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
        data_dir.rename(moved_to)
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
        thumb = (src / rel).with_suffix(".thumb.jpg")
        if thumb.is_file():
            write_atomic((data_dir / rel).with_suffix(".thumb.jpg"), thumb.read_bytes())
    store = ScreeningStore(data_dir)  # WAL mode back on, recovery run
    total = store.counts()["total"]
    store.audit("restore", source=str(src), records=total, previous_data_moved_to=str(moved_to) if moved_to else None)
    store.close()
    if total != summary["records"]:
        raise StoreError(f"restore incomplete: backup has {summary['records']} records, restored {total}")
    return {"records": total, "moved_aside": str(moved_to) if moved_to else None}


def _stamp_days_ago(days: float) -> str:
    cutoff = datetime.fromtimestamp(time.time() - days * 86400, UTC)
    return cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in free text (operator, lesion reference)."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def append_audit(data_dir: str | Path, event: str, app_version: str, **fields: Any) -> None:
    """Append one JSON line to `<data_dir>/audit.log` and log it. Used by the store (deletions,
    backups, restores) and by model installs, rollbacks and fallbacks, which run without a store."""
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), "event": event,
             "app_version": app_version} | fields
    with open(Path(data_dir) / AUDIT_LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.info("%s: %s", event, {k: v for k, v in fields.items() if k != "ids"})
