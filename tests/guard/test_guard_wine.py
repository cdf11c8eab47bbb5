"""Wine (Debian ``wine64``) under the guard: a Windows program loading a DLL, the exact case Code
Integrity exists for.

``wine rundll32.exe Z:\\...\\app.dll,PrintDebugInfo`` loads debugpy's Microsoft-signed
``attach_amd64.dll`` and runs one of its exports; a copy with one byte of its ``.text`` section
flipped must not even be mapped in enforce mode: Wine's loader gets EPERM from the open, which it
reports as STATUS_ACCESS_DENIED (``Failed to load module ...; status=c0000022``). Wine opens
image files in ``wineserver``, so that is the process the events name.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SAMPLES

GENUINE = SAMPLES / "signed" / "pypi__debugpy-1.8.22-cp311-cp311-win_amd64" / "attach_amd64.dll"
EXPORT = "PrintDebugInfo"  # takes no arguments and only prints: harmless under rundll32
EXPORT_RAN = "Getting debug info..."  # its first line on stdout
ACCESS_DENIED = "status=c0000022"


def _find_wine() -> Path | None:
    """Debian's ``wine64`` package installs the loader as /usr/lib/wine/wine64 (``wine`` on PATH
    is the ``wine`` package's wrapper around it)."""
    for candidate in (shutil.which("wine64"), "/usr/lib/wine/wine64"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


@dataclass(frozen=True)
class Wine:
    loader: Path
    server: Path
    env: dict[str, str]

    def rundll32(self, dll: Path, export: str = EXPORT) -> subprocess.CompletedProcess[str]:
        target = "Z:" + str(dll).replace("/", "\\") + "," + export
        return subprocess.run(
            [str(self.loader), "rundll32.exe", target],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip


@pytest.fixture(scope="session")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wine]:
    """A private Wine prefix, booted once per session (off the guarded tmpfs: its fake system
    DLLs are unsigned PE files that an enforcing guard would rightly refuse)."""
    loader = _find_wine()
    if loader is None:
        reason = "wine64 is not installed (Debian package wine64)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    server = loader.with_name("wineserver")
    if not server.exists():
        server = Path(shutil.which("wineserver") or "wineserver")
    prefix = tmp_path_factory.mktemp("wine") / "prefix"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINE", "DISPLAY"))}
    env.update(
        WINEPREFIX=str(prefix),
        WINEDLLOVERRIDES="mscoree,mshtml=",  # no Mono/Gecko install prompts
        WINEDEBUG="-all,+loaddll,warn+module",  # one line per module loaded or refused
    )
    boot = subprocess.run(
        [str(loader), "wineboot", "--init"], env=env, capture_output=True, text=True, timeout=180
    )
    assert (prefix / "system.reg").exists(), boot.stderr[-2000:]
    yield Wine(loader, server, env)
    subprocess.run([str(server), "-k"], env=env, capture_output=True, timeout=60, check=False)


def tamper(dll: bytes) -> bytes:
    """Flip one byte of the ``.text`` section: an int3 of the padding between two functions, so
    the code that runs is unchanged and only the signature can tell."""
    pe = struct.unpack_from("<I", dll, 0x3C)[0]
    (sections,) = struct.unpack_from("<H", dll, pe + 6)
    (optional_size,) = struct.unpack_from("<H", dll, pe + 20)
    table = pe + 24 + optional_size
    for index in range(sections):
        entry = table + 40 * index
        if dll[entry : entry + 8].rstrip(b"\0") == b".text":
            virtual_size, _, _, raw_offset = struct.unpack_from("<IIII", dll, entry + 8)
            code = dll[raw_offset : raw_offset + virtual_size]
            at = raw_offset + code.index(b"\xcc" * 4) + 1
            flipped = bytearray(dll)
            flipped[at] ^= 0x01
            return bytes(flipped)
    raise AssertionError("no .text section")


def loaded(result: subprocess.CompletedProcess[str], dll: Path) -> bool:
    """Wine's +loaddll trace: ``Loaded L"Z:\\\\...\\\\app.dll" at ...: native``."""
    name = str(dll).replace("/", "\\\\")
    return any(
        "Loaded" in line and name in line and "native" in line
        for line in result.stderr.splitlines()
    )


@pytest.fixture
def app(tree: Path) -> Path:
    """An app folder on the guarded tmpfs: the genuine DLL and its tampered copy."""
    folder = tree / "app"
    folder.mkdir()
    genuine = GENUINE.read_bytes()
    (folder / "genuine.dll").write_bytes(genuine)
    (folder / "tampered.dll").write_bytes(tamper(genuine))
    return folder


def test_enforce_wine_refuses_the_tampered_dll_and_runs_the_genuine_one(
    app: Path, wine: Wine, start_guard
):
    genuine, tampered = app / "genuine.dll", app / "tampered.dll"
    # The tampered DLL is a working DLL: without the guard, Wine loads it.
    control = wine.rundll32(tampered, "NoSuchExport")
    assert loaded(control, tampered), control.stderr[-3000:]
    # A fresh wineserver for the guarded runs: nothing from the unguarded load is reused.
    subprocess.run([str(wine.server), "-k"], env=wine.env, capture_output=True, timeout=60)

    guard = start_guard([app], "--mode", "enforce")  # Microsoft's root program (default trust)
    good = wine.rundll32(genuine)
    assert loaded(good, genuine), good.stderr[-3000:]
    assert EXPORT_RAN in good.stdout
    bad = wine.rundll32(tampered)
    assert not loaded(bad, tampered)
    refused = [line for line in bad.stderr.splitlines() if "Failed to load module" in line]
    assert any(ACCESS_DENIED in line and "tampered.dll" in line for line in refused), bad.stderr
    assert EXPORT_RAN not in bad.stdout
    # Whatever wineserver kept open is closed before the guard goes away.
    subprocess.run([str(wine.server), "-k"], env=wine.env, capture_output=True, timeout=60)
    assert guard.stop() == 0
    # Wine's loader may open an image more than once (Wine 8.0 opens each DLL twice): every
    # refused open raises its own 5038, as Windows raises one per failed load.
    denied = _stat(guard.output, "denied")
    events = [e for e in guard.events(5038) if e.path == str(tampered)]
    assert denied >= 1 and len(events) == denied, (denied, [e.path for e in guard.events()])
    wineserver = os.path.realpath(wine.server.with_name("wineserver64"))
    opener = str(events[0].context_value("process.executable"))
    assert os.path.basename(opener).startswith("wineserver"), opener
    if os.path.exists(wineserver):  # Debian: the wineserver script execs wineserver64
        assert opener == wineserver
    assert all(e.context_value("process.executable") == opener for e in events)
    blocks = [e for e in guard.events(3033) if e.activity_id == events[0].activity_id]
    assert [e.value("ProcessNameBuffer") for e in blocks] == [opener]
    assert not [e for e in guard.events(5038) if e.path == str(genuine)]


def _stat(output: str, name: str) -> int:
    """One counter of the statistics the guard prints on stop (``...: stats: denied: 2``)."""
    for line in output.splitlines():
        if f"stats: {name}: " in line:
            return int(line.rsplit(":", 1)[1])
    raise AssertionError(f"no {name} counter in:\n{output}")
