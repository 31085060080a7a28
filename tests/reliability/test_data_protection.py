"""Issue 7 (6): purge really deletes, export carries provenance, backup + restore round-trip."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge_app.cli import main as cli
from edge_app.store import ScreeningStore, ServingStore, purge, verify_backup
from tests.reliability.helpers import lesion_jpeg, upload

ROOT = Path(__file__).resolve().parents[2]
MARKER = "PATIENT-ZX-4711-left-shoulder"
CLASSIFICATION = {
    "probabilities": {"benign": 0.7, "malignant": 0.3}, "malignant_probability": 0.3, "threshold": 0.4,
    "decision": "benign", "model_sha256": "cd" * 32, "model_version": "v2", "preprocessing_version": "1.0",
    "timings_ms": {"total": 10.0},
}


def add(store: ScreeningStore, lesion_ref: str = "", seed: int = 0):
    return store.append(lesion_jpeg(seed), b"thumb-" + lesion_ref.encode(), width=640, height=480,
                        classification=CLASSIFICATION, quality_flags=[], quality_metrics={}, lesion_ref=lesion_ref)


def backdate(data_dir: Path, record_id: str, stamp: str = "2001-01-01T00:00:00.000Z") -> None:
    """Age a record (as a migration would: around the append-only trigger)."""
    db = sqlite3.connect(data_dir / "screenings.sqlite3")
    db.execute("DROP TRIGGER screenings_append_only")
    db.execute("UPDATE screenings SET timestamp = ? WHERE id = ?", (stamp, record_id))
    db.execute("CREATE TRIGGER screenings_append_only BEFORE UPDATE ON screenings BEGIN "
               "SELECT RAISE(ABORT, 'screening records are append-only: add a correction instead'); END")
    db.commit()
    db.close()


def files(data_dir: Path) -> list[str]:
    return sorted(p.relative_to(data_dir).as_posix() for p in (data_dir / "images").rglob("*") if p.is_file())


def raw_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("screenings.sqlite3*"))


def audit(data_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (data_dir / "audit.log").read_text().splitlines()]


# ---------------------------------------------------------------------------------- purge


def test_purge_older_than_deletes_rows_and_images_of_old_records_only_and_logs_it(tmp_path, capsys):
    data = tmp_path / "data"
    store = ScreeningStore(data)
    old = [add(store, MARKER, i) for i in range(2)]
    new = [add(store, "P-keep", 5 + i) for i in range(2)]
    store.close()
    for rec in old:
        backdate(data, rec.id)
    assert cli(["purge", "--older-than", "30", "--yes", "--data-dir", str(data)]) == 0
    assert "deleted 2 screening(s)" in capsys.readouterr().out
    store = ScreeningStore(data)
    assert [r.id for r in store.list(oldest_first=True)] == [r.id for r in new]
    assert files(data) == sorted(p for r in new for p in (r.image_path, r.image_path.replace(".jpg", ".thumb.jpg")))
    store.close()
    entry = audit(data)[-1]
    assert entry["event"] == "purge" and entry["deleted"] == 2 and sorted(entry["ids"]) == sorted(r.id for r in old)
    assert entry["criteria"] == "older than 30 days"
    assert MARKER.encode() not in raw_bytes(data)  # overwritten (secure_delete, WAL truncated), not just unlinked


def test_purge_all_leaves_no_trace_of_patient_data_in_the_database_files(tmp_path):
    data = tmp_path / "data"
    store = ScreeningStore(data)
    for i in range(5):
        add(store, f"{MARKER}-{i}", i)
    assert MARKER.encode() in raw_bytes(data)
    ids = purge(store, everything=True)  # while the store stays open, as under the running app
    assert len(ids) == 5 and store.counts()["total"] == 0 and files(data) == []
    assert MARKER.encode() not in raw_bytes(data)
    store.close()
    assert MARKER.encode() not in raw_bytes(data)
    assert sqlite3.connect(data / "screenings.sqlite3").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_purge_needs_confirmation_and_deletes_nothing_without_it(tmp_path, capsys):
    data = tmp_path / "data"
    store = ScreeningStore(data)
    add(store, "P-1")
    store.close()
    assert cli(["purge", "--all", "--data-dir", str(data)]) == 2  # not a terminal, no --yes
    assert "without --yes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["purge", "--yes", "--data-dir", str(data)])  # neither --all nor --older-than
    assert cli(["purge", "--older-than", "-1", "--yes", "--data-dir", str(data)]) == 2
    store = ScreeningStore(data)
    assert store.counts()["total"] == 1 and len(files(data)) == 2
    store.close()
    assert cli(["purge", "--all", "--yes", "--data-dir", str(tmp_path / "nowhere")]) == 1


def test_purged_records_disappear_from_the_running_app(make_app, camera):
    app = make_app(CAMERA=camera)
    client = app.test_client()
    rec = upload(client, lesion_jpeg(1), lesion_ref=MARKER).get_json()
    assert cli(["purge", "--all", "--yes", "--data-dir", app.config["DATA_DIR"]]) == 0
    assert client.get(f"/api/screenings/{rec['id']}").status_code == 404
    assert client.get(rec["image_url"]).status_code == 404
    assert MARKER not in client.get("/export.csv").data.decode()
    assert upload(client, lesion_jpeg(2)).status_code == 201  # and it goes on screening


# ---------------------------------------------------------------------------------- export


def test_export_carries_the_provenance_of_every_record_and_its_corrections(client):
    old = upload(client, lesion_jpeg(1), lesion_ref="L-1").get_json()
    new = upload(client, lesion_jpeg(2), lesion_ref="L-1", corrects=old["id"]).get_json()
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(client.get("/export.csv").data.decode()))}
    assert rows[new["id"]]["corrects"] == old["id"] and rows[old["id"]]["corrected_by"] == new["id"]
    for rec in (old, new):
        stored = client.get(f"/api/screenings/{rec['id']}").get_json()
        row = rows[rec["id"]]
        for key in ("model_sha256", "model_version", "preprocessing_version", "image_sha256", "app_version", "timestamp"):
            assert row[key] == stored[key] and row[key], key
        assert float(row["threshold"]) == stored["threshold"]
        assert json.loads(row["timings_ms"]) == stored["timings_ms"]


# ---------------------------------------------------------------------------------- backup + restore


def test_backup_and_restore_round_trip(tmp_path, capsys):
    data, dest, restored = tmp_path / "data", tmp_path / "usb" / "backup-1", tmp_path / "new-device"
    store = ScreeningStore(data)
    recs = [add(store, f"P-{i}", i) for i in range(4)]
    store.close()
    assert cli(["backup", str(dest), "--data-dir", str(data)]) == 0
    assert "backed up 4 screening(s), 4 image(s)" in capsys.readouterr().out
    manifest = json.loads((dest / "backup.json").read_text())
    assert manifest["records"] == 4 and manifest["missing_or_damaged_images"] == []
    db = sqlite3.connect(dest / "screenings.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    db.close()
    assert cli(["restore", str(dest), "--data-dir", str(restored)]) == 0
    store = ServingStore(restored)
    assert [store.get(r.id) for r in recs] == recs
    for r in recs:
        assert hashlib.sha256(store.image_file(r.id).read_bytes()).hexdigest() == r.image_sha256
        assert store.image_file(r.id, thumbnail=True).read_bytes() == b"thumb-" + r.lesion_ref.encode()
    assert store.recovered == {"temp_files": 0, "orphan_images": 0}
    add(store, "after-restore")  # the restored store takes new screenings (WAL mode, append-only trigger)
    assert sqlite3.connect(restored / "screenings.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    assert [e["event"] for e in audit(data)] == ["backup"] and audit(restored)[-1]["event"] == "restore"


def test_backups_taken_by_another_process_while_the_app_writes_are_consistent_and_delete_nothing(tmp_path):
    """As on the device: the app's own store writes screenings while `edge-app backup` runs in
    another process, with its own connection, again and again."""
    data = tmp_path / "data"
    store = ServingStore(data)
    for i in range(3):
        add(store, "before", i)
    stop = threading.Event()
    written = []

    def writer():
        i = 0
        while not stop.is_set():
            written.append(add(store, "during", i))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    dests = [tmp_path / f"backup-{n}" for n in range(3)]
    try:
        runs = [subprocess.run([sys.executable, "-m", "edge_app", "backup", str(dest), "--data-dir", str(data)],
                               check=False, capture_output=True, text=True, timeout=120, cwd=ROOT) for dest in dests]
    finally:
        stop.set()
        t.join()
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    for dest in dests:
        summary = json.loads((dest / "backup.json").read_text())
        assert summary["records"] >= 3 and summary["missing_or_damaged_images"] == []
        assert verify_backup(dest)["records"] == summary["records"]
    assert written, "the app wrote while the backups ran"
    for rec in written:  # every screening the app stored kept its files
        assert hashlib.sha256(store.image_file(rec.id).read_bytes()).hexdigest() == rec.image_sha256
        assert store.image_file(rec.id, thumbnail=True).is_file()
    store.close()


def test_restore_refuses_a_damaged_backup_and_leaves_the_data_untouched(tmp_path, capsys):
    data, dest, target = tmp_path / "data", tmp_path / "backup", tmp_path / "target"
    store = ScreeningStore(data)
    rec = add(store, "P-1")
    store.close()
    assert cli(["backup", str(dest), "--data-dir", str(data)]) == 0
    image = dest / rec.image_path
    image.write_bytes(image.read_bytes()[:-10] + b"0123456789")  # bit rot on the USB stick
    assert cli(["restore", str(dest), "--data-dir", str(target)]) == 1
    assert "missing or damaged" in capsys.readouterr().err
    assert not target.exists()
    (dest / "screenings.sqlite3").write_bytes(b"not a database" * 100)
    assert cli(["restore", str(dest), "--data-dir", str(target)]) == 1
    assert "cannot be read" in capsys.readouterr().err and not target.exists()


def test_restore_over_existing_records_needs_replace_and_keeps_the_old_data(tmp_path, capsys):
    data, dest = tmp_path / "data", tmp_path / "backup"
    store = ScreeningStore(data)
    backed_up = add(store, "in-backup")
    store.close()
    assert cli(["backup", str(dest), "--data-dir", str(data)]) == 0
    store = ScreeningStore(data)
    later = add(store, "after-backup", 3)
    store.close()
    assert cli(["restore", str(dest), "--data-dir", str(data)]) == 1
    assert "--replace" in capsys.readouterr().err
    assert cli(["restore", str(dest), "--replace", "--data-dir", str(data)]) == 0
    moved = Path(capsys.readouterr().out.split("kept at ")[1].strip())
    store = ScreeningStore(data)
    assert [r.id for r in store.list()] == [backed_up.id]
    store.close()
    kept = ScreeningStore(moved)  # nothing was deleted: the newer record is still there
    assert {r.id for r in kept.list()} == {backed_up.id, later.id}
    kept.close()


def test_backup_refuses_a_non_empty_destination_and_a_missing_data_dir(tmp_path, capsys):
    data = tmp_path / "data"
    ScreeningStore(data).close()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "holiday.jpg").write_bytes(b"x")
    assert cli(["backup", str(dest), "--data-dir", str(data)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert cli(["backup", str(tmp_path / "d2"), "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "no records" in capsys.readouterr().err


def test_maintenance_commands_find_the_data_dir_from_the_config_file_without_a_model(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGE_APP_DATA_DIR", raising=False)
    data = tmp_path / "var-lib-edge-app"
    store = ScreeningStore(data)
    add(store, "P-1")
    store.close()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'data_dir = "{data}"\nmodel = "/missing/model.tflite"\n')
    assert cli(["backup", str(tmp_path / "b"), "--config", str(cfg)]) == 0
    monkeypatch.setenv("EDGE_APP_DATA_DIR", str(data))
    assert cli(["purge", "--all", "--yes"]) == 0
    assert files(data) == []
