"""Shared fixtures: tiny models and data built in code (no pickles, no network)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import laplace_vae  # noqa: F401  (registers the test-only model: tests/laplace_vae.py)
import vaelab
from vaelab.data import ImageData, load_dataset
from vaelab.models import MODELS

# As the `vaelab` command does first (training/runtime.py says why): before torch starts its
# worker threads, so that every one of them flushes denormals and tests train as the command.
vaelab.flush_denormals()
# Commands the tests start pin their thread count: left to the machine's load, a run and its
# resumed copy could differ in their last bits (training/threads.py; its own tests unset it).
os.environ.setdefault("VAELAB_THREADS", str(torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_config(name: str, net: str = "mlp", **changes):
    """The registered model's config at a size that trains in milliseconds."""
    cls = MODELS[name].config_class
    conditional = MODELS[name].conditional
    fields = {
        "image_shape": (1, 28, 28),
        "latent_dim": 2,
        "net": net,
        "hidden": (32,),
        "num_classes": 10 if conditional else 0,
    }
    if "m" in cls.__dataclass_fields__:  # MIWAE, PIWAE: M x K = 64 samples by default
        fields.update(m=2, k=4)
    fields.update(changes)
    return cls(**fields)


@pytest.fixture(scope="session")
def mnist_sample() -> ImageData:
    return load_dataset("mnist-sample")


@pytest.fixture(scope="session")
def small_data(mnist_sample) -> ImageData:
    """512 training and 128 test digits of the shipped sample."""
    d = mnist_sample
    return ImageData(
        name="mnist-sample-small",
        train_images=d.train_images[:512],
        train_labels=d.train_labels[:512],
        test_images=d.test_images[:128],
        test_labels=d.test_labels[:128],
        source=d.source,
        split="first 512 train / first 128 test of mnist-sample",
        num_classes=d.num_classes,
        class_names=d.class_names,
    )


@pytest.fixture
def digits(mnist_sample) -> tuple[torch.Tensor, torch.Tensor]:
    """64 binarized test digits and their labels."""
    x = (mnist_sample.test_images[:64].float() / 255 > 0.5).float()
    return x, mnist_sample.test_labels[:64]


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_file(pixels: np.ndarray, color_type: int) -> bytes:
    """A PNG written by hand from (H, W[, C]) uint8 or uint16 samples (bit depth 8 or 16):
    what Pillow cannot write, such as 16-bit RGB. Colour types: 0 gray, 2 RGB, 6 RGBA."""
    depth = 16 if pixels.dtype == np.uint16 else 8
    h, w = pixels.shape[:2]
    rows = pixels.astype(pixels.dtype.newbyteorder(">")).reshape(h, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def assert_idx_reads_or_refuses(path: Path) -> None:
    """The IDX fuzzers' oracle: a native array, or the toolkit's own error naming the file."""
    from vaelab.data import read_idx
    from vaelab.errors import VaelabError

    try:
        array = read_idx(path)
    except VaelabError as err:
        assert str(path) in str(err)
    else:
        assert isinstance(array, np.ndarray) and array.dtype.isnative
