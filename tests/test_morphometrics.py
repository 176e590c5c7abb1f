"""Morpho-MNIST's measures on synthetic strokes whose thickness, slant and size are known."""

import math

import numpy as np
import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.evaluation.morphometrics import MEASURES, measure, zhang_suen

S = 28
CENTRE = S / 2
SUB = 8  # sub-pixels per pixel side: strokes are drawn with their area coverage, as a scan


def grid():
    """Sub-pixel centres (S * SUB, S * SUB) relative to the image centre, y downwards."""
    y, x = (np.mgrid[0 : S * SUB, 0 : S * SUB] + 0.5) / SUB
    return x - CENTRE, y - CENTRE


def coverage(inside: np.ndarray) -> np.ndarray:
    """The share of each pixel's sub-pixels inside the stroke: (S, S) gray in [0, 1]."""
    return inside.reshape(S, SUB, S, SUB).mean((1, 3)).astype(np.float32)


def bar(width: int, length: int = 18, shear_deg: float = 0.0) -> np.ndarray:
    """A vertical bar `width` pixels wide (exactly, before shearing), its top moved right by
    tan(shear) per pixel of height: the slant Morpho-MNIST measures."""
    x, y = grid()
    x = x + (width % 2) / 2  # an odd width centred on a pixel, an even one on an edge
    upright = x + math.tan(math.radians(shear_deg)) * y  # undo the shear
    return coverage((np.abs(upright) < width / 2) & (np.abs(y) < length / 2))


def line(width: float, angle_deg: float, length: float = 18) -> np.ndarray:
    x, y = grid()
    a = math.radians(angle_deg)
    along, across = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    return coverage((np.abs(across) < width / 2) & (np.abs(along) < length / 2))


def rectangle(width: int, height: int) -> np.ndarray:
    image = np.zeros((S, S), np.float32)
    top, left = (S - height) // 2, (S - width) // 2
    image[top : top + height, left : left + width] = 1
    return image


def measured(images) -> dict:
    m = measure(torch.tensor(np.stack(images)))
    return {name: getattr(m, name).numpy() for name in MEASURES}


def test_thickness_of_an_upright_bar_is_its_width():
    widths = [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(measured([bar(w) for w in widths])["thickness"], widths, atol=0.05)


@pytest.mark.parametrize("angle", [30, 60, 120])
def test_thickness_of_a_slanted_line_is_close_to_its_width(angle):
    widths = [2, 3, 4, 5]
    got = measured([line(w, angle, length=22) for w in widths])["thickness"]
    # A slanted stroke reads thinner by the definition itself: the nearest background pixel
    # of its staircase edge is nearer than the edge, and the skeleton's branches into the
    # stroke's end corners have a falling distance.
    np.testing.assert_allclose(got, widths, rtol=0.2)
    assert (got < widths).all() and (np.diff(got) > 0).all()


@pytest.mark.parametrize("width", [2, 3])
def test_slant_of_a_sheared_bar_is_the_shear_angle(width):
    angles = [-30, -20, -10, 0, 10, 20, 30]
    got = np.degrees(measured([bar(width, 18, a) for a in angles])["slant"])
    np.testing.assert_allclose(got, angles, atol=1.5)


def test_width_and_height_of_rectangles():
    sizes = [(4, 20), (10, 10), (16, 8), (20, 16)]
    got = measured([rectangle(w, h) for w, h in sizes])
    # 1 % of the mass is left out at each side, and upsampling blurs the edge a little.
    np.testing.assert_allclose(got["width"], [w for w, _ in sizes], atol=0.5)
    np.testing.assert_allclose(got["height"], [h for _, h in sizes], atol=0.5)


def test_the_width_of_a_sheared_bar_is_measured_along_its_slant():
    upright, sheared = measured([bar(4, 18), bar(4, 18, 25)])["width"]
    box = 4 + 18 * math.tan(math.radians(25))  # its upright bounding box: 12.4 pixels
    # Within half a pixel of the upright bar's: the CDF counts each pixel's mass at its
    # centre, which spreads a slanted edge a little (Morpho-MNIST's definition does too).
    assert upright < sheared < upright + 0.5 < box / 2


def test_each_image_is_measured_alone_and_blank_is_nan():
    images = [bar(3), rectangle(10, 6), np.zeros((S, S), np.float32), line(4, 45)]
    images = [np.round(image * 255) / 255 for image in images]  # exactly as uint8 holds them
    together = measured(images)
    for i, image in enumerate(images):
        alone = measured([image])
        for name in MEASURES:
            np.testing.assert_allclose(together[name][i], alone[name][0], equal_nan=True)
    assert all(np.isnan(together[name][2]) for name in MEASURES)
    uint8 = measure(torch.tensor(np.stack(images) * 255).to(torch.uint8)[:, None])
    np.testing.assert_allclose(uint8.as_factors().numpy(), np.stack(list(together.values()), 1),
                               rtol=1e-5, equal_nan=True)  # fmt: skip


def test_the_skeleton_is_one_pixel_wide():
    block = np.zeros((1, 20, 30), bool)
    block[0, 5:15, 3:27] = True  # a 10 x 24 rectangle
    skeleton = zhang_suen(block)[0]
    assert skeleton.sum() > 10 and (skeleton <= block[0]).all()
    assert skeleton[:, 8:22].sum(0).max() == 1  # along the middle: one pixel per column
    thin = np.zeros((1, 9, 9), bool)
    thin[0, 4, 1:8] = True
    assert (zhang_suen(thin) == thin).sum() >= thin.size - 2  # a 1-pixel line stays (ends aside)


def test_refuses_colour_images():
    with pytest.raises(VaelabError, match="grayscale"):
        measure(torch.zeros(2, 3, 28, 28))
