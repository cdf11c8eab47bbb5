"""Options of one verification run. Frozen, so a run cannot change them half-way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from .limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from .authenticode.trust import TrustStore
    from .catalog.index import CatalogIndex
    from .revocation import RevocationSources

PageHashRequirement = Literal["off", "drivers", "all"]


@dataclass(frozen=True)
class VerifyOptions:
    """How to judge files. The defaults judge like a stock Windows: Microsoft's roots, no
    page-hash requirement, kernel drivers must be signed, padding inside the certificate table
    reported but tolerated (EnableCertPaddingCheck off)."""

    trust: TrustStore | None = None  # None: TrustStore.default() (Microsoft's root program)
    at: datetime | None = None  # judge the chain at this time when there is no valid timestamp
    require_page_hashes: PageHashRequirement = "off"
    drivers_must_be_signed: bool = True
    cert_padding_check: bool = False
    catalogs: CatalogIndex | None = None
    revocation: RevocationSources | None = None
    # Authenticode digests computed on top of what the signatures need (reports, deny lists).
    # SHA-256 alone by default: each extra algorithm is another stream over the whole file.
    extra_digests: frozenset[str] = frozenset({"sha256"})
    first_page_digests: frozenset[str] = frozenset()
    flat_digests: frozenset[str] = frozenset()
    limits: Limits = field(default=DEFAULT_LIMITS)
