from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from codeintegrity.errors import SinkError
from codeintegrity.events.build import events_for_report
from codeintegrity.events.sinks import (
    FileSink,
    SqliteSink,
    StreamSink,
    SyslogTcpSink,
    SyslogUdpSink,
    open_sink,
)

from .reports import HOST, tampered_report


@pytest.mark.parametrize(
    "uri",
    [
        "bogus",
        "ftp:x",
        "jsonl:",
        "xml:",
        "sqlite:",
        "syslog+udp://",
        "syslog+tcp://host:notaport",
        "syslog+tcp://host:70000",
        "syslog+udp://host:514/path",
        "syslog+udp://host:514?x=1",
    ],
)
def test_bad_uri_is_a_one_line_sink_error(uri: str):
    with pytest.raises(SinkError) as info:
        open_sink(uri)
    message = str(info.value)
    assert "\n" not in message and message


def test_unopenable_file_and_refused_tcp_are_sink_errors(tmp_path: Path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(SinkError, match="cannot open"):
        open_sink(f"jsonl:{tmp_path / 'dir'}")
    with pytest.raises(SinkError, match="folder .* does not exist"):
        open_sink(f"jsonl:{tmp_path / 'missing' / 'e.jsonl'}")
    assert not (tmp_path / "missing").exists()  # never created (same rule as -o)
    # A TCP collector that is down at start is an outage, not a configuration error.
    down = open_sink("syslog+tcp://127.0.0.1:1")
    assert isinstance(down, SyslogTcpSink) and "cannot connect" in (down.start_error or "")
    with pytest.raises(OSError, match="not connected|refused"):
        down.write(events_for_report(tampered_report(), host=HOST))
    down.close()


def test_each_scheme_opens_its_sink(tmp_path: Path):
    kinds = {
        f"jsonl:{tmp_path / 'a.jsonl'}": FileSink,
        f"xml:{tmp_path / 'a.xml'}": FileSink,
        f"sqlite:{tmp_path / 'a.sqlite3'}": SqliteSink,
        "syslog+udp://127.0.0.1:5514": SyslogUdpSink,
        "-": StreamSink,
    }
    for uri, kind in kinds.items():
        sink = open_sink(uri)
        assert isinstance(sink, kind)
        assert sink.uri == uri
        sink.close()
    assert not isinstance(SyslogTcpSink, type(None))


def test_file_sinks_append_one_record_per_line(tmp_path: Path):
    events = events_for_report(tampered_report(), host=HOST)
    jsonl = open_sink(f"jsonl:{tmp_path / 'e.jsonl'}")
    xml = open_sink(f"xml:{tmp_path / 'e.xml'}")
    for sink in (jsonl, xml):
        sink.write(events[:2])
        sink.write(events[2:])
        sink.close()
    lines = (tmp_path / "e.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line)["winlog"]["event_id"] for line in lines] == [
        "3033",
        "3089",
        "5038",
        "6281",
    ]
    document = (tmp_path / "e.xml").read_bytes()
    root = ET.fromstring(document)  # a whole document, as Event Viewer's "Save as XML"
    assert root.tag == "Events" and len(root) == 4
    lines = document.decode("utf-8").splitlines()
    assert lines[:2] == ['<?xml version="1.0" encoding="utf-8"?>', "<Events>"]
    assert lines[-1] == "</Events>" and all(line.startswith("<Event ") for line in lines[2:-1])


def test_write_after_close_is_a_sink_write_error(tmp_path: Path):
    sink = open_sink(f"jsonl:{tmp_path / 'e.jsonl'}")
    sink.close()
    with pytest.raises(OSError):
        sink.write(events_for_report(tampered_report(), host=HOST))


def test_xml_to_stdout_is_one_document(capsysbinary):
    events = events_for_report(tampered_report(), host=HOST)
    sink = open_sink("xml:-")
    sink.write(events[:2])
    sink.write(events[2:])
    sink.close()
    out = capsysbinary.readouterr().out
    root = ET.fromstring(out)
    assert root.tag == "Events" and len(root) == 4
    empty = open_sink("xml:-")
    empty.close()
    assert len(ET.fromstring(capsysbinary.readouterr().out)) == 0
