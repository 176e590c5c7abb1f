"""How disentangled a representation is against known factors: MIG and DCI.

- MIG, the mutual information gap (Chen et al. 2018): for each factor v_k, the gap
  between the two largest I(z_j; v_k) over the code dimensions, divided by H(v_k), averaged
  over the factors. The mutual information is estimated as disentanglement_lib does: each code
  dimension binned into 20 equal-width bins; a factor with at most 64 distinct values taken as
  it is, one with more binned like the codes.
- DCI (Eastwood & Williams 2018): a regressor per factor predicts it from the codes and gives
  an importance matrix R (D codes x F factors). Disentanglement is 1 - the entropy (base F) of
  each code's row of R normalised, weighted by the row's share of R; completeness is 1 - the
  entropy (base D) of each factor's column, averaged; informativeness the regressor's held-out
  R^2, averaged. The paper's regressors are lasso and random forests; vaelab's is an additive
  ridge regression on binned codes, f_k(z) = sum_d f_dk(z_d) with f_dk piecewise constant over
  the 20 quantile bins of z_d (closed form, no dependency, and not blind to a factor that a code
  holds non-monotonically), and R_dk is the variance of f_dk(z_d) over the data: the share of
  the (standardised) factor's variance that code d's part explains, in the units of a random
  forest's impurity importance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.data import ImageData
from vaelab.errors import VaelabError
from vaelab.evaluation.morphometrics import MEASURES, measure

BINS = 20
MAX_DISCRETE = 64  # a factor with at most this many distinct values is a discrete variable
RIDGE = 1e-3  # ridge penalty per training sample
TRAIN_SHARE = 0.8  # of the codes, for fitting DCI's regressor; the rest scores it
DIGITS = tuple(str(d) for d in range(10))


@dataclass
class MIG:
    score: float
    per_factor: Tensor  # (F,) normalised gap of each factor
    mutual_information: Tensor  # (D, F) nats
    factor_entropy: Tensor  # (F,) nats


@dataclass
class DCI:
    disentanglement: float
    completeness: float
    informativeness: float  # mean held-out R^2
    importance: Tensor  # (D, F)
    per_factor_informativeness: Tensor  # (F,) held-out R^2


def _check(codes: Tensor, factors: Tensor) -> None:
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise VaelabError(
            f"codes {tuple(codes.shape)} and factors {tuple(factors.shape)} must be (N, D) and "
            "(N, F) with the same N"
        )
    if len(codes) < 10 or codes.shape[1] < 2:
        raise VaelabError(
            f"MIG and DCI need at least 10 samples and 2 code dimensions, got codes of shape "
            f"{tuple(codes.shape)}"
        )


def bin_equal_width(values: Tensor, bins: int = BINS) -> Tensor:
    """Each column of (N, K) into `bins` equal-width bins over its range: (N, K) int64."""
    lo, hi = values.min(0).values, values.max(0).values
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return ((values - lo) / width * bins).floor().clamp(0, bins - 1).long()


def discretize_factors(factors: Tensor, bins: int = BINS) -> Tensor:
    """Each factor column as class indices: its distinct values where it has at most
    MAX_DISCRETE of them, else equal-width bins (N, F) int64."""
    columns = []
    for column in factors.T:
        values, index = torch.unique(column, return_inverse=True)
        discrete = len(values) <= MAX_DISCRETE
        columns.append(index if discrete else bin_equal_width(column[:, None], bins)[:, 0])
    return torch.stack(columns, dim=1)


def entropy(labels: Tensor) -> Tensor:
    """H of each column of (N, K) class indices, nats (K,)."""
    return torch.stack([_entropy(torch.bincount(c).double() / len(c)) for c in labels.T])


def _entropy(p: Tensor) -> Tensor:
    p = p[p > 0]
    return -(p * p.log()).sum()


def mutual_information(a: Tensor, b: Tensor) -> Tensor:
    """I(a_i; b_j) for every column pair of two (N, ·) class-index tensors, nats (Da, Db):
    H(a_i) + H(b_j) - H(a_i, b_j) from the joint counts."""
    ha, hb = entropy(a), entropy(b)
    mi = torch.zeros(a.shape[1], b.shape[1], dtype=torch.float64)
    for i, column in enumerate(a.T):
        for j, other in enumerate(b.T):
            joint = column * (int(other.max()) + 1) + other
            mi[i, j] = ha[i] + hb[j] - _entropy(torch.bincount(joint).double() / len(joint))
    return mi.clamp_min(0)


def mig(codes: Tensor, factors: Tensor, bins: int = BINS) -> MIG:
    """The mutual information gap of codes (N, D) against factors (N, F)."""
    _check(codes, factors)
    z, v = bin_equal_width(codes.double(), bins), discretize_factors(factors.double(), bins)
    mi, h = mutual_information(z, v), entropy(v)
    top2 = mi.topk(2, dim=0).values  # (2, F): the two most informative codes per factor
    gap = torch.where(h > 0, (top2[0] - top2[1]) / h.clamp_min(1e-12), 0.0)
    return MIG(gap.mean().item(), gap.float(), mi.float(), h.float())


def _one_hot_bins(codes: Tensor, edges: Tensor, bins: int) -> Tensor:
    """Each code dimension as a one-hot of its quantile bin: (N, D) -> (N, D * bins)."""
    columns = codes.T.contiguous()  # (D, N)
    index = torch.stack([torch.bucketize(c, e) for c, e in zip(columns, edges, strict=True)], 1)
    return torch.nn.functional.one_hot(index, bins).flatten(1).double()


def _split(n: int, seed: int) -> tuple[Tensor, Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(n * TRAIN_SHARE)
    return order[:cut], order[cut:]


def _additive_ridge(codes: Tensor, factors: Tensor, bins: int, seed: int):
    """Fit f_k(z) = sum_d f_dk(z_d) on a training share; return the importance (D, F) and
    the held-out R^2 (F,)."""
    train, test = _split(len(codes), seed)
    n, d = len(train), codes.shape[1]
    quantiles = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
    edges = torch.quantile(codes[train], quantiles, dim=0).T.contiguous()  # (D, bins - 1)
    x = _one_hot_bins(codes, edges, bins)  # (N, D * bins)
    mean_x, mean_y = x[train].mean(0), factors[train].mean(0)
    std_y = factors[train].std(0).clamp_min(1e-12)
    xc, yc = x - mean_x, (factors - mean_y) / std_y  # standardised factors: R is unitless
    gram = xc[train].T @ xc[train] + RIDGE * n * torch.eye(x.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, xc[train].T @ yc[train])  # (D * bins, F)
    parts = torch.einsum("ndb,dbf->ndf", xc[train].view(n, d, bins), w.view(d, bins, -1))
    importance = parts.var(0)  # (D, F): the variance of factor k that z_d's part carries
    residual = yc[test] - xc[test] @ w
    r2 = 1 - residual.pow(2).mean(0) / yc[test].var(0, unbiased=False).clamp_min(1e-12)
    return importance, r2


def _one_minus_entropy(p: Tensor, base: int) -> Tensor:
    """1 - H(p) / log(base) for each row of non-negative (R, K) weights."""
    p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
    h = -(p * p.clamp_min(1e-300).log()).sum(1)
    return 1 - h / math.log(base)


def dci(codes: Tensor, factors: Tensor, bins: int = BINS, seed: int = 0) -> DCI:
    """DCI disentanglement, completeness and informativeness of codes (N, D) against factors
    (N, F), from the additive ridge regressor's importance matrix."""
    _check(codes, factors)
    importance, r2 = _additive_ridge(codes.double(), factors.double(), bins, seed)
    d, f = importance.shape
    weight = importance.sum(1) / importance.sum().clamp_min(1e-12)  # (D,) share of each code
    disentangled = (weight * _one_minus_entropy(importance, f)).sum() if f > 1 else weight.sum()
    complete = _one_minus_entropy(importance.T, d).mean()
    return DCI(disentangled.item(), complete.item(), r2.mean().item(), importance.float(),
               r2.float())  # fmt: skip


def scores(codes: Tensor, factors: Tensor, names: tuple[str, ...], source: str) -> dict:
    """eval.json's MIG and DCI keys, each named after what the factors are (`source`), with
    the factors' names under `factors_{source}`; samples with a missing factor are left out."""
    _check(codes, factors)
    keep = ~factors.isnan().any(1)
    codes, factors = codes[keep], factors[keep]
    m, d = mig(codes, factors), dci(codes, factors)
    return {
        f"factors_{source}": ", ".join(names),
        f"mig_{source}": m.score,
        f"mig_{source}_per_factor": m.per_factor.tolist(),
        f"dci_disentanglement_{source}": d.disentanglement,
        f"dci_completeness_{source}": d.completeness,
        f"dci_informativeness_{source}": d.informativeness,
        f"dci_informativeness_{source}_per_factor": d.per_factor_informativeness.tolist(),
    }


def is_digits(data: ImageData) -> bool:
    """Grayscale 28 x 28 images labelled with the ten digits (MNIST and its kin): what
    Morpho-MNIST's measures are defined on."""
    return data.image_shape == (1, 28, 28) and tuple(data.class_names or ()) == DIGITS


def eval_numbers(codes: Tensor, data: ImageData, split: str, limit: int | None) -> dict:
    """MIG and DCI of a split's codes (N, D) against the data's known factors (keys
    ..._true_factors) or, for digits, against the morphometrics measured on its images
    (..._morphometrics); nothing where neither applies."""
    test = split == "test"
    known = data.test_factors if test else data.train_factors
    if codes.shape[1] < 2:  # the gap needs a second code dimension
        return {}
    if known is not None and data.factor_names is not None:
        return scores(codes, known[:limit], data.factor_names, "true_factors")
    if is_digits(data):
        images = (data.test_images if test else data.train_images)[:limit]
        return scores(codes, measure(images).as_factors(), MEASURES, "morphometrics")
    return {}
