"""The data directory's owner: an exclusive `flock` on `<data_dir>/owner.lock`.

The serving process holds it for as long as it runs; only the holder may delete
files no row names (start-up recovery) or apply retention. `edge-app restore`
takes it too, so it cannot run under a serving app. The kernel drops the lock
when the process ends, however it ends (kill -9 included): a stale lock file is
harmless, and the next owner simply takes it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Self

from .schema import StoreError

LOCK_FILE = "owner.lock"


class DataDirBusy(StoreError):
    """Another process owns the data directory (the message names it and what to do)."""


class DataDirLock:
    """`with DataDirLock(data_dir, "edge-app serve"):` or `acquire()` / `release()`.

    The holder's pid and purpose are written into the lock file, so a refusal can say who holds it."""

    def __init__(self, data_dir: str | Path, purpose: str, when_busy: str = "stop it first") -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self.purpose = purpose
        self.when_busy = when_busy
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> Self:
        """Take the lock or raise DataDirBusy at once (never waits)."""
        if self._fh is not None:
            return self
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115  (held open: the flock lives as long as the file)
            except PermissionError:  # made by another user (a restore run with sudo): a read-only fd locks as well
                fh = open(self.path, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise StoreError(f"data directory {self.data_dir} cannot be used ({exc.strerror or exc}); "
                             "choose another with --data-dir or fix its permissions") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise DataDirBusy(f"data directory {self.data_dir} is in use by {holder}: {self.when_busy}") from None
        except BaseException:
            fh.close()
            raise
        if fh.writable():
            fh.seek(0)
            fh.truncate()
            fh.write(f"{self.purpose} (pid {os.getpid()})\n")
            fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Drop the lock (closing the file drops the flock). The file stays: removing it would race a new owner."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
