"""Model bundles carry the scope check + heatmap sidecar: installed with the model, verified against
its manifest, refused when missing or altered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_app.bundle import CARD_NAME, BundleError, model_files_for, write_bundle
from edge_app.model_store import ModelStore
from edge_app.training import ood_images
from tests.reliability.bundles import make_keys, rezip

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def scoped_bundle(tmp_path) -> tuple[Path, Path]:
    """(signed bundle of the tiny scope model, trusted-keys folder)."""
    src = tmp_path / "src"
    src.mkdir()
    for suffix in (".tflite", ".json", ".aux.npz"):
        shutil.copy(FIXTURES / f"tiny_scope_fp16{suffix}", src / f"tiny_scope_fp16{suffix}")
    (src / CARD_NAME).write_text("# Model card\n\nTiny scope test model.\n")
    private, trusted = make_keys(tmp_path)
    bundle = tmp_path / "scoped.zip"
    write_bundle(model_files_for(src / "tiny_scope_fp16.tflite"), bundle, private)
    return bundle, trusted


def test_a_bundle_with_a_sidecar_installs_and_the_installed_model_has_its_scope_check(tmp_path, scoped_bundle):
    bundle, trusted = scoped_bundle
    models = ModelStore(tmp_path / "data", FIXTURES / "tiny_fp16.tflite")
    installed = models.install(bundle, trusted)
    assert (models.dir / installed.id / "tiny_scope_fp16.aux.npz").is_file()
    classifier, in_force = models.load_for_serving(num_threads=1)
    assert in_force.source == "installed" and classifier.has_scope
    assert classifier.classify(ood_images.flat(1)).in_scope is False


def test_making_a_bundle_without_the_sidecar_its_manifest_names_is_refused(tmp_path, scoped_bundle):
    src = tmp_path / "src"
    (src / "tiny_scope_fp16.aux.npz").unlink()
    with pytest.raises(ValueError, match="aux.npz not found"):
        model_files_for(src / "tiny_scope_fp16.tflite")


@pytest.mark.parametrize(("change", "words"), [
    (lambda f: {k: (v[:-9] + b"X" + v[-8:] if k.endswith(".aux.npz") else v) for k, v in f.items()},
     "does not match its manifest"),
    (lambda f: {k: v for k, v in f.items() if not k.endswith(".aux.npz")}, "lacks tiny_scope_fp16.aux.npz"),
], ids=["altered", "missing"])
def test_a_bundle_whose_sidecar_is_altered_or_missing_is_refused(tmp_path, scoped_bundle, change, words):
    bundle, trusted = scoped_bundle
    models = ModelStore(tmp_path / "data", FIXTURES / "tiny_fp16.tflite")
    bad = rezip(bundle, tmp_path / "bad.zip", change)
    with pytest.raises(BundleError) as exc:
        models.install(bad, trusted)
    assert exc.value.step == "sha256" and words in str(exc.value)
    assert models.target("current") is None


def test_calibrate_without_model_uses_the_model_the_app_serves_and_the_app_keeps_its_threshold(tmp_path, scoped_bundle,
                                                                                                 monkeypatch, capsys):
    import json

    from edge_app.cli import main
    from edge_app.site import SITE_FILE
    from tests.core.test_calibrate_and_scope_cli import _write_set

    bundle, trusted = scoped_bundle
    data = tmp_path / "data"
    models = ModelStore(data, FIXTURES / "tiny_fp16.tflite")
    installed = models.install(bundle, trusted)
    monkeypatch.setenv("EDGE_APP_MODEL", str(FIXTURES / "tiny_fp16.tflite"))  # the packaged model is another one
    labels = _write_set(tmp_path / "clinic", malignant_lesions=36, benign_lesions=24)
    assert main(["calibrate", str(labels), "--apply", "--json", "--bootstrap", "50", "--data-dir", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_sha256"] == installed.model_sha256
    classifier, _ = models.load_for_serving(num_threads=1)
    from edge_app.decisions import Threshold
    from edge_app.site import SiteWatcher

    watcher = SiteWatcher(data)
    assert watcher.threshold(classifier) == Threshold(report["threshold"], "site") and watcher.problem is None
    assert json.loads((data / SITE_FILE).read_text())["model_sha256"] == classifier.sha256


@pytest.fixture
def net_bundle(tmp_path) -> tuple[Path, Path]:
    """(signed bundle of the shipped model with its scope network, trusted-keys folder)."""
    from edge_app.manifest import Manifest
    from tests.reliability.bundles import model_copy

    tflite = model_copy(tmp_path / "src")
    if not Manifest.load(tflite.with_suffix(".json")).scope_model:
        pytest.skip("the model under test has no scope network")
    private, trusted = make_keys(tmp_path)
    bundle = tmp_path / "net.zip"
    write_bundle(model_files_for(tflite), bundle, private)
    return bundle, trusted


def test_a_bundle_carries_the_scope_network_and_the_installed_model_runs_it(tmp_path, net_bundle):
    bundle, trusted = net_bundle
    models = ModelStore(tmp_path / "data", FIXTURES / "tiny_fp16.tflite")
    installed = models.install(bundle, trusted)
    assert list((models.dir / installed.id).glob("*.scope.tflite"))
    classifier, _ = models.load_for_serving(num_threads=1)
    assert classifier.scope_net is not None
    assert classifier.classify(ood_images.text(1)).in_scope is False


@pytest.mark.parametrize(("change", "words"), [
    (lambda f: {k: (v[:-9] + b"X" + v[-8:] if k.endswith(".scope.tflite") else v) for k, v in f.items()},
     "does not match its manifest"),
    (lambda f: {k: v for k, v in f.items() if not k.endswith(".scope.tflite")}, "the scope network its manifest names"),
], ids=["altered", "missing"])
def test_a_bundle_whose_scope_network_is_altered_or_missing_is_refused(tmp_path, net_bundle, change, words):
    bundle, trusted = net_bundle
    models = ModelStore(tmp_path / "data", FIXTURES / "tiny_fp16.tflite")
    with pytest.raises(BundleError) as exc:
        models.install(rezip(bundle, tmp_path / "bad.zip", change), trusted)
    assert exc.value.step == "sha256" and words in str(exc.value)
    assert models.target("current") is None
