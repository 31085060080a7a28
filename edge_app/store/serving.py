"""The serving app's store: it owns the data directory for as long as it runs.

`ServingStore` takes the data directory's lock (a second `edge-app serve` on the
same directory is refused), then recovers what a crash left (files no row
names, temp files) before the first screening, and applies retention at start
and hourly. Every other user of the records opens a plain `ScreeningStore`,
which never deletes a file it did not write.
"""

from __future__ import annotations

import time
from pathlib import Path

from .lock import DataDirLock
from .maintenance import apply_retention, recover
from .records import ScreeningStore
from .schema import ScreeningRecord

RETENTION_EVERY_S = 3600.0  # retention also runs at start
SERVE_BUSY = "stop that app first (sudo systemctl stop edge-app) or choose another --data-dir"


class ServingStore(ScreeningStore):
    def __init__(self, data_dir: str | Path, retention_days: float = 0, retention_gb: float = 0,
                 app_version: str = "") -> None:
        self.owner = DataDirLock(data_dir, "edge-app serve", when_busy=SERVE_BUSY).acquire()
        try:
            super().__init__(data_dir, app_version=app_version)
        except BaseException:
            self.owner.release()
            raise
        self.retention_days = retention_days
        self.retention_gb = retention_gb
        try:
            self.recovered = recover(self, self.owner)
            self.apply_retention()
        except BaseException:
            self.close()
            raise
        self._retention_at = time.monotonic()

    def apply_retention(self) -> int:
        return apply_retention(self, self.retention_days, self.retention_gb)

    def _insert(self, record: ScreeningRecord) -> None:
        super()._insert(record)
        if time.monotonic() - self._retention_at > RETENTION_EVERY_S:
            self._retention_at = time.monotonic()
            self.apply_retention()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.owner.release()
