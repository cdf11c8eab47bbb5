"""Import of App Control (WDAC) SiPolicy XML: Microsoft's real driver blocklist and small cases."""

from __future__ import annotations

import re
import time

import pytest

from codeintegrity.errors import PolicyError
from codeintegrity.findings import FindingCode
from codeintegrity.policy.dump import dump_policy
from codeintegrity.policy.evaluate import evaluate
from codeintegrity.policy.load import parse_policy
from codeintegrity.policy.wdac import decode_eku, import_wdac
from codeintegrity.report import Status

from ..conftest import DATA
from .helpers import report, signature

BLOCKLIST = DATA / "policy" / "microsoft-driver-blocklist-SiPolicy.xml"


@pytest.fixture(scope="module")
def xml_text() -> str:
    return BLOCKLIST.read_text(encoding="utf-8-sig")


@pytest.fixture(scope="module")
def imported():
    return import_wdac(BLOCKLIST.read_bytes(), source=BLOCKLIST.name)


def test_blocklist_hash_rule_counts_match_an_independent_count(xml_text, imported):
    deny_hashes = re.findall(r'<Deny\b[^>]*\bHash="([0-9A-Fa-f]+)"', xml_text)
    page = re.findall(r'<Deny\b[^>]*FriendlyName="[^"]*Hash Page[^"]*"[^>]*\bHash="', xml_text)
    # events.md 6.2: 1704 hash rules (853 SHA-1, 851 SHA-256) in VersionEx 10.0.27825.0.
    assert (len(deny_hashes), sum(len(h) == 40 for h in deny_hashes)) == (1704, 853)
    policy = imported.policy
    assert imported.found["deny hash rules"] == len(deny_hashes)
    assert len(policy.deny_hashes) + len(policy.deny_page_hashes) == len(deny_hashes)
    assert len(policy.deny_page_hashes) == len(page) == 582
    assert sorted(r.value for r in (*policy.deny_hashes, *policy.deny_page_hashes)) == sorted(
        h.lower() for h in deny_hashes
    )
    assert {r.scope for r in policy.deny_hashes} == {"kernel"}
    assert imported.untranslated["Deny rule by file name/version/path (not a hash)"] == len(
        re.findall(r"<Deny\b[^>]*\bFileName=", xml_text)
    )


def test_blocklist_signer_counts_match_an_independent_count(xml_text, imported):
    blocks = re.findall(r'<Signer ID="([^"]+)"[^>]*>(.*?)</Signer>', xml_text, re.DOTALL)
    denied = set(re.findall(r'<DeniedSigner SignerId="([^"]+)"', xml_text))
    assert len(blocks) == imported.found["signers"] == 217
    usable = {
        re.search(r'CertRoot Type="TBS" Value="([0-9A-F]+)"', body).group(1).lower()
        for signer_id, body in blocks
        if signer_id in denied and "FileAttribRef" not in body and "CertOemID" not in body
    }
    assert {rule.tbs for rule in imported.policy.deny_signers} == usable
    narrowed = sum(1 for sid, body in blocks if sid in denied and "FileAttribRef" in body)
    key = "denied signer narrowed to file names/versions (FileAttribRef)"
    assert imported.untranslated[key] == narrowed
    with_publisher = [r for r in imported.policy.deny_signers if r.publisher]
    assert with_publisher and all(r.scope == "kernel" for r in imported.policy.deny_signers)


def test_blocklist_identity_and_mode(imported):
    policy = imported.policy
    assert policy.name == "Microsoft Windows Driver Policy - Enforced"
    assert policy.id == "10.0.27825.0"
    assert policy.mode == "enforce"
    assert imported.seconds < 2.0


def test_file_with_a_blocklisted_authentihash_is_denied(imported):
    asrdrv10 = "c767a5895119154467ac3fce8e82c20e6538a4e54f6c109001c61f8abd58f9f8"
    unrelated = (signature(chain=()),)
    denied = evaluate(
        report(signatures=unrelated, authentihash={"sha256": asrdrv10}), imported.policy
    )
    assert not denied.allowed
    assert [f.code for f in denied.reasons] == [FindingCode.POLICY_DENIED_HASH]
    assert "AsrDrv10.sys Hash Sha256" in denied.reasons[0].detail
    clean = evaluate(
        report(signatures=unrelated, authentihash={"sha256": "12" * 32}), imported.policy
    )
    assert clean.allowed


def test_blocklist_round_trips_through_toml(imported):
    text = dump_policy(imported.policy, imported.untranslated_lines())
    started = time.perf_counter()
    again = parse_policy(text, source=imported.policy.source)
    assert time.perf_counter() - started < 2.0
    assert again == imported.policy


MINIMAL = """<?xml version="1.0" encoding="utf-8"?>
<SiPolicy xmlns="urn:schemas-microsoft-com:sipolicy" PolicyType="Base Policy">
  <VersionEx>10.0.0.0</VersionEx>
  <Rules>
    <Rule><Option>Enabled:UMCI</Option></Rule>
    <Rule><Option>Enabled:Audit Mode</Option></Rule>
    <Rule><Option>Required:WHQL</Option></Rule>
  </Rules>
  <EKUs><EKU ID="ID_EKU_WHQL" Value="010A2B0601040182370A0305" /></EKUs>
  <FileRules>
    <Allow ID="ID_ALLOW_HASH" FriendlyName="tool.exe Hash Sha256" Hash="{allow}" />
    <Deny ID="ID_DENY_X" FriendlyName="x.sys Hash Sha1" Hash="{deny}" />
    <Deny ID="ID_DENY_X_PAGE" FriendlyName="x.sys Hash Page Sha1" Hash="{page}" />
    <Deny ID="ID_DENY_APP" FriendlyName="a.dll Hash Sha1" Hash="{deny}" AppIDs="REGSVR32.EXE" />
    <Deny ID="ID_DENY_NAME" FriendlyName="n" FileName="n.sys" MaximumFileVersion="1.0.0.0" />
    <Deny ID="ID_DENY_ORPHAN" FriendlyName="o" Hash="{deny}" />
  </FileRules>
  <Signers>
    <Signer ID="ID_SIGNER_WHQL" Name="Microsoft Windows Third Party Component CA 2014">
      <CertRoot Type="TBS" Value="{tbs}" /><CertEKU ID="ID_EKU_WHQL" />
    </Signer>
    <Signer ID="ID_SIGNER_BAD" Name="Bad CA"><CertRoot Type="TBS" Value="{tbs}" />
      <CertPublisher Value="Bad Corp" /></Signer>
    <Signer ID="ID_SIGNER_WK" Name="wk"><CertRoot Type="Wellknown" Value="06" /></Signer>
  </Signers>
  <SigningScenarios>
    <SigningScenario Value="131" ID="K"><ProductSigners>
      <AllowedSigners><AllowedSigner SignerId="ID_SIGNER_WHQL" /></AllowedSigners>
      <DeniedSigners><DeniedSigner SignerId="ID_SIGNER_BAD" /></DeniedSigners>
      <FileRulesRef><FileRuleRef RuleID="ID_DENY_X" /><FileRuleRef RuleID="ID_DENY_X_PAGE" />
        <FileRuleRef RuleID="ID_DENY_APP" /><FileRuleRef RuleID="ID_DENY_NAME" /></FileRulesRef>
    </ProductSigners></SigningScenario>
    <SigningScenario Value="12" ID="U"><ProductSigners>
      <AllowedSigners><AllowedSigner SignerId="ID_SIGNER_WK" /></AllowedSigners>
      <DeniedSigners><DeniedSigner SignerId="ID_SIGNER_BAD" /></DeniedSigners>
      <FileRulesRef><FileRuleRef RuleID="ID_DENY_X" />
        <FileRuleRef RuleID="ID_ALLOW_HASH" /></FileRulesRef>
    </ProductSigners></SigningScenario>
  </SigningScenarios>
  <PolicyID>{{A1B2C3D4-0000-0000-0000-000000000000}}</PolicyID>
</SiPolicy>
""".format(allow="AB" * 32, deny="CD" * 20, page="EF" * 20, tbs="01" * 32)


def test_minimal_policy_translation():
    result = import_wdac(MINIMAL, source="mini.xml")
    policy = result.policy
    assert policy.mode == "audit"
    assert policy.id == "{A1B2C3D4-0000-0000-0000-000000000000}"
    assert [(r.value, r.scope) for r in policy.deny_hashes] == [("cd" * 20, "all")]
    assert [(r.value, r.scope) for r in policy.deny_page_hashes] == [("ef" * 20, "kernel")]
    assert [(r.value, r.scope) for r in policy.allow_hashes] == [("ab" * 32, "user")]
    (allowed,) = policy.allow_signers
    assert (allowed.tbs, allowed.eku, allowed.scope) == (
        "01" * 32,
        "1.3.6.1.4.1.311.10.3.5",
        "kernel",
    )
    (denied,) = policy.deny_signers
    assert (denied.publisher, denied.scope) == ("Bad Corp", "all")
    skipped = result.untranslated
    assert skipped["rule option 'Required:WHQL' (not supported)"] == 1
    assert skipped["Deny hash rule narrowed by AppIDs"] == 1
    assert skipped["Deny rule by file name/version/path (not a hash)"] == 1
    assert skipped["Deny file rule not referenced by any signing scenario"] == 1
    assert skipped["allowed signer with CertRoot Type=Wellknown (only TBS is supported)"] == 1
    assert parse_policy(dump_policy(policy), source=policy.source) == policy


def test_user_scenario_is_skipped_without_umci():
    result = import_wdac(MINIMAL.replace("Enabled:UMCI", "Enabled:Boot Menu Protection"))
    assert {r.scope for r in result.policy.deny_hashes} == {"kernel"}
    assert result.policy.allow_hashes == ()
    assert "user-mode scenario 12 without Enabled:UMCI (WDAC does not enforce it)" in (
        result.untranslated
    )


def test_utf16_input_is_accepted():
    data = MINIMAL.replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")
    assert len(import_wdac(data).policy.deny_hashes) == 1


@pytest.mark.parametrize(
    "payload",
    [
        '<?xml version="1.0"?>\n<!DOCTYPE lol [<!ENTITY a "aaaaaaaa">]>\n<SiPolicy>&a;</SiPolicy>',
        '<?xml version="1.0"?>\n<!DOCTYPE SiPolicy SYSTEM "file:///etc/passwd">\n<SiPolicy/>',
        '<!DOCTYPE SiPolicy [<!ENTITY % p SYSTEM "http://example.invalid/x.dtd"> %p;]>\n'
        "<SiPolicy/>",
    ],
)
def test_dtd_and_entities_are_rejected_by_the_parser(payload):
    with pytest.raises(PolicyError, match=r"^evil\.xml:\d+: DOCTYPE/ENTITY declarations"):
        import_wdac(payload.encode(), source="evil.xml")


@pytest.mark.parametrize(
    "payload",
    [
        '<SiPolicy>\n<!ENTITY x "y">\n</SiPolicy>',  # a declaration outside a DTD
        '<?xml version="1.0"?>\n<!doctype SiPolicy SYSTEM "file:///etc/passwd">\n<SiPolicy/>',
        "<SiPolicy>&undeclared;</SiPolicy>",
    ],
)
def test_malformed_declarations_are_syntax_errors(payload):
    with pytest.raises(PolicyError, match=r"^evil\.xml:\d+: XML syntax error"):
        import_wdac(payload.encode(), source="evil.xml")


def _entity_injection(encoding: str) -> bytes:
    """The reported bypass: a deny hash injected by entity, in UTF-16 without a BOM (expat
    detects UTF-16 from the first bytes; a text check on the decoded string saw nothing)."""
    injected = MINIMAL.replace(
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<?xml version="1.0" encoding="{encoding.upper()[:6]}"?>'
        '<!DOCTYPE SiPolicy [<!ENTITY h "' + "ab" * 32 + '">]>',
    ).replace('Hash="' + "CD" * 20 + '"', 'Hash="&h;"', 1)
    assert "&h;" in injected and "<!ENTITY" in injected
    return injected.encode(encoding)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16", "utf-8"])
def test_entities_are_refused_whatever_the_encoding(encoding):
    with pytest.raises(PolicyError, match=r"^p\.xml:1: DOCTYPE/ENTITY declarations"):
        import_wdac(_entity_injection(encoding), source="p.xml")


def test_an_entity_bomb_is_refused_before_expansion():
    """Billion laughs, UTF-16LE without a BOM: refused at the DOCTYPE, nothing expanded."""
    levels = "".join(f'<!ENTITY l{i} "' + f"&l{i - 1};" * 10 + '">' for i in range(1, 10))
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE SiPolicy [<!ENTITY l0 "lol">{levels}]>'
        "<SiPolicy>&l9;</SiPolicy>"
    ).encode("utf-16-le")
    assert not bomb.startswith((b"\xff\xfe", b"\xfe\xff"))
    with pytest.raises(PolicyError, match="DOCTYPE/ENTITY declarations are not allowed"):
        import_wdac(bomb, source="bomb.xml")


def test_utf16_without_bom_is_parsed_like_with_one():
    plain = MINIMAL.replace('encoding="utf-8"', 'encoding="utf-16"')
    with_bom = import_wdac(plain.encode("utf-16"), source="p.xml").policy
    assert import_wdac(plain.encode("utf-16-le"), source="p.xml").policy == with_bom
    assert import_wdac(plain.encode("utf-16-be"), source="p.xml").policy == with_bom


def _unsigned_binary_policy() -> bytes:
    """The head of an unsigned compiled policy: u32 format version, PolicyTypeID, PlatformID."""
    import uuid

    type_id = uuid.UUID("d2bda982-ccf6-4344-ac5b-0b44427b6816").bytes_le
    platform = uuid.UUID("2e07f7e4-194c-4d20-b7c9-6f4aa6c5a234").bytes_le
    return (7).to_bytes(4, "little") + type_id + platform + b"\x00\x00\x00\x00" * 16


def _signed_binary_policy() -> bytes:
    """A PKCS#7 SignedData envelope (DER) around a compiled policy, as in SiPolicy.p7b."""
    from asn1crypto import cms, core

    content = cms.ContentInfo(
        {"content_type": "signed_data", "content": cms.SignedData({
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {
                "content_type": "1.3.6.1.4.1.311.79.1",
                "content": core.ParsableOctetString(_unsigned_binary_policy() * 8),
            },
            "signer_infos": [],
        })}
    )  # fmt: skip
    return content.dump()


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (_unsigned_binary_policy(), "compiled (binary) WDAC policy (.p7b/.cip, format version 7)"),
        (_signed_binary_policy(), "signed compiled (binary) WDAC policy (PKCS#7, .p7b/.cip)"),
    ],
    ids=["unsigned", "signed"],
)
def test_a_compiled_policy_is_named_as_such(data, named):
    with pytest.raises(PolicyError) as info:
        import_wdac(data, source="SiPolicy.p7b")
    assert str(info.value) == (
        f"SiPolicy.p7b: a {named}, not XML; give the XML source it was compiled from"
    )


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"<SiPolicy><Rules></SiPolicy>", r"^bad\.xml:1: XML syntax error"),
        (b"<Other/>", r"^bad\.xml: not a SiPolicy \(root element <Other>\)"),
        (b"\xff\xfe\x00\xd8", r"^bad\.xml: not UTF-8/UTF-16"),
        (b"<SiPolicy>\xff</SiPolicy>", r"^bad\.xml: not UTF-8/UTF-16"),
    ],
)
def test_bad_xml_gives_one_line_policy_errors(data, pattern):
    with pytest.raises(PolicyError, match=pattern) as info:
        import_wdac(data, source="bad.xml")
    assert "\n" not in str(info.value)


def test_decode_eku():
    assert decode_eku("010A2B0601040182370A0306") == "1.3.6.1.4.1.311.10.3.6"
    assert decode_eku("010A2B0601040182373D0401") == "1.3.6.1.4.1.311.61.4.1"
    assert decode_eku("0108") is None and decode_eku("zz") is None


def test_invalid_report_denied_even_without_matching_rules(imported):
    bad = report(status=Status.INVALID, signatures=(signature(valid=False),))
    assert not evaluate(bad, imported.policy).allowed


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_saved_policy_that_still_declares_utf8_imports_like_the_utf8_file(codec):
    # Notepad's "Unicode" save keeps the declaration's encoding="utf-8"; the bytes decide.
    text = BLOCKLIST.read_text(encoding="utf-8-sig")
    assert 'encoding="utf-8"' in text[:60]
    as_utf16 = import_wdac(text.encode(codec))
    assert as_utf16.policy == import_wdac(text.encode("utf-8")).policy
