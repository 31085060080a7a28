"""The camera's state in words a technician understands: the top bar's pill, and what the Screen's
card says while the camera is lost (what to do, and the technical reason, both visible)."""

from __future__ import annotations

from typing import Any


def camera_view(status: dict[str, Any]) -> dict[str, Any]:
    """`CaptureLoop.status()` -> {"words", "short", "help", "reason"}; `help` is None while the camera works
    (or when there is none: the screen then offers Upload as its only way)."""
    state = status.get("state")
    if state == "none":
        return {"words": "No camera · upload only", "short": "No camera", "help": None, "reason": None}
    if state == "live":
        return {"words": "Camera live", "short": "Camera live", "help": None, "reason": None}
    error = status.get("error")
    retry = status.get("retry_in_s")
    if not error:
        return {"words": "Camera starting…", "short": "Connecting", "reason": None,
                "help": "Connecting to the camera. To screen a photo now, tap Upload."}
    when = f" (next try in {max(1, round(retry))} s)" if retry is not None else ""
    return {
        "words": "Camera lost · retrying", "short": "Camera lost", "reason": f"Technical reason: {error}",
        "help": (f"The camera stopped sending pictures. Check that it is plugged in; the device keeps trying to "
                 f"reconnect{when}. To screen now, tap Upload and choose a photo."),
    }
