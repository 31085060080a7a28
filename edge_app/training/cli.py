"""`edge-train`: the training module's one command.

    edge-train all --preset cpu --data ../shared/data

runs every step in order into a new run folder `runs/<timestamp>/` and ships
`models/student_fp16.tflite` + `.json` + `MODEL_CARD.md`. Each step can also be
run alone against an existing run folder (`--run-dir`); `loso` (leave-one-source-out)
and `input-size` are studies run against a finished run folder:

    edge-train loso --preset v4 --data ../shared/data --run-dir runs/<timestamp>

    edge-train sign --key KEY.pem --out BUNDLE.zip models/student_fp16.tflite

packs a model, its manifest and model card into a signed bundle for
`edge-app model install` (no TensorFlow needed).

    edge-train scope models/student_fp16.tflite --data ../shared/data

refits an exported model's scope check through the device runtime (no
TensorFlow; the .tflite is unchanged): `training/scope_refit.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from .config import EXTRA_STEPS, STEPS


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge-train", description="Train, distill, export and evaluate the DermaEdge student.")
    ap.add_argument("step", choices=("all",) + STEPS + EXTRA_STEPS, help="one step, or all of them in order ("
                    + ", ".join(EXTRA_STEPS) + ": not part of all, run against a finished run folder)")
    ap.add_argument("--preset", default="cpu", help="cpu | v4 | kd | paper | paper-small | tiny")
    ap.add_argument("--data", default="../shared/data", help="folder holding the datasets named by the preset's `datasets` "
                    "(each <name>/labels.csv: file,label[,lesion_id,dx,dx_type,...])")
    ap.add_argument("--weights-dir", default="../shared/weights", help="ImageNet EfficientNet-Lite .npz files")
    ap.add_argument("--weights", default=None, help="paper preset: folder of <backbone>.weights.h5 files (else random init)")
    ap.add_argument("--run-dir", default=None, help="continue this run folder (default: a new runs/<timestamp>/)")
    ap.add_argument("--models-dir", default="models", help="where the shipped model, card and plots go")
    ap.add_argument("--cache-dir", default="cache", help="preprocessed tensors and backbone features")
    ap.add_argument("--cross-data", action="append", default=None, metavar="DIR",
                    help="another labelled dataset (not trained on) to evaluate the shipped model on, at the shipped threshold "
                         "(repeatable; default: none)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field, e.g. "
                    "datasets=ham10000,isic2017 or exclude_datasets=isic2020 (the sources trained on), precision=mixed_bfloat16")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sign"]:
        return sign(argv[1:])
    if argv[:1] == ["scope"]:
        from .scope_refit import main as scope_main

        return scope_main(argv[1:])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from . import pipeline
    from .config import get_preset
    from .run_state import Run, command_line

    cfg = get_preset(args.preset).override(args.set)
    data = Path(args.data)
    if (data / "labels.csv").is_file():  # --data names one dataset folder rather than the folder of datasets
        cfg, data = replace(cfg, datasets=(data.resolve().name,)), data.resolve().parent
    _ = cfg.sources  # refuses, before any work, an exclusion that leaves nothing or names no dataset of the run
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg=cfg, data=data, run_dir=run_dir,
              weights_dir=Path(args.weights_dir) if args.weights_dir else None,
              paper_weights=Path(args.weights) if args.weights else None,
              cache_dir=Path(args.cache_dir), models_dir=Path(args.models_dir), command=command_line(argv),
              cross_data=_cross_data(args))
    run.reproduce = " ".join(["edge-train all", "--preset", cfg.preset, "--data", args.data, "--weights-dir", args.weights_dir]
                             + (["--weights", args.weights] if args.weights else []) + [f"--set {s}" for s in args.set])
    config_name = "config.json" if args.step == "all" else f"config.{args.step}.{cfg.preset}.json"
    (run_dir / config_name).write_text(json.dumps({"config": cfg.to_dict(), "args": vars(args)}, indent=2) + "\n")
    run.log(f"run folder {run_dir}, preset {cfg.preset}: {run.command}")
    run.update("commands", lambda old: (old or []) + [run.command])
    run.record("reproduce", run.reproduce)
    steps = STEPS if args.step == "all" else (args.step,)
    for step in steps:
        pipeline.STEP_FUNCTIONS[step](run)
    return 0


def _cross_data(args: argparse.Namespace) -> list[Path]:
    dirs = [Path(d) for d in (args.cross_data or []) if d != "none"]
    for d in dirs:
        if not (d / "labels.csv").is_file():
            raise SystemExit(f"--cross-data {d}: no labels.csv there (columns file,label[,lesion_id])")
    return dirs


def sign(argv: list[str]) -> int:
    """`edge-train sign`: a signed model bundle (edge_app.bundle); imports no TensorFlow."""
    ap = argparse.ArgumentParser(prog="edge-train sign", description="Pack MODEL.tflite, its .json manifest and the model card "
                                 "into one bundle signed with an Ed25519 key (`edge-app model keygen`), "
                                 "for `edge-app model install`.")
    ap.add_argument("model", metavar="MODEL.tflite", help="the model; its manifest .json beside it")
    ap.add_argument("--key", required=True, metavar="KEY.pem", help="private signing key")
    ap.add_argument("--out", required=True, metavar="BUNDLE.zip", help="the bundle to write")
    ap.add_argument("--card", metavar="FILE", help="model card (default: MODEL_CARD.md beside the model)")
    args = ap.parse_args(argv)
    from ..bundle import model_files_for, write_bundle

    try:
        made = write_bundle(model_files_for(args.model, args.card), args.out, args.key)
    except (OSError, ValueError) as exc:
        print(f"edge-train sign: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {made['bundle']} ({made['bytes'] / 1e6:.2f} MB): {made['model']} {made['version']} "
          f"sha256 {made['sha256'][:12]}..., signed with key {made['key']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
