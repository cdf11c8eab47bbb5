"""Load a policy from TOML (stdlib tomllib) and reject anything it does not understand.

Every error is a one-line :class:`PolicyError` naming the file, the line and the key, for
example ``policy.toml:12: unknown key 'deny.hashs'``. tomllib reports no positions for keys or
values, so the line is found afterwards by scanning the text (:class:`_LineFinder`); it is only
built when there is an error, so loading a 2000-rule policy pays nothing for it.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, cast

from ..errors import PolicyError
from .dump import printable
from .inputs import MAX_POLICY_BYTES, read_bounded
from .model import (
    DIGEST_ORDER,
    HEX_LENGTHS,
    MODES,
    PAGE_HASH_REQUIREMENTS,
    SCOPES,
    HashRule,
    Policy,
    RevocationConfig,
    SignerRule,
    hex_algorithm,
    is_dotted_oid,
    normal_guid,
)

KeyPath = tuple[str | int, ...]

_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
# Possessive quantifiers: these run over attacker-controlled lines (multi-line strings too),
# and the lazy forms they replace backtracked quadratically over long runs of spaces.
_HEADER = re.compile(r"^\s*+(\[\[?)([^\]]*+)\]\]?\s*+(#.*)?$")
_KEY_LINE = re.compile(r"^\s*+([A-Za-z0-9_\-\"'. \t]++)=")


def load_policy(path: str | Path) -> Policy:
    """Read, parse and validate a policy file; CRL paths must exist (checked here, the edge)."""
    path = Path(path)
    raw = read_bounded(path, "policy", MAX_POLICY_BYTES)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        from .wdac import compiled_policy_kind

        kind = compiled_policy_kind(raw)
        if kind is not None:
            raise PolicyError(
                f"{path}: {kind}, not a policy TOML; convert its XML source with "
                "`codeintegrity policy import-wdac`"
            ) from None
        raise PolicyError(f"{path}: policy is not UTF-8 (byte {exc.start})") from None
    policy = parse_policy(
        text, source=str(path), base_dir=path.parent, file_sha256=hashlib.sha256(raw).hexdigest()
    )
    for number, crl in enumerate(policy.revocation.crls):
        if not crl.is_file():
            raw_name = tomllib.loads(text)["revocation"]["crls"][number]  # error path only
            problem = "is not a regular file" if crl.exists() else "not found"
            _Validator(text, str(path), None).fail(
                ("revocation", "crls", number), f"CRL file {problem}: {crl}", hint=raw_name
            )
    return policy


def parse_policy(
    text: str, *, source: str = "<policy>", base_dir: Path | None = None, file_sha256: str = ""
) -> Policy:
    """Parse policy TOML text into a :class:`Policy`. Pure: no file is opened. ``file_sha256``
    is the hash of the file's bytes (PolicyHash in events), computed by the caller that read it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        reason = _TOML_POSITION.sub("", message).strip()
        where = f"{source}:{match.group(1)}" if match else source
        raise PolicyError(f"{where}: TOML syntax error: {reason}") from None
    except RecursionError:
        raise PolicyError(f"{source}: TOML nested too deeply") from None
    except ValueError as exc:  # tomllib lets int()'s digit limit through (4300 digits)
        raise PolicyError(f"{source}: TOML value cannot be read: {_first_line(exc)}") from None
    return _Validator(text, source, base_dir).policy(data, file_sha256)


class _Validator:
    """Walks the parsed TOML, checking every key and value against the schema."""

    def __init__(self, text: str, source: str, base_dir: Path | None) -> None:
        self.text = text
        self.source = source
        self.base_dir = base_dir

    # --- errors -----------------------------------------------------------------------------
    def fail(self, path: KeyPath, message: str, *, hint: str | None) -> NoReturn:
        line = _LineFinder(self.text).locate(path, hint)
        where = f"{self.source}:{line}" if line else self.source
        raise PolicyError(printable(f"{where}: {message}"))  # key names are untrusted text

    def bad(self, path: KeyPath, expected: str, value: object) -> NoReturn:
        hint = value if isinstance(value, str) else None
        self.fail(
            path,
            f"bad value for '{_fmt(path)}': expected {expected}, got {_show(value)}",
            hint=hint,
        )

    def check_keys(self, path: KeyPath, table: dict[str, Any], allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.fail((*path, key), f"unknown key '{_fmt((*path, key))}'", hint=None)

    # --- typed getters ------------------------------------------------------------------------
    def table(self, path: KeyPath, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.bad(path, "a table", value)
        return value

    def array(self, path: KeyPath, value: object) -> list[Any]:
        if not isinstance(value, list):
            self.bad(path, "an array", value)
        return value

    def string(self, path: KeyPath, value: object) -> str:
        if not isinstance(value, str):
            self.bad(path, "a string", value)
        return value

    def boolean(self, path: KeyPath, value: object) -> bool:
        if not isinstance(value, bool):
            self.bad(path, "true or false", value)
        return value

    def choice(self, path: KeyPath, value: object, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            self.bad(path, "one of " + ", ".join(f'"{c}"' for c in choices), value)
        return value

    def guid(self, path: KeyPath, value: object) -> str:
        text = self.string(path, value)
        guid = normal_guid(text)
        if guid is None:
            self.bad(path, "a GUID such as {496a5746-5600-4cdd-b22e-333fd5614d00}", text)
        return guid

    def hex_hash(self, path: KeyPath, value: object) -> str:
        text = self.string(path, value).lower()
        if hex_algorithm(text) is None:
            lengths = ", ".join(str(n) for n in HEX_LENGTHS)
            self.fail(
                path,
                f"bad value for '{_fmt(path)}': a hash is {lengths} hex digits "
                f"(md5/sha1/sha256/sha384/sha512), got {_describe_hex(text)}",
                hint=self.string(path, value),
            )
        return text

    # --- schema -------------------------------------------------------------------------------
    def policy(self, data: dict[str, Any], file_sha256: str = "") -> Policy:
        top = {
            "name",
            "id",
            "guid",
            "base_guid",
            "mode",
            "drivers_must_be_signed",
            "require_page_hashes",
            "min_digest",
            "allow",
            "deny",
            "revocation",
        }
        self.check_keys((), data, top)
        fields: dict[str, Any] = {"source": self.source, "file_sha256": file_sha256}
        if "name" in data:
            fields["name"] = self.string(("name",), data["name"])
        if "id" in data:
            fields["id"] = self.string(("id",), data["id"])
        for key in ("guid", "base_guid"):
            if key in data:
                fields[key] = self.guid((key,), data[key])
        if "mode" in data:
            fields["mode"] = self.choice(("mode",), data["mode"], MODES)
        if "drivers_must_be_signed" in data:
            fields["drivers_must_be_signed"] = self.boolean(
                ("drivers_must_be_signed",), data["drivers_must_be_signed"]
            )
        if "require_page_hashes" in data:
            fields["require_page_hashes"] = self.choice(
                ("require_page_hashes",), data["require_page_hashes"], PAGE_HASH_REQUIREMENTS
            )
        if "min_digest" in data:
            fields["min_digest"] = self.choice(("min_digest",), data["min_digest"], DIGEST_ORDER)
        if "allow" in data:
            allow = self.table(("allow",), data["allow"])
            self.check_keys(("allow",), allow, {"signers", "hashes"})
            fields["allow_signers"] = self.signers(("allow", "signers"), allow, need_tbs=False)
            fields["allow_hashes"] = self.hashes(("allow", "hashes"), allow)
        if "deny" in data:
            deny = self.table(("deny",), data["deny"])
            self.check_keys(("deny",), deny, {"hashes", "page_hashes", "file_hashes", "signers"})
            fields["deny_hashes"] = self.hashes(("deny", "hashes"), deny)
            fields["deny_page_hashes"] = self.hashes(("deny", "page_hashes"), deny)
            fields["deny_file_hashes"] = self.hashes(("deny", "file_hashes"), deny)
            fields["deny_signers"] = self.signers(("deny", "signers"), deny, need_tbs=True)
        if "revocation" in data:
            fields["revocation"] = self.revocation(self.table(("revocation",), data["revocation"]))
        return Policy(**fields)

    def hashes(self, path: KeyPath, parent: dict[str, Any]) -> tuple[HashRule, ...]:
        if path[-1] not in parent:
            return ()
        rules: list[HashRule] = []
        for number, item in enumerate(self.array(path, parent[path[-1]])):
            where = (*path, number)
            if isinstance(item, str):
                rules.append(HashRule(self.hex_hash(where, item)))
                continue
            entry = self.table(where, item)
            self.check_keys(where, entry, {"hash", "name", "scope"})
            if "hash" not in entry:
                self.fail(where, f"'{_fmt(where)}' has no 'hash' key", hint=None)
            rules.append(
                HashRule(
                    self.hex_hash((*where, "hash"), entry["hash"]),
                    self.string((*where, "name"), entry.get("name", "")),
                    cast(Any, self.choice((*where, "scope"), entry.get("scope", "all"), SCOPES)),
                )
            )
        return tuple(rules)

    def signers(
        self, path: KeyPath, parent: dict[str, Any], *, need_tbs: bool
    ) -> tuple[SignerRule, ...]:
        if path[-1] not in parent:
            return ()
        rules: list[SignerRule] = []
        for number, item in enumerate(self.array(path, parent[path[-1]])):
            where = (*path, number)
            entry = self.table(where, item)
            self.check_keys(where, entry, {"tbs", "publisher", "eku", "name", "scope"})
            tbs = self.hex_hash((*where, "tbs"), entry["tbs"]) if "tbs" in entry else None
            publisher = None
            if "publisher" in entry:
                publisher = self.string((*where, "publisher"), entry["publisher"])
                if not publisher.strip():
                    self.bad((*where, "publisher"), "a non-empty name", publisher)
            eku = None
            if "eku" in entry:
                eku = self.string((*where, "eku"), entry["eku"])
                if not is_dotted_oid(eku):
                    self.bad((*where, "eku"), "a dotted OID such as 1.3.6.1.5.5.7.3.3", eku)
            if need_tbs and tbs is None:
                self.fail(where, f"'{_fmt(where)}' needs a 'tbs' hash", hint=None)
            if tbs is None and publisher is None and eku is None:
                self.fail(where, f"'{_fmt(where)}' needs 'tbs', 'publisher' or 'eku'", hint=None)
            rules.append(
                SignerRule(
                    tbs=tbs,
                    publisher=publisher,
                    eku=eku,
                    name=self.string((*where, "name"), entry.get("name", "")),
                    scope=cast(
                        Any, self.choice((*where, "scope"), entry.get("scope", "all"), SCOPES)
                    ),
                )
            )
        return tuple(rules)

    def revocation(self, table: dict[str, Any]) -> RevocationConfig:
        from ..revocation import normalize_disallowed

        self.check_keys(("revocation",), table, {"crls", "disallowed"})
        crls: list[Path] = []
        for number, item in enumerate(self.array(("revocation", "crls"), table.get("crls", []))):
            name = self.string(("revocation", "crls", number), item)
            path = Path(name)
            if not path.is_absolute() and self.base_dir is not None:
                path = self.base_dir / path
            crls.append(path)
        disallowed: set[str] = set()
        items = self.array(("revocation", "disallowed"), table.get("disallowed", []))
        for number, item in enumerate(items):
            where: KeyPath = ("revocation", "disallowed", number)
            value = self.string(where, item)
            try:
                disallowed |= normalize_disallowed([value])
            except PolicyError as exc:
                self.fail(where, f"bad value for '{_fmt(where)}': {exc}", hint=value)
        return RevocationConfig(tuple(crls), frozenset(disallowed))


class _LineFinder:
    """Maps dotted key paths to line numbers by scanning the TOML text (best effort)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.keys: dict[str, int] = {}
        table = ""
        arrays: dict[str, int] = {}
        for number, line in enumerate(self.lines, 1):
            header = _HEADER.match(line)
            if header:
                name = _norm_key(header.group(2))
                if header.group(1) == "[[":
                    index = arrays.get(name, 0)
                    arrays[name] = index + 1
                    table = f"{name}[{index}]"
                else:
                    table = name
                self.keys.setdefault(table, number)
                continue
            key = _KEY_LINE.match(line)
            if key:
                name = _norm_key(key.group(1))
                self.keys.setdefault(f"{table}.{name}" if table else name, number)

    def locate(self, path: KeyPath, hint: str | None) -> int | None:
        start, cut = 1, 0
        for cut in range(len(path), 0, -1):
            found = self.keys.get(_fmt(path[:cut]))
            if found is not None:
                start = found
                break
        else:
            cut = 0
        if cut == len(path) and hint is None:
            return start
        if hint is not None:
            quoted = (f'"{hint}"', f"'{hint}'")
            line = self._search(start, lambda text: any(q in text for q in quoted))
            if line is not None:
                return line
        keys = [part for part in path[cut:] if isinstance(part, str)]
        if keys:
            pattern = re.compile(rf"(^|[\s{{,]){re.escape(keys[-1])}\s*=")
            line = self._search(start, lambda text: bool(pattern.search(text)))
            if line is not None:
                return line
        return start if cut else None

    def _search(self, start: int, test: Callable[[str], bool]) -> int | None:
        for number in range(start, len(self.lines) + 1):
            if test(self.lines[number - 1]):
                return number
        return None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _norm_key(raw: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in raw.split("."))


def _fmt(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _show(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", list: "an array"}
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, dict):
        return "a table"
    return kinds.get(type(value), type(value).__name__)


def _describe_hex(text: str) -> str:
    bad = next((c for c in text if c not in "0123456789abcdef"), None)
    if bad is not None:
        return f"non-hex character {bad!r}"
    return f"{len(text)} digits"
