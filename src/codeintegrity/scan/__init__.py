"""Scanning many files: the streaming walk, judging each target, outcomes and their tally.

Used by ``codeintegrity verify`` (and meant for any command that judges trees): the walk yields
one value per path met, :func:`~.run.scan` one outcome per value, :class:`~.tally.Tally` the
counts, summary and exit status.
"""
