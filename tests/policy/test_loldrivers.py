"""Import of the LOLDrivers catalogue, and the real WinDivert64.sys it lists."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest

from codeintegrity.errors import PolicyError
from codeintegrity.findings import FindingCode
from codeintegrity.policy.dump import dump_policy
from codeintegrity.policy.evaluate import apply_to_options, evaluate
from codeintegrity.policy.load import parse_policy
from codeintegrity.policy.loldrivers import import_loldrivers

from ..conftest import DATA, SAMPLES

CSV_PATH = DATA / "policy" / "loldrivers-drivers.csv"
WINDIVERT = SAMPLES / "signed" / "pypi__pydivert-4.0.1-py3-none-win_amd64" / "WinDivert64.sys"
WINDIVERT_ID = "45a31a17-f78d-48ec-beba-74f6bfc5f96e"


@pytest.fixture(scope="module")
def imported():
    return import_loldrivers(CSV_PATH.read_bytes(), source=CSV_PATH.name)


def _column_values(column: str) -> set[str]:
    """Independent count: csv.reader by column position, every 40/64-hex token."""
    with CSV_PATH.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    position = rows[0].index(column)
    found: set[str] = set()
    for row in rows[1:]:
        for token in row[position].replace(",", " ").split():
            if len(token) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in token):
                found.add(token.lower())
    return found


def test_csv_import_counts(imported):
    policy = imported.policy
    authentihashes = _column_values("KnownVulnerableSamples_Authentihash_SHA1") | _column_values(
        "KnownVulnerableSamples_Authentihash_SHA256"
    )
    flat = _column_values("KnownVulnerableSamples_SHA1") | _column_values(
        "KnownVulnerableSamples_SHA256"
    )
    assert {r.value for r in policy.deny_hashes} == authentihashes
    assert {r.value for r in policy.deny_file_hashes} == flat
    assert len(policy.deny_hashes) == len(authentihashes)  # duplicates merged
    assert imported.found["entries"] == 661
    assert not any(len(r.value) == 32 for r in (*policy.deny_hashes, *policy.deny_file_hashes))
    assert imported.untranslated["MD5 Authentihash (weak; use --include-md5)"] > 0
    assert imported.seconds < 3.0


def test_md5_is_imported_only_on_request():
    result = import_loldrivers(CSV_PATH.read_bytes(), include_md5=True)
    md5 = [r for r in result.policy.deny_file_hashes if r.algorithm == "md5"]
    assert md5 and not any("MD5" in kind for kind in result.untranslated)


def test_round_trip_through_toml(imported):
    again = parse_policy(dump_policy(imported.policy), source=imported.policy.source)
    assert again == imported.policy


def test_windivert_hashes_are_the_csv_entry(imported):
    """The sample's flat SHA-256 is listed under its LOLDrivers id (no engine involved)."""
    flat = hashlib.sha256(WINDIVERT.read_bytes()).hexdigest()
    (row,) = [r for r in csv.DictReader(CSV_PATH.open(newline="")) if r["Id"] == WINDIVERT_ID]
    assert flat in row["KnownVulnerableSamples_SHA256"]
    rule = imported.policy.deny_index.file[flat]
    assert WINDIVERT_ID in rule.name


def test_windivert_is_denied_while_its_signature_stays_valid(imported):
    from codeintegrity.options import VerifyOptions
    from codeintegrity.verify import verify_path

    policy = imported.policy
    report = verify_path(WINDIVERT, apply_to_options(policy, VerifyOptions()))
    assert report.status.value == "valid"
    assert all(sig.valid for sig in report.signatures)
    (row,) = [r for r in csv.DictReader(CSV_PATH.open(newline="")) if r["Id"] == WINDIVERT_ID]
    assert report.authentihash["sha256"] in row["KnownVulnerableSamples_Authentihash_SHA256"]
    decision = evaluate(report, policy)
    assert not decision.allowed and decision.enforced_denial
    assert {f.code for f in decision.reasons} == {FindingCode.POLICY_DENIED_HASH}
    details = " ".join(f.detail for f in decision.reasons)
    assert f"Authenticode sha256 {report.authentihash['sha256']}" in details
    assert WINDIVERT_ID in details
    assert 5038 in {f.event_id for f in decision.reasons}


def test_json_export_gives_the_same_rules_as_the_csv():
    entry = {
        "Id": WINDIVERT_ID,
        "Tags": ["windivert.sys"],
        "Category": "malicious",
        "KnownVulnerableSamples": [
            {
                "SHA256": "8da085332782708d8767bcace5327a6ec7283c17cfb85e40b03cd2323a90ddc2",
                "SHA1": "",
                "MD5": "89ed5be7ea83c01d0de33d3519944aa5",
                "Authentihash": {
                    "SHA256": "5ADED75D6BEB315849F698A78F8033DE26EB151955A1CBC01E3037320E2A0EB6",
                    "SHA1": "f6062c27168815446f20ca398c24325eb72d87d6",
                    "MD5": "-",
                },
            },
            "not a sample",
        ],
    }
    result = import_loldrivers(json.dumps([entry]).encode(), source="drivers.json")
    policy = result.policy
    assert [r.value[:8] for r in policy.deny_hashes] == ["f6062c27", "5aded75d"]
    assert [r.value[:8] for r in policy.deny_file_hashes] == ["8da08533"]
    assert policy.deny_hashes[0].name == f"LOLDrivers {WINDIVERT_ID} windivert.sys malicious"
    assert result.untranslated["malformed MD5 Authentihash value"] == 1


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b'"Id","Name"\n"1","x"\n', r"^in\.csv:1: not a LOLDrivers drivers\.csv: missing column"),
        (b"[1, 2", r"^in\.csv:1: JSON error"),
        (b'{"a": 1}', r"^in\.csv: not a LOLDrivers"),
        (b"[1]", r"^in\.csv: entry #0 is not an object"),
    ],
)
def test_bad_input_gives_one_line_policy_errors(data, pattern):
    with pytest.raises(PolicyError, match=pattern):
        import_loldrivers(data, source="in.csv")
