"""The whole engine, ``verify_bytes``, on arbitrary bytes.

Invariants: it never raises; a report always has a status; the status follows the findings
(``valid`` only with no error finding and at least one valid signature; ``unsigned`` never
with a signature result); every finding has a one-line detail; the
report survives its JSON form (what ``verify --json`` prints and the results cache stores).
"""

from __future__ import annotations

import json
from datetime import datetime

from codeintegrity.findings import Severity
from codeintegrity.limits import Limits
from codeintegrity.options import VerifyOptions
from codeintegrity.report import Report, Status
from codeintegrity.verify import verify_bytes

from ..common import JUDGED_AT, fixture_trust, one_line, require

INPUT = "a PE file"
LIMITS = Limits(max_page_hash_entries=4096, max_file_size=8 << 20)


def options() -> VerifyOptions:
    return VerifyOptions(
        trust=fixture_trust(),
        at=datetime.fromisoformat(JUDGED_AT),
        require_page_hashes="all",
        cert_padding_check=True,
        extra_digests=frozenset({"sha1", "sha256"}),
        first_page_digests=frozenset({"sha1", "sha256"}),
        flat_digests=frozenset({"sha256"}),
        limits=LIMITS,
    )


def check(data: bytes) -> None:
    report = verify_bytes(data, options(), path="fuzz.bin")
    check_report(report)


def check_report(report: Report) -> None:
    """Invariants every report holds, whatever the input (the tamper target uses them too)."""
    require(isinstance(report, Report), "verify_bytes did not return a Report")
    require(report.status in set(Status), f"no status: {report.status!r}")
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    if report.status is Status.VALID:
        require(not errors, "valid with an error finding")
        require(
            any(s.valid for s in report.signatures) or report.catalog is not None,
            "valid without a valid signature",
        )
        require(all(s.valid for s in report.signatures), "valid with an invalid signature")
    if report.status is Status.UNSIGNED:
        require(not report.signatures, "unsigned with signature results")
    if report.status is Status.MALFORMED:
        require(report.findings, "malformed without a finding")
    for finding in report.findings:
        one_line(finding.detail, f"finding {finding.code}")
    encoded = json.dumps(report.to_dict())
    again = Report.from_dict(json.loads(encoded))
    require(again.to_dict() == report.to_dict(), "report changes through its JSON form")
