"""Compiled (binary) App Control policies: ``SiPolicy.p7b``, ``*.cip``, ``driversipolicy.p7b``.

Windows enforces the binary form that ``ConvertFrom-CIPolicy`` compiles from the XML. This module
reads it, PKCS#7-wrapped (content type 1.3.6.1.4.1.311.79.1) or bare, and translates it to the
XML schema's element tree so that :func:`codeintegrity.policy.wdac.import_wdac` applies exactly
the same translation rules to both forms.

Layout (little-endian; documented by the community parsers CIPolicyParser / WDACTools
``ConvertTo-WDACCodeIntegrityPolicy`` and AppControl Manager's ``BinaryOpsReverse``):

- header: u32 format version (1..8), GUID PolicyTypeID, GUID PlatformID, u32 option flags (high
  bit set, options in the low 30 bits), u32 counts of EKUs, file rules, signers and signing
  scenarios, u64 VersionEx (four u16: revision, build, minor, major), u32 0x40 (header length);
- EKUs (counted byte strings), file rules (type 0 deny / 1 allow / 2 FileAttrib, FileName,
  minimum version, hash), signers (CertRoot TBS bytes or a well-known id, EKU indexes, issuer,
  publisher, OEM id, FileAttribRef indexes), UpdatePolicySigners, CiSigners, scenarios (value,
  inherited scenarios, minimum hash, then product / test / test-signing signer groups of allowed
  and denied signers with exception rules, and file rule references), HVCI options, settings;
- versioned blocks tagged 3..7 (maximum versions and AppIDs, SignTimeAfter, file metadata,
  package names, PolicyID and BasePolicyID, FilePath) and an end tag of version + 1.

Byte strings are a u32 length, the bytes, padding to 4; strings are UTF-16LE the same way,
followed by one more u32. Names, IDs and FriendlyNames are not compiled: a deny hash rule cannot
say whether it was an Authenticode or a first-page ("Hash Page") hash, so it is imported as both
(Windows matches the value against either). Every count is checked against the bytes left
before anything is allocated.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import MalformedError, PolicyError
from ..reader import Reader

if TYPE_CHECKING:
    from .model import ImportResult, Policy

OID_CI_POLICY = "1.3.6.1.4.1.311.79.1"
HEADER_LENGTH = 0x40
MAX_FORMAT_VERSION = 8
_NO_MINIMUM_HASH = 0x800C
_MAX_VERSION = 0xFFFF_FFFF_FFFF_FFFF

# Option bits of the header's flags (the XML <Rule><Option> names).
OPTION_FLAGS: dict[int, str] = {
    0x00000004: "Enabled:UMCI",
    0x00000008: "Enabled:Boot Menu Protection",
    0x00000010: "Enabled:Intelligent Security Graph Authorization",
    0x00000020: "Enabled:Invalidate EAs on Reboot",
    0x00000040: "Enabled:Windows Lockdown Trial Mode",
    0x00000080: "Required:WHQL",
    0x00000100: "Enabled:Developer Mode Dynamic Code Trust",
    0x00000400: "Enabled:Allow Supplemental Policies",
    0x00000800: "Disabled:Runtime FilePath Rule Protection",
    0x00002000: "Enabled:Revoked Expired As Unsigned",
    0x00010000: "Enabled:Audit Mode",
    0x00020000: "Disabled:Flight Signing",
    0x00040000: "Enabled:Inherit Default Policy",
    0x00080000: "Enabled:Unsigned System Integrity Policy",
    0x00100000: "Enabled:Dynamic Code Security",
    0x00200000: "Required:EV Signers",
    0x00400000: "Enabled:Boot Audit On Failure",
    0x00800000: "Enabled:Advanced Boot Options Menu",
    0x01000000: "Disabled:Script Enforcement",
    0x02000000: "Required:Enforce Store Applications",
    0x04000000: "Enabled:Secure Setting Policy",
    0x08000000: "Enabled:Managed Installer",
    0x10000000: "Enabled:Update Policy No Reboot",
    0x20000000: "Enabled:Conditional Windows Lockdown Policy",
}
OPTION_BITS: dict[str, int] = {name.lower(): bit for bit, name in OPTION_FLAGS.items()}
FILE_RULE_KINDS = ("Deny", "Allow", "FileAttrib")


class MalformedBinaryPolicy(MalformedError):
    """A binary SiPolicy whose structure is invalid."""

    reference = "malformed-binary-policy"


@dataclass(frozen=True, slots=True)
class BinaryPolicyLimits:
    """Bounds on a binary policy (Microsoft's full blocklist compiles to about 100 KiB)."""

    max_size: int = 64 * 1024 * 1024
    max_string_bytes: int = 64 * 1024


DEFAULT_POLICY_LIMITS = BinaryPolicyLimits()


@dataclass
class FileRule:
    kind: str  # Deny | Allow | FileAttrib
    file_name: str | None = None
    minimum_version: str | None = None
    maximum_version: str | None = None
    hash: bytes = b""
    app_ids: str | None = None
    internal_name: str | None = None
    file_description: str | None = None
    product_name: str | None = None
    package_family_name: str | None = None
    package_version: str | None = None
    file_path: str | None = None


@dataclass
class Signer:
    root_tbs: bytes | None  # None: a well-known root
    well_known: int | None
    ekus: list[int] = field(default_factory=list)
    issuer: str | None = None
    publisher: str | None = None
    oem_id: str | None = None
    file_attribs: list[int] = field(default_factory=list)
    sign_time_after: int = 0


@dataclass
class SignerGroup:
    allowed: list[tuple[int, list[int]]] = field(default_factory=list)  # signer, except deny
    denied: list[tuple[int, list[int]]] = field(default_factory=list)  # signer, except allow
    file_rules: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.allowed or self.denied or self.file_rules)


@dataclass
class Scenario:
    value: int
    inherited: list[int]
    minimum_hash: int | None
    groups: tuple[SignerGroup, SignerGroup, SignerGroup]  # product, test, test-signing


@dataclass
class BinaryPolicy:
    """Everything a compiled policy holds, by index (the binary form has no IDs)."""

    format_version: int
    policy_type_id: uuid.UUID
    platform_id: uuid.UUID
    options: list[str]
    unknown_option_bits: int
    version: str
    ekus: list[bytes]
    file_rules: list[FileRule]
    signers: list[Signer]
    update_signers: list[int]
    ci_signers: list[int]
    scenarios: list[Scenario]
    hvci_options: int
    settings: list[tuple[str, str, str, object]]
    policy_id: uuid.UUID | None = None
    base_policy_id: uuid.UUID | None = None
    supplemental_signers: list[int] = field(default_factory=list)
    signed: bool = False

    @property
    def supplemental(self) -> bool:
        return self.policy_id is not None and self.policy_id != self.base_policy_id

    def setting(self, provider: str, value_name: str) -> object | None:
        for prov, _key, name, value in self.settings:
            if prov == provider and name == value_name:
                return value
        return None


# -- sniffing and PKCS#7 ---------------------------------------------------------------------


def looks_binary(data: bytes) -> bool:
    """True for a PKCS#7 blob or a bare binary policy (not XML text)."""
    if data[:1] == b"\x30":
        return True
    if len(data) < HEADER_LENGTH + 4:
        return False
    version = int.from_bytes(data[:4], "little")
    return 1 <= version <= MAX_FORMAT_VERSION and int.from_bytes(data[0x40:0x44], "little") == 0x40


def unwrap(data: bytes, limits: BinaryPolicyLimits = DEFAULT_POLICY_LIMITS) -> tuple[bytes, bool]:
    """The bare policy bytes and whether they came PKCS#7-signed."""
    if len(data) > limits.max_size:
        raise MalformedBinaryPolicy(None, "policy", f"{len(data)} bytes exceeds the size limit")
    if data[:1] != b"\x30":
        return data, False
    from asn1crypto import cms

    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "signed_data":
            raise MalformedBinaryPolicy(0, "ContentInfo", "not PKCS#7 SignedData")
        encap = info["content"]["encap_content_info"]
        content_type = encap["content_type"].dotted
        if content_type != OID_CI_POLICY:
            raise MalformedBinaryPolicy(
                0, "eContentType", f"{content_type} is not a CI policy ({OID_CI_POLICY})"
            )
        content = encap["content"]
        payload = bytes(content.contents) if content.contents is not None else b""
    except MalformedBinaryPolicy:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MalformedBinaryPolicy(
            0, "PKCS#7", f"does not parse: {' '.join(str(exc).split())[:160]}"
        ) from None
    if payload[:1] == b"\x04":
        # Some signers wrap the policy in one more OCTET STRING (CIPolicyParser handles it too).
        from asn1crypto.core import OctetString

        try:
            inner = OctetString.load(payload)
            payload = bytes(inner.native)
        except ValueError:
            pass
    if not payload:
        raise MalformedBinaryPolicy(0, "PKCS#7", "no encapsulated policy (detached signature)")
    return payload, True


# -- the parser ------------------------------------------------------------------------------


class _Cursor:
    """Sequential reads through the bounds-checked :class:`Reader`."""

    def __init__(self, data: bytes, limits: BinaryPolicyLimits) -> None:
        self.r = Reader(data, MalformedBinaryPolicy)
        self.pos = 0
        self.limits = limits

    def u16(self, name: str) -> int:
        value = self.r.u16(self.pos, name)
        self.pos += 2
        return value

    def u32(self, name: str) -> int:
        value = self.r.u32(self.pos, name)
        self.pos += 4
        return value

    def u64(self, name: str) -> int:
        value = self.r.u64(self.pos, name)
        self.pos += 8
        return value

    def guid(self, name: str) -> uuid.UUID:
        raw = self.r.bytes(self.pos, 16, name)
        self.pos += 16
        return uuid.UUID(bytes_le=raw)

    def count(self, name: str, each: int = 4) -> int:
        """A u32 count of items at least ``each`` bytes long, checked against what is left."""
        at = self.pos
        value = self.u32(name)
        if value * each > len(self.r) - self.pos:
            raise MalformedBinaryPolicy(at, name, f"count {value} exceeds the data left")
        return value

    def blob(self, name: str) -> bytes:
        at = self.pos
        length = self.u32(name)
        if length > len(self.r) - self.pos:
            raise MalformedBinaryPolicy(at, name, f"length {length} exceeds the data left")
        raw = self.r.bytes(self.pos, length, name)
        self.pos += (length + 3) & ~3
        return raw

    def string(self, name: str) -> str | None:
        at = self.pos
        raw = self.blob(name)
        if len(raw) > self.limits.max_string_bytes:
            raise MalformedBinaryPolicy(at, name, f"{len(raw)}-byte string exceeds the limit")
        self.u32(f"{name} terminator")
        if not raw:
            return None
        try:
            return raw.decode("utf-16-le")
        except UnicodeDecodeError:
            raise MalformedBinaryPolicy(at, name, "not UTF-16LE") from None

    def version(self, name: str) -> int:
        return self.u64(name)

    def index(self, name: str, limit: int) -> int:
        at = self.pos
        value = self.u32(name)
        if value >= limit:
            raise MalformedBinaryPolicy(at, name, f"index {value} out of range (< {limit})")
        return value

    def indexes(self, name: str, limit: int) -> list[int]:
        return [self.index(name, limit) for _ in range(self.count(f"{name} count"))]


def _version_text(number: int) -> str:
    return ".".join(str((number >> shift) & 0xFFFF) for shift in (48, 32, 16, 0))


def parse_binary_policy(
    data: bytes, limits: BinaryPolicyLimits = DEFAULT_POLICY_LIMITS
) -> BinaryPolicy:
    """Parse a binary policy (PKCS#7 or bare). Raises :class:`MalformedBinaryPolicy`."""
    payload, signed = unwrap(data, limits)
    c = _Cursor(payload, limits)
    version = c.u32("format version")
    if not 1 <= version <= MAX_FORMAT_VERSION:
        raise MalformedBinaryPolicy(0, "format version", f"{version} is not 1..8")
    type_id = c.guid("PolicyTypeID")
    platform = c.guid("PlatformID")
    flags = c.u32("option flags")
    if not flags & 0x80000000:
        raise MalformedBinaryPolicy(0x24, "option flags", "high bit not set")
    rules = flags & 0x3FFFFFFF
    options = [name for bit, name in OPTION_FLAGS.items() if rules & bit]
    unknown = rules & ~sum(OPTION_FLAGS)
    n_eku = c.count("EKU count")
    n_rules = c.count("file rule count", 24)
    n_signers = c.count("signer count", 24)
    n_scenarios = c.count("scenario count", 40)
    policy_version = _version_text(c.version("VersionEx"))
    header = c.u32("header length")
    if header != HEADER_LENGTH:
        raise MalformedBinaryPolicy(0x40, "header length", f"{header:#x}, expected 0x40")

    ekus = [c.blob("EKU value") for _ in range(n_eku)]
    rules_list: list[FileRule] = []
    for _ in range(n_rules):
        at = c.pos
        kind = c.u32("file rule type")
        if kind >= len(FILE_RULE_KINDS):
            raise MalformedBinaryPolicy(at, "file rule type", f"{kind} is not 0..2")
        name = c.string("FileName")
        minimum = c.version("MinimumFileVersion")
        digest = c.blob("Hash")
        shown = None if minimum in (0, _MAX_VERSION) else _version_text(minimum)
        rules_list.append(FileRule(FILE_RULE_KINDS[kind], name, shown, hash=digest))
    signers = [_signer(c, n_eku, n_rules) for _ in range(n_signers)]
    update = c.indexes("UpdatePolicySigner", n_signers)
    ci = c.indexes("CiSigner", n_signers)
    scenarios = [_scenario(c, n_scenarios, n_signers, n_rules) for _ in range(n_scenarios)]
    hvci = c.u32("HvciOptions")
    settings = [_setting(c) for _ in range(c.count("setting count", 28))]
    policy = BinaryPolicy(
        version,
        type_id,
        platform,
        options,
        unknown,
        policy_version,
        ekus,
        rules_list,
        signers,
        update,
        ci,
        scenarios,
        hvci,
        settings,
        signed=signed,
    )
    if version >= 3:
        _versioned_blocks(c, policy)
    end = c.u32("end tag")
    if end != version + 1:
        raise MalformedBinaryPolicy(c.pos - 4, "end tag", f"{end}, expected {version + 1}")
    return policy


def _signer(c: _Cursor, n_eku: int, n_rules: int) -> Signer:
    at = c.pos
    kind = c.u32("CertRoot type")
    if kind == 0:
        signer = Signer(root_tbs=c.blob("CertRoot value"), well_known=None)
    elif kind == 1:
        signer = Signer(root_tbs=None, well_known=c.u32("CertRoot well-known") & 0xFF)
    else:
        raise MalformedBinaryPolicy(at, "CertRoot type", f"{kind} is not 0 (TBS) or 1")
    signer.ekus = c.indexes("CertEKU", n_eku)
    signer.issuer = c.string("CertIssuer")
    signer.publisher = c.string("CertPublisher")
    signer.oem_id = c.string("CertOemID")
    signer.file_attribs = c.indexes("FileAttribRef", n_rules)
    return signer


def _scenario(c: _Cursor, n_scenarios: int, n_signers: int, n_rules: int) -> Scenario:
    value = c.u32("SigningScenario value") & 0xFF
    inherited = c.indexes("InheritedScenario", n_scenarios)
    minimum = c.u32("MinimumHashAlgorithm") & 0xFFFF
    groups = tuple(_group(c, n_signers, n_rules) for _ in range(3))
    return Scenario(
        value,
        inherited,
        None if minimum == _NO_MINIMUM_HASH else minimum,
        groups,  # type: ignore[arg-type]
    )


def _group(c: _Cursor, n_signers: int, n_rules: int) -> SignerGroup:
    group = SignerGroup()
    for target, what in ((group.allowed, "AllowedSigner"), (group.denied, "DeniedSigner")):
        for _ in range(c.count(f"{what} count", 8)):
            signer = c.index(what, n_signers)
            target.append((signer, c.indexes(f"{what} exception", n_rules)))
    group.file_rules = c.indexes("FileRuleRef", n_rules)
    return group


def _setting(c: _Cursor) -> tuple[str, str, str, object]:
    provider = c.string("Setting Provider") or ""
    key = c.string("Setting Key") or ""
    name = c.string("Setting ValueName") or ""
    at = c.pos
    kind = c.u32("Setting type")
    value: object
    if kind == 0:
        value = c.u32("Setting boolean") != 0
    elif kind == 1:
        value = c.u32("Setting dword")
    elif kind == 2:
        value = c.blob("Setting binary")
    elif kind == 3:
        value = c.string("Setting string") or ""
    else:
        raise MalformedBinaryPolicy(at, "Setting type", f"{kind} is not 0..3")
    return provider, key, name, value


def _tag(c: _Cursor, expected: int) -> None:
    at = c.pos
    tag = c.u32(f"v{expected} block tag")
    if tag != expected:
        raise MalformedBinaryPolicy(at, f"v{expected} block tag", f"{tag}, expected {expected}")


def _versioned_blocks(c: _Cursor, p: BinaryPolicy) -> None:
    _tag(c, 3)
    for rule in p.file_rules:
        maximum = c.version("MaximumFileVersion")
        rule.maximum_version = _version_text(maximum) if maximum else None
        ids = [c.string("AppIDs") for _ in range(c.count("AppIDs count", 8))]
        rule.app_ids = "".join(i for i in ids if i) or None
    for signer in p.signers:
        signer.sign_time_after = c.u64("SignTimeAfter")
    if p.format_version < 4:
        return
    _tag(c, 4)
    for rule in p.file_rules:
        rule.internal_name = c.string("InternalName")
        rule.file_description = c.string("FileDescription")
        rule.product_name = c.string("ProductName")
    if p.format_version < 5:
        return
    _tag(c, 5)
    for rule in p.file_rules:
        rule.package_family_name = c.string("PackageFamilyName")
        package = c.version("PackageVersion")
        rule.package_version = _version_text(package) if package else None
    if p.format_version < 6:
        return
    _tag(c, 6)
    p.policy_id = c.guid("PolicyID")
    p.base_policy_id = c.guid("BasePolicyID")
    p.supplemental_signers = c.indexes("SupplementalPolicySigner", len(p.signers))
    if p.format_version < 7:
        return
    _tag(c, 7)
    for rule in p.file_rules:
        rule.file_path = c.string("FilePath")
    if p.format_version < 8:
        return
    # Format 8 adds AppSettings (app manifest settings): nothing an offline verdict uses, and
    # the end tag is checked by the caller only when this block could be walked.
    raise MalformedBinaryPolicy(c.pos, "AppSettings", "format 8 is not supported yet")


# -- the import entry point ------------------------------------------------------------------


def import_binary_policy(
    data: bytes, source: str = "<SiPolicy.p7b>", limits: BinaryPolicyLimits = DEFAULT_POLICY_LIMITS
) -> ImportResult:
    """Translate a binary policy into our model, by the same rules as the XML import.

    Raises :class:`PolicyError` (one line naming the offset and field) for unusable input.
    """
    from dataclasses import replace

    from .model import ImportResult
    from .sipolicy_xml import to_xml
    from .wdac import import_wdac

    try:
        parsed = parse_binary_policy(data, limits)
    except MalformedBinaryPolicy as exc:
        raise PolicyError(f"{source}: binary policy: {exc}") from None
    result = import_wdac(to_xml(parsed), source=source)
    found = {"binary format version": parsed.format_version, **result.found}
    twins = sum(1 for r in parsed.file_rules if r.kind == "Deny" and len(r.hash) in (20, 32))
    if twins:
        found["deny hash rules"] = found.get("deny hash rules", 0) - twins
    untranslated = dict(result.untranslated)
    if parsed.unknown_option_bits:
        untranslated[f"unknown option bits {parsed.unknown_option_bits:#x}"] = 1
    policy = replace(result.policy, source=source)
    return ImportResult(policy, found, untranslated, result.seconds, result.options)


def import_wdac_any(data: bytes, source: str = "<SiPolicy>") -> ImportResult:
    """Import a WDAC policy in either form: SiPolicy XML, or compiled (.p7b/.cip, signed or
    bare). Raises :class:`PolicyError`."""
    if looks_binary(data):
        return import_binary_policy(data, source)
    from .wdac import import_wdac

    return import_wdac(data, source)


def load_policy_any(path: str) -> tuple[Policy, str]:
    """A policy file of any kind we read: TOML (our format), WDAC XML, or a binary policy.
    Returns the policy and a name to show. Raises :class:`PolicyError`."""
    from pathlib import Path

    from .load import load_policy

    file = Path(path)
    try:
        with file.open("rb") as handle:
            head = handle.read(HEADER_LENGTH + 4)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    stripped = head.lstrip(b"\xef\xbb\xbf\xff\xfe \t\r\n")
    if looks_binary(head) or stripped.startswith(b"<") or head.startswith(b"\xff\xfe<"):
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from None
        policy = import_wdac_any(data, source=path).policy
    else:
        policy = load_policy(path)
    return policy, f"{policy.name} ({file.name})"
