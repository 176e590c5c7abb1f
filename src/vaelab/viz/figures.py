"""Figures of images, latent spaces and training curves.

Every function builds a `matplotlib.figure.Figure` directly (no pyplot), so nothing global is
touched and nothing is shown; `save_figure` writes one as a PNG. Image arguments are torch
tensors or numpy arrays of shape [N, C, H, W] with C in {1, 3}, float in [0, 1] (uint8 in
[0, 255] is accepted too).
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes

ArrayLike = torch.Tensor | np.ndarray

_FILL = 1.0  # value of the blank cells and the 1-pixel lines between cells: white, like the page
_TITLE_INCHES = 0.35
_NOT_PLOTTED = frozenset({"epoch", "step", "time", "wall_time", "lr"})
_SPLITS = {"train": "-", "test": "--", "val": ":", "valid": ":", "validation": ":", "eval": "-."}
_MAX_LEGEND_CLASSES = 20


# ----------------------------------------------------------------------------- images


def _numpy(x: ArrayLike | Sequence) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _as_images(images: ArrayLike, name: str = "images") -> np.ndarray:
    """Images as float32 [N, C, H, W] clipped to [0, 1]; uint8 is scaled by 1/255."""
    arr = _numpy(images)
    if arr.ndim != 4 or arr.shape[0] == 0 or arr.shape[1] not in (1, 3):
        raise VaelabError(
            f"expected {name} of shape [N, C, H, W] with N >= 1 and C in {{1, 3}}, "
            f"got shape {tuple(arr.shape)}"
        )
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    return np.clip(arr.astype(np.float32) / scale, 0.0, 1.0)


def _pad_to(arr: np.ndarray, n: int) -> np.ndarray:
    """Append blank images so that `arr` holds `n` of them."""
    blank = np.full((n - len(arr), *arr.shape[1:]), _FILL, np.float32)
    return np.concatenate([arr, blank])


def tile_images(images: ArrayLike, ncol: int, pad: int = 1) -> np.ndarray:
    """Tile images row-major into one array, `ncol` per row, `pad` white pixels between cells.

    Returns [rows*(H+pad)-pad, ncol*(W+pad)-pad] for C=1 and the same with a trailing 3 for C=3.
    """
    arr = _as_images(images)
    n, c, h, w = arr.shape
    ncol = max(1, min(ncol, n))
    rows = math.ceil(n / ncol)
    arr = _pad_to(arr, rows * ncol)
    arr = np.pad(arr, ((0, 0), (0, 0), (0, pad), (0, pad)), constant_values=_FILL)
    grid = arr.reshape(rows, ncol, c, h + pad, w + pad).transpose(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + pad), ncol * (w + pad))
    grid = grid[:, : rows * (h + pad) - pad, : ncol * (w + pad) - pad]  # no border at the edges
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def _image_figure(
    tiled: np.ndarray,
    cells: tuple[int, int],
    cell_inches: float,
    title: str | None,
    margins: tuple[float, float] = (0.0, 0.0),
) -> tuple[Figure, Axes]:
    """A figure holding one axes that shows `tiled` at `cell_inches` per cell.

    `cells` is (rows, cols); `margins` is (left, bottom) room in inches for tick labels.
    """
    rows, cols = cells
    left, bottom = margins
    img_w, img_h = cols * cell_inches, rows * cell_inches
    top = _TITLE_INCHES if title else 0.0
    fig_w = max(img_w + left, 0.075 * len(title or "") + 0.3)
    fig_h = img_h + bottom + top
    x0 = left + (fig_w - img_w - left) / 2
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((x0 / fig_w, bottom / fig_h, img_w / fig_w, img_h / fig_h))
    ax.imshow(tiled, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig, ax


def image_grid(
    images: ArrayLike, nrow: int, title: str | None = None, cell_inches: float = 0.45
) -> Figure:
    """One tiled image of `images`, `nrow` images per row (as torchvision's `make_grid`).

    The figure has one axes and one image; C=1 is drawn with the gray colormap.
    """
    tiled = tile_images(images, nrow)
    n = len(images)
    ncol = max(1, min(nrow, n))
    return _image_figure(tiled, (math.ceil(n / ncol), ncol), cell_inches, title)[0]


def reconstructions_figure(
    originals: ArrayLike,
    reconstructions: ArrayLike,
    title: str | None = "Reconstructions",
    ncol: int = 10,
    cell_inches: float = 0.45,
) -> Figure:
    """Rows alternate originals and their reconstructions, `ncol` pairs per row, labelled."""
    orig = _as_images(originals, "originals")
    recon = _as_images(reconstructions, "reconstructions")
    if orig.shape != recon.shape:
        raise VaelabError(
            f"originals and reconstructions must have the same shape, "
            f"got {tuple(orig.shape)} and {tuple(recon.shape)}"
        )
    n, c, h, w = orig.shape
    ncol = max(1, min(ncol, n))
    rows = math.ceil(n / ncol)
    pairs = [_pad_to(a, rows * ncol).reshape(rows, ncol, c, h, w) for a in (orig, recon)]
    interleaved = np.stack(pairs, axis=1).reshape(2 * rows * ncol, c, h, w)  # (2R*ncol, C, H, W)
    tiled = tile_images(interleaved, ncol)
    fig, ax = _image_figure(tiled, (2 * rows, ncol), cell_inches, title, margins=(0.95, 0.0))
    centers = [r * (h + 1) + (h - 1) / 2 for r in range(2 * rows)]
    ax.set_yticks(centers, ["original", "reconstruction"] * rows, fontsize=7)
    ax.tick_params(axis="y", length=0)
    return fig


# ----------------------------------------------------------------------------- latent manifold


def normal_quantile_grid(n: int = 20, lo: float = 0.05, hi: float = 0.95) -> torch.Tensor:
    """Latent points [n*n, 2] at Normal(0, 1) quantiles of linspace(lo, hi, n) in each axis.

    As in the TensorFlow 2 CVAE tutorial. Order is row-major as an image reads: row i holds
    z2 = q[n-1-i] (z2 decreases down the rows, so z2 points up) and column j holds z1 = q[j]
    (z1 increases left to right); point i*n + j is (q[j], q[n-1-i]).
    """
    if n < 1 or not 0.0 < lo <= hi < 1.0:
        raise VaelabError(f"expected n >= 1 and 0 < lo <= hi < 1, got n={n}, lo={lo}, hi={hi}")
    p = torch.linspace(lo, hi, n, dtype=torch.float64)
    q = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).icdf(p)
    z1 = q.repeat(n)  # (n*n,): q[0..n-1] in every row
    z2 = q.flip(0).repeat_interleave(n)  # (n*n,): q[n-1] for the first row
    return torch.stack([z1, z2], dim=1).float()


def _tick_positions(n: int, count: int = 5) -> list[int]:
    return sorted({round(i) for i in np.linspace(0, n - 1, min(n, count))})


def manifold_figure(
    decoded: ArrayLike,
    n: int,
    grid: torch.Tensor,
    title: str | None = "Latent manifold",
    cell_inches: float = 0.4,
) -> Figure:
    """Decoded images [n*n, C, H, W], in the order of `normal_quantile_grid`, tiled as one image.

    The z1 / z2 tick labels come from `grid` [n*n, 2] at a few quantile positions.
    """
    images = _as_images(decoded, "decoded")
    z = _numpy(grid).astype(np.float64)
    if len(images) != n * n or z.shape != (n * n, 2):
        raise VaelabError(
            f"expected {n * n} decoded images and a grid of shape ({n * n}, 2), "
            f"got {len(images)} images and a grid of shape {tuple(z.shape)}"
        )
    h, w = images.shape[2:]
    tiled = tile_images(images, n, pad=0)
    fig, ax = _image_figure(tiled, (n, n), cell_inches, title, margins=(0.6, 0.5))
    ticks = _tick_positions(n)
    ax.set_xticks([j * w + (w - 1) / 2 for j in ticks], [f"{z[j, 0]:.2f}" for j in ticks])
    ax.set_yticks([i * h + (h - 1) / 2 for i in ticks], [f"{z[i * n, 1]:.2f}" for i in ticks])
    ax.tick_params(labelsize=7)
    ax.set(xlabel="z1", ylabel="z2")
    return fig


# ----------------------------------------------------------------------------- loss curves


def _split_key(key: str) -> tuple[str, str]:
    """'test/kl' -> ('test', 'kl'); a key without a known split prefix is its own quantity."""
    split, sep, quantity = key.partition("/")
    return (split, quantity) if sep and split in _SPLITS else ("", key)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plottable_keys(history: Sequence[dict]) -> list[str]:
    keys = dict.fromkeys(k for row in history for k, v in row.items() if _is_number(v))
    return [k for k in keys if k.rsplit("/", 1)[-1] not in _NOT_PLOTTED]


def _series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    points = [
        (row.get("epoch", i + 1), row[key])
        for i, row in enumerate(history)
        if _is_number(row.get(key)) and math.isfinite(row[key])
    ]
    return [x for x, _ in points], [y for _, y in points]


def loss_curves_figure(
    history: Sequence[dict],
    keys: Sequence[str] | None = None,
    title: str | None = "Loss curves",
) -> Figure:
    """Per-epoch losses against epoch: train solid, test dashed, one colour per quantity.

    `history` rows look like {"epoch": 1, "train/loss": 160.2, "test/loss": 150.1, ...}; by
    default every numeric key but epoch / step / time / wall_time / lr is plotted.
    """
    if not history:
        raise VaelabError("the training history is empty, so there is no epoch to plot")
    keys = list(keys) if keys is not None else _plottable_keys(history)
    if not keys:
        raise VaelabError("the training history holds no numeric loss to plot")
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    colours: dict[str, str] = {}
    for key in keys:
        xs, ys = _series(history, key)
        if not xs:
            raise VaelabError(f"the training history has no numeric value for key {key!r}")
        split, quantity = _split_key(key)
        colour = colours.setdefault(quantity, f"C{len(colours) % 10}")
        style = _SPLITS.get(split, "-")
        ax.plot(xs, ys, style, color=colour, marker="o" if len(xs) <= 30 else None, ms=3, label=key)
    ax.set(xlabel="epoch", ylabel="nats per image")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------- latent scatter


def _project_2d(z: np.ndarray) -> tuple[np.ndarray, str, str, str]:
    """(xy [N, 2], x label, y label, title note): z itself for D=2, the top-2 PCs for D>2."""
    if z.shape[1] == 2:
        return z, "z1", "z2", ""
    centred = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = np.zeros((len(z), 2))
    xy[:, : min(2, len(vt))] = centred @ vt[:2].T
    share = np.zeros(2)
    share[: min(2, len(s))] = (s**2 / max(float((s**2).sum()), 1e-300))[:2]
    labels = [f"PC{i + 1} ({share[i]:.0%} of variance)" for i in range(2)]
    return xy, labels[0], labels[1], f" (PCA of {z.shape[1]}-d means)"


def _is_discrete(labels: np.ndarray) -> bool:
    integral = np.issubdtype(labels.dtype, np.integer) or np.all(labels == np.round(labels))
    return bool(integral) and len(np.unique(labels)) <= _MAX_LEGEND_CLASSES


def _class_name(label: float, class_names: Sequence[str] | None) -> str:
    k = int(label)
    return class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)


def _scatter_classes(
    ax: Axes, xy: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None
) -> None:
    """One colour per class (tab10 up to 10 classes, else tab20) and a legend."""
    classes = np.unique(labels)
    palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    by_value = classes.min() >= 0 and classes.max() < palette.N  # stable colours across figures
    for i, k in enumerate(classes):
        m = labels == k
        colour = palette(int(k) if by_value else i)
        name = _class_name(k, class_names)
        ax.scatter(*xy[m].T, s=4, color=colour, alpha=0.7, lw=0, rasterized=True, label=name)
    ax.legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _scatter(fig: Figure, ax: Axes, xy: np.ndarray, labels: np.ndarray | None, class_names) -> None:
    if labels is None:
        ax.scatter(*xy.T, s=4, color="C0", alpha=0.6, lw=0, rasterized=True)
    elif _is_discrete(labels):
        _scatter_classes(ax, xy, labels, class_names)
    else:
        points = ax.scatter(*xy.T, c=labels, s=4, cmap="viridis", lw=0, rasterized=True)
        fig.colorbar(points, ax=ax, label="label")


def _one_dim(fig: Figure, ax: Axes, z1: np.ndarray, labels, class_names) -> None:
    """D=1: a histogram of z1 without labels; z1 against the label (jittered) with them."""
    if labels is None:
        ax.hist(z1, bins=50, color="C0")
        ax.set(xlabel="z1", ylabel="count")
        return
    discrete = _is_discrete(labels)
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(z1)) if discrete else 0.0
    _scatter(fig, ax, np.stack([z1, labels + jitter], axis=1), labels, class_names)
    if discrete:
        classes = np.unique(labels)
        ax.set_yticks(classes, [_class_name(k, class_names) for k in classes])
    ax.set(xlabel="z1", ylabel="label")


def latent_scatter_figure(
    means: ArrayLike,
    labels: ArrayLike | Sequence | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "Latent means",
) -> Figure:
    """Posterior means [N, D] in the plane, coloured by label.

    D=2 is drawn as is (axes z1, z2); D>2 is projected onto its top-2 principal components
    (axes PC1, PC2, and the title says so); D=1 is a histogram, or z1 against the jittered
    label when labels are given. Up to 20 integer classes get a legend, other labels a colorbar.
    """
    z = _numpy(means).astype(np.float64)
    if z.ndim != 2 or len(z) == 0 or z.shape[1] == 0:
        raise VaelabError(f"expected latent means of shape [N, D], got shape {tuple(z.shape)}")
    y = None if labels is None else _numpy(labels).reshape(-1)
    if y is not None and len(y) != len(z):
        raise VaelabError(f"expected {len(z)} labels, one per latent mean, got {len(y)}")
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if z.shape[1] == 1:
        _one_dim(fig, ax, z[:, 0], y, class_names)
        ax.set_title(title)
        return fig
    xy, xlabel, ylabel, note = _project_2d(z)
    _scatter(fig, ax, xy, y, class_names)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title + note)
    return fig


# ----------------------------------------------------------------------------- saving


def figure_to_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write the figure as a PNG at `path`, atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, figure_to_png(fig, dpi))
    return path


def heatmap_figure(
    values: ArrayLike, title: str = "", ticks: Sequence[float] | None = None,
    colorbar_label: str = "",
) -> Figure:  # fmt: skip
    """A square grid of numbers [n, n] as a colour map, laid out like manifold_figure
    (row 0 at the top); `ticks` labels the axes with the grid's z values."""
    arr = _numpy(values).astype(float)
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(arr, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    if ticks is not None:
        n = len(ticks)
        pos = _tick_positions(n)
        ax.set_xticks(pos, [f"{ticks[i]:.2f}" for i in pos])
        ax.set_yticks(pos, [f"{ticks[n - 1 - i]:.2f}" for i in pos])
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
    ax.set_title(title, fontsize=10)
    return fig


def codes_over_prior_figure(
    codes: ArrayLike,
    prior_samples: ArrayLike,
    labels: ArrayLike | Sequence | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "Codes over prior samples",
) -> Figure:
    """Prior samples as a grey cloud, the codes on top coloured by label (2-D; D > 2 is
    projected on the top-2 principal components of the codes, prior samples included; D = 1 is
    drawn as a strip along z1)."""
    z, p = _numpy(codes).astype(float), _numpy(prior_samples).astype(float)
    if z.ndim != 2 or p.ndim != 2 or z.shape[1] != p.shape[1] or 0 in (*z.shape, *p.shape):
        raise VaelabError(
            f"expected codes [N, D] and prior samples [M, D] of the same D, got shapes "
            f"{tuple(z.shape)} and {tuple(p.shape)}"
        )
    y = None if labels is None else _numpy(labels).reshape(-1)
    if y is not None and len(y) != len(z):
        raise VaelabError(f"expected {len(z)} labels, one per code, got {len(y)}")
    xlabel, ylabel = "z1", "z2"
    if z.shape[1] == 1:  # a strip: z1 against a jitter that carries no meaning
        jitter = np.random.default_rng(0)
        z = np.hstack([z, jitter.uniform(-1, 1, (len(z), 1))])
        p = np.hstack([p, jitter.uniform(-1, 1, (len(p), 1))])
        ylabel = "(jitter)"
    if z.shape[1] > 2:
        mean = z.mean(0)
        _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
        z, p = (z - mean) @ vt[:2].T, (p - mean) @ vt[:2].T
        xlabel, ylabel = "PC1 of the codes", "PC2 of the codes"
    fig = Figure(figsize=(6.4, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(*p[:, :2].T, s=3, color="0.75", lw=0, rasterized=True, label="prior")
    _scatter(fig, ax, z[:, :2], y, class_names)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- traversals


def latent_traversal_figure(
    decoded: ArrayLike,
    dims: Sequence[int],
    steps: Sequence[float],
    title: str | None = "Latent traversals",
    cell_inches: float = 0.45,
) -> Figure:
    """Decoded images [len(dims) * len(steps), C, H, W], one row per latent dimension: row i
    sweeps z_{dims[i]} over `steps` (the column labels) while the others stay fixed."""
    images = _as_images(decoded, "decoded")
    rows, cols = len(dims), len(steps)
    if rows == 0 or len(images) != rows * cols:
        raise VaelabError(
            f"expected {rows} x {cols} = {rows * cols} decoded images (rows: dimensions, "
            f"columns: steps), got {len(images)}"
        )
    h, w = images.shape[2:]
    tiled = tile_images(images, cols)
    fig, ax = _image_figure(tiled, (rows, cols), cell_inches, title, margins=(0.45, 0.35))
    names = [f"{s:+g}" if s else "0" for s in steps]
    ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in range(cols)], names)
    ax.set_yticks([i * (h + 1) + (h - 1) / 2 for i in range(rows)], [f"z{d + 1}" for d in dims])
    ax.tick_params(labelsize=7, length=0)
    return fig
