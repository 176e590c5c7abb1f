"""Morphometrics of digit images, as Morpho-MNIST defines them (Castro et al. 2019).

Each image (a float image as its 8-bit rounding) is upsampled 4x for sub-pixel precision
(bicubic; Morpho-MNIST's scikit-image pyramid_expand smooths a little more) and binarised
half-way between its darkest and brightest pixel; then
- thickness: twice the mean Euclidean distance to the background over the skeleton, the
  distance map read along the stroke's midline (Morpho-MNIST's mean thickness);
- slant: the horizontal shear of the image moments, arctan(-u11 / u02), in radians (positive:
  the top leans right);
- width, height: of the bounding parallelogram sheared by that slant, with 1 % of the image's
  mass left out at each side, along x (sheared) and along y.
Lengths are in pixels of the original image. The skeleton is Zhang-Suen thinning (Zhang & Suen
1984) where Morpho-MNIST takes scikit-image's medial axis, whose ridge it approximates.
Everything runs on whole batches but scipy's distance transform, called per image (faster so:
distance_to_background). About 1 s of CPU per 1,000 digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from vaelab.errors import VaelabError

MEASURES = ("thickness", "slant", "width", "height")
SCALE = 4  # upsampling for sub-pixel analysis (Morpho-MNIST's default)
THRESHOLD = 0.5  # relative binarisation threshold
BOUND_FRAC = 0.02  # share of the mass left out of the bounding parallelogram, both sides
_BATCH = 500  # images measured at once: bounds the (n, 4H, 4W) temporaries


@dataclass
class Morphometrics:
    """Per image (N,): stroke thickness, slant (radians), width and height (pixels); NaN for
    an image with no contrast (blank)."""

    thickness: Tensor
    slant: Tensor
    width: Tensor
    height: Tensor

    def as_factors(self) -> Tensor:
        """(N, 4) in the order of MEASURES."""
        return torch.stack([getattr(self, name) for name in MEASURES], dim=1)


def measure(images: Tensor, scale: int = SCALE, batch: int = _BATCH) -> Morphometrics:
    """Morphometrics of images (N, 1, H, W) or (N, H, W), uint8 or float in [0, 1]."""
    x = _as_gray(images)
    parts = [_measure_batch(x[i : i + batch], scale) for i in range(0, len(x), batch)]
    columns = np.concatenate(parts) if parts else np.zeros((0, len(MEASURES)))
    return Morphometrics(*torch.from_numpy(columns.astype(np.float32)).T)


def _as_gray(images: Tensor) -> Tensor:
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise VaelabError(
            f"morphometrics take grayscale images [N, 1, H, W] or [N, H, W], got shape "
            f"{tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        return images.float() / 255
    # Measured as the 8-bit image it would be saved as (Morpho-MNIST measures 8-bit MNIST):
    # a decoder's faint background below half a grey level is no mass.
    return (images.float().clamp(0, 1) * 255).round() / 255


def _measure_batch(x: Tensor, scale: int) -> np.ndarray:
    """(n, H, W) in [0, 1] -> (n, 4) columns as MEASURES."""
    hires = upsample(x, scale)  # (n, sH, sW)
    blank = hires.max((1, 2)) <= hires.min((1, 2))
    shear, y_mid = horizontal_shear(hires)
    width, height = parallelogram_size(hires, shear, y_mid, BOUND_FRAC)
    thickness = mean_thickness(binarise(hires))
    columns = np.stack([thickness, np.arctan(-shear), width, height], axis=1)
    columns[:, [0, 2, 3]] /= scale
    columns[blank] = np.nan
    return columns


def upsample(x: Tensor, scale: int) -> np.ndarray:
    """Bicubic upsampling by an integer factor, clipped to [0, 1]: (n, H, W) -> (n, sH, sW)."""
    if scale == 1:
        return x.numpy()
    up = F.interpolate(x[:, None], scale_factor=scale, mode="bicubic", align_corners=False)
    return up[:, 0].clamp(0, 1).numpy()


def binarise(hires: np.ndarray) -> np.ndarray:
    """Foreground where a pixel is at least THRESHOLD of the way from its image's min to max."""
    lo, hi = hires.min((1, 2), keepdims=True), hires.max((1, 2), keepdims=True)
    return hires >= lo + (hi - lo) * THRESHOLD


def mean_thickness(binary: np.ndarray) -> np.ndarray:
    """2 x the mean distance to the background over each image's skeleton (n,), in the
    pixels of `binary`."""
    image, y, x = np.nonzero(zhang_suen(binary))
    distance = distance_to_background(binary)[image, y, x]
    n = len(binary)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * np.bincount(image, distance, n) / np.bincount(image, minlength=n)


def distance_to_background(binary: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel of (n, H, W) to its image's nearest background pixel,
    the image's edge counted as background. One scipy call per image on the box around its
    foreground with a 1-pixel background border: three times faster than one call on the
    images stacked into a tall one, and the box is a fraction of the image."""
    padded = np.pad(binary, ((0, 0), (1, 1), (1, 1)))
    distance = np.zeros(padded.shape)
    for image, out in zip(padded, distance, strict=True):
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        if len(rows):
            box = np.s_[rows[0] - 1 : rows[-1] + 2, cols[0] - 1 : cols[-1] + 2]
            out[box] = ndimage.distance_transform_edt(image[box])
    return distance[:, 1:-1, 1:-1]


_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))  # P2..P9


def _deletable_table(step: int) -> np.ndarray:
    """Zhang-Suen's deletion rule for each of the 256 neighbourhoods (bool (256,)), bit k of
    the code being neighbour P(k+2) (P2 north, then clockwise to P9 north-west):
    2 <= B <= 6 neighbours, exactly one 0 -> 1 transition around P2..P9, and in step 0
    P2 P4 P6 = P4 P6 P8 = 0, in step 1 P2 P4 P8 = P2 P6 P8 = 0."""
    codes = np.arange(256)
    p = [(codes >> k) & 1 for k in range(8)]  # p[0] is P2, ..., p[7] is P9
    b = sum(p)
    a = sum((p[k] == 0) & (p[(k + 1) % 8] == 1) for k in range(8))
    p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
    if step == 0:
        side = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
    else:
        side = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
    return (b >= 2) & (b <= 6) & (a == 1) & side


_TABLES = (_deletable_table(0), _deletable_table(1))


def zhang_suen(binary: np.ndarray) -> np.ndarray:
    """The one-pixel-wide skeleton of every image of (n, H, W) bool (Zhang & Suen 1984): the
    two sub-steps peel the boundary until nothing changes. Only the foreground pixels are
    visited (a flat index list into the padded stack, shrinking as pixels are deleted): ten
    times faster than passes over whole images, where the strokes cover a fifth of them."""
    n, h, w = binary.shape
    image = np.pad(binary, ((0, 0), (1, 1), (1, 1)))  # a background border: no wrap-around
    flat = image.reshape(-1)  # a view: deletions write through into `image`
    offsets = [dy * (w + 2) + dx for dy, dx in _OFFSETS]
    alive = np.flatnonzero(flat)
    changed = True
    while changed:
        changed = False
        for table in _TABLES:
            code = np.zeros(len(alive), np.uint8)
            for bit, offset in enumerate(offsets):
                code |= flat[alive + offset].view(np.uint8) << bit
            delete = table[code]  # decided on the state before this sub-step, as the rule says
            if delete.any():
                flat[alive[delete]] = False
                alive, changed = alive[~delete], True
    return image[:, 1:-1, 1:-1].copy()


def horizontal_shear(hires: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u11 / u02 of each image's intensity moments (x right, y down) and its centroid's y,
    from the row and column sums (matrix products, no (n, H, W) temporaries)."""
    n, h, w = hires.shape
    x, y = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    rows = hires.sum(2, dtype=np.float64)  # (n, H)
    mass = rows.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = hires.sum(1, dtype=np.float64) @ x / mass
        my = rows @ y / mass
        u11 = (hires.astype(np.float64) @ x) @ y / mass - mx * my
        u02 = rows @ (y * y) / mass - my * my
        return u11 / u02, my


def parallelogram_size(hires: np.ndarray, shear: np.ndarray, y_mid: np.ndarray,
                       frac: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Width along the sheared x axis and height along y, between the frac/2 and 1 - frac/2
    quantiles of each image's mass, in pixels of `hires`."""
    n, h, w = hires.shape
    image, y, x = np.nonzero(hires)  # the pixels with mass: the horizontal CDF's terms
    sheared = x + 0.5 - np.nan_to_num(shear)[image] * (y - y_mid[image])
    # coord < t for integer t exactly when floor(coord) + 1 <= t; bin `w` is never counted.
    bins = np.clip(np.floor(sheared).astype(np.int64) + 1, 0, w)
    index, mass = image * (w + 1) + bins, hires[image, y, x]
    counts = np.bincount(index, weights=mass, minlength=n * (w + 1)).reshape(n, w + 1)
    horizontal = counts[:, :w].cumsum(1)  # (n, W): mass with sheared x < t
    rows = hires.sum(2, dtype=np.float64)  # (n, H)
    vertical = np.pad(rows, ((0, 0), (1, 0)))[:, :h].cumsum(1)  # (n, H): mass with y < t
    total = rows.sum(1, keepdims=True)
    left, right = _quantiles(horizontal, total, frac)
    top, bottom = _quantiles(vertical, total, frac)
    return right - left, bottom - top


def _quantiles(counts: np.ndarray, total: np.ndarray, frac: float) -> list[np.ndarray]:
    """Where each row's mass CDF, counts[t] / total with counts[t] = mass{coord < t} for
    t = 0 .. T-1, crosses frac/2 and 1 - frac/2, linearly interpolated between integer t
    (Morpho-MNIST's CDF)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf = counts / total
    return [_crossing(cdf, q) for q in (frac / 2, 1 - frac / 2)]


def _crossing(cdf: np.ndarray, q: float) -> np.ndarray:
    """The t where each row of the non-decreasing cdf first reaches q, interpolated (n,)."""
    rows = np.arange(len(cdf))
    t = np.minimum((cdf < q).sum(1), cdf.shape[1] - 1)  # first index with cdf >= q
    before = np.where(t > 0, cdf[rows, np.maximum(t - 1, 0)], 0.0)
    step = cdf[rows, t] - before
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(t > 0, t - 1 + (q - before) / step, 0.0)
