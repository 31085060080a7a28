"""Flask app factory for the touchscreen UI and the JSON API.

`create_app(test_config=None)` builds the app from the validated settings
(`config.load_settings`: defaults < config file < environment) or, in tests,
from a mapping. The mapping may carry ready objects: `CLASSIFIER` (a loaded
`Classifier`) and `CAMERA` (a spec string or an object satisfying `Camera`).
The screening service (model, store, capture loop, inference worker) lives in
`app.extensions["dermaedge"]`; call `shutdown(app)` to stop its threads.

Each concern has its module: `access` (token, sessions, CSRF; blueprint `access`),
`security` (response headers), `errors` (JSON / page error replies), `api` (the JSON
API; blueprint `api`), `pages` (the touchscreen pages; blueprint `pages`), `records`
(a record as API and pages show it), `chart` (SVG chart coordinates).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from .. import __version__

log = logging.getLogger(__name__)

EXTENSION = "dermaedge"


def config_from_settings(settings) -> dict[str, Any]:
    """`config.Settings` -> the Flask config mapping `create_app` understands."""
    return {
        "DATA_DIR": str(settings.data_dir),
        "MODEL": str(settings.model),
        "CAMERA": settings.camera,
        "ACCESS_TOKEN": settings.access_token,
        "MAX_CONTENT_LENGTH": int(settings.max_upload_mb * 1024 * 1024),
        "RETENTION_DAYS": settings.retention_days,
        "RETENTION_GB": settings.retention_gb,
        "NUM_THREADS": settings.num_threads,
        "PREVIEW_FPS": settings.preview_fps,
        "SECRET_KEY": settings.secret_key or None,
    }


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    from ..camera import make_camera
    from ..camera.loop import CaptureLoop
    from ..screening import ScreeningService
    from ..store import ServingStore

    app = Flask(__name__)
    app.config.from_mapping(
        DATA_DIR=None,
        MODEL=None,
        CAMERA="none",
        ACCESS_TOKEN="",
        MAX_CONTENT_LENGTH=20 * 1024 * 1024,
        RETENTION_DAYS=0,
        RETENTION_GB=0,
        NUM_THREADS=2,
        PREVIEW_FPS=12.0,
        MAX_PIXELS=50_000_000,
        SECRET_KEY=None,
        CLASSIFIER=None,
        CAMERA_BACKOFF_S=1.0,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    if test_config is None:
        from ..config import load_settings

        app.config.update(config_from_settings(load_settings()))
    else:
        app.config.update(test_config)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = secrets.token_hex(32)  # sessions (CSRF tokens) last until restart
    if not app.config["DATA_DIR"]:
        from ..config import default_data_dir

        app.config["DATA_DIR"] = str(default_data_dir())

    # The data directory's lock first (a second app on it is refused before anything loads), recovery, retention.
    store = ServingStore(
        Path(app.config["DATA_DIR"]),
        retention_days=app.config["RETENTION_DAYS"],
        retention_gb=app.config["RETENTION_GB"],
        app_version=__version__,
    )
    try:
        # The model installed with `edge-app model install` (data dir), else the packaged MODEL; see model_store.
        from ..model_store import ModelStore, ModelWatch
        from ..runtime import DEFAULT_MODEL

        classifier = app.config["CLASSIFIER"]
        models = ModelStore(Path(app.config["DATA_DIR"]), app.config["MODEL"] or getattr(classifier, "model_path", DEFAULT_MODEL),
                            app_version=__version__)
        if classifier is None:
            classifier, in_force = models.load_for_serving(num_threads=app.config["NUM_THREADS"])
        else:
            in_force = models.packaged_in_force(classifier)
        camera = app.config["CAMERA"]
        if isinstance(camera, str):
            camera = make_camera(camera)
        loop = CaptureLoop(camera, preview_fps=app.config["PREVIEW_FPS"], backoff_initial_s=app.config["CAMERA_BACKOFF_S"])
        service = ScreeningService(classifier, store, loop,
                                   model_watch=ModelWatch(models, in_force, num_threads=app.config["NUM_THREADS"]))
    except BaseException:
        store.close()  # the lock goes with it: a corrected start may take it
        raise
    service.start()
    app.extensions[EXTENSION] = service

    from . import access, api, errors, live, pages, referral_pages, security

    app.register_blueprint(access.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(live.bp)
    app.register_blueprint(referral_pages.bp)
    errors.install_handlers(app)
    security.install_headers(app)
    return app


def get_service():
    """The ScreeningService of the current app."""
    return current_app.extensions[EXTENSION]


def shutdown(app: Flask) -> None:
    service = app.extensions.get(EXTENSION)
    if service is not None:
        service.stop()
        service.store.close()
