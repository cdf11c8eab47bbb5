"""Parse the PKCS#7 SignedData of one WIN_CERTIFICATE entry into :class:`Signature` values.

Pure: bytes in, values out. asn1crypto parses lazily, so every field used later is touched here
inside a ``try`` and any parser exception becomes a typed :class:`MalformedSignature` (primary)
or a ``NESTED_SIGNATURE_MALFORMED`` finding on the parent (nested), never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedSignature
from ..findings import Finding, FindingCode
from ..limits import DEFAULT_LIMITS, Limits
from . import oids
from .certcache import intern

# What asn1crypto raises on bad input (it has no exception hierarchy of its own).
ASN1_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    UnicodeError,
)


@dataclass(frozen=True, slots=True)
class Signature:
    """One Authenticode signature (the primary one of an entry, or a nested one)."""

    index: int
    parent: int | None
    entry: int
    depth: int
    digest_algorithm: str  # hashlib name of SpcIndirectDataContent.messageDigest
    signed_digest: bytes  # the image digest the signer signed
    indirect_data_type: str  # dotted OID; SPC_PE_IMAGE_DATA for PE files
    page_hash_raw: bytes | None
    page_hash_algorithm: str | None  # "sha1" | "sha256"
    findings: tuple[Finding, ...]
    signed_data: Any = field(repr=False, compare=False)  # asn1crypto cms.SignedData
    certificates: tuple[Any, ...] = field(default=(), repr=False, compare=False)


class _Bad(Exception):
    """Internal: this signature cannot be used at all (field, reason)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def digest_name(algorithm: Any) -> str | None:
    """hashlib name of an asn1crypto DigestAlgorithm, None when unsupported."""
    return oids.DIGEST_OIDS.get(algorithm["algorithm"].dotted)


def econtent_tlv(content: Any) -> bytes:
    """The DER TLV inside a PKCS#7 ``content [0] EXPLICIT ANY``, from the original bytes.

    (``Any.parse`` rewrites ``.contents`` in place, so it is never used on shared objects.)
    """
    from asn1crypto import parser

    direct = _explicit_sequence_tlv(content)
    if direct is not None:
        return direct
    raw = content.dump()
    cls, _method, tag, _header, value, _trailer = parser.parse(raw, strict=True)
    return bytes(value) if (cls, tag) == (2, 0) else raw


def _explicit_sequence_tlv(content: Any) -> bytes | None:
    """The common case of :func:`econtent_tlv` in one copy: an unparsed ``[0] EXPLICIT`` Any
    holding a SEQUENCE is its inner header + contents. (``Any.dump`` would parse the value in
    place, and the signature would then keep two more copies of it for its lifetime.)
    None for anything else: the general path decides."""
    from asn1crypto import core

    if type(content) is not core.Any or content._parsed is not None or content._trailer:
        return None
    header, body = content._header, content.contents
    if content.explicit != ((2, 0),) or not isinstance(header, bytes) or header[:1] != b"\xa0":
        return None
    outer = _definite_length(header, 1)
    inner = _definite_length(header, outer[1] + 1) if outer else None
    if outer is None or inner is None or header[outer[1] : outer[1] + 1] != b"\x30":
        return None
    if (
        inner[1] != len(header)
        or inner[0] != len(body)
        or outer[0] != len(header) - outer[1] + len(body)
    ):
        return None
    return header[outer[1] :] + body


def _definite_length(header: bytes, pos: int) -> tuple[int, int] | None:
    """(length, end of the length octets) of the DER length at ``pos``; None if indefinite."""
    if pos >= len(header):
        return None
    first = header[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or pos + 1 + count > len(header):
        return None
    return int.from_bytes(header[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def load_certificates(signed_data: Any, limits: Limits) -> tuple[Any, ...]:
    """The X.509 certificates of a SignedData (other certificate kinds are skipped)."""
    choices = signed_data["certificates"]  # a Void (len 0) when absent
    if len(choices) > limits.max_certificates_per_signature:
        raise _Bad(
            "SignedData.certificates",
            f"{len(choices)} certificates, limit {limits.max_certificates_per_signature}",
        )
    certs = []
    for choice in choices:
        if choice.name != "certificate":
            continue
        cert = intern(choice.chosen)
        if cert is choice.chosen:
            # Touch what the checks use so a corrupt certificate fails here, typed. (A cached
            # copy of the same bytes already had all of this read without an error.)
            _ = (
                cert.issuer.dump(),
                cert.subject.dump(),
                cert.serial_number,
                cert.public_key.dump(),
            )
        certs.append(cert)
    return tuple(certs)


def parse_signatures(
    der: bytes, entry: int, limits: Limits = DEFAULT_LIMITS, first_index: int = 0
) -> list[Signature]:
    """The primary signature of one WIN_CERTIFICATE entry and all nested ones, depth-first."""
    from asn1crypto import cms

    data = bytes(der)  # no copy when it already is bytes
    try:
        content_info = cms.ContentInfo.load(data)
        _ = content_info["content_type"].dotted
    except ASN1_ERRORS as exc:
        raise MalformedSignature(0, "ContentInfo", _one_line(exc)) from None
    out: list[Signature | None] = []
    try:
        _visit(content_info, data, None, 0, entry, limits, first_index, out)
    except _Bad as bad:
        raise MalformedSignature(0, bad.field, bad.reason) from None
    return [s for s in out if s is not None]


def _visit(
    content_info: Any,
    der: bytes,
    parent: int | None,
    depth: int,
    entry: int,
    limits: Limits,
    first_index: int,
    out: list[Signature | None],
) -> None:
    """Parse one signature, reserve its index, then recurse into its nested signatures."""
    try:
        parsed = _parse_one(content_info, der, limits)
    except ASN1_ERRORS as exc:
        raise _Bad("SignedData", _one_line(exc)) from None
    position = len(out)
    index = first_index + position
    out.append(None)  # reserve the index: children follow their parent
    findings = [Finding(code, detail, signature=index) for code, detail in parsed.problems]
    for nested in parsed.nested:
        if depth + 1 > limits.max_nesting_depth:
            findings.append(_nested_bad(index, f"nesting deeper than {limits.max_nesting_depth}"))
            break
        if len(out) >= limits.max_signatures:
            findings.append(_nested_bad(index, f"more than {limits.max_signatures} signatures"))
            break
        try:
            _visit(nested, nested.der, index, depth + 1, entry, limits, first_index, out)
        except _Bad as bad:
            findings.append(_nested_bad(index, f"{bad.field}: {bad.reason}"))
    out[position] = Signature(
        index=index,
        parent=parent,
        entry=entry,
        depth=depth,
        digest_algorithm=parsed.digest_algorithm,
        signed_digest=parsed.signed_digest,
        indirect_data_type=parsed.indirect_data_type,
        page_hash_raw=parsed.page_hash_raw,
        page_hash_algorithm=parsed.page_hash_algorithm,
        findings=tuple(findings),
        signed_data=parsed.signed_data,
        certificates=parsed.certificates,
    )


def _nested_bad(index: int, reason: str) -> Finding:
    return Finding(FindingCode.NESTED_SIGNATURE_MALFORMED, reason, signature=index)


@dataclass(slots=True)
class _Parsed:
    signed_data: Any
    certificates: tuple[Any, ...]
    digest_algorithm: str
    signed_digest: bytes
    indirect_data_type: str
    page_hash_raw: bytes | None = None
    page_hash_algorithm: str | None = None
    problems: list[tuple[FindingCode, str]] = field(default_factory=list)
    nested: list[Any] = field(default_factory=list)


def _parse_one(content_info: Any, der: bytes, limits: Limits) -> _Parsed:
    from asn1crypto import core

    from .asn1 import SpcIndirectDataContent

    if content_info["content_type"].dotted != oids.SIGNED_DATA:
        raise _Bad(
            "ContentInfo.contentType", f"{content_info['content_type'].dotted} is not signedData"
        )
    signed_data = content_info["content"]
    encap = signed_data["encap_content_info"]
    content_type = encap["content_type"].dotted
    if content_type != oids.SPC_INDIRECT_DATA:
        raise _Bad("SignedData.contentInfo", f"content type {content_type} is not SpcIndirectData")
    content = encap["content"]
    if isinstance(content, core.Void):
        raise _Bad("SignedData.contentInfo", "SpcIndirectDataContent is missing")
    # The page-hash tables are cut out first (no copies), asn1crypto then checks the rest as
    # strictly as before; a shape the cut does not expect takes the plain (copying) path.
    located = _indirect_tlv(der, content)
    shrunk = _without_page_hashes(located) if located is not None else None
    if shrunk is not None:
        indirect = SpcIndirectDataContent.load(shrunk.der, strict=True)
    else:
        indirect = SpcIndirectDataContent.load(econtent_tlv(content), strict=True)
    data_type = indirect["data"]["type"].dotted
    digest_info = indirect["message_digest"]
    indirect_algorithm = digest_info["digest_algorithm"]["algorithm"].dotted
    signed_digest = bytes(digest_info["digest"].native)
    certificates = load_certificates(signed_data, limits)
    problems: list[tuple[FindingCode, str]] = []

    name = oids.DIGEST_OIDS.get(indirect_algorithm)
    if name is None:
        problems.append((FindingCode.UNSUPPORTED_ALGORITHM, f"image digest {indirect_algorithm}"))
    elif len(signed_digest) != oids.DIGEST_SIZES[name]:
        problems.append(
            (
                FindingCode.DIGEST_ALGORITHM_MISMATCH,
                f"{name} digest is {len(signed_digest)} bytes, not {oids.DIGEST_SIZES[name]}",
            )
        )
    outer = [a["algorithm"].dotted for a in signed_data["digest_algorithms"]]
    if len(outer) != 1:
        problems.append(
            (FindingCode.DIGEST_ALGORITHM_MISMATCH, f"{len(outer)} SignedData.digestAlgorithms")
        )
    signer_infos = list(signed_data["signer_infos"])
    if len(signer_infos) != 1:
        problems.append((FindingCode.SIGNER_COUNT, f"{len(signer_infos)} SignerInfos"))
    nested: list[Any] = []
    if signer_infos:
        signer_info = signer_infos[0]
        signer_algorithm = signer_info["digest_algorithm"]["algorithm"].dotted
        if signer_algorithm != indirect_algorithm or any(a != indirect_algorithm for a in outer):
            problems.append(
                (
                    FindingCode.DIGEST_ALGORITHM_MISMATCH,
                    f"SignedData {','.join(_n(a) for a in outer)}, SignerInfo "
                    f"{_n(signer_algorithm)}, indirect data {_n(indirect_algorithm)}",
                )
            )
        nested = _nested_content_infos(signer_info)
    if data_type != oids.SPC_PE_IMAGE_DATA:
        problems.append((FindingCode.INDIRECT_DATA_TYPE, f"indirect data type {data_type}"))
    parsed = _Parsed(
        signed_data=signed_data,
        certificates=certificates,
        digest_algorithm=name or indirect_algorithm,
        signed_digest=signed_digest,
        indirect_data_type=data_type,
        problems=problems,
        nested=nested,
    )
    _read_page_hashes(indirect["data"]["value"], parsed, shrunk)
    return parsed


def _n(dotted: str) -> str:
    return oids.DIGEST_OIDS.get(dotted, dotted)


def _nested_content_infos(signer_info: Any) -> list[Any]:
    """ContentInfo values of the nested-signature attribute(s), unparsed beyond the OID."""
    from asn1crypto import cms

    attrs = signer_info["unsigned_attrs"]  # a Void (len 0) when absent
    found: list[Any] = []
    for attr in attrs:
        if attr["type"].dotted != oids.NESTED_SIGNATURE:
            continue
        # Re-load each value on its own so one bad value does not hide its siblings.
        found.extend(_LazyContentInfo(value.dump(), cms) for value in attr["values"])
    return found


class _LazyContentInfo:
    """A nested ContentInfo loaded when visited, so its errors land on the parent."""

    def __init__(self, der: bytes, cms_module: Any) -> None:
        self.der = der
        self._cms = cms_module
        self._loaded: Any = None

    def __getitem__(self, key: str) -> Any:
        if self._loaded is None:
            self._loaded = self._cms.ContentInfo.load(self.der)
        return self._loaded[key]


class _Shrunk:
    """SpcIndirectDataContent with every page-hash OCTET STRING emptied, and their contents
    (``tables[attribute][value]``, views into the signature's bytes)."""

    __slots__ = ("der", "tables")

    def __init__(self, der: bytes, tables: list[list[memoryview]]) -> None:
        self.der, self.tables = der, tables


def _indirect_tlv(der: bytes, content: Any) -> memoryview | None:
    """The SpcIndirectDataContent TLV where it lies in ``der`` (a view, no copy), or None when
    the walk does not land exactly on the value asn1crypto parsed."""
    from ..errors import MalformedError
    from ..reader import Reader
    from .asn1 import children, read_tlv

    view = memoryview(der)
    reader = Reader(view, MalformedSignature)
    try:
        # ContentInfo { contentType, [0] { SignedData { version, digestAlgorithms,
        #   contentInfo { contentType, [0] { SpcIndirectDataContent } }, ... } } }
        root = children(reader, read_tlv(reader, 0, len(view)))
        explicit = children(reader, root[1]) if len(root) == 2 and root[1].tag == 0xA0 else []
        signed = children(reader, explicit[0]) if len(explicit) == 1 else []
        encap = children(reader, signed[2]) if len(signed) > 3 and signed[2].tag == 0x30 else []
        inner = children(reader, encap[1]) if len(encap) == 2 and encap[1].tag == 0xA0 else []
    except MalformedError:
        return None
    if len(inner) != 1 or inner[0].tag != 0x30:
        return None  # econtent_tlv reports other shapes with asn1crypto's own words
    value = inner[0]
    # asn1crypto keeps the inner value's contents: equal bytes means the walk found the same
    # value (startswith is a memcmp; comparing with a memoryview would go byte by byte).
    contents = content.contents
    if len(contents) != value.end - value.body or not der.startswith(contents, value.body):
        return None
    return view[value.start : value.end]


def _without_page_hashes(tlv: memoryview) -> _Shrunk | None:
    """``tlv`` re-encoded with the page-hash tables emptied; None when there is nothing to cut
    or the shape is not SpcIndirectDataContent { {type, SpcPeImageData {.., [0] { [1] {
    classId, serializedData { SET OF { type, SET OF OCTET STRING } } } } } }, .. }."""
    from ..errors import MalformedError
    from ..reader import Reader
    from .asn1 import Tlv, children, encode_tlv, read_tlv

    reader = Reader(tlv, MalformedSignature)

    def kids(node: Tlv, tags: tuple[int, ...] | None = None) -> list[Tlv]:
        found = children(reader, node)
        if tags is not None and tuple(k.tag for k in found) != tags:
            raise reader.fail(node.start, "SpcIndirectDataContent", "not the page-hash shape")
        return found

    def replaced(parent: Tlv, child: Tlv, new: bytes) -> bytes:
        before, after = tlv[parent.body : child.start], tlv[child.end : parent.end]
        return encode_tlv(parent.tag, b"".join((before, new, after)))

    try:
        root = read_tlv(reader, 0, len(tlv))
        top = kids(root)
        data = top[0] if root.end == len(tlv) and top and top[0].tag == 0x30 else None
        value = kids(data)[1] if data is not None and len(kids(data)) == 2 else None
        if value is None or value.tag != 0x30:
            return None
        link = next((k for k in kids(value) if k.tag == 0xA0), None)
        if link is None:
            return None
        (moniker,) = kids(link, (0xA1,))
        _class_id, serialized = kids(moniker, (0x04, 0x04))
        attributes = read_tlv(reader, serialized.body, serialized.end)
        if attributes.tag != 0x31:
            return None
        tables: list[list[memoryview]] = []
        cut: list[bytes] = []
        for attribute in kids(attributes):
            kind, values = kids(attribute, (0x06, 0x31))
            octets = kids(values)
            if any(o.tag != 0x04 for o in octets):
                return None
            tables.append([tlv[o.body : o.end] for o in octets])
            emptied = encode_tlv(0x31, b"\x04\x00" * len(octets))
            cut.append(encode_tlv(attribute.tag, bytes(tlv[kind.start : kind.end]) + emptied))
    except (MalformedError, ValueError):
        return None  # ValueError: a shape unpacked into the wrong number of parts
    # Returned above when absent; mypy loses that narrowing across the try.
    assert data is not None and value is not None and link is not None
    new = encode_tlv(0x31, b"".join(cut)) + bytes(tlv[attributes.end : serialized.end])
    new = replaced(moniker, serialized, encode_tlv(0x04, new))
    new = replaced(link, moniker, new)
    new = replaced(value, link, new)
    new = replaced(data, value, new)
    return _Shrunk(replaced(root, data, new), tables)


def _read_page_hashes(value: Any, parsed: _Parsed, shrunk: _Shrunk | None) -> None:
    """Find the page-hash table in SpcPeImageData.file (a moniker with the page-hash class)."""
    from asn1crypto import core

    from .asn1 import PageHashAttributes, SpcPeImageData

    if parsed.indirect_data_type != oids.SPC_PE_IMAGE_DATA or isinstance(value, core.Void):
        return
    image_data = value.parse(SpcPeImageData)
    link = image_data["file"]
    if isinstance(link, core.Void) or link.name != "moniker":
        return
    moniker = link.chosen
    if bytes(moniker["class_id"].native) != oids.PAGE_HASH_CLASS_ID:
        return
    serialized = bytes(moniker["serialized_data"].native)
    try:
        attributes = PageHashAttributes.load(serialized)
        tables: dict[str, bytes] = {}
        for a, attribute in enumerate(attributes):
            kind = attribute["type"].dotted
            if kind in oids.PAGE_HASH_ALGORITHMS:
                for v, octets in enumerate(attribute["values"]):
                    raw = octets.native  # empty when cut out: the table is in ``shrunk``
                    if kind not in tables:
                        tables[kind] = bytes(shrunk.tables[a][v] if shrunk else raw)
    except ASN1_ERRORS as exc:
        parsed.problems.append(
            (FindingCode.PAGE_HASH_TABLE_MALFORMED, f"serializedData: {_one_line(exc)}")
        )
        return
    for kind in (oids.PAGE_HASHES_V2, oids.PAGE_HASHES_V1):  # V2 (SHA-256) preferred
        if kind in tables:
            parsed.page_hash_raw = tables[kind]
            parsed.page_hash_algorithm = oids.PAGE_HASH_ALGORITHMS[kind]
            return
    parsed.problems.append(
        (FindingCode.PAGE_HASH_TABLE_MALFORMED, "page-hash moniker holds no V1/V2 table")
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
