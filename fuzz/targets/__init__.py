"""One module per fuzz target; each defines ``check(data: bytes) -> None`` and ``INPUT`` (what
the bytes are: a PE file, a DER signature, a catalog, XML, TOML, CSV/JSON)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

# target name -> module; the names are what fuzz/run.sh and the seed collector take.
TARGETS: dict[str, str] = {
    "pe": "fuzz.targets.pe",
    "verify": "fuzz.targets.verify",
    "tamper": "fuzz.targets.tamper",
    "pkcs7": "fuzz.targets.pkcs7",
    "catalog": "fuzz.targets.catalog",
    "wdac": "fuzz.targets.wdac",
    "policy": "fuzz.targets.policy",
    "loldrivers": "fuzz.targets.loldrivers",
}
# asn1crypto parses lazily: its decoder is where the signature targets' bytes go first.
_ASN1 = ("asn1crypto.core", "asn1crypto.parser", "asn1crypto.cms", "asn1crypto.x509")
_ENGINE = ("codeintegrity.reader", "codeintegrity.verify", "codeintegrity.report")
# What atheris instruments for coverage, per target: the code its bytes reach. (Instrumenting
# costs start-up time, about a second per large package, so each target names only its own.)
INSTRUMENT: dict[str, tuple[str, ...]] = {
    "pe": ("codeintegrity.reader", "codeintegrity.pe"),
    "verify": (*_ENGINE, "codeintegrity.pe", "codeintegrity.authenticode"),
    "tamper": (*_ENGINE, "codeintegrity.pe", "codeintegrity.authenticode"),
    "pkcs7": ("codeintegrity.authenticode", *_ASN1),
    "catalog": ("codeintegrity.reader", "codeintegrity.catalog", *_ASN1),
    "wdac": ("codeintegrity.policy",),
    "policy": ("codeintegrity.policy", "tomllib"),
    "loldrivers": ("codeintegrity.policy",),
}


def load(name: str) -> ModuleType:
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; known: {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[name])


def checker(name: str) -> Callable[[bytes], None]:
    check: Callable[[bytes], None] = load(name).check
    return check
