"""The WDAC (App Control) SiPolicy XML importer, ``import_wdac``, on the bytes of an XML file.

Invariants: the import raises only ``PolicyError`` (one line), in well under a second per
input (no entity expansion); what it produces, written as ``policy import-wdac`` writes it,
loads with the policy loader to the same policy.
"""

from __future__ import annotations

from codeintegrity.errors import PolicyError
from codeintegrity.policy.wdac import import_wdac

from ..common import one_line
from .policy import check_import_output

INPUT = "a SiPolicy XML file"


def check(data: bytes) -> None:
    try:
        result = import_wdac(data, source="fuzz.xml")
    except PolicyError as exc:
        one_line(exc.diagnostics(), "import_wdac")
        return
    check_import_output(result)
