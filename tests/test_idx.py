"""Strict IDX reading and writing: round trips, every refusal, and a fuzz of the reader."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_idx_reads_or_refuses
from vaelab.data.idx import DTYPES, content_md5, read_idx, read_idx_pair, write_idx
from vaelab.errors import VaelabError

NATIVE_DTYPES = [dtype.newbyteorder("=") for dtype in DTYPES.values()]


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">HBB{len(shape)}I", 0, code, len(shape), *shape) + payload


def write_raw(path, data: bytes, compress: bool = False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", NATIVE_DTYPES, ids=str)
def test_round_trip_every_dtype(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / f"x-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_big_endian_on_disk_and_content_md5(tmp_path):
    array = np.array([1, 256, -2], dtype=np.int16)
    write_idx(tmp_path / "a.idx", array)
    raw = (tmp_path / "a.idx").read_bytes()
    assert raw == idx_bytes(0x0B, (3,), b"\x00\x01\x01\x00\xff\xfe")
    assert content_md5(array) == hashlib.md5(raw).hexdigest()


def test_gzip_detected_by_magic_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data = idx_bytes(0x08, (3, 4), array.tobytes())
    np.testing.assert_array_equal(read_idx(write_raw(tmp_path / "plain.gz", data)), array)
    np.testing.assert_array_equal(read_idx(write_raw(tmp_path / "zipped", data, True)), array)


def test_empty_dimension_round_trips(tmp_path):
    array = np.zeros((0, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "e.gz", array)
    assert read_idx(tmp_path / "e.gz").shape == (0, 28, 28)


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_, np.complex64])
def test_write_rejects_unsupported_dtype(tmp_path, dtype):
    with pytest.raises(VaelabError, match="bad.idx.*dtype"):
        write_idx(tmp_path / "bad.idx", np.zeros(3, dtype=dtype))
    assert not list(tmp_path.iterdir())


def test_write_rejects_scalar(tmp_path):
    with pytest.raises(VaelabError, match="scalar.idx"):
        write_idx(tmp_path / "scalar.idx", np.array(3, dtype=np.uint8))


GOOD = idx_bytes(0x08, (2, 3), bytes(range(6)))
BAD_FILES = {
    "empty": (b"", "empty"),
    "short magic": (b"\x00\x00", "only 2 bytes"),
    "bad magic": (b"\x01\x02\x08\x01" + bytes(8), "not an IDX file"),
    "unknown dtype": (idx_bytes(0x0A, (2,), b"ab"), "dtype code 0x0A"),
    "zero ndim": (b"\x00\x00\x08\x00", "0 dimensions"),
    "short dims": (b"\x00\x00\x08\x03" + bytes(6), "header declares 3 dimensions"),
    "truncated": (GOOD[:-2], "truncated: the header promises 6 bytes of uint8 data, found 4"),
    "trailing": (GOOD + b"xyz", "3 trailing bytes"),
    "huge promise": (idx_bytes(0x0C, (60000, 60000), bytes(12)), "truncated.*found 12"),
    "huge zero-size": (idx_bytes(0x08, (0, 2**32 - 1, 2**32 - 1, 2**32 - 1), b""), "too large"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_refusals_name_the_file(tmp_path, case, compress):
    data, message = BAD_FILES[case]
    path = write_raw(tmp_path / "train-images-idx3-ubyte", data, compress)
    with pytest.raises(VaelabError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(GOOD)[:-6],  # cut inside the gzip trailer
        gzip.compress(GOOD)[:12],  # cut inside the deflate stream
        b"\x1f\x8b" + bytes(30),  # gzip magic, garbage header
        gzip.compress(GOOD)[:10] + b"\xff" * 40,  # valid header, corrupt deflate data
    ],
    ids=["cut trailer", "cut stream", "bad header", "bad deflate"],
)
def test_corrupt_gzip(tmp_path, data):
    path = write_raw(tmp_path / "labels.gz", data)
    with pytest.raises(VaelabError, match="labels.gz"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(VaelabError, match="nothing-here.*does not exist"):
        read_idx(tmp_path / "nothing-here")
    with pytest.raises(VaelabError, match="not a file"):
        read_idx(tmp_path)


def test_pair_reads_and_checks(tmp_path):
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels.gz", np.array([3, 7], dtype=np.uint8))
    got_images, got_labels = read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz")
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == [3, 7]


def test_pair_count_mismatch_names_both_files_and_counts(tmp_path):
    write_idx(tmp_path / "imgs.gz", np.zeros((3, 4, 4), dtype=np.uint8))
    write_idx(tmp_path / "labs.gz", np.zeros(2, dtype=np.uint8))
    with pytest.raises(VaelabError, match=r"imgs\.gz holds 3 images but .*labs\.gz holds 2"):
        read_idx_pair(tmp_path / "imgs.gz", tmp_path / "labs.gz")


@pytest.mark.parametrize(
    ("images", "labels", "culprit"),
    [
        (np.zeros((3, 16), np.uint8), np.zeros(3, np.uint8), "imgs"),
        (np.zeros((3, 4, 4), np.float32), np.zeros(3, np.uint8), "imgs"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros((3, 1), np.uint8), "labs"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.float32), "labs"),
    ],
    ids=["2-D images", "float images", "2-D labels", "float labels"],
)
def test_pair_wrong_ndim_or_dtype(tmp_path, images, labels, culprit):
    write_idx(tmp_path / "imgs", images)
    write_idx(tmp_path / "labs", labels)
    with pytest.raises(VaelabError, match=culprit):
        read_idx_pair(tmp_path / "imgs", tmp_path / "labs")


def test_pair_keeps_channel_dimension(tmp_path):
    write_idx(tmp_path / "imgs", np.zeros((2, 3, 4, 4), np.uint8))
    write_idx(tmp_path / "labs", np.zeros(2, np.uint8))
    assert read_idx_pair(tmp_path / "imgs", tmp_path / "labs")[0].shape == (2, 3, 4, 4)


def _headerish():
    """Bytes that pass the first checks often enough to reach the deeper ones."""
    header = st.tuples(
        st.sampled_from([*DTYPES, 0x0A, 0xFF]),
        st.lists(st.integers(0, 6), min_size=0, max_size=4),
    )
    return st.builds(
        lambda h, body: struct.pack(f">HBB{len(h[1])}I", 0, h[0], len(h[1]), *h[1]) + body,
        header,
        st.binary(max_size=300),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(st.binary(max_size=200), _headerish(), st.binary().map(b"\x1f\x8b".__add__)),
    compress=st.booleans(),
)
def test_fuzz_only_vaelab_errors(tmp_path_factory, data, compress):
    path = tmp_path_factory.getbasetemp() / "fuzz.idx"
    write_raw(path, data, compress)
    assert_idx_reads_or_refuses(path)
