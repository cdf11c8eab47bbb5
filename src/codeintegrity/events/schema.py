"""Constants of the events Windows writes for Code Integrity: providers, System-block values,
EventData field names and message templates.

Sources are in /work/shared/research/events.md (sections 1, 2 and 7): the installed
Microsoft-Windows-Security-Auditing manifest (Windows 11 22H2), a real 5038 record, and real
Microsoft-Windows-CodeIntegrity/Operational records (3033, 3077, 3089).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# --- Security log, subcategory "Audit System Integrity" ------------------------------------
SECURITY_PROVIDER = "Microsoft-Windows-Security-Auditing"
# Lowercase in braces, as real records show them (research/events-real.md).
SECURITY_PROVIDER_GUID = "{54849625-5478-4994-a5ba-3e3b0328c30d}"
SECURITY_CHANNEL = "Security"
TASK_SYSTEM_INTEGRITY = 12290
KEYWORDS_AUDIT_SUCCESS = 0x8020000000000000
KEYWORDS_AUDIT_FAILURE = 0x8010000000000000
KEYWORD_BIT_AUDIT_FAILURE = 0x0010000000000000
KEYWORD_BIT_AUDIT_SUCCESS = 0x0020000000000000

# --- Microsoft-Windows-CodeIntegrity/Operational ----------------------------------------------
CI_PROVIDER = "Microsoft-Windows-CodeIntegrity"
CI_PROVIDER_GUID = "{4ee76bd8-3cf4-44a0-a0ac-3937643e37a3}"
CI_CHANNEL = "Microsoft-Windows-CodeIntegrity/Operational"
CI_KEYWORDS = 0x8000000000000000

EVENT_AUDITS_DISCARDED = 4612
EVENT_INVALID_LPC_PORT_USE = 4615
EVENT_PATTERN = 4618
EVENT_RPC_INTEGRITY = 4816
EVENT_IMAGE_HASH = 5038
EVENT_SELFTEST = 5056
EVENT_PRIMITIVE_FAILED = 5057
EVENT_PAGE_HASH = 6281
EVENT_LOAD_REQUIREMENTS = 6410
CI_UNSIGNED_IMAGE = 3004
CI_REVOKED_DRIVER = 3023
CI_REVOKED_IMAGE = 3036
CI_SIGNING_LEVEL_NOT_MET = 3033
CI_SECURITY_REQUIREMENT_NOT_MET = 3063
CI_POLICY_AUDIT = 3076
CI_POLICY_BLOCK = 3077
CI_SIGNATURE_INFO = 3089


@dataclass(frozen=True, slots=True)
class EventKind:
    """The fixed System-block values and the EventData field names of one event ID."""

    event_id: int
    provider: str
    provider_guid: str
    channel: str
    version: int
    level: int
    task: int
    opcode: int
    keywords: int
    fields: tuple[str, ...]
    message: str  # %1..%n refer to ``fields`` in order
    task_name: str
    opcode_name: str

    @property
    def field_set(self) -> frozenset[str]:
        return _field_set(self.fields)

    @property
    def outcome(self) -> str:
        """ECS event.outcome, derived from the keyword bits as Winlogbeat does."""
        if self.keywords & KEYWORD_BIT_AUDIT_FAILURE:
            return "failure"
        if self.keywords & KEYWORD_BIT_AUDIT_SUCCESS:
            return "success"
        # CodeIntegrity/Operational carries no audit bits: an Error-level event is a failure.
        return "failure" if self.level in (1, 2) else "success" if self.level == 4 else "unknown"


@lru_cache(maxsize=64)
def _field_set(fields: tuple[str, ...]) -> frozenset[str]:
    return frozenset(fields)


_SUBJECT = ("SubjectUserSid", "SubjectUserName", "SubjectDomainName", "SubjectLogonId")
_SUBJECT_TEXT = (
    "Subject:\n\tSecurity ID:\t\t%1\n\tAccount Name:\t\t%2\n"
    "\tAccount Domain:\t\t%3\n\tLogon ID:\t\t%4"
)

# Verbatim message templates of the Security-Auditing manifest (research notes section 1.3).
_MSG_4612 = (
    "Internal resources allocated for the queuing of audit messages have been exhausted, "
    "leading to the loss of some audits.\n\nNumber of audit messages discarded:\t%1\n\n"
    "This event is generated when audit queues are filled and events must be discarded.  This "
    "most commonly occurs when security events are being generated faster than they are being "
    "written to disk, or when the auditing system loses connectivity to the event log, such as "
    "when the event log service is stopped."
)
_MSG_4615 = (
    "Invalid use of LPC port.\n\n"
    + _SUBJECT_TEXT
    + (
        "\n\nProcess Information:\n\tPID:\t\t\t%7\n\tName:\t\t\t%8\n\n"
        "Invalid Use:\t\t%5\n\nLPC Server Port Name:\t%6\n\n"
        "Windows Local Security Authority (LSA) communicates with the Windows kernel using Local "
        "Procedure Call (LPC) ports. If you see this event, an application has inadvertently or "
        "intentionally accessed this port which is reserved exclusively for LSA's use. The "
        "application (process) should be investigated to ensure that it is not attempting to "
        "tamper with this communications channel."
    )
)
_MSG_4618 = (
    "A monitored security event pattern has occurred.\n\n"
    "Subject:\n\tSecurity ID:\t\t%3\n\tAccount Name:\t\t%4\n\tAccount Domain:\t\t%5\n"
    "\tLogon ID:\t\t%6\n\nAlert Information:\n\tComputer:\t\t%2\n\tEvent ID:\t\t%1\n"
    "\tNumber of Events:\t%7\n\tDuration:\t\t%8\n\n"
    "This event is generated when Windows is configured to generate alerts in accordance with "
    "the Common Criteria Security Audit Analysis requirements (FAU_SAA) and an auditable event "
    "pattern occurs."
)
_MSG_4816 = (
    "RPC detected an integrity violation while decrypting an incoming message.\n\n"
    "Peer Name:\t%1\nProtocol Sequence:\t%2\nSecurity Error:\t%3"
)
_MSG_5038 = (
    "Code integrity determined that the image hash of a file is not valid.  The file could be "
    "corrupt due to unauthorized modification or the invalid hash could indicate a potential "
    "disk device error.\n\nFile Name:\t%1\t"
)
_MSG_5056 = (
    "A cryptographic self test was performed.\n\n"
    + _SUBJECT_TEXT
    + ("\n\nModule:\t\t%5\n\nReturn Code:\t%6")
)
_MSG_5057 = (
    "A cryptographic primitive operation failed.\n\n"
    + _SUBJECT_TEXT
    + (
        "\n\nCryptographic Parameters:\n\tProvider Name:\t\t%5\n\tAlgorithm Name:\t%6\n\n"
        "Failure Information:\n\tReason:\t\t\t%7\n\tReturn Code:\t\t%8"
    )
)
_MSG_6281 = (
    "Code Integrity determined that the page hashes of an image file are not valid. The file "
    "could be improperly signed without page hashes or corrupt due to unauthorized "
    "modification. The invalid hashes could indicate a potential disk device error.\n\n"
    "File Name:\t%1\t"
)
_MSG_6410 = (
    "Code integrity determined that a file does not meet the security requirements to load "
    "into a process. This could be due to the use of shared sections or other issues.\n\n"
    "File Name:\t%1\t"
)
_MSG_3033 = (
    "Code Integrity determined that a process (%4) attempted to load %2 that did not meet the "
    "%5 signing level requirements."
)
_MSG_3063 = (
    "Code Integrity determined that a process (%4) attempted to load %2 that did not meet the "
    "security requirements for %5."
)
_MSG_3077 = (
    "Code Integrity determined that a process (%4) attempted to load %2 that did not meet the "
    "%5 signing level requirements or violated code integrity policy (Policy ID:%33)."
)
_MSG_3076 = _MSG_3077 + (
    " However, due to code integrity auditing policy, the image was allowed to load."
)
_MSG_3004 = (
    "Windows is unable to verify the image integrity of the file %2 because file hash could "
    "not be found on the system. A recent hardware or software change might have installed a "
    "file that is signed incorrectly or damaged, or that might be malicious software from an "
    "unknown source."
)
# 3023 and 3036 share their text (ci.dll message table, libyal/winevt-kb).
_MSG_REVOKED = (
    "Windows is unable to verify the integrity of the file %2 because the signing certificate "
    "has been revoked.  Check with the publisher to see if a new signed version of the kernel "
    "module is available."
)
_MSG_3089 = "Signature information for another event. Match using the Correlation Id."

_F_3033 = (
    "FileNameLength",
    "FileNameBuffer",
    "ProcessNameLength",
    "ProcessNameBuffer",
    "RequestedPolicy",
    "ValidatedPolicy",
    "Status",
)
# 3004, 3023 and 3036 version 1 share one template (CodeIntegrity manifest dumps: research
# notes section 2; OTRF/OSSEM's CodeIntegrity data dictionary).
_F_3004 = (
    "FileNameLength",
    "FileNameBuffer",
    "SecureRequired",
    "RequestedSigningLevel",
    "ProcessNameLength",
    "ProcessNameBuffer",
)
_F_3063 = (
    "FileNameLength",
    "FileNameBuffer",
    "ProcessNameLength",
    "ProcessNameBuffer",
    "RequirementType",
    "Status",
)
# 3077/3076 version 5 (Windows 11): the names contain spaces in the XML.
_F_3077 = (
    "FileNameLength",
    "File Name",
    "ProcessNameLength",
    "Process Name",
    "Requested Signing Level",
    "Validated Signing Level",
    "Status",
    "SHA1 Hash Size",
    "SHA1 Hash",
    "SHA256 Hash Size",
    "SHA256 Hash",
    "SHA1 Flat Hash Size",
    "SHA1 Flat Hash",
    "SHA256 Flat Hash Size",
    "SHA256 Flat Hash",
    "USN",
    "SI Signing Scenario",
    "PolicyNameLength",
    "PolicyName",
    "PolicyIDLength",
    "PolicyID",
    "PolicyHashSize",
    "PolicyHash",
    "OriginalFileNameLength",
    "OriginalFileName",
    "InternalNameLength",
    "InternalName",
    "FileDescriptionLength",
    "FileDescription",
    "ProductNameLength",
    "ProductName",
    "FileVersion",
    "PolicyGUID",
    "UserWriteable",
    "PackageFamilyNameLength",
    "PackageFamilyName",
)
# 3089 version 2 (Windows 10 1809 and later share these first 21 fields).
_F_3089 = (
    "TotalSignatureCount",
    "Signature",
    "CacheState",
    "Hash Size",
    "Hash",
    "PageHash",
    "SignatureType",
    "ValidatedSigningLevel",
    "VerificationError",
    "Flags",
    "PolicyBits",
    "NotValidBefore",
    "NotValidAfter",
    "PublisherNameLength",
    "PublisherName",
    "IssuerNameLength",
    "IssuerName",
    "PublisherTBSHashSize",
    "PublisherTBSHash",
    "IssuerTBSHashSize",
    "IssuerTBSHash",
)


def _sec(event_id: int, keywords: int, fields: tuple[str, ...], message: str) -> EventKind:
    # Real Security records carry Level 0 (LogAlways) and Opcode 0 (Info).
    return EventKind(
        event_id,
        SECURITY_PROVIDER,
        SECURITY_PROVIDER_GUID,
        SECURITY_CHANNEL,
        0,
        0,
        TASK_SYSTEM_INTEGRITY,
        0,
        keywords,
        fields,
        message,
        "System Integrity",
        "Info",
    )


def _ci(
    event_id: int,
    level: int,
    task: int,
    opcode: int,
    version: int,
    fields: tuple[str, ...],
    message: str,
    task_name: str,
    opcode_name: str,
) -> EventKind:
    return EventKind(
        event_id,
        CI_PROVIDER,
        CI_PROVIDER_GUID,
        CI_CHANNEL,
        version,
        level,
        task,
        opcode,
        CI_KEYWORDS,
        fields,
        message,
        task_name,
        opcode_name,
    )


_S, _F = KEYWORDS_AUDIT_SUCCESS, KEYWORDS_AUDIT_FAILURE

#: Every event this package writes, by event ID.
KINDS: dict[int, EventKind] = {
    4612: _sec(4612, _S, ("AuditsDiscarded",), _MSG_4612),
    4615: _sec(
        4615,
        _S,
        (*_SUBJECT, "InvalidCallName", "ServerPortName", "ProcessId", "ProcessName"),
        _MSG_4615,
    ),
    4618: _sec(
        4618,
        _S,
        (
            "EventId",
            "ComputerName",
            "TargetUserSid",
            "TargetUserName",
            "TargetUserDomain",
            "TargetLogonId",
            "EventCount",
            "Duration",
        ),
        _MSG_4618,
    ),
    # Version 1 of 4816 (PeerName, ProtocolSequence, SecurityError); see research/events.md.
    4816: _sec(4816, _S, ("PeerName", "ProtocolSequence", "SecurityError"), _MSG_4816),
    5038: _sec(5038, _F, ("param1",), _MSG_5038),
    5056: _sec(5056, _S, (*_SUBJECT, "Module", "ReturnCode"), _MSG_5056),
    5057: _sec(
        5057, _F, (*_SUBJECT, "ProviderName", "AlgorithmName", "Reason", "ReturnCode"), _MSG_5057
    ),
    6281: _sec(6281, _F, ("param1",), _MSG_6281),
    6410: _sec(6410, _F, ("param1",), _MSG_6410),
    3004: _ci(3004, 2, 1, 104, 1, _F_3004, _MSG_3004, "CreateSection", "UnsignedImage"),
    3023: _ci(3023, 2, 1, 108, 1, _F_3004, _MSG_REVOKED, "CreateSection", "RevokedDriverNotLoaded"),
    3036: _ci(3036, 2, 1, 115, 1, _F_3004, _MSG_REVOKED, "CreateSection", "RevokedImageNotLoaded"),
    3033: _ci(3033, 2, 1, 111, 0, _F_3033, _MSG_3033, "CreateSection", "PolicyFailure"),
    3063: _ci(3063, 2, 1, 116, 0, _F_3063, _MSG_3063, "CreateSection", "SdlRequirement"),
    3076: _ci(
        3076, 4, 18, 118, 5, _F_3077, _MSG_3076, "ValidateSIPolicy", "SiPolicyFailureIgnored"
    ),
    3077: _ci(3077, 2, 18, 111, 5, _F_3077, _MSG_3077, "ValidateSIPolicy", "PolicyFailure"),
    3089: _ci(3089, 4, 1, 130, 2, _F_3089, _MSG_3089, "CreateSection", "SignatureInformation"),
}

LEVEL_NAMES = {0: "information", 1: "critical", 2: "error", 3: "warning", 4: "information"}

#: SigningLevels value map of the CodeIntegrity manifest (rendered into 3033/3077 messages).
SIGNING_LEVELS = {
    0: "Unchecked",
    1: "Unsigned",
    2: "Enterprise",
    3: "Custom 1",
    4: "Authenticode",
    5: "Custom 2",
    6: "Store",
    7: "Antimalware",
    8: "Microsoft",
    9: "Custom 4",
    10: "Custom 5",
    11: "Dynamic Code Generation",
    12: "Windows",
    13: "Windows Protected Process Light",
    14: "Windows TCB",
    15: "Custom 6",
}
SIGNING_LEVEL_UNSIGNED = 1
SIGNING_LEVEL_AUTHENTICODE = 4
SIGNING_LEVEL_MICROSOFT = 8

#: SdlRequirementType map (3063): 1 = shared sections.
REQUIREMENT_SHARED_SECTIONS = 1
REQUIREMENT_TYPES = {1: "Shared Sections"}

#: Message inserts Windows renders through a value map: event ID -> {insert number: map}.
MESSAGE_VALUE_MAPS: dict[int, dict[int, dict[int, str]]] = {
    3033: {5: SIGNING_LEVELS},
    3063: {5: REQUIREMENT_TYPES},
    3076: {5: SIGNING_LEVELS},
    3077: {5: SIGNING_LEVELS},
}

#: 3089 SignatureType: 0 unsigned, 1 embedded, 4 uncached catalog.
SIGNATURE_TYPE_NONE, SIGNATURE_TYPE_EMBEDDED, SIGNATURE_TYPE_CATALOG = 0, 1, 4

#: 3089 VerificationError values (App Control "event tag explanations").
VERIFICATION_ERRORS = {
    0: "OK",
    1: "invalid hash",
    2: "shared writable sections",
    3: "not signed",
    4: "revoked",
    5: "expired",
    6: "weak hash algorithm",
    7: "invalid root",
    8: "generic error",
    10: "page hashes required",
    11: "page hash mismatch",
    21: "failed App Control policy",
    23: "invalid image hash",
    26: "explicitly denied by policy",
}

# NTSTATUS values written into Status fields.
STATUS_INVALID_IMAGE_HASH = 0xC0000428
STATUS_SYSTEM_INTEGRITY_POLICY_VIOLATION = 0xC0E90002
