"""Bounds on log p(x), in nats per image: the ELBO and the IWAE-k bounds (Burda et al. 2016).

ELBO = L_1 <= L_k <= L_{k'} <= log p(x) for k <= k' (in expectation); L_k with large k is the
importance-sampled estimate of log p(x). Samples are taken in chunks so memory stays bounded.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from vaelab.errors import VaelabError
from vaelab.models import DensityModel, Model
from vaelab.training.schedules import derived_seed


def density(model: Model) -> DensityModel:
    """`model` as a DensityModel, or one clear error for a model without a likelihood."""
    if not isinstance(model, DensityModel):
        raise VaelabError(f"model {model.name} has no density: no ELBO or importance-sampled bound")
    return model


@torch.no_grad()
def elbo(model: Model, x: Tensor, y: Tensor | None = None,
         generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """Per-image ELBO (B,) with one sample (the model's closed-form KL where it has one,
    whatever the model's beta)."""
    return density(model).elbo(x, y, generator)


@torch.no_grad()
def reconstruction_nll(model: Model, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Per-image -log p(x | z = E_q[z|x]) (B,): the same measure for every model."""
    return -model.decode(model.encode(x, y).mean, y).log_prob(x)


@torch.no_grad()
def iwae_bound(model: Model, x: Tensor, y: Tensor | None = None, k: int = 5000,
               rows: int = 2048, generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """Per-image L_k (B,): the model's log-mean-exp of k importance weights
    (`log_prob_estimate`), in chunks of about `rows` decoder rows."""
    return density(model).log_prob_estimate(x, y, k, rows, generator)


@torch.no_grad()
def per_image(fn, x: Tensor, y: Tensor | None = None, batch_size: int = 100) -> Tensor:
    """A per-image function fn(x, y) -> (B,) over a whole dataset, in batches: (N,)."""
    return torch.cat([fn(x[i : i + batch_size], None if y is None else y[i : i + batch_size])
                      for i in range(0, len(x), batch_size)])  # fmt: skip


def per_image_seeded(fn, x: Tensor, y: Tensor | None, seed: int, batch_size: int = 100,
                     threads: int = 1) -> Tensor:  # fmt: skip
    """fn(x, y, generator) -> (B,) over a whole dataset in batches: (N,). Batch i draws from its
    own generator, seeded from (seed, i), so the result depends on the seed alone: not on the
    number of threads nor on the order in which batches finish.

    threads > 1 runs the batches in that many Python threads, each op on one core (torch's
    intra-op threads set to 1 meanwhile): ops release the GIL, and whole ops side by side beat
    each op split over the cores, whose small elementwise passes scale poorly.
    """
    starts = range(0, len(x), batch_size)

    def run(i: int) -> Tensor:
        gen = torch.Generator(x.device).manual_seed(derived_seed(seed, i))
        with torch.no_grad():  # grad mode is per thread: the pool's threads start with it on
            return fn(x[i : i + batch_size], None if y is None else y[i : i + batch_size], gen)

    if threads <= 1:
        return torch.cat([run(i) for i in starts])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            return torch.cat(list(pool.map(run, starts)))
    finally:
        torch.set_num_threads(before)


def dataset_mean(fn, x: Tensor, y: Tensor | None = None, batch_size: int = 100) -> float:
    """The mean over a dataset of a per-image function fn(x, y) -> (B,)."""
    return per_image(fn, x, y, batch_size).mean().item()


def mean_and_se(values: Tensor) -> tuple[float, float]:
    """The mean over images and its standard error (std / sqrt(N))."""
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()
