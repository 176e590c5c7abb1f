"""MIWAE, CIWAE and PIWAE (Rainforth et al. 2018): each bound against a direct computation from
the same log weights, the special cases that reduce to the IWAE and the ELBO, and PIWAE's two
phases (disjoint parameters, each phase's gradient that of its own bound)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_config
from vaelab.errors import VaelabError
from vaelab.models import Batch, StepContext, build_model
from vaelab.models.ciwae import CIWAEConfig, ciwae_bound
from vaelab.models.miwae import MIWAEConfig, miwae_bound
from vaelab.training.trainer import make_adam


def direct_iwae(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k per image (B,) from log_w (K, B): the weights themselves, in float64
    and relative to the image's largest (a model's log weights are hundreds of nats)."""
    top = log_w.detach().double().amax(0)
    return (log_w.double() - top).exp().mean(0).log() + top


def direct_miwae(log_w: torch.Tensor, m: int) -> torch.Tensor:
    k = len(log_w) // m
    return sum(direct_iwae(log_w[i * k : (i + 1) * k]) for i in range(m)) / m


@pytest.fixture
def log_w() -> torch.Tensor:
    return torch.randn(24, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_miwae_is_the_mean_of_m_iwae_bounds_of_k_samples(log_w):
    for m in (1, 2, 3, 4, 6, 24):
        torch.testing.assert_close(miwae_bound(log_w, m), direct_miwae(log_w, m))


def test_miwae_1_k_is_iwae_k_and_miwae_m_1_is_the_elbo_estimate(log_w):
    torch.testing.assert_close(miwae_bound(log_w, 1), direct_iwae(log_w))
    torch.testing.assert_close(miwae_bound(log_w, len(log_w)), log_w.mean(0))


def test_ciwae_mixes_the_elbo_and_the_iwae_bound(log_w):
    elbo, iwae = log_w.mean(0), direct_iwae(log_w)
    for beta in (0.0, 0.25, 0.5, 1.0):
        torch.testing.assert_close(ciwae_bound(log_w, beta), beta * elbo + (1 - beta) * iwae)
    torch.testing.assert_close(ciwae_bound(log_w, 1.0), elbo)
    torch.testing.assert_close(ciwae_bound(log_w, 0.0), iwae)


def test_the_bounds_order_elbo_miwae_iwae(log_w):
    """Jensen on each group: ELBO <= MIWAE(M, K) <= IWAE-(M K), pointwise for any weights."""
    elbo, iwae = log_w.mean(0), direct_iwae(log_w)
    for m in (2, 3, 4):
        assert bool((elbo <= miwae_bound(log_w, m) + 1e-12).all())
        assert bool((miwae_bound(log_w, m) <= iwae + 1e-12).all())


def model(name: str, seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_model(name, tiny_config(name, **changes))


def loss_and_log_weights(m, x, samples: int, phase: str = "model"):
    """The model's loss, and log_weights drawn with the same noise (S, B)."""
    torch.manual_seed(7)
    loss = m.loss(phase, Batch(x), StepContext()).loss
    torch.manual_seed(7)
    return loss, m.log_weights(x, None, samples)


@pytest.mark.parametrize("mk", [(1, 6), (3, 4), (5, 1)])
def test_miwae_loss_is_minus_the_direct_bound(mk, digits):
    x = digits[0][:16]
    m, k = mk
    miwae = model("miwae", m=m, k=k)
    loss, log_w = loss_and_log_weights(miwae, x, m * k)
    torch.testing.assert_close(loss.double(), -direct_miwae(log_w, m).mean())


def test_miwae_1_k_trains_as_iwae_k(digits):
    x = digits[0][:16]
    iwae, miwae = model("iwae", k=6), model("miwae", seed=1, m=1, k=6)
    miwae.load_state_dict(iwae.state_dict())
    torch.testing.assert_close(loss_and_log_weights(miwae, x, 6)[0],
                               loss_and_log_weights(iwae, x, 6)[0])  # fmt: skip


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_ciwae_loss_is_minus_the_direct_bound(beta, digits):
    x = digits[0][:16]
    loss, log_w = loss_and_log_weights(model("ciwae", k=5, elbo_weight=beta), x, 5)
    direct = beta * log_w.double().mean(0) + (1 - beta) * direct_iwae(log_w)
    torch.testing.assert_close(loss.double(), -direct.mean())


def test_ciwae_0_trains_as_iwae(digits):
    x = digits[0][:16]
    iwae, ciwae = model("iwae", k=5), model("ciwae", seed=1, k=5, elbo_weight=0.0)
    ciwae.load_state_dict(iwae.state_dict())
    torch.testing.assert_close(loss_and_log_weights(ciwae, x, 5)[0],
                               loss_and_log_weights(iwae, x, 5)[0])  # fmt: skip


PIWAE_CASES = [{}, {"prior": "vamp", "pseudo_inputs": 5}]


@pytest.mark.parametrize("changes", PIWAE_CASES, ids=["normal", "vamp"])
def test_piwae_phases_split_the_parameters(changes):
    piwae = model("piwae", m=2, k=3, **changes)
    decoder, encoder = piwae.phases()
    assert (decoder.name, encoder.name) == ("decoder", "encoder")
    ids = [{id(p) for p in phase.parameters} for phase in (decoder, encoder)]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {id(p) for p in piwae.parameters()}
    assert ids[1] == {id(p) for p in piwae.encoder.parameters()}


@pytest.mark.parametrize("changes", PIWAE_CASES, ids=["normal", "vamp"])
def test_each_piwae_phase_follows_the_gradient_of_its_own_bound(changes, digits):
    """decoder: grad of IWAE-(M K); encoder: grad of MIWAE(M, K), each by autograd on the
    direct computation from the same samples."""
    x, (m, k) = digits[0][:16].double(), (2, 3)
    piwae = model("piwae", m=m, k=k, **changes).double()  # float64: rounding apart, equal
    targets = {"decoder": lambda w: direct_iwae(w), "encoder": lambda w: direct_miwae(w, m)}
    for phase in piwae.phases():
        loss, log_w = loss_and_log_weights(piwae, x, m * k, phase.name)
        got = torch.autograd.grad(loss, phase.parameters, allow_unused=True)
        direct = -targets[phase.name](log_w).mean()
        expected = torch.autograd.grad(direct, phase.parameters, allow_unused=True)
        for g, e in zip(got, expected, strict=True):
            assert e is not None and e.abs().sum() > 0
            torch.testing.assert_close(g, e)


def test_a_piwae_phase_step_moves_only_its_own_parameters(digits):
    x = digits[0][:16]
    piwae = model("piwae", m=2, k=3, prior="vamp", pseudo_inputs=5)
    for phase in piwae.phases():
        before = {n: p.detach().clone() for n, p in piwae.named_parameters()}
        opt = make_adam(phase.parameters, 1e-2)  # as the trainer: one Adam per phase
        piwae.zero_grad(set_to_none=True)
        piwae.loss(phase.name, Batch(x), StepContext()).loss.backward()
        opt.step()
        own = {id(p) for p in phase.parameters}
        for name, p in piwae.named_parameters():
            assert torch.equal(p, before[name]) != (id(p) in own), (phase.name, name)


def test_piwae_refuses_an_unknown_phase(digits):
    with pytest.raises(VaelabError, match="no phase 'model'"):
        model("piwae", m=1, k=2).loss("model", Batch(digits[0][:4]), StepContext())


@pytest.mark.parametrize(
    "cls,changes,message",
    [
        (MIWAEConfig, {"m": 0}, "model m is 0"),
        (MIWAEConfig, {"k": 0}, "model k is 0"),
        (CIWAEConfig, {"elbo_weight": 1.5}, "elbo_weight is 1.5"),
        (CIWAEConfig, {"elbo_weight": math.nan}, "elbo_weight is nan"),
    ],
)
def test_configs_refuse_bad_values(cls, changes, message):
    with pytest.raises(VaelabError, match=message):
        cls(**changes).validate()


def test_miwae_draws_m_times_k_samples():
    assert MIWAEConfig(m=3, k=4).samples == 12 and CIWAEConfig(k=4).samples == 4
