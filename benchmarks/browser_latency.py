"""Tap to result as the technician sees it: the real `edge-app serve` driven by headless Chromium at 800x480 (touch).

    .venv/bin/python benchmarks/browser_latency.py                  # 10 captures, 10 uploads of each size
    .venv/bin/python benchmarks/browser_latency.py --runs 5 --json out.json

Starts `edge-app serve` on loopback with an image-folder camera (1280x960 frames, the scene
changes every 2 s) and a fresh data directory, opens the Screen in /usr/bin/chromium, and measures
with `performance.now()` in the page (static/timing.js), from the tap / the file chosen:

- capture: tap -> verdict painted, tap -> record image drawn; each tap comes right after the scene
  changed on screen, and the frame frozen on screen at the tap must be the frame stored
  (capture-to-shown-frame match, judged on pixels against every scene: must be N of N);
- uploads of a 1280x960 JPEG and of a ~3 MB 12 MP (4000x3000) JPEG: choose -> verdict painted,
  choose -> the chosen image drawn (shrunk by the browser's decoder, preview.js), choose -> the
  record's rendition drawn;
- the live preview's frame rate in the page;
- the server process's and the browser's CPU (% of one core) with nobody watching, with the preview streaming, and with
  the preview plus live guidance; the guidance's own CPU as counted by the server;
- the device path (`total`) and tap -> result (`end_to_end`) medians of captures tapped with the
  preview (and guidance) running and with them off, side by side, alternating tap by tap (3x --runs
  each), with an A/A noise figure; and the same for captures another client posts while the Screen
  streams (a LAN viewer watching).

Prints JSON (and writes it with --json). Exits 1 when it did no work or a target fails:
12 MP choose -> image drawn p50 <= 150 ms, preview >= 10 fps, match N of N, guidance <= 10% of a
core, device path median with the preview running <= 1.10x without.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
CHROMIUM = "/usr/bin/chromium"
HOST = "127.0.0.1"
TARGETS = {"upload_12mp_choose_to_image_p50_ms": 150.0, "preview_fps_min": 10.0, "guidance_cpu_pct_max": 10.0,
           "device_path_ratio_max": 1.10}

SIGNATURE_JS = """() => {
  const c = document.getElementById('live');
  if (!c || !c.width) return null;
  const o = document.createElement('canvas'); o.width = 16; o.height = 12;
  const x = o.getContext('2d'); x.drawImage(c, 0, 0, 16, 12);
  const d = x.getImageData(0, 0, 16, 12).data, g = [];
  for (let i = 0; i < d.length; i += 4) g.push(0.114 * d[i + 2] + 0.587 * d[i + 1] + 0.299 * d[i]);
  return g;
}"""


# ------------------------------------------------------------------ inputs

def real_images(n: int) -> list[np.ndarray]:
    """n dermoscopy images of the shipped test split (isic_archive), when ../shared/data is there."""
    split = ROOT / "models" / "splits" / "test.csv"
    if not split.is_file():
        return []
    with open(split, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("dataset") == "isic_archive"]
    out = []
    for r in rows:
        img = cv2.imread(str(SHARED / r["file"]), cv2.IMREAD_COLOR)
        if img is not None:
            out.append(img)
        if len(out) == n:
            break
    return out


def synthetic(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(np.full((480, 640, 3), (150, 175, 215), np.float32) + rng.normal(0, 7, (480, 640, 1)), 0, 255)
    img = img.astype(np.uint8)
    centre = (160 + 160 * (seed % 3), 140 + 100 * (seed % 2))
    cv2.ellipse(img, centre, (90, 70), seed * 37.0, 0, 360, (60, 55, 95), -1)
    return img


def scenes(n: int) -> list[np.ndarray]:
    """n camera scenes of 1280x960 that look clearly different from one another."""
    found = real_images(n)
    found += [synthetic(i) for i in range(n - len(found))]
    return [cv2.resize(img, (1280, 960), interpolation=cv2.INTER_CUBIC) for img in found]


def jpeg_12mp(source: np.ndarray, path: Path) -> int:
    """A 4000x3000 JPEG of about 3 MB (texture added so it compresses like a camera photo)."""
    big = cv2.resize(source, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).normal(0, 6, big.shape[:2] + (1,)).astype(np.float32)
    big = np.clip(big.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    for quality in (92, 90, 88, 85, 80):
        ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and buf.size <= 3_300_000:
            break
    path.write_bytes(buf.tobytes())
    return int(buf.size)


def signature(bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (16, 12), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()


# ------------------------------------------------------------------ server

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """Every process below `root` (the browser's processes below this script), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def browser_cpu_s(server_pid: int) -> float:
    total = 0.0
    for pid in descendants(os.getpid()):
        if pid == server_pid:
            continue
        try:
            total += cpu_s(pid)
        except OSError:
            pass  # a process that ended meanwhile
    return total


def cpu_pct(pid: int, seconds: float, page) -> tuple[float, float]:
    """The server's and the browser's CPU over `seconds` of wall time, in % of one core."""
    c0, b0, t0 = cpu_s(pid), browser_cpu_s(pid), time.monotonic()
    page.wait_for_timeout(seconds * 1000)
    wall = time.monotonic() - t0
    return round((cpu_s(pid) - c0) / wall * 100.0, 1), round((browser_cpu_s(pid) - b0) / wall * 100.0, 1)


def start_server(work: Path, frames: Path, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, EDGE_APP_ACCESS_TOKEN="", PYTHONUNBUFFERED="1")
    env.pop("EDGE_APP_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge_app", "serve", "--host", HOST, "--port", str(port),
                             "--data-dir", str(work / "data"), "--camera", f"folder:{frames}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if get_json(base + "/healthz", 2)["healthy"]:
                return proc, base
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("edge-app serve did not become healthy; see " + str(work / "serve.log"))


def niced_browser(work: Path, nice: int) -> str:
    """Chromium at the kiosk's niceness (its processes inherit it): a wrapper Playwright starts instead."""
    if not nice:
        return CHROMIUM
    wrapper = work / "chromium-niced"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n {int(nice)} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def post_capture(base: str) -> dict:
    """A capture by HTTP (no browser): what the device path costs, for the side-by-side comparison."""
    req = urllib.request.Request(base + "/api/screenings", data=b"", method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


# ------------------------------------------------------------------ browser steps

def fresh_screen(page, base: str) -> None:
    """The Screen, ready for a new screening (nothing restored from the last one)."""
    if page.url.startswith(base):
        page.evaluate("() => sessionStorage.clear()")
    page.goto(base + "/")
    wait_for(page, "() => document.getElementById('screen').dataset.state === 'ready'")


def wait_for(page, js: str, timeout_s: float = 20.0, arg=None):
    """Poll a page expression (the CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(js, arg) if arg is not None else page.evaluate(js)
        if value:
            return value
        page.wait_for_timeout(15)
    raise TimeoutError(f"page never satisfied {js}")


def measured(page, count_before: int) -> dict:
    wait_for(page, "(n) => window.dermaTiming.history.length > n", arg=count_before)
    return page.evaluate("(n) => { const r = window.dermaTiming.history[n]; return {...r}; }", count_before)


def capture_runs(page, base: str, runs: int, scene_sigs: list[np.ndarray]) -> dict:
    out = {"tap_to_verdict": [], "tap_to_image": [], "match": 0, "runs": 0, "fps": [], "details": []}
    for _ in range(runs):
        fresh_screen(page, base)
        wait_for(page, "() => window.dermaPreview.shownId() > 0")
        page.wait_for_timeout(1500)
        out["fps"].append(page.evaluate("() => window.dermaPreview.fps()"))
        # tap right after the scene changes on screen (the case where a lagging preview showed the old scene)
        first = np.array(page.evaluate(SIGNATURE_JS), np.float32)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            now = np.array(page.evaluate(SIGNATURE_JS), np.float32)
            if np.abs(now - first).mean() > 8:
                break
            page.wait_for_timeout(10)
        n = page.evaluate("() => window.dermaTiming.history.length")
        box = page.locator("#capture").bounding_box()
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        t = measured(page, n)
        shown = np.array(page.evaluate(SIGNATURE_JS), np.float32)  # the canvas stays frozen at the tapped frame
        rec = get_json(f"{base}/api/screenings/{t['record_id']}")
        stored = signature(cv2.imdecode(np.frombuffer(get_bytes(base + rec["image_url"]), np.uint8), cv2.IMREAD_COLOR))
        nearest_shown = int(np.argmin([np.abs(shown - s).mean() for s in scene_sigs]))
        nearest_stored = int(np.argmin([np.abs(stored - s).mean() for s in scene_sigs]))
        ok = nearest_shown == nearest_stored and float(np.abs(shown - stored).mean()) < 6.0
        out["match"] += ok
        out["runs"] += 1
        out["tap_to_verdict"].append(t["verdict"])
        out["tap_to_image"].append(t["image"])
        out["details"].append({"record": t["record_id"], "scene_shown": nearest_shown, "scene_stored": nearest_stored,
                               "pixel_gap": round(float(np.abs(shown - stored).mean()), 2), "match": bool(ok)})
    return out


def upload_runs(page, base: str, runs: int, path: Path) -> dict:
    out = {"choose_to_verdict": [], "choose_to_image": [], "choose_to_record_image": [], "runs": 0}
    for _ in range(runs):
        fresh_screen(page, base)
        n = page.evaluate("() => window.dermaTiming.history.length")
        page.set_input_files("#upload", str(path))
        t = measured(page, n)
        out["choose_to_verdict"].append(t["verdict"])
        out["choose_to_record_image"].append(t["image"])
        # the first image the technician sees: the chosen file drawn shrunk (else the record's rendition)
        out["choose_to_image"].append(t["local_image"] if t.get("local_image") is not None else t["image"])
        out["runs"] += 1
    return out


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    arr = np.asarray(values, np.float64)
    return {"n": int(arr.size), "p50": round(float(np.percentile(arr, 50)), 1), "p90": round(float(np.percentile(arr, 90)), 1)}


def side_by_side_taps(page, base: str, taps: int) -> dict:
    """Captures tapped on the Screen with the live preview and guidance running, and with both switched off
    (their requests refused: Capture then takes a new still), alternating tap by tap so both see the same
    machine load; medians of the device path (`total`) and of the server's tap -> result (`end_to_end`)."""
    keys = ("total", "end_to_end", "scale", "quality", "crop", "resize", "dehair", "denoise", "contrast", "normalize",
            "inference", "scope", "explain", "capture", "encode", "queue_wait", "store")
    runs: dict[bool, dict[str, list[float]]] = {True: {k: [] for k in keys}, False: {k: [] for k in keys}}
    patterns = ("**/api/preview/stream", "**/api/preview/guidance")
    for i in range(taps * 2):
        running = i % 2 == 0
        for pattern in patterns:
            page.unroute(pattern)
            if not running:
                page.route(pattern, lambda route: route.abort())
        fresh_screen(page, base)
        if running:
            wait_for(page, "() => window.dermaPreview.shownId() > 0")
        wait_for(page, "() => !document.getElementById('capture').disabled")
        page.wait_for_timeout(700)
        box = page.locator("#capture").bounding_box()
        with page.expect_response(lambda r: r.url.endswith("/api/screenings") and r.request.method == "POST") as reply:
            page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        timings = reply.value.json()["timings_ms"]
        for k in keys:
            runs[running][k].append(timings.get(k, 0.0))
    for pattern in patterns:
        page.unroute(pattern)
    return medians(runs[True], runs[False])


def medians(with_preview: dict[str, list[float]], without: dict[str, list[float]]) -> dict:
    """Medians side by side, their ratio, and the noise floor: the ratio between the odd and even samples of
    the runs without the preview (an A/A comparison: what this machine's load alone moves a median by)."""
    med = {k: {"with_preview": round(statistics.median(with_preview[k]), 2), "without": round(statistics.median(without[k]), 2)}
           for k in with_preview}
    for k, v in med.items():
        v["ratio"] = round(v["with_preview"] / v["without"], 3) if v["without"] else None
        a, b = without[k][0::2], without[k][1::2]
        v["noise_ratio_without_odd_vs_even"] = (round(statistics.median(a) / statistics.median(b), 3)
                                                 if b and statistics.median(b) else None)
    return med | {"n_each": len(with_preview["total"]),
                  "raw_total": {"with_preview": with_preview["total"], "without": without["total"]}}


def side_by_side(page, base: str, requests: int) -> dict:
    """HTTP captures (another client) with the Screen open (preview + guidance running) and with it closed,
    alternating request by request."""
    keys = ("total", "end_to_end", "capture", "encode", "queue_wait", "store")
    with_preview: dict[str, list[float]] = {k: [] for k in keys}
    without: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(requests * 2):
        running = i % 2 == 0
        if running:
            fresh_screen(page, base)
            wait_for(page, "() => window.dermaPreview.shownId() > 0")
        else:
            page.goto(base + "/history")
        page.wait_for_timeout(500)
        rec = post_capture(base)
        for k in keys:
            (with_preview if running else without)[k].append(rec["timings_ms"].get(k, 0.0))
    return medians(with_preview, without)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="captures and uploads of each size (default 10)")
    parser.add_argument("--cpu-seconds", type=float, default=8.0, help="wall time of each CPU measurement")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--browser-nice", type=int, default=10,
                        help="run Chromium at this niceness, as deploy/kiosk/edge-app-kiosk does (default 10; 0: as is)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is not installed", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="browser-latency-"))
    frames = work / "frames"
    frames.mkdir()
    shots = scenes(4)
    for i, img in enumerate(shots):
        cv2.imwrite(str(frames / f"scene{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    scene_sigs = [signature(cv2.imread(str(frames / f"scene{i}.jpg"))) for i in range(len(shots))]
    medium = work / "upload_1280x960.jpg"
    cv2.imwrite(str(medium), shots[1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    big = work / "upload_12mp.jpg"
    big_bytes = jpeg_12mp(shots[2], big)

    result: dict = {"machine": {"cpus": os.cpu_count(), "load_1min_at_start": round(os.getloadavg()[0], 2),
                                "browser_nice": args.browser_nice},
                    "inputs": {"capture_frame": "1280x960", "upload_1280x960_bytes": medium.stat().st_size,
                               "upload_12mp_bytes": big_bytes}, "targets": TARGETS}
    with open(work / "serve.log", "w") as log:
        server, base = start_server(work, frames, log)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=niced_browser(work, args.browser_nice), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                                                   "--disable-background-networking", "--disable-component-update"])
                ctx = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
                page = ctx.new_page()
                page.goto(base + "/history")
                idle, idle_browser = cpu_pct(server.pid, args.cpu_seconds, page)
                fresh_screen(page, base)
                page.route("**/api/preview/guidance", lambda route: route.abort())
                page.wait_for_timeout(1000)
                stream_only, stream_browser = cpu_pct(server.pid, args.cpu_seconds, page)
                page.unroute("**/api/preview/guidance")
                before = get_json(base + "/api/preview/guidance")
                g0 = time.monotonic()
                with_guidance, guidance_browser = cpu_pct(server.pid, args.cpu_seconds, page)
                after = get_json(base + "/api/preview/guidance")
                guide_s = time.monotonic() - g0
                result["preview_cpu_pct_of_one_core"] = {
                    "nobody_watching": idle, "preview_stream": stream_only, "preview_and_guidance": with_guidance,
                    "preview_cost": round(stream_only - idle, 1), "guidance_cost": round(with_guidance - stream_only, 1),
                    "guidance_checks_per_s": round((after["checks"] - before["checks"]) / guide_s, 2),
                    "guidance_thread_cpu_pct": round((after["cpu_ms_total"] - before["cpu_ms_total"]) / guide_s / 10.0, 1),
                    "browser": {"history_page": idle_browser, "preview_stream": stream_browser,
                                "preview_and_guidance": guidance_browser,
                                "preview_cost": round(stream_browser - idle_browser, 1)},
                }
                result["capture"] = capture_runs(page, base, args.runs, scene_sigs)
                result["upload_1280x960"] = upload_runs(page, base, args.runs, medium)
                result["upload_12mp"] = upload_runs(page, base, args.runs, big)
                result["device_path_side_by_side"] = side_by_side_taps(page, base, taps=3 * args.runs)
                result["device_path_other_client"] = side_by_side(page, base, requests=2 * args.runs)
                browser.close()
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()

    cap = result["capture"]
    report = {
        "capture": {"tap_to_verdict": summary(cap["tap_to_verdict"]), "tap_to_image": summary(cap["tap_to_image"]),
                    "preview_fps_p50": round(statistics.median(cap["fps"]), 1) if cap["fps"] else 0.0,
                    "frame_match": f"{cap['match']} of {cap['runs']}", "details": cap["details"]},
    }
    for kind in ("upload_1280x960", "upload_12mp"):
        r = result[kind]
        report[kind] = {k: summary(r[k]) for k in ("choose_to_verdict", "choose_to_image", "choose_to_record_image")}
    cpu = result["preview_cpu_pct_of_one_core"]
    guidance_pct = max(cpu["guidance_cost"], cpu["guidance_thread_cpu_pct"])
    side = result["device_path_side_by_side"]
    checks = {
        "did_work": cap["runs"] == args.runs and result["upload_12mp"]["runs"] == args.runs,
        "upload_12mp_choose_to_image_p50": report["upload_12mp"]["choose_to_image"].get("p50", 1e9)
        <= TARGETS["upload_12mp_choose_to_image_p50_ms"],
        "preview_fps": report["capture"]["preview_fps_p50"] >= TARGETS["preview_fps_min"],
        "frame_match_all": cap["match"] == cap["runs"] and cap["runs"] > 0,
        "guidance_cpu": guidance_pct <= TARGETS["guidance_cpu_pct_max"],
        "device_path_within_10pct": (side["total"]["ratio"] or 9) <= TARGETS["device_path_ratio_max"],
    }
    out = {"inputs": result["inputs"], "machine": result["machine"], "targets": TARGETS, "report": report,
           "preview_cpu_pct_of_one_core": cpu, "device_path_side_by_side": side,
           "device_path_other_client": result["device_path_other_client"], "checks": checks,
           "passed": all(checks.values())}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
