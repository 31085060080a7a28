"""Model bundles: one signed `.zip` that carries a model to a device that is offline.

A bundle holds exactly these flat members::

    <name>.tflite      the model
    <name>.json        its manifest (holds the .tflite sha256, preprocessing, golden self-test)
    <name>.aux.npz     the sidecar (scope check + heatmap head), when the manifest names one (its sha256)
    <name>.scope.tflite  the scope network, when the manifest names one (`scope_model`, its sha256)
    MODEL_CARD.md      what the model is, how it was made, how well it does
    SIGNATURE.json     Ed25519 signature (absent in an unsigned bundle)

`SIGNATURE.json` is `{"algorithm": "ed25519", "payload": "<JSON text>", "signature": "<base64>",
"public_key_sha256": ...}`; the signature covers the payload text exactly, and the payload names
the manifest with its sha256 (so, through the manifest, the model's sha256) and the model card's
sha256. Editing any of the three after signing breaks it.

Keys are PEM files: `<name>.pem` (PKCS#8 private key, mode 0600) on the machine that signs,
`<name>.pub` (SubjectPublicKeyInfo) in the device's `trusted_keys/` folder. The crypto is the
`cryptography` package's; this module only decides what is signed and checks archives.

Archives are read with `zipfile` behind explicit checks, because a bundle comes from a USB stick:
no absolute or `..` paths, no folders or links, only the four names above, at most
`MAX_MEMBERS` members, size and compression-ratio limits (zip bombs), every member read in full
so its CRC is checked (truncated or damaged archives). Nothing here imports TensorFlow or a
TFLite runtime: `edge-train sign` runs on a training machine, `edge-app model` on the device.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .fileio import write_atomic
from .manifest import Manifest, ManifestError, aux_path_for, manifest_path_for, scope_model_path_for

BUNDLE_FORMAT = 1
CARD_NAME = "MODEL_CARD.md"
SIGNATURE_NAME = "SIGNATURE.json"
ALGORITHM = "ed25519"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # the .zip on the stick
MAX_MEMBERS = 8
MAX_MEMBER_BYTES = 48 * 1024 * 1024  # uncompressed, one member (the student is ~0.5 MB)
MAX_TOTAL_BYTES = 64 * 1024 * 1024  # uncompressed, all members
MAX_RATIO = 100  # uncompressed / compressed; tflite ~1.1, text ~4, a zip bomb ~1000
RATIO_FROM_BYTES = 64 * 1024  # tiny members may compress well without harm


class BundleError(ValueError):
    """A bundle (or an installed model) is refused. `step` names the check that refused it."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class ModelFiles:
    """The members of a bundle (or of an installed model's folder), in memory."""

    name: str  # the model's file stem: <name>.tflite, <name>.json
    files: dict[str, bytes]
    origin: str  # for messages: the bundle path or the folder

    @property
    def tflite_name(self) -> str:
        return f"{self.name}.tflite"

    @property
    def manifest_name(self) -> str:
        return f"{self.name}.json"

    @property
    def aux_name(self) -> str:
        return f"{self.name}.aux.npz"

    @property
    def scope_model_name(self) -> str:
        return f"{self.name}.scope.tflite"

    @property
    def tflite(self) -> bytes:
        return self.files[self.tflite_name]

    @property
    def manifest_bytes(self) -> bytes:
        return self.files[self.manifest_name]

    @property
    def card(self) -> bytes:
        return self.files[CARD_NAME]

    @property
    def signed(self) -> bool:
        return SIGNATURE_NAME in self.files

    def manifest(self) -> Manifest:
        try:
            return Manifest.loads(self.manifest_bytes, f"{self.manifest_name} in {self.origin}")
        except ManifestError as exc:
            raise BundleError("manifest", str(exc)) from None


@dataclass
class Signer:
    """Who signed a bundle: the trusted key's name (its .pub file stem) and fingerprint."""

    key: str
    public_key_sha256: str
    signed_at: str


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- keys


def generate_key(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write `<dir>/<name>.pem` (private, 0600) and `<dir>/<name>.pub`; never overwrites."""
    directory = Path(directory)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"key name {name!r} must be a plain file name")
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise FileExistsError(f"{path} exists: choose another --name or directory (keys are never overwritten)")
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(public_key_pem(key.public_key()))
    return private, public


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_bytes(raw)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ValueError(f"signing key {path} not found (make one with `edge-app model keygen DIR`)") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"signing key {path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key {path} is not an Ed25519 key (made by `edge-app model keygen`?)")  # noqa: TRY004 - a bad file
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"trusted key {path} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"trusted key {path} is not an Ed25519 public key")  # noqa: TRY004 - a bad file
    return key


def trusted_keys(directory: str | Path) -> dict[str, Ed25519PublicKey]:
    """`<dir>/*.pub` by name (file stem). A damaged .pub file is an error, not silently skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    return {p.stem: load_public_key(p) for p in sorted(directory.glob("*.pub"))}


# --------------------------------------------------------------------------- writing


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def signature_member(files: ModelFiles, key: Ed25519PrivateKey, key_name: str) -> bytes:
    payload = json.dumps({
        "format": BUNDLE_FORMAT,
        "model": files.tflite_name,
        "manifest": files.manifest_name,
        "manifest_sha256": sha256_bytes(files.manifest_bytes),
        "model_sha256": files.manifest().sha256,
        "model_card_sha256": sha256_bytes(files.card),
        "key": key_name,
        "signed_at": _now(),
    }, sort_keys=True)
    body = {
        "algorithm": ALGORITHM,
        "payload": payload,
        "signature": base64.b64encode(key.sign(payload.encode())).decode(),
        "public_key_sha256": fingerprint(key.public_key()),
    }
    return (json.dumps(body, indent=2) + "\n").encode()


def model_files_for(model_path: str | Path, card: str | Path | None = None) -> ModelFiles:
    """The .tflite, its manifest beside it and the model card (default: MODEL_CARD.md beside it)."""
    model_path = Path(model_path)
    if model_path.suffix != ".tflite":
        raise ValueError(f"{model_path} is not a .tflite model")
    card = Path(card) if card else model_path.parent / CARD_NAME
    parts = {model_path.name: model_path, manifest_path_for(model_path).name: manifest_path_for(model_path), CARD_NAME: card}
    try:
        manifest = Manifest.load(manifest_path_for(model_path))
        names_aux, names_net = bool(manifest.aux), bool(manifest.scope_model)
    except ManifestError:
        names_aux = names_net = False  # the missing / unreadable manifest is reported below or by write_bundle
    if names_aux:  # the sidecar travels with the model whose manifest names it
        parts[aux_path_for(model_path).name] = aux_path_for(model_path)
    if names_net:  # so does the scope network
        parts[scope_model_path_for(model_path).name] = scope_model_path_for(model_path)
    missing = [str(p) for p in parts.values() if not p.is_file()]
    if missing:
        raise ValueError(f"cannot make a bundle: {', '.join(missing)} not found (a bundle needs the .tflite, its .json, "
                         "the model card and the sidecar and scope network its manifest names)")
    return ModelFiles(model_path.stem, {name: path.read_bytes() for name, path in parts.items()}, str(model_path.parent))


def write_bundle(files: ModelFiles, out: str | Path, key_path: str | Path | None) -> dict[str, Any]:
    """Write the bundle `out` (signed with the key at `key_path`; None = unsigned). Refuses a
    model whose sha256 differs from its manifest: a bundle is never made from a mismatched pair."""
    manifest = files.manifest()
    actual = sha256_bytes(files.tflite)
    if actual != manifest.sha256:
        raise ValueError(f"{files.tflite_name} does not match its manifest (sha256 {actual[:12]}... but the manifest says "
                         f"{manifest.sha256[:12]}...): re-export the model before signing it")
    members = dict(files.files)
    members.pop(SIGNATURE_NAME, None)
    key_name = None
    if key_path is not None:
        key_name = Path(key_path).stem
        members[SIGNATURE_NAME] = signature_member(files, load_private_key(key_path), key_name)
    out = Path(out)
    archive = io.BytesIO()  # a model is a few MB: built in memory, written atomically
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in (files.tflite_name, files.manifest_name, files.aux_name, files.scope_model_name, CARD_NAME, SIGNATURE_NAME):
            if name in members:
                zf.writestr(name, members[name])
    write_atomic(out, archive.getvalue())
    return {"bundle": str(out), "model": files.tflite_name, "version": manifest.version, "sha256": manifest.sha256,
            "key": key_name, "bytes": out.stat().st_size}


# --------------------------------------------------------------------------- reading (archive safety)


def _unsafe_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts


def _member_names(names: list[str], origin: str) -> str:
    """Check the member names and return the model's stem."""
    allowed = "<name>.tflite, <name>.json, MODEL_CARD.md, SIGNATURE.json, <name>.aux.npz and <name>.scope.tflite"
    tflites = [n for n in names if n.endswith(".tflite") and not n.endswith(".scope.tflite")]
    if len(tflites) != 1:
        raise BundleError("archive", f"{origin} holds {len(tflites)} .tflite files; a bundle holds exactly one ({allowed})")
    stem = tflites[0][: -len(".tflite")]
    expected = {f"{stem}.tflite", f"{stem}.json", CARD_NAME}
    extra = sorted(set(names) - expected - {SIGNATURE_NAME, f"{stem}.aux.npz", f"{stem}.scope.tflite"})
    if extra:
        raise BundleError("archive", f"{origin} holds unexpected member(s) {extra}; a bundle holds only {allowed}")
    missing = sorted(expected - set(names))
    if missing:
        raise BundleError("archive", f"{origin} lacks {missing}; a bundle holds {allowed}")
    return stem


def _check_infos(infos: list[zipfile.ZipInfo], origin: str) -> None:
    if len(infos) > MAX_MEMBERS:
        raise BundleError("archive", f"{origin} has {len(infos)} members (at most {MAX_MEMBERS}): not a model bundle")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if _unsafe_name(name):
            raise BundleError("archive", f"{origin}: member {name!r} has an absolute path or '..': refused")
        if "/" in name or "\\" in name or info.is_dir():
            raise BundleError("archive", f"{origin}: member {name!r} is in a folder; bundle members are plain file names")
        if name in seen:
            raise BundleError("archive", f"{origin}: member {name!r} appears twice")
        seen.add(name)
        mode = info.external_attr >> 16
        if mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
            raise BundleError("archive", f"{origin}: member {name!r} is a link or special file, not a plain file")
        if info.flag_bits & 0x1:
            raise BundleError("archive", f"{origin}: member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise BundleError("archive", f"{origin}: member {name!r} uses compression method {info.compress_type} "
                                         "(only stored or deflate)")
        if info.file_size > MAX_MEMBER_BYTES:
            raise BundleError("archive", f"{origin}: member {name!r} unpacks to {info.file_size / 1e6:.0f} MB "
                                         f"(limit {MAX_MEMBER_BYTES / 1e6:.0f} MB): refused as a zip bomb")
        if info.file_size > RATIO_FROM_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise BundleError("archive", f"{origin}: member {name!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                                         f"(limit {MAX_RATIO}x): refused as a zip bomb")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise BundleError("archive", f"{origin} unpacks to {total / 1e6:.0f} MB (limit {MAX_TOTAL_BYTES / 1e6:.0f} MB): "
                                     "refused as a zip bomb")


def read_bundle(path: str | Path) -> ModelFiles:
    """Open a bundle with every archive safety check; raises BundleError(step="archive")."""
    path = Path(path)
    origin = f"bundle {path.name}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError("archive", f"bundle {path} cannot be read ({exc.strerror or exc})") from None
    if size > MAX_BUNDLE_BYTES:
        raise BundleError("archive",
                          f"{origin} is {size / 1e6:.0f} MB (limit {MAX_BUNDLE_BYTES / 1e6:.0f} MB): not a model bundle")
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_infos(infos, origin)
            stem = _member_names([i.filename for i in infos], origin)
            for info in infos:
                with zf.open(info) as fh:  # reads at most file_size bytes; the CRC is checked at the end
                    data = fh.read(MAX_MEMBER_BYTES + 1)
                if len(data) != info.file_size:
                    raise BundleError("archive", f"{origin}: member {info.filename!r} is shorter than its header says: "
                                                 "damaged or truncated; copy the bundle again")
                files[info.filename] = data
    except BundleError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise BundleError("archive", f"{origin} is damaged or truncated ({exc}): copy it again from the source") from None
    return ModelFiles(stem, files, origin)


def read_model_dir(directory: str | Path) -> ModelFiles:
    """An installed model's folder (`<data_dir>/models/<sha256>/`) as the same ModelFiles."""
    directory = Path(directory)
    names = (sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != "INSTALLED.json")
             if directory.is_dir() else [])
    origin = f"installed model {directory}"
    stem = _member_names(names, origin)
    return ModelFiles(stem, {n: (directory / n).read_bytes() for n in names}, origin)


# --------------------------------------------------------------------------- verifying


def verify_signature(files: ModelFiles, keys: dict[str, Ed25519PublicKey], keys_dir: str | Path,
                     allow_unsigned: bool = False) -> Signer | None:
    """The trusted key that signed these files, or None for an unsigned bundle when allowed.
    Raises BundleError(step="signature") with what is wrong."""
    if not files.signed:
        if allow_unsigned:
            return None
        raise BundleError("signature", f"{files.origin} is not signed: sign it with `edge-train sign --key KEY.pem` "
                                       "(unsigned bundles need allow_unsigned_models = true in the config)")
    try:
        body = json.loads(files.files[SIGNATURE_NAME])
        payload_text = body["payload"]
        signature = base64.b64decode(body["signature"], validate=True)
        payload = json.loads(payload_text)
        claimed = str(payload.get("key", "?"))
        if body.get("algorithm") != ALGORITHM or not isinstance(payload, dict):
            raise ValueError(f"algorithm {body.get('algorithm')!r}")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BundleError("signature", f"{files.origin}: {SIGNATURE_NAME} is unreadable ({exc}): sign the bundle again") from None
    if not keys:
        raise BundleError("signature", f"no trusted keys in {keys_dir}: copy the signing key's .pub there "
                                       "(deploy/install.sh creates the folder)")
    signer = None
    for name, key in keys.items():
        try:
            key.verify(signature, payload_text.encode())
        except InvalidSignature:
            continue
        signer = Signer(name, fingerprint(key), str(payload.get("signed_at", "")))
        break
    if signer is None:
        raise BundleError("signature", f"{files.origin} is signed by a key this device does not trust (key {claimed!r}, "
                                       f"fingerprint {str(body.get('public_key_sha256', '?'))[:16]}), or its signature is "
                                       f"damaged: trusted keys are {sorted(keys)} in {keys_dir}")
    if payload.get("manifest") != files.manifest_name or payload.get("model") != files.tflite_name:
        raise BundleError("signature",
                          f"{files.origin}: the signature is for {payload.get('model')!r}, not {files.tflite_name!r}")
    if payload.get("manifest_sha256") != sha256_bytes(files.manifest_bytes):
        raise BundleError("signature", f"{files.origin}: the manifest {files.manifest_name} was changed after signing: refused")
    if payload.get("model_card_sha256") != sha256_bytes(files.card):
        raise BundleError("signature", f"{files.origin}: {CARD_NAME} was changed after signing: refused")
    return signer


def verify_model_sha256(files: ModelFiles, manifest: Manifest) -> str:
    """The model's sha256, checked against the manifest, and the sidecar's when the manifest names one
    (the signature covers the manifest, so through it both files)."""
    actual = sha256_bytes(files.tflite)
    if actual != manifest.sha256:
        raise BundleError("sha256", f"{files.origin}: {files.tflite_name} does not match its manifest (sha256 {actual[:12]}... "
                                    f"but the manifest says {manifest.sha256[:12]}...): damaged or altered; refused")
    aux = files.files.get(files.aux_name)
    if manifest.aux and aux is None:
        raise BundleError("sha256", f"{files.origin} lacks {files.aux_name}, the sidecar its manifest names: refused")
    if aux is not None and not manifest.aux:
        raise BundleError("sha256", f"{files.origin} holds {files.aux_name} but its manifest names no sidecar: refused")
    if aux is not None and sha256_bytes(aux) != manifest.aux.get("sha256"):
        raise BundleError("sha256", f"{files.origin}: {files.aux_name} does not match its manifest: damaged or altered; refused")
    net = files.files.get(files.scope_model_name)
    if manifest.scope_model and net is None:
        raise BundleError("sha256", f"{files.origin} lacks {files.scope_model_name}, the scope network its manifest names: "
                                    "refused")
    if net is not None and not manifest.scope_model:
        raise BundleError("sha256", f"{files.origin} holds {files.scope_model_name} but its manifest names no scope network: "
                                    "refused")
    if net is not None and sha256_bytes(net) != manifest.scope_model.get("sha256"):
        raise BundleError("sha256", f"{files.origin}: {files.scope_model_name} does not match its manifest: damaged or "
                                    "altered; refused")
    return actual
