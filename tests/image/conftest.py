"""The disk image every image test judges: built once per test session by the real tools."""

from __future__ import annotations

import os

import pytest

from .imagedata import ImageSet, build, missing_tools


@pytest.fixture(scope="session")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"image tools not installed: {', '.join(missing)} (apt: ntfs-3g qemu-utils ewf-tools)"
        )
    if os.geteuid() != 0:
        pytest.skip("building the NTFS test volume mounts it with ntfs-3g (FUSE), which needs root")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse: the NTFS test volume cannot be mounted with ntfs-3g")
    return build(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def image_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CODEINTEGRITY_HOME of the session: catalog copies, index and event store stay here."""
    return str(tmp_path_factory.mktemp("cihome"))
