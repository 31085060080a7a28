import json
import shutil

import pytest

from edge_app import runtime
from edge_app.manifest import aux_path_for, scope_model_path_for
from edge_app.preprocess import PREPROCESS_VERSION
from edge_app.runtime import Classifier, ModelError
from tests.conftest import dermoscopy_image


@pytest.fixture
def model_copy(tmp_path, model_path):
    """A private copy of the model + manifest that a test may damage."""
    dst = tmp_path / model_path.name
    shutil.copy(model_path, dst)
    shutil.copy(model_path.with_suffix(".json"), dst.with_suffix(".json"))
    if aux_path_for(model_path).is_file():  # the scope check + heatmap sidecar, when the model has one
        shutil.copy(aux_path_for(model_path), aux_path_for(dst))
    if scope_model_path_for(model_path).is_file():  # the scope network, when the model has one
        shutil.copy(scope_model_path_for(model_path), scope_model_path_for(dst))
    return dst


def _edit_manifest(path, **changes):
    mpath = path.with_suffix(".json")
    data = json.loads(mpath.read_text())
    for key, value in changes.items():
        data[key] = value(data[key]) if callable(value) else value
    mpath.write_text(json.dumps(data))


def test_classify_gives_probabilities_and_timings_and_leaves_the_decision_to_the_device_path(model_path):
    clf = Classifier(model_path)
    result = clf.classify(dermoscopy_image(1280, 960))
    assert set(result.probabilities) == {"benign", "malignant"}
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert result.malignant_probability == result.probabilities["malignant"]
    assert not hasattr(result, "decision") and not hasattr(result, "threshold")  # decisions.decide, on the device path
    assert {"crop", "resize", "dehair", "denoise", "contrast", "normalize", "inference", "total"} <= set(result.timings_ms)
    assert result.model_sha256 == clf.manifest.sha256 and result.preprocessing_version == PREPROCESS_VERSION
    assert clf.runtime_name == "ai_edge_litert"
    assert clf.selftest_max_diff <= clf.manifest.selftest["tolerance"]


def test_a_corrupted_model_file_is_refused_with_a_clear_message(model_copy):
    data = bytearray(model_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its manifest.*re-export or restore"):
        Classifier(model_copy)


def test_a_model_without_its_manifest_is_refused(model_copy):
    model_copy.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="manifest .* is missing"):
        Classifier(model_copy)


def test_a_missing_model_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Classifier(tmp_path / "nope.tflite")


def test_another_preprocessing_version_is_refused(model_copy):
    _edit_manifest(model_copy, preprocessing=lambda p: p | {"version": "0.1"})
    with pytest.raises(ModelError, match="preprocessing .*version '0.1'"):
        Classifier(model_copy)


def test_a_golden_self_test_mismatch_refuses_to_serve(model_copy):
    def shift(selftest):
        selftest["cases"][1]["output"] = [1.0 - v for v in selftest["cases"][1]["output"]]
        selftest["cases"][1]["output"][0] += 0.2
        return selftest

    _edit_manifest(model_copy, selftest=shift)
    with pytest.raises(ModelError, match="fails its golden self-test"):
        Classifier(model_copy)


def test_a_manifest_that_is_not_json_is_refused(model_copy):
    model_copy.with_suffix(".json").write_text("{ not json")
    with pytest.raises(ModelError, match="unreadable"):
        Classifier(model_copy)


def test_no_runtime_installed_says_how_to_install_one(monkeypatch, model_path):
    monkeypatch.setattr(runtime, "RUNTIME_MODULES", (("ai_edge_litert", "no_such_module_litert"),))
    with pytest.raises(ModelError, match="pip install ai-edge-litert"):
        Classifier(model_path)


def test_the_device_path_does_not_import_tensorflow(model_path):
    import subprocess
    import sys

    code = (
        "import sys; from edge_app.runtime import Classifier; "
        f"Classifier({str(model_path)!r}); print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
