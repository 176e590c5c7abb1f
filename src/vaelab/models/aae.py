"""The adversarial autoencoder (Makhzani et al. 2015, "Adversarial Autoencoders").

A deterministic autoencoder whose codes z = f(x) are pushed towards a chosen prior p(z) by a GAN
on the latent space (Section 2). Every batch runs three phases:
  1. reconstruction: encoder and decoder minimise -log p(x|z);
  2. discriminator: D learns to tell prior samples (target 1) from codes (target 0);
  3. generator: the encoder learns to make D take its codes for prior samples.
The encoder is deterministic (z = f(x), the paper's main choice) or, with posterior = "gaussian",
q(z|x) = N(mu(x), diag sigma^2(x)) sampled by reparameterization (Section 2.1's second choice):
the noise smooths the codes' distribution, which a 20-D discriminator otherwise tells from the
prior far above chance. The label-aware variant (Section 2.3, Figure 4) also feeds D the one-hot
label and draws the prior sample for an image of class c from the prior's part c (a mixture
component, a stretch of the swiss roll), so each class settles in its own part of the latent space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models.base import (
    Batch,
    LossOutput,
    ModelConfig,
    Phase,
    PointOrGaussianModel,
    StepContext,
    register,
)
from vaelab.priors import Prior, check_prior, make_prior


@dataclass
class AAEConfig(ModelConfig):
    prior: Literal["normal", "mixture", "swiss-roll"] = "normal"  # any prior that samples
    posterior: Literal["deterministic", "gaussian"] = "deterministic"  # gaussian: z ~ q(z|x)
    label_prior: bool = False  # D sees the one-hot label; class c's prior sample comes from part c
    prior_classes: int = 10  # mixture components / swiss-roll parts (and D's one-hot size)
    disc_hidden: tuple[int, ...] = (256, 256)
    disc_r1: float = 0.0  # gamma of D's R1 gradient penalty on prior samples (0: none)

    def validate(self) -> None:
        super().validate()
        check_prior(self.prior, self.latent_dim)
        if self.prior_classes < 1:
            raise VaelabError(f"model prior_classes is {self.prior_classes}: expected >= 1")
        if self.label_prior and self.prior == "normal":
            raise VaelabError(
                "model label_prior needs a prior with one part per class (mixture or "
                "swiss-roll), but prior is 'normal'"
            )
        if not self.disc_r1 >= 0:
            raise VaelabError(f"model disc_r1 is {self.disc_r1!r}: expected a number >= 0")
        if not all(h > 0 for h in self.disc_hidden):
            raise VaelabError(f"model disc_hidden is {self.disc_hidden!r}: expected positive sizes")


@register("aae")
class AAE(PointOrGaussianModel):
    config_class = AAEConfig
    conditional = False  # encoder and decoder take no label; only the label-aware prior needs y
    loss_name = "reconstruction loss -log p(x|z)"

    def __init__(self, config: AAEConfig):
        super().__init__(config)
        label_dim = config.prior_classes if config.label_prior else 0
        self.discriminator = leaky_mlp([config.latent_dim + label_dim, *config.disc_hidden, 1])

    def build_prior(self) -> Prior:
        return make_prior(self.config.prior, self.config.latent_dim, self.config.prior_classes)

    def codes(self, x: Tensor, y: Tensor | None) -> Tensor:
        """What D compares with prior samples: f(x), or z ~ q(z|x) for the Gaussian posterior
        (samples of the aggregated posterior q(z), the distribution the GAN matches to p(z))."""
        return self.encode(x, y).rsample()

    def phases(self) -> list[Phase]:
        # D at twice the rate of the other two: it must track codes that both of them move, and
        # a stale D points the encoder the wrong way (the two-time-scale rule, Heusel et al.
        # 2017). Measured on mnist-sample (2-D codes, 10-way mixture, Adam 2e-3, 5 seeds): with
        # D and generator at 0.1-0.5 the reconstruction lays the codes out faster than the
        # generator spreads them, and 2-4 components stay empty (D accuracy 0.7-0.9); with the
        # generator fast too (2-3) the codes can collapse onto one component; at (1, 2, 1)
        # every component is filled in 450 steps (D 0.57-0.67) and, label-aware, >= 8 of 10
        # classes reach their own component in 630 steps for 4 seeds of 5 (2 of 5 at 1, 1, 1).
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        return [
            Phase("reconstruction", [*autoencoder, *self.likelihood.parameters()]),
            Phase("discriminator", list(self.discriminator.parameters()), lr_scale=2.0),
            Phase("generator", list(self.encoder.parameters())),
        ]

    def prior_labels(self, y: Tensor | None) -> Tensor | None:
        """The labels that pick the prior's parts: y for the label-aware AAE, else None."""
        if not self.config.label_prior:
            return None
        if y is None:
            raise VaelabError("the label-aware AAE (label_prior) needs class labels")
        return y

    def discriminate(self, z: Tensor, y: Tensor | None) -> Tensor:
        """D's logit [B] that z came from the prior (and, label-aware, from y's part)."""
        if y is not None:
            onehot = F.one_hot(y, self.config.prior_classes).to(z.dtype)
            z = torch.cat([z, onehot], dim=-1)
        return self.discriminator(z).squeeze(-1)

    def adversarial(self, codes: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """D's logits on as many prior samples as codes, and on the codes: ([B], [B])."""
        prior = self.prior.sample(len(codes), y, device=codes.device)
        return self.discriminate(prior, y), self.discriminate(codes, y)

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        y = self.prior_labels(batch.y)
        if phase == "reconstruction":
            z = self.codes(batch.x, batch.y)  # (B, D)
            recon = -self.decode(z, batch.y).log_prob(batch.x).mean()
            return LossOutput(recon, {"loss": recon.detach(), "recon": recon.detach()})
        if phase == "discriminator":
            with torch.no_grad():
                codes = self.codes(batch.x, batch.y)
            real, fake = self.adversarial(codes, y)
            # The GAN discriminator loss (Goodfellow et al. 2014, eq. 1): one BCE per input,
            # mean over the batch of each half, so chance (logit 0) is 2 ln 2.
            loss = bce(real, 1.0) + bce(fake, 0.0)
            metrics = {"disc_loss": loss.detach(), "disc_acc": accuracy(real, fake)}
            if self.config.disc_r1 > 0:
                # R1 (Mescheder et al. 2018): gamma/2 E||grad_z D(z)||^2 on prior samples (a
                # fresh draw: its expectation is the same, and adversarial stays one method).
                prior = self.prior.sample(len(codes), y, device=codes.device).requires_grad_()
                (grad,) = torch.autograd.grad(
                    self.discriminate(prior, y).sum(), prior, create_graph=True
                )
                r1 = grad.pow(2).sum(-1).mean()
                loss = loss + 0.5 * self.config.disc_r1 * r1
                metrics["disc_r1"] = r1.detach()
            return LossOutput(loss, metrics)
        if phase == "generator":
            # Non-saturating generator loss: -log D(f(x)), the encoder as the GAN's generator.
            fake = self.discriminate(self.codes(batch.x, batch.y), y)
            loss = bce(fake, 1.0)
            return LossOutput(loss, {"gen_loss": loss.detach()})
        raise VaelabError(f"model aae has no phase {phase!r}")

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """Reconstruction loss (at the posterior mean) and D's accuracy on this batch's codes vs
        as many prior samples."""
        q = self.encode(batch.x, batch.y)  # once: the mean reconstructs, a sample meets D
        recon = -self.decode(q.mean, batch.y).log_prob(batch.x).mean()
        real, fake = self.adversarial(q.rsample(), self.prior_labels(batch.y))
        return {"loss": recon, "recon": recon, "disc_acc": accuracy(real, fake)}


def leaky_mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with LeakyReLU(0.2) between them. Unlike ReLU it passes a gradient back to z
    everywhere, also far from the prior's samples (measured: label-aware codes reached all 10
    components by step 600 with it, 8 by step 1200 with ReLU)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers[:-1])


def bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def accuracy(real: Tensor, fake: Tensor) -> Tensor:
    """The fraction of the 2B inputs D classifies right (prior: logit > 0, codes: logit < 0)."""
    return torch.cat([real > 0, fake < 0]).float().mean().detach()
