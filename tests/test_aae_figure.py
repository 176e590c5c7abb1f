"""codes_over_prior_figure: the prior as a grey cloud under the codes, coloured by label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from vaelab.errors import VaelabError
from vaelab.viz.figures import codes_over_prior_figure, save_figure


def clouds(n: int, m: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), 4 * rng.normal(size=(m, d))


def test_2d_prior_is_grey_and_under_the_codes_coloured_by_class(tmp_path):
    codes, prior = clouds(60, 200, 2)
    labels = np.arange(60) % 3
    fig = codes_over_prior_figure(codes, prior, labels, ["zero", "one", "two"], title="AAE")
    (ax,) = fig.axes
    grey, *classes = ax.collections
    assert len(classes) == 3
    np.testing.assert_allclose(grey.get_offsets(), prior)  # 2-D: drawn as is
    r, g, b, _ = grey.get_facecolor()[0]
    assert r == g == b and r > 0.5  # a light grey
    for k, points in enumerate(classes):
        np.testing.assert_allclose(points.get_offsets(), codes[labels == k])
        assert not np.allclose(points.get_facecolor()[0], to_rgba("0.75"))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["prior", "zero", "one", "two"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("z1", "z2", "AAE")
    assert save_figure(fig, tmp_path / "codes.png").stat().st_size > 0


def test_many_dims_project_codes_and_prior_with_the_codes_pca():
    rng = np.random.default_rng(1)
    scales = np.array([5.0, 0.1, 0.2, 2.0, 0.3])  # the codes vary most along e0, then e3
    codes = rng.normal(size=(400, 5)) * scales
    prior = rng.normal(size=(300, 5))
    fig = codes_over_prior_figure(torch.tensor(codes), torch.tensor(prior))
    (ax,) = fig.axes
    grey, points = ax.collections
    # The top-2 eigenvectors of the codes' covariance, computed another way than the figure's.
    _, vectors = np.linalg.eigh(np.cov(codes.T))
    top = vectors[:, [-1, -2]]  # (5, 2)
    assert abs(top[0, 0]) > 0.99 and abs(top[3, 1]) > 0.99
    mean = codes.mean(0)
    for cloud, data in ((grey, prior), (points, codes)):
        got, expected = cloud.get_offsets(), (data - mean) @ top
        for j in range(2):  # principal axes are defined up to sign
            sign = np.sign(got[:, j] @ expected[:, j])
            np.testing.assert_allclose(sign * got[:, j], expected[:, j], atol=1e-6)
    assert ax.get_xlabel().startswith("PC1") and ax.get_ylabel().startswith("PC2")


def test_one_dim_codes_are_a_strip_and_unlabelled_codes_are_one_colour():
    codes, prior = clouds(30, 50, 1)
    fig = codes_over_prior_figure(codes, prior)
    grey, points = fig.axes[0].collections
    np.testing.assert_allclose(points.get_offsets()[:, 0], codes[:, 0])
    np.testing.assert_allclose(grey.get_offsets()[:, 0], prior[:, 0])


@pytest.mark.parametrize(
    "codes,prior,labels,message",
    [
        (np.zeros((5, 2)), np.zeros((5, 3)), None, "of the same D"),
        (np.zeros(5), np.zeros((5, 1)), None, r"codes \[N, D\]"),
        (np.zeros((5, 2)), np.zeros((0, 2)), None, "got shapes"),
        (np.zeros((5, 2)), np.zeros((8, 2)), np.arange(4), "expected 5 labels"),
    ],
)
def test_mismatched_inputs_are_one_clear_error(codes, prior, labels, message):
    with pytest.raises(VaelabError, match=message):
        codes_over_prior_figure(codes, prior, labels)
