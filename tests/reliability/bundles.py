"""Making model bundles for the update tests: keys, a second model, good and damaged bundles.

Everything is read from the shipped model's manifest (sha256, threshold, version), so the tests
hold when the shipped model is replaced.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from edge_app.bundle import CARD_NAME, SIGNATURE_NAME, generate_key, model_files_for, write_bundle
from edge_app.manifest import aux_path_for, scope_model_path_for
from tests.app.conftest import model_path

KEY_NAME = "clinic-test"


def make_keys(root: Path, name: str = KEY_NAME) -> tuple[Path, Path]:
    """(private key, trusted-keys folder holding its .pub)."""
    private, public = generate_key(root / "signing", name)
    trusted = root / "trusted_keys"
    trusted.mkdir(exist_ok=True)
    shutil.copyfile(public, trusted / public.name)
    return private, trusted


def model_copy(dest: Path, version_suffix: str = "", **manifest_changes) -> Path:
    """The test model (shipped student) copied to `dest`, its manifest changed as asked (a new
    site threshold, say): a different model as far as installs are concerned. Returns the .tflite."""
    src = model_path()
    dest.mkdir(parents=True, exist_ok=True)
    tflite = dest / src.name
    shutil.copyfile(src, tflite)
    if aux_path_for(src).is_file():  # the scope check + heatmap sidecar, when the model has one
        shutil.copyfile(aux_path_for(src), aux_path_for(tflite))
    if scope_model_path_for(src).is_file():  # the scope network, when the model has one
        shutil.copyfile(scope_model_path_for(src), scope_model_path_for(tflite))
    manifest = json.loads(src.with_suffix(".json").read_text())
    manifest["version"] += version_suffix
    for key, value in manifest_changes.items():
        manifest[key] = value
    tflite.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    card = src.parent / CARD_NAME
    (dest / CARD_NAME).write_text(card.read_text() if card.is_file() else f"# Model card\n\nTest model {manifest['version']}.\n")
    return tflite


def signed_bundle(tflite: Path, out: Path, key: Path | None) -> Path:
    write_bundle(model_files_for(tflite), out, key)
    return out


def members(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def rezip(bundle: Path, out: Path, change: Callable[[dict[str, bytes]], dict[str, bytes]]) -> Path:
    """A copy of `bundle` with its members changed by `change` (signature left as it was)."""
    files = change(members(bundle))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    out.write_bytes(buf.getvalue())
    return out


def tflite_name(files: dict[str, bytes]) -> str:
    return next(n for n in files if n.endswith(".tflite"))


def manifest_name(files: dict[str, bytes]) -> str:
    return next(n for n in files if n.endswith(".json") and n != SIGNATURE_NAME)
