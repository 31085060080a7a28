"""Error replies: JSON `{"error": ...}` for API clients, the error page for a person."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

JSON_PATHS = ("/healthz", "/export.csv", "/preview.jpg")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def wants_json() -> bool:
    path = request.path
    if path.startswith("/api/") or path in JSON_PATHS:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, message: str):
    response = jsonify({"error": message})
    response.status_code = status
    return response


def install_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        messages = {
            413: f"upload too large: the limit is {app.config['MAX_CONTENT_LENGTH'] // (1024 * 1024)} MB",
            405: f"method {request.method} not allowed here",
        }
        message = messages.get(exc.code or 500, exc.description or exc.name)
        if wants_json():
            return error_response(exc.code or 500, message)
        return render_template("error.html", status=exc.code, message=message), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = "internal error; the details are in the device log"
        if wants_json():
            return error_response(500, message)
        return render_template("error.html", status=500, message=message), 500
