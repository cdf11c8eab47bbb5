"""The embedded event store: one SQLite file in WAL mode.

Durability contract: :meth:`EventStore.append` returns only after the batch is committed, so an
acknowledged event survives a ``kill -9`` of the writer (the WAL is written before COMMIT
returns; ``synchronous=FULL`` also syncs it, so it survives power loss too). The EventRecordID
of a stored event is the row's INTEGER PRIMARY KEY (AUTOINCREMENT: increasing per store, never
reused). The stored body is the event's compact JSON (:meth:`Event.to_dict`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from ..errors import SinkError
from .model import Event
from .schema import KINDS

SCHEMA_VERSION = 1
SYNC_MODES = ("FULL", "NORMAL")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    record_id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,
    channel TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    path TEXT,
    activity_id TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events(time_us);
CREATE INDEX IF NOT EXISTS events_id ON events(event_id);
"""


class StoreError(SinkError):
    """The event store cannot be opened, read or written."""

    reference = "event-store-error"


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What ``codeintegrity events`` selects; every part is optional."""

    event_ids: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    path_contains: str | None = None
    outcome: str | None = None  # "success" | "failure"
    channel: str | None = None
    limit: int | None = None


@lru_cache(maxsize=256)  # the events of one report share their time
@lru_cache(maxsize=64)
def _kind_columns(event_id: int) -> tuple[str, str]:
    kind = KINDS[event_id]
    return kind.channel, kind.outcome


def _time_us(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


class EventStore:
    """An open store file. Not shared between threads at the same time."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        mode = synchronous.upper()
        if mode not in SYNC_MODES:
            raise StoreError(f"synchronous must be one of {', '.join(SYNC_MODES)}, not {mode!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # The writer thread of a pipeline uses the connection opened here.
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open event store {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={mode}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(
                    f"event store {self.path} has schema version {version}, "
                    f"this codeintegrity writes {SCHEMA_VERSION}"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot use event store {self.path}: {exc}") from None

    # --- writing -----------------------------------------------------------------------------
    def append(self, events: Sequence[Event]) -> list[Event]:
        """Commit ``events`` in one transaction; return them with their record IDs."""
        if not events:
            return []
        rows = [
            (
                e.event_id,
                *_kind_columns(e.event_id),
                _time_us(e.time_created),
                e.path,
                e.activity_id,
                e.to_json(with_record_id=False),  # the row's key is the record ID
            )
            for e in events
        ]
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO events (event_id, channel, outcome, time_us, path, activity_id,"
                    " body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to event store {self.path}: {exc}") from None
        # BEGIN IMMEDIATE holds the write lock, so the batch got consecutive IDs.
        first = last - len(events) + 1
        # A pipeline numbered them from this store already: copy only the ones that differ.
        return [
            e if e.record_id == record_id else e.with_record_id(record_id)
            for record_id, e in enumerate(events, first)
        ]

    # --- reading -----------------------------------------------------------------------------
    def next_record_id(self) -> int:
        try:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read event store {self.path}: {exc}") from None
        return (int(row[0]) if row else 0) + 1

    def query(self, selection: EventFilter | None = None) -> Iterator[Event]:
        """Events matching ``selection`` in record order."""
        sel = selection or EventFilter()
        where: list[str] = []
        args: list[object] = []
        if sel.event_ids:
            where.append(f"event_id IN ({', '.join('?' * len(sel.event_ids))})")
            args += list(sel.event_ids)
        if sel.since is not None:
            where.append("time_us >= ?")
            args.append(_time_us(sel.since))
        if sel.until is not None:
            where.append("time_us <= ?")
            args.append(_time_us(sel.until))
        if sel.path_contains:
            # instr() rather than LIKE: no wildcard characters to escape in paths.
            where.append("instr(path, ?) > 0")
            args.append(sel.path_contains)
        if sel.outcome:
            where.append("outcome = ?")
            args.append(sel.outcome)
        if sel.channel:
            where.append("channel = ?")
            args.append(sel.channel)
        sql = "SELECT record_id, body FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY record_id"
        if sel.limit is not None:
            sql += " LIMIT ?"
            args.append(sel.limit)
        try:
            cursor = self._db.execute(sql, args)
            for record_id, body in cursor:
                try:
                    raw = json.loads(body)
                except ValueError:
                    raise StoreError(f"record {record_id} of {self.path} is not JSON") from None
                try:
                    event = Event.from_dict(raw)
                except SinkError as exc:
                    raise StoreError(f"record {record_id} of {self.path}: {exc}") from None
                yield event.with_record_id(int(record_id))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read event store {self.path}: {exc}") from None

    def count(self) -> int:
        try:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read event store {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
