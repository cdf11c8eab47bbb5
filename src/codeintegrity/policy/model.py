"""The policy model: what a policy file says, as frozen values with lookup indexes.

A policy is a blocklist unless it has allow rules: with no allow rule for a file's scope, every
file not denied is allowed (like Microsoft's driver blocklist, which allows ``FileName="*"``);
with allow rules, a file must match one of them.

Scopes follow WDAC signing scenarios: ``kernel`` (131, drivers), ``user`` (12) or ``all``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["audit", "enforce"]
Scope = Literal["all", "kernel", "user"]
PageHashRequirement = Literal["off", "drivers", "all"]
HashKind = Literal["image", "page", "file"]

MODES: tuple[str, ...] = ("audit", "enforce")
SCOPES: tuple[str, ...] = ("all", "kernel", "user")
PAGE_HASH_REQUIREMENTS: tuple[str, ...] = ("off", "drivers", "all")
# Weakest first: a policy minimum rejects everything left of it.
DIGEST_ORDER: tuple[str, ...] = ("md5", "sha1", "sha256", "sha384", "sha512")
HEX_LENGTHS: dict[int, str] = {32: "md5", 40: "sha1", 64: "sha256", 96: "sha384", 128: "sha512"}
# WDAC "Hash Page" values exist only as SHA-1 and SHA-256 of the header page.
PAGE_HASH_ALGORITHMS: frozenset[str] = frozenset({"sha1", "sha256"})
_HEX = re.compile(r"[0-9a-f]+")
_DOTTED_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_GUID = re.compile(r"\{?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\}?", re.I)


def hex_algorithm(value: str) -> str | None:
    """The digest algorithm a lower-case hex string's length implies, or None if not hex."""
    if not _HEX.fullmatch(value):
        return None
    return HEX_LENGTHS.get(len(value))


def is_dotted_oid(value: str) -> bool:
    return bool(_DOTTED_OID.fullmatch(value))


def normal_guid(value: str) -> str | None:
    """A GUID as Windows writes it in CodeIntegrity events (lower case, in braces:
    ``{496a5746-5600-4cdd-b22e-333fd5614d00}``), or None if ``value`` is not a GUID.
    Braces are optional on input (SiPolicy XML writes them, binary policies hold raw GUIDs)."""
    match = _GUID.fullmatch(value.strip())
    if match is None or value.strip().startswith("{") != value.strip().endswith("}"):
        return None
    return "{" + match.group(1).lower() + "}"


@dataclass(frozen=True, slots=True)
class HashRule:
    """One hash (lower-case hex); the algorithm follows from its length."""

    value: str
    name: str = ""
    scope: Scope = "all"

    @property
    def algorithm(self) -> str:
        return HEX_LENGTHS[len(self.value)]


@dataclass(frozen=True, slots=True)
class SignerRule:
    """A signer: a chain certificate's TBS hash (root or issuing CA; any chain certificate
    matches), optionally narrowed by the leaf's subject CN (WDAC CertPublisher) and an EKU."""

    tbs: str | None = None  # lower-case hex
    publisher: str | None = None
    eku: str | None = None  # dotted OID
    name: str = ""
    scope: Scope = "all"


@dataclass(frozen=True, slots=True)
class RevocationConfig:
    """Revocation sources named by the policy; CRL paths are resolved against its folder."""

    crls: tuple[Path, ...] = ()
    disallowed: frozenset[str] = frozenset()  # thumbprints / TBS hashes, lower-case hex

    @property
    def empty(self) -> bool:
        return not self.crls and not self.disallowed


@dataclass(frozen=True, slots=True)
class HashIndex:
    """Hash value -> first rule with that value, per kind (dict lookups, no scans)."""

    image: dict[str, HashRule]
    page: dict[str, HashRule]
    file: dict[str, HashRule]

    @classmethod
    def build(
        cls, image: Iterable[HashRule], page: Iterable[HashRule], file: Iterable[HashRule]
    ) -> HashIndex:
        def index(rules: Iterable[HashRule]) -> dict[str, HashRule]:
            out: dict[str, HashRule] = {}
            for rule in rules:
                out.setdefault(rule.value, rule)
            return out

        return cls(index(image), index(page), index(file))


@dataclass(frozen=True)
class Policy:
    """A loaded policy. Build it with :func:`codeintegrity.policy.load.parse_policy`."""

    name: str = "unnamed policy"
    id: str = ""
    # The SiPolicy's own GUID (PolicyID, or PolicyTypeID in the single-policy format): what
    # Windows writes as PolicyGUID in 3076/3077. base_guid is its BasePolicyID. Both are
    # normalised by normal_guid; "" when the policy has none.
    guid: str = ""
    base_guid: str = ""
    mode: Mode = "enforce"
    drivers_must_be_signed: bool = True
    require_page_hashes: PageHashRequirement = "off"
    min_digest: str | None = None
    allow_signers: tuple[SignerRule, ...] = ()
    allow_hashes: tuple[HashRule, ...] = ()  # Authenticode hashes allowed outright
    deny_hashes: tuple[HashRule, ...] = ()  # Authenticode (image) hashes
    deny_page_hashes: tuple[HashRule, ...] = ()  # WDAC first-page hashes
    deny_file_hashes: tuple[HashRule, ...] = ()  # flat whole-file hashes
    deny_signers: tuple[SignerRule, ...] = ()
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    source: str = "<policy>"
    # SHA-256 (lower-case hex) of the policy file's bytes as loaded: PolicyHash in 3076/3077.
    # A property of the file, not of the rules, so equality ignores it.
    file_sha256: str = field(default="", compare=False)
    _deny_index: HashIndex = field(init=False, repr=False, compare=False)
    _allow_index: dict[str, HashRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        deny = HashIndex.build(self.deny_hashes, self.deny_page_hashes, self.deny_file_hashes)
        object.__setattr__(self, "_deny_index", deny)
        allow: dict[str, HashRule] = {}
        for rule in self.allow_hashes:
            allow.setdefault(rule.value, rule)
        object.__setattr__(self, "_allow_index", allow)

    @property
    def deny_index(self) -> HashIndex:
        return self._deny_index

    @property
    def allow_index(self) -> dict[str, HashRule]:
        return self._allow_index

    def has_allow_rules(self, kernel: bool | None) -> bool:
        """Whether an allowlist applies to a file of this kind (None: unknown, any scope)."""
        rules: tuple[SignerRule | HashRule, ...] = (*self.allow_signers, *self.allow_hashes)
        return any(scope_applies(rule.scope, kernel) for rule in rules)

    def hash_needs(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """(image, first-page, flat) digest algorithms the rules need the engine to compute.

        Image and file rules are matched against both the Authenticode and the flat digests
        (published lists mix them up), so their algorithms are needed in both forms.
        """
        image_or_file = {rule.algorithm for rule in (*self.deny_hashes, *self.deny_file_hashes)} | {
            rule.algorithm for rule in self.allow_hashes
        }
        page = {rule.algorithm for rule in self.deny_page_hashes} & PAGE_HASH_ALGORITHMS
        return frozenset(image_or_file), frozenset(page), frozenset(image_or_file)

    def summary(self) -> list[str]:
        """Human-readable lines for `codeintegrity policy check`."""
        scopes = _scope_counts
        return [
            f"name: {self.name}",
            f"id: {self.id or '-'}",
            *([f"guid: {self.guid}"] if self.guid else []),
            *([f"base guid: {self.base_guid}"] if self.base_guid else []),
            *([f"sha256: {self.file_sha256}"] if self.file_sha256 else []),
            f"mode: {self.mode}",
            f"kernel drivers must be signed: {'yes' if self.drivers_must_be_signed else 'no'}",
            f"page hashes required: {self.require_page_hashes}",
            f"minimum digest: {self.min_digest or '-'}",
            f"allowed signers: {len(self.allow_signers)}{scopes(self.allow_signers)}",
            f"allowed hashes: {len(self.allow_hashes)}{scopes(self.allow_hashes)}",
            f"denied Authenticode hashes: {len(self.deny_hashes)}"
            f"{_alg_counts(self.deny_hashes)}{scopes(self.deny_hashes)}",
            f"denied first-page hashes: {len(self.deny_page_hashes)}"
            f"{_alg_counts(self.deny_page_hashes)}{scopes(self.deny_page_hashes)}",
            f"denied file hashes: {len(self.deny_file_hashes)}"
            f"{_alg_counts(self.deny_file_hashes)}{scopes(self.deny_file_hashes)}",
            f"denied signers: {len(self.deny_signers)}{scopes(self.deny_signers)}",
            f"CRLs: {len(self.revocation.crls)}",
            f"disallowed certificates: {len(self.revocation.disallowed)}",
        ]


def scope_applies(scope: str, kernel: bool | None) -> bool:
    """Does a rule of ``scope`` apply to a file (kernel: True/False, None when unknown)?"""
    if scope == "all" or kernel is None:
        return True
    return (scope == "kernel") == kernel


def _scope_counts(rules: Iterable[HashRule | SignerRule]) -> str:
    counts: dict[str, int] = {}
    for rule in rules:
        counts[rule.scope] = counts.get(rule.scope, 0) + 1
    if not counts or set(counts) == {"all"}:
        return ""
    return " (" + ", ".join(f"{scope} {n}" for scope, n in sorted(counts.items())) + ")"


def _alg_counts(rules: Iterable[HashRule]) -> str:
    counts: dict[str, int] = {}
    for rule in rules:
        counts[rule.algorithm] = counts.get(rule.algorithm, 0) + 1
    if not counts:
        return ""
    ordered = sorted(counts.items(), key=lambda item: DIGEST_ORDER.index(item[0]))
    return " [" + ", ".join(f"{alg} {n}" for alg, n in ordered) + "]"


@dataclass(frozen=True)
class ImportResult:
    """An imported policy plus what was found and what could not be translated."""

    policy: Policy
    found: dict[str, int]  # what the input held, e.g. "deny hash rules": 1704
    untranslated: dict[str, int]  # kind of rule or option -> how many were skipped
    seconds: float = 0.0
    # The WDAC rule options as written (<Rule><Option>, or the binary header's flags), so that
    # callers can see e.g. "Enabled:Allow Supplemental Policies" whether or not it translates.
    options: tuple[str, ...] = ()

    def untranslated_lines(self) -> list[str]:
        return [f"not translated: {count} x {kind}" for kind, count in self.untranslated.items()]

    def found_lines(self) -> list[str]:
        return [f"{kind}: {count}" for kind, count in self.found.items()]
