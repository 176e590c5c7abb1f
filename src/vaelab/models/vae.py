"""The variational autoencoder (Kingma & Welling 2014).

loss = -E_q[log p(x|z)] + beta * KL(q(z|x) || p(z)), one reparameterized sample per image.
With beta = 1 the loss is the negative ELBO, an upper bound on -log p(x). Variants override one
hook: beta-VAE `kl_term`, IWAE the bound in `loss`.

The prior p(z) is N(0, I) (closed-form KL) or the VampPrior (Tomczak & Welling 2018): the mean
of the posteriors at K learned pseudo-inputs u_k, p(z) = 1/K sum_k q(z|u_k), where the KL is
estimated at the sample, log q(z|x) - log p(z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.distributions import (
    LOG_2PI,
    DiagonalGaussian,
    fast_logsumexp,
    standard_normal_log_prob,
)
from vaelab.errors import VaelabError
from vaelab.models.base import Batch, LossOutput, Model, ModelConfig, StepContext, register

PRIORS = ("normal", "vamp")


@dataclass
class VAEConfig(ModelConfig):
    beta: float = 1.0  # weight of the KL term; 1 is the ELBO
    prior: str = "normal"  # or "vamp": the VampPrior over `pseudo_inputs` learned inputs
    pseudo_inputs: int = 500  # K of the VampPrior (the paper's 500)

    def validate(self) -> None:
        super().validate()
        if not self.beta >= 0:
            raise VaelabError(f"model beta is {self.beta!r}: expected a number >= 0")
        if self.prior not in PRIORS:
            raise VaelabError(f"model prior is {self.prior!r}: expected one of {', '.join(PRIORS)}")
        if self.pseudo_inputs < 1:
            raise VaelabError(f"model pseudo_inputs is {self.pseudo_inputs}: expected >= 1")
        if self.prior == "vamp" and self.num_classes:
            raise VaelabError(
                "model prior 'vamp' is for unconditional models: the pseudo-inputs carry no label"
            )


@register("vae")
class VAE(Model):
    config_class = VAEConfig
    loss_name = "negative ELBO"

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        if config.prior == "vamp":
            # The codebase's initialisation: pixels ~ N(0.05, 0.01), kept in [0, 1] by hardtanh.
            shape = (config.pseudo_inputs, *config.image_shape)
            self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(shape))

    def prior_components(self) -> DiagonalGaussian | None:
        """The VampPrior's K components q(z|u_k) as one (K, D) Gaussian; None for N(0, I)."""
        if self.config.prior != "vamp":
            return None
        return self.encode(F.hardtanh(self.pseudo_inputs, 0.0, 1.0))

    def prior_log_prob(self, z: Tensor, components: DiagonalGaussian | None = None) -> Tensor:
        """log p(z) over the last dim: z (..., D) -> (...). Pass `components` to reuse them."""
        if self.config.prior != "vamp":
            return standard_normal_log_prob(z)
        c = components if components is not None else self.prior_components()
        inv_var = torch.exp(-c.logvar)  # (K, D)
        # sum_d (z_d - m_d)^2 / v_d as matmuls: no (..., K, D) tensor; in float32 also under
        # bf16 training (a difference of large terms: bfloat16 would lose nats in it).
        with torch.autocast(z.device.type, enabled=False):
            quad = (
                z.pow(2) @ inv_var.T
                - 2 * z @ (c.mean * inv_var).T
                + (c.mean.pow(2) * inv_var).sum(-1)
            )
        log_n = -0.5 * (z.shape[-1] * LOG_2PI + c.logvar.sum(-1) + quad)  # (..., K)
        return fast_logsumexp(log_n, dim=-1) - math.log(len(c.mean))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        c = self.prior_components()
        if c is None:
            return super().sample_prior(n, generator)
        device = c.mean.device
        pick = torch.randint(len(c.mean), (n,), generator=generator, device=device)
        eps = torch.randn(n, c.mean.shape[-1], generator=generator, device=device)
        return c.mean[pick] + c.std[pick] * eps

    def kl_estimate(self, q: DiagonalGaussian, z: Tensor) -> Tensor:
        """KL(q(z|x) || p(z)) per image (B,): closed form under N(0, I); under the VampPrior
        the one-sample estimate log q(z|x) - log p(z) at the z the loss decodes."""
        if self.config.prior != "vamp":
            return q.kl_to_standard_normal()
        return q.log_prob(z) - self.prior_log_prob(z)

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
        kl = self.kl_estimate(q, z)  # (B,)
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
        prior: DiagonalGaussian | None = None,
    ) -> Tensor:
        """log_weights for a posterior q(z|x) (and VampPrior components) already computed."""
        z = q.rsample((k,), generator)  # (K, B, D)
        log_px = self.decode(z, y).log_prob(x)  # (K, B)
        return log_px + kl_weight * (self.prior_log_prob(z, prior) - q.log_prob(z))

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
        q, prior = self.encode(x, y), self.prior_components()
        chunk = max(1, min(k, rows // len(x)))
        parts = [
            torch.logsumexp(
                self.weights_under(q, x, y, min(chunk, k - i), 1.0, generator, prior), 0
            )
            for i in range(0, k, chunk)
        ]  # each (B,): the log-sum of its chunk's weights
        return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)
