"""Safe offline model update: signed bundles, verified install, atomic switch, rollback, fallback.

Each refused bundle leaves the current model exactly as it was (link, folder, files); a good one
is screened with by the running app without losing a queued screening.
"""

from __future__ import annotations

import html
import json
import os
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from edge_app.bundle import MAX_MEMBER_BYTES, SIGNATURE_NAME, BundleError, generate_key, read_bundle
from edge_app.cli import main as edge_app
from edge_app.fileio import AUDIT_LOG
from edge_app.model_store import CURRENT, PREVIOUS, ModelStore
from edge_app.web import shutdown
from tests.app.conftest import lesion_jpeg, model_path, wait_for
from tests.reliability.bundles import KEY_NAME, make_keys, manifest_name, members, model_copy, rezip, signed_bundle, tflite_name
from tests.reliability.helpers import upload

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys(tmp_path):
    return make_keys(tmp_path)


@pytest.fixture
def bundles(tmp_path, keys):
    """Two signed bundles: A = the shipped model, B = the same weights with a site threshold."""
    private, _ = keys
    shipped = json.loads(model_path().with_suffix(".json").read_text())
    a = signed_bundle(model_copy(tmp_path / "a"), tmp_path / "a.zip", private)
    site_threshold = round(min(0.95, shipped["threshold"] + 0.05), 4)
    b = signed_bundle(model_copy(tmp_path / "b", "-site", threshold=site_threshold), tmp_path / "b.zip", private)
    return {"a": a, "b": b, "b_threshold": site_threshold, "version": shipped["version"]}


@pytest.fixture
def models(tmp_path):
    return ModelStore(tmp_path / "data", model_path())


def state(models: ModelStore) -> dict:
    """Everything an install may touch: the links and every file under models/ with its bytes."""
    files = {p.relative_to(models.dir).as_posix(): p.read_bytes() for p in models.dir.rglob("*")
             if p.is_file() and not p.is_symlink()}
    return {"current": models.target(CURRENT), "previous": models.target(PREVIOUS), "files": files}


def audit_events(models: ModelStore) -> list[dict]:
    path = models.data_dir / AUDIT_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- install


def test_signed_bundle_installs_and_the_app_screens_with_it(make_app, models, keys, bundles):
    installed = models.install(bundles["b"], keys[1])
    assert models.target(CURRENT) == installed.id and installed.key == KEY_NAME
    assert (models.dir / installed.id / "MODEL_CARD.md").is_file()

    app = make_app(CLASSIFIER=None, MODEL=str(model_path()), DATA_DIR=str(models.data_dir))
    client = app.test_client()
    r = upload(client, lesion_jpeg(3))
    assert r.status_code == 201, r.get_json()
    record = r.get_json()
    assert record["model_version"] == bundles["version"] + "-site"
    assert record["threshold"] == pytest.approx(bundles["b_threshold"])
    model = client.get("/api/stats").get_json()["model"]
    assert (model["source"], model["signed_by"], model["fallback"]) == ("installed", KEY_NAME, None)
    assert client.get("/healthz").get_json()["model"]["model_version"] == bundles["version"] + "-site"
    page = client.get("/").get_data(as_text=True)
    assert bundles["version"] + "-site" in page and 'href="/model/card"' in page
    card = client.get("/model/card")
    title = (models.dir / installed.id / "MODEL_CARD.md").read_text().splitlines()[0].removeprefix("# ")
    assert card.status_code == 200 and html.escape(title, quote=False) + "</h1>" in card.get_data(as_text=True)

    event = audit_events(models)[-1]
    assert (event["event"], event["key"], event["signed"], event["version"]) == ("model_install", KEY_NAME, True,
                                                                                   bundles["version"] + "-site")


def _changed_tflite_byte(files):
    name = tflite_name(files)
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0x01
    return files | {name: bytes(data)}


def _edited_manifest(files):
    name = manifest_name(files)
    manifest = json.loads(files[name])
    manifest["threshold"] = 0.01  # "everything is malignant", slipped in after signing
    return files | {name: json.dumps(manifest).encode()}


def _dotdot_member(files):
    name = tflite_name(files)
    return {("../" + name if n == name else n): d for n, d in files.items()}


def _absolute_member(files):
    return {("/etc/" + n if n.endswith(".json") else n): d for n, d in files.items()}


def _unsigned(files):
    return {n: d for n, d in files.items() if n != SIGNATURE_NAME}


def _extra_member(files):
    return files | {"install.sh": b"#!/bin/sh\nrm -rf /\n"}


def _zip_bomb(path: Path, good: Path) -> Path:
    files = members(good)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data if name != "MODEL_CARD.md" else bytes(MAX_MEMBER_BYTES // 2))
    return path


def _symlink_member(path: Path, good: Path) -> Path:
    """MODEL_CARD.md stored as a symbolic link to /etc/passwd."""
    files = members(good)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            if name == "MODEL_CARD.md":
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, b"/etc/passwd")
            else:
                zf.writestr(name, data)
    return path


def _truncated(path: Path, good: Path) -> Path:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _bad_crc(path: Path, good: Path) -> Path:
    """A stored member whose bytes were damaged on the stick: only the CRC can tell."""
    files = members(good)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    data = bytearray(path.read_bytes())
    name = tflite_name(files).encode()
    at = data.index(name) + len(name) + 1000  # inside the first member's data
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("damage", "step", "words"),
    [
        (_changed_tflite_byte, "sha256", "does not match its manifest"),
        (_edited_manifest, "signature", "changed after signing"),
        (_dotdot_member, "archive", "'..'"),
        (_absolute_member, "archive", "absolute path"),
        (_extra_member, "archive", "unexpected member"),
        (_unsigned, "signature", "not signed"),
        (_zip_bomb, "archive", "zip bomb"),
        (_symlink_member, "archive", "link or special file"),
        (_truncated, "archive", "damaged or truncated"),
        (_bad_crc, "archive", "damaged or truncated"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)).strip("_") if callable(v) else None,
)
def test_bad_bundle_is_refused_and_the_current_model_is_untouched(tmp_path, models, keys, bundles, damage, step, words):
    models.install(bundles["a"], keys[1])
    models.install(bundles["b"], keys[1])
    before = state(models)
    bad = tmp_path / "bad.zip"
    if damage in (_zip_bomb, _symlink_member, _truncated, _bad_crc):
        damage(bad, bundles["a"])
    else:
        rezip(bundles["a"], bad, damage)
    with pytest.raises(BundleError) as exc:
        models.install(bad, keys[1])
    assert exc.value.step == step, exc.value
    assert words in str(exc.value)
    assert "\n" not in str(exc.value)
    assert state(models) == before, "a refused bundle changed the installed models"
    assert audit_events(models)[-1]["event"] == "model_install"  # nothing logged as installed


def test_bundle_signed_by_an_unknown_key_is_refused(tmp_path, models, keys, bundles):
    models.install(bundles["a"], keys[1])
    before = state(models)
    stranger, _ = generate_key(tmp_path / "stranger", "not-trusted")
    bad = signed_bundle(model_copy(tmp_path / "c", "-evil", threshold=0.01), tmp_path / "c.zip", stranger)
    with pytest.raises(BundleError) as exc:
        models.install(bad, keys[1])
    assert exc.value.step == "signature"
    assert "does not trust" in str(exc.value) and "not-trusted" in str(exc.value)
    assert state(models) == before


@pytest.mark.parametrize(
    ("change", "step", "words"),
    [
        ({"preprocessing": {"name": "dermaedge-six-stage", "version": "0.0-other", "params": {}}}, "preprocessing", "0.0-other"),
        ({"selftest": "wrong outputs"}, "selftest", "golden self-test"),
    ],
    ids=["preprocessing-version", "golden-self-test"],
)
def test_signed_model_that_fails_a_device_check_is_refused(tmp_path, models, keys, bundles, change, step, words):
    models.install(bundles["a"], keys[1])
    before = state(models)
    if change.get("selftest") == "wrong outputs":
        selftest = json.loads(model_path().with_suffix(".json").read_text())["selftest"]
        for case in selftest["cases"]:
            case["output"] = list(reversed(case["output"]))  # benign <-> malignant
        change = {"selftest": selftest}
    bad = signed_bundle(model_copy(tmp_path / "c", "-x", **change), tmp_path / "c.zip", keys[0])
    with pytest.raises(BundleError) as exc:
        models.install(bad, keys[1])
    assert exc.value.step == step and words in str(exc.value)
    assert state(models) == before
    assert not list(models.dir.glob(".incoming-*")), "the checked copy is removed"


def test_unsigned_bundle_installs_only_when_the_config_allows_it(tmp_path, models, keys, bundles):
    unsigned = signed_bundle(model_copy(tmp_path / "u", "-unsigned"), tmp_path / "u.zip", None)
    with pytest.raises(BundleError, match="not signed"):
        models.install(unsigned, keys[1])
    installed = models.install(unsigned, keys[1], allow_unsigned=True)
    assert installed.key is None and models.target(CURRENT) == installed.id
    assert audit_events(models)[-1]["signed"] is False


def test_archive_checks_refuse_too_many_members(tmp_path, bundles):
    bad = rezip(bundles["a"], tmp_path / "many.zip", lambda f: f | {f"x{i}.txt": b"x" for i in range(10)})
    with pytest.raises(BundleError, match="members"):
        read_bundle(bad)


# --------------------------------------------------------------------------- rollback + fallback


def test_rollback_restores_the_previous_model_then_the_packaged_one(models, keys, bundles):
    a = models.install(bundles["a"], keys[1])
    b = models.install(bundles["b"], keys[1])
    assert (models.target(CURRENT), models.target(PREVIOUS)) == (b.id, a.id)

    in_force = models.rollback(keys[1])
    assert models.target(CURRENT) == a.id and in_force.model_version == bundles["version"]
    assert models.rollback(keys[1]).model_version == bundles["version"] + "-site"  # and back again
    assert models.target(CURRENT) == b.id

    rolled = [e for e in audit_events(models) if e["event"] == "model_rollback"]
    assert [e["to"] for e in rolled] == [a.id, b.id]

    # A model whose folder was damaged is not rolled back to.
    victim = models.dir / a.id / f"{a.name}.tflite"
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(BundleError) as exc:
        models.rollback(keys[1])
    assert exc.value.step == "sha256" and models.target(CURRENT) == b.id


def test_rollback_after_the_first_install_returns_to_the_packaged_model(models, keys, bundles):
    models.install(bundles["b"], keys[1])
    in_force = models.rollback(keys[1])
    assert models.target(CURRENT) is None and in_force.source == "packaged"
    with pytest.raises(BundleError, match="nothing to roll back"):
        ModelStore(models.data_dir / "elsewhere", model_path()).rollback(keys[1])


def test_app_falls_back_to_the_previous_model_then_the_packaged_one_and_says_so(make_app, models, keys, bundles):
    a = models.install(bundles["a"], keys[1])
    b = models.install(bundles["b"], keys[1])
    damaged = models.dir / b.id / f"{b.name}.tflite"
    damaged.write_bytes(b"\0" * 64)

    app = make_app(CLASSIFIER=None, MODEL=str(model_path()), DATA_DIR=str(models.data_dir))
    client = app.test_client()
    health = client.get("/healthz")
    assert health.status_code == 200, "a fallback model still screens"
    model = health.get_json()["model"]
    assert model["source"] == "previous" and "failed its checks" in model["fallback"]
    assert "does not match its manifest" in model["fallback_detail"]
    assert upload(client, lesion_jpeg(4)).get_json()["model_version"] == bundles["version"]
    assert "Fallback model in use" in client.get("/").get_data(as_text=True)
    assert audit_events(models)[-1]["event"] == "model_fallback"
    assert models.target(CURRENT) == b.id, "start-up never rewrites the links"

    (models.dir / a.id / f"{a.name}.json").write_text("{}")
    shutdown(app)  # one app per data directory: the restart
    app2 = make_app(CLASSIFIER=None, MODEL=str(model_path()), DATA_DIR=str(models.data_dir))
    stats = app2.test_client().get("/api/stats").get_json()["model"]
    assert stats["source"] == "packaged" and "previous model" in stats["fallback"]
    assert "installed model" in stats["fallback_detail"] and "previous model" in stats["fallback_detail"]


# --------------------------------------------------------------------------- reload in the running app


def test_install_while_screenings_are_queued_loses_none_and_they_run_on_the_new_model(make_app, models, keys, bundles):
    app = make_app(CLASSIFIER=None, MODEL=str(model_path()), DATA_DIR=str(models.data_dir))
    service = app.extensions["dermaedge"]
    release, first_in = threading.Event(), threading.Event()
    append = service.store.append

    def slow_append(*args, **kwargs):  # hold the worker on the first screening
        first_in.set()
        release.wait(10)
        return append(*args, **kwargs)

    service.store.append = slow_append
    results: dict[int, object] = {}

    def screen(i: int) -> None:
        results[i] = service.screen_upload(lesion_jpeg(i), operator=f"op-{i}")

    threads = [threading.Thread(target=screen, args=(0,))]
    threads[0].start()
    assert first_in.wait(10)
    threads += [threading.Thread(target=screen, args=(i,)) for i in (1, 2, 3)]
    for t in threads[1:]:
        t.start()
    wait_for(lambda: service.health()["queued"] == 3)

    installed = models.install(bundles["b"], keys[1])  # while one screening runs and three wait
    release.set()
    for t in threads:
        t.join(20)
    assert sorted(results) == [0, 1, 2, 3] and service.store.counts()["total"] == 4
    assert results[0].model_version == bundles["version"], "the running screening finishes on the old model"
    assert {results[i].model_version for i in (1, 2, 3)} == {installed.version}, "queued ones run on the new one"
    assert app.test_client().get("/api/stats").get_json()["model"]["model_version"] == installed.version


def test_idle_app_picks_up_a_rollback_within_seconds(make_app, models, keys, bundles):
    models.install(bundles["b"], keys[1])
    app = make_app(CLASSIFIER=None, MODEL=str(model_path()), DATA_DIR=str(models.data_dir))
    client = app.test_client()
    assert client.get("/api/stats").get_json()["model"]["source"] == "installed"
    models.rollback(keys[1])
    wait_for(lambda: client.get("/api/stats").get_json()["model"]["source"] == "packaged", timeout=5)


# --------------------------------------------------------------------------- command line


def test_model_commands_from_keygen_to_rollback(tmp_path, capsys, bundles):
    data, cfg_dir = tmp_path / "device-data", tmp_path / "etc"
    cfg_dir.mkdir()
    config = cfg_dir / "config.toml"
    config.write_text(f'data_dir = "{data}"\nmodel = "{model_path()}"\n')
    common = ["--config", str(config)]

    assert edge_app(["model", "keygen", str(tmp_path / "k"), "--name", "site-key", "--trust", *common]) == 0
    assert (tmp_path / "k" / "site-key.pem").stat().st_mode & 0o777 == 0o600
    assert (cfg_dir / "trusted_keys" / "site-key.pub").is_file()
    bundle = signed_bundle(model_copy(tmp_path / "m", "-cli"), tmp_path / "m.zip", tmp_path / "k" / "site-key.pem")
    capsys.readouterr()

    assert edge_app(["model", "install", str(bundle), *common]) == 0
    out = capsys.readouterr().out
    for step in ("archive", "signature", "sha256", "preprocessing", "golden self-test", "smoke screening", "current"):
        assert f"  {step}" in out and "ok" in out
    assert "signed by site-key" in out

    bad = rezip(bundle, tmp_path / "bad.zip", _edited_manifest)
    assert edge_app(["model", "install", str(bad), *common]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: install refused at the signature check") and "unchanged" in err

    assert edge_app(["model", "list", *common]) == 0
    listing = capsys.readouterr().out
    assert "* " in listing and "-cli" in listing and "key site-key" in listing and "packaged" in listing
    assert edge_app(["model", "list", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["installed"][0]["current"] is True

    assert edge_app(["model", "rollback", *common]) == 0
    assert "packaged model" in capsys.readouterr().out
    events = [json.loads(line)["event"] for line in (data / AUDIT_LOG).read_text().splitlines()]
    assert events == ["model_key_trusted", "model_install", "model_rollback"]


def test_unsigned_install_follows_the_config_setting(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{tmp_path / "d"}"\nmodel = "{model_path()}"\nallow_unsigned_models = true\n')
    bundle = signed_bundle(model_copy(tmp_path / "m"), tmp_path / "m.zip", None)
    assert edge_app(["model", "install", str(bundle), "--config", str(config)]) == 0
    assert "UNSIGNED" in capsys.readouterr().out
    config.write_text(config.read_text().replace("true", "false"))
    assert edge_app(["model", "install", str(bundle), "--config", str(config)]) == 1
    assert "not signed" in capsys.readouterr().err


# --------------------------------------------------------------------------- kill -9 during installs


@pytest.mark.slow
def test_kill_during_install_leaves_the_old_or_the_new_model_current(tmp_path):
    """A few kills here; `benchmarks/model_install_kill.py` runs 50 (figures in deploy/README.md)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "model_install_kill.py"), "--kills", "4", "--seed", "3",
         "--work-dir", str(tmp_path / "kill")],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["kills"] == 4 and summary["problems"] == 0
    assert summary["neither_current"] == 0


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("no", False), ("maybe", None)])
def test_allow_unsigned_models_setting_is_a_checked_boolean(tmp_path, value, expected):
    from edge_app.config import ConfigError, maintenance_setting

    config = tmp_path / "c.toml"
    config.write_text("")
    env = {"EDGE_APP_ALLOW_UNSIGNED_MODELS": value}
    if expected is None:
        with pytest.raises(ConfigError, match="true or false"):
            maintenance_setting("allow_unsigned_models", config, env=env)
    else:
        assert maintenance_setting("allow_unsigned_models", config, env=env) is expected
    assert maintenance_setting("allow_unsigned_models", config, env={}) is False


def test_sign_refuses_a_model_that_does_not_match_its_manifest_and_keygen_never_overwrites(tmp_path, keys):
    from edge_app.bundle import model_files_for, write_bundle

    tflite = model_copy(tmp_path / "m")
    tflite.write_bytes(tflite.read_bytes()[:-1])
    with pytest.raises(ValueError, match="does not match its manifest"):
        write_bundle(model_files_for(tflite), tmp_path / "m.zip", keys[0])
    assert not (tmp_path / "m.zip").exists()
    before = keys[0].read_bytes()
    with pytest.raises(FileExistsError):
        generate_key(keys[0].parent, KEY_NAME)
    assert keys[0].read_bytes() == before


def test_a_second_install_while_one_runs_is_refused(models, keys, bundles):
    import fcntl

    models.dir.mkdir(parents=True)
    with open(models.dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BundleError) as exc:
            models.install(bundles["a"], keys[1])
    assert exc.value.step == "lock" and models.target(CURRENT) is None
