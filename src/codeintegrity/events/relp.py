"""The ``relp://HOST:PORT`` sink: RFC 5424 messages over RELP, acknowledged one by one.

RELP (the Reliable Event Logging Protocol of librelp; rsyslog's ``imrelp``/``omrelp``) frames
every message as ``TXNR SP COMMAND SP DATALEN [SP DATA] LF`` and the receiver answers each
transaction with ``TXNR rsp DATALEN 200 OK``. An event counts as delivered only when its
``200 OK`` has come back, which is what plain TCP cannot say (see :mod:`.syslog_tcp`): a
collector that closes with data unread never acknowledged it, so it is sent again.

A write sends the batch in windows of ``window`` transactions and waits for their answers. When
the connection dies, the unanswered messages are sent again on a new connection (a message
that was processed but whose answer was lost then arrives twice: RELP is at-least-once, and
the EventRecordID tells the copies apart). A write that cannot get its events acknowledged
(no connection before ``timeout``, or a negative answer) raises ``SinkWriteError`` with the
number acknowledged; the pipeline counts the rest as discarded.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

from .model import Event
from .render_syslog import render_syslog

RELP_OFFERS = b"relp_version=0\nrelp_software=codeintegrity\ncommands=syslog"
MAX_TXNR = 999_999_999
MAX_FRAME = 128 * 1024 * 1024  # a response larger than this is not RELP


class RelpProtocolError(OSError):
    """The peer answered something that is not a RELP response."""


class RelpSink:
    """RELP client; see the module notes."""

    def __init__(
        self,
        uri: str,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        window: int = 128,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self.uri = uri
        self._address = (host, port)
        self._timeout = timeout
        self._window = max(1, window)
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._backoff = min_backoff
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._txnr = 0
        self.resent = 0  # messages sent again because their connection died unanswered
        self.reconnects = 0
        self.start_error: str | None = None
        try:
            self._open()
        except OSError as exc:  # down at start: an outage, retried by write
            self.start_error = f"cannot connect to {uri}: {exc}"
            self._drop()

    # --- connection ----------------------------------------------------------------------------
    def _next_txnr(self) -> int:
        self._txnr = self._txnr % MAX_TXNR + 1
        return self._txnr

    def _open(self) -> None:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._buffer, self._txnr = sock, b"", 0
        txnr = self._next_txnr()
        sock.sendall(_frame(txnr, b"open", RELP_OFFERS))
        answer, status = self._response()
        if answer != txnr or not status.startswith(b"200"):
            raise RelpProtocolError(f"{self.uri}: open refused: {_text(status)}")

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _reconnect(self, deadline: float) -> None:
        """Open a new session, retrying with backoff until ``deadline``."""
        self._drop()
        while True:
            try:
                self._open()
            except OSError as exc:
                self._drop()
                pause = min(self._backoff, deadline - time.monotonic())
                if pause <= 0:
                    raise _write_error(f"{self.uri}: {exc}") from None
                time.sleep(pause)
                self._backoff = min(self._backoff * 2, self._max_backoff)
                continue
            self._backoff = self._min_backoff
            self.reconnects += 1
            return

    def _response(self) -> tuple[int, bytes]:
        """The next ``rsp`` frame: (txnr, its data). ``serverclose`` hints end the session."""
        while True:
            txnr, command, data = self._read_frame()
            if command == b"rsp":
                return txnr, data
            if command == b"serverclose":
                raise ConnectionResetError("the collector closed the RELP session")
            raise RelpProtocolError(f"{self.uri}: unexpected RELP command {_text(command)}")

    def _read_frame(self) -> tuple[int, bytes, bytes]:
        assert self._sock is not None
        while True:
            parsed = _parse(self._buffer)
            if parsed is not None:
                txnr, command, data, used = parsed
                self._buffer = self._buffer[used:]
                return txnr, command, data
            if len(self._buffer) > MAX_FRAME:
                raise RelpProtocolError(f"{self.uri}: response too large")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed by the collector")
            self._buffer += chunk

    # --- the sink protocol -------------------------------------------------------------------
    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        messages = [render_syslog(event) for event in events]
        acked = 0  # leading events of the batch answered 200
        deadline = time.monotonic() + self._timeout
        while acked < len(messages):
            if self._sock is None:
                try:
                    self._reconnect(deadline)
                except OSError as exc:
                    raise _write_error(str(exc), delivered=acked) from None
            window = messages[acked : acked + self._window]
            answered = [0]
            try:
                self._exchange(window, answered)
            except RelpProtocolError as exc:
                self._drop()
                raise _write_error(str(exc), delivered=acked + answered[0]) from None
            except OSError:
                self._drop()  # the unanswered rest of the window goes again
                acked += answered[0]
                self.resent += len(window) - answered[0]
                if time.monotonic() >= deadline:
                    raise _write_error(
                        f"{self.uri}: not acknowledged before the timeout", delivered=acked
                    ) from None
                continue
            acked += len(window)
            deadline = time.monotonic() + self._timeout  # progress: a new timeout
        return events

    def _exchange(self, messages: list[bytes], answered: list[int]) -> None:
        """Send one window and wait for every answer. ``answered[0]`` follows how many leading
        messages were answered 200 (what counts when the exchange fails midway)."""
        assert self._sock is not None
        txnrs = [self._next_txnr() for _ in messages]
        self._sock.sendall(
            b"".join(_frame(t, b"syslog", m) for t, m in zip(txnrs, messages, strict=True))
        )
        position = {txnr: index for index, txnr in enumerate(txnrs)}
        done = [False] * len(txnrs)
        while answered[0] < len(txnrs):
            txnr, status = self._response()
            index = position.get(txnr)
            if index is None:
                raise RelpProtocolError(f"{self.uri}: answer to unknown transaction {txnr}")
            if not status.startswith(b"200"):
                raise RelpProtocolError(f"{self.uri}: message refused: {_text(status)}")
            done[index] = True
            while answered[0] < len(done) and done[answered[0]]:
                answered[0] += 1

    def close(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendall(_frame(self._next_txnr(), b"close", b""))
            sock.settimeout(min(self._timeout, 2.0))
            self._response()
        except OSError:
            pass
        self._drop()


def _frame(txnr: int, command: bytes, data: bytes) -> bytes:
    if data:
        return b"%d %s %d %s\n" % (txnr, command, len(data), data)
    return b"%d %s 0\n" % (txnr, command)


def _parse(buffer: bytes) -> tuple[int, bytes, bytes, int] | None:
    """(txnr, command, data, bytes used) of the first whole frame, or None when incomplete."""
    header_end = -1
    spaces = 0
    for index in range(min(len(buffer), 64)):
        byte = buffer[index]
        if byte == 0x20:
            spaces += 1
            if spaces == 3:
                header_end = index
                break
        elif byte == 0x0A and spaces == 2:  # DATALEN 0: "txnr command 0\n"
            header_end = index
            break
    if header_end < 0:
        if len(buffer) >= 64:
            raise RelpProtocolError("malformed RELP frame header")
        return None
    try:
        txnr_text, command, length_text = buffer[:header_end].split(b" ")
        txnr, length = int(txnr_text), int(length_text)
    except ValueError:
        raise RelpProtocolError("malformed RELP frame header") from None
    if length == 0:
        return txnr, command, b"", header_end + 1
    start = header_end + 1
    if len(buffer) < start + length + 1:
        return None
    if buffer[start + length] != 0x0A:
        raise RelpProtocolError("RELP frame without its trailer")
    return txnr, command, buffer[start : start + length], start + length + 1


def _text(value: bytes) -> str:
    return value[:80].decode("utf-8", "replace").replace("\n", " ")


def _write_error(message: str, *, delivered: int = 0) -> OSError:
    from .sinks import SinkWriteError

    return SinkWriteError(message, delivered=delivered)
