"""Settings of the device app: defaults < TOML config file < environment (EDGE_APP_*) < flags.

Every value is validated once, at start, and a bad one stops the app with a
message that names the setting, where it came from and what is allowed.

Example config file (`--config /etc/edge-app/config.toml`)::

    host = "127.0.0.1"
    port = 8080
    camera = "auto"            # auto | none | picamera2 | opencv:N | opencv:/dev/video0 | folder:DIR
    data_dir = "/var/lib/edge-app"
    model = "/opt/edge-app/models/student_fp16.tflite"
    access_token = ""          # required when host is not loopback; or EDGE_APP_ACCESS_TOKEN
    max_upload_mb = 20
    retention_days = 0         # 0 = keep all
    retention_gb = 0           # 0 = keep all
    allow_unsigned_models = false   # `edge-app model install` refuses unsigned bundles unless true
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "EDGE_APP_"
MIN_TOKEN_LENGTH = 16


class ConfigError(ValueError):
    """A setting is invalid. The message names it and says what is allowed."""


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/edge-app, else ~/.local/share/edge-app."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edge-app"


def default_model() -> Path:
    from .runtime import DEFAULT_MODEL

    return DEFAULT_MODEL


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    camera: str = "auto"
    data_dir: Path = None  # type: ignore[assignment]  # filled by default_data_dir()
    model: Path = None  # type: ignore[assignment]  # filled by default_model()
    access_token: str = ""
    max_upload_mb: float = 20.0
    retention_days: float = 0.0
    retention_gb: float = 0.0
    num_threads: int = 2
    threads: int = 4  # waitress worker threads
    preview_fps: float = 12.0
    secret_key: str = ""  # signs the UI session (CSRF token); random per start when empty
    allow_unsigned_models: bool = False  # `edge-app model install` of a bundle without a signature

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        if redact:
            for key in ("access_token", "secret_key"):
                d[key] = "***" if d[key] else ""
        return d


_TYPES = {f.name: f.type for f in fields(Settings)}
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _TYPES[name]
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
                return _BOOL_WORDS[value.strip().lower()]
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "Path":
            if not isinstance(value, (str, Path)) or not str(value).strip():
                raise TypeError
            return Path(os.path.expanduser(str(value)))
        if not isinstance(value, str):
            raise TypeError
        return value.strip()
    except (TypeError, ValueError):
        expected = {"int": "a whole number", "float": "a number", "Path": "a path", "bool": "true or false"}.get(kind, "a string")
        raise ConfigError(f"setting {name!r} from {source} must be {expected}, got {value!r}") from None


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; fix --config / EDGE_APP_CONFIG or create it") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data = data.get("edge_app", data)  # allow a [edge_app] table or top-level keys
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(_TYPES))}")
    return {k: _coerce(k, v, f"config file {path}") for k, v in data.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for name in _TYPES:
        key = ENV_PREFIX + name.upper()
        if key in env and env[key] != "":
            out[name] = _coerce(name, env[key], f"environment variable {key}")
    return out


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge defaults < config file < environment < overrides (flags; None = not given) and validate."""
    env = os.environ if env is None else env
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(_from_file(Path(config_file)))
    merged.update(_from_env(env))
    for k, v in (overrides or {}).items():
        if v is not None:
            if k not in _TYPES:
                raise ConfigError(f"unknown setting {k!r}")
            merged[k] = _coerce(k, v, f"--{k.replace('_', '-')}")
    settings = Settings(**merged)
    if settings.data_dir is None:
        settings.data_dir = default_data_dir()
    if settings.model is None:
        settings.model = default_model()
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    from .camera import CameraError, parse_camera_spec

    if not 1 <= s.port <= 65535:
        raise ConfigError(f"port must be 1..65535, got {s.port}")
    if not s.host:
        raise ConfigError("host must not be empty (use 127.0.0.1 for the kiosk, 0.0.0.0 for LAN access)")
    try:
        parse_camera_spec(s.camera)
    except CameraError as exc:
        raise ConfigError(str(exc)) from None
    if not s.is_loopback and len(s.access_token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"host {s.host} exposes the app beyond this device: set an access token of at least "
            f"{MIN_TOKEN_LENGTH} characters (EDGE_APP_ACCESS_TOKEN or access_token in the config file), "
            "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    if s.access_token and len(s.access_token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"access token must be at least {MIN_TOKEN_LENGTH} characters")
    if not 0 < s.max_upload_mb <= 200:
        raise ConfigError(f"max_upload_mb must be in (0, 200], got {s.max_upload_mb}")
    if s.retention_days < 0 or s.retention_gb < 0:
        raise ConfigError("retention_days and retention_gb must be >= 0 (0 = keep all)")
    if not 1 <= s.num_threads <= 64:
        raise ConfigError(f"num_threads must be 1..64, got {s.num_threads}")
    if not 1 <= s.threads <= 64:
        raise ConfigError(f"threads must be 1..64, got {s.threads}")
    if not 0 < s.preview_fps <= 30:
        raise ConfigError(f"preview_fps must be in (0, 30], got {s.preview_fps}")
    if s.data_dir.exists() and not s.data_dir.is_dir():
        raise ConfigError(f"data_dir {s.data_dir} exists but is not a directory")
    if not s.model.is_file():
        raise ConfigError(f"model file {s.model} not found; pass --model PATH or set EDGE_APP_MODEL")


def data_dir_setting(config_file: str | Path | None = None, override: str | Path | None = None,
                     env: Mapping[str, str] | None = None) -> Path:
    """Only the data directory (flag < environment < config file < default), for maintenance
    commands (backup, restore, purge) that must work even when the model is missing."""
    env = os.environ if env is None else env
    if override:
        return _coerce("data_dir", override, "--data-dir")
    if env.get(ENV_PREFIX + "DATA_DIR"):
        return _from_env({ENV_PREFIX + "DATA_DIR": env[ENV_PREFIX + "DATA_DIR"]})["data_dir"]
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    if config_file:
        from_file = _from_file(Path(config_file))
        if "data_dir" in from_file:
            return from_file["data_dir"]
    return default_data_dir()


def maintenance_setting(name: str, config_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> Any:
    """One setting from the environment, else the config file, else its default, checked on its own:
    for maintenance commands (`edge-app model ...`) that must work while the app's other settings
    (a missing model, say) would stop `edge-app serve`."""
    env = os.environ if env is None else env
    key = ENV_PREFIX + name.upper()
    if env.get(key):
        return _from_env({key: env[key]})[name]
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    if config_file:
        from_file = _from_file(Path(config_file))
        if name in from_file:
            return from_file[name]
    default = {"model": default_model, "data_dir": default_data_dir}.get(name)
    return default() if default else Settings.__dataclass_fields__[name].default


def config_dir(config_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The folder of the config file (`/etc/edge-app` on a Pi), else $XDG_CONFIG_HOME/edge-app.
    Its `trusted_keys/` holds the public keys that model bundles must be signed with."""
    env = os.environ if env is None else env
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    if config_file:
        return Path(os.path.expanduser(str(config_file))).resolve().parent
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edge-app"
