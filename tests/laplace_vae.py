"""A model that exists only for the tests: a VAE whose posterior is a factorized Laplace, not a
Gaussian. It lives in this one file plus one registry line (the import in conftest.py), and the
contract suite must carry it through training, eval, the report, sampling and the explorer
without any other change: the proof that the contract, not special cases, serves a new model."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.distributions import Posterior
from vaelab.models import register
from vaelab.models.vae import VAE


class Laplace(Posterior):
    """q(z|x) = prod_d Laplace(z_d; mean_d, b_d), reparameterized by the inverse CDF."""

    def __init__(self, mean: Tensor, log_scale: Tensor):
        self.mean, self.log_scale = mean, log_scale.clamp(-10.0, 5.0)

    def rsample(self, sample_shape=(), generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(sample_shape + self.mean.shape, generator=generator,
                       device=self.mean.device) - 0.5  # fmt: skip
        u = u.clamp(-0.5 + 1e-6, 0.5 - 1e-6)  # (-1/2, 1/2): the log below stays finite
        return self.mean - self.log_scale.exp() * u.sign() * torch.log1p(-2 * u.abs())

    def log_prob_dims(self, z: Tensor) -> Tensor:
        return -math.log(2) - self.log_scale - (z - self.mean).abs() / self.log_scale.exp()

    def log_prob(self, z: Tensor) -> Tensor:
        return self.log_prob_dims(z).sum(-1)


@register("test-laplace-vae")
class LaplaceVAE(VAE):
    loss_name = "negative ELBO (Laplace posterior)"

    def encode(self, x: Tensor, y: Tensor | None = None) -> Laplace:
        mean, log_scale = self.encoder(x, self.condition(y)).chunk(2, dim=-1)
        return Laplace(mean, log_scale)
