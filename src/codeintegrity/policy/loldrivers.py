"""Import the LOLDrivers catalogue (loldrivers.io ``drivers.csv`` or ``drivers.json``) as deny
rules: each known sample's Authentihash (SHA-1, SHA-256) becomes an Authenticode hash rule and
its file hash (SHA-1, SHA-256) a flat-hash rule. MD5 values are skipped unless asked for (MD5
collisions are cheap, so an MD5 match is weak evidence).

The evaluator matches both kinds against both the Authenticode and the flat digests of a file,
because the catalogue's own history shows the two getting mixed up.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import PolicyError
from .model import HashRule, ImportResult, Policy

_AUTH = "KnownVulnerableSamples_Authentihash_"
_FLAT = "KnownVulnerableSamples_"
_ALGORITHMS = {"MD5": 32, "SHA1": 40, "SHA256": 64}
_HEX_DIGITS = frozenset("0123456789abcdef")


def import_loldrivers(
    data: bytes | str, source: str = "<loldrivers>", *, include_md5: bool = False
) -> ImportResult:
    """Translate the LOLDrivers CSV or JSON export into a deny-only :class:`Policy`."""
    started = time.perf_counter()
    text = data.decode("utf-8-sig", errors="replace") if isinstance(data, bytes) else data
    stripped = text.lstrip("\ufeff \t\r\n")
    entries = (
        _json_entries(stripped, source) if stripped[:1] in "[{" else _csv_entries(text, source)
    )
    builder = _Builder(include_md5)
    for entry in entries:
        builder.add(entry)
    policy = Policy(
        name="LOLDrivers vulnerable and malicious drivers",
        id="loldrivers",
        mode="enforce",
        deny_hashes=tuple(builder.rules["image"]),
        deny_file_hashes=tuple(builder.rules["file"]),
        source=source,
    )
    return ImportResult(
        policy, dict(builder.found), dict(builder.skipped), time.perf_counter() - started
    )


# An entry as both formats reduce to: id, label, and (kind, algorithm, raw values).
_Entry = tuple[str, str, list[tuple[str, str, list[str]]]]


def _csv_entries(text: str, source: str) -> Iterator[_Entry]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = set(reader.fieldnames or ())
    needed = {"Id"} | {f"{_AUTH}{alg}" for alg in ("SHA1", "SHA256")}
    missing = sorted(needed - columns)
    if missing:
        raise PolicyError(
            f"{source}:1: not a LOLDrivers drivers.csv: missing column(s) {', '.join(missing)}"
        )
    try:
        for row in reader:
            hashes = []
            for alg in _ALGORITHMS:
                hashes.append(("image", alg, _split(row.get(f"{_AUTH}{alg}"))))
                hashes.append(("file", alg, _split(row.get(f"{_FLAT}{alg}"))))
            yield row.get("Id") or "?", _label(row.get("Tags"), row.get("Category")), hashes
    except csv.Error as exc:
        raise PolicyError(f"{source}:{reader.line_num}: CSV error: {exc}") from None


def _json_entries(text: str, source: str) -> Iterator[_Entry]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{source}:{exc.lineno}: JSON error: {exc.msg}") from None
    except RecursionError:
        raise PolicyError(f"{source}: JSON nested too deeply") from None
    except ValueError as exc:  # int()'s digit limit (4300 digits) is not a JSONDecodeError
        reason = str(exc).splitlines()[0][:200] if str(exc) else "cannot be read"
        raise PolicyError(f"{source}: JSON value cannot be read: {reason}") from None
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise PolicyError(f"{source}: not a LOLDrivers drivers.json (expected a list)")
    for number, item in enumerate(document):
        if not isinstance(item, dict):
            raise PolicyError(f"{source}: entry #{number} is not an object")
        if "Id" not in item and "KnownVulnerableSamples" not in item:
            raise PolicyError(
                f"{source}: not a LOLDrivers drivers.json (entry #{number} has no Id)"
            )
        label = _label(_as_text(item.get("Tags")), _as_text(item.get("Category")))
        hashes: list[tuple[str, str, list[str]]] = []
        samples = item.get("KnownVulnerableSamples") or []
        for sample in samples if isinstance(samples, list) else []:
            if not isinstance(sample, dict):
                continue
            auth = (
                sample.get("Authentihash") if isinstance(sample.get("Authentihash"), dict) else {}
            )
            for alg in _ALGORITHMS:
                hashes.append(("image", alg, _split(_as_text((auth or {}).get(alg)))))
                hashes.append(("file", alg, _split(_as_text(sample.get(alg)))))
        yield str(item.get("Id") or f"#{number}"), label, hashes


class _Builder:
    def __init__(self, include_md5: bool) -> None:
        self.include_md5 = include_md5
        self.rules: dict[str, list[HashRule]] = {"image": [], "file": []}
        self.seen: dict[str, set[str]] = {"image": set(), "file": set()}
        self.found: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def add(self, entry: _Entry) -> None:
        entry_id, label, hashes = entry
        self.found["entries"] += 1
        for kind, alg, values in hashes:
            noun = "Authentihash" if kind == "image" else "file hash"
            for raw in values:
                value = raw.lower()
                self.found[f"{alg} {noun} values"] += 1
                if len(value) != _ALGORITHMS[alg] or not set(value) <= _HEX_DIGITS:
                    self.skipped[f"malformed {alg} {noun} value"] += 1
                    continue
                if alg == "MD5" and not self.include_md5:
                    self.skipped[f"MD5 {noun} (weak; use --include-md5)"] += 1
                    continue
                if value in self.seen[kind]:
                    self.skipped[f"duplicate {noun} (already denied by another entry)"] += 1
                    continue
                self.seen[kind].add(value)
                self.rules[kind].append(HashRule(value, f"LOLDrivers {entry_id} {label}".strip()))


def _split(value: str | None) -> list[str]:
    """The CSV joins lists with ", " and leaves empty slots (", , ")."""
    if not value:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _label(tags: str | None, category: str | None) -> str:
    """First tag (the driver's file name) and the category: enough to recognise a rule."""
    first_tag = (tags or "").split(",")[0].strip()
    parts: Iterable[str] = (p for p in (first_tag, (category or "").strip()) if p)
    return " ".join(parts)
