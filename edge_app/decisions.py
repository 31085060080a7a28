"""The decision values a screening record can carry, and which of them are no verdict.

`benign` / `malignant` come from the model at its threshold. A record whose image
cannot support a verdict gets a no-verdict decision instead: the probability is
still stored for audit, but no screen, count or export presents it as a result.
Adding a no-verdict reason is one entry in `NO_VERDICT` and one in `LABELS`.
"""

from __future__ import annotations

from collections.abc import Sequence

BENIGN = "benign"
MALIGNANT = "malignant"
INCONCLUSIVE = "inconclusive"  # the image failed the quality gate
OUT_OF_SCOPE = "out_of_scope"  # the scope check: not a dermoscopy image of a skin lesion like the training images

VERDICTS = (BENIGN, MALIGNANT)
NO_VERDICT = frozenset({INCONCLUSIVE, OUT_OF_SCOPE})

# What the technician reads, one line each (the screen, history, follow-up and detail pages).
LABELS = {
    BENIGN: "Low suspicion",
    MALIGNANT: "Suspicious: refer",
    INCONCLUSIVE: "No result: retake",
    OUT_OF_SCOPE: "No result: not dermoscopy",
}

# Why there is no verdict, in words for the screen (the quality gate lists its own flags instead).
NO_VERDICT_REASONS = {
    OUT_OF_SCOPE: ("This image does not look like a dermoscopy image of a skin lesion this model was trained on, "
                   "so it gives no verdict. Retake it through the dermatoscope, lesion centred."),
}


def is_verdict(decision: str) -> bool:
    return decision not in NO_VERDICT


def screening_decision(model_decision: str, quality_flags: Sequence[str]) -> str:
    """The decision a record stores: the model's (a verdict, or out_of_scope from the scope check),
    unless the quality gate failed, which comes first."""
    return INCONCLUSIVE if quality_flags else model_decision


def all_decisions() -> tuple[str, ...]:
    """Every decision value, verdicts first (for counts that list each class, zero included)."""
    return VERDICTS + tuple(sorted(NO_VERDICT))
