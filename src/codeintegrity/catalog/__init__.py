"""Windows catalog (.cat) files: parsing (:mod:`.ctl`) and the persisted index (:mod:`.index`).

The names are loaded on first use: importing :mod:`.match` (the engine's catalog lookup)
loads neither the parser nor the index (SQLite) until they are needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ctl import Catalog, CatalogMember, parse_catalog
    from .index import CatalogIndex, IndexedMember, IndexStats

_HOMES = {
    "Catalog": ".ctl",
    "CatalogMember": ".ctl",
    "parse_catalog": ".ctl",
    "CatalogIndex": ".index",
    "IndexedMember": ".index",
    "IndexStats": ".index",
}

__all__ = [
    "Catalog",
    "CatalogIndex",
    "CatalogMember",
    "IndexStats",
    "IndexedMember",
    "parse_catalog",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(home, __name__), name)
