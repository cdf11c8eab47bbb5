"""Event sinks chosen by URI.

==============================  =====================================================
``-``                           ECS JSON lines on standard output
``jsonl:PATH``                  ECS JSON lines appended to PATH
``xml:PATH``                    an ``<Events>`` document (Event Viewer's "Save as XML"
                                shape), one ``<Event>`` per line, continued across runs
``sqlite:PATH``                 the event store format (:mod:`.store`)
``evtx:DIR``                    one .evtx file per channel in DIR (:mod:`.evtx_sink`)
``syslog+udp://HOST:PORT``      RFC 5424, one message per datagram
``syslog+tcp://HOST:PORT``      RFC 5424 with RFC 6587 octet-counting framing
``relp://HOST:PORT``            RFC 5424 over RELP: every message acknowledged
==============================  =====================================================

A sink's :meth:`Sink.write` either delivers the whole batch or raises :class:`SinkWriteError`
whose ``delivered`` says how many leading events of the batch were delivered whole; the
pipeline counts the rest as discarded. File sinks never leave a cut-off record: on a short
write (a full disk) they truncate the file back to the end of the last whole record. A sink
that learns later that events it had reported delivered never arrived (the TCP syslog sink,
when a connection dies with unacknowledged data) returns them from ``take_late_losses``.
The TCP syslog sink reconnects with a bounded exponential backoff (a collector that is down
at start is the same case); while it waits, writes fail at once instead of blocking.

New schemes are added in :data:`SCHEMES` (scheme -> opener of the part after the colon).
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from ..errors import SinkError
from .model import Event
from .relp import RelpSink
from .render_ecs import render_ecs
from .render_syslog import render_syslog
from .render_xml import render_xml
from .store import EventStore
from .syslog_tcp import SyslogTcpSink

SINK_SYNTAX = (
    "-, jsonl:PATH, xml:PATH, sqlite:PATH, evtx:DIR, syslog+udp://HOST:PORT, "
    "syslog+tcp://HOST:PORT or relp://HOST:PORT"
)
DEFAULT_SYSLOG_PORT = 514


class SinkWriteError(OSError):
    """A batch was not (wholly) delivered to a sink. ``delivered`` leading events of it were;
    the pipeline counts the others as discarded."""

    def __init__(self, message: str, *, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


class Sink(Protocol):
    uri: str

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        """Deliver every event or raise SinkWriteError; returns the events as delivered."""
        ...

    def close(self) -> None: ...


class StreamSink:
    """Rendered lines appended to a binary stream (standard output). With a ``header`` and
    ``footer`` (``xml:-``) the output is one document: the header before the first event, the
    footer at close."""

    def __init__(
        self,
        uri: str,
        stream: BinaryIO,
        render: Callable[[Event], bytes],
        owned: bool,
        header: bytes = b"",
        footer: bytes = b"",
    ) -> None:
        self.uri = uri
        self._stream = stream
        self._render = render
        self._owned = owned
        self._header = header
        self._footer = footer

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        if not events:
            return events
        # The empty last item gives the final newline without copying the batch once more.
        payload = b"\n".join([*map(self._render, events), b""])
        try:
            self._stream.write(self._header + payload)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed file
            raise SinkWriteError(f"{self.uri}: {exc}") from None
        self._header = b""
        return events

    def close(self) -> None:
        if self._footer:
            try:
                self._stream.write(self._header + self._footer)
                self._stream.flush()
            except (OSError, ValueError):
                pass
            self._footer = b""
        if self._owned:
            try:
                self._stream.close()
            except OSError:
                pass


XML_HEADER = b'<?xml version="1.0" encoding="utf-8"?>\n<Events>\n'
XML_FOOTER = b"</Events>\n"


class FileSink:
    """Whole records, one per line, written to a file with ``os.write``/``pwrite``.

    ``footer`` (the XML sink's ``</Events>``) is rewritten after every batch, so the file is a
    complete document whenever no write is under way: each batch is written over the old
    footer, followed by a new one. A short write (ENOSPC, EFBIG, EIO) truncates the file back
    to the end of the last whole record and puts the footer back; the error says how many
    events of the batch made it. Opening a file left by a crash (a cut-off last record, no
    footer) cuts it back to its last whole record and continues it.
    """

    def __init__(
        self,
        uri: str,
        path: str,
        render: Callable[[Event], bytes],
        header: bytes = b"",
        footer: bytes = b"",
    ) -> None:
        self.uri = uri
        self._render = render
        self._footer = footer
        self._fd = _open_file(uri, path)
        try:
            self._end = _prepare(self._fd, uri, header, footer)
        except BaseException:
            os.close(self._fd)
            raise

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        if not events:
            return events
        if self._fd < 0:
            raise SinkWriteError(f"{self.uri}: sink is closed")
        rendered = list(map(self._render, events))
        # One join: every record followed by a newline, then the footer (b"" for JSONL).
        payload = b"\n".join([*rendered, self._footer])
        written = 0
        try:
            while written < len(payload):
                written += os.pwrite(self._fd, memoryview(payload)[written:], self._end + written)
        except OSError as exc:
            whole, count = 0, 0
            for record in rendered:
                if whole + len(record) + 1 > written:
                    break
                whole += len(record) + 1
                count += 1
            self._end += whole
            self._repair()
            raise SinkWriteError(
                f"{self.uri}: {exc.strerror or exc} after {count} of {len(events)} events",
                delivered=count,
            ) from None
        self._end += len(payload) - len(self._footer)
        return events

    def _repair(self) -> None:
        """Back to the last whole record, footer included, after a failed write."""
        try:
            os.ftruncate(self._fd, self._end)
            if self._footer:
                os.pwrite(self._fd, self._footer, self._end)
        except OSError:
            pass  # a missing footer is repaired by the next open

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _open_file(uri: str, path: str) -> int:
    """The file behind a ``jsonl:``/``xml:`` sink; its folder must exist (as for ``-o``)."""
    if not path:
        raise SinkError(f"sink {uri!r} names no file")
    parent = Path(path).parent
    if not parent.is_dir():
        raise SinkError(f"cannot open {uri}: folder {parent} does not exist")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise SinkError(f"cannot open {uri}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise SinkError(f"cannot open {uri}: not a regular file")
    return fd


_TAIL = 1 << 16  # how far back a torn record is looked for


def _prepare(fd: int, uri: str, header: bytes, footer: bytes) -> int:
    """Where the next record goes: after the last whole record (a torn tail cut off); the
    header written to a new file; an existing document checked to be one of ours."""
    size = os.fstat(fd).st_size
    if size == 0:
        os.pwrite(fd, header + footer, 0)
        return len(header)
    if header:
        if os.pread(fd, len(header), 0) != header:
            raise SinkError(
                f"cannot open {uri}: the file exists and is not an <Events> document written by "
                "codeintegrity (choose a new file)"
            )
    start = max(len(header), size - _TAIL)
    tail = os.pread(fd, size - start, start)
    if footer and tail.endswith(footer) and tail[: -len(footer)].endswith(b"\n"):
        return size - len(footer)  # a complete document: the next batch replaces the footer
    cut = tail.rfind(b"\n")
    end = start + cut + 1 if cut >= 0 else len(header)
    if end < len(header):
        end = len(header)
    os.ftruncate(fd, end)
    if footer:
        os.pwrite(fd, footer, end)
    return end


class SqliteSink:
    """The event store as a sink: a batch is acknowledged once committed."""

    def __init__(self, uri: str, store: EventStore) -> None:
        self.uri = uri
        self.store = store

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        try:
            return self.store.append(events)
        except SinkError as exc:
            raise SinkWriteError(str(exc)) from None

    def close(self) -> None:
        self.store.close()


class SyslogUdpSink:
    def __init__(self, uri: str, host: str, port: int) -> None:
        self.uri = uri
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM
            )[0]
            self._sock = socket.socket(family, kind, proto)
            # Connected UDP: an ICMP port-unreachable surfaces as ECONNREFUSED on a later send.
            self._sock.connect(address)
        except OSError as exc:
            raise SinkError(f"cannot open {uri}: {exc}") from None

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        sent = 0
        try:
            for event in events:
                self._sock.send(render_syslog(event))
                sent += 1
        except OSError as exc:
            raise SinkWriteError(f"{self.uri}: {exc} (after {sent} of {len(events)})") from None
        return events

    def close(self) -> None:
        self._sock.close()


def _syslog_address(uri: str, default_port: int | None = DEFAULT_SYSLOG_PORT) -> tuple[str, int]:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise SinkError(f"bad sink URI {uri!r}: {exc}") from None
    host = parts.hostname
    if not host or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SinkError(f"bad sink URI {uri!r}: expected {parts.scheme}://HOST:PORT")
    if port is None and default_port is None:
        raise SinkError(f"bad sink URI {uri!r}: expected {parts.scheme}://HOST:PORT (a port)")
    return host, port or default_port or DEFAULT_SYSLOG_PORT


def _sqlite(uri: str, rest: str) -> Sink:
    if not rest:
        raise SinkError(f"sink {uri!r} names no file")
    return SqliteSink(uri, EventStore(rest))


# scheme -> opener(uri, text after "scheme:"); add new sinks here.
SCHEMES: dict[str, Callable[[str, str], Sink]] = {
    "jsonl": lambda uri, rest: FileSink(uri, rest, render_ecs),
    "xml": lambda uri, rest: FileSink(uri, rest, render_xml, XML_HEADER, XML_FOOTER),
    "sqlite": _sqlite,
    "syslog+udp": lambda uri, _rest: SyslogUdpSink(uri, *_syslog_address(uri)),
    "syslog+tcp": lambda uri, _rest: SyslogTcpSink(uri, *_syslog_address(uri)),
    # RELP has no registered port (rsyslog's examples use 2514): it must be given.
    "relp": lambda uri, _rest: RelpSink(uri, *_syslog_address(uri, None)),
    "evtx": lambda uri, rest: _evtx(uri, rest),
}


def _evtx(uri: str, rest: str) -> Sink:
    """One .evtx file per channel in a directory (:mod:`.evtx_sink`), imported on use."""
    from .evtx_sink import EvtxSink

    return EvtxSink(uri, rest)


def open_sink(uri: str) -> Sink:
    """Open the sink a URI names; raises SinkError (one line) when it is bad or unopenable."""
    if uri in ("-", "jsonl:-"):
        return StreamSink(uri, sys.stdout.buffer, render_ecs, owned=False)
    if uri == "xml:-":
        return StreamSink(uri, sys.stdout.buffer, render_xml, False, XML_HEADER, XML_FOOTER)
    scheme, sep, rest = uri.partition(":")
    opener = SCHEMES.get(scheme) if sep else None
    if opener is None:
        raise SinkError(f"unknown sink {uri!r}: expected {SINK_SYNTAX}")
    return opener(uri, rest)
