"""The ladder VAE: the precision-weighted merge (Sønderby et al. 2016, eq. 17-19), its bounds and
importance sampling against a two-layer linear-Gaussian model in closed form
(tests/linear_gaussian.py), and its per-layer KL bookkeeping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_config
from linear_gaussian import GaussianHead, LinearGaussian, LinearQ, importance_estimate, linear
from vaelab.distributions import DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.models import Batch, StepContext, build_model
from vaelab.models.ladder_vae import LadderVAEConfig, precision_weighted

K = 20_000  # importance samples: the estimates' standard errors are about a hundredth of a nat


def gaussian_net(mean_weight, mean_bias, variance) -> nn.Linear:
    weight = torch.cat([mean_weight, torch.zeros_like(mean_weight)])
    return linear(weight, torch.cat([mean_bias, variance.log()]))


def ladder_inference(truth: LinearGaussian) -> tuple[list[tuple], LinearQ]:
    """Bottom-up Gaussians (mean map, offset, variance) of z1 and z2, and the q they make.

    z2's is the posterior's exact mean with twice its variances; z1's is x's Gaussian message
    on z1, N(L^-1 B^T D0^-1 (x - b), diag(L)^-1) with L = B^T D0^-1 B, which the top-down pass
    merges with p(z1|z2): q(z1|x, z2) = N(W x + G z2 + g, diag s1), linear in x and z2."""
    near = truth.near_posterior_q(inflate=2.0)
    precision = truth.B.T @ torch.diag(1 / truth.d0) @ truth.B  # L (D1, D1)
    H1 = torch.linalg.inv(precision) @ truth.B.T @ torch.diag(1 / truth.d0)
    h1, v1 = -H1 @ truth.b, 1 / torch.diag(precision)
    s1 = 1 / (1 / v1 + 1 / truth.d1)  # eq. 18
    q = LinearQ(M2=near.M2, m2=near.m2, s2=near.s2, W=(s1 / v1)[:, None] * H1,
                G=(s1 / truth.d1)[:, None] * truth.A, g=s1 * (h1 / v1 + truth.a / truth.d1),
                s1=s1)  # eq. 19  # fmt: skip
    return [(H1, h1, v1), (near.M2, near.m2, near.s2)], q


def linear_ladder(truth: LinearGaussian, bottom_up: list[tuple]):
    (d1, d2), pixels = truth.A.shape, len(truth.b)
    shape = (1, 1, pixels)
    config = LadderVAEConfig(image_shape=shape, latent_dim=d2, lower_latent_dims=(d1,),
                             hidden=(pixels,), upper_hidden=(pixels,))  # fmt: skip
    model = build_model("ladder-vae", config).double()
    model.encoder, model.activation = nn.Flatten(), nn.Identity()  # d_1 = x
    model.up = nn.ModuleList([nn.Identity()])  # d_2 = x
    model.heads = nn.ModuleList([gaussian_net(*layer) for layer in bottom_up])
    model.down = nn.ModuleList([gaussian_net(truth.A, truth.a, truth.d1)])
    model.decoder = nn.Sequential(linear(truth.B, truth.b), nn.Unflatten(-1, shape))
    model.likelihood = GaussianHead(truth.d0, shape)
    return model


@pytest.fixture
def setting():
    truth = LinearGaussian.random(0)
    bottom_up, q = ladder_inference(truth)
    x = truth.sample_x(4)
    return truth, q, x, linear_ladder(truth, bottom_up), x.view(len(x), 1, 1, -1)


def test_precision_weighting_is_the_papers_formula():
    g = torch.Generator().manual_seed(0)
    mu_hat, mu_p = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    lv_hat, lv_p = 3 * torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    merged = precision_weighted(DiagonalGaussian(mu_hat, lv_hat), DiagonalGaussian(mu_p, lv_p))
    var = 1 / (lv_hat.neg().exp() + lv_p.neg().exp())  # eq. 18
    torch.testing.assert_close(merged.logvar.exp(), var)
    torch.testing.assert_close(merged.mean, (mu_hat / lv_hat.exp() + mu_p / lv_p.exp()) * var)
    # One bottom-up Gaussian (B, D) merges with a prior per draw (K, B, D); extreme variances
    # neither overflow nor lose the precise side.
    sharp = DiagonalGaussian(mu_hat, torch.full_like(lv_hat, -28.0))
    wide = DiagonalGaussian(mu_p.expand(4, 3, 5), torch.full((4, 3, 5), 19.0, dtype=torch.float64))
    both = precision_weighted(sharp, wide)
    assert both.mean.shape == (4, 3, 5)
    torch.testing.assert_close(both.mean, mu_hat.expand(4, 3, 5))
    torch.testing.assert_close(both.logvar, torch.full((4, 3, 5), -28.0, dtype=torch.float64))


@torch.no_grad()
def test_importance_sampling_converges_to_the_closed_form_likelihood(setting):
    truth, q, x, model, images = setting
    gen = torch.Generator().manual_seed(0)
    log_w = model.log_weights(images, None, K, gen)
    estimate, se = importance_estimate(log_w)
    exact, elbo = truth.log_px(x), truth.elbo(x, q)
    assert (estimate - exact).abs().max() < 4 * se.min() and se.max() < 0.05
    chunked = model.log_prob_estimate(images, k=K, generator=gen)
    assert (chunked - exact).abs().max() < 4 * se.min()
    assert (elbo < exact - 0.1).all()
    torch.testing.assert_close(log_w.mean(0), elbo, atol=4 * (log_w.std(0).max() / K**0.5).item(),
                               rtol=0)  # fmt: skip


@torch.no_grad()
def test_the_elbo_and_its_kl_per_layer_match_the_closed_form(setting):
    truth, q, x, model, images = setting
    copies = images.repeat(5000, 1, 1, 1)
    elbo = model.elbo(copies, generator=torch.Generator().manual_seed(1)).view(5000, 4)
    se = (elbo.std(0) / 5000**0.5).max().item()
    torch.testing.assert_close(elbo.mean(0), truth.elbo(x, q), atol=4 * se, rtol=0)
    numbers = model.eval_numbers(copies[:2000])
    kl_total = (truth.expected_log_lik(x, q) - truth.elbo(x, q)).mean().item()
    assert sum(numbers["kl_per_layer"]) == pytest.approx(kl_total, abs=0.02)
    assert numbers["latent_dims_per_layer"] == [2, 2]


@torch.no_grad()
def test_the_bound_is_below_the_estimate_and_rises_with_k(setting):
    truth, _, x, model, images = setting
    copies = images[:2].repeat(1000, 1, 1, 1)
    means, ses = [], []
    for k in (1, 4, 16, 64):
        bound = model.log_prob_estimate(copies, k=k, generator=torch.Generator().manual_seed(k))
        bound = bound.view(1000, 2).mean(1)
        means.append(bound.mean().item())
        ses.append(bound.std().item() / 1000**0.5)
    for i in range(3):
        assert means[i + 1] - means[i] > 3 * (ses[i] + ses[i + 1])
    assert means[-1] < truth.log_px(x[:2]).mean().item() + 3 * ses[-1]


@torch.no_grad()
def test_inference_goes_top_down_through_the_generative_nets(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = build_model("ladder-vae", tiny_config("ladder-vae"))
    bottom_up = model.prepare(x)
    layers = model.infer(bottom_up, (3,), torch.Generator().manual_seed(0))
    assert [layer.z.shape for layer in layers] == [(3, 64, d) for d in (64, 32, 16, 8, 2)]
    assert layers[-1].q is bottom_up[-1] and layers[-1].p is None  # q(z_L|x) is the top's
    for i in range(4):
        merged = precision_weighted(bottom_up[i], model.p_z(i, layers[i + 1].z))
        torch.testing.assert_close(layers[i].q.mean, merged.mean)
        torch.testing.assert_close(layers[i].p.logvar, model.p_z(i, layers[i + 1].z).logvar)


def test_the_kl_of_each_layer_sums_to_the_kl_term_and_warms_up(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = build_model("ladder-vae", tiny_config("ladder-vae"))
    torch.manual_seed(3)
    full = model.loss("model", Batch(x), StepContext()).metrics
    torch.manual_seed(3)
    half = model.loss("model", Batch(x), StepContext(kl_warmup=0.5)).metrics
    per_layer = [full[f"kl_z{i}"] for i in range(1, 6)]
    torch.testing.assert_close(full["kl"], torch.stack(per_layer).sum())
    torch.testing.assert_close(full["neg_elbo"], full["recon"] + full["kl"])
    torch.testing.assert_close(half["loss"], full["recon"] + 0.5 * full["kl"])
    numbers = model.eval_numbers(x)
    assert numbers["latent_dims_per_layer"] == [64, 32, 16, 8, 2]
    assert len(numbers["kl_per_layer"]) == len(numbers["active_units_per_layer"]) == 5
    assert all(kl >= 0 for kl in numbers["kl_per_layer"][:-1])  # closed forms given the draw


@torch.no_grad()
def test_decode_runs_the_generative_model_down_at_its_means(digits):
    torch.manual_seed(0)
    model = build_model("ladder-vae", tiny_config("ladder-vae", lower_latent_dims=(6,),
                                                  upper_hidden=(8,)))  # fmt: skip
    z2 = torch.randn(5, 2)
    expected = model.likelihood(model.decoder(model.p_z(0, z2).mean)).mean
    torch.testing.assert_close(model.decode(z2).mean, expected, rtol=0, atol=0)


def test_upper_hidden_needs_one_width_per_upper_layer():
    with pytest.raises(VaelabError, match="expected one per layer above the bottom, 4"):
        LadderVAEConfig(upper_hidden=(64,)).validate()
    with pytest.raises(VaelabError, match="model lower_latent_dims is"):
        LadderVAEConfig(lower_latent_dims=(0,), upper_hidden=(8,)).validate()
