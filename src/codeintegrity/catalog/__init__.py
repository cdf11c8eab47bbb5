"""Windows catalog (.cat) files: parsing (:mod:`.ctl`) and the persisted index (:mod:`.index`)."""

from __future__ import annotations

from .ctl import Catalog, CatalogMember, parse_catalog
from .index import CatalogIndex, IndexedMember, IndexStats

__all__ = [
    "Catalog",
    "CatalogIndex",
    "CatalogMember",
    "IndexStats",
    "IndexedMember",
    "parse_catalog",
]
