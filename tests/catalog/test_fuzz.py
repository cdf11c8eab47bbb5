"""Mutated and truncated catalogs raise only MalformedCatalog (a CIError), never anything else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeintegrity.catalog import parse_catalog
from codeintegrity.catalog.ctl import load_signed_data
from codeintegrity.errors import CIError, MalformedCatalog
from tests.conftest import FIXTURES, SIGNIFY

SEEDS = [
    (FIXTURES / "fixtures.cat").read_bytes(),
    (SIGNIFY / "oem89.cat").read_bytes(),
    (SIGNIFY / "catfiletest.cat").read_bytes(),
]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_malformed(data: bytes) -> None:
    try:
        catalog = parse_catalog(data)
    except MalformedCatalog as exc:
        assert isinstance(exc, CIError)
        assert "\n" not in exc.diagnostics()
        return
    # Whatever parsed is usable: every member has a digest of its stated size or none.
    for member in catalog.members:
        assert isinstance(member.tag, bytes)
        assert (member.digest_algorithm == "") == (member.digest == b"")


@FUZZ
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_truncated(seed, data):
    cut = data.draw(st.integers(0, len(seed) - 1))
    with pytest.raises(MalformedCatalog):
        parse_catalog(seed[:cut])


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_byte_flips(seed, flips):
    mutated = bytearray(seed)
    for position, value in flips:
        mutated[position % len(mutated)] = value
    _parse_or_malformed(bytes(mutated))


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    position=st.integers(0, 10**6),
    insert=st.binary(min_size=1, max_size=16),
    delete=st.integers(0, 16),
)
def test_splices(seed, position, insert, delete):
    at = position % len(seed)
    _parse_or_malformed(seed[:at] + insert + seed[at + delete :])


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data):
    _parse_or_malformed(data)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_behind_a_der_header(data):
    header = b"\x30" + (b"\x82" + len(data).to_bytes(2, "big") if len(data) > 127 else b"")
    if len(data) <= 127:
        header += bytes([len(data)])
    _parse_or_malformed(header + data)


def test_load_signed_data_wraps_asn1crypto_errors():
    with pytest.raises(MalformedCatalog, match="asn1crypto"):
        load_signed_data(b"\x30\x03\x02\x01\x01")
