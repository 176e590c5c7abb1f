"""The models for sample quality and disentanglement: WAE, InfoVAE, beta-TCVAE, FactorVAE and
VQ-VAE. Each loss against a direct computation, the estimators against brute force or closed
forms, and the settings that reduce to the VAE."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from conftest import tiny_config
from vaelab.distributions import DiagonalGaussian, gaussian_kl
from vaelab.errors import VaelabError
from vaelab.models import Batch, StepContext, build_model, get_model_class
from vaelab.models.beta_tcvae import kl_decomposition
from vaelab.models.factor_vae import permute_dims
from vaelab.models.mmd import kernel_matrix, mmd_unbiased
from vaelab.models.vq import EMACodebook, LearnedCodebook, straight_through
from vaelab.priors import StandardNormal


def make(name, seed=0, **changes):
    torch.manual_seed(seed)
    return build_model(name, tiny_config(name, **changes))


# -- MMD (WAE, InfoVAE) --------------------------------------------------------------------------
def brute_mmd(z, p, kernel):
    """The U-statistic of WAE's Algorithm 1 with a double loop over Python floats."""
    n, d = z.shape
    c = 2.0 * d

    def k(a, b):
        sq = sum((float(a[i]) - float(b[i])) ** 2 for i in range(d))
        return c / (c + sq) if kernel == "imq" else math.exp(-sq / c)

    same = sum(k(z[i], z[j]) + k(p[i], p[j]) for i in range(n) for j in range(n) if i != j)
    cross = sum(k(z[i], p[j]) for i in range(n) for j in range(n))
    return same / (n * (n - 1)) - 2 * cross / n**2


@pytest.mark.parametrize("kernel", ["imq", "gaussian"])
def test_mmd_matches_a_double_loop(kernel):
    gen = torch.Generator().manual_seed(0)
    z, p = torch.randn(6, 3, generator=gen) + 0.5, torch.randn(6, 3, generator=gen)
    got = mmd_unbiased(z.double(), p.double(), kernel).item()
    assert got == pytest.approx(brute_mmd(z.double(), p.double(), kernel), rel=1e-5)


def test_imq_kernel_is_c_over_c_plus_squared_distance():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])  # |a - b|^2 = 25, C = 4
    assert kernel_matrix(a, b, "imq").item() == pytest.approx(4 / 29)


def test_mmd_estimate_is_unbiased():
    """Between two samples of one distribution the U-statistic averages to 0 (the V-statistic
    would average (1 - E k)(2/n) > 0)."""
    gen = torch.Generator().manual_seed(1)
    values = [mmd_unbiased(torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen),
                           "imq").item() for _ in range(2000)]  # fmt: skip
    mean, se = torch.tensor(values).mean().item(), torch.tensor(values).std().item() / 2000**0.5
    assert abs(mean) < 3 * se


def test_mmd_of_one_code_is_zero_with_a_finite_gradient():
    z = torch.randn(1, 2, requires_grad=True)
    out = mmd_unbiased(z, torch.randn(1, 2), "imq")
    out.backward()
    assert out.item() == 0 and torch.isfinite(z.grad).all()


def test_wae_loss_is_recon_plus_lambda_mmd_with_prior_samples(digits):
    x, _ = digits
    model = make("wae", lam=7.0)
    torch.manual_seed(3)
    out = model.loss("model", Batch(x), StepContext()).metrics
    z = model.encode(x).mean  # deterministic codes
    torch.manual_seed(3)
    prior = model.sample_prior(len(x))  # the loss's draw: as many N(0, I) samples as codes
    mmd = mmd_unbiased(z, prior, "imq")
    recon = -model.decode(z).log_prob(x).mean()
    torch.testing.assert_close(out["mmd"], mmd.detach())
    torch.testing.assert_close(out["loss"], (recon + 7.0 * mmd).detach())


def test_info_vae_with_alpha_0_lambda_1_is_the_vae(digits):
    x, _ = digits
    vae, info = make("vae"), make("info-vae", alpha=0.0, lam=1.0)
    info.load_state_dict(vae.state_dict())
    torch.manual_seed(4)
    a = vae.loss("model", Batch(x), StepContext(kl_warmup=0.5)).metrics
    torch.manual_seed(4)
    b = info.loss("model", Batch(x), StepContext(kl_warmup=0.5)).metrics
    for key in ("loss", "recon", "kl", "neg_elbo"):
        torch.testing.assert_close(a[key], b[key])
    assert info.loss_name == "negative ELBO"


def test_info_vae_loss_weighs_kl_and_mmd(digits):
    x, _ = digits
    m = make("info-vae", alpha=0.5, lam=3.0).loss("model", Batch(x), StepContext()).metrics
    torch.testing.assert_close(m["loss"], m["recon"] + 0.5 * m["kl"] + 2.5 * m["mmd"])


@pytest.mark.parametrize("changes", [{"beta": 2.0}, {"alpha": 1.5}, {"alpha": 0.0, "lam": 0.5}])
def test_info_vae_refuses_weights_off_its_family(changes):
    with pytest.raises(VaelabError):
        tiny_config("info-vae", **changes).validate()


# -- beta-TCVAE ----------------------------------------------------------------------------------
def small_posterior(b=5, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = DiagonalGaussian(torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen) * 0.5)
    return q, q.rsample((), gen)


def normal_log(z, mean, logvar):
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean) ** 2 / math.exp(logvar))


def test_minibatch_weighted_sampling_matches_a_double_loop():
    q, z = small_posterior()
    n_data, (b, d) = 1000, z.shape
    got = kl_decomposition(q, z, StandardNormal(d), n_data)
    m, lv = q.mean.tolist(), q.logvar.tolist()
    for i in range(b):
        zi = z[i].tolist()
        joint = [sum(normal_log(zi[k], m[j][k], lv[j][k]) for k in range(d)) for j in range(b)]
        log_qz = math.log(sum(math.exp(v) for v in joint)) - math.log(n_data * b)  # eq. 3
        log_qzd = [math.log(sum(math.exp(normal_log(zi[k], m[j][k], lv[j][k])) for j in range(b)))
                   - math.log(n_data * b) for k in range(d)]  # fmt: skip
        log_qzx = sum(normal_log(zi[k], m[i][k], lv[i][k]) for k in range(d))
        log_pz = sum(normal_log(zi[k], 0.0, 0.0) for k in range(d))
        assert got["mi"][i].item() == pytest.approx(log_qzx - log_qz, abs=1e-4)
        assert got["tc"][i].item() == pytest.approx(log_qz - sum(log_qzd), abs=1e-4)
        assert got["dim_kl"][i].item() == pytest.approx(sum(log_qzd) - log_pz, abs=1e-4)


@pytest.mark.parametrize("n_data", [5, 60_000])
def test_the_three_terms_sum_to_the_one_sample_kl(n_data):
    q, z = small_posterior()
    terms = kl_decomposition(q, z, StandardNormal(3), n_data)
    total = terms["mi"] + terms["tc"] + terms["dim_kl"]
    torch.testing.assert_close(total, q.log_prob(z) - StandardNormal(3).log_prob(z))


def test_the_decomposition_on_a_dataset_of_three():
    """Chen et al.'s eq. 2 with the exact q(z) = 1/N sum_n q(z|n) of N = 3 images: MI + TC +
    dim-KL equals the average closed-form KL; and with the whole dataset in the batch (M = N)
    minibatch-weighted sampling is off from the exact log-densities by exactly log M each, so
    MI comes out log N high, TC (D - 1) log N high and dim-KL D log N low."""
    q, _ = small_posterior(b=3, d=2, seed=2)
    gen = torch.Generator().manual_seed(3)
    z = q.rsample((20_000,), gen)  # (S, N, D): z ~ q(z|n) for each image n
    log_q = q.log_prob_dims(z.unsqueeze(-2))  # (S, N_i, N_j, D): log q(z_id | x_j)
    log_qz = log_q.sum(-1).logsumexp(-1) - math.log(3)  # (S, N)
    log_qzd = (log_q.logsumexp(-2) - math.log(3)).sum(-1)
    log_pz = StandardNormal(2).log_prob(z)
    mi = (q.log_prob(z) - log_qz).mean()
    tc, dim_kl = (log_qz - log_qzd).mean(), (log_qzd - log_pz).mean()
    kl = gaussian_kl(q.mean, q.logvar).sum(-1).mean()
    assert (mi + tc + dim_kl).item() == pytest.approx(kl.item(), abs=0.03)
    assert min(mi, tc, dim_kl) > -0.02  # each is a KL divergence
    mws = kl_decomposition(q, z[0], StandardNormal(2), dataset_size=3)
    exact = {"mi": q.log_prob(z[0]) - log_qz[0], "tc": log_qz[0] - log_qzd[0],
             "dim_kl": log_qzd[0] - log_pz[0]}  # fmt: skip
    shifts = {"mi": math.log(3), "tc": math.log(3), "dim_kl": -2 * math.log(3)}
    for key, shift in shifts.items():
        torch.testing.assert_close(mws[key], exact[key] + shift)


def test_beta_tcvae_with_unit_weights_is_the_negative_elbo_in_expectation():
    """alpha = beta = gamma = 1: the loss is recon + log q(z|x) - log p(z) at the sample, and
    that KL estimate averages to the closed-form KL of the VAE's ELBO."""
    q, _ = small_posterior(b=4, d=3, seed=5)
    gen = torch.Generator().manual_seed(6)
    draws = [kl_decomposition(q, q.rsample((), gen), StandardNormal(3), 60_000)
             for _ in range(4000)]  # fmt: skip
    one_sample = torch.stack([sum(terms.values()) for terms in draws])  # (4000, B)
    closed = gaussian_kl(q.mean, q.logvar).sum(-1)  # (B,)
    se = one_sample.std(0) / 4000**0.5
    assert ((one_sample.mean(0) - closed).abs() < 4 * se).all()


def test_beta_tcvae_loss_weighs_the_three_terms(digits):
    x, _ = digits
    m = make("beta-tcvae", alpha=2.0, beta=6.0, gamma=0.5)
    out = m.loss("model", Batch(x), StepContext()).metrics
    torch.testing.assert_close(
        out["loss"], out["recon"] + 2.0 * out["mi"] + 6.0 * out["tc"] + 0.5 * out["dim_kl"]
    )
    unit = make("beta-tcvae", alpha=1.0, beta=1.0, gamma=1.0)
    out = unit.loss("model", Batch(x), StepContext()).metrics
    torch.testing.assert_close(out["loss"], out["recon"] + out["mi"] + out["tc"] + out["dim_kl"])


def test_dataset_size_comes_from_the_data_for_beta_tcvae_only():
    assert get_model_class("beta-tcvae").fields_from_data(None, 9000) == {"dataset_size": 9000}
    assert get_model_class("beta-tcvae").fields_from_data(None) == {}
    assert get_model_class("vae").fields_from_data(None, 9000) == {}
    assert get_model_class("cvae").fields_from_data(10, 9000) == {"num_classes": 10}


def test_the_command_line_fills_dataset_size_from_the_training_images(mnist_sample):
    from vaelab.cli import _option_table, build_run_config

    config = build_run_config("beta-tcvae", {"validation": 1000}, _option_table(), mnist_sample)
    assert config.model_config.dataset_size == len(mnist_sample.train_images) - 1000


def test_beta_tcvae_needs_the_factorized_prior():
    with pytest.raises(VaelabError, match="factorized"):
        tiny_config("beta-tcvae", prior="vamp").validate()


# -- FactorVAE -----------------------------------------------------------------------------------
def test_permutation_keeps_each_marginal_and_breaks_the_joint():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2000, generator=gen)
    z = torch.stack([a, a, -a], dim=1)  # perfectly dependent dimensions
    shuffled = permute_dims(z, gen)
    for d in range(3):
        torch.testing.assert_close(shuffled[:, d].sort().values, z[:, d].sort().values)
    corr = torch.corrcoef(shuffled.T)
    assert corr[0, 1].abs() < 0.1 and corr[0, 2].abs() < 0.1
    assert (shuffled[:, 0] == shuffled[:, 1]).float().mean() < 0.01


def test_factor_vae_loss_is_the_vae_loss_plus_gamma_times_d_logit(digits):
    x, _ = digits
    model = make("factor-vae", gamma=3.0)
    torch.manual_seed(2)
    out = model.loss("vae", Batch(x), StepContext()).metrics
    torch.manual_seed(2)
    z = model.encode(x).rsample()  # the same noise: the same codes
    tc = model.discriminator(z).mean()
    torch.testing.assert_close(out["tc"], tc.detach())
    torch.testing.assert_close(out["loss"], out["recon"] + out["kl"] + 3.0 * out["tc"])


def test_factor_vae_phases_split_the_parameters():
    model = make("factor-vae")
    vae, disc = (set(map(id, p.parameters)) for p in model.phases())
    assert not vae & disc
    assert disc == set(map(id, model.discriminator.parameters()))
    assert vae | disc == set(map(id, model.parameters()))


def test_density_ratio_trick_recovers_a_gaussians_total_correlation():
    """D trained on correlated 2-D Gaussian codes vs their shuffled copies: its mean logit
    approaches TC = -1/2 log(1 - rho^2), the closed form (0.83 nats at rho = 0.9)."""
    torch.manual_seed(0)
    model = make("factor-vae", disc_hidden=(32, 32))
    rho, opt = 0.9, torch.optim.Adam(model.discriminator.parameters(), lr=1e-2)
    decay = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.0, total_iters=200)  # a settled D
    chol = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))
    for _ in range(200):
        opt.zero_grad()
        model.discriminator_terms(torch.randn(512, 2) @ chol.T).loss.backward()
        opt.step()
        decay.step()
    with torch.no_grad():
        tc = model.tc_estimate(torch.randn(10_000, 2) @ chol.T).item()
    assert tc == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.1)


# -- VQ-VAE --------------------------------------------------------------------------------------
def test_straight_through_takes_z_q_values_and_passes_the_gradient_to_z_e():
    z_e, z_q = torch.randn(4, 3, 2, requires_grad=True), torch.randn(4, 3, 2)
    w = torch.randn(4, 3, 2)
    z = straight_through(z_e, z_q)
    (w * z).sum().backward()
    torch.testing.assert_close(z.detach(), z_q)
    torch.testing.assert_close(z_e.grad, w)


def test_nearest_code_is_the_argmin_distance():
    book = LearnedCodebook(7, 3)
    z = torch.randn(5, 4, 3)
    dist = ((z.unsqueeze(-2) - book.vectors.detach()) ** 2).sum(-1)  # (5, 4, 7)
    assert torch.equal(book.nearest(z), dist.argmin(-1))


def test_vq_losses_and_their_gradients(digits):
    x, _ = digits
    model = make("vq-vae", codebook="loss", latent_dim=4, embedding_dim=2, commitment=0.25)
    z_e, codes, z_q = model.quantize(x, None)
    out = model.loss("autoencoder", Batch(x), StepContext()).metrics
    sq = (z_e - z_q).pow(2).sum((1, 2)).mean()  # |z_e - e|^2 summed over cells, batch mean
    torch.testing.assert_close(out["commitment"], sq.detach())
    torch.testing.assert_close(out["codebook"], sq.detach())
    recon = -model.decode(z_q.flatten(1)).log_prob(x).mean()
    torch.testing.assert_close(out["loss"], (recon + 1.25 * sq).detach())
    # The codebook term moves only the codes, the commitment term only the encoder.
    terms = model.codebook.losses(z_e, z_q)["codebook"]
    (grad_e,) = torch.autograd.grad(terms, [model.codebook.vectors])
    assert grad_e.abs().sum() > 0
    assert torch.autograd.grad(terms, [z_e], allow_unused=True)[0] is None


def test_ema_update_follows_its_formula():
    torch.manual_seed(0)
    book, decay = EMACodebook(3, 2, decay=0.9), 0.9
    v0, eps = book.vectors.clone(), EMACodebook.eps
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.0]])
    codes = torch.tensor([0, 0, 2])
    book.update(z, codes)
    n = torch.tensor([2.0, 0.0, 1.0])
    sums = torch.stack([z[0] + z[1], torch.zeros(2), z[2]])
    count = decay * 1.0 + (1 - decay) * n  # N_i, from 1
    total = decay * v0 + (1 - decay) * sums  # m_i, from the initial codes
    smoothed = (count + eps) / (count.sum() + 3 * eps) * count.sum()
    torch.testing.assert_close(book.count, count)
    torch.testing.assert_close(book.vectors, total / smoothed.unsqueeze(-1))
    assert torch.allclose(book.vectors[1], v0[1], atol=1e-4)  # unpicked: stays (almost) put


def test_ema_codebook_learns_only_in_training(digits):
    x, _ = digits
    model = make("vq-vae")
    before = model.codebook.vectors.clone()
    model.eval()
    model.evaluate(Batch(x))
    assert torch.equal(model.codebook.vectors, before)
    model.train()
    model.loss("autoencoder", Batch(x), StepContext())
    assert not torch.equal(model.codebook.vectors, before)


def vq_prior(cells=4, size=3, seed=0):
    return make("vq-vae", seed=seed, latent_dim=2 * cells, embedding_dim=2, codebook_size=size,
                prior_hidden=16).prior  # fmt: skip


def test_autoregressive_prior_position_i_sees_only_earlier_codes():
    prior = vq_prior(cells=5, size=4)
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(4, (8, 5), generator=gen)
    logits = prior.logits(codes)
    for i in range(5):
        changed = codes.clone()
        changed[:, i:] = torch.randint(4, (8, 5 - i), generator=gen)
        torch.testing.assert_close(prior.logits(changed)[:, : i + 1], logits[:, : i + 1])
    earlier = codes.clone()
    earlier[:, 0] = (earlier[:, 0] + 1) % 4
    assert not torch.allclose(prior.logits(earlier)[:, 1:], logits[:, 1:])


def test_autoregressive_prior_is_normalized_and_samples_its_own_distribution():
    prior = vq_prior(cells=2, size=3, seed=1)
    rows = torch.tensor(list(itertools.product(range(3), repeat=2)))  # all 9 code rows
    probs = prior.log_prob_codes(rows).exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    draws = prior.sample_codes(30_000, torch.Generator().manual_seed(2), "cpu")
    freq = (draws.unsqueeze(1) == rows).all(-1).float().mean(0)  # (9,)
    torch.testing.assert_close(freq, probs.detach(), atol=0.01, rtol=0)


def test_vq_vae_encodes_to_codebook_vectors_and_samples_from_its_prior(digits):
    x, _ = digits
    model = make("vq-vae", latent_dim=8, embedding_dim=2).eval()
    z = model.encode(x).mean  # (B, 8): 4 cells of 2
    _, codes, _ = model.quantize(x, None)
    torch.testing.assert_close(z, model.codebook.vectors[codes].flatten(1))
    prior_z = model.sample_prior(5, torch.Generator().manual_seed(0))
    cells = prior_z.view(5, 4, 2)
    assert torch.equal(model.codebook.embed(model.codebook.nearest(cells)), cells)
    assert model.generate(5).shape == (5, 1, 28, 28)


def test_vq_vae_needs_latent_dim_to_be_whole_cells():
    with pytest.raises(VaelabError, match="embedding_dim"):
        tiny_config("vq-vae", latent_dim=5, embedding_dim=2).validate()
