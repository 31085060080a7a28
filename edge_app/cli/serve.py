"""`edge-app serve`: the screening app under waitress.

Settings: defaults < config file (TOML) < environment (EDGE_APP_*) < these flags.
Binds 127.0.0.1:8080 for the kiosk browser; any other host needs an access
token (EDGE_APP_ACCESS_TOKEN or `access_token` in the config file; never a flag,
so it does not show in the process list).

Under systemd (Type=notify) it sends READY=1 once the model is verified, the
store is open and the threads run, then WATCHDOG=1 while
`ScreeningService.is_healthy()` holds.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

log = logging.getLogger("edge_app.serve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the touchscreen screening app (waitress)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="TOML config file (also EDGE_APP_CONFIG)")
    p.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 = LAN, needs an access token)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--camera", help="auto | none | picamera2 | opencv:N | opencv:/dev/videoN | folder:DIR (default auto)")
    p.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="records + images (default $XDG_DATA_HOME/edge-app)")
    p.add_argument("--model", metavar="FILE", help="the packaged .tflite student (its manifest .json beside it): served unless "
                   "a model was installed with `edge-app model install` into the data dir, then the last fallback")
    p.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, help="upload size limit (default 20)")
    p.add_argument("--retention-days", dest="retention_days", type=float, help="delete records older than N days (0 = keep all)")
    p.add_argument("--retention-gb", dest="retention_gb", type=float, help="keep at most N GB of images (0 = keep all)")
    p.add_argument("--threads", type=int, help="waitress worker threads (default 4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..camera import CameraError
    from ..config import ConfigError, load_settings
    from ..notify import Watchdog, sd_notify
    from ..runtime import ModelError
    from ..store import StoreError
    from ..web import EXTENSION, config_from_settings, create_app, shutdown

    overrides = {k: getattr(args, k, None) for k in
                 ("host", "port", "camera", "data_dir", "model", "max_upload_mb", "retention_days", "retention_gb", "threads")}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"edge-app serve: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(config_from_settings(settings))
    except (ModelError, StoreError, CameraError) as exc:
        print(f"edge-app serve: cannot start: {exc}", file=sys.stderr)
        return 1

    import waitress

    service = app.extensions[EXTENSION]
    try:
        server = waitress.create_server(app, host=settings.host, port=settings.port, threads=settings.threads,
                                        ident="edge-app", clear_untrusted_proxy_headers=True)
    except OSError as exc:
        shutdown(app)
        print(f"edge-app serve: cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); "
              "is another edge-app running? choose another --port", file=sys.stderr)
        return 1

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    watchdog = Watchdog(service.is_healthy)
    camera = service.capture_loop.status()
    model = service.classifier.describe()
    in_force = service.model_in_force()
    log.info("model %s (%s, sha256 %s..., %s) on %s; camera %s (%s); data %s",
             model["model"], model["model_version"], model["model_sha256"][:12], in_force.get("source", "packaged"),
             model["runtime"], camera["kind"], camera.get("source"), settings.data_dir)
    if in_force.get("fallback"):
        log.warning("model fallback: %s", in_force["fallback"])
    if service.store.recovered["orphan_images"] or service.store.recovered["temp_files"]:
        log.warning("start-up recovery removed %s", service.store.recovered)
    url_host = settings.host if settings.host not in ("0.0.0.0", "::") else "<this-device>"
    print(f"edge-app: serving on http://{url_host}:{settings.port}/  (Ctrl+C to stop)", flush=True)
    sd_notify(f"READY=1\nSTATUS=serving on {settings.host}:{settings.port}, camera {camera['kind']}")
    watchdog.start()
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        sd_notify("STOPPING=1")
        watchdog.stop()
        server.close()
        shutdown(app)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m edge_app.cli.serve [flags]`: the same as `edge-app serve`, without the other subcommands."""
    parser = argparse.ArgumentParser(prog="edge-app")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
