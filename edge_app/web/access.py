"""Access control: the optional access token, browser sessions (/login) and CSRF.

On loopback (the kiosk) no login; with an access token configured every route but
/healthz needs `Authorization: Bearer <token>` or a session opened at /login (the
login page and the static files stay reachable so a LAN user can sign in).
State-changing requests from a browser carry the session's CSRF token in the
`X-CSRF-Token` header (app.js reads it from a meta tag); token-authenticated API
clients need none, nor do cookie-less local scripts when no token is configured.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from .errors import error_response, wants_json

bp = Blueprint("access", __name__)

OPEN_ENDPOINTS = {"api.healthz", "access.login", "static"}


def _token() -> str:
    return current_app.config.get("ACCESS_TOKEN") or ""


def _bearer_ok() -> bool:
    token = _token()
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def authenticated() -> bool:
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
    if not authenticated():
        if wants_json():
            return error_response(401, "access token required: send 'Authorization: Bearer <token>' or sign in at /login")
        return redirect(url_for("access.login", next=request.full_path if request.query_string else request.path))
    if request.method not in ("GET", "HEAD", "OPTIONS") and not _csrf_ok():
        return error_response(403, "missing or invalid CSRF token: reload the page and try again")
    return None


@bp.app_context_processor
def _csrf_global() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


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
