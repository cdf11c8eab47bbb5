"""The event value: one Windows event record (System block + named EventData), renderer-neutral.

Every EventData value is held as the text Windows shows in the XML view (``0x0`` for HexInt32,
``false`` for Boolean, ``2021-09-02T18:23:41.0000000Z`` for FILETIME), so each renderer writes
what a Windows consumer would read. Event kinds (provider, task, keywords, field names) come from
:mod:`.schema`; an Event only carries what varies per record.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from ..errors import SinkError
from .schema import KINDS, MESSAGE_VALUE_MAPS, SECURITY_CHANNEL, EventKind

ContextValue = str | int | bool

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# What _encode does for a str, minus the Python-level dispatch (C function).
_encode_text = json.encoder.encode_basestring


@lru_cache(maxsize=1024)
def _encode_context(context: tuple[tuple[str, ContextValue], ...]) -> str:
    return _encode(context)


# The events of one report share their context object: remember the last one by identity
# (holding it keeps its id from being reused) before paying for the tuple hash of the cache.
_last_context: tuple[object, str] = ((), "[]")


def _context_json(context: tuple[tuple[str, ContextValue], ...]) -> str:
    global _last_context
    last = _last_context  # one read: another thread may replace it meanwhile
    if last[0] is context:
        return last[1]
    text = _encode_context(context)
    _last_context = (context, text)
    return text


def format_plain_values(
    data: tuple[tuple[str, str], ...], template_for: Callable[[tuple[str, ...]], str | None]
) -> str | None:
    """``template_for(names) % values`` when every value is text that JSON writes as is
    (``"value"``), else None. The JSON encoder spends most of its time on the EventData names,
    which never change for a kind: a template per layout writes them once."""
    names, values = zip(*data, strict=True)
    template = template_for(names)
    if template is None:
        return None
    try:
        joined = "".join(values)
    except TypeError:  # a value that is not text: the encoder knows how to write it
        return None
    # isprintable() is false for every control character; quote and backslash remain.
    if '"' in joined or "\\" in joined or not joined.isprintable():
        return None
    return template % values


@lru_cache(maxsize=128)
def _pairs_template(names: tuple[str, ...]) -> str:
    """``[["Name","%s"],...]``: the JSON of ``data`` for one layout."""
    return "[" + ",".join(f'[{_encode(n).replace("%", "%%")},"%s"]' for n in names) + "]"


# The names under which an event carries the file it is about, most specific first.
_PATH_FIELDS = {"param1": 0, "File Name": 1, "FileNameBuffer": 2}


# XML 1.0 cannot carry these code points at all; lone surrogates come from undecodable
# file names (surrogateescape). Both are written as \xNN so no character is silently lost.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _escape_unsafe(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(text: str) -> str:
    """Make ``text`` representable in XML 1.0 and UTF-8 without dropping anything."""
    if text.isprintable() or _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape_unsafe, text)


# Every event of a report shares one timestamp, and a pipeline renders it for each sink: the
# caches turn those repeated conversions into one dict lookup (datetime caches its own hash).
@lru_cache(maxsize=256)
def format_system_time(when: datetime, ticks: int = 0) -> str:
    """TimeCreated/SystemTime as Windows writes it: UTC, 7 fractional digits, ``Z``; ``ticks``
    is the 7th digit (100 ns units below the microsecond, which datetime cannot hold)."""
    if when.utcoffset():
        when = when.astimezone(UTC)
    # isoformat is several times faster than strftime; [:26] drops the UTC offset.
    return f"{when.isoformat(timespec='microseconds')[:26]}{ticks}Z"


@lru_cache(maxsize=256)
def format_iso_z(when: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (ECS @timestamp, RFC 5424 TIMESTAMP), microseconds kept
    only when not zero (the form ``datetime.isoformat`` gives)."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_system_time(text: str) -> datetime:
    """Inverse of :func:`format_system_time` (accepts 0-9 fractional digits)."""
    return parse_system_time_ticks(text)[0]


def parse_system_time_ticks(text: str) -> tuple[datetime, int]:
    """A SystemTime as (datetime, the 100 ns digit below its microseconds)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", text)
    if match is None:
        raise ValueError(f"not a SystemTime: {text!r}")
    base = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    digits = (match.group(2) or "0").ljust(9, "0")
    return base.replace(microsecond=int(digits[:6])), int(digits[6])


def now_with_ticks() -> tuple[datetime, int]:
    """The current time as (datetime, 100 ns digit): TimeCreated with Windows' precision."""
    ns = time.time_ns()
    seconds, rest = divmod(ns, 1_000_000_000)
    when = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)
    return when, (rest // 100) % 10


@dataclass(frozen=True, slots=True)
class Event:
    """One event record. ``record_id`` is assigned when the event enters a pipeline or store."""

    event_id: int
    time_created: datetime  # timezone-aware, UTC
    computer: str
    data: tuple[tuple[str, str], ...]  # (Data Name, value text) in manifest order
    record_id: int | None = None
    # "{...}" GUID shared by the events of one verification. Kept on every event (the store
    # and reports group a file's events by it); rendered only where Windows writes it, see
    # :attr:`correlation_id`.
    activity_id: str | None = None
    process_id: int = 0
    thread_id: int = 0
    user_id: str | None = None  # Security@UserID (a SID); None renders <Security />
    # What the Windows record cannot hold but ECS consumers want (file.hash.*, code signature).
    context: tuple[tuple[str, ContextValue], ...] = ()
    time_100ns: int = 0  # TimeCreated's 7th fractional digit (datetime stops at microseconds)

    @property
    def kind(self) -> EventKind:
        return KINDS[self.event_id]

    @property
    def channel(self) -> str:
        return self.kind.channel

    @property
    def correlation_id(self) -> str | None:
        """The ActivityID as Windows renders it: CodeIntegrity events carry theirs; Security
        events have an empty ``<Correlation />``."""
        return None if self.kind.channel == SECURITY_CHANNEL else self.activity_id

    @property
    def provider(self) -> str:
        return self.kind.provider

    @property
    def outcome(self) -> str:
        return self.kind.outcome

    def value(self, name: str) -> str | None:
        for key, value in self.data:
            if key == name:
                return value
        return None

    @property
    def path(self) -> str | None:
        """The file the event is about, whichever field holds it."""
        found: tuple[int, str] | None = None
        for key, value in self.data:  # one pass: the first param1, else File Name, ...
            rank = _PATH_FIELDS.get(key)
            if rank is not None and (found is None or rank < found[0]):
                if rank == 0:
                    return value
                found = (rank, value)
        if found is not None:
            return found[1]
        # 3089 carries no file name in its schema; the report's path rides in the context.
        context_path = self.context_value("file.path")
        return context_path if isinstance(context_path, str) else None

    def context_value(self, name: str) -> ContextValue | None:
        for key, value in self.context:
            if key == name:
                return value
        return None

    def message(self) -> str:
        """The rendered message (the manifest template with %n filled in)."""
        literals, inserts = _message_template(self.event_id)
        if not inserts:
            return literals[0]
        data = self.data
        count = len(data)
        maps = MESSAGE_VALUE_MAPS.get(self.event_id)
        out = [literals[0]]
        for (index, token), literal in zip(inserts, literals[1:], strict=True):
            if 1 <= index <= count:
                text = data[index - 1][1]
                value_map = maps.get(index) if maps else None
                if value_map is not None and text.isdigit():
                    text = value_map.get(int(text), text)
                out.append(text)
            else:
                out.append(token)  # no such field: the insert stays as written
            out.append(literal)
        return "".join(out)

    def with_record_id(self, record_id: int) -> Event:
        # Spelled out: dataclasses.replace costs several microseconds per call.
        return Event(
            self.event_id,
            self.time_created,
            self.computer,
            self.data,
            record_id,
            self.activity_id,
            self.process_id,
            self.thread_id,
            self.user_id,
            self.context,
            self.time_100ns,
        )

    def to_json(self, *, with_record_id: bool = True) -> str:
        """``json.dumps(self.to_dict())``, compact; the shared context is encoded once."""
        data = (self.data and format_plain_values(self.data, _pairs_template)) or _encode(self.data)
        when = format_system_time(self.time_created, self.time_100ns)
        parts = [
            f'{{"id":{self.event_id},"t":"{when}"',
            f',"c":{_encode_text(self.computer)},"d":{data}',
            f',"p":{self.process_id},"th":{self.thread_id}',
        ]
        if with_record_id and self.record_id is not None:
            parts.append(f',"r":{self.record_id}')
        if self.activity_id is not None:
            parts.append(f',"a":{_encode_text(self.activity_id)}')
        if self.user_id is not None:
            parts.append(f',"u":{_encode(self.user_id)}')
        if self.context:
            parts.append(f',"x":{_context_json(self.context)}')
        parts.append("}")
        return "".join(parts)

    def to_dict(self) -> dict[str, object]:
        """A compact JSON-ready form (the store body); :meth:`from_dict` reverses it."""
        out: dict[str, object] = {
            "id": self.event_id,
            "t": format_system_time(self.time_created, self.time_100ns),
            "c": self.computer,
            "d": [list(item) for item in self.data],
            "p": self.process_id,
            "th": self.thread_id,
        }
        if self.record_id is not None:
            out["r"] = self.record_id
        if self.activity_id is not None:
            out["a"] = self.activity_id
        if self.user_id is not None:
            out["u"] = self.user_id
        if self.context:
            out["x"] = [list(item) for item in self.context]
        return out

    @classmethod
    def from_dict(cls, raw: object) -> Event:
        """Rebuild an event from :meth:`to_dict` output; a bad value raises SinkError."""
        try:
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            event_id = int(raw["id"])
            kind = KINDS.get(event_id)
            if kind is None:
                raise ValueError(f"unknown event ID {event_id}")
            data = tuple((str(k), str(v)) for k, v in raw["d"])
            if tuple(name for name, _ in data) != kind.fields:
                raise ValueError(f"EventData fields do not match event {event_id}")
            context = tuple((str(k), v) for k, v in raw.get("x", ()))
            if not all(isinstance(v, str | int | bool) for _, v in context):
                raise ValueError("context values must be text, numbers or booleans")
            record = raw.get("r")
            when, ticks = parse_system_time_ticks(str(raw["t"]))
            return cls(
                event_id=event_id,
                time_created=when,
                computer=str(raw["c"]),
                data=data,
                record_id=int(record) if record is not None else None,
                activity_id=str(raw["a"]) if raw.get("a") is not None else None,
                process_id=int(raw.get("p", 0)),
                thread_id=int(raw.get("th", 0)),
                user_id=str(raw["u"]) if raw.get("u") is not None else None,
                context=context,
                time_100ns=ticks,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SinkError(f"stored event is not valid: {exc}") from None


@lru_cache(maxsize=64)
def _layout(event_id: int) -> tuple[tuple[str, ...], frozenset[str]]:
    """The EventData names of a kind, in order and as a set."""
    kind = KINDS[event_id]
    return kind.fields, frozenset(kind.fields)


@lru_cache(maxsize=64)
def _message_template(event_id: int) -> tuple[tuple[str, ...], tuple[tuple[int, str], ...]]:
    """A message template split once: literals around (index, "%index") inserts."""
    parts = re.split(r"(%\d+)", KINDS[event_id].message)
    return tuple(parts[0::2]), tuple((int(token[1:]), token) for token in parts[1::2])


ContextItems = tuple[tuple[str, ContextValue], ...]


def freeze_context(context: dict[str, ContextValue]) -> ContextItems:
    """A cleaned, immutable context, built once and shared by every event of a report."""
    items = tuple(context.items())
    # One check over every text: nearly every context has nothing to clean.
    texts = "".join([value for _, value in items if isinstance(value, str)])
    if texts.isprintable() or _UNSAFE.search(texts) is None:
        return items
    return tuple(
        (key, clean_text(value) if isinstance(value, str) else value) for key, value in items
    )


def make_event(
    event_id: int,
    values: dict[str, str],
    *,
    computer: str,
    time_created: datetime | None = None,
    activity_id: str | None = None,
    process_id: int = 0,
    thread_id: int = 0,
    user_id: str | None = None,
    context: dict[str, ContextValue] | ContextItems | None = None,
    record_id: int | None = None,
) -> Event:
    """Build an event, checking the field names against the kind and cleaning every text.

    ``context`` may be a dict or the result of :func:`freeze_context` (taken as is).
    """
    if context is None:
        ctx: ContextItems = ()
    elif isinstance(context, tuple):
        ctx = context
    else:
        ctx = freeze_context(context)
    return build_event(
        event_id,
        values,
        time_created or datetime.now(UTC),
        clean_text(computer),
        activity_id,
        process_id,
        thread_id,
        user_id,
        ctx,
        record_id,
    )


def build_event(
    event_id: int,
    values: dict[str, str],
    time_created: datetime,
    computer: str,
    activity_id: str | None,
    process_id: int,
    thread_id: int,
    user_id: str | None,
    context: ContextItems,
    record_id: int | None,
    time_100ns: int = 0,
) -> Event:
    """:func:`make_event` for builders that already hold a cleaned ``computer`` and a frozen
    context: positional, because keyword handling costs as much as a small event."""
    fields, field_set = _layout(event_id)
    if not values.keys() <= field_set:
        unknown = sorted(set(values) - field_set)
        raise ValueError(f"event {event_id} has no field(s) {unknown}")
    if len(values) == len(fields):  # every field given: no defaults to fill in
        texts = list(map(values.__getitem__, fields))
    else:
        get = values.get
        texts = [get(name, "") for name in fields]
    # One check over all values: nearly every event has nothing to clean.
    joined = "".join(texts)
    if not joined.isprintable() and _UNSAFE.search(joined) is not None:
        texts = [clean_text(text) for text in texts]
    data = tuple(zip(fields, texts, strict=False))  # equal lengths: texts came from fields
    return Event(
        event_id,
        time_created,
        computer,
        data,
        record_id,
        activity_id,
        process_id,
        thread_id,
        user_id,
        context,
        time_100ns,
    )
