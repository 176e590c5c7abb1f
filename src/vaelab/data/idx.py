"""Strict reading and writing of IDX files, the format of MNIST and its kin.

An IDX file is a 4-byte magic (two zero bytes, a dtype code, the number of dimensions), one
big-endian uint32 per dimension, then the data in C order, big-endian. The whole file may be
gzipped; we tell by its first two bytes (1f 8b), not by its name.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaelab.errors import VaelabError
from vaelab.fileio import atomic_open

__all__ = ["DTYPES", "check_pair", "content_md5", "read_idx", "read_idx_pair", "write_idx"]

# IDX dtype code -> the dtype of the data as stored (big-endian).
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {(dtype.kind, dtype.itemsize): code for code, dtype in DTYPES.items()}
_DTYPE_LIST = ", ".join(f"0x{code:02X} ({dtype.name})" for code, dtype in DTYPES.items())
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate expands at most about 1032:1, so a .gz of n bytes decompresses to fewer than
# 1032 * n + 1 KiB bytes: a header promising more is truncated, and we never allocate for it.
_MAX_DEFLATE_RATIO = 1032
_MAX_NDIM = 32  # the most dimensions every supported numpy version can hold
_CHUNK = 1 << 20


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) strictly into a native-endian, writable array.

    Raises VaelabError naming the file for a bad magic, an unknown dtype code, a truncated
    file, trailing bytes or a corrupt gzip stream.
    """
    path = Path(path)
    if not path.is_file():
        raise VaelabError(f"{path} does not exist or is not a file; expected an IDX file there.")
    try:
        with _open_idx(path) as (stream, limit):
            dtype, shape = _read_header(stream, path)
            return _read_payload(stream, path, dtype, shape, limit - 4 - 4 * len(shape))
    except (OSError, EOFError, zlib.error) as err:
        raise VaelabError(f"{path} could not be read as IDX: {_describe(err)}.") from err


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped when `path` ends with .gz; the write is atomic."""
    path = Path(path)
    array = np.asarray(array)
    header = _header(array, f"{path} cannot be written as IDX")
    payload = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">"))
    with atomic_open(path) as f:
        if path.name.endswith(".gz"):
            # mtime=0 and a fixed name make the bytes depend on the array alone.
            with gzip.GzipFile(filename=path.name, mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(payload.data)
        else:
            f.write(header)
            f.write(payload.data)


def read_idx_pair(
    images_path: str | Path, labels_path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Read images (uint8, (N, H, W) or (N, C, H, W)) and their labels (integers, (N,))."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    check_pair(images, labels, images_path, labels_path)
    return images, labels


def check_pair(
    images: np.ndarray, labels: np.ndarray, images_path: str | Path, labels_path: str | Path
) -> None:
    """Raise VaelabError unless `images` are uint8 (N, H, W) or (N, C, H, W) with N labels."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise VaelabError(
            f"{images_path} holds {images.dtype} data of shape {images.shape}; "
            "expected uint8 images of shape (N, H, W) or (N, C, H, W)."
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise VaelabError(
            f"{labels_path} holds {labels.dtype} data of shape {labels.shape}; "
            "expected integer labels of shape (N,)."
        )
    if len(images) != len(labels):
        raise VaelabError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; expected one label per image."
        )


def content_md5(array: np.ndarray) -> str:
    """The md5 of the IDX bytes that encode `array` (uncompressed).

    After a strict `read_idx` this is the md5 of the decompressed file, found without
    decompressing it a second time.
    """
    digest = hashlib.md5(_header(array, "this array cannot be encoded as IDX"))
    digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).data)
    return digest.hexdigest()


def _header(array: np.ndarray, context: str) -> bytes:
    code = _CODE_OF.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise VaelabError(f"{context}: dtype {array.dtype} is not one of {_DTYPE_LIST}.")
    if not 1 <= array.ndim <= 255 or any(n >= 2**32 for n in array.shape):
        raise VaelabError(
            f"{context}: shape {array.shape} is not 1 to 255 dimensions of fewer than 2**32 each."
        )
    return struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)


@contextlib.contextmanager
def _open_idx(path: Path) -> Iterator[tuple[BinaryIO, int]]:
    """Yield the (decompressed) stream and an upper bound on its length in bytes."""
    with open(path, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not is_gzip:
            yield raw, size
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream, size * _MAX_DEFLATE_RATIO + 1024


def _read_header(stream: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = stream.read(4)
    if len(magic) < 4:
        what = "empty" if not magic else f"only {len(magic)} bytes long"
        raise VaelabError(f"{path} is {what}; expected an IDX file with a 4-byte magic number.")
    if magic[:2] != b"\0\0":
        raise VaelabError(
            f"{path} is not an IDX file: it starts with bytes {magic.hex(' ')}, expected two zero "
            "bytes, a dtype code and the number of dimensions."
        )
    code, ndim = magic[2], magic[3]
    if code not in DTYPES:
        raise VaelabError(f"{path} has IDX dtype code 0x{code:02X}; expected one of {_DTYPE_LIST}.")
    if not 1 <= ndim <= _MAX_NDIM:
        raise VaelabError(
            f"{path} declares {ndim} dimensions in its IDX header; expected 1 to {_MAX_NDIM}."
        )
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise VaelabError(
            f"{path} is truncated: its IDX header declares {ndim} dimensions but holds only "
            f"{len(dims)} of their {4 * ndim} bytes."
        )
    return DTYPES[code], struct.unpack(f">{ndim}I", dims)


def _read_payload(
    stream: BinaryIO, path: Path, dtype: np.dtype, shape: tuple[int, ...], limit: int
) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limit:  # cannot be there: count what is, without allocating for the promise
        _raise_truncated(path, dtype, nbytes, _count_rest(stream))
    if math.prod(max(n, 1) for n in shape) * dtype.itemsize > np.iinfo(np.intp).max:
        raise VaelabError(f"{path} declares shape {shape}, too large for any array.")
    array = np.empty(shape, dtype=dtype.newbyteorder("="))
    found = _fill(stream, memoryview(array.reshape(-1).view(np.uint8)))
    if found < nbytes:
        _raise_truncated(path, dtype, nbytes, found)
    trailing = _count_rest(stream)
    if trailing:
        raise VaelabError(
            f"{path} has {trailing} trailing bytes after the {nbytes} bytes of {dtype.name} "
            "data that its IDX header promises."
        )
    if not dtype.isnative:
        array.byteswap(inplace=True)  # the file is big-endian; the array is native
    return array


def _raise_truncated(path: Path, dtype: np.dtype, nbytes: int, found: int) -> None:
    raise VaelabError(
        f"{path} is truncated: the header promises {nbytes} bytes of {dtype.name} data, "
        f"found {found}."
    )


def _fill(stream: BinaryIO, view: memoryview) -> int:
    """Read into `view` until it is full or the stream ends; return the bytes read."""
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled : filled + _CHUNK])
        if not n:
            break
        filled += n
    return filled


def _count_rest(stream: BinaryIO) -> int:
    count = 0
    while block := stream.read(_CHUNK):
        count += len(block)
    return count


def _describe(err: BaseException) -> str:
    if isinstance(err, (EOFError, zlib.error, gzip.BadGzipFile)):
        return f"its gzip stream is corrupt or cut short ({err})"
    return str(err).rstrip(".") or type(err).__name__
