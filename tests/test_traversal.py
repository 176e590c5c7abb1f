"""The run report's latent traversal: one row per dimension, swept around the test codes."""

import numpy as np
import pytest
import torch

from conftest import tiny_config
from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.viz.figures import latent_traversal_figure
from vaelab.viz.run_report import TRAVERSAL_ROWS, TRAVERSAL_STEPS, latent_traversal


def cells(fig, rows: int, cols: int, size: int = 28) -> np.ndarray:
    """The figure's tiled image cut back into its (rows, cols, H, W) cells."""
    tiled = np.asarray(fig.axes[0].images[0].get_array())
    pitch = size + 1  # one white line between cells
    return np.stack([[tiled[r * pitch : r * pitch + size, c * pitch : c * pitch + size]
                      for c in range(cols)] for r in range(rows)])  # fmt: skip


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_every_row_passes_through_the_mean_code(name, digits):
    x, y = digits
    torch.manual_seed(0)
    model = build_model(name, tiny_config(name, latent_dim=3)).eval()
    codes = model.encode(x, y).mean
    fig = latent_traversal(model, codes, y)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["z1", "z2", "z3"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "-3"
    grid = cells(fig, 3, len(TRAVERSAL_STEPS))
    middle = TRAVERSAL_STEPS.index(0.0)
    label = None if y is None else y[:1]
    want = model.decode(codes.mean(0, keepdim=True), label).mean[0, 0].detach().numpy()
    for row in grid:  # step 0: every coordinate at the mean, whichever row
        np.testing.assert_allclose(row[middle], want, atol=1e-6)
    assert not np.allclose(grid[0, 0], grid[0, -1])  # the ends of a sweep differ


def test_a_wide_latent_space_shows_its_most_varied_dimensions(digits):
    x, _ = digits
    model = build_model("vae", tiny_config("vae", latent_dim=40)).eval()
    codes = torch.randn(64, 40) * torch.linspace(0.1, 4, 40)  # dimension 40 varies most
    fig = latent_traversal(model, codes, None)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == TRAVERSAL_ROWS and labels[-1] == "z40" and "z1" not in labels


def test_the_figure_checks_its_grid():
    with pytest.raises(VaelabError, match="2 x 7 = 14"):
        latent_traversal_figure(torch.zeros(13, 1, 28, 28), [0, 1], TRAVERSAL_STEPS)
