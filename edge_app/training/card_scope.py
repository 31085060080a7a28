"""The model card's scope-check section for a check with a scope network (manifest `scope` block from
`edge-train scope`, `training/scope_refit.py`)."""

from __future__ import annotations

from typing import Any

# Why this design (measured here, numbers reproduced by the commands in the README's "Scope check" section).
DESIGN = (
    "**Why this design (measured here).** The issue's probes showed that what tells a phone photo from dermoscopy "
    "is what ImageNet knows about photographs, seen on the raw decoded pixels. Here, with the staged phone photos in "
    "patient-grouped 5-fold CV and the threshold at <= 0.8% of *each* source's validation dermoscopy (so the hardest "
    "source binds), a logistic head on frozen ImageNet Lite0's 1280 pooled features flagged 70% of held-out patients' "
    "photos at 128 px (int8; 64% at C 1, 75% at C 0.01; a 64-unit MLP 75%), 68% at 160 px, 65% with the spatial spread "
    "of the last map added; fine-tuning blocks 11-15 and a head on cached block-10 activations (128 px, 2 epochs, "
    "about 3 minutes a fold on this shared 2-core machine) 89% on one fold. The **spatial mean and standard deviation of "
    "the outputs of blocks 4, 10 and 14** at 160 px (688 values: textures, surfaces, lighting rather than ImageNet "
    "classes) reached 96% (blocks 2, 4, 7, 10, 12, 14: 95%; blocks 7, 10, 14: 95%), so the shipped network is Lite0 cut "
    "after block 14, frozen, with those statistics as its output and the logistic head in the sidecar: it beats the "
    "fine-tuned candidate, costs no training, and `edge-train scope` refits its head on the device runtime's own int8 "
    "features without TensorFlow. Export: full int8 (weights and activations, calibrated on 200 frames of both "
    "kinds), 2.8 MB; the whole trunk in float16 would be 6.8 MB (over the 6 MB budget), int8 weights with float "
    "activations 25 ms a frame."
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
