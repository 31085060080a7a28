"""systemd notify protocol (sd_notify): READY=1, WATCHDOG=1, STATUS=...

A datagram to the socket named in $NOTIFY_SOCKET. Outside systemd (no
variable) every call is a no-op, so the app runs the same on a laptop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send one notification; True if it was sent, False outside systemd or on error."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify(%r) failed: %s", message, exc)
        return False


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC), or None when not enabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 1e6 / 2)
    except ValueError:
        return None


class Watchdog:
    """Pings WATCHDOG=1 every interval while `is_healthy()` is true.

    When the capture loop or the inference worker hangs, `is_healthy()` turns
    false, the pings stop, and systemd restarts the service.
    """

    def __init__(self, is_healthy: Callable[[], bool], interval_s: float | None = None) -> None:
        self.is_healthy = is_healthy
        self.interval_s = interval_s if interval_s is not None else watchdog_interval_s()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.interval_s or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                healthy = self.is_healthy()
            except Exception:
                log.exception("health probe failed")
                healthy = False
            if healthy:
                sd_notify("WATCHDOG=1")
            else:
                log.error("service unhealthy: withholding the systemd watchdog ping")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
