"""The Wasserstein autoencoder, WAE-MMD (Tolstikhin, Bousquet, Gelly & Schoelkopf 2018).

loss = E c(x, G(z)) + lambda * MMD^2(q(z), p(z))  (their eq. 4 with the MMD penalty of
Algorithm 1), z = f(x): the codes of the whole batch, the aggregate posterior q(z), are pushed
towards the prior N(0, I), not each image's code (unlike the VAE's KL per image), so codes may
stay apart and sharp while decoded prior samples still look like data. The MMD is the unbiased
U-statistic between the batch's codes and as many prior samples, with the inverse multiquadratic
kernel of the paper's Section 4 (models/mmd.py).

The cost c(x, G(z)) is the likelihood head's -log p(x|z) (the Bernoulli's cross-entropy, or the
Gaussian's scaled squared error: the paper's c(x, y) = |x - y|^2 up to scale and a constant).
The encoder is deterministic (the paper's MNIST setting) or, with posterior = "gaussian",
z ~ N(mu(x), sigma^2(x)). WAE bounds no likelihood: it is not a DensityModel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from vaelab.errors import VaelabError
from vaelab.models.base import (
    Batch,
    LossOutput,
    ModelConfig,
    PointOrGaussianModel,
    StepContext,
    register,
)
from vaelab.models.mmd import mmd_unbiased


@dataclass
class WAEConfig(ModelConfig):
    latent_dim: int = 8  # the paper's MNIST code size
    # lambda, the MMD's weight. The paper's 10 weighs a squared-error cost far smaller than a
    # cross-entropy in nats. Measured on mnist-sample (5 epochs, one seed, Bernoulli cost) with
    # evaluation/samples.py's MMD^2: lambda = 10 left the test codes at 0.19 from the prior and
    # decoded prior samples at 0.13 from test digits (a VAE's samples: 0.065); 100 gave 0.008
    # and 0.044; 1000 gave 0.002 and 0.037 for 3 nats more reconstruction cost.
    lam: float = 100.0
    kernel: Literal["imq", "gaussian"] = "imq"
    posterior: Literal["deterministic", "gaussian"] = "deterministic"

    def validate(self) -> None:
        super().validate()
        if not self.lam >= 0:
            raise VaelabError(f"model lam is {self.lam!r}: expected a number >= 0")


@register("wae")
class WAE(PointOrGaussianModel):
    batch_statistic_loss = True  # an MMD / TC over the batch: see models/base.py
    config_class = WAEConfig
    loss_name = "WAE-MMD loss: reconstruction cost + lambda MMD^2 (not a bound)"

    def mmd(self, z: Tensor) -> Tensor:
        """MMD^2 between the codes z (B, D) and B fresh prior samples."""
        return mmd_unbiased(z, self.sample_prior(len(z)), self.config.kernel)

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        z = self.encode(batch.x, batch.y).rsample()  # (B, D)
        recon = -self.decode(z, batch.y).log_prob(batch.x).mean()
        mmd = self.mmd(z)
        loss = recon + self.config.lam * mmd
        metrics = {"loss": loss, "recon": recon, "mmd": mmd}
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})
