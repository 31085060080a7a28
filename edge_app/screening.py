"""The use case: upload bytes or camera frame -> device path -> record.

The device path (`device_path.screen_bytes` / `screen_image`: scaled decode,
quality gate, six stages, inference) is the same one the CLI and `edge-bench`
run. The record keeps what was screened: an upload's own bytes (byte-identical,
sha256 of those bytes), a camera frame encoded once as JPEG; plus a thumbnail.

Screenings run one at a time on a single inference worker thread (the model
and a 2-core Pi gain nothing from parallel inference); concurrent taps queue and
each caller waits for its own result. `health()` / `is_healthy()` tell the
systemd watchdog and `/healthz` whether the worker and the capture loop are alive
and not stuck: each refreshes a heartbeat at least every `tick_s`, even idle.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from . import renditions
from .camera.loop import CaptureLoop
from .device_path import DeviceResult, screen_bytes, screen_image
from .images import ImageDecodeError, encode_jpeg, file_extension, reduce_to
from .latency import LatencyStats
from .runtime import Classifier
from .site import SiteWatcher
from .store import DuplicateRequest, RecordNotFound, ScreeningRecord, ScreeningStore

log = logging.getLogger(__name__)

THUMB_SIDE = 160
STALE_AFTER_S = 15.0  # a heartbeat older than this means a thread is stuck


class QueueFull(RuntimeError):
    """Too many screenings waiting (HTTP 503)."""


@dataclass
class _Job:
    """One screening: an upload's bytes, or a camera frame with its JPEG (encoded once)."""

    data: bytes  # stored as they are: the upload's own bytes, or the frame's JPEG
    source: str
    operator: str
    lesion_ref: str
    corrects: str | None
    image: np.ndarray | None = None  # camera frame, already scaled; None for an upload (decoded on the worker)
    frame: np.ndarray | None = None  # camera frame at full resolution, for its screen rendition (made after the reply)
    frame_size: tuple[int, int] = (0, 0)  # camera frame's own (width, height)
    max_pixels: int | None = None  # upload's pixel cap
    extra_timings: dict[str, float] = field(default_factory=dict)
    queued_at: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)
    request_id: str | None = None  # the client's id for this capture/upload intent


class ScreeningService:
    def __init__(
        self,
        classifier: Classifier,
        store: ScreeningStore,
        capture_loop: CaptureLoop,
        stats: LatencyStats | None = None,
        max_queue: int = 16,
        jpeg_quality: int = 92,
        tick_s: float = 1.0,
        model_watch: Any = None,
    ) -> None:
        self.classifier = classifier
        self.model_watch = model_watch  # model_store.ModelWatch: swaps in an installed model between screenings
        self.store = store
        self.capture_loop = capture_loop
        self.stats = stats or LatencyStats()
        self.jpeg_quality = jpeg_quality
        self.tick_s = tick_s
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._heartbeat = time.monotonic()
        self._busy_since: float | None = None
        self._in_flight: dict[str, Future] = {}
        self._in_flight_lock = threading.Lock()
        self._capturing = 0  # captures between their request's arrival and their job's queueing
        self._capturing_lock = threading.Lock()
        self.started_at = time.time()
        self.site = SiteWatcher(store.data_dir)  # the threshold in force: the site's when calibrated, else the model's
        self.site.refresh(classifier)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.capture_loop.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference-worker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        self.capture_loop.stop()

    # ------------------------------------------------------------------ use cases

    def once(self, request_id: str | None, screen: Callable[[], ScreeningRecord],
             timeout_s: float = 60.0) -> tuple[ScreeningRecord, bool]:
        """Run `screen` once per request id: (record, True) the first time, (first record, False) on a repeat.

        A repeat that arrives while the first is still running waits for it (a double
        tap, a retried POST); one that arrives later, also after a restart, finds the
        stored record. `screen` must store `request_id` with its record.
        """
        if request_id is None:
            return screen(), True
        with self._in_flight_lock:
            first = self._in_flight.get(request_id)
            if first is None:
                stored = self.store.get_by_request_id(request_id)
                if stored is not None:
                    return stored, False
                mine: Future = Future()
                self._in_flight[request_id] = mine
        if first is not None:
            return first.result(timeout=timeout_s), False
        try:
            record = screen()
        except DuplicateRequest as exc:  # another process stored it first
            mine.set_result(exc.record)
            return exc.record, False
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            mine.set_result(record)
            return record, True
        finally:
            with self._in_flight_lock:
                self._in_flight.pop(request_id, None)

    def screen_upload(self, data: bytes, operator: str = "", lesion_ref: str = "", corrects: str | None = None,
                      max_pixels: int | None = None, request_id: str | None = None) -> ScreeningRecord:
        """Image file bytes -> stored record (the bytes as they came). Raises ImageDecodeError (nothing stored)."""
        return self._submit(_Job(data, "upload", operator, lesion_ref, corrects, max_pixels=max_pixels,
                                 request_id=request_id))

    def screen_capture(self, operator: str = "", lesion_ref: str = "", corrects: str | None = None,
                       request_id: str | None = None, frame_id: int | None = None) -> ScreeningRecord:
        """Full-quality frame from the live camera -> stored record. Raises CameraUnavailable.

        `frame_id`: the preview frame that was on screen at the tap; that very frame is screened, or
        FrameExpired (a CameraError) is raised when it is no longer kept. Without it, a new still."""
        with self._capturing_lock:
            self._capturing += 1  # from now on the live preview and guidance step aside (is_busy)
        try:
            return self._screen_capture(operator, lesion_ref, corrects, request_id, frame_id)
        finally:
            with self._capturing_lock:
                self._capturing -= 1

    def _screen_capture(self, operator: str, lesion_ref: str, corrects: str | None, request_id: str | None,
                        frame_id: int | None) -> ScreeningRecord:
        start = time.perf_counter()
        frame = self.capture_loop.capture() if frame_id is None else self.capture_loop.frame(frame_id)
        capture_ms = (time.perf_counter() - start) * 1000.0
        t0 = time.perf_counter()
        jpeg = encode_jpeg(frame, self.jpeg_quality)  # the one encode: this JPEG is the record's image
        t1 = time.perf_counter()
        height, width = frame.shape[:2]
        image = reduce_to(frame, self.classifier.decode_min_side)
        timings = {"capture": capture_ms, "encode": (t1 - t0) * 1000.0, "scale": (time.perf_counter() - t1) * 1000.0}
        return self._submit(_Job(jpeg, self.capture_loop.camera.kind, operator, lesion_ref, corrects, image=image,
                                 frame=frame, frame_size=(width, height), extra_timings=timings, request_id=request_id))

    def _submit(self, job: _Job, timeout_s: float = 60.0) -> ScreeningRecord:
        """Queue one screening on the worker and wait for its own result."""
        if job.corrects is not None and not self.store.exists(job.corrects):
            raise RecordNotFound(job.corrects)
        if not self.worker_alive():
            raise RuntimeError("the inference worker is not running")
        job.queued_at = time.perf_counter()
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull("too many screenings waiting; try again in a moment") from None
        return job.future.result(timeout=timeout_s)

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            try:
                job = self._jobs.get(timeout=self.tick_s)
            except queue.Empty:
                self._reload_model()
                continue
            if job is None:
                return
            self._reload_model()
            if not job.future.set_running_or_notify_cancel():
                continue
            self._busy_since = time.monotonic()
            try:
                job.future.set_result(self._process(job))
            except (ImageDecodeError, ValueError, DuplicateRequest) as exc:  # the caller's input: answered, not a fault
                job.future.set_exception(exc)
            except BaseException as exc:
                log.exception("screening failed")
                job.future.set_exception(exc)
            finally:
                job = None  # drop the frame / bytes now, not when the next job arrives
                self._busy_since = None

    def _reload_model(self) -> None:
        """Between screenings, on this thread: a queued screening waits for the new model, never is lost."""
        if self.model_watch is None:
            return
        try:
            classifier = self.model_watch.poll()
        except Exception:  # the model in force keeps serving
            log.exception("model reload check failed")
            return
        if classifier is not None:
            self.classifier = classifier

    def model_in_force(self) -> dict[str, Any]:
        """Which model serves, where it came from, and any fallback (for /healthz, /api/stats and the screen)."""
        return self.model_watch.status() if self.model_watch is not None else {}

    def _process(self, job: _Job) -> ScreeningRecord:
        wait_ms = (time.perf_counter() - job.queued_at) * 1000.0
        timings = {k: round(v, 3) for k, v in job.extra_timings.items()} | {"queue_wait": round(wait_ms, 3)}
        result: DeviceResult
        threshold = self.site.threshold(self.classifier)
        explain = self.classifier.has_scope
        if job.image is None:
            result = screen_bytes(self.classifier, job.data, threshold=threshold, max_pixels=job.max_pixels, explain=explain)
        else:
            result = screen_image(self.classifier, job.image, threshold=threshold, explain=explain)
            job.image = None
            result.width, result.height = job.frame_size
        t1 = time.perf_counter()
        thumb = encode_jpeg(_thumbnail(result.image), 80)
        timings |= result.timings_ms
        record = self.store.append(  # the device path's decision; a no verdict keeps its probability for audit
            job.data, thumb, width=result.width, height=result.height,
            extension="jpg" if job.source != "upload" else file_extension(result.format),
            classification=result.to_dict() | {"timings_ms": timings},
            quality_flags=result.quality.flags, quality_metrics=result.quality.metrics,
            operator=job.operator, lesion_ref=job.lesion_ref, source=job.source, corrects=job.corrects,
            request_id=job.request_id,
        )
        self._save_rendition(job, record, result.image)
        # Storing happens after the row is written, so its time is reported but not part of the record.
        record.timings_ms["store"] = round((time.perf_counter() - t1) * 1000.0, 3)
        self.stats.add(record.timings_ms)
        return record

    def _save_rendition(self, job: _Job, record: ScreeningRecord, analysed: np.ndarray) -> None:
        """The record's screen rendition, before the reply, from pixels at hand (no second decode): a camera
        frame at full resolution, an upload as the device path decoded it (a big JPEG at 1/2-1/8 scale, what
        the quality gate saw). A failure leaves it to be made from the original on first view."""
        frame, job.frame = job.frame, None
        pixels = frame if frame is not None else analysed
        try:
            renditions.ensure(self.store.data_dir / record.image_path, lambda: renditions.from_frame(pixels))
        except Exception:  # the record is stored; its rendition is made on first view instead
            log.exception("screen rendition of %s not made now; made on first view", record.id)

    def record_end_to_end(self, ms: float) -> None:
        """Request-to-response time as seen by the web layer (includes capture and queueing)."""
        self.stats.add({"end_to_end": ms})

    # ------------------------------------------------------------------ health

    def is_busy(self) -> bool:
        """A screening is running or waiting, or a capture is being taken (the live preview and guidance step aside)."""
        return self._capturing > 0 or self._busy_since is not None or not self._jobs.empty()

    def worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        """Everything /healthz and the watchdog need, with a reason for each failure."""
        now = time.monotonic()
        worker_age = now - self._heartbeat
        busy_s = now - self._busy_since if self._busy_since is not None else 0.0
        loop_age = self.capture_loop.heartbeat_age_s()
        writable, store_reason = self.store.is_writable()
        problems = []
        if self.classifier is None:
            problems.append("model not loaded")
        if not writable:
            problems.append(store_reason)
        if not self.worker_alive():
            problems.append("inference worker thread is not running")
        elif worker_age > STALE_AFTER_S and busy_s > STALE_AFTER_S:
            problems.append(f"inference worker stuck for {busy_s:.0f} s")
        elif worker_age > STALE_AFTER_S and self._busy_since is None:
            problems.append(f"inference worker heartbeat is {worker_age:.0f} s old")
        if not self.capture_loop.is_alive():
            problems.append("capture loop thread is not running")
        elif loop_age > STALE_AFTER_S:
            problems.append(f"capture loop heartbeat is {loop_age:.0f} s old (camera driver hung?)")
        return {
            "healthy": not problems,
            "problems": problems,
            "model_loaded": self.classifier is not None,
            "store_writable": writable,
            "worker_alive": self.worker_alive(),
            "worker_heartbeat_age_s": round(worker_age, 2),
            "capture_loop_alive": self.capture_loop.is_alive(),
            "capture_loop_heartbeat_age_s": round(loop_age, 2),
            "queued": self._jobs.qsize(),
            "model": self.model_in_force(),
        }

    def is_healthy(self) -> bool:
        """For `notify.Watchdog`: model loaded, store writable, worker and capture loop alive and fresh."""
        return bool(self.health()["healthy"])


def _thumbnail(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = THUMB_SIDE / min(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
