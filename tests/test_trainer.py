import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from vaelab.errors import VaelabError
from vaelab.models import LossOutput
from vaelab.training import checkpoint
from vaelab.training.run import DataConfig, RunConfig, TrainConfig, load_run, read_config
from vaelab.training.trainer import TrainingDiverged, resume, train


def run_config(epochs=2, **train):
    return RunConfig(
        model="vae",
        model_config=tiny_config("vae"),
        data=DataConfig(dataset="mnist-sample"),
        train=TrainConfig(epochs=epochs, batch_size=64, **train),
    )


def weights(run_dir):
    return load_file(run_dir / checkpoint.MODEL_FILE)


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_run_folder_contents(small_data, tmp_path):
    trainer = train(
        run_config(epochs=2, kl_warmup_epochs=1), tmp_path / "run", quiet=True, data=small_data
    )
    run = trainer.run_dir
    for name in (
        "config.json",
        "model.safetensors",
        "train_state.safetensors",
        "train_state.json",
        "manifest.json",
        "metrics.jsonl",
    ):
        assert (run / name).is_file(), name
    assert list((run / "events").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["step"] == 16  # 512 / 64 = 8 steps per epoch
    assert rows[1]["test/loss"] < rows[0]["test/loss"]
    config, raw = read_config(run)
    assert raw["binarization"] == "dynamic" and raw["versions"]["torch"] == torch.__version__
    assert config.train.kl_warmup_epochs == 1


def test_resume_is_exact(small_data, tmp_path):
    train(run_config(epochs=2), tmp_path / "straight", quiet=True, data=small_data)
    train(run_config(epochs=1), tmp_path / "split", quiet=True, data=small_data)
    resume(tmp_path / "split", epochs=2, quiet=True, data=small_data)
    assert_same_weights(tmp_path / "straight", tmp_path / "split")
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    split = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    drop = ("train/samples_per_s",)
    clean = [{k: v for k, v in json.loads(r).items() if k not in drop} for r in straight]
    assert clean == [{k: v for k, v in json.loads(r).items() if k not in drop} for r in split]


def test_resume_mid_epoch_is_exact(small_data, tmp_path):
    train(run_config(epochs=2), tmp_path / "straight", quiet=True, data=small_data)
    train(run_config(epochs=2), tmp_path / "cut", quiet=True, data=small_data, max_steps=5)
    state = json.loads((tmp_path / "cut" / "train_state.json").read_text())
    assert (state["step"], state["step_in_epoch"], state["epoch"]) == (5, 5, 0)
    resume(tmp_path / "cut", quiet=True, data=small_data, max_steps=21)
    resume(tmp_path / "cut", quiet=True, data=small_data)
    assert_same_weights(tmp_path / "straight", tmp_path / "cut")


def test_existing_run_is_not_overwritten(small_data, tmp_path):
    train(run_config(epochs=1), tmp_path / "run", quiet=True, data=small_data)
    before = weights(tmp_path / "run")
    with pytest.raises(VaelabError, match="already holds a run"):
        train(run_config(epochs=1), tmp_path / "run", quiet=True, data=small_data)
    assert weights(tmp_path / "run").keys() == before.keys()


def test_non_finite_steps_are_skipped_then_training_stops(small_data, tmp_path, monkeypatch):
    config = run_config(epochs=1, max_bad_steps=3)
    trainer = train(config, tmp_path / "run", quiet=True, data=small_data)
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    calls = {"n": 0}
    real_loss = type(trainer.model).loss

    def poisoned(self, phase, batch, ctx):
        calls["n"] += 1
        out = real_loss(self, phase, batch, ctx)
        return LossOutput(out.loss * float("nan"), out.metrics)

    monkeypatch.setattr(type(trainer.model), "loss", poisoned)
    with pytest.raises(TrainingDiverged, match="3 steps in a row"):
        resume(tmp_path / "run", epochs=2, quiet=True, data=small_data)
    monkeypatch.undo()
    # No NaN reached the weights, and the last good checkpoint is intact and loadable.
    _, model = load_run(tmp_path / "run")
    for key, value in model.state_dict().items():
        assert torch.equal(value, good[key]), key
    assert calls["n"] == 3


def test_a_pickle_is_never_loaded(small_data, tmp_path):
    run = tmp_path / "run"
    train(run_config(epochs=1), run, quiet=True, data=small_data)
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    (run / checkpoint.MODEL_FILE).write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(VaelabError, match="does not match its manifest"):
        load_run(run)
    # Even with a manifest that vouches for it, the file is parsed as safetensors only.
    manifest = json.loads((run / checkpoint.MANIFEST).read_text())
    manifest["sha256"][checkpoint.MODEL_FILE] = checkpoint.sha256_file(run / checkpoint.MODEL_FILE)
    (run / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(VaelabError, match="not a valid safetensors file"):
        load_run(run)
    assert not sentinel.exists()


def test_weights_of_the_wrong_shape_are_refused(small_data, tmp_path):
    run = tmp_path / "run"
    train(run_config(epochs=1), run, quiet=True, data=small_data)
    config = json.loads((run / "config.json").read_text())
    config["model_config"]["hidden"] = [16]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(VaelabError, match="the model expects"):
        load_run(run)


def test_config_with_unknown_or_mistyped_fields_is_refused(small_data, tmp_path):
    run = tmp_path / "run"
    train(run_config(epochs=1), run, quiet=True, data=small_data)
    original = json.loads((run / "config.json").read_text())
    for section, key, value, message in [
        ("model_config", "dropout", 0.1, "unknown field"),
        ("model_config", "latent_dim", "two", "expected int"),
        ("train", "lr", True, "expected float"),
    ]:
        config = json.loads(json.dumps(original))
        config[section][key] = value
        (run / "config.json").write_text(json.dumps(config))
        with pytest.raises(VaelabError, match=message):
            load_run(run)
