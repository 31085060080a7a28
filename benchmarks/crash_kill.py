"""Crash safety: SIGKILL a process that is screening, N times at random points, and check nothing is lost.

    .venv/bin/python benchmarks/crash_kill.py            # 100 kills (a few minutes)
    .venv/bin/python benchmarks/crash_kill.py --kills 10 --seed 1

A child process opens the data directory as `edge-app serve` does (`ServingStore`:
the owner's lock, start-up recovery) and screens synthetic lesion JPEGs through
the app's own use case, `ScreeningService.screen_upload` (inference worker,
quality gate, preprocess, TFLite classify, record append), printing each record
id once it is stored. The parent kills it with SIGKILL at a random moment (mostly
while screening, sometimes during start-up and recovery), then opens the store
as the next `edge-app serve` would (lock, recovery) and checks:

- every committed record has its image and thumbnail, and the image's sha256 matches;
- no record points to a missing file;
- no orphan image or temp file remains after recovery;
- `PRAGMA integrity_check` is ok;
- every id the child reported as stored survived the kill (synchronous=FULL durability).

Exit status 0 only when every check passed after every kill, at least one record
was committed, and every child was still running when the parent killed it (a
child that dies on its own proves nothing: its stderr is shown).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from hashlib import sha256
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(data_dir: str, model: str) -> None:
    import cv2
    import numpy as np

    from edge_app.camera import make_camera
    from edge_app.camera.loop import CaptureLoop
    from edge_app.images import encode_jpeg
    from edge_app.runtime import Classifier
    from edge_app.screening import ScreeningService
    from edge_app.store import ServingStore

    uploads = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        img = np.clip(np.full((768, 1024, 3), (150, 175, 215), np.float32) + rng.normal(0, 8, (768, 1024, 3)), 0, 255)
        img = img.astype(np.uint8)
        cv2.ellipse(img, (512 + seed * 10, 384), (160, 120), seed * 30.0, 0, 360, (60, 55, 95), -1)
        uploads.append(encode_jpeg(img, 92))
    store = ServingStore(data_dir)  # the owner's lock and start-up recovery, as `edge-app serve` opens it
    service = ScreeningService(Classifier(model, num_threads=1), store, CaptureLoop(make_camera("none")))
    service.start()
    print("READY", flush=True)
    i = 0
    while True:
        record = service.screen_upload(uploads[i % len(uploads)], operator="crash-test", lesion_ref=f"L-{i}")
        print(f"OK {record.id}", flush=True)
        i += 1


def check_files(data_dir: Path) -> dict:
    """Every row's image (sha256 as the row names it) and thumbnail present; no file under images/ that
    no row lists. Returns {"ids": row ids, "orphans": count, "problems": [...]} (orphans listed there too)."""
    from edge_app.store import IMAGES, record_files

    db = sqlite3.connect(data_dir / "screenings.sqlite3")
    rows = db.execute("SELECT id, image_path, image_sha256 FROM screenings").fetchall()
    db.close()
    problems, listed = [], set()
    for record_id, rel, digest in rows:
        files = record_files(rel)
        listed |= set(files)
        image, thumb = data_dir / files[0], data_dir / files[1]
        if not image.is_file():
            problems.append(f"{record_id}: image missing")
        elif sha256(image.read_bytes()).hexdigest() != digest:
            problems.append(f"{record_id}: image sha256 differs")
        if not thumb.is_file():
            problems.append(f"{record_id}: thumbnail missing")
    on_disk = {p.relative_to(data_dir).as_posix() for p in (data_dir / IMAGES).rglob("*") if p.is_file()}
    orphans = sorted(on_disk - listed)
    problems += [f"orphan file: {o}" for o in orphans]
    return {"ids": {r[0] for r in rows}, "orphans": len(orphans), "problems": problems}


def verify(data_dir: Path, acknowledged: set[str]) -> dict:
    from edge_app.store import ServingStore

    store = ServingStore(data_dir)  # lock + start-up recovery, exactly as the next `edge-app serve` runs it
    recovered = store.recovered
    store.close()
    db = sqlite3.connect(data_dir / "screenings.sqlite3")
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    files = check_files(data_dir)  # after recovery: an orphan here is one recovery missed
    problems = [f"integrity_check: {integrity}"] if integrity != "ok" else []
    problems += files["problems"]
    problems += [f"{lost}: reported stored, missing after the kill" for lost in sorted(acknowledged - files["ids"])]
    return {"records": len(files["ids"]), "recovered": recovered, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-delay", type=float, default=1.2, help="kill within this many seconds of READY")
    parser.add_argument("--model", default=None, help="default: models/student_fp16.tflite, else the tiny test model")
    parser.add_argument("--data-dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--child", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = args.model or str(next(p for p in (ROOT / "models" / "student_fp16.tflite",
                                                ROOT / "tests" / "fixtures" / "tiny_fp16.tflite") if p.is_file()))
    if args.child:
        child(args.child, model)
        return 0
    rng = random.Random(args.seed)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="dermaedge-crash-"))
    acknowledged: set[str] = set()
    totals = {"kills": 0, "killed_during_startup": 0, "temp_files_removed": 0, "orphan_images_removed": 0,
              "kills_leaving_debris": 0, "failed_checks": 0}
    problems: list[str] = []
    t0 = time.monotonic()
    stderr_file = data_dir.with_name(data_dir.name + ".child-stderr.txt")
    for k in range(args.kills):
        with open(stderr_file, "w") as err:
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(data_dir), "--model", model],
                                    stdout=subprocess.PIPE, stderr=err, text=True)
        during_startup = rng.random() < 0.15
        if during_startup:  # somewhere in imports, model load, store open + recovery
            time.sleep(rng.uniform(0.0, 2.0))
        else:
            line = proc.stdout.readline()
            if line.strip() != "READY":
                proc.kill()
                proc.wait()
                return _child_failed(k, "did not start", stderr_file)
            time.sleep(rng.uniform(0.0, args.max_delay))
        if proc.poll() is not None:
            return _child_failed(k, f"exited by itself (status {proc.returncode}) before the kill", stderr_file)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        if proc.returncode != -signal.SIGKILL:
            return _child_failed(k, f"ended with status {proc.returncode}, not by the kill", stderr_file)
        acknowledged |= {ln.split()[1] for ln in out.splitlines() if ln.startswith("OK ")}
        result = verify(data_dir, acknowledged)
        totals["kills"] += 1
        totals["killed_during_startup"] += during_startup
        totals["temp_files_removed"] += result["recovered"]["temp_files"]
        totals["orphan_images_removed"] += result["recovered"]["orphan_images"]
        totals["kills_leaving_debris"] += bool(sum(result["recovered"].values()))
        if result["problems"]:
            totals["failed_checks"] += 1
            problems += [f"kill {k}: {p}" for p in result["problems"]]
        print(f"kill {k + 1:3d}/{args.kills}: records {result['records']:4d}  recovered {result['recovered']}"
              f"{'  PROBLEMS ' + str(result['problems'][:3]) if result['problems'] else ''}", flush=True)
    summary = totals | {"records_committed": len(acknowledged), "records_in_store": result["records"],
                        "integrity_check": "ok" if not any("integrity" in p for p in problems) else "FAILED",
                        "problems": len(problems), "seconds": round(time.monotonic() - t0, 1), "data_dir": str(data_dir)}
    print(json.dumps(summary, indent=2))
    for p in problems[:20]:
        print("PROBLEM", p, file=sys.stderr)
    if not acknowledged:
        print("PROBLEM no record was committed: the kills proved nothing (too short a --max-delay?)", file=sys.stderr)
        return 1
    return 0 if not problems else 1


def _child_failed(k: int, what: str, stderr_file: Path) -> int:
    tail = stderr_file.read_text(errors="replace").strip().splitlines()[-15:]
    print(f"kill {k}: the child {what}; its stderr ends:\n  " + "\n  ".join(tail), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
