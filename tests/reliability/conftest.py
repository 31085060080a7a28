"""The device-app fixtures (real model, real store in tmp_path, fake camera) reused from tests/app.

Everything public is re-exported on purpose: pytest imports each directory's
conftest.py under the one module name `conftest`, and tests/app's modules do
`from conftest import lesion_jpeg, ...`; in a run over both directories they get
this module, so it must offer the same names.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # `tests.app.conftest`, `tests.reliability.helpers` importable however pytest is started
    sys.path.insert(0, ROOT)

from tests.app.conftest import *
from tests.app.conftest import app, camera, classifier, client, make_app  # noqa: F401
