"""Write a :class:`Policy` as TOML that :func:`codeintegrity.policy.load.parse_policy` reads back.

tomllib only reads, so this is a small writer for exactly the policy schema: one rule per line
(diffable, greppable), strings escaped per TOML's basic-string rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ..errors import PolicyError
from .model import HashRule, Policy, SignerRule

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and every non-printable character escaped
    (controls, C1, bidi overrides), so the file is also safe to ``cat``; values round-trip."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif 0xD800 <= ord(char) <= 0xDFFF:
            # A lone surrogate (JSON lets "\ud800" through) has no TOML escape: replace it.
            out.append("\\ufffd")
        elif ord(char) > 0xFFFF:
            out.append(f"\\U{ord(char):08x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return '"' + "".join(out) + '"'


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, C1 CSI, bidi overrides) as a
    backslash escape: safe for a terminal and legal in a TOML comment. Imported names and rule
    kinds come from untrusted files; printed raw they could rewrite the user's screen."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def dump_policy(policy: Policy, comments: Iterable[str] = ()) -> str:
    """The policy as TOML text; ``comments`` become ``#`` lines at the top."""
    lines = [
        f"# {printable(line)}".rstrip() for comment in comments for line in comment.splitlines()
    ]
    if lines:
        lines.append("")
    lines += [
        f"name = {toml_string(policy.name)}",
        f"id = {toml_string(policy.id)}",
        *([f"guid = {toml_string(policy.guid)}"] if policy.guid else []),
        *([f"base_guid = {toml_string(policy.base_guid)}"] if policy.base_guid else []),
        f"mode = {toml_string(policy.mode)}",
        f"drivers_must_be_signed = {'true' if policy.drivers_must_be_signed else 'false'}",
        f"require_page_hashes = {toml_string(policy.require_page_hashes)}",
    ]
    if policy.min_digest is not None:
        lines.append(f"min_digest = {toml_string(policy.min_digest)}")
    if policy.allow_signers or policy.allow_hashes:
        lines += ["", "[allow]"]
        lines += _array("signers", (_signer(rule) for rule in policy.allow_signers))
        lines += _array("hashes", (_hash(rule) for rule in policy.allow_hashes))
    deny = (
        policy.deny_hashes,
        policy.deny_page_hashes,
        policy.deny_file_hashes,
        policy.deny_signers,
    )
    if any(deny):
        lines += ["", "[deny]"]
        lines += _array("hashes", (_hash(rule) for rule in policy.deny_hashes))
        lines += _array("page_hashes", (_hash(rule) for rule in policy.deny_page_hashes))
        lines += _array("file_hashes", (_hash(rule) for rule in policy.deny_file_hashes))
        lines += _array("signers", (_signer(rule) for rule in policy.deny_signers))
    if not policy.revocation.empty:
        lines += ["", "[revocation]"]
        lines += _array("crls", (toml_string(str(path)) for path in policy.revocation.crls))
        lines += _array(
            "disallowed", (toml_string(value) for value in sorted(policy.revocation.disallowed))
        )
    return "\n".join(lines) + "\n"


def dump_loadable(policy: Policy, comments: Iterable[str] = ()) -> str:
    """:func:`dump_policy`, proven loadable before anyone writes it: within the loader's size
    bound, accepted by :func:`~codeintegrity.policy.load.parse_policy`, and read back equal to
    ``policy``. An importer that cannot produce such a file fails with the reason instead of
    writing a policy that ``policy check`` and ``verify --policy`` would refuse."""
    from ..limits import MIB
    from .inputs import MAX_POLICY_BYTES
    from .load import parse_policy

    text = dump_policy(policy, comments)
    size = len(text.encode("utf-8"))
    if size > MAX_POLICY_BYTES:
        raise PolicyError(
            f"{policy.source}: the imported policy would be {size / MIB:.1f} MiB of TOML, over "
            f"the {MAX_POLICY_BYTES / MIB:g} MiB a policy may have; nothing written"
        )
    try:
        loaded = parse_policy(text, source="imported policy")
    except PolicyError as exc:
        raise PolicyError(
            f"{policy.source}: the imported policy would not load ({exc.diagnostics()}); "
            "nothing written"
        ) from None
    if replace(loaded, source=policy.source) != policy:
        raise PolicyError(
            f"{policy.source}: the imported policy does not read back as imported; nothing written"
        )
    return text


def _array(key: str, items: Iterable[str]) -> list[str]:
    rendered = [f"  {item}," for item in items]
    if not rendered:
        return []
    return [f"{key} = [", *rendered, "]"]


def _hash(rule: HashRule) -> str:
    if not rule.name and rule.scope == "all":
        return toml_string(rule.value)
    parts = [f"hash = {toml_string(rule.value)}"]
    if rule.name:
        parts.append(f"name = {toml_string(rule.name)}")
    if rule.scope != "all":
        parts.append(f"scope = {toml_string(rule.scope)}")
    return "{ " + ", ".join(parts) + " }"


def _signer(rule: SignerRule) -> str:
    parts = []
    if rule.tbs is not None:
        parts.append(f"tbs = {toml_string(rule.tbs)}")
    if rule.publisher is not None:
        parts.append(f"publisher = {toml_string(rule.publisher)}")
    if rule.eku is not None:
        parts.append(f"eku = {toml_string(rule.eku)}")
    if rule.name:
        parts.append(f"name = {toml_string(rule.name)}")
    if rule.scope != "all":
        parts.append(f"scope = {toml_string(rule.scope)}")
    return "{ " + ", ".join(parts) + " }"
