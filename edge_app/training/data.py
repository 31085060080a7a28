"""Labelled images -> lesion-grouped splits -> cached preprocessed tensors.

Every image goes through `edge_app.preprocess.Preprocessor`, the device's code.
Tensors are cached under `cache/` keyed by a hash of the preprocessing
description and the file list, so a second run (or another step) costs nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..images import read_image
from ..preprocess import Preprocessor

LABELS = ("benign", "malignant")
SPLITS = ("train", "val", "test")


@dataclass
class Table:
    """Rows of a labels CSV: `file,label` plus optional columns (lesion_id, dx, ...)."""

    rows: list[dict[str, str]]
    columns: list[str]

    @property
    def y(self) -> np.ndarray:
        return np.array([LABELS.index(r["label"]) for r in self.rows], dtype=np.int64)

    @property
    def groups(self) -> list[str]:
        """lesion_id where it exists, else the file (one image = one group)."""
        return [r.get("lesion_id") or r["file"] for r in self.rows]

    @property
    def lesions(self) -> list[str] | None:
        """lesion_id of each row for a lesion-level bootstrap, or None when the table has no lesion_id column."""
        return self.groups if "lesion_id" in self.columns else None

    def subset(self, idx) -> Table:
        return Table([self.rows[i] for i in idx], self.columns)

    def __len__(self) -> int:
        return len(self.rows)


def load_table(csv_path: str | Path) -> Table:
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    if not {"file", "label"} <= set(columns):
        raise ValueError(f"{csv_path} needs columns file,label (has {columns})")
    bad = sorted({r["label"] for r in rows} - set(LABELS))
    if bad:
        raise ValueError(f"{csv_path}: labels must be one of {LABELS}, found {bad}")
    return Table(rows, columns)


def write_table(table: Table, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=table.columns, lineterminator="\n")
        w.writeheader()
        w.writerows(table.rows)


def split_table(table: Table, fractions=(0.70, 0.15, 0.15), seed: int = 0) -> dict[str, Table]:
    """Stratified, lesion-grouped, seeded split: no lesion_id on two sides.

    StratifiedGroupKFold with k = round(1 / test fraction) takes one fold as test,
    then the same on the rest for validation.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = table.y, np.array(table.groups)
    k_test = max(2, round(1.0 / fractions[2]))
    outer = StratifiedGroupKFold(n_splits=k_test, shuffle=True, random_state=seed)
    rest, test = next(outer.split(np.zeros(len(y)), y, groups))
    k_val = max(2, round((fractions[0] + fractions[1]) / fractions[1]))
    inner = StratifiedGroupKFold(n_splits=k_val, shuffle=True, random_state=seed + 1)
    tr, va = next(inner.split(np.zeros(len(rest)), y[rest], groups[rest]))
    parts = {"train": np.sort(rest[tr]), "val": np.sort(rest[va]), "test": np.sort(test)}
    return {name: table.subset(idx) for name, idx in parts.items()}


def describe_split(splits: dict[str, Table]) -> dict[str, dict[str, int]]:
    out = {}
    for name, t in splits.items():
        y = t.y
        out[name] = {"images": len(t), "lesions": len(set(t.groups)), "malignant": int(y.sum()), "benign": int((y == 0).sum())}
    return out


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Inverse-frequency ("balanced") weights: n / (2 * n_c)."""
    counts = np.bincount(y, minlength=2).astype(np.float64)
    return {c: float(len(y) / (2.0 * max(counts[c], 1.0))) for c in range(2)}


def cache_key(preprocessor: Preprocessor, table: Table, root: str | Path, extra: str = "") -> str:
    h = hashlib.sha256()
    h.update(json.dumps(preprocessor.describe(), sort_keys=True).encode())
    h.update(str(Path(root).resolve()).encode())
    h.update(extra.encode())
    for r in table.rows:
        h.update(r["file"].encode())
    return h.hexdigest()[:16]


def preprocess_table(
    table: Table,
    root: str | Path,
    preprocessor: Preprocessor,
    cache_dir: str | Path | None = "cache",
    transform=None,
    transform_name: str = "",
    desc: str = "preprocess",
) -> np.ndarray:
    """All images of `table` through the device pipeline -> float32 (N, S, S, 3), cached (float16 on disk).

    `transform(bgr) -> bgr` is applied to the decoded image *before* the pipeline
    (used for the robustness shifts); its name is part of the cache key.
    """
    from tqdm import tqdm

    root = Path(root)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"x_{cache_key(preprocessor, table, root, transform_name)}.npy"
        if path.is_file():
            return np.load(path).astype(np.float32)
    size = preprocessor.params.size
    out = np.empty((len(table), size, size, 3), np.float32)
    for i, r in enumerate(tqdm(table.rows, desc=desc, unit="img", mininterval=2.0)):
        bgr = read_image(root / r["file"])
        if transform is not None:
            bgr = transform(bgr)
        out[i] = preprocessor(bgr)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out.astype(np.float16))
        tmp.rename(path)
    return out
