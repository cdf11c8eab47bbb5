"""Workers tell each other, through the parent, what they have done (validated chains)."""

from __future__ import annotations

import os
import signal
import time

from codeintegrity.scan.pool import Plan, Send, run_pool
from codeintegrity.scan.share import NewsPipe, Share


def test_news_pipe_never_blocks_the_parent_and_delivers_whole_messages_in_order():
    pipe = NewsPipe()
    # One process plays both sides here; each end is only ever used by its side.
    big = ["x" * 50_000 for _ in range(8)]  # more than a pipe holds (64 KiB), less than the bound
    for i, item in enumerate(big):
        pipe.post([i, item])  # returns at once: what the pipe cannot take waits
    assert pipe._waiting  # the worker has not read yet
    got: list[object] = []
    for _ in range(50):
        got += pipe.receive()  # whole messages only, without waiting
        pipe.flush()
        if len(got) == 2 * len(big):
            break
    assert got == [x for i, item in enumerate(big) for x in (i, item)]
    assert not pipe._waiting and pipe.receive() == []
    pipe.close()


def test_news_for_a_worker_that_never_reads_is_bounded():
    pipe = NewsPipe()
    from codeintegrity.scan import share

    for _ in range(400):
        pipe.post(["y" * 100_000])
    assert len(pipe._waiting) <= share._MAX_WAITING and pipe.dropped > 0
    pipe.close()


# Each worker tells its pid after every task and keeps what it hears; the task returns that.
_HEARD: list[object] = []


def _tell() -> list[object]:
    return [os.getpid()]


def _learn(items: list[object]) -> None:
    _HEARD.extend(items)


_SHARE = Share(start=_HEARD.clear, take=_tell, learn=_learn)


class _Keep(Plan):
    def prepare(self, item):
        return Send(item, item)

    def finish(self, result, state):
        return result

    def crashed(self, state, message):
        return ("crashed", state, message)


def _work(task: object) -> tuple[int, set[object]]:
    if task == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.003)
    return os.getpid(), set(_HEARD)


def test_what_one_worker_tells_reaches_the_other_and_a_replacement_worker():
    results = list(run_pool(range(300), _Keep(), _work, 2, ordered=True, share=_SHARE))
    pids = {pid for pid, _heard in results}
    assert len(pids) == 2
    for pid in pids:
        heard = set().union(*(h for p, h in results if p == pid))
        assert heard == pids - {pid}  # the other worker's news, never its own
    # A worker started after one died hears what was told before it existed.
    tasks = [*range(100), "die", *range(100, 300)]
    results = list(run_pool(tasks, _Keep(), _work, 2, ordered=True, share=_SHARE))
    assert [r[1] for r in results if r[0] == "crashed"] == ["die"]
    done = [r for r in results if r[0] != "crashed"]
    first = {pid for pid, _heard in done[:100]}  # the workers started with the pool
    late = [heard for pid, heard in done if pid not in first]
    assert len(first) == 2 and late  # the replacement did the rest of the dead one's work
    assert set().union(*late) == first  # told by the log: both, the dead one included


def test_without_sharing_a_worker_hears_nothing():
    results = list(run_pool(range(50), _Keep(), _work, 2, ordered=True))
    assert all(heard == set() for _pid, heard in results)


def _learn_fails(items: list[object]) -> None:
    raise ValueError("cannot take this news in")


def _tell_unpicklable() -> list[object]:
    return [lambda: None]


def test_news_that_cannot_be_taken_in_or_sent_never_costs_a_file():
    # Two workers tell each other news the other cannot learn, and news that does not pickle:
    # every task still has its own result.
    share = Share(start=lambda: None, take=_tell_unpicklable, learn=_learn_fails)
    results = list(run_pool(range(40), _Keep(), _work, 2, ordered=True, share=share))
    assert all(isinstance(r[0], int) for r in results), results[:3]
    share = Share(start=lambda: None, take=_tell, learn=_learn_fails)
    results = list(run_pool(range(40), _Keep(), _work, 2, ordered=True, share=share))
    assert all(isinstance(r[0], int) for r in results) and len(results) == 40
