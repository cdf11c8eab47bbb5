"""The WDAC (App Control) SiPolicy XML importer, ``import_wdac``, on the bytes of an XML file.

Invariants: the import raises only ``PolicyError`` (one line); an input that declares a DTD
(DOCTYPE, in whatever encoding expat detects) is never imported, since a DTD brings entity
expansion; what the import produces, written as ``policy import-wdac`` writes it, loads with
the policy loader to the same policy.
"""

from __future__ import annotations

from xml.parsers import expat

from codeintegrity.errors import PolicyError
from codeintegrity.policy.wdac import import_wdac

from ..common import one_line, require
from .policy import check_import_output

INPUT = "a SiPolicy XML file"


class _Declared(Exception):
    pass


def declares_dtd(data: bytes) -> bool:
    """Whether expat, reading the raw bytes (it detects UTF-16 without a BOM itself), meets a
    DOCTYPE or ENTITY declaration. Parsing stops there: nothing is expanded. A declared
    encoding expat cannot use is read as UTF-8 instead (the importer decodes the text itself
    and drops the declaration)."""

    def found(*_args: object) -> None:
        raise _Declared

    for encoding in (None, "utf-8"):
        parser = expat.ParserCreate(encoding)
        parser.StartDoctypeDeclHandler = found
        parser.EntityDeclHandler = found
        try:
            parser.Parse(data, True)
        except _Declared:
            return True
        except (LookupError, ValueError):
            # The declared encoding: "unknown encoding", "multi-byte encodings are not
            # supported" (utf-7); read as UTF-8 instead.
            continue
        except expat.ExpatError:
            return False
        return False
    return False


def check(data: bytes) -> None:
    try:
        result = import_wdac(data, source="fuzz.xml")
    except PolicyError as exc:
        one_line(exc.diagnostics(), "import_wdac")
        return
    require(not declares_dtd(data), "a SiPolicy that declares a DTD was imported")
    check_import_output(result)
