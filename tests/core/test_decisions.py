"""Decision values: a failed quality gate means no verdict, whatever the model said."""

from __future__ import annotations

from edge_app.decisions import INCONCLUSIVE, LABELS, NO_VERDICT, VERDICTS, all_decisions, is_verdict, screening_decision


def test_a_failed_quality_gate_gives_no_verdict_whatever_the_model_says():
    for model_says in VERDICTS:
        assert screening_decision(model_says, []) == model_says and is_verdict(model_says)
        assert screening_decision(model_says, ["blurry"]) == INCONCLUSIVE
    assert not is_verdict(INCONCLUSIVE)


def test_every_decision_has_words_for_the_technician_and_verdicts_and_no_verdicts_do_not_overlap():
    assert set(all_decisions()) == set(VERDICTS) | NO_VERDICT
    assert not set(VERDICTS) & NO_VERDICT
    assert all(LABELS.get(d) for d in all_decisions())
    assert not any(w in LABELS[d].lower() for d in NO_VERDICT for w in ("benign", "malignant", "suspic"))
