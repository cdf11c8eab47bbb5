"""The catalog index: every member of every catalog under ``--catalog PATH``, looked up by hash.

``CatalogIndex.open`` walks files and directory trees (a mounted ``Windows\\System32\\CatRoot``)
for ``*.cat``, re-parses only catalogs whose (size, mtime_ns) changed since the persisted index
was written, drops removed ones, and warns (one line: path and reason) about every catalog it
has to skip. Lookups match the SPC_INDIRECT_DATA digest, never the member tag. A catalog
without a signer is indexed but, by default, not returned: it cannot vouch for a file.

Content binding (why a member list is never trusted on size and mtime): the persisted index
stores, per catalog, the SHA-256 of the bytes its members were parsed from. Size and mtime are
only a hint for which catalogs need not be re-parsed at start-up; ``os.utime`` puts them back and
another disk image mounted at the same path shares the cache. So the first time a catalog's
members match a file in a run, ``lookup`` reads that catalog again and hashes it: when the
content differs from what was indexed, the catalog is re-indexed from the bytes just read and the
lookup answers from those. ``verify_catalog`` verifies the signature of bytes with that same
SHA-256, else the catalog does not vouch ("changed since it was indexed"). A member therefore
vouches for a file only when it comes from the very bytes whose signature was verified.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import CIError
from ..limits import DEFAULT_LIMITS, Limits
from .ctl import OID_CTL, load_signed_data, parse_catalog, parse_envelope, tag_text
from .store import CatalogRow, CatalogStore, MemberRow, default_cache_path

_BATCH = 64  # catalogs per transaction: progress survives an interruption, commits stay cheap


@dataclass(frozen=True, slots=True)
class IndexedMember:
    """A catalog member found by :meth:`CatalogIndex.lookup`, with the catalog it came from."""

    catalog_path: str
    tag: bytes
    digest_algorithm: str
    digest: bytes
    page_hash_raw: bytes | None
    page_hash_algorithm: str | None
    name: str | None
    attributes: dict[str, str] = field(default_factory=dict)
    catalog_version: int = 0
    catalog_signed: bool = False  # the catalog has a SignerInfo (not yet whether it verifies)
    indirect_data_type: str | None = None
    catalog_sha256: bytes = b""  # the content this member was read from (checked this run)

    @property
    def tag_text(self) -> str:
        return tag_text(self.tag)


@dataclass(frozen=True, slots=True)
class IndexStats:
    """What one ``open`` did: measured so callers (and tests) can see the cache at work."""

    discovered: int = 0
    parsed: int = 0  # catalogs read and parsed during this open
    reused: int = 0  # catalogs taken from the persisted index unchanged
    removed: int = 0  # catalogs dropped because their file is gone
    seconds: float = 0.0


class CatalogIndex:
    """Catalog members of the catalogs found under the given paths, persisted in SQLite."""

    def __init__(
        self,
        store: CatalogStore,
        rows: Sequence[CatalogRow],
        warnings: list[str],
        stats: IndexStats,
        limits: Limits,
    ) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._limits = limits
        self._rows = {row.id: row for row in rows if row.error is None}
        # Per run, per catalog path: the SHA-256 of the content its members were checked
        # against (None: unreadable now). Fixed once set, so that every member returned for a
        # path and every verdict given for it refer to one content.
        self._content: dict[str, bytes | None] = {}
        # path -> (stat identity, SHA-256) of the bytes last verified, to avoid re-hashing a
        # large catalog for every file it lists; any stat change means reading it again.
        self._seen: dict[str, tuple[tuple[int, ...], bytes]] = {}
        self._verdicts: dict[tuple[object, ...], tuple[object, Any]] = {}
        self.warnings = warnings
        self.stats = stats

    # -- building -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        paths: Sequence[str],
        *,
        cache_path: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> CatalogIndex:
        """Index the catalogs under ``paths``, reusing the persisted index where nothing changed.

        ``cache_path`` defaults to :func:`~codeintegrity.catalog.store.default_cache_path`;
        ":memory:" persists nothing. Never raises for a bad catalog: it is skipped and named in
        ``warnings``.
        """
        started = time.perf_counter()
        warnings: list[str] = []
        found = _discover(paths, warnings)
        store = CatalogStore.open(cache_path or default_cache_path(), warnings)
        known = store.rows()
        roots = [str(Path(p).resolve()) for p in paths]

        gone = [
            row.id
            for path, row in known.items()
            if path not in found and (_under(path, roots) or not Path(path).exists())
        ]
        if gone:
            with store.transaction():
                store.delete(gone)
        stale = [
            path
            for path, (size, mtime_ns) in found.items()
            if (row := known.get(path)) is None or (row.size, row.mtime_ns) != (size, mtime_ns)
        ]
        parsed = 0
        for start in range(0, len(stale), _BATCH):
            with store.transaction():
                for path in stale[start : start + _BATCH]:
                    parsed += _index_one(store, path, *found[path], limits)

        rows: list[CatalogRow] = []
        current = store.rows()
        for path in found:
            row = current.get(path)
            if row is None:
                continue
            if row.error is not None:
                warnings.append(f"{path}: catalog skipped: {row.error}")
            rows.append(row)
        stats = IndexStats(
            discovered=len(found),
            parsed=parsed,
            reused=len(found) - len(stale),
            removed=len(gone),
            seconds=time.perf_counter() - started,
        )
        return cls(store, rows, warnings, stats, limits)

    def close(self) -> None:
        with self._lock:
            self._store.close()

    def __enter__(self) -> CatalogIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the engine asks -------------------------------------------------------------

    @property
    def cache_path(self) -> str:
        return self._store.path

    @property
    def catalog_count(self) -> int:
        """Catalogs indexed (parsed without error), signed or not."""
        return len(self._rows)

    @property
    def member_count(self) -> int:
        return sum(row.member_count for row in self._rows.values())

    @property
    def catalog_paths(self) -> list[str]:
        return sorted(row.path for row in self._rows.values())

    def algorithms(self) -> set[str]:
        """Hash algorithms the indexed members use (the engine computes only these)."""
        out: set[str] = set()
        for row in self._rows.values():
            out |= row.algorithms
        return out

    def lookup(
        self, digests: Mapping[str, bytes], *, include_unsigned: bool = False
    ) -> list[IndexedMember]:
        """Members whose indirect-data digest equals one of ``digests`` (algorithm -> digest).

        Signed catalogs come first, then by path, so results are stable. Catalogs without a
        signer are left out unless ``include_unsigned``: they cannot make a file catalog-signed.
        Every returned member comes from the catalog's current content (see the module notes).
        """
        found: list[IndexedMember] = []
        with self._lock:
            hits = self._find(digests)
            if any(self._rows[h.catalog_id].path not in self._content for h in hits):
                if self._check_content({self._rows[h.catalog_id] for h in hits}):
                    hits = self._find(digests)  # a catalog was re-indexed: ask again
            for hit in hits:
                row = self._rows[hit.catalog_id]
                content = self._content.get(row.path)
                if content is None or content != row.sha256:
                    continue  # unreadable now, or changed again while re-indexing
                if row.signer_count == 0 and not include_unsigned:
                    continue
                found.append(
                    IndexedMember(
                        catalog_path=row.path,
                        tag=hit.tag,
                        digest_algorithm=hit.algorithm,
                        digest=hit.digest,
                        page_hash_raw=hit.page_hash_raw,
                        page_hash_algorithm=hit.page_hash_algorithm,
                        name=hit.name,
                        attributes=hit.attributes,
                        catalog_version=row.version or 0,
                        catalog_signed=row.signer_count > 0,
                        indirect_data_type=hit.data_type,
                        catalog_sha256=content,
                    )
                )
        found.sort(key=lambda m: (not m.catalog_signed, m.catalog_path, m.digest_algorithm))
        return found

    def _find(self, digests: Mapping[str, bytes]) -> list[MemberRow]:
        return [
            hit
            for algorithm, digest in digests.items()
            if digest
            for hit in self._store.find(algorithm, bytes(digest))
            if hit.catalog_id in self._rows
        ]

    def _check_content(self, rows: set[CatalogRow]) -> bool:
        """Hash the catalogs behind ``rows`` not yet checked this run; re-index those whose
        content is not what their members were parsed from. True when one was re-indexed."""
        reindexed = False
        for row in sorted(rows, key=lambda r: r.path):
            if row.path in self._content:
                continue
            read = _read_catalog(row.path, self._limits)
            if read is None:
                self._content[row.path] = None
                self.warnings.append(f"{row.path}: catalog no longer readable; not used")
                continue
            identity, data, digest = read
            self._content[row.path] = digest
            self._seen[row.path] = (identity, digest)
            if digest == row.sha256:
                continue
            # The file is not the one indexed (same size and mtime or not): index what is there.
            with self._store.transaction():
                _store_parsed(self._store, row.path, identity[0], identity[1], data, self._limits)
            del self._rows[row.id]
            fresh = self._store.row(row.path)
            if fresh is not None and fresh.error is None:
                self._rows[fresh.id] = fresh
            elif fresh is not None:
                self._content[row.path] = None
                self.warnings.append(f"{row.path}: catalog skipped: {fresh.error}")
            reindexed = True
        return reindexed

    def verify_catalog(
        self,
        catalog_path: str,
        trust: Any,
        at: datetime | None,
        *,
        expected_sha256: bytes | None = None,
    ) -> Any:
        """Verify the catalog's own signature like an embedded one (expected content type
        szOID_CTL, code-signing EKU). Returns the authenticode layer's ``SignerVerdict``.

        The bytes verified must be the content the members came from: ``expected_sha256``
        (an :class:`IndexedMember`'s ``catalog_sha256``), else the content ``lookup`` checked
        for this path in this run. A catalog changed since then gets a failed verdict. Verdicts
        are cached per content, trust store and time."""
        path = str(Path(catalog_path).resolve())
        with self._lock:
            # lookup keys by the path as found (a symlinked catalog is not resolved there).
            expected = expected_sha256 or self._content.get(catalog_path) or self._content.get(path)
        try:
            st = Path(path).stat()
        except OSError as exc:
            return _failed_verdict(f"{path}: cannot read catalog: {exc.strerror or exc}")
        seen = self._seen.get(path)
        digest = seen[1] if seen is not None and seen[0] == _identity(st) else None
        data: bytes | None = None
        if digest is None or self._cached(digest, trust, at) is None:
            read = _read_catalog(path, self._limits)
            if read is None:
                return _failed_verdict(f"{path}: cannot read catalog")
            identity, data, digest = read
            self._seen[path] = (identity, digest)
        if expected is not None and digest != expected:
            return _failed_verdict(
                f"{path}: catalog changed since it was indexed (SHA-256 {digest.hex()}, "
                f"members read from {expected.hex()}); not used"
            )
        cached = self._cached(digest, trust, at)
        if cached is not None:
            return cached
        assert data is not None  # read above whenever nothing was cached for this content
        verdict = _verify_bytes(path, data, trust, at, self._limits)
        self._verdicts[(digest, id(trust), at)] = (trust, verdict)
        return verdict

    def _cached(self, digest: bytes, trust: Any, at: datetime | None) -> Any:
        cached = self._verdicts.get((digest, id(trust), at))
        # id() of a freed store can be reused: the entry holds the store itself to compare.
        return cached[1] if cached is not None and cached[0] is trust else None


# -- helpers ----------------------------------------------------------------------------------


def _discover(paths: Sequence[str], warnings: list[str]) -> dict[str, tuple[int, int]]:
    """Absolute path -> (size, mtime_ns) of every catalog: files as given, *.cat in trees."""
    found: dict[str, tuple[int, int]] = {}

    def add(path: str) -> None:
        try:
            st = Path(path).stat()
        except OSError as exc:
            warnings.append(f"{path}: catalog skipped: {exc.strerror or exc}")
            return
        if not stat.S_ISREG(st.st_mode):
            # A FIFO would block the read forever, a device never end: regular files only.
            warnings.append(f"{path}: catalog skipped: not a regular file")
            return
        found[path] = (st.st_size, st.st_mtime_ns)

    for given in paths:
        root = str(Path(given).resolve())
        if Path(root).is_dir():
            walk_errors: list[OSError] = []
            for folder, dirs, files in os.walk(root, onerror=walk_errors.append):
                dirs.sort()
                for name in sorted(files):
                    if name.lower().endswith(".cat"):
                        add(str(Path(folder, name)))
            warnings.extend(
                f"{err.filename or root}: cannot list catalogs: {err.strerror or err}"
                for err in walk_errors
            )
        elif Path(root).exists():
            add(root)
        else:
            warnings.append(f"{root}: catalog path not found")
    return found


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _index_one(store: CatalogStore, path: str, size: int, mtime_ns: int, limits: Limits) -> int:
    """Parse one catalog into the store (or record why not). Returns 1 when it was read."""
    row = store.row(path)
    if row is not None and (row.size, row.mtime_ns) == (size, mtime_ns):
        return 0  # another process indexed it while we waited for the write lock
    if size > limits.max_catalog_size:
        store.put_error(path, size, mtime_ns, f"{size} bytes exceeds the catalog size limit")
        return 0
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.max_catalog_size + 1)
    except (OSError, MemoryError) as exc:
        store.put_error(path, size, mtime_ns, f"cannot read: {getattr(exc, 'strerror', exc)}")
        return 1
    _store_parsed(store, path, size, mtime_ns, data, limits)
    return 1


def _store_parsed(
    store: CatalogStore, path: str, size: int, mtime_ns: int, data: bytes, limits: Limits
) -> None:
    """Parse ``data`` (the bytes of the catalog at ``path``) into the store, with its SHA-256."""
    if len(data) > limits.max_catalog_size:
        store.put_error(path, size, mtime_ns, f"{len(data)} bytes exceeds the catalog size limit")
        return
    try:
        catalog = parse_catalog(data, limits, load_signature=False)
    except CIError as exc:
        store.put_error(path, size, mtime_ns, exc.diagnostics())
        return
    except (MemoryError, RecursionError) as exc:
        store.put_error(path, size, mtime_ns, f"cannot read: {exc}")
        return
    store.put(path, size, mtime_ns, hashlib.sha256(data).digest(), catalog)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What must stay equal for bytes hashed earlier in this run to be assumed unchanged."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _read_catalog(path: str, limits: Limits) -> tuple[tuple[int, ...], bytes, bytes] | None:
    """(stat identity, bytes, SHA-256) of the catalog at ``path`` now; None when unreadable.

    The identity is taken from the open handle before reading, so a later change of the file
    shows in the next ``stat``."""
    try:
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            data = handle.read(limits.max_catalog_size + 1)
    except (OSError, MemoryError):
        return None
    return _identity(st), data, hashlib.sha256(data).digest()


def _verify_bytes(path: str, data: bytes, trust: Any, at: datetime | None, limits: Limits) -> Any:
    from ..authenticode.oids import EKU_CODE_SIGNING
    from ..authenticode.signer import verify_signed_data

    if len(data) > limits.max_catalog_size:
        return _failed_verdict(f"{path}: {len(data)} bytes exceeds the catalog size limit")
    try:
        envelope = parse_envelope(data, limits)
        if envelope.signer_count == 0:
            return _failed_verdict(f"{path}: catalog has no signer")
        signed_data = load_signed_data(data)
    except CIError as exc:
        return _failed_verdict(f"{path}: {exc.diagnostics()}")
    return verify_signed_data(
        signed_data,
        index=-1,
        trust=trust,
        at=at,
        expected_content_type=OID_CTL,
        eku=EKU_CODE_SIGNING,
    )


def _failed_verdict(reason: str) -> Any:
    """A verdict for a catalog whose signature cannot even be looked at."""
    from ..authenticode.signer import SignerVerdict
    from ..findings import Finding, FindingCode

    return SignerVerdict.failed(Finding(FindingCode.CATALOG_SIGNATURE_INVALID, reason))
