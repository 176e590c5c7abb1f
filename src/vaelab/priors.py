"""Priors p(z): one abstraction for every model that has one.

A prior samples (`sample`), has a log density where one exists in closed form (`log_prob`,
over the last dim), gives the KL from a posterior (`kl`: closed form where one exists, else the
one-sample estimate log q(z|x) - log p(z) at the z the loss decodes), and the per-dimension
marginal densities that per-dimension diagnostics compare a posterior with (`kl_per_dim`, which
says what it measured against). A prior made of `parts` labelled parts (the mixture's
components, the swiss roll's stretches) draws row i from part y[i] when labels are given: the
label-aware prior of Makhzani et al. (2015, Section 2.3).

    normal      N(0, I)
    vamp        the VampPrior (Tomczak & Welling 2018): 1/K sum_k q(z|u_k) at K learned
                pseudo-inputs u_k
    mixture     2-D Gaussians on a circle, one per part (Makhzani et al. Figures 2 and 4)
    swiss-roll  a 2-D swiss roll (no density in closed form: samples only)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.distributions import (
    LOG_2PI,
    DiagonalGaussian,
    fast_logsumexp,
    gaussian_log_prob,
    standard_normal_log_prob,
)
from vaelab.errors import VaelabError


class Prior(nn.Module):
    """p(z) on R^dim with `parts` labelled parts (1 for a prior without them)."""

    name: ClassVar[str] = ""
    has_density: ClassVar[bool] = True  # False: log_prob and kl are not available

    def __init__(self, dim: int, parts: int = 1):
        super().__init__()
        self.dim, self.parts = dim, parts

    def describe(self) -> str:
        return self.name

    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """z (n, dim); row i from part y[i], or from a uniformly drawn part when y is None.
        On y's device when y is given, else on `device` (the generator must live there)."""
        device = y.device if y is not None else (device or self.device())
        if y is None:
            y = torch.randint(self.parts, (n,), generator=generator, device=device)
        return self.sample_parts(y, generator)

    def device(self) -> torch.device:
        tensor = next(iter([*self.parameters(), *self.buffers()]), None)
        return torch.device("cpu") if tensor is None else tensor.device

    def sample_parts(self, y: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def log_prob(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(z) (...,) of z (..., dim); with y, log p(z | part y) (y shaped like z[..., 0])."""
        raise VaelabError(f"the {self.describe()} prior has no density in closed form")

    def marginal_log_prob(self, z: Tensor) -> Tensor:
        """log p(z_d) of each dimension's marginal (..., dim)."""
        raise VaelabError(f"the {self.describe()} prior has no marginal densities")

    def kl(self, q, z: Tensor, y: Tensor | None = None, log_q: Tensor | None = None) -> Tensor:
        """KL(q(z|x) || p(z)) per image (B,): the one-sample estimate at z ~ q (B, dim).
        `log_q`: log q(z|x) at z (B,) where the caller has it (a flow posterior's density is
        known only at the samples it drew), else q.log_prob(z)."""
        log_q = q.log_prob(z) if log_q is None else log_q
        return log_q - self.log_prob(z, y)

    def frozen(self) -> Prior:
        """The same prior with whatever it computes from its parameters computed once (for
        many evaluations of log_prob under no_grad); itself where there is nothing to cache."""
        return self

    def kl_per_dim(self, q, generator: torch.Generator | None = None) -> tuple[Tensor, str]:
        """Per image and dimension, KL(q(z_d|x) || p(z_d)) against the prior's marginal: the
        one-sample estimate log q(z_d|x) - log p(z_d) (B, dim), and what it is."""
        z = q.sample((), generator)
        est = q.log_prob_dims(z) - self.marginal_log_prob(z)
        what = f"KL(q(z_d|x) || p(z_d)), p(z_d) the marginal of the prior ({self.describe()})"
        return est, what + ", a one-sample estimate per image"


class StandardNormal(Prior):
    name = "normal"

    def describe(self) -> str:
        return "N(0, I)"

    def sample_parts(self, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(len(y), self.dim, generator=generator, device=y.device)

    def log_prob(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return standard_normal_log_prob(z)

    def marginal_log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (LOG_2PI + z.pow(2))

    def kl(self, q, z: Tensor, y: Tensor | None = None, log_q: Tensor | None = None) -> Tensor:
        """Closed form for a Gaussian posterior (Kingma & Welling 2014, Appendix B)."""
        if isinstance(q, DiagonalGaussian):
            return q.kl_to_standard_normal()
        return super().kl(q, z, y, log_q)

    def kl_per_dim(self, q, generator: torch.Generator | None = None) -> tuple[Tensor, str]:
        if isinstance(q, DiagonalGaussian):
            return q.kl_per_dim(), "KL(q(z_d|x) || N(0, 1)), closed form"
        return super().kl_per_dim(q, generator)


class DiagonalMixture(Prior):
    """An equal-weight mixture of K diagonal Gaussians, components (K, dim): what the VampPrior
    is once its pseudo-inputs are encoded."""

    name = "diagonal-mixture"

    def __init__(self, components: DiagonalGaussian, what: str = "Gaussian mixture"):
        super().__init__(components.mean.shape[-1], len(components.mean))
        self.components, self.what = components, what

    def describe(self) -> str:
        return self.what

    def sample_parts(self, y: Tensor, generator: torch.Generator | None) -> Tensor:
        c = self.components
        eps = torch.randn(len(y), self.dim, generator=generator, device=y.device)
        return c.mean[y] + c.std[y] * eps

    def log_prob(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.components
        inv_var = torch.exp(-c.logvar)  # (K, D)
        # sum_d (z_d - m_d)^2 / v_d as matmuls: no (..., K, D) tensor; in float32 also under
        # bf16 training (a difference of large terms: bfloat16 would lose nats in it).
        with torch.autocast(z.device.type, enabled=False):
            quad = (
                z.pow(2) @ inv_var.T
                - 2 * z @ (c.mean * inv_var).T
                + (c.mean.pow(2) * inv_var).sum(-1)
            )
        log_n = -0.5 * (self.dim * LOG_2PI + c.logvar.sum(-1) + quad)  # (..., K)
        if y is not None:
            return log_n.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return fast_logsumexp(log_n, dim=-1) - math.log(self.parts)

    def marginal_log_prob(self, z: Tensor) -> Tensor:
        c = self.components  # (K, D): each dimension's marginal is a 1-D mixture
        log_n = gaussian_log_prob(z.unsqueeze(-2), c.mean, c.logvar)  # (..., K, D)
        return torch.logsumexp(log_n, dim=-2) - math.log(self.parts)


class VampPrior(Prior):
    """p(z) = 1/K sum_k q(z|u_k) at K learned pseudo-inputs u_k, kept in [0, 1] by hardtanh;
    `encode` is the model's q(z|x) (its encoder is the model's, not a copy in the prior)."""

    name = "vamp"

    def __init__(self, dim: int, image_shape: tuple[int, ...], k: int, encode: Callable):
        super().__init__(dim, k)
        # The codebase's initialisation: pixels ~ N(0.05, 0.01).
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(k, *image_shape))
        self.encode = encode

    def describe(self) -> str:
        return f"VampPrior (K={self.parts})"

    def frozen(self) -> DiagonalMixture:
        """The K components q(z|u_k) as one (K, D) Gaussian mixture."""
        return DiagonalMixture(self.encode(F.hardtanh(self.pseudo_inputs, 0.0, 1.0)),
                               self.describe())  # fmt: skip

    def sample_parts(self, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.frozen().sample_parts(y, generator)

    def log_prob(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.frozen().log_prob(z, y)

    def marginal_log_prob(self, z: Tensor) -> Tensor:
        return self.frozen().marginal_log_prob(z)


class CircleMixture(Prior):
    """`parts` 2-D Gaussians with means on a circle, stretched along the radius (Makhzani et
    al. Figures 2, 4); component c's axes are its radial and tangential unit vectors."""

    name = "mixture"
    radius, radial_std, tangential_std = 4.0, 1.0, 0.5  # neighbours ~5 tangential stds apart

    def describe(self) -> str:
        return f"mixture of {self.parts} Gaussians on a circle"

    def means(self) -> Tensor:
        """The components' means (parts, 2), on the circle of `radius`."""
        return self.radius * self.axes(torch.arange(self.parts, dtype=torch.float32))[0]

    def axes(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Unit radial and tangential vectors of parts y: ((..., 2), (..., 2))."""
        angle = 2 * math.pi * y / self.parts
        return torch.stack([angle.cos(), angle.sin()], -1), torch.stack(
            [-angle.sin(), angle.cos()], -1
        )

    def sample_parts(self, y: Tensor, generator: torch.Generator | None) -> Tensor:
        eps = torch.randn(len(y), 2, generator=generator, device=y.device)
        outward, along = self.axes(y)
        r = self.radius + self.radial_std * eps[:, :1]
        return r * outward + self.tangential_std * eps[:, 1:] * along

    def component_log_prob(self, z: Tensor, y: Tensor) -> Tensor:
        """log N(z; component y) (...,) for z (..., 2) and y broadcasting like z[..., 0]."""
        outward, along = self.axes(y.to(z.dtype))
        d = z - self.radius * outward
        radial, tangential = (d * outward).sum(-1), (d * along).sum(-1)  # (...,) each
        return normal_log_prob(radial, self.radial_std) + normal_log_prob(
            tangential, self.tangential_std
        )

    def log_prob(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if y is not None:
            return self.component_log_prob(z, y)
        parts = torch.arange(self.parts, device=z.device)  # (P,)
        log_n = self.component_log_prob(z.unsqueeze(-2), parts)  # (..., P)
        return torch.logsumexp(log_n, dim=-1) - math.log(self.parts)

    def marginal_log_prob(self, z: Tensor) -> Tensor:
        # Component c's marginal on axis d is N(m_cd, s_cd^2) with s^2 from its rotated axes.
        outward, along = self.axes(torch.arange(self.parts, dtype=z.dtype, device=z.device))
        mean = self.radius * outward  # (P, 2)
        var = (self.radial_std * outward).pow(2) + (self.tangential_std * along).pow(2)
        log_n = gaussian_log_prob(z.unsqueeze(-2), mean, var.log())  # (..., P, 2)
        return torch.logsumexp(log_n, dim=-2) - math.log(self.parts)


class SwissRoll(Prior):
    """A 2-D swiss roll: t ~ U(0, 1) at radius scale*sqrt(t) and angle turns*2pi*sqrt(t) (sqrt
    spreads the points evenly along the roll), plus a little noise; part c is t in [c, c+1)/parts,
    so the parts follow one another from the centre outwards. Samples only: no density."""

    name = "swiss-roll"
    has_density = False
    scale, turns, noise_std = 4.0, 2.0, 0.1

    def describe(self) -> str:
        return "swiss roll"

    def sample_parts(self, y: Tensor, generator: torch.Generator | None) -> Tensor:
        u = torch.rand(len(y), generator=generator, device=y.device)
        s = ((y + u) / self.parts).sqrt()  # (n,) in [0, 1), increasing with the part
        angle = 2 * math.pi * self.turns * s
        roll = self.scale * s[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
        eps = torch.randn(len(y), 2, generator=generator, device=y.device)
        return roll + self.noise_std * eps


def normal_log_prob(x: Tensor, std: float) -> Tensor:
    """log N(x; 0, std^2), elementwise."""
    return -0.5 * (LOG_2PI + 2 * math.log(std) + (x / std).pow(2))


TWO_D_PRIORS = ("mixture", "swiss-roll")  # defined on R^2 only


def check_prior(name: str, latent_dim: int) -> None:
    """One clear error for a prior that cannot serve this latent size."""
    if name in TWO_D_PRIORS and latent_dim != 2:
        raise VaelabError(
            f"model latent_dim is {latent_dim}: the {name} prior is 2-D, so it needs latent_dim 2"
        )


def make_prior(name: str, dim: int, parts: int = 10) -> Prior:
    """A prior without learned inputs by name (the VampPrior needs its model's encoder)."""
    check_prior(name, dim)
    table = {"normal": StandardNormal, "mixture": CircleMixture, "swiss-roll": SwissRoll}
    if name not in table:
        raise VaelabError(f"unknown prior {name!r}: expected one of {', '.join(table)}")
    return table[name](dim, 1 if name == "normal" else parts)
