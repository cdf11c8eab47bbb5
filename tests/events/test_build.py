from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from codeintegrity.events.build import event_for_primitive_failure, events_for_report
from codeintegrity.events.model import Event, clean_text
from codeintegrity.events.render_xml import render_xml
from codeintegrity.events.schema import KINDS
from codeintegrity.events.signature_info import common_name, verification_error
from codeintegrity.findings import Finding, FindingCode

from .reports import (
    AUTHENTIHASH,
    FLAT,
    HOST,
    LEAF,
    POLICY_SHA256,
    ROOT,
    denied_report,
    shared_writable_report,
    tampered_report,
    unsigned_driver_report,
    valid_report,
)


def ids(events: list[Event]) -> list[int]:
    return [e.event_id for e in events]


def test_valid_file_raises_nothing():
    assert events_for_report(valid_report(), host=HOST) == []


def test_three_bad_pages_raise_one_6281_and_one_5038():
    events = events_for_report(tampered_report(bad_pages=3), host=HOST)
    security = [e.event_id for e in events if e.channel == "Security"]
    assert security == [5038, 6281]
    # CI details first, each 3089 after the event it describes (as Windows logs them:
    # 3033 -> 3089), then the Security events.
    assert ids(events) == [3033, 3089, 5038, 6281]


def test_ci_events_of_a_report_share_one_activity_id_security_events_carry_none():
    first = events_for_report(tampered_report(), host=HOST)
    second = events_for_report(tampered_report(), host=HOST)
    activities = {e.activity_id for e in first if e.channel != "Security"}
    assert len(activities) == 1
    (activity,) = activities
    assert re.fullmatch(r"\{[0-9a-f-]{36}\}", activity)
    assert activity != second[0].activity_id
    # Real 5038 records (events-real.md): <Correlation /> is empty on the Security channel, so
    # the renderers get no ActivityID for them; the model keeps the verification's own, which
    # the store and reports use to group one file's events.
    security = [e for e in first if e.channel == "Security"]
    assert [e.correlation_id for e in security] == [None, None]
    assert {e.activity_id for e in security} == {activity}
    assert all(b"<Correlation />" in render_xml(e) for e in security)


def test_param1_is_the_path_as_given():
    path = r"C:\Program Files\Vendor\bad & <odd>.dll"
    events = events_for_report(tampered_report(path=path), host=HOST)
    assert [e.value("param1") for e in events if e.channel == "Security"] == [path, path]
    assert events[0].value("FileNameBuffer") == path
    assert events[0].value("FileNameLength") == str(len(path))


def test_signature_information_3089_carries_signer_issuer_tbs_hashes_and_error():
    (info,) = [e for e in events_for_report(tampered_report(), host=HOST) if e.event_id == 3089]
    assert tuple(name for name, _ in info.data) == KINDS[3089].fields
    assert info.value("TotalSignatureCount") == "1"
    assert info.value("Signature") == "0"
    assert info.value("Hash") == AUTHENTIHASH["sha256"].upper()
    assert info.value("Hash Size") == "32"
    assert info.value("PageHash") == "true"
    assert info.value("SignatureType") == "1"
    assert info.value("VerificationError") == "1"  # invalid hash
    assert info.value("PublisherName") == "Throwaway Test Publisher"
    assert info.value("PublisherNameLength") == str(len("Throwaway Test Publisher"))
    assert info.value("IssuerName") == "Throwaway Test Code Signing Root CA"
    assert info.value("PublisherTBSHash") == LEAF.tbs_hash.upper()
    assert info.value("IssuerTBSHash") == ROOT.tbs_hash.upper()
    assert info.value("PublisherTBSHashSize") == "32"
    assert info.value("NotValidBefore") == "2025-01-01T00:00:00.0000000Z"


def test_shared_writable_raises_6410_with_a_3063_requirement_failure():
    events = events_for_report(shared_writable_report(), host=HOST)
    assert ids(events) == [3063, 3089, 6410]
    requirement = events[0]
    assert requirement.value("RequirementType") == "1"
    assert "security requirements for Shared Sections" in requirement.message()
    assert events[1].value("VerificationError") == "0"  # the signature itself is fine
    assert events[1].value("PageHash") == "false"


def test_unsigned_driver_raises_3004_and_5038_with_a_3089_of_zero_signatures():
    events = events_for_report(unsigned_driver_report(), host=HOST)
    # An unsigned kernel driver: CodeIntegrity 3004 beside the Security 5038 (ssde#14).
    assert ids(events) == [3004, 3089, 5038]
    unsigned = events[0]
    assert unsigned.kind.level == 2 and unsigned.kind.opcode == 104
    assert unsigned.value("FileNameBuffer") == "/data/drv.sys"
    assert unsigned.message().startswith(
        "Windows is unable to verify the image integrity of the file /data/drv.sys"
    )
    assert events[1].value("TotalSignatureCount") == "0"
    assert events[1].value("VerificationError") == "3"  # not signed
    assert events[1].value("SignatureType") == "0"


@pytest.mark.parametrize(("mode", "ci_event"), [("enforce", 3077), ("audit", 3076)])
def test_policy_denial_adds_3077_or_3076_with_policy_and_hashes(mode: str, ci_event: int):
    events = events_for_report(denied_report(mode), host=HOST)
    # Enforced: 3077 with the Security 5038. Audit: 3076 alone, as Windows logs a would-be
    # block (no capture shows a 5038 beside a 3076; the file loads).
    assert ids(events) == ([ci_event, 3089, 5038] if mode == "enforce" else [ci_event, 3089])
    block = events[0]
    assert tuple(name for name, _ in block.data) == KINDS[3077].fields
    assert block.value("PolicyName") == "Microsoft Windows Driver Policy - Enforced"
    assert block.value("PolicyID") == "{aa120602-611b-4455-b8d8-c13a815b4323}"
    assert block.value("PolicyGUID") == "{aa120602-611b-4455-b8d8-c13a815b4323}"
    # PolicyHash as in the real 3077: 32 bytes, upper-case hex (events-real.md).
    assert block.value("PolicyHashSize") == "32"
    assert block.value("PolicyHash") == POLICY_SHA256.upper()
    assert block.value("SHA256 Hash") == AUTHENTIHASH["sha256"].upper()
    assert block.value("SHA1 Hash") == AUTHENTIHASH["sha1"].upper()
    assert block.value("SHA256 Flat Hash") == FLAT["sha256"].upper()
    assert block.value("Status") == "0xc0e90002"
    assert block.value("SI Signing Scenario") == "0"  # kernel driver
    assert "(Policy ID:{aa120602-611b-4455-b8d8-c13a815b4323})" in block.message()
    allowed = "image was allowed to load" in block.message()
    assert allowed == (mode == "audit")
    # No signing-level failure: the signature is fine, only the policy said no.
    assert 3033 not in ids(events)
    assert events[1].value("VerificationError") == "0"


def test_security_event_system_values():
    event = events_for_report(tampered_report(), host=HOST)[-1]
    kind = event.kind
    assert (kind.provider, kind.provider_guid, kind.channel) == (
        "Microsoft-Windows-Security-Auditing",
        "{54849625-5478-4994-a5ba-3e3b0328c30d}",  # lowercase, as real records
        "Security",
    )
    assert (kind.task, kind.level, kind.opcode, kind.version) == (12290, 0, 0, 0)
    assert kind.keywords == 0x8010000000000000
    assert event.computer == "TESTHOST"
    assert event.process_id == 4242
    assert event.outcome == "failure"
    assert event.message().startswith(
        "Code Integrity determined that the page hashes of an image file are not valid."
    )
    assert event.message().endswith("File Name:\t/data/bad_flip_text.exe\t")


def test_undecodable_and_control_characters_are_escaped_not_lost():
    raw = b"/data/\xff\xfebad\x01.exe".decode("utf-8", "surrogateescape")
    event = events_for_report(tampered_report(path=raw), host=HOST)[-1]
    assert event.value("param1") == "/data/\\xff\\xfebad\\x01.exe"
    assert clean_text("plain") == "plain"
    assert clean_text("tab\tand\nnewline") == "tab\tand\nnewline"


def test_event_round_trips_through_its_dict_form():
    for event in events_for_report(denied_report("enforce"), host=HOST):
        again = Event.from_dict(event.with_record_id(7).to_dict())
        assert again == event.with_record_id(7)


def test_primitive_failure_5057():
    event = event_for_primitive_failure("cryptography", "RSA", "verify raised", -1, host=HOST)
    assert event.event_id == 5057
    assert event.value("ProviderName") == "cryptography"
    assert event.value("AlgorithmName") == "RSA"
    assert event.value("Reason") == "verify raised"
    assert event.value("ReturnCode") == "0xffffffff"
    assert event.value("SubjectUserName") == "alice"
    assert event.outcome == "failure"
    assert "Algorithm Name:\tRSA" in event.message()


def test_verification_error_prefers_known_codes_and_common_name_parses_rfc4514():
    findings = [
        Finding(FindingCode.DIGEST_ALGORITHM_MISMATCH, "x"),
        Finding(FindingCode.CHAIN_REVOKED, "y"),
    ]
    assert verification_error(findings) == 4
    assert verification_error([Finding(FindingCode.DIGEST_ALGORITHM_MISMATCH, "x")]) == 8
    assert verification_error([]) == 0
    assert common_name(r"O=Acme\, Inc.,CN=Acme\, Inc. Signer") == "Acme, Inc. Signer"
    assert common_name("O=NoCN") == "O=NoCN"


def test_event_times_are_utc_and_shared_within_a_report():
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    events = events_for_report(tampered_report(), host=HOST, when=when)
    assert {e.time_created for e in events} == {when}


def test_time_created_has_real_100ns_precision_through_every_form():
    from codeintegrity.events.render_xml import render_xml

    events = [e for _ in range(20) for e in events_for_report(tampered_report(), host=HOST)]
    digits = {e.time_100ns for e in events}
    assert digits <= set(range(10)) and len(digits) > 1  # the 7th digit is not always 0
    for event in events[:8]:
        text = render_xml(event).decode()
        stamp = re.search(r'SystemTime="([^"]+)"', text).group(1)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", stamp)
        assert stamp[-2] == str(event.time_100ns)
        assert Event.from_dict(event.to_dict()) == event  # the store keeps the digit


def test_3077_carries_the_files_version_info():
    from dataclasses import replace

    info = {
        "original_file_name": "asrdrv10.sys",
        "internal_name": "asrdrv10",
        "file_description": "ASRock IO Driver",
        "product_name": "ASRock Utility",
        "file_version": "10.0.0.0",
    }
    report = replace(denied_report("enforce"), version_info=info)
    (block,) = [e for e in events_for_report(report, host=HOST) if e.event_id == 3077]
    assert block.value("OriginalFileName") == "asrdrv10.sys"
    assert block.value("OriginalFileNameLength") == "12"
    assert block.value("InternalName") == "asrdrv10"
    assert block.value("FileDescription") == "ASRock IO Driver"
    assert block.value("ProductName") == "ASRock Utility"
    assert block.value("FileVersion") == "10.0.0.0"
    (plain,) = [
        e for e in events_for_report(denied_report("enforce"), host=HOST) if e.event_id == 3077
    ]
    assert plain.value("OriginalFileName") == "" and plain.value("OriginalFileNameLength") == "0"


@pytest.mark.parametrize(("driver", "ci_event", "opcode"), [(True, 3023, 108), (False, 3036, 115)])
def test_revoked_signer_raises_3023_or_3036(driver: bool, ci_event: int, opcode: int):
    from .reports import revoked_report

    events = events_for_report(revoked_report(driver=driver), host=HOST)
    assert ids(events) == [ci_event, 3089, 6281]  # the findings table pairs revocation with 6281
    revoked = events[0]
    assert (revoked.kind.level, revoked.kind.task, revoked.kind.opcode) == (2, 1, opcode)
    assert revoked.value("FileNameBuffer") == "/data/revoked.sys"
    assert "because the signing certificate has been revoked" in revoked.message()
    assert events[1].value("VerificationError") == "4"  # revoked
