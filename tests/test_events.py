"""TensorBoard events through tensorboardX, read back by TensorBoard's own reader: the scalars
with their steps, the purge of a killed run's late events on resume, and training without
tensorboardX installed."""

from __future__ import annotations

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import tiny_config
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training.events import log_scalars, scalar_writer
from vaelab.training.trainer import resume, train


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def run_config(epochs: int) -> RunConfig:
    return RunConfig(model="vae", model_config=tiny_config("vae"), data=DataConfig(),
                     train=TrainConfig(epochs=epochs, batch_size=128))  # fmt: skip


def test_an_epochs_numbers_are_read_back_at_its_step(tmp_path):
    with scalar_writer(tmp_path) as writer:
        log_scalars(writer, {"epoch": 1, "step": 8, "train/loss": 160.5, "test/loss": -3.5}, 8)
        log_scalars(writer, {"epoch": 2, "step": 2**40, "train/loss": 150.25}, 2**40)
    assert read_scalars(tmp_path) == {  # "epoch" and "step" are the record's, not scalars
        "train/loss": [(8, 160.5), (2**40, 150.25)],
        "test/loss": [(8, -3.5)],
    }


def test_a_resumed_writer_hides_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
    with scalar_writer(tmp_path) as first:  # checkpointed at step 4, killed after step 9
        for step in range(10):
            log_scalars(first, {"train/loss": 10.0 - step}, step)
    with scalar_writer(tmp_path, purge_step=5) as second:  # in the same second, often
        for step in range(5, 8):
            log_scalars(second, {"train/loss": 100.0 + step}, step)
    assert len(list(tmp_path.iterdir())) == 2
    assert read_scalars(tmp_path)["train/loss"] == [(s, 10.0 - s) for s in range(5)] + [
        (s, 100.0 + s) for s in range(5, 8)
    ]


def test_training_logs_metrics_jsonl_to_tensorboard_and_a_resume_keeps_each_epoch_once(
    small_data, tmp_path
):
    run = tmp_path / "run"
    train(run_config(epochs=2), run, quiet=True, data=small_data)
    with scalar_writer(run / "events") as late:  # a killed epoch 3, logged before its checkpoint
        log_scalars(late, {"train/loss": 1e6}, 12)
    resume(run, epochs=3, quiet=True, data=small_data)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(run / "events")
    assert [step for step, _ in scalars["train/loss"]] == [4, 8, 12]  # 512 / 128 a epoch
    for key in ("train/loss", "test/loss", "train/lr"):
        assert scalars[key] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows]


def test_training_without_tensorboardx_logs_no_events_and_says_so(small_data, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
    with pytest.warns(UserWarning, match=r"tensorboardX is not installed.*vaelab\[tensorboard\]"):
        train(run_config(epochs=1), tmp_path / "run", quiet=True, data=small_data)
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1
    assert not (tmp_path / "run" / "events").exists()
