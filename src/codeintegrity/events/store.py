"""The embedded event store: one SQLite file in WAL mode.

Durability contract: :meth:`EventStore.append` returns only after the batch is committed, so an
acknowledged event survives a ``kill -9`` of the writer (the WAL is written before COMMIT
returns; ``synchronous=FULL`` also syncs it, so it survives power loss too). The stored body is
the event's compact JSON (:meth:`Event.to_dict`).

EventRecordIDs are counted per channel, as Windows counts them per log: the ``sequences`` table
holds each channel's last number and ``record_number`` each row's (unique per channel). A
pipeline reserves numbers there before its sinks write (:mod:`.numbering`), so every output of
every process agrees with the store; events that arrive unnumbered, or numbered elsewhere, get
numbers here. Rows keep an AUTOINCREMENT key in arrival order.
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
from .numbering import SEQUENCES_SCHEMA, StoreNumbers
from .schema import KINDS


def _statements(script: str) -> list[str]:
    """The statements of a script (none of ours has a ``;`` inside a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]


SCHEMA_VERSION = 2
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
# Version 2: per-channel EventRecordIDs. A version 1 store's rows are numbered per channel in
# their order of arrival, and the sequences start after them.
_SCHEMA_V2 = """
CREATE UNIQUE INDEX IF NOT EXISTS events_number ON events(channel, record_number);
"""
_MIGRATE_V1 = """
ALTER TABLE events ADD COLUMN record_number INTEGER;
UPDATE events SET record_number = numbered.n FROM (
    SELECT record_id AS id, row_number() OVER (PARTITION BY channel ORDER BY record_id) AS n
    FROM events
) AS numbered WHERE events.record_id = numbered.id;
"""
# The sequences never fall behind the rows (a power loss after a reservation was synced less
# strictly than the rows, see .numbering).
_RECONCILE = """
INSERT INTO sequences (channel, last)
    SELECT channel, max(record_number) FROM events WHERE record_number IS NOT NULL
    GROUP BY channel
    ON CONFLICT(channel) DO UPDATE SET last = max(last, excluded.last);
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
        self._keep_numbers = False
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
            if version not in (0, 1, SCHEMA_VERSION):  # 1 is migrated below
                raise StoreError(
                    f"event store {self.path} has schema version {version}, "
                    f"this codeintegrity writes {SCHEMA_VERSION}"
                )
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(_SCHEMA):
                    self._db.execute(statement)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
                if "record_number" not in columns:  # a new store or a version 1 store
                    for statement in _statements(_MIGRATE_V1):
                        self._db.execute(statement)
                self._db.execute(SEQUENCES_SCHEMA)
                for statement in _statements(_SCHEMA_V2 + _RECONCILE):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot use event store {self.path}: {exc}") from None

    # --- writing -----------------------------------------------------------------------------
    def numbering(self) -> StoreNumbers:
        """The record numbers of a pipeline that writes this store: reserved in this file,
        and kept as given when those events are appended here."""
        self._keep_numbers = True
        return StoreNumbers(self.path)

    def _allocate(self, channel: str, count: int) -> int:
        """Inside the append transaction: ``count`` new numbers in ``channel``; the first."""
        row = self._db.execute(
            "INSERT INTO sequences (channel, last) VALUES (?, ?) ON CONFLICT(channel)"
            " DO UPDATE SET last = last + excluded.last RETURNING last",
            (channel, count),
        ).fetchone()
        return int(row[0]) - count + 1

    def append(self, events: Sequence[Event]) -> list[Event]:
        """Commit ``events`` in one transaction; return them with their record IDs.

        Numbers reserved through :meth:`numbering` are kept; any other event (unnumbered, or
        numbered by another store) gets the next number of its channel here."""
        if not events:
            return []
        keep = self._keep_numbers
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                counts: dict[str, int] = {}
                for e in events:
                    if not keep or e.record_id is None:
                        counts[e.channel] = counts.get(e.channel, 0) + 1
                firsts = {ch: self._allocate(ch, n) for ch, n in counts.items()}
                numbered = []
                for e in events:
                    if not keep or e.record_id is None:
                        number = firsts[e.channel]
                        firsts[e.channel] = number + 1
                        if e.record_id != number:
                            e = e.with_record_id(number)
                    numbered.append(e)
                db.executemany(
                    "INSERT INTO events (event_id, channel, outcome, time_us, path, activity_id,"
                    " body, record_number) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            e.event_id,
                            *_kind_columns(e.event_id),
                            _time_us(e.time_created),
                            e.path,
                            e.activity_id,
                            e.to_json(with_record_id=False),  # the row holds the number
                            e.record_id,
                        )
                        for e in numbered
                    ],
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to event store {self.path}: {exc}") from None
        return numbered

    # --- reading -----------------------------------------------------------------------------
    def next_record_id(self, channel: str) -> int:
        """The number the next event of ``channel`` would get."""
        try:
            row = self._db.execute(
                "SELECT last FROM sequences WHERE channel = ?", (channel,)
            ).fetchone()
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
        sql = "SELECT record_id, record_number, body FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY record_id"
        if sel.limit is not None:
            sql += " LIMIT ?"
            args.append(sel.limit)
        try:
            cursor = self._db.execute(sql, args)
            for record_id, number, body in cursor:
                try:
                    raw = json.loads(body)
                except ValueError:
                    raise StoreError(f"record {record_id} of {self.path} is not JSON") from None
                try:
                    event = Event.from_dict(raw)
                except SinkError as exc:
                    raise StoreError(f"record {record_id} of {self.path}: {exc}") from None
                yield event.with_record_id(int(number if number is not None else record_id))
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
