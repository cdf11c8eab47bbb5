"""Resource limits applied to untrusted input. Limits are configuration, not constants."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds for every attacker-controlled quantity a parser walks over."""

    max_file_size: int = 4 * GIB
    # The PE spec caps NumberOfSections at 96; the Windows loader enforces the same.
    max_sections: int = 96
    max_cert_table_size: int = 32 * MIB
    max_cert_entries: int = 16
    # Nested signatures (1.3.6.1.4.1.311.2.4.1) may recurse; real files use depth 1.
    max_nesting_depth: int = 4
    max_signatures: int = 32
    # One entry per 4 KiB page: a 4 GiB image has about one million pages.
    max_page_hash_entries: int = 1_100_000
    max_certificates_per_signature: int = 64
    max_catalog_members: int = 2_000_000
    max_catalog_size: int = 256 * MIB


DEFAULT_LIMITS = Limits()
