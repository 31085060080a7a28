"""The labels CSV: `file,label[,lesion_id,dx,dx_type,dataset,...]`, one image a row, label benign or malignant.

The one reader for the CLI (`edge-app evaluate`, `calibrate`), the training module (datasets and
splits) and the benchmarks. A file it cannot use is a ValueError naming the file (and the line).
"""

from __future__ import annotations

import csv
from pathlib import Path

CLASSES = ("benign", "malignant")  # label values, in the 0 / 1 order of the metrics


def read_labels_csv(path: str | Path) -> tuple[list[dict[str, str]], list[str]]:
    """(rows, columns) of the CSV at `path`: each row a dict of its columns, `label` lower-cased.
    Needs the columns `file` and `label`; every label must be one of CLASSES and every file non-empty."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            if not {"file", "label"} <= set(columns):
                raise ValueError(f"{path} needs columns 'file' and 'label' (found {columns})")
            rows = []
            for line, row in enumerate(reader, start=2):
                label = (row["label"] or "").strip().lower()
                if label not in CLASSES:
                    raise ValueError(f"{path}:{line}: label {row['label']!r} is not benign or malignant")
                if not (row["file"] or "").strip():
                    raise ValueError(f"{path}:{line}: empty file name")
                rows.append(row | {"label": label})
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a UTF-8 text CSV ({exc.reason})") from None
    return rows, columns


def groups_of(rows: list[dict[str, str]], columns: list[str], column: str, path: str | Path) -> list[str] | None:
    """Each row's value of `column` (e.g. lesion_id, for a bootstrap that resamples whole lesions), or None
    when `column` is empty or not in the CSV. An empty value is an error."""
    if not column or column not in columns:
        return None
    groups = [(row[column] or "").strip() for row in rows]
    if "" in groups:
        raise ValueError(f"{path}: empty {column} in the row of {rows[groups.index('')]['file']}")
    return groups
