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
from functools import lru_cache
from typing import Any

from .model import Event, format_system_time
from .schema import KEYWORD_BIT_AUDIT_FAILURE, KEYWORD_BIT_AUDIT_SUCCESS, KINDS, LEVEL_NAMES

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


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_OWN_KEYS = frozenset({"@timestamp", "message", "event", "log", "winlog", "host", "ecs"})


@lru_cache(maxsize=64)
def _kind_fragments(event_id: int) -> tuple[str, str, str]:
    """JSON text of the parts of a document that depend only on the event kind."""
    kind = KINDS[event_id]
    category, types = _CATEGORISATION.get(event_id, (["host"], ["info"]))
    event = {
        "code": str(event_id),
        "kind": "event",
        "provider": kind.provider,
        "action": kind.task_name,
        "outcome": kind.outcome,
        "category": category,
        "type": types,
    }
    log = {"level": LEVEL_NAMES.get(kind.level, "information")}
    winlog = {
        "channel": kind.channel,
        "provider_name": kind.provider,
        "provider_guid": kind.provider_guid,
        "event_id": str(event_id),
        "task": kind.task_name,
        "opcode": kind.opcode_name,
        "keywords": _keyword_names(kind.keywords),
    }
    return (
        f',"event":{_encode(event)},"log":{_encode(log)}',
        _encode(winlog)[:-1],  # left open: per-record members follow
        f',"version":{kind.version}',
    )


@lru_cache(maxsize=1024)
def _context_fragment(context: tuple[tuple[str, object], ...]) -> str | None:
    """JSON members for a context (shared by every event of one report); None if it would
    collide with the document's own members (then the generic path is taken)."""
    nested: dict[str, Any] = {}
    for key, value in context:
        _put(nested, key, value)
    if nested.keys() & _OWN_KEYS:
        return None
    return "".join(f",{_encode(k)}:{_encode(v)}" for k, v in nested.items())


def render_ecs(event: Event) -> bytes:
    """One ECS JSON document, compact, UTF-8, no trailing newline (same content as
    ``json.dumps(to_ecs(event))``, assembled from cached fragments for speed)."""
    context = _context_fragment(event.context)
    path = event.path
    if context is None or (path is not None and "file.path" not in dict(event.context)):
        return _encode(to_ecs(event)).encode("utf-8")
    head, winlog_open, version = _kind_fragments(event.event_id)
    computer = _encode(event.computer)
    parts = [
        '{"@timestamp":"',
        event.time_created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        '","message":',
        _encode(event.message()),
        head,
        ',"winlog":',
        winlog_open,
        ',"computer_name":',
        computer,
        version,
        f',"process":{{"pid":{event.process_id},"thread":{{"id":{event.thread_id}}}}}',
        ',"event_data":',
        _encode(dict(event.data)),
    ]
    if event.record_id is not None:
        parts.append(f',"record_id":{event.record_id}')
    if event.activity_id is not None:
        parts.append(f',"activity_id":{_encode(event.activity_id)}')
    if event.user_id is not None:
        parts.append(f',"user":{{"identifier":{_encode(event.user_id)}}}')
    parts += ['},"host":{"name":', computer, '},"ecs":{"version":"', ECS_VERSION, '"}']
    parts += [context, "}"]
    return "".join(parts).encode("utf-8")


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
    return _encode(to_flat(event)).encode("utf-8")
