"""`edge-train input-size`: the student's input size, chosen by measurement.

For each candidate size the student is trained briefly (plain CE, same recipe
and split, `size_study_epochs`) and exported to fp16 TFLite; validation AUC
then comes beside device-path latency measured the way `edge-bench` measures
it (decode -> six stages -> LiteRT on real validation JPEGs). The sizes are
timed round-robin in one process, so a noisy machine shifts them together and
their ratios hold.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import numpy as np

from ..device_path import screen_bytes
from ..metrics import choose_threshold
from ..preprocess import STAGES
from ..runtime import Classifier
from .data import class_weights
from .distill import train_student
from .export import export_student, keras_predict
from .run_state import Run, timed
from .student import build_student, with_softmax


def step_input_size(run: Run) -> None:
    cfg = run.cfg
    out_dir = run.run_dir / "input_size"
    results: dict[str, dict] = {}
    classifiers: dict[int, Classifier] = {}
    with timed(run, "input_size"):
        for size in cfg.size_study:
            sub = replace(run, cfg=replace(cfg, size=size), _tensors={})
            x_tr, y_tr, x_va, y_va = sub.tensors("train"), sub.labels("train"), sub.tensors("val"), sub.labels("val")
            cw = class_weights(y_tr)
            model = build_student(size, cfg.student_blocks, cfg.student_head,
                                  weights_dir=run.weights_dir if cfg.student_init == "imagenet" else None,
                                  arch_dir=run.weights_dir, freeze_blocks=cfg.student_freeze)
            run.log(f"input size {size}: {cfg.size_study_epochs} epochs")
            model, hist = train_student(model, x_tr, y_tr, x_va, y_va, None, alpha=1.0, epochs=cfg.size_study_epochs,
                                        batch_size=cfg.batch_size, lr=cfg.lr,
                                        sample_weight=np.array([cw[int(c)] for c in y_tr], np.float32),
                                        seed=cfg.seed, log=run.log)
            probs = with_softmax(model)
            p = keras_predict(probs, x_va)[:, 1]
            path = out_dir / f"student_{size}px.tflite"
            export_student(probs, path, sub.preprocessor, choose_threshold(y_va, p, cfg.min_sensitivity),
                           "input-size study (not shipped)", version=f"input-size-{size}")
            classifiers[size] = Classifier(path)
            results[str(size)] = {"val_auc": hist["best_val_auc"], "best_epoch": hist["best_epoch"],
                                  "epochs": cfg.size_study_epochs, "size_bytes": path.stat().st_size}
            run.log(f"input size {size}: val AUC {hist['best_val_auc']:.4f}")

        # latency, side by side: every size screens the same real JPEGs in turn
        val = run.splits()["val"]
        jpegs = [(run.data / r["file"]).read_bytes() for r in val.rows[: cfg.size_study_images]]
        timings: dict[int, list[dict[str, float]]] = {s: [] for s in classifiers}
        for jpeg in jpegs[:3]:  # warm-up
            for clf in classifiers.values():
                screen_bytes(clf, jpeg)
        for jpeg in jpegs:
            for size, clf in classifiers.items():
                timings[size].append(screen_bytes(clf, jpeg).timings_ms)
        for size, ts in timings.items():
            rows = [{"decode": t["decode"], "six_stages": sum(t.get(k, 0.0) for k in STAGES), "inference": t["inference"],
                     "end_to_end": t["total"]}
                    for t in ts]
            results[str(size)]["latency_p50_ms"] = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
        base = results[str(cfg.size)]["latency_p50_ms"]["end_to_end"] if str(cfg.size) in results else None
        for r in results.values():
            r["end_to_end_ratio_to_shipped_size"] = None if not base else round(r["latency_p50_ms"]["end_to_end"] / base, 3)
        run.record("input_size", {"sizes": results, "images_timed": len(jpegs), "shipped_size": cfg.size,
                                  "note": "CE only, short schedule; latency on this machine, p50 over the same images"})
        for size, r in results.items():
            run.log(f"input size {size}: val AUC {r['val_auc']:.4f}, p50 end to end {r['latency_p50_ms']['end_to_end']:.2f} ms "
                    f"(x{r['end_to_end_ratio_to_shipped_size']}), inference {r['latency_p50_ms']['inference']:.2f} ms")
