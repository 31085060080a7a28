"""Load: N concurrent capture/upload requests against the real `edge-app serve` (waitress) on loopback.

    .venv/bin/python benchmarks/load.py                 # 50 requests: half camera captures, half uploads
    .venv/bin/python benchmarks/load.py --requests 20

Starts `edge-app serve --host 127.0.0.1` on a free port with an image-folder
camera and a fresh data directory, releases all requests at once (a barrier),
and checks, bounded in count and time (every request has a timeout, the run a
deadline):

- every request is answered (201);
- every request is recorded exactly once (its operator tag appears once in the store);
- none interleaved: each response carries its own request's operator, lesion
  reference and (for uploads) its own image size, and the stored image has the
  sha256 the record names;
- the server shuts down cleanly (SIGTERM, exit 0) and the database passes integrity_check.

Reports client-side latency p50 / p90 / p99 / max and throughput under that load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from hashlib import sha256
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # never anything else: this script only loads the local machine


def lesion(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(np.full((height, width, 3), (150, 175, 215), np.float32) + rng.normal(0, 7, (height, width, 1)), 0, 255)
    img = img.astype(np.uint8)
    cv2.ellipse(img, (width // 2, height // 2), (width // 6, height // 6), seed * 17.0, 0, 360, (60, 55, 95), -1)
    return img


def multipart(fields: dict[str, str], image: bytes | None) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if image is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="up.jpg"\r\n'
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(port: int, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
            timeout: float = 120.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(port: int, work: Path, model: str, camera: str, threads: int, log_file,
                 env: dict | None = None) -> subprocess.Popen:
    """`edge-app serve` on loopback with a fresh data directory under `work`."""
    env = dict(os.environ, EDGE_APP_ACCESS_TOKEN="") | (env or {})
    return subprocess.Popen([sys.executable, "-m", "edge_app", "serve", "--host", HOST, "--port", str(port),
                             "--camera", camera, "--data-dir", str(work / "data"), "--model", model,
                             "--threads", str(threads)], stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def wait_healthy(server: subprocess.Popen, port: int, work: Path, timeout_s: float = 120.0) -> bool:
    """True once /healthz answers 200; False (with the server log on stderr) if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if request(port, "GET", "/healthz", timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            print((work / "serve.log").read_text(), file=sys.stderr)
            print("server did not become healthy", file=sys.stderr)
            return False
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole burst")
    parser.add_argument("--threads", type=int, default=4, help="waitress worker threads (the serve default)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    if not 1 <= args.requests <= 500:
        parser.error("--requests must be 1..500")
    model = args.model or str(next(p for p in (ROOT / "models" / "student_fp16.tflite",
                                                ROOT / "tests" / "fixtures" / "tiny_fp16.tflite") if p.is_file()))
    work = Path(tempfile.mkdtemp(prefix="dermaedge-load-"))
    frames = work / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.jpg"), lesion(800, 600, 100 + i))
    port = free_port()
    log_file = open(work / "serve.log", "w")  # noqa: SIM115 - closed in the finally below
    server = start_server(port, work, model, f"folder:{frames}", args.threads, log_file)
    try:
        if not wait_healthy(server, port, work):
            return 2

        run = secrets.token_hex(4)
        jobs = []
        for i in range(args.requests):
            fields = {"operator": f"load-{run}-{i}", "lesion_ref": f"R{i}"}
            if i % 2:  # upload with a size unique to this request
                width = 640 + 8 * i
                image = cv2.imencode(".jpg", lesion(width, 480, i))[1].tobytes()
                jobs.append({"i": i, "kind": "upload", "fields": fields, "width": width, "body": multipart(fields, image)})
            else:
                jobs.append({"i": i, "kind": "capture", "fields": fields, "body": multipart(fields, None)})
        barrier = threading.Barrier(len(jobs))

        def fire(job: dict) -> None:
            barrier.wait()
            t = time.perf_counter()
            try:
                status, body = request(port, "POST", "/api/screenings", *job["body"])
                job["status"], job["response"] = status, json.loads(body)
            except Exception as exc:  # noqa: BLE001 - counted as unanswered
                job["status"], job["response"] = None, {"error": repr(exc)}
            job["ms"] = (time.perf_counter() - t) * 1000.0

        t0 = time.perf_counter()
        threads = [threading.Thread(target=fire, args=(job,), daemon=True) for job in jobs]
        for t in threads:
            t.start()
        end = time.monotonic() + args.deadline
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        wall = time.perf_counter() - t0

        problems = []
        answered = [j for j in jobs if j.get("status") is not None]
        created = [j for j in answered if j["status"] == 201]
        for j in jobs:
            if j.get("status") != 201:
                problems.append(f"request {j['i']} ({j['kind']}): status {j.get('status')} {j.get('response')}")
                continue
            r = j["response"]
            if r["operator"] != j["fields"]["operator"] or r["lesion_ref"] != j["fields"]["lesion_ref"]:
                problems.append(f"request {j['i']}: got another request's record {r['operator']}/{r['lesion_ref']}")
            if j["kind"] == "upload" and (r["source"] != "upload" or r["image_width"] != j["width"]):
                problems.append(f"request {j['i']}: stored image {r['image_width']} px wide, sent {j['width']}")
            if j["kind"] == "capture" and r["source"] != "folder":
                problems.append(f"request {j['i']}: capture recorded as {r['source']}")
            status, img = request(port, "GET", r["image_url"])
            if status != 200 or sha256(img).hexdigest() != r["image_sha256"]:
                problems.append(f"request {j['i']}: stored image does not match its record")
        status, body = request(port, "GET", "/api/screenings?limit=500")
        stored = [r for r in json.loads(body)["screenings"] if r["operator"].startswith(f"load-{run}-")]
        counts: dict[str, int] = {}
        for r in stored:
            counts[r["operator"]] = counts.get(r["operator"], 0) + 1
        for j in jobs:
            n = counts.get(j["fields"]["operator"], 0)
            if n != 1:
                problems.append(f"request {j['i']}: recorded {n} times")
        stats = json.loads(request(port, "GET", "/api/stats")[1])
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(30)
        if exit_code != 0:
            problems.append(f"server exited with {exit_code} on SIGTERM")
        db = sqlite3.connect(work / "data" / "screenings.sqlite3")
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        db.close()
        if integrity != "ok":
            problems.append(f"integrity_check: {integrity}")

        ms = [j["ms"] for j in created]
        server_e2e = stats["latency_ms"].get("end_to_end", {})
        summary = {
            "requests": len(jobs), "answered": len(answered), "created_201": len(created),
            "recorded_exactly_once": sum(1 for j in jobs if counts.get(j["fields"]["operator"], 0) == 1),
            "interleaved_or_mismatched": sum("another request" in p or "does not match" in p or "px wide" in p for p in problems),
            "waitress_threads": args.threads, "wall_s": round(wall, 2), "throughput_per_s": round(len(created) / wall, 2),
            "latency_ms_client": {"p50": round(percentile(ms, 50), 1), "p90": round(percentile(ms, 90), 1),
                                  "p99": round(percentile(ms, 99), 1), "max": round(max(ms), 1) if ms else None},
            "server_end_to_end_ms": {k: server_e2e.get(k) for k in ("count", "p50", "p99", "max")},
            "server_inference_ms_p50": stats["latency_ms"].get("inference", {}).get("p50"),
            "integrity_check": integrity, "server_exit": exit_code, "problems": len(problems), "work_dir": str(work),
        }
        print(json.dumps(summary, indent=2))
        for p in problems[:20]:
            print("PROBLEM", p, file=sys.stderr)
        if not created:
            print("PROBLEM no work done: no request was stored", file=sys.stderr)
            return 1
        return 0 if not problems else 1
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log_file.close()


if __name__ == "__main__":
    sys.exit(main())
