"""The model in force as the screen, /api/stats and the model card page show it."""

from __future__ import annotations

from typing import Any

from flask import url_for

from ..bundle import CARD_NAME
from . import get_service


def model_json() -> dict[str, Any]:
    """What the classifier says, the threshold in force (site or model), where the model came from
    (installed / previous / packaged), any fallback, and the URL of its model card."""
    service = get_service()
    in_force = service.model_in_force()
    return service.classifier.describe() | service.site.describe(service.classifier) | {
        "source": in_force.get("source", "packaged"), "signed_by": in_force.get("signed_by"),
        "installed_at": in_force.get("installed_at"), "fallback": in_force.get("fallback"),
        "fallback_detail": in_force.get("fallback_detail"),
        "model_card_url": url_for("pages.model_card") if model_card_file().is_file() else None,
    }


def model_card_file():
    return get_service().classifier.model_path.parent / CARD_NAME
