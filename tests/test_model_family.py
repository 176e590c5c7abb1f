"""Analytic and behavioural checks of AE, beta-VAE, IWAE and CVAE beside the VAE."""

import pytest
import torch

from conftest import tiny_config
from vaelab.distributions import log_mean_exp
from vaelab.models import Batch, StepContext, build_model
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training.trainer import train


def same_weights(name, source, **changes):
    model = build_model(name, tiny_config(name, **changes))
    model.load_state_dict(source.state_dict())
    return model


def loss_with_seed(model, batch, seed=7, **ctx):
    torch.manual_seed(seed)
    return model.loss("model", batch, StepContext(**ctx))


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return build_model("vae", tiny_config("vae"))


def test_iwae_with_one_sample_is_the_vae_elbo(vae, digits):
    x, _ = digits
    iwae = same_weights("iwae", vae, k=1)
    ref = loss_with_seed(vae, Batch(x))
    out = loss_with_seed(iwae, Batch(x))
    assert torch.equal(out.loss, ref.loss)
    assert torch.equal(out.metrics["neg_elbo"], ref.metrics["neg_elbo"])
    # The importance-weighted path itself at k = 1, from the same noise: -log w of the one
    # sample is the ELBO's one-sample estimate recon + log q(z|x) - log p(z), exactly...
    torch.manual_seed(7)
    weighted = iwae.importance_weighted_loss(Batch(x), StepContext()).loss
    torch.manual_seed(7)
    q = vae.encode(x)
    z = q.rsample()
    one_sample = (-vae.decode(z).log_prob(x) + q.log_prob(z) - vae.prior.log_prob(z)).mean()
    torch.testing.assert_close(weighted, one_sample)
    # ... and over many draws it averages to the negative ELBO with the closed-form KL.
    torch.manual_seed(0)
    with torch.no_grad():
        weighted = [iwae.importance_weighted_loss(Batch(x), StepContext()).loss for _ in range(400)]
        closed = [vae.loss("model", Batch(x), StepContext()).loss for _ in range(400)]
    weighted, closed = torch.stack(weighted), torch.stack(closed)
    se = (weighted.var() / 400 + closed.var() / 400).sqrt()
    assert abs(weighted.mean() - closed.mean()) < 4 * se


def test_beta_vae_with_beta_one_is_the_vae(vae, digits):
    x, _ = digits
    beta1 = same_weights("beta-vae", vae, beta=1.0)
    assert torch.equal(loss_with_seed(beta1, Batch(x)).loss, loss_with_seed(vae, Batch(x)).loss)
    beta4 = same_weights("beta-vae", vae)  # default beta = 4
    m = loss_with_seed(beta4, Batch(x)).metrics
    torch.testing.assert_close(m["loss"], m["recon"] + 4 * m["kl"])


def test_beta_vae_capacity_schedule(vae, digits):
    x, _ = digits
    model = same_weights("beta-vae", vae, beta=10.0, capacity=20.0, capacity_steps=100)
    for step, capacity in [(0, 0.0), (50, 10.0), (100, 20.0), (10_000, 20.0)]:
        m = loss_with_seed(model, Batch(x), step=step).metrics
        expected = m["recon"] + 10.0 * (m["kl"] - capacity).abs()
        torch.testing.assert_close(m["loss"], expected)


@torch.no_grad()
def test_iwae_bound_is_non_decreasing_in_k(vae, digits):
    x, _ = digits
    torch.manual_seed(0)
    bounds = {}
    for k in (1, 5, 50):
        # 20 repeats per image average out the noise of each estimate.
        per_repeat = [log_mean_exp(vae.log_weights(x, None, k), 0).mean() for _ in range(20)]
        bounds[k] = torch.stack(per_repeat).mean().item()
    assert bounds[1] < bounds[5] < bounds[50]


def test_iwae_gradient_weights_samples_by_normalized_importance_weight():
    log_w = torch.tensor([[0.0, -1.0], [2.0, -3.0], [-1.0, 0.5]], requires_grad=True)  # (K, B)
    loss = -log_mean_exp(log_w, dim=0).mean()
    loss.backward()
    expected = -torch.softmax(log_w.detach(), dim=0) / log_w.shape[1]
    torch.testing.assert_close(log_w.grad, expected)  # the best sample gets the most weight


def test_ae_loss_is_reconstruction_only(digits):
    x, _ = digits
    torch.manual_seed(0)
    ae = build_model("ae", tiny_config("ae"))
    out = ae.loss("model", Batch(x), StepContext())
    z = ae.encode(x).mean
    torch.testing.assert_close(out.loss, -ae.decode(z).log_prob(x).mean())
    assert torch.equal(ae.encode(x).rsample(), z)  # the code is deterministic


def test_cvae_needs_labels_and_uses_them(digits):
    x, y = digits
    torch.manual_seed(0)
    cvae = build_model("cvae", tiny_config("cvae"))
    with pytest.raises(Exception, match="needs class labels"):
        cvae.encode(x)
    z = torch.zeros(2, 2)
    a = cvae.decode(z, torch.tensor([1, 1])).mean
    b = cvae.decode(z, torch.tensor([7, 7])).mean
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", ["ae", "vae", "beta-vae", "iwae", "cvae"])
def test_each_model_lowers_its_loss_within_a_few_hundred_steps(name, small_data, tmp_path):
    config = RunConfig(
        model=name,
        model_config=tiny_config(name, hidden=(128,)),
        data=DataConfig(dataset="mnist-sample"),
        train=TrainConfig(epochs=25, batch_size=64, lr=2e-3),
    )  # 512 images / 64 = 8 steps per epoch: 200 steps
    history = train(config, tmp_path / name, quiet=True, data=small_data).state.history
    first, last = history[0]["test/loss"], history[-1]["test/loss"]
    assert last < 0.8 * first, (first, last)


@pytest.fixture(scope="module")
def classifier(mnist_sample):
    from vaelab.evaluation.classifier import train_classifier

    return train_classifier(mnist_sample.train_images, mnist_sample.train_labels)


def test_classifier_is_a_fair_judge(classifier, mnist_sample):
    x = mnist_sample.test_images.float() / 255
    assert classifier.accuracy(x, mnist_sample.test_labels) >= 0.97


@pytest.mark.slow
def test_cvae_samples_show_the_asked_digit(classifier, mnist_sample, tmp_path):
    config = RunConfig(
        model="cvae",
        model_config=tiny_config("cvae", hidden=(400,), latent_dim=2),
        data=DataConfig(dataset="mnist-sample"),
        train=TrainConfig(epochs=10, batch_size=64),
    )
    model = train(config, tmp_path / "cvae", quiet=True, data=mnist_sample).model.eval()
    labels = torch.arange(500) % 10
    samples = model.generate(500, labels, torch.Generator().manual_seed(0))
    accuracy = classifier.accuracy(samples, labels)
    assert accuracy >= 0.9, accuracy  # chance is 0.1; 0.974 measured


def test_cvae_conditioning_option():
    film = build_model("cvae", tiny_config("cvae"))
    concat = build_model("cvae", tiny_config("cvae", conditioning="concat"))
    assert any("films" in name for name, _ in film.named_parameters())
    assert not any("films" in name for name, _ in concat.named_parameters())
    with pytest.raises(Exception, match="conditioning is .add.: expected one of film, concat"):
        build_model("cvae", tiny_config("cvae", conditioning="add"))


@pytest.mark.slow
def test_film_keeps_the_class_in_the_label_with_a_20d_code(classifier, mnist_sample, tmp_path):
    # With a 20-D z and the label only at the input, the decoder reads the class from z: samples
    # show random digits (README, "The model family"). FiLM makes it read the label.
    accuracy = {}
    for conditioning in ("film", "concat"):
        torch.manual_seed(0)
        config = RunConfig(
            model="cvae",
            model_config=tiny_config(
                "cvae", hidden=(400, 400), latent_dim=20, conditioning=conditioning
            ),
            data=DataConfig(dataset="mnist-sample"),
            train=TrainConfig(epochs=20),
        )
        run = tmp_path / conditioning
        model = train(config, run, quiet=True, data=mnist_sample).model.eval()
        labels = torch.arange(500) % 10
        samples = model.generate(500, labels, torch.Generator().manual_seed(0))
        accuracy[conditioning] = classifier.accuracy(samples, labels)
    # measured (mnist-sample, 20 epochs): film 0.92, concat 0.64
    assert accuracy["film"] >= 0.85, accuracy
    assert accuracy["film"] >= accuracy["concat"] + 0.15, accuracy


def test_a_cvae_run_saved_before_film_loads_as_concat():
    from vaelab.config import to_dict
    from vaelab.run import RunConfig

    config = RunConfig(model="cvae", model_config=tiny_config("cvae", conditioning="concat"))
    saved = config.to_json()
    del saved["model_config"]["conditioning"]  # config.json as the older vaelab wrote it
    assert RunConfig.from_json(saved).model_config.conditioning == "concat"
    assert to_dict(RunConfig.from_json(config.to_json()).model_config) == to_dict(
        config.model_config
    )
