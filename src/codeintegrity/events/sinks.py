"""Event sinks chosen by URI.

==============================  =====================================================
``-``                           ECS JSON lines on standard output
``jsonl:PATH``                  ECS JSON lines appended to PATH
``xml:PATH``                    one ``<Event>`` per line appended to PATH (the shape of
                                ``wevtutil qe /f:xml``; wrap in ``<Events>`` to parse)
``sqlite:PATH``                 the event store format (:mod:`.store`)
``evtx:DIR``                    one .evtx file per channel in DIR (:mod:`.evtx_sink`)
``syslog+udp://HOST:PORT``      RFC 5424, one message per datagram
``syslog+tcp://HOST:PORT``      RFC 5424 with RFC 6587 octet-counting framing
==============================  =====================================================

A sink's :meth:`Sink.write` either delivers the whole batch or raises :class:`SinkWriteError`;
the pipeline counts a failed batch as discarded. A TCP syslog sink reconnects with a bounded
exponential backoff; while it waits, writes fail at once instead of blocking.
"""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from ..errors import SinkError
from .model import Event
from .render_ecs import render_ecs
from .render_syslog import render_syslog
from .render_xml import render_xml
from .store import EventStore

SINK_SYNTAX = (
    "-, jsonl:PATH, xml:PATH, sqlite:PATH, evtx:DIR, "
    "syslog+udp://HOST:PORT or syslog+tcp://HOST:PORT"
)
DEFAULT_SYSLOG_PORT = 514


class SinkWriteError(OSError):
    """A batch could not be delivered to a sink (it is counted as discarded)."""


class Sink(Protocol):
    uri: str

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        """Deliver every event or raise SinkWriteError; returns the events as delivered."""
        ...

    def close(self) -> None: ...


class StreamSink:
    """Rendered lines appended to a binary stream (a file or standard output)."""

    def __init__(
        self, uri: str, stream: BinaryIO, render: Callable[[Event], bytes], owned: bool
    ) -> None:
        self.uri = uri
        self._stream = stream
        self._render = render
        self._owned = owned

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        if not events:
            return events
        # The empty last item gives the final newline without copying the batch once more.
        payload = b"\n".join([*map(self._render, events), b""])
        try:
            self._stream.write(payload)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed file
            raise SinkWriteError(f"{self.uri}: {exc}") from None
        return events

    def close(self) -> None:
        if self._owned:
            try:
                self._stream.close()
            except OSError:
                pass


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


class SyslogTcpSink:
    """RFC 5424 over TCP (RFC 6587 octet counting), reconnecting with bounded backoff."""

    def __init__(
        self,
        uri: str,
        host: str,
        port: int,
        *,
        timeout: float = 5.0,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self.uri = uri
        self._address = (host, port)
        self._timeout = timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._backoff = min_backoff
        self._retry_at = 0.0
        self.reconnects = 0
        self._sock: socket.socket | None = None
        try:
            self._sock = self._connect()
        except OSError as exc:
            raise SinkError(f"cannot connect to {uri}: {exc}") from None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _peer_closed(self, sock: socket.socket) -> bool:
        # A syslog receiver never sends: readable means EOF or a reset. Checking before each
        # batch keeps a batch from vanishing into the buffer of a connection already closed.
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _ensure_connected(self) -> socket.socket:
        if self._sock is not None and not self._peer_closed(self._sock):
            return self._sock
        self._drop()
        now = time.monotonic()
        if now < self._retry_at:
            raise SinkWriteError(
                f"{self.uri}: not connected (retry in {self._retry_at - now:.2f}s)"
            )
        try:
            self._sock = self._connect()
        except OSError as exc:
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._max_backoff)
            raise SinkWriteError(f"{self.uri}: {exc}") from None
        self._backoff = self._min_backoff
        self.reconnects += 1
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        sock = self._ensure_connected()
        frames = []
        for event in events:
            message = render_syslog(event)
            frames.append(b"%d %s" % (len(message), message))
        try:
            sock.sendall(b"".join(frames))
        except OSError as exc:
            self._drop()
            self._retry_at = time.monotonic() + self._backoff
            raise SinkWriteError(f"{self.uri}: {exc}") from None
        return events

    def close(self) -> None:
        self._drop()


def _file_stream(uri: str, path: str) -> BinaryIO:
    if not path:
        raise SinkError(f"sink {uri!r} names no file")
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab")  # owned by the sink, closed by close()
    except OSError as exc:
        raise SinkError(f"cannot open {uri}: {exc.strerror or exc}") from None


def _syslog_address(uri: str) -> tuple[str, int]:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise SinkError(f"bad sink URI {uri!r}: {exc}") from None
    host = parts.hostname
    if not host or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SinkError(f"bad sink URI {uri!r}: expected {parts.scheme}://HOST:PORT")
    return host, port or DEFAULT_SYSLOG_PORT


def open_sink(uri: str) -> Sink:
    """Open the sink a URI names; raises SinkError (one line) when it is bad or unopenable."""
    if uri in ("-", "jsonl:-"):
        return StreamSink(uri, sys.stdout.buffer, render_ecs, owned=False)
    if uri == "xml:-":
        return StreamSink(uri, sys.stdout.buffer, render_xml, owned=False)
    scheme, sep, rest = uri.partition(":")
    if not sep:
        raise SinkError(f"unknown sink {uri!r}: expected {SINK_SYNTAX}")
    if scheme == "jsonl":
        return StreamSink(uri, _file_stream(uri, rest), render_ecs, owned=True)
    if scheme == "xml":
        return StreamSink(uri, _file_stream(uri, rest), render_xml, owned=True)
    if scheme == "sqlite":
        if not rest:
            raise SinkError(f"sink {uri!r} names no file")
        return SqliteSink(uri, EventStore(rest))
    if scheme == "evtx":  # one .evtx file per channel in a directory (.evtx_sink)
        from .evtx_sink import EvtxSink

        return EvtxSink(uri, rest)
    if scheme == "syslog+udp":
        return SyslogUdpSink(uri, *_syslog_address(uri))
    if scheme == "syslog+tcp":
        return SyslogTcpSink(uri, *_syslog_address(uri))
    raise SinkError(f"unknown sink {uri!r}: expected {SINK_SYNTAX}")
