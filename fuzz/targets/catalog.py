"""Catalog files (.cat): the CTL parser (``parse_catalog``: envelope, header, every member)
and the catalog signature check the index runs (``verify_signed_data`` with szOID_CTL).

Invariants: parsing raises only ``MalformedCatalog`` (one line); the envelope alone agrees
with the whole parse (signer count); members stay within the limit, their tags render, their
digests have their algorithm's size, a page-hash table comes with its algorithm; the
signature check never raises, and an unsigned or untrusted catalog always says why.
"""

from __future__ import annotations

from datetime import datetime

from codeintegrity.authenticode import oids
from codeintegrity.authenticode.signer import verify_signed_data
from codeintegrity.catalog.ctl import parse_catalog, parse_envelope
from codeintegrity.errors import MalformedCatalog
from codeintegrity.findings import Severity
from codeintegrity.limits import Limits

from ..common import JUDGED_AT, fixture_trust, one_line, require

INPUT = "a catalog file (.cat)"
LIMITS = Limits(max_catalog_members=10_000)
AT = datetime.fromisoformat(JUDGED_AT)


def check(data: bytes) -> None:
    try:
        catalog = parse_catalog(data, LIMITS)
    except MalformedCatalog as exc:
        one_line(exc.diagnostics(), "parse_catalog")
        return
    envelope = parse_envelope(data, LIMITS)
    require(envelope.signer_count == catalog.signer_count, "envelope and catalog disagree")
    require(catalog.version in (1, 2), f"catalog version {catalog.version}")
    require(len(catalog.members) <= LIMITS.max_catalog_members, "more members than the limit")
    for member in catalog.members:
        require(isinstance(member.tag_text, str), "member tag does not render")
        size = oids.DIGEST_SIZES.get(member.digest_algorithm)
        if size is not None:
            require(len(member.digest) == size, f"{member.digest_algorithm} digest size")
        require(
            (member.page_hash_raw is None) == (member.page_hash_algorithm is None),
            "page-hash table and algorithm disagree",
        )
    if catalog.signed_data is None or not catalog.signed:
        return
    verdict = verify_signed_data(
        catalog.signed_data,
        index=-1,
        trust=fixture_trust(),
        at=AT,
        expected_content_type=oids.CTL,
    )
    for finding in verdict.findings:
        one_line(finding.detail, f"finding {finding.code}")
    if not verdict.signature_valid or not verdict.trusted:
        require(
            any(f.severity is Severity.ERROR for f in verdict.findings),
            "catalog signature not valid or not trusted, and no error says why",
        )
