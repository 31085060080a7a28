"""Screening records: SQLite rows + each record's files under one data directory.

`schema` (what a record is), `records` (`ScreeningStore`: append, read, CSV),
`lock` (the data directory's owner), `maintenance` (recovery, retention, purge,
backup, restore) and `serving` (`ServingStore`: the app's store, the owner).
"""

from .lock import LOCK_FILE, DataDirBusy, DataDirLock
from .maintenance import apply_retention, backup, purge, recover, restore_backup, verify_backup
from .records import ScreeningStore
from .schema import (
    BACKUP_MANIFEST,
    CSV_FIELDS,
    DB_NAME,
    IMAGES,
    SCHEMA,
    DuplicateRequest,
    RecordNotFound,
    ScreeningRecord,
    StoreBusy,
    StoreError,
    StoreFull,
    is_record_id,
    new_record_id,
    record_files,
    thumbnail_path,
)
from .serving import ServingStore

__all__ = [
    "BACKUP_MANIFEST", "CSV_FIELDS", "DB_NAME", "IMAGES", "LOCK_FILE", "SCHEMA", "DataDirBusy", "DataDirLock",
    "DuplicateRequest", "RecordNotFound", "ScreeningRecord", "ScreeningStore", "ServingStore", "StoreBusy",
    "StoreError", "StoreFull", "apply_retention", "backup", "is_record_id", "new_record_id", "purge", "record_files",
    "recover", "restore_backup", "thumbnail_path", "verify_backup",
]
