"""The pixel-MSE paradox: a digit with a part erased can be "closer" to the original than the
same digit shifted by one pixel, although the shifted digit looks exactly like the original.

Pixel MSE compares images position by position, so moving a thin stroke one pixel sideways
costs its whole edge twice (the ink that left and the ink that arrived), while erasing a part
costs only the ink in that part. This is why a loss on pixels is a poor measure of how alike two
images look, and why an autoencoder trained on it prefers blurry averages.

Images are [N, C, H, W] tensors, float in [0, 1] for the MSE.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor

from vaelab.errors import VaelabError

REGIONS = ("bottom", "top", "left", "right")


def _check_images(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise VaelabError(f"expected {name} as a tensor of shape [N, C, H, W], got {shape}.")


def _slices(offset: int, size: int) -> tuple[slice, slice] | None:
    """(destination, source) slices moving a length-`size` axis by `offset`; None if all leaves."""
    if abs(offset) >= size:
        return None
    if offset >= 0:
        return slice(offset, size), slice(0, size - offset)
    return slice(0, size + offset), slice(-offset, size)


def shift(images: Tensor, dx: int, dy: int) -> Tensor:
    """Move every image dx pixels right and dy pixels down (negative: left / up).

    Pixels moved past the border are dropped and the uncovered ones are 0: no wrap-around.
    """
    _check_images(images)
    out = torch.zeros_like(images)
    cols, rows = _slices(dx, images.shape[-1]), _slices(dy, images.shape[-2])
    if cols is not None and rows is not None:
        out[..., rows[0], cols[0]] = images[..., rows[1], cols[1]]
    return out


def _erase_mask(ink: Tensor, fraction: float, from_end: bool) -> Tensor:
    """(N, L) mask of the first / last `fraction` of each row of `ink`'s span (N, L) of True."""
    n, length = ink.shape
    index = torch.arange(length, device=ink.device).expand(n, length)
    first = ink.float().argmax(1, keepdim=True)
    last = length - 1 - ink.flip(1).float().argmax(1, keepdim=True)
    k = torch.floor(fraction * (last - first + 1) + 0.5).clamp_min(1 if fraction > 0 else 0)
    k = torch.where(ink.any(1, keepdim=True), k, 0)  # a blank image has no box: erase nothing
    if from_end:
        return (index > last - k) & (index <= last)
    return (index >= first) & (index < first + k)


def erase(images: Tensor, fraction: float = 0.25, region: str = "bottom") -> Tensor:
    """Zero out the `region` end of each digit's own bounding box, `fraction` of its extent.

    The bounding box holds every pixel > 0 (in any channel). With region "bottom", the last
    round(fraction * box height) rows of the box (at least one when fraction > 0) are set to 0
    across the whole width; "top", "left" and "right" do the same from the other sides. So
    fraction 0.25 with "bottom" erases the bottom quarter of the digit, whatever its size or
    position; a blank image is left as it is.
    """
    _check_images(images)
    if not 0.0 <= fraction <= 1.0:
        raise VaelabError(f"fraction must lie in [0, 1], got {fraction}.")
    if region not in REGIONS:
        raise VaelabError(f"region must be one of {', '.join(REGIONS)}, got {region!r}.")
    inked = images > 0
    if region in ("bottom", "top"):
        mask = _erase_mask(inked.any(3).any(1), fraction, region == "bottom")[:, None, :, None]
    else:
        mask = _erase_mask(inked.any(2).any(1), fraction, region == "right")[:, None, None, :]
    return images.masked_fill(mask, 0)


def pixel_mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared pixel difference per image: (1 / CHW) sum (a - b)^2, shape [N]."""
    _check_images(a, "a")
    _check_images(b, "b")
    if a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
        raise VaelabError(
            f"expected two float image tensors of the same shape, got {tuple(a.shape)} "
            f"{a.dtype} and {tuple(b.shape)} {b.dtype} (divide uint8 images by 255)."
        )
    return (a - b).pow(2).mean(dim=(1, 2, 3))


def mse_paradox(
    images: Tensor,
    shift_px: int = 1,
    erase_fraction: float = 0.25,
    region: str = "bottom",
    n_examples: int = 4,
) -> dict:
    """Compare each image's MSE after a shift of `shift_px` to the right and after `erase`.

    Returns per-image `mse_shifted` and `mse_erased` [N], `erased_share` [N] (the share of the
    image's squared ink that `erase` removed: sum (x - erased)^2 / sum x^2), `holds` (erased <
    shifted: the paradox), its `fraction` over the images, the `shifted` and `erased` images,
    and `examples`: the indices of up to `n_examples` images where the paradox is most striking
    (it holds although the largest share of the digit was erased).
    """
    shifted = shift(images, shift_px, 0)
    erased = erase(images, erase_fraction, region)
    mse_shifted, mse_erased = pixel_mse(shifted, images), pixel_mse(erased, images)
    holds = mse_erased < mse_shifted
    erased_share = mse_erased / images.pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    order = torch.where(holds, erased_share, -1.0).argsort(descending=True)
    return {
        "mse_shifted": mse_shifted,
        "mse_erased": mse_erased,
        "erased_share": erased_share,
        "holds": holds,
        "fraction": float(holds.float().mean()),
        "examples": order[: min(n_examples, int(holds.sum()))].tolist(),
        "shifted": shifted,
        "erased": erased,
        "shift_px": shift_px,
        "erase_fraction": erase_fraction,
        "region": region,
    }


def _show(ax, image: Tensor, title: str) -> None:
    img = image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize="small")
    ax.set_axis_off()


def paradox_figure(
    original: Tensor, shifted: Tensor, erased: Tensor, mse_shifted: Tensor, mse_erased: Tensor
) -> Figure:
    """One row per example: original, shifted and erased, with each MSE to the original."""
    for name, t in (("original", original), ("shifted", shifted), ("erased", erased)):
        _check_images(t, name)
    k = original.shape[0]
    if not (shifted.shape[0] == erased.shape[0] == len(mse_shifted) == len(mse_erased) == k):
        raise VaelabError(f"expected {k} shifted and erased images and MSEs, one per original.")
    fig = Figure(figsize=(6.0, 2.1 * k), layout="constrained")
    axes = fig.subplots(k, 3, squeeze=False)
    for i in range(k):
        _show(axes[i, 0], original[i], "original")
        _show(axes[i, 1], shifted[i], f"shifted: MSE {float(mse_shifted[i]):.4f}")
        _show(axes[i, 2], erased[i], f"erased: MSE {float(mse_erased[i]):.4f}")
    return fig
