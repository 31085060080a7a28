"""Maintenance while screening: backup, calibrate --apply and purge in a loop against a running app.

    .venv/bin/python benchmarks/maintenance_race.py                    # 300 screenings
    .venv/bin/python benchmarks/maintenance_race.py --screenings 60

Starts `python -m edge_app.cli.serve` on loopback (an image-folder camera, a fresh
data directory) and screens N times, half camera captures and half uploads, from
two client threads. Meanwhile three more threads each run one of the maintenance
commands a clinic runs beside the app, as its own process, again and again until
the screenings are done: `edge-app backup DEST`, `edge-app calibrate LABELS.csv
--apply` and `edge-app purge --older-than 3650 --yes`. Then it checks:

- every screening was answered 201 and every committed row is in the database
  (0 lost), each once;
- every row has its image and thumbnail, the image's sha256 as the row names it;
- no file under images/ that no row lists (0 orphans) and no temp file;
- every maintenance command exited 0; every backup passes `verify_backup`;
  audit.log holds one line per command run;
- the app exits 0 on SIGTERM and the database passes integrity_check.

The calibration set is 40 malignant + 20 benign real images from
../shared/data/isic_archive when present; without it, synthetic images calibrated
on the tiny test model (`--model`). Prints JSON; exits non-zero on any problem or
when no screening or no run of any command was done.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
from crash_kill import check_files
from load import HOST, free_port, lesion, multipart, request, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "isic_archive"
TINY_MODEL = ROOT / "tests" / "fixtures" / "tiny_fp16.tflite"


def calibration_set(work: Path) -> tuple[Path, Path, list[str]]:
    """(labels.csv, root, extra calibrate args): real images when ../shared/data is here."""
    out = work / "calibration"
    out.mkdir()
    if (SHARED / "labels.csv").is_file():
        with open(SHARED / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        chosen = [r for r in rows if r["label"] == "malignant"][:40] + [r for r in rows if r["label"] == "benign"][:20]
        lines = ["file,label,lesion_id"] + [f"{r['file']},{r['label']},{r['lesion_id']}" for r in chosen]
        (out / "labels.csv").write_text("\n".join(lines) + "\n")
        return out / "labels.csv", SHARED, []
    lines = ["file,label"]
    for i in range(40):
        cv2.imwrite(str(out / f"{i}.png"), lesion(160, 120, 500 + i))
        lines.append(f"{i}.png,{'malignant' if i < 30 else 'benign'}")
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    return out / "labels.csv", out, ["--model", str(TINY_MODEL)]


def edge_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_app", *args], check=False, capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=dict(os.environ, EDGE_APP_ACCESS_TOKEN=""))


def maintenance_threads(data: Path, work: Path, labels: Path, root: Path, extra: list[str], stop: threading.Event,
                        runs: dict[str, int], problems: list[str]) -> list[threading.Thread]:
    """One thread per command, each running it at least once and again until `stop`; each backup verified, then removed."""
    from edge_app.store import verify_backup

    commands = {
        "backup": lambda n: ["backup", str(work / "backups" / str(n)), "--data-dir", str(data)],
        "calibrate": lambda n: ["calibrate", str(labels), "--root", str(root), "--apply", "--bootstrap", "50",
                                "--threads", "1", "--data-dir", str(data), *extra],
        "purge": lambda n: ["purge", "--older-than", "3650", "--yes", "--data-dir", str(data)],
    }

    def loop(name: str) -> None:
        n = 0
        while n == 0 or not stop.is_set():  # at least once, then until the screenings are done
            result = edge_app(*commands[name](n))
            runs[name] += 1
            if result.returncode != 0:
                problems.append(f"{name} run {n} exited {result.returncode}: {result.stderr.strip()[-300:]}")
            if name == "backup" and result.returncode == 0:
                dest = work / "backups" / str(n)
                try:
                    runs["backup_records"] += verify_backup(dest)["records"]
                except Exception as exc:  # noqa: BLE001 - a bad backup is a finding
                    problems.append(f"backup {n} does not verify: {exc}")
                shutil.rmtree(dest, ignore_errors=True)
            n += 1

    return [threading.Thread(target=loop, args=(name,), name=name) for name in commands]


def screen(port: int, jobs: list[dict], frames: list[bytes]) -> None:
    for job in jobs:
        fields = {"operator": job["operator"], "request_id": job["operator"]}
        image = frames[job["i"] % len(frames)] if job["kind"] == "upload" else None
        try:
            status, body = request(port, "POST", "/api/screenings", *multipart(fields, image))
            job["status"], job["response"] = status, json.loads(body)
        except Exception as exc:  # noqa: BLE001 - counted as lost
            job["status"], job["response"] = None, {"error": repr(exc)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenings", type=int, default=300)
    parser.add_argument("--model", default=None, help="the app's model (default: the shipped one, else the tiny test model)")
    args = parser.parse_args()
    if not 1 <= args.screenings <= 5000:
        parser.error("--screenings must be 1..5000")
    model = args.model or str(next(p for p in (ROOT / "models" / "student_fp16.tflite", TINY_MODEL) if p.is_file()))
    work = Path(tempfile.mkdtemp(prefix="dermaedge-maint-"))
    data = work / "data"
    (work / "frames").mkdir()
    for i in range(3):
        cv2.imwrite(str(work / "frames" / f"{i}.jpg"), lesion(800, 600, 100 + i))
    uploads = [cv2.imencode(".jpg", lesion(640 + 16 * i, 480, i))[1].tobytes() for i in range(4)]
    labels, root, extra = calibration_set(work)
    port = free_port()
    log_file = open(work / "serve.log", "w")  # noqa: SIM115 - closed in the finally below
    server = subprocess.Popen([sys.executable, "-m", "edge_app.cli.serve", "--host", HOST, "--port", str(port),
                               "--camera", f"folder:{work / 'frames'}", "--data-dir", str(data), "--model", model],
                              stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT,
                              env=dict(os.environ, EDGE_APP_ACCESS_TOKEN=""))
    problems: list[str] = []
    runs = {"backup": 0, "calibrate": 0, "purge": 0, "backup_records": 0}
    try:
        if not wait_healthy(server, port, work):
            return 2
        tag = secrets.token_hex(4)
        jobs = [{"i": i, "kind": "upload" if i % 2 else "capture", "operator": f"race-{tag}-{i}"}
                for i in range(args.screenings)]
        stop = threading.Event()
        upkeep = maintenance_threads(data, work, labels, root, extra, stop, runs, problems)
        clients = [threading.Thread(target=screen, args=(port, jobs[k::2], uploads)) for k in range(2)]
        t0 = time.perf_counter()
        for t in upkeep:
            t.start()
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        screening_s = time.perf_counter() - t0
        stop.set()
        for t in upkeep:
            t.join()
        wall = time.perf_counter() - t0

        created = [j for j in jobs if j.get("status") == 201]
        problems += [f"screening {j['i']} ({j['kind']}): status {j.get('status')} {j.get('response')}"
                     for j in jobs if j.get("status") != 201][:20]
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(60)
        if exit_code != 0:
            problems.append(f"server exited with {exit_code} on SIGTERM")
        db = sqlite3.connect(data / "screenings.sqlite3")
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        stored = dict(db.execute("SELECT request_id, id FROM screenings").fetchall())
        db.close()
        if integrity != "ok":
            problems.append(f"integrity_check: {integrity}")
        lost = [j for j in created if stored.get(j["operator"]) != j["response"]["id"]]
        problems += [f"screening {j['i']}: answered 201 as {j['response']['id']}, not in the database" for j in lost][:20]
        files = check_files(data)
        problems += files["problems"][:30]
        audit = [json.loads(line)["event"] for line in (data / "audit.log").read_text().splitlines()]
        for event, name in (("backup", "backup"), ("site_threshold_applied", "calibrate"), ("purge", "purge")):
            if audit.count(event) != runs[name]:
                problems.append(f"audit.log has {audit.count(event)} {event} lines for {runs[name]} {name} runs")
        summary = {
            "screenings": len(jobs), "created_201": len(created), "rows": len(files["ids"]), "lost": len(lost),
            "not_answered_201": len(jobs) - len(created),
            "orphans": files["orphans"], "file_problems": len(files["problems"]),
            "runs": {k: runs[k] for k in ("backup", "calibrate", "purge")},
            "records_in_verified_backups": runs["backup_records"],
            "calibration_set": "isic_archive" if not extra else "synthetic (tiny model)",
            "screening_s": round(screening_s, 1), "wall_s": round(wall, 1),
            "integrity_check": integrity, "server_exit": exit_code, "problems": len(problems), "work_dir": str(work),
        }
        print(json.dumps(summary, indent=2))
        for p in problems[:30]:
            print("PROBLEM", p, file=sys.stderr)
        if not created or not all(runs[k] for k in ("backup", "calibrate", "purge")):
            print("PROBLEM no work was done: no screening stored or a command never ran", file=sys.stderr)
            return 1
        return 0 if not problems else 1
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log_file.close()


if __name__ == "__main__":
    sys.exit(main())
