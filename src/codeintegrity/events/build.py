"""Build events from verification reports, the way Windows pairs them.

One Security event per distinct event ID of a report (5038, 6281, 6410: a file with three bad
pages raises one 6281), each accompanied by CodeIntegrity/Operational detail events that carry
what the Security record cannot: 3033 / 3063 requirement failures (3004 for an unsigned kernel
driver) and 3077 / 3076 policy blocks, each followed by the 3089 signature information (one per
signature) that describes it, as Windows logs them (3033 -> 3089 -> 3077 -> 3089). The
CodeIntegrity events of one report share one Correlation ActivityID; the Security records leave
Correlation empty, as Windows does.

``param1`` is the path exactly as given to the engine: we are not on Windows and do not invent
``\\Device\\HarddiskVolumeN`` names.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import PurePath

from ..findings import FindingCode
from ..report import Report, SignatureResult, raises_events
from .model import (
    ContextItems,
    ContextValue,
    Event,
    build_event,
    clean_text,
    freeze_context,
    make_event,
    now_with_ticks,
)
from .numbering import RecordNumbers
from .paths import NtPathMap, event_path, nt_path_map
from .schema import (
    CI_REVOKED_DRIVER,
    CI_REVOKED_IMAGE,
    CI_UNSIGNED_IMAGE,
    EVENT_AUDITS_DISCARDED,
    EVENT_IMAGE_HASH,
    EVENT_LOAD_REQUIREMENTS,
    EVENT_PAGE_HASH,
    EVENT_PRIMITIVE_FAILED,
    REQUIREMENT_SHARED_SECTIONS,
    SIGNATURE_TYPE_CATALOG,
    SIGNATURE_TYPE_EMBEDDED,
    SIGNING_LEVEL_AUTHENTICODE,
    SIGNING_LEVEL_UNSIGNED,
    STATUS_INVALID_IMAGE_HASH,
    STATUS_SYSTEM_INTEGRITY_POLICY_VIOLATION,
    VERIFICATION_ERRORS,
)
from .signature_info import (
    common_name,
    hex_field,
    signature_error,
    signature_info,
    unsigned_info,
)

# The SID and logon ID written into Subject fields: there is no Windows logon session here.
NULL_SID = "S-1-0-0"
SIGNING_LEVEL_ENTERPRISE = 2  # "requested" level of an App Control policy check
# Security records carry no ActivityID (Correlation is empty in every real capture).


@dataclass(frozen=True, slots=True)
class Host:
    """Who raises the events: the Computer, Execution and Subject values."""

    computer: str
    process_id: int
    process_name: str
    user_name: str
    # --nt-path mappings (paths.nt_path_map): mount point -> \Device\HarddiskVolumeN
    nt_paths: NtPathMap = ()

    def event_path(self, path: str) -> str:
        """The file name events carry for ``path`` (NT form under a mapped mount)."""
        return event_path(path, self.nt_paths)

    def with_nt_paths(self, specs: Iterable[str | tuple[str, str]]) -> Host:
        r"""This host with ``--nt-path`` mappings (``MOUNT=\Device\HarddiskVolumeN``);
        raises ValueError on a bad one."""
        return replace(self, nt_paths=nt_path_map(specs))

    @classmethod
    def current(cls, computer: str | None = None) -> Host:
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no passwd entry / no USER variable
            user = "-"
        argv0 = PurePath(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
        if argv0 in ("__main__.py", "-c", "-m"):  # python -m codeintegrity: name the program
            argv0 = "codeintegrity"
        return cls(
            computer=computer or socket.gethostname() or "localhost",
            process_id=os.getpid(),
            process_name=argv0 or "codeintegrity",
            user_name=user,
        )

    def subject(self) -> dict[str, str]:
        return {
            "SubjectUserSid": NULL_SID,
            "SubjectUserName": self.user_name,
            "SubjectDomainName": self.computer.split(".")[0].upper(),
            "SubjectLogonId": "0x0",
        }


# Random bytes for ActivityIDs, drawn from os.urandom 4 KiB at a time: one getrandom() call
# per report cost more than building its events. A forked child must not reuse the pool.
_random_lock = threading.Lock()
_random_pool = bytearray()
os.register_at_fork(after_in_child=_random_pool.clear)


def _random16() -> bytes:
    with _random_lock:
        if len(_random_pool) < 16:
            _random_pool[:] = os.urandom(4096)
        raw = bytes(_random_pool[-16:])
        del _random_pool[-16:]
    return raw


def _new_activity_id() -> str:
    """A random (version 4) GUID in braces, like ``"{%s}" % uuid.uuid4()`` but formatted
    directly (building a UUID object costs more than the rest of a small report's events)."""
    h = _random16().hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{{{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}}}"


def host_event(
    host: Host,
    event_id: int,
    values: dict[str, str],
    *,
    when: datetime,
    activity_id: str | None = None,
    context: dict[str, ContextValue] | ContextItems | None = None,
) -> Event:
    return make_event(
        event_id,
        values,
        computer=host.computer,
        time_created=when,
        activity_id=activity_id,
        process_id=host.process_id,
        thread_id=threading.get_native_id(),
        context=context,
    )


# --- report -> events ----------------------------------------------------------------------


def _primary_signature(report: Report) -> SignatureResult | None:
    if report.signatures:
        return report.signatures[0]
    return report.catalog.signature if report.catalog else None


def _file_name(path: str) -> str:
    """``PurePath(path).name`` with backslashes as separators, without building a PurePath
    for the usual path (one that ends in a plain name)."""
    slashed = path.replace("\\", "/")
    tail = slashed.rpartition("/")[2]
    if tail and tail != ".":
        return tail
    return PurePath(slashed).name  # "dir/", "dir/.", "" : let pathlib normalise


def ecs_context(report: Report) -> dict[str, ContextValue]:
    """ECS fields of the file a report is about (file.*, rule.*), shared by all its events."""
    sig = _primary_signature(report)
    return _ecs_context(report, sig, signature_error(report, sig) if sig is not None else 0)


def _ecs_context(
    report: Report, sig: SignatureResult | None, error: int
) -> dict[str, ContextValue]:
    # ECS file.path is always a full path (not the NT form: that is Windows' own spelling).
    path = event_path(report.path)
    ctx: dict[str, ContextValue] = {"file.path": path, "file.name": _file_name(report.path)}
    for algorithm, digest in sorted(report.flat_hash.items()):
        ctx[f"file.hash.{algorithm}"] = digest.lower()
    for algorithm, digest in sorted(report.authentihash.items()):
        ctx[f"codeintegrity.authentihash.{algorithm}"] = digest.lower()
    ctx["codeintegrity.status"] = str(report.status)
    ctx["file.code_signature.exists"] = sig is not None
    if sig is not None:
        ctx["file.code_signature.valid"] = sig.valid and report.ok
        ctx["file.code_signature.trusted"] = sig.trusted
        ctx["file.code_signature.status"] = VERIFICATION_ERRORS.get(error, str(error))
        ctx["file.code_signature.digest_algorithm"] = sig.digest_algorithm
        if sig.signer:
            ctx["file.code_signature.subject_name"] = common_name(sig.signer)
        if sig.timestamp is not None:
            ctx["file.code_signature.timestamp"] = sig.timestamp.astimezone(UTC).isoformat()
    if report.decision is not None and not report.decision.allowed:
        ctx["rule.name"] = report.decision.policy_name
        ctx["rule.id"] = report.decision.policy_id
    return ctx


def _file_and_process(report: Report, host: Host, spaced: bool) -> dict[str, str]:
    file_key, process_key = (
        ("File Name", "Process Name")
        if spaced
        else (
            "FileNameBuffer",
            "ProcessNameBuffer",
        )
    )
    return {
        "FileNameLength": str(len(shown := host.event_path(report.path))),
        file_key: shown,
        "ProcessNameLength": str(len(host.process_name)),
        process_key: host.process_name,
    }


def _unsigned_image(report: Report, host: Host) -> dict[str, str]:
    """3004 (an unsigned kernel driver, beside the Security 5038) and 3023/3036 (a revoked
    signer): one template."""
    return {
        "FileNameLength": str(len(shown := host.event_path(report.path))),
        "FileNameBuffer": shown,
        "SecureRequired": "0x1",
        "RequestedSigningLevel": str(SIGNING_LEVEL_AUTHENTICODE),
        "ProcessNameLength": str(len(host.process_name)),
        "ProcessNameBuffer": host.process_name,
    }


def _version_fields(report: Report) -> dict[str, str]:
    """3077's names and version from the file's VS_VERSION_INFO (empty when it has none)."""
    info = report.version_info or {}
    out: dict[str, str] = {}
    for key, name in _VERSION_FIELDS:
        value = clean_text(info.get(key, ""))
        out[f"{name}Length"] = str(len(value))
        out[name] = value
    out["FileVersion"] = clean_text(info.get("file_version", ""))
    return out


_VERSION_FIELDS = (
    ("original_file_name", "OriginalFileName"),
    ("internal_name", "InternalName"),
    ("file_description", "FileDescription"),
    ("product_name", "ProductName"),
)


def _policy_block(report: Report, host: Host) -> dict[str, str]:
    decision = report.decision
    assert decision is not None
    sha1_size, sha1 = hex_field(report.authentihash.get("sha1"))
    sha256_size, sha256 = hex_field(report.authentihash.get("sha256"))
    flat1_size, flat1 = hex_field(report.flat_hash.get("sha1"))
    flat256_size, flat256 = hex_field(report.flat_hash.get("sha256"))
    kernel = report.image is not None and report.image.is_kernel_driver
    policy_hash_size, policy_hash = hex_field(decision.policy_hash)
    sig = _primary_signature(report)
    return {
        **_file_and_process(report, host, spaced=True),
        "Requested Signing Level": str(SIGNING_LEVEL_ENTERPRISE),
        "Validated Signing Level": str(
            SIGNING_LEVEL_AUTHENTICODE if sig is not None and sig.valid else SIGNING_LEVEL_UNSIGNED
        ),
        "Status": f"{STATUS_SYSTEM_INTEGRITY_POLICY_VIOLATION:#x}",
        "SHA1 Hash Size": sha1_size,
        "SHA1 Hash": sha1,
        "SHA256 Hash Size": sha256_size,
        "SHA256 Hash": sha256,
        "SHA1 Flat Hash Size": flat1_size,
        "SHA1 Flat Hash": flat1,
        "SHA256 Flat Hash Size": flat256_size,
        "SHA256 Flat Hash": flat256,
        "USN": "0",
        # 0 = kernel (signing scenario 131), 1 = user mode (12), as in real records.
        "SI Signing Scenario": "0" if kernel else "1",
        "PolicyNameLength": str(len(decision.policy_name)),
        "PolicyName": decision.policy_name,
        "PolicyIDLength": str(len(decision.policy_id)),
        "PolicyID": decision.policy_id,
        "PolicyHashSize": policy_hash_size,
        "PolicyHash": policy_hash,
        **_version_fields(report),
        "PolicyGUID": decision.policy_guid,
        "UserWriteable": "false",
        "PackageFamilyNameLength": "0",
    }


def events_for_report(
    report: Report,
    *,
    host: Host | None = None,
    when: datetime | None = None,
    record_ids: Iterator[int] | RecordNumbers | None = None,
) -> list[Event]:
    """All events one report raises, CI details first (as Windows logs them), then Security.

    A valid file raises nothing. A policy denial adds 3077 (enforce) or 3076 (audit).
    ``record_ids`` numbers the events: a pipeline's per-channel :class:`.numbering.RecordNumbers`
    (one reservation for the report), or a plain counter (numbers as they are built).
    """
    event_ids = report.event_ids
    decision = report.decision
    if not raises_events(event_ids, decision):
        return []
    host = host or Host.current()
    ticks = 0
    if when is None:  # TimeCreated with Windows' 100 ns precision
        when, ticks = now_with_ticks()
    activity = _new_activity_id()
    errors = {sig.index: signature_error(report, sig) for sig in report.signatures}
    primary = _primary_signature(report)
    if primary is not None and not report.signatures:  # a catalog's signature
        errors[primary.index] = signature_error(report, primary)
    primary_error = errors[primary.index] if primary is not None else 0
    # Cleaned once, shared by every event.
    context = freeze_context(_ecs_context(report, primary, primary_error))
    computer, process_id = clean_text(host.computer), host.process_id
    thread_id = threading.get_native_id()

    counter = record_ids if isinstance(record_ids, Iterator) else None

    def add(event_id: int, values: dict[str, str]) -> None:
        record_id = None if counter is None else next(counter)
        events.append(
            build_event(
                event_id,
                values,
                when,
                computer,
                activity,
                process_id,
                thread_id,
                None,
                context,
                record_id,
                ticks,
            )  # fmt: skip
        )

    events: list[Event] = []
    signature_infos: list[dict[str, str]]
    if report.signatures:
        total = len(report.signatures)
        signature_infos = [
            signature_info(report, sig, total, SIGNATURE_TYPE_EMBEDDED, errors[sig.index])
            for sig in report.signatures
        ]
    elif report.catalog is not None:
        catalog_sig = report.catalog.signature
        signature_infos = [
            signature_info(report, catalog_sig, 1, SIGNATURE_TYPE_CATALOG, primary_error)
        ]
    else:
        signature_infos = [unsigned_info(report)]

    described: list[tuple[int, dict[str, str]]] = []  # CI events a 3089 set follows
    own_ids = {f.event_id for f in report.findings if f.event_id is not None}
    codes = {f.code for f in report.findings}
    kernel = report.image is not None and report.image.is_kernel_driver
    if FindingCode.CHAIN_REVOKED in codes:  # a revoked signer: 3023 (driver) / 3036 (user)
        revoked = CI_REVOKED_DRIVER if kernel else CI_REVOKED_IMAGE
        described.append((revoked, _unsigned_image(report, host)))
    elif FindingCode.UNSIGNED_DRIVER in codes:
        described.append((CI_UNSIGNED_IMAGE, _unsigned_image(report, host)))
    elif own_ids & {EVENT_IMAGE_HASH, EVENT_PAGE_HASH}:
        described.append(
            (
                3033,
                {
                    **_file_and_process(report, host, spaced=False),
                    "RequestedPolicy": str(SIGNING_LEVEL_AUTHENTICODE),
                    "ValidatedPolicy": str(SIGNING_LEVEL_UNSIGNED),
                    "Status": str(STATUS_INVALID_IMAGE_HASH),  # decimal, as real 3033 records
                },
            )
        )
    if EVENT_LOAD_REQUIREMENTS in own_ids:
        described.append(
            (
                3063,
                {
                    **_file_and_process(report, host, spaced=False),
                    "RequirementType": str(REQUIREMENT_SHARED_SECTIONS),
                    "Status": f"{STATUS_INVALID_IMAGE_HASH:#x}",
                },
            )
        )
    if decision is not None and not decision.allowed:
        policy_id = 3077 if decision.mode == "enforce" else 3076
        described.append((policy_id, _policy_block(report, host)))
    for event_id, values in described:
        add(event_id, values)
        for info in signature_infos:
            add(3089, info)
    if not described:  # signature information on its own (e.g. beside a 5057)
        for info in signature_infos:
            add(3089, info)
    for event_id in event_ids:
        if event_id == EVENT_PRIMITIVE_FAILED:
            for finding in report.findings:
                if finding.code is FindingCode.PRIMITIVE_FAILED:
                    add(event_id, {**host.subject(), **_primitive_fields(finding.detail)})
        else:
            add(event_id, {"param1": host.event_path(report.path)})
    if record_ids is not None and not isinstance(record_ids, Iterator):
        return record_ids.assign(events)
    return events


_PRIMITIVE_DETAIL = re.compile(r"(?P<algorithm>[^ ]+) \((?P<provider>[^)]*)\): (?P<reason>.*)")
# NTSTATUS STATUS_UNSUCCESSFUL: the primitive raised; there is no Windows code to report.
_PRIMITIVE_RETURN_CODE = "0xc0000001"


def _primitive_fields(detail: str) -> dict[str, str]:
    """5057's fields from a PRIMITIVE_FAILED finding (``ALGORITHM (PROVIDER): REASON``)."""
    match = _PRIMITIVE_DETAIL.fullmatch(detail)
    parts = match.groupdict() if match else {"algorithm": "-", "provider": "-", "reason": detail}
    return {
        "ProviderName": clean_text(parts["provider"]),
        "AlgorithmName": clean_text(parts["algorithm"]),
        "Reason": clean_text(parts["reason"]),
        "ReturnCode": _PRIMITIVE_RETURN_CODE,
    }


# --- events that do not come from a report --------------------------------------------------


def audits_discarded_event(count: int, *, host: Host | None = None) -> Event:
    """4612: ``count`` events were lost before this sink accepted events again."""
    host = host or Host.current()
    return host_event(
        host, EVENT_AUDITS_DISCARDED, {"AuditsDiscarded": str(count)}, when=datetime.now(UTC)
    )


def event_for_primitive_failure(
    provider: str,
    algorithm: str,
    reason: str,
    return_code: int,
    *,
    host: Host | None = None,
) -> Event:
    """5057: a cryptographic primitive raised or failed during verification."""
    host = host or Host.current()
    values = {
        **host.subject(),
        "ProviderName": provider,
        "AlgorithmName": algorithm,
        "Reason": reason,
        "ReturnCode": f"{return_code & 0xFFFFFFFF:#x}",
    }
    return host_event(host, EVENT_PRIMITIVE_FAILED, values, when=datetime.now(UTC))
