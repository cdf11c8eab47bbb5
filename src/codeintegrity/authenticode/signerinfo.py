"""Checks of one CMS SignerInfo: signer certificate, signed attributes, cryptographic signature.

Shared by Authenticode signatures, catalogs, PKCS#9 countersignatures and RFC 3161 tokens.
Every check returns problems as ``(FindingCode, detail)`` pairs; nothing here raises on bad
input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..findings import FindingCode
from . import oids
from .certcache import intern, name_key, public_key
from .signeddata import ASN1_ERRORS, econtent_tlv

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.hashes import HashAlgorithm

Problem = tuple[FindingCode, str]
HashFactories = Mapping[str, Callable[[], "HashAlgorithm"]]

_RSA_PSS = "1.2.840.113549.1.1.10"


@dataclass(slots=True)
class SignedDataCheck:
    """Outcome of the signer checks on one SignedData."""

    signer_info: Any = None
    signer_cert: Any = None
    certificates: tuple[Any, ...] = ()
    problems: list[Problem] = field(default_factory=list)


def check_signed_data(signed_data: Any, expected_content_type: str) -> SignedDataCheck:
    """Signer certificate, contentType, messageDigest over the eContent, and the signature."""
    check = SignedDataCheck()
    try:
        check.certificates = tuple(
            intern(c.chosen) for c in signed_data["certificates"] if c.name == "certificate"
        )
        signer_infos = list(signed_data["signer_infos"])
        if len(signer_infos) != 1:
            check.problems.append((FindingCode.SIGNER_COUNT, f"{len(signer_infos)} SignerInfos"))
            if not signer_infos:
                return check
        check.signer_info = signer_info = signer_infos[0]
        encap = signed_data["encap_content_info"]
        content_type = encap["content_type"].dotted
        content = content_octets(encap["content"])
    except ASN1_ERRORS as exc:
        check.problems.append((FindingCode.SIGNATURE_INVALID, f"SignedData: {_line(exc)}"))
        return check
    if content_type != expected_content_type:
        check.problems.append(
            (
                FindingCode.CONTENT_TYPE_ATTRIBUTE,
                f"eContentType {content_type}, expected {expected_content_type}",
            )
        )
    check.signer_cert, problems = check_signer_info(
        signer_info, check.certificates, content, content_type
    )
    check.problems.extend(problems)
    return check


def check_signer_info(
    signer_info: Any,
    certificates: tuple[Any, ...],
    content: bytes,
    content_type: str | None,
    *,
    allow_bare_digest: bool = False,
) -> tuple[Any, list[Problem]]:
    """Find the signer, check the signed attributes over ``content`` and the signature.

    ``content_type`` None skips the contentType attribute (PKCS#9 countersignatures).
    ``allow_bare_digest`` accepts an RSA block holding the digest without DigestInfo, as
    old VeriSign timestamp signers wrote it (signify and Windows accept those).
    """
    problems: list[Problem] = []
    try:
        cert = find_certificate(signer_info["sid"], certificates)
        hash_name = oids.DIGEST_OIDS.get(signer_info["digest_algorithm"]["algorithm"].dotted)
        signed_attrs = signer_info["signed_attrs"]
        has_attrs = len(signed_attrs) > 0
        signature = bytes(signer_info["signature"].native)
    except ASN1_ERRORS as exc:
        return None, [(FindingCode.SIGNATURE_INVALID, f"SignerInfo: {_line(exc)}")]
    if cert is None:
        problems.append((FindingCode.SIGNER_CERT_MISSING, "no certificate matches the SignerInfo"))
    if hash_name is None:
        algorithm = signer_info["digest_algorithm"]["algorithm"].dotted
        problems.append((FindingCode.UNSUPPORTED_ALGORITHM, f"SignerInfo digest {algorithm}"))
        return cert, problems
    if has_attrs:
        problems.extend(_check_attributes(signed_attrs, content, content_type, hash_name))
        try:
            # The signature covers the attributes re-tagged from [0] IMPLICIT to SET (0x31).
            signed_bytes = b"\x31" + signed_attrs.dump()[1:]
        except ASN1_ERRORS as exc:
            problems.append((FindingCode.SIGNATURE_INVALID, f"signedAttrs: {_line(exc)}"))
            return cert, problems
    else:
        problems.append((FindingCode.CONTENT_TYPE_ATTRIBUTE, "SignerInfo has no signed attributes"))
        signed_bytes = content
    if cert is not None:
        problem = verify_signature(cert, signer_info, signature, signed_bytes, hash_name)
        if (
            problem is not None
            and allow_bare_digest
            and _bare_digest_ok(cert, signature, signed_bytes, hash_name)
        ):
            problem = None
        if problem is not None:
            problems.append(problem)
    return cert, problems


def find_certificate(sid: Any, certificates: tuple[Any, ...]) -> Any | None:
    """The certificate a SignerIdentifier names (issuer+serial, or subjectKeyIdentifier)."""
    if sid.name == "issuer_and_serial_number":
        wanted = sid.chosen
        issuer_der = wanted["issuer"].dump()
        issuer = name_key(wanted["issuer"])
        serial = wanted["serial_number"].native
        for cert in certificates:
            if cert.serial_number != serial:
                continue
            # Equal encodings are equal names; otherwise compare as RFC 5280 does (cached).
            if cert.issuer.dump() == issuer_der or name_key(cert.issuer) == issuer:
                return cert
        return None
    key_id = bytes(sid.chosen.native)
    for cert in certificates:
        if cert.key_identifier == key_id:
            return cert
    return None


def attribute_values(attrs: Any, oid: str) -> list[Any]:
    """Values of every attribute of type ``oid`` (normally one attribute, one value)."""
    values: list[Any] = []
    for attr in attrs:
        if attr["type"].dotted == oid:
            values.extend(attr["values"])
    return values


def _check_attributes(
    attrs: Any, content: bytes, content_type: str | None, hash_name: str
) -> list[Problem]:
    problems: list[Problem] = []
    try:
        if content_type is not None:
            types = attribute_values(attrs, oids.CONTENT_TYPE)
            if len(types) != 1:
                problems.append(
                    (FindingCode.CONTENT_TYPE_ATTRIBUTE, f"{len(types)} contentType values")
                )
            elif types[0].dotted != content_type:
                problems.append(
                    (
                        FindingCode.CONTENT_TYPE_ATTRIBUTE,
                        f"contentType {types[0].dotted}, eContentType {content_type}",
                    )
                )
        digests = attribute_values(attrs, oids.MESSAGE_DIGEST)
        if len(digests) != 1:
            problems.append(
                (FindingCode.MESSAGE_DIGEST_MISMATCH, f"{len(digests)} messageDigest values")
            )
            return problems
        expected = bytes(digests[0].native)
    except ASN1_ERRORS as exc:
        problems.append((FindingCode.CONTENT_TYPE_ATTRIBUTE, f"signedAttrs: {_line(exc)}"))
        return problems
    actual = hashlib.new(hash_name, content).digest()
    if actual != expected:
        problems.append(
            (
                FindingCode.MESSAGE_DIGEST_MISMATCH,
                f"messageDigest {expected.hex()[:16]}.., content {hash_name} {actual.hex()[:16]}..",
            )
        )
    return problems


def content_octets(content: Any) -> bytes:
    """The octets the messageDigest covers: the eContent value without its tag and length.

    PKCS#7 (Authenticode, catalogs) carries the content as ``[0] EXPLICIT ANY``: hash the value
    bytes of the inner TLV (RFC 2315 section 9.3). CMS (RFC 3161 tokens) carries an OCTET
    STRING: hash its value.
    """
    from asn1crypto import core, parser

    if isinstance(content, core.Void):
        raise ValueError("eContent is absent")
    if isinstance(content, core.Any):
        _cls, _method, _tag, _header, value, _trailer = parser.parse(econtent_tlv(content))
        return bytes(value)
    if isinstance(content, core.OctetString | core.ParsableOctetString) and content.method == 0:
        return bytes(content.contents)
    raise ValueError(f"eContent of type {type(content).__name__} is not supported")


def verify_signature(
    cert: Any, signer_info: Any, signature: bytes, data: bytes, hash_name: str
) -> Problem | None:
    """RSA (PKCS#1 v1.5 or PSS), ECDSA, DSA or Ed25519 signature of ``data`` by ``cert``."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa

    hash_classes: HashFactories = {
        "md5": hashes.MD5,
        "sha1": hashes.SHA1,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
    }
    try:
        key = public_key(cert)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # e.g. explicit EC curve parameters (the CVE-2020-0601 shape)
        return FindingCode.UNSUPPORTED_ALGORITHM, f"signer public key: {_line(exc)}"
    algorithm = hash_classes[hash_name]()
    try:
        sig_oid = signer_info["signature_algorithm"]["algorithm"].dotted
        if isinstance(key, rsa.RSAPublicKey):
            if sig_oid == _RSA_PSS:
                key.verify(signature, data, _pss_padding(signer_info, hash_classes), algorithm)
            else:
                key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, data, algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            return FindingCode.UNSUPPORTED_ALGORITHM, f"signer key type {type(key).__name__}"
    except InvalidSignature:
        return FindingCode.SIGNATURE_INVALID, f"{hash_name} signature does not verify"
    except UnsupportedAlgorithm as exc:
        return FindingCode.UNSUPPORTED_ALGORITHM, f"signature check: {_line(exc)}"
    except ASN1_ERRORS as exc:  # a lazily parsed parameter (e.g. PSS) failed late
        return FindingCode.UNSUPPORTED_ALGORITHM, f"signature check: {_line(exc)}"
    return None


def _bare_digest_ok(cert: Any, signature: bytes, data: bytes, hash_name: str) -> bool:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = public_key(cert)
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        payload = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return payload == hashlib.new(hash_name, data).digest()


def _pss_padding(signer_info: Any, hash_classes: HashFactories) -> Any:
    from cryptography.hazmat.primitives.asymmetric import padding

    params = signer_info["signature_algorithm"]["parameters"]
    mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
    if mgf_hash not in hash_classes:
        raise ValueError(f"PSS MGF hash {mgf_hash}")
    return padding.PSS(padding.MGF1(hash_classes[mgf_hash]()), params["salt_length"].native)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
