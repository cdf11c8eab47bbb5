"""The LOLDrivers importer, ``import_loldrivers``, on the bytes of drivers.csv or drivers.json.

Invariants: the import raises only ``PolicyError`` (one line); every rule it makes is a
lower-case hex digest of a known length; what it produces, written as
``policy import-loldrivers`` writes it, loads with the policy loader to the same policy.
"""

from __future__ import annotations

from codeintegrity.errors import PolicyError
from codeintegrity.policy.loldrivers import import_loldrivers
from codeintegrity.policy.model import HEX_LENGTHS

from ..common import one_line, require
from .policy import check_import_output

INPUT = "a LOLDrivers drivers.csv or drivers.json"
HEX = frozenset("0123456789abcdef")


def check(data: bytes) -> None:
    # The first byte picks whether MD5 values are imported (the --include-md5 switch).
    include_md5 = bool(data[:1]) and data[0] & 1 == 1
    try:
        result = import_loldrivers(data[1:], source="fuzz.csv", include_md5=include_md5)
    except PolicyError as exc:
        one_line(exc.diagnostics(), "import_loldrivers")
        return
    for rule in (*result.policy.deny_hashes, *result.policy.deny_file_hashes):
        require(len(rule.value) in HEX_LENGTHS, f"rule digest of {len(rule.value)} digits")
        require(set(rule.value) <= HEX, f"rule digest {rule.value!r} is not lower-case hex")
    check_import_output(result)
