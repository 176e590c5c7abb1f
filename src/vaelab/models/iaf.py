"""The VAE and the IWAE with an inverse autoregressive flow posterior (Kingma et al. 2016).

q(z|x) is the encoder's Gaussian q(z_0|x) moved by T IAF steps (flows.py) that also see a
context h from the encoder: its last layer gives mu, log sigma^2 and h. The bounds take the
log-density at the samples the flow draws (`rsample_with_log_prob`): elsewhere it has no closed
form. For the same reason the KL is the one-sample estimate log q(z|x) - log p(z) under every
prior, and the VampPrior's components are the Gaussian part q(z_0|u_k) at the pseudo-inputs
(the mixture needs the posterior's density at any z): p(z) is still a Gaussian mixture at
learned pseudo-inputs encoded by the model's own encoder.

The latent summary is the variance over the images of the posterior means (the flow at the
Gaussian's mean): the per-dimension KL that the Gaussian VAE reports has no closed form for a
posterior whose dimensions depend on one another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.distributions import DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.flows import IAFPosterior, InverseAutoregressiveFlow
from vaelab.models.base import LatentSummary, register
from vaelab.models.iwae import IWAE, IWAEConfig
from vaelab.models.vae import VAE, VAEConfig
from vaelab.priors import Prior, VampPrior

MEANS_MEASURE = "variance over the images of the posterior means (the IAF at the Gaussian's mean)"


@dataclass
class IAFOptions:
    """The flow's fields, shared by the VAE's and the IWAE's configs."""

    flow_steps: int = 2  # T (0: the Gaussian posterior itself)
    flow_hidden: tuple[int, ...] = (64,)  # hidden units of each step's MADE
    flow_context: int = 16  # size of the context h (0: the steps see z only)

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.flow_steps >= 0, "flow_steps", "an integer >= 0"),
            (bool(self.flow_hidden) and min(self.flow_hidden) > 0, "flow_hidden",
             "one or more positive layer sizes"),
            (self.flow_context >= 0, "flow_context", "an integer >= 0"),
        ]  # fmt: skip
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"model {name} is {getattr(self, name)!r}: expected {expected}")


@dataclass
class VAEIAFConfig(IAFOptions, VAEConfig):
    pass


@dataclass
class IWAEIAFConfig(IAFOptions, IWAEConfig):
    pass


class IAFPosteriorModel:
    """What turns a model of the VAE family into one with an IAF posterior (a mixin placed
    before VAE or IWAE): the encoder's extra outputs, the flow, the prior and the summary."""

    portable_nets = False  # encode runs the flow after the encoder net

    def __init__(self, config: VAEIAFConfig | IWAEIAFConfig):
        super().__init__(config)
        c = config
        self.flow = InverseAutoregressiveFlow(
            c.latent_dim, c.flow_context, tuple(c.flow_hidden), c.flow_steps
        )

    def encoder_out_dim(self) -> int:
        return 2 * self.config.latent_dim + self.config.flow_context  # mu, log sigma^2, h

    def encoder_outputs(self, x: Tensor, y: Tensor | None) -> tuple[DiagonalGaussian, Tensor]:
        """q(z_0|x) and the context h (B, C)."""
        d = self.config.latent_dim
        mean, logvar, h = self.encoder(x, self.condition(y)).split(
            [d, d, self.config.flow_context], dim=-1
        )
        return DiagonalGaussian(mean, logvar), h

    def gaussian_part(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """q(z_0|x): the VampPrior's components at the pseudo-inputs."""
        return self.encoder_outputs(x, y)[0]

    def encode(self, x: Tensor, y: Tensor | None = None) -> IAFPosterior:
        base, h = self.encoder_outputs(x, y)
        return IAFPosterior(base, h if self.config.flow_context else None, self.flow)

    def build_prior(self) -> Prior:
        c = self.config
        if c.prior == "vamp":
            shape = tuple(c.image_shape)
            return VampPrior(c.latent_dim, shape, c.pseudo_inputs, self.gaussian_part)
        return super().build_prior()

    @torch.no_grad()
    def latent_summary(self, x: Tensor, y: Tensor | None = None) -> LatentSummary:
        means = [self.encode(x[i : i + 250], None if y is None else y[i : i + 250]).mean
                 for i in range(0, len(x), 250)]  # fmt: skip
        return LatentSummary(torch.cat(means).var(0), MEANS_MEASURE)


@register("vae-iaf")
class VAEIAF(IAFPosteriorModel, VAE):
    config_class = VAEIAFConfig
    loss_name = "negative ELBO (IAF posterior)"


@register("iwae-iaf")
class IWAEIAF(IAFPosteriorModel, IWAE):
    config_class = IWAEIAFConfig
