"""The catalog index: every member of every catalog under ``--catalog PATH``, looked up by hash.

``CatalogIndex.open`` walks files and directory trees (a mounted ``Windows\\System32\\CatRoot``)
for ``*.cat``, re-parses only catalogs whose (size, mtime_ns) changed since the persisted index
was written, drops removed ones, and warns (one line: path and reason) about every catalog it
has to skip. Lookups match the SPC_INDIRECT_DATA digest, never the member tag. A catalog
without a signer is indexed but, by default, not returned: it cannot vouch for a file.
"""

from __future__ import annotations

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
from .store import CatalogRow, CatalogStore, default_cache_path

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
        """
        found: list[IndexedMember] = []
        with self._lock:
            hits = [
                hit
                for algorithm, digest in digests.items()
                if digest
                for hit in self._store.find(algorithm, bytes(digest))
            ]
        for hit in hits:
            row = self._rows.get(hit.catalog_id)
            if row is None or (row.signer_count == 0 and not include_unsigned):
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
                )
            )
        found.sort(key=lambda m: (not m.catalog_signed, m.catalog_path, m.digest_algorithm))
        return found

    def verify_catalog(self, catalog_path: str, trust: Any, at: datetime | None) -> Any:
        """Verify the catalog's own signature like an embedded one (expected content type
        szOID_CTL, code-signing EKU). Returns the authenticode layer's ``SignerVerdict``;
        cached per path, size, mtime, trust store and time."""
        path = str(Path(catalog_path).resolve())
        try:
            st = Path(path).stat()
            key: tuple[object, ...] = (path, st.st_size, st.st_mtime_ns, id(trust), at)
        except OSError as exc:
            return _failed_verdict(f"{path}: cannot read catalog: {exc.strerror or exc}")
        cached = self._verdicts.get(key)
        if cached is not None and cached[0] is trust:
            return cached[1]
        verdict = _verify_file(path, trust, at, self._limits)
        self._verdicts[key] = (trust, verdict)
        return verdict


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
        catalog = parse_catalog(data, limits, load_signature=False)
    except CIError as exc:
        store.put_error(path, size, mtime_ns, exc.diagnostics())
        return 1
    except (OSError, MemoryError, RecursionError) as exc:
        store.put_error(path, size, mtime_ns, f"cannot read: {getattr(exc, 'strerror', exc)}")
        return 1
    store.put(path, size, mtime_ns, catalog)
    return 1


def _verify_file(path: str, trust: Any, at: datetime | None, limits: Limits) -> Any:
    from ..authenticode.oids import EKU_CODE_SIGNING
    from ..authenticode.signer import verify_signed_data

    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.max_catalog_size + 1)
        envelope = parse_envelope(data, limits)
        if envelope.signer_count == 0:
            return _failed_verdict(f"{path}: catalog has no signer")
        signed_data = load_signed_data(data)
    except CIError as exc:
        return _failed_verdict(f"{path}: {exc.diagnostics()}")
    except OSError as exc:
        return _failed_verdict(f"{path}: cannot read catalog: {exc.strerror or exc}")
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
