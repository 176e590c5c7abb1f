"""Figures: one axes per image figure, tiled array sizes, quantile grid values and order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from scipy.stats import norm

from vaelab.errors import VaelabError
from vaelab.viz import (
    image_grid,
    latent_scatter_figure,
    loss_curves_figure,
    manifold_figure,
    normal_quantile_grid,
    reconstructions_figure,
    save_figure,
    tile_images,
)


def _image_shape(fig: Figure) -> tuple[int, ...]:
    return fig.axes[0].images[0].get_array().shape


@pytest.fixture
def gray() -> torch.Tensor:
    return torch.rand(13, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_image_grid_tiles_into_one_image(gray):
    fig = image_grid(gray, nrow=5, title="samples")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1 and len(fig.axes[0].images) == 1
    # 3 rows x 5 columns of 28 px cells with 1-px borders between them
    assert _image_shape(fig) == (3 * 29 - 1, 5 * 29 - 1)
    assert fig.axes[0].images[0].get_cmap().name == "gray"
    assert fig.axes[0].get_xticks().size == 0


def test_image_grid_colour_and_numpy():
    images = np.random.default_rng(0).random((4, 3, 8, 6)).astype(np.float32)
    fig = image_grid(images, nrow=4)
    assert _image_shape(fig) == (8, 4 * 7 - 1, 3)


def test_tile_images_places_cells_and_white_borders():
    images = torch.zeros(3, 1, 2, 2)
    images[1] = 0.5
    tiled = tile_images(images, ncol=2)
    assert tiled.shape == (5, 5)
    assert np.all(tiled[:2, :2] == 0) and np.all(tiled[:2, 3:] == 0.5)
    assert np.all(tiled[2, :] == 1) and np.all(tiled[3:, 3:] == 1)  # border and blank cell


def test_uint8_images_are_scaled():
    images = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    assert np.all(tile_images(images, ncol=1) == 1.0)


def test_bad_image_shape_is_one_clear_error():
    with pytest.raises(VaelabError, match=r"\[N, C, H, W\]"):
        image_grid(torch.rand(4, 2, 8, 8), nrow=2)


def test_reconstructions_alternate_rows():
    orig = torch.zeros(20, 1, 28, 28)
    recon = torch.ones(20, 1, 28, 28)
    fig = reconstructions_figure(orig, recon, title="pairs")
    assert len(fig.axes) == 1
    tiled = fig.axes[0].images[0].get_array()
    assert tiled.shape == (4 * 29 - 1, 10 * 29 - 1)
    assert np.all(tiled[:28, :28] == 0) and np.all(tiled[29:57, :28] == 1)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["original", "reconstruction"] * 2


def test_reconstructions_shape_mismatch():
    with pytest.raises(VaelabError, match="same shape"):
        reconstructions_figure(torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4))


HISTORY = [
    {
        "epoch": e,
        "step": 70 * e,
        "time": 1.5 * e,
        "train/loss": 160.0 - e,
        "test/loss": 150.0 - e,
        "train/recon": 130.0 - e,
        "train/kl": 20.0 + e,
        "test/recon": 125.0 - e,
        "test/kl": 21.0 + e,
    }
    for e in (1, 2, 3)
]


def test_loss_curves_styles_and_colours():
    fig = loss_curves_figure(HISTORY)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {
        "train/loss",
        "test/loss",
        "train/recon",
        "train/kl",
        "test/recon",
        "test/kl",
    }
    assert lines["train/loss"].get_linestyle() == "-"
    assert lines["test/loss"].get_linestyle() == "--"
    assert lines["train/kl"].get_color() == lines["test/kl"].get_color()
    assert lines["train/kl"].get_color() != lines["train/loss"].get_color()
    assert list(lines["test/loss"].get_xdata()) == [1, 2, 3]
    assert ax.get_ylabel() == "nats per image" and ax.get_xlabel() == "epoch"


def test_loss_curves_given_keys_and_gaps():
    history = [*HISTORY, {"epoch": 4, "train/loss": 150.0}]  # no test loss in epoch 4
    fig = loss_curves_figure(history, keys=["train/loss", "test/loss"])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["train/loss"].get_xdata()) == [1, 2, 3, 4]
    assert list(lines["test/loss"].get_xdata()) == [1, 2, 3]
    with pytest.raises(VaelabError, match="empty"):
        loss_curves_figure([])
    with pytest.raises(VaelabError, match="'nope'"):
        loss_curves_figure(HISTORY, keys=["nope"])


def _means(n: int, d: int) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, d))


def test_latent_scatter_2d_with_ten_classes():
    labels = np.arange(200) % 10
    fig = latent_scatter_figure(torch.tensor(_means(200, 2)), labels, [f"c{i}" for i in range(10)])
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z2")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"c{i}" for i in range(10)]
    assert len(ax.collections) == 10


def test_latent_scatter_pca_for_many_dims():
    means = _means(300, 5)
    means[:, 3] *= 10  # the first principal component is mostly z4
    fig = latent_scatter_figure(means, torch.arange(300) % 3, title="VAE")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1") and ax.get_ylabel().startswith("PC2")
    assert "PCA" in ax.get_title()
    xy = np.concatenate([c.get_offsets() for c in ax.collections])
    assert xy.shape == (300, 2) and xy[:, 0].var() > 10 * xy[:, 1].var()


def test_latent_scatter_without_labels_and_1d():
    fig = latent_scatter_figure(_means(50, 2))
    assert len(fig.axes) == 1 and fig.axes[0].get_legend() is None
    hist = latent_scatter_figure(_means(50, 1))
    assert len(hist.axes) == 1 and hist.axes[0].get_xlabel() == "z1"
    strip = latent_scatter_figure(_means(50, 1), np.arange(50) % 4)
    assert [t.get_text() for t in strip.axes[0].get_yticklabels()] == ["0", "1", "2", "3"]


def test_latent_scatter_continuous_labels_get_colorbar():
    fig = latent_scatter_figure(_means(40, 2), np.linspace(0, 1, 40))
    assert len(fig.axes) == 2  # the plot and its colorbar


def test_latent_scatter_label_count_mismatch():
    with pytest.raises(VaelabError, match="labels"):
        latent_scatter_figure(_means(10, 2), np.arange(9))


def test_normal_quantile_grid_values_and_order():
    n = 7
    grid = normal_quantile_grid(n, 0.05, 0.95)
    q = norm.ppf(np.linspace(0.05, 0.95, n))
    assert grid.shape == (n * n, 2) and grid.dtype == torch.float32
    rows = grid.numpy().reshape(n, n, 2)  # [row, column, (z1, z2)]
    np.testing.assert_allclose(rows[0, :, 0], q, atol=1e-6)  # z1 increases left to right
    np.testing.assert_allclose(rows[:, 0, 1], q[::-1], atol=1e-6)  # z2 decreases downwards
    assert np.all(rows[:, :, 0] == rows[:1, :, 0])  # every row has the same z1 values
    assert np.all(rows[:, :, 1] == rows[:, :1, 1])  # every column has the same z2 values


def test_manifold_figure_ticks_from_grid():
    n = 6
    grid = normal_quantile_grid(n)
    fig = manifold_figure(torch.rand(n * n, 1, 10, 10), n, grid)
    (ax,) = fig.axes
    assert _image_shape(fig) == (n * 10, n * 10)  # no borders inside the manifold
    xt = [float(t.get_text()) for t in ax.get_xticklabels()]
    yt = [float(t.get_text()) for t in ax.get_yticklabels()]
    assert xt[0] == pytest.approx(grid[0, 0].item(), abs=0.01) and xt == sorted(xt)
    assert yt[0] == pytest.approx(grid[0, 1].item(), abs=0.01) and yt == sorted(yt, reverse=True)
    with pytest.raises(VaelabError, match="decoded images"):
        manifold_figure(torch.rand(5, 1, 4, 4), n, grid)


def test_save_figure_writes_png_atomically(tmp_path, gray):
    out = save_figure(image_grid(gray, nrow=4), tmp_path / "figs" / "grid.png")
    assert out == tmp_path / "figs" / "grid.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]
