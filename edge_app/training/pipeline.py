"""The training steps, as plain functions called in order by `edge-train all`.

Each step reads what earlier steps left in the run folder (`runs/<timestamp>/`)
and adds its own outputs plus its numbers to `metrics.json`, so a step can be
re-run alone (`edge-train student --run-dir runs/...`).

    split -> tensors -> teacher -> student (no KD) -> student (KD) -> export -> evaluate -> card
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..preprocess import PreprocessParams, Preprocessor
from .config import TrainConfig
from .data import SPLITS, Table, class_weights, describe_split, load_table, preprocess_table, split_table, write_table


@dataclass
class Run:
    cfg: TrainConfig
    data: Path  # dataset root holding labels.csv
    run_dir: Path
    weights_dir: Path | None = None  # ../shared/weights (ImageNet Lite) or user weights (paper preset)
    paper_weights: Path | None = None
    cache_dir: Path = Path("cache")
    models_dir: Path = Path("models")
    command: str = ""
    _tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor(PreprocessParams(size=self.cfg.size))

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.run_dir / "log.txt", "a") as f:
            f.write(line + "\n")

    # metrics.json: one dict, each step adds its keys
    def metrics(self) -> dict[str, Any]:
        p = self.run_dir / "metrics.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def record(self, key: str, value: Any) -> None:
        m = self.metrics()
        m[key] = value
        (self.run_dir / "metrics.json").write_text(json.dumps(m, indent=2, default=_jsonable) + "\n")

    def splits(self) -> dict[str, Table]:
        return {s: load_table(self.run_dir / "splits" / f"{s}.csv") for s in SPLITS}

    def tensors(self, split: str) -> np.ndarray:
        if split not in self._tensors:
            self._tensors[split] = preprocess_table(self.splits()[split], self.data, self.preprocessor, self.cache_dir, desc=split)
        return self._tensors[split]

    def labels(self, split: str) -> np.ndarray:
        return self.splits()[split].y


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def timed(run: Run, name: str):
    """Context manager: log + record the wall time of a step."""

    class _T:
        def __enter__(self):
            self.t0 = time.perf_counter()
            run.log(f"step {name} ...")

        def __exit__(self, *exc):
            dt = time.perf_counter() - self.t0
            if exc[0] is None:
                t = run.metrics().get("timings_s", {})
                t[name] = round(dt, 1)
                run.record("timings_s", t)
                run.log(f"step {name} done in {dt:.1f} s")

    return _T()


# ------------------------------------------------------------------ 1. split + 2. tensors


def step_split(run: Run) -> None:
    """Lesion-grouped, stratified, seeded split; CSVs written to the run folder."""
    with timed(run, "split"):
        table = load_table(run.data / "labels.csv")
        parts = split_table(table, run.cfg.split_fractions, run.cfg.split_seed)
        for name, t in parts.items():
            write_table(t, run.run_dir / "splits" / f"{name}.csv")
        summary = describe_split(parts)
        run.record("split", {"seed": run.cfg.split_seed, "grouped_by": "lesion_id" if "lesion_id" in table.columns else "file",
                             "counts": summary, "class_weights": class_weights(parts["train"].y)})
        run.log(f"split: {summary}")


def step_tensors(run: Run) -> None:
    """Every image through the device preprocessing once (cached under cache/)."""
    with timed(run, "tensors"):
        for s in SPLITS:
            x = run.tensors(s)
            run.log(f"{s}: {x.shape}")


# ------------------------------------------------------------------ 4. student


def step_student(run: Run, kd: bool) -> None:
    """Train the student end to end on cached tensors (CE, or CE + KD from the teacher's logits)."""
    from .distill import malignant_prob, train_student
    from .student import build_student

    name = "student_kd" if kd else "student_ce"
    cfg = run.cfg
    with timed(run, name):
        x_tr, y_tr = run.tensors("train"), run.labels("train")
        x_va, y_va = run.tensors("val"), run.labels("val")
        cw = class_weights(y_tr)
        sw = np.array([cw[int(c)] for c in y_tr], np.float32)
        teacher = None
        if kd:
            t = np.load(run.run_dir / "teacher_logits.npz")
            teacher = t["train"]
        grid = list(cfg.kd_grid) if (kd and cfg.kd_grid) else [(cfg.kd_alpha if kd else 1.0, cfg.kd_temperature)]
        best = None
        for alpha, temp in grid:
            alpha, temp = float(alpha), float(temp)
            model = build_student(cfg.size, cfg.student_blocks, cfg.student_head,
                                  weights_dir=run.weights_dir if cfg.student_init == "imagenet" else None, arch_dir=run.weights_dir,
                                  freeze_blocks=cfg.student_freeze)
            run.log(f"{name}: alpha={alpha} T={temp}, {model.count_params():,} params, {cfg.epochs} epochs")
            model, hist = train_student(model, x_tr, y_tr, x_va, y_va, teacher, alpha=alpha, temperature=temp, epochs=cfg.epochs,
                                        batch_size=cfg.batch_size, lr=cfg.lr, sample_weight=sw, seed=cfg.seed, log=run.log)
            hist.update(alpha=alpha, temperature=temp)
            if best is None or hist["best_val_auc"] > best[1]["best_val_auc"]:
                best = (model, hist)
        model, hist = best
        model.save_weights(run.run_dir / f"{name}.weights.h5")
        probs = {s: malignant_prob(model, run.tensors(s)) for s in ("val", "test")}
        np.savez(run.run_dir / f"{name}_probs.npz", **probs)
        run.record(name, {"params": int(model.count_params()), **hist})


def load_student(run: Run, name: str):
    from .student import build_student

    cfg = run.cfg
    model = build_student(cfg.size, cfg.student_blocks, cfg.student_head, weights_dir=None, arch_dir=run.weights_dir)
    model.load_weights(run.run_dir / f"{name}.weights.h5")
    return model


def command_line() -> str:
    return "edge-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
