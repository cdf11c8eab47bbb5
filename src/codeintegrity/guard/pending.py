"""What the guard's event loop works on: its configuration and the opens waiting for answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .cache import FileVersion
    from .rules import Rules


@dataclass(frozen=True, slots=True)
class GuardConfig:
    paths: tuple[str, ...]
    timeout: float = 2.0
    on_timeout: Literal["allow", "deny"] = "allow"
    workers: int = 4
    queue_size: int = 1024
    cache_size: int = 4096
    mark: Literal["filesystem", "mount"] = "filesystem"
    busy_poll_us: int = 100  # keep reading this long after an event before sleeping in poll()


@dataclass(slots=True)
class Pending:
    """One permission event waiting for its answer."""

    fd: int
    pid: int
    path: str
    version: FileVersion
    rules: Rules
    deadline: float
    started: float
    leader: bool = True  # the open whose fd is read; its fd is closed by the worker
    answered: bool = False
    followers: list[Pending] = field(default_factory=list)
