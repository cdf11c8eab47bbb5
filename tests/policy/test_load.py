"""The TOML policy loader: every bad key or value is a one-line PolicyError naming the line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from codeintegrity.errors import PolicyError
from codeintegrity.policy.dump import dump_policy, toml_string
from codeintegrity.policy.load import load_policy, parse_policy
from codeintegrity.policy.model import HashRule, Policy, RevocationConfig, SignerRule

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """\
name = "t"
mode = "enforce"

[deny]
hashes = [
  "2e6d61fa32e12fe4abf7b7d87aa6824f5f528000",
  { hash = "C767A5895119154467AC3FCE8E82C20E6538A4E54F6C109001C61F8ABD58F9F8", scope = "kernel" },
]
"""


def error_of(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="policy.toml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_policy_loads_and_normalises_hashes():
    policy = parse_policy(GOOD)
    assert policy.mode == "enforce"
    assert [(r.value[:8], r.algorithm, r.scope) for r in policy.deny_hashes] == [
        ("2e6d61fa", "sha1", "all"),
        ("c767a589", "sha256", "kernel"),
    ]


def test_unknown_key_names_line_and_dotted_key():
    text = GOOD.replace("hashes = [", "hashs = [")
    assert error_of(text) == "policy.toml:5: unknown key 'deny.hashs'"


def test_unknown_top_level_key():
    assert error_of('name = "x"\n\nmdoe = "audit"\n') == "policy.toml:3: unknown key 'mdoe'"


def test_unknown_key_inside_inline_table_finds_its_line():
    text = GOOD.replace('scope = "kernel"', 'scop = "kernel"')
    assert error_of(text) == "policy.toml:7: unknown key 'deny.hashes[1].scop'"


def test_unknown_key_in_array_of_tables():
    text = 'name = "x"\n\n[[deny.signers]]\ntbs = "' + "ab" * 20 + '"\n\n[[deny.signers]]\n'
    text += 'tbs = "' + "cd" * 20 + '"\npublsher = "Evil"\n'
    assert error_of(text) == "policy.toml:8: unknown key 'deny.signers[1].publsher'"


def test_wrong_type_names_line_and_key():
    text = 'name = "x"\ndrivers_must_be_signed = "yes"\n'
    message = error_of(text)
    assert message.startswith("policy.toml:2: bad value for 'drivers_must_be_signed'")
    assert "true or false" in message


def test_bad_mode():
    message = error_of('\nmode = "block"\n')
    assert message.startswith("policy.toml:2: bad value for 'mode'")
    assert '"audit", "enforce"' in message and "'block'" in message


def test_bad_hash_length_names_the_element():
    text = GOOD.replace(
        "2e6d61fa32e12fe4abf7b7d87aa6824f5f528000", "2e6d61fa32e12fe4abf7b7d87aa6824f5f52800"
    )
    message = error_of(text)
    assert message.startswith("policy.toml:6: bad value for 'deny.hashes[0]'")
    assert "39 digits" in message


def test_bad_hash_character_in_inline_table():
    text = GOOD.replace("C767A589", "G767A589")
    message = error_of(text)
    assert message.startswith("policy.toml:7: bad value for 'deny.hashes[1].hash'")
    assert "non-hex character 'g'" in message


def test_toml_syntax_error_names_the_line():
    assert error_of('name = "x"\nmode = \n').startswith("policy.toml:2: TOML syntax error")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('require_page_hashes = "kernel"\n', "policy.toml:1: bad value for 'require_page_hashes'"),
        ('min_digest = "sha3"\n', "policy.toml:1: bad value for 'min_digest'"),
        ("[deny]\nhashes = 5\n", "policy.toml:2: bad value for 'deny.hashes': expected an array"),
        ("[deny]\nsigners = [{ publisher = 'x' }]\n", "policy.toml:2: 'deny.signers[0]' needs a"),
        ("[allow]\nsigners = [{ name = 'x' }]\n", "policy.toml:2: 'allow.signers[0]' needs"),
        ("[allow]\nsigners = [{ eku = '1.3.x' }]\n", "policy.toml:2: bad value for 'allow.sig"),
        ('[revocation]\ndisallowed = ["abc"]\n', "policy.toml:2: bad value for 'revocation.di"),
        ("deny = 3\n", "policy.toml:1: bad value for 'deny': expected a table"),
    ],
)
def test_more_bad_values(text, expected):
    assert error_of(text).startswith(expected)


def test_missing_crl_file_names_line(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "x"\n[revocation]\ncrls = [\n  "nope.crl",\n]\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:4: CRL file not found: {tmp_path / 'nope.crl'}"


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "\xff"\n')
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(bad)


def test_example_policy_in_the_repo_loads():
    policy = load_policy(EXAMPLES / "policy.toml")
    assert policy.mode == "audit"
    assert policy.guid == policy.base_guid == "{0b6a3e52-3f1c-4c8e-9a3d-5e2f7c1d4b90}"
    assert policy.require_page_hashes == "drivers"
    assert policy.min_digest == "sha256"
    assert len(policy.allow_signers) == 3 and policy.allow_signers[0].scope == "kernel"
    assert policy.deny_signers[0].publisher == "CAPCOM Co.,Ltd."
    assert len(policy.revocation.disallowed) == 1


def test_every_example_toml_loads():
    found = sorted(EXAMPLES.glob("*.toml"))
    assert found
    for path in found:
        assert load_policy(path).name


def test_dump_round_trips_every_field(tmp_path):
    policy = Policy(
        name='quote " backslash \\ tab \t del \x7f',
        id="id-1",
        mode="audit",
        drivers_must_be_signed=False,
        require_page_hashes="all",
        min_digest="sha384",
        allow_signers=(SignerRule(None, "Pub, Inc.", "1.3.6.1.5.5.7.3.3", "n", "user"),),
        allow_hashes=(HashRule("ab" * 32, "x"),),
        deny_hashes=(HashRule("cd" * 20), HashRule("ef" * 48, "n\n2", "kernel")),
        deny_page_hashes=(HashRule("01" * 32, "page", "kernel"),),
        deny_file_hashes=(HashRule("23" * 16, "md5 flat"),),
        deny_signers=(SignerRule("45" * 20, None, None, "ca", "all"),),
        revocation=RevocationConfig((tmp_path / "a.crl",), frozenset({"67" * 20})),
    )
    text = dump_policy(policy, ["header line", "second"])
    assert text.startswith("# header line\n# second\n")
    again = parse_policy(text, source=policy.source)
    assert again == policy


def test_toml_string_escapes_control_characters():
    for value in ["plain", 'a"b', "a\\b", "\x00\x1f\x7f", "é ünicode", "a\r\nb"]:
        assert tomllib.loads(f"v = {toml_string(value)}")["v"] == value
