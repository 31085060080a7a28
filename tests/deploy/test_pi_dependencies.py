"""The Pi gets only the core dependencies and the `pi` extra (see deploy/install.sh).

Every command the appliance runs must start without the training stack: the
arm64 proof (deploy/prove-arm64.sh) found `edge-app classify` failing on the Pi
with "No module named 'sklearn'" because one subcommand imported it at the top.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO

# Import names of what only the `train` / `dev` extras install.
TRAIN_ONLY = ("sklearn", "tensorflow", "keras", "matplotlib", "torch", "hypothesis", "playwright")

_RUN_WITHOUT_TRAINING_STACK = f"""
import importlib.abc, sys

class NotOnThePi(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {TRAIN_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed on the Pi)", name=name)
        return None

sys.meta_path.insert(0, NotOnThePi())
entry, *argv = sys.argv[1:]
if entry == "edge-bench":
    from edge_app.bench import main
elif entry == "edge-train":
    from edge_app.training.cli import main
else:
    from edge_app.cli import main
sys.exit(main(argv))
"""


@pytest.mark.parametrize(
    "command",
    [["edge-app", "serve", "--help"], ["edge-app", "classify", "--help"], ["edge-bench", "--help"],
     ["edge-app", "model", "install", "--help"], ["edge-train", "sign", "--help"]],
    ids=" ".join,
)
def test_device_commands_start_without_the_training_stack(command):
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT_TRAINING_STACK, *command],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"`{' '.join(command)}` needs a training-only module on the Pi:\n{proc.stderr[-2000:]}"


def test_edge_train_sign_makes_a_verifiable_bundle_without_tensorflow(tmp_path):
    from edge_app.bundle import generate_key, read_bundle, trusted_keys, verify_signature

    private, public = generate_key(tmp_path / "keys", "release")
    model = REPO / "models" / "student_fp16.tflite"
    if not (model.parent / "MODEL_CARD.md").is_file():
        pytest.skip("no shipped model with a model card")
    out = tmp_path / "bundle.zip"
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT_TRAINING_STACK, "edge-train", "sign", "--key", str(private), "--out", str(out),
         str(model)],
        cwd=REPO, check=False, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "signed with key release" in proc.stdout
    signer = verify_signature(read_bundle(out), trusted_keys(public.parent), public.parent)
    assert signer is not None and signer.key == "release"
