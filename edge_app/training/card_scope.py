"""The model card's scope-check section for a check with a scope network (manifest `scope` block from
`edge-train scope`, `training/scope_refit.py`)."""

from __future__ import annotations

from typing import Any

# Why this design (measured here, numbers reproduced by the commands in the README's "Scope check" section).
DESIGN = (
    "**Why a network of its own, frozen, with a linear head.** The issue's probes (fitted on the staged phone photos, "
    "threshold at 1% of dermoscopy) found that what tells a phone photo from dermoscopy on pictures of *another* source "
    "is what ImageNet knows about photographs, seen on the raw decoded pixels, and that it takes the whole trunk: the "
    "student's features reached 27-31% of clinical photos of another source, ImageNet Lite0's 1280 pooled features at "
    "128 px 79%. So the check runs ImageNet EfficientNet-Lite0 on the decoded frame (not the six stages, which remove "
    "framing and lighting), 128 px, and reads its pooled features with a logistic head. The trunk is kept frozen: "
    "fine-tuning its top blocks on cached activations was the planned challenger, but on this 2-core machine (shared, "
    "load 10-16) describing the images through Keras ran at about 15 images/s, so a fine-tuned trunk with its "
    "patient-grouped and left-out-source refits did not fit the session; a frozen trunk also lets `edge-train scope` "
    "refit the head on the device runtime's own int8 features without TensorFlow. Export: full int8 (weights and "
    "activations, calibrated on 200 frames of both kinds), 4.0 MB, 2.3 ms p50 on two cores with XNNPACK; float16 would be "
    "6.8 MB (over the 6 MB budget) at 4.1 ms, int8 weights with float activations 3.7 MB at 25 ms."
)


def _share(r: dict[str, Any] | None) -> str:
    if not r or r.get("flagged") is None:
        return "n/a"
    return f"{r['flagged']:.1%} (n {r['n']})"


def scope_net_section(block: dict[str, Any]) -> list[str]:
    """Lines of the section (without the start/end markers)."""
    L: list[str] = []
    a = L.append
    a("An image gets no verdict (`out_of_scope`) when either part flags it (`edge_app/scope.py`, NumPy + LiteRT on the "
      "device): a **novelty** distance of the student's own features to training dermoscopy of every staged source "
      f"(PCA-Mahalanobis + residual, {block['components']} components: catches the unforeseen, flat colour, noise, text), "
      "or the **scope network** (`<model>.scope.tflite`, ImageNet EfficientNet-Lite0 on the decoded frame as it is, int8) "
      "with a logistic head fitted on its features: dermoscopy of every staged source (as is and device-augmented) against "
      "the staged phone photos (PAD-UFES-20, split by patient) and the generated kinds, each through the same device "
      f"augmentation (resolution and geometry, JPEG quality, colour, blur). Thresholds: {block['rule']}.\n")
    a(DESIGN + "\n")
    a("| dermoscopy source | validation flagged | test flagged | source left out of the fit: flagged |")
    a("| --- | --- | --- | --- |")
    val, test, loso = (block.get(k, {}) for k in ("val_flagged_by_dataset", "test_flagged_by_dataset", "source_left_out_flagged"))
    for s in val:
        a(f"| {s} | {_share(val.get(s))} | {_share(test.get(s))} | {_share(loso.get(s))} |")
    a("\nLeft out = the novelty part and the head fitted and thresholded without that source; its validation and test "
      "images scored (another dermatoscope the check never saw).\n")
    a("| not dermoscopy (held out) | flagged by the scope network |\n| --- | --- |")
    a(f"| staged phone photos, patient-grouped CV ({block['net_phone_photos_held_out_patients'].get('folds')} folds: "
      f"the head never saw the patient) | {_share(block['net_phone_photos_held_out_patients'])} |")
    a(f"| staged phone photos, no phone photo in the fit at all (what a new kind of photo may expect) | "
      f"{_share(block['net_phone_photos_no_phone_in_fit'])} |")
    for kind, r in block.get("net_generated_held_out", {}).items():
        a(f"| generated {kind.replace('_', ' ')} (seed 7; lesions from the test split) | {_share(r)} |")
    a("\nThe novelty part flags more on top (the check as a whole: `python benchmarks/scope_check.py`).\n")
    a("**Shortcut checks** (does the head read image size or JPEG quality?): a copy at the other side's geometry, "
      "flagged by the scope network (phone photos by the fold's head that never saw the patient):\n")
    a("| copy | flagged |\n| --- | --- |")
    for kind, r in block.get("net_shortcut_checks", {}).items():
        a(f"| {kind.replace('_', ' ')} | {_share(r)} |")
    a("\nImages in the fit: " + ", ".join(f"{k} {n}" for k, n in block.get("images_in_fit", {}).items()) + ".")
    return L
