"""What the guard judges with: verification options, the policy, and their fingerprint.

Built from the same library pieces as ``verify`` (TrustStore, load_policy, apply_to_options,
CatalogIndex). :class:`Rules` is immutable; a reload (SIGHUP, ``guard reload``) builds a new one
and swaps it in, so a judgement in flight finishes under the rules it started with.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..report import Status

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from ..policy.model import Policy
    from ..report import Report
    from .cache import Verdict

Mode = Literal["audit", "enforce"]


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """The files and switches rules are built from (what a reload reads again)."""

    mode: Mode = "audit"
    trust_files: tuple[str, ...] = ()
    no_default_trust: bool = False
    policy_file: str | None = None
    catalogs: tuple[str, ...] = ()
    require_page_hashes: str = "off"
    warnings: list[str] = field(default_factory=list, compare=False)


@dataclass(frozen=True, slots=True)
class Rules:
    mode: Mode
    options: VerifyOptions
    policy: Policy | None
    fingerprint: str

    def decide(self, report: Report) -> tuple[bool, Report]:
        """(allow?, the report with the policy's decision). In audit mode everything is
        allowed; what would have been denied still raises its events (3076, not 3077)."""
        if self.policy is not None:
            from ..policy.evaluate import evaluate

            decision = evaluate(report, self.policy)
            # The guard's --mode says whether a denial is enforced; the events follow it.
            decision = replace(decision, mode=self.mode)
            report = replace(report, decision=decision)
            denied = not decision.allowed
        else:
            denied = report.status in (Status.INVALID, Status.MALFORMED)
        return (not denied) or self.mode == "audit", report

    def judge_fd(self, fd: int, path: str) -> Verdict:
        """Verify the open file ``fd`` (never reopened by name) and decide."""
        from ..verify import verify_bytes
        from .cache import Verdict

        size = os.fstat(fd).st_size
        if size == 0:
            report = verify_bytes(b"", self.options, path=path)
        else:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    report = verify_bytes(view, self.options, path=path)
                finally:
                    view.release()
        allow, report = self.decide(report)
        return Verdict.of(allow, report)


def build_rules(config: RulesConfig) -> Rules:
    """Load trust anchors, policy and catalogs; raises a CIError subclass when one does not."""
    from ..scan.config import Settings, build_options

    # Trust anchors and policy load as for verify. Catalogs stay lenient here: one that does
    # not load is a warning (verify refuses to start), so a reload never stops a guard.
    settings = Settings(
        trust_files=config.trust_files,
        no_default_trust=config.no_default_trust,
        require_page_hashes=config.require_page_hashes,  # type: ignore[arg-type]
        policy_file=config.policy_file,
    )
    options, policy = build_options(settings, config.warnings.append)
    if config.catalogs:
        from ..catalog.index import CatalogIndex

        index = CatalogIndex.open(list(config.catalogs), limits=options.limits)
        config.warnings.extend(index.warnings)
        options = replace(options, catalogs=index)
    return Rules(
        mode=config.mode,
        options=options,
        policy=policy,
        fingerprint=_fingerprint(config, options.trust),
    )


def _fingerprint(config: RulesConfig, store: object) -> str:
    """Everything that can change a verdict: the anchors' key, the policy's bytes, the
    catalogs' names, sizes and times, the mode and the page-hash requirement."""
    digest = hashlib.sha256()
    digest.update(f"{config.mode}|{config.require_page_hashes}|".encode())
    digest.update(getattr(store, "key", b"") or b"")
    if config.policy_file is not None:
        digest.update(Path(config.policy_file).read_bytes())
    for root in config.catalogs:
        for path in sorted(_walk(Path(root))):
            st = path.stat()
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _walk(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if root.is_dir():
        return [p for p in root.rglob("*") if p.is_file()]
    return []
