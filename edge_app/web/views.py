"""The one blueprint: touchscreen pages and the JSON API.

Access: on loopback (the kiosk) no login; with an access token configured every
route but /healthz needs `Authorization: Bearer <token>` or a session opened at
/login (the login page and its static CSS are reachable so a LAN user can sign in).
State-changing requests from a browser carry the session's CSRF token in the
`X-CSRF-Token` header (app.js reads it from a meta tag); token-authenticated API
clients need none, nor do cookie-less local scripts when no token is configured.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
import unicodedata
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    stream_with_context,
    url_for,
)
from werkzeug.exceptions import HTTPException

from .. import __version__
from ..bundle import CARD_NAME
from ..camera import CameraUnavailable
from ..images import ImageDecodeError
from ..quality import FLAG_HINTS, FLAG_MESSAGES
from ..screening import QueueFull
from ..store import RecordNotFound, ScreeningRecord, StoreBusy, StoreFull, is_record_id
from . import get_service

log = logging.getLogger(__name__)

bp = Blueprint("main", __name__)

MAX_TEXT = 120
OPEN_ENDPOINTS = {"main.healthz", "main.login", "static"}
STAGES = ("decode", "crop", "resize", "dehair", "denoise", "contrast", "normalize", "inference", "total")
EXTRA_STAGES = ("quality", "capture", "encode", "scale", "queue_wait", "store", "end_to_end")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- access + CSRF


def _token() -> str:
    return current_app.config.get("ACCESS_TOKEN") or ""


def _bearer_ok() -> bool:
    token = _token()
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def _authenticated() -> bool:
    return not _token() or _bearer_ok() or session.get("auth") is True


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok() -> bool:
    if _bearer_ok():
        return True
    sent = request.headers.get("X-CSRF-Token", "")
    expected = session.get("csrf", "")
    if sent and expected and hmac.compare_digest(sent.encode(), expected.encode()):
        return True
    # A local script (curl on the device) sends neither cookies nor the browser's Origin /
    # Sec-Fetch-Site headers; any browser does, so a cross-site form post cannot pass here.
    browserish = any(h in request.headers for h in ("Origin", "Cookie", "Sec-Fetch-Site"))
    return not _token() and not browserish


@bp.before_app_request
def _guard():
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if not _authenticated():
        if _wants_json():
            return _error(401, "access token required: send 'Authorization: Bearer <token>' or sign in at /login")
        return redirect(url_for("main.login", next=request.full_path if request.query_string else request.path))
    if request.method not in ("GET", "HEAD", "OPTIONS") and not _csrf_ok():
        return _error(403, "missing or invalid CSRF token: reload the page and try again")
    return None


@bp.after_app_request
def _security_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "app_version": __version__, "flag_messages": FLAG_MESSAGES}


# --------------------------------------------------------------------------- errors


def _wants_json() -> bool:
    path = request.path
    if path.startswith("/api/") or path in ("/healthz", "/export.csv", "/preview.jpg"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _error(status: int, message: str):
    response = jsonify({"error": message})
    response.status_code = status
    return response


def install_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return _error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        messages = {
            413: f"upload too large: the limit is {app.config['MAX_CONTENT_LENGTH'] // (1024 * 1024)} MB",
            405: f"method {request.method} not allowed here",
        }
        message = messages.get(exc.code or 500, exc.description or exc.name)
        if _wants_json():
            return _error(exc.code or 500, message)
        return render_template("error.html", status=exc.code, message=message), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = "internal error; the details are in the device log"
        if _wants_json():
            return _error(500, message)
        return render_template("error.html", status=500, message=message), 500


# --------------------------------------------------------------------------- helpers


def _text_field(name: str) -> str:
    value = (request.form.get(name) or "").strip()
    if len(value) > MAX_TEXT:
        raise ApiError(400, f"{name} is too long ({len(value)} characters, at most {MAX_TEXT})")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ApiError(400, f"{name} contains control characters")
    return value


def record_json(record: ScreeningRecord) -> dict[str, Any]:
    d = record.to_dict()
    d["quality"] = {
        "ok": not record.quality_flags,
        "flags": record.quality_flags,
        "messages": [FLAG_MESSAGES.get(f, f) for f in record.quality_flags],
        "hints": [FLAG_HINTS.get(f, f) for f in record.quality_flags],
        "metrics": record.quality_metrics,
    }
    d["please_retake"] = bool(record.quality_flags)
    d["image_url"] = url_for("main.api_image", record_id=record.id)
    d["thumbnail_url"] = url_for("main.api_image", record_id=record.id, size="thumb")
    d["follow_up_url"] = url_for("main.follow_up", lesion_ref=record.lesion_ref) if record.lesion_ref else None
    return d


def _record_or_404(record_id: str) -> ScreeningRecord:
    if not is_record_id(record_id):
        raise ApiError(404, f"screening {record_id!r} not found")
    try:
        return get_service().store.get(record_id)
    except RecordNotFound:
        raise ApiError(404, f"screening {record_id!r} not found") from None


def _stats() -> dict[str, Any]:
    service = get_service()
    return {
        "latency_ms": service.stats.snapshot(),
        "counts": service.store.counts(),
        "camera": service.capture_loop.status(),
        "model": _model_json(),
        "health": service.health(),
        "uptime_s": round(time.time() - service.started_at, 1),
        "app_version": __version__,
    }


def _model_json() -> dict[str, Any]:
    """The model in force: what the classifier says, where it came from (installed / previous /
    packaged), any fallback, and the URL of its model card."""
    service = get_service()
    in_force = service.model_in_force()
    card = service.classifier.model_path.parent / CARD_NAME
    return service.classifier.describe() | {
        "source": in_force.get("source", "packaged"), "signed_by": in_force.get("signed_by"),
        "installed_at": in_force.get("installed_at"), "fallback": in_force.get("fallback"),
        "fallback_detail": in_force.get("fallback_detail"),
        "model_card_url": url_for("main.model_card") if card.is_file() else None,
    }


def _list_args() -> dict[str, Any]:
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise ApiError(400, "limit must be a whole number") from None
    if not 1 <= limit <= 500:
        raise ApiError(400, "limit must be between 1 and 500")
    before = request.args.get("before") or None
    if before is not None and not is_record_id(before):
        raise ApiError(400, "before must be a screening id")
    lesion = request.args.get("lesion")
    return {"limit": limit, "before": before, "lesion_ref": lesion if lesion else None}


def _list(**kwargs) -> list[ScreeningRecord]:
    try:
        return get_service().store.list(**kwargs)
    except RecordNotFound:
        raise ApiError(400, "before names an unknown screening") from None


# --------------------------------------------------------------------------- pages


@bp.get("/")
def index():
    service = get_service()
    corrects = request.args.get("corrects") or None
    if corrects is not None and (not is_record_id(corrects) or not service.store.exists(corrects)):
        corrects = None
    return render_template("index.html", model=_model_json(), camera=service.capture_loop.status(),
                           stages=STAGES, corrects=corrects)


@bp.get("/model/card")
def model_card():
    """The model card of the model in force, as shipped in its bundle (Markdown shown as text)."""
    model = _model_json()
    card = get_service().classifier.model_path.parent / CARD_NAME
    try:
        text = card.read_text(encoding="utf-8", errors="replace")
    except OSError:
        abort(404, description="This model came without a model card.")
    return render_template("model_card.html", model=model, card=text)


@bp.get("/history")
def history():
    args = _list_args()
    args["limit"] = min(args["limit"], 60)
    records = _list(**args)
    return render_template(
        "history.html",
        records=[record_json(r) for r in records],
        lesions=get_service().store.lesions(limit=30),
        next_before=records[-1].id if len(records) == args["limit"] else None,
        lesion=args["lesion_ref"],
    )


@bp.get("/lesions/<path:lesion_ref>")
def follow_up(lesion_ref: str):
    records = get_service().store.list(limit=500, lesion_ref=lesion_ref, oldest_first=True)
    if not records:
        abort(404, description=f"No screenings with lesion reference “{lesion_ref}” yet.")
    return render_template("follow_up.html", lesion_ref=lesion_ref, records=[record_json(r) for r in records],
                           trend=trend_svg(records))


@bp.get("/screenings/<record_id>")
def screening_page(record_id: str):
    record = _record_or_404(record_id)
    return render_template("screening.html", r=record_json(record), stages=STAGES + EXTRA_STAGES)


@bp.route("/login", methods=["GET", "POST"])
def login():
    target = request.args.get("next") or "/"
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    if not _token():
        return redirect(target)
    error = None
    if request.method == "POST":
        sent = (request.form.get("token") or "").encode()
        if hmac.compare_digest(sent, _token().encode()):
            session.clear()
            session["auth"] = True
            return redirect(target)
        error = "That access token is not right."
    return render_template("login.html", error=error), (401 if error else 200)


# --------------------------------------------------------------------------- API


@bp.get("/healthz")
def healthz():
    """Open to all (systemd, the kiosk launcher); the details only to an authenticated caller,
    so a LAN visitor learns nothing about paths or the device's state beyond up / down."""
    health = get_service().health()
    status = 200 if health["healthy"] else 503
    if not _authenticated():
        return jsonify({"healthy": health["healthy"]}), status
    return jsonify(health), status


@bp.get("/api/stats")
def api_stats():
    return jsonify(_stats())


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
def api_create():
    start = time.perf_counter()
    service = get_service()
    if request.mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded") and request.content_length:
        raise ApiError(415, "send multipart/form-data: an 'image' file field (or none to capture) and optional operator, lesion_ref, corrects")
    operator = _text_field("operator")
    lesion_ref = _text_field("lesion_ref")
    corrects = (request.form.get("corrects") or "").strip() or None
    if corrects is not None and (not is_record_id(corrects) or not service.store.exists(corrects)):
        raise ApiError(404, f"screening to correct {corrects!r} not found")
    upload = request.files.get("image")
    if upload is None and request.files:
        raise ApiError(400, f"upload the file in the 'image' field (got {', '.join(request.files)})")
    try:
        if upload is not None:
            data = upload.read()
            if not data:
                raise ApiError(400, "the uploaded file is empty (0 bytes)" if upload.filename else "no image file selected")
            record = service.screen_upload(data, operator, lesion_ref, corrects, max_pixels=current_app.config["MAX_PIXELS"])
        else:
            record = service.screen_capture(operator, lesion_ref, corrects)
    except ImageDecodeError as exc:
        raise ApiError(422, f"cannot screen this file: {exc}") from None
    except CameraUnavailable as exc:
        raise ApiError(503, str(exc)) from None
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
    elapsed = (time.perf_counter() - start) * 1000.0
    service.record_end_to_end(elapsed)
    body = record_json(record)
    body["timings_ms"]["end_to_end"] = round(elapsed, 3)
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = url_for("main.api_get", record_id=record.id)
    return response


@bp.get("/api/screenings")
def api_list():
    return jsonify({"screenings": [record_json(r) for r in _list(**_list_args())]})


@bp.get("/api/screenings/<record_id>")
def api_get(record_id: str):
    return jsonify(record_json(_record_or_404(record_id)))


@bp.get("/api/screenings/<record_id>/image")
def api_image(record_id: str):
    _record_or_404(record_id)
    thumb = request.args.get("size") == "thumb"
    try:
        path = get_service().store.image_file(record_id, thumbnail=thumb)
    except RecordNotFound:
        raise ApiError(404, f"image of screening {record_id} is missing on disk") from None
    return send_file(path, mimetype=_IMAGE_TYPES.get(path.suffix, "application/octet-stream"), max_age=0, conditional=False)


# What a stored image file is served as (an upload is kept in its own format).
_IMAGE_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp",
                ".tif": "image/tiff", ".gif": "image/gif"}


@bp.get("/export.csv")
def export_csv():
    store = get_service().store
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    response = Response(stream_with_context(store.iter_csv()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="dermaedge-screenings-{stamp}.csv"'
    return response


# --------------------------------------------------------------------------- trend chart


def trend_svg(records: list[ScreeningRecord], width: int = 760, height: int = 170) -> dict[str, Any]:
    """Coordinates for the follow-up chart (drawn by the template as inline SVG, no script)."""
    pad_l, pad_r, pad_t, pad_b = 44, 40, 12, 26
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    n = len(records)

    def x(i: int) -> float:
        return pad_l + (w / 2 if n == 1 else w * i / (n - 1))

    def y(p: float) -> float:
        return pad_t + h * (1.0 - p)

    every = max(1, -(-n // 6))  # at most ~6 date labels
    points = [
        {"x": round(x(i), 1), "y": round(y(r.malignant_probability), 1), "p": r.malignant_probability,
         "above": r.malignant_probability >= r.threshold, "id": r.id, "when": r.timestamp[:16].replace("T", " "),
         "label": r.timestamp[5:16].replace("T", " ") if (i % every == 0 or i == n - 1) else "", "retake": bool(r.quality_flags)}
        for i, r in enumerate(records)
    ]
    threshold = records[-1].threshold if records else 0.5
    return {
        "width": width, "height": height, "points": points,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points),
        "threshold_y": round(y(threshold), 1), "threshold": threshold,
        "grid": [{"y": round(y(v), 1), "label": f"{int(v * 100)}%"} for v in (0.0, 0.25, 0.5, 0.75, 1.0)],
        "left": pad_l, "right": width - pad_r, "bottom": height - pad_b,
    }
