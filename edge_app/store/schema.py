"""What a screening record is: the database schema, the files of a record, ids, errors.

    <data_dir>/screenings.sqlite3
    <data_dir>/images/YYYY-MM-DD/<id>.<ext>         what was screened: an upload's own bytes
                                                    (.jpg, .png, ...), a camera frame's JPEG
    <data_dir>/images/YYYY-MM-DD/<id>.thumb.jpg     a small copy for history pages
    <data_dir>/images/YYYY-MM-DD/<id>.screen.jpg    a screen-size rendition (when the app stores one)

`record_files` is the one list of a record's files: recovery keeps them, backup
and restore copy them, purge and retention delete them.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

DB_NAME = "screenings.sqlite3"
IMAGES = "images"
BACKUP_MANIFEST = "backup.json"
SCHEMA_VERSION = 3  # 2: request_id (one record per capture/upload intent); 3: threshold source, scope, heatmap
THUMBNAIL_SUFFIX = ".thumb.jpg"
SCREEN_SUFFIX = ".screen.jpg"  # the screen rendition (`renditions`)
# Files derived from a record's image, named `<id><suffix>` beside it. A new rendition is added here
# and nowhere else: recovery, backup, restore, purge and retention all read this tuple.
DERIVED_SUFFIXES = (THUMBNAIL_SUFFIX, SCREEN_SUFFIX)

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


def record_files(image_path: str) -> list[str]:
    """Every file of the record whose image is `image_path` (relative to the data dir, posix):
    the image first, then its derived files (thumbnail, screen rendition), which may be absent."""
    image = PurePosixPath(image_path)
    stem = image.name.split(".", 1)[0]
    return [image.as_posix(), *(image.with_name(stem + suffix).as_posix() for suffix in DERIVED_SUFFIXES)]


def thumbnail_path(image_path: str) -> str:
    image = PurePosixPath(image_path)
    return image.with_name(image.name.split(".", 1)[0] + THUMBNAIL_SUFFIX).as_posix()
