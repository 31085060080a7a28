"""The JSON API: screenings (create, list, get, image), stats, health, the live preview and the CSV export."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, stream_with_context, url_for

from .. import __version__, renditions
from ..camera import CameraUnavailable
from ..camera.ring import FrameExpired
from ..explain import overlay_png
from ..images import ImageDecodeError
from ..screening import QueueFull
from ..store import RecordNotFound, ScreeningRecord, StoreBusy, StoreFull, is_record_id
from . import get_service
from .access import authenticated
from .camera_view import camera_view
from .errors import ApiError
from .model_info import model_json
from .records import list_args, list_records, record_json, record_or_404, request_id_field, text_field

bp = Blueprint("api", __name__)


def stats() -> dict[str, Any]:
    service = get_service()
    return {
        "latency_ms": service.stats.snapshot(),
        "counts": service.store.counts(),
        "camera": (camera := service.capture_loop.status()),
        "camera_view": camera_view(camera),  # the same state in words (the Screen shows these)
        "model": model_json(),
        "site_threshold_problem": service.site.problem,  # why a site threshold file is not used, if one is not
        "health": service.health(),
        "uptime_s": round(time.time() - service.started_at, 1),
        "app_version": __version__,
    }


@bp.get("/healthz")
def healthz():
    """Open to all (systemd, the kiosk launcher); the details only to an authenticated caller,
    so a LAN visitor learns nothing about paths or the device's state beyond up / down."""
    health = get_service().health()
    status = 200 if health["healthy"] else 503
    if not authenticated():
        return jsonify({"healthy": health["healthy"]}), status
    return jsonify(health), status


@bp.get("/api/stats")
def api_stats():
    return jsonify(stats())


@bp.get("/preview.jpg")
def preview():
    loop = get_service().capture_loop
    jpeg = loop.preview_jpeg()
    if jpeg is None:
        status = loop.status()
        if status["state"] == "none":
            raise ApiError(404, "no camera configured: upload an image instead")
        raise ApiError(503, f"camera not ready ({status.get('error') or status['state']})")
    return Response(jpeg, mimetype="image/jpeg")


@bp.post("/api/screenings")
def create():
    """One record per `request_id`: a repeat gets the first record back with 200 instead of 201."""
    start = time.perf_counter()
    service = get_service()
    if request.mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded") and request.content_length:
        raise ApiError(415, "send multipart/form-data: an 'image' file field (or none to capture) and optional "
                            "operator, lesion_ref, corrects, request_id")
    operator = text_field("operator")
    lesion_ref = text_field("lesion_ref")
    request_id = request_id_field()
    corrects = (request.form.get("corrects") or "").strip() or None
    if corrects is not None:
        # A correction belongs to the corrected record's lesion, whatever the form says: filed under
        # another reference it would be missing from that lesion's follow-up.
        lesion_ref = corrected_record(corrects).lesion_ref
    upload = request.files.get("image")
    if upload is None and request.files:
        raise ApiError(400, f"upload the file in the 'image' field (got {', '.join(request.files)})")
    frame_id = frame_id_field(upload is not None)

    def screen():
        if upload is not None:
            data = upload.read()
            if not data:
                raise ApiError(400, "the uploaded file is empty (0 bytes)" if upload.filename else "no image file selected")
            return service.screen_upload(data, operator, lesion_ref, corrects, max_pixels=current_app.config["MAX_PIXELS"],
                                         request_id=request_id)
        return service.screen_capture(operator, lesion_ref, corrects, request_id=request_id, frame_id=frame_id)

    try:
        record, created = service.once(request_id, screen)
    except ImageDecodeError as exc:
        raise ApiError(422, f"cannot screen this file: {exc}") from None
    except CameraUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    except FrameExpired as exc:  # never another frame instead of the one on screen
        raise ApiError(410, f"the frame on screen at the tap cannot be analysed: {exc}") from None
    except QueueFull as exc:
        raise ApiError(503, str(exc)) from None
    except RecordNotFound:
        raise ApiError(404, f"screening to correct {corrects!r} not found") from None
    except StoreFull as exc:
        raise ApiError(507, str(exc)) from None
    except StoreBusy as exc:
        raise ApiError(503, str(exc)) from None
    except ValueError as exc:  # e.g. an image too small to screen
        raise ApiError(422, f"cannot screen this image: {exc}") from None
    body = record_json(record)
    if created:
        elapsed = (time.perf_counter() - start) * 1000.0
        service.record_end_to_end(elapsed)
        body["timings_ms"]["end_to_end"] = round(elapsed, 3)
    response = jsonify(body)
    response.status_code = 201 if created else 200
    response.headers["Location"] = url_for("api.get", record_id=record.id)
    return response


def corrected_record(record_id: str) -> ScreeningRecord:
    """The record a correction replaces (one lookup), or a 404 naming it."""
    if is_record_id(record_id):
        try:
            return get_service().store.get(record_id)
        except RecordNotFound:
            pass
    raise ApiError(404, f"screening to correct {record_id!r} not found")
def frame_id_field(is_upload: bool) -> int | None:
    """`frame_id`: the live preview frame on screen at the tap (capture only)."""
    value = (request.form.get("frame_id") or "").strip()
    if not value:
        return None
    if is_upload:
        raise ApiError(400, "frame_id goes with a capture, not with an uploaded image")
    if not value.isdigit() or len(value) > 18:
        raise ApiError(400, f"frame_id must be a preview frame number, got {value[:20]!r}")
    return int(value)


@bp.get("/api/screenings")
def list_():
    """Newest first; `?request_id=` finds the record of one capture/upload intent (a reloaded screen asks this)."""
    request_id = request.args.get("request_id")
    if request_id is not None:
        found = get_service().store.get_by_request_id(request_id)
        return jsonify({"screenings": [record_json(found)] if found is not None else []})
    return jsonify({"screenings": [record_json(r) for r in list_records(**list_args())]})


@bp.get("/api/screenings/<record_id>")
def get(record_id: str):
    return jsonify(record_json(record_or_404(record_id)))


@bp.get("/api/screenings/<record_id>/image")
def image(record_id: str):
    """The stored original (byte-identical), `?size=thumb` its thumbnail, `?size=screen` its screen rendition."""
    record_or_404(record_id)
    size = request.args.get("size")
    try:
        path = get_service().store.image_file(record_id, thumbnail=size == "thumb")
        if size == "screen":
            path = renditions.ensure(path, max_pixels=current_app.config["MAX_PIXELS"])
    except (RecordNotFound, FileNotFoundError):
        raise ApiError(404, f"image of screening {record_id} is missing on disk") from None
    except ImageDecodeError as exc:
        raise ApiError(422, f"the stored image of screening {record_id} cannot be shown: {exc}") from None
    return send_file(path, mimetype=IMAGE_TYPES.get(path.suffix, "application/octet-stream"), max_age=0, conditional=False)


# What a stored image file is served as (an upload is kept in its own format).
IMAGE_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".gif": "image/gif"}


@bp.get("/api/screenings/<record_id>/heatmap")
def heatmap(record_id: str):
    """The class activation map as a transparent PNG, rendered on request; the record's `heatmap_box`
    says where it goes over the stored image (fractions x0, y0, x1, y1)."""
    record = record_or_404(record_id)
    if not record.explain:
        raise ApiError(404, f"screening {record_id} has no heatmap (its model had no heatmap head)")
    return Response(overlay_png(record.explain["cam"]), mimetype="image/png")


@bp.get("/export.csv")
def export_csv():
    store = get_service().store
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    response = Response(stream_with_context(store.iter_csv()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="dermaedge-screenings-{stamp}.csv"'
    return response
