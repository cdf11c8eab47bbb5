"""Events of every kind the EVTX writer must carry, built the way the engine builds them."""

from __future__ import annotations

from datetime import UTC, datetime

from codeintegrity.events.build import (
    audits_discarded_event,
    event_for_primitive_failure,
    events_for_report,
)
from codeintegrity.events.model import Event, make_event

from . import reports

ODD_PATHS = (
    "/data/ünï cödé/日本語 & <x>.exe",
    "/data/quote\"apos'amp&lt;.sys",
    "/data/tab\there/new\nline.exe",
    "/data/emoji 🛡️/𝒸𝑜𝒹𝑒.dll",
    "/data/bad\x01byte.exe",  # a control character (written escaped as \x01)
)


def every_kind() -> list[Event]:
    """5038/6281/6410/4612/5056/5057/3033/3063/3076/3077/3089, odd paths included."""
    host = reports.HOST
    events: list[Event] = []
    for report in (
        reports.tampered_report(),
        reports.shared_writable_report(),
        reports.unsigned_driver_report(),
        reports.denied_report("enforce"),
        reports.denied_report("audit"),
        reports.revoked_report(),
        reports.revoked_report("/data/revoked.dll", driver=False),
        *(reports.tampered_report(path) for path in ODD_PATHS),
    ):
        events += events_for_report(report, host=host)
    events.append(audits_discarded_event(7, host=host))
    events.append(event_for_primitive_failure("Microsoft Software Key Storage Provider",
                                              "RSA", "signature check failed", 0xC000A000,
                                              host=host))  # fmt: skip
    events.append(
        make_event(
            5056,
            {
                "SubjectUserSid": "S-1-5-18",
                "SubjectUserName": "TESTHOST$",
                "SubjectDomainName": "WORKGROUP",
                "SubjectLogonId": "0x3e7",
                "Module": "codeintegrity self-test",
                "ReturnCode": "0x0",
            },
            computer=host.computer,
            time_created=datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC),
            process_id=4,
            thread_id=77,
            user_id="S-1-5-21-3463664321-2923530833-3546627382-1000",
        )
    )
    return events
