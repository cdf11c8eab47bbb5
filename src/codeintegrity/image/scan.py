"""Judge what a Windows installation loads, from its disk image or a mounted system volume.

By default the files Windows loads: the drivers its SYSTEM hive sets to start (Start 0-3,
kernel or file-system driver), everything under ``System32\\drivers`` and ``System32\\*.dll|exe``;
with ``all_files`` every PE on every volume. Each file is judged by the ordinary engine from the
source's file object (:func:`codeintegrity.verify.verify_source`: the parsers' slices on demand,
the hashing pass in chunks; never the whole file in memory, nothing copied to disk; files over
``limits.max_file_size`` are reported as not judged) with the image's own catalogs; then by the
image's enforced policies (its active CI policies, and the vulnerable driver blocklist when the
registry enables it) and by reference policies (``--policy``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..scan.pool import Plan, Send
from .limits import DEFAULT_IMAGE_LIMITS, ImageLimits
from .paths import device_name, driver_image_path, nt_path, windows_path
from .source import ImageOpenError, Source, Volume, open_source
from .trust import TrustMaterial, load_catalogs, load_policies

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from ..policy.model import Policy
    from ..report import Decision, Report
    from .registry import Service, SystemHive

HIVE = "Windows/System32/config/SYSTEM"
SYSTEM32 = "Windows/System32"
DRIVERS = "Windows/System32/drivers"


@dataclass(frozen=True)
class ImageOptions:
    all_files: bool = False
    limits: ImageLimits = DEFAULT_IMAGE_LIMITS  # larger files are reported, never dropped
    device: str | None = None  # NT device of the system volume (default HarddiskVolumeN)
    drive: str = "C"
    extra_catalogs: tuple[str, ...] = ()
    catalog_cache_dir: Path | None = None  # where CatRoot catalogs are copied out
    catalog_index: str | None = None  # the SQLite catalog index (default: the usual one)
    reference_policies: tuple[tuple[str, Policy], ...] = ()  # (shown name, policy)


@dataclass(frozen=True)
class FileVerdict:
    rel: str
    windows_path: str
    nt_path: str
    report: Report | None
    problem: str | None = None  # missing, too large, unreadable, internal error
    services: tuple[Service, ...] = ()
    enforced: tuple[tuple[str, Decision], ...] = ()  # the image's own enforced policies
    reference: tuple[tuple[str, Decision], ...] = ()  # --policy

    @property
    def boot_refusal_reasons(self) -> list[str]:
        """Why Windows would not load this driver (empty: it loads)."""
        if self.problem is not None:
            return [self.problem]
        reasons: list[str] = []
        report = self.report
        if report is not None and not report.ok:
            details = [f.rule.summary for f in report.errors] or [report.error or ""]
            reasons.append(f"{report.status}: " + "; ".join(dict.fromkeys(d for d in details if d)))
        for name, decision in self.enforced:
            if decision.enforced_denial:
                rules = [f.rule.summary for f in decision.reasons if _is_rule(f.code)]
                if rules:
                    reasons.append(f"denied by {name}: " + "; ".join(dict.fromkeys(rules)))
        return reasons

    def reference_denials(self) -> list[tuple[str, list[str]]]:
        out = []
        for name, decision in self.reference:
            rules = [f"{f.rule.summary} ({f.detail})" for f in decision.reasons if _is_rule(f.code)]
            if rules:
                out.append((name, rules))
        return out


def _is_rule(code: object) -> bool:
    """A policy's own rule matched (not the report's errors repeated by the evaluator)."""
    return str(code).startswith("policy.")


@dataclass
class ImageScan:
    """Everything the scan learned; ``files`` fills as :func:`scan_image` runs."""

    source: Source
    system: Volume
    device: str
    hive: SystemHive | None
    trust: TrustMaterial
    options: VerifyOptions
    warnings: list[str] = field(default_factory=list)
    files: list[FileVerdict] = field(default_factory=list)
    reference_names: list[str] = field(default_factory=list)  # --policy, in order
    # NTFS metafiles (and the $Extend folder) --all passed over, as shown paths
    metafiles_skipped: list[str] = field(default_factory=list)

    @property
    def computer_name(self) -> str | None:
        return self.hive.computer_name if self.hive is not None else None

    @property
    def blocklist_enforced(self) -> bool:
        """Windows enforces driversipolicy when the registry enables it, and always with HVCI."""
        hive = self.hive
        if hive is None:
            return False
        return hive.blocklist_enabled == 1 or (
            hive.blocklist_enabled is None and hive.hvci_enabled == 1
        )

    def close(self) -> None:
        self.trust.close()


def open_image(path: str, verify_options: VerifyOptions, options: ImageOptions) -> ImageScan:
    """Open the image, find the Windows volume, read its hive and trust material."""
    source = open_source(path)
    system = next((v for v in source.volumes if v.is_dir(SYSTEM32)), None)
    if system is None:
        raise ImageOpenError(f"{path}: no volume holds Windows\\System32")
    device = options.device or device_name(system.number)
    scan = ImageScan(source, system, device, None, TrustMaterial(), verify_options)
    scan.reference_names = [name for name, _policy in options.reference_policies]
    scan.hive = _read_hive(system, scan.warnings, options.limits.max_hive_size)
    drive = f"{options.drive}:\\"
    load_catalogs(
        system,
        scan.trust,
        drive,
        list(options.extra_catalogs),
        options.catalog_cache_dir,
        options.catalog_index,
        options.limits,
    )
    shown = {
        v.number: (drive if v is system else f"{device_name(v.number)}\\") for v in source.volumes
    }
    load_policies(
        source.volumes,
        system,
        scan.trust,
        shown,
        options.limits,
        verify_options.trust,
        verify_options.at,
    )
    scan.warnings.extend(scan.trust.warnings)
    scan.options = _options_for(scan, verify_options, options)
    return scan


def _read_hive(system: Volume, warnings: list[str], limit: int) -> SystemHive | None:
    from ..errors import CIError
    from .registry import parse_system_hive

    if not system.is_file(HIVE):
        warnings.append("C:\\Windows\\System32\\config\\SYSTEM: not on the image (no services)")
        return None
    try:
        data = bytes(system.read(HIVE, limit))
        if len(data) > limit:
            raise OSError(0, f"larger than the {limit}-byte hive limit")
        hive = parse_system_hive(data)
    except (CIError, OSError) as exc:
        warnings.append(f"C:\\Windows\\System32\\config\\SYSTEM: {exc}")
        return None
    warnings.extend(hive.warnings)
    state = hive.base_block
    if state is not None and state.dirty:
        logs = [f"SYSTEM.{ext}" for ext in ("LOG1", "LOG2") if system.is_file(f"{HIVE}.{ext}")]
        why = (
            f"sequence numbers {state.primary_sequence} and {state.secondary_sequence} differ"
            if state.primary_sequence != state.secondary_sequence
            else "its base block checksum does not match"
        )
        warnings.append(
            f"C:\\Windows\\System32\\config\\SYSTEM is dirty ({why}): changes pending in "
            f"its transaction logs ({', '.join(logs) or 'none on the image'}) are not replayed, "
            "so the services, blocklist and HVCI settings read may be stale"
        )
    return hive


def _options_for(scan: ImageScan, base: VerifyOptions, options: ImageOptions) -> VerifyOptions:
    from ..policy.evaluate import apply_to_options

    opts = replace(base, catalogs=scan.trust.catalogs) if scan.trust.catalogs else base
    for _name, own in _enforced_policies(scan):
        opts = _digests_only(apply_to_options(own, opts), opts)
    for _name, policy in options.reference_policies:
        opts = _digests_only(apply_to_options(policy, opts), opts)
    return opts


def _digests_only(applied: VerifyOptions, before: VerifyOptions) -> VerifyOptions:
    """Take the digests a policy's rules need, not its verdict switches (each policy is
    evaluated on its own; they must not change the engine's verdict for the others)."""
    return replace(
        before,
        extra_digests=applied.extra_digests,
        first_page_digests=applied.first_page_digests,
        flat_digests=applied.flat_digests,
    )


def _enforced_policies(scan: ImageScan) -> list[tuple[str, Policy]]:
    out = []
    for found in scan.trust.policies:
        # A supplemental is enforced through its base, which holds its rules.
        if found.kind == "supplemental" or not found.enforced(scan.blocklist_enforced):
            continue
        out.append((f"{found.policy.name} ({found.windows_path})", found.policy))
    return out


def planned_files(
    scan: ImageScan, all_files: bool, drive: str
) -> Iterator[tuple[Volume, str, bool]]:
    """(volume, path, must_judge) in judging order; must_judge: judged even if not a PE."""
    seen: set[tuple[int, str]] = set()

    def once(volume: Volume, rel: str) -> bool:
        key = (volume.number, rel.lower())
        if key in seen:
            return False
        seen.add(key)
        return True

    system = scan.system
    if scan.hive is not None:
        for service in scan.hive.drivers_to_start():
            rel = driver_image_path(service.image_path, service.name)
            if once(system, rel):
                yield system, rel, True
    for rel in system.walk(DRIVERS):
        if once(system, rel):
            yield system, rel, False
    for name, is_dir in system.listdir(SYSTEM32):
        if not is_dir and name.lower().endswith((".dll", ".exe")):
            rel = f"{SYSTEM32}/{name}"
            if once(system, rel):
                yield system, rel, False
    if all_files:
        for volume in scan.source.volumes:

            def metafile(rel: str, volume: Volume = volume) -> bool:
                # Filesystem metadata, not files Windows loads: reading them is no verdict
                # (most have no data stream at all), so they are counted, never reported.
                if not volume.is_metafile(rel):
                    return False
                scan.metafiles_skipped.append(_shown(scan, volume, rel, drive))
                return True

            for rel in volume.walk("", metafile):
                if once(volume, rel):
                    yield volume, rel, False


def _shown(scan: ImageScan, volume: Volume, rel: str, drive: str) -> str:
    """How a file is named in output: its Windows path on the system volume, else its NT
    path on its own volume's device."""
    if volume is scan.system:
        return windows_path(rel, drive)
    return nt_path(rel, device_name(volume.number))


@dataclass(frozen=True)
class Task:
    """One file to judge, with every name it goes by (plain values: it crosses processes)."""

    volume: int
    rel: str
    shown: str
    nt: str
    must: bool
    services: tuple[Service, ...]


def plan(scan: ImageScan, options: ImageOptions) -> Iterator[Task]:
    services: dict[str, list[Service]] = {}
    if scan.hive is not None:
        for service in scan.hive.drivers_to_start():
            key = driver_image_path(service.image_path, service.name).lower()
            services.setdefault(key, []).append(service)
    for volume, rel, must in planned_files(scan, options.all_files, options.drive):
        on_system = volume is scan.system
        device = scan.device if on_system else device_name(volume.number)
        shown = _shown(scan, volume, rel, options.drive)
        found = tuple(services.get(rel.lower(), ())) if on_system else ()
        # Plain str: the file system yields its own string types, which do not pickle.
        yield Task(volume.number, str(rel), shown, nt_path(rel, device), must, found)


def judge(scan: ImageScan, task: Task, options: ImageOptions) -> FileVerdict | None:
    volume = next(v for v in scan.source.volumes if v.number == task.volume)
    return _judge(
        scan, volume, task.rel, task.shown, task.nt, task.must, options,
        _enforced_policies(scan), task.services,
    )  # fmt: skip


class _ImagePlan(Plan["Task", "Task", "Task", "FileVerdict | None", "FileVerdict | None"]):
    """The parent's side of ``--jobs``: tasks go out as planned and come back as verdicts."""

    def prepare(self, task: Task) -> Send[Task, Task]:
        return Send(task, task)

    def finish(self, result: FileVerdict | None, state: Task) -> FileVerdict | None:
        return result

    def crashed(self, state: Task, message: str) -> FileVerdict | None:
        problem = f"internal error: {message}"
        return FileVerdict(state.rel, state.shown, state.nt, None, problem, state.services)


class _ImageWorker:
    """Runs in a worker process: opens the image there, once, with the parent's options (file
    handles and dissect objects are not shared between processes), then judges tasks."""

    def __init__(self, path: str, base: VerifyOptions, options: ImageOptions) -> None:
        self.path = path
        self.base = base
        self.options = options
        self.scan: ImageScan | None = None

    def __call__(self, task: Task) -> FileVerdict | None:
        if self.scan is None:
            self.scan = open_image(self.path, self.base, self.options)
            _freeze_long_lived()  # this process lives for the scan
        return judge(self.scan, task, self.options)


def _freeze_long_lived() -> bool:
    """Keep the cyclic collector off what lives for the whole scan (trust anchors, catalogs,
    policies, dissect's volume structures). dissect allocates many short-lived objects per
    file, and each full collection walked all of that again: measured, a tenth of an image
    scan's CPU time. Returns whether it froze (nobody else had)."""
    import gc

    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def in_workers(
    path: str, base: VerifyOptions, options: ImageOptions, jobs: int
) -> Callable[[Iterator[Task]], Iterator[FileVerdict | None]]:
    """A ``verdicts`` for :func:`scan_image`: the tasks judged in ``jobs`` worker processes of
    the scan pool (:mod:`codeintegrity.scan.pool`), in plan order, so output and events are
    the same as with one process. ``base`` is the options :func:`open_image` was given.
    Folder-listing errors stay the parent's to report: it walks the volumes while planning."""
    from ..scan.pool import run_pool
    from ..scan.share import validated_chains

    def verdicts(tasks: Iterator[Task]) -> Iterator[FileVerdict | None]:
        worker = _ImageWorker(path, base, options)
        return run_pool(tasks, _ImagePlan(), worker, jobs, ordered=True, share=validated_chains())

    return verdicts


def scan_image(
    scan: ImageScan,
    options: ImageOptions,
    on_file: Callable[[FileVerdict], None] | None = None,
    verdicts: Callable[[Iterator[Task]], Iterator[FileVerdict | None]] | None = None,
) -> list[FileVerdict]:
    """Judge every planned file; ``on_file`` sees each verdict as soon as it is made, in plan
    order. ``verdicts`` judges the tasks elsewhere (worker processes), in order."""
    tasks = plan(scan, options)
    results = verdicts(tasks) if verdicts is not None else (judge(scan, t, options) for t in tasks)
    frozen = _freeze_long_lived()
    try:
        for verdict in results:
            if verdict is None:
                continue
            scan.files.append(verdict)
            if on_file is not None:
                on_file(verdict)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stops worker processes now, not when the generator is collected
        if frozen:
            import gc

            gc.unfreeze()
    for volume in scan.source.volumes:
        scan.warnings.extend(f"volume {volume.number}: {error}" for error in volume.errors)
    return scan.files


def _judge(
    scan: ImageScan,
    volume: Volume,
    rel: str,
    shown: str,
    nt: str,
    must: bool,
    options: ImageOptions,
    enforced: list[tuple[str, Policy]],
    services: tuple[Service, ...],
) -> FileVerdict | None:
    from ..verify import verify_source

    def problem(text: str) -> FileVerdict:
        return FileVerdict(rel, shown, nt, None, text, services)

    if not volume.is_file(rel):
        return problem("file missing") if must else None
    try:
        # Only PE files are judged when walking: sniff first, so a pagefile or a database on
        # the volume is neither read nor reported as too large.
        if not must and volume.head(rel, 2) != b"MZ":
            return None
    except OSError as exc:
        return problem(f"unreadable: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - a damaged image must not end the scan
        return problem(f"unreadable: {type(exc).__name__}: {exc}")
    limit = options.limits.max_file_size
    try:
        # Read while judged: a read that fails (a damaged run list, a truncated image) is an
        # OSError, the file unreadable, whatever the engine was reading it for.
        with volume.opened(rel) as source:
            if source.size > limit:
                return problem(f"not judged: {source.size} bytes is over the {limit}-byte limit")
            report = verify_source(source, scan.options, path=shown)
    except OSError as exc:
        return problem(f"unreadable: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - one bad file must not end a long run
        return problem(f"internal error: {type(exc).__name__}: {exc} (a bug: please report it)")
    report = _catalog_shown(report, scan.trust.catalog_names)
    own = tuple((name, _evaluate(report, policy)) for name, policy in enforced)
    refs = tuple((name, _evaluate(report, policy)) for name, policy in options.reference_policies)
    decision = next((d for _n, d in own if not d.allowed), own[0][1] if own else None)
    if decision is not None:
        report = replace(report, decision=decision)
    return FileVerdict(rel, shown, nt, report, None, services, own, refs)


def _evaluate(report: Report, policy: Policy) -> Decision:
    from ..policy.evaluate import evaluate

    return evaluate(report, policy)


def _catalog_shown(report: Report, names: dict[str, str]) -> Report:
    match = report.catalog
    if match is None:
        return report
    shown = names.get(str(Path(match.path).resolve()))
    return replace(report, catalog=replace(match, path=shown)) if shown else report


def open_and_scan(
    path: str,
    verify_options: VerifyOptions,
    options: ImageOptions,
    on_file: Callable[[FileVerdict], None] | None = None,
) -> ImageScan:
    """Open, scan and close the trust material; the returned scan holds every verdict."""
    scan = open_image(path, verify_options, options)
    try:
        scan_image(scan, options, on_file)
    finally:
        scan.close()
    return scan
