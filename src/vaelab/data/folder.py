"""Image folders as datasets: `folder:PATH`.

Layout: the sub-folders of PATH that hold files are the classes, labelled 0..K-1 in the order
of their sorted names (files at any depth below a class folder belong to it); a folder without
such sub-folders is flat and has no labels. Names that start with a dot are ignored.

Pixels: Pillow decodes every file (its decompression-bomb limit is kept, and an image over
`Image.MAX_IMAGE_PIXELS` is refused rather than warned about). An image is turned upright by its
EXIF orientation, flattened onto white where it has transparency, 16-bit samples are scaled to
8 bits, then it becomes grayscale (L) or RGB, its centre square is kept and resized (bicubic) to
SIZE x SIZE. `channels=None` gives 1 when every image is grayscale (modes 1, L, LA, I, I;16),
else 3 (a palette image counts as colour); `image_size=None` gives 28 for 1 channel, 32 for 3.

Bad files: a pre-scan opens every file's header, then decodes it. A file that is not an image,
is truncated or corrupt, exceeds the bomb limit, is not a regular file or lies outside the class
folders is bad: `on_bad_file="error"` (the default) raises one error naming the first few, and
`"skip"` leaves them out with a warning.

Split: a tenth of each class (rounded down, at least one image of a class of two or more) is held
out for testing: the files whose relative paths have the smallest sha256. No seed is involved, and
which side a file falls on depends only on its path and the size of its class.

Cache: the split uint8 tensors are cached as safetensors in `~/.cache/vaelab/folders/` (under
`$XDG_CACHE_HOME` if set), keyed by the sha256 of the options, Pillow's version and every file's
relative path, size, mtime and ctime. A second load reads that one file; a changed folder is
scanned again (and its older cache removed); a cache file that does not read back as written is
ignored and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import PIL
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from tqdm import tqdm

from vaelab.config import check_choices
from vaelab.data.base import ImageData, user_cache_dir
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes

__all__ = [
    "BAD_FILE_POLICIES",
    "BadFilePolicy",
    "CHANNELS",
    "DEFAULT_SIZE",
    "FOLDER_PREFIX",
    "FolderOptions",
    "content_changes",
    "folder_content",
    "folder_cache_dir",
    "is_folder_spec",
    "load_folder",
]

FOLDER_PREFIX = "folder:"
BadFilePolicy = Literal["error", "skip"]  # an unreadable image file: stop, or leave it out
BAD_FILE_POLICIES = get_args(BadFilePolicy)
CHANNELS = (1, 3)
DEFAULT_SIZE = {1: 28, 3: 32}
SIZE_RANGE = (4, 512)
TEST_ONE_IN = 10  # one image in ten of each class is held out (rounded down, at least one)
CACHE_FORMAT = "vaelab-folder-cache-1"
_SHOWN = 5  # bad files named in an error or a warning
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # 16-bit samples


@dataclass(frozen=True)
class FolderOptions:
    """How the images of `folder:PATH` become tensors; None means: chosen from the images."""

    channels: int | None = None  # 1 (grayscale) or 3 (RGB); None: 1 if every image is grayscale
    image_size: int | None = None  # side in pixels; None: 28 for 1 channel, 32 for 3
    on_bad_file: BadFilePolicy = "error"

    def validate(self) -> None:
        check_choices(self)
        low, high = SIZE_RANGE
        checks = [
            (self.channels in (None, *CHANNELS), "channels",
             "1 (grayscale), 3 (RGB) or none (1 if every image is grayscale, else 3)"),
            (self.image_size is None or low <= self.image_size <= high, "image_size",
             f"an integer from {low} to {high}, or none (28 for grayscale, 32 for RGB)"),
        ]  # fmt: skip
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"{name} is {getattr(self, name)!r}: expected {expected}")


def is_folder_spec(name: str) -> bool:
    return name.startswith(FOLDER_PREFIX)


def folder_cache_dir() -> Path:
    """Where folder datasets are cached: `~/.cache/vaelab/folders` (see user_cache_dir)."""
    return user_cache_dir() / "folders"


def load_folder(
    spec: str, options: FolderOptions | None = None, cache_dir: Path | None = None
) -> ImageData:
    """Load `folder:PATH` (see this module's docstring), from its cache if nothing changed."""
    options = options or FolderOptions()
    options.validate()
    root = _root(spec)
    listing = _list_folder(root)
    key = _fingerprint(listing, options)
    cache = Path(cache_dir or folder_cache_dir()) / _cache_name(root, options, key)
    loaded = _read_cache(cache, key, root)
    if loaded is None:
        loaded = _scan(root, listing, options)
        _write_cache(cache, key, loaded)
    if loaded.skipped:
        warnings.warn(f"{root}: left out {_describe_bad(loaded.skipped)}.", stacklevel=2)
    return loaded.image_data(spec, root, key)


def folder_content(spec: str, options: FolderOptions | None = None) -> dict:
    """What a run records of `folder:PATH` when it trains (config.json's `folder_content`):
    the content key of the cache and every file's [relative path, size, mtime in ns]."""
    options = options or FolderOptions()
    listing = _list_folder(_root(spec))
    files = [[rel, size, mtime] for (rel, _), (size, mtime, _) in
             zip(listing.files, listing.stats, strict=True)]  # fmt: skip
    return {"key": _fingerprint(listing, options), "files": files}


def content_changes(then: dict, now: dict) -> str | None:
    """How the folder of `now` (folder_content) differs from `then`, in words; None if not."""
    if then["key"] == now["key"]:
        return None
    old = {rel: (size, mtime) for rel, size, mtime in then["files"]}
    new = {rel: (size, mtime) for rel, size, mtime in now["files"]}
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    changed = sorted(rel for rel in new.keys() & old.keys() if new[rel] != old[rel])
    parts = [f"{len(old)} files then, {len(new)} now"]
    for what, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            parts.append(f"{len(names)} {what} ({', '.join(names[:_SHOWN])}{more})")
    if not (added or removed or changed):
        parts.append("the same files, sizes and modification times (their status-change times, "
                     "the image options or Pillow's version differ)")  # fmt: skip
    return "; ".join(parts)


# ---- listing: which files, which class, and what makes the cache key


@dataclass
class _Listing:
    files: list[tuple[str, int | None]]  # (relative path with '/', label or None)
    stats: list[tuple[int, int, int]]  # (size, mtime_ns, ctime_ns) of each file
    bad: list[tuple[str, str]]  # (relative path, why) found while listing
    class_names: tuple[str, ...] | None


def _root(spec: str) -> Path:
    text = spec.removeprefix(FOLDER_PREFIX)
    expected = "expected folder:PATH with images in PATH or in one sub-folder per class"
    if not text:
        raise VaelabError(f"{spec!r} names no folder; {expected}.")
    try:
        root = Path(text).expanduser()
    except RuntimeError:  # ~user of an unknown user
        root = Path(text)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise VaelabError(f"{spec} names no folder: {root} {what}; {expected}.")
    return root.resolve()


def _visible(names: list[str]) -> list[str]:
    return sorted(name for name in names if not name.startswith("."))


def _walk(folder: Path, bad: list[tuple[str, str]], root: Path) -> list[Path]:
    """Every visible file below `folder`, sorted; links to folders are not followed."""

    def unlistable(err: OSError) -> None:
        bad.append((_rel(Path(err.filename), root), f"could not be listed ({err.strerror})"))

    found = []
    for top, dirs, files in os.walk(folder, onerror=unlistable):
        dirs[:] = _visible(dirs)
        found += [Path(top, name) for name in _visible(files)]
    return found


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def _list_folder(root: Path) -> _Listing:
    bad: list[tuple[str, str]] = []
    try:
        entries = list(os.scandir(root))
    except OSError as err:
        raise VaelabError(f"{root} could not be listed: {err.strerror}.") from None
    top = [Path(e.path) for e in entries if not e.name.startswith(".") and not _is_dir(e)]
    folders = _visible([e.name for e in entries if _is_dir(e)])
    classes = {name: _walk(root / name, bad, root) for name in folders}
    class_names = tuple(name for name, paths in classes.items() if paths) or None
    if class_names:
        bad += [(_rel(path, root), "outside every class folder") for path in sorted(top)]
        paths = [(p, label) for label, name in enumerate(class_names) for p in classes[name]]
    else:
        paths = [(path, None) for path in sorted(top)]
    listing = _Listing([], [], bad, class_names)
    for path, label in paths:
        _add_file(listing, path, label, root)
    if not listing.files and not listing.bad:
        raise VaelabError(
            f"{root} holds no files; expected images (PNG, JPEG, ...) in it, or in one "
            "sub-folder per class."
        )
    return listing


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _add_file(listing: _Listing, path: Path, label: int | None, root: Path) -> None:
    rel = _rel(path, root)
    try:
        st = os.stat(path)
    except OSError as err:
        listing.bad.append((rel, f"could not be read ({err.strerror})"))
        return
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
        listing.bad.append((rel, "not a regular file"))
        return
    listing.files.append((rel, label))
    listing.stats.append((st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def _fingerprint(listing: _Listing, options: FolderOptions) -> str:
    """sha256 of what decides the tensors: options, Pillow, and every file's name and stat."""
    head = {"format": CACHE_FORMAT, "pillow": PIL.__version__, "options": asdict(options),
            "classes": listing.class_names, "bad": listing.bad}  # fmt: skip
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    for (rel, label), numbers in zip(listing.files, listing.stats, strict=True):
        digest.update(os.fsencode(rel) + f"\0{label}\0{numbers}\n".encode())
    return digest.hexdigest()


# ---- decoding: one file to a (C, S, S) uint8 array, or _BadFile


class _BadFile(Exception):
    """One file cannot be used; the message says why."""


@contextmanager
def _pillow_guard() -> Iterator[None]:
    """Any failure of Pillow on a file becomes _BadFile, and the bomb warning an error.

    Pillow's decoders raise many types (OSError, SyntaxError, ValueError, struct.error, ...)
    on hostile bytes, so every Exception of a file is caught here and named.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # metadata complaints: the pixels decide
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except _BadFile:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _BadFile(f"over Pillow's decompression-bomb limit ({_first_line(err)})") from None
        except UnidentifiedImageError:
            raise _BadFile("not an image that Pillow can read") from None
        except Exception as err:  # see the docstring
            raise _BadFile(f"corrupt, truncated or unsupported ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0][:120] if text else "") or type(err).__name__


def _header_mode(path: Path) -> str:
    with _pillow_guard(), Image.open(path) as image:
        if image.mode == "F":
            raise _BadFile("32-bit float pixels (mode F) have no agreed range")
        return image.mode


def _decode(path: Path, channels: int, size: int) -> np.ndarray:
    with _pillow_guard(), Image.open(path) as image:
        image.draft(None, (size, size))  # JPEG: decode at the smallest scale that covers size
        pixels = np.asarray(_square(_flatten(_upright(image), channels), size), dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)  # (C, S, S)


def _upright(image: Image.Image) -> Image.Image:
    """The image turned by its EXIF orientation; as it is when its EXIF block is broken (that
    says nothing about the pixels: a failure to decode them is caught again right after)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # any exception: a metadata parser on hostile bytes
        return image


def _flatten(image: Image.Image, channels: int) -> Image.Image:
    """The image in mode L (channels 1) or RGB (3): 16-bit scaled, transparency on white."""
    if image.mode in _WIDE_MODES:  # convert("L") would clip 16-bit values at 255, not scale
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8))
    if {"A", "a"} & set(image.getbands()) or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba)
    if image.mode not in ("1", "L", "RGB"):
        image = image.convert("RGB")  # CMYK, YCbCr, P, ...
    return image.convert("L" if channels == 1 else "RGB")


def _square(image: Image.Image, size: int) -> Image.Image:
    """The centre square of `image`, resized to size x size (torchvision's Resize+CenterCrop)."""
    w, h = image.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


# ---- the scan: headers, then pixels, then the bad-file policy and the split


@dataclass
class _Loaded:
    tensors: dict[str, torch.Tensor]  # train_images, test_images and, with classes, the labels
    class_names: tuple[str, ...] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def image_data(self, spec: str, root: Path, key: str) -> ImageData:
        t = self.tensors
        n_train, n_test = len(t["train_images"]), len(t["test_images"])
        part = "of each class" if self.class_names else "of the images"
        split = (
            f"{n_test} images held out for testing (a tenth {part}: the files with the "
            f"smallest sha256 of their path), {n_train} for training"
        )
        return ImageData(
            name=spec,
            train_images=t["train_images"],
            train_labels=t.get("train_labels"),
            test_images=t["test_images"],
            test_labels=t.get("test_labels"),
            source=f"{root} (content key {key[:16]})",
            split=split,
            num_classes=len(self.class_names) if self.class_names else None,
            class_names=self.class_names,
        )


def _scan(root: Path, listing: _Listing, options: FolderOptions) -> _Loaded:
    bad = list(listing.bad)
    modes: dict[int, str] = {}
    for i, (rel, _) in enumerate(listing.files):
        try:
            modes[i] = _header_mode(root / rel)
        except _BadFile as err:
            bad.append((rel, str(err)))
    channels = options.channels or (1 if set(modes.values()) <= _GRAY_MODES else 3)
    size = options.image_size or DEFAULT_SIZE[channels]
    images = np.empty((len(modes), channels, size, size), dtype=np.uint8)
    kept: list[int] = []
    for i in tqdm(modes, desc=f"reading {root.name}", unit="image", leave=False,
                  disable=len(modes) < 500 or not _tty()):  # fmt: skip
        try:
            images[len(kept)] = _decode(root / listing.files[i][0], channels, size)
        except _BadFile as err:
            bad.append((listing.files[i][0], str(err)))
            continue
        kept.append(i)
    bad.sort()
    if bad and options.on_bad_file == "error":
        raise VaelabError(
            f"{root} holds {_describe_bad(bad)}; fix or remove them, or pass --on-bad-file skip "
            "to leave them out."
        )
    rels = [listing.files[i][0] for i in kept]
    labels = None if listing.class_names is None else [listing.files[i][1] for i in kept]
    test = _test_mask(root, rels, labels)
    return _Loaded(_split(images[: len(kept)], labels, test), listing.class_names, bad)


def _describe_bad(bad: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{rel} ({why})" for rel, why in bad[:_SHOWN])
    more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    return f"{len(bad)} unreadable or odd file(s): {shown}{more}"


def _test_mask(root: Path, rels: list[str], labels: list | None) -> np.ndarray:
    """True for the held-out images: per class, one in TEST_ONE_IN with the smallest sha256."""
    groups = np.zeros(len(rels), dtype=np.int64) if labels is None else np.array(labels)
    test = np.zeros(len(rels), dtype=bool)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda i: hashlib.sha256(os.fsencode(rels[i])).digest())
        test[members[: max(1, len(members) // TEST_ONE_IN)]] = True
    if not test.any():
        what = "no readable images" if not rels else f"{len(rels)} readable image(s)"
        raise VaelabError(
            f"{root} holds {what} and no class with two of them; expected at least two images "
            "in one class (or a flat folder) to hold one out for testing."
        )
    return test


def _split(images: np.ndarray, labels: list | None, test: np.ndarray) -> dict[str, torch.Tensor]:
    tensors = {
        "train_images": torch.from_numpy(images[~test].copy()),
        "test_images": torch.from_numpy(images[test].copy()),
    }
    if labels is not None:
        y = torch.tensor(labels, dtype=torch.int64)
        tensors["train_labels"] = y[torch.from_numpy(~test)]
        tensors["test_labels"] = y[torch.from_numpy(test)]
    return tensors


def _tty() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


# ---- the cache: one safetensors file per folder and options


def _cache_name(root: Path, options: FolderOptions, key: str) -> str:
    return f"{_cache_prefix(root, options)}-{key[:16]}.safetensors"


def _cache_prefix(root: Path, options: FolderOptions) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", root.name)[:40] or "folder"
    where = json.dumps([os.fsencode(root).hex(), asdict(options)], sort_keys=True)
    return f"{slug}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


def _read_cache(path: Path, key: str, root: Path) -> _Loaded | None:
    """The cached tensors if `path` holds exactly what _write_cache wrote for `key`."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        loaded = _Loaded(
            tensors, _names(meta.get("class_names")), _pairs(json.loads(meta["skipped"]))
        )
        problem = _cache_problem(meta, key, loaded)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        problem = _first_line(err)
    if problem is None:
        return loaded
    warnings.warn(f"Ignoring the cache {path} ({problem}); reading {root} again.", stacklevel=3)
    return None


def _names(text: str | None) -> tuple[str, ...] | None:
    names = None if text is None else json.loads(text)
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise ValueError("its class names are not a list of strings")  # fmt: skip
    return None if names is None else tuple(names)


def _pairs(items) -> list[tuple[str, str]]:
    if not isinstance(items, list) or not all(
        isinstance(i, list) and len(i) == 2 and all(isinstance(s, str) for s in i) for i in items
    ):
        raise ValueError("its list of skipped files is malformed")
    return [(rel, why) for rel, why in items]


def _cache_problem(meta: dict, key: str, loaded: _Loaded) -> str | None:
    """Why the cached tensors cannot be used, or None."""
    if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
        return "it was written for other files or options"
    t, labelled = loaded.tensors, loaded.class_names is not None
    want = {"train_images", "test_images"} | (
        {"train_labels", "test_labels"} if labelled else set()
    )
    if set(t) != want:
        return f"it holds tensors {sorted(t)}, expected {sorted(want)}"
    a, b = t["train_images"], t["test_images"]
    image_like = all(
        x.dtype == torch.uint8
        and x.ndim == 4
        and x.shape[1] in CHANNELS
        and x.shape[2] == x.shape[3]
        for x in (a, b)
    )
    if not image_like or a.shape[1:] != b.shape[1:] or not len(b):
        return "its images are not uint8 [N, C, S, S] with 1 or 3 channels"
    if labelled:
        for part in ("train", "test"):
            y = t[f"{part}_labels"]
            if (
                y.dtype != torch.int64
                or y.shape != (len(t[f"{part}_images"]),)
                or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(loaded.class_names))
            ):
                return f"its {part} labels do not fit its images and classes"  # fmt: skip
    return None


def _write_cache(path: Path, key: str, loaded: _Loaded) -> None:
    """Write the cache atomically and remove this folder's older caches; never fatal."""
    meta = {"format": CACHE_FORMAT, "key": key, "skipped": json.dumps(loaded.skipped)}
    if loaded.class_names is not None:
        meta["class_names"] = json.dumps(loaded.class_names)
    try:
        atomic_write_bytes(path, save(loaded.tensors, metadata=meta))
    except OSError as err:
        warnings.warn(
            f"Could not write the cache {path} ({err}); the next load reads the folder again.",
            stacklevel=3,
        )
        return
    for old in path.parent.glob(f"{path.name.rsplit('-', 1)[0]}-*.safetensors"):
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()
