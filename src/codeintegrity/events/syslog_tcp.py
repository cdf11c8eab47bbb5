"""The ``syslog+tcp://HOST:PORT`` sink: RFC 5424 over TCP with RFC 6587 octet counting.

TCP says nothing when a collector goes away with data still in our send buffer: ``send``
succeeded long ago. So every frame sent stays in flight, with its end offset in the connection's
byte stream, until the collector's TCP has acknowledged it, which Linux tells with ``SIOCOUTQ``
(bytes written but not yet acknowledged). When a connection dies, its unacknowledged frames are
sent first on the next connection (the old one is reset, so they cannot also arrive late).
Frames that cannot be resent (no new connection before ``close`` gives up, or more than
``max_resend``) were already counted delivered: ``take_late_losses`` hands them back to the
pipeline, which counts them as discarded and announces them by 4612. A lost 4612 frame is
handed back too, so that its count is announced again. At ``close`` the sink waits up to
``drain_timeout`` until everything is acknowledged, resending as needed.

A collector that is down at start, or while the sink waits to reconnect, is one outage: the
writer waits out the backoff (at most ``max_backoff``; it is its own thread, verification does
not wait for it) and then tries again; a write that still cannot connect fails, and the pipeline
counts that batch as discarded.

What a collector's TCP acknowledged but its program never read (it closed the socket with data
still queued) no sender can see; only application-level acknowledgement (RELP) covers that.
Without ``SIOCOUTQ`` (not Linux) a frame counts as delivered once written.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence

from .model import Event
from .render_syslog import render_syslog

# (octet-counted frame, the AuditsDiscarded a 4612 frame announces; 0 for any other event)
Frame = tuple[bytes, int]


class SyslogTcpSink:
    """RFC 5424 over TCP, reconnecting with bounded backoff; see the module notes."""

    def __init__(
        self,
        uri: str,
        host: str,
        port: int,
        *,
        timeout: float = 5.0,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        drain_timeout: float = 5.0,
        max_resend: int = 100_000,
    ) -> None:
        self.uri = uri
        self._address = (host, port)
        self._timeout = timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._backoff = min_backoff
        self._retry_at = 0.0
        self._drain_timeout = drain_timeout
        self._max_resend = max_resend
        self.reconnects = 0
        self.resent = 0  # frames sent again after a connection died with them unacknowledged
        self.last_error: str | None = None
        self._sock: socket.socket | None = None
        self._sent = 0  # bytes written to the current connection
        self._inflight: deque[tuple[int, Frame]] = deque()  # (end offset, frame), unacked
        self._resend: list[Frame] = []  # counted delivered, to go first on the next connection
        self._late = 0
        self._late_notices = 0
        self._late_reason = ""
        self.start_error: str | None = None
        try:
            self._sock = self._connect()
        except OSError as exc:
            self.start_error = f"cannot connect to {uri}: {exc}"
            self._failed_connect()

    # --- connection ----------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sent = 0
        return sock

    def _failed_connect(self) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)

    def _peer_closed(self, sock: socket.socket) -> bool:
        # A syslog receiver never sends: readable means EOF or a reset.
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _ensure_connected(self, wait: bool = True) -> socket.socket:
        if self._sock is not None and not self._peer_closed(self._sock):
            return self._sock
        self._salvage()
        pause = self._retry_at - time.monotonic()
        if pause > 0:
            if not wait:
                raise _write_error(f"{self.uri}: not connected (retry in {pause:.2f}s)")
            time.sleep(pause)
        try:
            self._sock = self._connect()
        except OSError as exc:
            self._failed_connect()
            raise _write_error(f"{self.uri}: {exc}") from None
        self._backoff = self._min_backoff
        self.reconnects += 1
        return self._sock

    def _abort(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:  # RST, not FIN: unacknowledged data must not arrive after we resend it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()

    # --- acknowledgement bookkeeping ---------------------------------------------------------
    def _prune(self, sock: socket.socket) -> None:
        """Forget the frames the peer's TCP has acknowledged."""
        unacked = unacked_bytes(sock)
        if unacked is None:
            self._inflight.clear()  # no way to know: delivered once written
            return
        acked = self._sent - unacked
        while self._inflight and self._inflight[0][0] <= acked:
            self._inflight.popleft()

    def _salvage(self) -> None:
        """The connection is dead: keep its unacknowledged frames for the next one; reset it."""
        if self._sock is None:
            return
        self._prune(self._sock)
        self._keep_for_resend([frame for _, frame in self._inflight])
        self._inflight.clear()
        self._abort()

    def _keep_for_resend(self, frames: list[Frame]) -> None:
        room = max(0, self._max_resend - len(self._resend))
        if len(frames) > room:
            self._lose_late(frames[room:], "more than the resend buffer holds")
            frames = frames[:room]
        self._resend.extend(frames)

    def _lose_late(self, frames: Sequence[Frame], reason: str) -> None:
        events = sum(1 for _, announces in frames if not announces)
        self._late += events
        self._late_notices += sum(announces for _, announces in frames)
        self._late_reason = f"{self.uri}: {events} events written but never acknowledged ({reason})"

    def take_late_losses(self) -> tuple[int, str]:
        """Events reported delivered earlier that are now known lost (the count is reset)."""
        late, self._late = self._late, 0
        return late, self._late_reason

    def take_late_notice_losses(self) -> int:
        """Discards announced by 4612 frames that never arrived (to announce again)."""
        late, self._late_notices = self._late_notices, 0
        return late

    # --- the sink protocol -------------------------------------------------------------------
    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        sock = self._ensure_connected()
        resend, self._resend = self._resend, []
        self.resent += len(resend)
        frames = [*resend, *map(_frame, events)]
        payload = b"".join(data for data, _ in frames)
        start = self._sent
        pushed = 0
        try:
            view = memoryview(payload)
            while pushed < len(payload):
                pushed += sock.send(view[pushed:])
        except OSError as exc:
            # The connection died under this batch: every frame not acknowledged (earlier ones
            # and this batch's, written or not) goes first on the next connection.
            self._sent = start + pushed
            written = self._track(frames, start)
            self._prune(sock)
            self._keep_for_resend([f for _, f in self._inflight] + frames[written:])
            self._inflight.clear()
            self._abort()
            self._failed_connect()
            self.last_error = f"{self.uri}: {exc} (unacknowledged frames kept to resend)"
            return events
        self._sent = start + pushed
        self._track(frames, start)
        self._prune(sock)
        return events

    def _track(self, frames: list[Frame], start: int) -> int:
        """Put the wholly written frames in flight; returns how many there were."""
        end = start
        for count, frame in enumerate(frames):
            end += len(frame[0])
            if end > self._sent:
                return count
            self._inflight.append((end, frame))
        return len(frames)

    def close(self) -> None:
        """Resend what waits, then wait (``drain_timeout``) until the collector's TCP has
        acknowledged everything; what is unacknowledged then is a late loss."""
        deadline = time.monotonic() + self._drain_timeout
        while time.monotonic() < deadline:
            sock = self._sock
            if self._resend or (self._inflight and (sock is None or self._peer_closed(sock))):
                try:
                    self._ensure_connected(wait=False)
                    self.write(())
                except OSError:
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            if sock is None:
                break
            self._prune(sock)
            if not self._inflight:
                break
            time.sleep(0.005)
        if self._sock is not None:
            self._prune(self._sock)
        left = [frame for _, frame in self._inflight] + self._resend
        self._inflight.clear()
        self._resend = []
        if left:
            self._lose_late(left, "not acknowledged when the sink closed")
            self._abort()
        elif self._sock is not None:
            self._sock.close()
            self._sock = None


def _frame(event: Event) -> Frame:
    message = render_syslog(event)
    announces = int(event.value("AuditsDiscarded") or 0) if event.event_id == 4612 else 0
    return b"%d %s" % (len(message), message), announces


def _write_error(message: str) -> OSError:
    from .sinks import SinkWriteError

    return SinkWriteError(message)


def unacked_bytes(sock: socket.socket) -> int | None:
    """SIOCOUTQ: bytes in the socket's send queue not yet acknowledged (Linux); else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import fcntl
        import termios

        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # == SIOCOUTQ
    except (OSError, ImportError):
        return None
    return int.from_bytes(raw, sys.byteorder, signed=True)
