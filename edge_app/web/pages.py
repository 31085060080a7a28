"""The touchscreen pages: Screen, History, lesion follow-up, one screening's details, Performance."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, abort, render_template, request

from .. import __version__
from ..decisions import LABELS, NO_VERDICT, NO_VERDICT_REASONS
from ..images import ACCEPTED_MIME_TYPES
from ..store import RecordNotFound, ScreeningRecord, is_record_id
from . import get_service
from .camera_view import camera_view
from .chart import latency_svg, trend_svg
from .live import BROWSER_KEYS, browser_stats
from .model_info import card_html, model_card_file, model_json
from .records import (
    THRESHOLD_SOURCE_TEXT,
    list_args,
    list_records,
    local_time,
    percent,
    record_json,
    record_or_404,
    time_zone,
)

bp = Blueprint("pages", __name__)

# Per-stage latency, in pipeline order: the model's six stages, then what surrounds them.
STAGES = ("decode", "crop", "resize", "dehair", "denoise", "contrast", "normalize", "inference", "scope", "explain", "total")
EXTRA_STAGES = ("capture", "encode", "scale", "queue_wait", "quality", "store", "end_to_end")
STAGE_NAMES = {"total": "device path total", "scope": "scope check", "explain": "heatmap map", "capture": "camera still",
               "encode": "JPEG encode", "scale": "scale frame", "queue_wait": "queue wait", "quality": "quality check",
               "store": "save record", "end_to_end": "tap → result"}
PLOT_LAST = 50  # screenings in the Performance latency plot
RECENT_LESIONS = 6


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"app_version": __version__, "time_zone": time_zone()}


@bp.app_template_filter("local_time")
def _local_time(iso_utc: str) -> str:
    return local_time(iso_utc)


@bp.app_template_filter("percent")
def _percent(p: float) -> str:
    return percent(p)


@bp.get("/")
def index():
    service = get_service()
    corrects = corrected_record(request.args.get("corrects") or "")
    ui = {"noVerdict": sorted(NO_VERDICT), "labels": LABELS, "reasons": NO_VERDICT_REASONS}
    model = model_json()
    camera = service.capture_loop.status()
    return render_template("index.html", model=model, camera=camera, camera_words=camera_view(camera),
                           upload_accept=",".join(ACCEPTED_MIME_TYPES),
                           corrects=corrects, recent=service.store.lesions(limit=RECENT_LESIONS), ui=json.dumps(ui),
                           threshold_text=percent(model["threshold_in_force"]),
                           threshold_source_text=THRESHOLD_SOURCE_TEXT[model["threshold_source"]],
                           site_problem=service.site.problem)


def corrected_record(record_id: str) -> ScreeningRecord | None:
    """The record `?corrects=` names (its lesion reference is the correction's), or None when there is none."""
    if not is_record_id(record_id):
        return None
    try:
        return get_service().store.get(record_id)
    except RecordNotFound:
        return None


@bp.get("/model/card")
def model_card():
    """The model card of the model in force, as shipped in its bundle, rendered from its Markdown."""
    model = model_json()
    try:
        text = model_card_file().read_text(encoding="utf-8", errors="replace")
    except OSError:
        abort(404, description="This model came without a model card.")
    return render_template("model_card.html", model=model, card=card_html(text))


@bp.get("/history")
def history():
    args = list_args()
    args["limit"] = min(args["limit"], 60)
    records = list_records(**args)
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
                           trend=trend_svg(records), trend_narrow=trend_svg(records, width=360, height=210, max_labels=3))


@bp.get("/screenings/<record_id>")
def screening(record_id: str):
    record = record_or_404(record_id)
    return render_template("screening.html", r=record_json(record), stages=STAGES + EXTRA_STAGES, names=STAGE_NAMES)


@bp.get("/performance")
def performance():
    """This screening's time per stage beside the rolling p50/p90/p99, and a plot of the last screenings."""
    service = get_service()
    chosen = request.args.get("id")
    last = service.store.list(limit=PLOT_LAST)
    this = record_or_404(chosen) if chosen else (last[0] if last else None)
    latency = service.stats.snapshot()
    rows = [{"stage": s, "name": STAGE_NAMES.get(s, s), "this": this.timings_ms.get(s) if this else None,
             "rolling": latency.get(s)} for s in STAGES + EXTRA_STAGES]
    return render_template("performance.html", rows=rows, this=record_json(this) if this else None,
                           plot=latency_svg(list(reversed(last))), plot_last=PLOT_LAST,
                           window=service.stats.window, model=model_json(), browser=browser_stats(),
                           browser_names=BROWSER_KEYS)
