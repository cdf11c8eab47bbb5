"""The streaming walk and the --files-from reader as a library."""

from __future__ import annotations

import io
import os

from codeintegrity.scan.sources import paths_from
from codeintegrity.scan.walk import Selection, Skipped, Target, Unreadable, walk


def _chain(top: str, depth: int) -> str:
    name = "n" * 250
    fd = os.open(top, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    out = os.open("x.exe", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, b"MZ")
    os.close(out)
    os.close(fd)
    return os.path.join(top, *([name] * depth), "x.exe")


def test_a_tree_deeper_than_path_max_is_walked(tmp_path):
    deepest = _chain(str(tmp_path), 40)  # 40 * 251 bytes: far over PATH_MAX
    assert len(deepest) > 4096
    items = list(walk([str(tmp_path)]))
    assert items == [Target(deepest, True, 2)]


def test_walk_is_lazy_and_sorted(tmp_path):
    for name in ("b.exe", "a.exe", "c.exe"):
        (tmp_path / name).write_bytes(b"MZ")
    it = walk([str(tmp_path)])
    first = next(it)
    (tmp_path / "a.exe").unlink()  # too late to matter: the directory was listed
    assert first.path.endswith("a.exe")
    rest = list(it)
    assert [os.path.basename(i.path) for i in rest] == ["b.exe", "c.exe"]


def test_named_paths_and_selection(tmp_path):
    (tmp_path / "keep.exe").write_bytes(b"MZ")
    (tmp_path / "drop.exe").write_bytes(b"MZ")
    os.mkfifo(tmp_path / "fifo")
    items = list(walk([str(tmp_path)], Selection(exclude=("drop.*",))))
    assert items == [
        Skipped(str(tmp_path / "fifo"), "not-a-regular-file", "not a regular file"),
        Target(str(tmp_path / "keep.exe"), True, 2),
    ]
    named = list(walk([str(tmp_path / "missing"), str(tmp_path / "fifo")]))
    assert named == [
        Unreadable(str(tmp_path / "missing"), 2, "No such file or directory"),
        Unreadable(str(tmp_path / "fifo"), None, "not a regular file"),
    ]


def test_paths_from_newlines_and_nul():
    assert list(paths_from(io.BytesIO(b"a.exe\r\n\nb c.exe\nlast"))) == ["a.exe", "b c.exe", "last"]
    assert list(paths_from(io.BytesIO(b"x\ny.exe\0z.exe\0"))) == ["x\ny.exe", "z.exe"]
    assert list(paths_from(io.BytesIO(b"\xff.exe\n"))) == [os.fsdecode(b"\xff.exe")]
