"""What each fsync of a screening's save costs, and what it guards.

    .venv/bin/python benchmarks/store_fsync.py                 # 50 saves of a 12 MP upload in a temp dir
    .venv/bin/python benchmarks/store_fsync.py --dir /var/lib/edge-app-bench --saves 100

Appends records through `ScreeningStore.append` (the app's own code) with the
bytes of a 12 MP JPEG and a thumbnail, timing every `os.fsync` it makes (by
what it syncs) and the SQLite commit (WAL, synchronous=FULL), and prints the
p50 / p90 / max of each in ms. Run it on the device's own disk: fsync cost is
a property of the storage (SD card, SSD, tmpfs), not of the code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edge_app.bench import synthetic_jpeg
from edge_app.store import ScreeningStore

CLASSIFICATION = {"probabilities": {"benign": 0.7, "malignant": 0.3}, "malignant_probability": 0.3, "threshold": 0.4,
                  "decision": "benign", "model_sha256": "0" * 64, "model_version": "bench", "preprocessing_version": "1.0",
                  "timings_ms": {}}


class TimedConnection:
    """The store's sqlite3 connection, with the INSERT (the commit, autocommit mode) timed."""

    def __init__(self, db, samples: dict[str, list[float]]) -> None:
        self._db, self._samples = db, samples

    def execute(self, sql, *args):
        t0 = time.perf_counter()
        out = self._db.execute(sql, *args)
        if sql.startswith("INSERT"):
            self._samples["sqlite commit (WAL, synchronous=FULL)"].append((time.perf_counter() - t0) * 1000.0)
        return out

    def __getattr__(self, name):
        return getattr(self._db, name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="data directory to use (default: a new temp dir, removed after)")
    ap.add_argument("--saves", type=int, default=50, help="records to append")
    args = ap.parse_args()
    data_dir = args.dir or Path(tempfile.mkdtemp(prefix="dermaedge-fsync-"))
    image, thumb = synthetic_jpeg((4000, 3000)), synthetic_jpeg((213, 160), 80)
    samples: dict[str, list[float]] = {k: [] for k in (
        "fsync image file", "fsync thumbnail file", "fsync day directory (both renames)",
        "fsync images/ (a new day's directory)", "sqlite commit (WAL, synchronous=FULL)", "append total")}
    order: list[str] = []
    real_fsync = os.fsync

    def timed_fsync(fd: int) -> None:
        t0 = time.perf_counter()
        real_fsync(fd)
        order.append(f"{(time.perf_counter() - t0) * 1000.0}")

    store = ScreeningStore(data_dir)
    store._db = TimedConnection(store._db, samples)
    labels = ["fsync image file", "fsync thumbnail file", "fsync day directory (both renames)",
              "fsync images/ (a new day's directory)"]
    os.fsync = timed_fsync  # fileio.write_atomic / fsync_dir call os.fsync
    try:
        for _ in range(args.saves):
            order.clear()
            t0 = time.perf_counter()
            store.append(image, thumb, width=4000, height=3000, classification=CLASSIFICATION, quality_flags=[],
                         quality_metrics={})
            samples["append total"].append((time.perf_counter() - t0) * 1000.0)
            for label, ms in zip(labels, order):
                samples[label].append(float(ms))
    finally:
        os.fsync = real_fsync
        store.close()
    report = {"saves": args.saves, "image_bytes": len(image), "dir": str(data_dir),
              "ms": {k: {"count": len(v), "p50": round(statistics.median(v), 3),
                         "p90": round(sorted(v)[int(0.9 * (len(v) - 1))], 3),
                         "max": round(max(v), 3)} for k, v in samples.items() if v}}
    print(json.dumps(report, indent=2))
    if args.dir is None:
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
    if not samples["append total"]:
        print("error: no work done: no record was appended (--saves 0?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
