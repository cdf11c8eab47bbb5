"""Import an App Control for Business (WDAC) SiPolicy XML into our policy model.

Translated: Deny/Allow ``Hash`` file rules (Authenticode hashes; "Hash Page" ones are WDAC
first-page hashes), Signers with ``CertRoot Type="TBS"`` (+ ``CertPublisher``, ``CertEKU``),
allowed and denied signers of signing scenarios 131 (kernel) and 12 (user mode, only when
``Enabled:UMCI`` is set: without it WDAC enforces kernel mode only), ``Allow FileName="*"``
(no allowlist for that scenario), ``Enabled:Audit Mode`` and the PolicyInfo name and id.

Not translated, counted by kind: file name / version / path rules, signers narrowed by
``FileAttribRef`` or ``CertOemID`` (dropping the narrowing would deny a whole CA), well-known
roots, rule options with no offline meaning, rules no scenario references. Skipping a deny rule
can only make the result allow more, never deny a file WDAC would allow.

SECURITY: the XML is untrusted. It is parsed by defusedxml, which refuses a DOCTYPE, entity
declarations and external references inside the parser, as expat meets them, whatever the
encoding (a text check before parsing was bypassed by UTF-16 without a byte-order mark, which
expat detects on its own). SiPolicy files never have a DTD. A compiled (binary) policy, the
``.p7b``/``.cip`` that Windows loads, is recognised and named instead of parsed as text.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PolicyError
from .model import HashRule, ImportResult, Policy, Scope, SignerRule, hex_algorithm, normal_guid

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

_XML_DECLARATION = re.compile(r"<\?xml[^>]*+>")
_ENCODING = re.compile(r"\bencoding\s*+=\s*+(\"[^\"]*+\"|'[^']*+')")
_PAGE_NAME = re.compile(r"\bHash\s+Page\b", re.IGNORECASE)
SCENARIO_SCOPES: dict[str, Scope] = {"131": "kernel", "12": "user"}
# Options that change nothing for an offline verdict; reported once each, as "ignored".
_NO_OFFLINE_MEANING = {
    "Enabled:Unsigned System Integrity Policy",
    "Enabled:Advanced Boot Options Menu",
    "Enabled:Boot Menu Protection",
    "Enabled:Update Policy No Reboot",
    "Disabled:Script Enforcement",
    "Enabled:Inherit Default Policy",
    "Enabled:Boot Audit On Failure",
    "Enabled:Invalidate EAs on Reboot",
    "Disabled:Flight Signing",
    "Allowed:Debug Policy Augmented",
}


@dataclass
class _Scenario:
    scope: Scope
    allowed: list[tuple[str, bool]] = field(default_factory=list)  # (signer id, has exceptions)
    denied: list[str] = field(default_factory=list)
    file_rules: list[str] = field(default_factory=list)


def import_wdac(data: bytes | str, source: str = "<SiPolicy>") -> ImportResult:
    """Translate SiPolicy XML into a :class:`Policy`; raises PolicyError for unusable input."""
    started = time.perf_counter()
    root = parse_sipolicy_xml(data, source)
    if _local(root.tag) != "SiPolicy":
        raise PolicyError(f"{source}: not a SiPolicy (root element <{_local(root.tag)}>)")
    result = _Importer(root, source).run()
    return ImportResult(
        result.policy,
        result.found,
        result.untranslated,
        time.perf_counter() - started,
        result.options,
    )


def parse_sipolicy_xml(data: bytes | str, source: str) -> Element:
    """The root element of untrusted XML, parsed by defusedxml (no DTD, entities or external
    references, whatever the encoding); PolicyError with the line for anything else."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser, ParseError

    if isinstance(data, str):
        raw = _declaration_without_encoding(data.lstrip("\ufeff")).encode("utf-8")
    else:
        kind = compiled_policy_kind(data)
        if kind is not None:
            raise PolicyError(
                f"{source}: {kind}, not XML; give the XML source it was compiled from"
            )
        raw = bytes(data)
        utf16 = _utf16_codec(raw)
        if utf16 is not None:
            # Saved as UTF-16 ("Unicode" in Notepad) with the declaration still saying utf-8,
            # as policies edited by hand often are: the bytes say what they are. Decoded here,
            # the text still goes through the defused parser below.
            try:
                text = raw.decode(utf16).lstrip("\ufeff")
            except UnicodeDecodeError:
                raise PolicyError(f"{source}: not UTF-8/UTF-16 text") from None
            raw = _declaration_without_encoding(text).encode("utf-8")
    parser = DefusedXMLParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(raw)
        root: Element = parser.close()
    except DefusedXmlException:
        line = parser.parser.CurrentLineNumber
        raise PolicyError(
            f"{source}:{line}: DOCTYPE/ENTITY declarations are not allowed in a SiPolicy"
        ) from None
    except ParseError as exc:
        bad = _undecodable_at(raw)
        if bad is not None:
            raise PolicyError(f"{source}: not UTF-8/UTF-16 text (byte {bad})") from None
        line = exc.position[0] if exc.position else None
        where = f"{source}:{line}" if line else source
        raise PolicyError(f"{where}: XML syntax error: {str(exc).split(':')[0]}") from None
    except (ValueError, LookupError) as exc:  # an encoding expat or Python does not know
        raise PolicyError(f"{source}: cannot decode the XML: {exc}") from None
    return root


def _utf16_codec(raw: bytes) -> str | None:
    """The UTF-16 codec of XML that starts with a UTF-16 byte-order mark or, without one, with
    '<' as a UTF-16 code unit (XML's own autodetection); None for anything else."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    if raw[:2] == b"<\x00":
        return "utf-16-le"
    if raw[:2] == b"\x00<":
        return "utf-16-be"
    return None


# A compiled policy: the signed form is CMS SignedData (DER: SEQUENCE, long length, then the
# pkcs7-signedData OID); the unsigned form starts with a little-endian u32 format version
# followed by the PolicyTypeID and PlatformID GUIDs.
_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")
_MAX_BINARY_FORMAT_VERSION = 64


def compiled_policy_kind(data: bytes | bytearray | memoryview) -> str | None:
    """A description of ``data`` when it is a compiled (binary) WDAC policy, else None."""
    head = bytes(data[:64])
    if len(head) >= 2 and head[0] == 0x30 and 0x81 <= head[1] <= 0x84:
        if _SIGNED_DATA_OID in head[: 2 + (head[1] & 0x7F) + 2 + len(_SIGNED_DATA_OID)]:
            return "a signed compiled (binary) WDAC policy (PKCS#7, .p7b/.cip)"
    if len(head) >= 36 and not _looks_like_text(head):
        version = int.from_bytes(head[:4], "little")
        if 1 <= version <= _MAX_BINARY_FORMAT_VERSION:
            return f"a compiled (binary) WDAC policy (.p7b/.cip, format version {version})"
    return None


def _looks_like_text(head: bytes) -> bool:
    """XML starts with '<' (after a BOM and white space) in UTF-8 or either UTF-16."""
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return True
    for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
        text = head[: len(head) - len(head) % 2].decode(encoding, "replace")
        if text.lstrip(" \t\r\n").startswith("<"):
            return True
    return False


def _undecodable_at(raw: bytes) -> int | None:
    """Offset of the first byte that is not text in the encoding the XML spec's detection
    (byte-order mark, or the first bytes of ``<?xml``) gives, for UTF-8 and UTF-16 only."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif raw.startswith(b"<\0"):
        encoding = "utf-16-le"
    elif raw.startswith(b"\0<"):
        encoding = "utf-16-be"
    else:
        declared = _ENCODING.search(raw[:200].decode("latin-1"))
        name = declared.group(1)[1:-1].lower() if declared else "utf-8"
        if name not in {"utf-8", "utf8"}:
            return None
        encoding = "utf-8-sig"
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def _declaration_without_encoding(text: str) -> str:
    """Text given as ``str`` is already decoded: its declaration's encoding no longer applies.
    The declaration is cut out first (possessive, linear) so no pattern backtracks over it."""
    declaration = _XML_DECLARATION.match(text)
    if declaration is None:
        return text
    cleaned = _ENCODING.sub("", declaration.group(), count=1)
    return cleaned + text[declaration.end() :]


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _children(element: Element | None, name: str) -> list[Element]:
    if element is None:
        return []
    return [child for child in element if _local(child.tag) == name]


def _child(element: Element | None, name: str) -> Element | None:
    found = _children(element, name)
    return found[0] if found else None


def decode_eku(value: str) -> str | None:
    """WDAC EKU value (``01`` + length + DER OID content, hex) -> dotted OID, or None."""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    if len(raw) < 3 or raw[1] != len(raw) - 2:
        return None
    body = raw[2:]
    arcs = [min(body[0] // 40, 2), body[0] - 40 * min(body[0] // 40, 2)]
    number = 0
    for byte in body[1:]:
        number = (number << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(number)
            number = 0
    if body[-1] & 0x80:
        return None
    return ".".join(str(arc) for arc in arcs)


class _Importer:
    def __init__(self, root: Element, source: str) -> None:
        self.root = root
        self.source = source
        self.found: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.inert: set[str] = set()  # rule/signer ids of scenarios that are not enforced

    def skip(self, kind: str, count: int = 1) -> None:
        self.skipped[kind] += count

    def run(self) -> ImportResult:
        root = self.root
        options = [
            (opt.text or "").strip()
            for rule in _children(_child(root, "Rules"), "Rule")
            for opt in _children(rule, "Option")
        ]
        audit = "Enabled:Audit Mode" in options
        umci = "Enabled:UMCI" in options
        for option in options:
            if option in {"Enabled:Audit Mode", "Enabled:UMCI"}:
                continue
            note = "no offline meaning" if option in _NO_OFFLINE_MEANING else "not supported"
            self.skip(f"rule option '{option}' ({note})")
        if root.get("PolicyType") == "Supplemental Policy":
            self.skip("supplemental policy: imported on its own, not merged with its base")

        ekus = {
            eku.get("ID", ""): decode_eku(eku.get("Value", ""))
            for eku in _children(_child(root, "EKUs"), "EKU")
        }
        rules_element = _child(root, "FileRules")
        rules_list = list(rules_element) if rules_element is not None else []
        file_rules = {rule.get("ID", ""): rule for rule in rules_list}
        signers = {s.get("ID", ""): s for s in _children(_child(root, "Signers"), "Signer")}
        self._count_inputs(file_rules, signers)

        scenarios = self._scenarios(umci)
        rule_scopes: dict[str, set[Scope]] = {}
        allow_scopes: dict[str, set[Scope]] = {}
        deny_scopes: dict[str, set[Scope]] = {}
        allow_all: set[Scope] = set()
        for scenario in scenarios:
            for rule_id in scenario.file_rules:
                rule = file_rules.get(rule_id)
                if rule is not None and _local(rule.tag) == "Allow" and rule.get("FileName") == "*":
                    allow_all.add(scenario.scope)
                rule_scopes.setdefault(rule_id, set()).add(scenario.scope)
            for signer_id, has_exceptions in scenario.allowed:
                if has_exceptions:
                    self.skip("AllowedSigner exception list (ExceptDenyRule)")
                allow_scopes.setdefault(signer_id, set()).add(scenario.scope)
            for signer_id in scenario.denied:
                deny_scopes.setdefault(signer_id, set()).add(scenario.scope)

        fields: dict[str, Any] = self._file_rules(file_rules, rule_scopes, allow_all)
        fields["deny_signers"] = self._signers(signers, deny_scopes, ekus, "denied")
        allowed = self._signers(signers, allow_scopes, ekus, "allowed")
        kept = tuple(r for r in allowed if r.scope == "all" or r.scope not in allow_all)
        if len(kept) < len(allowed):
            self.skip('allowed signer made moot by an allow-all (FileName="*") rule')
        fields["allow_signers"] = kept
        referenced = allow_scopes.keys() | deny_scopes.keys() | self.inert
        for signer_id in signers:
            if signer_id not in referenced:
                self.skip("signer not referenced by any signing scenario")
        name, policy_id = self._identity()
        guid, base_guid = self._guids()
        policy = Policy(
            name=name,
            id=policy_id,
            guid=guid,
            base_guid=base_guid,
            mode="audit" if audit else "enforce",
            source=self.source,
            **fields,
        )
        return ImportResult(policy, dict(self.found), dict(self.skipped), 0.0, tuple(options))

    def _count_inputs(self, file_rules: dict[str, Element], signers: dict[str, Element]) -> None:
        for rule in file_rules.values():
            kind = _local(rule.tag)
            if kind == "FileAttrib":
                self.found["file attributes (FileAttrib)"] += 1
            elif rule.get("Hash") is not None:
                self.found[f"{kind.lower()} hash rules"] += 1
            else:
                self.found[f"{kind.lower()} rules by file name/path"] += 1
        self.found["signers"] = len(signers)

    def _scenarios(self, umci: bool) -> list[_Scenario]:
        out: list[_Scenario] = []
        for element in _children(_child(self.root, "SigningScenarios"), "SigningScenario"):
            value = element.get("Value", "")
            scope = SCENARIO_SCOPES.get(value)
            if scope is None:
                self.skip(f"signing scenario Value={value!r} (only 131 and 12 are known)")
                continue
            if scope == "user" and not umci:
                self.skip("user-mode scenario 12 without Enabled:UMCI (WDAC does not enforce it)")
                self.inert.update(
                    ref.get("RuleID", "") for ref in element.iter() if ref.get("RuleID")
                )
                self.inert.update(
                    s.get("SignerId", "") for s in element.iter() if s.get("SignerId")
                )
                continue
            scenario = _Scenario(scope)
            for group in ("TestSigners", "TestSigningSigners"):
                test_signers = _child(element, group)
                if test_signers is not None and len(test_signers):
                    self.skip(f"{group} (test-signing mode only)")
            signers = _child(element, "ProductSigners")
            for allowed in _children(_child(signers, "AllowedSigners"), "AllowedSigner"):
                has_exceptions = bool(_children(allowed, "ExceptDenyRule"))
                scenario.allowed.append((allowed.get("SignerId", ""), has_exceptions))
            for denied in _children(_child(signers, "DeniedSigners"), "DeniedSigner"):
                scenario.denied.append(denied.get("SignerId", ""))
            for ref in _children(_child(signers, "FileRulesRef"), "FileRuleRef"):
                scenario.file_rules.append(ref.get("RuleID", ""))
            out.append(scenario)
        return out

    def _file_rules(
        self,
        file_rules: dict[str, Element],
        rule_scopes: dict[str, set[Scope]],
        allow_all: set[Scope],
    ) -> dict[str, Any]:
        lists: dict[str, list[HashRule]] = {
            "deny_hashes": [],
            "deny_page_hashes": [],
            "allow_hashes": [],
        }
        for rule_id, rule in file_rules.items():
            kind = _local(rule.tag)
            scopes = rule_scopes.get(rule_id)
            if kind == "FileAttrib":
                continue  # only meaningful through a signer's FileAttribRef (counted there)
            if not scopes:
                if rule_id not in self.inert:
                    self.skip(f"{kind} file rule not referenced by any signing scenario")
                continue
            if kind == "Allow" and rule.get("FileName") == "*":
                continue  # allow-all: expressed as "no allowlist" for that scope
            value = rule.get("Hash")
            if kind not in {"Allow", "Deny"} or value is None:
                self.skip(f"{kind} rule by file name/version/path (not a hash)")
                continue
            restricted = [a for a in ("AppIDs", "FilePath", "PackageFamilyName") if rule.get(a)]
            if restricted:
                self.skip(f"{kind} hash rule narrowed by {restricted[0]}")
                continue
            lowered = value.strip().lower()
            if hex_algorithm(lowered) is None:
                self.skip(f"{kind} hash rule with an invalid hash value")
                continue
            scope = _scope(scopes)
            page = bool(_PAGE_NAME.search(rule.get("FriendlyName", ""))) or rule_id.endswith(
                "_PAGE"
            )
            if kind == "Allow" and (scope in allow_all or "all" in allow_all):
                continue  # moot next to an allow-all rule in the same scenario
            if kind == "Allow" and page:
                self.skip("Allow first-page hash rule (allowlists match Authenticode hashes)")
                continue
            target = (
                "allow_hashes"
                if kind == "Allow"
                else ("deny_page_hashes" if page else "deny_hashes")
            )
            name = rule.get("FriendlyName") or rule_id
            lists[target].append(HashRule(lowered, name, scope))
        return {key: tuple(value) for key, value in lists.items()}

    def _signers(
        self,
        signers: dict[str, Element],
        scopes_by_id: dict[str, set[Scope]],
        ekus: dict[str, str | None],
        role: str,
    ) -> tuple[SignerRule, ...]:
        out: list[SignerRule] = []
        for signer_id, scopes in scopes_by_id.items():
            signer = signers.get(signer_id)
            if signer is None:
                self.skip(f"{role} signer reference to a missing Signer")
                continue
            rule = self._signer(signer, ekus, role)
            if rule is not None:
                out.append(
                    SignerRule(rule.tbs, rule.publisher, rule.eku, rule.name, _scope(scopes))
                )
        return tuple(out)

    def _signer(self, signer: Element, ekus: dict[str, str | None], role: str) -> SignerRule | None:
        if _children(signer, "FileAttribRef"):
            self.skip(f"{role} signer narrowed to file names/versions (FileAttribRef)")
            return None
        if _children(signer, "CertOemID"):
            self.skip(f"{role} signer narrowed by CertOemID")
            return None
        if _children(signer, "CertIssuer"):
            self.skip(f"{role} signer narrowed by CertIssuer")
            return None
        root = _child(signer, "CertRoot")
        if root is None or root.get("Type", "").upper() != "TBS":
            kind = root.get("Type", "?") if root is not None else "missing"
            self.skip(f"{role} signer with CertRoot Type={kind} (only TBS is supported)")
            return None
        tbs = root.get("Value", "").strip().lower()
        if hex_algorithm(tbs) is None:
            self.skip(f"{role} signer with an invalid CertRoot TBS value")
            return None
        publisher_element = _child(signer, "CertPublisher")
        publisher = publisher_element.get("Value") if publisher_element is not None else None
        if publisher is not None and not publisher.strip():
            # No leaf has a blank CN, so WDAC never matches this signer: leaving it out
            # changes no decision (and our policies refuse a blank publisher).
            self.skip(f"{role} signer with a blank CertPublisher (matches no certificate)")
            return None
        eku_refs = [e.get("ID", "") for e in _children(signer, "CertEKU")]
        eku = None
        if eku_refs:
            if len(eku_refs) > 1:
                self.skip(f"{role} signer with several CertEKU (only the first is used)")
            eku = ekus.get(eku_refs[0])
            if eku is None:
                self.skip(f"{role} signer whose CertEKU cannot be decoded")
                return None
        name = signer.get("Name") or signer.get("ID") or ""
        return SignerRule(tbs=tbs, publisher=publisher or None, eku=eku, name=name)

    def _identity(self) -> tuple[str, str]:
        info: dict[str, str] = {}
        for setting in _children(_child(self.root, "Settings"), "Setting"):
            if setting.get("Provider") == "PolicyInfo":
                string = _child(_child(setting, "Value"), "String")
                if string is not None and string.text:
                    info[setting.get("ValueName", "")] = string.text.strip()
        policy_id = _child(self.root, "PolicyID")
        version = _child(self.root, "VersionEx")
        name = info.get("Name") or "imported WDAC policy"
        ident = info.get("Id") or (policy_id.text if policy_id is not None else None)
        ident = ident or (version.text if version is not None else None) or ""
        return name, ident.strip()

    def _guids(self) -> tuple[str, str]:
        """(the policy's own GUID, its base policy's GUID), normalised; "" where absent.

        Windows names an active multi-format policy ``{PolicyID}.cip`` and writes that GUID as
        PolicyGUID in 3076/3077 (AaronLocker's policy: file and events both carry
        {496a5746-...}). A single-format policy (SiPolicy.p7b) has no PolicyID, only
        PolicyTypeID, which then identifies it. Each is an element in Microsoft's XML; some
        tools write them as attributes of SiPolicy, so those count too.
        """

        def read(name: str) -> str:
            element = _child(self.root, name)
            text = element.text if element is not None and element.text else self.root.get(name)
            if not text:
                return ""
            guid = normal_guid(text)
            if guid is None:
                self.skip(f"{name} that is not a GUID")
                return ""
            return guid

        own = read("PolicyID") or read("PolicyTypeID")
        return own, read("BasePolicyID")


def _scope(scopes: set[Scope]) -> Scope:
    """The one scope a rule referenced by these scenarios gets: both kernel and user is "all"."""
    if "all" in scopes or {"kernel", "user"} <= scopes:
        return "all"
    return "kernel" if "kernel" in scopes else "user"
