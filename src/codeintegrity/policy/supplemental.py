"""A base App Control policy together with its supplemental policies, as Windows enforces them.

Microsoft's rules ("Use multiple App Control for Business policies"; the WDAC Wizard's
maintainers in MicrosoftDocs/WDAC-Toolkit #138/#139):

- a supplemental policy names its base by ``BasePolicyID`` (its own ``PolicyID`` differs) and
  only *expands* it: a file allowed by the base or by any of its supplementals is allowed;
- supplemental policies cannot deny code: their deny rules (hashes, signers) are not applied;
- the base's options rule (audit or enforce, page hashes...); a base without
  ``Enabled:Allow Supplemental Policies`` takes no supplementals at all;
- several base policies intersect: a file must pass each of them (each with its own
  supplementals), which callers get by evaluating each merged base on its own.

Merging adds the supplementals' allow rules to the base's allowlist, only for the scopes
(kernel, user) where the base has one: where the base allows everything (``FileName="*"``), an
added allow rule would turn "everything" into "only these" instead of expanding it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .model import HashRule, Policy, Scope, SignerRule

ALLOW_SUPPLEMENTALS = "Enabled:Allow Supplemental Policies"
_Rule = TypeVar("_Rule", "HashRule", "SignerRule")


@dataclass(frozen=True)
class Merged:
    """The effective policy of a base and its supplementals, and what was left out."""

    policy: Policy
    ignored: dict[str, int]  # kind of supplemental rule -> how many were not applied


def is_supplemental(policy: Policy) -> bool:
    """A policy naming another policy as its base (PolicyID != BasePolicyID)."""
    return bool(policy.base_guid) and bool(policy.guid) and policy.base_guid != policy.guid


def merge_supplementals(base: Policy, supplementals: Sequence[Policy]) -> Merged:
    """``base`` with the allow rules of ``supplementals`` added (see the module docstring).

    Pure: the callers decide which supplementals belong to the base (``base_guid`` equal to
    the base's ``guid``) and whether the base accepts supplementals at all."""
    kernel, user = base.has_allow_rules(True), base.has_allow_rules(False)
    signers: list[SignerRule] = list(base.allow_signers)
    hashes: list[HashRule] = list(base.allow_hashes)
    ignored: Counter[str] = Counter()
    for supplemental in supplementals:
        signers.extend(_clipped(supplemental.allow_signers, kernel, user, ignored))
        hashes.extend(_clipped(supplemental.allow_hashes, kernel, user, ignored))
        # By value: a compiled deny hash is imported as both an Authenticode and a page hash.
        denied = {
            rule.value
            for rule in (
                *supplemental.deny_hashes,
                *supplemental.deny_page_hashes,
                *supplemental.deny_file_hashes,
            )
        }
        denies = len(denied) + len(supplemental.deny_signers)
        if denies:
            ignored["deny rule (a supplemental policy cannot deny)"] += denies
        if not supplemental.revocation.empty:
            ignored["revocation source (a supplemental policy cannot deny)"] += 1
    merged = replace(base, allow_signers=tuple(signers), allow_hashes=tuple(hashes))
    return Merged(merged, dict(ignored))


def _clipped(
    rules: Sequence[_Rule], kernel: bool, user: bool, ignored: Counter[str]
) -> list[_Rule]:
    out: list[_Rule] = []
    for rule in rules:
        scope = _scope_within(rule.scope, kernel, user)
        if scope is None:
            ignored["allow rule where the base already allows everything"] += 1
        else:
            out.append(rule if scope == rule.scope else replace(rule, scope=scope))
    return out


def _scope_within(scope: Scope, kernel: bool, user: bool) -> Scope | None:
    """The part of ``scope`` where the base has an allowlist (None: nowhere)."""
    in_kernel = kernel and scope in ("all", "kernel")
    in_user = user and scope in ("all", "user")
    if in_kernel and in_user:
        return "all"
    if in_kernel:
        return "kernel"
    return "user" if in_user else None
