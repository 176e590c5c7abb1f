"""`shapes`: binary images of one shape each with known factors of variation, drawn by vaelab.

The factors and their grid follow dSprites (Matthey et al. 2017, the data set of the
disentanglement papers): shape (square, ellipse, heart, and a triangle besides dSprites' three),
6 scales in [0.5, 1], 40 rotations in [0, 2 pi), 32 x and 32 y positions in [0, 1], at 64 x 64
pixels. 64 rather than 28 pixels because at 28 the 32 positions lie under a pixel apart and a
half-scale heart is 5 pixels wide: neighbouring factor values would draw the same binary image,
and no code could carry them.

A pixel is on when its centre lies inside the shape (an exact test per shape in its own frame:
no anti-aliasing, so the images are binary). The 70,000 images are distinct grid points drawn
without replacement by a seeded permutation (numpy's RandomState, whose stream numpy keeps
fixed across versions): the test images are never training images. The images are cached, bit
packed, in the user cache as safetensors with the sha256 of their bytes; the factors are
recomputed from the seed.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from vaelab.data.base import ImageData, user_cache_dir
from vaelab.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

NAME = "shapes"
SHAPES = ("square", "ellipse", "heart", "triangle")
FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y")
GRID = (len(SHAPES), 6, 40, 32, 32)  # values per factor, as FACTOR_NAMES
VERSION = 1  # of the drawing, part of the cache's name: bumped when the drawing changes
R_MAX = 0.2  # circumradius of a scale-1 shape, as a share of the image side
_CHUNK = 4096  # images drawn at once: bounds the (n, W, W) temporaries


@dataclass(frozen=True)
class ShapesSpec:
    """What `shapes` holds: the image side, the train and test sizes and the seed."""

    size: int = 64
    train: int = 60_000
    test: int = 10_000
    seed: int = 0

    def cache_name(self) -> str:
        sizes = f"{self.size}px-{self.train}-{self.test}"
        return f"shapes-v{VERSION}-{sizes}-seed{self.seed}.safetensors"


DEFAULT = ShapesSpec()
DESCRIPTION = (
    "procedural dSprites-like shapes with known factors (shape, scale, rotation, x, y), "
    "60,000 train / 10,000 test, 64x64 binary, drawn by vaelab"
)


def factor_indices(n: int, seed: int) -> np.ndarray:
    """n distinct points of the factor grid, (n, 5) int64 indices, from a seeded permutation."""
    cells = math.prod(GRID)
    flat = np.random.RandomState(seed).permutation(cells)[:n]
    return np.stack(np.unravel_index(flat, GRID), axis=1).astype(np.int64)


def factor_values(indices: np.ndarray) -> np.ndarray:
    """Grid indices (N, 5) -> factor values (N, 5) float32: shape index, scale, rotation
    (radians), x and y in [0, 1]."""
    shape, scale, rot, x, y = indices.T
    values = [shape, 0.5 + 0.1 * scale, 2 * np.pi * rot / GRID[2], x / (GRID[3] - 1),
              y / (GRID[4] - 1)]  # fmt: skip
    return np.stack(values, axis=1).astype(np.float32)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether (u, v), in the shape's frame (v up, circumradius 1), lies inside it."""
    if shape == 0:  # square, half-side 1/sqrt(2)
        return np.maximum(np.abs(u), np.abs(v)) <= np.float32(1 / math.sqrt(2))
    if shape == 1:  # ellipse, semi-axes 1 and 0.5
        return u * u + 4 * v * v <= 1
    if shape == 2:  # heart (x^2 + y^2 - 1)^3 <= x^2 y^3, moved and scaled to circumradius 1
        hx, hy = 1.25 * u, 1.25 * v + 0.25
        return (hx * hx + hy * hy - 1) ** 3 <= hx * hx * hy**3
    # triangle, equilateral, a vertex up: inside all three edges (inradius 1/2)
    edges = [(0.0, -1.0), (math.sqrt(3) / 2, 0.5), (-math.sqrt(3) / 2, 0.5)]
    return np.all([a * u + b * v <= 0.5 for a, b in edges], axis=0)


def render(values: np.ndarray, size: int) -> np.ndarray:
    """Draw shapes from factor values (N, 5) into uint8 images (N, size, size) of 0 or 255."""
    out = np.zeros((len(values), size, size), np.uint8)
    for start in range(0, len(values), _CHUNK):
        part = values[start : start + _CHUNK]
        _render_into(out[start : start + _CHUNK], part, size)
    return out


def _render_into(out: np.ndarray, values: np.ndarray, size: int) -> None:
    """Each shape tested pixel by pixel in a W x W window around its centre (W covers the
    largest shape), then written into its image of `out` (n, size, size)."""
    rows, cols, u, v = _window_frames(values, size)
    shape = values[:, 0].astype(int)
    inside = np.zeros(u.shape, bool)
    for k in range(len(SHAPES)):
        mine = shape == k
        inside[mine] = _inside(k, u[mine], v[mine])
    n = np.arange(len(values))[:, None, None]
    out[n, rows[:, :, None], cols[:, None, :]] = inside * np.uint8(255)


def _window_frames(values: np.ndarray, size: int):
    """Each image's window: its rows and columns (n, W) and the window's pixel centres in the
    shape's own frame, u and v (n, W, W) in units of its circumradius, v up."""
    window = math.ceil(2 * R_MAX * size) + 2
    scale, rot = values[:, 1], values[:, 2].astype(np.float64)
    cx = (R_MAX + values[:, 3] * (1 - 2 * R_MAX)) * size  # centre, in pixels
    cy = (R_MAX + values[:, 4] * (1 - 2 * R_MAX)) * size
    left = np.clip(np.floor(cx - window / 2), 0, size - window).astype(int)  # (n,)
    top = np.clip(np.floor(cy - window / 2), 0, size - window).astype(int)
    cols, rows = left[:, None] + np.arange(window), top[:, None] + np.arange(window)  # (n, W)
    radius = (scale * R_MAX * size)[:, None]
    dx = ((cols + 0.5 - cx[:, None]) / radius)[:, None, :]  # (n, 1, W)
    dy = ((rows + 0.5 - cy[:, None]) / radius)[:, :, None]  # (n, W, 1), downwards
    cos = np.cos(rot).astype(np.float32)[:, None, None]
    sin = np.sin(rot).astype(np.float32)[:, None, None]
    u = (dx * cos - dy * sin).astype(np.float32)  # rotated back by the shape's angle
    v = (-dx * sin - dy * cos).astype(np.float32)
    return rows, cols, u, v


def generate(n: int, seed: int = 0, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, size, size) uint8 and their factor values (n, 5) float32."""
    values = factor_values(factor_indices(n, seed))
    return render(values, size), values


def cache_path(spec: ShapesSpec, data_dir: str | Path | None = None) -> Path:
    folder = Path(data_dir).expanduser() if data_dir is not None else user_cache_dir() / NAME
    return folder / spec.cache_name()


def load_shapes(spec: ShapesSpec | None = None, data_dir: str | Path | None = None) -> ImageData:
    """`shapes` in memory (`spec`: DEFAULT): from the cache (in `data_dir` when given, else the
    user cache), or drawn and cached on first use."""
    spec = spec or DEFAULT
    path = cache_path(spec, data_dir)
    values = factor_values(factor_indices(spec.train + spec.test, spec.seed))
    images = _read_cache(path, spec)
    if images is None:
        log.info("Drawing the %s dataset into %s", NAME, path)
        images = render(values, spec.size)
        _write_cache(path, images)
    return _as_data(spec, images, values, str(path))


def _as_data(spec: ShapesSpec, images: np.ndarray, values: np.ndarray, source: str) -> ImageData:
    import torch  # here, not at the top: `vaelab datasets` lists the datasets without torch

    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, S, S)
    f = torch.from_numpy(values)
    y = f[:, 0].long()
    n = spec.train
    return ImageData(
        name=NAME,
        train_images=x[:n],
        train_labels=y[:n],
        test_images=x[n:],
        test_labels=y[n:],
        source=source,
        split=f"{n} distinct grid points for training, the next {spec.test} for test "
        f"(seed {spec.seed})",
        num_classes=len(SHAPES),
        class_names=SHAPES,
        train_factors=f[:n],
        test_factors=f[n:],
        factor_names=FACTOR_NAMES,
    )


def _digest(packed: np.ndarray) -> str:
    return hashlib.sha256(packed.tobytes()).hexdigest()


def _read_cache(path: Path, spec: ShapesSpec) -> np.ndarray | None:
    """The cached images (N, S, S) if `path` holds exactly what _write_cache wrote."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="numpy") as f:
            meta, packed = f.metadata() or {}, f.get_tensor("images")
        pixels = spec.size * spec.size
        if packed.shape != (spec.train + spec.test, pixels // 8) or packed.dtype != np.uint8:
            problem = f"it holds images packed as {packed.shape}, expected another size"
        elif meta.get("sha256") != _digest(packed):
            problem = "its images do not match their sha256"
        else:
            bits = np.unpackbits(packed, axis=1, count=pixels)
            return (bits * np.uint8(255)).reshape(-1, spec.size, spec.size)
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
    warnings.warn(f"Ignoring the cache {path} ({problem}); drawing the shapes again.", stacklevel=3)
    return None


def _write_cache(path: Path, images: np.ndarray) -> None:
    """Bit-packed images and their sha256, written atomically; a refused write only warns."""
    packed = np.packbits(images.reshape(len(images), -1) > 0, axis=1)  # (N, S*S/8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"images": packed}, metadata={"sha256": _digest(packed)}))
    except OSError as err:
        warnings.warn(f"Could not write the cache {path} ({err}); the next load draws again.",
                      stacklevel=3)  # fmt: skip


def cache_status(data_dir: str | Path | None = None) -> str:
    path = cache_path(DEFAULT, data_dir)
    return f"drawn, cached at {path}" if path.is_file() else f"drawn on first use into {path}"
