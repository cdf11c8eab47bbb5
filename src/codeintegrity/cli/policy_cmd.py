"""`codeintegrity policy`: import WDAC and LOLDrivers data as policies, check policy files."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from ..policy.dump import printable
from . import exit_codes

if TYPE_CHECKING:
    from ..policy.model import ImportResult, Mode

_MODE = click.Choice(["audit", "enforce"])
# Input paths are checked by the loaders, not by click: a directory, a device or an unreadable
# file is then a one-line "cannot read" error with exit 4, like every other bad policy input.
_INPUT = click.Path(path_type=str)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def policy() -> None:
    """Import and check policies (TOML; see docs/policy.md)."""


@policy.command("check")
@click.argument("path", type=_INPUT)
def check(path: str) -> None:
    """Validate a policy file and print its summary. Exit 0, or 4 with the error.

    The CRL files the policy names are parsed too, as `verify --policy` would.
    """
    from ..errors import PolicyError
    from ..policy.load import load_policy

    try:
        loaded = load_policy(path)
        crl_entries = _load_crls(loaded.revocation.crls)
    except PolicyError as exc:
        _fail(exc.diagnostics())
    _say(f"{path}: OK")
    for line in loaded.summary():
        _say(f"  {line}")
    if crl_entries is not None:
        _say(f"  revoked certificates listed by the CRLs: {crl_entries}")


def _load_crls(paths: tuple[Path, ...]) -> int | None:
    """Revoked entries in the policy's CRLs (None without CRLs); raises PolicyError."""
    if not paths:
        return None
    from ..revocation import RevocationSources

    sources = RevocationSources.load(paths)
    return sum(len(crl.crl) for crl in sources.crls)


@policy.command("import-wdac")
@click.argument("sipolicy", type=_INPUT)
@click.option("-o", "--output", type=_INPUT, help="Write here.")
@click.option("--mode", type=_MODE, help="Override the mode (default: the XML's Audit Mode).")
def import_wdac_cmd(sipolicy: str, output: str | None, mode: str | None) -> None:
    """Convert an App Control (WDAC) policy (SiPolicy XML, or compiled .p7b/.cip) into TOML.

    What cannot be translated (file name/version rules, signers narrowed by FileAttribRef,
    options with no offline meaning, ...) is listed on stderr, one line per kind.
    """
    from ..errors import PolicyError
    from ..policy.sipolicy_bin import import_wdac_any as import_wdac

    try:
        result = import_wdac(_read(sipolicy), source=sipolicy)
    except PolicyError as exc:
        _fail(exc.diagnostics())
    _write(result, sipolicy, "import-wdac", output, mode)


@policy.command("import-loldrivers")
@click.argument("catalogue", type=_INPUT)
@click.option("-o", "--output", type=_INPUT, help="Write here.")
@click.option("--mode", type=_MODE, default="enforce", show_default=True)
@click.option("--include-md5", is_flag=True, help="Also deny MD5 hashes (weak evidence).")
def import_loldrivers_cmd(catalogue: str, output: str | None, mode: str, include_md5: bool) -> None:
    """Turn the LOLDrivers catalogue (drivers.csv or drivers.json) into hash deny rules."""
    from ..errors import PolicyError
    from ..policy.loldrivers import import_loldrivers

    try:
        result = import_loldrivers(_read(catalogue), source=catalogue, include_md5=include_md5)
    except PolicyError as exc:
        _fail(exc.diagnostics())
    _write(result, catalogue, "import-loldrivers", output, mode)


def _read(path: str) -> bytes:
    from ..errors import PolicyError
    from ..policy.inputs import MAX_IMPORT_BYTES, read_bounded

    try:
        return read_bounded(path, "input", MAX_IMPORT_BYTES)
    except PolicyError as exc:
        _fail(exc.diagnostics())


def _mode(value: str) -> Mode:
    """click.Choice has checked the value; this narrows it for the type checker."""
    return "audit" if value == "audit" else "enforce"


def _write(
    result: ImportResult, source: str, command: str, output: str | None, mode: str | None
) -> None:
    from ..errors import PolicyError
    from ..policy.dump import dump_loadable

    imported = result.policy if mode is None else replace(result.policy, mode=_mode(mode))
    comments = [
        f"Imported from {Path(source).name} by `codeintegrity policy {command}`.",
        "Found in the input:",
        *(f"  {line}" for line in result.found_lines()),
    ]
    if result.untranslated:
        skipped = (f"  {count} x {kind}" for kind, count in result.untranslated.items())
        comments += ["Not translated:", *skipped]
    try:
        text = dump_loadable(imported, comments)
    except PolicyError as exc:
        _fail(exc.diagnostics())
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            _fail(f"{output}: cannot write: {exc.strerror or exc}")
    rules = (
        len(imported.deny_hashes)
        + len(imported.deny_page_hashes)
        + len(imported.deny_file_hashes)
        + len(imported.deny_signers)
        + len(imported.allow_hashes)
        + len(imported.allow_signers)
    )
    _say(
        f"codeintegrity: imported {rules} rules from {source} in {result.seconds:.2f} s "
        f"(mode {imported.mode})",
        err=True,
    )
    for line in result.untranslated_lines():
        _say(f"codeintegrity: {line}", err=True)


def _say(text: str, *, err: bool = False) -> None:
    """Echo a line that may hold text from the input (policy names, rule kinds)."""
    click.echo(printable(text), err=err)


def _fail(message: str) -> NoReturn:
    _say(f"codeintegrity: {message}", err=True)
    sys.exit(exit_codes.CONFIG)
