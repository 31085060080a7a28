"""The model card's test-split numbers come back, exactly, from the documented device-path commands."""

import json
import re
from pathlib import Path

import pytest

from edge_app.cli import main

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "models" / "MODEL_CARD.md"
TEST_SPLIT = REPO / "models" / "splits" / "test.csv"
DATA = REPO.parent / "shared" / "data"
CI = r"([\d.]+) \[([\d.]+), ([\d.]+)\]"


def _card_rows() -> dict[str, dict]:
    section = CARD.read_text().split("## Results on the lesion-grouped test splits", 1)[1].split("Median P", 1)[0]
    rows = {}
    for m in re.finditer(rf"^\| (\w+) \| (\d+) \((\d+)\) \| {CI} \| ([\d.]+|n/a) \| {CI} \| {CI} \|$", section, re.MULTILINE):
        g = m.groups()
        rows[g[0]] = {"n": int(g[1]), "n_malignant": int(g[2]), "auc": tuple(map(float, g[3:6])), "auc_no_follow_up": g[6],
                      "sensitivity": tuple(map(float, g[7:10])), "specificity": tuple(map(float, g[10:13]))}
    return rows


def _evaluate(capsys, *extra: str) -> dict:
    code = main(["evaluate", str(TEST_SPLIT), "--root", str(DATA), "--per", "dataset", "--json", *extra])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["errors"] == 0
    return report


def _same(report: dict, row: dict) -> None:
    assert (report["n"], report["n_malignant"]) == (row["n"], row["n_malignant"])
    for key in ("auc", "sensitivity", "specificity"):
        value, lo, hi = row[key]
        assert report[key]["value"] == pytest.approx(value, abs=0.0015), key
        assert report[key]["ci95"] == pytest.approx([lo, hi], abs=0.0015), key


@pytest.mark.slow
def test_edge_app_evaluate_reproduces_the_model_card_per_source(ham10000_dir, capsys):
    if not (TEST_SPLIT.exists() and (DATA / "isic_archive" / "labels.csv").exists()):
        pytest.skip("no shipped test split or ../shared/data/isic_archive absent")
    rows = _card_rows()
    assert {"all", "ham10000", "isic_archive"} <= set(rows)
    report = _evaluate(capsys)
    _same(report, rows["all"])
    for source in ("ham10000", "isic_archive"):
        _same(report["per"][source], rows[source])
    no_fu = _evaluate(capsys, "--exclude", "dx_type=follow_up", "--bootstrap", "10")
    assert no_fu["auc"]["value"] == pytest.approx(float(rows["all"]["auc_no_follow_up"]), abs=0.0015)
    assert no_fu["per"]["ham10000"]["auc"]["value"] == pytest.approx(float(rows["ham10000"]["auc_no_follow_up"]), abs=0.0015)
