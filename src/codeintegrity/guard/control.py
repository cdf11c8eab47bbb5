"""The guard's control port: a Unix socket for ``status``, ``reload`` and ``stop``.

Who may talk: only root, checked with SO_PEERCRED on every connection (the socket file itself
is connectable by anyone, so that a stranger's attempt is seen and raised as **4615**, "invalid
use of LPC port": this is our local control port). What is accepted: one JSON line per
connection, ``{"command", "time", "nonce", "mac"}`` where ``mac`` is HMAC-SHA256 over
``command|time|nonce`` keyed by a root-only key file; a request whose MAC does not verify (or
is more than a minute off, or replays a nonce) raises **4816**, "RPC detected an integrity
violation".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import stat
import struct
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CIError

if TYPE_CHECKING:
    from ..events.pipeline import EventPipeline
    from .service import Guard

_MAX_REQUEST = 4096
_MAX_SKEW = 60.0
_ALLOWED_UIDS = frozenset({0})
# SEC_E_MESSAGE_ALTERED: "the message or signature supplied for verification has been altered"
SEC_E_MESSAGE_ALTERED = 0x8009030F
_UCRED = struct.Struct("3i")  # pid, uid, gid


class ControlError(CIError):
    """The control socket or its key cannot be used."""


def load_key(path: str, *, create: bool) -> bytes:
    """The HMAC key; created (0600, 32 random bytes) when missing and ``create``. A key that
    group or others could read is refused: anyone reading it could forge requests."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        if not create:
            raise ControlError(f"no key file {path}") from None
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        return load_key(path, create=False)
    except OSError as exc:
        raise ControlError(f"cannot read key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or st.st_uid != 0:
            raise ControlError(f"key file {path} must be owned by root and mode 0600")
        key = handle.read(1024).strip()
    if len(key) < 16:
        raise ControlError(f"key file {path} holds fewer than 16 bytes")
    return key


def sign(key: bytes, command: str, when: float, nonce: str) -> str:
    return hmac.new(key, f"{command}|{when:.3f}|{nonce}".encode(), hashlib.sha256).hexdigest()


def request(socket_path: str, key_file: str, command: str, timeout: float = 10.0) -> Any:
    """Send one signed request to a running guard and return its JSON answer."""
    key = load_key(key_file, create=False)
    when, nonce = time.time(), secrets.token_hex(8)
    line = {"command": command, "time": f"{when:.3f}", "nonce": nonce}
    line["mac"] = sign(key, command, float(line["time"]), nonce)
    return send_raw(socket_path, json.dumps(line).encode() + b"\n", timeout)


def send_raw(socket_path: str, payload: bytes, timeout: float = 10.0) -> Any:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as exc:
        raise ControlError(f"cannot reach the guard at {socket_path}: {exc}") from None
    try:
        answer = json.loads(data or b"{}")
    except ValueError:
        raise ControlError("the guard's answer is not JSON") from None
    if isinstance(answer, dict) and "error" in answer:
        raise ControlError(f"refused: {answer['error']}")
    return answer


class ControlServer:
    def __init__(
        self, path: str, key_file: str, guard: Guard, pipeline: EventPipeline | None
    ) -> None:
        self.path = path
        self.guard = guard
        self.pipeline = pipeline
        self.key = load_key(key_file, create=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[str, float] = {}  # nonces of the last minutes: a replay is refused
        try:
            where = Path(path)
            where.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if where.is_socket():
                where.unlink()  # left over by a guard that was killed
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self._sock.bind(path)
            # SO_PEERCRED is the gate, not the file mode: a stranger's attempt must be seen.
            where.chmod(0o666)  # noqa: S103
            self._sock.listen(8)
            self._sock.settimeout(0.5)
        except OSError as exc:
            raise ControlError(f"cannot listen on {path}: {exc}") from None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="guard-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self._sock.close()
        Path(self.path).unlink(missing_ok=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    answer = self._handle(conn)
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    pass

    def _handle(self, conn: socket.socket) -> dict[str, Any]:
        from .opener import opener_of

        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, _gid = _UCRED.unpack(raw)
        data = _read_line(conn)
        try:
            message = json.loads(data)
            command = str(message.get("command", ""))[:64] if isinstance(message, dict) else ""
        except ValueError:
            message, command = None, ""
        peer = opener_of(pid)
        if uid not in _ALLOWED_UIDS:
            self._count("control_refused")
            self._emit_4615(peer.pid, peer.exe, uid, peer.user_name, command or "connect")
            return {"error": "permission denied"}
        if not isinstance(message, dict) or not self._mac_ok(message, command):
            self._count("control_bad_mac")
            self._emit_4816(f"pid {pid} ({peer.exe})")
            return {"error": "integrity check failed"}
        if command == "status":
            return self.guard.snapshot()
        if command == "reload":
            return {"result": "reloaded" if self.guard.reload() else "reload failed"}
        if command == "stop":
            self.guard.request_stop()
            self.guard.wake()
            return {"result": "stopping"}
        return {"error": f"unknown command {command!r}"}

    def _mac_ok(self, message: dict[str, Any], command: str) -> bool:
        try:
            when = float(str(message["time"]))
            nonce, mac = str(message["nonce"]), str(message["mac"])
        except (KeyError, ValueError):
            return False
        now = time.time()
        if abs(now - when) > _MAX_SKEW or nonce in self._seen:
            return False
        if not hmac.compare_digest(sign(self.key, command, when, nonce), mac):
            return False
        # Requests are served one at a time on this thread: no lock needed.
        self._seen = {n: t for n, t in self._seen.items() if now - t <= 2 * _MAX_SKEW}
        self._seen[nonce] = now
        return True

    def _count(self, name: str) -> None:
        stats = self.guard.stats
        with stats.lock:
            setattr(stats, name, getattr(stats, name) + 1)

    def _emit_4615(self, pid: int, exe: str, uid: int, user: str, call: str) -> None:
        host = self._host()
        values = {
            "SubjectUserSid": f"S-1-22-1-{uid}",
            "SubjectUserName": user,
            "SubjectDomainName": host.computer.split(".")[0].upper(),
            "SubjectLogonId": "0x0",
            "InvalidCallName": call,
            "ServerPortName": self.path,
            "ProcessId": f"{pid:#x}",
            "ProcessName": exe,
        }
        self._emit(4615, values, host)

    def _emit_4816(self, peer: str) -> None:
        values = {
            "PeerName": peer,
            "ProtocolSequence": "ncalrpc",  # local RPC, as Windows names it
            "SecurityError": str(SEC_E_MESSAGE_ALTERED),
        }
        self._emit(4816, values, self._host())

    def _host(self) -> Any:
        from ..events.build import Host

        return self.pipeline.host if self.pipeline is not None else Host.current()

    def _emit(self, event_id: int, values: dict[str, str], host: Any) -> None:
        from ..events.model import make_event

        event = make_event(
            event_id,
            values,
            computer=host.computer,
            time_created=datetime.now(UTC),
            process_id=host.process_id,
        )
        if self.pipeline is not None:
            self.pipeline.emit(event)
        else:
            self.guard.log(f"event {event_id}: {event.message().splitlines()[0]}")


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    try:
        while len(data) <= _MAX_REQUEST and b"\n" not in data:
            chunk = conn.recv(1024)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data[:_MAX_REQUEST]
