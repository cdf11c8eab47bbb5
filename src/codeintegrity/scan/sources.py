"""Paths to scan from a list file (``--files-from``): newline or NUL separated, streamed."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ..errors import ConfigError

CHUNK = 1 << 16


def paths_from(stream: BinaryIO) -> Iterator[str]:
    """Each path of the list, as it is read (a `find -print0` pipeline is judged while find
    still runs). The separator is NUL when the first chunk holds one, else newline (a trailing
    CR is dropped, empty lines are ignored). Bytes that are not UTF-8 are kept as the file
    system encodes them (``os.fsdecode``)."""
    separator: bytes | None = None
    pending = b""
    while True:
        chunk = stream.read1(CHUNK) if hasattr(stream, "read1") else stream.read(CHUNK)
        if not chunk:
            break
        if separator is None:
            separator = b"\0" if b"\0" in chunk else b"\n"
        pending += chunk
        *complete, pending = pending.split(separator)
        for raw in complete:
            name = _clean(raw, separator)
            if name:
                yield name
    if pending:
        name = _clean(pending, separator or b"\n")
        if name:
            yield name


def _clean(raw: bytes, separator: bytes) -> str:
    if separator == b"\n" and raw.endswith(b"\r"):
        raw = raw[:-1]
    return os.fsdecode(raw)


def open_listing(name: str | None) -> BinaryIO | None:
    """The --files-from list: ``-`` is standard input. Raises ConfigError."""
    if name is None:
        return None
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")  # noqa: SIM115 - read while the scan runs
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read --files-from list: {exc.strerror}") from None


def inputs(paths: Iterable[str], listing: BinaryIO | None) -> Iterator[str]:
    """The command-line paths, then those of the list."""
    if listing is None:
        return iter(paths)
    return itertools.chain(paths, paths_from(listing))
