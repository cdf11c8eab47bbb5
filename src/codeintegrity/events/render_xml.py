"""Windows event XML, in the shape of Event Viewer's XML view and `wevtutil qe /f:xml`.

The element order, namespace and attributes follow the real 5038 record in the research notes:
``<Event xmlns=...><System><Provider Name Guid/>...<Security/></System><EventData><Data
Name=...>``. Keywords are written as 0x-prefixed 16-digit hex, the provider GUID in braces.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Event, format_system_time

EVENT_NAMESPACE = "http://schemas.microsoft.com/win/2004/08/events/event"

_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;",
                       "\n": "&#10;", "\r": "&#13;"})  # fmt: skip


def _text(value: str) -> str:
    # \r would be normalised away by XML parsers; keep it as a character reference.
    return value.translate(_TEXT).replace("\r", "&#13;")


def render_xml(event: Event) -> bytes:
    """One ``<Event>`` element as UTF-8 bytes (no XML declaration, no trailing newline)."""
    kind = event.kind
    correlation = (
        f'<Correlation ActivityID="{event.correlation_id.translate(_ATTR)}" />'
        if event.correlation_id
        else "<Correlation />"
    )
    security = (
        f'<Security UserID="{event.user_id.translate(_ATTR)}" />'
        if event.user_id
        else "<Security />"
    )
    record = "" if event.record_id is None else str(event.record_id)
    data = "".join(
        f'<Data Name="{name.translate(_ATTR)}">{_text(value)}</Data>'
        if value
        else f'<Data Name="{name.translate(_ATTR)}" />'
        for name, value in event.data
    )
    parts = (
        f'<Event xmlns="{EVENT_NAMESPACE}"><System>',
        f'<Provider Name="{kind.provider}" Guid="{kind.provider_guid}" />',
        f"<EventID>{kind.event_id}</EventID><Version>{kind.version}</Version>",
        f"<Level>{kind.level}</Level><Task>{kind.task}</Task><Opcode>{kind.opcode}</Opcode>",
        f"<Keywords>0x{kind.keywords:016x}</Keywords>",
        f'<TimeCreated SystemTime="{format_system_time(event.time_created, event.time_100ns)}" />',
        f"<EventRecordID>{record}</EventRecordID>{correlation}",
        f'<Execution ProcessID="{event.process_id}" ThreadID="{event.thread_id}" />',
        f"<Channel>{kind.channel}</Channel><Computer>{_text(event.computer)}</Computer>",
        f"{security}</System><EventData>{data}</EventData></Event>",
    )
    return "".join(parts).encode("utf-8")


def render_xml_document(events: Iterable[Event]) -> bytes:
    """Several events as one well-formed document: ``<Events>`` around the records."""
    body = b"\n".join(render_xml(e) for e in events)
    return b'<?xml version="1.0" encoding="utf-8"?>\n<Events>\n' + body + b"\n</Events>\n"
