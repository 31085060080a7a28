"""The model card's test-split numbers come back, exactly, from the documented device-path command."""

import json
import re
from pathlib import Path

import pytest

from edge_app.cli import main

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "models" / "MODEL_CARD.md"
TEST_SPLIT = REPO / "models" / "splits" / "test.csv"


def _card_results() -> tuple[dict[str, tuple[float, float, float]], dict[str, int]]:
    text = CARD.read_text()
    section = text.split("## Results on the lesion-grouped test split", 1)[1].split("###", 1)[0]
    rows = {
        name.strip().replace(" ", "_"): (float(v), float(lo), float(hi))
        for name, v, lo, hi in re.findall(r"^\| ([a-z ]+) \| ([\d.]+) \[([\d.]+), ([\d.]+)\] \|", section, re.MULTILINE)
    }
    confusion = {k.lower(): int(v) for k, v in re.findall(r"\b(TP|FN|TN|FP) (\d+)", section)}
    return rows, confusion


def test_edge_app_evaluate_on_the_test_split_reproduces_the_model_card(ham10000_dir, capsys):
    if not TEST_SPLIT.exists():
        pytest.skip("no shipped test split (models/splits/test.csv)")
    rows, confusion = _card_results()
    assert set(rows) == {"auc", "sensitivity", "specificity", "balanced_accuracy"}
    code = main(["evaluate", str(TEST_SPLIT), "--root", str(ham10000_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["errors"] == 0
    assert report["confusion"] == confusion
    for key, (value, lo, hi) in rows.items():
        assert report[key]["value"] == pytest.approx(value, abs=0.0015), key
        assert report[key]["ci95"] == pytest.approx([lo, hi], abs=0.0015), key
