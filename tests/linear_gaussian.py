"""A two-layer linear-Gaussian model whose likelihood, posterior and ELBO are Gaussian integrals
in closed form: the reference the hierarchical VAEs' bounds and importance sampling are tested
against (tests/test_hvae.py, tests/test_ladder.py). Everything is float64.

    z2 ~ N(0, I),  z1 | z2 ~ N(A z2 + a, diag d1),  x | z1 ~ N(B z1 + b, diag d0)

so x ~ N(B a + b, diag d0 + B (diag d1 + A A^T) B^T). An inference model of the form
q(z2|x) = N(M2 x + m2, diag s2), q(z1|x, z2) = N(W x + G z2 + g, diag s1) (what both models are
with linear nets) is a joint Gaussian over u = (z1, z2), and ELBO = log p(x) - KL(q(u|x) ||
p(u|x)) with the posterior p(u|x) Gaussian too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vaelab.distributions import Gaussian


@dataclass
class LinearQ:
    """q(z2|x) = N(M2 x + m2, diag s2), q(z1|x, z2) = N(W x + G z2 + g, diag s1)."""

    M2: Tensor  # (D2, P)
    m2: Tensor  # (D2,)
    s2: Tensor  # (D2,)
    W: Tensor  # (D1, P)
    G: Tensor  # (D1, D2)
    g: Tensor  # (D1,)
    s1: Tensor  # (D1,)

    def joint(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (N, D1 + D2) and covariance of q(z1, z2|x) for x (N, P)."""
        mu2 = x @ self.M2.T + self.m2
        mu1 = x @ self.W.T + mu2 @ self.G.T + self.g
        S2 = torch.diag(self.s2)
        cov = torch.cat([torch.cat([self.G @ S2 @ self.G.T + torch.diag(self.s1), self.G @ S2], 1),
                         torch.cat([S2 @ self.G.T, S2], 1)])  # fmt: skip
        return torch.cat([mu1, mu2], 1), cov


def gaussian_kl(mean_q: Tensor, cov_q: Tensor, mean_p: Tensor, cov_p: Tensor) -> Tensor:
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)) per row of the means (N,)."""
    inv_p, d = torch.linalg.inv(cov_p), mean_q.shape[-1]
    diff = mean_p - mean_q
    logdets = torch.logdet(cov_p) - torch.logdet(cov_q)
    return 0.5 * (torch.trace(inv_p @ cov_q) + ((diff @ inv_p) * diff).sum(-1) - d + logdets)


@dataclass
class LinearGaussian:
    A: Tensor  # (D1, D2)
    a: Tensor  # (D1,)
    d1: Tensor  # (D1,)
    B: Tensor  # (P, D1)
    b: Tensor  # (P,)
    d0: Tensor  # (P,)

    @classmethod
    def random(cls, seed: int = 0, pixels: int = 3, z1: int = 2, z2: int = 2) -> LinearGaussian:
        g = torch.Generator().manual_seed(seed)

        def draw(*shape, scale=1.0):
            return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

        def variance(n, lo, hi):
            return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)

        return cls(A=draw(z1, z2, scale=0.8), a=draw(z1, scale=0.3), d1=variance(z1, 0.3, 0.8),
                   B=draw(pixels, z1), b=draw(pixels, scale=0.3),
                   d0=variance(pixels, 0.2, 0.5))  # fmt: skip

    def sample_x(self, n: int, seed: int = 1) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        mvn = self.marginal()
        return mvn.loc + torch.randn(n, len(self.b), generator=g, dtype=torch.float64) @ \
            mvn.scale_tril.T  # fmt: skip

    def marginal(self) -> MultivariateNormal:
        cov = torch.diag(self.d0) + self.B @ (torch.diag(self.d1) + self.A @ self.A.T) @ self.B.T
        return MultivariateNormal(self.B @ self.a + self.b, cov)

    def log_px(self, x: Tensor) -> Tensor:
        return self.marginal().log_prob(x)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (N, D1 + D2) and covariance of p(z1, z2|x): x = H u + b + noise, H = [B, 0]."""
        d1, d2 = self.A.shape
        eye = torch.eye(d2, dtype=self.A.dtype)
        prior_cov = torch.cat([torch.cat([torch.diag(self.d1) + self.A @ self.A.T, self.A], 1),
                               torch.cat([self.A.T, eye], 1)])  # fmt: skip
        prior_mean = torch.cat([self.a, torch.zeros(d2, dtype=self.a.dtype)])
        H = torch.cat([self.B, torch.zeros(len(self.b), d2, dtype=self.B.dtype)], 1)
        prior_prec = torch.linalg.inv(prior_cov)
        cov = torch.linalg.inv(prior_prec + H.T @ torch.diag(1 / self.d0) @ H)
        mean = (prior_mean @ prior_prec + ((x - self.b) / self.d0) @ H) @ cov
        return mean, cov

    def elbo(self, x: Tensor, q: LinearQ) -> Tensor:
        return self.log_px(x) - gaussian_kl(*q.joint(x), *self.posterior(x))

    def expected_log_lik(self, x: Tensor, q: LinearQ) -> Tensor:
        """E_q[log p(x|z1)] (N,)."""
        mean, cov = q.joint(x)
        d1 = len(self.a)
        mu1, S1 = mean[:, :d1], cov[:d1, :d1]
        sq = (x - mu1 @ self.B.T - self.b).pow(2) + torch.diag(self.B @ S1 @ self.B.T)
        return -0.5 * (torch.log(2 * torch.pi * self.d0) + sq / self.d0).sum(-1)

    def near_posterior_q(self, inflate: float = 2.0) -> LinearQ:
        """The posterior's exact means (linear in x), its diagonal variances times `inflate`."""
        d1 = len(self.a)
        P = len(self.b)
        zero_mean, cov = self.posterior(torch.zeros(1, P, dtype=self.b.dtype))
        slope = self.posterior(torch.eye(P, dtype=self.b.dtype))[0] - zero_mean  # (P, D1 + D2)
        G = cov[:d1, d1:] @ torch.linalg.inv(cov[d1:, d1:])  # E[z1|z2, x] = mu1 + G (z2 - mu2)
        cond = cov[:d1, :d1] - G @ cov[d1:, :d1]
        M1, M2, m1, m2 = slope[:, :d1].T, slope[:, d1:].T, zero_mean[0, :d1], zero_mean[0, d1:]
        return LinearQ(M2=M2, m2=m2, s2=inflate * torch.diag(cov[d1:, d1:]), W=M1 - G @ M2, G=G,
                       g=m1 - G @ m2, s1=inflate * torch.diag(cond))  # fmt: skip


def linear(weight: Tensor, bias: Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).double()
    layer.weight.data, layer.bias.data = weight.clone(), bias.clone()
    return layer


class GaussianHead(nn.Module):
    """p(x|z) = N(out, diag d0): the decoder's output is the mean itself."""

    def __init__(self, variance: Tensor, shape: tuple[int, ...]):
        super().__init__()
        self.logvar = variance.log().view(shape)

    def forward(self, out):
        return Gaussian(out, self.logvar)


def importance_estimate(log_w: Tensor) -> tuple[Tensor, Tensor]:
    """log (1/K) sum w and its standard error std(w) / (mean(w) sqrt(K)) per image."""
    estimate = torch.logsumexp(log_w, 0) - math.log(len(log_w))
    w = (log_w - estimate).exp()  # mean 1
    return estimate, w.std(0) / math.sqrt(len(log_w))
