"""The `shapes` dataset: exact geometry of each factor, determinism, the cache, the catalog."""

import math
import warnings

import numpy as np
import pytest

from vaelab.data import describe_datasets, load_dataset, shapes
from vaelab.data.shapes import GRID, R_MAX, SHAPES, ShapesSpec

SIZE = 64
FINE = 256  # the geometry is checked where pixels are small against the shapes
TINY = ShapesSpec(size=SIZE, train=300, test=100, seed=3)


def draw(shape=0, scale=1.0, rotation=0.0, x=0.5, y=0.5, size=SIZE):
    return shapes.render(np.array([[shape, scale, rotation, x, y]], np.float32), size)[0] > 0


def radius(scale=1.0, size=SIZE):
    return scale * R_MAX * size  # circumradius in pixels


@pytest.mark.parametrize(
    ("shape", "area"),
    [(0, 2.0), (1, math.pi * 0.5), (3, 3 * math.sqrt(3) / 4)],  # in units of circumradius^2
)
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_each_shape_covers_its_area(shape, area, scale):
    pixels = draw(shape, scale, size=FINE).sum()
    assert pixels == pytest.approx(area * radius(scale, FINE) ** 2, rel=0.03)


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_rotation_keeps_the_area_and_fits_the_circumcircle(shape):
    areas = [draw(shape, 1.0, r, size=FINE).sum() for r in np.linspace(0, 2 * np.pi, 9)[:-1]]
    assert max(areas) / min(areas) < 1.03
    for rot in (0.0, 0.7):
        rows, cols = np.nonzero(draw(shape, 1.0, rot))
        centre = (R_MAX + 0.5 * (1 - 2 * R_MAX)) * SIZE
        reach = np.hypot(cols + 0.5 - centre, rows + 0.5 - centre).max()
        assert reach <= radius() + 1e-6


def test_a_quarter_turn_swaps_the_ellipse_axes():
    rows, cols = np.nonzero(draw(1, 1.0, 0.0))
    assert np.ptp(cols) > 1.8 * np.ptp(rows)  # semi-axes 1 and 0.5: wide
    rows, cols = np.nonzero(draw(1, 1.0, math.pi / 2))
    assert np.ptp(rows) > 1.8 * np.ptp(cols)  # and tall after 90 degrees


def test_position_moves_the_centre_across_the_frame():
    for x, y in [(0.0, 0.0), (1.0, 0.25), (0.4, 1.0)]:
        rows, cols = np.nonzero(draw(0, 0.5, 0.0, x, y))  # the square is symmetric
        want_x = (R_MAX + x * (1 - 2 * R_MAX)) * SIZE
        want_y = (R_MAX + y * (1 - 2 * R_MAX)) * SIZE
        assert (cols + 0.5).mean() == pytest.approx(want_x, abs=0.5)
        assert (rows + 0.5).mean() == pytest.approx(want_y, abs=0.5)


def test_factors_are_distinct_grid_points_and_deterministic():
    indices = shapes.factor_indices(5000, seed=1)
    assert (indices >= 0).all() and (indices < np.array(GRID)).all()
    assert len(np.unique(indices, axis=0)) == 5000  # drawn without replacement
    assert np.array_equal(indices, shapes.factor_indices(5000, seed=1))
    assert not np.array_equal(indices, shapes.factor_indices(5000, seed=2))
    values = shapes.factor_values(indices)
    np.testing.assert_allclose(np.unique(values[:, 1]), [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], rtol=1e-6)
    assert values[:, 2].min() >= 0 and values[:, 2].max() < 2 * np.pi
    images, again = shapes.generate(50, seed=4)[0], shapes.generate(50, seed=4)[0]
    assert np.array_equal(images, again) and set(np.unique(images)) == {0, 255}


def test_load_draws_once_then_reads_the_cache(tmp_path, monkeypatch):
    data = shapes.load_shapes(TINY, data_dir=tmp_path)
    assert data.image_shape == (1, SIZE, SIZE) and data.num_classes == 4
    assert len(data.train_images) == 300 and len(data.test_images) == 100
    assert data.factor_names == ("shape", "scale", "rotation", "x", "y")
    assert data.train_factors.shape == (300, 5) and data.test_factors.shape == (100, 5)
    assert (data.train_labels == data.train_factors[:, 0].long()).all()
    cached = shapes.cache_path(TINY, tmp_path)
    assert cached.is_file() and cached.stat().st_size < 400 * SIZE * SIZE / 8 + 1000  # bits

    def no_drawing(*args):
        raise AssertionError("drew the shapes although they were cached")

    monkeypatch.setattr(shapes, "render", no_drawing)
    again = shapes.load_shapes(TINY, data_dir=tmp_path)
    assert (again.train_images == data.train_images).all()
    assert (again.test_factors == data.test_factors).all()


def test_a_damaged_cache_is_drawn_again(tmp_path):
    data = shapes.load_shapes(TINY, data_dir=tmp_path)
    path = shapes.cache_path(TINY, tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte among the images
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="sha256"):
        again = shapes.load_shapes(TINY, data_dir=tmp_path)
    assert (again.train_images == data.train_images).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next load is clean
        shapes.load_shapes(TINY, data_dir=tmp_path)


def test_the_catalog_names_and_lists_shapes(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes, "DEFAULT", TINY)
    rows = {row["name"]: row for row in describe_datasets(data_dir=tmp_path)}
    assert rows["shapes"]["status"].startswith("drawn on first use into")
    data = load_dataset("shapes", data_dir=tmp_path)
    assert data.name == "shapes" and data.class_names == SHAPES
    rows = {row["name"]: row for row in describe_datasets(data_dir=tmp_path)}
    assert rows["shapes"]["status"].startswith("drawn, cached at")
