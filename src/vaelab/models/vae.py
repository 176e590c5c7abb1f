"""The variational autoencoder (Kingma & Welling 2014).

loss = -E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I)), one reparameterized sample per image.
With beta = 1 the loss is the negative ELBO, an upper bound on -log p(x). Variants override one
hook: beta-VAE `kl_term`, IWAE the bound in `loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.distributions import DiagonalGaussian, standard_normal_log_prob
from vaelab.errors import VaelabError
from vaelab.models.base import Batch, LossOutput, Model, ModelConfig, StepContext, register


@dataclass
class VAEConfig(ModelConfig):
    beta: float = 1.0  # weight of the KL term; 1 is the ELBO

    def validate(self) -> None:
        super().validate()
        if not self.beta >= 0:
            raise VaelabError(f"model beta is {self.beta!r}: expected a number >= 0")


@register("vae")
class VAE(Model):
    config_class = VAEConfig
    loss_name = "negative ELBO"

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        mean, logvar = self.encoder(x, self.condition(y)).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def kl_term(self, kl: Tensor, ctx: StepContext) -> Tensor:
        """The KL part of the loss from per-image KLs (B,); warm-up multiplies the weight."""
        return self.config.beta * ctx.kl_warmup * kl.mean()

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        q = self.encode(batch.x, batch.y)
        z = q.rsample()  # (B, D)
        recon = -self.decode(z, batch.y).log_prob(batch.x)  # (B,)
        kl = q.kl_to_standard_normal()  # (B,)
        loss = recon.mean() + self.kl_term(kl, ctx)
        metrics = {
            "loss": loss,
            "recon": recon.mean(),
            "kl": kl.mean(),
            "neg_elbo": (recon + kl).mean(),
        }
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})

    def log_weights(
        self,
        x: Tensor,
        y: Tensor | None,
        k: int,
        kl_weight: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """log w = log p(x|z) + log p(z) - log q(z|x) for k samples z ~ q(z|x): shape (K, B).

        kl_weight < 1 scales the prior/posterior part (KL warm-up for the IWAE).
        """
        return self.weights_under(self.encode(x, y), x, y, k, kl_weight, generator)

    def weights_under(
        self,
        q: DiagonalGaussian,
        x: Tensor,
        y: Tensor | None,
        k: int,
        kl_weight: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """log_weights for a posterior q(z|x) already computed: (K, B)."""
        z = q.rsample((k,), generator)  # (K, B, D)
        log_px = self.decode(z, y).log_prob(x)  # (K, B)
        return log_px + kl_weight * (standard_normal_log_prob(z) - q.log_prob(z))

    def log_prob_estimate(
        self,
        x: Tensor,
        y: Tensor | None = None,
        k: int = 5000,
        rows: int = 2048,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Per-image L_k (B,), the importance-sampled estimate of log p(x) (Burda et al. 2016:
        a lower bound in expectation that tightens as k grows): the log-mean-exp of k weights.

        x is encoded once; the k samples are drawn in chunks of about `rows` decoder rows
        (chunk * B): small enough for the logits to stay in cache, large enough to batch (2,048
        rows ran 2x faster than 32,768 on a 2-core CPU).
        """
        q = self.encode(x, y)
        chunk = max(1, min(k, rows // len(x)))
        parts = [
            torch.logsumexp(self.weights_under(q, x, y, min(chunk, k - i), 1.0, generator), dim=0)
            for i in range(0, k, chunk)
        ]  # each (B,): the log-sum of its chunk's weights
        return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)
