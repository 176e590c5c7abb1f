"""How much of the label the codes hold: a linear probe and k-nearest neighbours on latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def fit_logistic(z: Tensor, y: Tensor, classes: int, weight_decay: float = 1e-4,
                 steps: int = 50, tol: float = 1e-10) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Multinomial logistic regression by Newton's method with a backtracking line search:
    minimises mean cross-entropy + weight_decay * |W|^2 over W (d, C) and b (C) (float64).

    The Hessian of the (C (d + 1))-sized problem is one matmul, so a probe on 20-D codes
    converges in about ten steps, exactly, and without torch.optim (whose first use imports
    torch's compiler stack: 1.5 s of `vaelab eval` on its own).
    """
    n, d = z.shape
    features = torch.cat([z, torch.ones(n, 1, dtype=z.dtype)], dim=1)  # (n, d + 1)
    theta = torch.zeros(d + 1, classes, dtype=z.dtype)  # last row: the biases
    onehot = torch.nn.functional.one_hot(y, classes).to(z.dtype)
    ridge = torch.full((d + 1,), 2 * weight_decay, dtype=z.dtype)
    ridge[-1] = 0.0  # the biases are not penalised

    def objective(t: Tensor) -> Tensor:
        return F.cross_entropy(features @ t, y) + weight_decay * t[:-1].pow(2).sum()

    loss = objective(theta)
    for _ in range(steps):
        prob = torch.softmax(features @ theta, dim=1)  # (n, C)
        grad = features.T @ (prob - onehot) / n + ridge[:, None] * theta  # (d + 1, C)
        # H = mean_n (diag(p) - p p^T) kron x x^T, ordered (class, feature).
        px = (prob[:, :, None] * features[:, None, :]).reshape(n, -1)  # (n, C (d + 1))
        diag = torch.einsum("nc,ni,nj->cij", prob, features, features) / n
        hess = -(px.T @ px) / n + torch.block_diag(*diag)
        # (softmax is unchanged by one shift of every class's bias: a trace keeps H definite)
        hess += torch.diag(ridge.clamp_min(1e-10).repeat(classes))
        step = torch.linalg.solve(hess, grad.T.reshape(-1)).reshape(classes, d + 1).T
        scale = 1.0
        while scale > 1e-8:  # backtracking: Newton's full step, halved until the loss falls
            trial = theta - scale * step
            new_loss = objective(trial)
            if new_loss <= loss:
                break
            scale /= 2
        else:
            break
        theta, done = trial, loss - new_loss < tol
        loss = new_loss
        if done:
            break
    return theta[:-1], theta[-1]


@torch.no_grad()
def linear_probe_accuracy(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor,
                          weight_decay: float = 1e-4) -> float:  # fmt: skip
    """Test accuracy of multinomial logistic regression (L2 weight decay) fitted exactly on
    the standardized training codes."""
    train_z, test_z = standardize(train_z.double(), test_z.double())
    classes = int(max(train_y.max(), test_y.max())) + 1
    w, b = fit_logistic(train_z, train_y, classes, weight_decay)
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
