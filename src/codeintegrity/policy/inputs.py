"""Reading policy, import and CRL files at the edge, with a size bound.

The bound keeps ``/dev/zero``, a runaway pipe or a multi-gigabyte file from being read into
memory whole: reading stops one byte past the limit and the file is refused with a one-line
:class:`PolicyError`. Pipes and process substitution (``<(curl ...)``) still work.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PolicyError
from ..limits import MIB

# Real inputs are far smaller: a converted Microsoft blocklist is ~0.3 MiB of TOML, the
# LOLDrivers drivers.json ~30 MiB, the largest public CRLs tens of MiB.
MAX_POLICY_BYTES = 64 * MIB
MAX_IMPORT_BYTES = 256 * MIB
MAX_CRL_BYTES = 256 * MIB


def read_bounded(path: str | Path, what: str, limit: int) -> bytes:
    """The bytes of ``path``; PolicyError naming ``what`` if unreadable or over ``limit``."""
    try:
        with open(path, "rb") as handle:  # a file or a pipe, read only up to the bound
            data = handle.read(limit + 1)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise PolicyError(f"{path!r}: cannot read {what}: {exc}") from None
    if len(data) > limit:
        size = f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"
        raise PolicyError(f"{path}: {what} is larger than {size}")
    return data
