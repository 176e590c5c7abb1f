"""Likelihood bounds against a closed form, diagnostics, probes, the reference classifier and
`vaelab eval` end to end."""

import json
import math

import pytest
import torch
from torch import distributions as D

from conftest import tiny_config
from vaelab.cli import main
from vaelab.distributions import Gaussian, LikelihoodHead
from vaelab.errors import VaelabError
from vaelab.evaluation import classifier as clf_module
from vaelab.evaluation.diagnostics import active_units, posterior_means
from vaelab.evaluation.likelihood import elbo, iwae_bound, per_image_seeded
from vaelab.evaluation.probes import knn_accuracy, linear_probe_accuracy
from vaelab.models import build_model
from vaelab.run import DataConfig


class LinearGaussianHead(LikelihoodHead):
    """p(x|z) = N(W z + b, s^2 I): with z ~ N(0, I) this is probabilistic PCA."""

    def __init__(self, std: float):
        super().__init__()
        self.logvar = 2 * math.log(std)

    def forward(self, out):
        return Gaussian(out, torch.full_like(out, self.logvar))


@pytest.fixture
def ppca():
    torch.manual_seed(0)
    config = tiny_config("vae", image_shape=(1, 2, 3), latent_dim=2, hidden=(), net="mlp")
    model = build_model("vae", config)
    model.likelihood = LinearGaussianHead(std=0.5)
    return model.eval()


def ppca_log_prob(model, x):
    lin = model.decoder.net[0]  # the decoder is one Linear layer: x = W z + b + noise
    cov = lin.weight @ lin.weight.T + 0.25 * torch.eye(lin.weight.shape[0])
    return D.MultivariateNormal(lin.bias, cov).log_prob(x.flatten(1))


def test_importance_sampling_converges_to_the_ppca_closed_form(ppca):
    torch.manual_seed(1)
    x = torch.randn(8, 1, 2, 3)
    exact = ppca_log_prob(ppca, x)
    estimates = torch.stack([iwae_bound(ppca, x, k=5000) for _ in range(5)])  # (5, B)
    se = estimates.std(0) / math.sqrt(5) + 1e-3
    assert ((estimates.mean(0) - exact).abs() < 4 * se + 0.02).all()
    # The ELBO is below log p(x); the gap is KL(q(z|x) || p(z|x)) >= 0.
    elbos = torch.stack([elbo(ppca, x) for _ in range(2000)]).mean(0)
    assert (elbos < exact).all()


def test_chunking_is_invisible_and_a_generator_fixes_the_estimate(ppca):
    x = torch.randn(4, 1, 2, 3)
    # One chunk of 40 samples == four chunks of 10 drawn from the same stream: log-mean-exp of
    # the same 40 weights (the draws depend on the generator, not on the chunk size).
    whole = iwae_bound(ppca, x, k=40, rows=160, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    q = ppca.encode(x)
    weights = torch.cat([ppca.weights_under(q, x, None, 10, gen) for _ in range(4)])
    torch.testing.assert_close(whole, torch.logsumexp(weights, 0) - math.log(40))
    chunked = iwae_bound(ppca, x, k=40, rows=40, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def test_seeded_batches_give_the_same_numbers_on_any_number_of_threads(ppca):
    x = torch.randn(10, 1, 2, 3)

    def fn(a, b, gen):
        return iwae_bound(ppca, a, b, k=7, generator=gen)

    one = per_image_seeded(fn, x, None, seed=5, batch_size=3, threads=1)
    threads_before = torch.get_num_threads()
    two = per_image_seeded(fn, x, None, seed=5, batch_size=3, threads=2)
    assert torch.get_num_threads() == threads_before  # restored after the pool
    assert one.shape == (10,) and torch.equal(one, two)
    assert not two.requires_grad  # no autograd graph in the pool's threads
    assert not torch.equal(one, per_image_seeded(fn, x, None, seed=6, batch_size=3, threads=2))


def test_a_model_without_a_density_has_no_bound():
    model = build_model("ae", tiny_config("ae"))
    with pytest.raises(VaelabError, match="model ae has no density"):
        iwae_bound(model, torch.zeros(2, 1, 28, 28), k=5)


def test_bounds_are_ordered_on_a_trained_vae(small_data, tmp_path):
    from vaelab.run import DataConfig, RunConfig, TrainConfig
    from vaelab.training.trainer import train

    config = RunConfig(model="vae", model_config=tiny_config("vae", latent_dim=8, hidden=(128,)),
                       data=DataConfig(), train=TrainConfig(epochs=5, batch_size=64))  # fmt: skip
    trainer = train(config, tmp_path / "r", quiet=True, data=small_data)
    model, x = trainer.model.eval(), trainer.test_x[:64]
    torch.manual_seed(0)
    values = [elbo(model, x).mean().item()]
    values += [iwae_bound(model, x, k=k).mean().item() for k in (5, 50, 2000)]
    assert values == sorted(values), values


def test_active_units_finds_planted_dead_dimensions(small_data):
    torch.manual_seed(0)
    model = build_model("vae", tiny_config("vae", latent_dim=6)).eval()
    last = model.encoder.net[-1]  # outputs (mean, logvar): rows 0-5 are the means
    with torch.no_grad():
        last.weight[[1, 4]] = 0.0  # dims 1 and 4: the mean no longer depends on x
    means = posterior_means(model, small_data.test_images.float() / 255)
    count, variance = active_units(means * 10)  # scale so the live ones pass 0.01
    assert count == 4 and variance[1] == 0 and variance[4] == 0


def test_probes_on_separable_and_random_labels():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 3, generator=gen) * 10
    labels = torch.arange(400) % 4
    z = centers[labels] + torch.randn(400, 3, generator=gen)
    assert linear_probe_accuracy(z[:300], labels[:300], z[300:], labels[300:]) == 1.0
    assert knn_accuracy(z[:300], labels[:300], z[300:], labels[300:]) == 1.0
    noise = torch.randn(400, 3, generator=gen)
    assert knn_accuracy(noise[:300], labels[:300], noise[300:], labels[300:]) < 0.45


def test_the_newton_probe_reaches_the_lbfgs_optimum_of_the_same_objective():
    from vaelab.evaluation.probes import fit_logistic

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(600, 5, generator=gen, dtype=torch.float64)
    y = (z[:, :2] @ torch.tensor([[1.0, -1.0, 0.5], [0.3, 0.8, -1.2]], dtype=torch.float64)
         + 0.8 * torch.randn(600, 3, generator=gen, dtype=torch.float64)).argmax(1)  # fmt: skip

    def objective(w, b):
        return torch.nn.functional.cross_entropy(z @ w + b, y) + 1e-3 * w.pow(2).sum()

    w, b = fit_logistic(z, y, 3, weight_decay=1e-3)
    ref_w = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    ref_b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ref_w, ref_b], max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = objective(ref_w, ref_b)
        loss.backward()
        return loss

    opt.step(closure)
    assert objective(w, b) <= objective(ref_w, ref_b).detach() + 1e-9
    torch.testing.assert_close(w, ref_w.detach(), atol=1e-4, rtol=0)
    # Logits are defined up to one shift per row: compare the biases centred.
    torch.testing.assert_close(b - b.mean(), (ref_b - ref_b.mean()).detach(), atol=1e-4, rtol=0)


def test_reference_classifier_is_cached_as_safetensors(tmp_path, monkeypatch, small_data):
    x, y = small_data.train_images[:256], small_data.train_labels[:256]
    monkeypatch.setattr(clf_module, "REFERENCE_EPOCHS", 1)
    first = clf_module.reference_classifier(x, y, "tiny", cache_dir=tmp_path)
    (cached,) = (tmp_path / "classifiers").glob("tiny-*.safetensors")

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been used")

    monkeypatch.setattr(clf_module, "train_classifier", no_training)
    second = clf_module.reference_classifier(x, y, "tiny", cache_dir=tmp_path)
    probe = small_data.test_images[:32].float() / 255
    assert torch.equal(first.predict_proba(probe), second.predict_proba(probe))
    cached.write_bytes(b"not a safetensors file")
    monkeypatch.undo()
    monkeypatch.setattr(clf_module, "REFERENCE_EPOCHS", 1)
    with pytest.warns(UserWarning, match="ignoring the cached classifier"):
        clf_module.reference_classifier(x, y, "tiny", cache_dir=tmp_path)


@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory):
    """A binarized VAE run and a grayscale (BCE) one, 2 epochs each."""
    root = tmp_path_factory.mktemp("eval")
    common = ["--hidden", "64", "--latent-dim", "4", "--epochs", "2", "--quiet", "--no-report"]
    assert main(["train", "vae", "--out", str(root / "bin"), *common]) == 0
    assert main(["train", "vae", "--binarization", "none", "--out", str(root / "gray"),
                 *common]) == 0  # fmt: skip
    return root


def test_eval_command_writes_the_numbers_and_the_report(eval_runs, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(clf_module, "REFERENCE_EPOCHS", 1)
    loads = []
    load = DataConfig.load
    monkeypatch.setattr(DataConfig, "load", lambda self: loads.append(1) or load(self))
    run = eval_runs / "bin"
    assert main(["eval", str(run), "--k", "100", "--limit", "200", "--quiet"]) == 0
    assert len(loads) == 1  # the evaluation and the report share one read of the dataset
    result = json.loads((run / "eval.json").read_text())
    assert result["images"] == 200 and result["likelihood_is_density"]
    chain = [result["neg_elbo"], result["neg_iwae_5"], result["neg_iwae_50"], result["nll"]]
    assert chain == sorted(chain, reverse=True), chain
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (784 * math.log(2)))
    assert len(result["latent_usage_per_dim"]) == 4 and 0 <= result["active_units"] <= 4
    assert result["latent_usage_measure"].startswith("KL(q(z_d|x) || N(0, 1)), closed form")
    for key in ("linear_probe_accuracy", "knn_accuracy", "prior_sample_confidence",
                "precision", "recall", "precision_floor", "recall_floor"):  # fmt: skip
        assert 0 <= result[key] <= 1
    # 200 prior samples against 200 test images; the floor: those against 200 training images.
    assert result["sample_quality_images"] == 200
    assert result["frechet_distance"] > result["frechet_distance_floor"] > 0
    html = (run / "report.html").read_text()
    assert "Evaluation" in html and "importance sampled" in html


def test_grayscale_bernoulli_is_reported_as_bce_never_as_nll(eval_runs, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(clf_module, "REFERENCE_EPOCHS", 1)
    run = eval_runs / "gray"
    assert main(["eval", str(run), "--k", "20", "--limit", "100", "--quiet"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert not result["likelihood_is_density"]
    assert "bce_neg_elbo" in result and "bce_iwae_20" in result
    assert not {"nll", "neg_elbo", "bits_per_dim", "recon"} & set(result)
    assert "not a likelihood" in (run / "report.html").read_text()


def test_eval_bad_input(eval_runs, capsys):
    assert main(["eval", str(eval_runs / "bin"), "--k", "0"]) == 2
    assert "--k is 0" in capsys.readouterr().err
    assert main(["eval", str(eval_runs / "bin"), "--split", "valid"]) == 2
    assert "--split is 'valid'" in capsys.readouterr().err
