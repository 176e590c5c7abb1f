"""Inverse autoregressive flow (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016,
"Improved variational inference with inverse autoregressive flow"), from MADE layers (Germain,
Gregor, Murray & Larochelle 2015).

The encoder gives a Gaussian q(z_0|x) = N(mu, diag sigma_0^2) and a context h; each of T steps
moves the sample (Kingma et al., eq. 10-14):
    [m_t, s_t] = AutoregressiveNN_t(z_{t-1}, h),  sigma_t = sigmoid(s_t)
    z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t
Output d of the autoregressive net depends on h and on the inputs before d in the step's order
only, so dz_t/dz_{t-1} is triangular with diagonal sigma_t, and
    log q(z_T|x) = log q(z_0|x) - sum_t sum_d log sigma_{t,d}.
That density is known at the flow's own samples: evaluating it at another z would mean
inverting the flow, D sequential passes per step, so the bounds use `rsample_with_log_prob`.
Successive steps reverse the order of the dimensions (the paper's permutation), so that every
dimension comes to depend on every other.
"""

from __future__ import annotations

from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.distributions import DiagonalGaussian, Posterior, full_precision
from vaelab.errors import VaelabError

# Kingma et al. (Section 4): s_t starts "sufficiently positive, such as close to +1 or +2", so
# that each step first moves z only slightly (sigmoid(2) = 0.88 keeps 88 % of z_{t-1}).
S_BIAS = 2.0


def made_masks(order: Tensor, hidden: tuple[int, ...]) -> list[Tensor]:
    """The connectivity masks (out, in) of an MLP over D inputs, input i at position order[i]
    in 1..D: hidden unit j of degree m_j in 0..D-1 sees the inputs at positions <= m_j, and
    the output at position d the units of degree < d (Germain et al., eq. 12-13), so output d
    depends on the inputs before d only. Degrees cycle 0, 1, ..., D-1 over a layer's units;
    degree 0 sees no input (only the context h): it is what the first output depends on."""
    dim = len(order)
    degrees = [order] + [torch.arange(size) % dim for size in hidden]
    pairs = zip(degrees[:-1], degrees[1:], strict=True)
    masks = [d_out[:, None] >= d_in[None, :] for d_in, d_out in pairs]  # (out, in) each
    masks.append(order[:, None] > degrees[-1][None, :])
    return [m.to(torch.get_default_dtype()) for m in masks]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight (out, in) is multiplied by a fixed 0/1 mask."""

    def __init__(self, mask: Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask, persistent=False)  # rebuilt from the config

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """AutoregressiveNN: [m, s] = f(z, h), each (..., D), output d a function of h and of the
    inputs before d in `order`. h enters the first layer unmasked (it may inform every output)."""

    def __init__(self, order: Tensor, context: int, hidden: tuple[int, ...]):
        super().__init__()
        masks = made_masks(order, hidden)
        self.layers = nn.ModuleList(MaskedLinear(m) for m in masks[:-1])
        self.out = MaskedLinear(masks[-1].repeat(2, 1))  # m and s: the same mask each
        self.context = nn.Linear(context, hidden[0], bias=False) if context else None
        with torch.no_grad():
            self.out.bias[len(order) :] = S_BIAS

    def forward(self, z: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        a = self.layers[0](z)  # (*S, B, H)
        if self.context is not None:
            a = a + self.context(h)  # h (B, C) -> (B, H): the same for every sample of an image
        for layer in self.layers[1:]:
            a = layer(F.elu(a))
        m, s = self.out(F.elu(a)).chunk(2, dim=-1)
        return m, s


class IAFStep(nn.Module):
    """z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t (Kingma et al., eq. 14), and its log|det|."""

    def __init__(self, order: Tensor, context: int, hidden: tuple[int, ...]):
        super().__init__()
        self.made = MADE(order, context, hidden)

    def forward(self, z: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        """z_t (*S, B, D) and log|det dz_t/dz_{t-1}| = sum_d log sigma_d (*S, B)."""
        m, s = self.made(z, h)
        s = full_precision(s)  # the log-determinant in float32 also under bf16 autocast
        sigma = torch.sigmoid(s)
        return sigma * z + (1 - sigma) * full_precision(m), F.logsigmoid(s).sum(-1)


class InverseAutoregressiveFlow(nn.Module):
    """T IAF steps on R^dim, the order of the dimensions reversed from one step to the next."""

    def __init__(self, dim: int, context: int, hidden: tuple[int, ...], steps: int):
        super().__init__()
        forward, backward = torch.arange(1, dim + 1), torch.arange(dim, 0, -1)
        self.steps = nn.ModuleList(
            IAFStep(backward if t % 2 else forward, context, hidden) for t in range(steps)
        )

    def forward(self, z: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        """z_T (*S, B, D) from z_0, and sum_t log|det dz_t/dz_{t-1}| (*S, B)."""
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for step in self.steps:
            z, step_log_det = step(z, h)
            log_det = log_det + step_log_det
        return z, log_det


class IAFPosterior(Posterior):
    """q(z_T|x): the Gaussian q(z_0|x) pushed through the flow with context h (B, C).

    `mean` is the flow applied to the Gaussian's mean, z_T at eps = 0: deterministic, what
    reconstructions and the explorer show (E[z_T] has no closed form). The log-density is
    available at the posterior's own samples only (`rsample_with_log_prob`)."""

    def __init__(self, base: DiagonalGaussian, context: Tensor | None,
                 flow: InverseAutoregressiveFlow):  # fmt: skip
        self.base, self.context, self.flow = base, context, flow

    @cached_property
    def mean(self) -> Tensor:  # (B, D)
        return self.flow(self.base.mean, self.context)[0]

    def rsample(
        self, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        return self.rsample_with_log_prob(sample_shape, generator)[0]

    def rsample_with_log_prob(
        self, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """z_T (*S, B, D) and log q(z_T|x) = log q(z_0|x) - sum_t log|det dz_t/dz_{t-1}|."""
        z0, log_q0 = self.base.rsample_with_log_prob(sample_shape, generator)
        z, log_det = self.flow(z0, self.context)
        return z, log_q0 - log_det

    def log_prob(self, z: Tensor) -> Tensor:
        raise VaelabError(
            "an IAF posterior has a density only at the samples it draws: use "
            "rsample_with_log_prob (inverting the flow at another z is not implemented)"
        )
