"""Where the files come from: a disk image read by dissect.target, or a mounted directory.

Both give :class:`Volume` objects with the same few operations over volume-relative paths
(``Windows/System32/drivers/x.sys``, any case, either slash): is it a file, its size, its bytes,
a random-access source of its bytes (``opened``: what files are judged from, in chunks), a
folder listing, a walk. dissect reads E01/EWF, VMDK, VHD/VHDX, QCOW2 and raw disks (MBR or
GPT) and their NTFS volumes without mounting anything; nothing is copied to disk.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError, one_line
from ..pe.source import ByteSource, FileDescriptorSource, FileObjectSource

IMAGE_SUFFIXES = (".e01", ".ex01", ".vmdk", ".vhd", ".vhdx", ".qcow2", ".raw", ".dd", ".img")
# NTFS system metafiles of the root folder (MFT records 0-11): filesystem metadata, never a file
# Windows loads. $Extend holds the rest ($ObjId, $Quota, $Reparse, $UsnJrnl, $RmMetadata...).
NTFS_METAFILES = frozenset(
    name.lower()
    for name in (
        "$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "$Bitmap", "$Boot", "$BadClus",
        "$Secure", "$UpCase", "$Extend",
    )
)  # fmt: skip
# MFT records below this number are reserved for the metafiles.
FIRST_USER_RECORD = 16


class ImageOpenError(InputError):
    """The image (or directory) cannot be opened or holds no readable volume."""

    reference = "image-open-error"


class Volume(Protocol):
    number: int  # 1-based, in partition order (the N of \Device\HarddiskVolumeN, best effort)
    label: str

    def is_file(self, rel: str) -> bool: ...
    def is_dir(self, rel: str) -> bool: ...
    def read(self, rel: str, limit: int) -> bytes | bytearray: ...
    def opened(self, rel: str) -> Any: ...  # a context manager giving the file's ByteSource
    def head(self, rel: str, length: int) -> bytes: ...  # the first bytes (MZ sniffing)
    def listdir(self, rel: str) -> list[tuple[str, bool]]: ...  # (name, is_dir)
    def is_metafile(self, rel: str) -> bool: ...  # an NTFS metafile or the $Extend folder
    @property
    def errors(self) -> list[str]: ...  # folders that could not be listed, one line each
    # files under rel, recursively; ``skip`` prunes a file or a whole folder
    def walk(self, rel: str, skip: Callable[[str], bool] | None = None) -> Iterator[str]: ...


def _parts(rel: str) -> list[str]:
    return [p for p in rel.replace("\\", "/").split("/") if p and p != "."]


class _Walks:
    """``walk`` for a volume that can ``listdir``: files under ``rel``, depth first, in the
    order ``listdir`` gives."""

    def listdir(self, rel: str) -> list[tuple[str, bool]]:
        raise NotImplementedError

    def walk(self, rel: str, skip: Callable[[str], bool] | None = None) -> Iterator[str]:
        base = "/".join(_parts(rel))
        for name, is_dir in self.listdir(base):
            child = f"{base}/{name}" if base else name
            if skip is not None and skip(child):
                continue
            if is_dir:
                yield from self.walk(child, skip)
            else:
                yield child


def _metafile_name(rel: str) -> str | None:
    """The root-level name of ``rel`` when it is one of the NTFS metafile names, else None."""
    parts = _parts(rel)
    if len(parts) != 1 or parts[0].lower() not in NTFS_METAFILES:
        return None
    return parts[0]


@dataclass
class DissectVolume(_Walks):
    """One filesystem of a disk image (dissect's NTFS and friends; lookups ignore case)."""

    fs: Any
    number: int
    label: str
    errors: list[str] = field(default_factory=list)
    # A path lookup walks every folder's index from the root: listings remember their entries
    # (dereferencing one is a single MFT read) and the last files looked up are kept.
    _listed: dict[str, Any] = field(default_factory=dict, repr=False)
    _recent: dict[str, Any] = field(default_factory=dict, repr=False)
    _held: tuple[str, Any] | None = field(default=None, repr=False)

    def _entry(self, rel: str) -> Any | None:
        key = "/".join(_parts(rel)).lower()
        found = self._recent.get(key)
        if found is not None:
            return found
        try:
            listed = self._listed.pop(key, None)
            found = listed.get() if listed is not None else self.fs.get(key or "/")
        except Exception:  # noqa: BLE001 - dissect raises its own FileNotFoundError variants
            return None
        if len(self._recent) >= 64:
            self._recent.clear()
        self._recent[key] = found
        return found

    def is_file(self, rel: str) -> bool:
        entry = self._entry(rel)
        return bool(entry is not None and _safe(entry.is_file))

    def is_dir(self, rel: str) -> bool:
        entry = self._entry(rel)
        return bool(entry is not None and _safe(entry.is_dir))

    def size(self, rel: str) -> int:
        entry = self._entry(rel)
        if entry is None:
            raise FileNotFoundError(rel)
        return int(entry.stat().st_size)

    def _open(self, rel: str) -> Any:
        """The file object of ``rel``: the one ``head`` opened is reused once (opening parses
        the record's attributes and run list again)."""
        key = "/".join(_parts(rel)).lower()
        if self._held is not None and self._held[0] == key:
            handle = self._held[1]
            self._held = None
            handle.seek(0)
            return handle
        entry = self._entry(rel)
        if entry is None:
            raise FileNotFoundError(rel)
        return entry.open()

    def read(self, rel: str, limit: int) -> bytes | bytearray:
        """The file's bytes (at most ``limit`` + 1), read through dissect's file object in one
        request (dissect maps it onto the volume's runs). Through :meth:`opened`: a damaged
        record or run list is an ``OSError``, and a file that ends early is a short read,
        never judged as if what was read were all of it."""
        with self.opened(rel) as source, _dissect_errors_as_oserror():
            # Not the source's own read: that one is the engine's (demand blocks, chunks).
            return FileObjectSource.read(source, 0, min(source.size, limit + 1))

    @contextmanager
    def opened(self, rel: str) -> Iterator[DissectFileSource]:
        """The file's bytes through dissect's file object, read where the engine asks (no copy
        of the file, in memory or on disk)."""
        with _dissect_errors_as_oserror():  # a damaged MFT record: unreadable
            handle = self._open(rel)
            # The stream knows its size (the data attribute's); stat() parses the record again.
            size = getattr(handle, "size", None)
            if not isinstance(size, int):
                size = self.size(rel)
        try:
            yield DissectFileSource(handle, size)
        finally:
            _close(handle)

    def head(self, rel: str, length: int) -> bytes:
        handle = self._open(rel)
        data = bytes(handle.read(length))
        if self._held is not None:
            _close(self._held[1])
        self._held = ("/".join(_parts(rel)).lower(), handle)
        return data

    def is_metafile(self, rel: str) -> bool:
        """A root-level NTFS metafile, named so and stored in a reserved MFT record (a file a
        user named "$Boot" on another filesystem is judged like any other)."""
        name = _metafile_name(rel)
        if name is None:
            return False
        record = getattr(getattr(self._entry(name), "entry", None), "segment", None)
        return isinstance(record, int) and record < FIRST_USER_RECORD

    def listdir(self, rel: str) -> list[tuple[str, bool]]:
        entry = self._entry(rel)
        if entry is None or not _safe(entry.is_dir):
            return []
        out = []
        base = "/".join(_parts(rel)).lower()
        try:
            for child in entry.scandir():
                if child.name in (".", ".."):
                    continue
                is_dir = bool(_safe(child.is_dir))
                out.append((child.name, is_dir))
                if not is_dir:
                    self._listed[f"{base}/{child.name}".lower().lstrip("/")] = child
        except Exception as exc:  # noqa: BLE001 - a damaged index: say so, keep what was read
            self.errors.append(f"cannot list {rel or '/'}: {one_line(exc)}")
        return sorted(out, key=lambda item: item[0].lower())


class DissectFileSource(FileObjectSource):
    """A dissect file object as a ByteSource. dissect reports a damaged run list or an
    unreadable cluster with exceptions of its own: they become ``OSError`` (an unreadable file,
    never an internal error of the engine)."""

    __slots__ = ()

    def read(self, offset: int, length: int) -> bytes | bytearray:
        with _dissect_errors_as_oserror(f"at {offset:#x}: "):
            return super().read(offset, length)
        raise AssertionError("unreachable")  # (for type checkers: the block returns or raises)


@contextmanager
def _dissect_errors_as_oserror(where: str = "") -> Iterator[None]:
    """dissect reports a damaged record, run list or cluster with exceptions of its own: they
    become ``OSError`` (an unreadable file, never an internal error of the engine)."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - dissect's errors are not OSErrors
        raise OSError(0, f"{where}{one_line(exc)}") from exc


def _close(handle: Any) -> None:
    close = getattr(handle, "close", None)
    if close is not None:
        close()


def _safe(call: Any) -> bool:
    try:
        return bool(call())
    except Exception:  # noqa: BLE001 - a damaged MFT record is "not there", not a crash
        return False


@dataclass
class DirectoryVolume(_Walks):
    """A mounted (or copied) volume: lookups ignore case, as on Windows."""

    root: Path
    number: int = 1
    label: str = "directory"
    errors: list[str] = field(default_factory=list)

    def _resolve(self, rel: str) -> Path | None:
        path = self.root
        for part in _parts(rel):
            exact = path / part
            if exact.exists():
                path = exact
                continue
            try:
                names = [child.name for child in path.iterdir()]
            except OSError:
                return None
            match = next((n for n in names if n.lower() == part.lower()), None)
            if match is None:
                return None
            path = path / match
        return path

    def is_file(self, rel: str) -> bool:
        path = self._resolve(rel)
        try:
            return path is not None and stat.S_ISREG(path.stat().st_mode)
        except OSError:
            return False

    def is_dir(self, rel: str) -> bool:
        path = self._resolve(rel)
        return path is not None and path.is_dir()

    def _regular(self, rel: str) -> Path:
        """The regular file ``rel`` names in the tree (``FileNotFoundError`` otherwise)."""
        path = self._resolve(rel)
        if path is None or not stat.S_ISREG(path.stat().st_mode):
            raise FileNotFoundError(rel)
        return path

    def read(self, rel: str, limit: int) -> bytes:
        with self._regular(rel).open("rb") as handle:
            return handle.read(limit + 1)

    def head(self, rel: str, length: int) -> bytes:
        with self._regular(rel).open("rb") as handle:
            return handle.read(length)

    def is_metafile(self, rel: str) -> bool:
        """ntfs-3g hides the metafiles; a copy of a volume that kept them is still metadata."""
        return _metafile_name(rel) is not None

    @contextmanager
    def opened(self, rel: str) -> Iterator[ByteSource]:
        fd = os.open(self._regular(rel), os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            yield FileDescriptorSource(fd)
        finally:
            os.close(fd)

    def listdir(self, rel: str) -> list[tuple[str, bool]]:
        path = self._resolve(rel)
        if path is None or not path.is_dir():
            return []
        out: list[tuple[str, bool]] = []
        try:
            out.extend(
                (child.name, child.is_dir() and not child.is_symlink()) for child in path.iterdir()
            )
        except OSError as exc:
            self.errors.append(f"cannot list {rel or '/'}: {exc.strerror or exc}")
        return sorted(out, key=lambda item: item[0].lower())


@dataclass
class Source:
    """An opened image or directory: its volumes and what kind of container it was."""

    path: str
    kind: str  # "directory" or the container class (RawContainer, EwfContainer, ...)
    volumes: list[Volume]
    _keep: Any = None  # dissect objects that must stay referenced while volumes are read


def open_source(path: str) -> Source:
    """Open a disk image (any container dissect knows) or a directory. Raises ImageOpenError."""
    target = Path(path)
    if target.is_dir():
        return Source(str(target), "directory", [DirectoryVolume(target)])
    if not target.exists():
        raise ImageOpenError(f"{path}: no such file or directory")
    try:
        from dissect.target import container, filesystem, volume
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImageOpenError(f"dissect.target is not installed ({exc})") from None
    try:
        disk = container.open(target)
    except Exception as exc:  # noqa: BLE001 - dissect raises many kinds for unknown input
        raise ImageOpenError(
            f"{path}: not a disk image dissect can open: {one_line(exc)}"
        ) from None
    volumes: list[Volume] = []
    keep: list[Any] = [disk]
    try:
        partitions = volume.open(disk).volumes
    except Exception:  # noqa: BLE001 - no partition table: maybe a bare volume
        partitions = []
    for index, part in enumerate(partitions, start=1):
        try:
            fs = filesystem.open(part)
        except Exception:  # noqa: BLE001, S112 - MSR, swap, unknown filesystems are skipped
            continue
        keep.append(part)
        volumes.append(DissectVolume(fs, getattr(part, "number", None) or index, part.name or ""))
    if not volumes:
        try:
            volumes.append(DissectVolume(filesystem.open(disk), 1, "volume"))
        except Exception as exc:  # noqa: BLE001
            kind, reason = type(disk).__name__, one_line(exc)
            raise ImageOpenError(
                f"{path}: {kind} holds no filesystem dissect can read: {reason}"
            ) from None
    return Source(str(target), type(disk).__name__, volumes, keep)
