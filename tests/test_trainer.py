import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

import vaelab.training.trainer as trainer_module
from conftest import tiny_config
from vaelab.errors import VaelabError
from vaelab.models import LossOutput
from vaelab.run import DataConfig, RunConfig, TrainConfig, load_run, read_config
from vaelab.training import checkpoint
from vaelab.training.trainer import TrainingDiverged, all_finite, make_adam, resume, train


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
    drop = ("train/samples_per_s", "train/threads")
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


def test_deterministic_runs_repeat_bit_for_bit_and_are_recorded(small_data, tmp_path):
    def metrics(run):
        rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
        return [
            {k: v for k, v in r.items() if k not in ("train/samples_per_s", "train/threads")}
            for r in rows
        ]

    for name in ("a", "b"):
        train(run_config(deterministic=True), tmp_path / name, quiet=True, data=small_data)
        assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["train"]["deterministic"] is True


def test_deterministic_mode_switches_torch_to_deterministic_algorithms(
    small_data, tmp_path, monkeypatch
):
    from vaelab.training import trainer as trainer_module

    seen = []
    fit = trainer_module.Trainer.fit

    def spy(self, max_steps=None):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return fit(self, max_steps)

    monkeypatch.setattr(trainer_module.Trainer, "fit", spy)
    train(run_config(epochs=1, deterministic=True), tmp_path / "d", quiet=True, data=small_data)
    train(run_config(epochs=1), tmp_path / "n", quiet=True, data=small_data)
    assert seen == [True, False]


def test_validation_split_early_stopping_and_the_best_weights(small_data, tmp_path):
    config = run_config(epochs=30, early_stopping=2, lr=3e-2)  # a high rate: it soon overfits
    config.data.validation = 128
    trainer = train(config, tmp_path / "r", quiet=True, data=small_data)
    assert len(trainer.train_x) == 512 - 128 and len(trainer.valid_x) == 128
    # The validation set is the last 128 training images, binarized once with the test seed.
    from vaelab.data import binarize_fixed

    expected = binarize_fixed(small_data.train_images[-128:], "dynamic", 777)
    assert torch.equal(trainer.valid_x, expected)
    s = trainer.state
    history = [r["valid/loss"] for r in s.history]
    assert s.stopped.startswith("early stopping") and s.epoch < 30
    assert s.best_valid == min(history) and history[s.best_epoch - 1] == s.best_valid
    assert s.epoch - s.best_epoch == 2  # two epochs without a better one
    best = tmp_path / "r" / "best"
    assert json.loads((best / "best.json").read_text())["epoch"] == s.best_epoch
    _, model = load_run(best)  # a run folder of its own: eval, sample and serve take it
    last = dict(trainer.model.state_dict())
    assert any(not torch.equal(last[k], v) for k, v in model.state_dict().items())


def test_a_time_budget_stops_at_an_epoch_end_with_a_checkpoint(small_data, tmp_path):
    config = run_config(epochs=50, time_budget="0.5s")
    trainer = train(config, tmp_path / "r", quiet=True, data=small_data)
    assert 1 <= trainer.state.epoch < 50
    assert trainer.state.stopped == "time budget 0.5s spent"
    saved = json.loads((tmp_path / "r" / "train_state.json").read_text())
    assert saved["epoch"] == trainer.state.epoch and saved["step_in_epoch"] == 0
    assert saved["seconds"] == trainer.state.seconds  # the run's training time in all
    # Spent: a --resume refuses to train on unless given a larger budget, and changes nothing.
    before = {str(p): p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    with pytest.raises(VaelabError, match="whole time budget 0.5s: pass a larger --time-budget"):
        resume(tmp_path / "r", epochs=60, quiet=True, data=small_data)
    after = {str(p): p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert after == before
    again = resume(tmp_path / "r", quiet=True, data=small_data, max_steps=trainer.state.step + 8,
                   time_budget="1h")  # fmt: skip
    assert again.state.step == trainer.state.step + 8
    assert again.state.seconds > saved["seconds"]
    assert read_config(tmp_path / "r")[0].train.time_budget == "1h"


class FakeClock:
    """trainer.clock that advances `tick` seconds on every reading."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def lr_history(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [round(r["train/lr"] / 1e-3, 6) for r in rows]


def test_the_learning_rate_decays_to_zero_over_the_last_share_of_the_epochs(small_data, tmp_path):
    trainer = train(run_config(epochs=5, lr=1e-3, lr_decay=0.4), tmp_path / "r", quiet=True,
                    data=small_data)  # fmt: skip
    # Epoch e takes the progress at its middle, (e + 0.5) / 5: the factor is 1 up to 0.6,
    # then (1 - p) / 0.4.
    assert lr_history(tmp_path / "r") == [1.0, 1.0, 1.0, 0.75, 0.25]
    group = trainer.optimizers["model"].param_groups[0]
    assert group["lr"] == pytest.approx(0.25e-3)


def test_under_a_time_budget_the_learning_rate_decays_with_the_time_spent(
    small_data, tmp_path, monkeypatch
):
    # Each epoch reads the clock once at its end (and fit once at its start): 10 s per epoch.
    monkeypatch.setattr(trainer_module, "clock", FakeClock(10.0))
    config = run_config(epochs=50, lr=1e-3, lr_decay=0.5, time_budget="60s")
    trainer = train(config, tmp_path / "r", quiet=True, data=small_data)
    assert trainer.state.stopped == "time budget 60s spent" and trainer.state.epoch == 6
    # Epoch e starts after 10 e seconds and, from the second on, takes the progress at its
    # middle by the last epoch's time, (10 e + 5) / 60; the first knows no epoch's time yet.
    expected = [1.0] + [min(1.0, (1 - (10 * e + 5) / 60) / 0.5) for e in range(1, 6)]
    assert expected[-1] == pytest.approx(1 / 6)
    assert lr_history(tmp_path / "r") == [round(f, 6) for f in expected]
    # Resumed with a larger budget, the decay goes on from the time already spent.
    monkeypatch.setattr(trainer_module, "clock", FakeClock(10.0))
    resume(tmp_path / "r", quiet=True, data=small_data, time_budget="100s", max_steps=8 * 7)
    assert lr_history(tmp_path / "r")[-1] == round((1 - 60 / 100) / 0.5, 6) == 0.8


def epochs_scored(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch"] for r in rows if "test/loss" in r]


def test_the_test_set_is_scored_every_n_epochs_and_after_the_last(small_data, tmp_path):
    train(run_config(epochs=7, test_every=3), tmp_path / "a", quiet=True, data=small_data)
    assert epochs_scored(tmp_path / "a") == [3, 6, 7]
    train(run_config(epochs=3, test_every=0), tmp_path / "b", quiet=True, data=small_data)
    assert epochs_scored(tmp_path / "b") == [3]
    # The scores do not depend on how often they are taken (training never sees them).
    default = train(run_config(epochs=3), tmp_path / "c", quiet=True, data=small_data)
    assert epochs_scored(tmp_path / "c") == [1, 2, 3]
    rows = {d: (tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1] for d in "bc"}
    assert json.loads(rows["b"])["test/loss"] == json.loads(rows["c"])["test/loss"]
    assert default.state.history[-1]["test/loss"] == json.loads(rows["c"])["test/loss"]


def test_a_run_stopped_early_or_by_its_budget_scores_the_test_set_at_its_end(
    small_data, tmp_path, monkeypatch
):
    monkeypatch.setattr(trainer_module, "clock", FakeClock(10.0))
    train(run_config(epochs=50, time_budget="25s", test_every=0), tmp_path / "t", quiet=True,
          data=small_data)  # fmt: skip
    assert epochs_scored(tmp_path / "t") == [3]
    config = run_config(epochs=30, early_stopping=2, lr=3e-2, test_every=0)
    config.data.validation = 128
    trainer = train(config, tmp_path / "e", quiet=True, data=small_data)
    assert trainer.state.stopped.startswith("early stopping")
    assert epochs_scored(tmp_path / "e") == [trainer.state.epoch]
    # A run cut short by --max-steps scores nothing until an epoch it ends with.
    train(run_config(epochs=4, test_every=0), tmp_path / "m", quiet=True, data=small_data,
          max_steps=8 * 2)  # fmt: skip
    assert epochs_scored(tmp_path / "m") == []
    resume(tmp_path / "m", quiet=True, data=small_data)
    assert epochs_scored(tmp_path / "m") == [4]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"time_budget": "30 minutes"}, "time_budget is '30 minutes': expected a positive"),
        ({"time_budget": "-5m"}, "expected a positive duration"),
        ({"early_stopping": -1}, "early_stopping is -1"),
        ({"lr_decay": 1.5}, "lr_decay is 1.5: expected a share of training from 0 to 1"),
        ({"test_every": -1}, "test_every is -1: expected an integer >= 0"),
    ],
)
def test_bad_budgets_and_decays_are_refused(changes, message):
    with pytest.raises(VaelabError, match=message):
        TrainConfig(**changes).validate()


def test_early_stopping_needs_a_validation_set(small_data, tmp_path):
    with pytest.raises(VaelabError, match="early_stopping needs a validation set"):
        train(run_config(early_stopping=3), tmp_path / "r", quiet=True, data=small_data)
    config = run_config()
    config.data.validation = 512
    with pytest.raises(VaelabError, match="validation is 512: the training set has only 512"):
        train(config, tmp_path / "s", quiet=True, data=small_data)


def test_adam_is_torchs_own_fused_adam():
    weights = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]
    adam = make_adam(weights, 1e-2)
    assert type(adam) is torch.optim.Adam and adam.defaults["fused"]  # no private kernel calls


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_sees_one_bad_gradient_element(bad):
    grads = [torch.zeros(3, 4), torch.ones(5)]
    assert all_finite(torch.tensor(1.0), grads)
    assert all_finite(torch.tensor(1.0), [])
    grads[0][2, 1] = bad
    assert not all_finite(torch.tensor(1.0), grads)
    assert not all_finite(torch.tensor(bad), [torch.zeros(2)])
    # Large finite gradients whose squares would overflow are still finite.
    assert all_finite(torch.tensor(0.0), [torch.full((4,), 1e30)])


def test_an_epoch_resumed_from_inside_keeps_its_learning_rate(small_data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "clock", FakeClock(10.0))
    config = run_config(epochs=50, lr=1e-3, lr_decay=0.8, time_budget="60s")
    train(config, tmp_path / "r", quiet=True, data=small_data, max_steps=8 * 3 + 4)
    state = json.loads((tmp_path / "r" / "train_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["seconds"]) == (3, 4, 40.0)
    # Epoch 3 began after 30 s with epochs of 10 s: (1 - 35/60) / 0.8. Resumed after 40 s,
    # it keeps that rate.
    monkeypatch.setattr(trainer_module, "clock", FakeClock(10.0))
    resume(tmp_path / "r", quiet=True, data=small_data, max_steps=8 * 4)
    assert lr_history(tmp_path / "r")[-1] == round((1 - 35 / 60) / 0.8, 6)


def test_a_budget_spent_inside_an_epoch_lets_that_epoch_finish(small_data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "clock", FakeClock(10.0))
    config = run_config(epochs=50, time_budget="25s")
    train(config, tmp_path / "r", quiet=True, data=small_data, max_steps=8 * 2 + 4)
    state = json.loads((tmp_path / "r" / "train_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["seconds"]) == (2, 4, 30.0)
    again = resume(tmp_path / "r", quiet=True, data=small_data)
    assert (again.state.epoch, again.state.step_in_epoch) == (3, 0)
    assert again.state.stopped == "time budget 25s spent"


def test_a_checkpoint_from_before_the_time_fields_resumes(small_data, tmp_path):
    train(run_config(epochs=1), tmp_path / "r", quiet=True, data=small_data)
    path = tmp_path / "r" / "train_state.json"
    state = json.loads(path.read_text())
    for name in ("seconds", "epoch_lr_factor"):
        del state[name]
    path.write_text(json.dumps(state))
    manifest = json.loads((tmp_path / "r" / checkpoint.MANIFEST).read_text())
    manifest["sha256"][path.name] = checkpoint.sha256_file(path)  # vouch for the old file
    (tmp_path / "r" / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    again = resume(tmp_path / "r", epochs=2, quiet=True, data=small_data)
    assert again.state.epoch == 2 and again.state.seconds > 0
