"""The contract end to end, for every registered model and net: train a few steps through the
one trainer -> save -> load -> `vaelab eval` -> report -> `vaelab sample` -> the explorer's
endpoints. A new model (tests/laplace_vae.py: a non-Gaussian posterior) passes it by being
registered; nothing here knows a model by name."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from vaelab.cli import main
from vaelab.evaluation import classifier
from vaelab.evaluation.run_eval import evaluate_run
from vaelab.models import MODELS, DensityModel
from vaelab.run import DataConfig, RunConfig, TrainConfig, load_run, read_eval
from vaelab.serve import Explorer, create_app
from vaelab.training.trainer import train
from vaelab.viz.run_report import write_run_report

VARIANTS = {  # options that change the prior or the posterior
    "vae-vampprior": ("vae", {"prior": "vamp", "pseudo_inputs": 5}),
    "vae-iaf-vampprior": ("vae-iaf", {"prior": "vamp", "pseudo_inputs": 5}),
    "hvae-vampprior": ("hvae", {"prior": "vamp", "pseudo_inputs": 5}),
    "aae-label-mixture": ("aae", {"prior": "mixture", "label_prior": True}),
    "aae-gaussian-q": ("aae", {"posterior": "gaussian", "prior": "swiss-roll"}),
}
NETS = ("mlp", "gated", "conv")
CASES = [pytest.param(name, "mlp", id=f"{name}-mlp") for name in [*sorted(MODELS), *VARIANTS]]
CASES += [
    pytest.param(name, net, id=f"{name}-{net}", marks=pytest.mark.slow)
    for name in sorted(MODELS)
    for net in NETS[1:]
]


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One reference classifier for the module (eval trains it once, then reads its cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(classifier, "REFERENCE_EPOCHS", 1)
        yield


def run_config(name: str, net: str, small_data) -> RunConfig:
    model, options = VARIANTS.get(name, (name, {}))
    config = tiny_config(model, net, **options)
    return RunConfig(model=model, model_config=config, data=DataConfig(dataset="mnist-sample"),
                     train=TrainConfig(epochs=1, batch_size=64))  # fmt: skip


@pytest.mark.parametrize("name,net", CASES)
def test_train_save_load_eval_report_sample_explore(name, net, small_data, tmp_path):
    run = tmp_path / "run"
    trainer = train(run_config(name, net, small_data), run, max_steps=3, quiet=True,
                    data=small_data)  # fmt: skip
    assert trainer.state.step == 3
    _, model = load_run(run)
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value.cpu(), rtol=0, atol=0)

    result = evaluate_run(run, k=5, limit=20, data=small_data)
    assert read_eval(run) == json.loads(json.dumps(result))
    assert len(result["latent_usage_per_dim"]) == model.config.latent_dim
    assert result["latent_usage_measure"]
    if isinstance(model, DensityModel):
        # ELBO <= L_k in expectation: with 20 images and k=5 the estimates must at least order.
        assert result["nll"] <= result["neg_elbo"] + 1.0
    else:
        assert "nll" not in result

    report = write_run_report(run, data=small_data)
    html = report.read_text()
    assert "Evaluation" in html and "latent dimension" in html

    out = tmp_path / "samples.png"
    assert main(["sample", str(run), "--n", "4", "--out", str(out), "--quiet"]) == 0
    assert out.stat().st_size > 0

    explorer = Explorer.from_images(model, small_data.test_images[:50].float() / 255,
                                    small_data.test_labels[:50])  # fmt: skip
    client = create_app(explorer).test_client()
    info = client.get("/api/info").json
    label = {"label": 3} if info["conditional"] else {}
    z = [0.5] * info["latent_dim"]
    assert client.post("/api/decode", json={"z": z, **label}).status_code == 200
    pixels = (small_data.test_images[0].flatten().float() / 255).tolist()
    encoded = client.post("/api/encode", json={"pixels": pixels, **label})
    assert encoded.status_code == 200 and len(encoded.json["z"]) == info["latent_dim"]
    steps = client.post("/api/interpolate", json={"a": z, "b": [0.0] * len(z), **label})
    assert steps.status_code == 200 and len(steps.json["images"]) == 10
    assert len(client.get("/api/points").json["xy"]) == 50
