"""Loading the TFLite student and classifying images with it.

Interpreter order: `ai_edge_litert` (LiteRT, works with NumPy 2), then
`tflite_runtime` (NumPy < 2 only), then `tensorflow.lite` (training machines).
The device path never imports TensorFlow unless both light runtimes are absent.

Before serving, a model must pass three checks, each with a message a
technician can act on: the `.tflite` matches the sha256 in its manifest, the
manifest's preprocessing version is the one this code implements, and the
golden self-test (reference inputs with the outputs the exporter saw) is
reproduced within tolerance by *this* runtime on *this* machine.

A model exported with a features output (rank 4, beside the rank-2
probabilities) and a sidecar (`<model>.aux.npz`, sha256 in the manifest) also
gives a scope score (`edge_app.scope`; an image out of scope gets no verdict,
`decisions.decide`) and, on request, a class activation map (`edge_app.explain`).
A model without them still loads: scope unknown (`in_scope` None), no heatmap.
A manifest may also name a scope network (`scope_model`, `<model>.scope.tflite`,
`edge_app.scope_net`): checked like the model (sha256, golden self-test) and run on
the decoded frame itself for the scope score.

The classifier decides nothing: the device path (`device_path`) passes its
probability, the threshold in force and the gates' answers to `decisions.decide`.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .decisions import Threshold
from .explain import crop_fraction
from .manifest import Manifest, ManifestError, aux_path_for, manifest_path_for, scope_model_path_for, selftest_input, sha256_file
from .preprocess import Preprocessor
from .scope_net import ScopeNet
from .sidecar import Sidecar

RUNTIME_MODULES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow.lite", "tensorflow.lite"),
)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "student_fp16.tflite"
SCOPE_SELFTEST_TOLERANCE = 0.05  # relative (and absolute) difference allowed in the golden scope scores
# The scope network is int8: TFLite's kernels (XNNPACK, or the built-in ones where XNNPACK is not used, e.g.
# aarch64 under qemu) requantize differently, and its golden head scores moved by up to 0.84 logits between
# them (x86, 4 patterns) while 669 real images (test dermoscopy, phone photos) moved by <= 0.78 with 0 decisions
# changed. A runtime that computes int8 wrongly is off by far more.
SCOPE_NET_SELFTEST_TOLERANCE = 1.25  # logits, absolute


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
    timings_ms: dict[str, float] = field(default_factory=dict)  # stages + inference + total
    model_sha256: str = ""
    model_version: str = ""
    preprocessing_version: str = ""
    in_scope: bool | None = None  # None: the model has no scope check
    scope_score: float | None = None
    scope_threshold: float | None = None
    # On request (classify(..., explain=True)): {"cam": [[...]] signed logit map, "box": [x0, y0, x1, y1]}
    explain: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "probabilities": self.probabilities,
            "malignant_probability": self.malignant_probability,
            "in_scope": self.in_scope,
            "scope_score": self.scope_score,
            "scope_threshold": self.scope_threshold,
            "timings_ms": self.timings_ms,
            "model_sha256": self.model_sha256,
            "model_version": self.model_version,
            "preprocessing_version": self.preprocessing_version,
        }
        if self.explain is not None:
            d["explain"] = self.explain
        return d


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
            raise ModelError(f"model file {self.model_path} cannot be loaded by {self.runtime_name} ({exc}); "
                             "re-export or restore it") from None
        self._input = self._interpreter.get_input_details()[0]
        outputs = self._interpreter.get_output_details()
        by_rank = {len(o["shape"]): o for o in outputs}
        if 2 not in by_rank or len(by_rank) != len(outputs) or not set(by_rank) <= {2, 4}:
            raise ModelError(f"model {self.model_path.name} has outputs of shapes {[list(o['shape']) for o in outputs]}; "
                             "expected probabilities (rank 2) and optionally features (rank 4): re-export the model")
        self._output = by_rank[2]
        self._features = by_rank.get(4)
        expected = [int(v) for v in self.manifest.input["shape"]]
        actual = [int(v) for v in self._input["shape"]]
        if actual[1:] != expected[1:]:
            raise ModelError(f"model input shape {actual} differs from its manifest {expected}; re-export the model")
        if len(self.manifest.labels) != int(self._output["shape"][-1]):
            raise ModelError(f"model has {self._output['shape'][-1]} outputs "
                             f"but its manifest names {len(self.manifest.labels)} labels")
        self.sidecar = self._load_sidecar()
        self.scope_net = self._load_scope_net(interpreter_cls, num_threads)
        self._lock = threading.Lock()
        self.positive_index = self.manifest.labels.index(self.manifest.positive_label)
        # Short side the device path decodes / shrinks a frame to (images.decode(min_side=...)):
        # 2x the model input leaves room for the field-of-view crop and costs nothing measurable
        # (edge-app evaluate on ISIC archive images up to 640 px: AUC 0.7421 at 4x, 0.7424 at 2x,
        # 0.7369 at 1.5x; README "Scaled decode"). A 1280x960 frame then decodes at 1/2 scale.
        self.decode_min_side = 2 * self.manifest.input_size
        self.selftest_max_diff = self._run_selftest()
        self._warm_up_preprocessing()
        self.init_ms = (time.perf_counter() - start) * 1000.0

    # ------------------------------------------------------------------ checks

    def _load_sidecar(self) -> Sidecar | None:
        aux = self.manifest.aux or {}
        if not aux:
            return None
        if self._features is None:
            raise ModelError(f"model manifest for {self.model_path.name} names a sidecar but the model has no features "
                             "output: re-export the model")
        path = aux_path_for(self.model_path)  # beside the model, named after it (like its manifest)
        _check_beside(path, aux.get("sha256"), "model sidecar", "(scope check + heatmap)", "re-export or restore the file")
        try:
            sidecar = Sidecar.load(path)
        except ValueError as exc:
            raise ModelError(f"model sidecar {path} cannot be used ({exc}); re-export the model") from None
        channels = int(self._features["shape"][-1])
        if sidecar.cam.weights.shape[0] != channels:
            raise ModelError(f"model sidecar {path} is for {sidecar.cam.weights.shape[0]} feature channels, the model "
                             f"has {channels}: re-export the model")
        return sidecar

    def _load_scope_net(self, interpreter_cls: Any, num_threads: int | None) -> ScopeNet | None:
        """The scope network the manifest names (`scope_model`), checked like the model: present, sha256, loadable,
        and a sidecar whose scope check has the head that reads it."""
        spec = self.manifest.scope_model or {}
        wants_net = self.sidecar is not None and self.sidecar.scope.net is not None
        if not spec:
            if wants_net:
                raise ModelError(f"model sidecar of {self.model_path.name} has a scope-network head but the manifest names "
                                 "no scope network: re-export the model or run `edge-train scope`")
            return None
        if not wants_net:
            raise ModelError(f"model manifest for {self.model_path.name} names a scope network but its sidecar has no head "
                             "for it: restore the sidecar or run `edge-train scope`")
        path = scope_model_path_for(self.model_path)
        _check_beside(path, spec.get("sha256"), "scope network", "", "restore the file or run `edge-train scope`")
        try:
            net = ScopeNet(str(path), interpreter_cls, num_threads)
        except Exception as exc:  # noqa: BLE001 - any runtime failure means the file cannot be used
            raise ModelError(f"scope network {path} cannot be loaded by {self.runtime_name} ({exc}); restore it") from None
        if net.n_features != self.sidecar.scope.net.mean.shape[0]:
            raise ModelError(f"scope network {path} gives {net.n_features} features, the sidecar's head reads "
                             f"{self.sidecar.scope.net.mean.shape[0]}: run `edge-train scope`")
        return net

    def scope_net_features(self, image: np.ndarray) -> np.ndarray | None:
        """The scope network's features of a decoded frame (None without a scope network). Serialised."""
        if self.scope_net is None:
            return None
        with self._lock:
            return self.scope_net.features(image)

    @property
    def has_scope(self) -> bool:
        return self.sidecar is not None

    def model_threshold(self) -> Threshold:
        """The model's own decision threshold (its manifest); a site threshold is the serving app's (`site.SiteWatcher`)."""
        return Threshold(float(self.manifest.threshold), "model")

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
            if self.sidecar is not None and "scope_score" in case:
                self._check_scope_case(case)
            if not diff <= tolerance:
                raise ModelError(
                    f"model {self.model_path.name} fails its golden self-test on {self.runtime_name}: "
                    f"pattern {case['pattern']!r} differs by {diff:.4f} (tolerance {tolerance}). The runtime "
                    f"disagrees with the exporter (TensorFlow {self.manifest.converter.get('tensorflow', '?')}): "
                    "install a matching ai-edge-litert, or re-export the model"
                )
        return worst

    def _check_scope_case(self, case: dict[str, Any]) -> None:
        _, features = self.predict_outputs(selftest_input(case["pattern"], self.manifest.input_size))
        net_features = None
        checks = []
        if self.scope_net is not None:
            net_features = self.scope_net.features_of_tensor(selftest_input(case["pattern"], self.scope_net.input_size))
            if "scope_net_score" not in case:
                raise ModelError(f"model manifest for {self.model_path.name} has no golden scope-network score for pattern "
                                 f"{case['pattern']!r}: run `edge-train scope`")
            checks.append(("scope-network", float(self.sidecar.scope.net.score_descriptors(net_features)[0]),
                           float(case["scope_net_score"])))
        checks.append(("scope", float(self.sidecar.scope.score(features, net_features)[0]), float(case["scope_score"])))
        for what, got, want in checks:
            allowed = SCOPE_SELFTEST_TOLERANCE * max(1.0, abs(want))
            if net_features is not None:  # the int8 network's score is part of both checks
                allowed = max(allowed, SCOPE_NET_SELFTEST_TOLERANCE)
            if not abs(got - want) <= allowed:
                raise ModelError(
                    f"model {self.model_path.name} fails its golden {what} self-test on {self.runtime_name}: pattern "
                    f"{case['pattern']!r} scores {got:.4f}, the exporter saw {want:.4f}; re-export the model"
                )

    def _warm_up_preprocessing(self) -> None:
        """OpenCV initialises some stages (CLAHE) on first use, about 100 ms; pay
        that at start-up instead of on the first screening."""
        frame = np.full((240, 320, 3), (150, 170, 210), np.uint8)
        frame[80:160, 120:200] = (60, 50, 80)
        self.preprocessor.run(frame)

    # ------------------------------------------------------------------ inference

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Model tensors (N, H, W, 3) float32 -> probabilities (N, labels). Serialised."""
        return self.predict_outputs(batch)[0]

    def predict_outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Model tensors (N, H, W, 3) -> (probabilities (N, labels), feature maps (N, h, w, C) or None)."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        out = np.empty((batch.shape[0], len(self.manifest.labels)), np.float32)
        feats = None
        if self._features is not None:
            feats = np.empty((batch.shape[0], *(int(v) for v in self._features["shape"][1:])), np.float32)
        with self._lock:
            for i in range(batch.shape[0]):
                self._interpreter.set_tensor(self._input["index"], batch[i : i + 1].astype(self._input["dtype"]))
                self._interpreter.invoke()
                out[i] = self._interpreter.get_tensor(self._output["index"])[0]
                if feats is not None:
                    feats[i] = self._interpreter.get_tensor(self._features["index"])[0]
        return out, feats

    def classify(self, image: np.ndarray, preprocessor: Preprocessor | None = None, explain: bool = False) -> Classification:
        """BGR uint8 image of any size -> probabilities, scope and timings (six stages + inference
        + scope), and with `explain` the class activation map and where the analysed square lies. The device
        path (`device_path.screen_*`) adds decoding and the quality gate."""
        start = time.perf_counter()
        pre = (preprocessor or self.preprocessor).run(image)
        t0 = time.perf_counter()
        probs, features = self.predict_outputs(pre.tensor)
        timings = dict(pre.timings_ms)
        timings["inference"] = (time.perf_counter() - t0) * 1000.0
        scope_score = details = None
        if self.sidecar is not None and features is not None:
            t1 = time.perf_counter()
            scope_score = float(self.sidecar.scope.score(features, self.scope_net_features(image))[0])
            timings["scope"] = (time.perf_counter() - t1) * 1000.0
            if explain:
                t2 = time.perf_counter()
                details = self.explain(features[0], image, pre.crop_box)
                timings["explain"] = (time.perf_counter() - t2) * 1000.0
        timings["total"] = (time.perf_counter() - start) * 1000.0
        result = self.result_from_probabilities(probs[0], timings, scope_score)
        result.explain = details
        return result

    def explain(self, features: np.ndarray, image: np.ndarray, box: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """The signed CAM (h, w) rounded for storage and the analysed square (`box` = (top, left, side) the crop
        stage kept; None = the whole frame, squeezed into the model's square) as fractions of `image`."""
        if self.sidecar is None:
            raise ModelError(f"model {self.model_path.name} has no heatmap head (no sidecar); re-export it")
        cam = self.sidecar.cam.cam(features)
        h, w = image.shape[:2]
        return {"cam": np.round(cam, 4).tolist(), "box": crop_fraction(box, w, h) if box else [0.0, 0.0, 1.0, 1.0]}

    def result_from_probabilities(self, probs: np.ndarray, timings: dict[str, float] | None = None,
                                  scope_score: float | None = None) -> Classification:
        labels = self.manifest.labels
        in_scope = scope_thr = None
        if self.sidecar is not None and scope_score is not None:
            scope_thr = float(self.sidecar.scope.threshold)
            in_scope = self.sidecar.scope.in_scope(scope_score)
        return Classification(
            probabilities={lbl: float(p) for lbl, p in zip(labels, probs)},
            malignant_probability=float(probs[self.positive_index]),
            timings_ms={k: round(v, 3) for k, v in (timings or {}).items()},
            model_sha256=self.sha256,
            model_version=self.manifest.version,
            preprocessing_version=self.preprocessor.version,
            in_scope=in_scope,
            scope_score=None if scope_score is None else round(scope_score, 4),
            scope_threshold=None if scope_thr is None else round(scope_thr, 4),
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
            "scope": ({"available": True, **self.manifest.scope} if self.sidecar is not None
                      else {"available": False}),
            "scope_model": self.manifest.scope_model or None,
            "explain_available": self.sidecar is not None,
            "labels": self.manifest.labels,
            "input_size": self.manifest.input_size,
            "selftest_max_diff": self.selftest_max_diff,
        }


def _check_beside(path: Path, expected_sha256: Any, what: str, role: str, remedy: str) -> None:
    """A file the manifest names beside the model: present, and the bytes the manifest's sha256 says."""
    if not path.is_file():
        raise ModelError(f"{what} {path}{' ' + role if role else ''} not found; restore it beside the model ({remedy})")
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise ModelError(f"{what} {path} does not match its manifest (sha256 {digest[:12]}... but the manifest "
                         f"says {str(expected_sha256)[:12]}...): {remedy}")
