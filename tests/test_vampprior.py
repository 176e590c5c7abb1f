"""The VampPrior (Tomczak & Welling 2018): its density against a direct mixture, sampling, the
ELBO and the importance-sampled likelihood under it, for the VAE and the IWAE."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from conftest import tiny_config
from vaelab.errors import VaelabError
from vaelab.evaluation.likelihood import elbo, iwae_bound
from vaelab.models import Batch, StepContext, build_model


def vamp(name="vae", **changes):
    torch.manual_seed(0)
    fields = {"latent_dim": 3, "prior": "vamp", "pseudo_inputs": 7, **changes}
    return build_model(name, tiny_config(name, **fields))


def direct_mixture(model) -> D.Distribution:
    c = model.prior.frozen().components
    comps = D.Independent(D.Normal(c.mean, c.std), 1)
    weights = D.Categorical(logits=torch.zeros(len(c.mean)))
    return D.MixtureSameFamily(weights, comps)


def test_log_density_is_the_mixture_of_posteriors_at_the_pseudo_inputs():
    model = vamp()
    z = torch.randn(4, 5, 3) * 2  # any leading dims
    torch.testing.assert_close(model.prior.log_prob(z), direct_mixture(model).log_prob(z))
    # The components are the encoder's posteriors at the clipped pseudo-inputs.
    u = model.prior.pseudo_inputs.clamp(0, 1)
    torch.testing.assert_close(model.prior.frozen().components.mean, model.encode(u).mean)
    assert model.prior.pseudo_inputs.shape == (7, 1, 28, 28)


def test_samples_follow_the_mixture_and_the_generator():
    model = vamp()
    first = model.sample_prior(4000, torch.Generator().manual_seed(1))
    again = model.sample_prior(4000, torch.Generator().manual_seed(1))
    assert first.shape == (4000, 3) and torch.equal(first, again)
    mix = direct_mixture(model)
    with torch.no_grad():
        torch.testing.assert_close(first.mean(0), mix.mean, atol=0.1, rtol=0)
        # The samples' mean log-density is the mixture's negative entropy, within noise.
        reference = mix.log_prob(mix.sample((20000,))).mean()
        assert abs(mix.log_prob(first).mean() - reference) < 0.1


def test_loss_kl_is_log_q_minus_log_prior_at_the_decoded_sample(digits):
    x, _ = digits
    model = vamp()
    torch.manual_seed(3)
    out = model.loss("model", Batch(x), StepContext())
    torch.manual_seed(3)
    q = model.encode(x)
    z = q.rsample()
    kl = q.log_prob(z) - model.prior.log_prob(z)
    recon = -model.decode(z).log_prob(x)
    torch.testing.assert_close(out.loss, (recon + kl).mean())
    torch.testing.assert_close(out.metrics["kl"], kl.mean())
    out.loss.backward()
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0  # the prior is learned


def test_importance_sampled_likelihood_uses_the_vampprior(digits):
    x, _ = digits
    model = vamp().eval()
    x = x[:6]
    gen = torch.Generator().manual_seed(0)
    estimate = iwae_bound(model, x, k=50, generator=gen)
    gen = torch.Generator().manual_seed(0)
    q = model.encode(x)
    z = q.rsample((50,), gen)
    log_w = model.decode(z).log_prob(x) + direct_mixture(model).log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(estimate, torch.logsumexp(log_w, 0) - math.log(50))
    # ELBO <= L_k on average, under the same prior.
    torch.manual_seed(0)
    elbos = torch.stack([elbo(model, x) for _ in range(200)]).mean()
    assert elbos < iwae_bound(model, x, k=500).mean()


def test_the_iwae_trains_under_the_vampprior(digits):
    x, _ = digits
    model = vamp("iwae", k=4)
    out = model.loss("model", Batch(x), StepContext())
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.prior.pseudo_inputs.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"prior": "flat"}, "prior is 'flat': expected one of normal, vamp, mixture"),
        ({"prior": "vamp", "pseudo_inputs": 0}, "pseudo_inputs is 0"),
    ],
)
def test_bad_prior_configs_are_refused(changes, message):
    with pytest.raises(VaelabError, match=message):
        build_model("vae", tiny_config("vae", **changes))


def test_the_conditional_vae_refuses_the_vampprior():
    with pytest.raises(VaelabError, match="'vamp' is for unconditional models"):
        build_model("cvae", tiny_config("cvae", prior="vamp"))
