"""The maximum mean discrepancy between a batch's codes and as many prior samples: the penalty
of the Wasserstein autoencoder (Tolstikhin et al. 2018) and of the MMD-VAE (Zhao et al. 2017).

MMD^2(q, p) = E k(z, z') + E k(z~, z~') - 2 E k(z, z~) for z, z' ~ q and z~, z~' ~ p (Gretton
et al. 2012, Lemma 6): zero exactly when q = p, for a characteristic kernel. From n codes and n
prior samples, the unbiased U-statistic of WAE's Algorithm 1:

    1/(n(n-1)) sum_{i != j} [k(z_i, z_j) + k(z~_i, z~_j)]  -  2/n^2 sum_{i, j} k(z_i, z~_j)

(which may come out below zero when q is close to p). Both kernels take the scale C = 2 d sigma^2,
the expected squared distance between two samples of N(0, sigma^2 I) in d dimensions (sigma = 1:
every prior here has unit scale):

    imq       k(a, b) = C / (C + |a - b|^2)   the inverse multiquadratic kernel of WAE Section 4:
                                              heavy tails, so far-off codes still feel the pull
    gaussian  k(a, b) = exp(-|a - b|^2 / C)   the kernel of the MMD-VAE

The estimate is a statistic of the whole batch: under torchrun each rank computes it from its own
shard and prior draws, so R ranks with a global batch B optimize the estimate at B / R, not step
for step what one process does.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Kernel = Literal["imq", "gaussian"]


def kernel_matrix(a: Tensor, b: Tensor, kernel: Kernel) -> Tensor:
    """k(a_i, b_j) for a (n, d) and b (m, d): (n, m)."""
    scale = 2.0 * a.shape[-1]  # C = 2 d sigma^2, sigma = 1
    # The differences themselves, not cdist: exact at a = b, where cdist's gradient is 0/0.
    sq_dist = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)  # (n, m)
    if kernel == "imq":
        return scale / (scale + sq_dist)
    return torch.exp(-sq_dist / scale)


def off_diagonal_mean(k: Tensor) -> Tensor:
    """The mean of k_ij over i != j of a square (n, n) matrix."""
    n = len(k)
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd_unbiased(z: Tensor, prior: Tensor, kernel: Kernel) -> Tensor:
    """The U-statistic estimate of MMD^2 between codes z (n, d) and prior samples (n, d); 0
    (with a zero gradient) for n = 1, which has no pairs (an epoch's last batch may be one)."""
    z, prior = z.float(), prior.float()  # float32 also under bf16 autocast: a small difference
    if len(z) < 2:
        return 0.0 * z.sum()
    return (
        off_diagonal_mean(kernel_matrix(z, z, kernel))
        + off_diagonal_mean(kernel_matrix(prior, prior, kernel))
        - 2 * kernel_matrix(z, prior, kernel).mean()
    )
