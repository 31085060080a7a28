"""Loading the TFLite student and classifying images with it.

Interpreter order: `ai_edge_litert` (LiteRT, works with NumPy 2), then
`tflite_runtime` (NumPy < 2 only), then `tensorflow.lite` (training machines).
The device path never imports TensorFlow unless both light runtimes are absent.

Before serving, a model must pass three checks, each with a message a
technician can act on: the `.tflite` matches the sha256 in its manifest, the
manifest's preprocessing version is the one this code implements, and the
golden self-test (reference inputs with the outputs the exporter saw) is
reproduced within tolerance by *this* runtime on *this* machine.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import Manifest, ManifestError, manifest_path_for, selftest_input, sha256_file
from .preprocess import Preprocessor

RUNTIME_MODULES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow.lite", "tensorflow.lite"),
)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "student_fp16.tflite"


class ModelError(RuntimeError):
    """The model cannot be served. The message says what to do."""


def load_interpreter_class(preferred: str | None = None) -> tuple[str, Any]:
    """Return (runtime name, Interpreter class) of the first runtime that imports."""
    errors = []
    for name, module in RUNTIME_MODULES:
        if preferred and name != preferred:
            continue
        try:
            mod = importlib.import_module(module)
            return name, mod.Interpreter
        except Exception as exc:  # noqa: BLE001 - NumPy ABI breaks raise ImportError, AttributeError, ...
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise ModelError(
        "no TFLite runtime could be loaded; install one with `pip install ai-edge-litert` "
        "(or `edge-app[tflite]` on NumPy < 2). Tried: " + "; ".join(errors)
    )


@dataclass
class Classification:
    probabilities: dict[str, float]
    malignant_probability: float
    threshold: float
    decision: str  # the positive label at or above the threshold, else the other label
    timings_ms: dict[str, float] = field(default_factory=dict)  # stages + inference + total
    model_sha256: str = ""
    model_version: str = ""
    preprocessing_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "probabilities": self.probabilities,
            "malignant_probability": self.malignant_probability,
            "threshold": self.threshold,
            "decision": self.decision,
            "timings_ms": self.timings_ms,
            "model_sha256": self.model_sha256,
            "model_version": self.model_version,
            "preprocessing_version": self.preprocessing_version,
        }


class Classifier:
    """A verified model + its preprocessing. Thread-safe (calls are serialised)."""

    def __init__(
        self,
        model_path: str | Path = DEFAULT_MODEL,
        manifest_path: str | Path | None = None,
        num_threads: int | None = 2,
        runtime: str | None = None,
    ) -> None:
        start = time.perf_counter()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"model file {self.model_path} not found; restore it or pass --model PATH")
        try:
            self.manifest = Manifest.load(manifest_path or manifest_path_for(self.model_path))
        except ManifestError as exc:
            raise ModelError(str(exc)) from None
        self.sha256 = sha256_file(self.model_path)
        if self.sha256 != self.manifest.sha256:
            raise ModelError(
                f"model file {self.model_path} does not match its manifest (sha256 {self.sha256[:12]}... "
                f"but the manifest says {self.manifest.sha256[:12]}...): re-export or restore the file"
            )
        try:
            self.preprocessor = Preprocessor.from_description(self.manifest.preprocessing)
        except ValueError as exc:
            raise ModelError(f"model {self.model_path.name}: {exc}") from None
        self.runtime_name, interpreter_cls = load_interpreter_class(runtime)
        try:
            self._interpreter = interpreter_cls(model_path=str(self.model_path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"model file {self.model_path} cannot be loaded by {self.runtime_name} ({exc}); re-export or restore it") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        expected = [int(v) for v in self.manifest.input["shape"]]
        actual = [int(v) for v in self._input["shape"]]
        if actual[1:] != expected[1:]:
            raise ModelError(f"model input shape {actual} differs from its manifest {expected}; re-export the model")
        if len(self.manifest.labels) != int(self._output["shape"][-1]):
            raise ModelError(f"model has {self._output['shape'][-1]} outputs but its manifest names {len(self.manifest.labels)} labels")
        self._lock = threading.Lock()
        self.positive_index = self.manifest.labels.index(self.manifest.positive_label)
        # Short side the device path decodes / shrinks a frame to (images.decode(min_side=...)):
        # 2x the model input leaves room for the field-of-view crop and costs nothing measurable
        # (edge-app evaluate on ISIC archive images up to 640 px: AUC 0.7421 at 4x, 0.7424 at 2x,
        # 0.7369 at 1.5x; README "Scaled decode"). A 1280x960 frame then decodes at 1/2 scale.
        self.decode_min_side = 2 * self.manifest.input_size
        self.load_ms = (time.perf_counter() - start) * 1000.0
        self.selftest_max_diff = self._run_selftest()
        self._warm_up_preprocessing()
        self.init_ms = (time.perf_counter() - start) * 1000.0

    # ------------------------------------------------------------------ checks

    def _run_selftest(self) -> float:
        cases = self.manifest.selftest.get("cases", [])
        tolerance = float(self.manifest.selftest.get("tolerance", 0.01))
        if not cases:
            raise ModelError(f"model manifest for {self.model_path.name} has no golden self-test; re-export the model")
        worst = 0.0
        for case in cases:
            got = self.predict(selftest_input(case["pattern"], self.manifest.input_size))[0]
            want = np.asarray(case["output"], dtype=np.float32)
            diff = float(np.max(np.abs(got - want)))
            worst = max(worst, diff)
            if not diff <= tolerance:
                raise ModelError(
                    f"model {self.model_path.name} fails its golden self-test on {self.runtime_name}: "
                    f"pattern {case['pattern']!r} differs by {diff:.4f} (tolerance {tolerance}). The runtime "
                    f"disagrees with the exporter (TensorFlow {self.manifest.converter.get('tensorflow', '?')}): "
                    "install a matching ai-edge-litert, or re-export the model"
                )
        return worst

    def _warm_up_preprocessing(self) -> None:
        """OpenCV initialises some stages (CLAHE) on first use, about 100 ms; pay
        that at start-up instead of on the first screening."""
        frame = np.full((240, 320, 3), (150, 170, 210), np.uint8)
        frame[80:160, 120:200] = (60, 50, 80)
        self.preprocessor.run(frame)

    # ------------------------------------------------------------------ inference

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Model tensors (N, H, W, 3) float32 -> probabilities (N, labels). Serialised."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        out = np.empty((batch.shape[0], len(self.manifest.labels)), np.float32)
        with self._lock:
            for i in range(batch.shape[0]):
                self._interpreter.set_tensor(self._input["index"], batch[i : i + 1].astype(self._input["dtype"]))
                self._interpreter.invoke()
                out[i] = self._interpreter.get_tensor(self._output["index"])[0]
        return out

    def classify(self, image: np.ndarray, preprocessor: Preprocessor | None = None) -> Classification:
        """BGR uint8 image of any size -> probabilities, decision and timings (six stages +
        inference). The device path (`device_path.screen_*`) adds decoding and the quality gate."""
        start = time.perf_counter()
        pre = (preprocessor or self.preprocessor).run(image)
        t0 = time.perf_counter()
        probs = self.predict(pre.tensor)[0]
        timings = dict(pre.timings_ms)
        timings["inference"] = (time.perf_counter() - t0) * 1000.0
        timings["total"] = (time.perf_counter() - start) * 1000.0
        return self.result_from_probabilities(probs, timings)

    def result_from_probabilities(self, probs: np.ndarray, timings: dict[str, float] | None = None) -> Classification:
        labels = self.manifest.labels
        p_pos = float(probs[self.positive_index])
        threshold = float(self.manifest.threshold)
        negative = next((lbl for lbl in labels if lbl != self.manifest.positive_label), "benign")
        return Classification(
            probabilities={lbl: float(p) for lbl, p in zip(labels, probs)},
            malignant_probability=p_pos,
            threshold=threshold,
            decision=self.manifest.positive_label if p_pos >= threshold else negative,
            timings_ms={k: round(v, 3) for k, v in (timings or {}).items()},
            model_sha256=self.sha256,
            model_version=self.manifest.version,
            preprocessing_version=self.preprocessor.version,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_path.name,
            "model_version": self.manifest.version,
            "model_sha256": self.sha256,
            "runtime": self.runtime_name,
            "preprocessing": self.preprocessor.describe(),
            "threshold": self.manifest.threshold,
            "threshold_rule": self.manifest.threshold_rule,
            "labels": self.manifest.labels,
            "input_size": self.manifest.input_size,
            "selftest_max_diff": self.selftest_max_diff,
        }
