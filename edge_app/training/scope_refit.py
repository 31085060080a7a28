"""`edge-train scope`: refit the scope check of an exported model, through the device runtime.

    edge-train scope models/student_fp16.tflite --data ../shared/data

The `.tflite` is not touched (its sha256, probabilities, threshold and every
classification figure of the card stay as they are). Its sidecar gets a new
scope check (`training/scope_fit.py`): features come from the model itself,
run by LiteRT on the device path's tensors, so no TensorFlow is needed. The
manifest gets the sidecar's new sha256, the `scope` block and the self-test's
scope scores; the model is then loaded as the app would load it, and the old
files are put back if that fails. The model card beside it (`MODEL_CARD.md`)
gets its scope-check section rewritten from the new block.

Images: validation = `<splits>/val.csv` (the threshold's data); training = every
row of each dataset's `labels.csv` that is in neither `val.csv` nor `test.csv`
(the splits are lesion-grouped, so this is the training split), a seeded sample
of `--train-sample`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from ..labels_csv import read_labels_csv


def read_rows(path: Path) -> list[dict[str, str]]:
    return read_labels_csv(path)[0]


def training_rows(data: Path, splits: Path) -> list[dict[str, str]]:
    """Rows of the split CSVs' datasets that are in neither val nor test; `file` made relative to `data`."""
    held = {r["file"] for s in ("val", "test") for r in read_rows(splits / f"{s}.csv")}
    datasets = sorted({r.get("dataset", "") for r in read_rows(splits / "val.csv")})
    rows = []
    for name in datasets:
        labels = data / name / "labels.csv" if name else data / "labels.csv"
        if not labels.is_file():
            raise FileNotFoundError(f"{labels} not found: --data must hold the datasets the splits name ({', '.join(datasets)})")
        for r in read_rows(labels):
            rel = f"{name}/{r['file']}" if name else r["file"]
            if rel not in held:
                rows.append({**r, "file": rel, "dataset": name})
    return rows


def refit(model_path: Path, data: Path, splits: Path, train_sample: int = 2000, seed: int = 0,
          log=print, command: str = "") -> dict:
    """Refit and write the sidecar + manifest of `model_path`; returns the new `scope` block."""
    from ..fileio import sha256_file, write_atomic
    from ..images import read_image
    from ..manifest import Manifest, aux_path_for, manifest_path_for, selftest_input
    from ..runtime import Classifier, ModelError
    from ..sidecar import Sidecar
    from . import scope_fit
    from .card import replace_scope_section

    clf = Classifier(model_path)
    if clf.sidecar is None:
        raise ModelError(f"{model_path.name} has no features output and sidecar: re-export it with `edge-train export`")
    feature_fn = lambda batch: clf.predict_outputs(batch)[1]
    train = training_rows(data, splits)
    pick = np.sort(np.random.default_rng(seed).permutation(len(train))[:train_sample])
    train = [train[i] for i in pick]
    val = read_rows(splits / "val.csv")
    log(f"reading {len(train)} training and {len(val)} validation images from {data}")
    train_frames = [read_image(data / r["file"], min_side=clf.decode_min_side) for r in train]
    val_frames = (read_image(data / r["file"], min_side=clf.decode_min_side) for r in val)
    log("describing training, augmented, generated and validation images through the model")
    data_set = scope_fit.build_set(train_frames, [r.get("dataset", "") for r in train], val_frames,
                                   [r.get("dataset", "") for r in val], clf.preprocessor, clf.decode_min_side,
                                   feature_fn, seed=seed)
    check, block = scope_fit.fit_scope_check(data_set)
    if command:
        block["fitted_by"] = command  # the .tflite came from the training command; this scope check from this one
    log(f"validation flagged {block['val_flagged']:.1%} {block['val_flagged_by_dataset']}; "
        f"leave one kind out: {block['leave_one_kind_out_flagged']}; "
        f"leave one source out: {block.get('leave_one_source_out_flagged')}")

    aux_path, manifest_path = aux_path_for(model_path), manifest_path_for(model_path)
    old = {p: p.read_bytes() for p in (aux_path, manifest_path)}
    manifest = Manifest.load(manifest_path)
    aux_bytes = Sidecar(check, clf.sidecar.cam).to_bytes()
    cases = []
    for case in manifest.selftest["cases"]:
        _, features = clf.predict_outputs(selftest_input(case["pattern"], manifest.input_size))
        cases.append({**case, "scope_score": round(float(check.score(features)[0]), 5)})
    try:
        write_atomic(aux_path, aux_bytes)
        manifest.aux = {**manifest.aux, "sha256": sha256_file(aux_path), "size_bytes": aux_path.stat().st_size}
        manifest.scope = block
        manifest.selftest = {**manifest.selftest, "cases": cases}
        write_atomic(manifest_path, (json.dumps(manifest.to_dict(), indent=2) + "\n").encode())
        Classifier(model_path)  # as the app loads it: sha256s, self-test, scope self-test
    except BaseException:
        for path, content in old.items():
            write_atomic(path, content)
        raise
    if replace_scope_section(model_path.parent / "MODEL_CARD.md", block):
        log(f"updated the scope-check section of {model_path.parent / 'MODEL_CARD.md'}")
    return block


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edge-train scope", description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="an exported .tflite with its .json and .aux.npz beside it")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder the split CSVs' paths are relative to")
    ap.add_argument("--splits", type=Path, default=None, help="folder with val.csv and test.csv (default: splits/ beside the model)")
    ap.add_argument("--train-sample", type=int, default=2000, help="training images (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from ..runtime import ModelError

    splits = args.splits or args.model.parent / "splits"
    try:
        block = refit(args.model, args.data, splits, args.train_sample, args.seed,
                      log=lambda m: print(f"edge-train scope: {m}", file=sys.stderr),
                      command=shlex.join(["edge-train", "scope", *argv]))
    except (ModelError, FileNotFoundError, ValueError) as exc:
        print(f"edge-train scope: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(block, indent=2))
    return 0
