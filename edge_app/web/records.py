"""A screening record as the API and the pages show it, and the request parsing both share.

One time zone (the device's) and one number format everywhere: `local_time()` and
`percent()` are used by the templates, and their results travel in the record JSON
(`time_local`, `probability_text`, `threshold_text`) so app.js shows the same text.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any

from flask import request, url_for

from ..decisions import LABELS, NO_VERDICT_REASONS, is_verdict
from ..explain import MEANING as HEATMAP_MEANING
from ..explain import MEANING_SHORT as HEATMAP_MEANING_SHORT
from ..quality import FLAG_HINTS, FLAG_MESSAGES
from ..store import RecordNotFound, ScreeningRecord, is_record_id
from . import get_service
from .errors import ApiError

MAX_TEXT = 120
THRESHOLD_SOURCE_TEXT = {"model": "model default", "site": "site-calibrated"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")


def local_time(iso_utc: str, seconds: bool = False) -> str:
    """'2026-11-27T11:40:07.123Z' -> '2026-11-27 12:40' in the device's time zone."""
    when = datetime.fromisoformat(iso_utc).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def time_zone() -> str:
    return datetime.now().astimezone().strftime("%Z") or "local"


def percent(p: float) -> str:
    return f"{p * 100:.1f}%"


def text_field(name: str) -> str:
    value = (request.form.get(name) or "").strip()
    if len(value) > MAX_TEXT:
        raise ApiError(400, f"{name} is too long ({len(value)} characters, at most {MAX_TEXT})")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ApiError(400, f"{name} contains control characters")
    return value


def request_id_field() -> str | None:
    value = (request.form.get("request_id") or "").strip()
    if not value:
        return None
    if not REQUEST_ID.fullmatch(value):
        raise ApiError(400, "request_id must be 8-64 letters, digits or . _ : - (one new id per capture/upload)")
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
    d["verdict"] = is_verdict(record.decision)
    d["decision_label"] = LABELS.get(record.decision, record.decision)
    d["time_local"] = local_time(record.timestamp)
    d["probability_text"] = percent(record.malignant_probability)
    d["threshold_text"] = percent(record.threshold)
    d["threshold_source_text"] = THRESHOLD_SOURCE_TEXT.get(record.threshold_source, record.threshold_source)
    d["scope"] = {"in_scope": record.in_scope, "score": record.scope_score,
                  "message": NO_VERDICT_REASONS.get(record.decision) if record.in_scope is False else None}
    # No heatmap beside "no verdict": it would read as evidence for a verdict that was not given
    # (the map stays in the record, and /heatmap serves it, for audit).
    shown = bool(record.explain) and d["verdict"]
    d["heatmap_url"] = url_for("api.heatmap", record_id=record.id) if shown else None
    d["heatmap_meaning"] = HEATMAP_MEANING if shown else None
    d["heatmap_meaning_short"] = HEATMAP_MEANING_SHORT if shown else None  # the result screen's one line
    d["heatmap_box"] = record.explain.get("box", [0.0, 0.0, 1.0, 1.0]) if shown else None
    d["image_url"] = url_for("api.image", record_id=record.id)  # the original, byte-identical (download)
    d["screen_url"] = url_for("api.image", record_id=record.id, size="screen")  # what screens show (renditions.py)
    d["thumbnail_url"] = url_for("api.image", record_id=record.id, size="thumb")
    d["detail_url"] = url_for("pages.screening", record_id=record.id)
    d["follow_up_url"] = url_for("pages.follow_up", lesion_ref=record.lesion_ref) if record.lesion_ref else None
    return d


def record_or_404(record_id: str) -> ScreeningRecord:
    if not is_record_id(record_id):
        raise ApiError(404, f"screening {record_id!r} not found")
    try:
        return get_service().store.get(record_id)
    except RecordNotFound:
        raise ApiError(404, f"screening {record_id!r} not found") from None


def list_args() -> dict[str, Any]:
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


def list_records(**kwargs) -> list[ScreeningRecord]:
    try:
        return get_service().store.list(**kwargs)
    except RecordNotFound:
        raise ApiError(400, "before names an unknown screening") from None
