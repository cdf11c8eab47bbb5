"""`codeintegrity policy ...`: imports, checks and exit codes as a user sees them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from codeintegrity.cli.exit_codes import CONFIG, NOT_VALID, OK
from codeintegrity.cli.policy_cmd import policy
from codeintegrity.policy.load import parse_policy

from ..conftest import DATA, SAMPLES

BLOCKLIST = DATA / "policy" / "microsoft-driver-blocklist-SiPolicy.xml"
LOLDRIVERS = DATA / "policy" / "loldrivers-drivers.csv"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
WINDIVERT = SAMPLES / "signed" / "pypi__pydivert-4.0.1-py3-none-win_amd64" / "WinDivert64.sys"


def invoke(*args: str):
    return CliRunner().invoke(policy, list(args), catch_exceptions=False)


def test_import_wdac_to_stdout_loads_back():
    result = invoke("import-wdac", str(BLOCKLIST))
    assert result.exit_code == OK, result.stderr
    loaded = parse_policy(result.stdout)
    assert len(loaded.deny_hashes) + len(loaded.deny_page_hashes) == 1704
    assert "not translated: 11 x Deny rule by file name/version/path" in result.stderr
    assert "codeintegrity: imported 1750 rules" in result.stderr


def test_import_wdac_to_file_then_check(tmp_path):
    out = tmp_path / "blocklist.toml"
    result = invoke("import-wdac", str(BLOCKLIST), "-o", str(out), "--mode", "audit")
    assert result.exit_code == OK and result.stdout == ""
    checked = invoke("check", str(out))
    assert checked.exit_code == OK
    assert "mode: audit" in checked.stdout
    assert "denied first-page hashes: 582 [sha1 291, sha256 291] (kernel 582)" in checked.stdout


def test_import_loldrivers_then_check(tmp_path):
    out = tmp_path / "lol.toml"
    result = invoke("import-loldrivers", str(LOLDRIVERS), "-o", str(out))
    assert result.exit_code == OK
    assert "x MD5 Authentihash (weak; use --include-md5)" in result.stderr
    checked = invoke("check", str(out))
    assert checked.exit_code == OK and "mode: enforce" in checked.stdout


def test_check_reports_the_line_and_exits_4(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('name = "x"\n[deny]\nhashs = []\n')
    result = invoke("check", str(bad))
    assert result.exit_code == CONFIG
    assert result.stderr == f"codeintegrity: {bad}:3: unknown key 'deny.hashs'\n"


@pytest.mark.parametrize(
    ("command", "content", "message"),
    [
        ("import-wdac", b'<!DOCTYPE x [<!ENTITY a "b">]><SiPolicy/>', "DOCTYPE/ENTITY"),
        ("import-wdac", None, "cannot read"),
        ("import-loldrivers", b"a,b\n1,2\n", "missing column"),
        ("check", None, "cannot read policy"),
    ],
)
def test_bad_inputs_exit_4_with_one_line(tmp_path, command, content, message):
    path = tmp_path / "input"
    if content is not None:
        path.write_bytes(content)
    result = invoke(command, str(path))
    assert result.exit_code == CONFIG
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_check_the_example_through_the_real_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "policy", "check", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == OK, result.stderr
    assert "name: Example workstation policy" in result.stdout


@pytest.mark.parametrize(("mode", "expected"), [("enforce", NOT_VALID), ("audit", OK)])
def test_verify_with_imported_loldrivers_policy(tmp_path, mode, expected):
    out = tmp_path / "lol.toml"
    assert (
        invoke("import-loldrivers", str(LOLDRIVERS), "-o", str(out), "--mode", mode).exit_code == 0
    )
    result = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-store"]
        + ["--policy", str(out), str(WINDIVERT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path)),
    )
    assert result.returncode == expected, result.stderr
    (report,) = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert report["status"] == "valid"
    assert report["decision"]["allowed"] is False and report["decision"]["mode"] == mode
    assert {r["code"] for r in report["decision"]["reasons"]} == {"policy.denied-hash"}


# --- garbage in: one line on stderr, exit 4, never a traceback ------------------------------

DEEP_TOML = "a = " + "[" * 50_000 + "]" * 50_000 + "\n"
DEEP_JSON = "[" * 50_000 + "]" * 50_000
HUGE_INT_TOML = "name = " + "9" * 5000 + "\n"
HUGE_INT_JSON = '[{"Id": ' + "9" * 5000 + "}]"
UTF16_DOCTYPE = b"\xff\xfe" + '<!DOCTYPE x SYSTEM "file:///etc/passwd"><SiPolicy/>'.encode(
    "utf-16-le"
)


def assert_one_line_config_error(result, *needles: str) -> None:
    assert result.exit_code == CONFIG, (result.stdout, result.stderr)
    assert result.stderr.startswith("codeintegrity: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 4, "not UTF-8"),
        (b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "b">]>\n<x/>', "TOML syntax error"),
        (DEEP_TOML.encode(), "nested too deeply"),
        (HUGE_INT_TOML.encode(), "cannot be read"),
        (b"name = 1\n", "'name': expected a string, got an integer"),
        (b"mode = 1e999\n", "'mode': expected one of"),
        (b"[deny]\nhashes = 5\n", "'deny.hashes': expected an array"),
        (b"[deny]\nhashes = [" + b"9" * 40 + b"]\n", "expected a table, got an integer"),
        (b'[[allow.signers]]\ntbs = "' + b"a" * 10_000 + b'"\n', "10000 digits"),
    ],
)
def test_check_rejects_garbage(tmp_path, content, message):
    path = tmp_path / "p.toml"
    path.write_bytes(content)
    assert_one_line_config_error(invoke("check", str(path)), message)


def test_check_of_an_empty_file_is_an_empty_policy(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_bytes(b"")
    result = invoke("check", str(path))
    assert result.exit_code == OK
    assert (
        "denied Authenticode hashes: 0" in result.stdout and "allowed signers: 0" in result.stdout
    )


@pytest.mark.parametrize("command", ["check", "import-wdac", "import-loldrivers"])
def test_paths_that_are_not_readable_files(tmp_path, command):
    file = tmp_path / "file"
    file.write_bytes(b"x")
    for path, reason in [
        (tmp_path, "Is a directory"),  # a directory instead of a file
        (file / "child", "Not a directory"),  # unreadable: a parent that is not a directory
        (tmp_path / "missing", "No such file"),
    ]:
        assert_one_line_config_error(invoke(command, str(path)), "cannot read", reason)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads mode 000 files")
def test_permission_denied_is_a_one_line_error(tmp_path):
    path = tmp_path / "secret.toml"
    path.write_text('name = "x"\n')
    path.chmod(0)
    try:
        assert_one_line_config_error(invoke("check", str(path)), "cannot read policy")
    finally:
        path.chmod(0o600)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize(
    ("command", "message"),
    [("check", "policy is larger than 64 MiB"), ("import-wdac", "input is larger than 256 MiB")],
)
def test_endless_input_is_refused_at_the_bound(command, message):
    assert_one_line_config_error(invoke(command, "/dev/zero"), message)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "XML syntax error"),
        (bytes(range(256)) * 4, "not UTF-8/UTF-16"),
        (UTF16_DOCTYPE, "DOCTYPE/ENTITY"),
        (b"<SiPolicy><Rules>" + b"<a>" * 5000, "XML syntax error"),
        (b'<?xml version="1.0"?><Policy/>', "not a SiPolicy"),
    ],
)
def test_import_wdac_rejects_garbage(tmp_path, content, message):
    path = tmp_path / "in.xml"
    path.write_bytes(content)
    assert_one_line_config_error(invoke("import-wdac", str(path)), message)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "JSON error"),
        (bytes(range(256)) * 4, "missing column"),
        (DEEP_JSON.encode(), "JSON nested too deeply"),
        (HUGE_INT_JSON.encode(), "JSON value cannot be read"),
        (b"[1, 2, 3]", "entry #0 is not an object"),
        (b'{"a": 1}', "entry #0 has no Id"),
    ],
)
def test_import_loldrivers_rejects_garbage(tmp_path, content, message):
    path = tmp_path / "drivers.json"
    path.write_bytes(content)
    assert_one_line_config_error(invoke("import-loldrivers", str(path)), message)


def test_output_to_a_directory_is_a_one_line_error(tmp_path):
    result = invoke("import-loldrivers", str(LOLDRIVERS), "-o", str(tmp_path))
    assert_one_line_config_error(result, "cannot write")


def test_check_parses_the_crls_the_policy_names(tmp_path):
    (tmp_path / "bad.crl").write_bytes(b"\x30\x03\x02\x01\x01")
    (tmp_path / "crls").mkdir()
    for name, message in [("bad.crl", "not a valid X.509 CRL"), ("crls", "not a regular file")]:
        path = tmp_path / "p.toml"
        path.write_text(f'[revocation]\ncrls = ["{name}"]\n')
        assert_one_line_config_error(invoke("check", str(path)), message)


def test_check_counts_the_revoked_entries_of_a_good_crl(tmp_path):
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca = x509.load_pem_x509_certificate((DATA / "pki" / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((DATA / "pki" / "ca.key").read_bytes(), None)
    now = datetime.now(UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
    builder = builder.last_update(now).next_update(now + timedelta(days=1))
    for serial in (1, 2, 3):
        revoked = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(key, hashes.SHA256())
    (tmp_path / "ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    path = tmp_path / "p.toml"
    path.write_text('[revocation]\ncrls = ["ca.crl"]\n')
    result = invoke("check", str(path))
    assert result.exit_code == OK, result.stderr
    assert "CRLs: 1" in result.stdout
    assert "revoked certificates listed by the CRLs: 3" in result.stdout


def test_control_characters_from_the_input_never_reach_the_terminal_raw(tmp_path):
    # DEL, a C1 CSI and a bidi override are legal XML 1.0 text; a raw CSI or ESC can rewrite
    # the terminal, and a raw DEL in a TOML comment made the converted policy unloadable.
    xml = tmp_path / "sipolicy.xml"
    xml.write_text(
        "<SiPolicy><Rules><Rule><Option>Enabled:X\x7f\x9b2J\u202eevil</Option></Rule></Rules>"
        '<Settings><Setting Provider="PolicyInfo" ValueName="Name"><Value>'
        "<String>pol\x9b31m</String></Value></Setting></Settings></SiPolicy>",
        encoding="utf-8",
    )
    out = tmp_path / "converted.toml"
    imported = invoke("import-wdac", str(xml), "-o", str(out))
    assert imported.exit_code == OK
    assert "rule option 'Enabled:X\\x7f\\x9b2J\\u202eevil' (not supported)" in imported.stderr
    checked = invoke("check", str(out))
    assert checked.exit_code == OK, checked.stderr
    assert "  name: pol\\x9b31m\n" in checked.stdout
    assert parse_policy(out.read_text(encoding="utf-8")).name == "pol\x9b31m"  # value kept
    key = tmp_path / "key.toml"
    key.write_text('"\\u001b[2J" = 1\n')
    assert_one_line_config_error(invoke("check", str(key)), "unknown key '\\x1b[2J'")
    for text in (imported.stderr, checked.stdout, checked.stderr, out.read_text()):
        assert not any(ch in text for ch in "\x1b\x7f\x9b\u202e")


# --- an import writes a policy that loads, or nothing ----------------------------------------

BLANK_PUBLISHER = """<?xml version="1.0" encoding="utf-8"?>
<SiPolicy xmlns="urn:schemas-microsoft-com:sipolicy">
  <Signers>
    <Signer ID="ID_SIGNER_BLANK" Name="blank"><CertRoot Type="TBS" Value="{tbs}" />
      <CertPublisher Value=" " /></Signer>
    <Signer ID="ID_SIGNER_EMPTY" Name="empty"><CertRoot Type="TBS" Value="{tbs}" />
      <CertPublisher Value="" /></Signer>
    <Signer ID="ID_SIGNER_OK" Name="ok"><CertRoot Type="TBS" Value="{tbs}" />
      <CertPublisher Value="Bad Corp" /></Signer>
  </Signers>
  <SigningScenarios><SigningScenario Value="131" ID="K"><ProductSigners>
    <DeniedSigners><DeniedSigner SignerId="ID_SIGNER_BLANK" />
      <DeniedSigner SignerId="ID_SIGNER_EMPTY" /><DeniedSigner SignerId="ID_SIGNER_OK" />
    </DeniedSigners>
  </ProductSigners></SigningScenario></SigningScenarios>
</SiPolicy>
""".format(tbs="01" * 32)


def test_blank_cert_publisher_is_left_out_and_the_output_checks(tmp_path):
    """A CertPublisher of " " (or "") matches no certificate in WDAC. Written as is, our loader
    refused it; dropped, the signer would deny the whole CA. It is left out, and named."""
    source = tmp_path / "blank.xml"
    source.write_text(BLANK_PUBLISHER)
    out = tmp_path / "blank.toml"
    result = invoke("import-wdac", str(source), "-o", str(out))
    assert result.exit_code == OK, result.stderr
    assert "2 x denied signer with a blank CertPublisher (matches no certificate)" in result.stderr
    assert invoke("check", str(out)).exit_code == OK
    (rule,) = parse_policy(out.read_text()).deny_signers
    assert rule.publisher == "Bad Corp"


def test_an_import_over_the_policy_size_limit_writes_nothing(tmp_path, monkeypatch):
    """The reported case: a 200 MB catalogue became 394 MB of TOML the loader refuses (64 MiB).
    Shown here with the bound lowered, so the test stays small; the code path is the same."""
    import codeintegrity.policy.inputs as inputs

    monkeypatch.setattr(inputs, "MAX_POLICY_BYTES", 64 * 1024)
    out = tmp_path / "lol.toml"
    result = invoke("import-loldrivers", str(LOLDRIVERS), "-o", str(out))
    assert_one_line_config_error(result, "the imported policy would be", "over the 0.0625 MiB")
    assert "nothing written" in result.stderr
    assert not out.exists()


def test_an_import_the_loader_would_refuse_writes_nothing(tmp_path, monkeypatch):
    """Whatever the importer gets wrong, the loader is the judge before anything is written."""
    import codeintegrity.policy.load as load

    def refuse(text, *, source="<policy>", base_dir=None):
        from codeintegrity.errors import PolicyError

        raise PolicyError(f"{source}:7: a reason the loader gives")

    monkeypatch.setattr(load, "parse_policy", refuse)
    out = tmp_path / "blocklist.toml"
    result = invoke("import-wdac", str(BLOCKLIST), "-o", str(out))
    assert_one_line_config_error(
        result, "the imported policy would not load (imported policy:7: a reason the loader gives)"
    )
    assert not out.exists() and result.stdout == ""


def test_a_compiled_binary_policy_is_named_by_check(tmp_path):
    from tests.policy.test_wdac import _signed_binary_policy

    path = tmp_path / "SiPolicy.p7b"
    path.write_bytes(_signed_binary_policy())
    result = invoke("check", str(path))
    assert_one_line_config_error(result, "compiled (binary) WDAC policy (PKCS#7, .p7b/.cip)")
    assert "UTF" not in result.stderr


def test_import_wdac_reads_compiled_policies_and_names_a_broken_one(tmp_path):
    # import-wdac takes compiled policies (tests/image checks binary == XML on real content);
    # a PKCS#7 envelope that does not parse is one line naming the binary form, not "UTF".
    from tests.policy.test_wdac import _signed_binary_policy

    path = tmp_path / "SiPolicy.p7b"
    path.write_bytes(_signed_binary_policy())
    result = invoke("import-wdac", str(path))
    assert_one_line_config_error(result, "binary policy: PKCS#7 at offset 0x0: does not parse")
    assert "UTF" not in result.stderr


def test_help_names_only_commands_that_exist():
    result = invoke("--help")
    assert result.exit_code == OK
    commands = set(policy.commands)
    assert commands == {"check", "import-wdac", "import-loldrivers"}
    words = set(result.stdout.replace(",", " ").replace(".", " ").split())
    assert "inspect" not in words


# --- the example policy against the corpus ---------------------------------------------------

MS_ROOTS = {
    "08fba831c08544208f5208686b991ca1b2cfc510e7301784ddf1eb5bf0393239": "Root 2010",
    "279cd652c4e252bfbe5217ac722205d7729ba409148cfa9e6d9e5b1cb94eaff1": "Root 2011",
}
IN_HOUSE = SAMPLES / "unsigned" / "pypi__distlib-0.4.4-py2.py3-none-any" / "t64.exe"


def test_example_allows_microsoft_signed_corpus_files_and_denies_windivert(tmp_path):
    corpus = sorted(
        p
        for p in [*(SAMPLES / "signed").rglob("*"), *(DATA / "thirdparty" / "signify").rglob("*")]
        if p.suffix.lower() in {".dll", ".exe", ".pyd", ".sys"}
    )
    result = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-store", "--no-cache",
         "--policy", str(EXAMPLE), str(IN_HOUSE), *map(str, corpus)],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path)),
    )  # fmt: skip
    reports = {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}
    microsoft = [
        r
        for r in reports.values()
        if r["status"] == "valid"
        and r["signatures"]
        and r["signatures"][0]["chain"][-1]["tbs_hash"] in MS_ROOTS
    ]
    roots = {MS_ROOTS[r["signatures"][0]["chain"][-1]["tbs_hash"]] for r in microsoft}
    assert roots == {"Root 2010", "Root 2011"} and len(microsoft) >= 15
    denied = [r["path"] for r in microsoft if not r["decision"]["allowed"]]
    assert denied == [], denied
    assert reports[str(IN_HOUSE)]["decision"]["allowed"] is True
    windivert = reports[str(WINDIVERT)]["decision"]
    assert windivert["allowed"] is False
    assert any(
        reason["code"] == "policy.denied-hash" and "LOLDrivers" in reason["detail"]
        for reason in windivert["reasons"]
    )


def test_example_allows_nothing_a_deny_list_names(tmp_path):
    """The example's allowed hashes are in neither LOLDrivers nor Microsoft's blocklist."""
    example = parse_policy(EXAMPLE.read_text())
    allowed = {rule.value for rule in example.allow_hashes}
    for command, source in (("import-loldrivers", LOLDRIVERS), ("import-wdac", BLOCKLIST)):
        listed = parse_policy(invoke(command, str(source)).stdout)
        denied = {
            rule.value
            for rules in (listed.deny_hashes, listed.deny_page_hashes, listed.deny_file_hashes)
            for rule in rules
        }
        assert allowed and not allowed & denied
    windivert_auth = "5aded75d6beb315849f698a78f8033de26eb151955a1cbc01e3037320e2a0eb6"
    assert windivert_auth not in allowed


def test_top_level_help_promises_no_policy_command_that_does_not_exist():
    from codeintegrity.cli.main import cli

    summary = CliRunner().invoke(cli, ["--help"]).output
    line = next(x for x in summary.splitlines() if x.strip().startswith("policy"))
    assert "inspect" not in line and "inspect" not in policy.commands
