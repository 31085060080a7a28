"""`edge-bench`: latency of the device path, stage by stage and end to end.

Modelled on TFLite's benchmark_model: model init (load + checks) and the first
(cold) screening are reported apart from the warm runs; then N timed runs (or S
seconds) give count / mean / std / min / p50 / p90 / p99 / max per stage, the
same statistics as the app's /api/stats. Every screening goes through
`device_path`, the code the app, `edge-app classify` and `evaluate` run:

    --source file    image bytes -> scaled decode -> quality gate -> six stages -> runtime
    --source array   a camera frame (BGR array) -> scale -> quality gate -> six stages -> runtime

Each input's result carries the device path's decision (`decisions.decide`, at the model's own
threshold: the one `edge-app classify` prints and the app stores) and the quality gate's flags.

`--compare` times, in the same run, the naive order (full-resolution decode,
quality gate, hair removal and the other stages at full resolution, then
resize) and the same network through Keras `predict` when TensorFlow is
installed. Peak RSS is the device path's: synthetic frames are made in a
child process, and the naive order and Keras run after it is read.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .device_path import DeviceResult

DEFAULT_FRAMES = ("200x150", "1280x960", "4056x3040")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
NAIVE_ORDER = ("crop", "dehair", "denoise", "contrast", "resize", "normalize")  # resize last: the slow way
NAIVE_BUDGET_S = 15.0  # per input and source: a 12 MP frame takes seconds per naive run


@dataclass
class BenchInput:
    name: str  # path below --images DIR, or "synthetic WxH"
    data: bytes  # the file's bytes
    frame: str  # "WxH" of the image


@dataclass
class Result:
    input: BenchInput
    source: str
    threads: int
    first_ms: float
    samples: list[dict[str, float]]
    probability: float  # P(malignant), as the app, classify and evaluate report it
    decision: dict[str, Any]  # the device path's decision (decisions.Decision.to_dict()) and the quality flags
    peak_rss_mb: float
    compare: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs


def frame_size(text: str) -> tuple[int, int]:
    """argparse type for WxH."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 1280x960)") from None
    if not (16 <= w <= 20000 and 16 <= h <= 20000):
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be 16 to 20000 px")
    return w, h


def thread_counts(text: str) -> list[int]:
    """argparse type for 1,2,4."""
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of thread counts (e.g. 1,2,4)") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: thread counts must be 1 or more")
    return list(dict.fromkeys(counts))


def synthetic_frame(width: int, height: int, seed: int = 0):
    """A dermoscopy-like BGR frame: dark vignette, skin, a pigmented lesion, hairs."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    r = min(width, height) // 2
    cv2.circle(img, (width // 2, height // 2), int(r * 1.1), (150, 170, 215), -1)
    cv2.ellipse(img, (width // 2, height // 2), (r // 3, r // 4), 20, 0, 360, (60, 55, 95), -1)
    for _ in range(6):
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p2 = tuple(int(v) for v in rng.integers(0, [width, height]))
        cv2.line(img, p1, p2, (30, 25, 20), max(1, width // 400))
    noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def synthetic_jpeg(size: tuple[int, int], quality: int = 92) -> bytes:
    from .images import encode_jpeg

    return encode_jpeg(synthetic_frame(*size), quality)


def synthetic_inputs(sizes: list[tuple[int, int]]) -> list[BenchInput]:
    """JPEGs of synthetic frames, made in a child process so that a 12 MP frame's
    generation does not count into the device path's peak RSS."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        jpegs = list(pool.map(synthetic_jpeg, sizes))
    return [BenchInput(f"synthetic {w}x{h}", jpeg, f"{w}x{h}") for (w, h), jpeg in zip(sizes, jpegs)]


def image_inputs(root: Path) -> list[BenchInput]:
    """Every image file below `root` (recursive), keyed by its path below `root`."""
    from PIL import Image

    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        data = path.read_bytes()
        try:
            with Image.open(path) as im:
                frame = f"{im.size[0]}x{im.size[1]}"
        except Exception:  # noqa: BLE001 - the device path reports it properly below
            frame = "?"
        out.append(BenchInput(path.relative_to(root).as_posix(), data, frame))
    return out


# --------------------------------------------------------------------------- timing


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def timed_runs(run: Callable[[], DeviceResult], warmup: int, runs: int | None,
               seconds: float | None) -> tuple[float, list[dict[str, float]], DeviceResult]:
    """(first call ms, stage timings of the timed calls, the last result): `runs` calls, or as many as fit in `seconds`."""
    t0 = time.perf_counter()
    run()
    first_ms = (time.perf_counter() - t0) * 1000.0
    for _ in range(warmup):
        run()
    samples: list[dict[str, float]] = []
    deadline = time.perf_counter() + seconds if seconds else None
    while (len(samples) < runs) if deadline is None else (time.perf_counter() < deadline or not samples):
        result = run()
        samples.append(result.timings_ms)
    return first_ms, samples, result


def with_heatmap(result: DeviceResult) -> DeviceResult:
    """Stage `explain`: the heatmap's whole extra cost, i.e. the class activation map and the analysed square
    (inside classify, so also in `total`) plus rendering the PNG the app serves (on request, outside `total`)."""
    from .explain import overlay_png

    c = result.classification
    if c.explain is not None:
        t0 = time.perf_counter()
        overlay_png(c.explain["cam"])
        c.timings_ms["explain"] = round(c.timings_ms.get("explain", 0.0) + (time.perf_counter() - t0) * 1000.0, 3)
    return result


def stage_stats(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    from .latency import LatencyStats

    stats = LatencyStats(window=max(1, len(samples)))
    for s in samples:
        stats.add(s)
    return stats.snapshot()


def naive_screen(clf, data: bytes | None, frame) -> float:
    """The naive order, end to end (ms): full-resolution decode (file) or frame, quality gate,
    every stage at full resolution, resize last, inference."""
    from .images import decode_image
    from .quality import assess

    t0 = time.perf_counter()
    image = decode_image(data) if data is not None else frame
    assess(image)
    for stage in NAIVE_ORDER:
        image = clf.preprocessor.stage(stage, image)
    clf.predict(image)
    return (time.perf_counter() - t0) * 1000.0


def keras_predict_ms(manifest, keras_model: str | None, weights_dir: Path, runs: int) -> tuple[list[float], str]:
    """Keras `predict` on one model input, `runs` times: (samples, which model). Raises ImportError
    without TensorFlow, ValueError when the network cannot be rebuilt."""
    import importlib.util

    import numpy as np

    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError("TensorFlow is not installed")
    import keras

    if keras_model:
        model, what = keras.saving.load_model(keras_model, compile=False), f"{keras_model}"
    else:
        from .training.student import build_student, with_softmax

        student = manifest.provenance.get("student", {}) if isinstance(manifest.provenance, dict) else {}
        blocks, params = int(student.get("blocks", 7)), student.get("params")
        model = with_softmax(build_student(manifest.input_size, blocks, arch_dir=weights_dir))
        if params is not None and model.count_params() != int(params):
            raise ValueError(f"rebuilt student has {model.count_params()} parameters, the manifest says {params}: "
                             "pass --keras-model PATH")
        what = (f"student rebuilt from the manifest ({blocks} blocks, {model.count_params()} parameters as shipped; "
                "predict latency depends on the graph, not the weight values)")
    x = np.zeros((1, manifest.input_size, manifest.input_size, 3), np.float32)
    for _ in range(5):
        model.predict(x, verbose=0)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict(x, verbose=0)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples, what


# --------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge-bench", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default=None, help="the .tflite (manifest beside it); default: the shipped student")
    ap.add_argument("--images", metavar="DIR", type=Path,
                    help="time every image file below DIR (recursive; results keyed by path below DIR)")
    ap.add_argument("--frame", metavar="WxH", type=frame_size, action="append",
                    help=f"a synthetic dermoscopy frame of this size (repeatable; default {', '.join(DEFAULT_FRAMES)} "
                         "when --images is not given)")
    how_long = ap.add_mutually_exclusive_group()
    how_long.add_argument("--runs", type=int, default=100, metavar="N",
                          help="timed screenings per input, source and thread count")
    how_long.add_argument("--seconds", type=float, metavar="S",
                          help="time each input, source and thread count for S seconds instead of N runs")
    ap.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed screenings after the first (cold) one")
    ap.add_argument("--threads", type=thread_counts, default=[2], metavar="1,2,4",
                    help="interpreter thread counts to sweep (comma-separated)")
    ap.add_argument("--source", choices=("file", "array"), action="append",
                    help="file: image bytes, decode inside total (uploads); array: an already decoded frame (camera). "
                         "Repeatable; default: file with --images, both for synthetic frames")
    ap.add_argument("--compare", action="store_true",
                    help="also time the naive order (full resolution, resize last) "
                         "and Keras predict (when TensorFlow is installed)")
    ap.add_argument("--keras-model", metavar="PATH", help="with --compare: a saved Keras model of the student "
                    "(default: rebuild the shipped student's network from the manifest)")
    ap.add_argument("--weights-dir", type=Path, default=Path("../shared/weights"),
                    help="with --compare: where the EfficientNet-Lite0 layout file for rebuilding the student is")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or (args.seconds is not None and args.seconds <= 0):
        print("error: --runs must be 1 or more, --warmup 0 or more, --seconds above 0", file=sys.stderr)
        return 2
    from .device_path import screen_bytes, screen_image
    from .images import ImageDecodeError, decode
    from .runtime import DEFAULT_MODEL, Classifier, ModelError, load_interpreter_class

    model_path = Path(args.model or DEFAULT_MODEL)
    inputs: list[BenchInput] = []
    if args.images is not None:
        if not args.images.is_dir():
            print(f"error: --images {args.images}: not a folder", file=sys.stderr)
            return 2
        inputs += image_inputs(args.images)
        if not inputs:
            print(f"error: --images {args.images}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) below it",
                  file=sys.stderr)
            return 2
    if args.frame or args.images is None:
        inputs += synthetic_inputs(args.frame or [frame_size(f) for f in DEFAULT_FRAMES])
    sources = list(dict.fromkeys(args.source or (["file"] if args.images is not None else ["file", "array"])))

    load_interpreter_class()  # the runtime's import is start-up, not model init
    classifiers, init_ms = {}, {}
    for n in args.threads:
        t0 = time.perf_counter()
        try:
            classifiers[n] = Classifier(model_path, num_threads=n)
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
        init_ms[n] = (time.perf_counter() - t0) * 1000.0
    any_clf = classifiers[args.threads[0]]

    results: list[Result] = []
    errors: list[str] = []
    runs = None if args.seconds else args.runs
    for source in sources:  # files first: their peak RSS is read before any full-resolution array exists
        for item in inputs:
            frame = None
            if source == "array":
                try:
                    frame = decode(item.data).bgr
                except ImageDecodeError as exc:
                    errors.append(f"{item.name}: {exc}")
                    continue
            for n, clf in classifiers.items():
                if source == "file":
                    def run(clf=clf, data=item.data):
                        return with_heatmap(screen_bytes(clf, data, explain=clf.has_scope))
                else:
                    def run(clf=clf, frame=frame):
                        return with_heatmap(screen_image(clf, frame, explain=clf.has_scope))
                try:
                    first, samples, last = timed_runs(run, args.warmup, runs, args.seconds)
                except (ImageDecodeError, ValueError) as exc:
                    errors.append(f"{item.name}: {exc}")
                    break
                decision = last.decision.to_dict() | {"quality_flags": list(last.quality.flags)}
                results.append(Result(item, source, n, first, samples, last.probability, decision, peak_rss_mb()))
            del frame
    device_rss = {s: max((r.peak_rss_mb for r in results if r.source == s), default=0.0) for s in sources}

    if args.compare:
        _compare(args, results, any_clf, classifiers)

    report = _report(model_path, any_clf, args.threads, init_ms, results, device_rss, errors)
    print(json.dumps(report, indent=2) if args.json else _human(report))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0


def _compare(args: argparse.Namespace, results: list[Result], clf, classifiers: dict) -> None:
    """Naive order and Keras predict beside each device-path result, in this same run."""
    import statistics

    from .images import decode

    naive_ms: dict[tuple[str, str], list[float]] = {}  # the naive order does not depend on the interpreter threads
    for r in results:
        key = (r.input.name, r.source)
        if key not in naive_ms:
            data = r.input.data if r.source == "file" else None
            frame = decode(r.input.data).bgr if r.source == "array" else None
            wanted, budget_end = max(3, min(len(r.samples) // 10, 20)), time.perf_counter() + NAIVE_BUDGET_S
            naive_ms[key] = []
            while len(naive_ms[key]) < wanted and (not naive_ms[key] or time.perf_counter() < budget_end):
                naive_ms[key].append(naive_screen(classifiers[r.threads], data, frame))
            del frame
        naive = statistics.median(naive_ms[key])
        device = statistics.median(s["total"] for s in r.samples)
        r.compare = {"naive_total_p50": round(naive, 3), "naive_runs": len(naive_ms[key]),
                     "device_total_p50": round(device, 3), "naive_over_device": round(naive / device, 2)}
    try:
        keras_samples, what = keras_predict_ms(clf.manifest, args.keras_model, args.weights_dir, max(20, min(args.runs, 100)))
        keras_p50, note = statistics.median(keras_samples), what
    except (ImportError, ValueError, OSError) as exc:
        keras_p50, note = None, f"Keras predict not timed: {exc}"
    for r in results:
        litert = statistics.median(s["inference"] for s in r.samples)
        r.compare |= {"keras_predict_p50": None if keras_p50 is None else round(keras_p50, 3),
                      "litert_inference_p50": round(litert, 3),
                      "keras_over_litert": None if keras_p50 is None else round(keras_p50 / litert, 2),
                      "keras_model": note}


def explain_share(samples: list[dict[str, float]]) -> dict[str, float]:
    """The heatmap's p50 as a share of the screening's p50 total (target < 10%); empty without a heatmap head."""
    import statistics

    if not samples or "explain" not in samples[0]:
        return {}
    return {"explain_share_of_total": round(statistics.median(s["explain"] for s in samples)
                                            / statistics.median(s["total"] for s in samples), 4)}


def _report(model_path: Path, clf, threads: list[int], init_ms: dict[int, float], results: list[Result],
            device_rss: dict[str, float], errors: list[str]) -> dict[str, Any]:
    common = {"runtime": clf.runtime_name, "model_sha256": clf.sha256}
    return {
        "model": model_path.name,
        "model_size_bytes": model_path.stat().st_size,
        **common,
        "input_size": clf.manifest.input_size,
        "decode_min_side": clf.decode_min_side,
        "threads": threads,
        "init_ms": {str(n): round(ms, 3) for n, ms in init_ms.items()},
        "peak_rss_mb": device_rss.get("file") or device_rss.get("array", 0.0),
        "peak_rss_mb_by_source": device_rss,
        "results": [
            {"input": r.input.name, "frame": r.input.frame, "source": r.source, "threads": r.threads, **common,
             "init_ms": round(init_ms[r.threads], 3), "first_inference_ms": round(r.first_ms, 3),
             "probability": r.probability, **r.decision, "peak_rss_mb": r.peak_rss_mb, "stages": stage_stats(r.samples),
             **explain_share(r.samples), **({"compare": r.compare} if r.compare else {})}
            for r in results
        ],
        "errors": errors,
    }


def _human(r: dict) -> str:
    out = [
        (f"model {r['model']} ({r['model_size_bytes'] / 1024:.1f} KB, sha256 {r['model_sha256'][:12]}), runtime {r['runtime']}, "
         f"input {r['input_size']} px, decode to a {r['decode_min_side']} px short side"),
        "init (load + sha256 + self-test + warm-up): "
        + ", ".join(f"{ms:.1f} ms at {n} threads" for n, ms in r["init_ms"].items())
        + f"; peak RSS of the device path {r['peak_rss_mb']} MB",
    ]
    for res in r["results"]:
        stages = res["stages"]
        out.append(f"\n{res['input']} ({res['frame']}), source {res['source']}, {res['threads']} threads: "
                   f"first screening {res['first_inference_ms']:.1f} ms (cold); decision {res['decision']}"
                   + ("" if res["verdict"] else f" (no verdict: {', '.join(res['decision_flags'])})"))
        out.append(f"  {'stage':<12}" + "".join(f"{k:>9}" for k in ("mean", "std", "min", "p50", "p90", "p99", "max"))
                   + f"   (ms, {stages['total']['count']} warm runs)")
        for stage, s in stages.items():
            out.append(f"  {stage:<12}" + "".join(f"{s[k]:>9.2f}" for k in ("mean", "std", "min", "p50", "p90", "p99", "max")))
        if "explain_share_of_total" in res:
            out.append(f"  heatmap (explain) p50 = {res['explain_share_of_total']:.1%} of the total p50 (target < 10%)")
        c = res.get("compare")
        if c:
            out.append(f"  naive order (full resolution, resize last): p50 {c['naive_total_p50']:.1f} ms = "
                       f"{c['naive_over_device']:.1f}x the device path ({c['naive_runs']} runs)")
            if c["keras_predict_p50"] is not None:
                out.append(f"  Keras predict p50 {c['keras_predict_p50']:.1f} ms = "
                           f"{c['keras_over_litert']:.1f}x LiteRT inference "
                           f"({c['litert_inference_p50']:.2f} ms)")
            else:
                out.append(f"  {c['keras_model']}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
