"""Check that the training module's Keras 3 model code runs with KERAS_BACKEND=torch.

The lent GPU machine has PyTorch and no TensorFlow: teachers can be fine-tuned
there and handed back as `.weights.h5`; the float16 TFLite export always runs on
the TensorFlow side. Run in a venv with torch + keras (no TensorFlow needed):

    python -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 keras h5py numpy opencv-python-headless scikit-learn pillow tqdm
    /tmp/torchvenv/bin/python scripts/check_torch_backend.py [--weights-dir ../shared/weights]

Trains the student with the distillation loss, fine-tunes a Lite teacher backbone,
saves its weights, and builds the three paper-family backbones; exits non-zero on
any failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights-dir", default=str(REPO.parent / "shared" / "weights"))
    args = ap.parse_args()

    import keras
    import numpy as np

    from edge_app.training.distill import train_student
    from edge_app.training.student import build_student
    from edge_app.training.teacher import feature_extractor, finetune_backbone

    if keras.backend.backend() != "torch":
        print(f"error: Keras backend is {keras.backend.backend()}, not torch", file=sys.stderr)
        return 1
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (48, 32, 32, 3)).astype("float32")
    y = np.arange(48) % 2
    x[y == 1] *= 0.3  # a learnable difference
    teacher_logits = rng.normal(size=(48, 2)).astype("float32")

    student = build_student(32, 3, 16, weights_dir=args.weights_dir, arch_dir=args.weights_dir, freeze_blocks=1)
    _, hist = train_student(student, x, y, x, y, teacher_logits, alpha=0.5, temperature=4.0, epochs=2, batch_size=16, lr=1e-3)
    print(f"student with KD: 2 epochs, validation AUC {hist['best_val_auc']:.3f}")

    backbone = feature_extractor("lite", "lite0", 32, 32, args.weights_dir, freeze_stages=3)
    finetune_backbone(backbone, x, y, x, y, epochs=1, lr=1e-3, batch_size=16, sample_weight=np.ones(48, "float32"), seed=0)
    path = Path(tempfile.mkdtemp()) / "teacher_lite0.weights.h5"
    backbone.save_weights(path)
    print(f"Lite0 teacher fine-tuned; weights saved as {path.name} ({path.stat().st_size:,} bytes)")

    for name in ("resnet152v2", "convnextbase", "vitbase"):
        feats = feature_extractor("paper", name, 32, 32, tiny=True).predict(x[:4], verbose=0)
        print(f"{name} (reduced): pooled features {tuple(feats.shape)}")
    print("ok: the model code runs with KERAS_BACKEND=torch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
