"""The VQ-VAE's parts (van den Oord et al. 2017): the straight-through estimator; the codebook,
K vectors of E numbers with the nearest-code look-up, whose codes learn by the codebook loss
|sg[z_e] - e|^2 of eq. 3 (LearnedCodebook) or as exponential moving averages of the encoder
outputs assigned to them (EMACodebook, Appendix A.1: no loss, no learning rate); and the
autoregressive prior over a row of codes (CodePrior).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.distributions import full_precision
from vaelab.priors import Prior


def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
    """z_q's values with z_e's gradient: the decoder's gradient at z_q passes to the encoder
    unchanged (Section 3.2; d z / d z_e is the identity)."""
    return z_e + (z_q - z_e).detach()


class Codebook(nn.Module):
    """K code vectors `vectors` (K, E), set by a subclass (a parameter or a buffer)."""

    vectors: Tensor

    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """The index of the code nearest to each vector of z (..., E): (...) int64."""
        e = self.vectors  # |z - e|^2 = |z|^2 - 2 z.e + |e|^2 as one matmul: (..., K)
        with torch.autocast(z.device.type, enabled=False):  # float32 under bf16 training too
            sq_dist = z.pow(2).sum(-1, keepdim=True) - 2 * z @ e.T + e.pow(2).sum(-1)
        return sq_dist.argmin(-1)

    def embed(self, codes: Tensor) -> Tensor:
        """The vectors of codes (...): (..., E)."""
        return F.embedding(codes, self.vectors)

    def losses(self, z_e: Tensor, z_q: Tensor) -> dict[str, Tensor]:
        """The codebook's own loss terms for encoder outputs z_e and their codes z_q (B, cells,
        E), summed over cells and E, averaged over the batch."""
        return {}

    def update(self, z_e: Tensor, codes: Tensor) -> None:
        """Learn from a training batch's encoder outputs (N, E) and their codes (N,)."""


class LearnedCodebook(Codebook):
    """Codes trained by the optimizer through |sg[z_e] - e|^2 (eq. 3's second term)."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(size, dim))

    def losses(self, z_e: Tensor, z_q: Tensor) -> dict[str, Tensor]:
        return {"codebook": (z_e.detach() - z_q).pow(2).sum((1, 2)).mean()}


class EMACodebook(Codebook):
    """Codes e_i = m_i / N_i, moving averages over the training batches (Appendix A.1):
    N_i <- gamma N_i + (1 - gamma) n_i and m_i <- gamma m_i + (1 - gamma) sum_j z_e,j, over the
    n_i outputs z_e,j assigned to code i. N starts at 1 and m at the initial codes, so a code
    that no output picks keeps its place; N is Laplace-smoothed before the division (as in the
    paper's Sonnet code) so that the codes stay finite once such a count has decayed to 0."""

    eps = 1e-5

    def __init__(self, size: int, dim: int, decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("vectors", torch.randn(size, dim))
        self.register_buffer("count", torch.ones(size))  # N_i
        self.register_buffer("total", self.vectors.clone())  # m_i

    @torch.no_grad()
    def update(self, z_e: Tensor, codes: Tensor) -> None:
        assigned = F.one_hot(codes, len(self.vectors)).to(z_e.dtype)  # (N, K)
        with torch.autocast(z_e.device.type, enabled=False):  # sums of outputs in float32
            n, total = assigned.sum(0), assigned.T @ z_e  # (K,), (K, E)
        if dist.is_available() and dist.is_initialized():  # every rank: the global batch's
            dist.all_reduce(n)
            dist.all_reduce(total)
        self.count.mul_(self.decay).add_(n, alpha=1 - self.decay)
        self.total.mul_(self.decay).add_(total, alpha=1 - self.decay)
        k, all_counts = len(self.count), self.count.sum()
        smoothed = (self.count + self.eps) / (all_counts + k * self.eps) * all_counts
        self.vectors.copy_(self.total / smoothed.unsqueeze(-1))


def make_codebook(kind: str, size: int, dim: int, decay: float) -> Codebook:
    return EMACodebook(size, dim, decay) if kind == "ema" else LearnedCodebook(size, dim)


class CodePrior(Prior):
    """p(c) = prod_i p(c_i | c_<i) over a row of `cells` codes of `size`: a GRU reads the codes
    before cell i (a start token first) and gives c_i's logits. It samples z = embed(c), the
    codes' vectors (n, dim); its density is over code rows, not over R^dim."""

    name = "autoregressive"
    has_density = False

    def __init__(self, dim: int, cells: int, size: int, hidden: int,
                 embed: Callable[[Tensor], Tensor]):  # fmt: skip
        super().__init__(dim)
        self.cells, self.size, self.embed = cells, size, embed
        self.tokens = nn.Embedding(size + 1, hidden)  # code k, and the start token `size`
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        # A learned initial state (random, not 0: the recurrent weights then act at cell 0 too,
        # which is all a row of one cell has).
        self.h0 = nn.Parameter(torch.randn(1, 1, hidden) / hidden**0.5)
        self.head = nn.Linear(hidden, size)

    def describe(self) -> str:
        return f"autoregressive GRU prior over {self.cells} codes of {self.size}"

    def logits(self, codes: Tensor) -> Tensor:
        """Logits (B, cells, K) of each c_i given the codes (B, cells) before it."""
        start = torch.full_like(codes[:, :1], self.size)
        inputs = self.tokens(torch.cat([start, codes[:, :-1]], dim=1))  # shifted right by one
        h, _ = self.gru(inputs, self.h0.expand(1, len(codes), -1).contiguous())
        return full_precision(self.head(h))

    def log_prob_codes(self, codes: Tensor) -> Tensor:
        """log p(c) (B,) of code rows (B, cells), in nats."""
        log_p = self.logits(codes).log_softmax(-1)  # (B, cells, K)
        # A one-hot product, not gather: deterministic on the GPU too (gather's backward adds).
        return (log_p * F.one_hot(codes, self.size)).sum((-2, -1))

    @torch.no_grad()
    def sample_codes(self, n: int, generator: torch.Generator | None, device) -> Tensor:
        """c ~ p(c): (n, cells), one cell after another."""
        token, codes = torch.full((n, 1), self.size, device=device), []
        h = self.h0.expand(1, n, -1).contiguous()
        for _ in range(self.cells):
            out, h = self.gru(self.tokens(token), h)
            probs = full_precision(self.head(out[:, -1])).softmax(-1)  # (n, K)
            token = torch.multinomial(probs, 1, generator=generator)  # (n, 1)
            codes.append(token)
        return torch.cat(codes, dim=1)

    def sample_parts(self, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.embed(self.sample_codes(len(y), generator, y.device))
