"""The guard's settings: command-line options over a TOML file (``--config``) over defaults.

The TOML keys are the long option names with ``_`` or ``-``: ``paths``, ``mode``, ``policy``,
``trust`` (list), ``no_default_trust``, ``catalog`` (list), ``require_page_hashes_for``,
``timeout``, ``on_timeout``, ``workers``, ``queue_size``, ``cache_size``, ``mark``,
``busy_poll_us``, ``high_value`` (list), ``events`` (list), ``no_store``, ``store``,
``control_socket``, ``key_file``, and ``[pattern]`` with ``failures`` and ``window``
(seconds). Unknown keys are an error, so a typo never silently leaves a protection off.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SOCKET = "/run/codeintegrity/guard.sock"
DEFAULT_KEY = "/etc/codeintegrity/guard.key"
_MAX_CONFIG = 1024 * 1024
MAX_BUSY_POLL_US = 10_000  # spinning longer than 10 ms after each open only burns CPU

# option name (click) -> (TOML key, type check, default)
_SCALARS: dict[str, tuple[str, type | tuple[type, ...], Any]] = {
    "mode": ("mode", str, "audit"),
    "policy_file": ("policy", str, None),
    "no_default_trust": ("no_default_trust", bool, False),
    "require_page_hashes": ("require_page_hashes_for", str, "off"),
    "timeout": ("timeout", (int, float), 2.0),
    "on_timeout": ("on_timeout", str, "allow"),
    "workers": ("workers", int, 4),
    "queue_size": ("queue_size", int, 1024),
    "cache_size": ("cache_size", int, 4096),
    "mark": ("mark", str, "filesystem"),
    "busy_poll_us": ("busy_poll_us", int, 100),
    "no_store": ("no_store", bool, False),
    "store_path": ("store", str, None),
    "control_socket": ("control_socket", str, DEFAULT_SOCKET),
    "key_file": ("key_file", str, DEFAULT_KEY),
}
_LISTS = {
    "trust_files": "trust",
    "catalogs": "catalog",
    "high_value": "high_value",
    "event_uris": "events",
}
_CHOICES = {
    "mode": ("audit", "enforce"),
    "on_timeout": ("allow", "deny"),
    "mark": ("filesystem", "mount"),
    "require_page_hashes": ("off", "drivers", "all"),
}


@dataclass(frozen=True, slots=True)
class GuardSettings:
    paths: tuple[str, ...]
    mode: str
    policy_file: str | None
    trust_files: tuple[str, ...]
    no_default_trust: bool
    catalogs: tuple[str, ...]
    require_page_hashes: str
    timeout: float
    on_timeout: str
    workers: int
    queue_size: int
    cache_size: int
    mark: str
    busy_poll_us: int
    high_value: tuple[str, ...]
    event_uris: tuple[str, ...]
    no_store: bool
    store_path: str | None
    control_socket: str | None
    key_file: str
    pattern_failures: int = 5
    pattern_window: float = 60.0


def load_settings(paths: tuple[str, ...], given: dict[str, Any]) -> GuardSettings:
    """Merge; raises ValueError with a one-line reason for a bad config file."""
    config: dict[str, Any] = {}
    config_file = given.get("config_file")
    if config_file:
        config = _read_toml(config_file)
    known = {key for key, _, _ in _SCALARS.values()} | set(_LISTS.values()) | {"paths", "pattern"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{config_file}: unknown key(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, (key, kind, default) in _SCALARS.items():
        value = given.get(name)
        if value is None:
            value = config.get(key, default)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{config_file}: {key} has the wrong type")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"{key} must be one of {', '.join(_CHOICES[name])}, not {value!r}")
        values[name] = value
    for name, key in _LISTS.items():
        value = given.get(name) or config.get(key, ())
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{config_file}: {key} must be a list of strings")
        values[name] = tuple(value)
    config_paths = config.get("paths", [])
    if not isinstance(config_paths, list) or not all(isinstance(p, str) for p in config_paths):
        raise ValueError(f"{config_file}: paths must be a list of strings")
    pattern = config.get("pattern", {})
    if not isinstance(pattern, dict) or set(pattern) - {"failures", "window"}:
        raise ValueError(f"{config_file}: [pattern] takes only failures and window")
    failures, window = pattern.get("failures", 5), pattern.get("window", 60.0)
    if not isinstance(failures, int) or failures < 1 or not isinstance(window, int | float):
        raise ValueError(f"{config_file}: [pattern] failures must be >= 1, window a number")
    if values["timeout"] <= 0:
        raise ValueError("timeout must be positive")
    if not 0 <= values["busy_poll_us"] <= MAX_BUSY_POLL_US:
        raise ValueError(f"busy_poll_us must be between 0 and {MAX_BUSY_POLL_US}")
    socket = values.pop("control_socket")
    return GuardSettings(
        paths=tuple(paths) or tuple(config_paths),
        control_socket=None if socket == "none" else socket,
        pattern_failures=failures,
        pattern_window=float(window),
        **values,
    )


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_CONFIG + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > _MAX_CONFIG:
        raise ValueError(f"{path}: larger than {_MAX_CONFIG} bytes")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{Path(path).name}: not valid TOML: {exc}") from None
