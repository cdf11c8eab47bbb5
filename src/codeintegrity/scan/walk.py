"""The streaming walk: turn command-line paths into files to judge, and account for the rest.

Every path the walk meets ends up as exactly one value: a :class:`Target` (a file to judge), a
:class:`Skipped` (a dangling link, a symlink loop, a symlinked directory that is not entered, a
FIFO or device, a directory already visited) or an :class:`Unreadable` (a directory that cannot be
listed, a path that cannot be stat'ed). Nothing is swallowed and nothing raises.

Directories are opened relative to their parent's file descriptor (``os.open(dir_fd=...)`` and
``os.scandir(fd)``), so a tree deeper than PATH_MAX is walked; a file whose full path is too
long to open by name is still yielded and fails, alone, when it is opened. Only one directory's
entries are held at a time per level: memory grows with depth, not with the size of the tree.

What is followed: symlinks named on the command line are followed; inside a tree, symlinks to
files are judged, symlinked directories are reported and not entered (``follow_dir_links``
enters them), and a directory already on the current path (a loop through a link or a bind
mount) is reported once and not entered again.
"""

# os.* on names and descriptors on purpose: pathlib has no dir_fd and costs an object per entry.
# ruff: noqa: PTH114, PTH116, PTH118

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

# The reasons a path is skipped; JSON carries them as "reason".
DANGLING_LINK = "dangling-link"
SYMLINK_LOOP = "symlink-loop"
SYMLINKED_DIRECTORY = "symlinked-directory"
DIRECTORY_LOOP = "directory-loop"
NOT_REGULAR = "not-a-regular-file"
OTHER_FILESYSTEM = "other-file-system"
EXCLUDED = "excluded"
TOO_LARGE = "too-large"

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS_FOLLOW = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


FileIdentity = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, mtime_ns, ctime_ns
# A change this recent may not show in the stat yet (a same-size rewrite within one timestamp
# tick): what was judged of such a file is not reused. FAT and SMB servers keep 2-second
# timestamps; ext4 ticks every few milliseconds.
RACY_WINDOW_NS = 2_000_000_000


def file_identity(st: os.stat_result) -> FileIdentity:
    """The stat identity of a file's bytes: equal identities are the same unchanged file."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Opened(NamedTuple):
    """A file as the engine opened it (its ``fstat``)."""

    identity: FileIdentity
    # How many names may share its verification: its link count, or 1 when it is not to be
    # shared (a file named directly that is not a PE).
    names: int
    # When it was opened (ns since the epoch, on the machine that opened it): a change this
    # close before it may not show in the stat yet (see RACY_WINDOW_NS).
    at_ns: int


def record_opened(into: list[Opened]) -> Callable[[os.stat_result], None]:
    """An ``opened`` callback for :func:`~codeintegrity.verify.verify_path`: what it opened,
    and when, appended to ``into``."""
    return lambda st: into.append(Opened(file_identity(st), st.st_nlink, time.time_ns()))


def same_file(opened: FileIdentity, met: FileIdentity, *, remote: bool = False) -> bool:
    """Whether the file the engine opened is the one a stat met by path (not another, swapped
    in by a link or folder meanwhile). A worker on another machine sees the file on a device
    number of its own: there the device is not compared."""
    return opened[1:] == met[1:] if remote else opened == met


@dataclass(frozen=True, slots=True)
class Target:
    """A regular file to judge. ``in_tree``: found by walking a directory (then a file that
    does not start with 'MZ' is not a PE and is not judged); False for a path named directly.
    ``linked``: the file's identity when it has other names (hard links) that the same run may
    meet, else None (see :mod:`.links`); not for a name reached through a symbolic link, which
    is not one of the file's names."""

    path: str
    in_tree: bool = False
    size: int = 0
    linked: FileIdentity | None = None


def _linked(st: os.stat_result) -> FileIdentity | None:
    # Inode 0 is what some FUSE and network file systems report when they have none: no
    # identity at all, so never one to share.
    return file_identity(st) if st.st_nlink > 1 and st.st_ino != 0 else None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A path the walk met and did not judge, with the reason (one of the constants above)."""

    path: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A path that could not be read (listed, stat'ed or opened)."""

    path: str
    errno: int | None
    message: str


WalkItem = Target | Skipped | Unreadable


@dataclass(frozen=True)
class Selection:
    """Which files of a tree are judged. Globs match the path relative to the argument
    (``fnmatch``, so ``*`` also matches '/'); a file must match an include, if any is given,
    and no exclude. Paths named directly are always judged (only ``max_size`` applies)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_size: int | None = None
    one_file_system: bool = False
    follow_dir_links: bool = False

    def wants(self, relative: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(relative, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(relative, g) for g in self.exclude)

    def excluded_dir(self, relative: str) -> bool:
        # An excluded directory is not entered: "--exclude 'build/*'" or "--exclude build".
        return any(
            fnmatch.fnmatchcase(relative, g) or fnmatch.fnmatchcase(relative + "/", g)
            for g in self.exclude
        )


def _message(exc: OSError) -> str:
    return exc.strerror or str(exc)


def walk(paths: Iterable[str], selection: Selection | None = None) -> Iterator[WalkItem]:
    """One value per path met, in argument order; directories in sorted name order."""
    sel = selection or Selection()
    for raw in paths:
        yield from _top(raw, sel)


def _top(raw: str, sel: Selection) -> Iterator[WalkItem]:
    try:
        st = os.stat(raw)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(raw):
            yield Unreadable(raw, exc.errno, "dangling symbolic link")
        else:
            yield Unreadable(raw, exc.errno, _message(exc))
        return
    if stat.S_ISDIR(st.st_mode):
        try:
            fd = os.open(raw, _DIR_FLAGS_FOLLOW)
        except OSError as exc:
            yield Unreadable(raw, exc.errno, _message(exc))
            return
        yield from _tree(raw, fd, st, sel)
    elif stat.S_ISREG(st.st_mode):
        if sel.max_size is not None and st.st_size > sel.max_size:
            yield Skipped(raw, TOO_LARGE, f"{st.st_size} bytes, over --max-size")
        else:
            yield Target(raw, False, st.st_size, _linked(st))
    else:
        # FIFOs and devices would block or never end: only regular files are judged.
        yield Unreadable(raw, None, "not a regular file")


def _tree(root: str, root_fd: int, root_st: os.stat_result, sel: Selection) -> Iterator[WalkItem]:
    """Depth-first, with one open descriptor per level and the (dev, inode) of each level to
    detect loops."""
    base = root.rstrip(os.sep) or os.sep
    # Each level: (fd, path, relative path, pending entry names, identity)
    stack: list[tuple[int, str, str, Iterator[str], tuple[int, int]]] = []
    device = root_st.st_dev

    def push(fd: int, path: str, rel: str, ident: tuple[int, int]) -> Unreadable | None:
        try:
            with os.scandir(fd) as it:
                names = sorted(e.name for e in it)
        except OSError as exc:
            os.close(fd)
            return Unreadable(path, exc.errno, f"cannot list directory: {_message(exc)}")
        stack.append((fd, path, rel, iter(names), ident))
        return None

    failed = push(root_fd, base, "", (root_st.st_dev, root_st.st_ino))
    if failed is not None:
        yield failed
        return
    try:
        while stack:
            fd, folder, rel_folder, names, _ident = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(fd)
                continue
            path = os.path.join(folder, name)
            rel = f"{rel_folder}/{name}" if rel_folder else name
            item = _entry(fd, name, path, rel, sel, device, stack)
            if isinstance(item, tuple):
                child_fd, ident = item
                failed = push(child_fd, path, rel, ident)
                if failed is not None:
                    yield failed
            elif item is not None:
                yield item
    finally:
        for fd, *_ in stack:
            os.close(fd)


def _entry(
    fd: int,
    name: str,
    path: str,
    rel: str,
    sel: Selection,
    device: int,
    stack: list[tuple[int, str, str, Iterator[str], tuple[int, int]]],
) -> WalkItem | tuple[int, tuple[int, int]] | None:
    """What one directory entry is: an item, a directory to enter (fd, identity), or None
    (a file the selection does not want)."""
    try:
        lst = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError as exc:
        return Unreadable(path, exc.errno, _message(exc))
    link = stat.S_ISLNK(lst.st_mode)
    st = lst
    if link:
        try:
            st = os.stat(name, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return Skipped(path, SYMLINK_LOOP, "symbolic link loop")
            if exc.errno == errno.ENOENT:
                return Skipped(path, DANGLING_LINK, "dangling symbolic link")
            return Unreadable(path, exc.errno, _message(exc))
    if stat.S_ISDIR(st.st_mode):
        if sel.excluded_dir(rel):
            return None
        if link and not sel.follow_dir_links:
            return Skipped(path, SYMLINKED_DIRECTORY, "symbolic link to a directory, not entered")
        ident = (st.st_dev, st.st_ino)
        if any(level[4] == ident for level in stack):
            return Skipped(path, DIRECTORY_LOOP, "directory already being walked (a loop)")
        if sel.one_file_system and st.st_dev != device:
            return Skipped(path, OTHER_FILESYSTEM, "on another file system, not entered")
        try:
            child = os.open(name, _DIR_FLAGS_FOLLOW if link else _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            return Unreadable(path, exc.errno, f"cannot open directory: {_message(exc)}")
        return child, ident
    if not sel.wants(rel):
        return None
    if not stat.S_ISREG(st.st_mode):
        return Skipped(path, NOT_REGULAR, "not a regular file")
    if sel.max_size is not None and st.st_size > sel.max_size:
        return Skipped(path, TOO_LARGE, f"{st.st_size} bytes, over --max-size")
    return Target(path, True, st.st_size, None if link else _linked(st))
