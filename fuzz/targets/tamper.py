"""A signed file whose hashed bytes changed is never valid.

The input is not a file but a recipe for tampering with a valid signed fixture: byte 0 picks
the base file, then every 5 bytes are one edit (u32le position inside the *hashed* bytes of
that file, mapped through its linear hash ranges, and a non-zero XOR mask). Positions outside
the hashed ranges (CheckSum, the certificate directory, the certificate table) are never
chosen, so every input changes what Authenticode covers, and the report must not be valid.
The recipe form keeps each execution on a real signed file (mutating whole 100 KB files would
spend nearly every execution on files that no longer parse).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache

from codeintegrity.options import VerifyOptions
from codeintegrity.pe.hashing import linear_ranges
from codeintegrity.pe.layout import parse_pe
from codeintegrity.report import Status
from codeintegrity.verify import verify_bytes

from ..common import DATA, JUDGED_AT, fixture_trust, require
from .verify import check_report

INPUT = "a tamper recipe: base index byte, then (u32le hashed position, u8 xor) edits"
MAX_EDITS = 8
# Valid signed fixtures (PE32 and PE32+, SHA-1/SHA-256 page hashes, nested, timestamped).
BASES = (
    "fixtures/cli32_sha256_ph.exe",
    "fixtures/t64_nested_sha1+sha256ph.exe",
    "fixtures/t64_sha256_ph_ts.exe",
    "fixtures/ossl_sha256_ph.exe",
    "fixtures/t64_sha1_ph.exe",
)


@dataclass(frozen=True)
class Base:
    name: str
    data: bytes
    ranges: tuple[tuple[int, int], ...]  # the linear hash ranges
    hashed: int  # how many bytes they cover


def options() -> VerifyOptions:
    from datetime import datetime

    return VerifyOptions(trust=fixture_trust(), at=datetime.fromisoformat(JUDGED_AT))


@cache
def bases() -> tuple[Base, ...]:
    out = []
    for name in BASES:
        data = (DATA / name).read_bytes()
        report = verify_bytes(data, options(), path=name)
        # Without a valid base the invariant would hold vacuously: fail loudly instead.
        require(report.status is Status.VALID, f"tamper base {name} is {report.status}")
        ranges = tuple(linear_ranges(parse_pe(data)))
        out.append(Base(name, data, ranges, sum(b - a for a, b in ranges)))
    return tuple(out)


def file_offset(base: Base, position: int) -> int:
    """The file offset of the ``position``-th hashed byte (modulo the hashed size)."""
    position %= base.hashed
    for a, b in base.ranges:
        if position < b - a:
            return a + position
        position -= b - a
    raise AssertionError("unreachable: position is below the hashed size")


def apply(data: bytes) -> tuple[Base, bytes] | None:
    """The base and the tampered bytes a recipe describes; None when it changes nothing."""
    if len(data) < 6:
        return None
    base = bases()[data[0] % len(BASES)]
    out = bytearray(base.data)
    for start in range(1, min(len(data), 1 + 5 * MAX_EDITS) - 4, 5):
        position, mask = struct.unpack_from("<IB", data, start)
        out[file_offset(base, position)] ^= mask
    if out == base.data:
        return None  # no mask, or edits that cancel out
    return base, bytes(out)


def check(data: bytes) -> None:
    recipe = apply(data)
    if recipe is None:
        return
    base, tampered = recipe
    report = verify_bytes(tampered, options(), path=base.name)
    check_report(report)
    if report.status is Status.VALID:
        pairs = enumerate(zip(tampered, base.data, strict=True))
        changed = [hex(i) for i, (x, y) in pairs if x != y]
        require(False, f"{base.name} with hashed bytes changed at {changed[:8]} is valid")
