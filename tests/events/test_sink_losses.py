"""Sinks count exactly what they lost: a full disk, a crashed run, a collector that closes.

For every sink, ``delivered + discarded == produced``, and what was discarded is announced by a
4612 record that itself stays parseable.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from codeintegrity.events import sinks as sinks_module
from codeintegrity.events.build import events_for_report
from codeintegrity.events.pipeline import EventPipeline, open_pipeline
from codeintegrity.events.render_syslog import parse_structured_data
from codeintegrity.events.sinks import FileSink, SinkWriteError, SyslogTcpSink, open_sink

from .reports import HOST, tampered_report


def _record_key(sd: dict[str, dict[str, str]]) -> tuple[str, str]:
    """An event's identity: EventRecordIDs are numbered per channel."""
    return sd["win@32473"]["Channel"], sd["win@32473"]["EventRecordID"]


def _jsonl_accounting(path: Path) -> tuple[int, int, list[tuple[str, int]]]:
    """(ordinary events, losses announced by 4612, (channel, record id) of each): every line
    must parse."""
    ordinary = announced = 0
    ids: list[tuple[str, int]] = []
    for line in path.read_text("utf-8").splitlines():
        doc = json.loads(line)  # a torn line would raise here
        if doc["winlog"]["event_id"] == "4612":
            announced += int(doc["winlog"]["event_data"]["AuditsDiscarded"])
        else:
            ordinary += 1
            ids.append((doc["winlog"]["channel"], int(doc["winlog"]["record_id"])))
    return ordinary, announced, ids


# --- a full disk, for real -------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs: a real ENOSPC after a short write. Needs root (mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_jsonl_loss_notice_is_parseable_when_room_comes_back(small_tmpfs):
    path = small_tmpfs / "events.jsonl"
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 40 * 1024)  # leaves ~24 KiB for the log
    uri = f"jsonl:{path}"
    pipeline = EventPipeline([open_sink(uri)], host=HOST, queue_size=100_000)
    produced = 0
    for n in range(150):
        produced += pipeline.emit_report(tampered_report(f"/d/{n:05}.exe"))
    assert pipeline.flush(10)
    assert pipeline._workers[0].discarded > 0, "the disk never filled"
    ballast.unlink()  # room again
    produced += pipeline.emit_report(tampered_report("/d/after.exe"))
    summary = pipeline.close()
    ordinary, announced, ids = _jsonl_accounting(path)
    assert announced == summary.discarded[uri] == summary.reported[uri] > 0
    assert ordinary == summary.delivered[uri]
    assert ordinary + announced == produced == summary.produced
    assert len(ids) == len(set(ids))
    assert summary.complete is False and summary.lost[uri] == announced


def test_xml_on_a_full_disk_stays_a_document(small_tmpfs):
    path = small_tmpfs / "events.xml"
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 40 * 1024)
    uri = f"xml:{path}"
    pipeline = EventPipeline([open_sink(uri)], host=HOST, queue_size=100_000)
    produced = sum(pipeline.emit_report(tampered_report(f"/d/{n}.exe")) for n in range(80))
    assert pipeline.flush(10)
    ballast.unlink()
    produced += pipeline.emit_report(tampered_report("/d/after.exe"))
    summary = pipeline.close()
    root = ET.parse(path).getroot()
    ns = "{http://schemas.microsoft.com/win/2004/08/events/event}"
    ordinary = [e for e in root if e.findtext(f"{ns}System/{ns}EventID") != "4612"]
    notices = [e for e in root if e.findtext(f"{ns}System/{ns}EventID") == "4612"]
    announced = sum(
        int(d.text or 0)
        for e in notices
        for d in e.iter(f"{ns}Data")
        if d.get("Name") == "AuditsDiscarded"
    )
    assert summary.discarded[uri] > 0 and announced == summary.discarded[uri]
    assert len(ordinary) == summary.delivered[uri]
    assert len(ordinary) + announced == produced


# --- short writes without root: a file descriptor that fills up after N bytes -------------


class _Disk:
    """os.pwrite onto a file that can hold ``capacity`` bytes: past that, writes are short,
    then fail with ENOSPC (truncating the file frees room again, as on a real disk)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.real = os.pwrite

    def __call__(self, fd: int, data, offset: int) -> int:
        room = self.capacity - offset
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(fd, bytes(data[:room]), offset)


@pytest.mark.parametrize("scheme", ["jsonl", "xml"])
def test_short_write_is_truncated_to_whole_records(tmp_path, monkeypatch, scheme):
    path = tmp_path / f"e.{scheme}"
    render = sinks_module.render_ecs if scheme == "jsonl" else sinks_module.render_xml
    footer = b"" if scheme == "jsonl" else sinks_module.XML_FOOTER
    events = events_for_report(tampered_report(), host=HOST)
    sink = open_sink(f"{scheme}:{path}")
    sink.write(events[:1])
    body_end = path.stat().st_size - len(footer)
    # Room for the second record, its footer and a part of the third: a short write.
    capacity = body_end + len(render(events[1])) + 1 + len(footer) + 40
    monkeypatch.setattr(sinks_module.os, "pwrite", _Disk(capacity))
    with pytest.raises(SinkWriteError) as info:
        sink.write(events[1:])
    assert info.value.delivered == 1 and "1 of 3 events" in str(info.value)
    sink.close()
    data = path.read_bytes()
    assert len(data) <= capacity and data.endswith(b"\n")
    if scheme == "jsonl":
        lines = [json.loads(line) for line in data.splitlines()]  # no cut-off line
        assert [doc["event"]["code"] for doc in lines] == [str(e.event_id) for e in events[:2]]
    else:
        root = ET.fromstring(data)  # still a document, footer put back
        assert len(root) == 2


def test_crashed_files_are_repaired_and_continued(tmp_path):
    events = events_for_report(tampered_report(), host=HOST)
    jsonl, xml = tmp_path / "e.jsonl", tmp_path / "e.xml"
    for uri in (f"jsonl:{jsonl}", f"xml:{xml}"):
        sink = open_sink(uri)
        sink.write(events[:2])
        sink.close()
    # A crash in the middle of a record: a cut-off line, and for XML no closing tag.
    jsonl.write_bytes(jsonl.read_bytes() + b'{"winlog": {"event_')
    text = xml.read_bytes()
    xml.write_bytes(text[: -len(b"</Events>\n")] + b"<Event xmlns=")
    with pytest.raises(ET.ParseError):
        ET.parse(xml)
    for uri in (f"jsonl:{jsonl}", f"xml:{xml}"):
        sink = open_sink(uri)  # reopening cuts back to the last whole record
        sink.write(events[2:])
        sink.close()
    assert len([json.loads(line) for line in jsonl.read_text().splitlines()]) == 4
    assert len(ET.parse(xml).getroot()) == 4


def test_xml_document_is_continued_across_runs_and_foreign_files_refused(tmp_path):
    events = events_for_report(tampered_report(), host=HOST)
    xml = tmp_path / "e.xml"
    for batch in (events[:1], events[1:3], events[3:]):
        sink = open_sink(f"xml:{xml}")
        sink.write(batch)
        sink.close()
        assert ET.parse(xml).getroot().tag == "Events"  # a document after every run
    assert len(ET.parse(xml).getroot()) == 4
    foreign = tmp_path / "other.xml"
    foreign.write_text("<Something/>\n")
    from codeintegrity.errors import SinkError

    with pytest.raises(SinkError, match="not an <Events> document"):
        open_sink(f"xml:{foreign}")
    assert foreign.read_text() == "<Something/>\n"


def test_file_sink_refuses_a_directory_and_a_fifo(tmp_path):
    from codeintegrity.errors import SinkError

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(SinkError, match="cannot open"):
        FileSink("jsonl:x", str(tmp_path), sinks_module.render_ecs)
    with pytest.raises(SinkError):
        # O_RDWR on a FIFO opens without blocking; it is refused as not a regular file.
        FileSink("jsonl:fifo", str(tmp_path / "fifo"), sinks_module.render_ecs)


# --- the default store that cannot be opened -------------------------------------------------


def test_unopenable_default_store_is_a_warning_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the state folder should be")
    monkeypatch.setenv("CODEINTEGRITY_HOME", str(blocker / "sub"))
    jsonl = tmp_path / "e.jsonl"
    pipeline = open_pipeline([f"jsonl:{jsonl}"])
    assert pipeline.store_unavailable and "--no-store" in pipeline.store_unavailable
    assert "CODEINTEGRITY_HOME" in pipeline.store_unavailable
    produced = pipeline.emit_report(tampered_report())
    summary = pipeline.close()
    assert summary.delivered == {f"jsonl:{jsonl}": produced}
    assert summary.complete and summary.store_unavailable == pipeline.store_unavailable
    assert any("not recorded in the default store" in line for line in summary.lines())
    from codeintegrity.errors import SinkError

    with pytest.raises(SinkError):  # a store the user named is still an error
        open_pipeline([], store_path=str(blocker / "x" / "s.sqlite3"))


# --- syslog over TCP: a collector that is down at start, and one that closes ---------------


class _Collector:
    """An RFC 6587 octet-counting receiver on 127.0.0.1. ``close_after`` bytes into a
    connection it closes it (having parsed every whole frame it read); then it accepts the
    next connection. Frames are keyed by EventRecordID, so a resent one counts once."""

    def __init__(
        self, close_after: int | None = None, port: int = 0, rcvbuf: int | None = None
    ) -> None:
        self.close_after = close_after
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:  # inherited by accepted connections
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.server.bind(("127.0.0.1", port))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        self.records: dict[tuple[str, str], int] = {}
        self.duplicates = 0
        self.connections = 0
        self.closed_early = 0
        self.busy = False
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self.busy = True
            try:
                self._read(conn)
            finally:
                self.busy = False

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        total = 0
        with conn:
            conn.settimeout(5)
            while True:
                try:
                    chunk = conn.recv(1 << 16)
                except OSError:
                    return
                if not chunk:
                    return
                total += len(chunk)
                buffer += chunk
                while True:
                    space = buffer.find(b" ")
                    if space < 0:
                        break
                    length = int(buffer[:space])
                    if len(buffer) < space + 1 + length:
                        break
                    self._frame(buffer[space + 1 : space + 1 + length].decode("utf-8"))
                    buffer = buffer[space + 1 + length :]
                if self.close_after is not None and total >= self.close_after:
                    self.closed_early += 1
                    return  # the rest of this connection's bytes are never read

    def _frame(self, message: str) -> None:
        sd = parse_structured_data(message)
        key = _record_key(sd)
        if key in self.records:
            self.duplicates += 1
        is_notice = sd["win@32473"]["EventID"] == "4612"
        self.records[key] = int(sd["data@32473"]["AuditsDiscarded"]) if is_notice else 0

    def accounted(self) -> tuple[int, int]:
        """(ordinary events received, losses announced by 4612), each record once."""
        values = list(self.records.values())
        return sum(1 for v in values if not v), sum(values)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until the connection our sink closed has been read to its end."""
        deadline = time.monotonic() + timeout
        time.sleep(0.05)
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop = True
        self.server.close()
        self.thread.join(5)


def test_tcp_collector_down_at_start_does_not_stop_verification():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on this port now
    uri = f"syslog+tcp://127.0.0.1:{port}"
    pipeline = open_pipeline([uri], store=False)
    produced = sum(pipeline.emit_report(tampered_report(f"/d/{n}.exe")) for n in range(3))
    assert pipeline.flush(10)
    collector = _Collector(port=port)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            produced += pipeline.emit_report(tampered_report("/d/later.exe"))
            assert pipeline.flush(10)
            if collector.accounted()[1]:
                break
            time.sleep(0.05)
        summary = pipeline.close()
        deadline = time.monotonic() + 10
        while sum(collector.accounted()) < produced and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        collector.stop()
    ordinary, announced = collector.accounted()
    assert announced >= 12  # the three reports made before the collector came up
    assert ordinary == summary.delivered[uri] and announced == summary.discarded[uri]
    assert ordinary + announced == produced


class _ResettingCollector(_Collector):
    """After ``close_after`` bytes on a connection it stops reading, lets its small receive
    buffer fill (our sender then holds the rest, unacknowledged), and resets the connection.
    Before that it peeks at what its TCP had acknowledged but its program never read: the
    whole frames there are ``dropped``, the one loss no sender can see (RELP's domain)."""

    def __init__(self, close_after: int) -> None:
        self.reset_after = close_after
        self.dropped: set[tuple[str, str]] = set()
        super().__init__(close_after=None, rcvbuf=8192)

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        total = 0
        with conn:
            conn.settimeout(5)
            while True:
                try:
                    chunk = conn.recv(1 << 16)
                except OSError:
                    return
                if not chunk:
                    return
                total += len(chunk)
                buffer = self._frames(buffer + chunk, self._frame)
                if total >= self.reset_after:
                    break
            self.closed_early += 1
            time.sleep(0.1)  # the receive window fills up and closes
            try:
                unread = conn.recv(1 << 20, socket.MSG_PEEK)  # acknowledged, never read
            except OSError:
                unread = b""
            self._frames(buffer + unread, self._drop)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _drop(self, message: str) -> None:
        self.dropped.add(_record_key(parse_structured_data(message)))

    @staticmethod
    def _frames(buffer: bytes, handle) -> bytes:
        while (space := buffer.find(b" ")) >= 0:
            length = int(buffer[:space])
            if len(buffer) < space + 1 + length:
                break
            handle(buffer[space + 1 : space + 1 + length].decode("utf-8"))
            buffer = buffer[space + 1 + length :]
        return buffer


def _send_through_collector(collector, reports: int, timeout: float):
    uri = f"syslog+tcp://127.0.0.1:{collector.port}"
    sink = SyslogTcpSink(uri, "127.0.0.1", collector.port, timeout=timeout, drain_timeout=60)
    pipeline = EventPipeline([sink], host=HOST, queue_size=100_000, max_block=5)
    produced = 0
    for n in range(reports):
        produced += pipeline.emit_report(tampered_report(f"/d/{n:05}.exe"))
    assert pipeline.flush(60)
    produced += pipeline.emit_report(tampered_report("/d/last.exe"))
    summary = pipeline.close(timeout=30)
    collector.wait_idle()
    return uri, sink, produced, summary


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIOCOUTQ is Linux's")
def test_tcp_collector_reset_after_n_bytes_every_event_is_accounted_exactly():
    """The collector resets every connection after ~40 KB, with data still unsent in our
    kernel buffer. SIOCOUTQ says how much: those frames are resent on the next connection.
    Then, exactly: what our sink counts delivered is what the collector's TCP acknowledged,
    i.e. what its program read plus what it dropped unread; delivered + lost == produced."""
    collector = _ResettingCollector(close_after=40_000)
    try:
        uri, sink, produced, summary = _send_through_collector(collector, 400, timeout=5)
    finally:
        collector.stop()
    ordinary, announced = collector.accounted()
    assert collector.closed_early >= 2, "the collector never reset a connection"
    assert sink.resent > 0, (sink.reconnects, summary.lines())
    lost = summary.discarded[uri]
    assert summary.delivered[uri] + lost == produced
    dropped_ordinary = len(collector.dropped - set(collector.records))
    assert ordinary + dropped_ordinary == summary.delivered[uri], summary.lines()
    assert announced == summary.reported[uri] == lost


def test_tcp_collector_closing_with_unread_data_is_the_limit_of_plain_tcp():
    """A collector that closes with data its TCP acknowledged but its program never read
    drops it without telling anyone: no sender can see that (RELP can). What the sender does
    guarantee: its own counts add up, it never claims fewer losses than it knows, and the
    collector never has more than was delivered."""
    collector = _Collector(close_after=40_000)
    try:
        uri, sink, produced, summary = _send_through_collector(collector, 400, timeout=5)
    finally:
        collector.stop()
    ordinary, announced = collector.accounted()
    assert collector.closed_early >= 1
    assert summary.delivered[uri] + summary.discarded[uri] == produced
    assert ordinary <= summary.delivered[uri]
    assert announced <= summary.reported[uri] <= summary.discarded[uri]


# --- RELP: every message acknowledged by the collector's program ----------------------------


class _RelpCollector:
    """A RELP server (librelp's framing) on 127.0.0.1 that answers ``200 OK`` to each message
    it processed. ``close_after`` messages into a session it closes the connection, leaving
    the messages it had received but not processed unanswered."""

    def __init__(self, close_after: int | None = None) -> None:
        self.close_after = close_after
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.records: dict[tuple[str, str], int] = {}
        self.duplicates = 0
        self.sessions = 0
        self.closed_early = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.sessions += 1
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        from codeintegrity.events.relp import _frame, _parse

        buffer = b""
        processed = 0
        conn.settimeout(5)
        while True:
            parsed = _parse(buffer)
            if parsed is None:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                continue
            txnr, command, data, used = parsed
            buffer = buffer[used:]
            if command == b"open":
                conn.sendall(_frame(txnr, b"rsp", b"200 OK\nrelp_version=0\ncommands=syslog"))
            elif command == b"close":
                conn.sendall(_frame(txnr, b"rsp", b""))
                return
            elif command == b"syslog":
                if self.close_after is not None and processed >= self.close_after:
                    self.closed_early += 1
                    return  # what was received and not answered is the sender's to resend
                sd = parse_structured_data(data.decode("utf-8"))
                key = _record_key(sd)
                self.duplicates += key in self.records
                notice = sd["win@32473"]["EventID"] == "4612"
                self.records[key] = int(sd["data@32473"]["AuditsDiscarded"]) if notice else 0
                processed += 1
                conn.sendall(_frame(txnr, b"rsp", b"200 OK"))

    def accounted(self) -> tuple[int, int]:
        values = list(self.records.values())
        return sum(1 for v in values if not v), sum(values)

    def stop(self) -> None:
        self._stop = True
        self.server.close()
        self.thread.join(10)


def test_relp_collector_closing_mid_stream_loses_nothing():
    """The collector drops the session every 300 messages with more in flight: what it never
    answered is sent again, and delivered == what the collector processed == produced."""
    collector = _RelpCollector(close_after=300)
    uri = f"relp://127.0.0.1:{collector.port}"
    try:
        pipeline = open_pipeline([uri], store=False, queue_size=100_000)
        produced = sum(pipeline.emit_report(tampered_report(f"/d/{n}.exe")) for n in range(400))
        summary = pipeline.close(timeout=60)
    finally:
        collector.stop()
    ordinary, announced = collector.accounted()
    assert collector.closed_early >= 3
    assert summary.delivered[uri] == ordinary == produced == 1600, summary.lines()
    assert summary.discarded[uri] == announced == 0 and summary.complete


def test_relp_uri_needs_a_port_and_a_collector_down_at_start_is_an_outage():
    from codeintegrity.errors import SinkError
    from codeintegrity.events.relp import RelpSink

    with pytest.raises(SinkError, match="a port"):
        open_sink("relp://127.0.0.1")
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    sink = open_sink(f"relp://127.0.0.1:{port}")
    assert isinstance(sink, RelpSink) and "cannot connect" in (sink.start_error or "")
    sink._timeout = 0.2
    with pytest.raises(SinkWriteError) as info:
        sink.write(events_for_report(tampered_report(), host=HOST))
    assert info.value.delivered == 0
    sink.close()


@pytest.fixture
def rsyslog_relp(tmp_path):
    """rsyslogd with imrelp (Debian: rsyslog, rsyslog-relp), writing each message raw."""
    rsyslogd = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None
    )
    if rsyslogd is None or not any(
        Path(d, "imrelp.so").exists()
        for d in ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog",
                  "/usr/lib/rsyslog")
    ):  # fmt: skip
        pytest.skip("needs rsyslogd with imrelp (apt: rsyslog rsyslog-relp)")
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    out = tmp_path / "received.log"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{tmp_path}")\n'
        'module(load="imrelp")\n'
        f'input(type="imrelp" port="{port}" address="127.0.0.1")\n'
        'template(name="raw" type="string" string="%rawmsg%\\n")\n'
        f'action(type="omfile" file="{out}" template="raw")\n'
    )
    process = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"rsyslogd exited: {process.stdout.read().decode()[:500]}")
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("rsyslogd did not start listening")
    try:
        yield port, out
    finally:
        process.terminate()
        process.wait(10)


def test_rsyslog_imrelp_receives_every_event(rsyslog_relp):
    port, out = rsyslog_relp
    uri = f"relp://127.0.0.1:{port}"
    pipeline = open_pipeline([uri], store=False)
    produced = sum(pipeline.emit_report(tampered_report(f"/d/{n}.exe")) for n in range(50))
    summary = pipeline.close(timeout=30)
    assert summary.delivered[uri] == produced == 200 and summary.complete
    deadline = time.monotonic() + 10  # acknowledged means received; omfile flushes soon after
    while time.monotonic() < deadline:
        lines = out.read_text("utf-8").splitlines() if out.exists() else []
        if len(lines) >= produced:
            break
        time.sleep(0.05)
    ids = [_record_key(parse_structured_data(line)) for line in lines]
    assert len(ids) == len(set(ids)) == produced
