"""Binary (compiled) SiPolicy: import of binary == import of XML; hostile input fails cleanly."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from codeintegrity.errors import PolicyError
from codeintegrity.policy.evaluate import evaluate
from codeintegrity.policy.sipolicy_bin import (
    MalformedBinaryPolicy,
    import_binary_policy,
    import_wdac_any,
    load_policy_any,
    looks_binary,
    parse_binary_policy,
)
from codeintegrity.policy.wdac import import_wdac
from codeintegrity.verify import VerifyOptions, verify_path

from ..conftest import DATA, PKI, SIGNIFY
from .sipolicy_compile import compile_policy

BLOCKLIST = DATA / "policy" / "microsoft-driver-blocklist-SiPolicy.xml"
IMAGE_POLICY = DATA / "image" / "image-policy.xml"


def _content(policy):
    """What a binary policy carries: everything but rule/signer names and the source."""

    def hashes(rules):
        return sorted((r.value, r.scope) for r in rules)

    def signers(rules):
        return sorted((r.tbs, r.publisher, r.eku, r.scope) for r in rules)

    return {
        "name": policy.name,
        "id": policy.id,
        "mode": policy.mode,
        "deny": sorted(set(hashes((*policy.deny_hashes, *policy.deny_page_hashes)))),
        "deny_file": hashes(policy.deny_file_hashes),
        "allow": hashes(policy.allow_hashes),
        "deny_signers": signers(policy.deny_signers),
        "allow_signers": signers(policy.allow_signers),
        "drivers_must_be_signed": policy.drivers_must_be_signed,
        "require_page_hashes": policy.require_page_hashes,
    }


@pytest.fixture(scope="module")
def blocklist_binary() -> bytes:
    return compile_policy(BLOCKLIST.read_text(encoding="utf-8-sig"))


@pytest.mark.parametrize("xml_path", [BLOCKLIST, IMAGE_POLICY], ids=["blocklist", "image-policy"])
def test_binary_import_equals_xml_import(xml_path):
    xml = xml_path.read_bytes()
    from_xml = import_wdac(xml, source="x")
    from_bin = import_binary_policy(compile_policy(xml.decode("utf-8-sig")), source="b")
    assert _content(from_bin.policy) == _content(from_xml.policy)
    assert from_bin.untranslated == from_xml.untranslated
    # What was found is the same, plus the format version (page twins are not counted twice).
    assert {
        k: v for k, v in from_bin.found.items() if k != "binary format version"
    } == from_xml.found
    assert from_bin.found["binary format version"] == 7


def test_blocklist_binary_keeps_every_hash_and_the_identity(blocklist_binary):
    parsed = parse_binary_policy(blocklist_binary)
    assert parsed.version == "10.0.27825.0"
    assert not parsed.signed and parsed.format_version == 7
    assert parsed.setting("PolicyInfo", "Name") == "Microsoft Windows Driver Policy - Enforced"
    assert sum(1 for r in parsed.file_rules if r.kind == "Deny" and r.hash) == 1704
    assert {s.value for s in parsed.scenarios} == {131, 12}
    assert "Enabled:Update Policy No Reboot" in parsed.options


def test_binary_and_xml_policies_decide_a_real_driver_alike():
    pciide = verify_path(
        SIGNIFY / "pciide.sys",
        VerifyOptions(
            extra_digests=frozenset({"sha1", "sha256"}),
            first_page_digests=frozenset({"sha1", "sha256"}),
        ),
    )
    xml = IMAGE_POLICY.read_bytes()
    from_xml = evaluate(pciide, import_wdac(xml).policy)
    from_bin = evaluate(pciide, import_binary_policy(compile_policy(xml.decode())).policy)
    assert not from_xml.allowed and not from_bin.allowed
    assert {f.code for f in from_bin.reasons} == {f.code for f in from_xml.reasons}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_pkcs7_wrapped_policy_made_by_openssl(tmp_path):
    bare = tmp_path / "policy.bin"
    bare.write_bytes(compile_policy(IMAGE_POLICY.read_text()))
    signed = tmp_path / "SiPolicy.p7b"
    subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
         "-econtent_type", "1.3.6.1.4.1.311.79.1", "-signer", str(PKI / "leaf.pem"),
         "-inkey", str(PKI / "leaf.key"), "-in", str(bare), "-out", str(signed)],
        check=True, capture_output=True,
    )  # fmt: skip
    data = signed.read_bytes()
    assert looks_binary(data)
    parsed = parse_binary_policy(data)
    assert parsed.signed
    assert parsed.policy_id == uuid.UUID("6C1E4F2A-93B1-4D2E-A1C4-2B7D5E8F9A01")
    assert _content(import_wdac_any(data).policy) == _content(
        import_wdac(IMAGE_POLICY.read_bytes()).policy
    )
    policy, name = load_policy_any(str(signed))
    assert policy.name == "Contoso image policy" and name.endswith("(SiPolicy.p7b)")
    # A signed blob of another content type is not a CI policy.
    other = tmp_path / "other.p7b"
    subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
         "-signer", str(PKI / "leaf.pem"), "-inkey", str(PKI / "leaf.key"),
         "-in", str(bare), "-out", str(other)],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(PolicyError, match="not a CI policy"):
        import_wdac_any(other.read_bytes(), source="other.p7b")


def test_load_policy_any_reads_xml_and_binary(tmp_path):
    policy, _ = load_policy_any(str(IMAGE_POLICY))
    binary = tmp_path / "x.cip"
    binary.write_bytes(compile_policy(IMAGE_POLICY.read_text()))
    from_bin, _ = load_policy_any(str(binary))
    assert _content(policy) == _content(from_bin)
    assert not looks_binary(IMAGE_POLICY.read_bytes())


def test_every_truncation_is_a_clean_error():
    data = compile_policy(IMAGE_POLICY.read_text())
    parse_binary_policy(data)
    for cut in range(0, len(data), 7):
        with pytest.raises(MalformedBinaryPolicy):
            parse_binary_policy(data[:cut])
    with pytest.raises(PolicyError, match=r"^b\.cip: binary policy: .*offset"):
        import_binary_policy(data[:200], source="b.cip")


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, 99, "format version"),
        (0x24, 0x00000004, "high bit"),
        (0x28, 0x7FFFFFFF, "EKU count"),
        (0x30, 0x10000000, "signer count"),
        (0x40, 0x44, "header length"),
    ],
)
def test_hostile_header_fields(offset, value, message):
    data = bytearray(compile_policy(IMAGE_POLICY.read_text()))
    data[offset : offset + 4] = value.to_bytes(4, "little")
    with pytest.raises(MalformedBinaryPolicy, match=message):
        parse_binary_policy(bytes(data))


def test_wrong_end_tag_is_rejected():
    data = bytearray(compile_policy(IMAGE_POLICY.read_text()))
    data[-4:] = (9).to_bytes(4, "little")
    with pytest.raises(MalformedBinaryPolicy, match="end tag"):
        parse_binary_policy(bytes(data))
