"""The click options several commands share (verify, image, guard, watch), defined once so
they read and parse the same everywhere. Each is a decorator; ``unset`` makes a flag default
to None, for a command that merges the command line over a configuration file (guard).

File arguments are plain strings, not ``click.Path``: a file that is missing, unreadable or
a directory is the command's to refuse with exit 4 ("does not load"), not click's exit 2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from .params import iso_time, time_or_span

F = TypeVar("F", bound=Callable[..., Any])

EVENTS_HELP = (
    "Also send events to jsonl:PATH, xml:PATH, sqlite:PATH, syslog+udp://HOST:PORT, "
    "syslog+tcp://HOST:PORT or - (stdout); repeatable."
)


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def trust_options(*, unset: bool = False) -> Callable[[F], F]:
    """--trust FILE (repeatable) and --no-default-trust."""
    return _stack(
        click.option(
            "--trust",
            "trust_files",
            metavar="FILE",
            multiple=True,
            help="Add trust anchors from a PEM/DER file (repeatable).",
        ),
        click.option(
            "--no-default-trust",
            is_flag=True,
            default=None if unset else False,
            help="Do not trust Microsoft's root program (the default anchors).",
        ),
    )


def at_option(command: F) -> F:
    """--at ISO-TIME."""
    return click.option(
        "--at",
        "at",
        callback=iso_time,
        metavar="ISO-TIME",
        help="Judge certificate validity at this time when a file has no valid timestamp "
        "(default: now).",
    )(command)


def policy_option(command: F) -> F:
    """--policy FILE: the run's policy (TOML)."""
    return click.option(
        "--policy",
        "policy_file",
        metavar="FILE",
        help="Apply a policy (TOML): mode, allowed signers, deny rules, revocation.",
    )(command)


CATALOG_HELP = "A .cat file or a directory of them (e.g. a mounted CatRoot); repeatable."


def catalog_option(text: str = CATALOG_HELP) -> Callable[[F], F]:
    """--catalog PATH (repeatable); ``text`` is its help."""
    return click.option(
        "--catalog",
        "catalogs",
        metavar="PATH",
        multiple=True,
        help=text,
    )


def page_hash_option(default: str | None = None) -> Callable[[F], F]:
    """--require-page-hashes-for off|drivers|all."""
    return click.option(
        "--require-page-hashes-for",
        "require_page_hashes",
        type=click.Choice(["off", "drivers", "all"]),
        default=default,
        help="Require page hashes for no file, kernel drivers and FORCE_INTEGRITY images, or all.",
    )


def event_options(*, unset: bool = False) -> Callable[[F], F]:
    """--events URI (repeatable), --no-store and --store FILE."""
    return _stack(
        click.option("--events", "event_uris", multiple=True, metavar="URI", help=EVENTS_HELP),
        click.option(
            "--no-store",
            is_flag=True,
            default=None if unset else False,
            help="Do not record events in the default store.",
        ),
        click.option(
            "--store",
            "store_path",
            metavar="FILE",
            help="Record events in this SQLite store instead of the default one.",
        ),
    )


def time_window_options(command: F) -> F:
    """--since and --until: an ISO 8601 time or a span back from now."""
    return _stack(
        click.option(
            "--since", callback=time_or_span, metavar="TIME", help="ISO time or span (2h)."
        ),
        click.option(
            "--until", callback=time_or_span, metavar="TIME", help="ISO time or span (2h)."
        ),
    )(command)


def read_store_option(text: str) -> Callable[[F], F]:
    """--store FILE for a command that reads the event store; ``text`` is its help."""
    return click.option(
        "--store", "store_path", type=click.Path(dir_okay=False, path_type=str), help=text
    )
