"""The shipped model's scope check on real dermoscopy and on pictures taken without a dermatoscope.

Real images come from ../shared/data (the shipped test split); the tests skip with the reason without it.
Shares over many images are measured by `benchmarks/scope_check.py` (model card).
"""

from __future__ import annotations

import pytest

from edge_app.device_path import screen_image
from edge_app.runtime import Classifier
from edge_app.training import ood_images
from tests.conftest import REPO, dermoscopy_image

MODEL = REPO / "models" / "student_fp16.tflite"


@pytest.fixture(scope="module")
def shipped() -> Classifier:
    return Classifier(MODEL, num_threads=1)


def test_real_held_out_dermoscopy_is_in_scope_and_gets_a_verdict(shipped):
    for i in range(6):
        result = screen_image(shipped, dermoscopy_image(600, 450, index=i))
        assert result.classification.in_scope is True, i
        assert result.decision.value in ("benign", "malignant")


@pytest.mark.parametrize("fraction", [0.2, 0.6])
def test_the_same_lesions_photographed_in_a_field_of_skin_without_a_dermatoscope_get_no_verdict(shipped, fraction):
    """A phone photo from a distance (20% of the frame) and a close-up without a dermatoscope (60%)."""
    for i in range(4):
        photo = ood_images.lesion_on_skin(100 + i, dermoscopy_image(600, 450, index=i), fraction)
        result = screen_image(shipped, photo)
        assert result.classification.in_scope is False and not result.decision.is_verdict, i
        assert 0.0 <= result.probability <= 1.0  # kept for audit


def test_skin_photos_and_objects_are_out_of_scope(shipped):
    for kind in ("skin_photo", "text", "pattern", "flat"):
        for seed in range(3):
            result = screen_image(shipped, ood_images.KINDS[kind](90_000 + seed))
            assert result.classification.in_scope is False and not result.decision.is_verdict, (kind, seed)


def test_the_manifest_states_the_figures_per_source_and_on_held_out_phone_photo_patients(shipped):
    """Issue 20's reports: validation <= 1% and test <= 2% of each dermoscopy source, phone photos of held-out patients,
    the same with no phone photo in the fit, each source left out, the shortcut checks."""
    block = shipped.manifest.scope
    assert shipped.sidecar.scope.net is not None and shipped.scope_net is not None  # novelty + the scope network's head
    assert set(block["val_flagged_by_dataset"]) >= {"ham10000", "isic_archive", "isic2017", "isic2020"}
    assert all(r["flagged"] <= 0.01 for r in block["val_flagged_by_dataset"].values())
    assert all(r["flagged"] <= 0.02 for r in block["test_flagged_by_dataset"].values())
    assert block["net_phone_photos_held_out_patients"]["flagged"] >= 0.95
    assert block["net_phone_photos_held_out_patients"]["n"] == 369
    assert "flagged" in block["net_phone_photos_no_phone_in_fit"]
    assert set(block["source_left_out_flagged"]) == set(block["val_flagged_by_dataset"])
    assert {"phone_as_ham10000_200x150", "dermoscopy_as_phone_300x300"} <= set(block["net_shortcut_checks"])


def test_the_scope_network_travels_beside_the_model_named_by_its_sha256(shipped):
    from edge_app.manifest import scope_model_path_for, sha256_file

    spec = shipped.manifest.scope_model
    path = scope_model_path_for(MODEL)
    assert spec["sha256"] == sha256_file(path) and spec["size_bytes"] == path.stat().st_size <= 6_000_000


def test_the_model_cards_scope_section_is_the_shipped_manifests(shipped):
    """The card's scope figures come from the shipped sidecar's manifest block (refitting rewrites both)."""
    from edge_app.training.card import scope_section

    card = (REPO / "models" / "MODEL_CARD.md").read_text()
    assert scope_section(shipped.manifest.scope) in card
    assert "patient-grouped CV" in card


def test_the_shipped_model_passes_its_self_test_with_tflites_built_in_kernels(monkeypatch):
    """Where XNNPACK is not used (aarch64 LiteRT under qemu in deploy/prove-arm64.sh, found there) the int8 scope
    network's requantization differs: the model must still load, and still keep real dermoscopy in scope."""
    from edge_app import runtime

    litert = pytest.importorskip("ai_edge_litert.interpreter")

    class BuiltinKernels(litert.Interpreter):
        def __init__(self, **kwargs):
            super().__init__(experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                             **kwargs)

    monkeypatch.setattr(runtime, "load_interpreter_class", lambda preferred=None: ("ai_edge_litert", BuiltinKernels))
    clf = Classifier(MODEL, num_threads=1)
    assert clf.scope_net is not None
    for i in range(3):
        assert screen_image(clf, dermoscopy_image(600, 450, index=i)).classification.in_scope is True, i


def test_a_scope_network_that_computes_otherwise_is_refused(tmp_path):
    """The golden scope-network score is checked: a runtime off by more than int8 kernels differ is refused."""
    import json
    import shutil

    for name in ("student_fp16.tflite", "student_fp16.aux.npz", "student_fp16.scope.tflite"):
        shutil.copy(REPO / "models" / name, tmp_path / name)
    manifest = json.loads((REPO / "models" / "student_fp16.json").read_text())
    manifest["selftest"]["cases"][1]["scope_net_score"] += 3.0
    (tmp_path / "student_fp16.json").write_text(json.dumps(manifest))
    from edge_app.runtime import ModelError

    with pytest.raises(ModelError, match="golden scope-network self-test"):
        Classifier(tmp_path / "student_fp16.tflite", num_threads=1)
