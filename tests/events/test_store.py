from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from codeintegrity.events.build import events_for_report
from codeintegrity.events.paths import default_store_path
from codeintegrity.events.schema import CI_CHANNEL, SECURITY_CHANNEL
from codeintegrity.events.store import EventFilter, EventStore, StoreError

from .reports import HOST, shared_writable_report, tampered_report

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def filled(path: Path) -> EventStore:
    store = EventStore(path)
    store.append(events_for_report(tampered_report("/srv/a/bad.exe"), host=HOST, when=T0))
    store.append(
        events_for_report(
            shared_writable_report("/srv/b/shared.dll"), host=HOST, when=T0 + timedelta(hours=2)
        )
    )
    return store


def test_append_assigns_increasing_record_ids_and_round_trips(tmp_path: Path):
    store = EventStore(tmp_path / "s.sqlite3")
    events = events_for_report(tampered_report(), host=HOST)
    stored = store.append(events)  # 3033, 3089 (CodeIntegrity), 5038, 6281 (Security)
    assert [e.record_id for e in stored] == [1, 2, 1, 2]  # one sequence per channel
    more = store.append(events[:3])
    assert [e.record_id for e in more] == [3, 4, 3]
    assert store.next_record_id(CI_CHANNEL) == 5
    assert store.next_record_id(SECURITY_CHANNEL) == 4
    assert list(store.query()) == stored + more
    store.close()
    # WAL mode is on, and the data survives reopening.
    with EventStore(tmp_path / "s.sqlite3") as again:
        assert again.count() == 7
        mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_record_ids_are_never_reused(tmp_path: Path):
    store = EventStore(tmp_path / "s.sqlite3")
    store.append(events_for_report(tampered_report(), host=HOST))
    store._db.execute("DELETE FROM events")
    (event,) = store.append(events_for_report(tampered_report(), host=HOST)[:1])
    assert event.record_id == 3  # the CodeIntegrity channel had used 1 and 2


def test_filters(tmp_path: Path):
    store = filled(tmp_path / "s.sqlite3")
    q = store.query
    assert [e.event_id for e in q(EventFilter(event_ids=(5038, 6410)))] == [5038, 6410]
    assert {e.path for e in q(EventFilter(path_contains="/srv/b/"))} == {"/srv/b/shared.dll"}
    assert [e.event_id for e in q(EventFilter(since=T0 + timedelta(hours=1)))] == [3063, 3089, 6410]
    assert [e.event_id for e in q(EventFilter(until=T0))] == [3033, 3089, 5038, 6281]
    assert all(e.outcome == "failure" for e in q(EventFilter(outcome="failure")))
    assert [e.event_id for e in q(EventFilter(outcome="success"))] == [3089, 3089]
    assert [e.event_id for e in q(EventFilter(channel="Security"))] == [5038, 6281, 6410]
    assert len(list(q(EventFilter(limit=2)))) == 2
    # Path filter is a plain substring: LIKE wildcards mean nothing.
    assert list(q(EventFilter(path_contains="%"))) == []


def test_not_a_database_is_a_one_line_store_error(tmp_path: Path):
    bogus = tmp_path / "bogus.sqlite3"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        EventStore(bogus)
    assert "\n" not in str(info.value)
    assert str(bogus) in str(info.value)


def test_corrupt_body_is_reported_not_raised_raw(tmp_path: Path):
    store = filled(tmp_path / "s.sqlite3")
    store._db.execute("UPDATE events SET body='{not json' WHERE record_id=2")
    with pytest.raises(StoreError, match="record 2"):
        list(store.query())
    store._db.execute("""UPDATE events SET body='{"id": 1}' WHERE record_id=2""")
    with pytest.raises(StoreError, match="not valid"):
        list(store.query())


def test_newer_schema_is_refused(tmp_path: Path):
    store = EventStore(tmp_path / "s.sqlite3")
    store._db.execute("PRAGMA user_version=99")
    store.close()
    with pytest.raises(StoreError, match="schema version 99"):
        EventStore(tmp_path / "s.sqlite3")


def test_default_store_path_precedence(tmp_path: Path):
    home = Path.home()
    assert default_store_path({"CODEINTEGRITY_HOME": "/x/ci"}) == Path("/x/ci/events.sqlite3")
    assert default_store_path({"XDG_STATE_HOME": "/st"}, platform="linux") == Path(
        "/st/codeintegrity/events.sqlite3"
    )
    assert default_store_path({"XDG_STATE_HOME": "relative"}, platform="linux") == (
        home / ".local/state/codeintegrity/events.sqlite3"
    )
    assert default_store_path({}, platform="linux") == (
        home / ".local/state/codeintegrity/events.sqlite3"
    )
    assert default_store_path({"LOCALAPPDATA": "/la"}, platform="win32") == Path(
        "/la/codeintegrity/events.sqlite3"
    )
