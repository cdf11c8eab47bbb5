"""A policy's identity as Windows writes it into 3076/3077: PolicyGUID from the SiPolicy GUIDs
(kept by import-wdac, from XML and binary policies, carried in the TOML) and PolicyHash, the
SHA-256 of the policy file. Expected formats from research/events-real.md (AaronLocker's real
3077: ``PolicyGUID`` ``{496a5746-5600-4cdd-b22e-333fd5614d00}``, ``PolicyHashSize`` 32,
``PolicyHash`` upper-case hex)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest

from codeintegrity.errors import PolicyError
from codeintegrity.policy.dump import dump_loadable
from codeintegrity.policy.load import load_policy, parse_policy
from codeintegrity.policy.model import normal_guid
from codeintegrity.policy.sipolicy_bin import import_binary_policy
from codeintegrity.policy.wdac import import_wdac

from ..conftest import DATA, FIXTURES, PKI
from ..image.sipolicy_compile import compile_policy

BLOCKLIST = DATA / "policy" / "microsoft-driver-blocklist-SiPolicy.xml"
IMAGE_POLICY = DATA / "image" / "image-policy.xml"
# The GUID of AaronLocker's policy, as its file name and the real 3077 carry it.
AARON_GUID = "{496a5746-5600-4cdd-b22e-333fd5614d00}"

MULTI_FORMAT = """\
<?xml version="1.0" encoding="utf-8"?>
<SiPolicy xmlns="urn:schemas-microsoft-com:sipolicy" PolicyType="Supplemental Policy">
  <VersionEx>1.0.0.0</VersionEx>
  <PolicyID>{496A5746-5600-4CDD-B22E-333FD5614D00}</PolicyID>
  <BasePolicyID>{AA120602-611B-4455-B8D8-C13A815B4323}</BasePolicyID>
  <PlatformID>{2E07F7E4-194C-4D20-B7C9-6F44A6C5A234}</PlatformID>
  <Rules><Rule><Option>Enabled:Unsigned System Integrity Policy</Option></Rule></Rules>
  <EKUs /><FileRules /><Signers /><SigningScenarios /><UpdatePolicySigners /><CiSigners />
  <HvciOptions>0</HvciOptions>
  <Settings>
    <Setting Provider="PolicyInfo" Key="Information" ValueName="Name">
      <Value><String>AaronLocker WDAC policy</String></Value></Setting>
    <Setting Provider="PolicyInfo" Key="Information" ValueName="Id">
      <Value><String>AaronLocker WDAC policy</String></Value></Setting>
  </Settings>
</SiPolicy>
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{496A5746-5600-4CDD-B22E-333FD5614D00}", AARON_GUID),
        ("496a5746-5600-4cdd-b22e-333fd5614d00", AARON_GUID),
        (" {496a5746-5600-4cdd-b22e-333fd5614d00} ", AARON_GUID),
        ("{496a5746-5600-4cdd-b22e-333fd5614d00", None),  # unbalanced brace
        ("496a5746-5600-4cdd-b22e-333fd5614d0", None),  # one digit short
        ("AaronLocker WDAC policy", None),
    ],
)
def test_guid_normalised_as_windows_writes_it(text, expected):
    assert normal_guid(text) == expected


def test_multi_format_import_keeps_policy_id_as_the_guid_and_the_base():
    result = import_wdac(MULTI_FORMAT, source="aaron.xml")
    policy = result.policy
    assert policy.guid == AARON_GUID  # PolicyID: the {GUID}.cip name Windows loads it under
    assert policy.base_guid == "{aa120602-611b-4455-b8d8-c13a815b4323}"
    assert policy.name == "AaronLocker WDAC policy" and policy.id == "AaronLocker WDAC policy"
    assert not any("GUID" in kind for kind in result.untranslated)


def test_single_format_blocklist_is_identified_by_its_policy_type_id():
    policy = import_wdac(BLOCKLIST.read_bytes(), source="blocklist").policy
    assert policy.guid == "{a244370e-44c9-4c06-b551-f6016e563076}"
    assert policy.base_guid == ""
    assert policy.id == "10.0.27825.0"


def test_guid_given_as_attributes_is_kept_and_a_bad_one_reported():
    attrs = MULTI_FORMAT.replace(
        "<PolicyID>{496A5746-5600-4CDD-B22E-333FD5614D00}</PolicyID>", ""
    ).replace('PolicyType="Supplemental Policy"', f'PolicyID="{AARON_GUID.upper()}"')
    assert import_wdac(attrs, source="a").policy.guid == AARON_GUID
    bad = MULTI_FORMAT.replace("{496A5746-5600-4CDD-B22E-333FD5614D00}", "not-a-guid")
    result = import_wdac(bad, source="b")
    assert result.policy.guid == ""
    assert result.untranslated["PolicyID that is not a GUID"] == 1


@pytest.mark.parametrize("xml_path", [BLOCKLIST, IMAGE_POLICY], ids=["single", "multi"])
def test_binary_import_keeps_the_guids(xml_path):
    xml = xml_path.read_text(encoding="utf-8-sig")
    from_bin = import_binary_policy(compile_policy(xml), source="bin").policy
    from_xml = import_wdac(xml, source="xml").policy
    expected = {
        BLOCKLIST: "{a244370e-44c9-4c06-b551-f6016e563076}",  # PolicyTypeID
        IMAGE_POLICY: "{6c1e4f2a-93b1-4d2e-a1c4-2b7d5e8f9a01}",  # PolicyID
    }[xml_path]
    assert from_xml.guid == from_bin.guid == expected
    # A compiled single-format policy stores its PolicyTypeID as both PolicyID and
    # BasePolicyID (format 6+), so the binary import sees a base policy of itself.
    assert from_bin.base_guid == expected
    assert from_xml.base_guid == ("" if xml_path == BLOCKLIST else expected)


def test_guids_survive_the_toml_round_trip(tmp_path):
    policy = import_wdac(MULTI_FORMAT, source="aaron.xml").policy
    text = dump_loadable(policy, ["imported"])
    assert f'guid = "{AARON_GUID}"' in text
    assert 'base_guid = "{aa120602-611b-4455-b8d8-c13a815b4323}"' in text
    loaded = parse_policy(text)
    assert (loaded.guid, loaded.base_guid) == (policy.guid, policy.base_guid)


def test_loader_accepts_a_guid_and_rejects_a_bad_one_naming_the_line():
    assert parse_policy('guid = "496A5746-5600-4CDD-B22E-333FD5614D00"\n').guid == AARON_GUID
    assert parse_policy("").guid == ""  # optional
    with pytest.raises(PolicyError) as info:
        parse_policy('name = "x"\nguid = "{496a5746}"\n', source="p.toml")
    message = str(info.value)
    assert message.startswith("p.toml:2: bad value for 'guid': expected a GUID")
    assert "\n" not in message
    with pytest.raises(PolicyError, match=r"p.toml:1: bad value for 'base_guid'.*an integer"):
        parse_policy("base_guid = 7\n", source="p.toml")


def test_file_sha256_is_the_hash_of_the_bytes_as_loaded(tmp_path):
    path = tmp_path / "p.toml"
    raw = b'\xef\xbb\xbfname = "bom"\r\nguid = "{496a5746-5600-4cdd-b22e-333fd5614d00}"\r\n'
    path.write_bytes(raw)  # BOM and CRLF included: the hash is of the file, not the text
    policy = load_policy(path)
    assert policy.file_sha256 == hashlib.sha256(raw).hexdigest()
    assert policy.name == "bom" and policy.guid == AARON_GUID
    assert parse_policy('name = "bom"\n').file_sha256 == ""  # no file, no hash
    # The hash is about the file: two files with the same rules are the same policy.
    same = parse_policy('name = "bom"\nguid = "{496a5746-5600-4cdd-b22e-333fd5614d00}"')
    assert policy == replace(same, source=policy.source)
    assert f"sha256: {policy.file_sha256}" in policy.summary()


def test_verify_writes_policy_guid_and_hash_into_the_3077(tmp_path):
    """End to end: `verify --policy P.toml --events xml:F` on a file the policy denies."""
    policy = tmp_path / "p.toml"
    policy.write_bytes(
        b'name = "AaronLocker WDAC policy"\n'
        b'id = "AaronLocker WDAC policy"\n'
        b'guid = "{496A5746-5600-4CDD-B22E-333FD5614D00}"\n'
        b'mode = "enforce"\n\n[allow]\nhashes = ["' + b"00" * 32 + b'"]\n'
    )
    events = tmp_path / "events.xml"
    anchors = ["--no-default-trust", "--trust", str(PKI / "ca.pem")]
    target = FIXTURES / "t64_sha256.exe"  # valid, but not on the policy's allowlist
    result = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--no-store", *anchors,
         "--policy", str(policy), "--events", f"xml:{events}", str(target)],
        capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path)),
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode != 0
    text = events.read_text(encoding="utf-8")
    block = re.search(
        r"<Event [^>]*>(?:(?!</Event>).)*<EventID>3077</EventID>.*?</Event>", text, re.S
    )
    assert block is not None, text
    xml = block.group(0)
    digest = hashlib.sha256(policy.read_bytes()).hexdigest().upper()
    assert f'<Data Name="PolicyGUID">{AARON_GUID}</Data>' in xml
    assert '<Data Name="PolicyHashSize">32</Data>' in xml
    assert f'<Data Name="PolicyHash">{digest}</Data>' in xml
    assert '<Data Name="PolicyName">AaronLocker WDAC policy</Data>' in xml
    assert '<Data Name="PolicyID">AaronLocker WDAC policy</Data>' in xml
