"""The TOML policy loader (``parse_policy``), on the bytes of a policy file.

Invariants: loading raises only ``PolicyError`` (one line); a policy that loads survives
``dump_policy`` (what the importers write) and loads again to the same policy.
``check_import_output`` is the importers' invariant: what an import writes always loads.
"""

from __future__ import annotations

from dataclasses import replace

from codeintegrity.errors import PolicyError
from codeintegrity.policy.dump import dump_policy
from codeintegrity.policy.load import parse_policy
from codeintegrity.policy.model import ImportResult, Policy

from ..common import InvariantViolation, one_line, require

INPUT = "a policy TOML file"


def check(data: bytes) -> None:
    try:
        text = data.decode("utf-8-sig")  # what load_policy does with the file's bytes
    except UnicodeDecodeError:
        return
    try:
        policy = parse_policy(text, source="fuzz.toml")
    except PolicyError as exc:
        one_line(exc.diagnostics(), "parse_policy")
        return
    if policy.revocation.crls:
        return  # CRL paths are relative to a directory; dump_policy writes them resolved
    again = _reload(dump_policy(policy), "dump_policy output")
    require(_same(policy, again), "a loaded policy changes through dump_policy")


def check_import_output(result: ImportResult) -> Policy:
    """Write the import as the CLI does and load it back: it must load, with every rule."""
    comments = ["Imported by the fuzzer.", *result.found_lines(), *result.untranslated_lines()]
    loaded = _reload(dump_policy(result.policy, comments), "import output")
    require(_same(result.policy, loaded), "an imported policy changes when written and loaded")
    return loaded


def _reload(text: str, what: str) -> Policy:
    try:
        return parse_policy(text, source="written.toml")
    except PolicyError as exc:
        raise InvariantViolation(f"{what} does not load: {exc.diagnostics()}") from None


def _same(a: Policy, b: Policy) -> bool:
    return replace(a, source="") == replace(b, source="")
