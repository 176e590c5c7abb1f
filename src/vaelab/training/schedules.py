"""Schedules that depend only on the step, so a resumed run recomputes them exactly."""

from __future__ import annotations


def kl_warmup(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Linear KL warm-up (Bowman et al. 2016; Sønderby et al. 2016): 0 -> 1 over the epochs."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, step / (warmup_epochs * steps_per_epoch))


def derived_seed(seed: int, *parts: int) -> int:
    """A seed for one purpose and epoch, independent of the others (a 63-bit mix)."""
    h = seed & 0xFFFFFFFFFFFFFFFF
    for p in parts:
        h = (h * 6364136223846793005 + 1442695040888963407 + p) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF
