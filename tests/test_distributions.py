import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from vaelab.distributions import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    Bernoulli,
    ContinuousBernoulli,
    DiagonalGaussian,
    Gaussian,
    continuous_bernoulli_log_norm,
    diagonal_gaussian_kl,
    fast_logsumexp,
    gaussian_kl,
    make_likelihood,
    standard_normal_log_prob,
)
from vaelab.errors import VaelabError


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_diagonal_gaussian_log_prob_matches_torch(gen):
    mean, logvar = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    z = torch.randn(7, 5, 3, generator=gen)
    ref = D.Independent(D.Normal(mean, (0.5 * logvar).exp()), 1).log_prob(z)
    torch.testing.assert_close(DiagonalGaussian(mean, logvar).log_prob(z), ref)


def test_kl_matches_torch_and_is_zero_for_the_prior(gen):
    mean, logvar = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    q = DiagonalGaussian(mean, logvar)
    ref = D.kl_divergence(D.Normal(mean, (0.5 * logvar).exp()), D.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(q.kl_to_standard_normal(), ref)
    zeros = torch.zeros(3, 20)
    assert torch.equal(DiagonalGaussian(zeros, zeros).kl_to_standard_normal(), torch.zeros(3))


def test_kl_closed_form_agrees_with_monte_carlo():
    torch.manual_seed(1)
    q = DiagonalGaussian(torch.tensor([[0.7, -1.2]]), torch.tensor([[-0.5, 0.8]]))
    z = q.sample((200_000,))  # (S, 1, 2)
    mc = (q.log_prob(z) - standard_normal_log_prob(z)).mean(0)
    se = (q.log_prob(z) - standard_normal_log_prob(z)).std(0) / math.sqrt(len(z))
    assert abs(mc.item() - q.kl_to_standard_normal().item()) < 4 * se.item()


def test_rsample_is_reparameterized():
    torch.manual_seed(0)
    mean = torch.zeros(2, 3, requires_grad=True)
    logvar = torch.zeros(2, 3, requires_grad=True)
    DiagonalGaussian(mean, logvar).rsample().sum().backward()
    assert torch.equal(mean.grad, torch.ones(2, 3))  # dz/dmean = 1
    assert logvar.grad.abs().sum() > 0
    assert DiagonalGaussian(mean, logvar).rsample((4, 5)).shape == (4, 5, 2, 3)


def test_logvar_is_kept_in_a_safe_range():
    q = DiagonalGaussian(torch.zeros(1, 2), torch.tensor([[-1e4, 1e4]]))
    assert q.logvar.tolist() == [[LOGVAR_MIN, LOGVAR_MAX]]
    assert torch.isfinite(q.kl_to_standard_normal()).all()
    assert torch.isfinite(gaussian_kl(torch.zeros(1), q.logvar[0, :1])).all()


@pytest.mark.parametrize("grad", [True, False], ids=["training", "evaluation"])
def test_bernoulli_matches_torch(gen, grad):
    logits = torch.randn(4, 1, 3, 3, generator=gen) * 3
    x = torch.bernoulli(torch.full((4, 1, 3, 3), 0.5), generator=gen)
    ref = D.Independent(D.Bernoulli(logits=logits), 3).log_prob(x)
    with torch.set_grad_enabled(grad):  # two formulas: the fused BCE, and x l - softplus(l)
        torch.testing.assert_close(Bernoulli(logits).log_prob(x), ref)
    torch.testing.assert_close(Bernoulli(logits).mean, torch.sigmoid(logits))


@pytest.mark.parametrize("grad", [True, False], ids=["training", "evaluation"])
def test_bernoulli_is_exact_at_extreme_logits_and_on_grayscale_targets(gen, grad):
    logits = torch.tensor([-100.0, -30.0, -5.0, 0.0, 5.0, 30.0, 100.0]).view(1, 1, 7)
    for pixel in (0.0, 1.0, 0.3):
        x = torch.full_like(logits, pixel)
        # -BCE in float64 as the reference: x log sigmoid(l) + (1 - x) log sigmoid(-l).
        l64 = logits.double()
        ref = (pixel * F.logsigmoid(l64) + (1 - pixel) * F.logsigmoid(-l64)).sum()
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(Bernoulli(logits).log_prob(x).double(), ref)


def test_bernoulli_broadcasts_over_importance_samples(gen):
    logits = torch.randn(5, 4, 1, 2, 2, generator=gen)  # (K, B, C, H, W)
    x = torch.bernoulli(torch.full((4, 1, 2, 2), 0.5), generator=gen)
    out = Bernoulli(logits).log_prob(x)
    assert out.shape == (5, 4)
    torch.testing.assert_close(out[2], Bernoulli(logits[2]).log_prob(x))


def test_continuous_bernoulli_matches_torch_including_near_half():
    logits = torch.tensor([-20.0, -3.0, -0.3, -1e-3, 0.0, 1e-4, 0.005, 0.5, 4.0, 15.0])
    x = torch.linspace(0.01, 0.99, len(logits))
    ref = D.ContinuousBernoulli(logits=logits.double()).log_prob(x.double())
    ours = ContinuousBernoulli(logits, event_dims=0).log_prob(x)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    mean_ref = D.ContinuousBernoulli(logits=logits.double()).mean
    torch.testing.assert_close(
        ContinuousBernoulli(logits, 0).mean.double(), mean_ref, rtol=1e-4, atol=1e-4
    )
    assert torch.isfinite(continuous_bernoulli_log_norm(logits)).all()


def test_continuous_bernoulli_integrates_to_one():
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for logit in (-4.0, 0.0, 0.002, 2.5):
        density = ContinuousBernoulli(torch.full_like(x, logit), event_dims=0).log_prob(x).exp()
        assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_matches_torch(gen):
    mean = torch.rand(3, 1, 2, 2, generator=gen)
    logvar = torch.randn(1, 2, 2, generator=gen)
    x = torch.rand(3, 1, 2, 2, generator=gen)
    ref = D.Independent(D.Normal(mean, (0.5 * logvar).exp()), 3).log_prob(x)
    torch.testing.assert_close(Gaussian(mean, logvar).log_prob(x), ref)


def test_likelihood_heads():
    shape = (1, 2, 2)
    out = torch.zeros(3, *shape)
    assert isinstance(make_likelihood("bernoulli", shape)(out), Bernoulli)
    assert make_likelihood("bernoulli", shape).binary_only
    assert not make_likelihood("continuous-bernoulli", shape).binary_only
    fixed = make_likelihood("gaussian", shape, gaussian_std=0.5)
    assert fixed(out).logvar[0, 0, 0, 0].item() == pytest.approx(2 * math.log(0.5))
    assert not list(fixed.parameters())
    learned = make_likelihood("gaussian-learned", shape)
    assert [p.shape for p in learned.parameters()] == [shape]
    torch.testing.assert_close(learned(out).mean, torch.full_like(out, 0.5))


@pytest.mark.parametrize("bad", [("poisson", {}), ("gaussian", {"gaussian_std": 0.0})])
def test_likelihood_bad_input(bad):
    name, kwargs = bad
    with pytest.raises(VaelabError):
        make_likelihood(name, (1, 2, 2), **kwargs)


def test_fast_logsumexp_equals_torch_logsumexp_in_value_and_gradient():
    torch.manual_seed(0)
    # Spreads from a few nats to thousands: many terms fall in exp's underflow range.
    for scale in (1.0, 30.0, 300.0, 3000.0):
        t = (torch.randn(7, 50, 500, dtype=torch.float32) * scale).requires_grad_()
        ours = fast_logsumexp(t, dim=-1)
        ref = torch.logsumexp(t, dim=-1)
        assert torch.equal(ours, ref) or torch.allclose(ours, ref, rtol=0, atol=1e-5 * scale)
        (g_ours,) = torch.autograd.grad(ours.sum(), t)
        (g_ref,) = torch.autograd.grad(ref.sum(), t)
        # t - max is rounded at t's own unit in the last place: the tolerance grows with scale.
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4 * max(1.0, scale / 300), atol=1e-6)
    got = fast_logsumexp(torch.tensor([[0.0, -1e4], [5.0, 5.0]]), dim=0)
    torch.testing.assert_close(got, torch.tensor([5.0 + math.log1p(math.exp(-5.0)), 5.0]))


def test_kl_between_diagonal_gaussians_matches_torch_and_broadcasts(gen):
    q = DiagonalGaussian(torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen))
    p = DiagonalGaussian(torch.randn(3, 4, 6, generator=gen), torch.randn(3, 4, 6, generator=gen))
    ref = D.kl_divergence(D.Normal(q.mean, q.std), D.Normal(p.mean, p.std))  # (3, 4, 6)
    torch.testing.assert_close(diagonal_gaussian_kl(q, p), ref)
    assert torch.equal(diagonal_gaussian_kl(q, q), torch.zeros(4, 6))
