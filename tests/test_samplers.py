"""Samplers fitted after training (samplers.py): EM recovers a known mixture, the fitted mixture
is saved beside the run and reused until the weights change, and `vaelab sample --sampler gmm`
end to end."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vaelab import samplers
from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.run import load_run, sampler_file
from vaelab.samplers import GaussianMixture, draw_codes, fit_gmm, fitted_mixture


@pytest.fixture
def truth() -> GaussianMixture:
    """Three 2-D Gaussians, unequal weights, correlated covariances, far from the origin."""
    scale = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.7, 0.0], [-0.3, 1.2]],
                          [[0.4, 0.0], [0.0, 0.9]]], dtype=torch.float64)  # fmt: skip
    means = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], dtype=torch.float64) + 50
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    return GaussianMixture(weights, means, scale @ scale.mT)


def matched(fit: GaussianMixture, truth: GaussianMixture) -> GaussianMixture:
    """The fitted components reordered to the true ones (by nearest mean)."""
    order = torch.cdist(truth.means, fit.means).argmin(1)
    return GaussianMixture(fit.weights[order], fit.means[order], fit.covariances[order])


def test_em_recovers_the_parameters_of_a_known_mixture(truth):
    x = truth.sample(6000, torch.Generator().manual_seed(0))
    result = fit_gmm(x, 3)
    assert result.converged
    fit = matched(result.mixture, truth)
    torch.testing.assert_close(fit.weights, truth.weights, atol=0.02, rtol=0)
    torch.testing.assert_close(fit.means, truth.means, atol=0.06, rtol=0)
    torch.testing.assert_close(fit.covariances, truth.covariances, atol=0.08, rtol=0)
    # The fit explains the data at least as well as the truth does (it maximises the likelihood).
    assert result.log_likelihood >= truth.log_prob(x).mean().item() - 1e-9


def test_log_prob_is_the_mixture_density(truth):
    x = truth.sample(50, torch.Generator().manual_seed(1))
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(truth.weights),
        torch.distributions.MultivariateNormal(truth.means, truth.covariances),
    )
    torch.testing.assert_close(truth.log_prob(x), reference.log_prob(x))


def test_samples_follow_the_weights_and_the_generator(truth):
    a = truth.sample(20_000, torch.Generator().manual_seed(2))
    assert torch.equal(a, truth.sample(20_000, torch.Generator().manual_seed(2)))
    nearest = torch.cdist(a, truth.means).argmin(1)
    shares = torch.bincount(nearest, minlength=3).double() / len(a)
    torch.testing.assert_close(shares, truth.weights, atol=0.015, rtol=0)


def test_a_fixed_seed_fixes_the_fit_and_diagonal_covariances_stay_diagonal(truth):
    x = truth.sample(2000, torch.Generator().manual_seed(3))
    first, second = fit_gmm(x, 3, seed=5).mixture, fit_gmm(x, 3, seed=5).mixture
    assert torch.equal(first.means, second.means)
    diag = fit_gmm(x, 3, "diag").mixture.covariances
    assert torch.equal(diag, torch.diag_embed(diag.diagonal(dim1=-2, dim2=-1)))


def test_fit_refuses_what_cannot_be_fitted(truth):
    x = truth.sample(5, torch.Generator().manual_seed(0))
    with pytest.raises(VaelabError, match="a mixture of 6 components needs at least as many"):
        fit_gmm(x, 6)
    with pytest.raises(VaelabError, match="covariance is 'spherical': expected full or diag"):
        fit_gmm(x, 2, "spherical")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A VAE trained for a few steps on the shipped sample."""
    out = tmp_path_factory.mktemp("samplers") / "run"
    argv = ["train", "vae", "--epochs", "1", "--max-steps", "5", "--hidden", "32",
            "--latent-dim", "3", "--out", str(out), "--quiet", "--no-report"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_the_mixture_is_saved_beside_the_run_and_reused(run, monkeypatch):
    _, model = load_run(run)
    first = fitted_mixture(run, model, 4)
    path = sampler_file(run, "gmm-4")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    manifest = json.loads((run / "manifest.json").read_text())
    assert meta["model_sha256"] == manifest["sha256"]["model.safetensors"]
    assert (meta["components"], meta["covariance"], meta["seed"]) == ("4", "full", "0")
    with monkeypatch.context() as m:
        m.setattr(samplers, "fit_gmm", lambda *a, **k: pytest.fail("should have been reused"))
        second = fitted_mixture(run, model, 4)
    for name, value in first.tensors().items():
        assert torch.equal(second.tensors()[name], value), name


def test_the_mixture_is_fitted_again_when_the_weights_change_or_the_file_is_bad(run, monkeypatch):
    _, model = load_run(run)
    fitted_mixture(run, model, 2)
    fits = []
    fit = samplers.fit_gmm
    monkeypatch.setattr(samplers, "fit_gmm", lambda *a, **k: fits.append(1) or fit(*a, **k))
    monkeypatch.setattr(samplers, "weights_sha256", lambda run_dir: "0" * 64)  # new weights
    fitted_mixture(run, model, 2)
    assert len(fits) == 1
    sampler_file(run, "gmm-2").write_bytes(b"not safetensors")
    with pytest.warns(UserWarning, match="the saved gmm-2 is unusable"):
        fitted_mixture(run, model, 2)
    assert len(fits) == 2
    fitted_mixture(run, model, 2)  # the replaced file is read back
    assert len(fits) == 2


def test_a_saved_mixture_that_is_not_a_mixture_is_refused(run):
    _, model = load_run(run)
    fitted_mixture(run, model, 3)
    path = sampler_file(run, "gmm-3")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    tensors["covariances"] = -tensors["covariances"]
    save_file(tensors, path, metadata=meta)
    with pytest.warns(UserWarning, match="not positive definite"):
        fitted_mixture(run, model, 3)


def test_prior_codes_are_the_prior_samples_generate_decodes(run):
    _, model = load_run(run)
    z = draw_codes(run, model, 8, "prior", generator=torch.Generator().manual_seed(4))
    expected = model.generate(8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(samplers.decode_codes(model, z), expected)


def test_sample_with_a_fitted_mixture_end_to_end(run, tmp_path, monkeypatch):
    png = tmp_path / "gmm.png"
    argv = ["sample", str(run), "--sampler", "gmm", "--components", "5", "--n", "9"]
    assert main([*argv, "--out", str(png), "--quiet"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sampler_file(run, "gmm-5").is_file()
    monkeypatch.setattr(samplers, "fit_gmm", lambda *a, **k: pytest.fail("should be reused"))
    again = tmp_path / "again.png"
    assert main([*argv, "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == png.read_bytes()  # same seed, same mixture, same samples


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--sampler", "vamp"], "--sampler is 'vamp': expected one of prior, gmm"),
        (["--components", "3"], "--components sizes the mixture of --sampler gmm"),
        (["--sampler", "gmm", "--components", "0"], "--components is 0: expected a positive"),
        (["--sampler", "gmm", "--components", "20000"], "a mixture of 20000 components needs"),
    ],
)
def test_bad_sampler_flags_are_one_clear_error(run, tmp_path, capsys, flags, message):
    assert main(["sample", str(run), *flags, "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error: ") and "\n" not in err
    assert message in err
