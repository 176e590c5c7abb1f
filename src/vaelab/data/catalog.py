"""Named image datasets: find the files, download them if needed, verify them, load them.

Look-up order for `mnist`, `fashion-mnist` and `kmnist` (DESIGN.md): an explicit `data_dir`,
`$VAELAB_DATA/<name>` and `$VAELAB_DATA`, the user cache (`$XDG_CACHE_HOME/vaelab/<name>`,
by default `~/.cache/vaelab/<name>`), system folders (`/usr/share/datasets/<name>`), then a
download into the user cache. Every catalog file is checked against known md5s: of the
upstream .gz bytes or of the decompressed bytes, so recompressed copies (Debian's) pass too.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.resources
import logging
import os
import sys
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from tqdm import tqdm

from vaelab.data.base import ImageData, user_cache_dir
from vaelab.data.idx import check_pair, content_md5, read_idx, read_idx_pair
from vaelab.data.shapes import DESCRIPTION as SHAPES_DESCRIPTION
from vaelab.data.shapes import NAME as SHAPES_NAME
from vaelab.data.shapes import cache_status, load_shapes
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_open

if TYPE_CHECKING:  # both import torch, which `vaelab datasets` does without
    import torch

    from vaelab.data.folder import FolderOptions

__all__ = [
    "CATALOG",
    "Checksum",
    "DatasetEntry",
    "ImageData",
    "SAMPLE_NAME",
    "dataset_names",
    "describe_datasets",
    "download_file",
    "load_dataset",
    "user_cache_dir",
]

log = logging.getLogger(__name__)

STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_FILE_LIST = ", ".join(f"{stem}.gz" for stem in STEMS) + " (gzip or not)"
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
SAMPLE_NAME = "mnist-sample"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Checksum:
    """Known md5s of one file: of its upstream .gz bytes and of its decompressed bytes."""

    gz_md5: str | None = None
    raw_md5: str | None = None

    @property
    def known(self) -> bool:
        return bool(self.gz_md5 or self.raw_md5)

    def verdict(self, file_md5: Callable[[], str], raw_md5: Callable[[], str]) -> bool | None:
        """True if a known md5 matches, False if the decompressed md5 is known and differs.

        None when nothing decides: no raw md5 is known and the file is not the upstream .gz
        (it may be recompressed or uncompressed). The md5s are computed only when needed.
        """
        if self.gz_md5 and file_md5() == self.gz_md5:
            return True
        if self.raw_md5:
            return raw_md5() == self.raw_md5
        return None

    def expected(self) -> str:
        parts = [f"{self.gz_md5} (of the .gz)"] * bool(self.gz_md5)
        parts += [f"{self.raw_md5} (decompressed)"] * bool(self.raw_md5)
        return " or ".join(parts) or "no known md5"


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset of the catalog: four IDX files under the standard names."""

    name: str
    description: str
    mirrors: tuple[str, ...]
    checksums: Mapping[str, Checksum]  # by file stem (STEMS)
    class_names: tuple[str, ...]


CATALOG: dict[str, DatasetEntry] = {
    "mnist": DatasetEntry(
        name="mnist",
        description="MNIST handwritten digits, 60,000 train / 10,000 test, 28x28 grayscale "
        "(Yann LeCun, Corinna Cortes, Christopher J. C. Burges; CC BY-SA 3.0)",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        # The decompressed md5s of MNIST are not pinned: a recompressed or uncompressed copy is
        # accepted after a strict IDX read, with a warning.
        checksums={
            STEMS[0]: Checksum(gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            STEMS[1]: Checksum(gz_md5="d53e105ee54ea40749a09fcbcd1e9432"),
            STEMS[2]: Checksum(gz_md5="9fb629c4189551a2d022fa330f9573f3"),
            STEMS[3]: Checksum(gz_md5="ec29112dd5afa0611ce80d1b7f02629c"),
        },
        class_names=tuple(str(digit) for digit in range(10)),
    ),
    "fashion-mnist": DatasetEntry(
        name="fashion-mnist",
        description="Fashion-MNIST clothing images, 60,000 train / 10,000 test, 28x28 grayscale "
        "(Zalando Research; MIT)",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        checksums={
            STEMS[0]: Checksum(
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"
            ),
            STEMS[1]: Checksum(
                "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"
            ),
            STEMS[2]: Checksum(
                "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"
            ),
            STEMS[3]: Checksum(
                "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"
            ),
        },
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "kmnist": DatasetEntry(
        name="kmnist",
        description="Kuzushiji-MNIST cursive Japanese characters, 60,000 train / 10,000 test, "
        "28x28 grayscale (ROIS-DS Center for Open Data in the Humanities; CC BY-SA 4.0)",
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        checksums={
            STEMS[0]: Checksum(gz_md5="bdb82020997e1d708af4cf47b453dcf7"),
            STEMS[1]: Checksum(gz_md5="e144d726b3acfaa3e44228e80efcd344"),
            STEMS[2]: Checksum(gz_md5="5c965bf0a639b31b8f53240b1b52f4d7"),
            STEMS[3]: Checksum(gz_md5="7320c461ea6c1c855c0b718fb2a4b134"),
        },
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}

_SAMPLE_DESCRIPTION = (
    "10,000 real MNIST training digits shipped inside vaelab (9,000 train / 1,000 test): "
    "the offline default (Yann LeCun, Corinna Cortes, Christopher J. C. Burges; CC BY-SA 3.0)"
)
_SAMPLE_FILES = {
    "images-idx3-ubyte.gz": Checksum(raw_md5="0f35289e5c22ff8e771395837be25687"),
    "labels-idx1-ubyte.gz": Checksum(raw_md5="1b3e04ff32258d25dc247151d84dc6ed"),
}
_SAMPLE_TRAIN = 9000


def dataset_names() -> list[str]:
    """The named datasets that `load_dataset` knows (besides `idx:PATH` and `folder:PATH`)."""
    return [SAMPLE_NAME, *CATALOG, SHAPES_NAME]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    folder: FolderOptions | None = None,
) -> ImageData:
    """Load a named dataset (`dataset_names()`), `idx:PATH` or `folder:PATH` into memory.

    Named datasets are looked up in `data_dir` alone when it is given, otherwise in
    `$VAELAB_DATA`, the user cache and system folders, then downloaded into the user cache
    (when `download`), each file checked against its known md5s. `shapes` is drawn by vaelab
    (vaelab.data.shapes) and cached. `folder` says how the images of `folder:PATH` become
    tensors (see vaelab.data.folder).
    """
    if name.startswith("folder:"):
        from vaelab.data.folder import load_folder

        return load_folder(name, folder)
    if name.startswith("idx:"):
        return _load_idx_spec(name)
    if name == SAMPLE_NAME:
        return _load_sample()
    if name == SHAPES_NAME:  # drawn by vaelab (data/shapes.py), cached in data_dir or the cache
        return load_shapes(data_dir=data_dir)
    if name not in CATALOG:
        raise VaelabError(
            f"Dataset {name!r} is unknown; expected one of {', '.join(dataset_names())}, "
            "idx:PATH or folder:PATH."
        )
    entry = CATALOG[name]
    folder = _locate(entry, data_dir, download)
    return _load_entry(entry, folder)


def describe_datasets(data_dir: str | Path | None = None) -> list[dict]:
    """One row per named dataset: name, description and where it is (downloads nothing)."""
    rows = [
        {"name": SAMPLE_NAME, "description": _SAMPLE_DESCRIPTION, "status": "shipped with vaelab"}
    ]
    for entry in CATALOG.values():
        rows.append(
            {
                "name": entry.name,
                "description": entry.description,
                "status": _status(entry, data_dir),
            }
        )
    rows.append(
        {"name": SHAPES_NAME, "description": SHAPES_DESCRIPTION, "status": cache_status(data_dir)}
    )
    return rows


def download_file(
    urls: Sequence[str],
    dest: Path,
    checksum: Checksum,
    timeout: float = 60,
    progress: bool = False,
) -> Path:
    """Download the first of `urls` that works to `dest`, verified against `checksum`.

    Each attempt streams into a temp file beside `dest` and replaces `dest` only once the md5
    matches; a failed attempt (HTTP error, cut connection, wrong md5) leaves nothing behind
    and the next URL is tried. A `Checksum()` with no md5 accepts any file, with a warning.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reason = "no URL was given"
    for url in urls:
        try:
            _fetch(url, dest, checksum, timeout, progress)
            return dest
        except _MirrorFailed as err:
            reason = f"{url}: {err}"
            log.info("Download of %s failed: %s", dest.name, reason)
    raise VaelabError(
        f"Could not download {dest.name} from {', '.join(urls) or 'nowhere'}; last failure: "
        f"{reason}."
    )


class _MirrorFailed(Exception):
    """One download attempt failed; the message says why."""


def _fetch(url: str, dest: Path, checksum: Checksum, timeout: float, progress: bool) -> None:
    """Download into a temp file beside dest; only a verified file replaces dest."""
    with atomic_open(dest) as f:
        file_md5 = _stream(url, f, timeout, progress, dest.name)
        f.flush()
        _check_download(Path(f.name), dest.name, checksum, file_md5)


def _stream(url: str, f: BinaryIO, timeout: float, progress: bool, label: str) -> str:
    """Copy the body at `url` into `f`; return its md5. Raises _MirrorFailed."""
    digest, received = hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            promised = getattr(response, "length", None)  # Content-Length, if any
            with tqdm(
                total=promised, unit="B", unit_scale=True, desc=label, disable=not progress
            ) as bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise _MirrorFailed(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise _MirrorFailed(str(err.reason)) from err
    except (http.client.HTTPException, OSError, ValueError) as err:
        raise _MirrorFailed(str(err) or type(err).__name__) from err
    # http.client ends a body silently when the server closes early: compare with the promise.
    if promised is not None and received != promised:
        raise _MirrorFailed(f"the connection closed after {received} of {promised} bytes")
    return digest.hexdigest()


def _check_download(path: Path, name: str, checksum: Checksum, file_md5: str) -> None:
    if not checksum.known:
        warnings.warn(f"{name} has no known md5; accepted unverified.", stacklevel=4)
        return
    if not checksum.verdict(lambda: file_md5, lambda: _decompressed_md5(path)):
        raise _MirrorFailed(f"its md5 is {file_md5}, expected {checksum.expected()}")


def _decompressed_md5(path: Path) -> str:
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        try:
            return _md5_stream(gzip.GzipFile(fileobj=raw) if is_gzip else raw)
        except (OSError, EOFError, zlib.error):
            return "unreadable"


def _md5_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _md5_stream(f)


def _md5_stream(stream: BinaryIO) -> str:
    digest = hashlib.md5()
    while block := stream.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


def _read_verified(path: Path, checksum: Checksum, name: str) -> np.ndarray:
    """Read an IDX file strictly and check it against its known md5s."""
    array = read_idx(path)
    verdict = checksum.verdict(lambda: _md5_file(path), lambda: content_md5(array))
    if verdict is False:
        raise VaelabError(
            f"{path} is not the {name} file it is named after: its md5 is {_md5_file(path)} "
            f"({content_md5(array)} decompressed), expected {checksum.expected()}; "
            "delete or replace it."
        )
    if verdict is None:
        warnings.warn(
            f"{path} has no known md5 to check against; accepted because it reads as valid IDX.",
            stacklevel=4,
        )
    return array


def _standard_paths(folder: Path) -> dict[str, Path] | None:
    """The four standard files in `folder` (.gz preferred), or None if one is missing."""
    paths = {}
    for stem in STEMS:
        found = [p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()]
        if not found:
            return None
        paths[stem] = found[0]
    return paths


def _search_folders(name: str) -> list[Path]:
    """Where a named dataset may already be, in look-up order (no explicit data_dir)."""
    folders = []
    if env := os.environ.get("VAELAB_DATA"):
        folders += [Path(env) / name, Path(env)]
    folders.append(user_cache_dir() / name)
    return folders + [system / name for system in SYSTEM_DIRS]


def _explicit_folders(name: str, data_dir: str | Path) -> list[Path]:
    return [Path(data_dir).expanduser(), Path(data_dir).expanduser() / name]


def _locate(entry: DatasetEntry, data_dir: str | Path | None, download: bool) -> Path:
    if data_dir is not None:
        folders = _explicit_folders(entry.name, data_dir)
        if found := _first_complete(folders):
            return found
        raise VaelabError(
            f"{folders[0]} does not hold the {entry.name} files: expected {_FILE_LIST} in it "
            f"or in {folders[1]}."
        )
    folders = _search_folders(entry.name)
    if found := _first_complete(folders):
        return found
    if not download:
        raise _not_found(entry, folders, "downloading is off")
    try:
        return _download_entry(entry)
    except VaelabError as err:
        raise _not_found(entry, folders, f"the download failed ({str(err).rstrip('.')})") from err


def _first_complete(folders: list[Path]) -> Path | None:
    return next((folder for folder in folders if _standard_paths(folder)), None)


def _not_found(entry: DatasetEntry, folders: list[Path], reason: str) -> VaelabError:
    where = ", ".join(str(folder) for folder in folders)
    return VaelabError(
        f"Found no {entry.name} files and {reason}: put {_FILE_LIST} in one of {where}, "
        f"or in $VAELAB_DATA/{entry.name}, or pass their folder as data_dir."
    )


def _download_entry(entry: DatasetEntry) -> Path:
    folder = user_cache_dir() / entry.name
    for stem in STEMS:
        if not any((folder / f).is_file() for f in (f"{stem}.gz", stem)):
            log.info("Downloading %s of %s into %s", stem, entry.name, folder)
            urls = [mirror + f"{stem}.gz" for mirror in entry.mirrors]
            download_file(urls, folder / f"{stem}.gz", entry.checksums[stem], progress=_tty())
    return folder


def _tty() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


def _status(entry: DatasetEntry, data_dir: str | Path | None) -> str:
    if data_dir is not None:
        found = _first_complete(_explicit_folders(entry.name, data_dir))
        return f"found at {found}" if found else f"not found in {data_dir}"
    found = _first_complete(_search_folders(entry.name))
    if found:
        return f"found at {found}"
    return f"not found: will download from {entry.mirrors[0]} on first use"


def _load_entry(entry: DatasetEntry, folder: Path) -> ImageData:
    paths = _standard_paths(folder)
    arrays = {
        stem: _read_verified(paths[stem], entry.checksums[stem], entry.name) for stem in STEMS
    }
    for images, labels in (STEMS[:2], STEMS[2:]):
        check_pair(arrays[images], arrays[labels], paths[images], paths[labels])
    return ImageData(
        name=entry.name,
        train_images=_as_images(arrays[STEMS[0]]),
        train_labels=_as_labels(arrays[STEMS[1]]),
        test_images=_as_images(arrays[STEMS[2]]),
        test_labels=_as_labels(arrays[STEMS[3]]),
        source=str(folder),
        split="the standard split: train-* files for training, t10k-* for test",
        num_classes=len(entry.class_names),
        class_names=entry.class_names,
    )


def _load_sample() -> ImageData:
    folder = importlib.resources.files("vaelab.data") / "mnist_sample"
    arrays = []
    for file_name, checksum in _SAMPLE_FILES.items():
        with importlib.resources.as_file(folder / file_name) as path:
            arrays.append(_read_verified(path, checksum, SAMPLE_NAME))
    check_pair(*arrays, *_SAMPLE_FILES)
    images, labels = _as_images(arrays[0]), _as_labels(arrays[1])
    n = _SAMPLE_TRAIN
    return ImageData(
        name=SAMPLE_NAME,
        train_images=images[:n],
        train_labels=labels[:n],
        test_images=images[n:],
        test_labels=labels[n:],
        source="shipped with vaelab",
        split=f"first {n} of mnist-first10k for training, last {len(images) - n} for test",
        num_classes=10,
        class_names=CATALOG["mnist"].class_names,
    )


def _load_idx_spec(spec: str) -> ImageData:
    path = Path(spec.removeprefix("idx:")).expanduser()
    if path.is_dir():
        return _load_idx_folder(spec, path)
    if path.is_file():
        return _load_idx_single(spec, path)
    raise VaelabError(f"{spec} names nothing: {path} is neither a folder nor a file.")


def _load_idx_folder(spec: str, folder: Path) -> ImageData:
    paths = _standard_paths(folder)
    if paths is None:
        raise VaelabError(f"{folder} does not hold the standard IDX files: expected {_FILE_LIST}.")
    train = read_idx_pair(paths[STEMS[0]], paths[STEMS[1]])
    test = read_idx_pair(paths[STEMS[2]], paths[STEMS[3]])
    if train[0].shape[1:] != test[0].shape[1:]:
        raise VaelabError(
            f"{paths[STEMS[0]]} holds images of shape {train[0].shape[1:]} but "
            f"{paths[STEMS[2]]} holds {test[0].shape[1:]}; expected the same shape."
        )
    split = "the standard split: train-* files for training, t10k-* for test"
    return _idx_data(spec, str(folder), split, train, test)


def _load_idx_single(spec: str, images_path: Path) -> ImageData:
    if "images-idx3" not in images_path.name:
        raise VaelabError(
            f"{images_path} is not named like an IDX images file; expected 'images-idx3' in its "
            "name, with the labels beside it under 'labels-idx1'."
        )
    labels_path = images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1"))
    images, labels = read_idx_pair(images_path, labels_path)
    n_train = len(images) * 9 // 10
    if n_train == 0 or n_train == len(images):
        raise VaelabError(
            f"{images_path} holds {len(images)} images; expected at least 2 to split them into "
            "training and test sets."
        )
    split = (
        f"first 90 % ({n_train} images) of {images_path.name} for training, "
        f"last 10 % ({len(images) - n_train}) for test"
    )
    train, test = (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])
    return _idx_data(spec, str(images_path.parent), split, train, test)


def _idx_data(spec: str, source: str, split: str, train: tuple, test: tuple) -> ImageData:
    train_labels, test_labels = _as_labels(train[1]), _as_labels(test[1])
    return ImageData(
        name=spec,
        train_images=_as_images(train[0]),
        train_labels=train_labels,
        test_images=_as_images(test[0]),
        test_labels=test_labels,
        source=source,
        split=split,
        num_classes=_num_classes(spec, train_labels, test_labels),
        class_names=None,
    )


def _num_classes(spec: str, *labels: torch.Tensor) -> int | None:
    import torch  # the three converters import torch when a dataset loads, not when listed

    every = torch.cat(labels)
    if not len(every):
        return None
    if int(every.min()) < 0:
        raise VaelabError(f"{spec} has a negative label {int(every.min())}; expected labels >= 0.")
    return int(every.max()) + 1


def _as_images(array: np.ndarray) -> torch.Tensor:
    """uint8 [N, C, H, W], sharing memory with `array`: (N, H, W) gets a channel dimension."""
    import torch

    images = torch.from_numpy(array)
    return images.unsqueeze(1) if images.ndim == 3 else images


def _as_labels(array: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(array.astype(np.int64, copy=False))
