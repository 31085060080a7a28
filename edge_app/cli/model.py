"""`edge-app model keygen|install|list|rollback`: signed model updates on an offline device.

    edge-app model keygen ~/dermaedge-keys --name clinic-2026           # on the signing machine, once
    edge-train sign --key ~/dermaedge-keys/clinic-2026.pem --out student.zip models/student_fp16.tflite
    sudo edge-app model install /media/usb/student.zip --config /etc/edge-app/config.toml
    edge-app model list --config /etc/edge-app/config.toml
    sudo edge-app model rollback --config /etc/edge-app/config.toml

`install` checks, in order, and stops at the first failure with one line: archive safety,
signature against `<config dir>/trusted_keys/*.pub` (`--trusted-keys DIR` to use another
folder), sha256, preprocessing version, golden self-test on this device's runtime, a smoke
screening. Then it unpacks into `<data_dir>/models/<sha256>/` and switches `models/current`
atomically. The running app picks the new model up between screenings (within a second);
a queued screening waits for it and is not lost. `rollback` goes back to the previous model
(the packaged one when there is none) after the same checks. Each install and rollback is
written to `<data_dir>/audit.log`. Unsigned bundles are refused unless the config says
`allow_unsigned_models = true`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .common import add_data_dir_arguments

EXIT_REFUSED = 1
EXIT_USAGE = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="install, list and roll back signed model bundles; make signing keys",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    k = msub.add_parser("keygen", help="write DIR/NAME.pem (private, 0600) and DIR/NAME.pub (Ed25519)")
    k.add_argument("dir", metavar="DIR", help="where to write the key pair (keep the .pem off the device)")
    k.add_argument("--name", default="dermaedge-signing",
                   help="key name: the file stem, shown as 'signed by' (default %(default)s)")
    k.add_argument("--trust", action="store_true",
                   help="also copy NAME.pub into this device's trusted keys (<config dir>/trusted_keys) and audit it")
    _common(k)
    k.set_defaults(func=run_keygen)

    i = msub.add_parser("install", help="verify a bundle and make it the current model")
    i.add_argument("bundle", metavar="BUNDLE", help="the .zip made by `edge-train sign`")
    i.add_argument("--threads", type=int, default=2, help="interpreter threads for the self-test (default 2)")
    _common(i)
    i.set_defaults(func=run_install)

    ls = msub.add_parser("list", help="installed models: which is current, installed when, by which key")
    ls.add_argument("--json", action="store_true", help="one JSON object")
    _common(ls)
    ls.set_defaults(func=run_list)

    r = msub.add_parser("rollback", help="back to the previous model (the packaged one when there is none)")
    r.add_argument("--threads", type=int, default=2, help="interpreter threads for the self-test (default 2)")
    _common(r)
    r.set_defaults(func=run_rollback)


def _common(parser: argparse.ArgumentParser) -> None:
    add_data_dir_arguments(parser)
    parser.add_argument("--trusted-keys", dest="trusted_keys", metavar="DIR",
                        help="folder of trusted *.pub keys (default: trusted_keys/ beside the config file)")


def _context(args: argparse.Namespace):
    """(ModelStore, trusted keys dir, allow_unsigned) from the flags, environment and config file."""
    from .. import __version__
    from ..config import config_dir, data_dir_setting, maintenance_setting
    from ..model_store import ModelStore

    data_dir = data_dir_setting(args.config, args.data_dir)
    keys_dir = Path(args.trusted_keys) if args.trusted_keys else config_dir(args.config) / "trusted_keys"
    store = ModelStore(data_dir, maintenance_setting("model", args.config), app_version=__version__)
    return store, keys_dir, bool(maintenance_setting("allow_unsigned_models", args.config))


def _progress(step: str, detail: str) -> None:
    print(f"  {step:<16} ok  {detail}", flush=True)


def _fail(action: str, exc: Exception, store=None) -> int:
    from ..model_store import CURRENT

    step = getattr(exc, "step", "")
    if isinstance(exc, PermissionError):
        exc = OSError(f"no permission to write {exc.filename or store.dir}: run it as root (sudo) or as the service user")
    current = store.target(CURRENT) if store is not None else None
    unchanged = f"; the current model is unchanged ({current[:12] if current else 'the packaged model'})" if store else ""
    print(f"error: {action} refused{f' at the {step} check' if step else ''}: {exc}{unchanged}", file=sys.stderr)
    return EXIT_REFUSED


def run_keygen(args: argparse.Namespace) -> int:
    from ..bundle import fingerprint, generate_key, load_public_key

    try:
        private, public = generate_key(args.dir, args.name)
    except (OSError, ValueError) as exc:
        print(f"error: keygen: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"private key {private} (0600: keep it on the signing machine, never on a device)")
    print(f"public key  {public} (fingerprint {fingerprint(load_public_key(public))[:16]})")
    if args.trust:
        from ..config import ConfigError

        try:
            store, keys_dir, _ = _context(args)
            keys_dir.mkdir(parents=True, exist_ok=True)
            dest = keys_dir / public.name
            if dest.exists():
                raise FileExistsError(f"{dest} exists: a trusted key is never overwritten")
            shutil.copyfile(public, dest)
        except (ConfigError, OSError) as exc:
            print(f"error: keygen --trust: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        store.data_dir.mkdir(parents=True, exist_ok=True)
        store.audit("model_key_trusted", key=args.name, public_key=str(dest),
                    fingerprint=fingerprint(load_public_key(dest)))
        print(f"trusted on this device: {dest}")
    return 0


def run_install(args: argparse.Namespace) -> int:
    from ..bundle import BundleError
    from ..config import ConfigError

    try:
        store, keys_dir, allow_unsigned = _context(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"installing {args.bundle} into {store.dir} (trusted keys: {keys_dir})")
    try:
        installed = store.install(args.bundle, keys_dir, allow_unsigned, num_threads=args.threads, progress=_progress)
    except (BundleError, OSError) as exc:
        return _fail("install", exc, store)
    print(f"installed {installed.name} {installed.version} ({installed.model_sha256[:12]}...), "
          f"{'signed by ' + installed.key if installed.key else 'UNSIGNED'}: now current. "
          "A running app switches to it before its next screening.")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from ..bundle import BundleError
    from ..config import ConfigError

    try:
        store, keys_dir, allow_unsigned = _context(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        in_force = store.rollback(keys_dir, allow_unsigned, num_threads=args.threads, progress=_progress)
    except (BundleError, OSError) as exc:
        return _fail("rollback", exc, store)
    print(f"rolled back: {in_force.source} model {in_force.model_version} ({in_force.model_sha256[:12]}...) is current. "
          "A running app switches to it before its next screening.")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..manifest import Manifest, ManifestError
    from ..model_store import CURRENT, PREVIOUS

    try:
        store, _, _ = _context(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    current, previous = store.target(CURRENT), store.target(PREVIOUS)
    models = [m.to_dict() | {"current": m.id == current, "previous": m.id == previous} for m in store.installed()]
    try:
        pm = Manifest.load(store.packaged.with_suffix(".json"))
        packaged = {"model_path": str(store.packaged), "version": pm.version, "model_sha256": pm.sha256,
                    "current": current is None}
    except ManifestError as exc:
        packaged = {"model_path": str(store.packaged), "error": str(exc), "current": current is None}
    if args.json:
        print(json.dumps({"data_dir": str(store.data_dir), "current": current, "previous": previous, "installed": models,
                          "packaged": packaged}, indent=2))
        return 0
    print(f"models in {store.dir}  (* current, ^ previous)")
    if not models:
        print("  none installed")
    for m in models:
        mark = "*" if m["current"] else "^" if m["previous"] else " "
        print(f"{mark} {m['id'][:12]}  {m['name']} {m['version']}  model {m['model_sha256'][:12]}  "
              f"installed {m['installed_at']}  "
              f"{'key ' + m['key'] if m['key'] else 'UNSIGNED'}")
    if current is not None and current not in {m["id"] for m in models}:
        print(f"! current points to {current}, which is missing: the app falls back (see /healthz)")
    mark = "*" if packaged["current"] else " "
    detail = (f"{packaged.get('version')}  model {str(packaged.get('model_sha256'))[:12]}" if "version" in packaged
              else packaged["error"])
    print(f"{mark} packaged      {detail}  {packaged['model_path']} (last fallback)")
    return 0
