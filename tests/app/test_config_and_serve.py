"""Settings precedence and validation, `edge-app serve` start-up errors, and the health check."""

from __future__ import annotations

import time

import pytest

from edge_app.cli import serve
from edge_app.config import ConfigError, load_settings
from tests.app.conftest import model_path


@pytest.fixture
def model() -> str:
    return str(model_path())


def test_defaults_file_env_flags_precedence(tmp_path, model):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'port = 9000\ncamera = "none"\nmodel = "{model}"\nretention_days = 30\n')
    env = {"EDGE_APP_PORT": "9100", "XDG_DATA_HOME": str(tmp_path / "xdg")}
    s = load_settings(cfg, env=env)
    assert (s.port, s.camera, s.retention_days, s.host) == (9100, "none", 30.0, "127.0.0.1")
    s = load_settings(cfg, env=env, overrides={"port": 9200, "camera": None})
    assert s.port == 9200 and s.camera == "none"


def test_data_dir_defaults_to_xdg(tmp_path, model, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_settings(env={}, overrides={"model": model}).data_dir == tmp_path / "xdg" / "edge-app"


@pytest.mark.parametrize(
    ("content", "env", "overrides", "words"),
    [
        ("port = 'eighty'", {}, {}, "'port' from config file"),
        ("bogus = 1", {}, {}, "unknown setting(s) bogus"),
        ("port = [", {}, {}, "not valid TOML"),
        ("", {"EDGE_APP_PORT": "abc"}, {}, "EDGE_APP_PORT must be a whole number"),
        ("", {}, {"port": 70000}, "port must be 1..65535"),
        ("", {}, {"camera": "webcam"}, "unknown camera 'webcam'"),
        ("", {}, {"host": "0.0.0.0"}, "access token of at least 16"),
        ("", {"EDGE_APP_ACCESS_TOKEN": "short"}, {}, "at least 16 characters"),
        ("", {}, {"model": "/nope/model.tflite"}, "model file /nope/model.tflite not found"),
        ("", {}, {"max_upload_mb": 0}, "max_upload_mb"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(tmp_path, model, content, env, overrides, words):
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env=env, overrides={"model": model} | overrides)
    assert words in str(exc.value)


def test_lan_host_with_a_token_from_the_environment_is_accepted(model):
    s = load_settings(env={"EDGE_APP_ACCESS_TOKEN": "x" * 20}, overrides={"host": "0.0.0.0", "model": model})
    assert not s.is_loopback and s.to_dict()["access_token"] == "***"


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", env={})


def test_serve_exits_non_zero_with_a_message_on_bad_settings(capsys, tmp_path, model):
    assert serve.main(["--port", "0", "--model", model, "--data-dir", str(tmp_path)]) == 2
    assert "port must be 1..65535" in capsys.readouterr().err
    assert serve.main(["--host", "0.0.0.0", "--model", model, "--data-dir", str(tmp_path)]) == 2
    assert "access token" in capsys.readouterr().err


def test_serve_refuses_a_model_that_does_not_match_its_manifest(capsys, tmp_path):
    bad = tmp_path / "m.tflite"
    bad.write_bytes(model_path().read_bytes() + b"tampered")
    (tmp_path / "m.json").write_text(model_path().with_suffix(".json").read_text())
    assert serve.main(["--model", str(bad), "--camera", "none", "--data-dir", str(tmp_path / "d")]) == 1
    assert "does not match its manifest" in capsys.readouterr().err


def test_health_check_turns_false_when_a_thread_dies_or_hangs(make_app, camera):
    from tests.app.conftest import wait_for

    app = make_app(CAMERA=camera)
    service = app.extensions["dermaedge"]
    wait_for(service.is_healthy)
    # a hung camera driver: the capture loop heartbeat goes stale
    service.capture_loop._heartbeat = time.monotonic() - 60
    service.capture_loop.stop()
    health = service.health()
    assert not health["healthy"] and any("capture loop" in p for p in health["problems"])
    assert app.test_client().get("/healthz").status_code == 503


def test_inference_worker_heartbeat_is_checked(make_app):
    from edge_app import screening

    app = make_app()
    from tests.app.conftest import wait_for

    service = app.extensions["dermaedge"]
    assert service.is_healthy()
    service.tick_s = 3600  # after its next beat the idle worker waits long: no race with the test
    t0 = time.monotonic()
    wait_for(lambda: service._heartbeat > t0)
    service._heartbeat = time.monotonic() - screening.STALE_AFTER_S - 5
    assert not service.is_healthy()
    assert "inference worker heartbeat" in " ".join(service.health()["problems"])
