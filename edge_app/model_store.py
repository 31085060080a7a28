"""Installed models: verified install, atomic switch, rollback, and the model the app serves.

    <data_dir>/models/<sha256>/          one installed model: <name>.tflite, <name>.json, MODEL_CARD.md,
                                         SIGNATURE.json (if signed), INSTALLED.json (when, which key, from where)
    <data_dir>/models/current  -> <sha256>   the model in force (a relative symlink)
    <data_dir>/models/previous -> <sha256>   the one before it (rollback target)

`<sha256>` is the sha256 of the model's manifest, which pins the `.tflite` by its own sha256: the
same weights with a new site threshold are a new folder, and can be rolled back like any model.
No `current` link means the model packaged with the app (`model` in the config) is in force; it is
also the last fallback.

Install checks, in order, and stops at the first failure (`BundleError.step`): archive safety,
signature against the trusted keys, sha256, preprocessing version (all in memory), then, on a copy
unpacked into `models/.incoming-*`, the golden self-test on this device's runtime and a smoke
screening. Only then is the copy renamed to `models/<sha256>/` and `current` switched by renaming
a new symlink over it (`rename(2)` is atomic): a kill -9 at any moment leaves `current` on the old
or the new model, never on neither (`benchmarks/model_install_kill.py`). Leftover `.incoming-*`,
`.trash-*` and temporary links are removed by the next install or rollback; an exclusive lock
(`models/.lock`) keeps two of them from running at once.

The app reads `current` at start (falling back to `previous`, then to the packaged model, if a
model fails its checks) and again between screenings (`ModelWatch`). Installs, rollbacks and
fallbacks are written to `<data_dir>/audit.log`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .bundle import (
    CARD_NAME,
    BundleError,
    ModelFiles,
    Signer,
    read_bundle,
    read_model_dir,
    sha256_bytes,
    trusted_keys,
    verify_model_sha256,
    verify_signature,
)
from .fileio import AUDIT_LOG, append_audit, fsync_dir, write_atomic
from .manifest import Manifest, selftest_input
from .preprocess import STAGES, Preprocessor
from .runtime import Classification, Classifier, ModelError

log = logging.getLogger(__name__)

MODELS = "models"
CURRENT = "current"
PREVIOUS = "previous"
INFO = "INSTALLED.json"
LOCK = ".lock"
DEBRIS_PREFIXES = (".incoming-", ".trash-", ".current.tmp-", ".previous.tmp-")

Progress = Callable[[str, str], None]


def _quiet(step: str, detail: str) -> None:
    log.debug("%s: %s", step, detail)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class InstalledModel:
    """One folder under `<data_dir>/models/`, with what INSTALLED.json says about it."""

    folder: Path
    name: str
    version: str
    model_sha256: str
    installed_at: str
    key: str | None  # the trusted key that verified it; None = installed unsigned
    bundle: str

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def model_path(self) -> Path:
        return self.folder / f"{self.name}.tflite"

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()} | {"id": self.id}


@dataclass
class ModelInForce:
    """The model the app serves, where it came from, and why it is not the installed one if it is not."""

    source: str  # "installed" | "previous" | "packaged"
    model_path: Path
    model_sha256: str
    model_version: str
    signed_by: str | None = None  # the trusted key that verified it at install
    installed_at: str | None = None
    fallback: str | None = None  # one sentence for the screen: why the installed model is not in force (None = no fallback)
    fallback_detail: str | None = None  # every check that failed, with paths (for /healthz, the log and audit.log)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_path"] = str(self.model_path)
        return d


# --------------------------------------------------------------------------- the checks


def smoke_screening(classifier: Classifier) -> Classification:
    """Screen a synthetic lesion frame through the six stages and the model. Everything comes from
    the model's manifest (input size, labels); the result must be usable probabilities."""
    size = classifier.manifest.input_size * 4
    rgb = selftest_input("lesion", size)[0]
    frame = np.ascontiguousarray(np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)[..., ::-1])
    try:
        result = classifier.classify(frame)
    except Exception as exc:  # noqa: BLE001 - any failure here means the model cannot screen
        raise BundleError("smoke", f"smoke screening failed ({type(exc).__name__}: {exc})") from None
    probs = np.asarray(list(result.probabilities.values()), dtype=np.float64)
    if not (np.all(np.isfinite(probs)) and probs.min() >= 0.0 and probs.max() <= 1.0 and abs(probs.sum() - 1.0) <= 0.02):
        raise BundleError("smoke", f"smoke screening gave unusable probabilities {result.probabilities}: refused")
    missing = [s for s in STAGES if s not in result.timings_ms]
    if missing:
        raise BundleError("smoke", f"smoke screening skipped preprocessing stage(s) {missing}: refused")
    return result


def check_files(files: ModelFiles, keys_dir: Path, allow_unsigned: bool, progress: Progress) -> tuple[Manifest, Signer | None]:
    """Signature, sha256 and preprocessing version, in that order, on files in memory."""
    try:
        keys = trusted_keys(keys_dir)
    except ValueError as exc:
        raise BundleError("signature", str(exc)) from None
    signer = verify_signature(files, keys, keys_dir, allow_unsigned)
    progress("signature", f"key {signer.key} (fingerprint {signer.public_key_sha256[:16]})" if signer
             else "UNSIGNED (allowed by allow_unsigned_models = true)")
    manifest = files.manifest()
    progress("sha256", verify_model_sha256(files, manifest)[:16] + "... matches the manifest")
    try:
        pre = Preprocessor.from_description(manifest.preprocessing)
    except ValueError as exc:
        raise BundleError("preprocessing", f"{files.origin}: {exc}") from None
    progress("preprocessing", f"{pre.name} {pre.version}")
    return manifest, signer


def check_on_runtime(model_path: Path, num_threads: int, progress: Progress) -> Classifier:
    """Golden self-test on this device's runtime (the Classifier's own check), then a smoke screening."""
    try:
        classifier = Classifier(model_path, num_threads=num_threads)
    except ModelError as exc:
        raise BundleError("selftest", str(exc)) from None
    progress("golden self-test", f"{len(classifier.manifest.selftest.get('cases', []))} cases, max difference "
                                 f"{classifier.selftest_max_diff:.4f} on {classifier.runtime_name}")
    result = smoke_screening(classifier)
    progress("smoke screening", f"p({classifier.manifest.positive_label}) "
                                f"{result.malignant_probability:.3f}, {result.timings_ms.get('total', 0):.0f} ms")
    return classifier


# --------------------------------------------------------------------------- the store


class ModelStore:
    def __init__(self, data_dir: str | Path, packaged: str | Path, app_version: str = __version__) -> None:
        self.data_dir = Path(data_dir)
        self.dir = self.data_dir / MODELS
        self.packaged = Path(packaged)
        self.app_version = app_version

    # ------------------------------------------------------------------ reading

    def target(self, link: str = CURRENT) -> str | None:
        """The folder name `current` / `previous` points to, or None."""
        try:
            return os.readlink(self.dir / link)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def describe(self, folder: Path) -> InstalledModel:
        try:
            info = json.loads((folder / INFO).read_text())
        except (OSError, ValueError):
            info = {}
        name = info.get("name")
        if not name:
            tflites = sorted(p for p in folder.glob("*.tflite") if not p.name.endswith(".scope.tflite"))
            name = tflites[0].stem if tflites else "?"
        return InstalledModel(folder, name, str(info.get("version", "?")), str(info.get("model_sha256", "?")),
                              str(info.get("installed_at", "?")), info.get("key"), str(info.get("bundle", "?")))

    def installed(self) -> list[InstalledModel]:
        if not self.dir.is_dir():
            return []
        found = [self.describe(p) for p in self.dir.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
        return sorted(found, key=lambda m: m.installed_at)

    def packaged_in_force(self, classifier: Classifier, fallback: str | None = None) -> ModelInForce:
        return ModelInForce("packaged", classifier.model_path, classifier.sha256, classifier.manifest.version, fallback=fallback)

    def _in_force(self, source: str, folder: Path, classifier: Classifier, fallback: str | None = None) -> ModelInForce:
        m = self.describe(folder)
        return ModelInForce(source, classifier.model_path, classifier.sha256, classifier.manifest.version, m.key, m.installed_at,
                            fallback)

    def _folder_model(self, folder_name: str) -> Path:
        folder = self.dir / folder_name
        if not folder.is_dir():
            raise ModelError(f"installed model folder {folder} is missing")
        return folder / f"{read_model_dir(folder).name}.tflite"

    def load(self, folder_name: str | None, num_threads: int = 2) -> tuple[Classifier, ModelInForce]:
        """The model in `models/<folder_name>` (None: the packaged one), loaded and checked."""
        if folder_name is None:
            classifier = Classifier(self.packaged, num_threads=num_threads)
            return classifier, self.packaged_in_force(classifier)
        try:
            model_path = self._folder_model(folder_name)
        except (BundleError, OSError) as exc:
            raise ModelError(str(exc)) from None
        classifier = Classifier(model_path, num_threads=num_threads)
        return classifier, self._in_force("installed", self.dir / folder_name, classifier)

    def load_for_serving(self, num_threads: int = 2) -> tuple[Classifier, ModelInForce]:
        """The installed model, else the previous one, else the packaged one: the first that passes its
        checks (sha256, preprocessing version, golden self-test). A fallback is audited and reported."""
        failures: dict[str, str] = {}  # "installed model 436a3cb859e2" -> what failed
        current, previous = self.target(CURRENT), self.target(PREVIOUS)
        for source, folder_name in (("installed", current), ("previous", previous)):
            if folder_name is None or (source == "previous" and folder_name == current):
                continue
            try:
                classifier, in_force = self.load(folder_name, num_threads)
            except ModelError as exc:
                failures[f"{source} model {folder_name[:12]}"] = str(exc)
                continue
            in_force.source = source
            return classifier, self._fallback(in_force, failures)
        try:
            classifier = Classifier(self.packaged, num_threads=num_threads)
        except ModelError as exc:
            if failures:
                raise ModelError("; ".join(f"{k}: {v}" for k, v in failures.items()) + f"; packaged model: {exc}") from None
            raise
        return classifier, self._fallback(self.packaged_in_force(classifier), failures)

    def _fallback(self, in_force: ModelInForce, failures: dict[str, str]) -> ModelInForce:
        if failures:
            in_force.fallback = (f"{' and '.join(failures)} failed {'its' if len(failures) == 1 else 'their'} checks at start; "
                                 f"serving the {in_force.source} model {in_force.model_version}")
            in_force.fallback_detail = "; ".join(f"{k}: {v}" for k, v in failures.items())
            log.error("model fallback: %s (%s)", in_force.fallback, in_force.fallback_detail)
            self.audit("model_fallback", to=in_force.source, model_sha256=in_force.model_sha256, version=in_force.model_version,
                       reason=in_force.fallback_detail)
        return in_force

    def audit(self, event: str, **fields: Any) -> None:
        try:
            append_audit(self.data_dir, event, self.app_version, **fields)
            self._own(self.data_dir / AUDIT_LOG)
        except OSError as exc:  # a read-only data dir must not stop the app from serving
            log.error("cannot write %s to %s: %s", event, self.data_dir / AUDIT_LOG, exc)

    # ------------------------------------------------------------------ changing

    def install(self, bundle: str | Path, keys_dir: Path, allow_unsigned: bool = False, num_threads: int = 2,
                progress: Progress = _quiet) -> InstalledModel:
        """Verify `bundle` and make it the current model. Raises BundleError, leaving `current` as it was."""
        bundle = Path(bundle)
        with self._locked():
            files = read_bundle(bundle)
            progress("archive", f"{len(files.files)} members, {sum(map(len, files.files.values())) / 1e6:.1f} MB unpacked, "
                                "names, sizes and CRCs ok")
            manifest, signer = check_files(files, keys_dir, allow_unsigned, progress)
            folder_name = sha256_bytes(files.manifest_bytes)
            info = {"name": files.name, "version": manifest.version, "model_sha256": manifest.sha256, "installed_at": _now(),
                    "key": signer.key if signer else None, "key_sha256": signer.public_key_sha256 if signer else None,
                    "signed_at": signer.signed_at if signer else None, "bundle": bundle.name,
                    "bundle_sha256": sha256_bytes(bundle.read_bytes()), "app_version": self.app_version}
            staging = self.dir / f".incoming-{secrets.token_hex(6)}"
            try:
                self._write_folder(staging, files, info)
                check_on_runtime(staging / files.tflite_name, num_threads, progress)
                folder = self._commit_folder(staging, folder_name)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            progress("unpacked", str(folder))
            was = self.target(CURRENT)
            installed = self.describe(folder)
            # Audited before the switch: a model never becomes current without its line in audit.log
            # (a kill between the two leaves a line for a switch that did not happen, never the reverse).
            self.audit("model_install", model=installed.name, version=installed.version, model_sha256=installed.model_sha256,
                       folder=folder_name, key=installed.key, signed=signer is not None, bundle=str(bundle),
                       bundle_sha256=info["bundle_sha256"], previous=was)
            self._switch(folder_name)
            progress("current", f"{folder_name[:12]} (was {was[:12] if was else 'the packaged model'})")
            return installed

    def rollback(self, keys_dir: Path, allow_unsigned: bool = False, num_threads: int = 2,
                 progress: Progress = _quiet) -> ModelInForce:
        """Back to the previous model (the packaged one when there is none), after the same checks."""
        with self._locked():
            current, previous = self.target(CURRENT), self.target(PREVIOUS)
            if current is None and previous is None:
                raise BundleError("rollback",
                                  "nothing to roll back to: no model has been installed, the packaged model is in force")
            goal = previous if previous not in (None, current) else None
            if goal is None and current is None:
                raise BundleError("rollback", "nothing to roll back to: the packaged model is already in force")
            if goal is None:
                progress("target", f"the packaged model {self.packaged}")
                classifier = check_on_runtime(self.packaged, num_threads, progress)
                in_force = self.packaged_in_force(classifier)
            else:
                folder = self.dir / goal
                progress("target", f"previous model {goal[:12]}")
                try:
                    files = read_model_dir(folder)
                except (FileNotFoundError, NotADirectoryError):
                    raise BundleError("rollback",
                                      f"the previous model folder {folder} is missing: nothing to roll back to") from None
                check_files(files, keys_dir, allow_unsigned, progress)
                classifier = check_on_runtime(folder / files.tflite_name, num_threads, progress)
                in_force = self._in_force("installed", folder, classifier)
            self.audit("model_rollback", to=goal or "packaged", version=in_force.model_version,
                       model_sha256=in_force.model_sha256, previous=current)
            self._switch(goal)
            progress("current",
                     f"{goal[:12] if goal else 'the packaged model'} (was {current[:12] if current else 'the packaged model'})")
            return in_force

    # ------------------------------------------------------------------ on disk

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        if created:
            self._own(self.dir)
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BundleError("lock", "another model install or rollback is running; wait for it and try again") from None
            self._own(self.dir / LOCK)
            self._remove_debris()
            yield
        finally:
            os.close(fd)

    def _remove_debris(self) -> None:
        """What a killed install or rollback left: never a folder `current` or `previous` points to."""
        for p in self.dir.iterdir():
            if p.name.startswith(DEBRIS_PREFIXES):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def _write_folder(self, folder: Path, files: ModelFiles, info: dict[str, Any]) -> None:
        folder.mkdir(mode=0o755)
        for name, data in [*files.files.items(), (INFO, (json.dumps(info, indent=2) + "\n").encode())]:
            write_atomic(folder / name, data, sync_dir=False)
            (folder / name).chmod(0o644)
        fsync_dir(folder)
        self._own(folder, recursive=True)

    def _commit_folder(self, staging: Path, folder_name: str) -> Path:
        """Rename the checked copy to `models/<sha256>`. The same manifest installed before: keep that
        folder if it is intact (its files were checked when it came), else replace it."""
        folder = self.dir / folder_name
        if folder.is_dir():
            try:
                existing = read_model_dir(folder)
                verify_model_sha256(existing, existing.manifest())
                if sha256_bytes(existing.manifest_bytes) == folder_name:
                    return folder
            except (BundleError, OSError):
                pass
            trash = self.dir / f".trash-{secrets.token_hex(6)}"
            os.rename(folder, trash)
            os.rename(staging, folder)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, folder)
        fsync_dir(self.dir)
        return folder

    def _switch(self, goal: str | None) -> None:
        """`current` -> goal (None: the packaged model), `previous` -> what was current. Each link is
        replaced by rename(2), so `current` always names a complete model folder or is absent as before."""
        was = self.target(CURRENT)
        if was == goal:
            return
        if was is None:
            (self.dir / PREVIOUS).unlink(missing_ok=True)
        else:
            self._point(PREVIOUS, was)
        if goal is None:
            (self.dir / CURRENT).unlink(missing_ok=True)
        else:
            self._point(CURRENT, goal)
        fsync_dir(self.dir)

    def _point(self, link: str, folder_name: str) -> None:
        tmp = self.dir / f".{link}.tmp-{secrets.token_hex(6)}"
        os.symlink(folder_name, tmp)
        self._own(tmp)
        os.replace(tmp, self.dir / link)

    def _own(self, path: Path, recursive: bool = False) -> None:
        """Run as root (sudo edge-app model install), give what it writes to the data dir's owner, the
        service user, so the app can still append to audit.log and read the models."""
        if os.geteuid() != 0:
            return
        st = self.data_dir.stat()
        if st.st_uid == 0 and st.st_gid == 0:
            return
        paths = [path] + (list(path.rglob("*")) if recursive else [])
        for p in paths:
            with contextlib.suppress(OSError):
                os.lchown(p, st.st_uid, st.st_gid)


# --------------------------------------------------------------------------- reload in the app


class ModelWatch:
    """Picks up an install or rollback in the running app, between screenings.

    The inference worker calls `poll()` before each screening and once a second when idle. When
    `models/current` points somewhere new, the new model is loaded and checked (sha256,
    preprocessing, golden self-test) on the worker thread, so a queued screening simply waits a
    moment and then runs on the new model; nothing is dropped. If the new model fails, the one in
    force keeps serving and the failure is audited as a fallback.
    """

    def __init__(self, store: ModelStore, in_force: ModelInForce, num_threads: int = 2) -> None:
        self.store = store
        self.in_force = in_force
        self.num_threads = num_threads
        self._seen = store.target(CURRENT)

    def poll(self) -> Classifier | None:
        """A newly installed model, loaded and checked; None when nothing changed (or it failed)."""
        target = self.store.target(CURRENT)
        if target == self._seen:
            return None
        self._seen = target
        try:
            classifier, in_force = self.store.load(target, self.num_threads)
        except Exception as exc:  # noqa: BLE001 - whatever happens, the model in force keeps serving
            reason = f"model {target[:12] if target else 'packaged'} failed its checks on reload: {exc}"
            self.in_force.fallback = (f"the newly installed model {target[:12] if target else '(packaged)'} failed its checks; "
                                      f"still serving {self.in_force.model_version}")
            self.in_force.fallback_detail = reason
            log.error("model reload: %s", reason)
            self.store.audit("model_fallback", to=self.in_force.source, model_sha256=self.in_force.model_sha256,
                             version=self.in_force.model_version, reason=reason)
            return None
        log.info("model reloaded: %s %s (%s)", in_force.model_version, in_force.model_sha256[:12], in_force.source)
        self.in_force = in_force
        return classifier

    def status(self) -> dict[str, Any]:
        d = self.in_force.to_dict()
        d["model_card"] = (self.in_force.model_path.parent / CARD_NAME).is_file()
        return d
