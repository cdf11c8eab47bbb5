"""The one table from finding codes to severities and events is complete and consistent."""

from __future__ import annotations

from codeintegrity.findings import RULES, FindingCode, Severity, missing_rules

# The "Audit System Integrity" events a verification may raise.
VERIFICATION_EVENTS = {5038, 5057, 6281, 6410}


def test_every_code_has_a_rule():
    assert missing_rules() == []
    assert set(RULES) == set(FindingCode)


def test_only_errors_raise_events_and_only_known_ones():
    for code, rule in RULES.items():
        if rule.event_id is not None:
            assert rule.severity is Severity.ERROR, code
            assert rule.event_id in VERIFICATION_EVENTS, code
        assert rule.summary and rule.summary == rule.summary.strip(), code
