"""Issue 21: the crash benchmark drives the app's current use case and fails when it proves nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "crash_kill.py"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), "--data-dir", str(tmp_path / "data"), *args],
                          check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_a_few_kills_commit_records_and_lose_none(tmp_path):
    result = run(tmp_path, "--kills", "3", "--seed", "1", "--max-delay", "0.8")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index("\n{") + 1:])
    assert summary["kills"] == 3 and summary["records_committed"] > 0
    assert summary["records_in_store"] >= summary["records_committed"] and summary["problems"] == 0


def test_a_child_that_dies_by_itself_fails_the_benchmark(tmp_path):
    result = run(tmp_path, "--kills", "2", "--model", str(tmp_path / "missing.tflite"))
    assert result.returncode != 0
    assert "the child did not start" in result.stderr or "exited by itself" in result.stderr
    assert "missing.tflite not found" in result.stderr  # its own error is shown
