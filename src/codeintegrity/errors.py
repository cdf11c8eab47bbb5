"""The one exception hierarchy of codeintegrity.

Exceptions are for input that cannot be used at all (a file that is not a PE, a policy that
does not parse, a sink that cannot be opened). Verdicts about files are values: see
:mod:`codeintegrity.report`. Every error has a kebab-case ``reference`` so the CLI and JSON
output can name it, and ``diagnostics()`` renders it on one line.
"""

from __future__ import annotations


class CIError(Exception):
    """Root of every error raised on purpose by codeintegrity."""

    reference = "codeintegrity-error"

    def diagnostics(self) -> str:
        return str(self)


class InputError(CIError):
    """The bytes handed to a parser cannot be used."""

    reference = "input-error"


class MalformedError(InputError):
    """Structurally invalid input; carries where and what went wrong."""

    reference = "malformed-input"

    def __init__(self, offset: int | None, field: str, reason: str) -> None:
        self.offset = offset
        self.field = field
        self.reason = reason
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(f"{field}{where}: {reason}")


class MalformedImage(MalformedError):
    """The PE headers, sections or data directories are invalid."""

    reference = "malformed-image"


class MalformedSignature(MalformedError):
    """A WIN_CERTIFICATE entry or the PKCS#7 inside it is invalid."""

    reference = "malformed-signature"


class MalformedCatalog(MalformedError):
    """A .cat file (PKCS#7 over a certificate trust list) is invalid."""

    reference = "malformed-catalog"


class NotAPEFile(InputError):
    """The input does not start with an MZ/PE header at all."""

    reference = "not-a-pe-file"


class ConfigError(CIError):
    """Bad configuration: trust anchors, options, policy files."""

    reference = "config-error"


class PolicyError(ConfigError):
    """A policy file (TOML) or an imported WDAC/LOLDrivers file is invalid."""

    reference = "policy-error"


class TrustStoreError(ConfigError):
    """A trust anchor file cannot be read as PEM/DER certificates."""

    reference = "trust-store-error"


class SinkError(CIError):
    """An event sink URI is invalid or a sink cannot be opened."""

    reference = "sink-error"


class SelfTestError(CIError):
    """A cryptographic known-answer test failed; verification refuses to run."""

    reference = "self-test-failed"


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` of an exception as one line of at most ``limit`` characters (for
    errors from libraries, whose messages may span lines or name nothing but the type)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]
