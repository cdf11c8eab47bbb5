"""JSON renderers: the Winlogbeat/ECS document and the flat Sigma/Zircolite row.

The ECS form follows what Winlogbeat emits for an event-log record (``winlog.*``,
``event.code``, ``event.outcome`` from the audit keyword bits, ``host.name``) so that rules
compiled for Elasticsearch, e.g. ``winlog.channel:"Security" AND winlog.event_id:("5038" OR
"6281")``, match it. Winlogbeat's security module has no categorisation for these IDs; the
``event.category``/``event.type`` values here are our own choice (documented per ID below).
The flat form uses the field names Sigma's Windows rules address (``EventID``, ``Channel``,
``Provider_Name``, ``Computer`` and each EventData name), ready for a SQLite ``logs`` table.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from .model import Event, format_system_time
from .schema import KEYWORD_BIT_AUDIT_FAILURE, KEYWORD_BIT_AUDIT_SUCCESS, LEVEL_NAMES

ECS_VERSION = "8.11.0"

# event ID -> (event.category, event.type): our mapping, ECS allowed values only.
_CATEGORISATION: dict[int, tuple[list[str], list[str]]] = {
    5038: (["file", "intrusion_detection"], ["info", "denied"]),
    6281: (["file", "intrusion_detection"], ["info", "denied"]),
    6410: (["file", "intrusion_detection"], ["info", "denied"]),
    3033: (["file"], ["info"]),
    3063: (["file"], ["info"]),
    3089: (["file"], ["info"]),
    3076: (["file", "intrusion_detection"], ["info", "allowed"]),
    3077: (["file", "intrusion_detection"], ["info", "denied"]),
    4612: (["host"], ["info"]),
    5056: (["host"], ["info"]),
    5057: (["host"], ["info"]),
}


def _keyword_names(keywords: int) -> list[str]:
    names = []
    if keywords & KEYWORD_BIT_AUDIT_FAILURE:
        names.append("Audit Failure")
    if keywords & KEYWORD_BIT_AUDIT_SUCCESS:
        names.append("Audit Success")
    return names


def _put(target: dict[str, Any], dotted: str, value: object) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[parts[-1]] = value


def to_ecs(event: Event) -> dict[str, Any]:
    """The ECS document of one event as a dict (see module doc for the mapping)."""
    kind = event.kind
    code = str(kind.event_id)
    category, types = _CATEGORISATION.get(kind.event_id, (["host"], ["info"]))
    winlog: dict[str, Any] = {
        "channel": kind.channel,
        "provider_name": kind.provider,
        "provider_guid": kind.provider_guid,
        "event_id": code,
        "task": kind.task_name,
        "opcode": kind.opcode_name,
        "keywords": _keyword_names(kind.keywords),
        "computer_name": event.computer,
        "version": kind.version,
        "process": {"pid": event.process_id, "thread": {"id": event.thread_id}},
        "event_data": dict(event.data),
    }
    if event.record_id is not None:
        winlog["record_id"] = event.record_id
    if event.activity_id is not None:
        winlog["activity_id"] = event.activity_id
    if event.user_id is not None:
        winlog["user"] = {"identifier": event.user_id}
    doc: dict[str, Any] = {
        "@timestamp": event.time_created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "message": event.message(),
        "event": {
            "code": code,
            "kind": "event",
            "provider": kind.provider,
            "action": kind.task_name,
            "outcome": kind.outcome,
            "category": category,
            "type": types,
        },
        "log": {"level": LEVEL_NAMES.get(kind.level, "information")},
        "winlog": winlog,
        "host": {"name": event.computer},
        "ecs": {"version": ECS_VERSION},
    }
    for key, value in event.context:
        _put(doc, key, value)
    path = event.path
    if path is not None and "file" not in doc:
        doc["file"] = {"path": path}
    return doc


def render_ecs(event: Event) -> bytes:
    """One ECS JSON document, compact, UTF-8, no trailing newline."""
    return json.dumps(to_ecs(event), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def to_flat(event: Event) -> dict[str, Any]:
    """A flat row with Sigma's Windows field names (Zircolite style)."""
    kind = event.kind
    row: dict[str, Any] = {
        "EventID": kind.event_id,
        "Channel": kind.channel,
        "Provider_Name": kind.provider,
        "Provider_Guid": kind.provider_guid,
        "Computer": event.computer,
        "EventRecordID": event.record_id,
        "SystemTime": format_system_time(event.time_created),
        "Level": kind.level,
        "Task": kind.task,
        "Keywords": f"0x{kind.keywords:016x}",
        "ActivityID": event.activity_id,
        "Security_UserID": event.user_id,
    }
    row.update(event.data)
    return row


def render_flat(event: Event) -> bytes:
    return json.dumps(to_flat(event), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
