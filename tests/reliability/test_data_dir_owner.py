"""Issue 21: one owner of the data directory. Maintenance commands run while the app is between
writing a screening's files and committing its row, and delete nothing of it; a second app is refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2

from edge_app.cli import main as cli
from edge_app.store import ScreeningStore, ServingStore, verify_backup
from edge_app.store.lock import DataDirBusy
from tests.conftest import make_lesion_image
from tests.reliability.helpers import lesion_jpeg, upload

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = ROOT / "tests" / "fixtures" / "tiny_fp16.tflite"


def labelled_set(root: Path) -> Path:
    """30 malignant + 10 benign small images: the least `calibrate` accepts."""
    (root / "img").mkdir(parents=True)
    rows = ["file,label"]
    for i in range(40):
        cv2.imwrite(str(root / "img" / f"{i}.png"), make_lesion_image(96, 72, seed=i))
        rows.append(f"img/{i}.png,{'malignant' if i < 30 else 'benign'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_maintenance_between_file_write_and_row_insert_deletes_nothing_of_the_screening(make_app, tmp_path):
    app = make_app()
    data = Path(app.config["DATA_DIR"])
    store = app.extensions["dermaedge"].store
    labels = labelled_set(tmp_path / "clinic")
    seen: dict = {}
    insert = store._insert

    def race(record):
        """The moment the issue found: the files are on disk, no row names them yet."""
        image = data / record.image_path
        seen["written"] = image.is_file()
        ScreeningStore(data).close()  # any other store: opening it deletes nothing
        try:
            ServingStore(data)
        except DataDirBusy as exc:
            seen["second_owner"] = str(exc)
        seen["backup"] = cli(["backup", str(tmp_path / "usb"), "--data-dir", str(data)])
        seen["calibrate"] = cli(["calibrate", str(labels), "--apply", "--bootstrap", "20", "--data-dir", str(data),
                                 "--model", str(TINY_MODEL), "--threads", "1"])
        seen["purge"] = cli(["purge", "--older-than", "3650", "--yes", "--data-dir", str(data)])
        seen["survived"] = image.is_file()
        insert(record)

    store._insert = race
    r = upload(app.test_client(), lesion_jpeg(1))
    assert r.status_code == 201, r.get_json()
    rec = r.get_json()
    assert seen["written"] and seen["survived"], "the image must survive every maintenance command"
    assert "in use by edge-app serve" in seen["second_owner"]
    assert (seen["backup"], seen["calibrate"], seen["purge"]) == (0, 0, 0)
    stored = store.get(rec["id"])
    assert hashlib.sha256((data / stored.image_path).read_bytes()).hexdigest() == stored.image_sha256
    assert store.image_file(stored.id, thumbnail=True).is_file()
    assert verify_backup(tmp_path / "usb")["records"] == 0  # the snapshot before the row: nothing half in it
    events = [json.loads(line)["event"] for line in (data / "audit.log").read_text().splitlines()]
    assert events == ["backup", "site_threshold_applied", "purge"]


def test_a_second_serve_on_the_same_data_dir_refuses_with_one_line(make_app):
    app = make_app()
    data = app.config["DATA_DIR"]
    second = subprocess.run([sys.executable, "-m", "edge_app.cli.serve", "--data-dir", data,
                             "--camera", "none", "--model", str(TINY_MODEL), "--port", "8999"],
                            check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("edge-app serve: cannot start: data directory") and "in use by edge-app serve (pid" in lines[0]
    assert "stop that app first" in lines[0]
    assert upload(app.test_client(), lesion_jpeg(2)).status_code == 201  # the first one serves on


def test_restore_into_the_data_dir_of_a_running_app_says_stop_the_app_first(make_app, tmp_path, capsys):
    app = make_app()
    data = app.config["DATA_DIR"]
    client = app.test_client()
    assert upload(client, lesion_jpeg(3)).status_code == 201
    assert cli(["backup", str(tmp_path / "b"), "--data-dir", data]) == 0
    capsys.readouterr()
    assert cli(["restore", str(tmp_path / "b"), "--replace", "--data-dir", data]) == 1
    err = capsys.readouterr().err
    assert "stop the app first" in err and "in use by edge-app serve" in err
    assert client.get("/api/screenings").status_code == 200
    assert len(list(Path(data).parent.glob("data.before-restore-*"))) == 0  # nothing was moved aside
