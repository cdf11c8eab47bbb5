"""Bounds on what an image may make us read (configuration, like :mod:`codeintegrity.limits`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..limits import DEFAULT_LIMITS, GIB, MIB


@dataclass(frozen=True, slots=True)
class ImageLimits:
    # A file larger than this is reported as not judged (CLI: --max-file-size). Files are read
    # in chunks, so this bounds the time one file takes (and what a damaged MFT record claiming
    # a huge size can make us read), not memory. 4 GiB: the PE format's 32-bit file offsets, and
    # the engine's own limit (codeintegrity.limits).
    max_file_size: int = 4 * GIB
    max_catalog_size: int = DEFAULT_LIMITS.max_catalog_size
    # Microsoft's full driver blocklist compiles to about 240 KiB.
    max_policy_size: int = 64 * MIB
    # Real SYSTEM hives are tens of MiB.
    max_hive_size: int = 512 * MIB


DEFAULT_IMAGE_LIMITS = ImageLimits()
