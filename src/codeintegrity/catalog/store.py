"""SQLite persistence of the catalog index: one row per catalog file, one per member.

Each catalog row records the SHA-256 of the exact bytes its members were parsed from. (size,
mtime_ns) only tells the index which file *probably* still holds those bytes, so that an unchanged
tree is not re-read at every start; it is never trusted: before a member vouches for a file the
index hashes the catalog again and compares (see :mod:`.index`), because size and mtime can be put
back with ``os.utime`` and another image mounted at the same path shares this cache.

Each catalog's rows are written in the same transaction as its catalog row (SQLite commits are
atomic), so an interrupted run never leaves a half-indexed catalog behind. A cache that cannot be
opened or is corrupt is rebuilt; one that cannot be created at all falls back to memory, with a
warning either way.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .ctl import Catalog

SCHEMA_VERSION = 2  # 2: catalogs.sha256 (the content a member list comes from)
CACHE_FILE_NAME = "catalogs.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS catalogs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 BLOB,
    version INTEGER,
    signer_count INTEGER NOT NULL DEFAULT 0,
    member_count INTEGER NOT NULL DEFAULT 0,
    algorithms TEXT NOT NULL DEFAULT '',
    error TEXT
);
CREATE TABLE IF NOT EXISTS members (
    catalog_id INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    digest BLOB NOT NULL,
    tag BLOB NOT NULL,
    name TEXT,
    page_hash_algorithm TEXT,
    page_hash_raw BLOB,
    attributes TEXT NOT NULL,
    data_type TEXT
);
CREATE INDEX IF NOT EXISTS members_by_digest ON members (digest);
CREATE INDEX IF NOT EXISTS members_by_catalog ON members (catalog_id);
"""


@dataclass(frozen=True, slots=True)
class CatalogRow:
    """What the store remembers about one catalog file."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: bytes | None  # of the bytes the members were parsed from (None: an error row)
    version: int | None
    signer_count: int
    member_count: int
    algorithms: frozenset[str]
    error: str | None


@dataclass(frozen=True, slots=True)
class MemberRow:
    catalog_id: int
    algorithm: str
    digest: bytes
    tag: bytes
    name: str | None
    page_hash_algorithm: str | None
    page_hash_raw: bytes | None
    attributes: dict[str, str]
    data_type: str | None


def default_cache_path(environ: Mapping[str, str] | None = None) -> str:
    """$CODEINTEGRITY_HOME, else $XDG_CACHE_HOME/codeintegrity, else the per-user cache dir."""
    env = os.environ if environ is None else environ
    if env.get("CODEINTEGRITY_HOME"):
        return str(Path(env["CODEINTEGRITY_HOME"], CACHE_FILE_NAME))
    if env.get("XDG_CACHE_HOME"):
        base = Path(env["XDG_CACHE_HOME"])
    elif os.name == "nt" and env.get("LOCALAPPDATA"):
        base = Path(env["LOCALAPPDATA"])
    else:
        base = Path("~").expanduser() / ".cache"
    return str(base / "codeintegrity" / CACHE_FILE_NAME)


class CatalogStore:
    """The SQLite database behind a :class:`~codeintegrity.catalog.index.CatalogIndex`."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str, warnings: list[str]) -> CatalogStore:
        """Open (or create) the cache at ``path``; ":memory:" keeps nothing on disk."""
        if path != ":memory:":
            try:
                Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
                return cls(_connect(path), path)
            except (OSError, sqlite3.Error) as exc:
                if not _is_corruption(exc):
                    warnings.append(
                        f"{path}: catalog cache unusable ({_one_line(exc)}); indexing in memory"
                    )
                    return cls(_connect(":memory:"), ":memory:")
                warnings.append(f"{path}: catalog cache corrupt ({_one_line(exc)}); rebuilding")
                try:
                    for suffix in ("", "-journal", "-wal", "-shm"):
                        Path(path + suffix).unlink(missing_ok=True)
                    return cls(_connect(path), path)
                except (OSError, sqlite3.Error) as again:
                    warnings.append(f"{path}: cannot rebuild ({_one_line(again)}); in memory")
        return cls(_connect(":memory:"), ":memory:")

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: BEGIN IMMEDIATE takes the write lock up front."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.rollback()
            raise
        self._conn.commit()

    def rows(self) -> dict[str, CatalogRow]:
        cur = self._conn.execute(_SELECT_CATALOGS)
        return {row[1]: _catalog_row(row) for row in cur}

    def row(self, path: str) -> CatalogRow | None:
        cur = self._conn.execute(
            _SELECT_CATALOGS + " WHERE path = ?",
            (path,),
        )
        found = cur.fetchone()
        return _catalog_row(found) if found else None

    def delete(self, catalog_ids: Iterable[int]) -> None:
        ids = [(i,) for i in catalog_ids]
        self._conn.executemany("DELETE FROM members WHERE catalog_id = ?", ids)
        self._conn.executemany("DELETE FROM catalogs WHERE id = ?", ids)

    def put(self, path: str, size: int, mtime_ns: int, sha256: bytes, catalog: Catalog) -> None:
        """Replace whatever was stored for ``path`` with this parsed catalog, parsed from bytes
        whose SHA-256 is ``sha256``."""
        old = self.row(path)
        if old is not None:
            self.delete([old.id])
        algorithms = sorted({m.digest_algorithm for m in catalog.members if m.digest})
        cur = self._conn.execute(
            "INSERT INTO catalogs (path, size, mtime_ns, sha256, version, signer_count,"
            " member_count, algorithms, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                path,
                size,
                mtime_ns,
                sha256,
                catalog.version,
                catalog.signer_count,
                len(catalog.members),
                ",".join(algorithms),
            ),
        )
        catalog_id = cur.lastrowid
        self._conn.executemany(
            "INSERT INTO members (catalog_id, algorithm, digest, tag, name, page_hash_algorithm,"
            " page_hash_raw, attributes, data_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    catalog_id,
                    m.digest_algorithm,
                    m.digest,
                    m.tag,
                    m.name,
                    m.page_hash_algorithm,
                    m.page_hash_raw,
                    json.dumps(m.attributes, ensure_ascii=False, separators=(",", ":")),
                    m.indirect_data_type,
                )
                for m in catalog.members
            ],
        )

    def put_error(self, path: str, size: int, mtime_ns: int, error: str) -> None:
        """Remember that this version of the file does not parse (so it is not re-read)."""
        old = self.row(path)
        if old is not None:
            self.delete([old.id])
        self._conn.execute(
            "INSERT INTO catalogs (path, size, mtime_ns, error) VALUES (?, ?, ?, ?)",
            (path, size, mtime_ns, error),
        )

    def find(self, algorithm: str, digest: bytes) -> list[MemberRow]:
        cur = self._conn.execute(
            "SELECT catalog_id, algorithm, digest, tag, name, page_hash_algorithm, page_hash_raw,"
            " attributes, data_type FROM members WHERE digest = ? AND algorithm = ?",
            (digest, algorithm),
        )
        return [
            MemberRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _attributes(r[7]), r[8])
            for r in cur
        ]


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
    conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            # An index written by another schema is only a cache: drop it and start again.
            conn.executescript("DROP TABLE IF EXISTS members; DROP TABLE IF EXISTS catalogs;")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("SELECT count(*) FROM catalogs").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


_SELECT_CATALOGS = (
    "SELECT id, path, size, mtime_ns, sha256, version, signer_count, member_count, algorithms,"
    " error FROM catalogs"
)


def _catalog_row(row: tuple[object, ...]) -> CatalogRow:
    algorithms = str(row[8] or "")
    return CatalogRow(
        id=int(row[0]),  # type: ignore[call-overload]
        path=str(row[1]),
        size=int(row[2]),  # type: ignore[call-overload]
        mtime_ns=int(row[3]),  # type: ignore[call-overload]
        sha256=bytes(row[4]) if isinstance(row[4], bytes) else None,
        version=None if row[5] is None else int(row[5]),  # type: ignore[call-overload]
        signer_count=int(row[6]),  # type: ignore[call-overload]
        member_count=int(row[7]),  # type: ignore[call-overload]
        algorithms=frozenset(a for a in algorithms.split(",") if a),
        error=None if row[9] is None else str(row[9]),
    )


def _attributes(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
