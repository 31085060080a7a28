"""The systemd notify path: READY=1 and WATCHDOG=1 reach $NOTIFY_SOCKET; a hung or unhealthy app stops the pings.

A real AF_UNIX datagram socket stands in for systemd (which does exactly this: it
binds the socket, passes its path in NOTIFY_SOCKET and the interval in WATCHDOG_USEC).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_app.notify import Watchdog, sd_notify, watchdog_interval_s

from .conftest import REPO, TINY_MODEL


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def messages(self, timeout: float) -> list[str]:
        """Everything that arrives within `timeout` seconds."""
        return self.wait_for(None, timeout)

    def wait_for(self, wanted: str | None, timeout: float) -> list[str]:
        """Messages up to and including the first one containing `wanted` (or all, on timeout)."""
        out, deadline = [], time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                out.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
            if wanted is not None and wanted in out[-1]:
                break
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    fake = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(fake.path))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield fake
    fake.close()


def lines(messages: list[str]) -> list[str]:
    return [line for m in messages for line in m.splitlines()]


def test_ready_arrives_on_the_notify_socket(systemd):
    assert sd_notify("READY=1\nSTATUS=model loaded") is True
    assert lines(systemd.messages(0.5)) == ["READY=1", "STATUS=model loaded"]


def test_notify_is_a_no_op_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False


def test_notify_to_a_vanished_socket_does_not_crash_the_app(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sd_notify("WATCHDOG=1") is False


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")  # WatchdogSec=30s
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval_s() is None


def test_healthy_app_pings_and_unhealthy_app_stops_pinging(systemd, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s -> a ping every 0.05 s
    healthy = threading.Event()
    healthy.set()
    dog = Watchdog(healthy.is_set)
    assert dog.interval_s == pytest.approx(0.05)
    dog.start()
    try:
        assert lines(systemd.messages(0.5)).count("WATCHDOG=1") >= 3
        healthy.clear()  # e.g. the capture loop has not delivered a frame for too long
        systemd.messages(0.2)  # a ping already in flight may still land
        assert systemd.messages(0.5) == []
        healthy.set()  # recovered before systemd's deadline
        assert "WATCHDOG=1" in lines(systemd.messages(0.5))
    finally:
        dog.stop()


def test_hung_health_check_stops_the_pings(systemd):
    release = threading.Event()
    calls = []

    def hung_worker_probe() -> bool:
        calls.append(1)
        if len(calls) > 2:
            release.wait(10)  # the inference worker is stuck: the probe never returns
        return True

    dog = Watchdog(hung_worker_probe, interval_s=0.05)
    dog.start()
    try:
        first = lines(systemd.messages(1.0))
        assert first.count("WATCHDOG=1") == 2
        assert systemd.messages(0.4) == []
    finally:
        release.set()
        dog.stop()


def test_failing_health_check_counts_as_unhealthy(systemd):
    def broken_probe() -> bool:
        raise RuntimeError("camera gone")

    dog = Watchdog(broken_probe, interval_s=0.05)
    dog.start()
    try:
        assert systemd.messages(0.4) == []
    finally:
        dog.stop()


def test_watchdog_does_nothing_when_systemd_did_not_ask_for_one(systemd, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    dog = Watchdog(lambda: True)
    dog.start()
    assert dog._thread is None
    assert systemd.messages(0.2) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_sends_ready_then_watchdog_pings(tmp_path):
    if importlib.util.find_spec("edge_app.cli.serve") is None:
        pytest.skip("edge-app serve is not implemented yet (edge_app/cli/serve.py missing)")
    fake = FakeSystemd(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_APP_", "WATCHDOG_", "NOTIFY_"))}
    env.update(NOTIFY_SOCKET=str(fake.path), WATCHDOG_USEC="1000000", HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "edge_app",
        "serve",
        "--camera",
        "none",
        "--port",
        str(_free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        str(TINY_MODEL),
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        until_ready = lines(fake.wait_for("READY=1", timeout=60))
        if "READY=1" not in until_ready:
            proc.kill()
            pytest.fail(f"no READY=1 from `edge-app serve`; got {until_ready}; output:\n{proc.communicate()[0]}")
        assert "WATCHDOG=1" in lines(fake.wait_for("WATCHDOG=1", timeout=5)), "no watchdog ping after READY=1"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        fake.close()
