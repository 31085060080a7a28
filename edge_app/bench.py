"""`edge-bench`: latency of every stage of the device path, and end to end.

Modelled on TFLite's benchmark_model: model init (load + checks) and the first
(cold) screening are reported apart from the warm runs; then N timed runs give
count / mean / p50 / p90 / p99 / max per stage (the same statistics as the
app's /api/stats), plus peak memory. Frames are synthetic at the resolutions
the device meets (dermoscopy 200x150, camera 1280x960, HQ camera 4056x3040) or
the image files given.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .images import decode_image, encode_jpeg
from .latency import LatencyStats, summarize
from .runtime import DEFAULT_MODEL, Classifier, ModelError

DEFAULT_RESOLUTIONS = ("200x150", "1280x960", "4056x3040")


def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A dermoscopy-like BGR frame: dark vignette, skin, a pigmented lesion, hairs."""
    import cv2

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


def bench_frames(jpeg: bytes, classifier: Classifier, runs: int, warmup: int) -> dict:
    stats = LatencyStats(window=runs)
    start = time.perf_counter()
    screen_jpeg(jpeg, classifier)
    first_ms = (time.perf_counter() - start) * 1000.0
    for _ in range(warmup):
        screen_jpeg(jpeg, classifier)
    full_decode = []
    for _ in range(runs):
        stats.add(screen_jpeg(jpeg, classifier))
        t0 = time.perf_counter()
        decode_image(jpeg)
        full_decode.append((time.perf_counter() - t0) * 1000.0)
    # Side by side: what decoding at full resolution would cost instead of DCT-scaled decoding.
    return {"first_screening_ms": round(first_ms, 3), "warm": stats.snapshot(),
            "decode_full_resolution": summarize(full_decode)}


def screen_jpeg(jpeg: bytes, classifier: Classifier) -> dict[str, float]:
    """One screening as the app does it (decode at the model's scale, six stages, inference): timings in ms."""
    t0 = time.perf_counter()
    frame = decode_image(jpeg, min_side=classifier.decode_min_side)
    decode_ms = (time.perf_counter() - t0) * 1000.0
    result = classifier.classify(frame)
    timings = {"decode": decode_ms, **result.timings_ms}
    timings["end_to_end"] = (time.perf_counter() - t0) * 1000.0
    return timings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-bench", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--resolution", action="append", help="WxH of a synthetic frame (repeatable)")
    ap.add_argument("--image", action="append", help="benchmark this image file instead (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    try:
        classifier = Classifier(args.model, num_threads=args.threads)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    init_ms = (time.perf_counter() - t0) * 1000.0

    inputs: list[tuple[str, bytes]] = []
    for path in args.image or []:
        inputs.append((Path(path).name, Path(path).read_bytes()))
    if not inputs:
        for res in args.resolution or DEFAULT_RESOLUTIONS:
            w, h = (int(v) for v in res.lower().split("x"))
            inputs.append((f"synthetic {w}x{h}", encode_jpeg(synthetic_frame(w, h), 92)))

    # Inference alone on the model's own input, as benchmark_model does.
    tensor = classifier.preprocessor.run(synthetic_frame(640, 480)).tensor
    infer = []
    for i in range(args.warmup + args.runs):
        s = time.perf_counter()
        classifier.predict(tensor)
        if i >= args.warmup:
            infer.append((time.perf_counter() - s) * 1000.0)

    report = {
        "model": Path(args.model).name,
        "model_size_bytes": Path(args.model).stat().st_size,
        "runtime": classifier.runtime_name,
        "threads": args.threads,
        "input_size": classifier.manifest.input_size,
        "init_ms": round(init_ms, 3),
        "inference_only": summarize(infer),
        "inputs": {name: bench_frames(jpeg, classifier, args.runs, args.warmup) for name, jpeg in inputs},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    print(json.dumps(report, indent=2) if args.json else _human(report))
    return 0


def _human(r: dict) -> str:
    out = [
        (f"model {r['model']} ({r['model_size_bytes'] / 1024:.1f} KB), runtime {r['runtime']}, "
         f"{r['threads']} threads, input {r['input_size']} px"),
        f"init (load + sha256 + self-test + warm-up): {r['init_ms']:.1f} ms; peak RSS {r['peak_rss_mb']} MB",
        _row("inference only", r["inference_only"]),
    ]
    for name, res in r["inputs"].items():
        out.append(f"\n{name}: first screening {res['first_screening_ms']:.1f} ms (cold)")
        out.append(f"  {'stage':<14}{'mean':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}   (ms, {res['warm']['total']['count']} warm runs)")
        for stage, s in res["warm"].items():
            out.append(_row(stage, s))
        out.append(_row("(decode full)", res["decode_full_resolution"]) + "   <- without DCT-scaled decoding")
    return "\n".join(out)


def _row(name: str, s: dict) -> str:
    return f"  {name:<14}" + "".join(f"{s[k]:>9.2f}" for k in ("mean", "p50", "p90", "p99", "max"))


if __name__ == "__main__":
    sys.exit(main())
