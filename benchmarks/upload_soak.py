"""Uploads over HTTP to the real `edge-app serve`, then a soak: latency, server memory, open files.

    .venv/bin/python benchmarks/upload_soak.py                     # 100 uploads per size, soak to 1,000
    .venv/bin/python benchmarks/upload_soak.py --per-size 20 --soak 200

Starts `edge-app serve` on loopback (upload only, fresh data directory, glibc
arenas capped with MALLOC_ARENA_MAX as systemd/edge-app.service and run.sh do;
`--arena-max 0` for the glibc default) and uploads, one request at a time,
`--per-size` JPEGs of 12 MP (4000x3000), 1280x960 and 200x150 (each a different
synthetic lesion frame). For each size it reports client and in-app (the
server's request time, `timings_ms.end_to_end`) p50 / p99, the device path's
own p50 (`timings_ms.total`; its `decode` and the record's `store` apart), and server RSS after every 100 screenings. Then
it keeps uploading the three sizes in turn up to `--soak` screenings in all,
and reports RSS (VmRSS, VmHWM) and open file descriptors at 100 and at the end.
Every stored image is checked byte for byte against what was sent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from hashlib import sha256
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import ROOT, free_port, multipart, percentile, request, start_server, wait_healthy

SIZES = {"12MP": (4000, 3000), "1280x960": (1280, 960), "200x150": (200, 150)}
VARIANTS = 4  # distinct images per size (generating 12 MP frames is the slow part of this script)


def server_memory(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM (MB) and open file descriptors of the server process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024.0, 1)
    return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"], "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}


def jpegs_of(size: tuple[int, int]) -> list[bytes]:
    from edge_app.bench import synthetic_frame
    from edge_app.images import encode_jpeg

    return [encode_jpeg(synthetic_frame(*size, seed=i), 92) for i in range(VARIANTS)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-size", type=int, default=100, help="uploads of each size, timed one at a time")
    ap.add_argument("--soak", type=int, default=1000, help="screenings in all, the per-size uploads included")
    ap.add_argument("--arena-max", type=int, default=2, help="MALLOC_ARENA_MAX for the server (0: glibc default)")
    ap.add_argument("--threads", type=int, default=4, help="waitress worker threads (the serve default)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (data, server log)")
    args = ap.parse_args()
    if not 1 <= args.per_size <= 1000 or not 100 <= args.soak <= 20000:
        ap.error("--per-size must be 1..1000 and --soak 100..20000")
    model = args.model or str(ROOT / "models" / "student_fp16.tflite")
    uploads = {name: jpegs_of(size) for name, size in SIZES.items()}
    work = Path(tempfile.mkdtemp(prefix="dermaedge-soak-"))
    port = free_port()
    env = {"MALLOC_ARENA_MAX": str(args.arena_max)} if args.arena_max else {}
    log_file = open(work / "serve.log", "w")  # noqa: SIM115 - closed in the finally below
    server = start_server(port, work, model, "none", args.threads, log_file, env)
    done = created = 0
    marks: dict[str, dict] = {}
    problems: list[str] = []

    def screen(name: str, i: int) -> dict:
        nonlocal done, created
        data = uploads[name][i % VARIANTS]
        body = multipart({"operator": "soak", "lesion_ref": f"{name}-{i}"}, data)
        t0 = time.perf_counter()
        status, raw = request(port, "POST", "/api/screenings", *body)
        client_ms = (time.perf_counter() - t0) * 1000.0
        done += 1
        if status != 201:
            problems.append(f"{name} #{i}: HTTP {status} {raw[:200]!r}")
            return {"client_ms": client_ms}
        created += 1
        rec = json.loads(raw)
        if rec["image_sha256"] != sha256(data).hexdigest():
            problems.append(f"{name} #{i}: stored sha256 differs from the upload's")
        if done % 100 == 0:
            marks[str(done)] = server_memory(server.pid)
        t = rec["timings_ms"]
        return {"client_ms": client_ms, "in_app_ms": t["end_to_end"], "device_ms": t["total"], "decode_ms": t["decode"],
                "store_ms": t["store"]}

    try:
        if not wait_healthy(server, port, work):
            return 2
        marks["start"] = server_memory(server.pid)
        per_size = {}
        for name in SIZES:
            rows = [screen(name, i) for i in range(args.per_size)]
            rec = json.loads(request(port, "GET", "/api/screenings?limit=1")[1])["screenings"][0]
            stored = request(port, "GET", rec["image_url"])[1]
            if stored != uploads[name][(args.per_size - 1) % VARIANTS]:
                problems.append(f"{name}: the stored file is not byte-identical to the upload")
            per_size[name] = {
                "uploads": len(rows), "bytes": len(uploads[name][0]),
                **{f"{k}_{q}": round(percentile([r[k] for r in rows if k in r], q), 1)
                   for k in ("client_ms", "in_app_ms", "device_ms", "decode_ms", "store_ms") for q in (50, 99)},
                "server_after": server_memory(server.pid),
            }
        i = 0
        while done < args.soak:
            name = list(SIZES)[i % len(SIZES)]
            screen(name, i)
            i += 1
        marks["end"] = server_memory(server.pid)
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(30)
        rss_100, rss_end = marks["100"]["rss_mb"], marks["end"]["rss_mb"]
        summary = {
            "malloc_arena_max": args.arena_max or "glibc default",
            "per_size": per_size,
            "soak": {"screenings": done, "rss_mb_at_100": rss_100, f"rss_mb_at_{done}": rss_end,
                     "rss_change_pct": round((rss_end - rss_100) / rss_100 * 100.0, 1),
                     "open_fds_at_100": marks["100"]["open_fds"], f"open_fds_at_{done}": marks["end"]["open_fds"],
                     "peak_rss_mb": marks["end"]["peak_rss_mb"], "rss_every_100": {k: v["rss_mb"] for k, v in marks.items()}},
            "server_exit": exit_code, "problems": len(problems), "work_dir": str(work) if args.keep else None,
        }
        print(json.dumps(summary, indent=2))
        for p in problems[:20]:
            print("PROBLEM", p, file=sys.stderr)
        if not created:
            print("PROBLEM no work done: no upload was stored", file=sys.stderr)
            return 1
        return 0 if not problems and exit_code == 0 else 1
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log_file.close()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
