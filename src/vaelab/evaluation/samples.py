"""Two-sample statistics: how far one set of samples is from another.

The maximum mean discrepancy (Gretton et al. 2012) with the Gaussian kernel
k(a, b) = exp(-|a - b|^2 / (2 h^2)): MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y), zero exactly
when the two distributions are equal. `mmd2` is the biased (V-statistic) estimate, which is
never negative: for two samples of one distribution it is about (1 - E k(x, x')) (1/n + 1/m),
so the same statistic between two independent samples of the reference is the floor that
a match is judged against.

Sample quality in a feature space (vaelab uses the reference classifier's penultimate layer,
evaluation/classifier.py, where FID uses Inception's; so the numbers are a Frechet *classifier*
distance, comparable only between runs judged by the same classifier):
- the Frechet distance between Gaussians fitted to the two sets of features (Heusel et al. 2017;
  the closed form of Dowson & Landau 1982), lower is better;
- improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of
  balls around its points reaching their k-th nearest neighbour (k = 3); precision is the share
  of generated samples inside the real manifold (are samples realistic?), recall the share of
  real samples inside the generated one (is the data covered?).
All three depend on the number of samples, so they are compared with the same numbers between
two disjoint sets of real images of the same size: the floor a perfect sampler would reach.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.errors import VaelabError


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """The median heuristic: h = the median distance between the pooled points (a stated,
    data-driven scale that neither sample can move much on its own)."""
    pooled = torch.cat([x, y]).double()
    dist = torch.cdist(pooled, pooled)
    return dist[torch.triu_indices(len(pooled), len(pooled), 1).unbind()].median().item()


def gaussian_kernel_mean(a: Tensor, b: Tensor, bandwidth: float) -> Tensor:
    """The mean of k(a_i, b_j) over every pair."""
    return torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2)).mean()


def mmd2(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """The biased estimate of MMD^2 between samples x (n, D) and y (m, D) (float64)."""
    x, y = x.double(), y.double()
    xx = gaussian_kernel_mean(x, x, bandwidth)
    yy = gaussian_kernel_mean(y, y, bandwidth)
    return (xx + yy - 2 * gaussian_kernel_mean(x, y, bandwidth)).item()


K_NEAREST = 3  # Kynkaanniemi et al.'s choice: the manifold's balls reach the 3rd neighbour
BLOCK = 1024  # rows of a distance matrix at a time: memory stays O(BLOCK * n)


def gaussian_frechet_distance(m1: Tensor, s1: Tensor, m2: Tensor, s2: Tensor) -> float:
    """||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}), the Frechet (2-Wasserstein) distance
    squared between N(m1, S1) and N(m2, S2), in float64.

    S1 S2 is not symmetric, but it is similar to A S2 A with A = S1^{1/2}, which is symmetric
    positive semi-definite: Tr (S1 S2)^{1/2} is the sum of the square roots of A S2 A's
    eigenvalues (eigh, exact for symmetric matrices, where a general sqrtm can turn complex).
    """
    m1, s1, m2, s2 = (t.double() for t in (m1, s1, m2, s2))
    root = psd_sqrt(s1)
    cross = psd_eigenvalues(root @ s2 @ root).sqrt().sum()
    distance = (m1 - m2).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross
    return max(distance.item(), 0.0)  # identical sets: 0 up to rounding, never below


def psd_eigenvalues(s: Tensor) -> Tensor:
    """Eigenvalues of a symmetric positive semi-definite matrix, rounding's negatives as 0."""
    return torch.linalg.eigvalsh((s + s.T) / 2).clamp_min(0)


def psd_sqrt(s: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh((s + s.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def gaussian_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features x (n, F), in float64."""
    x = x.double()
    return x.mean(0), torch.cov(x.T)


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """The Frechet distance between Gaussians fitted to features x (n, F) and y (m, F)."""
    if min(len(x), len(y)) < 2:
        raise VaelabError("a Frechet distance needs at least two samples on each side")
    return gaussian_frechet_distance(*gaussian_moments(x), *gaussian_moments(y))


def knn_radii(x: Tensor, k: int = K_NEAREST) -> Tensor:
    """Each point's distance to its k-th nearest other point (n,) (its own 0 comes first)."""
    return torch.cat([torch.cdist(block, x).kthvalue(k + 1, dim=1).values
                      for block in x.double().split(BLOCK)])  # fmt: skip


def manifold_share(points: Tensor, manifold: Tensor, k: int = K_NEAREST) -> float:
    """The share of `points` inside the k-NN manifold of `manifold`: within the k-NN radius of
    at least one of its points."""
    manifold = manifold.double()
    radii = knn_radii(manifold, k)  # (m,)
    inside = [(torch.cdist(block, manifold) <= radii).any(1)
              for block in points.double().split(BLOCK)]  # fmt: skip
    return torch.cat(inside).double().mean().item()


def precision_recall(real: Tensor, fake: Tensor, k: int = K_NEAREST) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of features fake against real."""
    if min(len(real), len(fake)) <= k:
        raise VaelabError(f"precision and recall with k={k} need more than {k} samples a side")
    return manifold_share(fake, real, k), manifold_share(real, fake, k)


def sample_quality(real: Tensor, fake: Tensor, k: int = K_NEAREST) -> dict[str, float]:
    """Frechet distance, precision and recall of features fake (m, F) against real (n, F)."""
    precision, recall = precision_recall(real, fake, k)
    return {"frechet_distance": frechet_distance(real, fake), "precision": precision,
            "recall": recall}  # fmt: skip
