"""Share of images the scope check flags: generated out-of-scope images vs held-out dermoscopy.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/scope_check.py --shifts --json
    PYTHONPATH=$PWD .venv/bin/python benchmarks/scope_check.py --extra OTHER_DERMATOSCOPE/labels.csv

Everything goes through the device path (decode -> six stages -> LiteRT -> scope
score from the model's sidecar). Out-of-scope images come from
`edge_app.training.ood_images` (flat colours, noise, text, patterns and
keyboards, sample photos, shoot-like skin photos without a dermatoscope);
dermoscopy of every staged source (`training/scope_data.py`: the model's splits for
the sources they name, ISIC 2017's challenge split, ISIC 2020 by patient) from the
validation split (the thresholds were set on it) and the test split (held out from
everything).

Real held-out lesions are also put into lesion-free skin photos (no vignette):
at 10-30% of the frame (a phone photo from a distance) and, reported apart, at
50-70% (a close-up without a dermatoscope).

`--shifts` also screens the test split under each device shift of the model
card's robustness table (JPEG q40, colour casts, blur, rescaling...): another
dermatoscope's pictures must not be pushed out of scope.

The scope check's not-dermoscopy head is fitted on generated images of the same
kinds but other seeds, and on *training* lesions in skin photos
(`training/scope_fit.py`); the manifest's `scope.leave_one_kind_out_flagged` and
`scope.leave_one_source_out_flagged` say how it does on a kind of picture, or a
dermoscopy source, it never saw.

Targets (issue 20): >= 99% of generated out-of-scope images flagged, <= 2% of
test dermoscopy of each source, <= 2% under each shift. Phone photos held out by
patient: the manifest's `scope.net_phone_photos_held_out_patients` (`edge-train scope`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from edge_app.device_path import screen_image
    from edge_app.images import read_image
    from edge_app.labels_csv import read_labels_csv
    from edge_app.runtime import Classifier
    from edge_app.training import ood_images

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "models" / "student_fp16.tflite"))
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data"), help="folder the split CSVs' paths are relative to")
    ap.add_argument("--per-kind", type=int, default=50, help="generated images of each out-of-scope kind (default 50)")
    ap.add_argument("--extra", action="append", default=[], metavar="LABELS.csv",
                    help="other dermoscopy (file paths relative to the CSV's folder), e.g. another dermatoscope")
    ap.add_argument("--shifts", action="store_true", help="also the test split under each shift of the robustness table")
    ap.add_argument("--shift-sample", type=int, default=0, help="shift only this many test images (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from edge_app.training.scope_data import dermoscopy_items

    clf = Classifier(args.model)
    root = Path(args.root)
    items = dermoscopy_items(root, REPO / "models" / "splits")  # every staged source, split as the scope fit splits it
    splits = {s: [{"file": str(i.path.relative_to(root)), "dataset": i.source} for i in items if i.split == s]
              for s in ("val", "test")}
    if not clf.has_scope:
        print(f"error: {Path(args.model).name} has no scope check (no features output / sidecar): re-export it",
              file=sys.stderr)
        return 2

    def in_scope(frame):
        return screen_image(clf, frame).classification.in_scope

    how = {"scope": clf.manifest.scope}
    flagged: dict[str, list[bool]] = defaultdict(list)
    for kind, frame in ood_images.generate(per_kind=args.per_kind, seed=7):
        flagged[f"out_of_scope/{kind}"].append(not in_scope(frame))
    test_frames = []  # decoded once, screened as they are and (--shifts) shifted
    for name, rows in splits.items():
        for r in rows:
            frame = read_image(root / r["file"], min_side=clf.decode_min_side)
            if name == "test" and args.shifts:
                test_frames.append(frame)
            out = not in_scope(frame)
            flagged[f"dermoscopy/{name}"].append(out)
            if r.get("dataset"):  # per source too: another dermatoscope must not be flagged wholesale
                flagged[f"dermoscopy/{name}/{r['dataset']}"].append(out)
    rng = np.random.default_rng(7)
    for i, r in enumerate(splits["test"][: args.per_kind]):  # real held-out lesions photographed without a dermatoscope
        lesion = read_image(root / r["file"])
        flagged["out_of_scope/real_lesion_on_skin_photo"].append(
            not in_scope(ood_images.lesion_on_skin(i, lesion, float(rng.uniform(0.1, 0.3)))))
        flagged["close_up_without_dermatoscope/lesion_50-70pct"].append(
            not in_scope(ood_images.lesion_on_skin(i, lesion, float(rng.uniform(0.5, 0.7)))))
    if args.shifts:
        from edge_app.training.shifts import SHIFTS

        pick = np.random.default_rng(7).permutation(len(test_frames))[: args.shift_sample or len(test_frames)]
        for shift, fn in SHIFTS.items():
            flagged[f"dermoscopy/test_shifted/{shift}"] = [not in_scope(fn(test_frames[i])) for i in pick]
    for extra in args.extra:
        path = Path(extra)
        for r in read_labels_csv(path)[0]:
            flagged[f"dermoscopy/{path.parent.name}"].append(
                not in_scope(read_image(path.parent / r["file"], min_side=clf.decode_min_side)))
    ood = [v for k, vs in flagged.items() if k.startswith("out_of_scope/") for v in vs]
    if not ood or not flagged.get("dermoscopy/test"):
        print("error: no work done: no generated out-of-scope image or no test-split image was screened", file=sys.stderr)
        return 1
    report = {
        "model": Path(args.model).name, "model_sha256": clf.sha256, **how,
        "flagged_share": {k: {"flagged": round(float(np.mean(v)), 4), "n": len(v)} for k, v in flagged.items()},
        "out_of_scope_all": {"flagged": round(float(np.mean(ood)), 4), "n": len(ood)},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['model']} ({clf.sha256[:12]}): share flagged out of scope")
        for k, v in report["flagged_share"].items():
            print(f"  {k:<28} {v['flagged']:>7.1%}  (n {v['n']})")
        print(f"  {'all generated out-of-scope':<28} {report['out_of_scope_all']['flagged']:>7.1%}  (target >= 95%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
