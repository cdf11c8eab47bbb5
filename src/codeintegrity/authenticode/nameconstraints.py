"""otherName (UPN) name constraints for pyhanko-certvalidator.

pyhanko-certvalidator 0.33 turns every GeneralName of a nameConstraints subtree into its
``.native`` value and hashes it; an otherName's native value is an OrderedDict, so a CA that
constrains UPNs (Microsoft's user principal name, 1.3.6.1.4.1.311.20.2.3) makes path validation
raise ``TypeError: unhashable type``. Real code-signing CAs do this (Intel External Issuing CA 7B:
permitted email:intel.com + UPN:intel.com).

:func:`install` teaches pyhanko's name-tree module a hashable otherName value and a containment
check, so the constraints keep being enforced for every name type: UPNs are matched like
rfc822 names (RFC 5280 4.2.1.10: ``user@host`` exact, ``host`` any mailbox at that host,
``.domain`` any host under it); any other otherName type only by identical type and value.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

UPN = "1.3.6.1.4.1.311.20.2.3"

_lock = threading.Lock()
_installed = False


@dataclass(frozen=True, slots=True)
class OtherNameValue:
    """A hashable otherName: the type OID and its value (text for a UPN, DER otherwise)."""

    type_id: str
    value: str | bytes

    def __str__(self) -> str:
        shown = self.value if isinstance(self.value, str) else self.value.hex()
        return f"{'UPN' if self.type_id == UPN else self.type_id}:{shown}"


def other_name_value(other_name: Any) -> OtherNameValue:
    """The hashable form of an asn1crypto AnotherName."""
    type_id = other_name["type_id"].dotted
    value = other_name["value"]
    if type_id == UPN:
        # value is [0] EXPLICIT UTF8String; asn1crypto leaves it as Any.
        from asn1crypto.core import UTF8String

        parsed = value.parsed if hasattr(value, "parsed") and value.parsed is not None else None
        if isinstance(parsed, UTF8String):
            return OtherNameValue(type_id, parsed.native)
        try:
            return OtherNameValue(type_id, UTF8String.load(value.contents).native)
        except (ValueError, TypeError):
            pass
    return OtherNameValue(type_id, value.dump())


def other_name_contains(base: object, other: object) -> bool:
    """Whether ``other`` lies in the subtree ``base`` (both OtherNameValue)."""
    if not isinstance(base, OtherNameValue) or not isinstance(other, OtherNameValue):
        return False
    if base.type_id != other.type_id:
        return False
    if base.type_id != UPN or not isinstance(base.value, str) or not isinstance(other.value, str):
        return base.value == other.value
    from pyhanko_certvalidator.name_trees import email_tree_contains

    return bool(email_tree_contains(base.value, other.value))


def install() -> None:
    """Patch pyhanko-certvalidator's name trees once per process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from pyhanko_certvalidator import name_trees

        original = name_trees._interpret_general_name

        def interpret(gname: Any) -> Any:
            if gname.name == "other_name":
                return name_trees.GeneralNameType.OTHER_NAME, other_name_value(gname.chosen)
            return original(gname)

        name_trees._interpret_general_name = interpret
        name_trees._name_type_checkers[name_trees.GeneralNameType.OTHER_NAME] = other_name_contains
        _installed = True
