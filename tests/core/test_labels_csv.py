"""The one labels-CSV reader (evaluate, calibrate, training, benchmarks): what it accepts and how it refuses."""

from __future__ import annotations

import pytest

from edge_app.labels_csv import groups_of, read_labels_csv
from edge_app.training.data import load_table


def test_rows_keep_every_column_and_labels_are_normalised(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label,lesion_id,dx\na.jpg,Malignant ,L1,mel\nb.jpg,benign,L1,nv\n")
    rows, columns = read_labels_csv(path)
    assert columns == ["file", "label", "lesion_id", "dx"]
    assert [r["label"] for r in rows] == ["malignant", "benign"] and rows[0]["dx"] == "mel"
    assert groups_of(rows, columns, "lesion_id", path) == ["L1", "L1"]
    assert groups_of(rows, columns, "patient", path) is None and groups_of(rows, columns, "", path) is None
    assert load_table(path).y.tolist() == [1, 0]  # the training module reads the same rows


@pytest.mark.parametrize(("text", "message"), [
    ("name,label\na.jpg,benign\n", "needs columns 'file' and 'label'"),
    ("file,label\na.jpg,benign\nb.jpg,nevus\n", "labels.csv:3: label 'nevus' is not benign or malignant"),
    ("file,label\n,benign\n", "labels.csv:2: empty file name"),
])
def test_a_bad_csv_is_refused_with_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_labels_csv(path)


def test_a_missing_or_binary_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read .*missing.csv"):
        read_labels_csv(tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00file,label")
    with pytest.raises(ValueError, match="not a UTF-8 text CSV"):
        read_labels_csv(tmp_path / "bin.csv")


def test_an_empty_group_value_is_refused(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label,lesion_id\na.jpg,benign,L1\nb.jpg,benign,\n")
    rows, columns = read_labels_csv(path)
    with pytest.raises(ValueError, match="empty lesion_id in the row of b.jpg"):
        groups_of(rows, columns, "lesion_id", path)
