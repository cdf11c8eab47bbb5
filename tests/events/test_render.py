"""Renderers compared with what Windows and Winlogbeat write."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from codeintegrity.events.build import events_for_report
from codeintegrity.events.render_ecs import render_ecs, render_flat
from codeintegrity.events.render_syslog import parse_structured_data, render_syslog, sd_name
from codeintegrity.events.render_xml import render_xml, render_xml_document

from .reports import FLAT, HOST, denied_report, tampered_report

NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"

# The real 5038 record quoted in the research notes (Security log, 2025).
REAL_5038 = (
    "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
    "<Provider Name='Microsoft-Windows-Security-Auditing' "
    "Guid='{54849625-5478-4994-a5ba-3e3b0328c30d}'/>"
    "<EventID>5038</EventID><Version>0</Version><Level>0</Level><Task>12290</Task>"
    "<Opcode>0</Opcode><Keywords>0x8010000000000000</Keywords>"
    "<TimeCreated SystemTime='2025-10-20T13:36:31.7100797Z'/>"
    "<EventRecordID>2089320</EventRecordID><Correlation/>"
    "<Execution ProcessID='4' ThreadID='23548'/><Channel>Security</Channel>"
    "<Computer>DESKTOP-SV73V84</Computer><Security/></System><EventData>"
    "<Data Name='param1'>\\Device\\HarddiskVolume3\\Program Files\\Sophos\\Sophos AMSI "
    "Protection\\SophosAmsiProvider.dll</Data></EventData></Event>"
)


def shape(element: ET.Element) -> list[tuple[str, tuple[str, ...]]]:
    """Tag and attribute names of every element, in document order."""
    return [(e.tag, tuple(sorted(e.attrib))) for e in element.iter()]


def security_event(path: str = "/data/bad_flip_text.exe"):
    events = events_for_report(tampered_report(path=path), host=HOST)
    return next(e for e in events if e.event_id == 5038).with_record_id(2089320)


def test_xml_has_the_structure_of_the_real_5038_record():
    ours = ET.fromstring(render_xml(security_event()))
    real = ET.fromstring(REAL_5038)
    # Same namespace, same elements in the same order, same attribute names...
    ours_shape = shape(ours)
    real_shape = shape(real)
    correlation = NS + "Correlation"
    # ...Correlation included: empty on the Security record, as in the real one.
    assert dict(ours_shape)[correlation] == ()
    assert ours_shape == real_shape
    # Same fixed values.
    for tag in ("EventID", "Version", "Level", "Task", "Opcode", "Keywords", "Channel"):
        assert ours.find(f"{NS}System/{NS}{tag}").text == real.find(f"{NS}System/{NS}{tag}").text
    ours_provider = ours.find(f"{NS}System/{NS}Provider").attrib
    real_provider = real.find(f"{NS}System/{NS}Provider").attrib
    assert ours_provider["Name"] == real_provider["Name"]
    assert ours_provider["Guid"].lower() == real_provider["Guid"].lower()
    assert ours.find(f"{NS}System/{NS}EventRecordID").text == "2089320"
    assert ours.find(f"{NS}System/{NS}Keywords").text == "0x8010000000000000"
    (data,) = ours.findall(f"{NS}EventData/{NS}Data")
    assert data.attrib == {"Name": "param1"}
    assert data.text == "/data/bad_flip_text.exe"
    system_time = ours.find(f"{NS}System/{NS}TimeCreated").attrib["SystemTime"]
    assert len(system_time) == len("2025-10-20T13:36:31.7100797Z")


def test_xml_escapes_paths_and_keeps_them_exact():
    path = '/odd/<a & "b">\r\n\tc.dll'
    root = ET.fromstring(render_xml(security_event(path)))
    assert root.find(f"{NS}EventData/{NS}Data").text == path


def test_xml_of_ci_events_carries_correlation_and_names_with_spaces():
    events = events_for_report(denied_report("enforce"), host=HOST)
    doc = ET.fromstring(render_xml_document(events))
    records = doc.findall(f"{NS}Event")
    assert len(records) == 3
    ci = [r for r in records if r.find(f"{NS}System/{NS}Channel").text != "Security"]
    activity = {r.find(f"{NS}System/{NS}Correlation").attrib["ActivityID"] for r in ci}
    assert len(activity) == 1 and len(ci) == 2
    block = records[0]
    assert (
        block.find(f"{NS}System/{NS}Provider").attrib["Name"] == "Microsoft-Windows-CodeIntegrity"
    )
    assert (
        block.find(f"{NS}System/{NS}Channel").text == "Microsoft-Windows-CodeIntegrity/Operational"
    )
    assert block.find(f"{NS}System/{NS}Keywords").text == "0x8000000000000000"
    assert (block.find(f"{NS}System/{NS}Level").text, block.find(f"{NS}System/{NS}Task").text) == (
        "2",
        "18",
    )
    names = {d.attrib["Name"]: d.text for d in block.iter(f"{NS}Data")}
    assert names["File Name"] == "/data/asrdrv10.sys"
    assert names["SHA256 Flat Hash"] == FLAT["sha256"].upper()
    assert names["PackageFamilyName"] is None  # <Data Name="PackageFamilyName" />


def test_ecs_document_field_by_field():
    event = security_event()
    doc = json.loads(render_ecs(event))
    winlog = doc["winlog"]
    assert winlog["event_id"] == "5038"  # a string, as Winlogbeat stores it
    assert winlog["channel"] == "Security"
    assert winlog["provider_name"] == "Microsoft-Windows-Security-Auditing"
    assert winlog["provider_guid"] == "{54849625-5478-4994-a5ba-3e3b0328c30d}"  # as Winlogbeat
    assert winlog["task"] == "System Integrity"
    assert winlog["keywords"] == ["Audit Failure"]
    assert winlog["record_id"] == 2089320
    assert winlog["computer_name"] == "TESTHOST"
    assert winlog["event_data"] == {"param1": "/data/bad_flip_text.exe"}
    assert "activity_id" not in winlog  # a Security record has an empty Correlation
    assert doc["event"]["code"] == "5038"
    assert doc["event"]["outcome"] == "failure"
    assert doc["event"]["category"] == ["file", "intrusion_detection"]
    assert doc["event"]["provider"] == "Microsoft-Windows-Security-Auditing"
    assert doc["host"]["name"] == "TESTHOST"
    assert doc["file"]["path"] == "/data/bad_flip_text.exe"
    assert doc["file"]["name"] == "bad_flip_text.exe"
    assert doc["file"]["hash"] == {"sha1": FLAT["sha1"], "sha256": FLAT["sha256"]}
    signature = doc["file"]["code_signature"]
    assert signature["exists"] is True
    assert signature["valid"] is False
    assert signature["trusted"] is True
    assert signature["subject_name"] == "Throwaway Test Publisher"
    assert signature["status"] == "invalid hash"
    assert signature["digest_algorithm"] == "sha256"
    assert doc["message"] == event.message()
    assert doc["message"].startswith("Code integrity determined that the image hash")
    assert doc["@timestamp"].endswith("Z")
    assert doc["@timestamp"][:19] == event.time_created.strftime("%Y-%m-%dT%H:%M:%S")


def test_ecs_policy_event_names_the_rule():
    events = events_for_report(denied_report("audit"), host=HOST)
    doc = json.loads(render_ecs(events[0]))
    assert doc["winlog"]["event_id"] == "3076"
    assert doc["winlog"]["channel"] == "Microsoft-Windows-CodeIntegrity/Operational"
    # As Winlogbeat sends a CodeIntegrity record (research/events-real.md): no keyword names,
    # no outcome (no audit keyword bits), no task display name, empty EventData values dropped.
    assert "keywords" not in doc["winlog"]
    assert "outcome" not in doc["event"] and "module" not in doc["event"]
    assert "task" not in doc["winlog"] and "action" not in doc["event"]
    assert doc["winlog"]["api"] == "wineventlog"
    assert "OriginalFileName" not in doc["winlog"]["event_data"]  # empty in this event
    assert doc["event"]["type"] == ["info", "allowed"]
    assert doc["rule"] == {
        "name": "Microsoft Windows Driver Policy - Enforced",
        "id": "{aa120602-611b-4455-b8d8-c13a815b4323}",
    }
    assert doc["winlog"]["event_data"]["PolicyName"] == "Microsoft Windows Driver Policy - Enforced"


def test_flat_row_uses_sigma_field_names():
    row = json.loads(render_flat(security_event()))
    assert row["EventID"] == 5038
    assert row["Channel"] == "Security"
    assert row["Provider_Name"] == "Microsoft-Windows-Security-Auditing"
    assert row["Computer"] == "TESTHOST"
    assert row["param1"] == "/data/bad_flip_text.exe"
    assert row["EventRecordID"] == 2089320


def test_syslog_line_is_rfc5424_with_every_field_as_structured_data():
    event = security_event('/odd "quoted" ]path\\x.exe')
    line = render_syslog(event).decode("utf-8")
    head, timestamp, hostname, app, procid, msgid = line.split(" ", 6)[:6]
    assert head == "<108>1"  # facility 13 (log audit) * 8 + severity 4, version 1
    assert timestamp.endswith("Z") and timestamp[:19] == event.time_created.strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    assert (hostname, app, procid, msgid) == ("TESTHOST", "codeintegrity", "4242", "5038")
    sd = parse_structured_data(line)
    assert sd["win@32473"]["EventID"] == "5038"
    assert sd["win@32473"]["Channel"] == "Security"
    assert sd["win@32473"]["EventRecordID"] == "2089320"
    assert "ActivityID" not in sd["win@32473"]  # empty Correlation on the Security record
    assert sd["data@32473"] == {"param1": '/odd "quoted" ]path\\x.exe'}
    message = line.split("\ufeff", 1)[1]
    assert "\n" not in message and "\t" not in message
    assert message.startswith("Code integrity determined that the image hash of a file")


def test_syslog_sd_names_are_valid_for_names_with_spaces():
    events = events_for_report(denied_report("enforce"), host=HOST)
    line = render_syslog(events[0]).decode("utf-8")
    data = parse_structured_data(line)["data@32473"]
    assert data["File_Name"] == "/data/asrdrv10.sys"
    assert data["SHA256_Hash"] == events[0].value("SHA256 Hash")
    assert len(data) == len(events[0].data)
    assert sd_name('a=b]c d"e') == "a_b_c_d_e"
    assert len(sd_name("x" * 40)) == 32


def test_fast_ecs_renderer_equals_the_generic_document():
    from codeintegrity.events.build import audits_discarded_event, event_for_primitive_failure
    from codeintegrity.events.render_ecs import to_ecs

    from .reports import shared_writable_report, unsigned_driver_report

    events = []
    for report in (
        tampered_report(),
        denied_report("audit"),
        denied_report("enforce"),
        shared_writable_report('/odd/"q"\\ü.dll'),
        unsigned_driver_report(),
    ):
        events += [e.with_record_id(n) for n, e in enumerate(events_for_report(report, host=HOST))]
    events += [audits_discarded_event(5, host=HOST), event_for_primitive_failure("p", "a", "r", 1)]
    for event in events:
        assert json.loads(render_ecs(event)) == to_ecs(event)


def test_syslog_escapes_control_characters_in_values_and_message():
    from syslog_rfc5424_parser import SyslogMessage

    path = "/data/new\nline\tand\r\x01ctl  two spaces.exe"
    event = next(
        e for e in events_for_report(tampered_report(path=path), host=HOST) if e.event_id == 5038
    )
    line = render_syslog(event).decode("utf-8")
    assert "\n" not in line and "\t" not in line and "\x01" not in line
    # (\x01 was already written as text by the event model: XML cannot carry it)
    escaped = "/data/new#012line#011and#015\\x01ctl  two spaces.exe"
    assert parse_structured_data(line)["data@32473"]["param1"] == escaped
    assert line.endswith(f"File Name: {escaped}")  # spaces inside the value are kept
    parsed = SyslogMessage.parse(line)  # an independent RFC 5424 parser accepts it
    # (it hands PARAM-VALUEs over as written, RFC 5424 backslash escapes included)
    assert parsed.sd["data@32473"]["param1"] == escaped.replace("\\", "\\\\")


def test_ecs_security_event_as_winlogbeat_sends_it():
    doc = json.loads(render_ecs(security_event()))
    assert doc["event"]["module"] == "security"
    assert doc["event"]["outcome"] == "failure"
    assert doc["event"]["action"] == "System Integrity"
    assert doc["winlog"]["api"] == "wineventlog"
    assert doc["winlog"]["keywords"] == ["Audit Failure"]
    assert "user" not in doc  # 5038 has no Subject fields


def test_ecs_subject_fields_become_user_and_related_user():
    from codeintegrity.events.build import event_for_primitive_failure
    from codeintegrity.events.render_ecs import ecs_text, to_ecs

    event = event_for_primitive_failure("prov", "RSA", "failed", -1, host=HOST).with_record_id(3)
    doc = json.loads(render_ecs(event))
    assert doc["user"] == {"name": "alice", "domain": "TESTHOST", "id": "S-1-0-0"}
    assert doc["related"] == {"user": ["alice"]}
    assert doc["event"]["module"] == "security"
    assert json.loads(ecs_text(event)) == to_ecs(event)
