"""The training steps, as plain functions in the order `edge-train all` runs them.

    split -> shortcuts -> tensors -> teacher -> teacher-compare -> student-ce -> student-kd -> ablation -> export
          -> evaluate -> card                                     (then, against the same run: input-size, loso)

Each step reads what earlier steps left in the run folder and adds its outputs and numbers to `metrics.json`
(`run_state.Run`), so a step can be re-run alone (`edge-train student-ce --run-dir runs/...`). The test split is
scored by `evaluate` alone (`evaluation`), once per shipped model; every choice before it is made on validation.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import keras
import numpy as np

from ..images import read_image
from ..metrics import choose_threshold_per_group, evaluate, expected_calibration_error, fit_platt, roc_auc
from ..runtime import Classifier
from . import evaluation, loso, shortcuts
from .card import write_card
from .config import EXTRA_STEPS, STEPS, teacher_of
from .data import (
    DX_CLASSES,
    SPLITS,
    Table,
    class_weights,
    describe_split,
    load_sources,
    split_sources,
    weight_summary,
    write_table,
)
from .distill import malignant_from_logits, malignant_prob, train_student
from .export import export_student, keras_outputs
from .input_size import step_input_size
from .plots import save_plots, save_reliability, save_stage_grid
from .run_state import Run, timed
from .scope_fit import ScopeSet, build_set
from .student import build_student, with_softmax
from .teacher import cached_features, feature_extractor, finetune_backbone, fuse
from .tensor_input import dtype_policy

GROUPED_BY = "lesion_id of each dataset (HAM10000: lesion; isic2020: patient; isic_archive, isic2017: image)"

# ------------------------------------------------------------------ 1. split


def step_split(run: Run) -> None:
    """Each dataset split on its own (grouped by its lesion_id column, stratified, seeded); CSVs written to the run folder."""
    cfg = run.cfg
    with timed(run, "split"):
        table = load_sources(run.data, cfg.sources)
        parts = split_sources(table, cfg.split_fractions, cfg.split_seed)
        for name, t in parts.items():
            write_table(t, run.run_dir / "splits" / f"{name}.csv")
        summary = describe_split(parts)
        per_source = {name: describe_split({s: t.subset(np.flatnonzero(t.datasets == name)) for s, t in parts.items()})
                      for name in cfg.sources}
        run.record("split", {"seed": cfg.split_seed, "grouped_by": GROUPED_BY, "datasets": list(cfg.sources),
                             "excluded": list(cfg.exclude_datasets), "counts": summary, "per_source": per_source,
                             "class_weights": class_weights(parts["train"].y),
                             "loss_weights": weight_summary(parts["train"], run.sample_weights(parts["train"]))})
        run.log(f"split: {summary}")


# ------------------------------------------------------------------ 2. shortcuts


def step_shortcuts(run: Run) -> None:
    """Per source: image geometry, JPEG quality, blockiness, class balance, and how well they alone predict the label."""
    with timed(run, "shortcuts"):
        table = load_sources(run.data, run.cfg.sources)
        report = shortcuts.shortcut_report(table, run.data, seed=run.cfg.seed)
        (run.run_dir / "shortcuts.md").write_text(shortcuts.markdown(report) + "\n")
        run.record("shortcuts", report)
        run.log(f"shortcuts: AUC from image properties alone {report['shortcut_auc_all']:.3f} "
                f"(without each source: {report['shortcut_auc_without']}); table in {run.run_dir / 'shortcuts.md'}")


# ------------------------------------------------------------------ 3. tensors


def step_tensors(run: Run) -> None:
    """Validation and test through the device preprocessing once; the training split as device-augmented passes (cached)."""
    with timed(run, "tensors"):
        for s in ("val", "test"):
            run.log(f"{s}: {run.tensors(s).shape}")
        run.log(f"train: {run.train_passes(run.cfg.augment_passes).shape}")


# ------------------------------------------------------------------ 4. teacher


def step_teacher(run: Run) -> None:
    """Backbones fine-tuned (or frozen) -> pooled features (cached) -> per-backbone heads -> fusion (logit average vs
    concat+MLP, on validation)."""
    cfg = run.cfg
    if not cfg.teacher_backbones:
        run.log("teacher: this preset has no teacher (the v2 fused Lite teacher scored below its student); skipped")
        return
    # the fused Lite teacher is "teacher" (distils the student); another family is measured beside it
    tag = "teacher" if cfg.teacher_family == "lite" else "teacher_" + cfg.preset.replace("-", "_")
    with timed(run, tag):
        y = {s: run.labels(s) for s in SPLITS}
        feats: dict[str, dict[str, np.ndarray]] = {}
        finetuned: dict[str, dict] = {}
        for which in cfg.teacher_backbones:
            t0 = time.perf_counter()
            trained = cfg.teacher_train == "finetune"
            ext = feature_extractor(cfg.teacher_family, which, cfg.teacher_size, cfg.size, run.weights_dir, run.paper_weights,
                                    cfg.teacher_tiny, freeze_stages=cfg.teacher_freeze_stages if trained else None)
            weights_id = "frozen"
            if trained:
                finetuned[which] = _finetune(run, ext, which, tag)
                weights_id = finetuned[which]["weights_sha256"]
                ext.trainable = False
            feats[which] = {}
            for s in SPLITS:
                key = "|".join([cfg.teacher_family, which, str(cfg.teacher_size), str(cfg.teacher_tiny), str(run.paper_weights),
                                weights_id, json.dumps(run.preprocessor.describe(), sort_keys=True)]
                               + [r["file"] for r in run.splits()[s].rows])
                feats[which][s] = cached_features(ext, run.tensors(s), key, run.cache_dir, desc=f"{which} {s}")
            run.log(f"{which}: features {feats[which]['train'].shape[1]}-d at {cfg.teacher_size}px "
                    f"in {time.perf_counter() - t0:.0f} s")
            keras.backend.clear_session()
        fused = fuse(feats, y, np.array(run.splits()["train"].groups), head_epochs=cfg.head_epochs, seed=cfg.seed, log=run.log)
        np.savez(run.run_dir / f"{tag}_logits.npz", **fused["teacher"])
        probs = {f"{w}_{s}": malignant_from_logits(fused["logits"][w][s]) for w in cfg.teacher_backbones for s in ("val", "test")}
        probs.update({f"{name}_{s}": malignant_from_logits(fused[k][s])
                      for name, k in (("logit_avg", "avg"), ("concat_mlp", "mlp")) for s in ("val", "test")})
        probs.update({f"teacher_{s}": malignant_from_logits(fused["teacher"][s]) for s in ("val", "test")})
        np.savez(run.run_dir / f"{tag}_probs.npz", **probs)
        run.record(tag, {"preset": cfg.preset, "tiny": cfg.teacher_tiny, "family": cfg.teacher_family,
                         "backbones": list(cfg.teacher_backbones), "size": cfg.teacher_size, "train": cfg.teacher_train,
                         "init": _teacher_init(run), "finetune": finetuned, "heads": fused["heads"], "fusion": fused["fusion"],
                         "train_logits": "out-of-fold (5 lesion-grouped folds)"})


def _teacher_init(run: Run) -> str:
    if run.cfg.teacher_family == "lite":
        return "ImageNet (../shared/weights)"
    return f"user weights ({run.paper_weights})" if run.paper_weights else "random"


def _finetune(run: Run, features: Any, which: str, tag: str) -> dict:
    """Fine-tune one backbone on the training split (or reuse this run's weights from an earlier attempt)."""
    cfg = run.cfg
    path = run.run_dir / f"{tag}_{which}.weights.h5"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        features.load_weights(path)
        run.log(f"{which}: fine-tuned weights reused from {path}")
        return json.loads(info_path.read_text())
    y_tr = run.labels("train")
    cw = class_weights(y_tr)
    _, hist = finetune_backbone(features, run.tensors("train"), y_tr, run.tensors("val"), run.labels("val"),
                                epochs=cfg.teacher_epochs, lr=cfg.teacher_lr, batch_size=cfg.batch_size,
                                sample_weight=np.array([cw[int(c)] for c in y_tr], np.float32), seed=cfg.seed, log=run.log)
    features.save_weights(path)
    info = {"init": _teacher_init(run), "frozen_stages": cfg.teacher_freeze_stages if cfg.teacher_family == "lite" else 0,
            "trainable_params": int(sum(int(np.prod(w.shape)) for w in features.trainable_weights)),
            "params": int(features.count_params()),
            "epochs": hist["epochs"], "best_epoch": hist["best_epoch"], "best_val_auc": hist["best_val_auc"],
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def step_teacher_compare(run: Run) -> None:
    """The second teacher (`compare_teacher` preset, e.g. the paper's families) on the same split and tensors."""
    if not run.cfg.compare_teacher:
        run.log("teacher-compare: no compare_teacher in this preset; skipped")
        return
    step_teacher(replace(run, cfg=teacher_of(run.cfg, run.cfg.compare_teacher)))


def best_teacher(run: Run) -> str:
    """The fused teacher (this run's "teacher" or a compared "teacher_<preset>") with the best validation AUC."""
    m = run.metrics()
    scores = {k: v["heads"][v["fusion"]]["val_auc"] for k, v in m.items()
              if (k == "teacher" or k.startswith("teacher_")) and isinstance(v, dict) and "heads" in v
              and (run.run_dir / f"{k}_logits.npz").is_file()}
    if not scores:
        raise SystemExit(f"{run.run_dir}: no teacher logits; run the teacher step first")
    return max(scores, key=scores.get)


# ------------------------------------------------------------------ 5. students (without and with KD)


def step_student(run: Run, kd: bool) -> None:
    """Train the student end to end on device-augmented passes (CE [+ dx head], or + KD from the teacher's logits)."""
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
        grid = ([(float(a), float(t)) for a, t in cfg.kd_grid] if (kd and cfg.kd_grid)
                else [(cfg.kd_alpha if kd else 1.0, cfg.kd_temperature)])
        short = len(grid) > 1 and 0 < cfg.kd_grid_epochs < cfg.epochs
        passes, x_val = run.train_passes(cfg.augment_passes), run.tensors("val")
        best, tried = None, []
        for alpha, temp in grid:
            model, hist = fit_student(run, passes, x_val, cfg.kd_grid_epochs if short else cfg.epochs, teacher=teacher,
                                      alpha=alpha, temperature=temp, label=name)
            tried.append({"alpha": alpha, "temperature": temp, "epochs": len(hist["epochs"]),
                          "best_val_auc": hist["best_val_auc"]})
            if best is None or hist["best_val_auc"] > best[1]["best_val_auc"]:
                best = (model, hist)
        if len(grid) > 1:
            run.log(f"{name}: grid on validation: "
                    + ", ".join(f"alpha {g['alpha']} T {g['temperature']}: {g['best_val_auc']:.4f}" for g in tried))
        if short:
            best = fit_student(run, passes, x_val, cfg.epochs, teacher=teacher, alpha=best[1]["alpha"],
                               temperature=best[1]["temperature"], label=name)
        model, hist = best
        model.save_weights(run.run_dir / f"{name}.weights.h5")
        hist["backend"] = keras.backend.backend()
        if cfg.init_from:
            hist["init_from"] = cfg.init_from
        np.savez(run.run_dir / f"{name}_probs.npz", **{s: malignant_prob(model, run.tensors(s)) for s in ("val", "test")})
        run.record(name, {"params": int(model.count_params()), **hist, **({"grid": tried} if len(grid) > 1 else {}),
                          **({"teacher": kd_teacher} if kd else {})})


def fit_student(run: Run, x_train: np.ndarray, x_val: np.ndarray, epochs: int, *, teacher: np.ndarray | None = None,
                alpha: float = 1.0, temperature: float = 4.0, label: str = "student", train: Table | None = None,
                y_val: np.ndarray | None = None) -> tuple[Any, dict]:
    """One student trained on uint8 device-augmented passes of `train` (default: the training split), best epoch by
    validation AUC (`y_val`: default the validation split's labels), in the config's precision."""
    cfg = run.cfg
    train = run.splits()["train"] if train is None else train
    y_val = run.labels("val") if y_val is None else y_val
    dx_classes = len(DX_CLASSES) if cfg.dx_weight > 0 else 0
    with dtype_policy(cfg.precision) as precision:
        keras.utils.set_random_seed(cfg.seed)  # the head's initial weights too: a re-run trains the same student
        model = build_student(cfg.size, cfg.student_blocks, cfg.student_head,
                              weights_dir=run.weights_dir if cfg.student_init == "imagenet" else None, arch_dir=run.weights_dir,
                              freeze_blocks=cfg.student_freeze, dx_classes=dx_classes)
        if cfg.init_from:  # continue a finished (e.g. shorter, GPU) run: its weights, then this schedule
            model.load_weights(cfg.init_from)
        run.log(f"{label}: alpha={alpha} T={temperature}, {model.count_params():,} params, "
                f"{epochs} epochs, dx head {dx_classes}, "
                f"{precision}, batch {cfg.batch_size}" + (f", from {cfg.init_from}" if cfg.init_from else ""))
        model, hist = train_student(model, x_train, train.y, x_val, y_val, teacher, alpha=alpha, temperature=temperature,
                                    epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, sample_weight=run.sample_weights(train),
                                    seed=cfg.seed, log=run.log, dx=train.dx_index, dx_classes=dx_classes, dx_weight=cfg.dx_weight,
                                    mixup_alpha=cfg.mixup_alpha, ema_momentum=cfg.ema_momentum)
    hist.update(alpha=alpha, temperature=temperature, precision=precision)
    return model, hist


def student_names(run: Run) -> list[str]:
    return [n for n in ("student_ce", "student_kd") if (run.run_dir / f"{n}.weights.h5").is_file()]


def load_student(run: Run, name: str) -> Any:
    cfg = run.cfg
    model = build_student(cfg.size, cfg.student_blocks, cfg.student_head, weights_dir=None, arch_dir=run.weights_dir,
                          dx_classes=len(DX_CLASSES) if cfg.dx_weight > 0 else 0)
    model.load_weights(run.run_dir / f"{name}.weights.h5")
    return model


# ------------------------------------------------------------------ 6. ablation


def step_ablation(run: Run) -> None:
    """Retrained preprocessing ablation: the student retrained without each stage (same short schedule for all,
    the full pipeline included), scored on each dataset's test split with and without HAM's follow-up images."""
    cfg = run.cfg
    with timed(run, "ablation"):
        test = run.splits()["test"]
        for stage in ("",) + tuple(cfg.ablation_stages):
            pre = run.preprocessor.with_disabled(stage) if stage else run.preprocessor
            label = f"without {stage}" if stage else "full pipeline"
            model, hist = fit_student(run, run.train_passes(cfg.ablation_passes, pre), run.tensors("val", pre),
                                      cfg.ablation_epochs, label=f"ablation {label}")
            p = malignant_prob(model, run.tensors("test", pre))
            row = {"val_auc": hist["best_val_auc"], "test_auc": roc_auc(test.y, p)}
            for name in cfg.sources:
                m = test.datasets == name
                if len(set(test.y[m].tolist())) == 2:
                    row[f"test_auc_{name}"] = roc_auc(test.y[m], p[m])
            keep = ~test.follow_up
            row["test_auc_no_follow_up"] = roc_auc(test.y[keep], p[keep])
            run.log(f"ablation {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
            run.update("ablation_retrained", lambda old, label=label, row=row: {**(old or {}), label: row})
            keras.backend.clear_session()


# ------------------------------------------------------------------ 7. export (+ threshold and calibration, on validation)


def step_export(run: Run) -> None:
    """Better student on validation -> Platt-calibrated fp16 TFLite + manifest; threshold chosen on validation only,
    so that sensitivity >= min_sensitivity holds on each validation dataset separately."""
    cfg = run.cfg
    with timed(run, "export"):
        m = run.metrics()
        names = student_names(run)
        shipped = max(names, key=lambda n: m[n]["best_val_auc"])
        logit_model = load_student(run, shipped)
        x_va, y_va = run.tensors("val"), run.labels("val")
        val_sources = run.splits()["val"].datasets
        val_logits = np.asarray(logit_model.predict(x_va, batch_size=256, verbose=0), np.float64)[:, :2]
        p_raw = malignant_from_logits(val_logits)  # before calibration
        calibration = calibrate_logits_layer(logit_model, val_logits, y_va) if cfg.calibration == "platt" else {"method": "none"}
        model = with_softmax(logit_model, flip_tta=cfg.tta_flips)
        scope_data = scope_set(run, model)
        p32 = keras_outputs(model, x_va, batch_size=256)[0][:, 1].astype(np.float64)
        calibration.update({"val_ece_before": expected_calibration_error(y_va, p_raw),
                            "val_ece_after": expected_calibration_error(y_va, p32)})
        thr, per_source = choose_threshold_per_group(y_va, p32, val_sources, cfg.min_sensitivity)
        rule = (f"highest threshold with sensitivity >= {cfg.min_sensitivity:.2f} on each validation dataset separately "
                f"({', '.join(cfg.sources)}; grouped splits), "
                "on Platt-calibrated probabilities of the fp16 model through the device runtime")
        out = run.models_dir / "student_fp16.tflite"
        provenance = _provenance(run, m, shipped, names, calibration)
        version = f"{cfg.model_version}-{cfg.preset}-{time.strftime('%Y%m%d')}"
        val_metrics = None
        for _ in range(2):  # export; if the fp16 model's own validation threshold differs, export again with it
            manifest = export_student(model, out, run.preprocessor, thr, rule, version=version, provenance=provenance,
                                      metrics={"val": val_metrics} if val_metrics else {},
                                      training_command=run.reproduce or run.command, scope_data=scope_data)
            p16 = Classifier(out).predict(x_va)[:, 1].astype(np.float64)
            thr16, per_source = choose_threshold_per_group(y_va, p16, val_sources, cfg.min_sensitivity)
            val_metrics = evaluate(y_va, p16, thr16, n_boot=cfg.n_boot, groups=run.lesions("val"))
            if abs(thr16 - thr) < 1e-9:
                break
            thr = thr16
        manifest = export_student(model, out, run.preprocessor, thr, rule, version=manifest.version, provenance=provenance,
                                  metrics={"val": val_metrics, "val_source_thresholds": per_source},
                                  training_command=run.reproduce or run.command, scope_data=scope_data)
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


def calibrate_logits_layer(model: Any, val_logits: np.ndarray, y_val: np.ndarray) -> dict[str, Any]:
    """Platt scaling fitted on the validation logits (N, 2), folded into the "logits" layer's weights (no runtime cost):
    with d = logit(malignant) - logit(benign), the layer then outputs [0, a*d + b], so softmax gives sigmoid(a*d + b)."""
    layer = model.get_layer("logits")
    w, b = layer.get_weights()
    a, c = fit_platt(y_val, val_logits[:, 1] - val_logits[:, 0])
    if a <= 0:
        raise SystemExit(f"Platt scaling on validation gave slope {a:.3f} <= 0: "
                         "the model ranks validation backwards; not exported")
    w2 = np.zeros_like(w)
    b2 = np.zeros_like(b)
    w2[:, 1] = a * (w[:, 1] - w[:, 0])
    b2[1] = a * (b[1] - b[0]) + c
    layer.set_weights([w2, b2])
    return {"method": "platt", "a": a, "b": c}


def scope_set(run: Run, model: Any) -> ScopeSet:
    """What the scope check is fitted on (`scope_fit.build_set`), described by `model`'s features: a seeded sample
    of 2000 training images through the device path (the novelty reference: as they are, not augmented: an
    augmented reference widens "in scope" until skin photos and objects pass), their device-augmented copies and
    the generated negatives; validation for the thresholds."""
    train, val = run.splits()["train"], run.splits()["val"]
    pick = np.sort(np.random.default_rng(run.cfg.seed).permutation(len(train))[:2000])
    sample = train.subset(pick)
    min_side = 2 * run.preprocessor.params.size  # as the device decodes (runtime.Classifier.decode_min_side)
    frames = [read_image(run.data / r["file"], min_side=min_side) for r in sample.rows]
    val_frames = (read_image(run.data / r["file"], min_side=min_side) for r in val.rows)
    return build_set(frames, list(sample.datasets), val_frames, list(val.datasets), run.preprocessor, min_side,
                     lambda batch: keras_outputs(model, batch)[1], seed=run.cfg.seed)


def _provenance(run: Run, m: dict[str, Any], shipped: str, names: list[str], calibration: dict[str, Any]) -> dict[str, Any]:
    """The manifest's training-data provenance block."""
    cfg, split_info = run.cfg, m.get("split", {})
    return {
        "datasets": list(cfg.sources), "data_root": str(run.data), "labels_csv": "<dataset>/labels.csv",
        "split": {"grouped_by": split_info.get("grouped_by"), "seed": cfg.split_seed, "fractions": list(cfg.split_fractions),
                  "counts": split_info.get("counts"), "per_source": split_info.get("per_source"),
                  "val_csv": "models/splits/val.csv", "test_csv": "models/splits/test.csv"},
        "student": {"source": shipped,
                    "init": "ImageNet EfficientNet-Lite0 trunk" if cfg.student_init == "imagenet" else "random",
                    "blocks": cfg.student_blocks, "params": m[shipped]["params"], "dx_head": cfg.dx_weight > 0,
                    "frozen_blocks": cfg.student_freeze, "epochs": cfg.epochs, "augment_passes": cfg.augment_passes,
                    "tta_flips": cfg.tta_flips, "mixup_alpha": cfg.mixup_alpha, "ema_momentum": cfg.ema_momentum},
        "teacher": ({k: m.get(m.get("student_kd", {}).get("teacher", "teacher"), {}).get(k)
                     for k in ("preset", "family", "init", "train", "backbones", "fusion", "size")}
                    if "student_kd" in names else None),
        "loss_weights": {"dataset_share": list(cfg.dataset_share), "follow_up_share": cfg.follow_up_share,
                         "max_sample_weight": cfg.max_sample_weight, "per_source": split_info.get("loss_weights"),
                         "note": "per-sample weights: each dataset half malignant / half benign; HAM follow-up nevi capped"},
        "calibration": calibration,
        "preset": cfg.preset,
    }


# ------------------------------------------------------------------ 8. evaluation on the test split (used for nothing else)


def step_evaluate(run: Run) -> None:
    """Test split: per source and diagnosis, calibration, model comparison, shifts, other datasets, hair removal, plots."""
    cfg = run.cfg
    with timed(run, "evaluate"):
        y_te, test = run.labels("test"), run.splits()["test"]
        clf = Classifier(run.models_dir / "student_fp16.tflite")
        thr = float(clf.manifest.threshold)
        p16 = evaluation.device_probs(clf, test, run.data, desc="test (device path)")
        shipped = evaluate(y_te, p16, thr, n_boot=cfg.n_boot, groups=run.lesions("test"))
        run.log(f"test, shipped fp16 (device path): AUC {shipped['auc']['value']:.4f} sens {shipped['sensitivity']['value']:.3f} "
                f"spec {shipped['specificity']['value']:.3f} at {thr:.4f}")
        detail = evaluation.breakdown(test, p16, thr, cfg.n_boot)
        for name, rep in detail["sources"].items():
            run.log(f"  {name}: AUC {rep['auc']['value']:.4f} (no follow-up {rep['auc_no_follow_up']}), "
                    f"sens {rep['sensitivity']['value']:.3f}, spec {rep['specificity']['value']:.3f}")

        names = student_names(run)
        raw = {n: np.load(run.run_dir / f"{n}_probs.npz") for n in names}
        shipped_name = run.metrics().get("export", {}).get("shipped")
        before = raw[shipped_name]["test"] if shipped_name in raw else None
        run.record("calibration", evaluation.calibration(y_te, p16, before))
        if before is not None:
            save_reliability(run.models_dir / "reliability.png", y_te, {"before calibration (Keras fp32)": before,
                                                                          "shipped (Platt, fp16)": p16})

        val_test = {}
        for tp in sorted(run.run_dir.glob("teacher*_probs.npz")):
            t = np.load(tp)
            val_test[f"{tp.name[: -len('_probs.npz')]} (chosen fusion)"] = (t["teacher_val"], t["teacher_test"])
        for name in names:
            val_test[f"{name} (Keras fp32, before calibration)"] = (raw[name]["val"], raw[name]["test"])
        rows = evaluation.compare_models(run, val_test)
        rows["shipped student fp16 (TFLite, device path)"] = shipped
        run.record("test", {"shipped": shipped, "table": rows, "threshold": thr, "breakdown": detail})

        run.record("shifts", evaluation.robustness(run, clf, p16))
        run.record("cross_dataset", evaluation.cross_dataset(run, clf))
        run.record("dehair", evaluation.dehair_on_melanomas(run))
        save_plots(run.models_dir, y_te, {"shipped student fp16": p16}, p16, thr)
        np.savez(run.run_dir / "test_probs.npz", y=y_te, shipped_fp16=p16)


# ------------------------------------------------------------------ 9. model card


def step_card(run: Run) -> None:
    """models/MODEL_CARD.md from metrics.json (and the six stages on a few test melanomas, stages.png)."""
    mel = evaluation.melanoma_images(run, per_source=3)
    save_stage_grid(run.models_dir / "stages.png", [im for ims in mel.values() for im in ims], run.preprocessor)
    write_card(run.models_dir / "MODEL_CARD.md", run.metrics(), run.cfg.to_dict(), run.run_dir, str(run.data))
    run.log(f"wrote {run.models_dir / 'MODEL_CARD.md'}")


# ------------------------------------------------------------------ studies against a finished run (not part of `all`)


def step_loso(run: Run) -> None:
    """Leave-one-source-out: for each source X, the student fitted without X (best epoch on the other sources'
    validation), its threshold chosen on the other sources' validation, then X scored on its training and validation
    images (X's test split stays unseen). The external estimate that guides choices (sources kept, weights, levers)."""
    cfg = run.cfg
    held_out = cfg.loso_sources or cfg.sources
    unknown = sorted(set(held_out) - set(cfg.sources))
    if unknown or len(cfg.sources) < 2:
        raise SystemExit(f"loso: needs two or more sources and held-out sources among them; sources {list(cfg.sources)}, "
                         f"loso_sources {list(held_out)}")
    epochs = cfg.loso_epochs or cfg.epochs
    with timed(run, "loso"):
        splits = run.splits()
        train, val = splits["train"], splits["val"]
        passes, x_val = run.train_passes(cfg.augment_passes), run.tensors("val")
        folds: dict[str, dict] = {}
        for source in held_out:
            tr, va = np.flatnonzero(train.datasets != source), np.flatnonzero(val.datasets != source)
            model, hist = fit_student(run, passes[:, tr], x_val[va], epochs, train=train.subset(tr), y_val=val.y[va],
                                      label=f"loso without {source}")
            p_val = malignant_prob(model, x_val[va])
            thr, per_source = choose_threshold_per_group(val.y[va], p_val, val.datasets[va], cfg.min_sensitivity)
            scored = loso.held_out_table(splits, source)
            p = malignant_prob(model, loso.held_out_tensors(run, scored))
            folds[source] = loso.fold_report(scored, p, thr, per_source, hist, n_train=len(tr), n_boot=cfg.n_boot)
            run.log(f"loso {source}: " + loso.fold_line(folds[source]))
            keras.backend.clear_session()
        report = {"epochs": epochs, "precision": hist["precision"], "sources": folds, "rule": loso.RULE}
        (run.run_dir / "loso.json").write_text(json.dumps(report, indent=2) + "\n")
        run.record("loso", report)


STEP_FUNCTIONS: dict[str, Callable[[Run], None]] = {
    "split": step_split,
    "shortcuts": step_shortcuts,
    "tensors": step_tensors,
    "teacher": step_teacher,
    "teacher-compare": step_teacher_compare,
    "student-ce": lambda run: step_student(run, kd=False),
    "student-kd": lambda run: step_student(run, kd=True),
    "ablation": step_ablation,
    "export": step_export,
    "evaluate": step_evaluate,
    "card": step_card,
    "input-size": step_input_size,
    "loso": step_loso,
}
assert tuple(STEP_FUNCTIONS) == STEPS + EXTRA_STEPS, "config.STEPS / EXTRA_STEPS and STEP_FUNCTIONS disagree"
