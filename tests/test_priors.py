"""Priors (vaelab.priors): samples, densities against torch.distributions, the KL against its
closed form, the per-dimension KL against what it says it measures, and that every model that
has a prior uses the one abstraction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from conftest import tiny_config
from vaelab.distributions import DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.models import MODELS, build_model
from vaelab.priors import CircleMixture, DiagonalMixture, Prior, StandardNormal, SwissRoll
from vaelab.training.checkpoint import load_weights, save_checkpoint


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def every_part(parts: int = 10, per_part: int = 2000) -> torch.Tensor:
    return torch.arange(parts).repeat_interleave(per_part)


def circle_reference(prior: CircleMixture) -> D.MixtureSameFamily:
    """The circle mixture built from torch.distributions: component c has covariance
    R_c diag(radial^2, tangential^2) R_c^T, R_c the rotation by c's angle."""
    angle = 2 * math.pi * torch.arange(prior.parts) / prior.parts
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1),
                       torch.stack([angle.sin(), angle.cos()], -1)], -2)  # fmt: skip
    scale = torch.diag(torch.tensor([prior.radial_std, prior.tangential_std]) ** 2)
    cov = rot @ scale @ rot.transpose(-1, -2)
    comps = D.MultivariateNormal(prior.means(), covariance_matrix=cov)
    return D.MixtureSameFamily(D.Categorical(logits=torch.zeros(prior.parts)), comps)


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    "prior", [StandardNormal(5), CircleMixture(2, 10), SwissRoll(2, 10)], ids=type
)
def test_prior_samples_have_shape_n_by_d_and_follow_the_generator(prior):
    z = prior.sample(7, generator=gen(3))
    assert z.shape == (7, prior.dim) and z.dtype == torch.float32
    assert torch.equal(z, prior.sample(7, generator=gen(3)))
    assert prior.sample(4, y=torch.tensor([0, 3, 9, 1])).shape == (4, prior.dim)


def test_mixture_components_lie_on_a_circle_and_samples_centre_on_them():
    prior = CircleMixture(2, 10)
    means = prior.means()
    torch.testing.assert_close(means.norm(dim=1), torch.full((10,), prior.radius))
    angles = torch.atan2(means[:, 1], means[:, 0]).remainder(2 * math.pi)
    torch.testing.assert_close(angles, 2 * math.pi * torch.arange(10) / 10)
    y = every_part()
    z = prior.sample(len(y), y, gen())
    centres = torch.stack([z[y == c].mean(0) for c in range(10)])
    assert (centres - means).norm(dim=1).max() < 0.1  # the standard error is ~0.02
    # Part 0 sits on the +z1 axis: its spread is radial_std along z1, tangential_std along z2.
    spread = z[y == 0].std(0)
    torch.testing.assert_close(spread, torch.tensor([1.0, 0.5]), atol=0.05, rtol=0)


def test_unlabelled_mixture_samples_use_every_component_about_equally():
    prior = CircleMixture(2, 10)
    z = prior.sample(20_000, generator=gen())
    counts = torch.bincount(torch.cdist(z, prior.means()).argmin(1), minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200


def test_swiss_roll_parts_follow_one_another_along_the_roll():
    prior = SwissRoll(2, 10)
    y = every_part(per_part=500)
    z = prior.sample(len(y), y, gen())
    # The distance from the centre grows along the roll: scale * sqrt(t), part c is t in
    # [c, c + 1) / 10, so each part's band of radii lies beyond the one before it.
    radius = z.norm(dim=1)
    medians = torch.stack([radius[y == c].median() for c in range(10)])
    assert torch.all(medians.diff() > 0)
    for c in range(10):
        lo, hi = (prior.scale * math.sqrt(t / 10) for t in (c, c + 1))
        r = radius[y == c]
        assert r.min() > lo - 5 * prior.noise_std and r.max() < hi + 5 * prior.noise_std
    # And it is a spiral: the angle turns with the radius (turns * 2 pi over the whole roll).
    inner, outer = z[y == 0], z[y == 9]
    assert inner.norm(dim=1).mean() < 1.5 < 3.5 < outer.norm(dim=1).mean()


def test_label_aware_sampling_draws_each_row_from_its_own_part():
    y = torch.randint(10, (5000,), generator=gen(1))
    mixture = CircleMixture(2, 10)
    nearest = torch.cdist(mixture.sample(len(y), y, gen()), mixture.means()).argmin(1)
    assert (nearest == y).float().mean() > 0.95  # the rest spill over near the centre
    roll = SwissRoll(2, 10)
    radius = roll.sample(len(y), y, gen()).norm(dim=1)
    lo = roll.scale * (y / 10).sqrt() - 5 * roll.noise_std
    hi = roll.scale * ((y + 1) / 10).sqrt() + 5 * roll.noise_std
    assert torch.all((radius > lo) & (radius < hi))


# ----------------------------------------------------------------------------- densities


def test_standard_normal_density_and_closed_form_kl_match_torch():
    prior, z = StandardNormal(3), torch.randn(4, 5, 3)
    reference = D.Independent(D.Normal(torch.zeros(3), torch.ones(3)), 1)
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(prior.marginal_log_prob(z), D.Normal(0.0, 1.0).log_prob(z))
    q = DiagonalGaussian(torch.randn(6, 3), torch.randn(6, 3))
    exact = D.kl_divergence(D.Independent(D.Normal(q.mean, q.std), 1), reference)
    torch.testing.assert_close(prior.kl(q, q.sample()), exact)
    per_dim, measure = prior.kl_per_dim(q)
    torch.testing.assert_close(per_dim.sum(-1), exact)
    assert measure == "KL(q(z_d|x) || N(0, 1)), closed form"


def test_circle_mixture_density_matches_torch_with_and_without_labels():
    prior = CircleMixture(2, 10)
    reference = circle_reference(prior)
    z = 5 * torch.randn(3, 7, 2)
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))
    y = torch.randint(10, (3, 7), generator=gen())
    part = reference.component_distribution.log_prob(z.unsqueeze(-2))  # (3, 7, 10)
    torch.testing.assert_close(prior.log_prob(z, y), part.gather(-1, y[..., None])[..., 0])
    # Each dimension's marginal is a 1-D mixture of the components' marginals.
    cov = reference.component_distribution.covariance_matrix  # (10, 2, 2)
    for d in range(2):
        marginal = D.MixtureSameFamily(
            D.Categorical(logits=torch.zeros(10)),
            D.Normal(prior.means()[:, d], cov[:, d, d].sqrt()),
        )
        torch.testing.assert_close(prior.marginal_log_prob(z)[..., d], marginal.log_prob(z[..., d]))


def test_diagonal_mixture_density_matches_torch():
    components = DiagonalGaussian(torch.randn(5, 3), torch.randn(5, 3))
    prior = DiagonalMixture(components)
    comps = D.Independent(D.Normal(components.mean, components.std), 1)
    reference = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(5)), comps)
    z = 3 * torch.randn(4, 6, 3)
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))
    y = torch.randint(5, (4, 6), generator=gen())
    picked = comps.log_prob(z.unsqueeze(-2)).gather(-1, y[..., None])[..., 0]
    torch.testing.assert_close(prior.log_prob(z, y), picked)
    one_d = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(5)),
                                D.Normal(components.mean[:, 1], components.std[:, 1]))  # fmt: skip
    torch.testing.assert_close(prior.marginal_log_prob(z)[..., 1], one_d.log_prob(z[..., 1]))


def test_the_estimated_kl_per_dim_is_unbiased_and_says_what_it_measures():
    # A "mixture" of one N(0, 1) component is N(0, I): the one-sample estimate must average to
    # the closed form, and it names what it measured against.
    normal = DiagonalMixture(DiagonalGaussian(torch.zeros(1, 2), torch.zeros(1, 2)), "N(0, I)")
    q = DiagonalGaussian(torch.tensor([[1.0, -0.5]]).expand(20000, 2), torch.full((20000, 2), -1.0))
    estimate, measure = normal.kl_per_dim(q, gen())
    exact = q.kl_per_dim()[0]
    se = estimate.std(0) / math.sqrt(len(estimate))
    assert torch.all((estimate.mean(0) - exact).abs() < 4 * se)
    assert "one-sample estimate" in measure and "N(0, I)" in measure
    # And the KL itself is estimated at the sample where there is no closed form.
    z = q.sample((), gen(1))
    torch.testing.assert_close(normal.kl(q, z), q.log_prob(z) - normal.log_prob(z))


def test_the_swiss_roll_samples_but_has_no_density():
    roll = SwissRoll(2, 10)
    assert not roll.has_density and roll.sample(3).shape == (3, 2)
    with pytest.raises(VaelabError, match="swiss roll prior has no density in closed form"):
        roll.log_prob(torch.zeros(1, 2))


@pytest.mark.parametrize("prior", ["mixture", "swiss-roll"])
def test_two_d_priors_refuse_other_latent_sizes(prior):
    with pytest.raises(VaelabError, match=f"latent_dim is 5: the {prior} prior is 2-D"):
        build_model("aae", tiny_config("aae", latent_dim=5, prior=prior))


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_samples_from_its_prior(name):
    torch.manual_seed(0)
    model = build_model(name, tiny_config(name))
    assert isinstance(model.prior, Prior)
    z = model.sample_prior(4000, gen())
    assert torch.equal(z, model.prior.sample(4000, generator=gen()))
    assert torch.equal(z, model.sample_prior(4000, gen()))


def test_the_vae_trains_under_the_mixture_prior_with_its_density(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = build_model("vae", tiny_config("vae", prior="mixture"))
    q = model.encode(x)
    z = q.rsample()
    torch.testing.assert_close(model.kl_estimate(q, z), q.log_prob(z) - model.prior.log_prob(z))
    assert "mixture of 10 Gaussians" in model.latent_summary(x).measure


def test_a_vampprior_run_saved_before_the_prior_module_still_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model("vae", tiny_config("vae", prior="vamp", pseudo_inputs=3))
    old = {("pseudo_inputs" if k == "prior.pseudo_inputs" else k): v
           for k, v in model.state_dict().items()}  # fmt: skip
    saved = build_model("vae", tiny_config("vae", prior="vamp", pseudo_inputs=3))
    saved.load_state_dict(model.state_dict())
    save_checkpoint(tmp_path, _StateDictAs(saved, old), {}, {}, {})
    fresh = build_model("vae", tiny_config("vae", prior="vamp", pseudo_inputs=3))
    load_weights(tmp_path, fresh, fresh.renamed_weights)
    torch.testing.assert_close(fresh.prior.pseudo_inputs, model.prior.pseudo_inputs)


class _StateDictAs(torch.nn.Module):
    """A module whose state_dict is a given dict (a checkpoint as an older version wrote it)."""

    def __init__(self, model, state):
        super().__init__()
        self.model, self.state = model, state

    def state_dict(self, *args, **kwargs):
        return self.state
