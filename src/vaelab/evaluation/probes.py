"""How much of the label the codes hold: a linear probe and k-nearest neighbours on latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def linear_probe_accuracy(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor,
                          weight_decay: float = 1e-4, steps: int = 200) -> float:  # fmt: skip
    """Test accuracy of multinomial logistic regression fitted (L-BFGS, full batch) on the
    standardized training codes."""
    train_z, test_z = standardize(train_z.double(), test_z.double())
    classes = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(train_z.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(train_z @ w + b, train_y) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((test_z @ w + b).argmax(1) == test_y).double().mean().item()


@torch.no_grad()
def knn_accuracy(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor,
                 k: int = 5, chunk: int = 1000) -> float:  # fmt: skip
    """Test accuracy of a majority vote among the k nearest training codes (Euclidean,
    standardized); ties go to the nearer neighbours' class through a tiny distance weight."""
    train_z, test_z = standardize(train_z.float(), test_z.float())
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for i in range(0, len(test_z), chunk):
        dist = torch.cdist(test_z[i : i + chunk], train_z)  # (chunk, N)
        near_dist, near = dist.topk(k, largest=False)  # (chunk, k)
        votes = torch.zeros(len(near), classes).scatter_add_(
            1, train_y[near], 1.0 + 1e-3 / (1.0 + near_dist)
        )  # fmt: skip
        correct += (votes.argmax(1) == test_y[i : i + chunk]).sum().item()
    return correct / len(test_z)
