"""The records: one SQLite (WAL) database + each record's files, appended and read.

Write order makes a crash harmless: the image files are written atomically
(temp file + fsync + rename, then one fsync of the day's directory for both
renames) *before* the row is committed. A file no row names is therefore what a
crash (or a screening still being saved) left; only the data directory's owner
deletes such files, at start (`maintenance.recover`, run by `ServingStore`).
Opening a `ScreeningStore` never deletes anything, so a maintenance command may
open one beside the running app. Rows are append-only (an UPDATE trigger refuses
changes); a correction is a new row whose `corrects` names the old one.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from ..decisions import NO_VERDICT, all_decisions
from ..fileio import append_audit, fsync_dir, write_atomic
from .schema import (
    ADDED_COLUMNS,
    CSV_FIELDS,
    DB_NAME,
    IMAGES,
    REQUEST_INDEX,
    SCHEMA,
    SCHEMA_VERSION,
    DuplicateRequest,
    RecordNotFound,
    ScreeningRecord,
    StoreBusy,
    StoreError,
    StoreFull,
    new_record_id,
    record_files,
    thumbnail_path,
)

MIN_FREE_BYTES = 50 * 1024 * 1024

log = logging.getLogger(__name__)


class ScreeningStore:
    """Owns one SQLite connection and writes each record's files. Thread-safe (one lock).

    Any number of processes may open one (the app, `edge-app purge`, a test); it never
    deletes a file it did not write. The app's own store is `ServingStore`."""

    def __init__(self, data_dir: str | Path, app_version: str = "") -> None:
        self.data_dir = Path(data_dir)
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

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, held under the store's lock (for maintenance: retention, purge, recovery)."""
        with self._lock:
            yield self._db

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
        and its thumbnail atomically, then the row (`_insert`). Returns the record.

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
        self._write_files(rel.as_posix(), image, thumbnail)
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
        self._insert(record)
        return record

    def _write_files(self, rel: str, image: bytes, thumbnail: bytes) -> None:
        """The image and its thumbnail, durable before any row names them; on failure neither is left."""
        path = self.data_dir / rel
        thumb_path = self.data_dir / thumbnail_path(rel)
        new_day = not path.parent.is_dir()
        try:
            # fsync each file's data, then the directory once for both renames (a second directory
            # fsync guarded nothing more); a new day's directory entry is made durable too.
            write_atomic(path, image, sync_dir=False)
            write_atomic(thumb_path, thumbnail, sync_dir=False)
            fsync_dir(path.parent)
            if new_day:
                fsync_dir(path.parent.parent)
        except OSError as exc:
            self._remove_files(rel)  # the image may be complete while its thumbnail is not
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(f"disk full while saving the image under {self.data_dir}; nothing was stored: "
                                "free space (export, back up and purge old screenings) and try again") from None
            raise

    def _remove_files(self, rel: str) -> None:
        for name in record_files(rel):
            (self.data_dir / name).unlink(missing_ok=True)

    def _insert(self, record: ScreeningRecord) -> None:
        """Commit the row of a record whose files are written; on failure remove those files."""
        request_id = record.request_id
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
            self._remove_files(record.image_path)
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

    def list(self, limit: int = 50, before: str | None = None, lesion_ref: str | None = None,
             oldest_first: bool = False) -> list[ScreeningRecord]:
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
                sql = f"SELECT corrects, id FROM screenings WHERE corrects IN ({marks}) ORDER BY seq"
                for old, new in self._db.execute(sql, ids):
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
        rel = self.get(record_id).image_path
        path = self.data_dir / (thumbnail_path(rel) if thumbnail else rel)
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
                    if isinstance(v, list) and all(isinstance(x, str) for x in v):
                        v = ";".join(v)
                    elif isinstance(v, (dict, list)):
                        v = json.dumps(v, sort_keys=True)
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

    def audit(self, event: str, **fields: Any) -> None:
        """Append one JSON line to `<data_dir>/audit.log` (deletions, backups, restores) and log it."""
        append_audit(self.data_dir, event, self.app_version, **fields)


def _csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in free text (operator, lesion reference)."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value

