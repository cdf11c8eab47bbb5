"""`codeintegrity guard`: judge PE files the moment they are opened (fanotify, root)."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from . import common_options as shared
from . import exit_codes

_CONTROL = ("status", "reload", "stop")
_DEFAULT_SOCKET = "/run/codeintegrity/guard.sock"
_DEFAULT_KEY = "/etc/codeintegrity/guard.key"


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"codeintegrity guard: {message}", err=True)
    sys.exit(code)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=str),
    help="TOML file with the same options (command-line options win).",
)
@click.option(
    "--mode",
    type=click.Choice(["audit", "enforce"]),
    help="audit (default): allow and raise events; enforce: deny with EPERM what the rules deny.",
)
@shared.policy_option
@shared.trust_options(unset=True)
@shared.catalog_option()
@shared.page_hash_option()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    help="Seconds an open may wait for its verdict (default 2).",
)
@click.option(
    "--on-timeout",
    type=click.Choice(["allow", "deny"]),
    help="Enforce mode: the "
    "answer when no verdict came in time or the queue is full (default allow).",
)
@click.option("--workers", type=click.IntRange(1, 64), help="Verification threads (default 4).")
@click.option(
    "--queue-size",
    type=click.IntRange(1, 1_000_000),
    help="Opens waiting for a worker before the fail mode answers (default 1024).",
)
@click.option(
    "--cache-size", type=click.IntRange(1, 10_000_000), help="Verdicts kept (LRU, default 4096)."
)
@click.option(
    "--mark",
    type=click.Choice(["filesystem", "mount"]),
    help="Mark the filesystems (default) or the mounts holding PATHS.",
)
@click.option(
    "--busy-poll-us",
    type=click.IntRange(0, 10_000),
    help="Microseconds to keep reading after an open before sleeping, so that a burst's next "
    "open needs no wake-up; adaptive, no CPU when opens are sparse or absent (default 100; "
    "0: off).",
)
@click.option(
    "--high-value",
    "high_value",
    multiple=True,
    type=click.Path(path_type=str),
    help="Any failure under this path raises 4618 at once (repeatable).",
)
@shared.event_options(unset=True)
@click.option(
    "--control-socket",
    "control_socket",
    type=click.Path(path_type=str),
    help=f"Control socket path (default {_DEFAULT_SOCKET}; 'none' for none).",
)
@click.option(
    "--key-file",
    "key_file",
    type=click.Path(path_type=str),
    help=f"HMAC key for control requests (default {_DEFAULT_KEY}).",
)
def guard(paths: tuple[str, ...], **given: Any) -> None:
    """Guard PATHS: judge every PE file opened under them before the open returns (root).

    `codeintegrity guard status|reload|stop` talks to a running guard over its control socket.
    Exit status: 0 stopped cleanly, 2 usage error, 4 a trust/policy/catalog/sink/config file
    that does not load, 5 cryptographic self-test failed, 69 fanotify unavailable (not root,
    or no kernel support).
    """
    from ..guard.settings import load_settings

    try:
        settings = load_settings(paths, given)
    except ValueError as exc:
        _fail(str(exc), exit_codes.CONFIG)
    if len(paths) == 1 and paths[0] in _CONTROL:
        _control(paths[0], settings.control_socket, settings.key_file)
        return
    if not settings.paths:
        raise click.UsageError("give at least one PATH to guard (or status|reload|stop)")
    from ..guard.main import run_guard

    sys.exit(run_guard(settings))


def _control(command: str, socket_path: str | None, key_file: str) -> None:
    from ..guard.control import ControlError, request

    if socket_path is None:
        _fail("no control socket configured", exit_codes.USAGE)
    try:
        answer = request(socket_path, key_file, command)
    except ControlError as exc:
        _fail(str(exc), exit_codes.CONFIG)
    if command == "status":
        for name, value in answer.items():
            click.echo(f"{name}: {'-' if value is None else value}")
    else:
        click.echo(str(answer.get("result", "ok")))
