"""Authenticode timestamps: PKCS#9 countersignatures and RFC 3161 tokens.

Both live in the unauthenticated attributes of the signer and bind a time to the signature value
octets. A timestamp that does not verify, or whose TSA is not trusted at the timestamp time, is
reported as a warning and ignored (the chain is then judged at the caller's moment).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..findings import FindingCode
from . import oids
from .signeddata import ASN1_ERRORS
from .signerinfo import Problem, attribute_values, check_signed_data, check_signer_info
from .trust import TrustStore, validate_chain


@dataclass(slots=True)
class TimestampResult:
    """The first valid, trusted timestamp (``time`` None when there is none) and problems."""

    time: datetime | None = None
    kind: str | None = None  # "rfc3161" | "pkcs9"
    tsa_chain: tuple[Any, ...] = ()
    problems: list[Problem] = field(default_factory=list)


def verify_timestamps(
    signer_info: Any, outer_certificates: tuple[Any, ...], trust: TrustStore
) -> TimestampResult:
    """Check every timestamp on ``signer_info``; keep the first one that is valid and trusted."""
    result = TimestampResult()
    try:
        signature = bytes(signer_info["signature"].native)
        attrs = signer_info["unsigned_attrs"]
        tokens = attribute_values(attrs, oids.RFC3161_COUNTER_SIGNATURE)
        counters = attribute_values(attrs, oids.COUNTER_SIGNATURE)
    except ASN1_ERRORS as exc:
        result.problems.append((FindingCode.TIMESTAMP_INVALID, f"unsignedAttrs: {_line(exc)}"))
        return result
    candidates = [("rfc3161", t) for t in tokens] + [("pkcs9", c) for c in counters]
    for kind, value in candidates:
        try:
            if kind == "rfc3161":
                moment, tsa, certs, problems = _rfc3161(value, signature)
            else:
                moment, tsa, certs, problems = _pkcs9(value, signature, outer_certificates)
        except ASN1_ERRORS as exc:
            result.problems.append((FindingCode.TIMESTAMP_INVALID, f"{kind}: {_line(exc)}"))
            continue
        if problems or moment is None or tsa is None:
            detail = "; ".join(d for _c, d in problems) or "no time or TSA certificate"
            result.problems.append((FindingCode.TIMESTAMP_INVALID, f"{kind}: {detail}"))
            continue
        chain = validate_chain(tsa, certs, trust, moment, oids.EKU_TIME_STAMPING)
        if not chain.ok:
            result.problems.append((FindingCode.TIMESTAMP_UNTRUSTED, f"{kind}: {chain.detail}"))
            continue
        if result.time is None:
            result.time, result.kind, result.tsa_chain = moment, kind, chain.certs
    return result


def _rfc3161(
    value: Any, signature: bytes
) -> tuple[datetime | None, Any, tuple[Any, ...], list[Problem]]:
    """An RFC 3161 token: a SignedData over TSTInfo whose messageImprint = H'(signature)."""
    from asn1crypto import tsp

    if value["content_type"].dotted != oids.SIGNED_DATA:
        return None, None, (), [(FindingCode.TIMESTAMP_INVALID, "token is not SignedData")]
    token = value["content"]
    check = check_signed_data(token, oids.TST_INFO)
    problems = list(check.problems)
    encap = token["encap_content_info"]
    if encap["content_type"].dotted != oids.TST_INFO:
        return None, check.signer_cert, check.certificates, problems
    tst_info = tsp.TSTInfo.load(bytes(encap["content"].contents))
    imprint = tst_info["message_imprint"]
    hash_name = oids.DIGEST_OIDS.get(imprint["hash_algorithm"]["algorithm"].dotted)
    if hash_name is None:
        problems.append((FindingCode.TIMESTAMP_INVALID, "messageImprint algorithm unsupported"))
    elif hashlib.new(hash_name, signature).digest() != bytes(imprint["hashed_message"].native):
        problems.append((FindingCode.TIMESTAMP_INVALID, "messageImprint does not match"))
    moment = _utc(tst_info["gen_time"].native)
    return moment, check.signer_cert, check.certificates, problems


def _pkcs9(
    counter: Any, signature: bytes, outer_certificates: tuple[Any, ...]
) -> tuple[datetime | None, Any, tuple[Any, ...], list[Problem]]:
    """A PKCS#9 countersignature: a SignerInfo whose messageDigest = H(signature)."""
    cert, problems = check_signer_info(
        counter, outer_certificates, signature, None, allow_bare_digest=True
    )
    times = attribute_values(counter["signed_attrs"], oids.SIGNING_TIME)
    moment = _utc(times[0].native) if len(times) == 1 else None
    if moment is None:
        problems.append((FindingCode.TIMESTAMP_INVALID, f"{len(times)} signingTime values"))
    return moment, cert, outer_certificates, problems


def _utc(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
