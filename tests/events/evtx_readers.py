"""Four independent EVTX readers, each reduced to the same comparable form.

A record becomes ``(system, data)``: ``system`` a dict of the System values, ``data`` the
``(Name, value)`` pairs of EventData. Values are normalised only where the readers render one
typed value differently (documented per reader): GUID letter case and braces, hex digits
(python-evtx pads HexInt64 to 16 digits), FILETIME text (each reader has its own format), and
time precision (python-evtx and dissect convert FILETIMEs through floats).
"""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from codeintegrity.events.evtx_values import (
    T_BINARY,
    T_BOOL,
    T_FILETIME,
    T_GUID,
    T_HEX32,
    T_HEX64,
    field_type,
)
from codeintegrity.events.model import Event, parse_system_time
from codeintegrity.events.render_xml import render_xml

NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
Record = tuple[dict[str, object], list[tuple[str, object]] | None]


def _time(text: str) -> datetime:
    """Any reader's SystemTime text (ISO with up to 9 digits, or python-evtx's str())."""
    text = text.strip().replace(" ", "T")
    if text.endswith("+00:00"):
        text = text[:-6] + "Z"
    if not text.endswith("Z"):
        text += "Z"
    return parse_system_time(text)


def _guid(text: str | None) -> str | None:
    if not text:
        return None
    return "{" + str(uuid.UUID(text.strip("{}"))) + "}"


def norm_value(name: str, text: object, *, base64_binary: bool = False) -> object:
    """One EventData value in comparable form. ``base64_binary``: the reader renders Binary
    values as base64 (python-evtx does) rather than Windows' upper-case hex."""
    kind = field_type(name)
    if text is None:
        return ""
    if isinstance(text, datetime):
        return text.astimezone(UTC)
    if isinstance(text, bool) or (kind == T_BOOL and isinstance(text, int)):
        return "true" if text else "false"
    if isinstance(text, bytes):
        # dissect hands Binary values over as the hex text, in bytes
        return text.decode("ascii").upper() if re.fullmatch(rb"[0-9a-fA-F]*", text) else text.hex()
    value = str(text)
    if base64_binary and kind == T_BINARY and value:
        return base64.b64decode(value).hex().upper()
    if value and kind in (T_HEX32, T_HEX64) and re.fullmatch(r"0x[0-9a-fA-F]+", value):
        return int(value, 16)
    if value and kind == T_FILETIME:
        return _time(value)
    if kind == T_BOOL:
        return value.lower()
    if kind == T_BINARY:
        return value.upper()
    if kind == T_GUID and value:
        return _guid(value)
    return value


def from_xml(xml: str | bytes, *, base64_binary: bool = False) -> Record:
    """A record from Windows event XML (ours, or a reader's rendering)."""
    root = ET.fromstring(xml)
    sys_el = root.find(f"{NS}System")
    assert sys_el is not None

    def text(tag: str) -> str:
        el = sys_el.find(f"{NS}{tag}")
        assert el is not None, tag
        return (el.text or "").strip()

    def attr(tag: str, name: str) -> str | None:
        el = sys_el.find(f"{NS}{tag}")
        assert el is not None, tag
        return el.get(name) or None

    system: dict[str, object] = {
        "provider": attr("Provider", "Name"),
        "guid": _guid(attr("Provider", "Guid")),
        "event_id": int(text("EventID")),
        "version": int(text("Version")),
        "level": int(text("Level")),
        "task": int(text("Task")),
        "opcode": int(text("Opcode")),
        "keywords": int(text("Keywords"), 16),
        "time": _time(attr("TimeCreated", "SystemTime") or ""),
        "record_id": int(text("EventRecordID")),
        "activity": _guid(attr("Correlation", "ActivityID")),
        "pid": int(attr("Execution", "ProcessID") or 0),
        "tid": int(attr("Execution", "ThreadID") or 0),
        "channel": text("Channel"),
        "computer": text("Computer"),
        "user": attr("Security", "UserID"),
    }
    data_el = root.find(f"{NS}EventData")
    data = []
    for item in data_el if data_el is not None else ():
        name = item.get("Name") or ""
        data.append((name, norm_value(name, item.text or "", base64_binary=base64_binary)))
    return system, data


def ours(event: Event) -> Record:
    return from_xml(render_xml(event))


# Which records to reduce completely (by position); the others only give their record number.
# Every record is still read by the reader; only our side of the comparison is sampled.
Sample = Callable[[int], bool] | None


def _number_only(record_id: int) -> Record:
    return {"record_id": int(record_id)}, None


def read_python_evtx(path: Path, sample: Sample = None) -> list[Record]:
    import Evtx.Evtx as evtx_module

    out: list[Record] = []
    with evtx_module.Evtx(str(path)) as log:
        header = log.get_file_header()
        assert header.verify(), "python-evtx: file header does not verify"
        for chunk in log.chunks():
            if not chunk.verify():
                continue  # python-evtx reads a chunk only when its checksums hold
            for record in chunk.records():
                if sample is None or sample(len(out)):
                    out.append(from_xml(record.xml(), base64_binary=True))
                else:
                    out.append(_number_only(record.record_num()))
    return out


def read_rust_evtx(path: Path, sample: Sample = None) -> list[Record]:
    from evtx import PyEvtxParser

    return [
        from_xml(record["data"].encode())
        if sample is None or sample(i)
        else _number_only(record["event_record_id"])
        for i, record in enumerate(PyEvtxParser(str(path)).records())
    ]


def read_libevtx(path: Path, sample: Sample = None) -> list[Record]:
    import pyevtx

    log = pyevtx.file()
    log.open(str(path))
    try:
        return [
            from_xml(log.get_record(i).get_xml_string())
            if sample is None or sample(i)
            else _number_only(log.get_record(i).identifier)
            for i in range(log.number_of_records)
        ]
    finally:
        log.close()


def _dissect_guid(value: object) -> str | None:
    # dissect prints the GUID's bytes in stored order (its text for Windows' own files shows
    # the same swap): turn it back into the GUID those bytes hold.
    if value is None:
        return None
    return "{" + str(uuid.UUID(bytes_le=uuid.UUID(str(value).strip("{}")).bytes)) + "}"


_DISSECT_SYSTEM = {
    "Provider_Name", "Provider_Guid", "EventID", "EventID_Qualifiers", "Version", "Level",
    "Task", "Opcode", "Keywords", "TimeCreated_SystemTime", "EventRecordID",
    "Correlation_ActivityID", "Correlation_RelatedActivityID", "Execution_ProcessID",
    "Execution_ThreadID", "Channel", "Computer", "Security_UserID",
}  # fmt: skip


def read_dissect(path: Path, sample: Sample = None) -> list[Record]:
    from dissect.eventlog.evtx import Evtx

    out: list[Record] = []
    with path.open("rb") as handle:
        for record in Evtx(handle):
            if sample is not None and not sample(len(out)):
                number = record["EventRecordID"]
                out.append(_number_only(getattr(number, "value", number)))
                continue
            # Substituted values come wrapped (BxmlSub: .sub_id, .value).
            raw = {
                key: value.value if hasattr(value, "sub_id") else value
                for key, value in record.items()
            }
            when = raw["TimeCreated_SystemTime"]
            system: dict[str, object] = {
                "provider": str(raw["Provider_Name"]),
                "guid": _dissect_guid(raw["Provider_Guid"]),
                "event_id": int(raw["EventID"]),
                "version": int(raw["Version"]),
                "level": int(raw["Level"]),
                "task": int(raw["Task"]),
                "opcode": int(raw["Opcode"]),
                "keywords": int(str(raw["Keywords"]), 16),
                "time": when.astimezone(UTC) if isinstance(when, datetime) else _time(str(when)),
                "record_id": int(raw["EventRecordID"]),
                "activity": _dissect_guid(raw.get("Correlation_ActivityID")),
                "pid": int(raw["Execution_ProcessID"]),
                "tid": int(raw["Execution_ThreadID"]),
                "channel": str(raw["Channel"]),
                "computer": str(raw["Computer"]),
                "user": str(raw["Security_UserID"]) if raw.get("Security_UserID") else None,
            }
            data = [
                (
                    str(name),
                    _dissect_guid(value)
                    if field_type(str(name)) == T_GUID and value
                    else norm_value(str(name), value),
                )
                for name, value in raw.items()
                if name not in _DISSECT_SYSTEM
            ]
            out.append((system, data))
    return out


READERS = {
    "python-evtx": read_python_evtx,
    "evtx (Rust)": read_rust_evtx,
    "libevtx": read_libevtx,
    "dissect.eventlog": read_dissect,
}
# How far a reader's TimeCreated may sit from the FILETIME written: python-evtx goes through a
# float (microseconds off), dissect through a float of seconds (tens of milliseconds off; its
# reading of Windows' own sample files is off by the same kind of amount).
TIME_TOLERANCE_US = {"python-evtx": 2, "evtx (Rust)": 0, "libevtx": 0, "dissect.eventlog": 50_000}


def same(reader: str, got: Record, want: Record) -> list[str]:
    """The differences between a reader's record and ours (empty when equivalent)."""
    problems = []
    tolerance = TIME_TOLERANCE_US[reader]
    got_sys, got_data = got
    want_sys, want_data = want
    assert want_data is not None
    if got_data is None:  # not sampled: the record number only
        seen = got_sys["record_id"]
        return [] if seen == want_sys["record_id"] else [f"record_id: {seen}"]
    for key, value in want_sys.items():
        seen = got_sys.get(key)
        if isinstance(value, datetime) and isinstance(seen, datetime):
            if abs((seen - value).total_seconds()) * 1e6 > tolerance:
                problems.append(f"{key}: {seen} != {value}")
        elif seen != value:
            problems.append(f"{key}: {seen!r} != {value!r}")
    if [n for n, _ in got_data] != [n for n, _ in want_data]:
        problems.append(f"EventData names differ: {[n for n, _ in got_data]}")
        return problems
    for (name, seen_value), (_, value) in zip(got_data, want_data, strict=True):
        if isinstance(value, datetime) and isinstance(seen_value, datetime):
            if abs((seen_value - value).total_seconds()) * 1e6 > max(tolerance, 1):
                problems.append(f"{name}: {seen_value} != {value}")
        elif seen_value != value and not (seen_value in ("", None) and value in ("", None)):
            problems.append(f"{name}: {seen_value!r} != {value!r}")
    return problems
