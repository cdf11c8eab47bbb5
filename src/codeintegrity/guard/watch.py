"""``codeintegrity watch``: judge files in watched trees once they are written (no root).

inotify reports files created, closed after writing or moved in; each is judged once it is
stable: ``debounce`` seconds after its last event, and only if its size and mtime did not move
in between (a copy still in progress is judged when it ends, not halfway). New directories are
watched as they appear; a queue overflow (IN_Q_OVERFLOW) rescans every tree, so nothing written
while events were lost goes unjudged. Events are raised as ``verify`` raises them.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import inotify as ino
from .notify import drain

if TYPE_CHECKING:
    from ..events.pipeline import EventPipeline
    from ..report import Report
    from .rules import Rules, RulesConfig

_FILE_EVENTS = ino.IN_CREATE | ino.IN_CLOSE_WRITE | ino.IN_MOVED_TO | ino.IN_MODIFY
_NEW_DIR = ino.IN_CREATE | ino.IN_MOVED_TO


class Watcher:
    def __init__(
        self,
        paths: tuple[str, ...],
        rules: Rules,
        rules_config: RulesConfig,
        pipeline: EventPipeline | None,
        *,
        debounce: float = 1.0,
        on_report: Callable[[Report], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.paths = tuple(os.path.realpath(p) for p in paths)
        self.rules = rules
        self.rules_config = rules_config
        self.pipeline = pipeline
        self.debounce = debounce
        self.on_report = on_report
        self.log = log
        self.judged = 0
        self.failures = 0
        self._dirs: dict[int, str] = {}
        self._pending: dict[str, tuple[float, tuple[int, int] | None]] = {}
        self._stop = threading.Event()
        self._reload = False
        self._inotify: ino.Inotify | None = None

    def start(self) -> None:
        self._inotify = ino.Inotify()
        for path in self.paths:
            if Path(path).is_dir():
                self._watch_tree(path, queue_files=False)
            else:
                raise ino.InotifyError(f"{path} is not a directory")

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, *, install_signals: bool = True) -> None:
        assert self._inotify is not None
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous: dict[signal.Signals, Any] = {}
        if install_signals:
            signal.set_wakeup_fd(wake_w)
            handlers: dict[signal.Signals, Callable[..., None]] = {
                signal.SIGTERM: lambda *_: self._stop.set(),
                signal.SIGINT: lambda *_: self._stop.set(),
                signal.SIGHUP: lambda *_: setattr(self, "_reload", True),
            }
            for signum, handler in handlers.items():
                previous[signum] = signal.signal(signum, handler)
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        self.log(f"ready: watching {', '.join(self.paths)} (debounce {self.debounce:g} s)")
        try:
            while not self._stop.is_set():
                for fd, _ in poller.poll(self._poll_ms()):
                    if fd == wake_r:
                        drain(wake_r)
                    else:
                        self._on_events(self._inotify.read())
                if self._reload:
                    self._reload = False
                    self._do_reload()
                self._judge_due(time.monotonic())
        finally:
            if install_signals:
                signal.set_wakeup_fd(-1)
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
            self._inotify.close()

    # -- events ----------------------------------------------------------------------------

    def _poll_ms(self) -> int:
        if not self._pending:
            return 500
        first = min(t for t, _ in self._pending.values())
        return max(10, min(500, int((first + self.debounce - time.monotonic()) * 1000) + 1))

    def _on_events(self, events: list[ino.InotifyEvent]) -> None:
        now = time.monotonic()
        for event in events:
            if event.mask & ino.IN_Q_OVERFLOW:
                self.log("inotify queue overflowed: rescanning every tree")
                for path in self.paths:
                    self._watch_tree(path, queue_files=True)
                continue
            directory = self._dirs.get(event.wd)
            if directory is None:
                continue
            if event.mask & (ino.IN_IGNORED | ino.IN_DELETE_SELF):
                self._dirs.pop(event.wd, None)
                continue
            path = str(Path(directory, event.name)) if event.name else directory
            if event.mask & ino.IN_ISDIR:
                if event.mask & _NEW_DIR:
                    self._watch_tree(path, queue_files=True)
                continue
            if event.mask & _FILE_EVENTS:
                self._pending[path] = (now, _size_mtime(path))

    def _watch_tree(self, root: str, *, queue_files: bool) -> None:
        assert self._inotify is not None
        now = time.monotonic()
        for current, _dirs, files in os.walk(root):
            try:
                wd = self._inotify.add_watch(current)
            except ino.InotifyError as exc:
                self.log(f"not watched: {exc}")
                continue
            self._dirs[wd] = current
            if queue_files:  # written before the watch existed: judge them too
                for name in files:
                    path = str(Path(current, name))
                    self._pending[path] = (now, _size_mtime(path))

    def _judge_due(self, now: float) -> None:
        due = [p for p, (t, _) in self._pending.items() if now - t >= self.debounce]
        for path in due:
            _, seen = self._pending.pop(path)
            current = _size_mtime(path)
            if current is None:
                continue  # gone (deleted or moved away)
            if current != seen:  # still being written: wait for quiet again
                self._pending[path] = (now, current)
                continue
            self._judge(path)

    def _judge(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or os.pread(fd, 2, 0) != b"MZ":
                return
            verdict = self.rules.judge_fd(fd, path)
        except OSError as exc:
            self.log(f"cannot read {path}: {exc.strerror}")
            return
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the watch
            self.log(f"internal error judging {path}: {type(exc).__name__}: {exc}")
            return
        finally:
            os.close(fd)
        report = verdict.report
        self.judged += 1
        if report.event_ids:
            self.failures += 1
        if self.pipeline is not None:
            self.pipeline.emit_report(report)
        if self.on_report is not None:
            self.on_report(report)

    def _do_reload(self) -> None:
        from ..errors import CIError
        from .rules import build_rules

        try:
            self.rules = build_rules(self.rules_config)
        except (CIError, OSError) as exc:
            message = exc.diagnostics() if isinstance(exc, CIError) else str(exc)
            self.log(f"reload failed, previous rules kept: {message}")
            return
        self.log("reloaded rules")


def _size_mtime(path: str) -> tuple[int, int] | None:
    try:
        st = Path(path).lstat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)
