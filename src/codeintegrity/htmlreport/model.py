"""What a report shows, independent of where it came from (event store or verification results).

Both sources are reduced to one :class:`Summary`; the renderer only reads this value. Lists are
already cut to their top-N here so that the HTML stays small whatever the input size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

STATUSES = ("valid", "invalid", "unsigned", "malformed")
# Most severe first: the order failing files are listed in.
FAILING_ORDER = {"malformed": 0, "invalid": 1, "unsigned": 2}

TOP_REASONS = 25
TOP_SIGNERS = 50
TOP_FAILING = 200
TOP_COMPUTERS = 50
TIMELINE_BUCKETS = 60


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason files failed (a finding code, or a 3089 VerificationError from a store)."""

    label: str
    files: int
    event_id: int | None = None
    summary: str = ""


@dataclass(frozen=True, slots=True)
class SignerRow:
    """Files by one signer (publisher CN), with where its chain ends and how it was judged."""

    publisher: str
    issuer: str
    root: str
    trusted: bool | None  # None: not recorded in the source
    files: int
    valid_files: int | None  # None: the source holds only failing files
    invalid_files: int


@dataclass(frozen=True, slots=True)
class FailingFile:
    path: str
    status: str
    reasons: tuple[str, ...]
    event_ids: tuple[int, ...]
    computer: str | None = None
    time: datetime | None = None
    signer: str | None = None
    # (code or label, detail) pairs shown collapsed under the file
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ComputerRow:
    name: str
    files: int
    by_status: dict[str, int]
    events: int
    denied: int
    audit_denied: int


@dataclass(frozen=True, slots=True)
class Timeline:
    """Event counts per event ID in equal time buckets starting at ``start``."""

    start: datetime
    bucket_seconds: float
    series: dict[int, list[int]]  # event id -> counts, one per bucket


@dataclass(slots=True)
class Summary:
    source: str  # what was read, for the header
    source_kind: str  # "store" | "results"
    tool_version: str
    generated: datetime
    files: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    valid_known: bool = True  # False for a store: valid files raise no event
    allowed: int = 0
    denied: int = 0  # enforce-mode denials (3077)
    audit_denied: int = 0  # audit-mode denials, would be denied in enforce (3076)
    policy_applied: bool = False
    event_count: int = 0
    event_counts: dict[int, int] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None
    timeline: Timeline | None = None
    reasons: list[Reason] = field(default_factory=list)
    reasons_total: int = 0  # distinct reasons before the top-N cut
    reasons_kind: str = "finding code"
    signers: list[SignerRow] = field(default_factory=list)
    signers_total: int = 0
    failing: list[FailingFile] = field(default_factory=list)
    failing_total: int = 0
    computers: list[ComputerRow] = field(default_factory=list)
    computers_total: int = 0
    fingerprints: dict[str, str] = field(default_factory=dict)
    policies: list[tuple[str, str]] = field(default_factory=list)  # (name, id) seen
    filters: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def file_count(self) -> int:
        return self.files

    @property
    def not_valid(self) -> int:
        return sum(self.by_status.get(s, 0) for s in STATUSES if s != "valid")
