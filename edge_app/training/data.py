"""Labelled images -> lesion-grouped splits -> cached preprocessed tensors.

Every image goes through `edge_app.preprocess.Preprocessor`, the device's code.
Tensors are cached under `cache/` keyed by a hash of the preprocessing
description and the file list, so a second run (or another step) costs nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from ..images import read_image
from ..labels_csv import CLASSES as LABELS
from ..labels_csv import read_labels_csv
from ..preprocess import Preprocessor
from .device_augment import augment_raw

SPLITS = ("train", "val", "test")
# the 7 HAM10000 diagnoses (auxiliary head); other datasets' names mapped onto them, "" = unknown
DX_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
DX_ALIASES = {"melanoma": "mel", "nevus": "nv", "basal cell carcinoma": "bcc", "actinic keratosis": "akiec",
              "seborrheic keratosis": "bkl", "pigmented benign keratosis": "bkl", "dermatofibroma": "df",
              "vascular lesion": "vasc"}
SOURCE_COLUMNS = ("file", "label", "lesion_id", "dx", "dx_type", "dataset")


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

    @property
    def dx_index(self) -> np.ndarray:
        """Index into DX_CLASSES per row, -1 where the diagnosis is unknown."""
        return np.array([DX_CLASSES.index(d) if (d := normalise_dx(r.get("dx", ""))) in DX_CLASSES else -1 for r in self.rows],
                        dtype=np.int64)

    @property
    def datasets(self) -> np.ndarray:
        return np.array([r.get("dataset", "") for r in self.rows])

    @property
    def follow_up(self) -> np.ndarray:
        """HAM10000 nevi confirmed by digital follow-up (one clinic's follow-up camera: a source shortcut)."""
        return np.array([r.get("dx_type", "") == "follow_up" for r in self.rows])

    def subset(self, idx) -> Table:
        return Table([self.rows[i] for i in idx], self.columns)

    def __len__(self) -> int:
        return len(self.rows)


def load_table(csv_path: str | Path) -> Table:
    return Table(*read_labels_csv(csv_path))


def normalise_dx(dx: str) -> str:
    dx = (dx or "").strip().lower()
    return DX_ALIASES.get(dx, dx) if dx in DX_ALIASES or dx in DX_CLASSES else ""


def load_sources(root: str | Path, datasets: tuple[str, ...]) -> Table:
    """Several staged datasets (`root/<name>/labels.csv`) as one table: file paths relative to `root`,
    a `dataset` column, lesion ids prefixed per dataset, diagnoses mapped onto DX_CLASSES."""
    root = Path(root)
    missing = [name for name in datasets if not (root / name / "labels.csv").is_file()]
    if missing:
        staged = sorted(d.name for d in root.iterdir() if (d / "labels.csv").is_file()) if root.is_dir() else []
        raise SystemExit(f"dataset(s) {missing} not staged under {root} (no <name>/labels.csv); staged there: {staged or 'none'}")
    rows: list[dict[str, str]] = []
    for name in datasets:
        t = load_table(root / name / "labels.csv")
        for r in t.rows:
            rows.append({"file": f"{name}/{r['file']}", "label": r["label"],
                         "lesion_id": f"{name}:{r.get('lesion_id') or r['file']}", "dx": normalise_dx(r.get("dx", "")),
                         "dx_type": r.get("dx_type", ""), "dataset": name})
    return Table(rows, list(SOURCE_COLUMNS))


def split_sources(table: Table, fractions=(0.70, 0.15, 0.15), seed: int = 0) -> dict[str, Table]:
    """`split_table` on each dataset separately (each split grouped by lesion and stratified within its source)."""
    parts: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for name in dict.fromkeys(r.get("dataset", "") for r in table.rows):
        idx = [i for i, r in enumerate(table.rows) if r.get("dataset", "") == name]
        for s, t in split_table(table.subset(idx), fractions, seed).items():
            parts[s].extend(t.rows)
    return {s: Table(rows, table.columns) for s, rows in parts.items()}


def source_weights(table: Table, dataset_share: dict[str, float], follow_up_share: float, max_weight: float = 0.0) -> np.ndarray:
    """Per-sample loss weights (mean 1) that stop the source and the follow-up shortcut from paying.

    Each dataset gets `dataset_share` of the total weight (the rest split evenly), half to each
    class within it; HAM10000's follow-up nevi get `follow_up_share` of their dataset's benign
    weight, whatever their count. `max_weight` > 0 caps one image's weight (then mean 1 again):
    a source with a few dozen melanomas (isic2020) would otherwise give each of them the weight
    of a hundred images.
    """
    ds, y, fu = table.datasets, table.y, table.follow_up
    names = list(dict.fromkeys(ds.tolist()))
    fixed = {n: dataset_share[n] for n in names if n in dataset_share}
    rest = [n for n in names if n not in fixed]
    share = {**fixed, **{n: max(0.0, 1.0 - sum(fixed.values())) / max(1, len(rest)) for n in rest}}
    total = sum(share.values())
    w = np.zeros(len(y), np.float64)
    for n in names:
        for c in (0, 1):
            m = (ds == n) & (y == c)
            if not m.any():
                continue
            cls = share[n] / total / 2.0
            if c == 0 and (m & fu).any() and (m & ~fu).any():
                for sub, frac in ((m & fu, follow_up_share), (m & ~fu, 1.0 - follow_up_share)):
                    w[sub] = cls * frac / sub.sum()
            else:
                w[m] = cls / m.sum()
    w = w * len(w) / w.sum()
    for _ in range(20 if max_weight > 0 else 0):  # capping lowers the mean: renormalise, cap again, until it holds
        if w.max() <= max_weight * (1 + 1e-6):
            break
        w = np.minimum(w, max_weight)
        w = w * len(w) / w.sum()
    return w.astype(np.float32)


def weight_summary(table: Table, w: np.ndarray) -> dict[str, dict[str, float]]:
    """Share of the total loss weight per dataset and class, and the largest weight of one image there."""
    ds, y = table.datasets, table.y
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(ds.tolist()):
        row = {}
        for c, label in enumerate(LABELS):
            m = (ds == name) & (y == c)
            row[f"{label}_share"] = round(float(w[m].sum() / w.sum()), 4)
            row[f"{label}_max_weight"] = round(float(w[m].max()), 3) if m.any() else 0.0
        out[name] = row
    return out


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


def preprocess_table(table: Table, root: str | Path, preprocessor: Preprocessor, cache_dir: str | Path | None = "cache",
                     desc: str = "preprocess", workers: int | None = None) -> np.ndarray:
    """All images of `table` through the device pipeline -> float32 (N, S, S, 3), cached (float16 on disk).
    Parallel over processes for more than a few hundred images (a GPU machine's cores)."""
    root = Path(root)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"x_{cache_key(preprocessor, table, root)}.npy"
        if path.is_file():
            return np.load(path).astype(np.float32)
    size = preprocessor.params.size
    out = np.empty((len(table), size, size, 3), np.float16)
    tasks = [(str(root / r["file"]), -1, i) for i, r in enumerate(table.rows)]
    for i, x in enumerate(_map_images(tasks, preprocessor, workers, desc)):
        out[i] = x
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.rename(path)
    return out.astype(np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Model-range tensors -> uint8 u with x = (u - 127) / 128 (`preprocess.normalize`'s scale; error <= 1/256)."""
    return np.clip(np.rint(np.asarray(x, np.float32) * 128.0 + 127.0), 0, 255).astype(np.uint8)


def _one_image(task: tuple[str, int, int]) -> np.ndarray:
    """(path, seed, index) -> the image through the pipeline: seed < 0 as it is (float16), else device-augmented
    with the generator [seed, index] (uint8, `to_uint8`)."""
    path, seed, index = task
    if seed < 0:
        return _WORKER_PRE(read_image(path)).astype(np.float16)
    return to_uint8(_WORKER_PRE(augment_raw(read_image(path), np.random.default_rng([seed, index]))))


def _map_images(tasks: list[tuple[str, int, int]], preprocessor: Preprocessor, workers: int | None, desc: str):
    """`_one_image` over the tasks, in order: in this process for a few images, else over a process pool."""
    workers = workers or max(1, (os.cpu_count() or 1))
    if len(tasks) < 200 or workers == 1:
        _init_worker(preprocessor.describe(), threads=-1)
        yield from map(_one_image, tqdm(tasks, desc=desc, unit="img", mininterval=5.0))
        return
    # spawn, not fork: the training process holds framework threads by now, and a forked child can deadlock on their locks
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(preprocessor.describe(),)) as pool:
        yield from tqdm(pool.imap(_one_image, tasks, chunksize=32), total=len(tasks), desc=desc, unit="img", mininterval=5.0)


_WORKER_PRE: Preprocessor | None = None


def _init_worker(description: dict, threads: int = 1) -> None:
    global _WORKER_PRE
    if threads > 0:  # a pool's worker: one thread each
        cv2.setNumThreads(threads)
    _WORKER_PRE = Preprocessor.from_description(description)


def augmented_passes(table: Table, root: str | Path, preprocessor: Preprocessor, passes: int, seed: int = 0,
                     workers: int | None = None, cache_dir: str | Path | None = "cache", desc: str = "augment") -> np.ndarray:
    """`passes` device-augmented copies of every image through the device pipeline -> uint8 (P, N, S, S, 3) (`to_uint8`).

    Each pass draws new device shifts (`device_augment.augment_raw`) before the six stages; epochs
    cycle through the passes. Parallel over processes (the pipeline is per image); cached like tensors.
    """
    root = Path(root)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"aug_{cache_key(preprocessor, table, root, f'passes={passes},seed={seed},u8')}.npy"
        if path.is_file():
            return np.load(path, mmap_mode="r")
    size = preprocessor.params.size
    out = np.empty((passes, len(table), size, size, 3), np.uint8)
    tasks = [(str(root / r["file"]), seed * 1000 + k, i) for k in range(passes) for i, r in enumerate(table.rows)]
    for j, x in enumerate(_map_images(tasks, preprocessor, workers, desc)):
        out[j // len(table), j % len(table)] = x
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.rename(path)
    return out
