"""atheris entry point: ``python -m fuzz TARGET [libFuzzer options] [CORPUS_DIR ...]``.

The modules a target's bytes reach (``targets.INSTRUMENT``) are imported inside
``atheris.instrument_imports`` so coverage guides the fuzzer through them; codeintegrity
imports much lazily, so every submodule of those packages is loaded up front.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys


def _load(names: tuple[str, ...]) -> None:
    for name in names:
        module = importlib.import_module(name)
        for info in pkgutil.iter_modules(getattr(module, "__path__", []), f"{name}."):
            importlib.import_module(info.name)


def main(argv: list[str]) -> int:
    from .targets import INSTRUMENT, TARGETS

    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: python -m fuzz {{{'|'.join(TARGETS)}}} [libFuzzer options] [CORPUS...]")
        return 2
    import atheris

    target = argv[1]
    with atheris.instrument_imports(include=list(INSTRUMENT[target])):
        _load(INSTRUMENT[target])

    from .targets import checker

    check = checker(target)
    check(b"")  # build caches (trust store, tamper bases) before the first timed execution
    atheris.Setup([argv[0], *argv[2:]], check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
