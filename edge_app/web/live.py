"""The live screen's extra channels: the preview stream, live guidance, and the browser's own timings.

- `GET /api/preview/stream`: an MJPEG stream (`multipart/x-mixed-replace`) of the capture
  loop's frames, each part with an `X-Frame-Id` header; static/preview.js draws it and sends
  the id of the frame on screen with Capture (`frame_id`), so the analysed frame is the one seen.
- `GET /api/preview/guidance`: what the quality gate and scope check say about the newest frame.
- `POST /api/timings`: tap -> verdict -> image drawn, measured in the browser (static/timing.js);
  `browser_stats()` feeds the Performance page beside the server's figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..guidance import LiveGuide
from ..latency import LatencyStats
from . import get_service
from .errors import ApiError
from .records import record_or_404

bp = Blueprint("live", __name__)

BOUNDARY = "frame"
STREAM_MAX_S = 120.0  # a stream ends after this and the page opens a new one: no thread is held forever
FRAME_WAIT_S = 2.0
BUSY_PAUSE_S = 0.02
MAX_STREAMS = 2  # each stream holds a server thread (waitress has 4 by default): captures must never queue behind them
_STREAMS = "dermaedge.preview_streams"
BROWSER_KEYS = {  # reported key -> (label on the Performance page)
    "tap_to_verdict": "tap → verdict shown",
    "tap_to_image": "tap → image drawn",
}
KINDS = ("capture", "upload")
_BROWSER = "dermaedge.browser_timings"
_GUIDE = "dermaedge.guide"
_guide_lock = threading.Lock()


@bp.record_once
def _init(state) -> None:
    state.app.extensions[_BROWSER] = LatencyStats()
    state.app.extensions[_STREAMS] = threading.BoundedSemaphore(MAX_STREAMS)


def browser_stats() -> dict[str, dict[str, dict[str, float]]]:
    """{"capture": {"tap_to_verdict": {count, p50, ...}, ...}, "upload": {...}} from the browsers' reports."""
    stats: LatencyStats | None = current_app.extensions.get(_BROWSER)
    snap = stats.snapshot() if stats is not None else {}
    return {kind: {key: snap[f"{kind}.{key}"] for key in BROWSER_KEYS if f"{kind}.{key}" in snap} for kind in KINDS}


def _camera_ready() -> None:
    loop = get_service().capture_loop
    status = loop.status()
    if status["state"] == "none":
        raise ApiError(404, "no camera configured: upload an image instead")
    if status["state"] != "live":
        raise ApiError(503, f"camera not ready ({status.get('error') or status['state']})")


@bp.get("/api/preview/stream")
def stream():
    _camera_ready()
    service = get_service()
    loop = service.capture_loop
    streams = current_app.extensions[_STREAMS]
    if not streams.acquire(blocking=False):
        raise ApiError(503, f"the live preview is already open on {MAX_STREAMS} screens; close one of them")

    def parts() -> Iterator[bytes]:
        last, until = 0, time.monotonic() + STREAM_MAX_S
        while time.monotonic() < until:
            if service.is_busy():  # a screening runs: no preview encode competes with it for the CPU
                time.sleep(BUSY_PAUSE_S)
                continue
            got = loop.ring.wait_jpeg(last, FRAME_WAIT_S, go=lambda: not service.is_busy())
            if got is None:
                if service.is_busy():
                    continue
                if loop.status()["state"] != "live":
                    return  # camera lost: the page shows why and opens a new stream when it is back
                continue
            last, jpeg = got
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                   f"X-Frame-Id: {last}\r\n\r\n").encode() + jpeg + b"\r\n"

    response = Response(parts(), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}")
    response.call_on_close(streams.release)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _guide() -> LiveGuide:
    with _guide_lock:
        guide = current_app.extensions.get(_GUIDE)
        if guide is None:
            service = get_service()
            guide = LiveGuide(service.capture_loop.ring.latest, lambda: service.classifier, service.is_busy)
            current_app.extensions[_GUIDE] = guide
        return guide


@bp.get("/api/preview/guidance")
def guidance():
    _camera_ready()
    guide = _guide()
    found = guide.now()
    if found is None:
        raise ApiError(503, "no camera frame yet")
    return jsonify(found.to_dict() | {"checks": guide.checks, "cpu_ms_total": round(guide.cpu_ms, 1)})


@bp.post("/api/timings")
def timings():
    """One screening's times as the browser saw them: {"record_id", "kind": capture|upload,
    "tap_to_verdict": ms, "tap_to_image": ms}."""
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, 'send JSON: {"record_id": ..., "kind": "capture" or "upload", "tap_to_verdict": ms, '
                            '"tap_to_image": ms}')
    kind = body.get("kind")
    if kind not in KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(KINDS)}")
    record_or_404(str(body.get("record_id", "")))
    sample: dict[str, float] = {}
    for key in BROWSER_KEYS:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 600_000:
            raise ApiError(400, f"{key} must be milliseconds between 0 and 600000")
        sample[f"{kind}.{key}"] = float(value)
    if not sample:
        raise ApiError(400, f"no timing given: send {' and/or '.join(BROWSER_KEYS)}")
    current_app.extensions[_BROWSER].add(sample)
    return jsonify({"stored": sorted(sample)}), 201
