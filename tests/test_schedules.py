import pytest

from vaelab.training.schedules import (
    decay_factor,
    derived_seed,
    kl_warmup,
    lr_factor,
    training_progress,
)


def test_burda_schedule_stages():
    # Stage i lasts 3^i epochs at 10^(-i/7): epochs 0 | 1-3 | 4-12 | 13-39 | ... | 1093-3279.
    starts = [0, 1, 4, 13, 40, 121, 364, 1093]
    for i, start in enumerate(starts):
        assert lr_factor("burda", start) == pytest.approx(10 ** (-i / 7))
        if start:
            assert lr_factor("burda", start - 1) == pytest.approx(10 ** (-(i - 1) / 7))
    assert lr_factor("burda", 3279) == lr_factor("burda", 10_000) == pytest.approx(0.1)
    assert lr_factor("constant", 500) == 1.0


def test_kl_warmup_is_linear_in_steps():
    assert kl_warmup(0, 100, 2) == 0.0
    assert kl_warmup(100, 100, 2) == 0.5
    assert kl_warmup(250, 100, 2) == 1.0
    assert kl_warmup(0, 100, 0) == 1.0


def test_derived_seeds_differ_by_purpose_and_epoch():
    seeds = {derived_seed(0, purpose, epoch) for purpose in (0, 1) for epoch in range(50)}
    assert len(seeds) == 100
    assert derived_seed(3, 1, 7) == derived_seed(3, 1, 7)


def test_decay_is_flat_then_linear_to_zero():
    assert [decay_factor(p, 0.25) for p in (0.0, 0.5, 0.75, 0.875, 1.0, 1.2)] == [
        1.0, 1.0, 1.0, 0.5, 0.0, 0.0
    ]  # fmt: skip
    assert decay_factor(0.5, 1.0) == 0.5  # the whole run: linear from the start
    assert decay_factor(0.99, 0.0) == 1.0  # no decay


def test_progress_is_the_larger_share_of_epochs_or_budget():
    assert training_progress(10, 100, 900.0, None) == 0.1
    assert training_progress(10, 100, 900.0, 1800.0) == 0.5
    assert training_progress(90, 100, 900.0, 1800.0) == 0.9
