"""training/runtime.py and vaelab.flush_denormals(): denormal floats flushed to zero where a
process starts (every worker thread of torch's then), inside the trainer and the evaluator on
the calling thread, with the caller's mode back afterwards, and a warning where torch's worker
threads started unflushed. What only a process start shows runs in a fresh interpreter."""

import json
import platform
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from vaelab.cli import main as cli_main
from vaelab.evaluation.run_eval import evaluate_run
from vaelab.models import MODELS
from vaelab.training.runtime import _flushes, denormals_flushed, flush_denormals

DENORMAL = 1e-39  # under float32's smallest normal number, 2^-126 (about 1.18e-38)
X86 = platform.machine().lower() in ("x86_64", "amd64")
FAST = ["--hidden", "32", "--latent-dim", "2", "--quiet", "--no-report", "--batch-size", "256"]
x86_only = pytest.mark.skipif(not X86, reason="the flush modes are x86's")


@pytest.fixture
def unflushed_caller():
    """This thread computes with denormals (the test process flushes them, as `vaelab` does:
    conftest.py), and gets its mode back afterwards."""
    before = _flushes(1)
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(before)


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (torch's worker threads not started yet), with `args`."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_importing_vaelab_does_not_import_torch():
    done = run_python("import sys, vaelab; print(callable(vaelab.flush_denormals), 'torch' in "
                      "sys.modules)")  # fmt: skip
    assert done.stdout.split() == ["True", "False"], done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["datasets"]])
def test_commands_that_do_not_train_do_not_import_torch(argv):
    done = run_python("""
        import contextlib, sys
        from vaelab.cli import main
        with contextlib.suppress(SystemExit):
            main(sys.argv[1:])
        print('torch' in sys.modules)
        """, *argv)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False", done.stdout


def test_denormals_flush_inside_the_block_only_and_normal_numbers_stay(unflushed_caller):
    x = torch.tensor([DENORMAL, 1e-30])  # two elements: the calling thread computes them
    assert (x * 1.0)[0].item() > 0
    with flush_denormals() as everywhere:
        assert everywhere or not X86  # x86 (SSE3) always has the modes
        if everywhere:
            assert (x * 1.0)[0].item() == 0.0
            assert (x * 1.0)[1].item() == pytest.approx(1e-30)
            with flush_denormals():  # nested: leaving it keeps the outer block's mode
                pass
            assert (x * 1.0)[0].item() == 0.0
    assert (x * 1.0)[0].item() > 0 and not denormals_flushed()


@x86_only
def test_threads_started_inside_the_block_flush_and_those_before_do_not(unflushed_caller):
    seen = []

    def record() -> None:
        seen.append(_flushes(1))

    before = threading.Thread(target=record)
    with flush_denormals():
        inside = threading.Thread(target=record)
        inside.start()
        inside.join()
        before.start()  # created before the block, but a thread copies the mode when it starts
        before.join()
    late = threading.Thread(target=record)
    late.start()
    late.join()
    assert seen == [True, True, False]


ADAM_DENORMALS = textwrap.dedent("""
    import json, torch
    from vaelab.training.runtime import denormals_flushed
    # What made Adam slow: the first moment of a weight whose gradient stays 0 shrinks by 0.9
    # a step into denormals, in every worker thread's part of the fused update.
    weight = torch.nn.Parameter(torch.randn(400, 784))
    adam = torch.optim.Adam([weight], fused=True)
    weight.grad = torch.randn_like(weight)
    adam.step()
    weight.grad.zero_()
    adam.state[weight]["exp_avg"].fill_(1.2e-38)
    adam.step()
    underflows = not (torch.full((1 << 20,), 1.2e-38) * 0.9).any()
    print(json.dumps([flushed, denormals_flushed(), underflows,
                      not adam.state[weight]["exp_avg"].any()]))
""")


@x86_only
def test_flushing_first_thing_reaches_every_worker_thread():
    done = run_python(textwrap.dedent("""
        import torch, vaelab
        torch.set_num_threads(2)  # a pool of 2: the worker's part of an op is its own
        flushed = vaelab.flush_denormals()
    """) + ADAM_DENORMALS)  # fmt: skip
    assert json.loads(done.stdout) == [True, True, True, True], done.stderr


@x86_only
def test_flushing_after_the_workers_started_misses_them_and_training_says_so_once(tmp_path):
    done = run_python("""
        import dataclasses, json, sys, warnings, torch, vaelab
        from vaelab.data import load_dataset
        from vaelab.models import MODELS
        from vaelab.run import DataConfig, RunConfig, TrainConfig
        from vaelab.training.trainer import train
        torch.set_num_threads(2)
        (torch.ones(1 << 20) * 2).sum()  # a parallel op: the worker starts, unflushed
        flushed = vaelab.flush_denormals()
        d = load_dataset("mnist-sample")
        data = dataclasses.replace(d, train_images=d.train_images[:256],
                                   train_labels=d.train_labels[:256],
                                   test_images=d.test_images[:64], test_labels=d.test_labels[:64])
        model = MODELS["vae"].config_class(hidden=(32,), latent_dim=2)
        config = RunConfig("vae", model, DataConfig(), TrainConfig(epochs=1))
        with warnings.catch_warnings(record=True) as seen:
            for run in ("a", "b"):  # two fits, one warning
                train(config, f"{sys.argv[1]}/{run}", quiet=True, data=data)
        print(json.dumps([flushed, [str(w.message) for w in seen]]))
    """, str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    flushed, messages = json.loads(done.stdout.strip().splitlines()[-1])
    assert flushed is False
    about_denormals = [m for m in messages if "denormal" in m]
    assert len(about_denormals) == 1, messages
    assert "call vaelab.flush_denormals() first thing" in about_denormals[0]
    assert "~100x slower" in about_denormals[0]


@x86_only
def test_the_vaelab_command_flushes_before_torch_starts_its_workers(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vaelab", "train", "vae", "--max-steps", "3",
                           "--out", str(tmp_path / "run"), *FAST], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "flush_denormals" not in done.stderr  # the warning of a late flush


@x86_only
def test_training_and_evaluation_run_flushed_and_leave_the_mode_as_it_was(
    tmp_path, monkeypatch, unflushed_caller
):
    seen = {"loss": [], "estimate": []}
    loss, estimate = MODELS["vae"].loss, MODELS["vae"].log_prob_estimate

    def loss_spy(self, *args):
        seen["loss"].append(denormals_flushed())
        return loss(self, *args)

    def estimate_spy(self, *args, **kwargs):  # runs in the evaluator's worker threads
        seen["estimate"].append(denormals_flushed())
        return estimate(self, *args, **kwargs)

    monkeypatch.setattr(MODELS["vae"], "loss", loss_spy)
    monkeypatch.setattr(MODELS["vae"], "log_prob_estimate", estimate_spy)
    run = tmp_path / "run"
    assert cli_main(["train", "vae", "--epochs", "1", "--out", str(run), *FAST]) == 0
    assert not _flushes(1)
    assert cli_main(["eval", str(run), "--k", "2", "--limit", "20", "--quiet"]) == 0
    assert not _flushes(1)
    evaluate_run(run, k=2, limit=20)  # from Python, without the command around it
    assert not _flushes(1)
    assert seen["loss"] and all(seen["loss"])
    assert seen["estimate"] and all(seen["estimate"])
