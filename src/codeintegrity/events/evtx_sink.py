"""``evtx:DIR``: one .evtx file per channel, written as the Windows event log service does.

Files are named as Windows names them (``Security.evtx``,
``Microsoft-Windows-CodeIntegrity%4Operational.evtx``) and created when their channel's first
event arrives. An existing file is appended to: its last chunk is loaded (tables included) and
filled further, and record numbers continue from the file's own. While a file is open its header
carries the dirty flag; a clean close clears it. A file left dirty (a crash, ``kill -9``) stays
readable up to its last intact chunk; the next open checks every chunk, keeps the whole records
of a chunk cut short, drops what follows and clears the flag.

Each batch is written records first, chunk header after, so the chunk on disk is always
consistent with its checksums except for the instant of one 512-byte header write. One process
writes a file at a time (an exclusive ``flock``), as one event log service owns a log on Windows.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import SinkError
from .evtx_chunk import (
    CHUNK_SIZE,
    FILE_HEADER_BLOCK,
    FILE_MAGIC,
    FLAG_DIRTY,
    RECORDS_START,
    Chunk,
    EvtxFormatError,
    FileHeader,
    RecordTooLarge,
    build_file_header,
    parse_file_header,
    salvage_chunk,
    scan_chunk,
)
from .model import Event
from .sinks import SinkWriteError

MAX_CHUNKS = 0xFFFF  # the header's chunk count is 16 bits


def channel_file_name(channel: str) -> str:
    """The file Windows keeps a channel in: ``/`` is written ``%4``."""
    return channel.replace("/", "%4") + ".evtx"


class EvtxFile:
    """One open channel file: the chunk being filled is kept in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SinkError(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SinkError(f"{path} is being written by another process") from None
        self._fd = fd
        try:
            self.repaired = self._open_existing()
        except BaseException:
            os.close(fd)
            raise
        self._write_file_header(dirty=True)

    # --- opening -----------------------------------------------------------------------------
    def _open_existing(self) -> bool:
        """Load the file's state; returns True when a dirty file had to be repaired."""
        size = os.fstat(self._fd).st_size
        self.chunks_done = 0  # chunks before the current one, all complete on disk
        self.chunk: Chunk | None = None
        self.flushed_free = RECORDS_START  # how much of the current chunk is on disk
        self.next_record_id = 1
        if size == 0:
            return False
        raw = os.pread(self._fd, FILE_HEADER_BLOCK, 0)
        if raw[:8] != FILE_MAGIC:
            raise EvtxFormatError("not an .evtx file (no ElfFile header)")
        try:
            header = parse_file_header(raw)
        except EvtxFormatError:
            return self._repair(size)  # a header torn by a crash: the chunks tell the truth
        count = header.chunk_count
        whole = (size - FILE_HEADER_BLOCK) // CHUNK_SIZE
        if not header.flags & FLAG_DIRTY and count <= whole:
            try:
                if count:
                    last = self._read_chunk(count - 1)
                    self._continue(count - 1, Chunk.load(count - 1, last))
            except EvtxFormatError:
                return self._repair(size)
            self.next_record_id = max(self.next_record_id, header.next_record_id)
            return False
        return self._repair(size)

    def _read_chunk(self, number: int) -> bytes:
        return os.pread(self._fd, CHUNK_SIZE, FILE_HEADER_BLOCK + number * CHUNK_SIZE)

    def _continue(self, number: int, chunk: Chunk) -> None:
        self.chunks_done = number
        self.chunk = chunk
        self.flushed_free = chunk.free
        self.next_record_id = chunk.last_record_id + 1

    def _repair(self, size: int) -> bool:
        """Keep the intact chunks in order, salvage the whole records of the first damaged
        one, drop everything after it."""
        slots = -(-(size - FILE_HEADER_BLOCK) // CHUNK_SIZE) if size > FILE_HEADER_BLOCK else 0
        kept = 0
        last_id = 0
        for number in range(slots):
            data = self._read_chunk(number)
            summary = scan_chunk(data)
            if summary is not None and summary.first_record_id > last_id:
                kept, last_id = number + 1, summary.last_record_id
                continue
            salvaged = salvage_chunk(number, data)
            if salvaged is not None and salvaged.first_record_id > last_id:
                os.pwrite(self._fd, salvaged.image(), FILE_HEADER_BLOCK + number * CHUNK_SIZE)
                kept, last_id = number + 1, salvaged.last_record_id
            break
        os.ftruncate(self._fd, FILE_HEADER_BLOCK + kept * CHUNK_SIZE)
        if kept:
            self._continue(kept - 1, Chunk.load(kept - 1, self._read_chunk(kept - 1)))
        self.next_record_id = last_id + 1
        os.fsync(self._fd)
        return True

    # --- writing -----------------------------------------------------------------------------
    def _chunk_count(self) -> int:
        return self.chunks_done + (1 if self.chunk is not None and self.chunk.records else 0)

    def _write_file_header(self, *, dirty: bool) -> None:
        count = self._chunk_count()
        header = FileHeader(
            first_chunk=0,
            last_chunk=max(count - 1, 0),
            next_record_id=self.next_record_id,
            chunk_count=count,
            flags=FLAG_DIRTY if dirty else 0,
        )
        os.pwrite(self._fd, build_file_header(header), 0)

    def _chunk_offset(self, chunk: Chunk) -> int:
        return FILE_HEADER_BLOCK + chunk.number * CHUNK_SIZE

    def _flush_chunk(self) -> None:
        """Records first, then the header that makes them part of the chunk."""
        chunk = self.chunk
        if chunk is None or not chunk.records:
            return
        base = self._chunk_offset(chunk)
        if self.flushed_free == RECORDS_START:  # a new chunk: give it its full size at once
            os.ftruncate(self._fd, max(os.fstat(self._fd).st_size, base + CHUNK_SIZE))
        if chunk.free > self.flushed_free:
            new = chunk.buffer[self.flushed_free : chunk.free]
            os.pwrite(self._fd, new, base + self.flushed_free)
        os.pwrite(self._fd, chunk.header(), base)
        self.flushed_free = chunk.free

    def append(self, events: Sequence[Event]) -> list[Event]:
        """Write ``events`` (one channel); returns them with the record numbers they got.
        An event no chunk can hold raises SinkWriteError; the events before it are written."""
        out: list[Event] = []
        try:
            for event in events:
                out.append(self._add(event))
        except RecordTooLarge as exc:
            raise SinkWriteError(f"{self.path}: event {event.event_id}: {exc}") from None
        finally:
            self._flush_chunk()
            self._write_file_header(dirty=True)
        return out

    def _add(self, event: Event) -> Event:
        record_id = event.record_id
        if record_id is None or record_id < self.next_record_id:
            record_id = self.next_record_id  # numbers only ever grow within a file
        chunk = self.chunk
        if chunk is None:
            chunk = self.chunk = Chunk(self.chunks_done)
        if not chunk.add(event, record_id):
            if not chunk.records:
                raise RecordTooLarge("the record does not fit in one chunk")
            self._flush_chunk()
            if chunk.number + 1 >= MAX_CHUNKS:
                raise SinkWriteError(f"{self.path}: the file is full ({MAX_CHUNKS} chunks)")
            self.chunks_done = chunk.number + 1
            chunk = self.chunk = Chunk(self.chunks_done)
            self.flushed_free = RECORDS_START
            if not chunk.add(event, record_id):
                raise RecordTooLarge("the record does not fit in one chunk")
        self.next_record_id = record_id + 1
        return event if event.record_id == record_id else event.with_record_id(record_id)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self._flush_chunk()
            self._write_file_header(dirty=False)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)  # also releases the lock
            self._fd = -1


class EvtxSink:
    """The ``evtx:DIR`` sink: events go to their channel's file in DIR."""

    def __init__(self, uri: str, directory: str) -> None:
        if not directory:
            raise SinkError(f"sink {uri!r} names no directory")
        self.uri = uri
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot open {uri}: {exc.strerror or exc}") from None
        if not self.directory.is_dir():
            raise SinkError(f"cannot open {uri}: not a directory")
        self.files: dict[str, EvtxFile] = {}

    def file_for(self, channel: str) -> EvtxFile:
        handle = self.files.get(channel)
        if handle is None:
            try:
                handle = EvtxFile(self.directory / channel_file_name(channel))
            except EvtxFormatError as exc:
                raise SinkError(f"{self.directory / channel_file_name(channel)}: {exc}") from None
            self.files[channel] = handle
        return handle

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        by_channel: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            by_channel.setdefault(event.channel, []).append(index)
        out = list(events)
        try:
            for channel, indexes in by_channel.items():
                written = self.file_for(channel).append([events[i] for i in indexes])
                for index, event in zip(indexes, written, strict=True):
                    out[index] = event
        except (OSError, SinkError) as exc:
            raise SinkWriteError(f"{self.uri}: {exc}") from None
        return out

    def close(self) -> None:
        errors = []
        for handle in self.files.values():
            try:
                handle.close()
            except OSError as exc:
                errors.append(f"{handle.path}: {exc}")
        self.files.clear()
        if errors:
            raise SinkError("; ".join(errors))
