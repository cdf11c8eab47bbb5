"""A real syslog listener on 127.0.0.1 (loopback only) receives the events."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

from codeintegrity.events.pipeline import open_pipeline
from codeintegrity.events.render_syslog import parse_structured_data

from .reports import shared_writable_report, tampered_report


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class TcpListener:
    """RFC 6587 octet-counting receiver that can be stopped and restarted on its port."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.lock = threading.Lock()
        self.port = 0
        self._conns: set[socket.socket] = set()
        self.server: _TCPServer | None = None

    def start(self) -> None:
        listener = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with listener.lock:
                    listener._conns.add(self.connection)
                while True:
                    length = b""
                    while (ch := self.rfile.read(1)) not in (b" ", b""):
                        length += ch
                    if not length:
                        return
                    payload = self.rfile.read(int(length))
                    with listener.lock:
                        listener.messages.append(payload.decode("utf-8"))

        self.server = _TCPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def accounted(self) -> tuple[int, int]:
        ordinary = announced = 0
        for message in self.messages:
            win = parse_structured_data(message)["win@32473"]
            if win["EventID"] == "4612":
                announced += int(parse_structured_data(message)["data@32473"]["AuditsDiscarded"])
            else:
                ordinary += 1
        return ordinary, announced


def test_udp_listener_receives_every_event():
    received: list[bytes] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    pipeline = open_pipeline([f"syslog+udp://127.0.0.1:{port}"], store=False)
    produced = sum(pipeline.emit_report(tampered_report(f"/d/{n}.exe")) for n in range(5))
    summary = pipeline.close()
    while len(received) < produced:
        received.append(sock.recv(65535))
    sock.close()
    assert summary.delivered[f"syslog+udp://127.0.0.1:{port}"] == produced == 20
    ids = [parse_structured_data(m.decode())["win@32473"]["EventID"] for m in received]
    assert ids == ["3033", "3089", "5038", "6281"] * 5
    paths = {parse_structured_data(m.decode())["data@32473"].get("param1") for m in received}
    assert paths - {None} == {f"/d/{n}.exe" for n in range(5)}


def test_tcp_listener_stopped_mid_run_every_event_is_delivered_or_announced():
    listener = TcpListener()
    listener.start()
    uri = f"syslog+tcp://127.0.0.1:{listener.port}"
    pipeline = open_pipeline([uri], store=False)
    produced = 0
    for n in range(5):
        produced += pipeline.emit_report(tampered_report(f"/before/{n}.exe"))
    assert pipeline.flush(10)
    listener.wait_for(produced)
    assert len(listener.messages) == produced == 20

    listener.stop()  # the collector goes away mid-run
    for n in range(5):
        produced += pipeline.emit_report(shared_writable_report(f"/during/{n}.exe"))
    assert pipeline.flush(10)

    listener.start()  # and comes back on the same port
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        produced += pipeline.emit_report(tampered_report("/after.exe"))
        assert pipeline.flush(10)
        time.sleep(0.05)
        if any("4612" in m.split(" ", 6)[5] for m in listener.messages):
            break
    summary = pipeline.close()
    deadline = time.monotonic() + 10  # let the listener read what was sent before close
    while listener.accounted()[0] < summary.delivered[uri] and time.monotonic() < deadline:
        time.sleep(0.01)
    listener.stop()

    ordinary, announced = listener.accounted()
    assert announced > 0, "the listener never got the 4612"
    assert ordinary + announced == produced
    assert summary.delivered[uri] == ordinary
    assert summary.discarded[uri] == announced == summary.reported[uri]
    assert summary.produced == produced
