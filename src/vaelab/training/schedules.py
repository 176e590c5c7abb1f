"""Schedules of a run: the KL warm-up, the learning rate's and its decay, and derived seeds.

All but the decay under a time budget depend only on the step or epoch, so a resumed run
recomputes them exactly; that one follows the time spent, which the train state keeps."""

from __future__ import annotations

from typing import Literal, get_args


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


LrSchedule = Literal["constant", "burda"]  # burda: the IWAE paper's 3^i-epoch stages
LR_SCHEDULES = get_args(LrSchedule)


def lr_factor(schedule: LrSchedule, epoch: int) -> float:
    """The learning rate's multiplier in `epoch` (0-based).

    burda: the IWAE paper's schedule (Burda et al. 2016, Sec. 5): stage i = 0..7 lasts 3^i
    epochs at lr * 10^(-i/7), 3,280 epochs in all; a longer run stays in the last stage.
    """
    if schedule == "constant":
        return 1.0
    stage, end = 0, 1
    while epoch >= end and stage < 7:
        stage += 1
        end += 3**stage
    return 10 ** (-stage / 7)


def decay_factor(progress: float, fraction: float) -> float:
    """The learning rate's multiplier at `progress` (0 -> 1) through training when it falls
    linearly to 0 over the last `fraction` of it (1 before; a warmup-stable-decay schedule
    without the warm-up). fraction 0 is no decay."""
    if fraction <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - progress) / fraction))


def training_progress(epoch: float, epochs: int, seconds: float, budget: float | None) -> float:
    """How far (0 -> 1) a run is at `epoch` (0-based; e + 0.5 is the middle of epoch e) after
    `seconds` of training: its share of the epochs, or of the time budget when that is the
    larger (a budgeted run ends with its budget)."""
    progress = epoch / epochs
    return progress if budget is None else max(progress, seconds / budget)
