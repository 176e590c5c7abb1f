"""Bounds on log p(x), in nats per image: the ELBO and the IWAE-k bounds (Burda et al. 2016).

ELBO = L_1 <= L_k <= L_{k'} <= log p(x) for k <= k' (in expectation); L_k with large k is the
importance-sampled estimate of log p(x). Samples are taken in chunks so memory stays bounded.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.errors import VaelabError
from vaelab.models import Model


@torch.no_grad()
def elbo(model: Model, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Per-image ELBO (B,) with one sample and the analytic KL (whatever the model's beta)."""
    q = model.encode(x, y)
    return model.decode(q.rsample(), y).log_prob(x) - q.kl_to_standard_normal()


@torch.no_grad()
def reconstruction_nll(model: Model, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Per-image -log p(x | z = E_q[z|x]) (B,): the same measure for every model."""
    return -model.decode(model.encode(x, y).mean, y).log_prob(x)


@torch.no_grad()
def iwae_bound(model: Model, x: Tensor, y: Tensor | None = None, k: int = 5000,
               rows: int = 2048, generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """Per-image L_k (B,): the model's log-mean-exp of k importance weights
    (`log_prob_estimate`), in chunks of about `rows` decoder rows."""
    if not hasattr(model, "log_prob_estimate"):
        raise VaelabError(f"model {model.name} has no density: no importance-sampled bound")
    return model.log_prob_estimate(x, y, k, rows, generator)


@torch.no_grad()
def per_image(fn, x: Tensor, y: Tensor | None = None, batch_size: int = 100) -> Tensor:
    """A per-image function fn(x, y) -> (B,) over a whole dataset, in batches: (N,)."""
    return torch.cat([fn(x[i : i + batch_size], None if y is None else y[i : i + batch_size])
                      for i in range(0, len(x), batch_size)])  # fmt: skip


def dataset_mean(fn, x: Tensor, y: Tensor | None = None, batch_size: int = 100) -> float:
    """The mean over a dataset of a per-image function fn(x, y) -> (B,)."""
    return per_image(fn, x, y, batch_size).mean().item()


def mean_and_se(values: Tensor) -> tuple[float, float]:
    """The mean over images and its standard error (std / sqrt(N))."""
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()
