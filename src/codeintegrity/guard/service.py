"""The on-access guard: fanotify permission events in, allow/deny answers out.

One thread reads events and answers everything it can at once (the guard's own opens, files
outside the guarded trees, anything that is not a regular file starting with ``MZ``, cached
verdicts). A cache miss becomes a :class:`Pending` open in a bounded queue that worker threads
drain, so one slow file never holds up other opens. Concurrent opens of the same file version
wait for the one verification already running instead of queueing another.

Fail mode: an open not answered within ``timeout`` seconds gets the fail decision (allow in
audit mode, ``on_timeout`` in enforce mode); so does an open that finds the queue full (counted
as an overflow). The worker still finishes a verification that timed out and caches it, so the
next open of that file is answered from the cache. A guard that dies (even by SIGKILL) never
blocks the host: when its fanotify group closes, the kernel allows every pending open.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import fanotify as fan
from .batch import AnswerBatch
from .cache import FileVersion, Verdict, VerdictCache, file_version, unchanged
from .notify import drain, sd_notify
from .opener import Opener, opener_of
from .pending import GuardConfig, Pending
from .stats import GuardStats, events_lost

if TYPE_CHECKING:
    from ..events.pipeline import EventPipeline
    from .patterns import PatternMonitor
    from .rules import Rules, RulesConfig

_READ_SIZE = 64 * 1024  # up to ~2700 event records per read()
_NOTIFY_MASK = fan.FAN_CLOSE_WRITE | fan.FAN_MODIFY
# While events keep coming, the event thread hands control back to its loop this often, so
# that a stop, a reload or an expired timeout is seen under a continuous stream of opens.
_SERVE_SLICE = 0.05


class Guard:
    def __init__(
        self,
        config: GuardConfig,
        rules: Rules,
        rules_config: RulesConfig,
        pipeline: EventPipeline | None,
        *,
        patterns: PatternMonitor | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.rules = rules
        self.rules_config = rules_config
        self.pipeline = pipeline
        self.patterns = patterns
        self.log = log or (lambda line: print(f"codeintegrity guard: {line}", file=sys.stderr))
        self.stats = GuardStats()
        self.cache = VerdictCache(config.cache_size)
        self.roots = tuple(_root(os.path.realpath(p)) for p in config.paths)
        self._own_pid = os.getpid()
        self._queue: queue.Queue[Pending | None] = queue.Queue(config.queue_size)
        self._inflight: dict[tuple[FileVersion, str], Pending] = {}
        self._timeouts: deque[Pending] = deque()
        self._lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._fan = -1
        self._wake_w = -1
        self._stop = threading.Event()
        self._reload_requested = False
        self._workers: list[threading.Thread] = []
        self.started = time.monotonic()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Create the group and mark every path's filesystem (or mount)."""
        fan.raise_fd_limit(self.config.queue_size + 256)
        self._fan = fan.open_group(nonblocking=True)
        flags = fan.FAN_MARK_ADD | (
            fan.FAN_MARK_FILESYSTEM if self.config.mark == "filesystem" else fan.FAN_MARK_MOUNT
        )
        try:
            for path in self.config.paths:
                fan.fanotify_mark(self._fan, flags, fan.PERMISSION_EVENTS | _NOTIFY_MASK, path)
        except fan.FanotifyError:
            os.close(self._fan)
            self._fan = -1
            raise
        for index in range(max(1, self.config.workers)):
            worker = threading.Thread(target=self._work, name=f"guard-worker-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested = True

    def run(self, *, install_signals: bool = True) -> None:
        """Serve until stopped (SIGTERM/SIGINT or :meth:`request_stop`)."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_w = wake_w
        previous: dict[signal.Signals, Any] = {}
        if install_signals:
            signal.set_wakeup_fd(wake_w)
            handlers: dict[signal.Signals, Callable[..., None]] = {
                signal.SIGTERM: lambda *_: self.request_stop(),
                signal.SIGINT: lambda *_: self.request_stop(),
                signal.SIGHUP: lambda *_: self.request_reload(),
            }
            for signum, handler in handlers.items():
                previous[signum] = signal.signal(signum, handler)
        poller = select.poll()
        poller.register(self._fan, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        paths = ", ".join(self.config.paths)
        self.log(f"ready: guarding {paths} (mode {self.rules.mode}, {self.config.mark} marks)")
        sd_notify(f"READY=1\nSTATUS=guarding {paths}")
        try:
            while not self._stop.is_set():
                slept = time.monotonic()
                for fd, _ in poller.poll(self._poll_timeout_ms()):
                    if fd == self._fan:
                        self._serve_events(time.monotonic() - slept)
                    else:
                        drain(wake_r)
                if self._reload_requested:
                    self._reload_requested = False
                    threading.Thread(target=self.reload, name="guard-reload", daemon=True).start()
                self._expire(time.monotonic())
        finally:
            sd_notify("STOPPING=1")
            self._shutdown()
            if install_signals:
                signal.set_wakeup_fd(-1)
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            self._wake_w = -1
            os.close(wake_r)
            os.close(wake_w)

    def snapshot(self, **extra: int) -> dict[str, int | None]:
        """Every counter, for ``guard status`` and the stop report."""
        cache = self.cache.counters
        return self.stats.snapshot(
            cache_hits=cache.hits,
            cache_misses=cache.misses,
            cache_entries=len(self.cache),
            cache_evictions=cache.evictions,
            cache_invalidations=cache.invalidations,
            queue_depth=self._queue.qsize(),
            uptime_s=int(time.monotonic() - self.started),
            **({"events_lost": events_lost(self.pipeline)} | extra),
        )

    def wake(self) -> None:
        """Make the event loop look at its flags now (from another thread)."""
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:
                pass  # the pipe is full: the loop is awake already

    def reload(self) -> bool:
        """Build the rules again from their files; the marks stay. False when they do not load
        (the old rules stay in force)."""
        from ..errors import CIError
        from .rules import build_rules

        sd_notify("RELOADING=1")
        try:
            rules = build_rules(self.rules_config)
        except (CIError, OSError) as exc:
            message = exc.diagnostics() if isinstance(exc, CIError) else str(exc)
            self.log(f"reload failed, previous rules kept: {message}")
            sd_notify("READY=1")
            return False
        self.rules = rules
        self.cache.clear()
        self.log(f"reloaded rules (fingerprint {rules.fingerprint[:12]})")
        sd_notify("READY=1")
        return True

    def _shutdown(self) -> None:
        # Pending opens are allowed, as the kernel would on group close; late worker answers
        # become no-ops because each open is answered once.
        with self._lock:
            pending = [p for p in self._timeouts if not p.answered]
        for item in pending:
            self._answer(item, True)
        while True:  # queued opens, all answered above: only their fds remain
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            if queued is not None:
                os.close(queued.fd)
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + max(1.0, self.config.timeout)
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if self._fan >= 0:
            os.close(self._fan)
            self._fan = -1

    # -- the event thread ----------------------------------------------------------------

    def _poll_timeout_ms(self) -> int:
        try:
            head = self._timeouts[0].deadline  # only this thread removes from the left
        except IndexError:
            return 500
        return max(0, min(500, int((head - time.monotonic()) * 1000) + 1))

    def _serve_events(self, slept: float) -> None:
        """Read and answer events until none is waiting. Busy polling (``busy_poll_us``):
        keep reading that long after an event before sleeping in poll(), so a burst's next
        open needs no wake-up of this thread (or of an idle CPU). Adaptive, like haltpoll: it
        spins only after a sleep (``slept``) shorter than the window and stops at the first
        window that passes empty, so sparse opens cost no spinning and no opens cost nothing."""
        window = self.config.busy_poll_us / 1_000_000
        spin = window if slept < window else 0.0
        group, clock = self._fan, time.monotonic
        give_back = clock() + _SERVE_SLICE
        quiet_until = 0.0
        spun = 0
        while True:
            try:
                data = os.read(group, _READ_SIZE)
            except BlockingIOError:
                if spin and clock() < quiet_until:
                    continue
                break
            except InterruptedError:
                break
            except OSError as exc:
                # The kernel could not open the file for us (EMFILE, ENFILE, ...); it has
                # denied that open itself. Count it and keep serving.
                with self.stats.lock:
                    self.stats.read_errors += 1
                    first = self.stats.read_errors == 1
                if first:
                    self.log(f"reading events failed ({exc.strerror}); counted as read_errors")
                break
            self._on_events(data)
            if not spin:
                break  # poll() says at once whether more is waiting
            spun += 1
            now = clock()
            if now >= give_back or self._stop.is_set():
                break
            quiet_until = now + spin
        if spun > 1:
            self.stats.busy_polled += spun - 1  # reads that found events while spinning

    def _on_events(self, data: bytes) -> None:
        """Answer one read's events: every open decided at once (cached verdict, not ours)
        in one batch first, then the slow work: events to raise, cache misses to queue.
        Written flat (locals, few calls): every open on the guarded filesystems waits here."""
        try:
            records = fan.event_records(data)
        except fan.FanotifyRecordError as exc:
            self.log(f"unreadable event record skipped: {exc}")
            return
        now = time.monotonic()
        rules = self.rules
        fingerprint, own_pid, lookup = rules.fingerprint, self._own_pid, self.cache.lookup
        batch = AnswerBatch(now)
        respond, answered = batch.responses.append, batch.fds.append
        pack, fstat, is_regular = fan.response_bytes, os.fstat, stat.S_ISREG
        misses: list[tuple[int, int, FileVersion]] = []
        for mask, fd, pid in records:
            if mask & fan.FAN_Q_OVERFLOW:
                batch.kernel_overflows += 1
            if fd < 0:
                continue
            if not mask & fan.PERMISSION_EVENTS:
                self._on_write(fd)
                continue
            # One fstat() finds a cached verdict: only files that were judged (MZ files under
            # the trees) are in the cache, so a hit needs neither the path nor the first bytes.
            try:
                st = None if pid == own_pid else fstat(fd)
            except OSError:
                st = None
            if st is None or not is_regular(st.st_mode) or st.st_size < 2:
                respond(pack(fd, True))  # the guard itself, not a regular file: not ours
                answered(fd)
                batch.ignored += 1
                continue
            version = file_version(st)  # the workers' cache keys are made by the same function
            verdict = lookup(version, fingerprint)
            if verdict is None:
                misses.append((fd, pid, version))
                continue
            respond(pack(fd, verdict.allow))
            answered(fd)
            batch.count(verdict, opener_of(pid) if verdict.raises_events else None)
        batch.flush(self._fan, self.stats, self.log)
        for report, opener in batch.emits:
            self._emit(report, opener)
        for fd, pid, version in misses:
            self._on_miss(fd, pid, version, rules, now)

    def _on_write(self, fd: int) -> None:
        try:
            st = os.fstat(fd)
            self.cache.invalidate(st.st_dev, st.st_ino)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _on_miss(self, fd: int, pid: int, version: FileVersion, rules: Rules, now: float) -> None:
        """An open with no cached verdict: allowed at once when it is outside the trees or not
        an MZ file, else queued for a worker (or joined to the same file's running judgement)."""
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")  # noqa: PTH115 - str in, str out
            ours = any(path == root[:-1] or path.startswith(root) for root in self.roots)
            ours = ours and os.pread(fd, 2, 0) == b"MZ"
        except OSError:
            ours = False
        if not ours:
            with self.stats.lock:
                self.stats.ignored += 1
            self._respond(fd, True)
            os.close(fd)
            return
        self.cache.miss()
        pending = Pending(
            fd=fd,
            pid=pid,
            path=path,
            version=version,
            rules=rules,
            deadline=now + self.config.timeout,
            started=now,
        )
        key = (version, rules.fingerprint)
        with self._lock:
            running = self._inflight.get(key)
            if running is not None and not running.answered:
                pending.leader = False
                running.followers.append(pending)
                self.stats.coalesced += 1
                self._timeouts.append(pending)
                return
            try:
                self._queue.put_nowait(pending)
            except queue.Full:
                self.stats.overflows += 1
                overflow = True
            else:
                overflow = False
                self._inflight[key] = pending
                self._timeouts.append(pending)
                depth = self._queue.qsize()
                if depth > self.stats.queue_max_depth:
                    self.stats.queue_max_depth = depth
        if overflow:
            self._answer(pending, self._fail_decision())
            os.close(fd)

    def _expire(self, now: float) -> None:
        if not self._timeouts:
            return
        due: list[Pending] = []
        with self._lock:
            pending = self._timeouts
            while pending and (pending[0].answered or pending[0].deadline <= now):
                item = pending.popleft()
                if not item.answered:
                    due.append(item)
            self.stats.timeouts += len(due)
        decision = self._fail_decision()
        for item in due:
            self._answer(item, decision)

    def _fail_decision(self) -> bool:
        return self.rules.mode == "audit" or self.config.on_timeout == "allow"

    # -- workers -------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._judge(item)
            finally:
                os.close(item.fd)

    def _judge(self, item: Pending) -> None:
        key = (item.version, item.rules.fingerprint)
        with self._lock:
            skip = item.answered or self._stop.is_set()
            if skip:
                self._inflight.pop(key, None)
                followers, item.followers = item.followers, []
                self.stats.expired += 1
        if skip:
            for follower in followers:  # not yet timed out: they get the fail decision too
                self._answer(follower, self._fail_decision())
            return
        verdict: Verdict | None
        try:
            verdict = item.rules.judge_fd(item.fd, item.path)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the guard
            self.log(f"internal error judging {item.path}: {type(exc).__name__}: {exc}")
            verdict = None
        with self._lock:
            self._inflight.pop(key, None)
            waiting = [item, *item.followers]
            item.followers = []
            self.stats.judged += 1
            if verdict is None:
                self.stats.errors += 1
        if verdict is None:
            for waiter in waiting:
                self._answer(waiter, self._fail_decision())
            return
        if unchanged(item.fd, item.version):
            self.cache.put(item.version, item.rules.fingerprint, verdict)
        for waiter in waiting:
            self._deliver(verdict, waiter)

    # -- answers and events --------------------------------------------------------------

    def _deliver(self, verdict: Verdict, target: Pending) -> None:
        """Answer one judged open with its verdict, counting it and raising its events."""
        opener = opener_of(target.pid) if verdict.raises_events else None
        if not self._answer(target, verdict.allow):
            opener = None  # already answered by the fail mode: raise nothing twice
        self.stats.latency(int((time.monotonic() - target.started) * 1_000_000))
        with self.stats.lock:
            if verdict.allow:
                self.stats.allowed += 1
                if verdict.raises_events:
                    self.stats.audited += 1
            else:
                self.stats.denied += 1
        if opener is not None:
            self._emit(verdict.report, opener)

    def _answer(self, item: Pending, allow: bool) -> bool:
        """Answer ``item`` unless it already was; followers' fds are closed here."""
        with self._lock:
            if item.answered:
                return False
            item.answered = True
        self._respond(item.fd, allow)
        if not item.leader:
            os.close(item.fd)
        return True

    def _respond(self, fd: int, allow: bool) -> None:
        if self._fan < 0:
            return
        try:
            os.write(self._fan, fan.response_bytes(fd, allow))
        except OSError as exc:
            # ENOENT: the kernel no longer waits for this fd (the opener was killed).
            self.log(f"answer for fd {fd} not taken: {exc.strerror}")

    def _emit(self, report: object, opener: Opener) -> None:
        from ..events.build import Host, events_for_report

        pipeline = self.pipeline
        host = opener.host(pipeline.host if pipeline is not None else Host.current())
        events = opener.stamp(events_for_report(report, host=host))  # type: ignore[arg-type]
        if pipeline is not None and events:
            with self._events_lock:
                pipeline.emit_batch(events)
        if self.patterns is not None:
            self.patterns.failure(report, opener)  # type: ignore[arg-type]


def _root(path: str) -> str:
    return path if path.endswith("/") else path + "/"
