"""Screening store: append-only rows, atomic image files, recovery (owner only), retention, ids."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from edge_app.fileio import write_atomic
from edge_app.store import DataDirBusy, RecordNotFound, ScreeningStore, ServingStore, is_record_id, new_record_id
from tests.app.conftest import lesion_jpeg

CLASSIFICATION = {
    "probabilities": {"benign": 0.8, "malignant": 0.2}, "malignant_probability": 0.2, "threshold": 0.4,
    "decision": "benign", "model_sha256": "ab" * 32, "model_version": "v1", "preprocessing_version": "1.0",
    "timings_ms": {"total": 12.5},
}


def append(store: ScreeningStore, **kw):
    return store.append(lesion_jpeg(0), b"thumb", width=640, height=480, classification=CLASSIFICATION,
                        quality_flags=[], quality_metrics={"sharpness": 100.0}, **kw)


def test_record_has_every_contract_field_and_survives_reopening(tmp_path):
    store = ScreeningStore(tmp_path)
    rec = append(store, operator="Ann", lesion_ref="P-1")
    store.close()
    again = ScreeningStore(tmp_path).get(rec.id)
    assert again == rec
    assert again.timestamp.endswith("Z") and again.image_sha256 and again.threshold == 0.4
    assert (tmp_path / again.image_path).read_bytes() == lesion_jpeg(0)
    assert sqlite3.connect(tmp_path / "screenings.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_are_append_only(tmp_path):
    store = ScreeningStore(tmp_path)
    rec = append(store)
    db = sqlite3.connect(tmp_path / "screenings.sqlite3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE screenings SET decision = 'malignant' WHERE id = ?", (rec.id,))
    assert store.get(rec.id).decision == "benign"


def test_correction_must_name_an_existing_record(tmp_path):
    store = ScreeningStore(tmp_path)
    with pytest.raises(RecordNotFound):
        append(store, corrects=new_record_id())


def test_failed_insert_leaves_no_image_file(tmp_path):
    store = ScreeningStore(tmp_path)
    store._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON screenings BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(sqlite3.DatabaseError):
        append(store)
    assert [p for p in (tmp_path / "images").rglob("*") if p.is_file()] == []


def test_write_atomic_leaves_old_content_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "a.jpg"
    write_atomic(target, b"old")

    def boom(*a, **k):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg"]  # no temp file left behind


def test_startup_recovery_removes_orphan_and_temp_files_but_keeps_records(tmp_path):
    store = ScreeningStore(tmp_path)
    rec = append(store)
    store.close()
    day = tmp_path / "images" / "2026-01-01"
    day.mkdir(parents=True)
    (day / "01ORPHAN.jpg").write_bytes(b"crash between file and row")
    (day / "01ORPHAN.thumb.jpg").write_bytes(b"x")
    (day / ".x.jpg.1234.tmp").write_bytes(b"half written")
    ScreeningStore(tmp_path).close()  # a maintenance command's store: deletes nothing
    assert len(list(day.iterdir())) == 3
    store = ServingStore(tmp_path)
    assert store.recovered == {"temp_files": 1, "orphan_images": 2}
    assert not any(day.iterdir())
    assert store.image_file(rec.id).is_file() and store.image_file(rec.id, thumbnail=True).is_file()
    store.close()


def test_recovery_keeps_every_rendition_of_a_record(tmp_path):
    store = ScreeningStore(tmp_path)
    rec = append(store)
    store.close()
    screen = (tmp_path / rec.image_path).with_suffix(".screen.jpg")
    screen.write_bytes(b"screen-size copy")
    store = ServingStore(tmp_path)
    assert store.recovered == {"temp_files": 0, "orphan_images": 0} and screen.read_bytes() == b"screen-size copy"
    store.close()


def test_only_one_serving_store_owns_a_data_dir(tmp_path):
    first = ServingStore(tmp_path)
    with pytest.raises(DataDirBusy, match=r"in use by edge-app serve \(pid \d+\)"):
        ServingStore(tmp_path)
    ScreeningStore(tmp_path).close()  # maintenance stores open beside it
    first.close()
    ServingStore(tmp_path).close()  # released on close


def test_an_upload_kept_in_its_own_format_keeps_its_thumbnail_through_recovery(tmp_path):
    store = ScreeningStore(tmp_path)
    png = b"\x89PNG\r\n\x1a\n not really decoded here"
    rec = store.append(png, b"thumb", width=320, height=240, extension="png", classification=CLASSIFICATION,
                       quality_flags=[], quality_metrics={})
    store.close()
    store = ServingStore(tmp_path)
    assert store.recovered == {"temp_files": 0, "orphan_images": 0}
    assert rec.image_path.endswith(f"{rec.id}.png") and store.image_file(rec.id).read_bytes() == png
    assert store.image_file(rec.id, thumbnail=True).read_bytes() == b"thumb"


def test_an_image_extension_that_is_not_plain_letters_is_refused_and_nothing_is_written(tmp_path):
    store = ScreeningStore(tmp_path)
    with pytest.raises(ValueError, match="extension"):
        store.append(b"x", b"t", width=1, height=1, extension="../x", classification=CLASSIFICATION,
                     quality_flags=[], quality_metrics={})
    assert not any(p.is_file() for p in (tmp_path / "images").rglob("*"))


def test_retention_by_age_and_size(tmp_path):
    store = ScreeningStore(tmp_path)
    old = append(store)
    newer = [append(store) for _ in range(3)]
    store.close()
    # make the first one 10 days old (bypassing the append-only trigger as a migration would)
    db = sqlite3.connect(tmp_path / "screenings.sqlite3")
    db.execute("DROP TRIGGER screenings_append_only")
    db.execute("UPDATE screenings SET timestamp = '2000-01-01T00:00:00.000Z' WHERE id = ?", (old.id,))
    db.commit()
    db.close()
    store = ServingStore(tmp_path, retention_days=7)
    assert [r.id for r in store.list()] == [r.id for r in reversed(newer)]
    assert not (tmp_path / old.image_path).exists()
    store.close()
    one_image_gb = newer[0].image_bytes / 1024**3
    store = ServingStore(tmp_path, retention_gb=one_image_gb * 2.5)
    assert [r.id for r in store.list()] == [newer[2].id, newer[1].id]
    store.close()


def test_default_is_keep_all(tmp_path):
    store = ServingStore(tmp_path)
    for _ in range(3):
        append(store)
    assert store.apply_retention() == 0 and len(store.list()) == 3
    store.close()


def test_record_ids_are_sortable_and_not_guessable():
    ids = []
    for _ in range(50):
        ids.append(new_record_id())
        time.sleep(0.0005)
    assert len(set(ids)) == 50 and all(is_record_id(i) for i in ids)
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)  # time prefix orders them
    assert len({i[10:] for i in ids}) == 50  # 80 random bits each


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    from edge_app.store import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StoreError, match="cannot be created"):
        ScreeningStore(blocker / "data")


def test_is_writable_reports_ok(tmp_path):
    assert ScreeningStore(Path(tmp_path)).is_writable() == (True, "ok")


def test_request_id_stores_once_and_an_old_database_is_migrated(tmp_path):
    from edge_app.store import DuplicateRequest

    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / "screenings.sqlite3")  # a schema-1 database: no request_id column
    db.executescript(__import__("edge_app.store", fromlist=["SCHEMA"]).SCHEMA.replace(",\n    request_id             TEXT", ""))
    db.close()
    columns = sqlite3.connect(old / "screenings.sqlite3").execute("PRAGMA table_info(screenings)")
    assert "request_id" not in {r[1] for r in columns}
    store = ScreeningStore(old)
    first = append(store, request_id="intent-0001")
    with pytest.raises(DuplicateRequest) as err:
        append(store, request_id="intent-0001")
    assert err.value.record.id == first.id
    assert store.counts()["total"] == 1 and len([p for p in (old / "images").rglob("*") if p.is_file()]) == 2
    append(store)
    append(store)  # no request id: any number
    assert store.get_by_request_id("intent-0001") == first and store.counts()["total"] == 3
    with pytest.raises(sqlite3.IntegrityError):  # the database itself refuses a second row
        store._db.execute("INSERT INTO screenings (id, timestamp, operator, lesion_ref, source, image_path, image_sha256, "
                          "image_width, image_height, image_bytes, probabilities, malignant_probability, decision, threshold, "
                          "model_sha256, model_version, preprocessing_version, timings_ms, quality_flags, quality_metrics, "
                          "corrects, app_version, request_id) SELECT 'X' || id, timestamp, operator, lesion_ref, source, "
                          "image_path, "
                          "image_sha256, image_width, image_height, image_bytes, probabilities, malignant_probability, decision, "
                          "threshold, model_sha256, model_version, preprocessing_version, timings_ms, quality_flags, "
                          "quality_metrics, corrects, app_version, request_id FROM screenings WHERE id = ?", (first.id,))
