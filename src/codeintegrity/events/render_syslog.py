"""RFC 5424 syslog lines carrying the event fields as structured data.

``<PRI>1 TIMESTAMP HOST codeintegrity PROCID EVENTID [win@32473 ...][data@32473 ...] MSG``

- Facility 13 (log audit). Severity: 4 (warning) for audit failures and CI errors, 6 (info)
  otherwise.
- SD-ID ``win@32473`` holds the System block (EventID, Channel, Provider, RecordID, Keywords,
  ActivityID); ``data@32473`` holds every EventData field. 32473 is the enterprise number RFC
  5612 reserves for documentation: these SD-IDs are ours, not a registered format.
- SD-NAMEs may not contain spaces, ``=``, ``]`` or ``"`` and are at most 32 characters, so
  EventData names such as ``File Name`` are written with ``_`` (``File_Name``).
- MSG is the rendered message on one line (the template's tabs and line breaks folded to one
  space), UTF-8 with a BOM as RFC 5424 section 6.4 asks.
- Control characters inside values (a line break or tab in a file name, which Linux allows) are
  written as ``#`` and three octal digits (``#012`` for a line feed), in SD-PARAM values and in
  MSG alike, the convention rsyslog uses for control characters: a value never breaks the line
  or the framing, and the original is recoverable. ``"``, ``\\`` and ``]`` in SD-PARAM values
  are escaped with a backslash as RFC 5424 section 6.3.3 requires.
"""

from __future__ import annotations

import re
from datetime import UTC

from .model import Event
from .schema import KEYWORD_BIT_AUDIT_FAILURE

FACILITY_LOG_AUDIT = 13
SD_ENTERPRISE = 32473
APP_NAME = "codeintegrity"
_BOM = "\ufeff"

_SD_ESCAPE = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]"})
_BAD_NAME = re.compile(r'[^!-~]|[=\]"]')
_FOLD = re.compile(r"[ \t\r\n]*[\t\r\n][ \t\r\n]*")  # template layout -> one space
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_control(text: str) -> str:
    """Control characters as ``#ooo`` (octal), the rsyslog convention."""
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda m: f"#{ord(m.group()):03o}", text)


def sd_name(name: str) -> str:
    """A valid RFC 5424 SD-NAME for an EventData name."""
    return _BAD_NAME.sub("_", name)[:32] or "_"


def _header_token(value: str, limit: int) -> str:
    # Header fields are PRINTUSASCII without spaces; "-" is the NILVALUE.
    token = _BAD_NAME.sub("_", value).replace("]", "_")[:limit]
    return token or "-"


def severity(event: Event) -> int:
    kind = event.kind
    if kind.keywords & KEYWORD_BIT_AUDIT_FAILURE or kind.level in (1, 2, 3):
        return 4
    return 6


def render_syslog(event: Event) -> bytes:
    """One RFC 5424 message (no trailing newline; framing is the transport's job)."""
    kind = event.kind
    pri = FACILITY_LOG_AUDIT * 8 + severity(event)
    when = event.time_created.astimezone(UTC).isoformat(timespec="microseconds")
    timestamp = when.replace("+00:00", "Z")
    system = [
        ("EventID", str(kind.event_id)),
        ("Channel", kind.channel),
        ("Provider", kind.provider),
        ("Keywords", f"0x{kind.keywords:016x}"),
    ]
    if event.record_id is not None:
        system.append(("EventRecordID", str(event.record_id)))
    if event.correlation_id is not None:
        system.append(("ActivityID", event.correlation_id))
    win = " ".join(f'{k}="{escape_control(v).translate(_SD_ESCAPE)}"' for k, v in system)
    values = event.data
    texts = event
    if not "".join([v for _, v in values]).isprintable():
        values = tuple((k, escape_control(v)) for k, v in values)
        texts = Event(event.event_id, event.time_created, event.computer, values)
    data = " ".join(f'{sd_name(k)}="{v.translate(_SD_ESCAPE)}"' for k, v in values)
    message = _FOLD.sub(" ", texts.message()).strip()
    line = (
        f"<{pri}>1 {timestamp} {_header_token(event.computer, 255)} {APP_NAME} "
        f"{event.process_id or '-'} {kind.event_id} "
        f"[win@{SD_ENTERPRISE} {win}][data@{SD_ENTERPRISE} {data}] {_BOM}{message}"
    )
    return line.encode("utf-8")


def parse_structured_data(line: str) -> dict[str, dict[str, str]]:
    """Read the SD elements of one message back (for tests and listeners)."""
    header = re.match(r"<\d{1,3}>1 (?:\S+ ){5}", line)
    if header is None:
        raise ValueError("not an RFC 5424 message")
    out: dict[str, dict[str, str]] = {}
    element = re.compile(r'\[([^ \]=]+)((?: [^=\s]+="(?:\\.|[^"\\])*")*)\]')
    pos = header.end()
    while (found := element.match(line, pos)) is not None:
        params = {
            m.group(1): re.sub(r"\\(.)", r"\1", m.group(2))
            for m in re.finditer(r'([^=\s]+)="((?:\\.|[^"\\])*)"', found.group(2))
        }
        out[found.group(1)] = params
        pos = found.end()
    return out
