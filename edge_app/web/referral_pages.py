"""The referral sheet routes: one screening's PDF, and a lesion's (its newest screening with the earlier ones)."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, current_app, request

from .. import renditions
from ..images import ImageDecodeError
from ..referral import sheet
from ..store import RecordNotFound, ScreeningRecord
from . import get_service
from .errors import ApiError
from .records import record_or_404

bp = Blueprint("referral", __name__)


def _image(record: ScreeningRecord) -> Path | None:
    try:
        return renditions.ensure(get_service().store.image_file(record.id), max_pixels=current_app.config["MAX_PIXELS"])
    except (RecordNotFound, FileNotFoundError, ImageDecodeError):
        return None  # the sheet says "image not available" rather than failing


def _earlier(record: ScreeningRecord) -> list[ScreeningRecord]:
    if not record.lesion_ref:
        return []
    same = get_service().store.list(limit=500, lesion_ref=record.lesion_ref)  # newest first
    return [r for r in same if r.timestamp < record.timestamp or (r.timestamp == record.timestamp and r.id < record.id)]


def _pdf(record: ScreeningRecord) -> Response:
    data = sheet(record, _image(record), _earlier(record))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"referral-{record.lesion_ref or 'screening'}-{record.timestamp[:10]}").strip("-")
    response = Response(data, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="{name}.pdf"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/screenings/<record_id>/referral.pdf")
def screening_sheet(record_id: str):
    return _pdf(record_or_404(record_id))


@bp.get("/referral.pdf")
def lesion_sheet():
    """`?lesion=<reference>`: the lesion's newest screening, with its earlier ones."""
    lesion_ref = request.args.get("lesion", "")
    newest = get_service().store.list(limit=1, lesion_ref=lesion_ref) if lesion_ref else []
    if not newest:
        raise ApiError(404, f"no screenings with lesion reference {lesion_ref!r}" if lesion_ref
                       else "name the lesion: /referral.pdf?lesion=<reference>")
    return _pdf(newest[0])
