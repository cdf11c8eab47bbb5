"""A real consumer: a Sigma rule, compiled by pySigma's SQLite backend, run on our events."""

from __future__ import annotations

import json
import sqlite3
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
                identifier="windows_security_channel",
                transformation=AddConditionTransformation(
                    {"Channel": windows_logsource_mapping["security"]}
                ),
                rule_conditions=[logsource_windows("security")],
            )
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
