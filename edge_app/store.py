"""Screening records: SQLite (WAL) rows + JPEG files under one data directory.

    <data_dir>/screenings.sqlite3
    <data_dir>/images/YYYY-MM-DD/<id>.jpg        the screened frame
    <data_dir>/images/YYYY-MM-DD/<id>.thumb.jpg  a small copy for history pages

Write order makes a crash harmless: the image files are written atomically
(temp file + fsync + rename + directory fsync) *before* the row is committed;
start-up recovery deletes image files that no row points to and leftover temp
files. Rows are append-only (an UPDATE trigger refuses changes); a correction is
a new row whose `corrects` names the old one. Retention (keep N days / N GB,
default keep all) is the only thing that deletes.
"""

from __future__ import annotations

import csv
import io
import json
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

DB_NAME = "screenings.sqlite3"
IMAGES = "images"
SCHEMA_VERSION = 1
MIN_FREE_BYTES = 50 * 1024 * 1024
RETENTION_EVERY_S = 3600.0  # retention also runs at start

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
    app_version            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS screenings_lesion ON screenings (lesion_ref, seq);
CREATE INDEX IF NOT EXISTS screenings_corrects ON screenings (corrects);
CREATE TRIGGER IF NOT EXISTS screenings_append_only BEFORE UPDATE ON screenings
BEGIN SELECT RAISE(ABORT, 'screening records are append-only: add a correction instead'); END;
"""

CSV_FIELDS = (
    "id", "timestamp", "operator", "lesion_ref", "source", "decision", "malignant_probability", "threshold",
    "probabilities", "quality_flags", "image_path", "image_sha256", "image_width", "image_height",
    "model_version", "model_sha256", "preprocessing_version", "timings_ms", "corrects", "corrected_by", "app_version",
)


class StoreError(RuntimeError):
    """The data directory cannot be used. The message says what to do."""


class RecordNotFound(KeyError):
    pass


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
    corrected_by: list[str] = field(default_factory=list)  # derived on read, never stored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: sqlite3.Row, corrected_by: list[str] | None = None) -> ScreeningRecord:
        d = dict(row)
        d.pop("seq", None)
        for key in ("probabilities", "timings_ms", "quality_flags", "quality_metrics"):
            d[key] = json.loads(d[key])
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


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync the directory."""
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
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.db_path} cannot be opened ({exc}); check the disk and permissions") from None
        self.recovered = self.recover()
        self.apply_retention()
        self._retention_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ writing

    def append(
        self,
        jpeg: bytes,
        thumbnail: bytes,
        *,
        width: int,
        height: int,
        classification: dict[str, Any],
        quality_flags: list[str],
        quality_metrics: dict[str, float],
        operator: str = "",
        lesion_ref: str = "",
        source: str = "upload",
        corrects: str | None = None,
    ) -> ScreeningRecord:
        """Store the image atomically, then the row. Returns the record."""
        if corrects is not None and not self.exists(corrects):
            raise RecordNotFound(corrects)
        record_id = new_record_id()
        now = datetime.now(UTC)
        rel = Path(IMAGES) / now.strftime("%Y-%m-%d") / f"{record_id}.jpg"
        path = self.data_dir / rel
        write_atomic(path, jpeg)
        write_atomic(path.with_suffix(".thumb.jpg"), thumbnail)
        c = classification
        record = ScreeningRecord(
            id=record_id,
            timestamp=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            operator=operator,
            lesion_ref=lesion_ref,
            source=source,
            image_path=rel.as_posix(),
            image_sha256=sha256(jpeg).hexdigest(),
            image_width=int(width),
            image_height=int(height),
            image_bytes=len(jpeg),
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
        )
        row = record.to_dict()
        row.pop("corrected_by")
        for key in ("probabilities", "timings_ms", "quality_flags", "quality_metrics"):
            row[key] = json.dumps(row[key], sort_keys=True)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self._lock:
                self._db.execute(f"INSERT INTO screenings ({columns}) VALUES ({marks})", tuple(row.values()))
        except BaseException:
            path.unlink(missing_ok=True)
            path.with_suffix(".thumb.jpg").unlink(missing_ok=True)
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
        out = {f"decision_{d}": n for d, n in rows}
        out["total"] = sum(n for _, n in rows)
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
        removed_tmp = removed_orphans = 0
        for path in (self.data_dir / IMAGES).rglob("*"):
            if not path.is_file():
                continue
            rel = path.relative_to(self.data_dir).as_posix()
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                removed_tmp += 1
            elif rel.endswith(".thumb.jpg"):
                if rel[: -len(".thumb.jpg")] + ".jpg" not in known:
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
        doomed: list[sqlite3.Row] = []
        with self._lock:
            if self.retention_days:
                cutoff = datetime.fromtimestamp(time.time() - self.retention_days * 86400, UTC)
                stamp = cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                doomed += self._db.execute("SELECT seq, image_path FROM screenings WHERE timestamp < ?", (stamp,)).fetchall()
            if self.retention_gb:
                budget = self.retention_gb * 1024**3
                total = 0
                seen = {r[0] for r in doomed}
                for r in self._db.execute("SELECT seq, image_path, image_bytes FROM screenings ORDER BY seq DESC"):
                    total += r[2]
                    if total > budget and r[0] not in seen:
                        doomed.append(r)
            for r in doomed:
                self._db.execute("DELETE FROM screenings WHERE seq = ?", (r[0],))
        for r in doomed:
            path = self.data_dir / r[1]
            path.unlink(missing_ok=True)
            path.with_suffix(".thumb.jpg").unlink(missing_ok=True)
        return len(doomed)


def _csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in free text (operator, lesion reference)."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
