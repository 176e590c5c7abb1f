"""The pixel-MSE paradox: shifts without wrap-around, erasing the digit's own box, real digits."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from vaelab.errors import VaelabError
from vaelab.theory.pixels import erase, mse_paradox, paradox_figure, pixel_mse, shift

D = 28 * 28


def _canvas(n: int = 1) -> torch.Tensor:
    return torch.zeros(n, 1, 28, 28)


@pytest.fixture
def vertical_bar() -> torch.Tensor:
    """A 1-pixel-wide stroke, rows 4..23 of column 10: a thin '1'."""
    x = _canvas()
    x[0, 0, 4:24, 10] = 1.0
    return x


@pytest.fixture
def horizontal_bar() -> torch.Tensor:
    """A 1-pixel-high stroke, columns 4..23 of row 10."""
    x = _canvas()
    x[0, 0, 10, 4:24] = 1.0
    return x


def test_shift_round_trip_away_from_the_border():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    back = shift(shift(x, 1, 0), -1, 0)
    assert torch.equal(back[..., :-1], x[..., :-1])
    assert bool((back[..., -1] == 0).all())
    back = shift(shift(x, 0, -2), 0, 2)
    assert torch.equal(back[..., 2:, :], x[..., 2:, :])


def test_shift_moves_right_and_down_and_never_wraps():
    x = _canvas()
    x[0, 0, 5, 27] = 1.0  # on the right border
    x[0, 0, 27, 3] = 0.5  # on the bottom border
    y = shift(x, 1, 0)
    assert float(y.sum()) == 0.5 and y[0, 0, 27, 4] == 0.5  # the right one left the image
    y = shift(x, 0, 1)
    assert float(y.sum()) == 1.0 and y[0, 0, 6, 27] == 1.0
    assert float(shift(x, -28, 0).abs().sum()) == 0.0
    assert float(shift(x, 0, 0).sub(x).abs().sum()) == 0.0


def test_erase_takes_the_end_of_each_digits_own_box():
    x = _canvas(3)
    x[0, 0, 8:16, 5:11] = 1.0  # an 8 x 6 block
    x[1, 0, 2:22, 14:16] = 0.5  # a 20 x 2 bar elsewhere; image 2 is blank
    bottom = erase(x, 0.25, "bottom")
    assert torch.equal(bottom[0, 0, 8:14], x[0, 0, 8:14])
    assert float(bottom[0, 0, 14:16].abs().sum()) == 0.0  # 2 of 8 rows
    assert torch.equal(bottom[1, 0, 2:17], x[1, 0, 2:17])
    assert float(bottom[1, 0, 17:22].abs().sum()) == 0.0  # 5 of 20 rows
    assert torch.equal(bottom[2], x[2])
    assert float(erase(x, 0.25, "top")[0, 0, 8:10].abs().sum()) == 0.0
    left = erase(x, 0.25, "left")[0, 0]  # round(1.5) = 2 of 6 columns
    assert float(left[:, 5:7].abs().sum()) == 0.0 and torch.equal(left[:, 7:], x[0, 0, :, 7:])
    assert float(erase(x, 0.25, "right")[0, 0, :, 9:11].abs().sum()) == 0.0
    assert torch.equal(erase(x, 0.0), x)
    assert float(erase(x, 1.0).abs().sum()) == 0.0
    assert torch.equal(x[0, 0, 8:16, 5:11], torch.ones(8, 6))  # the input is untouched


def test_pixel_mse_per_image():
    a, b = torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    b[1, 0, 0, 0] = 2.0
    torch.testing.assert_close(pixel_mse(a, b), torch.tensor([0.0, 1.0]))


def test_paradox_holds_on_a_thin_vertical_stroke(vertical_bar):
    r = mse_paradox(vertical_bar, shift_px=1, erase_fraction=0.25)
    # the shift costs both edges of every row (40 pixels); erasing costs 5 rows of one pixel
    torch.testing.assert_close(r["mse_shifted"], torch.tensor([40 / D]))
    torch.testing.assert_close(r["mse_erased"], torch.tensor([5 / D]))
    assert r["fraction"] == 1.0 and r["examples"] == [0]


def test_paradox_holds_on_a_ring():
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    radius = ((yy - 13.5) ** 2 + (xx - 13.5) ** 2).sqrt()
    ring = ((radius - 8).abs() < 1.0).float()[None, None]
    r = mse_paradox(ring, shift_px=1, erase_fraction=0.25)
    assert r["fraction"] == 1.0


def test_paradox_fails_where_it_should(horizontal_bar):
    # a horizontal stroke barely changes under a horizontal shift (2 pixels), while erasing
    # its bottom quarter (at least one row) erases it whole
    r = mse_paradox(horizontal_bar, shift_px=1, erase_fraction=0.25)
    torch.testing.assert_close(r["mse_shifted"], torch.tensor([2 / D]))
    torch.testing.assert_close(r["mse_erased"], torch.tensor([20 / D]))
    assert r["fraction"] == 0.0 and r["examples"] == []


def test_paradox_on_real_digits(mnist_sample):
    x = mnist_sample.test_images[:200].float() / 255
    r = mse_paradox(x)
    print(f"pixel-MSE paradox on 200 mnist-sample test digits: {r['fraction']:.3f}")
    assert 0.3 < r["fraction"] < 0.98
    assert len(r["examples"]) == 4 and all(bool(r["holds"][i]) for i in r["examples"])
    assert r["mse_shifted"].shape == r["mse_erased"].shape == (200,)


def test_bad_inputs_raise():
    x = _canvas()
    with pytest.raises(VaelabError, match="N, C, H, W"):
        shift(torch.zeros(28, 28), 1, 0)
    with pytest.raises(VaelabError, match="fraction"):
        erase(x, 1.5)
    with pytest.raises(VaelabError, match="region"):
        erase(x, 0.25, "middle")
    with pytest.raises(VaelabError, match="255"):
        pixel_mse(x.to(torch.uint8), x.to(torch.uint8))


def test_paradox_figure(vertical_bar):
    x = torch.cat([vertical_bar, vertical_bar.transpose(-1, -2)])
    r = mse_paradox(x)
    fig = paradox_figure(x, r["shifted"], r["erased"], r["mse_shifted"], r["mse_erased"])
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert "MSE" in fig.axes[1].get_title() and "MSE" in fig.axes[2].get_title()
    with pytest.raises(VaelabError, match="one per original"):
        paradox_figure(x, r["shifted"][:1], r["erased"], r["mse_shifted"], r["mse_erased"])
