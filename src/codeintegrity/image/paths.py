"""Path forms: a service's ImagePath -> a path on the system volume -> Windows and NT forms.

Volume-relative paths use forward slashes (``Windows/System32/drivers/x.sys``); reports show
``C:\\Windows\\System32\\drivers\\x.sys`` and events carry the NT device form
``\\Device\\HarddiskVolumeN\\Windows\\...`` in param1, as Windows writes them. N is the
volume's position on the disk, which is what Windows assigns on a single-disk machine (an
option overrides it).
"""

from __future__ import annotations

import re

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_ENV = re.compile(r"%(SystemRoot|windir)%", re.IGNORECASE)


def driver_image_path(image_path: str | None, service_name: str) -> str:
    """The volume-relative path the kernel loads a driver service from.

    ``\\SystemRoot\\X`` and ``%SystemRoot%\\X`` are under Windows, ``\\??\\C:\\X`` and ``C:\\X``
    are on the system drive, a path without a root is relative to SystemRoot (the usual
    ``System32\\drivers\\x.sys``), and no ImagePath means ``System32\\drivers\\NAME.sys``.
    """
    text = (image_path or "").strip().strip('"').strip()
    if not text:
        return f"Windows/System32/drivers/{service_name}.sys"
    text = _ENV.sub(r"\\SystemRoot", text)
    lowered = text.lower()
    for prefix in ("\\??\\", "\\\\?\\", "\\dosdevices\\", "\\global??\\"):
        if lowered.startswith(prefix):
            text = text[len(prefix) :]
            lowered = text.lower()
            break
    if lowered.startswith("\\systemroot\\") or lowered.startswith("systemroot\\"):
        rest = text.split("\\", 2)[-1] if text.startswith("\\") else text.split("\\", 1)[-1]
        return _slashes(f"Windows\\{rest}")
    if _DRIVE.match(text):
        return _slashes(text[3:])
    if text.startswith("\\"):
        return _slashes(text.lstrip("\\"))
    return _slashes(f"Windows\\{text}")


def _slashes(path: str) -> str:
    return "/".join(p for p in path.replace("\\", "/").split("/") if p)


def windows_path(rel: str, drive: str = "C") -> str:
    return f"{drive}:\\" + rel.replace("/", "\\")


def nt_path(rel: str, device: str) -> str:
    return device.rstrip("\\") + "\\" + rel.replace("/", "\\")


def device_name(volume_number: int) -> str:
    return f"\\Device\\HarddiskVolume{volume_number}"
