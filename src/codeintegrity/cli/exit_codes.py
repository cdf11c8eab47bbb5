"""Every exit status the CLI can return, in one place: one meaning per code.

When several apply, ``verify`` returns the first of: INTERRUPTED, BROKEN_PIPE, USAGE, CONFIG,
SELFTEST_FAILED (these end the run), then INTERNAL > UNREADABLE > NOT_VALID > EVENTS_LOST > OK
(these are counted over a run that judged every file; stderr names each).
"""

from __future__ import annotations

from ..scan import tally as _tally

OK = _tally.OK  # every file judged was valid (or allowed by an enforce-mode policy)
NOT_VALID = _tally.NOT_VALID  # a file not valid (any policy mode) or denied in enforce mode
USAGE = 2  # bad command line (click's own usage errors use 2 as well)
UNREADABLE = _tally.UNREADABLE  # a path could not be read (the others were still judged)
CONFIG = 4  # a trust, policy, catalog, sink or --files-from argument that does not load
SELFTEST_FAILED = 5  # a cryptographic known-answer test failed; nothing was verified
UNAVAILABLE = 69  # EX_UNAVAILABLE: guard cannot use fanotify here (not root, no kernel support)
EVENTS_LOST = _tally.EVENTS_LOST  # events not delivered to a sink (see --events-best-effort)
INTERNAL = _tally.INTERNAL  # a bug hit while judging some file (EX_SOFTWARE); others judged
INTERRUPTED = 130  # SIGINT (Ctrl-C): what was judged is written, then a summary on stderr
BROKEN_PIPE = 141  # stdout was closed by the reader (`| head`): 128 + SIGPIPE, as shells show
