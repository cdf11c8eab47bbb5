"""The page-hash tables are cut out of a signature before asn1crypto sees it: same results as
the plain path (asn1crypto over every byte) on real files and on mutated signatures, a bounded
number of copies of a large table, and typed errors from the DER walker."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from asn1crypto import cms, parser

from codeintegrity.authenticode import signeddata
from codeintegrity.authenticode.asn1 import children, encode_tlv, read_tlv
from codeintegrity.authenticode.signeddata import econtent_tlv, parse_signatures
from codeintegrity.errors import CIError, MalformedSignature
from codeintegrity.reader import Reader

from .conftest import FIXTURES, SIGNIFY, cert_entries

PAGE_HASHED = [
    FIXTURES / "t64_sha256_ph.exe",
    FIXTURES / "t64_sha1_ph.exe",
    FIXTURES / "t64_nested_sha1+sha256ph.exe",
    FIXTURES / "bad_pagehash_only_sha256.exe",
    SIGNIFY / "DXCore.dll",
]
PAGE_HASH_OID = bytes.fromhex("060a2b060104018237020302")  # 1.3.6.1.4.1.311.2.3.2 (V2)


def outcome(der: bytes) -> object:
    try:
        sigs = parse_signatures(der, 0)
    except CIError as exc:
        return type(exc).__name__, str(exc)
    return [
        (s.index, s.parent, s.digest_algorithm, s.signed_digest, s.indirect_data_type)
        + (s.page_hash_raw, s.page_hash_algorithm, s.findings)
        for s in sigs
    ]


def plain_outcome(monkeypatch: pytest.MonkeyPatch, der: bytes) -> object:
    with monkeypatch.context() as patch:
        patch.setattr(signeddata, "_indirect_tlv", lambda der, content: None)
        return outcome(der)


def counted_cuts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    cuts: list[int] = []
    cut = signeddata._without_page_hashes

    def spy(tlv: memoryview) -> object:
        result = cut(tlv)
        cuts.append(result is not None)
        return result

    monkeypatch.setattr(signeddata, "_without_page_hashes", spy)
    return cuts


@pytest.mark.parametrize("path", PAGE_HASHED, ids=lambda p: p.name)
def test_cut_path_equals_the_plain_path(monkeypatch: pytest.MonkeyPatch, path) -> None:
    cuts = counted_cuts(monkeypatch)
    for der in cert_entries(path.read_bytes()):
        fast = outcome(der)
        assert fast == plain_outcome(monkeypatch, der)
        assert any(s[5] is not None for s in fast)  # a page-hash table was found
    assert cuts and any(cuts)


def test_mutated_signatures_give_the_same_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    der = cert_entries((FIXTURES / "t64_nested_sha1+sha256ph.exe").read_bytes())[0]
    table_at = der.find(PAGE_HASH_OID)
    assert table_at > 0
    rng = random.Random(20260101)
    differ = 0
    for _ in range(250):
        mutated = bytearray(der)
        position = rng.choice(
            [rng.randrange(len(der)), table_at + rng.randrange(-90, 30), rng.randrange(64)]
        )
        mutated[position] = rng.randrange(256)
        fast = outcome(bytes(mutated))
        assert fast == plain_outcome(monkeypatch, bytes(mutated)), position
        differ += fast != outcome(der)
    assert differ > 50  # the mutations did change outcomes, so the comparison means something


def test_econtent_tlv_single_copy_path_matches_dump() -> None:
    for path in PAGE_HASHED:
        for der in cert_entries(path.read_bytes()):
            fresh = cms.ContentInfo.load(der)["content"]["encap_content_info"]["content"]
            assert signeddata._explicit_sequence_tlv(fresh) is not None
            other = cms.ContentInfo.load(der)["content"]["encap_content_info"]["content"]
            _cls, _method, _tag, _header, value, _trailer = parser.parse(other.dump())
            assert econtent_tlv(fresh) == value
            assert fresh._parsed is None  # not parsed in place: no extra copies kept


def _replace_contents(data: bytes, old: bytes, new: bytes) -> bytes:
    """Re-encode a run of DER values with the contents ``old`` replaced by ``new``."""
    reader = Reader(data, MalformedSignature)
    out, pos = [], 0
    while pos < len(data):
        tlv = read_tlv(reader, pos, len(data))
        body = data[tlv.body : tlv.end]
        if body == old:
            body = new
        elif old in body:
            body = _replace_contents(body, old, new)
        out.append(encode_tlv(tlv.tag, body))
        pos = tlv.end
    return b"".join(out)


def test_a_large_table_is_not_copied_level_by_level() -> None:
    (sig,) = [
        s
        for der in cert_entries((FIXTURES / "t64_sha256_ph.exe").read_bytes())
        for s in parse_signatures(der, 0)
    ]
    assert sig.page_hash_raw is not None
    rng = random.Random(5)
    entries = 50_000  # the table of a 200 MiB image: 1.8 MB
    big = b"".join(i.to_bytes(4, "little") + rng.randbytes(32) for i in range(entries))
    der = cert_entries((FIXTURES / "t64_sha256_ph.exe").read_bytes())[0]
    der = _replace_contents(der, sig.page_hash_raw, big)
    tracemalloc.start()
    try:
        (parsed,) = parse_signatures(der, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parsed.page_hash_raw == big and parsed.findings == ()
    # asn1crypto keeps four copies of the whole signature (ContentInfo, SignedData, its
    # contentInfo and the eContent) plus the table itself; level-by-level parsing made ~16.
    assert peak < 6.5 * len(big), peak / len(big)


@pytest.mark.parametrize(
    "data",
    [
        b"\x30\x05\x02\x01",  # runs past its parent
        b"\x30\x80\x00\x00",  # indefinite length
        b"\x1f\x81\x00\x00",  # multi-octet tag
        b"\x30\x85\x00\x00\x00\x00\x01",  # five length octets
        b"\x30",  # no length
        b"\x30\x82\x01",  # length cut short
    ],
)
def test_der_walker_errors_are_typed(data: bytes) -> None:
    reader = Reader(data, MalformedSignature)
    with pytest.raises(MalformedSignature):
        tlv = read_tlv(reader, 0, len(data))
        children(reader, tlv)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 70_000])
def test_encode_tlv_round_trips_through_asn1crypto(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    cls, method, tag, _header, value, trailer = parser.parse(encode_tlv(0x04, body), strict=True)
    assert (cls, method, tag, value, trailer) == (0, 0, 4, body, b"")
