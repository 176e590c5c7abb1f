"""training/runtime.py's speed settings: denormal floats flushed to zero while the trainer, the
evaluator and the `vaelab` command run, and the caller's mode back afterwards."""

import platform
import threading

import pytest
import torch

from vaelab.cli import main as cli_main
from vaelab.evaluation.run_eval import evaluate_run
from vaelab.models import MODELS
from vaelab.training.runtime import (
    _flushes,
    _openmp_library,
    denormals_flushed,
    flush_denormals,
    set_flush_on_pool,
)

DENORMAL = 1e-39  # under float32's smallest normal number, 2^-126 (about 1.18e-38)
X86 = platform.machine().lower() in ("x86_64", "amd64")
FAST = ["--hidden", "32", "--latent-dim", "2", "--quiet", "--no-report", "--batch-size", "256"]


def test_denormals_flush_inside_the_block_only_and_normal_numbers_stay():
    x = torch.tensor([DENORMAL, 1e-30])
    assert not denormals_flushed() and (x * 1.0)[0].item() > 0
    with flush_denormals() as supported:
        assert supported or not X86  # x86 (SSE3) always has the modes
        if supported:
            assert denormals_flushed()
            assert (x * 1.0)[0].item() == 0.0
            assert (x * 1.0)[1].item() == pytest.approx(1e-30)
            with flush_denormals():  # nested: leaving it keeps the outer block's mode
                pass
            assert denormals_flushed()
    assert not denormals_flushed() and (x * 1.0)[0].item() > 0


@pytest.mark.skipif(not X86, reason="the flush modes are x86's")
def test_threads_started_inside_the_block_flush_too():
    seen = []
    with flush_denormals():
        worker = threading.Thread(target=lambda: seen.append(denormals_flushed()))
        worker.start()
        worker.join()
    assert seen == [True]


@pytest.fixture
def two_threads_started_unflushed():
    """torch's pool with (at least) 2 threads, started before any flushing: the worker keeps
    the mode it was started with unless the pool is told."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    (torch.ones(1 << 20) * 2).sum()  # a parallel op: the pool's threads exist from here
    yield
    torch.set_num_threads(threads)


def underflows_to_zero(n: int = 1 << 20) -> bool:
    """Whether 1.2e-38 * 0.9 (a denormal result) comes out 0 in every thread's part."""
    return not bool((torch.full((n,), 1.2e-38) * 0.9).any())


POOL = X86 and _openmp_library() is not None  # torch's OpenMP runtime found (Linux)


@pytest.mark.skipif(not POOL, reason="needs x86 and torch's OpenMP runtime (Linux)")
def test_the_worker_threads_started_before_the_block_flush_too(two_threads_started_unflushed):
    assert not denormals_flushed() and not underflows_to_zero()
    with flush_denormals() as flushed:
        assert flushed and underflows_to_zero()
        # What made Adam slow: the first moment of a weight whose gradient stays 0 shrinks by
        # 0.9 a step into denormals, in every thread's part of the fused update.
        weight = torch.nn.Parameter(torch.randn(400, 784))
        adam = torch.optim.Adam([weight], fused=True)
        weight.grad = torch.randn_like(weight)
        adam.step()
        weight.grad.zero_()
        adam.state[weight]["exp_avg"].fill_(1.2e-38)
        adam.step()
        assert not adam.state[weight]["exp_avg"].any()
    assert not denormals_flushed()
    assert not (torch.full((1 << 20,), 1.2e-38) * 0.9).eq(0).any()  # every thread unflushed


@pytest.mark.skipif(not POOL, reason="needs x86 and torch's OpenMP runtime (Linux)")
def test_the_callers_own_mode_comes_back_on_every_thread(two_threads_started_unflushed):
    torch.set_flush_denormal(True)  # this thread only: the pool's worker started unflushed
    try:
        assert _flushes(1) and not denormals_flushed()
        with flush_denormals() as flushed:
            assert flushed
        assert _flushes(1)  # the caller keeps flushing, and now so does the pool
        assert denormals_flushed()
    finally:
        set_flush_on_pool(False)
        torch.set_flush_denormal(False)
    assert not denormals_flushed()


@pytest.mark.skipif(not X86, reason="the flush modes are x86's")
def test_training_and_evaluation_run_flushed_and_leave_the_mode_as_it_was(tmp_path, monkeypatch):
    seen = {"loss": [], "estimate": []}
    loss, estimate = MODELS["vae"].loss, MODELS["vae"].log_prob_estimate

    def loss_spy(self, *args):
        seen["loss"].append(denormals_flushed())
        return loss(self, *args)

    def estimate_spy(self, *args):  # runs in the evaluator's worker threads
        seen["estimate"].append(denormals_flushed())
        return estimate(self, *args)

    monkeypatch.setattr(MODELS["vae"], "loss", loss_spy)
    monkeypatch.setattr(MODELS["vae"], "log_prob_estimate", estimate_spy)
    run = tmp_path / "run"
    assert cli_main(["train", "vae", "--epochs", "1", "--out", str(run), *FAST]) == 0
    assert not denormals_flushed()
    assert cli_main(["eval", str(run), "--k", "2", "--limit", "20", "--quiet"]) == 0
    assert not denormals_flushed()
    evaluate_run(run, k=2, limit=20)  # from Python, without the command around it
    assert not denormals_flushed()
    assert seen["loss"] and all(seen["loss"])
    assert seen["estimate"] and all(seen["estimate"])
