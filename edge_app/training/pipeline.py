"""The training steps, as plain functions called in order by `edge-train all`.

Each step reads what earlier steps left in the run folder (`runs/<timestamp>/`)
and adds its own outputs plus its numbers to `metrics.json`, so a step can be
re-run alone (`edge-train student --run-dir runs/...`).

    split -> tensors -> teacher -> student (no KD) -> student (KD) -> export -> evaluate -> card
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..preprocess import Preprocessor, PreprocessParams
from .config import TrainConfig
from .data import SPLITS, Table, class_weights, describe_split, load_table, preprocess_table, split_table, write_table


@dataclass
class Run:
    cfg: TrainConfig
    data: Path  # dataset root holding labels.csv
    run_dir: Path
    weights_dir: Path | None = None  # ../shared/weights (ImageNet Lite) or user weights (paper preset)
    paper_weights: Path | None = None
    cache_dir: Path = Path("cache")
    models_dir: Path = Path("models")
    cross_data: list[Path] = field(default_factory=list)  # other labelled datasets, evaluated as-is at the shipped threshold
    command: str = ""  # this invocation
    reproduce: str = ""  # the one command that rebuilds everything (`edge-train all ...`)
    _tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor(PreprocessParams(size=self.cfg.size))

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.run_dir / "log.txt", "a") as f:
            f.write(line + "\n")

    # metrics.json: one dict, each step adds its keys
    def metrics(self) -> dict[str, Any]:
        p = self.run_dir / "metrics.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def record(self, key: str, value: Any) -> None:
        """Set one key of metrics.json (see `update`)."""
        self.update(key, lambda _old: value)

    def update(self, key: str, change) -> None:
        """metrics[key] = change(old value or None): read-modify-write under a lock, replaced atomically, so two steps
        of one run may run side by side (e.g. the input-size study beside the students) without losing each other's keys."""
        import fcntl
        import os

        path = self.run_dir / "metrics.json"
        with open(self.run_dir / ".metrics.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            m = self.metrics()
            m[key] = change(m.get(key))
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(m, indent=2, default=_jsonable) + "\n")
            tmp.replace(path)

    def splits(self) -> dict[str, Table]:
        return {s: load_table(self.run_dir / "splits" / f"{s}.csv") for s in SPLITS}

    def tensors(self, split: str) -> np.ndarray:
        if split not in self._tensors:
            self._tensors[split] = preprocess_table(self.splits()[split], self.data, self.preprocessor, self.cache_dir, desc=split)
        return self._tensors[split]

    def labels(self, split: str) -> np.ndarray:
        return self.splits()[split].y

    def lesions(self, split: str) -> list[str] | None:
        return self.splits()[split].lesions


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def timed(run: Run, name: str):
    """Context manager: log + record the wall time of a step."""

    class _T:
        def __enter__(self):
            self.t0 = time.perf_counter()
            run.log(f"step {name} ...")

        def __exit__(self, *exc):
            dt = time.perf_counter() - self.t0
            if exc[0] is None:
                run.update("timings_s", lambda t: {**(t or {}), name: round(dt, 1)})
                run.log(f"step {name} done in {dt:.1f} s")

    return _T()


# ------------------------------------------------------------------ 1. split + 2. tensors


def step_split(run: Run) -> None:
    """Lesion-grouped, stratified, seeded split; CSVs written to the run folder."""
    with timed(run, "split"):
        table = load_table(run.data / "labels.csv")
        parts = split_table(table, run.cfg.split_fractions, run.cfg.split_seed)
        for name, t in parts.items():
            write_table(t, run.run_dir / "splits" / f"{name}.csv")
        summary = describe_split(parts)
        run.record("split", {"seed": run.cfg.split_seed, "grouped_by": "lesion_id" if "lesion_id" in table.columns else "file",
                             "counts": summary, "class_weights": class_weights(parts["train"].y)})
        run.log(f"split: {summary}")


def step_tensors(run: Run) -> None:
    """Every image through the device preprocessing once (cached under cache/)."""
    with timed(run, "tensors"):
        for s in SPLITS:
            x = run.tensors(s)
            run.log(f"{s}: {x.shape}")


# ------------------------------------------------------------------ 4. student


def step_student(run: Run, kd: bool) -> None:
    """Train the student end to end on cached tensors (CE, or CE + KD from the teacher's logits)."""
    from .distill import malignant_prob, train_student
    from .student import build_student

    name = "student_kd" if kd else "student_ce"
    cfg = run.cfg
    with timed(run, name):
        x_tr, y_tr = run.tensors("train"), run.labels("train")
        x_va, y_va = run.tensors("val"), run.labels("val")
        cw = class_weights(y_tr)
        sw = np.array([cw[int(c)] for c in y_tr], np.float32)
        teacher, kd_teacher = None, None
        if kd:
            kd_teacher = best_teacher(run)
            teacher = np.load(run.run_dir / f"{kd_teacher}_logits.npz")["train"]
            run.log(f"{name}: distilling from {kd_teacher!r} (best fused teacher on validation)")

        def fit(alpha: float, temp: float, epochs: int):
            model = build_student(cfg.size, cfg.student_blocks, cfg.student_head,
                                  weights_dir=run.weights_dir if cfg.student_init == "imagenet" else None, arch_dir=run.weights_dir,
                                  freeze_blocks=cfg.student_freeze)
            run.log(f"{name}: alpha={alpha} T={temp}, {model.count_params():,} params, {epochs} epochs")
            model, hist = train_student(model, x_tr, y_tr, x_va, y_va, teacher, alpha=alpha, temperature=temp, epochs=epochs,
                                        batch_size=cfg.batch_size, lr=cfg.lr, sample_weight=sw, seed=cfg.seed, log=run.log)
            hist.update(alpha=alpha, temperature=temp)
            return model, hist

        grid = [(float(a), float(t)) for a, t in cfg.kd_grid] if (kd and cfg.kd_grid) else [(cfg.kd_alpha if kd else 1.0, cfg.kd_temperature)]
        short = len(grid) > 1 and 0 < cfg.kd_grid_epochs < cfg.epochs
        best, tried = None, []
        for alpha, temp in grid:
            model, hist = fit(alpha, temp, cfg.kd_grid_epochs if short else cfg.epochs)
            tried.append({"alpha": alpha, "temperature": temp, "epochs": len(hist["epochs"]), "best_val_auc": hist["best_val_auc"]})
            if best is None or hist["best_val_auc"] > best[1]["best_val_auc"]:
                best = (model, hist)
        if len(grid) > 1:
            run.log(f"{name}: grid on validation: " + ", ".join(f"alpha {g['alpha']} T {g['temperature']}: {g['best_val_auc']:.4f}" for g in tried))
        if short:
            best = fit(best[1]["alpha"], best[1]["temperature"], cfg.epochs)
        model, hist = best
        model.save_weights(run.run_dir / f"{name}.weights.h5")
        probs = {s: malignant_prob(model, run.tensors(s)) for s in ("val", "test")}
        np.savez(run.run_dir / f"{name}_probs.npz", **probs)
        run.record(name, {"params": int(model.count_params()), **hist, **({"grid": tried} if len(grid) > 1 else {}),
                          **({"teacher": kd_teacher} if kd else {})})


def best_teacher(run: Run) -> str:
    """The fused teacher (this run's "teacher" or a compared "teacher_<preset>") with the best validation AUC."""
    m = run.metrics()
    scores = {k: v["heads"][v["fusion"]]["val_auc"] for k, v in m.items()
              if (k == "teacher" or k.startswith("teacher_")) and isinstance(v, dict) and "heads" in v
              and (run.run_dir / f"{k}_logits.npz").is_file()}
    if not scores:
        raise SystemExit(f"{run.run_dir}: no teacher logits; run the teacher step first")
    return max(scores, key=scores.get)


def load_student(run: Run, name: str):
    from .student import build_student

    cfg = run.cfg
    model = build_student(cfg.size, cfg.student_blocks, cfg.student_head, weights_dir=None, arch_dir=run.weights_dir)
    model.load_weights(run.run_dir / f"{name}.weights.h5")
    return model


def command_line(argv: list[str] | None = None) -> str:
    return "edge-train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


# ------------------------------------------------------------------ 3. teacher


def step_teacher(run: Run) -> None:
    """Backbones fine-tuned (or frozen) -> pooled features (cached) -> per-backbone heads -> fusion (logit average vs concat+MLP, on val)."""
    import keras

    from ..metrics import roc_auc
    from .teacher import (
        cached_features,
        feature_extractor,
        fit_linear,
        linear_logits,
        malignant_from_logits,
        mlp_logits,
        out_of_fold,
    )

    cfg = run.cfg
    # the fused Lite teacher is "teacher" (distils the student); another family is measured beside it
    tag = "teacher" if cfg.teacher_family == "lite" else "teacher_" + cfg.preset.replace("-", "_")
    with timed(run, tag):
        y = {s: run.labels(s) for s in SPLITS}
        groups = np.array(run.splits()["train"].groups)
        feats: dict[str, dict[str, np.ndarray]] = {}
        finetuned: dict[str, dict] = {}
        for which in cfg.teacher_backbones:
            t0 = time.perf_counter()
            trained = cfg.teacher_train == "finetune"
            ext = feature_extractor(cfg.teacher_family, which, cfg.teacher_size, cfg.size, run.weights_dir, run.paper_weights, cfg.teacher_tiny,
                                    freeze_stages=cfg.teacher_freeze_stages if trained else None)
            weights_id = "frozen"
            if trained:
                finetuned[which] = _finetune(run, ext, which, tag)
                weights_id = finetuned[which]["weights_sha256"]
                ext.trainable = False
            feats[which] = {}
            for s in SPLITS:
                key = "|".join([cfg.teacher_family, which, str(cfg.teacher_size), str(cfg.teacher_tiny), str(run.paper_weights), weights_id,
                                json.dumps(run.preprocessor.describe(), sort_keys=True)] + [r["file"] for r in run.splits()[s].rows])
                feats[which][s] = cached_features(ext, run.tensors(s), key, run.cache_dir, desc=f"{which} {s}")
            run.log(f"{which}: features {feats[which]['train'].shape[1]}-d at {cfg.teacher_size}px in {time.perf_counter() - t0:.0f} s")
            keras.backend.clear_session()

        results, logits = {}, {}
        # per-backbone linear heads
        for which in cfg.teacher_backbones:
            f = feats[which]
            C = fit_linear(f["train"], y["train"], f["val"], y["val"])
            fp = lambda a, b, ev, C=C: linear_logits(a, b, ev, C)
            va, te = fp(f["train"], y["train"], [f["val"], f["test"]])
            logits[which] = {"val": va, "test": te, "train": out_of_fold(fp, f["train"], y["train"], groups, seed=cfg.seed)}
            results[which] = {"C": C, "val_auc": roc_auc(y["val"], malignant_from_logits(va))}
            run.log(f"{which}: val AUC {results[which]['val_auc']:.4f} (C={C})")
        # fusion 1: logit averaging
        avg = {s: np.mean([logits[w][s] for w in cfg.teacher_backbones], axis=0) for s in ("train", "val", "test")}
        results["logit_avg"] = {"val_auc": roc_auc(y["val"], malignant_from_logits(avg["val"]))}
        # fusion 2: concat + MLP
        cat = {s: np.concatenate([feats[w][s] for w in cfg.teacher_backbones], axis=1) for s in SPLITS}
        fp = lambda a, b, ev: mlp_logits(a, b, ev, epochs=cfg.head_epochs, seed=cfg.seed)
        va, te = fp(cat["train"], y["train"], [cat["val"], cat["test"]])
        mlp = {"val": va, "test": te, "train": out_of_fold(fp, cat["train"], y["train"], groups, seed=cfg.seed)}
        results["concat_mlp"] = {"val_auc": roc_auc(y["val"], malignant_from_logits(va))}
        run.log(f"fusion: logit_avg val AUC {results['logit_avg']['val_auc']:.4f}, concat_mlp {results['concat_mlp']['val_auc']:.4f}")
        chosen = "concat_mlp" if results["concat_mlp"]["val_auc"] > results["logit_avg"]["val_auc"] else "logit_avg"
        teacher = mlp if chosen == "concat_mlp" else avg
        np.savez(run.run_dir / f"{tag}_logits.npz", **teacher)
        probs = {f"{w}_{s}": malignant_from_logits(logits[w][s]) for w in cfg.teacher_backbones for s in ("val", "test")}
        probs.update({f"{k}_{s}": malignant_from_logits(v[s]) for k, v in (("logit_avg", avg), ("concat_mlp", mlp)) for s in ("val", "test")})
        probs.update({f"teacher_{s}": malignant_from_logits(teacher[s]) for s in ("val", "test")})
        np.savez(run.run_dir / f"{tag}_probs.npz", **probs)
        run.record(tag, {"preset": cfg.preset, "tiny": cfg.teacher_tiny, "family": cfg.teacher_family, "backbones": list(cfg.teacher_backbones), "size": cfg.teacher_size,
                         "train": cfg.teacher_train, "init": _teacher_init(run), "finetune": finetuned, "heads": results, "fusion": chosen,
                               "train_logits": "out-of-fold (5 lesion-grouped folds)"})


def _teacher_init(run: Run) -> str:
    if run.cfg.teacher_family == "lite":
        return "ImageNet (../shared/weights)"
    return f"user weights ({run.paper_weights})" if run.paper_weights else "random"


def _finetune(run: Run, features, which: str, tag: str) -> dict:
    """Fine-tune one backbone on the training split (or reuse this run's weights from an earlier attempt)."""
    import hashlib

    from .teacher import finetune_backbone

    cfg = run.cfg
    path = run.run_dir / f"{tag}_{which}.weights.h5"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        features.load_weights(path)
        run.log(f"{which}: fine-tuned weights reused from {path}")
        return json.loads(info_path.read_text())
    y_tr = run.labels("train")
    cw = class_weights(y_tr)
    _, hist = finetune_backbone(features, run.tensors("train"), y_tr, run.tensors("val"), run.labels("val"), epochs=cfg.teacher_epochs,
                                lr=cfg.teacher_lr, batch_size=cfg.batch_size, sample_weight=np.array([cw[int(c)] for c in y_tr], np.float32),
                                seed=cfg.seed, log=run.log)
    features.save_weights(path)
    info = {"init": _teacher_init(run), "frozen_stages": cfg.teacher_freeze_stages if cfg.teacher_family == "lite" else 0,
            "trainable_params": int(sum(int(np.prod(w.shape)) for w in features.trainable_weights)), "params": int(features.count_params()),
            "epochs": hist["epochs"], "best_epoch": hist["best_epoch"], "best_val_auc": hist["best_val_auc"],
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def step_teacher_compare(run: Run) -> None:
    """The second teacher (`compare_teacher` preset, e.g. the paper's families) on the same split and tensors."""
    from dataclasses import replace

    from .config import teacher_of

    if not run.cfg.compare_teacher:
        run.log("teacher-compare: no compare_teacher in this preset; skipped")
        return
    step_teacher(replace(run, cfg=teacher_of(run.cfg, run.cfg.compare_teacher)))


# ------------------------------------------------------------------ 5. export (+ 6. threshold)


def _student_names(run: Run) -> list[str]:
    return [n for n in ("student_ce", "student_kd") if (run.run_dir / f"{n}.weights.h5").is_file()]


def step_export(run: Run) -> None:
    """Better student on validation -> fp16 TFLite + manifest; threshold chosen on validation only."""
    from ..metrics import choose_threshold, evaluate, roc_auc
    from ..runtime import Classifier
    from .export import export_student, keras_predict
    from .student import with_softmax

    cfg = run.cfg
    with timed(run, "export"):
        m = run.metrics()
        names = _student_names(run)
        shipped = max(names, key=lambda n: m[n]["best_val_auc"])
        model = with_softmax(load_student(run, shipped))
        x_va, y_va = run.tensors("val"), run.labels("val")
        x_tr = run.tensors("train")
        scope_data = (x_tr[np.random.default_rng(cfg.seed).permutation(len(x_tr))[:2000]], x_va)
        p32 = keras_predict(model, x_va).astype(np.float64)
        thr = choose_threshold(y_va, p32[:, 1], cfg.min_sensitivity)
        rule = f"highest specificity with sensitivity >= {cfg.min_sensitivity:.2f} on the lesion-grouped validation split (fp16 model, device runtime)"
        out = run.models_dir / "student_fp16.tflite"
        split_info = m.get("split", {})
        provenance = {
            "dataset": str(run.data), "labels_csv": "labels.csv",
            "split": {"grouped_by": split_info.get("grouped_by"), "seed": cfg.split_seed, "fractions": list(cfg.split_fractions),
                      "counts": split_info.get("counts"), "val_csv": "models/splits/val.csv", "test_csv": "models/splits/test.csv"},
            "student": {"source": shipped, "init": "ImageNet EfficientNet-Lite0 trunk" if cfg.student_init == "imagenet" else "random",
                        "blocks": cfg.student_blocks, "params": m[shipped]["params"]},
            "teacher": {k: m.get(m.get("student_kd", {}).get("teacher", "teacher"), {}).get(k)
                        for k in ("preset", "family", "init", "train", "backbones", "fusion", "size")},
            "class_imbalance": "inverse-frequency per-sample loss weights",
            "preset": cfg.preset,
        }
        val_metrics = None
        for _ in range(2):  # export; if the fp16 model's own validation threshold differs, export again with it
            manifest = export_student(model, out, run.preprocessor, thr, rule, version=f"{cfg.preset}-{time.strftime('%Y%m%d')}",
                                      provenance=provenance, metrics={"val": val_metrics} if val_metrics else {}, training_command=run.reproduce or run.command,
                                      scope_data=scope_data)
            clf = Classifier(out)
            p16 = clf.predict(x_va)[:, 1].astype(np.float64)
            thr16 = choose_threshold(y_va, p16, cfg.min_sensitivity)
            val_metrics = evaluate(y_va, p16, thr16, n_boot=cfg.n_boot, groups=run.lesions("val"))
            if abs(thr16 - thr) < 1e-9:
                break
            thr = thr16
        manifest = export_student(model, out, run.preprocessor, thr, rule, version=manifest.version, provenance=provenance,
                                  metrics={"val": val_metrics}, training_command=run.reproduce or run.command, scope_data=scope_data)
        for s in ("val", "test"):
            write_table(run.splits()[s], run.models_dir / "splits" / f"{s}.csv")
        info = {"shipped": shipped, "threshold": thr, "size_bytes": out.stat().st_size, "sha256": manifest.sha256,
                "val_keras_fp32_auc": roc_auc(y_va, p32[:, 1]), "val_tflite_fp16_auc": roc_auc(y_va, p16),
                "val_max_abs_diff_keras_vs_tflite": float(np.max(np.abs(p32[:, 1] - p16))),
                "val_fp16": val_metrics}
        run.record("export", info)
        run.log(f"shipped {shipped}: {out} ({info['size_bytes'] / 1024:.1f} KiB), threshold {thr:.4f}, "
                f"val AUC fp32 {info['val_keras_fp32_auc']:.4f} / fp16 {info['val_tflite_fp16_auc']:.4f}, max |diff| {info['val_max_abs_diff_keras_vs_tflite']:.2e}")


# ------------------------------------------------------------------ 7. evaluation on the test split


SHIFTS = {
    "upscale_x2": lambda im: _resize(im, 2.0),
    "upscale_x3": lambda im: _resize(im, 3.0),
    "downscale_x0.5": lambda im: _resize(im, 0.5),
    "tighter_crop_70pct": lambda im: _central(im, 0.70),
    "looser_crop_pad20pct": lambda im: _pad(im, 0.20),
    "jpeg_q50": lambda im: _jpeg(im, 50),
    "colour_cast_warm": lambda im: _cast(im, (0.85, 1.0, 1.15)),
    "colour_cast_cool": lambda im: _cast(im, (1.15, 1.0, 0.85)),
}


def _resize(im, f):
    import cv2

    h, w = im.shape[:2]
    return cv2.resize(im, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)


def _central(im, frac):
    h, w = im.shape[:2]
    dh, dw = int(h * (1 - frac) / 2), int(w * (1 - frac) / 2)
    return im[dh : h - dh, dw : w - dw]


def _pad(im, frac):
    """A wider field of view: the image shrunk inside a border of mirrored skin."""
    import cv2

    h, w = im.shape[:2]
    return cv2.copyMakeBorder(im, int(h * frac), int(h * frac), int(w * frac), int(w * frac), cv2.BORDER_REFLECT_101)


def _jpeg(im, q):
    """Recompression, decoded the way the device decodes uploads."""
    from ..images import decode_image, encode_jpeg

    return decode_image(encode_jpeg(im, q))


def _cast(im, gains_bgr):
    return np.clip(im.astype(np.float32) * np.array(gains_bgr, np.float32), 0, 255).astype(np.uint8)


def device_probs(clf, table: Table, root: Path, preprocessor: Preprocessor | None = None, transform=None, desc: str = "") -> np.ndarray:
    """Malignant probability of each image through the device path (decode -> quality gate -> preprocess -> fp16 TFLite)."""
    from ..device_path import screen_files

    results, _, errors = screen_files(clf, root, [r["file"] for r in table.rows], preprocessor=preprocessor,
                                      transform=transform, desc=desc)
    if errors:
        raise ValueError(f"{len(errors)} unreadable image(s) under {root}, e.g. {errors[0]}")
    return np.asarray([r.malignant_probability for r in results], np.float64)


def step_evaluate(run: Run) -> None:
    """Test split (used for nothing else): comparison table, preprocessing ablation, shifts, plots."""
    from ..metrics import choose_threshold, evaluate, operating_point, roc_auc
    from ..runtime import Classifier
    from .plots import save_plots

    cfg = run.cfg
    with timed(run, "evaluate"):
        y_va, y_te = run.labels("val"), run.labels("test")
        test = run.splits()["test"]
        clf = Classifier(run.models_dir / "student_fp16.tflite")
        thr = float(clf.manifest.threshold)
        p16 = device_probs(clf, test, run.data, desc="test (device path)")
        lesions = run.lesions("test")
        shipped = evaluate(y_te, p16, thr, n_boot=cfg.n_boot, groups=lesions)
        run.log(f"test, shipped fp16 (device path): AUC {shipped['auc']['value']:.4f} sens {shipped['sensitivity']['value']:.3f} "
                f"spec {shipped['specificity']['value']:.3f} at {thr:.4f}")

        # comparison table: every model at its own validation-chosen threshold
        rows: dict[str, dict] = {}
        val_test: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        tp = run.run_dir / "teacher_probs.npz"
        if tp.is_file():
            t = np.load(tp)
            for key in list(cfg.teacher_backbones) + ["logit_avg", "concat_mlp", "teacher"]:
                val_test[f"teacher:{key}" if key != "teacher" else "teacher (chosen fusion)"] = (t[f"{key}_val"], t[f"{key}_test"])
        for tp in sorted(run.run_dir.glob("teacher_*_probs.npz")):  # other teacher families (paper preset)
            tag = tp.name[: -len("_probs.npz")]
            t = np.load(tp)
            val_test[f"{tag} (chosen fusion)"] = (t["teacher_val"], t["teacher_test"])
            bb = run.metrics().get(tag, {}).get("backbones", [])
            for key in bb:
                val_test[f"{tag}:{key}"] = (t[f"{key}_val"], t[f"{key}_test"])
        for name in _student_names(run):
            p = np.load(run.run_dir / f"{name}_probs.npz")
            val_test[f"{name} (Keras fp32)"] = (p["val"], p["test"])
        for label, (pv, pt) in val_test.items():
            rows[label] = evaluate(y_te, pt, choose_threshold(y_va, pv, cfg.min_sensitivity), n_boot=cfg.n_boot, groups=lesions)
        rows["shipped student fp16 (TFLite, device path)"] = shipped
        run.record("test", {"shipped": shipped, "table": rows, "threshold": thr})

        # preprocessing ablation: inference-time (the shipped model, one stage disabled at a time)
        base = clf.preprocessor
        ablation = {"none (full pipeline)": {"auc": shipped["auc"]["value"], **{k: shipped[k]["value"] for k in ("sensitivity", "specificity", "balanced_accuracy")}}}
        for stage in ("crop", "dehair", "denoise", "contrast", "normalize"):
            p = device_probs(clf, test, run.data, preprocessor=base.with_disabled(stage), desc=f"test without {stage}")
            op = operating_point(y_te, p, thr)
            ablation[f"without {stage}"] = {"auc": roc_auc(y_te, p), **{k: op[k] for k in ("sensitivity", "specificity", "balanced_accuracy")}}
            run.log(f"ablation without {stage}: AUC {ablation[f'without {stage}']['auc']:.4f}")
        run.record("ablation", {"kind": "inference-time (shipped model, stage disabled at test time; not retrained)", "rows": ablation})

        # robustness: shifts applied to the decoded image before the pipeline, shipped threshold
        shifts = {"none": ablation["none (full pipeline)"]}
        for name, fn in SHIFTS.items():
            p = device_probs(clf, test, run.data, transform=fn, desc=name)
            op = operating_point(y_te, p, thr)
            shifts[name] = {"auc": roc_auc(y_te, p), **{k: op[k] for k in ("sensitivity", "specificity", "balanced_accuracy")}}
            run.log(f"shift {name}: AUC {shifts[name]['auc']:.4f} sens {op['sensitivity']:.3f} spec {op['specificity']:.3f}")
        run.record("shifts", shifts)
        run.record("cross_dataset", cross_dataset(run, clf))

        # plots
        curves = {"shipped student fp16": p16}
        if "teacher (chosen fusion)" in val_test:
            curves["teacher"] = val_test["teacher (chosen fusion)"][1]
        save_plots(run.models_dir, y_te, curves, p16, thr)
        np.savez(run.run_dir / "test_probs.npz", y=y_te, shipped_fp16=p16)


def sibling_datasets(data: Path) -> list[Path]:
    """The other staged datasets beside `data` (folders with a labels.csv): the default cross-dataset check."""
    parent = data.resolve().parent
    return sorted(d for d in parent.iterdir() if d.is_dir() and d.resolve() != data.resolve() and (d / "labels.csv").is_file())


def cross_dataset(run: Run, clf) -> dict[str, dict]:
    """The shipped model on every image of each other dataset, at the shipped threshold (nothing re-tuned)."""
    from ..device_path import screen_files
    from ..metrics import evaluate

    out: dict[str, dict] = {}
    for root in run.cross_data:
        table = load_table(root / "labels.csv")
        results, read, errors = screen_files(clf, root, [r["file"] for r in table.rows], desc=f"cross-dataset {root.name}")
        probs = [r.malignant_probability for r in results]
        kept = table.subset(read)
        if len(set(kept.y.tolist())) < 2:
            run.log(f"cross-dataset {root}: needs both classes among its readable images; skipped")
            continue
        report = evaluate(kept.y, np.array(probs), float(clf.manifest.threshold), n_boot=run.cfg.n_boot, groups=kept.lesions)
        out[root.name] = {"path": str(root), "unreadable": len(errors), **report}
        run.log(f"cross-dataset {root.name}: n {report['n']}, AUC {report['auc']['value']:.4f}, sens {report['sensitivity']['value']:.3f}, "
                f"spec {report['specificity']['value']:.3f} ({len(errors)} unreadable)")
    if not run.cross_data:
        run.log("cross-dataset: no other dataset staged beside the training data")
    return out


# ------------------------------------------------------------------ 8. model card


def step_card(run: Run) -> None:
    from .card import step_card_impl

    step_card_impl(run)
