"""A training run's state: its folder, its config, and `metrics.json` (one dict, each step adds its keys, under a lock).

Each step reads what earlier steps left in the run folder (`runs/<timestamp>/`) and adds its outputs plus its numbers to
`metrics.json`, so a step can be re-run alone (`edge-train student-ce --run-dir runs/...`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..preprocess import Preprocessor, PreprocessParams
from .config import TrainConfig
from .data import SPLITS, Table, augmented_passes, load_table, preprocess_table, source_weights


@dataclass
class Run:
    cfg: TrainConfig
    data: Path  # the folder holding the datasets (`<data>/<name>/labels.csv`); split file paths are relative to it
    run_dir: Path
    weights_dir: Path | None = None  # ../shared/weights (ImageNet Lite) or user weights (paper preset)
    paper_weights: Path | None = None
    cache_dir: Path = Path("cache")
    models_dir: Path = Path("models")
    cross_data: list[Path] = field(default_factory=list)  # other labelled datasets, evaluated as-is at the shipped threshold
    command: str = ""  # this invocation
    reproduce: str = ""  # the one command that rebuilds everything (`edge-train all ...`)
    _tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor(PreprocessParams(size=self.cfg.size))

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.run_dir / "log.txt", "a") as f:
            f.write(line + "\n")

    def metrics(self) -> dict[str, Any]:
        p = self.run_dir / "metrics.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def record(self, key: str, value: Any) -> None:
        """Set one key of metrics.json (see `update`)."""
        self.update(key, lambda _old: value)

    def update(self, key: str, change: Callable[[Any], Any]) -> None:
        """metrics[key] = change(old value or None): read-modify-write under a lock, replaced atomically, so two steps
        of one run may run side by side (e.g. the input-size study beside the students) without losing each other's keys."""
        path = self.run_dir / "metrics.json"
        with open(self.run_dir / ".metrics.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            m = self.metrics()
            m[key] = change(m.get(key))
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(m, indent=2, default=_jsonable) + "\n")
            tmp.replace(path)

    def splits(self) -> dict[str, Table]:
        return {s: load_table(self.run_dir / "splits" / f"{s}.csv") for s in SPLITS}

    def tensors(self, split: str, preprocessor: Preprocessor | None = None) -> np.ndarray:
        """One split through the device preprocessing, float32 (N, S, S, 3), cached on disk and in this process."""
        pre = preprocessor or self.preprocessor
        key = f"{split}|{pre.params.disabled_stages}"
        if key not in self._tensors:
            self._tensors[key] = preprocess_table(self.splits()[split], self.data, pre, self.cache_dir, desc=split)
        return self._tensors[key]

    def train_passes(self, passes: int, preprocessor: Preprocessor | None = None) -> np.ndarray:
        """Device-augmented passes of the training split through the (given) pipeline: uint8 (P, N, S, S, 3)."""
        return augmented_passes(self.splits()["train"], self.data, preprocessor or self.preprocessor, passes, seed=self.cfg.seed,
                                cache_dir=self.cache_dir, desc="train (device-augmented passes)")

    def sample_weights(self, table: Table | None = None) -> np.ndarray:
        """Per-sample loss weights of the training split (or of `table`): see `data.source_weights`."""
        return source_weights(self.splits()["train"] if table is None else table, self.cfg.share_of_sources(),
                              self.cfg.follow_up_share, self.cfg.max_sample_weight)

    def labels(self, split: str) -> np.ndarray:
        return self.splits()[split].y

    def lesions(self, split: str) -> list[str] | None:
        return self.splits()[split].lesions


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


@contextmanager
def timed(run: Run, name: str) -> Iterator[None]:
    """Log a step's start and end, and record its wall time under metrics["timings_s"][name] (only if it finished)."""
    t0 = time.perf_counter()
    run.log(f"step {name} ...")
    yield
    dt = time.perf_counter() - t0
    run.update("timings_s", lambda t: {**(t or {}), name: round(dt, 1)})
    run.log(f"step {name} done in {dt:.1f} s")


def command_line(argv: list[str] | None = None) -> str:
    return "edge-train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
