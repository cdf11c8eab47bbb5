"""The EVTX writer, accepted by four independent readers (python-evtx, the Rust `evtx`,
libevtx, dissect.eventlog): every record must read back as what our Windows XML renderer
writes for the same event."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from codeintegrity.errors import SinkError
from codeintegrity.events.build import events_for_report
from codeintegrity.events.evtx_chunk import (
    CHUNK_SIZE,
    FILE_HEADER_BLOCK,
    FLAG_DIRTY,
    MAJOR_VERSION,
    MINOR_VERSION,
    parse_file_header,
)
from codeintegrity.events.evtx_sink import EvtxFile, EvtxSink, channel_file_name
from codeintegrity.events.model import Event, make_event
from codeintegrity.events.schema import CI_CHANNEL, SECURITY_CHANNEL
from codeintegrity.events.sinks import SinkWriteError, open_sink

from . import reports
from .evtx_events import every_kind
from .evtx_readers import READERS, Sample, ours, same

REAL = Path(__file__).resolve().parents[1] / "data" / "evtx-real"
SECURITY = channel_file_name(SECURITY_CHANNEL)
CODEINTEGRITY = channel_file_name(CI_CHANNEL)


def write(directory: Path, events: list[Event]) -> list[Event]:
    sink = open_sink(f"evtx:{directory}")
    try:
        return list(sink.write(events))
    finally:
        sink.close()


def check(reader: str, path: Path, expected: list[Event], sample: Sample = None) -> None:
    got = READERS[reader](path, sample)
    assert len(got) == len(expected), f"{reader} read {len(got)} of {len(expected)} records"
    for record, event in zip(got, expected, strict=True):
        problems = same(reader, record, ours(event))
        assert not problems, f"{reader}, record {event.record_id} ({event.event_id}): {problems}"


def by_channel(events: list[Event], channel: str) -> list[Event]:
    return [e for e in events if e.channel == channel]


def test_file_names_are_windows_channel_files() -> None:
    assert SECURITY == "Security.evtx"
    assert CODEINTEGRITY == "Microsoft-Windows-CodeIntegrity%4Operational.evtx"


@pytest.mark.parametrize("reader", READERS)
def test_every_event_kind_reads_back_as_our_xml(tmp_path: Path, reader: str) -> None:
    written = write(tmp_path, every_kind())
    ids = {e.event_id for e in written}
    assert ids >= {5038, 6281, 6410, 4612, 5056, 5057, 3004, 3023, 3033, 3036, 3063, 3076, 3077}
    assert sorted(os.listdir(tmp_path)) == sorted([SECURITY, CODEINTEGRITY])
    for channel, name in ((SECURITY_CHANNEL, SECURITY), (CI_CHANNEL, CODEINTEGRITY)):
        expected = by_channel(written, channel)
        # One number sequence per file, starting at 1.
        assert [e.record_id for e in expected] == list(range(1, len(expected) + 1))
        check(reader, tmp_path / name, expected)


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    """10,000 events of distinct files, odd names included, over many chunks."""
    events: list[Event] = []
    n = 0
    while len(events) < 10_000:
        path = f"/data/{n}/ünï cödé & <{n}>.exe" if n % 3 else f"/data/{n}/plain.sys"
        report = (
            reports.tampered_report(path, bad_pages=1)
            if n % 2
            else reports.denied_report("enforce", path)
        )
        events += events_for_report(report, host=reports.HOST)
        n += 1
    directory = tmp_path_factory.mktemp("evtx10k")
    return directory, write(directory, events[:10_000])


def every_tenth(index: int) -> bool:
    return index % 10 == 0


def every_fiftieth(index: int) -> bool:  # python-evtx renders a few hundred records a second
    return index % 50 == 0


@pytest.mark.parametrize("reader", READERS)
def test_ten_thousand_events_over_many_chunks(
    ten_thousand: tuple[Path, list[Event]], reader: str
) -> None:
    """Each reader reads all 10,000 records (numbers checked for all); the full XML
    comparison runs on every tenth record (python-evtx: fiftieth) to keep the suite fast;
    every kind's full comparison is the test above."""
    directory, written = ten_thousand
    for name, channel in ((SECURITY, SECURITY_CHANNEL), (CODEINTEGRITY, CI_CHANNEL)):
        path = directory / name
        chunks = (path.stat().st_size - FILE_HEADER_BLOCK) // CHUNK_SIZE
        assert chunks >= 5
        sample = every_fiftieth if reader == "python-evtx" else every_tenth
        check(reader, path, by_channel(written, channel), sample)


@pytest.mark.parametrize("reader", READERS)
def test_file_cut_mid_chunk_still_reads_its_complete_chunks(
    ten_thousand: tuple[Path, list[Event]], tmp_path: Path, reader: str
) -> None:
    directory, written = ten_thousand
    cut = tmp_path / SECURITY
    shutil.copyfile(directory / SECURITY, cut)
    with cut.open("r+b") as handle:
        handle.truncate(FILE_HEADER_BLOCK + 2 * CHUNK_SIZE + CHUNK_SIZE // 2)
    complete = chunk_record_ids(directory / SECURITY, chunks=2)
    expected = [e for e in by_channel(written, SECURITY_CHANNEL) if e.record_id in complete]
    check(reader, cut, expected, every_tenth)


def chunk_record_ids(path: Path, chunks: int) -> set[int]:
    data = path.read_bytes()
    ids: set[int] = set()
    for number in range(chunks):
        first, last = struct.unpack_from("<QQ", data, FILE_HEADER_BLOCK + number * CHUNK_SIZE + 24)
        ids.update(range(first, last + 1))
    return ids


def test_header_and_chunk_fields_match_windows_samples(tmp_path: Path) -> None:
    write(tmp_path, every_kind())
    ours_raw = (tmp_path / SECURITY).read_bytes()
    for sample in sorted(REAL.glob("*.evtx")):
        real = sample.read_bytes()
        # File header: header size, version, header block size, flags when closed, CRC rule.
        for data in (real, ours_raw):
            magic, _, _, _, size, minor, major, block, _ = struct.unpack_from("<8sQQQIHHHH", data)
            assert (magic, size, major, minor, block) == (
                b"ElfFile\0",
                128,
                MAJOR_VERSION,
                MINOR_VERSION,
                4096,
            )
            assert struct.unpack_from("<I", data, 124)[0] == zlib.crc32(data[:120])
            assert struct.unpack_from("<I", data, 120)[0] == 0  # closed cleanly
            assert not any(data[128:4096])
            # Chunk header: magic, header size 128, flags 1 at offset 120, both CRCs, 8-byte
            # aligned records starting at 512, free space after the last record.
            chunk = data[4096 : 4096 + CHUNK_SIZE]
            fields = struct.unpack_from("<8sQQQQIII", chunk)
            assert fields[0] == b"ElfChnk\0" and fields[5] == 128
            assert fields[1] == fields[3] and fields[2] == fields[4]  # numbers == identifiers
            assert struct.unpack_from("<I", chunk, 120)[0] == 1
            assert struct.unpack_from("<I", chunk, 124)[0] == zlib.crc32(
                chunk[128:512], zlib.crc32(chunk[:120])
            )
            assert struct.unpack_from("<I", chunk, 52)[0] == zlib.crc32(chunk[512 : fields[7]])
            assert chunk[512:516] == b"**\0\0"
            first_size = struct.unpack_from("<I", chunk, 516)[0]
            assert first_size % 8 == 0
            # The first record is a fragment whose TemplateInstance defines its template.
            assert chunk[536:540] == b"\x0f\x01\x01\x00" and chunk[540] == 0x0C


def test_dirty_while_open_clean_after_close_and_append_on_reopen(tmp_path: Path) -> None:
    first = every_kind()
    sink = EvtxSink(f"evtx:{tmp_path}", str(tmp_path))
    written = list(sink.write(first))
    path = tmp_path / SECURITY
    assert parse_file_header(path.read_bytes()).flags & FLAG_DIRTY
    sink.close()
    assert not parse_file_header(path.read_bytes()).flags & FLAG_DIRTY
    # A second run appends, and its record numbers continue the file's.
    again = write(tmp_path, every_kind())
    security = by_channel(written, SECURITY_CHANNEL) + by_channel(again, SECURITY_CHANNEL)
    assert [e.record_id for e in security] == list(range(1, len(security) + 1))
    for reader in READERS:
        check(reader, path, security)
    # Still one chunk: the reopened file went on filling its last chunk.
    assert path.stat().st_size == FILE_HEADER_BLOCK + CHUNK_SIZE


def test_given_record_ids_are_kept_and_never_go_backwards(tmp_path: Path) -> None:
    events = by_channel(every_kind(), SECURITY_CHANNEL)[:3]
    numbered = [events[0].with_record_id(40), events[1].with_record_id(41), events[2]]
    written = write(tmp_path, numbered)
    assert [e.record_id for e in written] == [40, 41, 42]
    # An id at or below the file's last one (another store, a reset) is not reused.
    again = write(tmp_path, [events[0].with_record_id(5)])
    assert again[0].record_id == 43
    check("evtx (Rust)", tmp_path / SECURITY, [*written, *again])


_CRASHER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.events.evtx_events import every_kind
from codeintegrity.events.sinks import open_sink
sink = open_sink("evtx:" + {directory!r})
events = [e for e in every_kind() if e.channel == "Security"]
for n in range(20):  # about three chunks
    sink.write(events)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_writer_leaves_a_readable_file_repaired_on_next_open(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    code = _CRASHER.format(root=root, directory=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL
    path = tmp_path / SECURITY
    header = parse_file_header(path.read_bytes())
    assert header.flags & FLAG_DIRTY  # never closed
    # A crash in the middle of a write: the last chunk's records are cut short.
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size - CHUNK_SIZE + 3000)
    complete = chunk_record_ids(path, chunks=(size - FILE_HEADER_BLOCK) // CHUNK_SIZE - 1)
    for reader in ("evtx (Rust)", "libevtx", "dissect.eventlog"):
        numbers = [record[0]["record_id"] for record in READERS[reader](path)]
        assert set(numbers) >= complete, reader
    # Reopening repairs it: whole records of the cut chunk kept, flag cleared, numbers go on.
    handle = EvtxFile(path)
    assert handle.repaired
    last_kept = handle.next_record_id - 1
    assert last_kept >= max(complete)
    extra = handle.append([e for e in every_kind() if e.channel == SECURITY_CHANNEL][:2])
    handle.close()
    assert [e.record_id for e in extra] == [last_kept + 1, last_kept + 2]
    assert not parse_file_header(path.read_bytes()).flags & FLAG_DIRTY
    for reader in READERS:
        records = READERS[reader](path)
        numbers = [record[0]["record_id"] for record in records]
        assert numbers == list(range(1, last_kept + 3)), reader


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    first = EvtxFile(tmp_path / SECURITY)
    try:
        with pytest.raises(SinkError, match="another process"):
            EvtxFile(tmp_path / SECURITY)
    finally:
        first.close()


def test_a_file_that_is_not_evtx_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / SECURITY).write_bytes(b"not an event log\n")
    sink = EvtxSink(f"evtx:{tmp_path}", str(tmp_path))
    with pytest.raises(SinkWriteError, match="not an .evtx file"):
        sink.write(by_channel(every_kind(), SECURITY_CHANNEL)[:1])
    sink.close()
    assert (tmp_path / SECURITY).read_bytes() == b"not an event log\n"


def test_an_event_too_large_for_a_chunk_is_reported(tmp_path: Path) -> None:
    huge = make_event(5038, {"param1": "/x" * 20_000}, computer="HOST")
    sink = EvtxSink(f"evtx:{tmp_path}", str(tmp_path))
    small = by_channel(every_kind(), SECURITY_CHANNEL)[:1]
    sink.write(small)
    with pytest.raises(SinkWriteError, match="does not fit|exceeds"):
        sink.write([huge])
    sink.close()
    check("libevtx", tmp_path / SECURITY, [e.with_record_id(1) for e in small])


def test_events_export_writes_evtx(tmp_path: Path) -> None:
    from codeintegrity.events.store import EventStore

    store_path = tmp_path / "events.sqlite3"
    with EventStore(store_path) as store:
        stored = store.append(every_kind())
    out = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "events", "--store", str(store_path),
         "--export", f"evtx:{out}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = READERS["libevtx"](out / CODEINTEGRITY)
    assert len(records) == len(by_channel(stored, CI_CHANNEL))
    assert {r[0]["event_id"] for r in records} == {
        3004, 3023, 3033, 3036, 3063, 3076, 3077, 3089,
    }  # fmt: skip
