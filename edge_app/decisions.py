"""The decision a screening carries, made in one place: `decide()`.

`benign` / `malignant` come from the model's probability at the threshold in force.
A screening whose image cannot support a verdict gets a no-verdict decision instead:
the probability is still stored for audit, but no screen, count or export presents it
as a result. The device path (`device_path.screen_*`) calls `decide()` once per image,
so the app, `edge-app classify|evaluate`, `edge-bench` and the training module's
device-path evaluation read the same decision for the same file.
Adding a no-verdict reason is one entry in `NO_VERDICT`, one in `LABELS` and one gate in `decide()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    # One line on what a dermoscopy image looks like (the screen's title already says "not dermoscopy").
    OUT_OF_SCOPE: "Retake through the dermatoscope: lesion centred and large, evenly lit, often in a dark round rim.",
}


@dataclass(frozen=True)
class Threshold:
    """The decision threshold in force: the model's own (its manifest) or the site's (`edge-app calibrate --apply`)."""

    value: float
    source: str = "model"  # "model" | "site"


@dataclass(frozen=True)
class Decision:
    """What one screening decided, and why."""

    value: str  # benign | malignant | inconclusive | out_of_scope
    reason: str  # one line in words: the probability against the threshold, or why there is no verdict and what to do
    flags: tuple[str, ...] = ()  # what refused a verdict: the quality gate's flags, or ("out_of_scope",)

    @property
    def is_verdict(self) -> bool:
        return is_verdict(self.value)

    @property
    def label(self) -> str:
        return LABELS[self.value]

    def to_dict(self) -> dict[str, Any]:
        """The keys a record, `classify --json` and `edge-bench --json` share."""
        return {"decision": self.value, "verdict": self.is_verdict, "decision_label": self.label,
                "decision_reason": self.reason, "decision_flags": list(self.flags)}


def decide(probability: float, threshold: float, in_scope: bool | None, quality_flags: Sequence[str]) -> Decision:
    """The decision for P(malignant) `probability` at `threshold` (malignant when p >= threshold), unless
    a gate refuses a verdict. `in_scope`: the scope check's answer (None: the model has none);
    `quality_flags`: the quality gate's flags (empty: passed)."""
    # Precedence (issue 20, measured by benchmarks/scope_advice.py): the scope check's refusal comes first, so a
    # picture that is not dermoscopy is told so (quality first told 100% of flat colours, 67% of noise, 9% of text
    # pages and 9% of phone photos to fix the light or focus), except when the frame is too dark: the scope check
    # cannot judge it (it refuses 81% of under-lit dermoscopy) and the technician must add light and retake.
    dark = "too_dark" in quality_flags
    gates = (_quality_refusal(quality_flags), _scope_refusal(in_scope)) if dark else \
        (_scope_refusal(in_scope), _quality_refusal(quality_flags))
    for refusal in gates:
        if refusal is not None:
            return refusal
    if probability >= threshold:
        return Decision(MALIGNANT, f"P(malignant) {probability:.3f} is at or above the threshold {threshold:.3f}")
    return Decision(BENIGN, f"P(malignant) {probability:.3f} is below the threshold {threshold:.3f}")


def _quality_refusal(flags: Sequence[str]) -> Decision | None:
    if not flags:
        return None
    words = ", ".join(f.replace("_", " ") for f in flags)
    return Decision(INCONCLUSIVE, f"The image failed the quality check ({words}), so it gives no verdict: retake it.",
                    tuple(flags))


def _scope_refusal(in_scope: bool | None) -> Decision | None:
    return Decision(OUT_OF_SCOPE, NO_VERDICT_REASONS[OUT_OF_SCOPE], (OUT_OF_SCOPE,)) if in_scope is False else None


def is_verdict(decision: str) -> bool:
    return decision not in NO_VERDICT


def all_decisions() -> tuple[str, ...]:
    """Every decision value, verdicts first (for counts that list each class, zero included)."""
    return VERDICTS + tuple(sorted(NO_VERDICT))
