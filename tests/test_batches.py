"""Binarization strategies and epoch batching."""

import pytest
import torch

from vaelab.data.batches import (
    BINARIZATIONS,
    binarize,
    binarize_fixed,
    default_binarization,
    epoch_batches,
)
from vaelab.errors import VaelabError

EVERY_VALUE = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)


def test_registry():
    assert BINARIZATIONS == ("dynamic", "static", "none")


@pytest.mark.parametrize("kind", BINARIZATIONS)
def test_output_is_float32_of_same_shape(kind):
    out = binarize(EVERY_VALUE, kind, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == EVERY_VALUE.shape
    assert out.min() >= 0 and out.max() <= 1


def test_none_is_intensity_over_255():
    torch.testing.assert_close(binarize(EVERY_VALUE, "none"), EVERY_VALUE.float() / 255)


def test_static_is_threshold_half():
    expected = (EVERY_VALUE.float() / 255 > 0.5).float()
    assert torch.equal(binarize(EVERY_VALUE, "static"), expected)
    assert binarize(EVERY_VALUE, "static").sum() == 128  # 128..255


def test_dynamic_is_bernoulli_of_intensity():
    images = torch.full((20000,), 51, dtype=torch.uint8)  # p = 0.2
    out = binarize(images, "dynamic", torch.Generator().manual_seed(1))
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert abs(out.mean().item() - 0.2) < 0.015  # 5 standard errors
    ends = binarize(torch.tensor([0, 255], dtype=torch.uint8), "dynamic")
    assert ends.tolist() == [0.0, 1.0]


def test_dynamic_frequency_matches_intensity_over_255_at_every_value():
    draws = 4000
    images = torch.arange(256, dtype=torch.uint8).repeat(draws)
    freq = binarize(images, "dynamic", torch.Generator().manual_seed(2)).view(draws, 256).mean(0)
    p = torch.arange(256) / 255
    se = (p * (1 - p) / draws).sqrt().clamp_min(1e-9)
    assert freq[0] == 0 and freq[255] == 1  # never on at 0, always on at 255
    assert ((freq - p).abs() / se).max() < 5


def test_dynamic_draws_afresh_and_follows_the_generator():
    images = torch.full((1000,), 128, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(3)
    first, second = binarize(images, "dynamic", generator), binarize(images, "dynamic", generator)
    assert not torch.equal(first, second)
    again = binarize(images, "dynamic", torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


def test_binarize_does_not_modify_input():
    images = EVERY_VALUE.clone()
    for kind in BINARIZATIONS:
        binarize(images, kind)
    assert torch.equal(images, EVERY_VALUE)


def test_binarize_fixed_same_seed_same_tensor():
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    a, b = binarize_fixed(images, "dynamic", 7), binarize_fixed(images, "dynamic", 7)
    assert torch.equal(a, b)
    assert not torch.equal(a, binarize_fixed(images, "dynamic", 8))
    assert torch.equal(binarize_fixed(images, "static", 7), binarize(images, "static"))
    assert torch.equal(binarize_fixed(images, "none", 7), binarize(images, "none"))


def test_unknown_kind_and_wrong_dtype():
    with pytest.raises(VaelabError, match="'grey'.*dynamic"):
        binarize(EVERY_VALUE, "grey")
    with pytest.raises(VaelabError, match="uint8"):
        binarize(EVERY_VALUE.float(), "none")


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "sizes"),
    [
        (10, 4, False, [4, 4, 2]),
        (10, 4, True, [4, 4]),
        (8, 4, True, [4, 4]),
        (3, 10, False, [3]),
        (3, 10, True, []),
        (0, 4, False, []),
    ],
)
def test_epoch_batches_sizes(n, batch_size, drop_last, sizes):
    batches = epoch_batches(n, batch_size, torch.Generator().manual_seed(0), drop_last)
    assert [len(b) for b in batches] == sizes


def test_epoch_batches_is_a_seeded_permutation():
    batches = epoch_batches(100, 32, torch.Generator().manual_seed(5))
    indices = torch.cat(batches)
    assert indices.dtype == torch.int64
    assert sorted(indices.tolist()) == list(range(100))
    assert not torch.equal(indices, torch.arange(100))
    again = torch.cat(epoch_batches(100, 32, torch.Generator().manual_seed(5)))
    assert torch.equal(indices, again)


def test_epoch_batches_rejects_bad_sizes():
    with pytest.raises(VaelabError, match="batch_size=0"):
        epoch_batches(10, 0, torch.Generator())


def test_default_binarization():
    assert default_binarization("bernoulli") == "dynamic"
    assert default_binarization("gaussian") == "none"
    assert default_binarization("continuous_bernoulli") == "none"
