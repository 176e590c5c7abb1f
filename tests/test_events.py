"""The TensorBoard writer, read back by TensorBoard's own reader."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_masked

from vaelab.training.events import EventWriter, crc32c, masked_crc32c, tfrecord


def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4
    assert crc32c(b"\xff" * 32) == 0x62A8AB43


def test_masked_crc_matches_tensorboard():
    for data in (b"", b"a", b"123456789", bytes(range(256))):
        assert masked_crc32c(data) == tb_masked(data)


def test_tfrecord_framing():
    record = tfrecord(b"abc")
    assert struct.unpack("<Q", record[:8]) == (3,)
    assert record[12:15] == b"abc" and len(record) == 8 + 4 + 3 + 4


def test_scalars_round_trip_through_the_reference_reader(tmp_path):
    with EventWriter(tmp_path) as writer:
        writer.add_scalar("train/loss", 160.123456789, step=1, wall_time=1000.25)
        writer.add_scalar("test/loss", -3.5, step=2**40, wall_time=1001.5)
        writer.add_scalar("train/loss", 1e40, step=0, wall_time=1002.0)
    assert "tfevents" in writer.path.name and writer.path.parent == tmp_path
    events = list(LegacyEventFileLoader(str(writer.path)).Load())
    assert events[0].file_version == "brain.Event:2"
    got = [
        (e.summary.value[0].tag, e.summary.value[0].simple_value, e.step, e.wall_time)
        for e in events[1:]
    ]
    assert got == [
        ("train/loss", pytest.approx(float(np.float32(160.123456789)), abs=0), 1, 1000.25),
        ("test/loss", -3.5, 2**40, 1001.5),
        ("train/loss", float("inf"), 0, 1002.0),
    ]


def test_event_accumulator_reads_every_file_and_purges_on_resume(tmp_path):
    with EventWriter(tmp_path) as first:
        first.add_scalars({"loss": 10.0, "kl": 1.0}, step=0)
        for step in range(1, 10):
            first.add_scalar("loss", 10.0 - step, step)
    with EventWriter(tmp_path, purge_step=5) as second:  # resumed from a step-5 checkpoint
        for step in range(5, 8):
            second.add_scalar("loss", 100.0 + step, step)
    assert second.path != first.path and len(list(tmp_path.iterdir())) == 2
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "kl"}
    loss = [(s.step, s.value) for s in acc.Scalars("loss")]
    assert loss == [(s, 10.0 - s) for s in range(5)] + [(s, 100.0 + s) for s in range(5, 8)]


def test_closed_writer_refuses_writes(tmp_path):
    writer = EventWriter(tmp_path)
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalar("loss", 1.0, 0)
