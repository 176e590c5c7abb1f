"""The two-layer HVAE: its bounds and importance sampling against a linear-Gaussian model in
closed form (tests/linear_gaussian.py), and its per-layer KL bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import tiny_config
from linear_gaussian import GaussianHead, LinearGaussian, LinearQ, importance_estimate, linear
from vaelab.errors import VaelabError
from vaelab.models import Batch, StepContext, build_model
from vaelab.models.hvae import LOGVAR_RANGE, HVAEConfig

K = 20_000  # importance samples: the estimates' standard errors are a few hundredths of a nat


def gaussian_net(mean_weight, mean_bias, variance) -> nn.Linear:
    """A linear net whose output [mean, logvar] has the given mean map and a fixed variance."""
    lo, hi = LOGVAR_RANGE
    assert ((variance.log() > lo) & (variance.log() < hi)).all()  # the model clamps outside
    weight = torch.cat([mean_weight, torch.zeros_like(mean_weight)])
    return linear(weight, torch.cat([mean_bias, variance.log()]))


def linear_hvae(truth: LinearGaussian, q: LinearQ):
    """An HVAE whose nets are the linear maps of `truth` (generation) and `q` (inference)."""
    (d1, d2), pixels = truth.A.shape, len(truth.b)
    shape = (1, 1, pixels)
    config = HVAEConfig(image_shape=shape, latent_dim=d2, z1_dim=d1, net="mlp", hidden=(4,))
    model = build_model("hvae", config).double()
    model.encoder = nn.Sequential(nn.Flatten(), gaussian_net(q.M2, q.m2, q.s2))
    model.q_z1_x = nn.Flatten()  # q(z1|x, z2) reads [x, z2]
    model.q_z1_joint = gaussian_net(torch.cat([q.W, q.G], 1), q.g, q.s1)
    model.p_z1_net = gaussian_net(truth.A, truth.a, truth.d1)
    B = torch.cat([truth.B, torch.zeros(pixels, d2, dtype=truth.B.dtype)], 1)  # p(x|z1) alone
    model.decoder = nn.Sequential(linear(B, truth.b), nn.Unflatten(-1, shape))
    model.likelihood = GaussianHead(truth.d0, shape)
    return model


@pytest.fixture
def setting():
    truth = LinearGaussian.random(0)
    q = truth.near_posterior_q(inflate=2.0)
    x = truth.sample_x(4)
    return truth, q, x, linear_hvae(truth, q), x.view(len(x), 1, 1, -1)


@torch.no_grad()
def test_importance_sampling_converges_to_the_closed_form_likelihood(setting):
    truth, q, x, model, images = setting
    gen = torch.Generator().manual_seed(0)
    log_w = model.log_weights(images, None, K, gen)  # (K, 4)
    estimate, se = importance_estimate(log_w)
    exact, elbo = truth.log_px(x), truth.elbo(x, q)
    assert (estimate - exact).abs().max() < 4 * se.min() and se.max() < 0.05
    chunked = model.log_prob_estimate(images, k=K, generator=gen)
    assert (chunked - exact).abs().max() < 4 * se.min()
    # E_q[log w] is the ELBO, below log p(x) by KL(q || posterior) > 0.
    assert (elbo < exact - 0.1).all()
    torch.testing.assert_close(log_w.mean(0), elbo, atol=4 * (log_w.std(0).max() / K**0.5).item(),
                               rtol=0)  # fmt: skip


@torch.no_grad()
def test_the_elbo_and_its_kl_per_layer_match_the_closed_form(setting):
    truth, q, x, model, images = setting
    copies = images.repeat(5000, 1, 1, 1)  # (5000 * 4, ...): copy i of image j at i * 4 + j
    elbo = model.elbo(copies, generator=torch.Generator().manual_seed(1)).view(5000, 4)
    se = (elbo.std(0) / 5000**0.5).max().item()
    torch.testing.assert_close(elbo.mean(0), truth.elbo(x, q), atol=4 * se, rtol=0)
    numbers = model.eval_numbers(copies[:2000])
    kl_total = (truth.expected_log_lik(x, q) - truth.elbo(x, q)).mean().item()
    assert sum(numbers["kl_per_layer"]) == pytest.approx(kl_total, abs=0.02)
    mu2 = x @ q.M2.T + q.m2  # KL(q(z2|x) || N(0, I)) in closed form
    kl_top = 0.5 * (mu2.pow(2) + q.s2 - 1 - q.s2.log()).sum(-1).mean().item()
    assert numbers["kl_per_layer"][1] == pytest.approx(kl_top, rel=1e-9)
    assert numbers["latent_dims_per_layer"] == [2, 2]


@torch.no_grad()
def test_the_bound_is_below_the_estimate_and_rises_with_k(setting):
    truth, _, x, model, images = setting
    copies = images[:2].repeat(1000, 1, 1, 1)
    means, ses = [], []
    for k in (1, 4, 16, 64):
        bound = model.log_prob_estimate(copies, k=k, generator=torch.Generator().manual_seed(k))
        bound = bound.view(1000, 2).mean(1)  # the two images' mean, per copy
        means.append(bound.mean().item())
        ses.append(bound.std().item() / 1000**0.5)
    for i in range(3):
        assert means[i + 1] - means[i] > 3 * (ses[i] + ses[i + 1])
    assert means[-1] < truth.log_px(x[:2]).mean().item() + 3 * ses[-1]


def test_the_kl_of_each_layer_sums_to_the_kl_term_and_warms_up(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = build_model("hvae", tiny_config("hvae", z1_dim=3))
    torch.manual_seed(3)
    full = model.loss("model", Batch(x), StepContext()).metrics
    torch.manual_seed(3)
    half = model.loss("model", Batch(x), StepContext(kl_warmup=0.5)).metrics
    torch.testing.assert_close(full["kl"], full["kl_z1"] + full["kl_z2"])
    torch.testing.assert_close(full["neg_elbo"], full["recon"] + full["kl"])
    torch.testing.assert_close(full["loss"], full["neg_elbo"])
    torch.testing.assert_close(half["loss"], full["recon"] + 0.5 * full["kl"])
    numbers = model.eval_numbers(x)
    assert numbers["latent_dims_per_layer"] == [3, 2]
    assert all(0 <= a <= d for a, d in zip(numbers["active_units_per_layer"], [3, 2], strict=True))


@torch.no_grad()
def test_decode_takes_z1_at_its_prior_mean_and_generate_draws_it(digits):
    torch.manual_seed(0)
    model = build_model("hvae", tiny_config("hvae", z1_dim=3)).eval()
    z2 = torch.randn(5, 2)
    z1 = model.p_z(0, z2).mean
    expected = model.likelihood(model.decoder(torch.cat([z1, z2], -1))).mean
    torch.testing.assert_close(model.decode(z2).mean, expected, rtol=0, atol=0)

    def samples():
        return model.generate(6, generator=torch.Generator().manual_seed(4))

    z2 = model.sample_prior(6, torch.Generator().manual_seed(4))
    assert torch.equal(samples(), samples()) and not torch.equal(samples(), model.decode(z2).mean)


@torch.no_grad()
def test_the_vampprior_is_a_mixture_of_q_z2_at_the_pseudo_inputs(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = build_model("hvae", tiny_config("hvae", prior="vamp", pseudo_inputs=3))
    u = model.prior.pseudo_inputs.clamp(0, 1)
    components = model.encode(u)
    z = torch.randn(7, 2)
    by_hand = torch.stack([components.log_prob(zi) for zi in z])  # (7, 3)
    expected = torch.logsumexp(by_hand, -1) - math.log(3)
    torch.testing.assert_close(model.prior.log_prob(z), expected)
    assert torch.isfinite(model.log_prob_estimate(x[:8], k=10)).all()


@pytest.mark.parametrize("changes,field", [({"hidden": ()}, "hidden"),
                                           ({"z1_dim": 0}, "z1_dim"),
                                           ({"num_classes": 10}, "num_classes")])  # fmt: skip
def test_bad_configs_are_one_clear_error(changes, field):
    with pytest.raises(VaelabError, match=f"model {field} is"):
        HVAEConfig(**changes).validate()
