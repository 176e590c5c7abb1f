"""The two-stochastic-layer VAE of the VampPrior paper (Tomczak & Welling 2018, Section 3).

Generative model p(x|z1, z2) p(z1|z2) p(z2), inference q(z1|x, z2) q(z2|x):

    -ELBO = -E_q[log p(x|z1, z2)] + E_q(z2|x)[KL(q(z1|x, z2) || p(z1|z2))] + KL(q(z2|x) || p(z2))

with one reparameterized draw z2 ~ q(z2|x), z1 ~ q(z1|x, z2) per image; the z1 term is in closed
form given z2, the z2 term in closed form under N(0, I) and at the draw under the VampPrior
p(z2) = 1/K sum_k q(z2|u_k), whose `encode` is this model's q(z2|x). The importance weights
over both layers are log w = log p(x|z1, z2) + log p(z1|z2) + log p(z2) - log q(z1|x, z2) -
log q(z2|x).

Nets, as the paper's codebase lays them out (gated dense by default, `hidden` their widths):
q(z2|x) is the encoder over `hidden`; q(z1|x, z2) joins features of x (an encoder over hidden[:-1]
to hidden[-1] units, computed once per image however many z2 are drawn) with z2, then a layer of
hidden[-1]; p(z1|z2) runs over `hidden`; p(x|z1, z2) is the decoder on [z1, z2]. Every
log-variance lies in [-6, 2], the codebase's hardtanh, so no importance weight's q is narrower
than e^-3.

z2 is the top layer (`latent_dim`): what `encode` returns and the explorer shows;
`decode(z2)` takes z1 at the mean of p(z1|z2) (models/hierarchical.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from vaelab.distributions import DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.models.base import ModelConfig, register
from vaelab.models.hierarchical import HierarchicalVAE, Layer
from vaelab.nets import ACTIVATIONS, build_encoder, vector_net
from vaelab.priors import Prior, StandardNormal, VampPrior

LOGVAR_RANGE = (-6.0, 2.0)  # the codebase's hardtanh on every log-variance


def gaussian(h: Tensor) -> DiagonalGaussian:
    """N(mean, exp(logvar)) from a net's output [..., 2D] = [mean, logvar]."""
    mean, logvar = h.chunk(2, dim=-1)
    return DiagonalGaussian(mean, logvar.clamp(*LOGVAR_RANGE))


@dataclass
class HVAEConfig(ModelConfig):
    latent_dim: int = 40  # z2, the top layer (the codebase's z2_size)
    z1_dim: int = 40  # the bottom layer (z1_size)
    net: Literal["mlp", "gated", "conv"] = "gated"
    hidden: tuple[int, ...] = (300, 300)
    prior: Literal["normal", "vamp"] = "normal"  # p(z2); vamp over `pseudo_inputs` inputs
    pseudo_inputs: int = 500  # K of the VampPrior (the paper's 500)

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.z1_dim > 0, "z1_dim", "a positive integer"),
            (len(self.hidden) > 0, "hidden", "at least one layer size"),
            (self.pseudo_inputs > 0, "pseudo_inputs", "a positive integer"),
            (self.num_classes == 0, "num_classes", "0: the model takes no labels"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"model {name} is {getattr(self, name)!r}: expected {expected}")


@register("hvae")
class HVAE(HierarchicalVAE):
    config_class = HVAEConfig

    def __init__(self, config: HVAEConfig):
        super().__init__(config)
        c, shape, width = config, tuple(config.image_shape), config.hidden[-1]
        self.q_z1_x = nn.Sequential(  # x's features for q(z1|x, z2): (B, width)
            build_encoder(c.net, shape, width, c.hidden[:-1], activation=c.activation),
            ACTIVATIONS[c.activation](),
        )
        self.q_z1_joint = vector_net(c.net, [width + c.latent_dim, width, 2 * c.z1_dim],
                                     c.activation)  # fmt: skip
        self.p_z1_net = vector_net(c.net, [c.latent_dim, *c.hidden, 2 * c.z1_dim], c.activation)

    def build_prior(self) -> Prior:
        c = self.config
        if c.prior == "vamp":
            return VampPrior(c.latent_dim, tuple(c.image_shape), c.pseudo_inputs, self.encode)
        return StandardNormal(c.latent_dim)

    def decoder_in_dim(self) -> int:
        return self.config.z1_dim + self.config.latent_dim  # p(x|z1, z2) reads both

    def latent_dims(self) -> tuple[int, ...]:
        return (self.config.z1_dim, self.config.latent_dim)

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """q(z2|x), the top layer."""
        return gaussian(self.encoder(x))

    def prepare(self, x: Tensor) -> tuple[DiagonalGaussian, Tensor]:
        return self.encode(x), self.q_z1_x(x)

    def q_z1(self, features: Tensor, z2: Tensor) -> DiagonalGaussian:
        """q(z1|x, z2) from x's features (B, H) and z2 (*S, B, D2)."""
        h = torch.cat([features.expand(*z2.shape[:-1], -1), z2], dim=-1)
        return gaussian(self.q_z1_joint(h))

    def infer(self, prepared: tuple[DiagonalGaussian, Tensor], sample_shape: tuple[int, ...] = (),
              generator: torch.Generator | None = None) -> list[Layer]:  # fmt: skip
        q2, features = prepared
        z2 = q2.rsample(sample_shape, generator)  # (*S, B, D2)
        q1 = self.q_z1(features, z2)
        z1 = q1.rsample((), generator)  # (*S, B, D1)
        return [Layer(z1, q1, self.p_z(0, z2)), Layer(z2, q2, None)]

    def p_z(self, i: int, z_above: Tensor) -> DiagonalGaussian:
        return gaussian(self.p_z1_net(z_above))  # p(z1|z2), the only conditional layer

    def p_x(self, zs: list[Tensor]):
        return self.likelihood(self.decoder(torch.cat(zs, dim=-1)))  # p(x|z1, z2)
