"""The `codeintegrity` command: a thin click group whose subcommands load lazily.

Start-up time matters (small files verify in a few milliseconds), so no subcommand module, and
none of the heavy libraries they use, is imported until that subcommand runs.
"""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from . import exit_codes

# name -> (module, attribute, one-line help shown by `codeintegrity --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "verify": ("codeintegrity.cli.verify_cmd", "verify", "Judge PE files as Windows CI would."),
    "events": ("codeintegrity.cli.events_cmd", "events", "List, filter and export stored events."),
    "selftest": (
        "codeintegrity.cli.selftest_cmd",
        "selftest",
        "Run the cryptographic known-answer tests (event 5056).",
    ),
    "policy": (
        "codeintegrity.cli.policy_cmd",
        "policy",
        "Import (WDAC, LOLDrivers) and check policies.",
    ),
    "guard": ("codeintegrity.cli.guard_cmd", "guard", "Judge PE files as they are opened (root)."),
    "watch": ("codeintegrity.cli.watch_cmd", "watch", "Judge PE files as they are written."),
    "report": ("codeintegrity.cli.report_cmd", "report", "Write an HTML report with charts."),
    "image": ("codeintegrity.cli.image_cmd", "image", "Judge a Windows disk image as its CI does."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        command: click.Command = getattr(module, spec[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing help must not import every subcommand.
        rows = [(name, spec[2]) for name, spec in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codeintegrity")
def cli() -> None:
    """Offline Windows Code Integrity: verify PE images (EXE, DLL, SYS, EFI) exactly as
    Windows would judge them and raise the Security audit events 5038, 6281 and 6410."""


def main(argv: list[str] | None = None) -> None:
    # click turns a closed stdout (EPIPE, e.g. `| head`) into a quiet exit 1 by itself.
    try:
        cli.main(args=argv, prog_name="codeintegrity", standalone_mode=True)
    except KeyboardInterrupt:
        sys.stderr.write("codeintegrity: interrupted\n")
        sys.exit(exit_codes.INTERRUPTED)
