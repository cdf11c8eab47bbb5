"""Fuzzing harnesses for every codeintegrity parser that reads untrusted bytes.

Each target in :mod:`fuzz.targets` exposes ``check(data: bytes) -> None``: it runs one parser
(or the whole engine) on ``data`` and checks invariants, raising :class:`InvariantViolation`
when one does not hold. The same function is driven by atheris (``python -m fuzz TARGET``,
``fuzz/run.sh``) and, deterministically over the seed corpus, by ``tests/fuzz``.

Nothing here imports codeintegrity at import time: the atheris entry point must instrument
the package before it is loaded.
"""
