"""Training under `precision = "bf16"`: bfloat16 autocast for the forward passes of training
steps only; weights, optimizer state, densities and every evaluation stay float32."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from vaelab.cli import main as cli_main
from vaelab.distributions import Bernoulli, DiagonalGaussian, Gaussian, full_precision
from vaelab.errors import VaelabError
from vaelab.models import MODELS, Batch, StepContext, build_model
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training import checkpoint
from vaelab.training.trainer import Trainer, resume, train


def run_config(model="vae", epochs=2, **train_fields):
    return RunConfig(
        model=model,
        model_config=tiny_config(model, hidden=(64,)),
        data=DataConfig(dataset="mnist-sample"),
        train=TrainConfig(epochs=epochs, batch_size=64, **train_fields),
    )


def test_full_precision_upcasts_reduced_floats_only():
    x = torch.randn(3, 4)
    assert full_precision(x) is x
    assert full_precision(x.double()).dtype == torch.float64
    for low in (torch.bfloat16, torch.float16):
        up = full_precision(x.to(low))
        assert up.dtype == torch.float32 and torch.equal(up, x.to(low).float())


def test_densities_of_bfloat16_net_outputs_are_computed_in_float32():
    torch.manual_seed(0)
    logits = (4 * torch.randn(5, 1, 28, 28)).bfloat16()
    x = (torch.rand(5, 1, 28, 28) < 0.5).float()
    got = Bernoulli(logits).log_prob(x)
    want = torch.distributions.Bernoulli(logits=logits.float()).log_prob(x).sum((1, 2, 3))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-4)
    mean, logvar = torch.randn(5, 3).bfloat16(), torch.randn(5, 3).bfloat16()
    q = DiagonalGaussian(mean, logvar)
    z = torch.randn(5, 3)
    ref = torch.distributions.Normal(mean.float(), (0.5 * logvar.float()).exp())
    assert q.log_prob(z).dtype == torch.float32
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z).sum(-1))
    g = Gaussian(torch.rand(5, 1, 2, 2).bfloat16(), torch.zeros(1, 2, 2))
    assert g.log_prob(torch.rand(5, 1, 2, 2)).dtype == torch.float32


def test_the_vampprior_density_stays_float32_under_autocast():
    torch.manual_seed(0)
    model = build_model("vae", tiny_config("vae", latent_dim=8, prior="vamp", pseudo_inputs=7))
    prior = model.prior.frozen()
    z = 3 * torch.randn(50, 8)
    exact = prior.log_prob(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = prior.log_prob(z)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, exact, rtol=1e-6, atol=1e-5)


def test_bf16_training_keeps_float32_weights_and_evaluates_in_float32(small_data, tmp_path):
    fp32 = train(run_config(), tmp_path / "fp32", quiet=True, data=small_data)
    bf16 = train(run_config(precision="bf16"), tmp_path / "bf16", quiet=True, data=small_data)
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["train"]["precision"] == "bf16"
    weights = load_file(tmp_path / "bf16" / checkpoint.MODEL_FILE)
    assert {w.dtype for w in weights.values()} == {torch.float32}
    reference = load_file(tmp_path / "fp32" / checkpoint.MODEL_FILE)
    assert any(not torch.equal(weights[k], reference[k]) for k in weights)  # bf16 did change it
    # The logged test loss is a float32 pass: the same as scoring the final weights now.
    last = bf16.state.history[-1]
    assert last["test/loss"] == pytest.approx(bf16.evaluate()["loss"], rel=1e-6)
    # Two epochs in bfloat16 learn what two in float32 do (the first epoch's loss is ~540).
    assert last["test/loss"] == pytest.approx(fp32.state.history[-1]["test/loss"], rel=0.02)


def test_bf16_training_resumes_bit_for_bit(small_data, tmp_path):
    train(run_config(precision="bf16"), tmp_path / "straight", quiet=True, data=small_data)
    train(run_config(precision="bf16"), tmp_path / "cut", quiet=True, data=small_data, max_steps=5)
    resume(tmp_path / "cut", quiet=True, data=small_data)
    a = load_file(tmp_path / "straight" / checkpoint.MODEL_FILE)
    b = load_file(tmp_path / "cut" / checkpoint.MODEL_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)


CASES = [(name, net, {}) for name in sorted(MODELS) for net in ("mlp", "gated", "conv")] + [
    ("vae", "gated", {"prior": "vamp", "pseudo_inputs": 5}),
    ("iwae", "mlp", {"prior": "vamp", "pseudo_inputs": 5}),
    ("aae", "mlp", {"disc_r1": 1.0}),  # R1's double backward through the bfloat16 graph
]


@pytest.mark.parametrize("name,net,changes", CASES)
def test_every_model_phase_and_net_gives_float32_losses_under_autocast(name, net, changes):
    torch.manual_seed(0)
    model = build_model(name, tiny_config(name, net, hidden=(64,), **changes))
    x = (torch.rand(16, 1, 28, 28) < 0.3).float()
    batch = Batch(x, torch.arange(16) % 10)
    for phase in model.phases():
        torch.manual_seed(1)
        exact = model.loss(phase.name, batch, StepContext())
        torch.manual_seed(1)  # the same noise: the two differ only by the matmuls' precision
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under = model.loss(phase.name, batch, StepContext())
        under.loss.backward()
        assert under.loss.dtype == torch.float32, phase.name
        assert {v.dtype for v in under.metrics.values()} == {torch.float32}, phase.name
        assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
        assert under.loss.item() == pytest.approx(exact.loss.item(), rel=0.02, abs=0.02), phase
        model.zero_grad(set_to_none=True)


def test_bf16_training_never_evaluates_under_autocast(small_data, tmp_path, monkeypatch):
    seen = []
    original = MODELS["vae"].evaluate

    def spy(self, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, batch)

    monkeypatch.setattr(MODELS["vae"], "evaluate", spy)
    config = run_config(precision="bf16")
    config.data.validation = 128
    train(config, tmp_path / "run", quiet=True, data=small_data)
    assert seen and not any(seen)  # validation and test passes, each float32


def test_an_unknown_precision_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(VaelabError, match="precision is 'fp16': expected one of fp32, bf16"):
        TrainConfig(precision="fp16").validate()
    out = tmp_path / "run"
    assert cli_main(["train", "vae", "--precision", "half", "--out", str(out)]) == 2
    assert "precision is 'half'" in capsys.readouterr().err
    assert not out.exists()


def test_bf16_is_refused_on_a_gpu_that_only_emulates_it(small_data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    config = run_config(precision="bf16")
    config.train.device = "cuda"  # not validated: this machine has no GPU to find
    model = build_model("vae", config.model_config)
    with pytest.raises(VaelabError, match="Tesla V100 has no bfloat16 matmuls"):
        Trainer(tmp_path / "run", config, small_data, model, quiet=True)
