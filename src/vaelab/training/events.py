"""A dependency-free TensorBoard scalar writer.

An event file is a sequence of TFRecords, each an `Event` protobuf. A TFRecord is
    uint64 length (LE) | uint32 masked crc32c(length bytes) | data | uint32 masked crc32c(data)
The three protobuf messages used are encoded by hand:
    Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
                 Summary summary = 5; SessionLog session_log = 7; }
    Summary    { repeated Value value = 1; }
    Value      { string tag = 1; float simple_value = 2; }
    SessionLog { SessionStatus status = 1; }   (START = 1)
Each writer makes a new file, so a resumed run appends by adding a file to the same folder;
TensorBoard reads every file in it.
"""

from __future__ import annotations

import math
import operator
import os
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

_FILE_VERSION = "brain.Event:2"
_SESSION_START = 1
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1

# protobuf wire types
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # reflected Castagnoli
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord uses it."""
    crc = _U32
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits, then add a constant (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def tfrecord(data: bytes) -> bytes:
    """Frame `data` as one TFRecord."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


# ----------------------------------------------------------------------------- protobuf


def _varint(n: int) -> bytes:
    n &= _U64  # negative int64 values are sent as their 64-bit two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, _BYTES) + _varint(len(payload)) + payload


def _float32(value: float) -> bytes:
    try:
        return struct.pack("<f", value)
    except OverflowError:  # beyond float32's range: it becomes an infinity, as in numpy
        return struct.pack("<f", math.copysign(math.inf, value))


def encode_scalar_summary(tag: str, value: float) -> bytes:
    """A `Summary` holding one `Value{tag, simple_value}` (float32)."""
    entry = _length_delimited(1, tag.encode("utf-8")) + _key(2, _FIXED32) + _float32(value)
    return _length_delimited(1, entry)


def encode_event(
    wall_time: float,
    step: int = 0,
    file_version: str | None = None,
    summary: bytes | None = None,
    session_start: bool = False,
) -> bytes:
    """An `Event` with its wall time, step and at most one of its payloads."""
    out = _key(1, _FIXED64) + struct.pack("<d", wall_time)
    if step:
        out += _key(2, _VARINT) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode("utf-8"))
    if summary is not None:
        out += _length_delimited(5, summary)
    if session_start:
        out += _length_delimited(7, _key(1, _VARINT) + _varint(_SESSION_START))
    return out


# ----------------------------------------------------------------------------- writer


def _open_new_file(logdir: Path) -> tuple[Path, BinaryIO]:
    """Create a fresh event file; a clash (same second, same process) gets a numbered suffix."""
    base = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
    for k in range(1000):
        path = logdir / (f"{base}.vaelab" if k == 0 else f"{base}.vaelab.{k}")
        try:
            return path, open(path, "xb")  # noqa: SIM115 (closed by EventWriter.close)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a new event file in {logdir}")


class EventWriter:
    """Write scalars to a new TensorBoard event file in `logdir`.

    `purge_step`, when given (on resume), writes a SessionLog START at that step, so that
    TensorBoard drops the events of earlier files whose step is >= purge_step: the steps a
    crashed run logged after its last checkpoint.
    """

    def __init__(self, logdir: str | Path, purge_step: int | None = None) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path, self._file = _open_new_file(self.logdir)
        self._write(encode_event(time.time(), file_version=_FILE_VERSION))
        if purge_step is not None:
            self._write(encode_event(time.time(), step=purge_step, session_start=True))
        self.flush()

    def _write(self, event: bytes) -> None:
        if self._file is None:
            raise ValueError(f"the event writer for {self.path} is closed")
        self._file.write(tfrecord(event))

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """Log `value` (stored as float32) under `tag` at `step`."""
        when = time.time() if wall_time is None else float(wall_time)
        summary = encode_scalar_summary(tag, float(value))
        self._write(encode_event(when, step=operator.index(step), summary=summary))

    def add_scalars(
        self, values: Mapping[str, float], step: int, wall_time: float | None = None
    ) -> None:
        """Log every (tag, value) of `values` at `step`, with one wall time."""
        when = time.time() if wall_time is None else wall_time
        for tag, value in values.items():
            self.add_scalar(tag, value, step, when)

    def flush(self) -> None:
        """Push buffered events to the operating system."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush, sync to disk and close the file; closing twice is harmless."""
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
