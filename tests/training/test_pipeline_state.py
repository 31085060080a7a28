"""Run-folder bookkeeping: the compared teacher's config, the KD teacher choice, metrics.json under concurrent steps."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from edge_app.training.config import get_preset, teacher_of
from edge_app.training.pipeline import best_teacher
from edge_app.training.run_state import Run


def _run(tmp_path: Path) -> Run:
    return Run(cfg=get_preset("cpu"), data=tmp_path, run_dir=tmp_path)


def test_compared_teacher_takes_only_the_teacher_settings_of_the_other_preset():
    cpu = get_preset("cpu").override(["epochs=4", "kd_alpha=0.5"])
    other = teacher_of(cpu, "paper-small")
    assert other.teacher_family == "paper" and other.teacher_size == 64 and other.teacher_tiny
    assert other.preset == "paper-small" and other.compare_teacher == ""
    # the student, split and threshold settings stay those of the run
    assert (other.epochs, other.kd_alpha, other.size, other.split_seed, other.min_sensitivity) == (4, 0.5, 128, 0, 0.9)


def test_the_student_is_distilled_from_the_teacher_with_the_better_validation_auc(tmp_path):
    run = _run(tmp_path)
    for key, auc in (("teacher", 0.87), ("teacher_paper_small", 0.91)):
        run.record(key, {"heads": {"logit_avg": {"val_auc": auc}}, "fusion": "logit_avg"})
    np.savez(tmp_path / "teacher_logits.npz", train=np.zeros((2, 2)))
    assert best_teacher(run) == "teacher"  # the better one has no logits on disk: not a candidate
    np.savez(tmp_path / "teacher_paper_small_logits.npz", train=np.zeros((2, 2)))
    assert best_teacher(run) == "teacher_paper_small"


def test_no_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="run the teacher step first"):
        best_teacher(_run(tmp_path))


def _writer(run_dir: str, prefix: str, n: int) -> None:
    from edge_app.training.run_state import timed

    run = Run(cfg=get_preset("cpu"), data=Path(run_dir), run_dir=Path(run_dir))
    for i in range(n):
        run.record(f"{prefix}{i}", {"i": i})
        with timed(run, f"{prefix}{i}"):  # each step's wall time goes into one shared dict
            pass


def test_two_steps_recording_side_by_side_lose_no_key(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), p, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {f"{p}{i}" for p in "ab" for i in range(40)} | {"timings_s"}
    assert set(metrics["timings_s"]) == {f"{p}{i}" for p in "ab" for i in range(40)}
