"""Policy inputs built to hurt: deep nesting, huge numbers, backtracking bait, endless files.

Each must end quickly in a one-line PolicyError (or load), never in a traceback or a hang.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from codeintegrity.errors import PolicyError
from codeintegrity.policy.dump import dump_policy, printable, toml_string
from codeintegrity.policy.inputs import read_bounded
from codeintegrity.policy.load import load_policy, parse_policy
from codeintegrity.policy.loldrivers import import_loldrivers
from codeintegrity.policy.wdac import import_wdac

from .test_wdac import MINIMAL

# Long enough that the quadratic regexes this replaces took minutes (80 KB took 17 s).
LONG = 500_000
SHA1 = "2e6d61fa32e12fe4abf7b7d87aa6824f5f528000"


def one_line_error(call) -> str:
    with pytest.raises(PolicyError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    return message


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


# --- TOML ------------------------------------------------------------------------------------


def test_deeply_nested_toml_is_a_policy_error():
    text = "a = " + "[" * 50_000 + "]" * 50_000 + "\n"
    assert one_line_error(lambda: parse_policy(text, source="p.toml")) == (
        "p.toml: TOML nested too deeply"
    )


def test_integer_past_pythons_digit_limit_is_a_policy_error():
    text = "name = " + "9" * 5000 + "\n"
    message = one_line_error(lambda: parse_policy(text, source="p.toml"))
    assert message.startswith("p.toml: TOML value cannot be read: ") and "4300" in message


def test_huge_but_legal_integers_are_a_type_error_not_a_crash():
    text = "drivers_must_be_signed = " + "9" * 4000 + "\n"
    message = one_line_error(lambda: parse_policy(text, source="p.toml"))
    assert message == (
        "p.toml:1: bad value for 'drivers_must_be_signed': expected true or false, got an integer"
    )


@pytest.mark.parametrize("bait", ["  a" + " " * LONG, "[ a" + " " * LONG, "[[" + " " * LONG])
def test_line_finder_is_linear_on_long_lines(bait):
    # The bait sits in a multi-line string: legal TOML that the line finder still scans.
    text = f'name = "x"\nnotes = """\n{bait}\n"""\n'

    def fail() -> None:
        message = one_line_error(lambda: parse_policy(text, source="p.toml"))
        assert message == "p.toml:2: unknown key 'notes'"

    assert timed(fail) < 10


def test_line_finder_still_finds_keys_inside_tables():
    text = '[deny]\n  hashes   =  [\n  "zz",\n]\n'
    message = one_line_error(lambda: parse_policy(text, source="p.toml"))
    assert message.startswith("p.toml:3: bad value for 'deny.hashes[0]'")
    text = f'[[ allow.signers ]]\ntbs = "{SHA1}"\n[[allow.signers]]\n  publisher\t= 5\n'
    message = one_line_error(lambda: parse_policy(text, source="p.toml"))
    assert message.startswith("p.toml:4: bad value for 'allow.signers[1].publisher'")


def test_crl_path_that_is_not_a_regular_file(tmp_path):
    (tmp_path / "crls").mkdir()
    path = tmp_path / "p.toml"
    path.write_text('name = "x"\n[revocation]\ncrls = ["crls"]\n')
    assert one_line_error(lambda: load_policy(path)) == (
        f"{path}:3: CRL file is not a regular file: {tmp_path / 'crls'}"
    )


# --- WDAC XML --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "<?xml" + " " * LONG + "x",
        '<?xml version="1.0" encoding' + " " * LONG + "=x ?><SiPolicy/>",
        "<!" + " " * LONG + "DOCTYP",
    ],
)
def test_xml_declaration_handling_is_linear(text):
    assert timed(lambda: one_line_error(lambda: import_wdac(text.encode()))) < 10


def test_spaced_encoding_declaration_is_honoured_like_the_plain_one():
    expected = import_wdac(MINIMAL, source="p.xml").policy
    text = MINIMAL.replace('encoding="utf-8"', "encoding = 'UTF-16'")
    result = import_wdac(b"\xff\xfe" + text.encode("utf-16-le"), source="p.xml")
    assert result.policy == expected
    assert [rule.value for rule in result.policy.deny_hashes] == ["cd" * 20]


# --- LOLDrivers JSON -------------------------------------------------------------------------


def test_deeply_nested_json_is_a_policy_error():
    data = "[" * 50_000 + "]" * 50_000
    assert one_line_error(lambda: import_loldrivers(data, source="d.json")) == (
        "d.json: JSON nested too deeply"
    )


def test_json_integer_past_the_digit_limit_is_a_policy_error():
    data = '[{"Id": 1, "KnownVulnerableSamples": [{"SHA256": ' + "9" * 5000 + "}]}]"
    message = one_line_error(lambda: import_loldrivers(data, source="d.json"))
    assert message.startswith("d.json: JSON value cannot be read: ")


# --- the bounded read ------------------------------------------------------------------------


def test_read_bounded_refuses_one_byte_past_the_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, "policy", 100) == b"x" * 100
    assert one_line_error(lambda: read_bounded(path, "policy", 99)) == (
        f"{path}: policy is larger than 99 bytes"
    )


def test_read_bounded_names_what_cannot_be_read(tmp_path):
    assert one_line_error(lambda: read_bounded(tmp_path, "CRL", 10)) == (
        f"{tmp_path}: cannot read CRL: Is a directory"
    )
    message = one_line_error(lambda: read_bounded("a\0b", "policy", 10))
    assert message.startswith("'a\\x00b': cannot read policy:")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_read_bounded_reads_a_pipe_and_stops_at_the_bound(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def write(count: int) -> None:
        try:
            with Path(fifo).open("wb") as handle:
                handle.write(b"y" * count)
        except BrokenPipeError:
            pass  # the reader stopped at the bound and closed its end

    writer = threading.Thread(target=write, args=(10,))
    writer.start()
    assert read_bounded(fifo, "policy", 10) == b"y" * 10
    writer.join(timeout=10)
    writer = threading.Thread(target=write, args=(1 << 20,))
    writer.start()
    assert "larger than" in one_line_error(lambda: read_bounded(fifo, "policy", 1000))
    writer.join(timeout=10)
    assert not writer.is_alive()


# --- what goes back out: TOML and terminal text ----------------------------------------------


def test_imported_names_with_surrogates_and_controls_dump_to_loadable_toml():
    digest = "ab" * 32
    data = (
        '[{"Id": "x\\ud800", "Tags": ["drv\\u001b[2J.sys"],'
        f' "KnownVulnerableSamples": [{{"Authentihash": {{"SHA256": "{digest}"}}}}]}}]'
    )
    policy = import_loldrivers(data, source="d.json").policy
    (rule,) = policy.deny_hashes
    assert rule.name == "LOLDrivers x\ud800 drv\x1b[2J.sys"
    text = dump_policy(policy, ["from d.json \x1b]0;title\x07"])
    assert not any(ch in text for ch in "\x1b\x07\ud800")
    assert "# from d.json \\x1b]0;title\\x07\n" in text
    (loaded,) = parse_policy(text).deny_hashes
    assert (loaded.value, loaded.name) == (digest, "LOLDrivers x\ufffd drv\x1b[2J.sys")


def test_toml_string_round_trips_every_printable_and_control_character():
    value = "".join(chr(c) for c in range(0x00, 0x250)) + "\u202e\u2028\U0001f600\U000e0001"
    assert parse_policy(f"name = {toml_string(value)}\n").name == value
    assert toml_string(value).isprintable()


def test_printable_escapes_only_what_a_terminal_would_act_on():
    assert printable("plain näme, tab\tand ünïcode ✓") == "plain näme, tab\\tand ünïcode ✓"
    assert printable("\x1b[31m\x9b\u202e") == "\\x1b[31m\\x9b\\u202e"
