"""The inverse autoregressive flow (flows.py) and the models that use it (models/iaf.py): the
autoregressive property, the log-determinant against autograd's Jacobian and a closed form, the
bound with an identity flow, and ELBO <= IWAE-k <= log p(x) against quadrature."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from conftest import tiny_config
from vaelab.distributions import DiagonalGaussian, gaussian_log_prob, log_mean_exp
from vaelab.errors import VaelabError
from vaelab.flows import MADE, IAFPosterior, IAFStep, InverseAutoregressiveFlow
from vaelab.models import build_model
from vaelab.models.iaf import VAEIAFConfig

D, C = 5, 3


def made_outputs(made: MADE, h: torch.Tensor):
    return lambda z: torch.cat(made(z[None], h), dim=-1)[0]  # (2D,): m, then s


@pytest.mark.parametrize("reverse", [False, True])
def test_made_output_d_depends_only_on_the_inputs_before_d(reverse):
    torch.manual_seed(0)
    order = torch.arange(D, 0, -1) if reverse else torch.arange(1, D + 1)
    made = MADE(order, C, (16, 16)).double()
    z, h = torch.randn(D, dtype=torch.float64), torch.randn(1, C, dtype=torch.float64)
    jac = jacobian(made_outputs(made, h), z)  # (2D, D)
    before = order[None, :] < order[:, None]  # (D, D): input j comes before output i
    for part in jac.split(D):  # d m / dz, then d s / dz
        assert torch.equal(part[~before], torch.zeros_like(part[~before]))
        assert bool((part[before] != 0).all())  # and on every earlier input: degrees cycle


def test_an_iaf_step_has_a_triangular_jacobian_with_sigma_on_its_diagonal():
    torch.manual_seed(1)
    step = IAFStep(torch.arange(1, D + 1), C, (16,)).double()
    z, h = torch.randn(D, dtype=torch.float64), torch.randn(1, C, dtype=torch.float64)
    jac = jacobian(lambda v: step(v[None], h)[0][0], z)  # (D, D)
    assert torch.equal(jac.triu(1), torch.zeros_like(jac))
    _, s = step.made(z[None], h)
    torch.testing.assert_close(jac.diagonal(), torch.sigmoid(s[0]))
    torch.testing.assert_close(step(z[None], h)[1][0], torch.sigmoid(s[0]).log().sum())


def test_the_log_determinant_is_autograds_for_several_steps():
    """Reversed orders make the whole flow's Jacobian dense; its log|det| is still the sum of
    the steps' log sigma."""
    torch.manual_seed(2)
    flow = InverseAutoregressiveFlow(D, C, (16,), steps=3).double()
    h = torch.randn(1, C, dtype=torch.float64)
    for _ in range(3):
        z0 = 2 * torch.randn(D, dtype=torch.float64)
        jac = jacobian(lambda v: flow(v[None], h)[0][0], z0)
        assert (jac.triu(1) != 0).any() and (jac.tril(-1) != 0).any()
        torch.testing.assert_close(flow(z0[None], h)[1][0], torch.linalg.slogdet(jac)[1])


def posterior(dim: int, steps: int, seed: int = 3, batch: int = 4) -> IAFPosterior:
    torch.manual_seed(seed)
    flow = InverseAutoregressiveFlow(dim, C, (16,), steps).double()
    mean, logvar = torch.randn(batch, dim).double(), torch.randn(batch, dim).double()
    return IAFPosterior(DiagonalGaussian(mean, logvar), torch.randn(batch, C).double(), flow)


def test_the_density_of_a_sample_is_the_change_of_variables_of_the_gaussian():
    """log q(z_T|x) = log q(z_0|x) - log|det dz_T/dz_0|, the Jacobian by autograd per image."""
    q = posterior(D, steps=2)
    z, log_q = q.rsample_with_log_prob((3,), torch.Generator().manual_seed(0))
    z0 = q.base.rsample((3,), torch.Generator().manual_seed(0))  # the same draws
    for s in range(3):
        for b in range(4):
            jac = jacobian(lambda v, b=b: q.flow(v[None], q.context[b : b + 1])[0][0], z0[s, b])
            expected = q.base.log_prob(z0[s, b])[b] - torch.linalg.slogdet(jac)[1]
            torch.testing.assert_close(log_q[s, b], expected)
    torch.testing.assert_close(z, q.flow(z0, q.context)[0])


def test_in_one_dimension_the_flow_is_affine_and_the_density_gaussian():
    """With D = 1 every step's m and sigma depend on h only: z_T = a z_0 + b, so q(z_T|x) is
    N(a mu + b, (a sigma_0)^2) in closed form."""
    q = posterior(1, steps=3)
    b = q.flow(torch.zeros(4, 1, dtype=torch.float64), q.context)[0]
    a = q.flow(torch.ones(4, 1, dtype=torch.float64), q.context)[0] - b
    z, log_q = q.rsample_with_log_prob((1000,))
    logvar = q.base.logvar + 2 * a.log()
    torch.testing.assert_close(log_q, gaussian_log_prob(z, a * q.base.mean + b, logvar)[..., 0])


def test_the_posterior_mean_is_the_flow_at_the_gaussian_mean_and_other_densities_are_refused():
    q = posterior(D, steps=2)
    torch.testing.assert_close(q.mean, q.flow(q.base.mean, q.context)[0])
    assert q.sample((2,)).shape == (2, 4, D) and not q.sample().requires_grad
    with pytest.raises(VaelabError, match="only at the samples it draws"):
        q.log_prob(q.mean)


@pytest.mark.parametrize("name,gaussian", [("vae-iaf", "vae"), ("iwae-iaf", "iwae")])
def test_with_an_identity_flow_the_bound_is_the_gaussian_models(name, gaussian, digits):
    x = digits[0][:16]
    iaf = build_model(name, tiny_config(name, flow_steps=0, flow_context=0))
    plain = build_model(gaussian, tiny_config(gaussian))
    plain.load_state_dict(iaf.state_dict())
    weights = [m.log_weights(x, None, 7, torch.Generator().manual_seed(0)) for m in (iaf, plain)]
    torch.testing.assert_close(*weights)
    torch.testing.assert_close(iaf.reconstruct(x), plain.reconstruct(x))


def quadrature_log_px(model, x: torch.Tensor, half_width: float = 7.0, n: int = 401):
    """log p(x) = log sum_z p(x|z) p(z) dz over a grid on [-w, w]^2 (a 2-D latent)."""
    axis = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    z = torch.cartesian_prod(axis, axis)[:, None, :].expand(-1, len(x), -1)  # (n^2, B, 2)
    log_joint = model.decode(z).log_prob(x) + model.prior.log_prob(z)  # (n^2, B)
    return torch.logsumexp(log_joint, 0) + 2 * math.log(axis[1] - axis[0])


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_elbo_below_iwae_below_log_px_and_the_weights_are_unbiased(prior):
    """On a 2x2-pixel model with a 2-D latent and log p(x) by quadrature: E[ELBO] < E[L_8] <
    log p(x), and E[w] = p(x) for w = p(x, z) / q(z|x), z ~ q (within 4 standard errors):
    a log q(z|x) off by a term, such as a log-determinant with the wrong sign (3 steps x 2
    dims x log sigmoid(2) = -0.77 nats at the start), would scale the mean weight by it."""
    torch.manual_seed(4)
    config = VAEIAFConfig(image_shape=(1, 2, 2), latent_dim=2, hidden=(8,), flow_hidden=(8,),
                          flow_context=4, flow_steps=3, prior=prior, pseudo_inputs=3)  # fmt: skip
    model = build_model("vae-iaf", config).double().eval()
    x = torch.tensor([[0, 0, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.float64)
    x = x.view(3, 1, 2, 2)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        log_px = quadrature_log_px(model, x)
        log_w = model.log_weights(x, None, 40_000, gen)  # (40000, 3)
    elbo, iwae_8 = log_w.mean(0), log_mean_exp(log_w.view(5000, 8, 3), 1).mean(0)
    assert bool((elbo < iwae_8).all()) and bool((iwae_8 < log_px).all())
    ratio = (log_w - log_px).exp()  # w / p(x): mean 1
    se = ratio.std(0) / math.sqrt(len(ratio))
    assert bool((se < 0.05).all()) and bool(((ratio.mean(0) - 1).abs() < 4 * se).all())


def test_with_the_vampprior_the_components_are_the_gaussian_part(digits):
    model = build_model("vae-iaf", tiny_config("vae-iaf", prior="vamp", pseudo_inputs=5))
    u = torch.nn.functional.hardtanh(model.prior.pseudo_inputs, 0.0, 1.0)
    mixture = model.prior.frozen().components
    torch.testing.assert_close(mixture.mean, model.gaussian_part(u).mean)
    assert torch.isfinite(model.elbo(digits[0][:8])).all()


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"flow_steps": -1}, "flow_steps is -1"),
        ({"flow_hidden": ()}, "flow_hidden is ()"),
        ({"flow_hidden": (0,)}, "flow_hidden is (0,)"),
        ({"flow_context": -2}, "flow_context is -2"),
    ],
)
def test_the_flow_options_are_checked(changes, message):
    with pytest.raises(VaelabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        VAEIAFConfig(**changes).validate()
