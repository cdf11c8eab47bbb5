"""Readable facts about a certificate, as reports and WDAC policies name it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from ..report import CertInfo

# RFC 4514 section 3 short names (plus emailAddress as Windows tools show it).
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "E",
}
# WDAC CertRoot TBS values use the hash of the certificate's own signature algorithm.
_TBS_HASHES = {"sha1", "sha256", "sha384", "sha512"}


def cert_info(cert: Any) -> CertInfo:
    """CertInfo of an asn1crypto ``x509.Certificate``."""
    tbs = cert["tbs_certificate"]
    validity = tbs["validity"]
    return CertInfo(
        subject=rfc4514(tbs["subject"]),
        issuer=rfc4514(tbs["issuer"]),
        serial=serial_hex(tbs["serial_number"]),
        sha1=hashlib.sha1(cert.dump(), usedforsecurity=False).hexdigest(),
        tbs_hash=tbs_hash(cert),
        not_before=_utc(validity["not_before"].native),
        not_after=_utc(validity["not_after"].native),
        ekus=_ekus(cert),
    )


def _ekus(cert: Any) -> tuple[str, ...]:
    """Dotted EKU OIDs; an unparseable extension reads as none (the chain check reports it)."""
    try:
        value = cert.extended_key_usage_value
    except ValueError:
        return ()
    if value is None:
        return ()
    return tuple(item.dotted for item in value)


def tbs_hash(cert: Any) -> str:
    """Hex hash of the DER tbsCertificate with the certificate's signature hash."""
    try:
        algorithm = cert["signature_algorithm"].hash_algo
    except ValueError:  # e.g. Ed25519 or an unknown OID: no implied hash
        algorithm = "sha256"
    if algorithm not in _TBS_HASHES:
        algorithm = "sha256"  # md5/md2-signed certificates: WDAC has no such TBS form
    return hashlib.new(algorithm, cert["tbs_certificate"].dump()).hexdigest()


def serial_hex(serial: Any) -> str:
    """Serial number as lowercase hex of its integer value (raw octets when negative)."""
    value = serial.native
    if value < 0:
        return serial.contents.hex()
    text = format(value, "x")
    return text if len(text) % 2 == 0 else "0" + text


def rfc4514(name: Any) -> str:
    """RFC 4514 string of an asn1crypto Name: last RDN first, multi-valued RDNs joined by +."""
    parts: list[str] = []
    for rdn in reversed(list(name.chosen)):
        values = []
        for type_value in rdn:
            oid = type_value["type"].dotted
            key = _SHORT_NAMES.get(oid, oid)
            values.append(f"{key}={_escape(_text(type_value['value']))}")
        parts.append("+".join(values))
    return ",".join(parts)


def _text(value: Any) -> str:
    native = value.native
    if isinstance(native, str):
        return native
    return "#" + value.dump().hex()  # non-string attribute: hex of its BER, per RFC 4514


def _escape(text: str) -> str:
    if text.startswith("#") and len(text) > 1 and all(c in "0123456789abcdef" for c in text[1:]):
        return text
    out = []
    for i, char in enumerate(text):
        if char in ',+"\\<>;' or (char == "#" and i == 0):
            out.append("\\" + char)
        elif char == " " and (i == 0 or i == len(text) - 1):
            out.append("\\ ")
        elif char == "\x00":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
