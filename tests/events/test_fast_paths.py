"""The throughput shortcuts (templates, caches, one-pass checks) against the plain definitions.

Each shortcut falls back to the generic encoder when its preconditions fail; these tests feed
both kinds of input and compare byte for byte with the straightforward computation.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from codeintegrity.events.build import _new_activity_id, events_for_report
from codeintegrity.events.model import Event, make_event
from codeintegrity.events.render_ecs import render_ecs, to_ecs
from codeintegrity.events.schema import KINDS, MESSAGE_VALUE_MAPS
from codeintegrity.events.sinks import open_sink
from codeintegrity.events.store import EventStore
from codeintegrity.findings import Finding, FindingCode
from codeintegrity.report import CatalogMatch, Check

from .reports import (
    HOST,
    denied_report,
    shared_writable_report,
    signature,
    tampered_report,
    unsigned_driver_report,
)

WHEN = datetime(2024, 5, 6, 7, 8, 9, 120000, tzinfo=timezone(timedelta(hours=-3)))
ODD_PATHS = [
    "/p/100%.exe",
    "/p/%s%d%%.exe",
    'C:\\x\\"q"\\y.sys',
    "/p/\x7f\u0085\u00a0ü.exe",
    "/p/tab\there\r\n",
    "/p/[x]/\udcff.dll",
]


def plain_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def report_events() -> list[Event]:
    events: list[Event] = []
    for path in ODD_PATHS:
        catalog = CatalogMatch(
            path="/c.cat",
            member_tag="x",
            digest_algorithm="sha256",
            signature=signature(valid=False, image=Check.INVALID, pages=Check.ABSENT),
        )
        by_catalog = dataclasses.replace(
            unsigned_driver_report(path),
            catalog=catalog,
            findings=(Finding(FindingCode.IMAGE_HASH_MISMATCH, "x", signature=0),),
        )
        for report in (
            tampered_report(path),
            denied_report("audit", path),
            shared_writable_report(path),
            by_catalog,
        ):
            events += events_for_report(report, host=HOST, when=WHEN)
    return [e.with_record_id(n) for n, e in enumerate(events, 1)]


def hand_built_events() -> list[Event]:
    """Events no builder makes: the fast paths must fall back, not guess."""
    data_3033 = make_event(3033, {"FileNameBuffer": "/f"}, computer="H").data

    def event(event_id: int, data: tuple, context: tuple = (), **kw: object) -> Event:
        return Event(event_id, WHEN, "H", data, context=context, **kw)  # type: ignore[arg-type]

    return [
        event(5038, (("param1", "/a"), ("param1", "/b")), record_id=3),
        event(3033, data_3033, (("event.kind", "x"), ("file.path", "/z")), activity_id="{a}"),
        event(3033, tuple(reversed(data_3033)), (("file.name", "n"),), user_id="S-1-5-18"),
        event(5038, (("param1", "/q"),), (("file", "flat"), ("file.path", "/x"))),
        event(5038, (("param1", "/q"),), (("file.path", "/x"), ("file", "flat"))),
        event(5038, (("param1", "/q"),), (("a..b", 1), ("n", 5), ("t", True), ("f", False))),
        event(5038, (("param1", "/q"),), (("x.y", 1), ("x.y", 2))),
        event(5038, (), (("file.path", "/x"),)),
        event(3089, (("Odd%s", "v"), ("File Name", "/fn"), ("FileNameBuffer", "/fb"))),
    ]


ALL = report_events() + hand_built_events()


@pytest.mark.parametrize("event", ALL, ids=lambda e: f"{e.event_id}-{e.record_id}")
def test_ecs_text_is_exactly_the_generic_document(event: Event):
    try:
        expected = plain_json(to_ecs(event)).encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            render_ecs(event)
        return
    assert render_ecs(event) == expected


@pytest.mark.parametrize("event", ALL, ids=lambda e: f"{e.event_id}-{e.record_id}")
def test_store_body_is_exactly_the_dict_form(event: Event):
    assert event.to_json() == plain_json(event.to_dict())
    without = event.to_dict()
    without.pop("r", None)
    assert event.to_json(with_record_id=False) == plain_json(without)


def reference_message(event: Event) -> str:
    values = [value for _, value in event.data]
    maps = MESSAGE_VALUE_MAPS.get(event.event_id, {})

    def insert(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if not 1 <= index <= len(values):
            return match.group()
        text = values[index - 1]
        value_map = maps.get(index)
        if value_map is not None and text.isdigit():
            return value_map.get(int(text), text)
        return text

    return re.sub(r"%(\d+)", insert, event.kind.message)


@pytest.mark.parametrize("event_id", sorted(KINDS))
def test_message_templates_fill_like_the_manifest_substitution(event_id: int):
    kind = KINDS[event_id]
    values = {name: str(n) for n, name in enumerate(kind.fields)}
    full = make_event(event_id, values, computer="H")
    short = dataclasses.replace(full, data=full.data[:1])  # inserts past the data stay as %n
    for event in (full, short):
        assert event.message() == reference_message(event)


def reference_path(event: Event) -> str | None:
    for name in ("param1", "File Name", "FileNameBuffer"):
        for key, value in event.data:
            if key == name:
                return value
    found = event.context_value("file.path")
    return found if isinstance(found, str) else None


@pytest.mark.parametrize("event", ALL, ids=lambda e: f"{e.event_id}-{e.record_id}")
def test_path_takes_the_first_of_the_most_specific_field(event: Event):
    assert event.path == reference_path(event)


def test_path_priority_does_not_depend_on_field_order():
    data = (("FileNameBuffer", "/c"), ("File Name", "/b"), ("param1", "/a"), ("param1", "/z"))
    assert Event(5038, WHEN, "H", data).path == "/a"
    assert Event(5038, WHEN, "H", data[:2]).path == "/b"


def test_record_ids_are_assigned_while_building():
    counter = itertools.count(41)
    events = events_for_report(tampered_report(), host=HOST, record_ids=counter)
    assert [e.record_id for e in events] == [41, 42, 43, 44]
    assert next(counter) == 45
    assert all(e.record_id is None for e in events_for_report(tampered_report(), host=HOST))


def test_activity_ids_are_braced_random_version_4_guids():
    seen = {_new_activity_id() for _ in range(2000)}  # crosses several refills of the pool
    assert len(seen) == 2000
    for text in seen:
        assert text[0] == "{" and text[-1] == "}"
        value = uuid.UUID(text[1:-1])
        assert f"{{{value}}}" == text
        assert value.version == 4 and value.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_random_pool():
    _new_activity_id()  # the pool now holds bytes the parent will use next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next ID and leave at once
        try:
            os.write(write, _new_activity_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert uuid.UUID(child[1:-1]).version == 4
    assert child != _new_activity_id()


def test_store_keeps_numbers_it_reserved_and_renumbers_the_others(tmp_path):
    with EventStore(tmp_path / "s.sqlite3") as store:
        # Numbered elsewhere (a plain counter): the store numbers them per channel itself.
        foreign = events_for_report(tampered_report(), host=HOST, record_ids=itertools.count(1))
        stored = store.append(foreign)  # 3033, 3089 (CodeIntegrity), 5038, 6281 (Security)
        assert [e.record_id for e in stored] == [1, 2, 1, 2]
        # Reserved through the store's numbering: kept as they are (the very same objects).
        numbers = store.numbering()
        events = events_for_report(tampered_report(), host=HOST, record_ids=numbers)
        numbers.close()
        assert [e.record_id for e in events] == [3, 4, 3, 4]
        again = store.append(events)
        assert all(a is b for a, b in zip(again, events, strict=True))
        assert [e.record_id for e in store.query()] == [1, 2, 1, 2, 3, 4, 3, 4]


def test_stream_sink_writes_one_line_per_event_and_nothing_for_none(tmp_path):
    path = tmp_path / "e.jsonl"
    sink = open_sink(f"jsonl:{path}")
    assert sink.write([]) == []
    events = report_events()[:5]
    sink.write(events)
    sink.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and lines[:-1] == [render_ecs(e) for e in events]


def test_time_caches_follow_the_value_not_the_first_call():
    later = WHEN.astimezone(UTC) + timedelta(microseconds=1)
    first, second = (
        make_event(5038, {"param1": "/x"}, computer="H", time_created=w) for w in (WHEN, later)
    )
    assert json.loads(render_ecs(first))["@timestamp"] == "2024-05-06T10:08:09.120000Z"
    assert json.loads(render_ecs(second))["@timestamp"] == "2024-05-06T10:08:09.120001Z"
    assert json.loads(second.to_json())["t"] == "2024-05-06T10:08:09.1200010Z"
