"""`edge-bench`: the flags and JSON keys of its contract, on small inputs."""

from __future__ import annotations

import json

import cv2
import pytest

from edge_app import bench
from tests.conftest import make_lesion_image

STAT_KEYS = {"count", "mean", "std", "min", "p50", "p90", "p99", "max"}


def run_json(capsys, *argv: str) -> dict:
    assert bench.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_images_are_found_recursively_and_same_named_files_in_two_folders_are_both_reported(tmp_path, model_path, capsys):
    for folder, size in (("a", (640, 480)), ("b/deeper", (200, 150))):
        (tmp_path / folder).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / folder / "lesion.jpg"), make_lesion_image(*size))
    (tmp_path / "notes.txt").write_text("not an image")
    report = run_json(capsys, "--images", str(tmp_path), "--runs", "3", "--warmup", "0", "--model", str(model_path))
    rows = {r["input"]: r for r in report["results"]}
    assert set(rows) == {"a/lesion.jpg", "b/deeper/lesion.jpg"}
    assert {r["source"] for r in rows.values()} == {"file"}  # uploads: decode inside total
    assert rows["a/lesion.jpg"]["frame"] == "640x480" and rows["b/deeper/lesion.jpg"]["frame"] == "200x150"
    for r in rows.values():
        assert {"decode", "quality", "inference", "total"} <= r["stages"].keys()
        assert all(STAT_KEYS == set(s) for s in r["stages"].values())
        assert r["stages"]["total"]["count"] == 3
        assert r["stages"]["total"]["p50"] >= r["stages"]["decode"]["p50"] + r["stages"]["inference"]["p50"]
        assert {"init_ms", "first_inference_ms", "peak_rss_mb", "runtime", "model_sha256", "frame", "threads"} <= r.keys()
    assert report["peak_rss_mb"] > 0 and report["model_sha256"] == rows["a/lesion.jpg"]["model_sha256"]


def test_synthetic_frames_are_timed_as_files_and_as_camera_arrays_for_each_thread_count(model_path, capsys):
    report = run_json(capsys, "--frame", "320x240", "--threads", "1,2", "--runs", "2", "--warmup", "0",
                      "--model", str(model_path))
    got = {(r["source"], r["threads"]) for r in report["results"]}
    assert got == {("file", 1), ("file", 2), ("array", 1), ("array", 2)}
    assert report["threads"] == [1, 2] and set(report["init_ms"]) == {"1", "2"}
    for r in report["results"]:
        assert r["frame"] == "320x240"
        assert ("decode" in r["stages"]) == (r["source"] == "file")


def test_seconds_times_for_that_long_instead_of_a_run_count(model_path, capsys):
    report = run_json(capsys, "--frame", "200x150", "--source", "array", "--seconds", "0.3", "--warmup", "0",
                      "--model", str(model_path))
    (r,) = report["results"]
    assert r["stages"]["total"]["count"] >= 2


def test_compare_times_the_naive_order_and_keras_in_the_same_run(model_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "keras_predict_ms", lambda *a, **k: ([40.0, 50.0, 60.0], "fake Keras model"))
    report = run_json(capsys, "--frame", "640x480", "--source", "file", "--runs", "3", "--warmup", "0", "--compare",
                      "--model", str(model_path))
    c = report["results"][0]["compare"]
    assert {"naive_total_p50", "keras_predict_p50", "naive_over_device", "keras_over_litert"} <= c.keys()
    assert c["keras_predict_p50"] == 50.0
    assert c["keras_over_litert"] == pytest.approx(50.0 / c["litert_inference_p50"], rel=0.01)
    assert c["naive_over_device"] == pytest.approx(c["naive_total_p50"] / c["device_total_p50"], rel=0.01)


def test_compare_without_tensorflow_still_reports_the_naive_order(model_path, capsys, monkeypatch):
    def no_tf(*args, **kwargs):
        raise ImportError("TensorFlow is not installed")

    monkeypatch.setattr(bench, "keras_predict_ms", no_tf)
    report = run_json(capsys, "--frame", "200x150", "--source", "array", "--runs", "2", "--compare", "--model", str(model_path))
    c = report["results"][0]["compare"]
    assert c["keras_predict_p50"] is None and "TensorFlow is not installed" in c["keras_model"]
    assert c["naive_total_p50"] > 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--frame", "12x"], "WIDTHxHEIGHT"),
    (["--threads", "0"], "thread counts"),
    (["--runs", "5", "--seconds", "1"], "not allowed with"),
    (["--source", "camera"], "invalid choice"),
])
def test_bad_flags_are_refused_with_a_one_line_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_an_images_folder_without_images_is_an_error(tmp_path, capsys):
    assert bench.main(["--images", str(tmp_path)]) == 2
    assert "no image files" in capsys.readouterr().err


def test_every_flag_has_help_text():
    parser = bench.build_parser()
    assert all(a.help for a in parser._actions)
