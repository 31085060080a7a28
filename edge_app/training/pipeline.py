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
from .data import (
    DX_CLASSES,
    SPLITS,
    Table,
    augmented_passes,
    class_weights,
    describe_split,
    load_sources,
    load_table,
    preprocess_table,
    source_weights,
    split_sources,
    write_table,
)


@dataclass
class Run:
    cfg: TrainConfig
    data: Path  # the folder holding the datasets (`<data>/<name>/labels.csv`); split file paths are relative to it
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

    def tensors(self, split: str, preprocessor: Preprocessor | None = None) -> np.ndarray:
        pre = preprocessor or self.preprocessor
        key = f"{split}|{pre.params.disabled_stages}"
        if key not in self._tensors:
            self._tensors[key] = preprocess_table(self.splits()[split], self.data, pre, self.cache_dir, desc=split)
        return self._tensors[key]

    def train_passes(self, passes: int, preprocessor: Preprocessor | None = None) -> np.ndarray:
        """Device-augmented passes of the training split through the (given) pipeline: (P, N, S, S, 3)."""
        return augmented_passes(self.splits()["train"], self.data, preprocessor or self.preprocessor, passes, seed=self.cfg.seed,
                                cache_dir=self.cache_dir, desc="train (device-augmented passes)")

    def sample_weights(self) -> np.ndarray:
        shares = {k: float(v) for k, _, v in (item.partition(":") for item in self.cfg.dataset_share)}
        return source_weights(self.splits()["train"], shares, self.cfg.follow_up_share)

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
    """Each dataset split on its own (lesion-grouped, stratified, seeded); CSVs written to the run folder."""
    with timed(run, "split"):
        table = load_sources(run.data, run.cfg.datasets)
        parts = split_sources(table, run.cfg.split_fractions, run.cfg.split_seed)
        for name, t in parts.items():
            write_table(t, run.run_dir / "splits" / f"{name}.csv")
        summary = describe_split(parts)
        per_source = {name: describe_split({s: t.subset(np.flatnonzero(t.datasets == name)) for s, t in parts.items()})
                      for name in run.cfg.datasets}
        run.record("split", {"seed": run.cfg.split_seed, "grouped_by": "lesion_id (within each dataset)", "datasets": list(run.cfg.datasets),
                             "counts": summary, "per_source": per_source, "class_weights": class_weights(parts["train"].y)})
        run.log(f"split: {summary}")


def step_tensors(run: Run) -> None:
    """Validation and test through the device preprocessing once; the training split as device-augmented passes (cached)."""
    with timed(run, "tensors"):
        for s in ("val", "test"):
            x = run.tensors(s)
            run.log(f"{s}: {x.shape}")
        run.log(f"train: {run.train_passes(run.cfg.augment_passes).shape}")


# ------------------------------------------------------------------ 4. student


def step_student(run: Run, kd: bool) -> None:
    """Train the student end to end on device-augmented passes (CE [+ dx head], or + KD from the teacher's logits)."""
    from .distill import malignant_prob

    name = "student_kd" if kd else "student_ce"
    cfg = run.cfg
    if kd and not cfg.teacher_backbones:
        run.log("student-kd: this preset has no teacher; skipped")
        return
    with timed(run, name):
        teacher, kd_teacher = None, None
        if kd:
            kd_teacher = best_teacher(run)
            teacher = np.load(run.run_dir / f"{kd_teacher}_logits.npz")["train"]
            run.log(f"{name}: distilling from {kd_teacher!r} (best fused teacher on validation)")
        grid = [(float(a), float(t)) for a, t in cfg.kd_grid] if (kd and cfg.kd_grid) else [(cfg.kd_alpha if kd else 1.0, cfg.kd_temperature)]
        short = len(grid) > 1 and 0 < cfg.kd_grid_epochs < cfg.epochs
        best, tried = None, []
        for alpha, temp in grid:
            model, hist = fit_student(run, run.train_passes(cfg.augment_passes), run.tensors("val"), cfg.kd_grid_epochs if short else cfg.epochs,
                                      teacher=teacher, alpha=alpha, temperature=temp, label=name)
            tried.append({"alpha": alpha, "temperature": temp, "epochs": len(hist["epochs"]), "best_val_auc": hist["best_val_auc"]})
            if best is None or hist["best_val_auc"] > best[1]["best_val_auc"]:
                best = (model, hist)
        if len(grid) > 1:
            run.log(f"{name}: grid on validation: " + ", ".join(f"alpha {g['alpha']} T {g['temperature']}: {g['best_val_auc']:.4f}" for g in tried))
        if short:
            best = fit_student(run, run.train_passes(cfg.augment_passes), run.tensors("val"), cfg.epochs, teacher=teacher,
                               alpha=best[1]["alpha"], temperature=best[1]["temperature"], label=name)
        model, hist = best
        model.save_weights(run.run_dir / f"{name}.weights.h5")
        import keras

        hist["backend"] = keras.backend.backend()
        if cfg.init_from:
            hist["init_from"] = cfg.init_from
        probs = {s: malignant_prob(model, run.tensors(s)) for s in ("val", "test")}
        np.savez(run.run_dir / f"{name}_probs.npz", **probs)
        run.record(name, {"params": int(model.count_params()), **hist, **({"grid": tried} if len(grid) > 1 else {}),
                          **({"teacher": kd_teacher} if kd else {})})


def fit_student(run: Run, x_train: np.ndarray, x_val: np.ndarray, epochs: int, *, teacher=None, alpha: float = 1.0,
                temperature: float = 4.0, label: str = "student"):
    """One student trained on the given (augmented) training tensors; best epoch by validation AUC."""
    from .augment import AugmentParams
    from .distill import train_student
    from .student import build_student

    cfg = run.cfg
    dx_classes = len(DX_CLASSES) if cfg.dx_weight > 0 else 0
    model = build_student(cfg.size, cfg.student_blocks, cfg.student_head,
                          weights_dir=run.weights_dir if cfg.student_init == "imagenet" else None, arch_dir=run.weights_dir,
                          freeze_blocks=cfg.student_freeze, dx_classes=dx_classes)
    if cfg.init_from:  # continue a finished (e.g. shorter, GPU) run: its weights, then this schedule
        model.load_weights(cfg.init_from)
    run.log(f"{label}: alpha={alpha} T={temperature}, {model.count_params():,} params, {epochs} epochs, dx head {dx_classes}"
            + (f", from {cfg.init_from}" if cfg.init_from else ""))
    tensor_aug = AugmentParams(scale=(1.0, 1.0), shift=0.0, brightness=0.0, contrast=(1.0, 1.0), channel_gain=0.0)  # flips + rot90
    model, hist = train_student(model, x_train, run.labels("train"), x_val, run.labels("val"), teacher, alpha=alpha, temperature=temperature,
                                epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, sample_weight=run.sample_weights(), seed=cfg.seed,
                                log=run.log, augment_params=tensor_aug, dx=run.splits()["train"].dx_index, dx_classes=dx_classes,
                                dx_weight=cfg.dx_weight)
    hist.update(alpha=alpha, temperature=temperature)
    return model, hist


def step_ablation(run: Run) -> None:
    """Retrained preprocessing ablation: the student retrained without each stage (same short schedule for all,
    the full pipeline included), scored on each dataset's test split with and without HAM's follow-up images."""
    import keras

    from ..metrics import roc_auc
    from .distill import malignant_prob

    cfg = run.cfg
    with timed(run, "ablation"):
        test = run.splits()["test"]
        rows: dict[str, dict] = {}
        for stage in ("",) + tuple(cfg.ablation_stages):
            pre = run.preprocessor.with_disabled(stage) if stage else run.preprocessor
            label = f"without {stage}" if stage else "full pipeline"
            model, hist = fit_student(run, run.train_passes(cfg.ablation_passes, pre), run.tensors("val", pre), cfg.ablation_epochs,
                                      label=f"ablation {label}")
            p = malignant_prob(model, run.tensors("test", pre))
            row = {"val_auc": hist["best_val_auc"], "test_auc": roc_auc(test.y, p)}
            for name in cfg.datasets:
                m = test.datasets == name
                if len(set(test.y[m].tolist())) == 2:
                    row[f"test_auc_{name}"] = roc_auc(test.y[m], p[m])
            keep = ~test.follow_up
            row["test_auc_no_follow_up"] = roc_auc(test.y[keep], p[keep])
            rows[label] = row
            run.log(f"ablation {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
            run.update("ablation_retrained", lambda old, label=label, row=row: {**(old or {}), label: row})
            keras.backend.clear_session()


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
    model = build_student(cfg.size, cfg.student_blocks, cfg.student_head, weights_dir=None, arch_dir=run.weights_dir,
                          dx_classes=len(DX_CLASSES) if cfg.dx_weight > 0 else 0)
    model.load_weights(run.run_dir / f"{name}.weights.h5")
    return model


def command_line(argv: list[str] | None = None) -> str:
    return "edge-train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


# ------------------------------------------------------------------ 3. teacher


def step_teacher(run: Run) -> None:
    """Backbones fine-tuned (or frozen) -> pooled features (cached) -> per-backbone heads -> fusion (logit average vs concat+MLP, on val)."""
    import keras

    from ..metrics import roc_auc
    from .distill import malignant_from_logits
    from .teacher import (
        cached_features,
        feature_extractor,
        fit_linear,
        linear_logits,
        mlp_logits,
        out_of_fold,
    )

    cfg = run.cfg
    if not cfg.teacher_backbones:
        run.log("teacher: this preset has no teacher (the v2 fused Lite teacher scored below its student); skipped")
        return
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


def calibrate_logits_layer(model, val_logits: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
    """Platt scaling fitted on the validation logits (N, 2), folded into the "logits" layer's weights (no runtime cost):
    with d = logit(malignant) - logit(benign), the layer then outputs [0, a*d + b], so softmax gives sigmoid(a*d + b)."""
    from ..metrics import fit_platt

    layer = model.get_layer("logits")
    w, b = layer.get_weights()
    a, c = fit_platt(y_val, val_logits[:, 1] - val_logits[:, 0])
    if a <= 0:
        raise SystemExit(f"Platt scaling on validation gave slope {a:.3f} <= 0: the model ranks validation backwards; not exported")
    w2 = np.zeros_like(w)
    b2 = np.zeros_like(b)
    w2[:, 1] = a * (w[:, 1] - w[:, 0])
    b2[1] = a * (b[1] - b[0]) + c
    layer.set_weights([w2, b2])
    return {"method": "platt", "a": a, "b": c}


def scope_set(run: Run, model: Any) -> Any:
    """What the scope check is fitted on (`scope_fit.build_set`), described by `model`'s features: a seeded sample
    of 2000 training images through the device path (the novelty reference: as they are, not augmented: an
    augmented reference widens "in scope" until skin photos and objects pass), their device-augmented copies and
    the generated negatives; validation for the thresholds."""
    from ..images import read_image
    from .export import keras_outputs
    from .scope_fit import build_set

    train, val = run.splits()["train"], run.splits()["val"]
    pick = np.sort(np.random.default_rng(run.cfg.seed).permutation(len(train))[:2000])
    sample = train.subset(pick)
    min_side = 2 * run.preprocessor.params.size  # as the device decodes (runtime.Classifier.decode_min_side)
    frames = [read_image(run.data / r["file"], min_side=min_side) for r in sample.rows]
    val_frames = (read_image(run.data / r["file"], min_side=min_side) for r in val.rows)
    return build_set(frames, list(sample.datasets), val_frames, list(val.datasets), run.preprocessor, min_side,
                     lambda batch: keras_outputs(model, batch)[1], seed=run.cfg.seed)


def step_export(run: Run) -> None:
    """Better student on validation -> Platt-calibrated fp16 TFLite + manifest; threshold chosen on validation only,
    so that sensitivity >= min_sensitivity holds on each validation dataset separately."""
    from ..metrics import choose_threshold_per_group, evaluate, expected_calibration_error, roc_auc
    from ..runtime import Classifier
    from .distill import malignant_from_logits
    from .export import export_student
    from .student import with_softmax

    cfg = run.cfg
    with timed(run, "export"):
        m = run.metrics()
        names = _student_names(run)
        shipped = max(names, key=lambda n: m[n]["best_val_auc"])
        logit_model = load_student(run, shipped)
        x_va, y_va = run.tensors("val"), run.labels("val")
        val_sources = run.splits()["val"].datasets
        val_logits = np.asarray(logit_model.predict(x_va, batch_size=256, verbose=0), np.float64)[:, :2]
        p_raw = malignant_from_logits(val_logits)  # before calibration
        calibration = {"method": "none"}
        if cfg.calibration == "platt":
            calibration = calibrate_logits_layer(logit_model, val_logits, y_va)
        model = with_softmax(logit_model)
        scope_data = scope_set(run, model)
        out32 = model.predict(x_va, batch_size=256, verbose=0)
        p32 = np.asarray(out32[0] if isinstance(out32, list) else out32, np.float64)[:, 1]  # [probabilities, features] or probabilities
        calibration.update({"val_ece_before": expected_calibration_error(y_va, p_raw), "val_ece_after": expected_calibration_error(y_va, p32)})
        thr, per_source = choose_threshold_per_group(y_va, p32, val_sources, cfg.min_sensitivity)
        rule = (f"highest threshold with sensitivity >= {cfg.min_sensitivity:.2f} on each validation dataset separately "
                f"({', '.join(cfg.datasets)}; lesion-grouped splits), on Platt-calibrated probabilities of the fp16 model through the device runtime")
        out = run.models_dir / "student_fp16.tflite"
        split_info = m.get("split", {})
        provenance = {
            "datasets": list(cfg.datasets), "data_root": str(run.data), "labels_csv": "<dataset>/labels.csv",
            "split": {"grouped_by": split_info.get("grouped_by"), "seed": cfg.split_seed, "fractions": list(cfg.split_fractions),
                      "counts": split_info.get("counts"), "per_source": split_info.get("per_source"),
                      "val_csv": "models/splits/val.csv", "test_csv": "models/splits/test.csv"},
            "student": {"source": shipped, "init": "ImageNet EfficientNet-Lite0 trunk" if cfg.student_init == "imagenet" else "random",
                        "blocks": cfg.student_blocks, "params": m[shipped]["params"], "dx_head": cfg.dx_weight > 0,
                        "frozen_blocks": cfg.student_freeze, "epochs": cfg.epochs, "augment_passes": cfg.augment_passes},
            "teacher": ({k: m.get(m.get("student_kd", {}).get("teacher", "teacher"), {}).get(k)
                         for k in ("preset", "family", "init", "train", "backbones", "fusion", "size")} if "student_kd" in names else None),
            "loss_weights": {"dataset_share": list(cfg.dataset_share), "follow_up_share": cfg.follow_up_share,
                             "note": "per-sample weights: each dataset half malignant / half benign; HAM follow-up nevi capped"},
            "calibration": calibration,
            "preset": cfg.preset,
        }
        val_metrics = None
        for _ in range(2):  # export; if the fp16 model's own validation threshold differs, export again with it
            manifest = export_student(model, out, run.preprocessor, thr, rule, version=f"v3-{cfg.preset}-{time.strftime('%Y%m%d')}",
                                      provenance=provenance, metrics={"val": val_metrics} if val_metrics else {}, training_command=run.reproduce or run.command,
                                      scope_data=scope_data)
            clf = Classifier(out)
            p16 = clf.predict(x_va)[:, 1].astype(np.float64)
            thr16, per_source = choose_threshold_per_group(y_va, p16, val_sources, cfg.min_sensitivity)
            val_metrics = evaluate(y_va, p16, thr16, n_boot=cfg.n_boot, groups=run.lesions("val"))
            if abs(thr16 - thr) < 1e-9:
                break
            thr = thr16
        manifest = export_student(model, out, run.preprocessor, thr, rule, version=manifest.version, provenance=provenance,
                                  metrics={"val": val_metrics, "val_source_thresholds": per_source}, training_command=run.reproduce or run.command,
                                  scope_data=scope_data)
        for s in ("val", "test"):
            write_table(run.splits()[s], run.models_dir / "splits" / f"{s}.csv")
        info = {"shipped": shipped, "threshold": thr, "val_source_thresholds": per_source, "size_bytes": out.stat().st_size,
                "sha256": manifest.sha256, "calibration": calibration,
                "val_keras_fp32_auc": roc_auc(y_va, p32), "val_tflite_fp16_auc": roc_auc(y_va, p16),
                "val_max_abs_diff_keras_vs_tflite": float(np.max(np.abs(p32 - p16))), "val_fp16": val_metrics}
        run.record("export", info)
        run.log(f"shipped {shipped}: {out} ({info['size_bytes'] / 1024:.1f} KiB), threshold {thr:.4f} (per source {per_source}), "
                f"val AUC fp32 {info['val_keras_fp32_auc']:.4f} / fp16 {info['val_tflite_fp16_auc']:.4f}, "
                f"ECE {calibration['val_ece_before']:.3f} -> {calibration['val_ece_after']:.3f}")


# ------------------------------------------------------------------ 7. evaluation on the test split


SHIFTS = {
    "upscale_x2": lambda im: _resize(im, 2.0),
    "upscale_x3": lambda im: _resize(im, 3.0),
    "downscale_x0.5": lambda im: _resize(im, 0.5),
    "nearest_resample_x2": lambda im: _resize(im, 2.0, "nearest"),
    "squash_aspect_0.75": lambda im: _squash(im, 0.75),
    "tighter_crop_70pct": lambda im: _central(im, 0.70),
    "looser_crop_pad20pct": lambda im: _pad(im, 0.20),
    "blur_sigma1.5": lambda im: _blur(im, 1.5),
    "sharpen": lambda im: _sharpen(im, 1.0),
    "jpeg_q40": lambda im: _jpeg(im, 40),
    "jpeg_q50": lambda im: _jpeg(im, 50),
    "colour_cast_warm": lambda im: _cast(im, (0.85, 1.0, 1.15)),
    "colour_cast_cool": lambda im: _cast(im, (1.15, 1.0, 0.85)),
    "gamma_0.75": lambda im: _gamma(im, 0.75),
    "gamma_1.35": lambda im: _gamma(im, 1.35),
    "vignette": lambda im: _vignette(im),
}


def _resize(im, f, how: str = ""):
    import cv2

    h, w = im.shape[:2]
    interp = cv2.INTER_NEAREST if how == "nearest" else (cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)
    return cv2.resize(im, (max(8, round(w * f)), max(8, round(h * f))), interpolation=interp)


def _squash(im, f):
    import cv2

    h, w = im.shape[:2]
    return cv2.resize(im, (max(8, round(w * f)), h), interpolation=cv2.INTER_AREA)


def _blur(im, sigma):
    import cv2

    return cv2.GaussianBlur(im, (0, 0), sigma)


def _sharpen(im, amount):
    import cv2

    return cv2.addWeighted(im, 1 + amount, cv2.GaussianBlur(im, (0, 0), 2.0), -amount, 0)


def _gamma(im, g):
    return np.clip(255.0 * np.power(im.astype(np.float32) / 255.0, g) + 0.5, 0, 255).astype(np.uint8)


def _vignette(im):
    h, w = im.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    d2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    return np.clip(im.astype(np.float32) * np.clip(1.0 - 0.45 * d2, 0, 1)[..., None], 0, 255).astype(np.uint8)


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
    return np.asarray([r.probability for r in results], np.float64)


def breakdown(table: Table, p: np.ndarray, thr: float, n_boot: int) -> dict[str, Any]:
    """Per dataset (AUC with and without HAM's follow-up images, sens/spec with CIs), per diagnosis
    (sensitivity for each malignant type, specificity for each benign type), all at one threshold."""
    from ..metrics import evaluate_by, operating_point, roc_auc

    y, ds, fu = table.y, table.datasets, table.follow_up
    out: dict[str, Any] = {"sources": {}, "dx": {}}
    keep = ~fu
    out["all_no_follow_up"] = {"n": int(keep.sum()), "auc": roc_auc(y[keep], p[keep]),
                               **{k: operating_point(y[keep], p[keep], thr)[k] for k in ("sensitivity", "specificity")}}
    for name, rep in evaluate_by(ds, y, p, thr, n_boot=n_boot, groups=table.groups).items():
        if "auc" not in rep:  # one class only
            continue
        m = ds == name
        mk = m & ~fu
        rep["auc_no_follow_up"] = roc_auc(y[mk], p[mk]) if fu[m].any() and len(set(y[mk].tolist())) == 2 else None
        rep["n_follow_up"] = int((m & fu).sum())
        out["sources"][name] = rep
    dx = np.array([r.get("dx", "") or "unknown" for r in table.rows])
    for d in sorted(set(dx.tolist())):
        m = dx == d
        malignant = bool(y[m].mean() > 0.5)
        hit = (p[m] >= thr) if malignant else (p[m] < thr)
        out["dx"][d] = {"n": int(m.sum()), "class": "malignant" if malignant else "benign",
                        "metric": "sensitivity" if malignant else "specificity", "value": float(hit.mean())}
    fu_p = p[fu]
    if fu_p.size:
        out["follow_up_median_p"] = float(np.median(fu_p))
        out["histo_nevi_median_p"] = float(np.median(p[(dx == "nv") & ~fu])) if ((dx == "nv") & ~fu).any() else None
    return out


def test_melanomas(run: Run, test: Table, per_source: int | None = None) -> dict[str, list[np.ndarray]]:
    from ..images import read_image

    out: dict[str, list[np.ndarray]] = {}
    for r in test.rows:
        if r.get("dx") == "mel" and (per_source is None or len(out.get(r["dataset"], [])) < per_source):
            out.setdefault(r["dataset"], []).append(read_image(run.data / r["file"]))
    return out


def dehair_on_melanomas(run: Run, test: Table) -> dict[str, dict]:
    """`dehair_check.measure` on every test melanoma, per dataset (lesion pixels changed, synthetic hair found)."""
    from .dehair_check import measure

    return {src: measure(ims, run.preprocessor.params) for src, ims in test_melanomas(run, test).items()}


def step_evaluate(run: Run) -> None:
    """Test split (used for nothing else): per source and diagnosis, calibration, model comparison, shifts, plots."""
    from ..metrics import choose_threshold_per_group, evaluate, expected_calibration_error, operating_point, reliability, roc_auc
    from ..runtime import Classifier
    from .plots import save_plots, save_reliability

    cfg = run.cfg
    with timed(run, "evaluate"):
        y_va, y_te = run.labels("val"), run.labels("test")
        test, val = run.splits()["test"], run.splits()["val"]
        clf = Classifier(run.models_dir / "student_fp16.tflite")
        thr = float(clf.manifest.threshold)
        p16 = device_probs(clf, test, run.data, desc="test (device path)")
        lesions = run.lesions("test")
        shipped = evaluate(y_te, p16, thr, n_boot=cfg.n_boot, groups=lesions)
        run.log(f"test, shipped fp16 (device path): AUC {shipped['auc']['value']:.4f} sens {shipped['sensitivity']['value']:.3f} "
                f"spec {shipped['specificity']['value']:.3f} at {thr:.4f}")
        detail = breakdown(test, p16, thr, cfg.n_boot)
        for name, rep in detail["sources"].items():
            run.log(f"  {name}: AUC {rep['auc']['value']:.4f} (no follow-up {rep['auc_no_follow_up']}), sens {rep['sensitivity']['value']:.3f}, "
                    f"spec {rep['specificity']['value']:.3f}")

        # calibration: the shipped (Platt-calibrated) model vs the same student before calibration
        calib: dict[str, Any] = {"test_ece_after": expected_calibration_error(y_te, p16), "reliability_after": reliability(y_te, p16),
                                 "mean_p": float(p16.mean()), "rate": float(y_te.mean())}
        names = _student_names(run)
        raw = {n: np.load(run.run_dir / f"{n}_probs.npz") for n in names}
        shipped_name = run.metrics().get("export", {}).get("shipped")
        if shipped_name in raw:
            calib["test_ece_before"] = expected_calibration_error(y_te, raw[shipped_name]["test"])
            calib["reliability_before"] = reliability(y_te, raw[shipped_name]["test"])
            save_reliability(run.models_dir / "reliability.png", y_te, {"before calibration (Keras fp32)": raw[shipped_name]["test"],
                                                                          "shipped (Platt, fp16)": p16})
        run.record("calibration", calib)

        # comparison table: every model at its own validation-chosen (per-source) threshold
        rows: dict[str, dict] = {}
        val_test: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for tp in sorted(run.run_dir.glob("teacher*_probs.npz")):
            tag = tp.name[: -len("_probs.npz")]
            t = np.load(tp)
            val_test[f"{tag} (chosen fusion)"] = (t["teacher_val"], t["teacher_test"])
        for name in names:
            val_test[f"{name} (Keras fp32, before calibration)"] = (raw[name]["val"], raw[name]["test"])
        for label, (pv, pt) in val_test.items():
            t_own, _ = choose_threshold_per_group(y_va, pv, val.datasets, cfg.min_sensitivity)
            rows[label] = evaluate(y_te, pt, t_own, n_boot=cfg.n_boot, groups=lesions)
        rows["shipped student fp16 (TFLite, device path)"] = shipped
        run.record("test", {"shipped": shipped, "table": rows, "threshold": thr, "breakdown": detail})

        # robustness: shifts applied to the decoded image before the pipeline, shipped threshold
        base = operating_point(y_te, p16, thr)
        shifts = {"none": {"auc": shipped["auc"]["value"], **{k: base[k] for k in ("sensitivity", "specificity", "balanced_accuracy")}}}
        for name, fn in SHIFTS.items():
            p = device_probs(clf, test, run.data, transform=fn, desc=name)
            op = operating_point(y_te, p, thr)
            shifts[name] = {"auc": roc_auc(y_te, p), **{k: op[k] for k in ("sensitivity", "specificity", "balanced_accuracy")},
                            "sensitivity_change": op["sensitivity"] - base["sensitivity"]}
            run.log(f"shift {name}: AUC {shifts[name]['auc']:.4f} sens {op['sensitivity']:.3f} spec {op['specificity']:.3f}")
        run.record("shifts", shifts)
        run.record("cross_dataset", cross_dataset(run, clf))
        run.record("dehair", dehair_on_melanomas(run, test))

        save_plots(run.models_dir, y_te, {"shipped student fp16": p16}, p16, thr)
        np.savez(run.run_dir / "test_probs.npz", y=y_te, shipped_fp16=p16)


def cross_dataset(run: Run, clf) -> dict[str, dict]:
    """The shipped model on every image of each other dataset, at the shipped threshold (nothing re-tuned)."""
    from ..device_path import screen_files
    from ..metrics import evaluate

    out: dict[str, dict] = {}
    for root in run.cross_data:
        table = load_table(root / "labels.csv")
        results, read, errors = screen_files(clf, root, [r["file"] for r in table.rows], desc=f"cross-dataset {root.name}")
        probs = [r.probability for r in results]
        kept = table.subset(read)
        if len(set(kept.y.tolist())) < 2:
            run.log(f"cross-dataset {root}: needs both classes among its readable images; skipped")
            continue
        report = evaluate(kept.y, np.array(probs), float(clf.manifest.threshold), n_boot=run.cfg.n_boot, groups=kept.lesions)
        no_verdict = sum(not r.decision.is_verdict for r in results)  # the device's decision; metrics score every image
        out[root.name] = {"path": str(root), "unreadable": len(errors), "no_verdict": no_verdict, **report}
        run.log(f"cross-dataset {root.name}: n {report['n']}, AUC {report['auc']['value']:.4f}, sens {report['sensitivity']['value']:.3f}, "
                f"spec {report['specificity']['value']:.3f} ({len(errors)} unreadable)")
    if not run.cross_data:
        run.log("cross-dataset: no other dataset staged beside the training data")
    return out


# ------------------------------------------------------------------ 8. model card


def step_card(run: Run) -> None:
    from .card import step_card_impl
    from .plots import save_stage_grid

    mel = test_melanomas(run, run.splits()["test"], per_source=3)
    save_stage_grid(run.models_dir / "stages.png", [im for ims in mel.values() for im in ims], run.preprocessor)
    step_card_impl(run)
