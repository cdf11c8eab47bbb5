"""A persisted cache of verification results for files that did not change.

Re-verifying an unchanged tree repeats the same work; this SQLite (WAL) store remembers each
report, keyed by the file's real path plus its stat identity (st_dev, st_ino, st_size,
st_mtime_ns, st_ctime_ns) and a fingerprint of everything else a verdict depends on: the
options that change verdicts (trust anchors by ``TrustStore.key``, ``at``, page-hash and driver
requirements, padding check, requested digests, limits), the package version, its source files
and those of the cryptographic libraries it judges with.

What is never cached:

- runs with ``options.catalogs`` or ``options.revocation``: catalog folders and CRL sources
  change without any cheap identity to fingerprint, so those runs bypass the cache entirely;
- a report with a PRIMITIVE_FAILED finding (a primitive that raised may work next time);
- a file the engine did not open as the file stat'ed by path (a link or folder swapped while
  it was verified: the ``fstat`` of what was opened is compared when the caller has it);
- a file whose stat changed while it was verified, or changed less than ``racy_window_ns``
  before it was opened (before the result was stored, when the opening time is not known:
  another machine's clock): within one timestamp tick a same-size rewrite leaves the stat
  identical, so such a result could describe bytes that are no longer there (git's "racy" rule).

A stored verdict is reused until ``valid_until``: never by time when ``at`` was given; else the
earliest future certificate validity boundary (not_before or not_after) among the chains of
signatures judged at "now" (no valid timestamp, or the lifetime-signing EKU), and at most
``max_age`` after storing, so changes outside the fingerprint (a new Microsoft root bundle is
in it; clock-dependent chain checks are not) are picked up daily.

The stored value is the report's JSON (:class:`~.scan.outcome.Encoded`: :meth:`Report.to_dict`
with an empty path, without any policy decision; policies are applied by the caller after
verification, cached or not), beside its status and event ids, so a scan reuses it without
decoding it. A corrupt cache is
dropped and rebuilt with a one-line warning; a database that belongs to something else is left
alone (and nothing is cached). Judged rows are written together, in short transactions.

The cache is trusted like the user's other files: whoever can write it can change verdicts.
Forensic runs over a machine that may be compromised should use ``--no-cache``.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MalformedError
from .report import Report
from .scan.walk import RACY_WINDOW_NS, FileIdentity, Opened, file_identity, record_opened
from .verdict_keys import chain_boundary, code_identity, options_fingerprint, restamp_text

if TYPE_CHECKING:
    from .options import VerifyOptions
    from .scan.outcome import Encoded

CACHE_FILE_NAME = "results.sqlite3"
SCHEMA_VERSION = 2  # 2: the report text has an empty path; status and event ids columns
APPLICATION_ID = 0x43495243  # "CIRC": tells our file from another SQLite database
DEFAULT_MAX_AGE = timedelta(hours=24)
# Judged rows are written in one transaction once this many wait, or the oldest has waited
# this long (checked at each lookup and store), and at close.
WRITE_ROWS = 64
WRITE_SECONDS = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    path TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    code TEXT NOT NULL,
    st_dev INTEGER NOT NULL,
    st_ino INTEGER NOT NULL,
    st_size INTEGER NOT NULL,
    st_mtime_ns INTEGER NOT NULL,
    st_ctime_ns INTEGER NOT NULL,
    valid_until REAL,
    stored_at REAL NOT NULL,
    status TEXT NOT NULL,
    event_ids TEXT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (path, fingerprint)
) WITHOUT ROWID;
"""

Verifier = Callable[[str, "VerifyOptions"], Report]
StatKey = FileIdentity


def default_results_path(environ: Mapping[str, str] | None = None) -> str:
    """Beside the catalog index: $CODEINTEGRITY_HOME, else $XDG_CACHE_HOME/codeintegrity, else
    the per-user cache directory."""
    from .catalog.store import default_cache_path

    return str(Path(default_cache_path(environ)).with_name(CACHE_FILE_NAME))


def _stderr_warning(message: str) -> None:
    sys.stderr.write(f"codeintegrity: warning: {message}\n")


@dataclasses.dataclass(frozen=True)
class Pending:
    """A cache miss that may be stored once the file is judged (see ResultsCache.lookup)."""

    real: str  # the resolved path that was stat'ed: judge this one
    fingerprint: str
    key: StatKey
    options: VerifyOptions


class ResultsCache:
    """Reports of unchanged files, reused across runs. Use :meth:`open`, then :meth:`verify`."""

    def __init__(
        self,
        conn: sqlite3.Connection | None,
        path: str,
        *,
        max_age: timedelta = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.time,
        warn: Callable[[str], None] = _stderr_warning,
        racy_window_ns: int | None = None,
    ) -> None:
        self._conn = conn
        self.path = path
        self.max_age = max_age
        self.racy_window_ns = RACY_WINDOW_NS if racy_window_ns is None else racy_window_ns
        self._clock = clock
        self._warn = warn
        self._warned: set[str] = set()
        self._fingerprints: tuple[VerifyOptions, str | None] | None = None
        # Rows judged but not yet written, by (path, fingerprint); written together, in one
        # short transaction, when enough have gathered, when the oldest has waited long enough,
        # and at close. One commit per row cost as much as judging a small file; a transaction
        # kept open instead would hold the write lock across verifications (another run sharing
        # the file would wait on it).
        self._unwritten: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._unwritten_since = 0.0
        self._folders: dict[str, str] = {}  # folder -> its real path (see _resolved)
        self.hits = self.misses = self.stored = self.bypassed = 0

    @classmethod
    def open(
        cls,
        path: str | None = None,
        *,
        max_age: timedelta = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.time,
        warn: Callable[[str], None] = _stderr_warning,
        racy_window_ns: int | None = None,
    ) -> ResultsCache:
        """Open (or create) the cache at ``path`` (default :func:`default_results_path`).

        Never raises: a cache that cannot be used leaves a one-line warning and a cache that
        stores nothing (every lookup misses)."""
        name = path or default_results_path()
        cache = cls(
            None, name, max_age=max_age, clock=clock, warn=warn, racy_window_ns=racy_window_ns
        )
        cache._conn = cache._connect_or_rebuild()
        return cache

    @property
    def enabled(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        if self._conn is not None:
            self.flush()
        if self._conn is not None:  # (a failed write closes it)
            self._conn.close()
            self._conn = None
        self._unwritten.clear()

    def __del__(self) -> None:
        # A cache dropped without close() (a library caller) still writes what it judged.
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - nothing to report to at collection time
            pass

    def __enter__(self) -> ResultsCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the one entry point -------------------------------------------------------------

    def verify(self, name: str, options: VerifyOptions, verify: Verifier | None = None) -> Report:
        """The report for the file ``name``: from the cache when the file and everything the
        verdict depends on are unchanged, else from ``verify`` (default ``verify_path``).

        Raises what ``verify`` raises (``OSError`` for an unreadable file)."""
        cached, pending = self.lookup(name, options)
        if cached is not None:
            return cached
        opened: list[Opened] = []
        if verify is None:
            from .verify import verify_path

            def verify(path: str, options: VerifyOptions) -> Report:
                return verify_path(path, options, opened=record_opened(opened))

        if pending is None:
            return verify(name, options)
        # Judge the resolved path: what is stored must be what was stat'ed.
        report = dataclasses.replace(verify(pending.real, options), path=name)
        self.store_result(pending, report, opened=opened[0] if opened else None)
        self.flush()  # one file at a time: nothing to gather
        return report

    def lookup(self, name: str, options: VerifyOptions) -> tuple[Report | None, Pending | None]:
        """The cached report for ``name`` (None on a miss) and, on a miss that may be stored,
        what :meth:`store_result` needs once the file was judged elsewhere (a worker process
        judging ``Pending.real``). Never raises."""
        encoded, pending = self.lookup_encoded(name, options)
        if encoded is None:
            return None, pending
        try:
            return encoded.decode(name), None
        except (ValueError, TypeError, RecursionError, MalformedError) as exc:
            self._warn_once("entry", f"{self.path}: damaged results cache entry dropped ({exc})")
            fingerprint = self._fingerprint(options)
            if fingerprint is not None:
                self._drop(os.path.realpath(name), fingerprint)
            return None, None

    def lookup_encoded(
        self, name: str, options: VerifyOptions
    ) -> tuple[Encoded | None, Pending | None]:
        """:meth:`lookup` without decoding the report (a scan decodes it only if it must)."""
        fingerprint = self._fingerprint(options)
        if fingerprint is None or self._conn is None:
            self.bypassed += 1
            return None, None
        try:
            real, before = self._resolved(name)
        except OSError:
            self.bypassed += 1
            return None, None
        if not stat.S_ISREG(before.st_mode):
            self.bypassed += 1
            return None, None
        key = file_identity(before)
        cached = self._lookup(real, fingerprint, key)
        if cached is not None:
            self.hits += 1
            if options.at is None and "(judged time " in cached.text:
                now = datetime.fromtimestamp(self._clock(), UTC)
                cached = dataclasses.replace(cached, text=restamp_text(cached.text, now))
            return cached, None
        self.misses += 1
        return None, Pending(real, fingerprint, key, options)

    def _resolved(self, name: str) -> tuple[str, os.stat_result]:
        """The real path of ``name`` and its stat. A file that is not a symbolic link is
        resolved through its folder's real path, remembered for the run (files of one folder
        come together in a walk): one lstat instead of one per path component."""
        st = os.lstat(name)
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(name)
            return real, os.stat(real)  # noqa: PTH116 - str in, str out
        folder, base = os.path.split(os.path.abspath(name))  # noqa: PTH100 - str, no Path
        resolved = self._folders.get(folder)
        if resolved is None:
            if len(self._folders) >= 1024:
                self._folders.clear()
            resolved = self._folders[folder] = os.path.realpath(folder)
        return os.path.join(resolved, base), st  # noqa: PTH118 - as above

    def store_result(
        self, pending: Pending, report: Report, *, opened: Opened | None = None
    ) -> Encoded | None:
        """Keep ``report`` (judged from ``pending.real``) if the file did not change meanwhile.
        Returns its encoded form (None for a report with a policy decision: never cached)."""
        if report.decision is not None:
            return None  # policies are applied after verification, never cached
        from .scan.outcome import encode_report

        encoded = encode_report(report, self._clock())
        self.store_encoded(pending, encoded, opened=opened)
        return encoded

    def store_encoded(
        self,
        pending: Pending,
        encoded: Encoded,
        *,
        opened: Opened | None = None,
        identity: FileIdentity | None = None,
        remote: bool = False,
    ) -> None:
        """:meth:`store_result` for a report already encoded (by a worker process).
        ``opened``: the file as the engine opened it (its ``fstat`` and when), when known; its
        identity must be the one stat'ed by path before and after, or the bytes judged were
        another file's (a link or folder swapped meanwhile), and the racy window counts back
        from when it was opened. ``identity``: the same check when only the identity is known
        (another name of the file). ``remote``: opened on another machine, where neither can
        be compared."""
        since = None
        if opened is not None and not remote:
            identity, since = opened.identity, opened.at_ns
        # A worker on another machine sees the file through its own mount (device, inode and
        # timestamp precision may all differ) and clock: there only the stat by path counts.
        if identity is not None and not remote and identity != pending.key:
            return
        try:
            after = os.stat(pending.real)  # noqa: PTH116 - as above
        except OSError:
            return
        if file_identity(after) == pending.key and self._storable(encoded, after, since):
            self._store(pending.real, pending.fingerprint, pending.key, encoded, pending.options)

    # --- keys and expiry -----------------------------------------------------------------

    def _fingerprint(self, options: VerifyOptions) -> str | None:
        # One run uses one options object: fingerprint it once.
        if self._fingerprints is None or self._fingerprints[0] is not options:
            self._fingerprints = (options, options_fingerprint(options))
        return self._fingerprints[1]

    def valid_until(self, report: Report, options: VerifyOptions) -> float | None:
        """When a verdict stored now stops being reusable (epoch seconds; None: never)."""
        return self._valid_until(chain_boundary(report, self._clock()), options)

    def _valid_until(self, boundary: float | None, options: VerifyOptions) -> float | None:
        if options.at is not None:
            return None
        limit = self._clock() + self.max_age.total_seconds()
        return limit if boundary is None else min(limit, boundary)

    def _storable(self, encoded: Encoded, after: os.stat_result, since: int | None) -> bool:
        if not encoded.storable:
            return False  # a primitive that raised may work next time
        changed = max(after.st_mtime_ns, after.st_ctime_ns)
        # Counted back from when the file was opened, if known: a change that close before the
        # read could be followed by a same-size rewrite that the stat does not show.
        reference = time.time_ns() if since is None else since
        return changed < reference - self.racy_window_ns

    # --- SQLite --------------------------------------------------------------------------

    def _lookup(self, real: str, fingerprint: str, key: StatKey) -> Encoded | None:
        from .scan.outcome import Encoded

        if (real, fingerprint) in self._unwritten:
            self.flush()  # the same file again in one run: read it back as stored
        else:
            self._write_if_due()
        try:
            row = self._run(
                "SELECT st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns, valid_until, status,"
                " event_ids, report FROM results WHERE path = ? AND fingerprint = ?",
                (real, fingerprint),
            ).fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        if row is None or tuple(row[:5]) != key:
            return None
        until, status, event_ids, text = row[5:]
        if until is not None and (
            not isinstance(until, int | float) or self._clock() >= float(until)
        ):
            return None
        try:
            if not (isinstance(text, str) and text.startswith('{"path":""')):
                raise ValueError("not a report")
            if status not in _STATUSES or not isinstance(event_ids, str):
                raise ValueError("bad status or event ids")
            events = tuple(int(e) for e in event_ids.split(",") if e)
        except ValueError as exc:
            self._warn_once("entry", f"{self.path}: damaged results cache entry dropped ({exc})")
            self._drop(real, fingerprint)
            return None
        return Encoded(text, status, events, until)

    def _store(
        self,
        real: str,
        fingerprint: str,
        key: StatKey,
        encoded: Encoded,
        options: VerifyOptions,
    ) -> None:
        if self._conn is None:
            return
        if not self._unwritten:
            self._unwritten_since = time.monotonic()
        self._unwritten[(real, fingerprint)] = (
            real,
            fingerprint,
            code_identity(),
            *key,
            self._valid_until(encoded.boundary, options),
            self._clock(),
            encoded.status,
            ",".join(str(e) for e in encoded.event_ids),
            encoded.text,
        )
        self.stored += 1
        self._write_if_due()

    def _write_if_due(self) -> None:
        if self._unwritten and (
            len(self._unwritten) >= WRITE_ROWS
            or time.monotonic() - self._unwritten_since >= WRITE_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        """Write every judged row now, in one transaction: all of them or none (a run does
        at close)."""
        rows = list(self._unwritten.values())
        self._unwritten.clear()
        if not rows or self._conn is None:
            return
        try:
            self._run("BEGIN IMMEDIATE", ())
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO results (path, fingerprint, code, st_dev, st_ino,"
                    " st_size, st_mtime_ns, st_ctime_ns, valid_until, stored_at, status,"
                    " event_ids, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._run("COMMIT", ())
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._failed(exc)

    def _drop(self, real: str, fingerprint: str) -> None:
        self._unwritten.pop((real, fingerprint), None)
        try:
            self._run("DELETE FROM results WHERE path = ? AND fingerprint = ?", (real, fingerprint))
        except sqlite3.Error as exc:
            self._failed(exc)

    def _run(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        if self._conn is None:
            raise sqlite3.OperationalError("results cache closed")
        return self._conn.execute(sql, params)

    def _failed(self, exc: sqlite3.Error) -> None:
        """A query failed mid-run: rebuild a corrupt file once; otherwise stop caching."""
        self.close()
        if _is_corruption(exc) and "rebuilt" not in self._warned:
            self._warned.add("rebuilt")
            self._warn(f"{self.path}: results cache corrupt ({_one_line(exc)}); rebuilding")
            self._conn = self._rebuild()
        else:
            self._warn_once("off", f"{self.path}: results cache unusable ({_one_line(exc)})")

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self._warn(message)

    def _connect_or_rebuild(self) -> sqlite3.Connection | None:
        try:
            Path(self.path).resolve().parent.mkdir(parents=True, exist_ok=True)
            return self._connect()
        except _Foreign as exc:
            self._warn(f"{self.path}: {exc}; results are not cached")
        except (OSError, sqlite3.Error) as exc:
            if not _is_corruption(exc):
                self._warn(f"{self.path}: results cache unusable ({_one_line(exc)}); not caching")
                return None
            self._warned.add("rebuilt")
            self._warn(f"{self.path}: results cache corrupt ({_one_line(exc)}); rebuilding")
            return self._rebuild()
        return None

    def _rebuild(self) -> sqlite3.Connection | None:
        try:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(self.path + suffix).unlink(missing_ok=True)
            return self._connect()
        except (OSError, sqlite3.Error, _Foreign) as exc:
            self._warn(f"{self.path}: cannot rebuild results cache ({_one_line(exc)})")
            return None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
                # Someone else's database (perhaps a mistyped --cache): never drop it.
                raise _Foreign("not a codeintegrity results cache")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                conn.execute("DROP TABLE IF EXISTS results")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            # Rows of other code versions, and expired ones, are never read again.
            conn.execute(
                "DELETE FROM results WHERE code != ? OR valid_until < ?",
                (code_identity(), self._clock()),
            )
        except BaseException:
            conn.close()
            raise
        return conn


class _Foreign(Exception):
    """The file is a valid SQLite database that is not ours."""


_STATUSES = frozenset({"valid", "invalid", "unsigned", "malformed"})


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
