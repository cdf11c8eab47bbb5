"""Every exit status the CLI can return, in one place."""

from __future__ import annotations

OK = 0  # every file valid (or allowed by the policy), the command did what was asked
NOT_VALID = 1  # at least one file not valid / denied in enforce mode
USAGE = 2  # bad command line (click's own usage errors use 2 as well)
UNREADABLE = 3  # at least one path could not be read (the others were still judged)
CONFIG = 4  # a trust, policy, catalog or sink argument that does not load
SELFTEST_FAILED = 5  # a cryptographic known-answer test failed; nothing was verified
UNAVAILABLE = 69  # EX_UNAVAILABLE: guard cannot use fanotify here (not root, no kernel support)
INTERNAL = 70  # a bug hit while judging some file (EX_SOFTWARE); the others were judged
INTERRUPTED = 130
