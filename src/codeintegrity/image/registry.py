"""What the image's SYSTEM hive says: computer name, drivers set to start, CI switches.

Read with dissect.regf over the hive's bytes. Transaction logs are not replayed (neither
dissect.regf nor dissect.target can): a hive copied from a running or crashed system may lag its
``SYSTEM.LOG1``/``.LOG2``. Such a "dirty" hive is detected from its base block, whose primary
and secondary sequence numbers differ while a write is pending (or whose checksum does not
match), and reported, so that stale settings are not taken silently. The current control set
is ``Select\\Current``; services are kernel drivers (Type 1) and file-system drivers (Type 2).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, MalformedError, one_line
from ..reader import Reader

SERVICE_KERNEL_DRIVER = 0x1
SERVICE_FILE_SYSTEM_DRIVER = 0x2
DRIVER_TYPES = (SERVICE_KERNEL_DRIVER, SERVICE_FILE_SYSTEM_DRIVER)
START_NAMES = {0: "boot", 1: "system", 2: "automatic", 3: "demand", 4: "disabled"}


class HiveError(InputError):
    """The SYSTEM hive cannot be parsed."""

    reference = "hive-error"


class MalformedBaseBlock(MalformedError):
    """The hive's base block (its first 4096 bytes) is cut short."""


@dataclass(frozen=True)
class BaseBlockState:
    """The base block fields that tell whether the hive file is up to date."""

    primary_sequence: int
    secondary_sequence: int
    checksum_ok: bool

    @property
    def dirty(self) -> bool:
        """A write was pending (the sequence numbers differ) or the base block is damaged: the
        latest state may only be in the transaction logs."""
        return self.primary_sequence != self.secondary_sequence or not self.checksum_ok


def base_block_state(data: bytes) -> BaseBlockState:
    """Sequence numbers (offsets 4 and 8) and the XOR-32 checksum of the first 508 bytes
    (offset 508; 0 is written as 1 and 0xFFFFFFFF as 0xFFFFFFFE), per the regf format
    specification. Raises :class:`MalformedBaseBlock` on a file shorter than the checksum."""
    reader = Reader(data, MalformedBaseBlock)
    primary = reader.u32(4, "base block primary sequence number")
    secondary = reader.u32(8, "base block secondary sequence number")
    stored = reader.u32(508, "base block checksum")
    checksum = 0
    for offset in range(0, 508, 4):
        checksum ^= reader.u32(offset, "base block")
    if checksum == 0:
        checksum = 1
    elif checksum == 0xFFFFFFFF:
        checksum = 0xFFFFFFFE
    return BaseBlockState(primary, secondary, checksum == stored)


@dataclass(frozen=True)
class Service:
    name: str
    image_path: str | None  # as written (REG_EXPAND_SZ unexpanded)
    start: int | None
    type: int | None

    @property
    def is_driver(self) -> bool:
        return self.type is not None and self.type & 0xF in DRIVER_TYPES and self.type < 0x10

    @property
    def set_to_start(self) -> bool:
        return self.start is not None and 0 <= self.start <= 3

    @property
    def start_name(self) -> str:
        return START_NAMES.get(self.start, str(self.start)) if self.start is not None else "-"


@dataclass
class SystemHive:
    control_set: str
    computer_name: str | None
    services: list[Service] = field(default_factory=list)
    blocklist_enabled: int | None = None  # Control\CI\Config\VulnerableDriverBlocklistEnable
    hvci_enabled: int | None = None  # ...\HypervisorEnforcedCodeIntegrity\Enabled
    warnings: list[str] = field(default_factory=list)
    base_block: BaseBlockState | None = None

    def drivers_to_start(self) -> list[Service]:
        return [s for s in self.services if s.is_driver and s.set_to_start]


def parse_system_hive(data: bytes) -> SystemHive:
    """Parse a SYSTEM hive. Raises :class:`HiveError` when it is not a usable hive."""
    from dissect.regf import regf

    try:
        hive = regf.RegistryHive(io.BytesIO(data))
        current = _value(hive, "Select", "Current")
    except Exception as exc:  # noqa: BLE001 - dissect raises many kinds for damaged hives
        raise HiveError(f"SYSTEM hive does not parse: {one_line(exc)}") from None
    control_set = f"ControlSet{int(current) if isinstance(current, int) else 1:03d}"
    out = SystemHive(control_set, None)
    try:
        out.base_block = base_block_state(data)
    except MalformedBaseBlock as exc:  # dissect read it, so this hardly happens; still say so
        out.warnings.append(f"SYSTEM hive: {exc.diagnostics()}")
    name = _value(hive, rf"{control_set}\Control\ComputerName\ComputerName", "ComputerName")
    out.computer_name = str(name) if isinstance(name, str) and name else None
    ci = _value(hive, rf"{control_set}\Control\CI\Config", "VulnerableDriverBlocklistEnable")
    out.blocklist_enabled = int(ci) if isinstance(ci, int) else None
    hvci = _value(
        hive,
        rf"{control_set}\Control\DeviceGuard\Scenarios\HypervisorEnforcedCodeIntegrity",
        "Enabled",
    )
    out.hvci_enabled = int(hvci) if isinstance(hvci, int) else None
    try:
        services = list(hive.open(rf"{control_set}\Services").subkeys())
    except Exception as exc:  # noqa: BLE001
        out.warnings.append(f"SYSTEM hive: no {control_set}\\Services key ({one_line(exc)})")
        services = []
    for key in services:
        values = _values(key)
        image_path = values.get("imagepath")
        start, kind = values.get("start"), values.get("type")
        out.services.append(
            # Plain int/str: dissect hands out its own integer types, which do not pickle.
            Service(
                name=str(key.name),
                image_path=str(image_path) if isinstance(image_path, str) else None,
                start=int(start) if isinstance(start, int) else None,
                type=int(kind) if isinstance(kind, int) else None,
            )
        )
    out.services.sort(key=lambda s: s.name.lower())
    return out


def _value(hive: Any, path: str, name: str) -> object | None:
    try:
        return hive.open(path).value(name).value
    except Exception:  # noqa: BLE001 - a missing key or value is simply absent
        return None


def _values(key: Any) -> dict[str, object]:
    out: dict[str, object] = {}
    try:
        for value in key.values():
            try:
                out[str(value.name).lower()] = value.value
            except Exception:  # noqa: BLE001, S112 - one damaged value must not hide the rest
                continue
    except Exception:  # noqa: BLE001, S110
        pass
    return out
