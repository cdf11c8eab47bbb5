"""Authenticode: PKCS#7 signatures of PE images, their signers, timestamps and trust.

Names are resolved lazily so importing the package does not pull asn1crypto, cryptography or
pyhanko-certvalidator onto the CLI start-up path.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .certinfo import cert_info
    from .signeddata import Signature, parse_signatures
    from .signer import SignerVerdict, verify_signed_data, verify_signer
    from .trust import TrustStore

_EXPORTS = {
    "Signature": "signeddata",
    "parse_signatures": "signeddata",
    "SignerVerdict": "signer",
    "verify_signer": "signer",
    "verify_signed_data": "signer",
    "TrustStore": "trust",
    "cert_info": "certinfo",
}

__all__ = [
    "Signature",
    "SignerVerdict",
    "TrustStore",
    "cert_info",
    "parse_signatures",
    "verify_signed_data",
    "verify_signer",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
