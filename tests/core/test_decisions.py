"""One decision: `decide()` turns the probability, the threshold in force, the scope check and the
quality gate into benign / malignant or a no verdict that says why."""

from __future__ import annotations

from edge_app.decisions import (
    BENIGN,
    INCONCLUSIVE,
    LABELS,
    MALIGNANT,
    NO_VERDICT,
    OUT_OF_SCOPE,
    VERDICTS,
    all_decisions,
    decide,
    is_verdict,
)


def test_the_probability_at_or_above_the_threshold_in_force_is_malignant_below_it_benign():
    assert decide(0.40, 0.40, True, []).value == MALIGNANT
    assert decide(0.399, 0.40, True, []).value == BENIGN
    assert decide(0.30, 0.25, None, []).value == MALIGNANT  # a model without a scope check still gives a verdict
    verdict = decide(0.9, 0.4, True, [])
    assert verdict.is_verdict and verdict.flags == () and "0.900" in verdict.reason and "0.400" in verdict.reason


def test_a_failed_quality_gate_gives_no_verdict_whatever_the_model_says_and_names_its_flags():
    for p in (0.01, 0.99):
        d = decide(p, 0.5, True, ["blurry", "too_dark"])
        assert d.value == INCONCLUSIVE and not d.is_verdict
        assert d.flags == ("blurry", "too_dark") and "blurry, too dark" in d.reason and "retake" in d.reason
        assert d.to_dict() == {"decision": INCONCLUSIVE, "verdict": False, "decision_label": "No result: retake",
                               "decision_reason": d.reason, "decision_flags": ["blurry", "too_dark"]}


def test_an_image_the_scope_check_refuses_is_told_it_is_not_dermoscopy_unless_it_is_too_dark_to_judge():
    """Issue 20 (benchmarks/scope_advice.py): a text page or flat colour also fails the quality gate but must be told
    it is not dermoscopy; a too-dark frame, which the scope check cannot judge, is told to add light."""
    d = decide(0.99, 0.5, False, [])
    assert d.value == OUT_OF_SCOPE and d.flags == (OUT_OF_SCOPE,) and "dermatoscope" in d.reason
    for flags in (["blurry"], ["too_bright"], ["no_lesion"], ["blurry", "no_lesion"]):
        assert decide(0.99, 0.5, False, flags).value == OUT_OF_SCOPE, flags
    assert decide(0.99, 0.5, False, ["too_dark"]).value == INCONCLUSIVE
    assert decide(0.99, 0.5, False, ["too_dark", "blurry"]).flags == ("too_dark", "blurry")
    assert decide(0.99, 0.5, True, ["blurry"]).value == INCONCLUSIVE  # dermoscopy that is blurry: retake advice


def test_every_decision_has_words_for_the_technician_and_verdicts_and_no_verdicts_do_not_overlap():
    assert set(all_decisions()) == set(VERDICTS) | NO_VERDICT
    assert not set(VERDICTS) & NO_VERDICT
    assert all(LABELS.get(d) for d in all_decisions())
    assert not any(w in LABELS[d].lower() for d in NO_VERDICT for w in ("benign", "malignant", "suspic"))
    assert not is_verdict(INCONCLUSIVE) and is_verdict(BENIGN)
