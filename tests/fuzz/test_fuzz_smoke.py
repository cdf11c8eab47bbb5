"""The fuzz harnesses in CI.

1. Every harness's invariant function runs over its seed corpus and over deterministic
   mutations of it (no atheris needed): the invariants are tested on every platform.
2. The invariant functions really fail on the defects they exist to catch.
3. Each target runs under atheris for a short fixed budget (4 s or 20,000 executions from
   libFuzzer seed 1, two targets at a time), so a regression that the fuzzer reaches quickly
   fails CI. Long runs are ``fuzz/run.sh TARGET SECONDS`` (docs/fuzzing.md).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
from fuzz.common import ROOT, InvariantViolation
from fuzz.dictionary import DICT_DIR, TARGET_DICTS
from fuzz.seeds import seeds, write
from fuzz.targets import TARGETS, checker

SMOKE_SECONDS = 4
SMOKE_RUNS = 20_000
MUTATIONS_PER_TARGET = 40


@cache
def dictionary(target: str) -> list[bytes]:
    """The target's dictionary tokens, decoded from the libFuzzer format."""
    tokens = []
    for line in (DICT_DIR / TARGET_DICTS[target]).read_text().splitlines():
        match = re.fullmatch(r'\w+="(.*)"', line)
        if match:
            raw = re.sub(r"\\x([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), match.group(1))
            tokens.append(raw.encode("latin-1"))
    return tokens


def mutate(data: bytes, rng: random.Random, tokens: list[bytes]) -> bytes:
    """One libFuzzer-like mutation: cut, flip, overwrite a word, or insert a token."""
    out = bytearray(data)
    where = rng.randrange(len(out) + 1)
    kind = rng.randrange(5)
    if kind == 0:
        del out[where:]
    elif kind == 1 and out:
        out[min(where, len(out) - 1)] ^= 1 << rng.randrange(8)
    elif kind == 2:
        out[where : where + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f"])
    elif kind == 3:
        out[where:where] = rng.choice(tokens)
    else:
        out[where:where] = out[where : where + rng.randrange(1, 64)]
    return bytes(out)


@pytest.mark.parametrize("target", list(TARGETS))
def test_invariants_hold_over_the_seed_corpus(target: str) -> None:
    found = seeds(target)
    assert len(found) >= 3, f"{target}: the seed collector found {len(found)} seeds"
    check = checker(target)
    for _name, data in found:
        check(data)


@pytest.mark.parametrize("target", list(TARGETS))
def test_invariants_hold_over_deterministic_mutations(target: str) -> None:
    rng = random.Random(f"codeintegrity-{target}")
    found = seeds(target)
    check = checker(target)
    for number in range(MUTATIONS_PER_TARGET):
        data = found[number % len(found)][1]
        for _ in range(1 + number % 3):
            data = mutate(data, rng, dictionary(target))
        check(data)


# --- the invariants bite ------------------------------------------------------------------


def test_tamper_seeds_change_hashed_bytes() -> None:
    from fuzz.targets import tamper

    for name, data in seeds("tamper"):
        recipe = tamper.apply(data)
        assert recipe is not None, name
        base, tampered = recipe
        changed = [i for i, (x, y) in enumerate(zip(tampered, base.data, strict=True)) if x != y]
        hashed = [i for i in changed if any(a <= i < b for a, b in base.ranges)]
        assert changed and hashed == changed, name


def test_tamper_invariant_fails_when_a_tampered_file_is_valid(monkeypatch) -> None:
    """An engine that ignored the image hash would pass tampered files: the harness says so."""
    from fuzz.targets import tamper

    from codeintegrity.report import Status

    base = tamper.bases()[0]
    genuine = tamper.verify_bytes(base.data, tamper.options())
    assert genuine.status is Status.VALID
    monkeypatch.setattr(tamper, "verify_bytes", lambda *args, **kwargs: genuine)
    with pytest.raises(InvariantViolation, match="is valid"):
        tamper.check(b"\x00" + bytes([0x10, 0, 0, 0, 0x01]))


def test_report_invariant_fails_on_a_valid_report_with_an_error() -> None:
    from fuzz.targets.verify import check_report

    from codeintegrity.findings import Finding, FindingCode
    from codeintegrity.report import Report, Status

    finding = Finding(FindingCode.IMAGE_HASH_MISMATCH, "differs", signature=0)
    with pytest.raises(InvariantViolation, match="valid with an error"):
        check_report(Report(path="x", status=Status.VALID, findings=(finding,)))


def test_import_invariant_fails_when_the_output_does_not_load(monkeypatch) -> None:
    """An importer that wrote a policy the loader refuses is caught (issue 12, defect 5)."""
    from fuzz.targets import policy, wdac

    from codeintegrity.policy.wdac import import_wdac

    result = import_wdac(seeds("wdac")[0][1])
    policy.check_import_output(result)  # what the importer really writes loads
    monkeypatch.setattr(policy, "dump_policy", lambda *args, **kwargs: 'mode = "sometimes"\n')
    with pytest.raises(InvariantViolation, match="does not load"):
        policy.check_import_output(result)
    with pytest.raises(InvariantViolation, match="does not load"):
        wdac.check(seeds("wdac")[0][1])


def test_dtd_detection_sees_what_expat_sees() -> None:
    """The WDAC invariant spots a DTD in any encoding expat detects, and only a real one."""
    from fuzz.seeds import SMALL_SIPOLICY
    from fuzz.targets.wdac import declares_dtd

    declaration = '<?xml version="1.0" encoding="utf-8"?>\n'
    with_dtd = SMALL_SIPOLICY.replace(declaration, '<!DOCTYPE SiPolicy [<!ENTITY h "AB">]>\n')
    for encoding in ("utf-8", "utf-16", "utf-16-le", "utf-16-be"):
        assert declares_dtd(with_dtd.encode(encoding)), encoding
    unknown = '<?xml version="1.0" encoding="utf-4"?><!DOCTYPE x><x/>'
    assert declares_dtd(unknown.encode())  # expat does not know the encoding: read as UTF-8
    commented = SMALL_SIPOLICY.replace("<Rules>", "<!-- <!DOCTYPE x> --><Rules>")
    assert not declares_dtd(commented.encode("utf-16-le"))
    assert not any(declares_dtd(data) for _name, data in seeds("wdac"))


# --- crashes found by fuzzing stay fixed ----------------------------------------------------

CRASHES = sorted(p for p in (ROOT / "tests" / "data" / "fuzz").glob("*/*") if p.is_file())


@pytest.mark.parametrize("path", CRASHES, ids=[f"{p.parent.name}/{p.name}" for p in CRASHES])
def test_fuzz_finding_stays_fixed(path: Path) -> None:
    checker(path.parent.name)(path.read_bytes())


# --- atheris ----------------------------------------------------------------------------


@dataclasses.dataclass
class SmokeRun:
    returncode: int
    output: str
    runs: int
    artifacts: list[Path]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SmokeRun]:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip(
            "atheris is not installed (pip install -e '.[fuzz]'; .ci/run installs it when "
            "a wheel exists for this platform): the atheris smoke runs are skipped, the "
            "invariants above still ran over the seed corpus"
        )
    root = tmp_path_factory.mktemp("fuzz")

    def run(target: str) -> SmokeRun:
        corpus = root / target / "corpus"
        artifacts = root / target / "artifacts"
        artifacts.mkdir(parents=True)
        write(target, corpus)
        command = [
            sys.executable, "-m", "fuzz", target, "-seed=1", f"-runs={SMOKE_RUNS}",
            f"-max_total_time={SMOKE_SECONDS}", "-timeout=20", "-rss_limit_mb=2048",
            f"-dict={DICT_DIR / TARGET_DICTS[target]}", f"-artifact_prefix={artifacts}/",
            str(corpus),
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        output = done.stdout + done.stderr
        counted = re.findall(r"^Done (\d+) runs", output, re.MULTILINE)
        return SmokeRun(
            done.returncode, output, int(counted[-1]) if counted else 0, list(artifacts.iterdir())
        )

    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores: two targets at a time
        return dict(zip(TARGETS, pool.map(run, TARGETS), strict=True))


@pytest.mark.parametrize("target", list(TARGETS))
def test_atheris_smoke_run(target: str, smoke_runs: dict[str, SmokeRun]) -> None:
    run = smoke_runs[target]
    tail = "\n".join(run.output.splitlines()[-40:])
    assert run.returncode == 0 and not run.artifacts, (
        f"{target}: the fuzzer found a failure; reproduce with "
        f"`python -m fuzz {target} {' '.join(map(str, run.artifacts))}`\n{tail}"
    )
    # Every seed ran (then the fuzzer mutated them for the rest of the budget).
    assert run.runs >= len(seeds(target)), f"{target}: only {run.runs} executions\n{tail}"


# --- dictionaries and run records --------------------------------------------------------


def test_committed_dictionaries_match_the_generator() -> None:
    from fuzz.dictionary import files

    for name, text in files().items():
        assert (DICT_DIR / name).read_text() == text, f"run `python -m fuzz.dictionary` ({name})"
    assert set(TARGET_DICTS) == set(TARGETS)


def test_dictionary_oids_are_der_as_asn1crypto_encodes_them() -> None:
    from asn1crypto import core
    from fuzz.dictionary import _oids, der_oid

    oids = _oids()
    assert "1.3.6.1.4.1.311.2.1.4" in oids and "1.3.6.1.4.1.311.12.1.3" in oids
    for dotted in oids:
        assert der_oid(dotted) == core.ObjectIdentifier(dotted).dump(), dotted
    assert b"PE\x00\x00" in dictionary("pe") and b"MZ" in dictionary("pe")


def test_totals_sum_runs_per_target() -> None:
    from fuzz.totals import totals

    runs, seconds = totals("# header\n2026-01-01T00:00:00Z\tpe\t60\t1000\nx\tpe\t5\t20\n")
    assert runs == {"pe": 1020} and seconds == {"pe": 65}
