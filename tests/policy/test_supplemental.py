"""A base policy with its supplementals: allow rules are added, deny rules are not, scopes the
base allows entirely stay allowed entirely; the binary and XML forms merge to the same policy."""

from __future__ import annotations

import pytest

from codeintegrity.policy.evaluate import evaluate
from codeintegrity.policy.sipolicy_bin import import_binary_policy
from codeintegrity.policy.supplemental import is_supplemental, merge_supplementals
from codeintegrity.policy.wdac import import_wdac
from codeintegrity.verify import verify_path

from ..conftest import DATA, SIGNIFY
from ..image.imagedata import WINDIVERT
from ..image.sipolicy_compile import compile_policy

IMAGE = DATA / "image"


def _xml(name: str):
    return import_wdac((IMAGE / name).read_bytes(), source=name)


@pytest.fixture(scope="module")
def reports():
    return verify_path(WINDIVERT), verify_path(SIGNIFY / "pciide.sys")


def test_ids_tell_base_from_supplemental():
    base, supplemental = _xml("allowlist-base.xml"), _xml("allowlist-supplemental.xml")
    assert not is_supplemental(base.policy)
    assert is_supplemental(supplemental.policy)
    assert supplemental.policy.base_guid == base.policy.guid
    assert "Enabled:Allow Supplemental Policies" in base.options
    assert "Enabled:Allow Supplemental Policies" not in supplemental.options


def test_a_file_allowed_only_by_the_supplemental_is_allowed(reports):
    windivert, pciide = reports
    base, supplemental = _xml("allowlist-base.xml").policy, _xml("allowlist-supplemental.xml")
    alone = evaluate(windivert, base)
    assert not alone.allowed
    assert [f.code.name for f in alone.reasons] == ["POLICY_SIGNER_NOT_ALLOWED"]
    merged = merge_supplementals(base, [supplemental.policy])
    assert evaluate(windivert, merged.policy).allowed
    # The supplemental's deny rule on pciide.sys is not applied (it cannot deny): the base
    # allows pciide.sys and so does the merged policy.
    assert evaluate(pciide, base).allowed and evaluate(pciide, merged.policy).allowed
    assert merged.ignored == {"deny rule (a supplemental policy cannot deny)": 1}
    # The merged policy is the base's: its name, ids and mode.
    assert (merged.policy.name, merged.policy.guid, merged.policy.mode) == (
        base.name,
        base.guid,
        base.mode,
    )
    assert len(merged.policy.allow_hashes) == 2


def test_merging_nothing_changes_nothing():
    base = _xml("allowlist-base.xml").policy
    merged = merge_supplementals(base, [])
    assert merged.policy == base and merged.ignored == {}


def test_a_base_that_allows_everything_stays_a_blocklist(reports):
    windivert, pciide = reports
    # The image's policy allows every kernel and user file (FileName="*") and denies pciide.sys:
    # a supplemental's allow rule must not turn that into "only WinDivert".
    blocklist = _xml("image-policy.xml").policy
    supplemental = _xml("allowlist-supplemental.xml").policy
    merged = merge_supplementals(blocklist, [supplemental])
    assert merged.policy.allow_hashes == ()
    assert merged.ignored["allow rule where the base already allows everything"] == 1
    assert evaluate(windivert, merged.policy).allowed
    # ... and cannot lift the base's own deny rule either.
    assert not evaluate(pciide, merged.policy).allowed


def test_allow_rules_are_clipped_to_the_scopes_the_base_restricts(reports):
    windivert, _pciide = reports
    base = _xml("allowlist-base.xml").policy  # kernel: an allowlist; user: not enforced
    sha256 = windivert.authentihash["sha256"]
    xml = (IMAGE / "allowlist-supplemental.xml").read_text(encoding="utf-8")
    # The same allow rule referenced by both scenarios: scope "all" before merging.
    both = xml.replace(
        "  </SigningScenarios>",
        '    <SigningScenario Value="12" ID="ID_SIGNINGSCENARIO_WINDOWS" FriendlyName="User">\n'
        "      <ProductSigners><FileRulesRef>"
        '<FileRuleRef RuleID="ID_ALLOW_WINDIVERT" /></FileRulesRef></ProductSigners>\n'
        "    </SigningScenario>\n  </SigningScenarios>",
    ).replace("<Rules>", "<Rules><Rule><Option>Enabled:UMCI</Option></Rule>")
    supplemental = import_wdac(both).policy
    assert [r.scope for r in supplemental.allow_hashes] == ["all"]
    merged = merge_supplementals(base, [supplemental]).policy
    added = [r for r in merged.allow_hashes if r.value == sha256.lower()]
    assert [r.scope for r in added] == ["kernel"]


def test_binary_and_xml_supplementals_merge_alike():
    def binary(name: str):
        return import_binary_policy(compile_policy((IMAGE / name).read_text(encoding="utf-8")))

    base_xml, sup_xml = _xml("allowlist-base.xml").policy, _xml("allowlist-supplemental.xml")
    base_bin, sup_bin = binary("allowlist-base.xml").policy, binary("allowlist-supplemental.xml")
    from_xml = merge_supplementals(base_xml, [sup_xml.policy]).policy
    from_bin = merge_supplementals(base_bin, [sup_bin.policy]).policy

    # Rule names differ (the binary form has no IDs); the values and scopes do not.
    def values(policy):
        return sorted((r.value, r.scope) for r in policy.allow_hashes)

    assert values(from_xml) == values(from_bin)
    assert (from_xml.guid, from_xml.base_guid) == (from_bin.guid, from_bin.base_guid)
