"""JSON renderers: the Winlogbeat/ECS document and the flat Sigma/Zircolite row.

The ECS form follows what Winlogbeat emits for an event-log record (``winlog.*`` with
``winlog.api: wineventlog``, ``event.code``, ``event.outcome`` from the audit keyword bits and
only when there are such bits, ``event.module: security`` on Security-channel records, Subject
fields as ``user.*`` and ``related.user``, empty EventData values dropped, ``winlog.keywords``
omitted when empty, no task name for CodeIntegrity events, which have none Windows can render:
Event Viewer shows "(1)"; ``host.name``) so that rules
compiled for Elasticsearch, e.g. ``winlog.channel:"Security" AND winlog.event_id:("5038" OR
"6281")``, match it. Winlogbeat's security module has no categorisation for these IDs; the
``event.category``/``event.type`` values here are our own choice (documented per ID below).
The flat form uses the field names Sigma's Windows rules address (``EventID``, ``Channel``,
``Provider_Name``, ``Computer`` and each EventData name), ready for a SQLite ``logs`` table.
"""

from __future__ import annotations

import json
from functools import lru_cache
from operator import itemgetter
from typing import Any

from .model import Event, format_iso_z, format_plain_values, format_system_time
from .schema import (
    KEYWORD_BIT_AUDIT_FAILURE,
    KEYWORD_BIT_AUDIT_SUCCESS,
    KINDS,
    LEVEL_NAMES,
    SECURITY_CHANNEL,
)

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


@lru_cache(maxsize=512)  # the same few dotted ECS names, over and over
def _key_path(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def _put(target: dict[str, Any], dotted: str, value: object) -> None:
    parts = _key_path(dotted)
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[parts[-1]] = value


def _kind_members(event_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``event`` and ``winlog`` members that depend only on the event kind."""
    kind = KINDS[event_id]
    category, types = _CATEGORISATION.get(event_id, (["host"], ["info"]))
    security = kind.channel == SECURITY_CHANNEL
    audit = _keyword_names(kind.keywords)
    event: dict[str, Any] = {"code": str(event_id), "kind": "event", "provider": kind.provider}
    if security:
        event["module"] = "security"
        event["action"] = kind.task_name  # the rendered task, as Winlogbeat's security module
    if audit:  # Winlogbeat derives the outcome from the audit keyword bits only
        event["outcome"] = kind.outcome
    event["category"] = category
    event["type"] = types
    winlog: dict[str, Any] = {
        "api": "wineventlog",
        "channel": kind.channel,
        "provider_name": kind.provider,
        "provider_guid": kind.provider_guid,
        "event_id": str(event_id),
    }
    if security:
        winlog["task"] = kind.task_name
    winlog["opcode"] = kind.opcode_name
    if audit:
        winlog["keywords"] = audit
    return event, winlog


def _user_members(event: Event) -> dict[str, Any] | None:
    """``user`` and ``related`` from Subject fields, as Winlogbeat's security module maps
    them; None when the event has none."""
    name = event.value("SubjectUserName")
    if name is None:
        return None
    user = {"name": name}
    domain, sid = event.value("SubjectDomainName"), event.value("SubjectUserSid")
    if domain:
        user["domain"] = domain
    if sid:
        user["id"] = sid
    return {"user": user, "related": {"user": [name]}}


def to_ecs(event: Event) -> dict[str, Any]:
    """The ECS document of one event as a dict (see module doc for the mapping)."""
    kind = event.kind
    kind_event, kind_winlog = _kind_members(kind.event_id)
    winlog: dict[str, Any] = {
        **kind_winlog,
        "computer_name": event.computer,
        "version": kind.version,
        "process": {"pid": event.process_id, "thread": {"id": event.thread_id}},
        "event_data": {name: value for name, value in event.data if value},
    }
    if event.record_id is not None:
        winlog["record_id"] = event.record_id
    if event.correlation_id is not None:
        winlog["activity_id"] = event.correlation_id
    if event.user_id is not None:
        winlog["user"] = {"identifier": event.user_id}
    doc: dict[str, Any] = {
        "@timestamp": format_iso_z(event.time_created),
        "message": event.message(),
        "event": dict(kind_event),
        "log": {"level": LEVEL_NAMES.get(kind.level, "information")},
        "winlog": winlog,
        "host": {"name": event.computer},
        "ecs": {"version": ECS_VERSION},
    }
    subject = _user_members(event)
    if subject is not None:
        doc.update(subject)
    for key, value in event.context:
        _put(doc, key, value)
    path = event.path
    if path is not None and "file" not in doc:
        doc["file"] = {"path": path}
    return doc


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# What _encode does for a str, minus the Python-level dispatch (C function).
_encode_text = json.encoder.encode_basestring
_OWN_KEYS = frozenset(
    {"@timestamp", "message", "event", "log", "winlog", "host", "ecs", "user", "related"}
)
_SUBJECT_IDS = frozenset(k for k, kind in KINDS.items() if "SubjectUserName" in kind.fields)


@lru_cache(maxsize=64)
def _kind_fragments(event_id: int) -> tuple[str, str, str]:
    """JSON text of the parts of a document that depend only on the event kind."""
    kind = KINDS[event_id]
    event, winlog = _kind_members(event_id)
    log = {"level": LEVEL_NAMES.get(kind.level, "information")}
    return (
        f',"event":{_encode(event)},"log":{_encode(log)}',
        _encode(winlog)[:-1],  # left open: per-record members follow
        f',"version":{kind.version}',
    )


@lru_cache(maxsize=1024)
def _context_fragment(context: tuple[tuple[str, object], ...]) -> tuple[str, bool] | None:
    """JSON members for a context (shared by every event of one report) and whether it holds
    ``file.path``; None if it would collide with the document's own members (then the generic
    path is taken)."""
    nested: dict[str, Any] = {}
    for key, value in context:  # _put, inlined: a dozen keys per report
        *parents, leaf = _key_path(key)
        target = nested
        for part in parents:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        target[leaf] = value
    if nested.keys() & _OWN_KEYS:
        return None
    text = "," + _encode(nested)[1:-1] if nested else ""  # the members without the braces
    return text, any(key == "file.path" for key, _ in context)


@lru_cache(maxsize=256)
def _context_layout(keys: tuple[str, ...]) -> tuple[str, itemgetter[Any]] | None:
    """For contexts with these keys (one layout per kind of report): the JSON members with a
    ``%s`` per value, and the getter that puts the encoded values in document order. None
    when a key repeats, is empty, or is both a value and a parent: _context_fragment decides."""
    tree: dict[str, Any] = {}
    for index, key in enumerate(keys):
        *parents, leaf = _key_path(key)
        target = tree
        for part in parents:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                return None
            target = child
        if not all(_key_path(key)) or leaf in target:
            return None
        target[leaf] = index
    if not tree or tree.keys() & _OWN_KEYS:
        return None
    order: list[int] = []

    def members(node: dict[str, Any]) -> str:
        out = []
        for name, child in node.items():
            if isinstance(child, dict):
                value = "{" + members(child) + "}"
            else:
                order.append(child)
                value = "%s"
            out.append(_encode_text(name).replace("%", "%%") + ":" + value)
        return ",".join(out)

    text = "," + members(tree)
    getter = itemgetter(*order) if len(order) > 1 else itemgetter(slice(0, 1))
    return text, getter


@lru_cache(maxsize=64)  # several ECS sinks in several writer threads: no identity hits
def _context_text(context: tuple[tuple[str, object], ...]) -> tuple[str, bool] | None:
    """_context_fragment, through the per-layout template when there is one."""
    layout = _context_layout(tuple(map(_first, context))) if context else None
    if layout is None:
        return _context_fragment(context)
    template, order = layout
    values = [_encode_text(v) if v.__class__ is str else _json_scalar(v) for _, v in context]
    return template % tuple(order(values)), any(key == "file.path" for key, _ in context)


_first = itemgetter(0)


def _json_scalar(value: object) -> str:
    # The context's flags and numbers, without the JSONEncoder dispatch.
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value) if value.__class__ is int else _encode(value)


@lru_cache(maxsize=128)
def _data_template(names: tuple[str, ...]) -> str | None:
    """``{"Name":"%s",...}`` for one EventData layout; None when a name repeats (a dict keeps
    one value per name, so the generic path decides which)."""
    if len(set(names)) != len(names):
        return None
    return "{" + ",".join(_encode_text(n).replace("%", "%%") + ':"%s"' for n in names) + "}"


def _event_data_json(data: tuple[tuple[str, str], ...]) -> str:
    """``_encode(dict(data))`` without the empty values (Winlogbeat drops them), through a
    template per layout when it can."""
    if not all(value for _, value in data):
        data = tuple(item for item in data if item[1])
    if not data:
        return "{}"
    return format_plain_values(data, _data_template) or _encode(dict(data))


# The events of one report share their context object: remember the last one by identity
# (holding it keeps its id from being reused) before paying for the tuple hash of the cache.
_last_context: tuple[object, tuple[str, bool] | None] = ((), ("", False))


def _context_members(context: tuple[tuple[str, object], ...]) -> tuple[str, bool] | None:
    global _last_context
    last = _last_context  # one read: another thread may replace it meanwhile
    if last[0] is context:
        return last[1]
    fragment = _context_text(context)
    _last_context = (context, fragment)
    return fragment


def ecs_text(event: Event) -> str:
    """One ECS JSON document as text, compact (same content as ``json.dumps(to_ecs(event))``,
    assembled from cached fragments for speed)."""
    members = _context_members(event.context)
    if members is None or (not members[1] and event.path is not None):
        return _encode(to_ecs(event))
    if event.event_id in _SUBJECT_IDS:  # user.* and related.*: the generic path
        return _encode(to_ecs(event))
    head, winlog_open, version = _kind_fragments(event.event_id)
    computer = _encode_text(event.computer)
    record = "" if event.record_id is None else f',"record_id":{event.record_id}'
    activity = (
        ""
        if event.correlation_id is None
        else f',"activity_id":{_encode_text(event.correlation_id)}'
    )
    user = (
        "" if event.user_id is None else f',"user":{{"identifier":{_encode_text(event.user_id)}}}'
    )
    # One f-string: a single BUILD_STRING, cheaper than a list of parts and a join.
    return (
        f'{{"@timestamp":"{format_iso_z(event.time_created)}",'
        f'"message":{_encode_text(event.message())}{head}'
        f',"winlog":{winlog_open},"computer_name":{computer}{version}'
        f',"process":{{"pid":{event.process_id},"thread":{{"id":{event.thread_id}}}}}'
        f',"event_data":{_event_data_json(event.data)}{record}{activity}{user}}}'
        f',"host":{{"name":{computer}}},"ecs":{{"version":"{ECS_VERSION}"}}{members[0]}}}'
    )


def render_ecs(event: Event) -> bytes:
    """One ECS JSON document, compact, UTF-8, no trailing newline."""
    return ecs_text(event).encode("utf-8")


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
        "SystemTime": format_system_time(event.time_created, event.time_100ns),
        "Level": kind.level,
        "Task": kind.task,
        "Keywords": f"0x{kind.keywords:016x}",
        "ActivityID": event.correlation_id,
        "Security_UserID": event.user_id,
    }
    row.update(event.data)
    return row


def render_flat(event: Event) -> bytes:
    return _encode(to_flat(event)).encode("utf-8")
