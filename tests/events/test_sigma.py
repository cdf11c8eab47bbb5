"""A real consumer: a Sigma rule, compiled by pySigma's SQLite backend, run on our events."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from codeintegrity.cli.events_cmd import events as events_command
from codeintegrity.events.pipeline import open_pipeline

from ..conftest import FIXTURES

pytest.importorskip("sigma.backends.sqlite", reason="pysigma-backend-sqlite not installed")

RULE = """
title: Failed Code Integrity Checks
id: 470ec5fa-7b4e-4071-b200-4c753100f49b
status: test
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 5038
            - 6281
    condition: selection
level: informational
"""


def compile_rule(rule: str) -> str:
    from sigma.backends.sqlite import sqliteBackend
    from sigma.collection import SigmaCollection
    from sigma.pipelines.common import logsource_windows, windows_logsource_mapping
    from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
    from sigma.processing.transformations import AddConditionTransformation

    # What pySigma-pipeline-windows does for `service: security` (its releases still pin
    # pysigma<2, so the mapping is rebuilt here from pySigma's own table).
    channel = ProcessingPipeline(
        name="windows channels",
        items=[
            ProcessingItem(
                identifier=f"windows_{service}_channel",
                transformation=AddConditionTransformation(
                    {"Channel": windows_logsource_mapping[service]}
                ),
                rule_conditions=[logsource_windows(service)],
            )
            for service in ("security", "codeintegrity-operational")
        ],
    )
    (query,) = sqliteBackend(channel).convert(SigmaCollection.from_yaml(rule))
    return query


def load_logs(rows: list[dict[str, object]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    columns = sorted({key for row in rows for key in row})
    db.execute("CREATE TABLE logs (" + ", ".join(f'"{c}"' for c in columns) + ")")
    db.executemany(
        "INSERT INTO logs VALUES (" + ", ".join("?" * len(columns)) + ")",
        [[row.get(c) for c in columns] for row in rows],
    )
    return db


def test_sigma_rule_finds_exactly_the_failing_files(tmp_path: Path):
    verify = pytest.importorskip("codeintegrity.verify", reason="engine not built yet")
    from codeintegrity.authenticode.trust import TrustStore
    from codeintegrity.options import VerifyOptions

    store = tmp_path / "events.sqlite3"
    options = VerifyOptions(trust=TrustStore.from_paths([str(FIXTURES.parent / "pki" / "ca.pem")]))
    files = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".exe", ".efi"))
    expected: set[str] = set()
    with open_pipeline([], store_path=str(store)) as pipeline:
        for path in files:
            report = verify.verify_path(str(path), options)
            pipeline.emit_report(report)
            if {5038, 6281} & set(report.event_ids):
                expected.add(str(path))
    # Independent of the engine's own verdicts: the corpus README's table.
    assert str(FIXTURES / "bad_flip_text.exe") in expected
    assert str(FIXTURES / "bad_pagehash_only_sha256.exe") in expected
    assert str(FIXTURES / "t64_sha256_ph.exe") not in expected

    result = CliRunner().invoke(events_command, ["--store", str(store), "--format", "flat"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["Channel"] for r in rows} == {
        "Security",
        "Microsoft-Windows-CodeIntegrity/Operational",
    }

    query = compile_rule(RULE)
    assert "Channel='Security'" in query
    db = load_logs(rows)
    matched = db.execute(query).fetchall()
    names = [d[0] for d in db.execute(query).description]
    found = [dict(zip(names, row, strict=True))["param1"] for row in matched]
    assert set(found) == expected
    # One 5038 and/or one 6281 per file, never duplicates.
    assert len(found) == len(
        [r for r in rows if r["Channel"] == "Security" and r["EventID"] in (5038, 6281)]
    )


# The current rule's exclusions (SigmaHQ win_security_codeintegrity_check_failure.yml): vendor
# paths written the Windows way, which only NT-mapped paths can match.
RULE_WITH_EXCLUSIONS = """
title: Failed Code Integrity Checks
id: 470ec5fa-7b4e-4071-b200-4c753100f49b
status: stable
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 5038
            - 6281
    filter_optional_crowdstrike:
        param1|contains:
            - '\\CSFalconServiceUninstallTool_'
            - '\\Program Files\\CrowdStrike\\'
            - '\\System32\\drivers\\CrowdStrike\\'
            - '\\Windows\\System32\\ScriptControl64_'
    filter_optional_sophos:
        param1|contains: '\\Program Files\\Sophos\\'
    condition: selection and not 1 of filter_optional_*
level: informational
"""


def test_sigma_exclusions_behave_as_on_windows_when_nt_paths_are_mapped(tmp_path: Path):
    from codeintegrity.events.build import events_for_report
    from codeintegrity.events.render_ecs import to_flat

    from .reports import HOST, tampered_report

    mount = tmp_path / "c"
    sophos = str(mount / "Program Files" / "Sophos" / "hmpalert.sys")
    tool = str(mount / "Tools" / "bad.exe")
    query = compile_rule(RULE_WITH_EXCLUSIONS)

    def fired(host) -> set[str]:
        rows = [
            to_flat(e)
            for path in (sophos, tool)
            for e in events_for_report(tampered_report(path), host=host)
        ]
        db = load_logs(rows)
        cursor = db.execute(query)
        names = [d[0] for d in cursor.description]
        return {dict(zip(names, row, strict=True))["param1"] for row in cursor.fetchall()}

    volume = "\\Device\\HarddiskVolume3"
    mapped = fired(HOST.with_nt_paths([f"{mount}={volume}"]))
    assert mapped == {volume + "\\Tools\\bad.exe"}  # the Sophos driver is excluded, as on Windows
    # Unmapped POSIX paths: the Windows-style exclusion cannot match, both fire.
    assert fired(HOST) == {sophos, tool}


# --- every SigmaHQ rule on the event ids we write (tests/data/sigma, with provenance) ---------

SIGMA_RULES = Path(__file__).resolve().parents[1] / "data" / "sigma"
_PATH_FIELDS = ("param1", "FileNameBuffer", "File Name")


def fired_by(query: str, db: sqlite3.Connection) -> set[tuple[int, str]]:
    """(EventID, file path) of every row the compiled rule selects."""
    cursor = db.execute(query)
    names = [d[0] for d in cursor.description]
    out: set[tuple[int, str]] = set()
    for row in cursor.fetchall():
        record = dict(zip(names, row, strict=True))
        path = next(str(record[f]) for f in _PATH_FIELDS if record.get(f))
        out.add((int(record["EventID"]), path))
    return out


def test_every_sigmahq_rule_fires_on_exactly_the_events_windows_would_raise(tmp_path: Path):
    from . import reports

    tampered = "/data/tampered.exe"
    blocked, audited = "/data/blocked.sys", "/data/audited.sys"
    revoked_driver, revoked_image = "/data/revoked.sys", "/data/revoked.dll"
    unsigned, shared = "/data/unsigned.sys", "/data/shared.dll"
    made = [
        reports.tampered_report(tampered),  # 3033 + 5038 + 6281
        reports.denied_report("enforce", blocked),  # 3077 + 5038
        reports.denied_report("audit", audited),  # 3076 only
        reports.revoked_report(revoked_driver, driver=True),  # 3023 + 6281
        reports.revoked_report(revoked_image, driver=False),  # 3036 + 6281
        replace(reports.unsigned_driver_report(), path=unsigned),  # 3004 + 5038
        replace(reports.shared_writable_report(), path=shared),  # 3063 + 6410
        reports.valid_report(),  # nothing
    ]
    store = tmp_path / "events.sqlite3"
    with open_pipeline([], store_path=str(store)) as pipeline:
        for report in made:
            pipeline.emit_report(report)
    result = CliRunner().invoke(events_command, ["--store", str(store), "--format", "flat"])
    assert result.exit_code == 0, result.output
    db = load_logs([json.loads(line) for line in result.stdout.splitlines()])

    expected: dict[str, set[tuple[int, str]]] = {
        "win_security_codeintegrity_check_failure.yml": {
            (5038, tampered),
            (6281, tampered),
            (5038, blocked),
            (6281, revoked_driver),
            (6281, revoked_image),
            (5038, unsigned),
        },
        "win_codeintegrity_attempted_dll_load.yml": {(3033, tampered)},
        "win_codeintegrity_enforced_policy_block.yml": {(3077, blocked)},
        "win_codeintegrity_revoked_driver_blocked.yml": {(3023, revoked_driver)},
        "win_codeintegrity_revoked_image_blocked.yml": {(3036, revoked_image)},
        # Event ids we never write (3037 unsigned image loaded, 3104 protected process).
        "win_codeintegrity_unsigned_image_loaded.yml": set(),
        "win_codeintegrity_blocked_protected_process_file.yml": set(),
    }
    assert {p.name for p in SIGMA_RULES.glob("*.yml")} == set(expected)
    for name, wanted in expected.items():
        query = compile_rule((SIGMA_RULES / name).read_text(encoding="utf-8"))
        assert fired_by(query, db) == wanted, name


def test_unmet_signing_level_rule_exclusions_match_nt_paths_only(tmp_path: Path):
    """The 3033 rule's vendor filters (FileNameBuffer|endswith ...) exclude a mapped file as
    on Windows, and cannot match an unmapped POSIX path."""
    from codeintegrity.events.build import events_for_report
    from codeintegrity.events.render_ecs import to_flat

    from .reports import HOST, tampered_report

    mount = tmp_path / "c"
    mcafee = str(mount / "Program Files" / "McAfee" / "MfeAV" / "AMSIExt.dll")
    tool = str(mount / "Tools" / "bad.dll")
    query = compile_rule(
        (SIGMA_RULES / "win_codeintegrity_attempted_dll_load.yml").read_text(encoding="utf-8")
    )

    def fired(host) -> set[tuple[int, str]]:
        rows = [
            to_flat(e)
            for path in (mcafee, tool)
            for e in events_for_report(tampered_report(path), host=host)
        ]
        return fired_by(query, load_logs(rows))

    volume = "\\Device\\HarddiskVolume3"
    assert fired(HOST.with_nt_paths([f"{mount}={volume}"])) == {(3033, volume + "\\Tools\\bad.dll")}
    assert fired(HOST) == {(3033, mcafee), (3033, tool)}
