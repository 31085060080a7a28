"""The device-app fixtures (real model, real store in tmp_path, fake camera) reused from tests/app."""

from tests.app.conftest import app, camera, classifier, client, make_app  # noqa: F401
