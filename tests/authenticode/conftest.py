"""Shared helpers for the Authenticode tests: real files from tests/data, no PE parser needed."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from codeintegrity.authenticode.signeddata import Signature, parse_signatures
from codeintegrity.authenticode.trust import TrustStore

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURES = DATA / "fixtures"
SIGNIFY = DATA / "thirdparty" / "signify"
PKI = DATA / "pki"
CORPUS_SIGNED = Path("/work/shared/corpus/samples/signed")


def cert_entries(data: bytes) -> list[bytes]:
    """DER of every WIN_CERTIFICATE entry (test helper; the real parser lives in pe/)."""
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    magic = struct.unpack_from("<H", data, e_lfanew + 24)[0]
    certdir = e_lfanew + 24 + (128 if magic == 0x10B else 144)
    offset, size = struct.unpack_from("<II", data, certdir)
    out = []
    pos = offset
    while pos + 8 <= min(offset + size, len(data)):
        length = struct.unpack_from("<I", data, pos)[0]
        if length < 8:
            break
        out.append(data[pos + 8 : pos + length])
        pos += (length + 7) & ~7
    return out


def signatures_of(path: Path) -> list[Signature]:
    """Every signature of a file, indices continuing across WIN_CERTIFICATE entries."""
    sigs: list[Signature] = []
    for entry, der in enumerate(cert_entries(path.read_bytes())):
        sigs.extend(parse_signatures(der, entry, first_index=len(sigs)))
    return sigs


@pytest.fixture(scope="session")
def pki_store() -> TrustStore:
    return TrustStore.from_paths([PKI / "ca.pem", PKI / "tsaca.pem"])


@pytest.fixture(scope="session")
def default_store() -> TrustStore:
    return TrustStore.default()


@pytest.fixture(scope="session")
def full_store(default_store: TrustStore) -> TrustStore:
    return default_store | TrustStore.from_paths(sorted((DATA / "trust").glob("*.pem")))
